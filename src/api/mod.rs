//! The tailnet HTTP API (spec: api.md): routes, the per-request middleware (request ID, metrics, error
//! bodies, limits) and the connection loop that pairs every request with its connection's address.

pub mod auth;
pub mod cluster_info;
pub mod error;
mod handlers;
mod openapi;
pub mod revalidate;
pub mod serve;
pub mod sessions;
pub mod tls;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::watch;
use tracing::{Instrument, Span};

use self::auth::{AuthSettings, Caller};
use self::cluster_info::ClusterInfoSource;
use self::error::ApiError;
use self::sessions::Sessions;
use crate::identity::Identity;
use crate::model::wire::ErrorResponse;
use crate::telemetry::Metrics;

/// Largest request body accepted (clients never need one).
pub const MAX_BODY: u64 = 64 * 1024;
/// Largest total size of request headers.
pub const MAX_HEADERS: usize = 16 * 1024;

/// Settings of the API, taken from the configuration.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub auth: AuthSettings,
    pub namespace: String,
    pub user_prefix: String,
    pub context_prefix: String,
    pub max_wait: Duration,
    pub write_timeout: Duration,
    pub exec_credential_ttl: Duration,
    pub token_audiences: Vec<String>,
    pub rate_limit: u32,
    pub rate_burst: u32,
    /// This server's own URL, recorded in kubeconfig extensions and exec stanzas.
    pub self_url: String,
}

impl ApiSettings {
    pub fn cluster_name(&self) -> &str {
        &self.auth.policy.cluster
    }
    pub fn retry_after(&self) -> u64 {
        self.auth.retry_after
    }
}

/// Everything a request handler needs.
pub struct App {
    pub settings: ApiSettings,
    pub identity: Arc<dyn Identity>,
    pub client: kube::Client,
    pub sessions: Sessions,
    pub metrics: Arc<Metrics>,
    pub cluster_info: ClusterInfoSource,
    /// Flips to true on shutdown: long-poll waiters are released with 503.
    pub shutdown: watch::Receiver<bool>,
    /// Minted tokens' expiries, recorded in the sessions' status.
    pub expiries: crate::operator::token::ExpiryNotifier,
    /// Registry (primary) or primary check (member); a standalone server has an empty registry.
    pub federation: Arc<crate::federation::Federation>,
    limiter: DefaultKeyedRateLimiter<String>,
}

impl App {
    pub fn new(
        settings: ApiSettings,
        identity: Arc<dyn Identity>,
        client: kube::Client,
        sessions: Sessions,
        metrics: Arc<Metrics>,
        cluster_info: ClusterInfoSource,
        shutdown: watch::Receiver<bool>,
    ) -> App {
        let rate = NonZeroU32::new(settings.rate_limit.max(1)).expect("non-zero");
        let burst =
            NonZeroU32::new(settings.rate_burst.max(settings.rate_limit).max(1)).expect("non-zero");
        let limiter = RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst));
        let expiries =
            crate::operator::token::ExpiryNotifier::start(client.clone(), &settings.namespace);
        App {
            settings,
            identity,
            client,
            sessions,
            metrics,
            cluster_info,
            shutdown,
            expiries,
            federation: Arc::new(crate::federation::Federation::new(Default::default())),
            limiter,
        }
    }

    /// Steps 1–3 of the pipeline plus the per-node rate limit.
    pub async fn identify(
        &self,
        remote: SocketAddr,
        headers: &axum::http::HeaderMap,
    ) -> Result<Caller, ApiError> {
        use tracing::field::Empty;
        let auth_span = tracing::info_span!(
            "auth",
            tka.user = Empty,
            tka.node = Empty,
            tka.auth.result = Empty,
            tka.auth.reject_reason = Empty
        );
        let whois_span = tracing::info_span!(parent: &auth_span, "tailnet.whois", tka.backend = self.identity.backend(), tka.result = Empty);
        let started = Instant::now();
        let result = auth::identify(self.identity.as_ref(), remote, headers, &self.settings.auth)
            .instrument(whois_span.clone())
            .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.code == "identity_unavailable" => "error",
            Err(_) => "not_found",
        };
        whois_span.record("tka.result", outcome);
        self.metrics
            .whois_duration
            .with_label_values(&[self.identity.backend(), outcome])
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(c) => {
                auth_span.record("tka.user", c.login.as_str());
                auth_span.record("tka.node", c.peer.node_fqdn.as_str());
                auth_span.record("tka.auth.result", "ok");
            }
            Err(e) => {
                auth_span.record("tka.auth.result", "rejected");
                auth_span.record("tka.auth.reject_reason", e.code);
            }
        }
        let caller = result.inspect_err(|e| self.reject(e))?;
        if self.limiter.check_key(&caller.peer.node_stable_id).is_err() {
            let e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from your device",
            )
            .advice("slow down and retry after the time in Retry-After")
            .retry_after(1);
            self.reject(&e);
            return Err(e);
        }
        Ok(caller)
    }

    /// Counts a pipeline rejection by its code.
    pub fn reject(&self, e: &ApiError) {
        self.metrics
            .auth_rejections
            .with_label_values(&[e.code])
            .inc();
    }
}

/// The connection's remote address, inserted by the connection loop; the only input to identity.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// The request's ID (echoed from `X-Request-Id` when sane, else generated).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/api/v1alpha1/login",
            post(handlers::login).get(handlers::get_login),
        )
        .route("/api/v1alpha1/kubeconfig", get(handlers::kubeconfig))
        .route("/api/v1alpha1/logout", post(handlers::logout))
        .route(
            "/api/v1alpha1/cluster-info",
            get(handlers::cluster_info_route),
        )
        .route(
            "/api/v1alpha1/exec-credential",
            get(handlers::exec_credential),
        )
        .route("/api/v1alpha1/whoami", get(handlers::whoami))
        .route("/api/v1alpha1/clusters", get(handlers::clusters))
        .route("/federation/v1alpha1/heartbeat", post(handlers::heartbeat))
        .route(
            "/federation/v1alpha1/sessions",
            post(handlers::create_session)
                .get(handlers::list_sessions)
                .delete(handlers::delete_sessions),
        )
        .route("/federation/v1alpha1/tokens", post(handlers::tokens))
        .route("/openapi.json", get(openapi::document))
        .route("/swagger", get(openapi::redirect))
        .route("/swagger/{*rest}", get(openapi::redirect))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
                .advice("see /openapi.json for the routes")
        })
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// Per request: limits, request ID, in-flight gauge, metrics, error body completion, one log line per error.
async fn observe(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        })
        .map(str::to_string)
        .unwrap_or_else(|| hex::encode(rand::random::<[u8; 8]>()));
    req.extensions_mut().insert(RequestId(id.clone()));

    let (http_span, op_span) = spans(&req, &method, &route, &id);
    let gauge = app.metrics.in_flight.with_label_values(&[&route]);
    gauge.inc();
    let mut response = match limits(&req) {
        Err(e) => e.into_response(),
        Ok(()) => {
            // Bound every request by the write timeout; long-polls end 2 s before it (api.md §5).
            let run = next.run(req).instrument(op_span.clone());
            match tokio::time::timeout(app.settings.write_timeout, run).await {
                Ok(r) => r,
                Err(_) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    "the request took too long",
                )
                .retry_after(app.settings.retry_after())
                .into_response(),
            }
        }
    };
    gauge.dec();

    // axum's own 405 has the Allow header but no body: give it the common error shape.
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && response.extensions().get::<ApiError>().is_none()
    {
        let allow = response.headers().get(header::ALLOW).cloned();
        response = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed here"),
        )
        .advice("the Allow header lists the methods of this route; see /openapi.json")
        .into_response();
        if let Some(a) = allow {
            response.headers_mut().insert(header::ALLOW, a);
        }
    }
    let mut error_code = None;
    if let Some(e) = response.extensions_mut().remove::<ApiError>() {
        error_code = Some(e.code);
        let body = ErrorResponse {
            request_id: id.clone(),
            ..e.body()
        };
        let level_error = e.status.is_server_error();
        if level_error {
            tracing::warn!(request_id = %id, route = %route, status = e.status.as_u16(), code = e.code, detail = e.internal.as_deref().unwrap_or(""), "{}", e.message);
        } else {
            tracing::info!(request_id = %id, route = %route, status = e.status.as_u16(), code = e.code, "{}", e.message);
        }
        let headers = std::mem::take(response.headers_mut());
        response = (e.status, axum::Json(body)).into_response();
        for (k, v) in headers.iter() {
            if k != header::CONTENT_LENGTH && k != header::CONTENT_TYPE {
                response.headers_mut().insert(k, v.clone());
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let status = response.status().as_u16().to_string();
    http_span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        http_span.record("otel.status_code", "ERROR");
    }
    op_span.record("tka.waited_ms", started.elapsed().as_millis() as u64);
    op_span.record(
        "tka.outcome",
        match response.status().as_u16() {
            200 => "ok",
            202 => "pending",
            _ => error_code.unwrap_or("error"),
        },
    );
    app.metrics
        .requests
        .with_label_values(&[&method, &route, &status])
        .inc();
    app.metrics
        .request_duration
        .with_label_values(&[&method, &route, &status])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The request's spans (observability.md §4): `http.server`, continuing the caller's W3C trace context, and
/// for the session routes an operation span (`login`, `logout`, `kubeconfig`, `exec_credential`) the
/// handlers record the session facts on. Other routes run directly in `http.server`.
fn spans(req: &Request, method: &str, route: &str, id: &str) -> (Span, Span) {
    use crate::telemetry::otel;
    use tracing::field::Empty;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let http = tracing::info_span!("http.server", otel.kind = "server", otel.status_code = Empty,
        http.request.method = %method, http.route = %route, http.response.status_code = Empty, tka.request_id = %id);
    let caller = otel::extract(req.headers());
    let _ = http.set_parent(caller.clone());
    otel::tag_log_ids(&http, &caller);
    let operation = match (method, route.strip_prefix("/api/v1alpha1/")) {
        ("POST", Some("login")) => "login",
        ("POST", Some("logout")) => "logout",
        ("GET", Some("kubeconfig")) => "kubeconfig",
        ("GET", Some("exec-credential")) => "exec_credential",
        _ => return (http.clone(), http),
    };
    let op = tracing::info_span!(parent: &http, "operation", otel.name = operation, tka.session = Empty,
        tka.role = Empty, tka.period = Empty, tka.rule.priority = Empty, tka.outcome = Empty, tka.waited_ms = Empty);
    otel::tag_log_ids(&op, &caller);
    (http, op)
}

fn limits(req: &Request) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        )
        .advice("tka requests need no body; send the parameters in the query string"));
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADERS {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "the request headers are too large",
        )
        .advice(format!(
            "keep request headers below {} KiB",
            MAX_HEADERS / 1024
        )));
    }
    Ok(())
}
