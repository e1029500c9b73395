//! Federation endpoints under `/federation/v1alpha1/` (federation.md §3, §7): the primary's heartbeat, and
//! the member's session and token endpoints, which only the configured primary may call (WhoIs). The member
//! trusts the primary's word on the user and the rule, but applies its own allow-list and maximum period.

use std::collections::HashMap;
use std::time::Instant;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::de::DeserializeOwned;

use crate::api::RemoteAddr;
use crate::api::error::ApiError;
use crate::api::sessions::{self, NewSession, State as SessionState};
use crate::federation::wire::{
    HeartbeatAck, MemberSession, SessionRef, SessionRequest, TokenAnswer, TokenCall,
};
use crate::federation::{FedError, trust};
use crate::identity::{IdentityError, PeerIdentity};
use crate::model::duration::GoDuration;
use crate::model::naming;
use crate::model::rules::Reject;
use crate::model::wire;
use crate::operator::crd::{Origin, TkaSignin};
use crate::operator::token;

use super::login::provision;
use super::tokens::mint;
use super::*;

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| FedError::InvalidBody(e.to_string()).into())
}

/// WhoIs of the connection, without the user-login requirements of the user API (members and primaries
/// are usually tagged nodes).
async fn peer(
    app: &App,
    remote: std::net::SocketAddr,
    headers: &HeaderMap,
) -> Result<PeerIdentity, ApiError> {
    if headers.contains_key("tailscale-funnel-request") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "funnel_not_allowed",
            "requests through Tailscale Funnel are not allowed",
        ));
    }
    match app.identity.whois(remote).await {
        Ok(Some(p)) if !p.via_funnel => Ok(p),
        Ok(Some(_)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "funnel_not_allowed",
            "requests through Tailscale Funnel are not allowed",
        )),
        Ok(None) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "unknown_peer",
            "the tailnet does not know who you are",
        )),
        Err(IdentityError::Unavailable(d)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "identity_unavailable",
            "the tailnet identity service is not available",
        )
        .retry_after(app.settings.retry_after())
        .internal(d)),
    }
}

/// Member side: the caller must be the node named in `federation.loginServer`.
async fn from_primary(
    app: &App,
    remote: std::net::SocketAddr,
    headers: &HeaderMap,
) -> Result<PeerIdentity, ApiError> {
    let Some(primary) = app.federation.primary_host.clone() else {
        return Err(FedError::WrongRole("member").into());
    };
    let p = peer(app, remote, headers).await?;
    trust::check_primary(&p, &primary)
        .map_err(ApiError::from)
        .inspect_err(|e| app.reject(e))?;
    Ok(p)
}

fn count(app: &App, operation: &str, result: &str) {
    app.metrics
        .federation_requests
        .with_label_values(&[app.settings.cluster_name(), operation, result])
        .inc();
}

/// POST /federation/v1alpha1/heartbeat (primary).
pub async fn heartbeat(
    State(app): AppState,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if app.federation.is_member() {
        return Err(FedError::WrongRole("primary").into());
    }
    let p = peer(&app, remote, &headers).await?;
    let hb: crate::federation::wire::Heartbeat = decode(&body)?;
    let cluster = hb.cluster_name.clone();
    let fed = &app.federation;
    let admitted = trust::admit(
        &p,
        &hb,
        &fed.settings.member_tags,
        &fed.settings.member_cap_name,
    )
    .and_then(|()| {
        let now = Instant::now();
        let mut reg = fed.registry.lock().expect("lock poisoned");
        let new = reg.get(&cluster, now).is_none();
        reg.register(hb, &p.node_fqdn, &p.node_stable_id, now)?;
        let (healthy, stale) = reg.counts(now);
        app.metrics
            .federation_members
            .with_label_values(&["healthy"])
            .set(healthy as i64);
        app.metrics
            .federation_members
            .with_label_values(&["stale"])
            .set(stale as i64);
        Ok(new)
    });
    match admitted {
        Ok(new) => {
            if new {
                tracing::info!(cluster = %cluster, node = %p.node_fqdn, "federation member registered");
            }
            retry_revocations(app.clone(), &cluster);
            // Known clusters only: a rejected name is attacker-chosen and must not become a label.
            app.metrics
                .federation_requests
                .with_label_values(&[&cluster, "heartbeat", "success"])
                .inc();
            Ok(axum::Json(HeartbeatAck {
                accepted: true,
                primary_cluster: app.settings.cluster_name().to_string(),
                heartbeat_interval: GoDuration::from_std(fed.settings.heartbeat_interval)
                    .to_string(),
            })
            .into_response())
        }
        Err(e) => {
            tracing::warn!(cluster = %cluster, node = %p.node_fqdn, code = e.code(), "federation heartbeat refused: {e}");
            let e = ApiError::from(e);
            app.reject(&e);
            Err(e)
        }
    }
}

/// A member that missed logouts is back: send them again (in the background; the heartbeat answers now).
fn retry_revocations(app: std::sync::Arc<App>, cluster: &str) {
    let pending = app.federation.take_retries(cluster, Instant::now());
    if pending.is_empty() {
        return;
    }
    let cluster = cluster.to_string();
    tokio::spawn(async move {
        let member = {
            let reg = app.federation.registry.lock().expect("lock poisoned");
            reg.get(&cluster, Instant::now()).map(|(m, _)| m.clone())
        };
        let Some(m) = member else { return };
        let rid = hex::encode(rand::random::<[u8; 8]>());
        for r in pending {
            let out: Result<crate::federation::client::Answer<serde_json::Value>, _> =
                super::fanout::member_call(
                    &app,
                    &m,
                    http::Method::DELETE,
                    &format!("{}/sessions", crate::federation::PREFIX),
                    Some(&r),
                    "signout",
                    &rid,
                )
                .await;
            match out {
                Ok(_) | Err(crate::federation::client::CallError::Status { status: 404, .. }) => {
                    tracing::info!(cluster = %cluster, "missed federated logout delivered");
                }
                Err(_) => app.federation.retry_later(&cluster, r),
            }
        }
    });
}

/// POST /federation/v1alpha1/sessions (member).
pub async fn create_session(
    State(app): AppState,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(crate::api::RequestId(rid)): Extension<crate::api::RequestId>,
    headers: HeaderMap,
    Query(q): Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let primary = from_primary(&app, remote, &headers).await?;
    let wait = wait_param(&q, &app)?;
    let req: SessionRequest = decode(&body)?;
    let r = member_session(&app, &primary, req, wait, &rid).await;
    count(&app, "signin", if r.is_ok() { "success" } else { "error" });
    r
}

async fn member_session(
    app: &App,
    primary: &PeerIdentity,
    req: SessionRequest,
    wait: Option<std::time::Duration>,
    rid: &str,
) -> Result<Response, ApiError> {
    if req.login_name.is_empty() || req.node_id.is_empty() || req.role.is_empty() {
        return Err(
            FedError::InvalidBody("login_name, node_id and role are required".into()).into(),
        );
    }
    // The member's own limits hold whatever the primary asks for.
    let policy = &app.settings.auth.policy;
    if !policy.allowed_roles.is_empty() && !policy.allowed_roles.contains(&req.role) {
        return Err(Reject::RoleNotAllowed {
            role: req.role,
            allowed: policy.allowed_roles.clone(),
        }
        .into());
    }
    let mut period = GoDuration::parse(&req.period)
        .map_err(|e| FedError::InvalidBody(format!("period: {e}")))?
        .as_std();
    if period < crate::model::rules::MIN_PERIOD {
        return Err(FedError::InvalidBody("period is shorter than 10m".into()).into());
    }
    if let Some(max) = policy.max_period.filter(|m| !m.is_zero()) {
        period = period.min(max);
    }
    if let Some(bad) = req.namespaces.iter().find(|n| !naming::is_dns1123_label(n)) {
        return Err(FedError::InvalidBody(format!("namespace {bad:?} is not valid")).into());
    }
    crate::model::rules::check_protected(&req.role, &req.namespaces, policy)?;
    let new = NewSession {
        login: req.login_name,
        node: req.node,
        node_id: req.node_id,
        node_ip: req.node_ip,
        role: req.role,
        period,
        namespaces: req.namespaces,
        origin: Origin {
            kind: "federation".into(),
            primary: primary.node_fqdn.clone(),
        },
    };
    let (s, state) = provision(app, &new, req.replace, wait, rid).await?;
    match state {
        None | Some(SessionState::Pending) => Ok(pending(
            app,
            StatusCode::ACCEPTED,
            Some(response_for(app, &s)),
        )),
        Some(SessionState::Failed { reason, message }) => Err(failed(&reason, &message)),
        Some(SessionState::Ready) => {
            Ok((StatusCode::OK, axum::Json(response_for(app, &s))).into_response())
        }
    }
}

fn federated(s: &TkaSignin) -> bool {
    s.spec
        .origin
        .as_ref()
        .is_some_and(|o| o.kind == "federation")
}

fn listed(s: &TkaSignin) -> MemberSession {
    MemberSession {
        login_name: s.spec.username.clone(),
        node_id: s.spec.node_id.clone(),
        node_ip: s.spec.node_ip.clone(),
        role: s.spec.role.clone(),
        until: sessions::until(s).map(wire::rfc3339).unwrap_or_default(),
        provisioned: sessions::state(s) == SessionState::Ready,
    }
}

/// GET /federation/v1alpha1/sessions (member): `?login_name=&node_id=` or `?origin=federation`.
pub async fn list_sessions(
    State(app): AppState,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    from_primary(&app, remote, &headers).await?;
    let now = Timestamp::now();
    let login = q.get("login_name").filter(|v| !v.is_empty());
    let node = q.get("node_id").filter(|v| !v.is_empty());
    let out: Vec<MemberSession> = app
        .sessions
        .all()
        .iter()
        .filter(|s| {
            federated(s) && s.metadata.deletion_timestamp.is_none() && !sessions::expired(s, now)
        })
        .filter(|s| login.is_none_or(|l| &s.spec.username == l))
        .filter(|s| node.is_none_or(|n| &s.spec.node_id == n))
        .map(|s| listed(s))
        .collect();
    Ok(axum::Json(out).into_response())
}

/// DELETE /federation/v1alpha1/sessions (member): only sessions the federation created.
pub async fn delete_sessions(
    State(app): AppState,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(crate::api::RequestId(rid)): Extension<crate::api::RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    from_primary(&app, remote, &headers).await?;
    let r: SessionRef = decode(&body)?;
    if r.login_name.is_empty() || (r.node_id.is_empty() && !r.all) {
        return Err(
            FedError::InvalidBody("login_name and node_id (or all) are required".into()).into(),
        );
    }
    let targets: Vec<_> = app
        .sessions
        .of_user(&naming::subject_key(&r.login_name))
        .into_iter()
        .filter(|s| federated(s) && s.metadata.deletion_timestamp.is_none())
        .filter(|s| r.all || s.spec.node_id == r.node_id)
        .collect();
    if targets.is_empty() {
        count(&app, "signout", "not_found");
        return Err(ApiError::not_signed_in(StatusCode::NOT_FOUND));
    }
    super::login::end_sessions(&app, &targets, &rid).await?;
    count(&app, "signout", "success");
    let out: Vec<MemberSession> = targets.iter().map(|s| listed(s)).collect();
    Ok(axum::Json(out).into_response())
}

/// POST /federation/v1alpha1/tokens (member): a token for a ready federated session.
pub async fn tokens(
    State(app): AppState,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(crate::api::RequestId(rid)): Extension<crate::api::RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    from_primary(&app, remote, &headers).await?;
    let t: TokenCall = decode(&body)?;
    let r = member_token(&app, t, &rid).await;
    count(&app, "token", if r.is_ok() { "success" } else { "error" });
    r
}

async fn member_token(app: &App, t: TokenCall, rid: &str) -> Result<Response, ApiError> {
    let kind: &'static str = match t.kind.as_str() {
        "kubeconfig" => "kubeconfig",
        "exec" => "exec",
        other => return Err(FedError::InvalidBody(format!("kind {other:?} is unknown")).into()),
    };
    let name = naming::signin_name(
        &naming::subject_key(&t.login_name),
        &naming::node_key(&t.node_id),
    );
    let s = match app.sessions.get(&name) {
        Some(s) => Some(s),
        None => app
            .sessions
            .api()
            .get_opt(&name)
            .await
            .map_err(|e| ApiError::kube(e, app.settings.retry_after()))?
            .map(std::sync::Arc::new),
    };
    let Some(s) = s.filter(|s| federated(s)) else {
        return Err(ApiError::not_signed_in(StatusCode::UNAUTHORIZED));
    };
    let now = Timestamp::now();
    if sessions::expired(&s, now) || s.metadata.deletion_timestamp.is_some() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "session_expired",
            "your session has ended",
        )
        .advice("run `tka login`"));
    }
    match sessions::state(&s) {
        SessionState::Pending => return Ok(pending(app, StatusCode::ACCEPTED, None)),
        SessionState::Failed { reason, message } => return Err(failed(&reason, &message)),
        SessionState::Ready => {}
    }
    let until = sessions::until(&s).unwrap_or(now);
    let secs = match kind {
        "exec" => token::exec_seconds(until, now, app.settings.exec_credential_ttl),
        _ => token::kubeconfig_seconds(until, now),
    };
    let m = mint(app, &s, kind, secs, rid).await?;
    Ok((
        StatusCode::OK,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::Json(TokenAnswer {
            token: m.token,
            expiration_timestamp: wire::rfc3339(m.expires_at),
        }),
    )
        .into_response())
}
