//! The server-to-server side of federation. At the primary: heartbeats admit members. At a member: the
//! session and token calls, accepted only from the configured primary. The member trusts the primary's word
//! on the user and the rule, but applies its own limits (`model::rules::member_limits`).

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;

use super::Service;
use super::local::{Progress, TokenKind, session_name};
use super::login::LoginAnswer;
use super::store::NewSession;
use crate::api::error::ApiError;
use crate::federation::FedError;
use crate::federation::wire::{
    Heartbeat, HeartbeatAck, MemberSession, SessionRef, SessionRequest, TokenAnswer, TokenCall,
};
use crate::identity::PeerIdentity;
use crate::model::duration::GoDuration;
use crate::model::naming;
use crate::model::rules::{Refused, check_protected, member_limits};
use crate::model::wire;
use crate::operator::crd::{Origin, TkaSignin};

impl Service {
    /// Primary: a member's heartbeat.
    pub async fn heartbeat(
        &self,
        peer: &PeerIdentity,
        hb: Heartbeat,
    ) -> Result<HeartbeatAck, ApiError> {
        let cluster = hb.cluster_name.clone();
        match self.federation.admit(peer, hb).await {
            Ok(new) => {
                if new {
                    tracing::info!(cluster = %cluster, node = %peer.node_fqdn, "federation member registered");
                }
                self.federation.redeliver(&cluster);
                // Known clusters only: a rejected name is attacker-chosen and must not become a label.
                self.metrics
                    .federation_requests
                    .with_label_values(&[&cluster, "heartbeat", "success"])
                    .inc();
                Ok(HeartbeatAck {
                    accepted: true,
                    primary_cluster: self.settings.cluster_name().to_string(),
                    heartbeat_interval: GoDuration::from_std(
                        self.federation.settings().heartbeat_interval,
                    )
                    .to_string(),
                })
            }
            Err(e) => {
                tracing::warn!(cluster = %cluster, node = %peer.node_fqdn, code = e.code(), "federation heartbeat refused: {e}");
                let e = ApiError::from(e);
                self.reject(&e);
                Err(e)
            }
        }
    }

    /// Member: the caller must be our primary.
    pub async fn from_primary(&self, peer: &PeerIdentity) -> Result<(), ApiError> {
        self.federation
            .check_primary(peer)
            .await
            .map_err(ApiError::from)
            .inspect_err(|e| self.reject(e))
    }

    /// Runs one member operation, counted under this cluster's name.
    async fn counted<T>(
        &self,
        operation: &str,
        op: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let r = op.await;
        let result = if r.is_ok() { "success" } else { "error" };
        self.metrics
            .federation_requests
            .with_label_values(&[self.settings.cluster_name(), operation, result])
            .inc();
        r
    }

    /// Member: provision the session the primary asks for, within this member's own limits.
    pub async fn member_signin(
        &self,
        primary: &PeerIdentity,
        req: SessionRequest,
        wait: Option<Duration>,
        rid: &str,
    ) -> Result<LoginAnswer, ApiError> {
        self.counted("signin", async {
            if req.login_name.is_empty() || req.node_id.is_empty() || req.role.is_empty() {
                return Err(invalid("login_name, node_id and role are required"));
            }
            let period = GoDuration::parse(&req.period)
                .map_err(|e| invalid(&format!("period: {e}")))?
                .as_std();
            let period = member_limits(
                &self.settings.auth.policy,
                &req.role,
                period,
                &req.namespaces,
            )
            .map_err(|r| match r {
                Refused::Role(rej) => ApiError::from(rej),
                Refused::Invalid(why) => invalid(&why),
            })?;
            check_protected(&req.role, &req.namespaces, &self.settings.auth.policy)?;
            let new = NewSession {
                login: req.login_name,
                node: req.node,
                node_id: req.node_id,
                node_ip: req.node_ip,
                role: req.role,
                period,
                namespaces: req.namespaces,
                origin: Origin::federation(&primary.node_fqdn),
            };
            let (s, state) = self.provision(&new, req.replace, wait, rid).await?;
            self.answer(&s, state)
        })
        .await
    }

    /// Member: live federated sessions, all (`origin=federation`) or one user's node's.
    pub fn member_sessions(&self, q: &HashMap<String, String>) -> Vec<MemberSession> {
        let now = Timestamp::now();
        let login = q.get("login_name").filter(|v| !v.is_empty());
        let node = q.get("node_id").filter(|v| !v.is_empty());
        self.store
            .all()
            .iter()
            .filter(|s| s.is_federated() && !s.is_ending() && !s.expired(now))
            .filter(|s| login.is_none_or(|l| &s.spec.username == l))
            .filter(|s| node.is_none_or(|n| &s.spec.node_id == n))
            .map(|s| listed(s))
            .collect()
    }

    /// Member: end federated sessions (never local ones).
    pub async fn member_signout(
        &self,
        r: SessionRef,
        rid: &str,
    ) -> Result<Vec<MemberSession>, ApiError> {
        if r.login_name.is_empty() || (r.node_id.is_empty() && !r.all) {
            return Err(invalid("login_name and node_id (or all) are required"));
        }
        let targets: Vec<_> = self
            .store
            .of_user(&naming::subject_key(&r.login_name))
            .into_iter()
            .filter(|s| s.is_federated() && !s.is_ending())
            .filter(|s| r.all || s.spec.node_id == r.node_id)
            .collect();
        if targets.is_empty() {
            self.metrics
                .federation_requests
                .with_label_values(&[self.settings.cluster_name(), "signout", "not_found"])
                .inc();
            return Err(ApiError::not_signed_in(http::StatusCode::NOT_FOUND));
        }
        let ended = async { self.end(&targets, "logout", rid).await };
        self.counted("signout", ended).await?;
        Ok(targets.iter().map(|s| listed(s)).collect())
    }

    /// Member: a token for a ready federated session.
    pub async fn member_mint(
        &self,
        t: TokenCall,
        rid: &str,
    ) -> Result<Progress<TokenAnswer>, ApiError> {
        self.counted("token", async {
            let kind = TokenKind::parse(&t.kind)
                .ok_or_else(|| invalid(&format!("kind {:?} is unknown", t.kind)))?;
            let found = self
                .store
                .find(&session_name(&t.login_name, &t.node_id))
                .await
                .map_err(|e| self.kube_error(e))?;
            let s = match self.ready(found.filter(|s| s.is_federated()), None).await? {
                Progress::Ready(s) => s,
                Progress::Pending => return Ok(Progress::Pending),
            };
            let m = self.mint(&s, kind, rid).await?;
            Ok(Progress::Ready(TokenAnswer {
                token: m.token,
                expiration_timestamp: wire::rfc3339(m.expires_at),
            }))
        })
        .await
    }
}

fn invalid(why: &str) -> ApiError {
    FedError::InvalidBody(why.to_string()).into()
}

fn listed(s: &TkaSignin) -> MemberSession {
    MemberSession {
        login_name: s.spec.username.clone(),
        node_id: s.spec.node_id.clone(),
        node_ip: s.spec.node_ip.clone(),
        role: s.spec.role.clone(),
        namespaces: s.spec.namespaces.clone(),
        until: s.until().map(wire::rfc3339).unwrap_or_default(),
        started: s.started().map(wire::rfc3339).unwrap_or_default(),
        provisioned: s.is_ready(),
    }
}
