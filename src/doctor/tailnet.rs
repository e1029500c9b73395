//! `tka-server doctor`'s tailnet-side checks as pure functions: tailscaled, the node's name, the API
//! listener, federation.

use jiff::Timestamp;

use super::Check;

/// The tailnet node as tailscaled's LocalAPI status reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub backend_state: String,
    pub fqdn: String,
    pub ips: Vec<String>,
    /// `Self.Online`: connected to the control server.
    pub online: Option<bool>,
    pub magic_dns_suffix: String,
}

/// `node`: the status, or the LocalAPI error (which names the socket).
pub fn tailscaled(node: &Result<NodeFacts, String>, supervised: bool) -> Check {
    let n = match node {
        Err(e) => {
            let c = Check::fail("tailscaled", format!("no answer: {e}"));
            return if supervised {
                c.advice("tka-server starts its own tailscaled: is `tka-server serve` running in this container? see its log")
            } else {
                c.advice("tailscale.socket points to an external daemon: is it running, and is the socket mounted?")
            };
        }
        Ok(n) => n,
    };
    match n.backend_state.as_str() {
        "Running" if n.online == Some(false) => {
            Check::warn("tailscaled", format!("Running as {}, but not connected to the control server", n.fqdn))
                .advice("check egress to the control server (tailscale.controlURL) and DERP")
        }
        "Running" => Check::ok("tailscaled", format!("Running as {} ({})", n.fqdn, n.ips.join(", "))),
        "NeedsLogin" | "NeedsMachineAuth" => Check::fail("tailscaled", format!("{}: the node is not logged in", n.backend_state))
            .advice("provide a valid, unexpired auth key (Secret tka-tailscale: TS_AUTHKEY, or tailscale.authKeyFile); \
                     NeedsMachineAuth: approve the node in the admin console"),
        s => Check::fail("tailscaled", format!("state {s:?}, not Running"))
            .advice("check that the control server (tailscale.controlURL) is reachable; see the log for tailscaled"),
    }
}

/// The node's MagicDNS name against `tailscale.hostname` / `tailscale.tailnet`.
pub fn node_name(hostname: &str, tailnet: &str, n: &NodeFacts) -> Check {
    let host = n.fqdn.split('.').next().unwrap_or_default();
    let suffix = n.magic_dns_suffix.trim_matches('.');
    if n.fqdn.is_empty() {
        return Check::fail("magicdns", "the node has no MagicDNS name yet");
    }
    if host != hostname {
        return Check::warn(
            "magicdns",
            format!("the node is {}, not {hostname}: clients asking for {hostname} reach another node or none", n.fqdn),
        )
        .advice(format!("another node holds the name {hostname}: remove it in the admin console, then restart tka-server"));
    }
    if !tailnet.is_empty() && !suffix.is_empty() && tailnet.trim_matches('.') != suffix {
        return Check::warn(
            "magicdns",
            format!("tailscale.tailnet is {tailnet} but the node's MagicDNS suffix is {suffix}"),
        )
        .advice("set tailscale.tailnet to the suffix (it names the server in kubeconfigs)");
    }
    Check::ok("magicdns", format!("{} (suffix {suffix})", n.fqdn))
}

/// How the API listener answered a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerFacts {
    pub url: String,
    /// Over the tailnet (through tailscaled), the HTTP status or why not.
    pub tailnet: Result<u16, String>,
    /// Directly on this host's listener address, asked only when the tailnet path failed.
    pub local: Option<Result<u16, String>>,
}

pub fn listener(f: &ListenerFacts) -> Check {
    match (&f.tailnet, &f.local) {
        (Ok(code), _) if *code < 500 => Check::ok(
            "listener",
            format!("{} answers over the tailnet (HTTP {code} for this node)", f.url),
        ),
        (Ok(code), _) => Check::fail("listener", format!("{} answers HTTP {code} over the tailnet", f.url))
            .advice("see /ready's reason (the `ready` line) and the server log"),
        (Err(e), Some(Ok(code))) => Check::fail(
            "listener",
            format!("the API answers locally (HTTP {code}) but not over the tailnet at {}: {e}", f.url),
        )
        .advice("tailscaled does not forward the port: is the node Running (tailscaled line)? Funnel/serve config on the port?"),
        (Err(e), _) => Check::fail("listener", format!("no answer at {}: {e}", f.url))
            .advice("only the leader serves the API; see the `ready` line and the log for `cannot bind`"),
    }
}

/// A member: can it reach its primary, and were its heartbeats accepted lately?
pub fn federation_member(
    primary: &str,
    reach: &Result<u16, String>,
    last_heartbeat: Option<f64>,
    max_age_secs: f64,
    now: Timestamp,
) -> Check {
    let age = last_heartbeat.map(|t| now.as_second() as f64 - t);
    match (reach, age) {
        (Err(e), _) => Check::fail("federation", format!("primary {primary} unreachable: {e}"))
            .advice("check federation.loginServer and that the primary's node is online (`tailscale status`)"),
        (Ok(_), Some(a)) if a <= max_age_secs => Check::ok(
            "federation",
            format!("member of {primary}: reachable, last heartbeat accepted {a:.0} s ago"),
        ),
        (Ok(code), a) => Check::fail(
            "federation",
            match a {
                Some(a) => format!("primary {primary} answers (HTTP {code}) but last accepted heartbeat was {a:.0} s ago"),
                None => format!("primary {primary} answers (HTTP {code}) but accepted no heartbeat of this member"),
            },
        )
        .advice("the primary admits members by tag (federation.memberTags) or capability (federation.memberCapName): \
                 check the primary's log for `heartbeat`"),
    }
}

/// A primary: members by state, from its own metrics.
pub fn federation_primary(healthy: u64, stale: u64) -> Check {
    match (healthy, stale) {
        (0, 0) => Check::ok("federation", "primary: no members registered yet"),
        (h, 0) => Check::ok("federation", format!("primary: {h} member(s) healthy")),
        (h, s) => Check::fail("federation", format!("primary: {h} member(s) healthy, {s} stale (missed heartbeats)"))
            .advice("run `tka-server doctor` on the stale member; it is removed after federation.missedHeartbeats"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn tailscaled_states_and_node_names() {
        let node = NodeFacts {
            backend_state: "Running".into(),
            fqdn: "tka.tailnet.test".into(),
            ips: vec!["100.64.0.2".into()],
            online: Some(true),
            magic_dns_suffix: "tailnet.test".into(),
        };
        assert_eq!(tailscaled(&Ok(node.clone()), true).status, Status::Ok);
        let login = NodeFacts {
            backend_state: "NeedsLogin".into(),
            ..node.clone()
        };
        let c = tailscaled(&Ok(login), true);
        assert_eq!(c.status, Status::Fail);
        assert!(c.advice[0].contains("auth key"));
        let down = tailscaled(&Err("No such file or directory".into()), true);
        assert_eq!(down.status, Status::Fail);
        assert!(down.advice[0].contains("tka-server serve"));
        assert_eq!(node_name("tka", "tailnet.test", &node).status, Status::Ok);
        let renamed = NodeFacts {
            fqdn: "tka-1.tailnet.test".into(),
            ..node.clone()
        };
        assert_eq!(node_name("tka", "", &renamed).status, Status::Warn);
        assert_eq!(node_name("tka", "other.ts.net", &node).status, Status::Warn);
    }

    #[test]
    fn listener_over_the_tailnet_or_only_locally() {
        let f = |tailnet, local| ListenerFacts {
            url: "https://tka.t".into(),
            tailnet,
            local,
        };
        assert_eq!(listener(&f(Ok(403), None)).status, Status::Ok);
        assert_eq!(listener(&f(Ok(503), None)).status, Status::Fail);
        let c = listener(&f(Err("dial: refused".into()), Some(Ok(403))));
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.contains("answers locally"), "{}", c.message);
        assert_eq!(
            listener(&f(Err("x".into()), Some(Err("y".into())))).status,
            Status::Fail
        );
    }

    #[test]
    fn federation_member_and_primary() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let t = now.as_second() as f64;
        assert_eq!(
            federation_member("p", &Ok(403), Some(t - 5.0), 30.0, now).status,
            Status::Ok
        );
        assert_eq!(
            federation_member("p", &Ok(403), Some(t - 90.0), 30.0, now).status,
            Status::Fail
        );
        assert_eq!(
            federation_member("p", &Ok(403), None, 30.0, now).status,
            Status::Fail
        );
        assert_eq!(
            federation_member("p", &Err("timeout".into()), None, 30.0, now).status,
            Status::Fail
        );
        assert_eq!(federation_primary(2, 0).status, Status::Ok);
        assert_eq!(federation_primary(1, 1).status, Status::Fail);
    }
}
