//! The authentication pipeline (spec: api.md §6). Steps 1–3 establish *who* calls; steps 4–9 decide *what*
//! the grant allows. [`evaluate`] is pure so it is tested without I/O and reused by grant revalidation.

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode};

use super::error::ApiError;
use crate::identity::{Identity, IdentityError, PeerIdentity};
use crate::model::rules::{self, Policy, Rule};

/// A caller whose identity is established (steps 1–3).
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

/// Steps 1–3: Funnel, WhoIs on the connection's address, identity.
pub async fn identify(
    identity: &dyn Identity,
    remote: SocketAddr,
    headers: &HeaderMap,
    settings: &AuthSettings,
) -> Result<Caller, ApiError> {
    // Step 1: Funnel traffic comes from the public internet and never reaches the API. The header is
    // checked defensively; nothing else a client sends is trusted for identity.
    if headers.contains_key("tailscale-funnel-request") {
        return Err(funnel());
    }
    // Step 2.
    let peer = match identity.whois(remote).await {
        Ok(Some(peer)) => peer,
        Ok(None) => return Err(unknown_peer()),
        Err(IdentityError::Unavailable(detail)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "identity_unavailable",
                "the tailnet identity service is not available",
            )
            .advice(
                "try again in a moment; the server's tailnet connection is starting or recovering",
            )
            .retry_after(settings.retry_after)
            .internal(detail));
        }
    };
    if peer.via_funnel {
        return Err(funnel());
    }
    // Step 3.
    let login = if !peer.tags.is_empty() {
        if !settings.allow_tagged_nodes {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "tagged_node_not_allowed", "tagged nodes may not log in to this server")
                .advice("log in from a device owned by a user, or ask the admin to set tailscale.allowTaggedNodes"));
        }
        // A tagged node's user profile is a placeholder: the node itself is the identity.
        peer.node_fqdn.clone()
    } else {
        match &peer.login_name {
            Some(l) if !l.is_empty() => l.clone(),
            Some(_) => return Err(unknown_peer()),
            None => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "user_identity_unsupported",
                    "this server's tailnet backend cannot identify users",
                )
                .advice(
                    "log in from a tagged node, or ask the admin to use the tailscaled backend",
                ));
            }
        }
    };
    if login.is_empty() {
        return Err(unknown_peer());
    }
    Ok(Caller { peer, login })
}

fn funnel() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "funnel_not_allowed",
        "requests through Tailscale Funnel are not allowed",
    )
    .advice("connect to the server over your tailnet")
}

fn unknown_peer() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "unknown_peer",
        "the tailnet does not know who you are",
    )
    .advice("connect through your tailnet (is Tailscale running and logged in on this device?)")
}

/// Steps 4–5: the caller's rules that apply to this server's cluster (at least one).
pub fn grant(caller: &Caller, settings: &AuthSettings) -> Result<Vec<Rule>, ApiError> {
    let values = caller
        .peer
        .cap_map
        .get(&settings.cap_name)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let all = rules::parse_rules(values)?;
    let own = &settings.policy.cluster;
    let applicable: Vec<Rule> = all.into_iter().filter(|r| r.applies_to(own, own)).collect();
    if applicable.is_empty() {
        return Err(rules::Reject::NoGrant {
            cluster: own.clone(),
        }
        .into());
    }
    Ok(applicable)
}

/// Steps 4–9: the one rule a login uses, period clamped.
pub fn evaluate(
    caller: &Caller,
    settings: &AuthSettings,
    role: Option<&str>,
) -> Result<Rule, ApiError> {
    let applicable = grant(caller, settings)?;
    Ok(rules::select(&applicable, &settings.policy, role)?)
}

/// For token minting: a current rule must still carry the session's role and the role must still be
/// allowed; otherwise the session's grant changed since login.
pub fn still_granted(caller: &Caller, settings: &AuthSettings, role: &str) -> Result<(), ApiError> {
    let applicable = grant(caller, settings)?;
    if !applicable.iter().any(|r| r.role == role) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "grant_changed",
            format!("your grant no longer includes role {role:?}"),
        )
        .advice("run `tka login` to start a session with your current grant"));
    }
    let allowed = &settings.policy.allowed_roles;
    if !allowed.is_empty() && !allowed.iter().any(|a| a == role) {
        return Err(rules::Reject::RoleNotAllowed {
            role: role.into(),
            allowed: allowed.clone(),
        }
        .into());
    }
    Ok(())
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
        identify(&backend, addr, &headers, s).await
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
        let e = identify(
            &backend,
            "127.0.0.9:1".parse().unwrap(),
            &HeaderMap::new(),
            &settings(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            (e.status, e.code, e.retry_after),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "identity_unavailable",
                Some(1)
            )
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
        let e = evaluate(&caller(json!([{"role": "view", "period": "1m"}])), &s, None).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "invalid_grant")
        );
        let e = evaluate(&caller(json!([])), &s, None).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "no_grant"));
        let e = evaluate(
            &caller(json!([{"role": "view", "period": "1h", "clusters": ["dev"]}])),
            &s,
            None,
        )
        .unwrap_err();
        assert_eq!(e.code, "no_grant");
        let two = json!([{"role": "view", "period": "1h"}, {"role": "edit", "period": "1h"}]);
        let e = evaluate(&caller(two.clone()), &s, None).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::CONFLICT, "ambiguous_grant")
        );
        assert_eq!(
            evaluate(&caller(two.clone()), &s, Some("edit"))
                .unwrap()
                .role,
            "edit"
        );
        let e = evaluate(&caller(two.clone()), &s, Some("admin")).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::FORBIDDEN, "role_not_granted")
        );
        assert!(still_granted(&caller(two.clone()), &s, "view").is_ok());
        assert_eq!(
            still_granted(&caller(two), &s, "admin").unwrap_err().code,
            "grant_changed"
        );
    }
}
