//! A login, in three stages read top to bottom: **plan** which clusters it reaches and with which rule,
//! **execute** (the own cluster and every member concurrently, each member bounded by
//! `federation.requestTimeout`), **assemble** one answer. Without healthy members the plan holds the own
//! cluster only and the answer is a single-cluster one. The outcome is counted once, in [`Service::login`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;

use super::kubeconfig::Format;
use super::local::new_session;
use super::outcome::LoginOutcome;
use super::{Caller, Service};
use crate::api::error::ApiError;
use crate::federation::client::{Answer, CallError};
use crate::federation::plan;
use crate::federation::wire::SessionRequest;
use crate::federation::{FedError, Member};
use crate::model::rules::{Reject, Rule};
use crate::model::wire::{self, ClusterResult, UserLoginResponse};
use crate::operator::crd::TkaSignin;
use crate::operator::signin::SessionState;

/// What a login asks for.
#[derive(Debug, Clone, Default)]
pub struct LoginRequest {
    pub role: Option<String>,
    /// `cluster=` parameters: limit a federated login to these clusters.
    pub only: Vec<String>,
    pub wait: Option<Duration>,
    /// End live sessions with another role instead of refusing (409).
    pub replace: bool,
    pub include: Includes,
    pub format: Option<Format>,
    /// Kubeconfig users run the exec plugin.
    pub exec: bool,
}

/// What a ready login returns besides the session (one round trip for `tka login`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Includes {
    pub kubeconfig: bool,
    pub credential: bool,
    pub cluster_info: bool,
}

impl Includes {
    pub fn any(&self) -> bool {
        self.kubeconfig || self.credential || self.cluster_info
    }
}

/// A login's answer: ready (200) or still provisioning (202).
pub struct LoginAnswer {
    pub body: UserLoginResponse,
    pub ready: bool,
}

/// Which clusters a login reaches.
struct Plan {
    federated: bool,
    own: Option<Rule>,
    members: Vec<(Member, Rule)>,
    /// Clusters the grant refuses (or names but does not allow), listed in the answer.
    refused: Vec<(String, Reject)>,
}

type OwnResult = Result<(Arc<TkaSignin>, Option<SessionState>), ApiError>;
type MemberResult = (Member, Rule, Result<Answer<UserLoginResponse>, CallError>);

impl Service {
    /// `POST /login`.
    pub async fn login(
        &self,
        caller: &Caller,
        req: &LoginRequest,
        rid: &str,
    ) -> Result<LoginAnswer, ApiError> {
        let started = Instant::now();
        let (role, result) = self.login_stages(caller, req, rid).await;
        LoginOutcome::of(&role, result.as_ref().map(|a| a.ready)).record(self.metrics(), started);
        result
    }

    /// `GET /login`: the caller's session on this node, with `wait` until it settles.
    pub async fn login_state(
        &self,
        caller: &Caller,
        wait: Option<Duration>,
    ) -> Result<LoginAnswer, ApiError> {
        let Some(s) = self.lookup(caller).await? else {
            return Err(ApiError::not_signed_in(http::StatusCode::UNAUTHORIZED));
        };
        let s = self.settle(s, wait).await?;
        self.answer(&s, Some(s.state()))
    }

    /// The role the login is for (empty when none was selected) and its answer.
    async fn login_stages(
        &self,
        caller: &Caller,
        req: &LoginRequest,
        rid: &str,
    ) -> (String, Result<LoginAnswer, ApiError>) {
        let plan = match self.direct_use().and_then(|()| self.plan(caller, req)) {
            Ok(p) => p,
            Err(e) => return (String::new(), Err(e)),
        };
        let role = match (&plan.own, plan.members.first()) {
            (Some(r), _) | (None, Some((_, r))) => r.role.clone(),
            (None, None) => String::new(),
        };
        let (own, members) = self.execute(caller, &plan, req, rid).await;
        let answer = match own {
            Some(own) if !plan.federated => self.assemble_local(own, req, rid).await,
            own => {
                self.assemble_federated(caller, plan, own, members, req, rid)
                    .await
            }
        };
        (role, answer)
    }

    // ---------------------------------------------------------------------------------------------------
    // Plan

    fn plan(&self, caller: &Caller, req: &LoginRequest) -> Result<Plan, ApiError> {
        let rules = self.rules(caller)?;
        let members = self.federation.healthy_members();
        let federated = !members.is_empty();
        // Without members `cluster=` has nothing to choose from and is ignored.
        let only: &[String] = if federated { &req.only } else { &[] };
        let targets: Vec<_> = members.iter().map(Member::target).collect();
        let policy = &self.settings.auth.policy;
        let planned = plan::plan(&rules, policy, &targets, req.role.as_deref(), only);
        if let Some(unknown) = only.iter().find(|o| !planned.iter().any(|(n, _)| n == *o)) {
            return Err(FedError::UnknownCluster(unknown.clone()).into());
        }
        let own_name = self.settings.cluster_name();
        let mut plan = Plan {
            federated,
            own: None,
            members: Vec::new(),
            refused: Vec::new(),
        };
        let mut own_refusal = None;
        for (name, r) in planned {
            match r {
                Ok(rule) if name == own_name => plan.own = Some(rule),
                Ok(rule) => {
                    let m = members.iter().find(|m| m.announcement.cluster_name == name);
                    plan.members.extend(m.map(|m| (m.clone(), rule)));
                }
                Err(rej) => {
                    if name == own_name {
                        own_refusal = Some(rej.clone());
                    }
                    // Clusters refused by the grant itself (not merely absent from it) are listed.
                    if !matches!(rej, Reject::NoGrant { .. }) || only.contains(&name) {
                        plan.refused.push((name, rej));
                    }
                }
            }
        }
        if plan.own.is_none() && plan.members.is_empty() {
            // Nothing to do: the own cluster's exact error, as a standalone server answers.
            let rej = match own_refusal {
                Some(r) if !matches!(r, Reject::NoGrant { .. }) => r,
                _ => Reject::NoGrant {
                    cluster: own_name.to_string(),
                },
            };
            let e = ApiError::from(rej);
            self.reject(&e);
            return Err(e);
        }
        Ok(plan)
    }

    // ---------------------------------------------------------------------------------------------------
    // Execute

    async fn execute(
        &self,
        caller: &Caller,
        plan: &Plan,
        req: &LoginRequest,
        rid: &str,
    ) -> (Option<OwnResult>, Vec<MemberResult>) {
        let own = async {
            match &plan.own {
                Some(rule) => Some(
                    self.provision(&new_session(caller, rule), req.replace, req.wait, rid)
                        .await,
                ),
                None => None,
            }
        };
        // A member must answer within the request timeout, so it waits a little less.
        let timeout = self.federation.settings().request_timeout;
        let member_wait = req
            .wait
            .map(|w| w.min(timeout.saturating_sub(Duration::from_secs(1))));
        let calls = plan.members.iter().map(|(m, rule)| async move {
            let body = session_request(caller, rule, req.replace, rid);
            let r = self
                .federation
                .client()
                .signin(m, &body, member_wait, rid)
                .await;
            (m.clone(), rule.clone(), r)
        });
        futures::join!(own, join_all(calls))
    }

    // ---------------------------------------------------------------------------------------------------
    // Assemble

    async fn assemble_local(
        &self,
        own: OwnResult,
        req: &LoginRequest,
        rid: &str,
    ) -> Result<LoginAnswer, ApiError> {
        let (s, state) = own?;
        let mut answer = self.answer(&s, state)?;
        if answer.ready {
            self.add_includes(&s, &mut answer.body, req, rid).await?;
            if req.include.kubeconfig {
                let entry = self.own_ready_entry(&s, req.exec, rid).await?;
                let format = req.format.unwrap_or(Format::Legacy);
                answer.body.kubeconfig = Some(self.document(&s.spec.username, &[entry], format));
            }
        }
        Ok(answer)
    }

    /// A session on this cluster as a login answer: ready, still provisioning (or not waited for), or the
    /// failure of its provisioning.
    pub fn answer(
        &self,
        s: &TkaSignin,
        state: Option<SessionState>,
    ) -> Result<LoginAnswer, ApiError> {
        match state {
            Some(SessionState::Failed { reason, message }) => {
                Err(ApiError::provisioning_failed(&reason, &message))
            }
            state => Ok(LoginAnswer {
                body: self.response_for(s),
                ready: state == Some(SessionState::Ready),
            }),
        }
    }

    /// The credential and cluster info of a ready login (they concern the own cluster).
    async fn add_includes(
        &self,
        s: &TkaSignin,
        body: &mut UserLoginResponse,
        req: &LoginRequest,
        rid: &str,
    ) -> Result<(), ApiError> {
        if req.include.credential {
            body.credential = Some(self.credential_for(s, wire::EXEC_API_V1, rid).await?);
        }
        if req.include.cluster_info {
            body.cluster_info = Some(self.cluster_info()?);
        }
        Ok(())
    }

    async fn assemble_federated(
        &self,
        caller: &Caller,
        plan: Plan,
        own: Option<OwnResult>,
        members: Vec<MemberResult>,
        req: &LoginRequest,
        rid: &str,
    ) -> Result<LoginAnswer, ApiError> {
        let mut results = Vec::new();
        let own_ok = own.and_then(|r| self.own_result(r, plan.own.as_ref(), &mut results));
        let member_ok = member_results(members, &mut results);
        for (name, rej) in &plan.refused {
            let e = ApiError::from(rej.clone()).body();
            results.push(result(name, plan::status_of(rej), "", "", Some(e)));
        }
        if own_ok.is_none() && member_ok.is_empty() {
            return Err(FedError::AllFailed(results).into());
        }
        let ready = req.wait.is_some()
            && own_ok.as_ref().is_none_or(|(_, r)| *r)
            && member_ok.iter().all(|(_, _, _, r)| *r);
        let mut body = match &own_ok {
            Some((s, _)) => self.response_for(s),
            None => member_ok[0].2.clone(),
        };
        if ready && req.include.any() {
            if let Some((s, _)) = &own_ok {
                self.add_includes(s, &mut body, req, rid).await?;
            }
            if req.include.kubeconfig {
                let own = own_ok.as_ref().map(|(s, _)| s.as_ref());
                let doc = self
                    .federated_document(caller, own, &member_ok, &mut results, req, rid)
                    .await?;
                body.kubeconfig = Some(doc);
            }
        }
        body.clusters = results;
        Ok(LoginAnswer { body, ready })
    }

    /// The own cluster's line of a federated login; the session when it can be used.
    fn own_result(
        &self,
        r: OwnResult,
        rule: Option<&Rule>,
        results: &mut Vec<ClusterResult>,
    ) -> Option<(Arc<TkaSignin>, bool)> {
        let own = self.settings.cluster_name();
        match r {
            Ok((s, state)) => {
                let until = s.until().map(wire::rfc3339).unwrap_or_default();
                let (status, err) = match state {
                    Some(SessionState::Ready) => ("ready", None),
                    None | Some(SessionState::Pending) => ("pending", None),
                    Some(SessionState::Failed { reason, message }) => (
                        "failed",
                        Some(ApiError::provisioning_failed(&reason, &message).body()),
                    ),
                };
                results.push(result(own, status, &s.spec.role, &until, err.clone()));
                err.is_none().then_some((s, status == "ready"))
            }
            Err(e) => {
                let status = if e.status == http::StatusCode::CONFLICT {
                    "conflict"
                } else {
                    "failed"
                };
                let role = rule.map(|r| r.role.as_str()).unwrap_or_default();
                results.push(result(own, status, role, "", Some(e.body())));
                None
            }
        }
    }

    /// The kubeconfig of a ready federated login: the own entry and one per member, each member's token
    /// minted by that member. A member that fails here is marked failed in `results`.
    async fn federated_document(
        &self,
        caller: &Caller,
        own: Option<&TkaSignin>,
        members: &[(Member, Rule, UserLoginResponse, bool)],
        results: &mut [ClusterResult],
        req: &LoginRequest,
        rid: &str,
    ) -> Result<serde_json::Value, ApiError> {
        let mut entries = Vec::new();
        if let Some(s) = own {
            entries.push(self.own_ready_entry(s, req.exec, rid).await?);
        }
        let mints = members.iter().map(|(m, rule, _, _)| {
            let ns = rule.namespaces.first().cloned();
            self.member_entry(m, caller, ns, req.exec, rid)
        });
        for ((m, _, _, _), r) in members.iter().zip(join_all(mints).await) {
            match r {
                Ok(e) => entries.push(e),
                Err(e) => {
                    let name = &m.announcement.cluster_name;
                    if let Some(c) = results.iter_mut().find(|c| &c.name == name) {
                        c.status = "failed".into();
                        c.error = Some(e.to_error_response());
                    }
                }
            }
        }
        let format = req.format.unwrap_or(Format::Legacy);
        Ok(self.document(&caller.login, &entries, format))
    }
}

/// Each member's line; the members that accepted the session, with whether it is ready.
fn member_results(
    members: Vec<MemberResult>,
    results: &mut Vec<ClusterResult>,
) -> Vec<(Member, Rule, UserLoginResponse, bool)> {
    let mut ok = Vec::new();
    for (m, rule, r) in members {
        let name = m.announcement.cluster_name.clone();
        match r {
            Ok(a) => {
                let ready = a.status == 200 && a.body.provisioned;
                let status = if ready { "ready" } else { "pending" };
                results.push(result(&name, status, &a.body.role, &a.body.until, None));
                ok.push((m, rule, a.body, ready));
            }
            Err(e) => {
                let status = match &e {
                    CallError::Status { status: 403, .. } => "forbidden",
                    CallError::Status { status: 409, .. } => "conflict",
                    _ => "failed",
                };
                results.push(result(
                    &name,
                    status,
                    &rule.role,
                    "",
                    Some(e.to_error_response()),
                ));
            }
        }
    }
    ok
}

/// What the primary asks a member to provision for the caller.
fn session_request(caller: &Caller, rule: &Rule, replace: bool, rid: &str) -> SessionRequest {
    SessionRequest {
        login_name: caller.login.clone(),
        node: caller.peer.node_fqdn.clone(),
        node_id: caller.peer.node_stable_id.clone(),
        node_ip: caller
            .peer
            .node_ip
            .map(|i| i.to_string())
            .unwrap_or_default(),
        role: rule.role.clone(),
        period: rule.period.to_string(),
        namespaces: rule.namespaces.clone(),
        requested_at: wire::rfc3339(jiff::Timestamp::now()),
        request_id: rid.to_string(),
        replace,
    }
}

fn result(
    name: &str,
    status: &str,
    role: &str,
    until: &str,
    error: Option<crate::model::wire::ErrorResponse>,
) -> ClusterResult {
    ClusterResult {
        name: name.to_string(),
        status: status.to_string(),
        role: role.to_string(),
        until: until.to_string(),
        error,
    }
}
