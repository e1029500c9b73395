//! `tka doctor`'s checks on the user's machine as pure functions of what `src/cli/doctor.rs` found.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde_json::Value;

use super::Check;
use super::kuberc::{self, Verdict};

/// The local tailscaled, from its LocalAPI status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Daemon {
    pub backend_state: String,
    pub login: String,
    pub fqdn: String,
    pub magic_dns_suffix: String,
    pub magic_dns_enabled: Option<bool>,
}

/// `d`: the status, or the LocalAPI error (which names the socket).
pub fn tailscaled(d: &Result<Daemon, String>) -> Check {
    let d = match d {
        Err(e) => {
            return Check::fail("tailscaled", format!("no Tailscale daemon answers: {e}"))
                .advice("start Tailscale (Linux: `sudo systemctl start tailscaled`; macOS/Windows: open the app)")
                .advice("a daemon with another socket: pass --socket (tailscale.socket)");
        }
        Ok(d) => d,
    };
    match d.backend_state.as_str() {
        "Running" => Check::ok(
            "tailscaled",
            format!("Running, logged in as {} on {}", d.login, d.fqdn),
        ),
        "NeedsLogin" => Check::fail("tailscaled", "Tailscale is not logged in")
            .advice("run `tailscale up` (or `tailscale login`)"),
        "NeedsMachineAuth" => Check::fail(
            "tailscaled",
            "this device waits for approval by a tailnet admin",
        )
        .advice("ask an admin to approve it in the admin console"),
        "Stopped" => Check::fail(
            "tailscaled",
            "Tailscale is stopped (logged in, but disconnected)",
        )
        .advice("run `tailscale up`"),
        s => Check::fail("tailscaled", format!("Tailscale is {s:?}, not Running"))
            .advice("run `tailscale status` to see why"),
    }
}

/// `needs_dns`: the server is named by a short or MagicDNS name (not an IP or a URL with one).
pub fn magicdns(d: &Daemon, needs_dns: bool) -> Check {
    let suffix = d.magic_dns_suffix.trim_matches('.');
    let on = d.magic_dns_enabled.unwrap_or(!suffix.is_empty());
    match (on, needs_dns) {
        (true, _) if !suffix.is_empty() => Check::ok("magicdns", format!("on, tailnet suffix {suffix}")),
        (_, false) => Check::skip("magicdns", "off, but the server is given by address"),
        _ => Check::fail("magicdns", "MagicDNS is off in this tailnet: the short name tka cannot resolve")
            .advice("enable MagicDNS in the admin console (DNS page), or pass --server https://<the server's name or tailnet IP>"),
    }
}

/// Name resolution of the server's host.
pub fn resolve(host: &str, r: &Result<Vec<IpAddr>, String>) -> Option<Check> {
    match r {
        Ok(_) => None,
        Err(e) => Some(
            Check::fail("server", format!("cannot resolve {host}: {e}"))
                .advice("let Tailscale set this machine's DNS: `tailscale set --accept-dns=true`")
                .advice("or pass --server with the server's tailnet IP or full URL"),
        ),
    }
}

/// The server answered `GET /whoami` (any status) in `millis`.
pub fn reached(url: &str, ips: &[IpAddr], status: u16, millis: u128) -> Check {
    let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    let via = if ips.is_empty() {
        String::new()
    } else {
        format!(" ({})", ips.join(", "))
    };
    if status >= 500 {
        return Check::fail("server", format!("{url}{via} answers HTTP {status}"))
            .advice("the server is not ready: its operator can run `tka-server doctor`");
    }
    Check::ok("server", format!("{url}{via} answers in {millis} ms"))
}

/// How far the local clock is from the server's (`Date` header, second precision), measured at the
/// midpoint of the request.
pub fn clock(server_date: Option<Timestamp>, sent: Timestamp, received: Timestamp) -> Check {
    let Some(server) = server_date else {
        return Check::skip("clock", "the server sent no Date header");
    };
    let mid = sent.as_millisecond() + (received.as_millisecond() - sent.as_millisecond()) / 2;
    let skew = (mid - server.as_millisecond()) as f64 / 1000.0;
    let text = if skew >= 0.0 {
        format!("{skew:.1} s ahead of")
    } else {
        format!("{:.1} s behind", -skew)
    };
    let sync = "turn on time synchronisation (Linux: `sudo timedatectl set-ntp true`)";
    match skew.abs() {
        s if s <= 5.0 => Check::ok("clock", format!("in sync with the server ({text} it)")),
        s if s <= 60.0 => Check::warn("clock", format!("this machine is {text} the server"))
            .advice(format!(
                "tokens are refreshed early by up to a minute; {sync}"
            )),
        _ => Check::fail(
            "clock",
            format!("this machine is {text} the server: token expiry is misjudged"),
        )
        .advice(format!(
            "kubectl may use expired tokens or refresh constantly; {sync}"
        )),
    }
}

/// `GET /whoami`: which rule applies, or why none.
pub fn grant(v: &Value) -> Check {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let who = format!("{} on {}", s("login_name"), s("node"));
    let rules = v["rules"].as_array().map_or(0, Vec::len);
    let sel = &v["selected"];
    if !sel.is_null() {
        let field = |k: &str| {
            sel[k]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| sel[k].to_string())
        };
        return Check::ok(
            "grant",
            format!(
                "{who}: role {} for {} ({rules} rule(s) for cluster {})",
                field("role"),
                field("period"),
                s("cluster")
            ),
        );
    }
    let code = v["reject"]["code"].as_str().unwrap_or_default();
    let message = v["reject"]["message"].as_str().unwrap_or("no rule applies");
    let c = Check::fail("grant", format!("{who}: {message} ({code})"));
    let c = match code {
        "no_grant" => c.advice(
            "ask a tailnet admin for a grant to the tka server with app capability specht-labs.de/cap/tka, \
             e.g. {\"role\": \"view\", \"period\": \"8h\"}",
        ),
        "ambiguous_grant" => c.advice("choose one: `tka login --role <role>`"),
        "role_not_allowed" => c.advice("the server's operator.allowedRoles lacks this role: ask the cluster admin"),
        "invalid_grant" => c.advice("the grant in the tailnet policy is malformed: ask a tailnet admin to fix it"),
        _ => c,
    };
    c.advice("details: `tka get login --explain`")
}

/// `GET /login`: 200 signed in, 202 pending, 401 not signed in (not a failure: `tka login` fixes it).
/// `local_time` renders the RFC 3339 `until` for people.
pub fn session(status: u16, body: &Value, local_time: &dyn Fn(&str) -> String) -> Check {
    let s = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    match status {
        200 => Check::ok(
            "session",
            format!(
                "signed in as {}, role {}, until {}",
                s("username"),
                s("role"),
                local_time(&s("until"))
            ),
        ),
        202 => Check::warn(
            "session",
            format!("session of {} is still being provisioned", s("username")),
        )
        .advice("wait a moment; if it stays, the cluster admin can run `tka-server doctor`"),
        401 => Check::warn("session", "not signed in").advice("run `tka login`"),
        s => Check::fail("session", format!("GET /login answered HTTP {s}")),
    }
}

/// What `KUBECONFIG` and the files around it look like for this server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KubeconfigFacts {
    /// `KUBECONFIG` entries (empty when unset) and whether each exists.
    pub entries: Vec<(PathBuf, bool)>,
    /// tka's kubeconfig directory (`kubeconfig.dir`) and this server's files in it.
    pub root: PathBuf,
    pub managed: Vec<PathBuf>,
    /// The `--merge` target (outside `root`) and the contexts tka merged there for this server.
    pub merge_target: Option<PathBuf>,
    pub merged: Vec<String>,
    /// From `GET /login`; `None` when the server could not tell.
    pub signed_in: Option<bool>,
}

/// `export_line` renders a `KUBECONFIG` list for the user's shell.
pub fn kubeconfig(f: &KubeconfigFacts, export_line: &dyn Fn(&[PathBuf]) -> String) -> Check {
    let stale: Vec<&PathBuf> = f
        .entries
        .iter()
        .filter(|(p, e)| !e && p.starts_with(&f.root))
        .map(|(p, _)| p)
        .collect();
    if !stale.is_empty() {
        let kept: Vec<PathBuf> = f
            .entries
            .iter()
            .filter(|(p, _)| !stale.contains(&p))
            .map(|(p, _)| p.clone())
            .collect();
        let names: Vec<String> = stale.iter().map(|p| p.display().to_string()).collect();
        return Check::fail(
            "kubeconfig",
            format!("KUBECONFIG names deleted tka file(s): {}", names.join(", ")),
        )
        .advice(format!(
            "a logout in another shell removed them; fix this shell: {}",
            export_line(&kept)
        ));
    }
    let merge = f
        .merge_target
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if f.signed_in == Some(false) && !(f.managed.is_empty() && f.merged.is_empty()) {
        let what = f
            .managed
            .iter()
            .map(|p| p.display().to_string())
            .chain(f.merged.iter().map(|c| format!("context {c} in {merge}")));
        return Check::fail("kubeconfig", format!("not signed in, but stale entries remain: {}", what.collect::<Vec<_>>().join(", ")))
            .advice("their tokens no longer work: `eval \"$(tka logout -q)\"` removes them (or `tka login` renews them)");
    }
    let in_use: Vec<&PathBuf> = f
        .managed
        .iter()
        .filter(|m| f.entries.iter().any(|(p, _)| p == *m))
        .collect();
    match (f.signed_in, f.managed.first(), f.merged.is_empty()) {
        (_, _, false) => Check::ok(
            "kubeconfig",
            format!("merged into {merge}: {}", f.merged.join(", ")),
        ),
        (_, Some(m), true) if in_use.is_empty() => {
            let mut fixed = f.managed.clone();
            fixed.extend(f.entries.iter().map(|(p, _)| p.clone()));
            Check::warn(
                "kubeconfig",
                format!(
                    "KUBECONFIG does not include {}: kubectl does not see this session",
                    m.display()
                ),
            )
            .advice(format!("run: {}", export_line(&fixed)))
        }
        (_, Some(_), true) => Check::ok(
            "kubeconfig",
            format!(
                "KUBECONFIG includes {}",
                in_use
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (Some(true), None, true) => Check::warn(
            "kubeconfig",
            "signed in, but there is no kubeconfig for this server here",
        )
        .advice("run `eval \"$(tka kubeconfig -q)\"`"),
        _ => Check::ok("kubeconfig", "no tka entries (not signed in)"),
    }
}

/// kubectl as the exec plugin's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubectlFacts {
    /// (minor, gitVersion) of `kubectl version --client`.
    pub version: Result<(u32, String), String>,
    /// Where `tka` resolves on `PATH` (kubectl runs `tka credential` by that name).
    pub tka: Option<PathBuf>,
    /// Some kubeconfig of this server uses the exec plugin.
    pub exec_in_use: bool,
}

pub fn kubectl(f: &KubectlFacts) -> Check {
    let (minor, version) = match &f.version {
        Err(e) => {
            return Check::warn("kubectl", format!("no kubectl: {e}")).advice(
                "install kubectl to use the cluster (https://kubernetes.io/docs/tasks/tools/)",
            );
        }
        Ok(v) => v,
    };
    if *minor < 22 {
        return Check::fail(
            "kubectl",
            format!("kubectl {version} is too old for exec credential plugins (v1)"),
        )
        .advice("install kubectl 1.22 or newer");
    }
    match &f.tka {
        None if f.exec_in_use => Check::fail(
            "kubectl",
            format!("kubectl {version} runs `tka credential`, but tka is not on PATH"),
        )
        .advice("put the tka binary in a directory on PATH (e.g. /usr/local/bin)"),
        None => Check::ok(
            "kubectl",
            format!("{version} (tka is not on PATH: only token kubeconfigs work)"),
        ),
        Some(p) => Check::ok("kubectl", format!("{version}, exec plugin {}", p.display())),
    }
}

/// The kuberc credential plugin policy. `text`: `None` when there is no file.
pub fn kuberc(
    path: Option<&Path>,
    text: &Result<Option<String>, String>,
    resolve: &dyn Fn(&str) -> Option<PathBuf>,
    kubectl_minor: Option<u32>,
) -> Check {
    let Some(path) = path else {
        return Check::ok(
            "kuberc",
            "disabled (KUBERC=off): kubectl runs any credential plugin",
        );
    };
    let p = path.display();
    let text = match text {
        Err(e) => return Check::fail("kuberc", format!("cannot read {p}: {e}")),
        Ok(None) => {
            return Check::ok(
                "kuberc",
                format!("no {p}: kubectl runs any credential plugin"),
            );
        }
        Ok(Some(t)) => t,
    };
    let snippet = format!("allow tka in {p}: {}", kuberc::SNIPPET);
    match kuberc::evaluate(text, resolve) {
        Verdict::Allowed(why) => Check::ok("kuberc", format!("{p}: {why}")),
        Verdict::Invalid(why) => {
            Check::fail("kuberc", format!("{p}: {why}: kubectl refuses this file")).advice(snippet)
        }
        Verdict::Blocked(why) => match kubectl_minor {
            Some(m) if m < 35 => Check::warn(
                "kuberc",
                format!("{p}: {why}; kubectl 1.{m} ignores the policy, 1.35+ would refuse tka"),
            )
            .advice(snippet),
            _ => Check::fail(
                "kuberc",
                format!("{p}: {why}: kubectl refuses to run `tka credential`"),
            )
            .advice(snippet),
        },
    }
}

/// A file or directory holding tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Private {
    pub path: PathBuf,
    pub mode: u32,
    pub uid: u32,
    pub dir: bool,
}

/// Token caches and kubeconfigs must be the user's own and closed to everyone else.
pub fn permissions(items: &[Private], uid: u32) -> Check {
    if items.is_empty() {
        return Check::ok("permissions", "no cached credentials or kubeconfigs yet");
    }
    let open: Vec<String> = items
        .iter()
        .filter(|i| i.mode & 0o077 != 0)
        .map(|i| format!("{} ({:o})", i.path.display(), i.mode & 0o777))
        .collect();
    let foreign: Vec<String> = items
        .iter()
        .filter(|i| i.uid != uid)
        .map(|i| format!("{} (uid {})", i.path.display(), i.uid))
        .collect();
    if !foreign.is_empty() {
        return Check::fail("permissions", format!("not yours: {}", foreign.join(", "))).advice(
            format!("these hold tokens: `chown -R {uid} <path>` or delete them"),
        );
    }
    if !open.is_empty() {
        return Check::fail("permissions", format!("readable by others: {}", open.join(", ")))
            .advice("these hold tokens: `chmod -R go-rwx <path>` (tka writes 0600 files in 0700 directories)");
    }
    let files = items.iter().filter(|i| !i.dir).count();
    Check::ok(
        "permissions",
        format!("{files} token file(s), all private (0600 in 0700 directories)"),
    )
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
