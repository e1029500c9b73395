//! `tka-server doctor`'s checks as pure functions of what the probes found (`server_probe.rs`).

use std::fmt;

use jiff::Timestamp;
use serde_json::Value;

use super::Check;
use crate::operator::rbac::GrantableRoles;
use crate::telemetry::readiness;

/// `operator.allowedRoles` with a blank or wildcard entry: no RBAC can be generated or checked for it.
pub fn allowed_roles(problem: &str) -> Check {
    Check::fail("rbac", format!("operator.allowedRoles: {problem}")).advice(
        "list the ClusterRoles the server may grant in operator.allowedRoles (e.g. [view, edit]) and apply \
         `tka-server rbac --allowed-roles` with the same list",
    )
}

/// `kubectl apply` advice for the server's own RBAC.
pub fn rbac_advice(namespace: &str, allowed_roles: &[String]) -> String {
    let roles = if allowed_roles.is_empty() {
        "<the roles users may get, e.g. view,edit>".to_string()
    } else {
        allowed_roles.join(",")
    };
    format!(
        "apply the server's RBAC: `tka-server rbac --allowed-roles {roles} --namespace {namespace} | kubectl apply -f -`"
    )
}

/// Stands for the grantable roles when `operator.allowedRoles` is empty; not a valid ClusterRole name, so it
/// never names a real one.
const ANY_ROLE: &str = "<allowed role>";

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
/// [`bind_roles`] checks with the roles it must and must not cover. `None`: `operator.allowedRoles` is empty,
/// so the permissions on named ClusterRoles are left out (the RBAC alone decides which roles those are).
pub fn required_permissions(
    namespace: &str,
    allowed_roles: Option<&GrantableRoles>,
) -> Vec<Permission> {
    let any = GrantableRoles::new([ANY_ROLE]).expect("a non-blank name without a wildcard");
    let yaml = crate::operator::rbac::manifests(namespace, allowed_roles.unwrap_or(&any));
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
                        for name in names.iter().filter(|n| *n != ANY_ROLE) {
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

/// `bind` when `operator.allowedRoles` is empty: the server grants whatever roles its RBAC lets it bind
/// (`f.others`: well-known roles and a made-up name, which only a wildcard covers). Binding everything is a
/// failure; otherwise a warning, since the list should equal the roles the RBAC binds.
pub fn bind_unlisted(f: &BindFacts, namespace: &str) -> Check {
    if let Some((role, Err(e))) = f.others.iter().find(|(_, r)| r.is_err()) {
        return Check::fail("bind", format!("cannot review bind on {role}: {e}"));
    }
    let mut may: Vec<&str> = f
        .others
        .iter()
        .filter(|(_, r)| matches!(r, Ok(true)))
        .map(|(n, _)| n.as_str())
        .collect();
    let unbounded = f.escalate == Ok(true) || may.contains(&"cluster-admin");
    if f.escalate == Ok(true) {
        may.push("escalate (any role)");
    }
    let list = "set operator.allowedRoles to the roles users may get";
    if unbounded {
        return Check::fail(
            "bind",
            format!(
                "operator.allowedRoles is empty and the RBAC lets the server bind {}: a grant naming cluster-admin makes its holder cluster-admin",
                may.join(", ")
            ),
        )
        .advice(format!("{list}, then {}", rbac_advice(namespace, &[])));
    }
    let message = match may.as_slice() {
        [] => "operator.allowedRoles is empty and the server may bind none of the roles checked: only roles its \
               RBAC names can be granted"
            .to_string(),
        m => format!(
            "operator.allowedRoles is empty: the RBAC decides (may bind {})",
            m.join(", ")
        ),
    };
    Check::warn("bind", message).advice(format!(
        "{list}, so a grant for another role is refused early (403 role_not_allowed)"
    ))
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

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
