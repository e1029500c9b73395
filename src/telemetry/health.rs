//! The health port (spec: observability.md §1–2): `/metrics`, `/metrics/controller`, `/ready`, `/healthz`,
//! `/livez`, and nothing else. Readiness is re-evaluated on every call (upstream reported a start-up
//! snapshot).

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
use crate::api::sessions::Sessions;
use crate::doctor::readiness::{self, Facts};
use crate::identity::{BackendState, Identity};

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
    pub sessions: OnceLock<Sessions>,
    /// Set when the API serves TLS: ready only with a certificate loaded.
    pub tls: OnceLock<Arc<crate::api::tls::CurrentCert>>,
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

    /// (ready, reason, checks); the reason comes from the table `tka-server doctor` shares.
    pub fn evaluate(&self) -> (bool, &'static str, serde_json::Value) {
        let f = Facts {
            shutting_down: self.shutting_down.load(Ordering::SeqCst),
            leader: self.leader.load(Ordering::SeqCst),
            kubernetes: self.kube_fresh(),
            crd: self.crd_present.load(Ordering::SeqCst),
            caches: self.sessions.get().is_some(),
            tailnet: self
                .identity
                .get()
                .is_some_and(|i| i.status().state == BackendState::Running),
            listener: self.listener_bound.load(Ordering::SeqCst),
            tls: self.tls.get().is_none_or(|c| c.is_loaded()),
        };
        let checks = json!({ "config": true, "kubernetes": f.kubernetes, "crd": f.crd, "caches": f.caches, "tailnet": f.tailnet, "listener": f.listener, "tls": f.tls });
        let reason = readiness::reason(&f);
        (readiness::is_ready(reason), reason, checks)
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
    let mut body = json!({ "status": if ready { "ready" } else { "not ready" }, "reason": reason, "role": role, "checks": checks });
    if let Some(advice) = readiness::advice(reason).filter(|_| !ready) {
        body["advice"] = advice.into();
    }
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
    // Computed from the cache on every scrape, so it cannot drift (upstream's inc/dec did: B7).
    if let Some(sessions) = s.health.sessions.get() {
        let now = jiff::Timestamp::now();
        s.metrics.active_sessions.reset();
        let all = sessions.all();
        s.metrics.managed_signins.set(all.len() as i64);
        let waiting = all.iter().filter(|s| {
            s.metadata.deletion_timestamp.is_some()
                || s.status.as_ref().and_then(|st| st.observed_generation) < s.metadata.generation
        });
        s.metrics.queue_depth.set(waiting.count() as i64);
        for signin in all {
            if crate::operator::reconcile::is_live(&signin, now) {
                s.metrics
                    .active_sessions
                    .with_label_values(&[&signin.spec.role])
                    .inc();
            }
        }
    }
    (
        [(axum::http::header::CONTENT_TYPE, TEXT)],
        Metrics::encode(&s.metrics.controller),
    )
        .into_response()
}
