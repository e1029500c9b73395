//! Read-only routes: `/cluster-info`, `/whoami`, `/clusters` (api.md §4.5, §4.7).

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api::RemoteAddr;
use crate::api::auth;
use crate::api::error::ApiError;

use super::*;

/// GET /cluster-info (api.md §4.5).
pub async fn cluster_info_route(
    State(app): AppState,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = app.identify(remote, &headers).await?;
    auth::grant(&caller, &app.settings.auth).inspect_err(|e| app.reject(e))?;
    Ok(axum::Json(cluster_info(&app)?).into_response())
}

/// GET /whoami: identity and grant evaluation, without side effects; grant problems are reported, not raised.
pub async fn whoami(
    State(app): AppState,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let caller = app.identify(remote, &headers).await?;
    let values = caller
        .peer
        .cap_map
        .get(&app.settings.auth.cap_name)
        .cloned()
        .unwrap_or_default();
    let rules = crate::model::rules::parse_rules(&values);
    let (selected, reject) = match auth::evaluate(
        &caller,
        &app.settings.auth,
        q.get("role").map(String::as_str).filter(|r| !r.is_empty()),
    ) {
        Ok(rule) => (serde_json::to_value(rule).ok(), Value::Null),
        Err(e) => (None, json!({ "code": e.code, "message": e.message })),
    };
    Ok(axum::Json(json!({
        "login_name": caller.login,
        "node": caller.peer.node_fqdn,
        "node_id": caller.peer.node_stable_id,
        "tags": caller.peer.tags,
        "cluster": app.settings.cluster_name(),
        "rules": rules.map(|r| serde_json::to_value(r).unwrap_or_default()).unwrap_or_else(|_| Value::Array(values)),
        "selected": selected,
        "reject": reject,
    }))
    .into_response())
}

/// GET /clusters: the clusters the caller may use (only this one without federation).
pub async fn clusters(
    State(app): AppState,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = app.identify(remote, &headers).await?;
    let role = auth::evaluate(&caller, &app.settings.auth, None)
        .ok()
        .map(|r| r.role);
    let info = app.cluster_info.get().unwrap_or_default();
    let mut own = json!({
        "name": app.settings.cluster_name(),
        "labels": info.labels,
        "server_url": info.server_url,
        "status": "self",
        "role": role,
    });
    // After a primary (re)start the registry fills up within one heartbeat interval (federation.md §3:
    // "/clusters marks itself rebuilding: true"). The mark sits on the own entry, an added field, so the
    // body stays the array api.md §4.7 defines; the header is kept for clients that read it.
    let rebuilding = app.federation.rebuilding(std::time::Instant::now());
    if rebuilding {
        own["rebuilding"] = Value::Bool(true);
    }
    let mut list = vec![own];
    list.extend(super::relay::member_clusters(&app, &caller));
    let mut r = axum::Json(Value::Array(list)).into_response();
    if rebuilding {
        r.headers_mut().insert(
            "tka-rebuilding",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(r)
}
