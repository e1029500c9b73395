//! `POST/GET /login` and `POST /logout` (api.md §4.1, §4.2, §4.4).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use kube::ResourceExt;

use crate::api::RemoteAddr;
use crate::api::auth;
use crate::api::error::ApiError;
use crate::api::sessions::{self, NewSession, State as SessionState};
use crate::model::naming;
use crate::model::wire::{self};
use crate::operator::crd::TkaSignin;

use super::tokens::{exec_credential_for, kubeconfig_auth, kubeconfig_doc};
use super::*;

/// POST /login (api.md §4.1).
pub async fn login(
    State(app): AppState,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(crate::api::RequestId(rid)): Extension<crate::api::RequestId>,
    headers: HeaderMap,
    Query(q): Params,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let wait = wait_param(&q, &app)?;
    let replace = bool_param(&q, "replace")?;
    let (format, exec_auth) = format_param(&q)?;
    let include: Vec<String> = q
        .get("include")
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Some(bad) = include
        .iter()
        .find(|i| !matches!(i.as_str(), "kubeconfig" | "credential" | "cluster-info"))
    {
        return Err(bad_query(
            format!("include={bad:?} is unknown"),
            "include takes kubeconfig, credential and cluster-info",
        ));
    }
    if !include.is_empty() && wait.is_none() {
        return Err(bad_query("include needs wait".into(), "add wait=30s"));
    }
    let caller = app.identify(remote, &headers).await?;
    direct_use(&app)?;
    let only = cluster_params(raw.as_deref());
    if !app
        .federation
        .healthy_members(std::time::Instant::now())
        .is_empty()
    {
        let req = super::fanout::LoginRequest {
            caller,
            role: q.get("role").cloned().filter(|r| !r.is_empty()),
            only,
            wait,
            replace,
            include,
            format,
            exec_auth,
            rid,
        };
        return super::fanout::login(&app, req).await;
    }
    let rule = auth::evaluate(
        &caller,
        &app.settings.auth,
        q.get("role").map(String::as_str).filter(|r| !r.is_empty()),
    )
    .inspect_err(|e| {
        app.reject(e);
        let outcome = if e.status == StatusCode::CONFLICT {
            "conflict"
        } else if e.status == StatusCode::BAD_REQUEST {
            "invalid"
        } else {
            "forbidden"
        };
        app.metrics
            .login_attempts
            .with_label_values(&["", outcome])
            .inc();
    })?;
    let new = new_session(&caller, &rule);
    let (s, state) = provision(&app, &new, replace, wait, &rid).await?;
    let Some(state) = state else {
        app.metrics
            .login_attempts
            .with_label_values(&[&new.role, "success"])
            .inc();
        return Ok((StatusCode::ACCEPTED, axum::Json(response_for(&app, &s))).into_response());
    };
    match state {
        SessionState::Pending => {
            app.metrics
                .login_attempts
                .with_label_values(&[&new.role, "success"])
                .inc();
            Ok(pending(
                &app,
                StatusCode::ACCEPTED,
                Some(response_for(&app, &s)),
            ))
        }
        SessionState::Failed { reason, message } => {
            app.metrics
                .login_attempts
                .with_label_values(&[&new.role, "error"])
                .inc();
            app.metrics
                .login_duration
                .with_label_values(&["error"])
                .observe(started.elapsed().as_secs_f64());
            Err(failed(&reason, &message))
        }
        SessionState::Ready => {
            let mut body = response_for(&app, &s);
            add_includes(&app, &s, &mut body, &include, format, exec_auth, &rid).await?;
            app.metrics
                .login_attempts
                .with_label_values(&[&new.role, "success"])
                .inc();
            app.metrics
                .login_duration
                .with_label_values(&["success"])
                .observe(started.elapsed().as_secs_f64());
            let mut r = (StatusCode::OK, axum::Json(body)).into_response();
            if !include.is_empty() {
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            Ok(r)
        }
    }
}

/// The repeated `cluster=` query parameters (federation: limit the login's targets).
pub(super) fn cluster_params(raw: Option<&str>) -> Vec<String> {
    raw.unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.strip_prefix("cluster="))
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

/// The session a local login asks for.
pub(super) fn new_session(
    caller: &crate::api::auth::Caller,
    rule: &crate::model::rules::Rule,
) -> NewSession {
    NewSession {
        login: caller.login.clone(),
        node: caller.peer.node_fqdn.clone(),
        node_id: caller.peer.node_stable_id.clone(),
        node_ip: caller
            .peer
            .node_ip
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
        role: rule.role.clone(),
        period: rule.period.as_std(),
        namespaces: rule.namespaces.clone(),
        origin: NewSession::local_origin(),
    }
}

/// Steps 2–5 for one session on this cluster (a local login or a member's federated one): end conflicts,
/// clear an expired predecessor, write, and with `wait` wait for the controller. The state is `None` when
/// not waited for.
pub(super) async fn provision(
    app: &App,
    new: &NewSession,
    replace: bool,
    wait: Option<Duration>,
    rid: &str,
) -> Result<(Arc<TkaSignin>, Option<SessionState>), ApiError> {
    let name = new.name();
    end_conflicts(app, &new.login, new, replace).await?;
    clear_previous(app, &name).await?;
    let written = write_fresh(app, new).await?;
    let generation = written.metadata.generation.unwrap_or_default();
    tracing::info!(audit = true, event = "login", user = %new.login, node = %new.node, role = %new.role, cluster = %app.settings.cluster_name(),
        origin = %new.origin.kind, session = %name, until = %sessions::until(&written).map(wire::rfc3339).unwrap_or_default(), request_id = %rid, "login");
    let Some(wait) = wait else {
        return Ok((Arc::new(written), None));
    };
    let current = wait_ready(app, &name, generation, wait).await?;
    let s = match current {
        Some(s) if s.metadata.generation.unwrap_or_default() >= generation => s,
        _ => Arc::new(written),
    };
    let state = sessions::state(&s);
    Ok((s, Some(state)))
}

/// Step 2: live sessions of this user on other nodes with another role or scope are a 409, unless
/// `replace` ends them first.
async fn end_conflicts(
    app: &App,
    login: &str,
    new: &NewSession,
    replace: bool,
) -> Result<(), ApiError> {
    let now = Timestamp::now();
    let name = new.name();
    let conflicts: Vec<Arc<TkaSignin>> = app
        .sessions
        .of_user(&naming::subject_key(login))
        .into_iter()
        .filter(|s| s.name_any() != name && crate::operator::reconcile::is_live(s, now))
        .filter(|s| s.spec.role != new.role || s.spec.namespaces != new.namespaces)
        .collect();
    if conflicts.is_empty() {
        return Ok(());
    }
    if !replace {
        app.metrics
            .login_attempts
            .with_label_values(&[&new.role, "conflict"])
            .inc();
        let list: Vec<String> = conflicts
            .iter()
            .map(|s| format!("{} on {}", s.spec.role, s.spec.node))
            .collect();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "role_conflict",
            format!(
                "you have live sessions with another role: {}",
                list.join(", ")
            ),
        )
        .advice("log in with `--replace` to end them, or log in with the same role (`--role`)"));
    }
    for s in conflicts {
        app.sessions
            .delete(&s)
            .await
            .map_err(|e| ApiError::kube(e, app.settings.retry_after()))?;
        app.metrics
            .revocations
            .with_label_values(&["replaced"])
            .inc();
    }
    Ok(())
}

fn still_ending(app: &App) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "session_ending",
        "your previous session is still being cleaned up",
    )
    .retry_after(app.settings.retry_after())
}

/// Step 3: an expired session starts over; one being deleted must be gone first (bounded by 5 s).
async fn clear_previous(app: &App, name: &str) -> Result<(), ApiError> {
    let Some(existing) = app.sessions.get(name) else {
        return Ok(());
    };
    let now = Timestamp::now();
    if existing.metadata.deletion_timestamp.is_none() && sessions::expired(&existing, now) {
        app.sessions
            .delete(&existing)
            .await
            .map_err(|e| ApiError::kube(e, app.settings.retry_after()))?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let gone_or_live = |s: Option<&TkaSignin>| {
        s.is_none_or(|s| s.metadata.deletion_timestamp.is_none() && !sessions::expired(s, now))
    };
    let after = app
        .sessions
        .wait_for(name, deadline, app.shutdown.clone(), gone_or_live)
        .await;
    if gone_or_live(after.as_deref()) {
        Ok(())
    } else {
        Err(still_ending(app))
    }
}

/// Step 4: create or extend (spec only). The cache may not have shown a logout that is still being cleaned
/// up: if the write landed on a terminating object, wait for it to go and create a new one, so a re-login
/// right after logout is never lost (upstream B4).
async fn write_fresh(app: &App, new: &NewSession) -> Result<TkaSignin, ApiError> {
    let kube_err = |e: kube::Error| ApiError::kube(e, app.settings.retry_after());
    let written = app.sessions.write(new).await.map_err(kube_err)?;
    if written.metadata.deletion_timestamp.is_none() {
        return Ok(written);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let uid = written.metadata.uid.clone();
    app.sessions
        .wait_for(&new.name(), deadline, app.shutdown.clone(), |s| {
            s.is_none_or(|s| s.metadata.uid != uid)
        })
        .await;
    let written = app.sessions.write(new).await.map_err(kube_err)?;
    if written.metadata.deletion_timestamp.is_some() {
        return Err(still_ending(app));
    }
    Ok(written)
}

/// Step 5 of a ready login: the objects asked for with `include` (one round trip for `tka login`).
#[allow(clippy::too_many_arguments)]
pub(super) async fn add_includes(
    app: &App,
    s: &TkaSignin,
    body: &mut UserLoginResponse,
    include: &[String],
    format: Option<Format>,
    exec_auth: bool,
    rid: &str,
) -> Result<(), ApiError> {
    if include.iter().any(|i| i == "kubeconfig") {
        let info = cluster_info(app)?;
        let auth = kubeconfig_auth(app, s, exec_auth, rid).await?;
        body.kubeconfig = Some(kubeconfig_doc(
            app,
            s,
            &info,
            auth,
            format.unwrap_or(Format::Legacy),
        ));
    }
    if include.iter().any(|i| i == "credential") {
        body.credential = Some(exec_credential_for(app, s, wire::EXEC_API_V1, rid).await?);
    }
    if include.iter().any(|i| i == "cluster-info") {
        body.cluster_info = Some(cluster_info(app)?);
    }
    Ok(())
}

/// GET /login (api.md §4.2).
pub async fn get_login(
    State(app): AppState,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let wait = wait_param(&q, &app)?;
    let caller = app.identify(remote, &headers).await?;
    let Some(s) = lookup(&app, &caller).await? else {
        return Err(ApiError::not_signed_in(StatusCode::UNAUTHORIZED));
    };
    let s = settle(&app, s, wait).await?;
    match sessions::state(&s) {
        SessionState::Ready => {
            Ok((StatusCode::OK, axum::Json(response_for(&app, &s))).into_response())
        }
        SessionState::Pending => Ok(pending(
            &app,
            StatusCode::ACCEPTED,
            Some(response_for(&app, &s)),
        )),
        SessionState::Failed { reason, message } => Err(failed(&reason, &message)),
    }
}

/// Deletes sessions on logout (their finalizers revoke the tokens), with the audit line and metric.
pub(super) async fn end_sessions(
    app: &App,
    targets: &[Arc<TkaSignin>],
    rid: &str,
) -> Result<(), ApiError> {
    for s in targets {
        app.sessions
            .delete(s)
            .await
            .map_err(|e| ApiError::kube(e, app.settings.retry_after()))?;
        app.metrics.revocations.with_label_values(&["logout"]).inc();
        let origin = s.spec.origin.as_ref().map_or("local", |o| o.kind.as_str());
        tracing::info!(audit = true, event = "logout", origin, user = %s.spec.username, node = %s.spec.node, role = %s.spec.role,
            session = %s.name_any(), request_id = %rid, "logout");
    }
    Ok(())
}

/// POST /logout (api.md §4.4). Needs identity only: a user whose grant was revoked can still log out.
pub async fn logout(
    State(app): AppState,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(crate::api::RequestId(rid)): Extension<crate::api::RequestId>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let all = bool_param(&q, "all")?;
    let caller = app.identify(remote, &headers).await?;
    let own = lookup(&app, &caller)
        .await?
        .filter(|s| s.metadata.deletion_timestamp.is_none());
    let mut targets: Vec<Arc<TkaSignin>> = own.into_iter().collect();
    if all {
        let uk = naming::subject_key(&caller.login);
        for s in app.sessions.of_user(&uk) {
            if s.metadata.deletion_timestamp.is_none()
                && !targets.iter().any(|t| t.name_any() == s.name_any())
            {
                targets.push(s);
            }
        }
    }
    let now = std::time::Instant::now();
    let members = app.federation.healthy_members(now);
    let down = app.federation.stale_members(now);
    // Members removed for missed heartbeats are no longer part of the federation (not listed, federation.md
    // §8), but may still hold a session of this user: their return delivers the logout (silently: the
    // answer lists members only).
    for name in app.federation.departed_members(now) {
        app.federation
            .retry_later(&name, super::fanout::session_ref(&caller, all));
    }
    if targets.is_empty() && members.is_empty() && down.is_empty() {
        return Err(ApiError::not_signed_in(StatusCode::NOT_FOUND));
    }
    end_sessions(&app, &targets, &rid).await?;
    let first = targets.first();
    if members.is_empty() && down.is_empty() {
        let first = first.expect("checked above");
        return Ok((StatusCode::OK, axum::Json(response_for(&app, first))).into_response());
    }
    let mut clusters = super::fanout::logout(&app, &caller, all, &rid, members, down).await;
    if first.is_none() && !clusters.iter().any(|c| c.status == "ok") {
        if clusters.is_empty() {
            return Err(ApiError::not_signed_in(StatusCode::NOT_FOUND));
        }
        return Err(crate::federation::FedError::AllFailed(clusters).into());
    }
    let mut body = match first {
        Some(s) => {
            clusters.insert(
                0,
                wire::ClusterResult {
                    name: app.settings.cluster_name().to_string(),
                    status: "ok".into(),
                    ..Default::default()
                },
            );
            response_for(&app, s)
        }
        None => wire::UserLoginResponse {
            username: caller.login.clone(),
            ..Default::default()
        },
    };
    body.clusters = clusters;
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}
