//! `tka-server doctor`'s checks as pure functions of what the probes found (`server_probe.rs`).

use std::fmt;

use jiff::Timestamp;
use serde_json::Value;

use super::{Check, readiness};

/// `kubectl apply` advice for the server's own RBAC.
pub fn rbac_advice(namespace: &str, allowed_roles: &[String]) -> String {
    format!(
        "apply the server's RBAC: `tka-server rbac --allowed-roles {} --namespace {namespace} | kubectl apply -f -`",
        allowed_roles.join(",")
    )
}

/// The apiserver's `/version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: String,
    pub minor: String,
    pub git_version: String,
}

pub fn apiserver(server: &str, version: &Result<Version, String>) -> Check {
    let min = crate::server::MIN_KUBERNETES_MINOR;
    match version {
        Err(e) => Check::fail("kubernetes", format!("cannot reach the apiserver {server}: {e}")).advice(
            "in a pod: check the NetworkPolicy's egress to the apiserver and the service account token; \
             outside: check KUBECONFIG",
        ),
        Ok(v) => {
            let minor: u32 = v.minor.trim_end_matches('+').parse().unwrap_or(0);
            if v.major == "1" && minor < min {
                Check::fail(
                    "kubernetes",
                    format!("{server} runs Kubernetes {}, tka needs 1.{min} or newer", v.git_version),
                )
                .advice("upgrade the cluster: tka needs Secret-bound tokens and CEL validation")
            } else {
                Check::ok("kubernetes", format!("{server} answers, Kubernetes {} (≥ 1.{min})", v.git_version))
            }
        }
    }
}

/// What discovery and a dry-run create said about the CRD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrdFacts {
    /// `tkasignins` is served in `tka.specht-labs.de/v1alpha1`.
    pub served: bool,
    pub status_subresource: bool,
    /// Fields of a complete TkaSignin that the apiserver dropped on a dry-run create (an older schema).
    pub pruned: Vec<String>,
    /// The dry-run create was refused.
    pub dry_run_error: Option<String>,
}

pub fn crd(facts: &Result<CrdFacts, String>) -> Check {
    const NAME: &str = "tkasignins.tka.specht-labs.de";
    let reapply = "apply the CRD of this version: `tka-server crd | kubectl apply -f -`";
    let f = match facts {
        Err(e) => return Check::fail("crd", format!("cannot read API discovery: {e}")),
        Ok(f) => f,
    };
    if !f.served {
        return Check::fail(
            "crd",
            format!("the TkaSignin CRD ({NAME}, v1alpha1) is not installed"),
        )
        .advice(reapply);
    }
    if !f.status_subresource {
        return Check::fail(
            "crd",
            format!("{NAME} has no status subresource: an old or foreign CRD"),
        )
        .advice(reapply);
    }
    if !f.pruned.is_empty() {
        return Check::fail(
            "crd",
            format!(
                "{NAME} is older than this server: it drops {}",
                f.pruned.join(", ")
            ),
        )
        .advice(reapply);
    }
    if let Some(e) = &f.dry_run_error {
        return Check::fail(
            "crd",
            format!("{NAME} refuses a valid TkaSignin (dry run): {e}"),
        )
        .advice(reapply);
    }
    Check::ok(
        "crd",
        format!("{NAME} v1alpha1 installed, schema matches this server"),
    )
}

/// The paths of every leaf field of `sent` that `got` lacks (`spec.subject_key`).
pub fn pruned_fields(sent: &Value, got: &Value, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let (Value::Object(s), Value::Object(g)) = (sent, got) {
        for (k, v) in s {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match g.get(k) {
                None => out.push(path),
                Some(gv) => out.extend(pruned_fields(v, gv, &path)),
            }
        }
    }
    out
}

/// One permission the server needs, as a SelfSubjectAccessReview asks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// Empty for cluster-scoped rules.
    pub namespace: String,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if !self.subresource.is_empty() {
            write!(f, "/{}", self.subresource)?;
        }
        if !self.name.is_empty() {
            write!(f, " {:?}", self.name)?;
        }
        if !self.namespace.is_empty() {
            write!(f, " in {}", self.namespace)?;
        }
        Ok(())
    }
}

/// Every permission of the server's generated RBAC (`tka-server rbac`) except `bind`, which
/// [`bind_roles`] checks with the roles it must and must not cover.
pub fn required_permissions(namespace: &str, allowed_roles: &[String]) -> Vec<Permission> {
    let yaml = crate::operator::rbac::manifests(namespace, allowed_roles);
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let Ok(doc) = <Value as serde::Deserialize>::deserialize(doc) else {
            continue;
        };
        if !matches!(doc["kind"].as_str(), Some("Role" | "ClusterRole")) {
            continue;
        }
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or_default();
        for rule in doc["rules"].as_array().into_iter().flatten() {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            let names = Some(list("resourceNames"))
                .filter(|n| !n.is_empty())
                .unwrap_or(vec![String::new()]);
            for verb in list("verbs").into_iter().filter(|v| v != "bind") {
                for group in list("apiGroups") {
                    for full in list("resources") {
                        let (resource, sub) = full.split_once('/').unwrap_or((&full, ""));
                        for name in &names {
                            out.push(Permission {
                                verb: verb.clone(),
                                group: group.clone(),
                                resource: resource.into(),
                                subresource: sub.into(),
                                name: name.clone(),
                                namespace: ns.into(),
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// The `rbac` check: every required permission granted.
pub fn rbac(
    results: &[(Permission, Result<bool, String>)],
    namespace: &str,
    roles: &[String],
) -> Check {
    if let Some((p, Err(e))) = results.iter().find(|(_, r)| r.is_err()) {
        return Check::fail(
            "rbac",
            format!("cannot ask the apiserver whether it may {p}: {e}"),
        );
    }
    let missing: Vec<String> = results
        .iter()
        .filter(|(_, r)| matches!(r, Ok(false)))
        .map(|(p, _)| p.to_string())
        .collect();
    match missing.as_slice() {
        [] => Check::ok(
            "rbac",
            format!(
                "all {} permissions of the generated RBAC are granted",
                results.len()
            ),
        ),
        m => Check::fail("rbac", format!("missing: {}", m.join("; ")))
            .advice(rbac_advice(namespace, roles)),
    }
}

/// Results of `bind` (and `escalate`) reviews on ClusterRoles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindFacts {
    /// `operator.allowedRoles`: bind must be allowed.
    pub allowed: Vec<(String, Result<bool, String>)>,
    /// Roles outside the list (e.g. `cluster-admin`, a made-up name that only a wildcard covers): bind must be
    /// denied.
    pub others: Vec<(String, Result<bool, String>)>,
    pub escalate: Result<bool, String>,
    /// Allowed roles that do not exist as ClusterRoles.
    pub absent: Vec<String>,
}

pub fn bind_roles(f: &BindFacts, namespace: &str, roles: &[String]) -> Check {
    let all = f.allowed.iter().chain(&f.others);
    if let Some((role, Err(e))) = all.clone().find(|(_, r)| r.is_err()) {
        return Check::fail("bind", format!("cannot review bind on {role}: {e}"));
    }
    let denied: Vec<&str> = f
        .allowed
        .iter()
        .filter(|(_, r)| matches!(r, Ok(false)))
        .map(|(n, _)| n.as_str())
        .collect();
    let mut extra: Vec<&str> = f
        .others
        .iter()
        .filter(|(_, r)| matches!(r, Ok(true)))
        .map(|(n, _)| n.as_str())
        .collect();
    if f.escalate == Ok(true) {
        extra.push("escalate (any role)");
    }
    if !denied.is_empty() {
        return Check::fail(
            "bind",
            format!(
                "cannot bind {}: logins with these roles fail",
                denied.join(", ")
            ),
        )
        .advice(rbac_advice(namespace, roles));
    }
    if !extra.is_empty() {
        return Check::fail(
            "bind",
            format!(
                "may bind more than operator.allowedRoles ({}): also {}",
                roles.join(", "),
                extra.join(", ")
            ),
        )
        .advice(format!(
            "a compromised server could grant these: find the other binding of ServiceAccount tka-controller \
             (`kubectl get clusterrolebindings,rolebindings -A -o wide | grep {namespace}/tka-controller`) and \
             remove it; the generated RBAC binds only the allowed roles"
        ));
    }
    if !f.absent.is_empty() {
        return Check::warn(
            "bind",
            format!(
                "binds exactly {}, but {} does not exist: logins with it fail (RoleNotFound)",
                roles.join(", "),
                f.absent.join(", ")
            ),
        )
        .advice("create the ClusterRole or remove it from operator.allowedRoles");
    }
    Check::ok(
        "bind",
        format!("binds exactly the allowed roles: {}", roles.join(", ")),
    )
}

/// The Lease as read from the apiserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseFacts {
    pub holder: String,
    pub renewed: Option<Timestamp>,
    pub duration_secs: i64,
}

/// `me`: this pod's name (holder identities are `<pod>_<random>`).
pub fn leader(
    lease_name: &str,
    lease: Option<&Result<Option<LeaseFacts>, String>>,
    me: &str,
    now: Timestamp,
) -> Check {
    let Some(lease) = lease else {
        return Check::ok(
            "leader",
            "leader election is off: this process is the only replica",
        );
    };
    let l = match lease {
        Err(e) => return Check::fail("leader", format!("cannot read Lease {lease_name}: {e}")),
        Ok(None) => {
            return Check::fail("leader", format!("no Lease {lease_name}: no replica has been elected"))
                .advice("is tka-server running? its RBAC must allow creating Leases (`tka-server doctor` rbac line)");
        }
        Ok(Some(l)) => l,
    };
    let age = l.renewed.map(|t| now.as_second() - t.as_second());
    let who = if !me.is_empty() && l.holder.starts_with(&format!("{me}_")) {
        format!("{} (this pod)", l.holder)
    } else {
        l.holder.clone()
    };
    match age {
        _ if l.holder.is_empty() => Check::fail(
            "leader",
            format!("Lease {lease_name} is released: no leader"),
        )
        .advice("a replica takes it within its retry period; if not, check the pods' logs"),
        Some(a) if a <= l.duration_secs => Check::ok(
            "leader",
            format!(
                "held by {who}, renewed {a} s ago (lease {} s)",
                l.duration_secs
            ),
        ),
        Some(a) => Check::fail(
            "leader",
            format!(
                "Lease held by {who} but not renewed for {a} s (lease {} s): the leader is gone",
                l.duration_secs
            ),
        )
        .advice(
            "a standby takes over once the Lease expired; if none does, is any replica running?",
        ),
        None => Check::fail(
            "leader",
            format!("Lease {lease_name} held by {who} has no renew time"),
        ),
    }
}

/// `/ready` of the running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub code: u16,
    pub reason: String,
    pub role: String,
}

pub fn ready(url: &str, r: &Result<Ready, String>) -> Check {
    match r {
        Err(e) => Check::fail("ready", format!("no answer from {url}: {e}")).advice(
            "run the doctor inside the tka-server container (`kubectl exec deploy/tka-server -- /tka-server \
             doctor`) and check health.port / health.bindAddress",
        ),
        Ok(r) if readiness::is_ready(&r.reason) && r.code == 200 => {
            Check::ok("ready", format!("/ready 200 ({}, reason {})", r.role, r.reason))
        }
        Ok(r) => {
            let c = Check::fail("ready", format!("/ready {} ({}, reason {})", r.code, r.role, r.reason));
            match readiness::advice(&r.reason) {
                Some(a) => c.advice(a),
                None => c,
            }
        }
    }
}

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
#[path = "server_tests.rs"]
mod tests;
