//! Endpoint semantics (spec: api.md §4). Each handler: identify → authorize → read or write the session →
//! answer. Only the controller writes status; handlers write spec and mint tokens.

mod fanout;
mod federation;
mod info;
mod login;
mod relay;
mod tokens;

pub use fanout::revalidate_members;
pub use federation::{create_session, delete_sessions, heartbeat, list_sessions, tokens};
pub use info::{cluster_info_route, clusters, whoami};
pub use login::{get_login, login, logout};
pub use tokens::{exec_credential, kubeconfig};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kube::ResourceExt;

use crate::api::App;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::api::sessions::{self, State as SessionState};
use crate::model::duration::GoDuration;
use crate::model::naming;
use crate::model::wire::{self, TkaClusterInfo, UserLoginResponse};
use crate::operator::crd::TkaSignin;

type Params = Query<HashMap<String, String>>;
type AppState = State<Arc<App>>;

// ---------------------------------------------------------------------------------------------------------
// Query parameters

pub(super) fn bad_query(message: String, advice: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message).advice(advice)
}

/// Effective wait: min(`wait`, `api.maxWait`, `server.writeTimeout − 2s`).
pub(super) fn wait_param(
    q: &HashMap<String, String>,
    app: &App,
) -> Result<Option<Duration>, ApiError> {
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

pub(super) fn bool_param(q: &HashMap<String, String>, key: &str) -> Result<bool, ApiError> {
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
pub(super) enum Format {
    Legacy,
    V1,
}

pub(super) fn format_param(
    q: &HashMap<String, String>,
) -> Result<(Option<Format>, bool), ApiError> {
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

pub(super) fn session_name(caller: &Caller) -> String {
    naming::signin_name(
        &naming::subject_key(&caller.login),
        &naming::node_key(&caller.peer.node_stable_id),
    )
}

/// The caller's session on this node: from the cache, else (just written, cache lagging) from the apiserver.
pub(super) async fn lookup(app: &App, caller: &Caller) -> Result<Option<Arc<TkaSignin>>, ApiError> {
    let name = session_name(caller);
    if let Some(s) = app.sessions.get(&name) {
        record_session(&s);
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

/// Records the session on the request's operation span (observability.md §4).
pub(super) fn record_session(s: &TkaSignin) {
    let span = tracing::Span::current();
    span.record("tka.session", s.name_any().as_str());
    span.record("tka.role", s.spec.role.as_str());
    span.record("tka.period", s.spec.validity_period.to_string().as_str());
}

pub(super) fn response_for(app: &App, s: &TkaSignin) -> UserLoginResponse {
    record_session(s);
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

pub(super) fn pending(app: &App, status: StatusCode, body: Option<UserLoginResponse>) -> Response {
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

/// A member with `federation.allowDirectLogin: false` runs no standalone user API (federation.md §1): no
/// logins and no tokens from its own grants; its users go through the primary, which relays.
pub(super) fn direct_use(app: &App) -> Result<(), ApiError> {
    if app.federation.is_member() && !app.federation.settings.allow_direct_login {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "direct_login_disabled",
            "this cluster takes logins only through its federation primary",
        )
        .advice(format!(
            "log in at {}",
            app.federation.settings.login_server
        )));
    }
    Ok(())
}

pub(super) fn failed(reason: &str, message: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "provisioning_failed",
        format!("the session could not be provisioned: {reason}: {message}"),
    )
    .advice("ask the cluster admin to check the role and namespaces of your grant")
}

pub(super) fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the server is shutting down",
    )
    .retry_after(1)
}

/// Waits for the session's current generation to be reported on (ready or failed).
pub(super) async fn wait_ready(
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

pub(super) fn cluster_info(app: &App) -> Result<TkaClusterInfo, ApiError> {
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

/// With `wait`, waits while the session's current generation is pending; returns the latest view.
pub(super) async fn settle(
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
