//! Wiring of the kube-runtime Controller: what is watched, how events on owned objects map back to
//! TkaSignins, periodic sweeps. The reconcile logic itself is in [`super::reconcile`].

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};

use super::context::Context;
use super::crd::TkaSignin;
use super::objects::{self, USER_KEY};
use super::reconcile::{error_policy, reconcile};

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

    let controller = Controller::new(signins, watcher::Config::default());
    let store = controller.store();
    let _ = ctx.cache.set(store.clone());
    let by_user = |store: Store<TkaSignin>| {
        move |labels: &std::collections::BTreeMap<String, String>| -> Vec<ObjectRef<TkaSignin>> {
            let Some(key) = labels.get(USER_KEY) else {
                return vec![];
            };
            store
                .state()
                .iter()
                .filter(|s| s.spec.subject_key == *key)
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect()
        }
    };
    let (sa_map, crb_map, rb_map) = (
        by_user(store.clone()),
        by_user(store.clone()),
        by_user(store.clone()),
    );

    let sweeps = futures::stream::unfold((), move |_| async move {
        tokio::time::sleep(sweep_interval).await;
        Some(((), ()))
    });

    controller
        // One backoff for all of the controller's watches: short, so it sees the apiserver again soon after a
        // restart (see super::backoff).
        .trigger_backoff(super::backoff::watch())
        .owns(
            Api::<Secret>::namespaced(client.clone(), &ns),
            managed.clone(),
        )
        .watches(
            Api::<ServiceAccount>::namespaced(client.clone(), &ns),
            managed,
            move |sa| sa_map(sa.labels()),
        )
        .watches(
            Api::<ClusterRoleBinding>::all(client.clone()),
            instance.clone(),
            move |b| crb_map(b.labels()),
        )
        .watches(
            Api::<RoleBinding>::all(client.clone()),
            instance,
            move |b| rb_map(b.labels()),
        )
        // Periodic sweep: requeue everything, so expired or not-ready sessions are looked at again even if a
        // timer was lost.
        .reconcile_all_on(sweeps)
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
