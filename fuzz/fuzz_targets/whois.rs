//! tailscaled's LocalAPI answers: `parse_whois` (who is calling, with the capability map) and `Status`.
//!
//! Input: the JSON body tailscaled would send. Properties:
//! - the identity says exactly what the answer said (read again independently as plain JSON): login name,
//!   node name (without the trailing dot), stable ID, tags, capability map, and a node address that is one
//!   of the node's addresses;
//! - the Kubernetes names derived from any login name and node ID are valid DNS-1123 labels;
//! - the capability values decode into rules or a clear rejection, never a panic;
//! - the same body read as a status answer gives names without leading or trailing dots.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tka::identity::tailscaled::localapi::{Status, parse_whois};
use tka::model::naming::{is_dns1123_label, node_key, signin_name, subject_key, user_object_name};
use tka::model::rules::parse_rules;

const CAP: &str = "specht-labs.de/cap/tka";

fuzz_target!(|data: &[u8]| {
    status(data);
    let peer = match parse_whois(data) {
        Ok(peer) => peer,
        Err(message) => {
            assert!(
                message.starts_with("undecodable whois answer: ")
                    || message == "whois answer without Node",
                "{message}"
            );
            return;
        }
    };
    let login = peer.login_name.clone().unwrap_or_default();
    let names = [
        user_object_name(&subject_key(&login)),
        signin_name(&subject_key(&login), &node_key(&peer.node_stable_id)),
    ];
    for name in names {
        assert!(is_dns1123_label(&name), "{name:?} from {login:?}");
    }
    if let Some(values) = peer.cap_map.get(CAP) {
        match parse_rules(values) {
            Ok(rules) => assert_eq!(rules.len(), values.len()),
            Err(e) => assert_eq!(e.code(), "invalid_grant"),
        }
    }

    // serde skips unknown fields without checking their strings' UTF-8; a full parse may refuse those.
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    // serde also reads a struct from a JSON array of its fields; tailscaled only ever sends objects.
    let (Some(node), Some(_)) = (doc["Node"].as_object(), doc.as_object()) else {
        return;
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    if let Some(user) = doc["UserProfile"].as_object() {
        let said = text(&user.get("LoginName").cloned().unwrap_or_default());
        assert_eq!(peer.login_name, Some(said).filter(|l| !l.is_empty()));
    } else if doc["UserProfile"].is_null() {
        assert_eq!(peer.login_name, None);
    }
    let name = text(&node.get("Name").cloned().unwrap_or_default());
    assert_eq!(peer.node_fqdn, name.trim_end_matches('.'));
    assert!(!peer.node_fqdn.ends_with('.'));
    assert_eq!(
        peer.node_stable_id,
        text(&node.get("StableID").cloned().unwrap_or_default())
    );
    let tags: Vec<String> = node
        .get("Tags")
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default();
    assert_eq!(peer.tags, tags);
    if let Some(ip) = peer.node_ip {
        let addresses = node
            .get("Addresses")
            .and_then(Value::as_array)
            .expect("an address came from Addresses");
        assert!(
            addresses.iter().filter_map(Value::as_str).any(|a| a
                .split('/')
                .next()
                .and_then(|a| a.parse::<IpAddr>().ok())
                == Some(ip)),
            "{ip} is not one of {addresses:?}"
        );
    }
    if let Some(caps) = doc["CapMap"].as_object() {
        assert_eq!(peer.cap_map.len(), caps.len());
        for (name, values) in caps {
            let want = values.as_array().cloned().unwrap_or_default();
            assert_eq!(peer.cap_map.get(name), Some(&want), "{name}");
        }
    } else {
        assert!(peer.cap_map.is_empty());
    }
    assert!(!peer.via_funnel, "a WhoIs answer never marks Funnel");
});

fn status(data: &[u8]) {
    let Ok(status) = serde_json::from_slice::<Status>(data) else {
        return;
    };
    let suffix = status.magic_dns_suffix();
    assert!(
        !suffix.starts_with('.') && !suffix.ends_with('.'),
        "{suffix:?}"
    );
    let backend = status.to_backend_status();
    assert!(!backend.self_fqdn.ends_with('.'), "{:?}", backend.self_fqdn);
}
