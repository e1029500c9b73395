//! One path for every caller: WhoIs on the connection's address → identity → rules → verdict. The per-node
//! rate limit runs before all of it, keyed by the peer's address (`api::limits`).
//! The steps that decide are pure ([`whois`] aside, which asks the backend): a user's identity from the
//! peer ([`user`]), the rules of the grant, and the verdicts in `model::rules` (`select_for` for a new
//! session, `verdict` for an existing one), so login, every token mint, revalidation and the federation all
//! decide the same way. Nothing a client sends in a header is trusted for identity.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::http::HeaderMap;
use tracing::Instrument;
use tracing::field::Empty;

use super::Service;
use crate::api::error::ApiError;
use crate::identity::{Identity, IdentityError, PeerIdentity};
use crate::model::rules::{self, Policy, Reject, Rule};
use crate::operator::crd::TkaSignin;

/// A caller whose identity is established.
#[derive(Debug, Clone)]
pub struct Caller {
    pub peer: PeerIdentity,
    /// Full login name, or the node FQDN for an allowed tagged node.
    pub login: String,
}

/// Settings the pipeline needs.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub cap_name: String,
    pub allow_tagged_nodes: bool,
    pub policy: Policy,
    pub retry_after: u64,
}

/// Who is behind the connection: Funnel is refused, WhoIs decides, a backend outage is a 503 (never a guess).
pub async fn whois(
    identity: &dyn Identity,
    remote: SocketAddr,
    headers: &HeaderMap,
    retry_after: u64,
) -> Result<PeerIdentity, ApiError> {
    // Funnel traffic comes from the public internet and never reaches the API. The header is checked
    // defensively; nothing else a client sends is trusted for identity.
    if headers.contains_key("tailscale-funnel-request") {
        return Err(ApiError::funnel());
    }
    match identity.whois(remote).await {
        Ok(Some(peer)) if peer.via_funnel => Err(ApiError::funnel()),
        Ok(Some(peer)) => Ok(peer),
        Ok(None) => Err(ApiError::unknown_peer()),
        Err(IdentityError::Unavailable(detail)) => {
            Err(ApiError::identity_unavailable(detail, retry_after))
        }
    }
}

/// The user behind a peer: its login name, or for an allowed tagged node the node itself.
pub fn user(peer: PeerIdentity, settings: &AuthSettings) -> Result<Caller, ApiError> {
    let login = if !peer.tags.is_empty() {
        if !settings.allow_tagged_nodes {
            return Err(ApiError::tagged_node());
        }
        // A tagged node's user profile is a placeholder: the node itself is the identity.
        peer.node_fqdn.clone()
    } else {
        match &peer.login_name {
            Some(l) => l.clone(),
            None => return Err(ApiError::user_identity_unsupported()),
        }
    };
    if login.is_empty() {
        return Err(ApiError::unknown_peer());
    }
    Ok(Caller { peer, login })
}

/// Every rule of the caller's grant; any malformed one rejects the grant, since silently skipping it could
/// leave the caller with a role the admin did not mean to be the winner.
pub fn rules_of(caller: &Caller, cap_name: &str) -> Result<Vec<Rule>, Reject> {
    let values = caller
        .peer
        .cap_map
        .get(cap_name)
        .map(Vec::as_slice)
        .unwrap_or_default();
    rules::parse_rules(values)
}

/// What re-running identification for a session's node says.
pub enum Recheck {
    /// The same user on the same node.
    Same(Box<Caller>),
    /// The node is gone or is another node now.
    NodeGone,
    /// The node now belongs to someone else (or cannot log in any more).
    IdentityChanged,
    /// The backend cannot tell now: never a reason to end a session.
    Unknown,
}

impl Service {
    /// A user caller: WhoIs, then identity. The node's request budget was checked before (`middleware::limit`).
    pub async fn caller(
        &self,
        remote: SocketAddr,
        headers: &HeaderMap,
    ) -> Result<Caller, ApiError> {
        let auth_span = tracing::info_span!(
            "auth",
            tka.user = Empty,
            tka.node = Empty,
            tka.auth.result = Empty,
            tka.auth.reject_reason = Empty
        );
        let result = async {
            let peer = self.observed_whois(remote, headers).await?;
            user(peer, &self.settings.auth)
        }
        .instrument(auth_span.clone())
        .await;
        match &result {
            Ok(c) => {
                auth_span.record("tka.user", c.login.as_str());
                auth_span.record("tka.node", c.peer.node_fqdn.as_str());
                auth_span.record("tka.auth.result", "ok");
            }
            Err(e) => {
                auth_span.record("tka.auth.result", "rejected");
                auth_span.record("tka.auth.reject_reason", e.code);
            }
        }
        result.inspect_err(|e| self.reject(e))
    }

    /// A federation peer (a member or the primary, usually tagged nodes): WhoIs without the user-login
    /// requirements of the user API. What the peer may do is the federation's decision.
    pub async fn peer(
        &self,
        remote: SocketAddr,
        headers: &HeaderMap,
    ) -> Result<PeerIdentity, ApiError> {
        self.observed_whois(remote, headers)
            .await
            .inspect_err(|e| self.reject(e))
    }

    async fn observed_whois(
        &self,
        remote: SocketAddr,
        headers: &HeaderMap,
    ) -> Result<PeerIdentity, ApiError> {
        let backend = self.identity.backend();
        let span = tracing::info_span!("tailnet.whois", tka.backend = backend, tka.result = Empty);
        let started = Instant::now();
        let result = whois(
            self.identity.as_ref(),
            remote,
            headers,
            self.settings.retry_after(),
        )
        .instrument(span.clone())
        .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.code == "identity_unavailable" => "error",
            Err(_) => "not_found",
        };
        span.record("tka.result", outcome);
        self.metrics
            .whois_duration
            .with_label_values(&[backend, outcome])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Counts a pipeline rejection by its code.
    pub fn reject(&self, e: &ApiError) {
        self.metrics
            .auth_rejections
            .with_label_values(&[e.code])
            .inc();
    }

    /// Every rule of the caller's grant (any cluster), counted when malformed.
    pub fn rules(&self, caller: &Caller) -> Result<Vec<Rule>, ApiError> {
        rules_of(caller, &self.settings.auth.cap_name)
            .map_err(ApiError::from)
            .inspect_err(|e| self.reject(e))
    }

    /// The caller's rules for this server's cluster: at least one, else `no_grant`.
    pub fn grant(&self, caller: &Caller) -> Result<Vec<Rule>, ApiError> {
        let own = self.settings.cluster_name();
        let applicable: Vec<Rule> = self
            .rules(caller)?
            .into_iter()
            .filter(|r| r.applies_to(own, own))
            .collect();
        if applicable.is_empty() {
            let e = ApiError::from(Reject::NoGrant {
                cluster: own.to_string(),
            });
            self.reject(&e);
            return Err(e);
        }
        Ok(applicable)
    }

    /// The one rule a new session on this cluster gets (period clamped), without counting: `whoami` uses it
    /// to explain, logins count through their outcome.
    pub fn select(&self, caller: &Caller, role: Option<&str>) -> Result<Rule, ApiError> {
        let all = rules_of(caller, &self.settings.auth.cap_name)?;
        let policy = &self.settings.auth.policy;
        Ok(rules::select_for(&all, policy, &policy.cluster, role)?)
    }

    /// Before minting for a session on this cluster: does the caller's grant still give it what it holds?
    pub fn still_holds(&self, caller: &Caller, s: &TkaSignin) -> Result<Rule, ApiError> {
        let policy = &self.settings.auth.policy;
        let all = self.rules(caller)?;
        rules::verdict(
            &all,
            policy,
            &policy.cluster,
            &s.spec.role,
            &s.spec.namespaces,
        )
        .map_err(ApiError::from)
        .inspect_err(|e| self.reject(e))
    }

    /// Who is on a session's node now (revalidation): the session's node must still be that node, and its
    /// user the session's user.
    pub async fn recheck(&self, node_ip: &str, node_id: &str, login: &str) -> Recheck {
        let Ok(ip) = node_ip.parse::<IpAddr>() else {
            return Recheck::Unknown;
        };
        let addr = SocketAddr::new(ip, 0);
        let peer = match self.identity.whois(addr).await {
            Ok(Some(p)) => p,
            Ok(None) => return Recheck::NodeGone,
            Err(_) => return Recheck::Unknown,
        };
        if peer.node_stable_id != node_id {
            return Recheck::NodeGone;
        }
        match user(peer, &self.settings.auth) {
            Ok(c) if c.login == login => Recheck::Same(Box::new(c)),
            _ => Recheck::IdentityChanged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::StaticIdentity;
    use serde_json::json;
    use std::collections::BTreeMap;

    const CAP: &str = "specht-labs.de/cap/tka";

    fn settings() -> AuthSettings {
        AuthSettings {
            cap_name: CAP.into(),
            allow_tagged_nodes: false,
            policy: Policy {
                cluster: "prod".into(),
                ..Policy::default()
            },
            retry_after: 1,
        }
    }

    fn peer(login: &str, rules: serde_json::Value) -> PeerIdentity {
        PeerIdentity {
            login_name: Some(login.into()),
            node_fqdn: "laptop.ts.net".into(),
            node_stable_id: "n1".into(),
            cap_map: BTreeMap::from([(CAP.to_string(), rules.as_array().unwrap().clone())]),
            ..PeerIdentity::default()
        }
    }

    async fn identify_as(
        p: Option<PeerIdentity>,
        headers: HeaderMap,
        s: &AuthSettings,
    ) -> Result<Caller, ApiError> {
        let backend = StaticIdentity::new();
        let addr: SocketAddr = "127.0.0.9:5000".parse().unwrap();
        if let Some(p) = p {
            backend.set(addr.ip(), p);
        }
        user(whois(&backend, addr, &headers, 1).await?, s)
    }

    #[tokio::test]
    async fn identity_steps() {
        let s = settings();
        let ok = identify_as(
            Some(peer("alice@example.com", json!([]))),
            HeaderMap::new(),
            &s,
        )
        .await
        .unwrap();
        assert_eq!(ok.login, "alice@example.com");

        assert_eq!(
            identify_as(None, HeaderMap::new(), &s)
                .await
                .unwrap_err()
                .code,
            "unknown_peer"
        );

        let mut funnel = HeaderMap::new();
        funnel.insert("Tailscale-Funnel-Request", "?1".parse().unwrap());
        assert_eq!(
            identify_as(Some(peer("a@b", json!([]))), funnel, &s)
                .await
                .unwrap_err()
                .code,
            "funnel_not_allowed"
        );

        // Identity headers a client sends are ignored: the connection decides.
        let mut spoof = HeaderMap::new();
        spoof.insert("Tailscale-User-Login", "admin@example.com".parse().unwrap());
        let c = identify_as(Some(peer("alice@example.com", json!([]))), spoof, &s)
            .await
            .unwrap();
        assert_eq!(c.login, "alice@example.com");

        let mut tagged = peer("tagged-devices", json!([]));
        tagged.tags = vec!["tag:ci".into()];
        assert_eq!(
            identify_as(Some(tagged.clone()), HeaderMap::new(), &s)
                .await
                .unwrap_err()
                .code,
            "tagged_node_not_allowed"
        );
        let allow = AuthSettings {
            allow_tagged_nodes: true,
            ..settings()
        };
        assert_eq!(
            identify_as(Some(tagged), HeaderMap::new(), &allow)
                .await
                .unwrap()
                .login,
            "laptop.ts.net"
        );

        let mut nouser = peer("x", json!([]));
        nouser.login_name = None;
        assert_eq!(
            identify_as(Some(nouser), HeaderMap::new(), &s)
                .await
                .unwrap_err()
                .code,
            "user_identity_unsupported"
        );
    }

    #[tokio::test]
    async fn backend_outage_is_503_with_retry_after() {
        let backend = StaticIdentity::new();
        backend.set_down(true);
        let e = whois(
            &backend,
            "127.0.0.9:1".parse().unwrap(),
            &HeaderMap::new(),
            1,
        )
        .await
        .unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code, e.retry_after),
            (503, "identity_unavailable", Some(1))
        );
        assert!(!e.message.contains("marked down"), "internal detail leaked");
    }

    #[test]
    fn grant_steps_map_to_statuses() {
        let s = settings();
        let caller = |rules| Caller {
            peer: peer("a@b", rules),
            login: "a@b".into(),
        };
        let select = |c: &Caller, role: Option<&str>| -> Result<Rule, ApiError> {
            let all = rules_of(c, CAP)?;
            Ok(rules::select_for(&all, &s.policy, "prod", role)?)
        };
        let e = select(&caller(json!([{"role": "view", "period": "1m"}])), None).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "invalid_grant"));
        let e = select(&caller(json!([])), None).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (403, "no_grant"));
        let e = select(
            &caller(json!([{"role": "view", "period": "1h", "clusters": ["dev"]}])),
            None,
        )
        .unwrap_err();
        assert_eq!(e.code, "no_grant");
        let two = json!([{"role": "view", "period": "1h"}, {"role": "edit", "period": "1h"}]);
        let e = select(&caller(two.clone()), None).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (409, "ambiguous_grant"));
        assert_eq!(
            select(&caller(two.clone()), Some("edit")).unwrap().role,
            "edit"
        );
        let e = select(&caller(two.clone()), Some("admin")).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (403, "role_not_granted"));
        let held = |role: &str| {
            let all = rules_of(&caller(two.clone()), CAP).unwrap();
            rules::verdict(&all, &s.policy, "prod", role, &[]).map_err(ApiError::from)
        };
        assert!(held("view").is_ok());
        assert_eq!(held("admin").unwrap_err().code, "grant_changed");
    }
}
