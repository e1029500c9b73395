//! The health port: `/metrics`, `/metrics/controller`, `/ready`, `/healthz`, `/livez`, and nothing else.
//! Readiness is re-evaluated on every call (upstream reported a start-up snapshot). The parts it reports on
//! register themselves (flags and hooks), so telemetry depends on none of them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::Metrics;
use crate::identity::{BackendState, Identity};

/// Refreshes gauges from a part's own state when metrics are scraped.
pub type Refresh = Box<dyn Fn(&Metrics) + Send + Sync>;

/// How recent the last successful apiserver contact must be.
const KUBE_FRESHNESS: Duration = Duration::from_secs(30);

/// Live health facts, updated by the parts they describe.
#[derive(Default)]
pub struct Health {
    pub shutting_down: AtomicBool,
    pub leader: AtomicBool,
    pub crd_present: AtomicBool,
    pub listener_bound: AtomicBool,
    kube_ok_at: Mutex<Option<Instant>>,
    pub identity: OnceLock<Arc<dyn Identity>>,
    /// The session cache holds its initial list.
    pub caches_ready: AtomicBool,
    /// Set when the API serves TLS: ready only with a certificate loaded.
    pub tls_loaded: OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
    /// Refreshes the controller's gauges from its cache on every scrape, so they cannot drift.
    pub controller_gauges: OnceLock<Refresh>,
}

impl Health {
    pub fn kube_ok(&self) {
        *self.kube_ok_at.lock().expect("lock poisoned") = Some(Instant::now());
    }

    fn kube_fresh(&self) -> bool {
        self.kube_ok_at
            .lock()
            .expect("lock poisoned")
            .is_some_and(|t| t.elapsed() < KUBE_FRESHNESS)
    }

    /// (ready, reason, checks)
    pub fn evaluate(&self) -> (bool, &'static str, serde_json::Value) {
        let leader = self.leader.load(Ordering::SeqCst);
        let kube = self.kube_fresh();
        let crd = self.crd_present.load(Ordering::SeqCst);
        let caches = self.caches_ready.load(Ordering::SeqCst);
        let tailnet = self
            .identity
            .get()
            .is_some_and(|i| i.status().state == BackendState::Running);
        let listener = self.listener_bound.load(Ordering::SeqCst);
        let tls = self.tls_loaded.get().is_none_or(|loaded| loaded());
        let checks = json!({ "config": true, "kubernetes": kube, "crd": crd, "caches": caches, "tailnet": tailnet, "listener": listener, "tls": tls });
        let reason = if self.shutting_down.load(Ordering::SeqCst) {
            "shutting_down"
        } else if !kube {
            "kubernetes"
        } else if !crd {
            "crd"
        } else if !leader {
            "standby"
        } else if !caches {
            "caches"
        } else if !tailnet {
            "tailnet_not_running"
        } else if !listener {
            "listener"
        } else if !tls {
            "tls"
        } else {
            ""
        };
        let ready = reason.is_empty() || reason == "standby";
        (ready, if reason.is_empty() { "ok" } else { reason }, checks)
    }
}

#[derive(Clone)]
struct HealthState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

pub fn router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(server_metrics))
        .route("/metrics/controller", get(controller_metrics))
        .route("/ready", get(ready))
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .with_state(HealthState { health, metrics })
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn ready(State(s): State<HealthState>) -> Response {
    let (ready, reason, checks) = s.health.evaluate();
    let role = if s.health.leader.load(Ordering::SeqCst) {
        "leader"
    } else {
        "standby"
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "status": if ready { "ready" } else { "not ready" }, "reason": reason, "role": role, "checks": checks });
    (status, axum::Json(body)).into_response()
}

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn server_metrics(State(s): State<HealthState>) -> Response {
    s.metrics
        .leader
        .set(s.health.leader.load(Ordering::SeqCst) as i64);
    if let Some(i) = s.health.identity.get() {
        s.metrics
            .tailnet_up
            .with_label_values(&[i.backend()])
            .set((i.status().state == BackendState::Running) as i64);
    }
    (
        [(axum::http::header::CONTENT_TYPE, TEXT)],
        Metrics::encode(&s.metrics.server),
    )
        .into_response()
}

async fn controller_metrics(State(s): State<HealthState>) -> Response {
    if let Some(refresh) = s.health.controller_gauges.get() {
        refresh(&s.metrics);
    }
    (
        [(axum::http::header::CONTENT_TYPE, TEXT)],
        Metrics::encode(&s.metrics.controller),
    )
        .into_response()
}
