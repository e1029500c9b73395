//! Read-only routes: `/cluster-info`, `/whoami`, `/clusters`.

use axum::http::HeaderValue;
use axum::response::Response;

use super::Svc;
use crate::api::call::Call;
use crate::api::error::ApiError;
use crate::api::params;
use crate::api::render;

/// GET /cluster-info: this cluster's API endpoint and CA, for callers with a grant here.
pub async fn cluster_info(svc: Svc, call: Call) -> Result<Response, ApiError> {
    let caller = svc.caller(call.remote, &call.headers).await?;
    Ok(render::ok(svc.cluster_info_for(&caller)?))
}

/// GET /whoami: identity and grant evaluation, without side effects.
pub async fn whoami(svc: Svc, call: Call) -> Result<Response, ApiError> {
    let caller = svc.caller(call.remote, &call.headers).await?;
    Ok(render::ok(
        svc.whoami(&caller, params::text(&call.query, "role")),
    ))
}

/// GET /clusters: the clusters the caller may use (only this one without federation).
pub async fn clusters(svc: Svc, call: Call) -> Result<Response, ApiError> {
    let caller = svc.caller(call.remote, &call.headers).await?;
    let c = svc.clusters(&caller);
    let mut r = render::ok(c.list);
    if c.rebuilding {
        r.headers_mut()
            .insert("tka-rebuilding", HeaderValue::from_static("true"));
    }
    Ok(r)
}
