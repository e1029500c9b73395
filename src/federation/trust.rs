//! Who may take part, decided on WhoIs results only (pure: the pinning on top is in [`super::Federation`]).
//! The primary admits members by tag or capability; a member accepts calls only from the node named in
//! `federation.loginServer` that also carries a primary tag or capability, because a name alone can be
//! re-registered by another device. Cluster names and kubeconfig prefixes are checked so that no member can
//! take the primary's or another member's entries in a user's kubeconfig.

use serde::Deserialize;

use super::FedError;
use super::wire::Heartbeat;
use crate::identity::PeerIdentity;
use crate::model::rules::glob_match;

/// (scheme, host lower-cased without trailing dot, port) of an http(s) URL.
pub fn url_host(url: &str) -> Option<(String, String, u16)> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = normalize(uri.host()?);
    if host.is_empty() {
        return None;
    }
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    Some((scheme, host, port))
}

/// Host names compare case-insensitively and without the trailing dot of an FQDN.
pub fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// What marks the primary's node besides its name: a tag the tailnet policy controls, or a capability.
#[derive(Debug, Clone, Default)]
pub struct PrimaryMarks {
    /// `federation.primaryTags`; empty: the name and the pinned node ID only.
    pub tags: Vec<String>,
    /// `federation.primaryCapName`.
    pub cap_name: String,
}

/// Member side: is the caller the configured primary by name and by tag or capability? (Its node ID is
/// compared with the pinned one by the caller of this.)
pub fn check_primary(
    peer: &PeerIdentity,
    primary_host: &str,
    marks: &PrimaryMarks,
) -> Result<(), FedError> {
    let not_primary = || FedError::NotPrimary {
        primary: primary_host.to_string(),
        caller: peer.node_fqdn.clone(),
    };
    if peer.via_funnel || normalize(&peer.node_fqdn) != normalize(primary_host) {
        return Err(not_primary());
    }
    let tagged = peer.tags.iter().any(|t| marks.tags.contains(t));
    let capable = !marks.cap_name.is_empty() && peer.cap_map.contains_key(&marks.cap_name);
    if !marks.tags.is_empty() && !tagged && !capable {
        return Err(not_primary());
    }
    Ok(())
}

/// The kubeconfig names a cluster's entries get: its cluster entry, `user_prefix + login`, `context_prefix +
/// login`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryNames {
    pub cluster: String,
    pub user_prefix: String,
    pub context_prefix: String,
}

/// Primary side: may a member with `names` join, next to the primary's own names and those other members
/// hold (bound to other nodes)? For one user's kubeconfig, entries collide exactly when cluster names or
/// prefixes are equal, so every one must be distinct, and prefixes must not be empty (an empty prefix would
/// name the user's entry after the bare login).
pub fn check_names(
    names: &EntryNames,
    own: &EntryNames,
    others: &[EntryNames],
) -> Result<(), FedError> {
    if names.user_prefix.is_empty() || names.context_prefix.is_empty() {
        return Err(FedError::InvalidHeartbeat(
            "context_prefix and user_prefix must not be empty: set operator.contextPrefix and operator.userPrefix"
                .into(),
        ));
    }
    let conflict = |what: String, holder: &str| FedError::NamesConflict {
        cluster: names.cluster.clone(),
        what,
        holder: holder.to_string(),
    };
    for (other, holder) in
        std::iter::once((own, "the primary")).chain(others.iter().map(|o| (o, "")))
    {
        let holder = if holder.is_empty() {
            format!("cluster {}", other.cluster)
        } else {
            holder.to_string()
        };
        if names.cluster == other.cluster {
            return Err(FedError::ClusterNameConflict {
                cluster: names.cluster.clone(),
                holder,
            });
        }
        for (mine, theirs, what) in [
            (&names.user_prefix, &other.user_prefix, "user_prefix"),
            (&names.user_prefix, &other.context_prefix, "user_prefix"),
            (
                &names.context_prefix,
                &other.context_prefix,
                "context_prefix",
            ),
            (&names.context_prefix, &other.user_prefix, "context_prefix"),
        ] {
            if mine == theirs {
                return Err(conflict(format!("{what} {mine:?}"), &holder));
            }
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct MemberCap {
    clusters: Option<Vec<String>>,
}

/// Primary side: may this node announce this cluster? A tag from `member_tags` admits any name; the
/// capability admits the names its `clusters` globs match (absent ⇒ any). The announced URL must point at
/// the caller itself, so a member cannot direct the primary's calls (with the users' sessions) elsewhere.
pub fn admit(
    peer: &PeerIdentity,
    hb: &Heartbeat,
    member_tags: &[String],
    cap_name: &str,
) -> Result<(), FedError> {
    validate(hb)?;
    let denied = || FedError::MemberNotAllowed {
        node: peer.node_fqdn.clone(),
        cluster: hb.cluster_name.clone(),
    };
    if peer.via_funnel {
        return Err(denied());
    }
    let by_tag = peer.tags.iter().any(|t| member_tags.contains(t));
    let by_cap = peer
        .cap_map
        .get(cap_name)
        .into_iter()
        .flatten()
        .filter_map(|v| serde_json::from_value::<MemberCap>(v.clone()).ok())
        .any(|c| match c.clusters {
            None => true,
            Some(globs) => globs.iter().any(|g| glob_match(g, &hb.cluster_name)),
        });
    if !by_tag && !by_cap {
        return Err(denied());
    }
    let (_, host, _) = url_host(&hb.member_url)
        .ok_or_else(|| FedError::InvalidHeartbeat("member_url is not an http(s) URL".into()))?;
    if host != normalize(&peer.node_fqdn) {
        return Err(FedError::InvalidHeartbeat(format!(
            "member_url host {host} is not the calling node {}",
            peer.node_fqdn
        )));
    }
    Ok(())
}

fn validate(hb: &Heartbeat) -> Result<(), FedError> {
    let bad = |m: &str| Err(FedError::InvalidHeartbeat(m.into()));
    let name = &hb.cluster_name;
    let dns_ok = !name.is_empty()
        && name.len() <= 63
        && name.split('.').all(crate::model::naming::is_dns1123_label);
    if !dns_ok {
        return bad("cluster_name must be a DNS-1123 subdomain of at most 63 characters");
    }
    if hb.api_endpoint.is_empty() {
        return bad("api_endpoint is empty (set clusterInfo.apiEndpoint on the member)");
    }
    if url_host(&hb.api_endpoint).is_none() {
        return bad("api_endpoint is not an http(s) URL");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    const CAP: &str = "specht-labs.de/cap/tka-federation";

    fn peer(fqdn: &str, tags: &[&str], cap: Option<serde_json::Value>) -> PeerIdentity {
        PeerIdentity {
            node_fqdn: fqdn.into(),
            node_stable_id: "n1".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            cap_map: cap
                .map(|v| BTreeMap::from([(CAP.to_string(), v.as_array().unwrap().clone())]))
                .unwrap_or_default(),
            ..PeerIdentity::default()
        }
    }

    fn hb(name: &str, url: &str) -> Heartbeat {
        Heartbeat {
            cluster_name: name.into(),
            member_url: url.into(),
            api_endpoint: "https://10.0.0.1:6443".into(),
            ..Heartbeat::default()
        }
    }

    #[test]
    fn members_are_admitted_by_tag_or_capability_glob() {
        let tags = vec!["tag:tka-member".to_string()];
        let h = hb("prod-west", "https://tka-west.ts.net");
        assert!(
            admit(
                &peer("tka-west.ts.net", &["tag:tka-member"], None),
                &h,
                &tags,
                CAP
            )
            .is_ok()
        );
        let e = admit(
            &peer("tka-west.ts.net", &["tag:other"], None),
            &h,
            &tags,
            CAP,
        )
        .unwrap_err();
        assert_eq!(e.code(), "member_not_allowed");
        let cap = |v| peer("tka-west.ts.net", &[], Some(v));
        assert!(admit(&cap(json!([{"clusters": ["prod-*"]}])), &h, &[], CAP).is_ok());
        assert!(admit(&cap(json!([{}])), &h, &[], CAP).is_ok());
        assert_eq!(
            admit(&cap(json!([{"clusters": ["dev-*"]}])), &h, &[], CAP)
                .unwrap_err()
                .code(),
            "member_not_allowed"
        );
        let mut funnel = peer("tka-west.ts.net", &["tag:tka-member"], None);
        funnel.via_funnel = true;
        assert!(admit(&funnel, &h, &tags, CAP).is_err());
    }

    #[test]
    fn member_url_must_point_at_the_caller() {
        let tags = vec!["tag:m".to_string()];
        let p = peer("tka-west.ts.net", &["tag:m"], None);
        assert!(admit(&p, &hb("w", "https://TKA-WEST.ts.net.:8443"), &tags, CAP).is_ok());
        let e = admit(&p, &hb("w", "https://tka.ts.net"), &tags, CAP).unwrap_err();
        assert_eq!(e.code(), "invalid_heartbeat");
        let mut no_api = hb("w", "https://tka-west.ts.net");
        no_api.api_endpoint.clear();
        assert_eq!(
            admit(&p, &no_api, &tags, CAP).unwrap_err().code(),
            "invalid_heartbeat"
        );
        assert!(admit(&p, &hb("Not_DNS", "https://tka-west.ts.net"), &tags, CAP).is_err());
    }

    #[test]
    fn members_accept_only_their_primary_by_name_and_mark() {
        let primary = url_host("https://tka.your-tailnet.ts.net").unwrap().1;
        let marks = PrimaryMarks {
            tags: vec!["tag:tka".into()],
            cap_name: "specht-labs.de/cap/tka-primary".into(),
        };
        let tagged = |fqdn| peer(fqdn, &["tag:tka"], None);
        assert!(check_primary(&tagged("TKA.your-tailnet.ts.net."), &primary, &marks).is_ok());
        assert_eq!(
            check_primary(&tagged("tka-east.your-tailnet.ts.net"), &primary, &marks)
                .unwrap_err()
                .code(),
            "not_primary"
        );
        // The right name without the tag: a device that took the name over.
        let untagged = peer("tka.your-tailnet.ts.net", &[], None);
        assert!(check_primary(&untagged, &primary, &marks).is_err());
        let mut capable = untagged.clone();
        capable
            .cap_map
            .insert("specht-labs.de/cap/tka-primary".into(), vec![json!({})]);
        assert!(check_primary(&capable, &primary, &marks).is_ok());
        // No tags configured: the name (and the pinned node ID) only.
        assert!(check_primary(&untagged, &primary, &PrimaryMarks::default()).is_ok());
        assert_eq!(
            url_host("http://p.ts.net:8443/x"),
            Some(("http".into(), "p.ts.net".into(), 8443))
        );
        assert!(url_host("tka.example").is_none());
    }

    #[test]
    fn member_names_never_equal_the_primarys_or_another_members() {
        let n = |cluster: &str, user: &str, ctx: &str| EntryNames {
            cluster: cluster.into(),
            user_prefix: user.into(),
            context_prefix: ctx.into(),
        };
        let own = n("prod", "tka-user-", "tka-context-");
        let west = n("prod-west", "west-user-", "west-");
        assert!(
            check_names(
                &n("prod-east", "east-user-", "east-"),
                &own,
                std::slice::from_ref(&west)
            )
            .is_ok()
        );
        let code = |r: Result<(), FedError>| r.unwrap_err().code();
        assert_eq!(
            code(check_names(
                &n("prod-east", "tka-user-", "tka-context-"),
                &own,
                &[]
            )),
            "kubeconfig_names_conflict"
        );
        assert_eq!(
            code(check_names(&n("prod", "p-", "q-"), &own, &[])),
            "cluster_name_conflict"
        );
        assert_eq!(
            code(check_names(
                &n("prod-east", "west-", "east-"),
                &own,
                std::slice::from_ref(&west)
            )),
            "kubeconfig_names_conflict",
            "a user prefix equal to another member's context prefix"
        );
        assert_eq!(
            code(check_names(&n("prod-east", "", "east-"), &own, &[])),
            "invalid_heartbeat"
        );
    }
}
