//! The primary's side of federated logins (federation.md §4, §6): one login provisions the own cluster and
//! every permitted healthy member concurrently, each member call bounded by `federation.requestTimeout`, so
//! a slow or dead member delays nothing beyond it and fails only its own cluster.

use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::api::sessions::State as SessionState;
use crate::federation::client::{self, Answer, CallError};
use crate::federation::plan::{self, Target};
use crate::federation::registry::Member;
use crate::federation::wire::{SessionRef, SessionRequest, TokenAnswer, TokenCall};
use crate::federation::{FedError, PREFIX};
use crate::model::kubeconfig::{Auth, ClusterEntry};
use crate::model::rules::{Reject, Rule, parse_rules};
use crate::model::wire::{ClusterResult, ErrorResponse, UserLoginResponse};

use super::login::{add_includes, new_session, provision};
use super::tokens::{document, kubeconfig_auth, own_entry};
use super::*;

/// A parsed `POST /login` that goes to the federation.
pub struct LoginRequest {
    pub caller: Caller,
    pub role: Option<String>,
    pub only: Vec<String>,
    pub wait: Option<Duration>,
    pub replace: bool,
    pub include: Vec<String>,
    pub format: Option<Format>,
    pub exec_auth: bool,
    pub rid: String,
}

/// One member call, counted by cluster and operation.
pub(super) async fn member_call<B: Serialize, T: DeserializeOwned>(
    app: &App,
    m: &Member,
    method: http::Method,
    path: &str,
    body: Option<&B>,
    operation: &str,
    rid: &str,
) -> Result<Answer<T>, CallError> {
    use tracing::Instrument;
    // `federation.<operation>` span (observability.md §5); the result is recorded once known.
    let span = tracing::info_span!("federation", otel.name = %format_args!("federation.{operation}"), operation, tka.cluster = %m.announcement.cluster_name, tka.result = tracing::field::Empty);
    let r = client::call(
        app.identity.as_ref(),
        method,
        &m.announcement.member_url,
        path,
        body,
        app.federation.settings.request_timeout,
        rid,
    )
    .instrument(span.clone())
    .await;
    let result = match &r {
        Ok(_) => "success",
        Err(e) => e.label(),
    };
    span.record("tka.result", result);
    app.metrics
        .federation_requests
        .with_label_values(&[&m.announcement.cluster_name, operation, result])
        .inc();
    if let Err(e) = &r {
        tracing::info!(cluster = %m.announcement.cluster_name, operation, request_id = %rid, "federation call failed: {e}");
    }
    r
}

/// The caller's parsed rules (any malformed one rejects the grant, as on a single cluster).
pub(super) fn caller_rules(app: &App, caller: &Caller) -> Result<Vec<Rule>, ApiError> {
    let values = caller
        .peer
        .cap_map
        .get(&app.settings.auth.cap_name)
        .map(Vec::as_slice)
        .unwrap_or_default();
    parse_rules(values)
        .map_err(ApiError::from)
        .inspect_err(|e| app.reject(e))
}

pub(super) fn targets(members: &[Member]) -> Vec<Target> {
    members
        .iter()
        .map(|m| Target {
            name: m.announcement.cluster_name.clone(),
            allowed_roles: m.announcement.allowed_roles.clone(),
        })
        .collect()
}

fn result(
    name: &str,
    status: &str,
    role: &str,
    until: &str,
    error: Option<ErrorResponse>,
) -> ClusterResult {
    ClusterResult {
        name: name.to_string(),
        status: status.to_string(),
        role: role.to_string(),
        until: until.to_string(),
        error,
    }
}

/// A member's error answer as the status of its cluster.
fn call_status(e: &CallError) -> &'static str {
    match e {
        CallError::Status { status: 403, .. } => "forbidden",
        CallError::Status { status: 409, .. } => "conflict",
        _ => "failed",
    }
}

/// POST /login at a primary with members.
pub async fn login(app: &App, req: LoginRequest) -> Result<Response, ApiError> {
    let started = Instant::now();
    let rules = caller_rules(app, &req.caller)?;
    let members = app.federation.healthy_members(Instant::now());
    let own = app.settings.cluster_name().to_string();
    let planned = plan::plan(
        &rules,
        &app.settings.auth.policy,
        &targets(&members),
        req.role.as_deref(),
        &req.only,
    );
    if let Some(unknown) = req
        .only
        .iter()
        .find(|o| !planned.iter().any(|(n, _)| n == *o))
    {
        return Err(FedError::UnknownCluster(unknown.clone()).into());
    }
    let permitted: Vec<(String, Rule)> = planned
        .iter()
        .filter_map(|(n, r)| r.as_ref().ok().map(|r| (n.clone(), r.clone())))
        .collect();
    if permitted.is_empty() {
        // One cluster only (or the own one asked for): its exact error, as a standalone server answers.
        let own_err = planned
            .iter()
            .find(|(n, _)| *n == own)
            .and_then(|(_, r)| r.clone().err());
        let e = match own_err {
            Some(e) if !matches!(e, Reject::NoGrant { .. }) => ApiError::from(e),
            _ => ApiError::from(Reject::NoGrant {
                cluster: own.clone(),
            }),
        };
        app.reject(&e);
        app.metrics
            .login_attempts
            .with_label_values(&["", "forbidden"])
            .inc();
        return Err(e);
    }
    let member_wait = req.wait.map(|w| {
        w.min(
            app.federation
                .settings
                .request_timeout
                .saturating_sub(Duration::from_secs(1)),
        )
    });
    let own_rule = permitted
        .iter()
        .find(|(n, _)| *n == own)
        .map(|(_, r)| r.clone());
    let own_fut = async {
        match &own_rule {
            Some(rule) => Some(
                provision(
                    app,
                    &new_session(&req.caller, rule),
                    req.replace,
                    req.wait,
                    &req.rid,
                )
                .await,
            ),
            None => None,
        }
    };
    let member_futs = permitted
        .iter()
        .filter(|(n, _)| *n != own)
        .filter_map(|(name, rule)| {
            let m = members
                .iter()
                .find(|m| &m.announcement.cluster_name == name)?
                .clone();
            let body = SessionRequest {
                login_name: req.caller.login.clone(),
                node: req.caller.peer.node_fqdn.clone(),
                node_id: req.caller.peer.node_stable_id.clone(),
                node_ip: req
                    .caller
                    .peer
                    .node_ip
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
                role: rule.role.clone(),
                period: rule.period.to_string(),
                namespaces: rule.namespaces.clone(),
                requested_at: crate::model::wire::rfc3339(jiff::Timestamp::now()),
                request_id: req.rid.clone(),
                replace: req.replace,
            };
            let path = match member_wait {
                Some(w) => format!("{PREFIX}/sessions?wait={}ms", w.as_millis()),
                None => format!("{PREFIX}/sessions"),
            };
            let rule = rule.clone();
            let rid = req.rid.as_str();
            Some(async move {
                let r: Result<Answer<UserLoginResponse>, CallError> = member_call(
                    app,
                    &m,
                    http::Method::POST,
                    &path,
                    Some(&body),
                    "signin",
                    rid,
                )
                .await;
                (m, rule, r)
            })
        });
    let (own_out, member_out) = futures::join!(own_fut, futures::future::join_all(member_futs));

    // Per-cluster outcomes, own cluster first.
    let mut results: Vec<ClusterResult> = Vec::new();
    let mut own_body: Option<(Arc<TkaSignin>, bool)> = None;
    match own_out {
        None => {}
        Some(Ok((s, state))) => {
            let until = sessions::until(&s).map(wire::rfc3339).unwrap_or_default();
            let (status, err) = match state {
                Some(SessionState::Ready) => ("ready", None),
                None | Some(SessionState::Pending) => ("pending", None),
                Some(SessionState::Failed { reason, message }) => {
                    ("failed", Some(failed(&reason, &message).body()))
                }
            };
            if err.is_none() {
                own_body = Some((s.clone(), status == "ready"));
            }
            results.push(result(&own, status, &s.spec.role, &until, err));
        }
        Some(Err(e)) => {
            let status = if e.status == StatusCode::CONFLICT {
                "conflict"
            } else {
                "failed"
            };
            let role = own_rule
                .as_ref()
                .map(|r| r.role.as_str())
                .unwrap_or_default();
            results.push(result(&own, status, role, "", Some(e.body())));
        }
    }
    let mut member_ok: Vec<(Member, Rule, UserLoginResponse, bool)> = Vec::new();
    for (m, rule, r) in member_out {
        let name = &m.announcement.cluster_name;
        match r {
            Ok(a) => {
                let ready = a.status == 200 && a.body.provisioned;
                results.push(result(
                    name,
                    if ready { "ready" } else { "pending" },
                    &a.body.role,
                    &a.body.until,
                    None,
                ));
                member_ok.push((m, rule, a.body, ready));
            }
            Err(e) => results.push(result(
                name,
                call_status(&e),
                &rule.role,
                "",
                Some(e.to_error_response()),
            )),
        }
    }
    // Clusters refused by the grant itself (not merely absent from it) are listed too.
    for (name, r) in &planned {
        if let Err(rej) = r
            && (!matches!(rej, Reject::NoGrant { .. }) || req.only.contains(name))
        {
            results.push(result(
                name,
                plan::status_of(rej),
                "",
                "",
                Some(ApiError::from(rej.clone()).body()),
            ));
        }
    }
    if own_body.is_none() && member_ok.is_empty() {
        app.metrics
            .login_attempts
            .with_label_values(&["", "error"])
            .inc();
        return Err(FedError::AllFailed(results).into());
    }
    let all_ready = req.wait.is_some()
        && own_body.as_ref().is_none_or(|(_, r)| *r)
        && member_ok.iter().all(|(_, _, _, r)| *r);
    let mut body = match &own_body {
        Some((s, _)) => response_for(app, s),
        None => member_ok[0].2.clone(),
    };
    if all_ready && !req.include.is_empty() {
        if let Some((s, _)) = &own_body {
            // credential and cluster-info concern the own cluster; the kubeconfig is built below.
            let others: Vec<String> = req
                .include
                .iter()
                .filter(|i| *i != "kubeconfig")
                .cloned()
                .collect();
            add_includes(
                app,
                s,
                &mut body,
                &others,
                req.format,
                req.exec_auth,
                &req.rid,
            )
            .await?;
        }
        if req.include.iter().any(|i| i == "kubeconfig") {
            let mut entries = Vec::new();
            if let Some((s, _)) = &own_body {
                let info = cluster_info(app)?;
                let auth = kubeconfig_auth(app, s, req.exec_auth, &req.rid).await?;
                entries.push(own_entry(app, s, &info, auth));
            }
            let mints = member_ok.iter().map(|(m, rule, _, _)| {
                member_entry(
                    app,
                    m,
                    &req.caller,
                    rule.namespaces.first().cloned(),
                    req.exec_auth,
                    &req.rid,
                )
            });
            for (i, r) in futures::future::join_all(mints)
                .await
                .into_iter()
                .enumerate()
            {
                match r {
                    Ok(e) => entries.push(e),
                    Err(e) => {
                        let name = &member_ok[i].0.announcement.cluster_name;
                        if let Some(c) = results.iter_mut().find(|c| &c.name == name) {
                            c.status = "failed".into();
                            c.error = Some(e.to_error_response());
                        }
                    }
                }
            }
            body.kubeconfig = Some(document(
                app,
                &req.caller.login,
                &entries,
                req.format.unwrap_or(Format::Legacy),
            ));
        }
    }
    body.clusters = results;
    let role = body.role.clone();
    app.metrics
        .login_attempts
        .with_label_values(&[&role, "success"])
        .inc();
    if all_ready {
        app.metrics
            .login_duration
            .with_label_values(&["success"])
            .observe(started.elapsed().as_secs_f64());
        let mut r = (StatusCode::OK, axum::Json(body)).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(r)
    } else {
        Ok(pending(app, StatusCode::ACCEPTED, Some(body)))
    }
}

/// A token of `kind` (`kubeconfig` or `exec`) for the caller's federated session, minted by member `m`; the
/// answer's status when the member has none yet (still provisioning).
pub(super) async fn mint_on_member(
    app: &App,
    m: &Member,
    caller: &Caller,
    kind: &str,
    rid: &str,
) -> Result<Result<TokenAnswer, u16>, CallError> {
    let call = TokenCall {
        login_name: caller.login.clone(),
        node_id: caller.peer.node_stable_id.clone(),
        kind: kind.into(),
    };
    let t: Answer<Option<TokenAnswer>> = member_call(
        app,
        m,
        http::Method::POST,
        &format!("{PREFIX}/tokens"),
        Some(&call),
        "token",
        rid,
    )
    .await?;
    Ok(match t.body {
        Some(token) if !token.token.is_empty() => Ok(token),
        _ => Err(t.status),
    })
}

/// A member's kubeconfig entry, named with the member's own prefixes; the token is minted by the member.
pub(super) async fn member_entry(
    app: &App,
    m: &Member,
    caller: &Caller,
    namespace: Option<String>,
    exec: bool,
    rid: &str,
) -> Result<ClusterEntry, CallError> {
    let a = &m.announcement;
    let auth = if exec {
        Auth::Exec {
            server: app.settings.self_url.clone(),
            auto_login: false,
        }
    } else {
        match mint_on_member(app, m, caller, "kubeconfig", rid).await? {
            Ok(t) => Auth::Token(t.token),
            Err(status) => {
                return Err(CallError::Status {
                    status,
                    body: ErrorResponse {
                        message: "the session is still being provisioned".into(),
                        code: "pending".into(),
                        ..Default::default()
                    },
                });
            }
        }
    };
    Ok(ClusterEntry {
        name: a.cluster_name.clone(),
        server_url: a.api_endpoint.clone(),
        ca_data: a.ca_data.clone(),
        insecure_skip_tls_verify: a.insecure_skip_tls_verify,
        namespace,
        auth,
        names: Some((
            format!("{}{}", a.user_prefix, caller.login),
            format!("{}{}", a.context_prefix, caller.login),
        )),
    })
}

/// POST /logout at a primary: the own session(s) are already gone; revoke on every healthy member. A
/// member that cannot be reached is listed as failed and retried on its next heartbeats. So is a `down`
/// (stale) member, without a call: were it skipped, a member that missed a few heartbeats would keep the
/// session until `valid_until` although it is back within minutes (federation.md §6).
pub async fn logout(
    app: &App,
    caller: &Caller,
    all: bool,
    rid: &str,
    members: Vec<Member>,
    down: Vec<Member>,
) -> Vec<ClusterResult> {
    let r = session_ref(caller, all);
    let calls = members.iter().map(|m| {
        let r = r.clone();
        async move {
            let out: Result<Answer<serde_json::Value>, CallError> = member_call(
                app,
                m,
                http::Method::DELETE,
                &format!("{PREFIX}/sessions"),
                Some(&r),
                "signout",
                rid,
            )
            .await;
            (m, r, out)
        }
    });
    let mut results = Vec::new();
    for (m, r, out) in futures::future::join_all(calls).await {
        let name = &m.announcement.cluster_name;
        match out {
            Ok(_) => results.push(result(name, "ok", "", "", None)),
            Err(CallError::Status { status: 404, .. }) => {}
            Err(e) => {
                app.federation.retry_later(name, r);
                results.push(result(name, "failed", "", "", Some(e.to_error_response())));
            }
        }
    }
    for m in down {
        let name = m.announcement.cluster_name;
        app.federation.retry_later(&name, r.clone());
        let e = FedError::Unreachable {
            cluster: name.clone(),
            detail: "it missed its heartbeats; the logout is delivered when it is back".into(),
        };
        let body = ApiError::from(e).body();
        results.push(result(&name, "failed", "", "", Some(body)));
    }
    results.sort_by(|a, b| a.name.cmp(&b.name));
    results
}

/// What a logout ends on a member: the caller's node's session, or all of the user's.
pub(super) fn session_ref(caller: &Caller, all: bool) -> SessionRef {
    SessionRef {
        login_name: caller.login.clone(),
        node_id: if all {
            String::new()
        } else {
            caller.peer.node_stable_id.clone()
        },
        all,
    }
}

/// Grant revalidation of federated sessions (federation.md §6): the primary lists each healthy member's
/// federated sessions, runs WhoIs on the user's node again and ends the sessions whose grant no longer
/// selects that role for that cluster. An identity outage or an unreachable member revokes nothing.
pub async fn revalidate_members(app: &App) {
    use crate::federation::wire::MemberSession;
    let rid = hex::encode(rand::random::<[u8; 8]>());
    for m in app.federation.healthy_members(Instant::now()) {
        let path = format!("{PREFIX}/sessions?origin=federation");
        let Ok(list) = member_call::<(), Vec<MemberSession>>(
            app,
            &m,
            http::Method::GET,
            &path,
            None,
            "revalidate",
            &rid,
        )
        .await
        else {
            continue;
        };
        for s in list.body {
            let Some(reason) = member_verdict(app, &m, &s).await else {
                continue;
            };
            let r = SessionRef {
                login_name: s.login_name.clone(),
                node_id: s.node_id.clone(),
                all: false,
            };
            let out: Result<Answer<serde_json::Value>, CallError> = member_call(
                app,
                &m,
                http::Method::DELETE,
                &format!("{PREFIX}/sessions"),
                Some(&r),
                "signout",
                &rid,
            )
            .await;
            if out.is_ok() {
                app.metrics
                    .revocations
                    .with_label_values(&["grant_revoked"])
                    .inc();
                tracing::info!(audit = true, event = "revoked", user = %s.login_name, cluster = %m.announcement.cluster_name,
                    role = %s.role, reason, "federated grant revoked");
            }
        }
    }
}

/// Why a member's session must end, or `None` to keep it (`api::revalidate::verdict` for a member cluster).
async fn member_verdict(
    app: &App,
    m: &Member,
    s: &crate::federation::wire::MemberSession,
) -> Option<&'static str> {
    let ip: std::net::IpAddr = s.node_ip.parse().ok()?;
    let caller = match crate::api::auth::identify(
        app.identity.as_ref(),
        std::net::SocketAddr::new(ip, 0),
        &axum::http::HeaderMap::new(),
        &app.settings.auth,
    )
    .await
    {
        Ok(c) => c,
        Err(e) if e.code == "identity_unavailable" => return None,
        Err(_) => return Some("identity_changed"),
    };
    if caller.peer.node_stable_id != s.node_id || caller.login != s.login_name {
        return Some("identity_changed");
    }
    let Ok(rules) = caller_rules(app, &caller) else {
        return Some("grant_changed");
    };
    let policy = crate::model::rules::Policy {
        cluster: app.settings.cluster_name().to_string(),
        allowed_roles: m.announcement.allowed_roles.clone(),
        max_period: None,
        ..Default::default()
    };
    match crate::model::rules::select_for(
        &rules,
        &policy,
        &m.announcement.cluster_name,
        Some(&s.role),
    ) {
        Ok(_) => None,
        Err(_) => Some("grant_changed"),
    }
}
