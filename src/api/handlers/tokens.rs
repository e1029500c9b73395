//! Token-minting routes: `GET /kubeconfig` and `GET /exec-credential` (api.md §4.3, §4.6).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use kube::ResourceExt;
use serde_json::Value;

use crate::api::auth::{self, Caller};
use crate::api::error::ApiError;
use crate::api::sessions::{self, State as SessionState};
use crate::api::{App, RemoteAddr};
use crate::model::kubeconfig::{self, Auth, ClusterEntry, Naming};
use crate::model::wire::{self, ExecCredential, TkaClusterInfo};
use crate::operator::crd::TkaSignin;
use crate::operator::token::{self, Minted};

use super::*;

/// Mints a token for a ready session and logs the audit line (never the token).
pub(super) async fn mint(
    app: &App,
    s: &TkaSignin,
    kind: &'static str,
    seconds: i64,
    request_id: &str,
) -> Result<Minted, ApiError> {
    let started = Instant::now();
    let r = token::mint(
        &app.client,
        &app.settings.namespace,
        s,
        seconds,
        &app.settings.token_audiences,
    )
    .await;
    let result = if r.is_ok() { "success" } else { "error" };
    app.metrics
        .tokens_issued
        .with_label_values(&[kind, result])
        .inc();
    app.metrics
        .token_request_duration
        .with_label_values(&[result])
        .observe(started.elapsed().as_secs_f64());
    match r {
        Ok(m) => {
            app.expiries.notify(&s.name_any(), m.expires_at);
            tracing::info!(audit = true, event = "token_issued", user = %s.spec.username, node = %s.spec.node, role = %s.spec.role,
                cluster = %app.settings.cluster_name(), session = %s.name_any(), jti = m.jti.as_deref().unwrap_or(""),
                until = %wire::rfc3339(m.expires_at), request_id = %request_id, kind, "token issued");
            Ok(m)
        }
        Err(token::TokenError::NotReady | token::TokenError::SecretGone) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "session_changing",
            "the session is being re-provisioned",
        )
        .retry_after(app.settings.retry_after())),
        Err(e) => Err(ApiError::kube(e, app.settings.retry_after())),
    }
}

pub(super) fn kubeconfig_doc(
    app: &App,
    s: &TkaSignin,
    info: &TkaClusterInfo,
    auth: Auth,
    format: Format,
) -> Value {
    let entry = own_entry(app, s, info, auth);
    document(app, &s.spec.username, &[entry], format)
}

/// This cluster's kubeconfig entry for a session.
pub(super) fn own_entry(
    app: &App,
    s: &TkaSignin,
    info: &TkaClusterInfo,
    auth: Auth,
) -> ClusterEntry {
    ClusterEntry {
        name: app.settings.cluster_name().to_string(),
        server_url: info.server_url.clone(),
        ca_data: info.ca_data.clone(),
        insecure_skip_tls_verify: info.insecure_skip_tls_verify,
        namespace: s.spec.namespaces.first().cloned(),
        auth,
        names: None,
    }
}

/// A kubeconfig of `entries` (the first one is the current context) in the asked-for shape.
pub(super) fn document(app: &App, login: &str, entries: &[ClusterEntry], format: Format) -> Value {
    let naming = Naming {
        login: login.to_string(),
        user_prefix: app.settings.user_prefix.clone(),
        context_prefix: app.settings.context_prefix.clone(),
        tka_server: app.settings.self_url.clone(),
    };
    match format {
        Format::Legacy => kubeconfig::legacy(&naming, entries),
        Format::V1 => kubeconfig::v1(&naming, entries),
    }
}

/// Everything before minting a token (`/kubeconfig`, `/exec-credential`): identity, a grant for this
/// cluster, a ready session, and a current rule that still carries the session's role. `Err(response)` is
/// the pending answer.
pub(super) async fn mintable_session(
    app: &App,
    remote: std::net::SocketAddr,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<Result<Arc<TkaSignin>, Response>, ApiError> {
    let caller = app.identify(remote, headers).await?;
    direct_use(app)?;
    auth::grant(&caller, &app.settings.auth).inspect_err(|e| app.reject(e))?;
    let s = match ready_session(app, &caller, q).await? {
        Ok(s) => s,
        Err(pending) => return Ok(Err(pending)),
    };
    auth::still_granted(&caller, &app.settings.auth, &s.spec.role)
        .inspect_err(|e| app.reject(e))?;
    Ok(Ok(s))
}

/// Session checks shared by `/kubeconfig` and `/exec-credential`: exists, not expired, ready (or 202).
pub(super) async fn ready_session(
    app: &App,
    caller: &Caller,
    q: &HashMap<String, String>,
) -> Result<Result<Arc<TkaSignin>, Response>, ApiError> {
    let wait = wait_param(q, app)?;
    let Some(s) = lookup(app, caller).await? else {
        return Err(ApiError::not_signed_in(StatusCode::UNAUTHORIZED));
    };
    if sessions::expired(&s, Timestamp::now()) || s.metadata.deletion_timestamp.is_some() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "session_expired",
            "your session has ended",
        )
        .advice("run `tka login`"));
    }
    let s = settle(app, s, wait).await?;
    match sessions::state(&s) {
        SessionState::Ready => Ok(Ok(s)),
        SessionState::Pending => Ok(Err(pending(app, StatusCode::ACCEPTED, None))),
        SessionState::Failed { reason, message } => Err(failed(&reason, &message)),
    }
}

/// How a kubeconfig's user authenticates: the exec plugin, or a token minted now for the rest of the session.
pub(super) async fn kubeconfig_auth(
    app: &App,
    s: &TkaSignin,
    exec: bool,
    rid: &str,
) -> Result<Auth, ApiError> {
    if exec {
        return Ok(Auth::Exec {
            server: app.settings.self_url.clone(),
            auto_login: false,
        });
    }
    let now = Timestamp::now();
    let secs = token::kubeconfig_seconds(sessions::until(s).unwrap_or(now), now);
    Ok(Auth::Token(
        mint(app, s, "kubeconfig", secs, rid).await?.token,
    ))
}

// ---------------------------------------------------------------------------------------------------------
// Handlers

/// GET /kubeconfig (api.md §4.3).
pub async fn kubeconfig(
    State(app): AppState,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(crate::api::RequestId(rid)): Extension<crate::api::RequestId>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let (format, exec_auth) = format_param(&q)?;
    let (media, yaml) = negotiate(&headers);
    let format = match (media, format) {
        (Media::V1, _) | (_, Some(Format::V1)) => Format::V1,
        _ if yaml => Format::V1, // YAML is always the loadable v1 document
        _ => Format::Legacy,
    };
    let federated = !app
        .federation
        .healthy_members(std::time::Instant::now())
        .is_empty();
    let (doc, partial) = if federated {
        let caller = app.identify(remote, &headers).await?;
        super::relay::kubeconfig(&app, &caller, &q, format, exec_auth, &rid).await?
    } else {
        let s = match mintable_session(&app, remote, &headers, &q).await? {
            Ok(s) => s,
            Err(pending) => return Ok(pending),
        };
        let info = cluster_info(&app)?;
        let auth = kubeconfig_auth(&app, &s, exec_auth, &rid).await?;
        (kubeconfig_doc(&app, &s, &info, auth, format), Vec::new())
    };
    let content_type = match (media, yaml) {
        (Media::V1, true) => "application/vnd.tka.kubeconfig.v1+yaml",
        (Media::V1, false) => "application/vnd.tka.kubeconfig.v1+json",
        (Media::Plain, true) => "application/yaml",
        (Media::Plain, false) => "application/json",
    };
    let body = if yaml {
        serde_yaml::to_string(&doc).map_err(ApiError::internal_error)?
    } else {
        doc.to_string()
    };
    let mut r = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response();
    // Clusters that failed: the kubeconfig format has no room for errors (federation.md §5).
    if let Ok(v) = axum::http::HeaderValue::from_str(&partial.join(","))
        && !partial.is_empty()
    {
        r.headers_mut().insert("tka-partial", v);
    }
    Ok(r)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Media {
    Plain,
    V1,
}

/// Picks the representation from `Accept`, honouring q-values: (explicit v1 media type?, YAML?).
pub(super) fn negotiate(headers: &HeaderMap) -> (Media, bool) {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut best: Option<(f32, Media, bool)> = None;
    for part in accept.split(',') {
        let mut pieces = part.split(';');
        let media = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = pieces
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|v| v.trim().parse::<f32>().ok())
            })
            .next()
            .unwrap_or(1.0);
        let kind = match media.as_str() {
            "application/yaml" | "text/yaml" | "application/x-yaml" => (Media::Plain, true),
            "application/vnd.tka.kubeconfig.v1+yaml" => (Media::V1, true),
            "application/vnd.tka.kubeconfig.v1+json" => (Media::V1, false),
            "application/json" | "*/*" | "application/*" => (Media::Plain, false),
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _, _)| q > bq) {
            best = Some((q, kind.0, kind.1));
        }
    }
    best.map_or((Media::Plain, false), |(_, m, y)| (m, y))
}

pub(super) async fn exec_credential_for(
    app: &App,
    s: &TkaSignin,
    api_version: &str,
    rid: &str,
) -> Result<ExecCredential, ApiError> {
    let until = sessions::until(s).unwrap_or_else(Timestamp::now);
    let secs = token::exec_seconds(until, Timestamp::now(), app.settings.exec_credential_ttl);
    let m = mint(app, s, "exec", secs, rid).await?;
    Ok(ExecCredential::new(
        api_version,
        m.token,
        wire::rfc3339(m.expires_at),
    ))
}

/// GET /exec-credential (api.md §4.6).
pub async fn exec_credential(
    State(app): AppState,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(crate::api::RequestId(rid)): Extension<crate::api::RequestId>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let api_version = match q.get("apiVersion").map(String::as_str) {
        None | Some("") => wire::EXEC_API_V1,
        Some(v) if v == wire::EXEC_API_V1 || v == wire::EXEC_API_V1BETA1 => v,
        Some(other) => {
            return Err(bad_query(
                format!("apiVersion={other:?} is not supported"),
                "use client.authentication.k8s.io/v1 or v1beta1",
            ));
        }
    }
    .to_string();
    if let Some(c) = q
        .get("cluster")
        .filter(|c| !c.is_empty() && c.as_str() != app.settings.cluster_name())
    {
        if !app.federation.is_member() {
            let caller = app.identify(remote, &headers).await?;
            let cred = super::relay::exec_credential(&app, &caller, c, &api_version, &rid).await?;
            return Ok((
                StatusCode::OK,
                [(header::CACHE_CONTROL, "no-store")],
                axum::Json(cred),
            )
                .into_response());
        }
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_cluster",
            format!("this server does not serve cluster {c:?}"),
        )
        .advice("run `tka get clusters` to list the clusters you can use"));
    }
    let s = match mintable_session(&app, remote, &headers, &q).await? {
        Ok(s) => s,
        Err(pending) => return Ok(pending),
    };
    let cred = exec_credential_for(&app, &s, &api_version, &rid).await?;
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(cred),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn accept_honours_q_values_and_vendor_types() {
        assert_eq!(negotiate(&HeaderMap::new()), (Media::Plain, false));
        assert_eq!(negotiate(&accept("application/yaml")), (Media::Plain, true));
        assert_eq!(
            negotiate(&accept("application/json;q=0.5, text/yaml")),
            (Media::Plain, true)
        );
        assert_eq!(
            negotiate(&accept("application/yaml;q=0.2, application/json;q=0.9")),
            (Media::Plain, false)
        );
        assert_eq!(
            negotiate(&accept("application/vnd.tka.kubeconfig.v1+json")),
            (Media::V1, false)
        );
        assert_eq!(
            negotiate(&accept("application/x-yaml;q=0")),
            (Media::Plain, false)
        );
    }
}
