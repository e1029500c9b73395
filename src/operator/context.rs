//! What every reconcile shares: the client, the namespace, metrics, the per-user locks, the failure counts
//! for backoff, the event recorder, and the field manager that owns the controller's writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};

use super::crd::TkaSignin;
use crate::telemetry::Metrics;

/// Field manager of everything the controller writes (objects, status, token expiries).
pub const FIELD_MANAGER: &str = "tka-controller";

pub struct Context {
    pub client: Client,
    /// `operator.namespace`: TkaSignins, SAs and Secrets live here; also the `instance` label.
    pub namespace: String,
    pub metrics: Arc<Metrics>,
    /// Serializes reconciles of the same user (they share the SA and bindings).
    user_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Consecutive failures per object, for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
    recorder: Recorder,
    /// The session that holds each user's binding (by subject key), as this controller provisioned it:
    /// exact for the life of the process, since only the leader's controller provisions. After a restart it
    /// starts empty and the cache's statuses stand in.
    holders: Mutex<HashMap<String, Holder>>,
    /// The controller's cache of all TkaSignins (set when the controller starts).
    pub(super) cache: OnceLock<Store<TkaSignin>>,
    /// ClusterRoles seen to exist, and when: provisioning need not look one up for every session.
    roles_seen: Mutex<HashMap<String, Instant>>,
    /// The controller's caches of this instance's bindings (set when the controller starts).
    pub(super) bindings: OnceLock<BindingCaches>,
}

/// Metadata of this instance's bindings as the controller's watches see them: cleanup finds a user's
/// bindings here instead of listing them (a LIST of every binding costs the apiserver far more than a
/// DELETE, and its priority and fairness turns many of them away with 429).
pub(super) struct BindingCaches {
    pub cluster: Store<PartialObjectMeta<ClusterRoleBinding>>,
    pub namespaced: Store<PartialObjectMeta<RoleBinding>>,
}

/// A session holding its user's ServiceAccount and binding.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Holder {
    pub uid: String,
    pub role: String,
    pub node: String,
    pub namespaces: Vec<String>,
}

impl Holder {
    pub fn of(s: &TkaSignin) -> Holder {
        Holder {
            uid: s.uid().unwrap_or_default(),
            role: s.spec.role.clone(),
            node: s.spec.node.clone(),
            namespaces: s.spec.namespaces.clone(),
        }
    }
}

impl Context {
    pub fn new(client: Client, namespace: &str, metrics: Arc<Metrics>) -> Context {
        let client_for_events = client.clone();
        Context {
            client,
            namespace: namespace.to_string(),
            metrics,
            user_locks: Mutex::default(),
            failures: Mutex::default(),
            holders: Mutex::default(),
            cache: OnceLock::new(),
            roles_seen: Mutex::default(),
            bindings: OnceLock::new(),
            recorder: Recorder::new(
                client_for_events,
                Reporter {
                    controller: "tka-server".into(),
                    instance: std::env::var("POD_NAME").ok(),
                },
            ),
        }
    }

    /// Publishes a Kubernetes Event on the TkaSignin in the background: events are for people running
    /// `kubectl describe`, never a reason to slow down or fail a reconcile.
    pub(super) fn event(&self, signin: &TkaSignin, warning: bool, reason: &str, note: String) {
        let recorder = self.recorder.clone();
        let reference = signin.object_ref(&());
        let event = KubeEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "publishing an event failed");
            }
        });
    }

    pub(super) fn user_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.user_locks.lock().expect("lock poisoned");
        // Forget locks nobody holds, so the map does not grow with every user ever seen.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(key.to_string()).or_default().clone()
    }

    /// Backoff for the next retry of `name` after an error ([`super::backoff::retry`]).
    pub fn backoff(&self, name: &str, transient: bool) -> Duration {
        let mut f = self.failures.lock().expect("lock poisoned");
        let n = f.entry(name.to_string()).or_insert(0);
        *n = (*n + 1).min(20);
        super::backoff::retry(*n, transient)
    }

    pub(super) fn succeeded(&self, name: &str) {
        self.failures.lock().expect("lock poisoned").remove(name);
    }

    /// Who holds the binding of user `key`: the session this controller provisioned last while it is live,
    /// else (after a restart) a live, provisioned session in the cache. Call under the user's lock.
    pub(super) fn holder(&self, key: &str) -> Option<Holder> {
        let now = jiff::Timestamp::now();
        let cache = self.cache.get()?.state();
        let live = |uid: &str| {
            cache
                .iter()
                .any(|s| s.uid().as_deref() == Some(uid) && s.is_live(now))
        };
        let mut holders = self.holders.lock().expect("lock poisoned");
        match holders.get(key) {
            Some(h) if live(&h.uid) => return Some(h.clone()),
            // Ended (a logout, `--replace`, expiry) even if its cleanup has not run yet.
            Some(_) => {
                holders.remove(key);
            }
            None => {}
        }
        cache.iter().find_map(|s| {
            (s.spec.subject_key == key && s.is_live(now) && s.is_provisioned())
                .then(|| Holder::of(s))
        })
    }

    /// Records that `s` holds its user's binding now (after provisioning it). Call under the user's lock.
    pub(super) fn hold(&self, s: &TkaSignin) {
        let key = s.spec.subject_key.clone();
        self.holders
            .lock()
            .expect("lock poisoned")
            .insert(key, Holder::of(s));
    }

    /// `s` ends: it no longer holds its user's binding. Call under the user's lock.
    pub(super) fn release(&self, s: &TkaSignin) {
        let mut holders = self.holders.lock().expect("lock poisoned");
        let key = &s.spec.subject_key;
        if holders
            .get(key)
            .is_some_and(|h| Some(&h.uid) == s.uid().as_ref())
        {
            holders.remove(key);
        }
    }

    /// `role` was seen to exist just now.
    pub(super) fn role_seen(&self, role: &str) {
        let mut seen = self.roles_seen.lock().expect("lock poisoned");
        seen.insert(role.to_string(), Instant::now());
    }

    /// Was `role` seen to exist less than `ttl` ago?
    pub(super) fn role_seen_within(&self, role: &str, ttl: Duration) -> bool {
        let seen = self.roles_seen.lock().expect("lock poisoned");
        seen.get(role).is_some_and(|t| t.elapsed() < ttl)
    }

    pub(super) fn signins(&self) -> Api<TkaSignin> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}
