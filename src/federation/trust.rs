//! Who may take part (federation.md §2), decided on WhoIs results only: the primary admits members by tag
//! or capability, a member accepts calls only from the node named in `federation.loginServer`.

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

/// Member side: is the caller the configured primary?
pub fn check_primary(peer: &PeerIdentity, primary_host: &str) -> Result<(), FedError> {
    if peer.via_funnel || normalize(&peer.node_fqdn) != normalize(primary_host) {
        return Err(FedError::NotPrimary {
            primary: primary_host.to_string(),
            caller: peer.node_fqdn.clone(),
        });
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
    fn members_accept_only_their_primary() {
        let primary = url_host("https://tka.your-tailnet.ts.net").unwrap().1;
        assert!(check_primary(&peer("TKA.your-tailnet.ts.net.", &[], None), &primary).is_ok());
        assert_eq!(
            check_primary(&peer("tka-east.your-tailnet.ts.net", &[], None), &primary)
                .unwrap_err()
                .code(),
            "not_primary"
        );
        assert_eq!(
            url_host("http://p.ts.net:8443/x"),
            Some(("http".into(), "p.ts.net".into(), 8443))
        );
        assert!(url_host("tka.example").is_none());
    }
}
