//! This cluster's sessions: find, provision, wait for, end, and mint tokens for them. Every operation of the
//! service uses these for the own cluster (and a member uses them for sessions its primary asks for).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::ResourceExt;

use super::store::NewSession;
use super::{Caller, Service};
use crate::api::error::ApiError;
use crate::model::naming;
use crate::model::rules::Rule;
use crate::model::wire::{self, TkaClusterInfo, UserLoginResponse};
use crate::operator::crd::{Origin, TkaSignin};
use crate::operator::signin::SessionState;
use crate::operator::token::{self, Minted};

/// An answer that may still wait for the controller.
pub enum Progress<T> {
    Ready(T),
    /// Ask again later (202 with `Retry-After`).
    Pending,
}

/// What a token is for: the rest of the session (`kubeconfig`) or a short-lived exec credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Kubeconfig,
    Exec,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Kubeconfig => "kubeconfig",
            TokenKind::Exec => "exec",
        }
    }

    pub fn parse(s: &str) -> Option<TokenKind> {
        match s {
            "kubeconfig" => Some(TokenKind::Kubeconfig),
            "exec" => Some(TokenKind::Exec),
            _ => None,
        }
    }
}

/// The session a login on this cluster asks for.
pub fn new_session(caller: &Caller, rule: &Rule) -> NewSession {
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
        origin: Origin::local(),
    }
}

/// The session object of a user's node.
pub fn session_name(login: &str, node_id: &str) -> String {
    naming::signin_name(&naming::subject_key(login), &naming::node_key(node_id))
}

/// Records the session on the request's operation span.
pub fn record_session(s: &TkaSignin) {
    let span = tracing::Span::current();
    span.record("tka.session", s.name_any().as_str());
    span.record("tka.role", s.spec.role.as_str());
    span.record("tka.period", s.spec.validity_period.to_string().as_str());
}

impl Service {
    /// A member with `federation.allowDirectLogin: false` runs no standalone user API: no logins and no
    /// tokens from its own grants; its users go through the primary, which relays.
    pub fn direct_use(&self) -> Result<(), ApiError> {
        if self.federation.direct_login_disabled() {
            return Err(ApiError::direct_login_disabled(
                &self.federation.settings().login_server,
            ));
        }
        Ok(())
    }

    pub fn cluster_info(&self) -> Result<TkaClusterInfo, ApiError> {
        self.cluster_info
            .get()
            .ok_or_else(|| ApiError::cluster_info_unavailable(self.settings.retry_after()))
    }

    pub(super) fn kube_error(&self, e: kube::Error) -> ApiError {
        ApiError::kube(e, self.settings.retry_after())
    }

    /// The session of a user's node, from the cache or (just written, cache lagging) the apiserver.
    pub async fn find(
        &self,
        login: &str,
        node_id: &str,
    ) -> Result<Option<Arc<TkaSignin>>, ApiError> {
        let found = self
            .store
            .find(&session_name(login, node_id))
            .await
            .map_err(|e| self.kube_error(e))?;
        if let Some(s) = &found {
            record_session(s);
        }
        Ok(found)
    }

    /// The caller's session on this node.
    pub async fn lookup(&self, caller: &Caller) -> Result<Option<Arc<TkaSignin>>, ApiError> {
        self.find(&caller.login, &caller.peer.node_stable_id).await
    }

    /// The login answer for a session on this cluster.
    pub fn response_for(&self, s: &TkaSignin) -> UserLoginResponse {
        record_session(s);
        UserLoginResponse {
            username: s.spec.username.clone(),
            role: s.spec.role.clone(),
            until: s.until().map(wire::rfc3339).unwrap_or_default(),
            provisioned: s.is_ready(),
            cluster: self.settings.cluster_name().to_string(),
            node: s.spec.node.clone(),
            session: s.name_any(),
            namespaces: s.spec.namespaces.clone(),
            ..UserLoginResponse::default()
        }
    }

    /// Waits (woken by the watch) for the session's current generation to be reported on (ready or failed).
    async fn wait_ready(
        &self,
        name: &str,
        generation: i64,
        wait: Duration,
    ) -> Result<Option<Arc<TkaSignin>>, ApiError> {
        let deadline = tokio::time::Instant::now() + wait;
        let s = self
            .store
            .wait_for(name, deadline, self.shutdown.clone(), |s| {
                s.is_some_and(|s| {
                    s.generation() >= generation && s.state() != SessionState::Pending
                })
            })
            .await;
        if *self.shutdown.borrow() {
            return Err(ApiError::shutting_down());
        }
        Ok(s)
    }

    /// With `wait`, waits while the session's current generation is pending; returns the latest view.
    pub async fn settle(
        &self,
        s: Arc<TkaSignin>,
        wait: Option<Duration>,
    ) -> Result<Arc<TkaSignin>, ApiError> {
        match (s.state(), wait) {
            (SessionState::Pending, Some(w)) => Ok(self
                .wait_ready(&s.name_any(), s.generation(), w)
                .await?
                .unwrap_or(s)),
            _ => Ok(s),
        }
    }

    /// A session tokens can be minted for: it exists, has not ended and is ready (or, waited for, still
    /// pending); a failed provisioning is the error it is.
    pub async fn ready(
        &self,
        s: Option<Arc<TkaSignin>>,
        wait: Option<Duration>,
    ) -> Result<Progress<Arc<TkaSignin>>, ApiError> {
        let Some(s) = s else {
            return Err(ApiError::not_signed_in(http::StatusCode::UNAUTHORIZED));
        };
        if s.expired(Timestamp::now()) || s.is_ending() {
            return Err(ApiError::session_expired());
        }
        let s = self.settle(s, wait).await?;
        match s.state() {
            SessionState::Ready => Ok(Progress::Ready(s)),
            SessionState::Pending => Ok(Progress::Pending),
            SessionState::Failed { reason, message } => {
                Err(ApiError::provisioning_failed(&reason, &message))
            }
        }
    }

    /// One session on this cluster (a local login or a member's federated one): end conflicts, clear an
    /// expired predecessor, write, and with `wait` wait for the controller. The state is `None` when not
    /// waited for.
    pub async fn provision(
        &self,
        new: &NewSession,
        replace: bool,
        wait: Option<Duration>,
        rid: &str,
    ) -> Result<(Arc<TkaSignin>, Option<SessionState>), ApiError> {
        let name = new.name();
        self.end_conflicts(new, replace).await?;
        self.clear_previous(&name).await?;
        let written = self.write_fresh(new).await?;
        tracing::info!(audit = true, event = "login", user = %new.login, node = %new.node, role = %new.role,
            cluster = %self.settings.cluster_name(), origin = %new.origin.kind().as_str(), session = %name,
            until = %written.until().map(wire::rfc3339).unwrap_or_default(), request_id = %rid, "login");
        let Some(wait) = wait else {
            return Ok((Arc::new(written), None));
        };
        let generation = written.generation();
        let s = match self.wait_ready(&name, generation, wait).await? {
            Some(s) if s.generation() >= generation => s,
            _ => Arc::new(written),
        };
        let state = s.state();
        Ok((s, Some(state)))
    }

    /// Live sessions of this user on other nodes with another role or scope are a 409, unless `replace`
    /// ends them first.
    async fn end_conflicts(&self, new: &NewSession, replace: bool) -> Result<(), ApiError> {
        let now = Timestamp::now();
        let name = new.name();
        let conflicts: Vec<Arc<TkaSignin>> = self
            .store
            .of_user(&naming::subject_key(&new.login))
            .into_iter()
            .filter(|s| s.name_any() != name && s.is_live(now))
            .filter(|s| s.spec.role != new.role || s.spec.namespaces != new.namespaces)
            .collect();
        if conflicts.is_empty() {
            return Ok(());
        }
        if !replace {
            let on: Vec<String> = conflicts
                .iter()
                .map(|s| format!("{} on {}", s.spec.role, s.spec.node))
                .collect();
            return Err(ApiError::role_conflict(&on));
        }
        for s in conflicts {
            self.store
                .delete(&s)
                .await
                .map_err(|e| self.kube_error(e))?;
            self.metrics
                .revocations
                .with_label_values(&["replaced"])
                .inc();
        }
        Ok(())
    }

    /// An expired session starts over; one being deleted must be gone first (bounded by 5 s).
    async fn clear_previous(&self, name: &str) -> Result<(), ApiError> {
        let Some(existing) = self.store.get(name) else {
            return Ok(());
        };
        let now = Timestamp::now();
        if !existing.is_ending() && existing.expired(now) {
            self.store
                .delete(&existing)
                .await
                .map_err(|e| self.kube_error(e))?;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let gone_or_live =
            |s: Option<&TkaSignin>| s.is_none_or(|s| !s.is_ending() && !s.expired(now));
        let after = self
            .store
            .wait_for(name, deadline, self.shutdown.clone(), gone_or_live)
            .await;
        if gone_or_live(after.as_deref()) {
            Ok(())
        } else {
            Err(ApiError::session_ending(self.settings.retry_after()))
        }
    }

    /// Create or extend (spec only). The cache may not have shown a logout that is still being cleaned up:
    /// if the write landed on a terminating object, wait for it to go and create a new one, so a re-login
    /// right after logout is never lost.
    async fn write_fresh(&self, new: &NewSession) -> Result<TkaSignin, ApiError> {
        let written = self
            .store
            .write(new)
            .await
            .map_err(|e| self.kube_error(e))?;
        if !written.is_ending() {
            return Ok(written);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let uid = written.uid();
        self.store
            .wait_for(&new.name(), deadline, self.shutdown.clone(), |s| {
                s.is_none_or(|s| s.uid() != uid)
            })
            .await;
        let written = self
            .store
            .write(new)
            .await
            .map_err(|e| self.kube_error(e))?;
        if written.is_ending() {
            return Err(ApiError::session_ending(self.settings.retry_after()));
        }
        Ok(written)
    }

    /// Deletes sessions (their finalizers revoke the tokens), with the audit line and metric.
    pub async fn end(
        &self,
        targets: &[Arc<TkaSignin>],
        reason: &str,
        rid: &str,
    ) -> Result<(), ApiError> {
        for s in targets {
            self.store.delete(s).await.map_err(|e| self.kube_error(e))?;
            self.metrics.revocations.with_label_values(&[reason]).inc();
            tracing::info!(audit = true, event = "logout", origin = s.origin_kind().as_str(), user = %s.spec.username,
                node = %s.spec.node, role = %s.spec.role, session = %s.name_any(), request_id = %rid, "logout");
        }
        Ok(())
    }

    /// Mints a token for a ready session and logs the audit line (never the token).
    pub async fn mint(
        &self,
        s: &TkaSignin,
        kind: TokenKind,
        rid: &str,
    ) -> Result<Minted, ApiError> {
        let now = Timestamp::now();
        let until = s.until().unwrap_or(now);
        let seconds = match kind {
            TokenKind::Kubeconfig => token::kubeconfig_seconds(until, now),
            TokenKind::Exec => token::exec_seconds(until, now, self.settings.exec_credential_ttl),
        };
        let started = Instant::now();
        let r = token::mint(
            &self.client,
            &self.settings.namespace,
            s,
            seconds,
            &self.settings.token_audiences,
        )
        .await;
        let result = if r.is_ok() { "success" } else { "error" };
        self.metrics
            .tokens_issued
            .with_label_values(&[kind.as_str(), result])
            .inc();
        self.metrics
            .token_request_duration
            .with_label_values(&[result])
            .observe(started.elapsed().as_secs_f64());
        match r {
            Ok(m) => {
                self.expiries.notify(&s.name_any(), m.expires_at);
                tracing::info!(audit = true, event = "token_issued", user = %s.spec.username, node = %s.spec.node,
                    role = %s.spec.role, cluster = %self.settings.cluster_name(), session = %s.name_any(),
                    jti = m.jti.as_deref().unwrap_or(""), until = %wire::rfc3339(m.expires_at), request_id = %rid,
                    kind = kind.as_str(), "token issued");
                Ok(m)
            }
            Err(token::TokenError::NotReady | token::TokenError::SecretGone) => {
                Err(ApiError::session_changing(self.settings.retry_after()))
            }
            Err(e) => Err(ApiError::kube(e, self.settings.retry_after())),
        }
    }
}
