//! The primary relaying token requests to members (federation.md §5): `/kubeconfig` with an entry per
//! cluster where the caller has a ready session, `/exec-credential?cluster=<member>`, and `/clusters`.

use std::time::Instant;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::api::auth::{self, Caller};
use crate::api::error::ApiError;
use crate::federation::client::{Answer, CallError};
use crate::federation::registry::Member;
use crate::federation::wire::MemberSession;
use crate::federation::{FedError, PREFIX, plan};
use crate::model::rules::Rule;
use crate::model::wire::ExecCredential;

use super::fanout::{caller_rules, member_call, member_entry, mint_on_member, targets};
use super::tokens::{document, kubeconfig_auth, own_entry, ready_session};
use super::*;

/// Codes a member may answer with, passed on as they are; anything else is `member_error`.
const RELAYED: &[&str] = &[
    "not_signed_in",
    "session_expired",
    "session_changing",
    "provisioning_failed",
    "role_not_allowed",
    "kubernetes_unavailable",
    "not_primary",
];

/// A member's failure as this server's answer, naming the cluster.
pub(super) fn relay_error(cluster: &str, e: CallError) -> ApiError {
    match e {
        CallError::Status { status, body } => {
            let code = RELAYED
                .iter()
                .find(|c| **c == body.code)
                .copied()
                .unwrap_or("member_error");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut err =
                ApiError::new(status, code, format!("cluster {cluster}: {}", body.message));
            err.advice = body.advice;
            err
        }
        other => FedError::Unreachable {
            cluster: cluster.to_string(),
            detail: other.to_string(),
        }
        .into(),
    }
}

/// The members (each with data of the caller's) whose cluster the caller's grant names, each with the rule
/// that would apply there (`None` when no rule can be selected, e.g. the member does not allow the role).
fn granted<T>(
    app: &App,
    rules: &[Rule],
    members: Vec<(Member, T)>,
) -> Vec<(Member, T, Option<Rule>)> {
    let listed: Vec<Member> = members.iter().map(|(m, _)| m.clone()).collect();
    let mut planned = plan::plan(
        rules,
        &app.settings.auth.policy,
        &targets(&listed),
        None,
        &[],
    );
    let own = app.settings.cluster_name();
    members
        .into_iter()
        .filter(|(m, _)| {
            rules
                .iter()
                .any(|r| r.applies_to(&m.announcement.cluster_name, own))
        })
        .map(|(m, data)| {
            let rule = planned
                .iter()
                .position(|(n, _)| *n == m.announcement.cluster_name)
                .and_then(|i| planned.swap_remove(i).1.ok());
            (m, data, rule)
        })
        .collect()
}

/// Members whose cluster the caller's grant names, with the namespace the winning rule sets.
fn permitted_members(
    app: &App,
    caller: &Caller,
    members: Vec<Member>,
) -> Result<Vec<(Member, Option<String>)>, ApiError> {
    let rules = caller_rules(app, caller)?;
    let members = members.into_iter().map(|m| (m, ())).collect();
    Ok(granted(app, &rules, members)
        .into_iter()
        .map(|(m, (), rule)| (m, rule.and_then(|r| r.namespaces.first().cloned())))
        .collect())
}

/// `GET /kubeconfig` at a primary with members: the document and the clusters that failed (`Tka-Partial`).
pub async fn kubeconfig(
    app: &App,
    caller: &Caller,
    q: &std::collections::HashMap<String, String>,
    format: Format,
    exec: bool,
    rid: &str,
) -> Result<(Value, Vec<String>), ApiError> {
    let members = app.federation.healthy_members(Instant::now());
    let permitted = permitted_members(app, caller, members)?;
    let own = app.settings.cluster_name().to_string();
    let mut partial = Vec::new();
    let mut entries = Vec::new();
    let own_granted = auth::grant(caller, &app.settings.auth).is_ok();
    if own_granted {
        match ready_session(app, caller, q).await {
            Ok(Ok(s)) if auth::still_granted(caller, &app.settings.auth, &s.spec.role).is_ok() => {
                let info = cluster_info(app)?;
                let a = kubeconfig_auth(app, &s, exec, rid).await?;
                entries.push(own_entry(app, &s, &info, a));
            }
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {}
            _ => partial.push(own.clone()),
        }
    }
    let lookups = permitted.iter().map(|(m, ns)| async move {
        if exec {
            // No token to mint now: include the cluster if the member holds a ready session.
            let path = format!(
                "{PREFIX}/sessions?login_name={}&node_id={}",
                encode(&caller.login),
                encode(&caller.peer.node_stable_id)
            );
            let l: Answer<Vec<MemberSession>> =
                member_call(app, m, http::Method::GET, &path, None::<&()>, "token", rid).await?;
            if !l.body.iter().any(|s| s.provisioned) {
                return Ok(None);
            }
        }
        match member_entry(app, m, caller, ns.clone(), exec, rid).await {
            Ok(e) => Ok(Some(e)),
            Err(CallError::Status { status: 401, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    });
    for (i, r) in futures::future::join_all(lookups)
        .await
        .into_iter()
        .enumerate()
    {
        match r {
            Ok(Some(e)) => entries.push(e),
            Ok(None) => {}
            Err(_) => partial.push(permitted[i].0.announcement.cluster_name.clone()),
        }
    }
    if entries.is_empty() {
        if partial.is_empty() {
            return Err(ApiError::not_signed_in(StatusCode::UNAUTHORIZED));
        }
        return Err(FedError::AllFailed(Vec::new()).into());
    }
    Ok((document(app, &caller.login, &entries, format), partial))
}

/// Minimal percent-encoding for a query value (login names may hold `@`, `+`, spaces).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /exec-credential?cluster=<member>`: re-authenticated here (grant for that cluster), minted there.
pub async fn exec_credential(
    app: &App,
    caller: &Caller,
    cluster: &str,
    api_version: &str,
    rid: &str,
) -> Result<ExecCredential, ApiError> {
    let member = {
        let reg = app.federation.registry.lock().expect("lock poisoned");
        reg.get(cluster, Instant::now()).map(|(m, _)| m.clone())
    };
    let Some(m) = member else {
        return Err(FedError::UnknownCluster(cluster.to_string()).into());
    };
    let rules = caller_rules(app, caller)?;
    let own = app.settings.cluster_name();
    if !rules.iter().any(|r| r.applies_to(cluster, own)) {
        let e = ApiError::from(crate::model::rules::Reject::NoGrant {
            cluster: cluster.to_string(),
        });
        app.reject(&e);
        return Err(e);
    }
    match mint_on_member(app, &m, caller, "exec", rid)
        .await
        .map_err(|e| relay_error(cluster, e))?
    {
        Ok(t) => Ok(ExecCredential::new(
            api_version,
            t.token,
            t.expiration_timestamp,
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "session_pending",
            format!("your session on cluster {cluster} is still being provisioned"),
        )
        .retry_after(app.settings.retry_after())),
    }
}

/// `GET /clusters` entries of the members (healthy and stale), with the role the caller would get.
pub fn member_clusters(app: &App, caller: &Caller) -> Vec<Value> {
    let now = Instant::now();
    let listed: Vec<(Member, &'static str)> = {
        let reg = app.federation.registry.lock().expect("lock poisoned");
        reg.list(now)
            .into_iter()
            .map(|(m, h)| (m.clone(), h.label()))
            .collect()
    };
    let Ok(rules) = caller_rules(app, caller) else {
        return Vec::new();
    };
    granted(app, &rules, listed)
        .into_iter()
        .map(|(m, health, rule)| {
            let a = &m.announcement;
            let role = rule.map(|r| r.role);
            json!({
                "name": a.cluster_name,
                "labels": a.labels,
                "server_url": a.api_endpoint,
                "status": health,
                "role": role,
            })
        })
        .collect()
}
