//! Prometheus metrics. No label ever carries a user, node, session or token:
//! label values come from routes, roles (bounded by the allow-list), codes and static categories.

use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Both registries: `/metrics` (server) and `/metrics/controller`.
pub struct Metrics {
    pub server: Registry,
    pub controller: Registry,

    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub in_flight: IntGaugeVec,
    pub connections_open: IntGauge,
    pub connections_refused: IntCounterVec,
    pub login_attempts: IntCounterVec,
    pub login_duration: HistogramVec,
    pub auth_rejections: IntCounterVec,
    pub whois_duration: HistogramVec,
    pub tokens_issued: IntCounterVec,
    pub token_request_duration: HistogramVec,
    pub tailnet_up: IntGaugeVec,
    pub leader: IntGauge,
    pub build_info: GaugeVec,

    pub reconciliations: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    pub reconcile_errors: IntCounterVec,
    pub active_sessions: IntGaugeVec,
    pub queue_depth: IntGauge,
    pub managed_signins: IntGauge,
    pub requeues: IntCounterVec,
    pub user_signins: IntCounterVec,
    pub revocations: IntCounterVec,
    pub session_provision: Histogram,
    pub kube_requests: IntCounterVec,
    pub kube_request_duration: HistogramVec,
    pub federation_members: IntGaugeVec,
    pub federation_requests: IntCounterVec,
    /// Member: when the primary last accepted a heartbeat (Unix seconds; 0 = never), for `tka-server doctor`
    /// and alerts on a member that fell out of its federation.
    pub federation_last_heartbeat: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Registers `m` (names are unique by construction) and hands it back.
fn register<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        r,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

impl Metrics {
    pub fn new(backend: &str) -> Metrics {
        let server = Registry::new();
        let controller = Registry::new();
        #[cfg(target_os = "linux")]
        server
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector");

        let leader = IntGauge::new("tka_leader", "1 on the leader replica").expect("valid metric");
        let leader = register(&server, leader);
        let connections_open = IntGauge::new(
            "tka_server_connections_open",
            "Tailnet API connections admitted and open",
        )
        .expect("valid metric");
        let connections_open = register(&server, connections_open);
        let build_info = GaugeVec::new(
            Opts::new("tka_build_info", "Build information"),
            &["version", "commit", "backend"],
        )
        .expect("valid metric");
        let build_info = register(&server, build_info);
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), crate::BUILD_COMMIT, backend])
            .set(1.0);
        // kube-runtime keeps its queue private; the work waiting is what the cache shows as not yet reconciled.
        let queue_depth = IntGauge::new(
            "tka_controller_queue_depth",
            "TkaSignins waiting for the controller: generation not yet observed, or deletion pending",
        )
        .expect("valid metric");
        let queue_depth = register(&controller, queue_depth);
        let managed_signins = IntGauge::new(
            "tka_controller_managed_signins",
            "TkaSignins the controller manages (live, expired or being deleted), from the cache",
        )
        .expect("valid metric");
        let managed_signins = register(&controller, managed_signins);
        let session_provision = Histogram::with_opts(
            HistogramOpts::new(
                "tka_session_provision_seconds",
                "TkaSignin written to Ready=True",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let session_provision = register(&controller, session_provision);

        let federation_last_heartbeat = IntGauge::new(
            "tka_federation_last_heartbeat_timestamp_seconds",
            "Member: Unix time the primary last accepted a heartbeat (0: never)",
        )
        .expect("valid metric");
        server
            .register(Box::new(federation_last_heartbeat.clone()))
            .expect("unique metric");

        Metrics {
            federation_last_heartbeat,
            federation_members: gauge(
                &server,
                "tka_federation_members",
                "Federation members known to the primary",
                &["state"],
            ),
            federation_requests: counter(
                &server,
                "tka_federation_requests_total",
                "Federation calls, by cluster (operator-chosen names) and operation",
                &["cluster", "operation", "result"],
            ),
            requests: counter(
                &server,
                "tka_server_requests_total",
                "Tailnet API requests",
                &["method", "route", "status"],
            ),
            request_duration: histogram(
                &server,
                "tka_server_request_duration_seconds",
                "Tailnet API latency",
                &["method", "route", "status"],
            ),
            in_flight: gauge(
                &server,
                "tka_server_requests_in_flight",
                "Requests being served, long-polls included",
                &["route"],
            ),
            connections_open,
            connections_refused: counter(
                &server,
                "tka_server_connections_refused_total",
                "Tailnet API connections closed at once: server.maxConnections (total) or \
                 server.maxConnectionsPerPeer (per_peer) reached",
                &["reason"],
            ),
            login_attempts: counter(
                &server,
                "tka_login_attempts_total",
                "Login attempts",
                &["cluster_role", "outcome"],
            ),
            login_duration: histogram(
                &server,
                "tka_login_duration_seconds",
                "Login request to session ready",
                &["outcome"],
            ),
            auth_rejections: counter(
                &server,
                "tka_auth_rejections_total",
                "Requests rejected by the authentication pipeline",
                &["reason"],
            ),
            whois_duration: histogram(
                &server,
                "tka_whois_duration_seconds",
                "Identity lookups",
                &["backend", "result"],
            ),
            tokens_issued: counter(
                &server,
                "tka_tokens_issued_total",
                "TokenRequest outcomes",
                &["kind", "result"],
            ),
            token_request_duration: histogram(
                &server,
                "tka_token_request_duration_seconds",
                "TokenRequest latency",
                &["result"],
            ),
            tailnet_up: gauge(
                &server,
                "tka_tailnet_up",
                "1 when the tailnet backend is running",
                &["backend"],
            ),
            leader,
            build_info,
            reconciliations: counter(
                &controller,
                "tka_controller_reconciliations_total",
                "Reconciles",
                &["action", "result"],
            ),
            reconcile_duration: histogram(
                &controller,
                "tka_controller_reconcile_duration_seconds",
                "Reconcile duration",
                &["action"],
            ),
            reconcile_errors: counter(
                &controller,
                "tka_controller_reconcile_errors_total",
                "Reconcile errors",
                &["category"],
            ),
            active_sessions: gauge(
                &controller,
                "tka_active_user_sessions",
                "Live sessions, computed from the cache",
                &["cluster_role"],
            ),
            user_signins: counter(
                &controller,
                "tka_user_signins_total",
                "New sessions",
                &["cluster_role"],
            ),
            revocations: counter(
                &controller,
                "tka_revocations_total",
                "Sessions ended",
                &["reason"],
            ),
            session_provision,
            queue_depth,
            managed_signins,
            requeues: counter(
                &controller,
                "tka_controller_requeues_total",
                "Reconciles scheduled again: at a session's next deadline, or after an error",
                &["reason"],
            ),
            kube_requests: counter(
                &controller,
                "tka_kube_api_requests_total",
                "Kubernetes API requests",
                &["verb", "resource", "code"],
            ),
            kube_request_duration: histogram(
                &controller,
                "tka_kube_api_request_duration_seconds",
                "Kubernetes API request latency",
                &["verb", "resource"],
            ),
            server,
            controller,
        }
    }

    pub fn observe_reconcile(&self, action: &str, error_category: Option<&str>, took: Duration) {
        let result = if error_category.is_some() {
            "error"
        } else {
            "success"
        };
        self.reconciliations
            .with_label_values(&[action, result])
            .inc();
        self.reconcile_duration
            .with_label_values(&[action])
            .observe(took.as_secs_f64());
        if let Some(c) = error_category {
            self.reconcile_errors.with_label_values(&[c]).inc();
        }
    }

    /// Text exposition of one registry.
    pub fn encode(registry: &Registry) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}
