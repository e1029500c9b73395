//! What every reconcile shares: the client, the namespace, metrics, the per-user locks, the failure counts
//! for backoff, the event recorder, and the field manager that owns the controller's writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};

use super::crd::{SecretRef, TkaSignin};
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
    /// Consecutive failures per object, for the 1 s → 5 min backoff.
    failures: Mutex<HashMap<String, u32>>,
    recorder: Recorder,
    /// Session Secret created per TkaSignin UID. A reconcile may run on a cached object that does not yet
    /// show the status written a moment ago; this keeps it from creating a second Secret.
    pub(super) created_secrets: Mutex<HashMap<String, SecretRef>>,
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
            created_secrets: Mutex::default(),
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

    /// Backoff for the next retry of `name` after an error: 1 s, 2 s, 4 s … capped at 5 min.
    pub fn backoff(&self, name: &str) -> Duration {
        let mut f = self.failures.lock().expect("lock poisoned");
        let n = f.entry(name.to_string()).or_insert(0);
        *n = (*n + 1).min(20);
        Duration::from_secs(1u64 << (*n - 1).min(9)).min(Duration::from_secs(300))
    }

    pub(super) fn succeeded(&self, name: &str) {
        self.failures.lock().expect("lock poisoned").remove(name);
    }

    pub(super) fn signins(&self) -> Api<TkaSignin> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}
