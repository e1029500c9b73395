//! Per request: limits, request ID, in-flight gauge, metrics, spans, error body completion and one log
//! line per error. Runs around every route, before any handler.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{Instrument, Span};

use super::call::RequestId;
use super::error::ApiError;
use super::limits::PeerAddr;
use super::service::Service;
use crate::model::wire::ErrorResponse;

/// Largest request body accepted (clients never need one).
pub const MAX_BODY: u64 = 64 * 1024;
/// Largest total size of request headers.
pub const MAX_HEADERS: usize = 16 * 1024;

/// Per request: limits, request ID, in-flight gauge, metrics, error body completion, one log line per error.
/// Runs outside [`limit`], so refused requests are counted and get the common error body too.
pub async fn observe(State(svc): State<Arc<Service>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let id = request_id(req.headers());
    req.extensions_mut().insert(RequestId(id.clone()));

    let (http_span, op_span) = spans(&req, &method, &route, &id);
    let gauge = svc.metrics().in_flight.with_label_values(&[&route]);
    gauge.inc();
    let response = match limits(&req) {
        Err(e) => e.into_response(),
        Ok(()) => {
            // Bound every request by the write timeout; long-polls end 2 s before it.
            let run = next.run(req).instrument(op_span.clone());
            match tokio::time::timeout(svc.settings.write_timeout, run).await {
                Ok(r) => r,
                Err(_) => ApiError::timeout(svc.settings.retry_after()).into_response(),
            }
        }
    };
    gauge.dec();
    let (mut response, error_code) = finish_error(response, &method, &route, &id);
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let code = response.status().as_u16();
    http_span.record("http.response.status_code", code);
    if response.status().is_server_error() {
        http_span.record("otel.status_code", "ERROR");
    }
    op_span.record("tka.waited_ms", started.elapsed().as_millis() as u64);
    let outcome = match code {
        200 => "ok",
        202 => "pending",
        _ => error_code.unwrap_or("error"),
    };
    op_span.record("tka.outcome", outcome);
    let labels = [method.as_str(), route.as_str(), &code.to_string()];
    let m = svc.metrics();
    m.requests.with_label_values(&labels).inc();
    m.request_duration
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The peer's request budget, before anything that costs: WhoIs, parsing, the handler. Keyed by the
/// peer's tailnet address (set by the connection loop); federation routes draw on an admitted federation
/// peer's own budget.
pub async fn limit(State(svc): State<Arc<Service>>, req: Request, next: Next) -> Response {
    if let Some(PeerAddr(peer)) = req.extensions().get::<PeerAddr>().copied() {
        let federation = req.uri().path().starts_with("/federation/");
        if !svc.limits().request(peer, federation) {
            let e = ApiError::rate_limited();
            svc.reject(&e);
            return e.into_response();
        }
    }
    next.run(req).await
}

/// The caller's `X-Request-Id` when it is sane, else a fresh one.
fn request_id(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        })
        .map(str::to_string)
        .unwrap_or_else(|| hex::encode(rand::random::<[u8; 8]>()))
}

/// Gives every error the common body (with the request ID) and logs it once; returns its code.
fn finish_error(
    mut response: Response,
    method: &str,
    route: &str,
    id: &str,
) -> (Response, Option<&'static str>) {
    // axum's own 405 has the Allow header but no body, its 413 (a streamed body over the limit) a plain
    // text one: give both the common error shape.
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && response.extensions().get::<ApiError>().is_none()
    {
        let allow = response.headers().get(header::ALLOW).cloned();
        response = ApiError::method_not_allowed(method).into_response();
        if let Some(a) = allow {
            response.headers_mut().insert(header::ALLOW, a);
        }
    }
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE
        && response.extensions().get::<ApiError>().is_none()
    {
        response = ApiError::payload_too_large().into_response();
    }
    let Some(e) = response.extensions_mut().remove::<ApiError>() else {
        return (response, None);
    };
    let body = ErrorResponse {
        request_id: id.to_string(),
        ..e.body()
    };
    if e.status.is_server_error() {
        tracing::warn!(request_id = %id, route = %route, status = e.status.as_u16(), code = e.code, detail = e.internal.as_deref().unwrap_or(""), "{}", e.message);
    } else {
        tracing::info!(request_id = %id, route = %route, status = e.status.as_u16(), code = e.code, "{}", e.message);
    }
    let headers = std::mem::take(response.headers_mut());
    let mut response = (e.status, axum::Json(body)).into_response();
    for (k, v) in headers.iter() {
        if k != header::CONTENT_LENGTH && k != header::CONTENT_TYPE {
            response.headers_mut().insert(k, v.clone());
        }
    }
    (response, Some(e.code))
}

/// The request's spans: `http.server`, continuing the caller's W3C trace context, and
/// for the session routes an operation span (`login`, `logout`, `kubeconfig`, `exec_credential`) the
/// handlers record the session facts on. Other routes run directly in `http.server`.
fn spans(req: &Request, method: &str, route: &str, id: &str) -> (Span, Span) {
    use crate::telemetry::{logging, otel};
    use tracing::field::Empty;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let http = tracing::info_span!("http.server", otel.kind = "server", otel.status_code = Empty,
        http.request.method = %method, http.route = %route, http.response.status_code = Empty, tka.request_id = %id);
    let caller = otel::extract(req.headers());
    let _ = http.set_parent(caller.clone());
    logging::tag_log_ids(&http, &caller);
    let operation = match (method, route.strip_prefix("/api/v1alpha1/")) {
        ("POST", Some("login")) => "login",
        ("POST", Some("logout")) => "logout",
        ("GET", Some("kubeconfig")) => "kubeconfig",
        ("GET", Some("exec-credential")) => "exec_credential",
        _ => return (http.clone(), http),
    };
    let op = tracing::info_span!(parent: &http, "operation", otel.name = operation, tka.session = Empty,
        tka.role = Empty, tka.period = Empty, tka.rule.priority = Empty, tka.outcome = Empty, tka.waited_ms = Empty);
    logging::tag_log_ids(&op, &caller);
    (http, op)
}

fn limits(req: &Request) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::payload_too_large());
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADERS {
        return Err(ApiError::headers_too_large(MAX_HEADERS));
    }
    Ok(())
}
