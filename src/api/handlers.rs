//! Endpoint semantics (spec: api.md §4). Each handler: identify → authorize → read or write the session →
//! answer. Only the controller writes status; handlers write spec and mint tokens.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use kube::ResourceExt;
use serde_json::{Value, json};

use super::auth::{self, Caller};
use super::error::ApiError;
use super::sessions::{self, NewSession, State as SessionState};
use super::{App, RemoteAddr};
use crate::model::duration::GoDuration;
use crate::model::kubeconfig::{self, Auth, ClusterEntry, Naming};
use crate::model::naming;
use crate::model::wire::{self, ExecCredential, TkaClusterInfo, UserLoginResponse};
use crate::operator::crd::TkaSignin;
use crate::operator::token::{self, Minted};

type Params = Query<HashMap<String, String>>;
type AppState = State<Arc<App>>;

// ---------------------------------------------------------------------------------------------------------
// Query parameters

fn bad_query(message: String, advice: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message).advice(advice)
}

/// Effective wait: min(`wait`, `api.maxWait`, `server.writeTimeout − 2s`).
fn wait_param(q: &HashMap<String, String>, app: &App) -> Result<Option<Duration>, ApiError> {
    let Some(raw) = q.get("wait").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let d = GoDuration::parse(raw)
        .map_err(|e| bad_query(format!("wait: {e}"), "use a Go duration such as wait=30s"))?;
    let cap = app.settings.max_wait.min(
        app.settings
            .write_timeout
            .saturating_sub(Duration::from_secs(2)),
    );
    Ok(Some(d.as_std().min(cap)))
}

fn bool_param(q: &HashMap<String, String>, key: &str) -> Result<bool, ApiError> {
    match q.get(key).map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("") | Some("true") | Some("1") => Ok(true),
        Some(other) => Err(bad_query(
            format!("{key}={other:?} is not a boolean"),
            &format!("use {key}=true or {key}=false"),
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Legacy,
    V1,
}

fn format_param(q: &HashMap<String, String>) -> Result<(Option<Format>, bool), ApiError> {
    let format = match q.get("format").map(String::as_str) {
        None | Some("") => None,
        Some("legacy") => Some(Format::Legacy),
        Some("v1") => Some(Format::V1),
        Some(other) => {
            return Err(bad_query(
                format!("format={other:?} is unknown"),
                "use format=legacy or format=v1",
            ));
        }
    };
    let exec = match q.get("auth").map(String::as_str) {
        None | Some("") | Some("token") => false,
        Some("exec") => true,
        Some(other) => {
            return Err(bad_query(
                format!("auth={other:?} is unknown"),
                "use auth=token or auth=exec",
            ));
        }
    };
    if exec && format == Some(Format::Legacy) {
        return Err(bad_query(
            "auth=exec needs format=v1".into(),
            "use format=v1&auth=exec",
        ));
    }
    Ok((format, exec))
}

// ---------------------------------------------------------------------------------------------------------
// Shared pieces

fn session_name(caller: &Caller) -> String {
    naming::signin_name(
        &naming::subject_key(&caller.login),
        &naming::node_key(&caller.peer.node_stable_id),
    )
}

/// The caller's session on this node: from the cache, else (just written, cache lagging) from the apiserver.
async fn lookup(app: &App, caller: &Caller) -> Result<Option<Arc<TkaSignin>>, ApiError> {
    let name = session_name(caller);
    if let Some(s) = app.sessions.get(&name) {
        return Ok(Some(s));
    }
    let fresh = app
        .sessions
        .api()
        .get_opt(&name)
        .await
        .map_err(|e| ApiError::kube(e, app.settings.retry_after()))?;
    Ok(fresh.map(Arc::new))
}

fn response_for(app: &App, s: &TkaSignin) -> UserLoginResponse {
    UserLoginResponse {
        username: s.spec.username.clone(),
        role: s.spec.role.clone(),
        until: sessions::until(s).map(wire::rfc3339).unwrap_or_default(),
        provisioned: sessions::state(s) == SessionState::Ready,
        cluster: app.settings.cluster_name().to_string(),
        node: s.spec.node.clone(),
        session: s.name_any(),
        namespaces: s.spec.namespaces.clone(),
        ..UserLoginResponse::default()
    }
}

fn pending(app: &App, status: StatusCode, body: Option<UserLoginResponse>) -> Response {
    let mut r = match body {
        Some(b) => (status, axum::Json(b)).into_response(),
        None => status.into_response(),
    };
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(app.settings.retry_after()),
    );
    r
}

fn failed(reason: &str, message: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "provisioning_failed",
        format!("the session could not be provisioned: {reason}: {message}"),
    )
    .advice("ask the cluster admin to check the role and namespaces of your grant")
}

fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the server is shutting down",
    )
    .retry_after(1)
}

/// Waits for the session's current generation to be reported on (ready or failed).
async fn wait_ready(
    app: &App,
    name: &str,
    generation: i64,
    wait: Duration,
) -> Result<Option<Arc<TkaSignin>>, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let s = app
        .sessions
        .wait_for(name, deadline, app.shutdown.clone(), |s| {
            s.is_some_and(|s| {
                s.metadata.generation.unwrap_or_default() >= generation
                    && sessions::state(s) != SessionState::Pending
            })
        })
        .await;
    if *app.shutdown.borrow() {
        return Err(shutting_down());
    }
    Ok(s)
}

fn cluster_info(app: &App) -> Result<TkaClusterInfo, ApiError> {
    app.cluster_info.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_info_unavailable",
            "this server does not know the cluster's API endpoint",
        )
        .advice(
            "ask the server's admin to set clusterInfo.apiEndpoint (or clusterInfo.configMapRef)",
        )
        .retry_after(app.settings.retry_after())
    })
}

/// Mints a token for a ready session and logs the audit line (never the token).
async fn mint(
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

fn kubeconfig_doc(
    app: &App,
    s: &TkaSignin,
    info: &TkaClusterInfo,
    auth: Auth,
    format: Format,
) -> Value {
    let entry = ClusterEntry {
        name: app.settings.cluster_name().to_string(),
        server_url: info.server_url.clone(),
        ca_data: info.ca_data.clone(),
        insecure_skip_tls_verify: info.insecure_skip_tls_verify,
        namespace: s.spec.namespaces.first().cloned(),
        auth,
    };
    let naming = Naming {
        login: s.spec.username.clone(),
        user_prefix: app.settings.user_prefix.clone(),
        context_prefix: app.settings.context_prefix.clone(),
        tka_server: app.settings.self_url.clone(),
    };
    match format {
        Format::Legacy => kubeconfig::legacy(&naming, &[entry]),
        Format::V1 => kubeconfig::v1(&naming, &[entry]),
    }
}

/// With `wait`, waits while the session's current generation is pending; returns the latest view.
async fn settle(
    app: &App,
    s: Arc<TkaSignin>,
    wait: Option<Duration>,
) -> Result<Arc<TkaSignin>, ApiError> {
    match (sessions::state(&s), wait) {
        (SessionState::Pending, Some(w)) => {
            let generation = s.metadata.generation.unwrap_or_default();
            Ok(wait_ready(app, &s.name_any(), generation, w)
                .await?
                .unwrap_or(s))
        }
        _ => Ok(s),
    }
}

/// Everything before minting a token (`/kubeconfig`, `/exec-credential`): identity, a grant for this
/// cluster, a ready session, and a current rule that still carries the session's role. `Err(response)` is
/// the pending answer.
async fn mintable_session(
    app: &App,
    remote: std::net::SocketAddr,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<Result<Arc<TkaSignin>, Response>, ApiError> {
    let caller = app.identify(remote, headers).await?;
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
async fn ready_session(
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

// ---------------------------------------------------------------------------------------------------------
// Handlers

/// POST /login (api.md §4.1).
pub async fn login(
    State(app): AppState,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(super::RequestId(rid)): Extension<super::RequestId>,
    headers: HeaderMap,
    Query(q): Params,
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
    let new = NewSession {
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
    };
    let name = new.name();
    let kube_err = |e: kube::Error| ApiError::kube(e, app.settings.retry_after());

    // Step 2: live sessions of this user on other nodes with another role or scope.
    let now = Timestamp::now();
    let uk = naming::subject_key(&caller.login);
    let conflicts: Vec<Arc<TkaSignin>> = app
        .sessions
        .of_user(&uk)
        .into_iter()
        .filter(|s| s.name_any() != name && crate::operator::reconcile::is_live(s, now))
        .filter(|s| s.spec.role != new.role || s.spec.namespaces != new.namespaces)
        .collect();
    if !conflicts.is_empty() {
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
            .advice(
                "log in with `--replace` to end them, or log in with the same role (`--role`)",
            ));
        }
        for s in conflicts {
            app.sessions.delete(&s).await.map_err(kube_err)?;
            app.metrics
                .revocations
                .with_label_values(&["replaced"])
                .inc();
        }
    }

    // Step 3: an expired session starts over; one being deleted must be gone first (bounded by 5 s).
    if let Some(existing) = app.sessions.get(&name) {
        if existing.metadata.deletion_timestamp.is_none() && sessions::expired(&existing, now) {
            app.sessions.delete(&existing).await.map_err(kube_err)?;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let gone_or_live = |s: Option<&TkaSignin>| {
            s.is_none_or(|s| s.metadata.deletion_timestamp.is_none() && !sessions::expired(s, now))
        };
        let after = app
            .sessions
            .wait_for(&name, deadline, app.shutdown.clone(), gone_or_live)
            .await;
        if !gone_or_live(after.as_deref()) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "session_ending",
                "your previous session is still being cleaned up",
            )
            .retry_after(app.settings.retry_after()));
        }
    }

    // Step 4: create or extend (spec only). The cache may not have shown a logout that is still being
    // cleaned up: if the write landed on a terminating object, wait for it to go and create a new one, so
    // a re-login right after logout is never lost (upstream B4).
    let mut written = app.sessions.write(&new).await.map_err(kube_err)?;
    if written.metadata.deletion_timestamp.is_some() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let uid = written.metadata.uid.clone();
        app.sessions
            .wait_for(&name, deadline, app.shutdown.clone(), |s| {
                s.is_none_or(|s| s.metadata.uid != uid)
            })
            .await;
        written = app.sessions.write(&new).await.map_err(kube_err)?;
        if written.metadata.deletion_timestamp.is_some() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "session_ending",
                "your previous session is still being cleaned up",
            )
            .retry_after(app.settings.retry_after()));
        }
    }
    let generation = written.metadata.generation.unwrap_or_default();
    tracing::info!(audit = true, event = "login", user = %new.login, node = %new.node, role = %new.role, cluster = %app.settings.cluster_name(),
        session = %name, until = %sessions::until(&written).map(wire::rfc3339).unwrap_or_default(), request_id = %rid, "login");

    // Step 5.
    let Some(wait) = wait else {
        app.metrics
            .login_attempts
            .with_label_values(&[&new.role, "success"])
            .inc();
        return Ok((
            StatusCode::ACCEPTED,
            axum::Json(response_for(&app, &written)),
        )
            .into_response());
    };
    let current = wait_ready(&app, &name, generation, wait).await?;
    let s = match current {
        Some(s) if s.metadata.generation.unwrap_or_default() >= generation => s,
        _ => Arc::new(written),
    };
    match sessions::state(&s) {
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
            if include.iter().any(|i| i == "kubeconfig") {
                let info = cluster_info(&app)?;
                let format = format.unwrap_or(Format::Legacy);
                let auth = if exec_auth {
                    Auth::Exec {
                        server: app.settings.self_url.clone(),
                        auto_login: false,
                    }
                } else {
                    let secs = token::kubeconfig_seconds(
                        sessions::until(&s).unwrap_or(now),
                        Timestamp::now(),
                    );
                    Auth::Token(mint(&app, &s, "kubeconfig", secs, &rid).await?.token)
                };
                body.kubeconfig = Some(kubeconfig_doc(&app, &s, &info, auth, format));
            }
            if include.iter().any(|i| i == "credential") {
                body.credential =
                    Some(exec_credential_for(&app, &s, wire::EXEC_API_V1, &rid).await?);
            }
            if include.iter().any(|i| i == "cluster-info") {
                body.cluster_info = Some(cluster_info(&app)?);
            }
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

/// GET /kubeconfig (api.md §4.3).
pub async fn kubeconfig(
    State(app): AppState,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(super::RequestId(rid)): Extension<super::RequestId>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let (format, exec_auth) = format_param(&q)?;
    let s = match mintable_session(&app, remote, &headers, &q).await? {
        Ok(s) => s,
        Err(pending) => return Ok(pending),
    };
    let info = cluster_info(&app)?;
    let (media, yaml) = negotiate(&headers);
    let format = match (media, format) {
        (Media::V1, _) | (_, Some(Format::V1)) => Format::V1,
        _ if yaml => Format::V1, // YAML is always the loadable v1 document
        _ => Format::Legacy,
    };
    let auth = if exec_auth {
        Auth::Exec {
            server: app.settings.self_url.clone(),
            auto_login: false,
        }
    } else {
        let secs = token::kubeconfig_seconds(
            sessions::until(&s).unwrap_or_else(Timestamp::now),
            Timestamp::now(),
        );
        Auth::Token(mint(&app, &s, "kubeconfig", secs, &rid).await?.token)
    };
    let doc = kubeconfig_doc(&app, &s, &info, auth, format);
    let (content_type, body) = if yaml {
        let ct = if media == Media::V1 {
            "application/vnd.tka.kubeconfig.v1+yaml"
        } else {
            "application/yaml"
        };
        (
            ct,
            serde_yaml::to_string(&doc).map_err(ApiError::internal_error)?,
        )
    } else {
        let ct = if media == Media::V1 {
            "application/vnd.tka.kubeconfig.v1+json"
        } else {
            "application/json"
        };
        (
            ct,
            serde_json::to_string(&doc).map_err(ApiError::internal_error)?,
        )
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Media {
    Plain,
    V1,
}

/// Picks the representation from `Accept`, honouring q-values: (explicit v1 media type?, YAML?).
fn negotiate(headers: &HeaderMap) -> (Media, bool) {
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

/// POST /logout (api.md §4.4). Needs identity only: a user whose grant was revoked can still log out.
pub async fn logout(
    State(app): AppState,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(super::RequestId(rid)): Extension<super::RequestId>,
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
    let Some(first) = targets.first().cloned() else {
        return Err(ApiError::not_signed_in(StatusCode::NOT_FOUND));
    };
    for s in &targets {
        app.sessions
            .delete(s)
            .await
            .map_err(|e| ApiError::kube(e, app.settings.retry_after()))?;
        app.metrics.revocations.with_label_values(&["logout"]).inc();
        tracing::info!(audit = true, event = "logout", user = %s.spec.username, node = %s.spec.node, role = %s.spec.role,
            session = %s.name_any(), request_id = %rid, "logout");
    }
    Ok((StatusCode::OK, axum::Json(response_for(&app, &first))).into_response())
}

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

async fn exec_credential_for(
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
    Extension(super::RequestId(rid)): Extension<super::RequestId>,
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
    Ok(axum::Json(json!([{
        "name": app.settings.cluster_name(),
        "labels": info.labels,
        "server_url": info.server_url,
        "status": "self",
        "role": role,
    }]))
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
