//! Service answers as HTTP responses: status, `Retry-After` on 202, `Cache-Control: no-store` on anything
//! carrying a token, the kubeconfig representations.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::error::ApiError;
use super::params::Media;
use super::service::kubeconfig::Document;
use super::service::local::Progress;
use super::service::login::LoginAnswer;

/// 200 with a JSON body.
pub fn ok(body: impl Serialize) -> Response {
    Json(body).into_response()
}

/// 200 with a body that carries a credential: never cached.
pub fn secret(body: impl Serialize) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// 202: ask again after `retry_after` seconds.
pub fn pending(body: Option<Value>, retry_after: u64) -> Response {
    let mut r = match body {
        Some(b) => (StatusCode::ACCEPTED, Json(b)).into_response(),
        None => StatusCode::ACCEPTED.into_response(),
    };
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    r
}

/// A login: 200 when ready (never cached when it carries a kubeconfig or credential), else 202.
pub fn login(a: LoginAnswer, with_secrets: bool, retry_after: u64) -> Response {
    let body = serde_json::to_value(a.body).unwrap_or_default();
    match (a.ready, with_secrets) {
        (true, true) => secret(body),
        (true, false) => ok(body),
        (false, _) => pending(Some(body), retry_after),
    }
}

/// A token-carrying answer that may still be pending.
pub fn progress<T: Serialize>(p: Progress<T>, retry_after: u64) -> Response {
    match p {
        Progress::Ready(body) => secret(body),
        Progress::Pending => pending(None, retry_after),
    }
}

/// A kubeconfig as JSON or YAML, plain or the v1 vendor type; failed clusters in `Tka-Partial`.
pub fn kubeconfig(d: Document, media: Media, yaml: bool) -> Result<Response, ApiError> {
    let content_type = match (media, yaml) {
        (Media::V1, true) => "application/vnd.tka.kubeconfig.v1+yaml",
        (Media::V1, false) => "application/vnd.tka.kubeconfig.v1+json",
        (Media::Plain, true) => "application/yaml",
        (Media::Plain, false) => "application/json",
    };
    let body = if yaml {
        serde_yaml::to_string(&d.doc).map_err(ApiError::internal_error)?
    } else {
        d.doc.to_string()
    };
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-store"),
    ];
    let mut r = (StatusCode::OK, headers, body).into_response();
    // The kubeconfig format has no room for errors: failed clusters are named in a header.
    if !d.partial.is_empty()
        && let Ok(v) = HeaderValue::from_str(&d.partial.join(","))
    {
        r.headers_mut().insert("tka-partial", v);
    }
    Ok(r)
}
