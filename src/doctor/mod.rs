//! Preflight checks: `tka-server doctor` (inside the server's container) and `tka doctor` (on the user's
//! machine). Each check is one line with a mark, a message and, when it did not pass, advice on what to do.
//!
//! Data flows one way: thin probes gather facts (I/O), pure functions turn facts into [`Check`]s, and a
//! [`Report`] renders them as text or JSON. The pure parts are tested without I/O:
//!
//! - `server.rs` (Kubernetes side) and `tailnet.rs` (tailnet side): the server's facts → checks;
//!   `server_probe.rs`, `rbac_probe.rs` and `listener_probe.rs`: gathering them (kube-apiserver and its
//!   access reviews, LocalAPI, the health port, the tailnet listener);
//! - `client.rs`: the user's machine (tailscaled, the server, grant, kubeconfig, kubectl, caches) → checks,
//!   gathered by `cli/doctor.rs`;
//! - `kuberc.rs`: kubectl's credential plugin policy; `cert.rs`: the served certificate.
//!
//! Why a replica is not ready (`/ready`'s reasons and advice) is `telemetry::readiness`, shared with the
//! health endpoint.

pub mod cert;
pub mod client;
pub mod kuberc;
pub mod listener_probe;
pub mod rbac_probe;
pub mod server;
pub mod server_probe;
pub mod tailnet;

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

/// Bound of every single probe of `tka-server doctor`.
const PROBE: Duration = Duration::from_secs(5);

/// `f`, or an error saying it took longer than [`PROBE`].
async fn bounded<T>(f: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(PROBE, f)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", PROBE.as_secs())))
}

/// The outcome of one check. Only `Fail` makes a doctor exit non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works now, but something is off (a certificate close to expiry, a stale entry that does no harm).
    Warn,
    Fail,
    /// Not applicable here, or impossible because an earlier check failed.
    Skip,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Ok => "✓",
            Status::Warn => "!",
            Status::Fail => "✗",
            Status::Skip => "-",
        }
    }
}

/// One line of a doctor's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Short, stable name (`crd`, `rbac`, `tailscaled`); scripts match on it.
    pub name: String,
    pub status: Status,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub advice: Vec<String>,
}

impl Check {
    pub fn new(name: &str, status: Status, message: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status,
            message: message.into(),
            advice: Vec::new(),
        }
    }

    pub fn ok(name: &str, message: impl Into<String>) -> Check {
        Check::new(name, Status::Ok, message)
    }

    pub fn warn(name: &str, message: impl Into<String>) -> Check {
        Check::new(name, Status::Warn, message)
    }

    pub fn fail(name: &str, message: impl Into<String>) -> Check {
        Check::new(name, Status::Fail, message)
    }

    pub fn skip(name: &str, message: impl Into<String>) -> Check {
        Check::new(name, Status::Skip, message)
    }

    pub fn advice(mut self, advice: impl Into<String>) -> Check {
        self.advice.push(advice.into());
        self
    }
}

/// All checks of one run, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// No check failed (warnings and skips allowed).
    pub fn passed(&self) -> bool {
        self.first_failure().is_none()
    }

    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| c.status == Status::Fail)
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// One line per check (`✓ name  message`), advice indented below it, and a summary line.
    pub fn text(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0);
        let indent = " ".repeat(width + 3);
        let mut out = String::new();
        for c in &self.checks {
            let pad = " ".repeat(width - c.name.chars().count());
            out.push_str(&format!(
                "{} {}{pad} {}\n",
                c.status.mark(),
                c.name,
                c.message
            ));
            for a in &c.advice {
                out.push_str(&format!("{indent}advice: {a}\n"));
            }
        }
        out.push('\n');
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    fn summary(&self) -> String {
        let (failed, warned) = (self.count(Status::Fail), self.count(Status::Warn));
        let warnings = match warned {
            0 => String::new(),
            1 => ", 1 warning".into(),
            n => format!(", {n} warnings"),
        };
        match failed {
            0 => format!("No problems found{warnings}."),
            1 => format!("1 problem found{warnings}."),
            n => format!("{n} problems found{warnings}."),
        }
    }

    /// `{"ok": bool, "checks": [{name, status, message, advice?}]}` for scripts.
    pub fn json(&self) -> Value {
        json!({ "ok": self.passed(), "checks": self.checks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            checks: vec![
                Check::ok("config", "/etc/tka/config.yaml is valid"),
                Check::fail("crd", "not installed").advice("apply it"),
                Check::warn("certificate", "expires in 3 days"),
                Check::skip("federation", "not configured"),
            ],
        }
    }

    #[test]
    fn text_has_one_aligned_line_per_check_with_advice_below() {
        assert_eq!(
            report().text(),
            "✓ config      /etc/tka/config.yaml is valid\n\
             ✗ crd         not installed\n\
             \x20             advice: apply it\n\
             ! certificate expires in 3 days\n\
             - federation  not configured\n\
             \n\
             1 problem found, 1 warning.\n"
        );
    }

    #[test]
    fn only_failures_fail_and_json_says_so() {
        let r = report();
        assert!(!r.passed());
        assert_eq!(r.first_failure().unwrap().name, "crd");
        let j = r.json();
        assert_eq!(j["ok"], false);
        assert_eq!(j["checks"][1]["status"], "fail");
        assert_eq!(j["checks"][1]["advice"][0], "apply it");
        assert!(j["checks"][0].get("advice").is_none());
        let fine = Report {
            checks: vec![Check::ok("a", "x"), Check::warn("b", "y")],
        };
        assert!(fine.passed());
        assert!(fine.text().ends_with("No problems found, 1 warning.\n"));
    }
}
