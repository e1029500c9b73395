//! Wiring of the kube-runtime Controller: what is watched, which changes trigger a reconcile
//! ([`super::triggers`]), how events on owned objects map back to TkaSignins, periodic sweeps. The reconcile
//! logic itself is in [`super::reconcile`].

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, controller, watcher};
use kube::{Api, ResourceExt};

use super::context::{BindingCaches, Context};
use super::crd::TkaSignin;
use super::objects::{self, USER_KEY};
use super::reconcile::{error_policy, reconcile};
use super::triggers::{Relisted, due, foreign_changes, lifecycle, watch_meta};

/// Reconciles at a time. Unbounded, a mass logout started one per session at once, more requests than the
/// apiserver's priority and fairness queues for tka's flow (deploy/kustomize/base/flowcontrol.yaml: 4 queues
/// of 50), so it answered many with 429 and their retries waited; at this bound the controller and 100
/// concurrent API requests fit.
const CONCURRENCY: u16 = 50;

/// Runs the controller until `shutdown` resolves; in-flight reconciles finish first (every step is
/// idempotent, so stopping between reconciles never leaves half-applied state).
pub async fn run(
    ctx: Arc<Context>,
    sweep_interval: Duration,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = ctx.namespace.clone();
    let signins: Api<TkaSignin> = Api::namespaced(client.clone(), &ns);
    let managed = watcher::Config::default().labels(&format!("{}=tka", objects::MANAGED_BY));
    let instance = watcher::Config::default().labels(&objects::managed_selector(&ns));

    // The cache keeps no field-ownership records: nothing reads them, and they are most of a TkaSignin.
    let (store, writer) = reflector::store();
    let changes = reflector::reflector(
        writer,
        super::backoff::paced(watcher(signins, watcher::Config::default()))
            .modify(|s: &mut TkaSignin| s.managed_fields_mut().clear()),
    )
    .applied_objects()
    .predicate_filter(lifecycle, PredicateConfig::default());
    let controller = Controller::for_stream(changes, store.clone())
        .with_config(controller::Config::default().concurrency(CONCURRENCY));
    let _ = ctx.cache.set(store.clone());
    // Sessions being deleted are left out: their deletion triggered their cleanup, and the objects that
    // cleanup deletes would only trigger it again.
    let by_user = |store: Store<TkaSignin>| {
        move |labels: &std::collections::BTreeMap<String, String>| -> Vec<ObjectRef<TkaSignin>> {
            let Some(key) = labels.get(USER_KEY) else {
                return vec![];
            };
            store
                .state()
                .iter()
                .filter(|s| s.spec.subject_key == *key && !s.is_ending())
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect()
        }
    };
    let owner = {
        let (store, ns) = (store.clone(), ns.clone());
        move |secret: PartialObjectMeta<Secret>| -> Option<ObjectRef<TkaSignin>> {
            let o = secret
                .owner_references()
                .iter()
                .find(|o| o.kind == "TkaSignin")?;
            let r = ObjectRef::new(&o.name).within(&ns);
            let s = store.get(&r)?;
            (s.uid().as_deref() == Some(o.uid.as_str()) && !s.is_ending()).then_some(r)
        }
    };
    let relisted = Relisted::default();
    let (sa_map, crb_map, rb_map) = (
        by_user(store.clone()),
        by_user(store.clone()),
        by_user(store.clone()),
    );

    // Every watch stream has its own short backoff (super::backoff::paced: back within 2 s of the apiserver
    // after a restart); the merged stream has none, so one watch's errors never pause the others.
    let (crbs, crb_writer) = reflector::store();
    let (rbs, rb_writer) = reflector::store();
    let _ = ctx.bindings.set(BindingCaches {
        cluster: crbs,
        namespaced: rbs,
    });
    controller
        .trigger_backoff(super::backoff::NoPause)
        .watches_stream(
            foreign_changes(
                watch_meta(
                    Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), &ns),
                    managed.clone(),
                ),
                relisted.clone(),
            ),
            owner,
        )
        .watches_stream(
            foreign_changes(
                watch_meta(
                    Api::<PartialObjectMeta<ServiceAccount>>::namespaced(client.clone(), &ns),
                    managed,
                ),
                relisted.clone(),
            ),
            move |sa| sa_map(sa.labels()),
        )
        .watches_stream(
            foreign_changes(
                reflector::reflector(
                    crb_writer,
                    watch_meta(
                        Api::<PartialObjectMeta<ClusterRoleBinding>>::all(client.clone()),
                        instance.clone(),
                    ),
                ),
                relisted.clone(),
            ),
            move |b| crb_map(b.labels()),
        )
        .watches_stream(
            foreign_changes(
                reflector::reflector(
                    rb_writer,
                    watch_meta(
                        Api::<PartialObjectMeta<RoleBinding>>::all(client.clone()),
                        instance,
                    ),
                ),
                relisted.clone(),
            ),
            move |b| rb_map(b.labels()),
        )
        .reconcile_on(due(store, sweep_interval, relisted))
        .graceful_shutdown_on(shutdown.map(|_| ()))
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The controller's gauges from a cache of all TkaSignins (computed on every scrape, so they cannot drift):
/// sessions by role, objects managed, objects waiting for the controller. Only provisioned sessions count by
/// role: their roles are the ones the server may bind, so whoever writes TkaSignins (a federation primary, a
/// grant) cannot add label values. kube-runtime keeps its work queue
/// private, so the queue depth counts what the cache shows as waiting.
pub fn refresh_gauges(signins: &[Arc<TkaSignin>], metrics: &crate::telemetry::Metrics) {
    let now = jiff::Timestamp::now();
    metrics.active_sessions.reset();
    metrics.managed_signins.set(signins.len() as i64);
    let waiting = signins.iter().filter(|s| s.awaits_controller()).count();
    metrics.queue_depth.set(waiting as i64);
    for s in signins
        .iter()
        .filter(|s| s.is_live(now) && s.is_provisioned())
    {
        metrics
            .active_sessions
            .with_label_values(&[&s.spec.role])
            .inc();
    }
}
