//! What the CLI accepts from a server-sent kubeconfig. Pure: no I/O.
//!
//! A kubeconfig is executable configuration: an exec user runs any program kubectl finds, `auth-provider`
//! plugins run code, `tokenFile` and certificate paths send local files to whatever `server` names, and
//! `proxy-url` or `insecure-skip-tls-verify` hand the connection to someone else. A spoofed or compromised tka
//! server must not be able to plant any of that in the user's kubeconfig, so the CLI accepts only the shapes
//! tka itself produces and refuses the whole document otherwise (nothing is written):
//!
//! - users authenticate with a `token`, or with an exec stanza running `tka credential --server <the server
//!   this CLI reached> --cluster <name> [--auto-login]`: no other command, argument or `env`. The stanza is
//!   rebuilt from those values, so even its free-text `installHint` is tka's own;
//! - clusters have a `server` URL, optional `certificate-authority-data`, and `insecure-skip-tls-verify` only
//!   when the user opted in (`--allow-insecure-skip-tls-verify`, `kubeconfig.allowInsecureSkipTLSVerify`);
//! - contexts name a cluster and a user of the same document, and optionally a namespace;
//! - names are unique per list, and extensions are only tka's own marker.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::model::kubeconfig::{MANAGED_EXTENSION, exec_stanza};
use crate::model::wire::{EXEC_API_V1, EXEC_API_V1BETA1};

/// A document the CLI may write, and what the user must be told about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub doc: Value,
    /// Printed on stderr (e.g. a cluster whose certificate kubectl will not verify).
    pub warnings: Vec<String>,
}

/// Checks `doc` (already normalised to v1 and pinned to `server`) and returns it with every exec stanza rebuilt,
/// or every problem found.
pub fn accept(doc: &Value, server: &str, allow_insecure: bool) -> Result<Accepted, Vec<String>> {
    let mut c = Checker {
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let out = c.document(doc, server, allow_insecure);
    if c.problems.is_empty() {
        Ok(Accepted {
            doc: out,
            warnings: c.warnings,
        })
    } else {
        Err(c.problems)
    }
}

struct Checker {
    problems: Vec<String>,
    warnings: Vec<String>,
}

const TOP_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "clusters",
    "users",
    "contexts",
    "current-context",
];
const CLUSTER_KEYS: &[&str] = &[
    "server",
    "certificate-authority-data",
    "insecure-skip-tls-verify",
    "extensions",
];
const USER_KEYS: &[&str] = &["token", "exec", "extensions"];
const CONTEXT_KEYS: &[&str] = &["cluster", "user", "namespace", "extensions"];
const EXEC_KEYS: &[&str] = &[
    "apiVersion",
    "command",
    "args",
    "env",
    "interactiveMode",
    "provideClusterInfo",
    "installHint",
];

impl Checker {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    fn document(&mut self, doc: &Value, server: &str, allow_insecure: bool) -> Value {
        let Some(top) = doc.as_object() else {
            self.problem("the kubeconfig is not a YAML/JSON object".into());
            return Value::Null;
        };
        self.only_keys(top, TOP_KEYS, "the kubeconfig");
        if top.get("apiVersion").and_then(Value::as_str) != Some("v1")
            || top.get("kind").and_then(Value::as_str) != Some("Config")
        {
            self.problem("the kubeconfig is not `apiVersion: v1`, `kind: Config`".into());
        }
        let mut out = doc.clone();
        let clusters = self.entries(top, "clusters", "cluster", |c, name, inner| {
            c.cluster(name, inner, allow_insecure);
            Value::Object(inner.clone())
        });
        let users = self.entries(top, "users", "user", |c, name, inner| {
            c.user(name, inner, server)
        });
        let contexts = self.entries(top, "contexts", "context", |c, name, inner| {
            c.only_keys(inner, CONTEXT_KEYS, &format!("context {name:?}"));
            c.extensions(inner, &format!("context {name:?}"));
            if let Some(ns) = inner.get("namespace")
                && !ns.is_string()
            {
                c.problem(format!("context {name:?}: namespace is not a string"));
            }
            Value::Object(inner.clone())
        });
        for (name, ctx) in &contexts.1 {
            for (field, names) in [("cluster", &clusters.0), ("user", &users.0)] {
                let target = ctx.get(field).and_then(Value::as_str).unwrap_or_default();
                if !names.contains(target) {
                    self.problem(format!(
                        "context {name:?} refers to {field} {target:?}, which the kubeconfig does not define"
                    ));
                }
            }
        }
        match top.get("current-context") {
            None | Some(Value::Null) => {}
            Some(Value::String(c)) if c.is_empty() || contexts.0.contains(c.as_str()) => {}
            Some(other) => self.problem(format!(
                "current-context {other} is not one of the kubeconfig's contexts"
            )),
        }
        for (key, inner, (_, entries)) in [
            ("clusters", "cluster", clusters),
            ("users", "user", users),
            ("contexts", "context", contexts),
        ] {
            if !top.contains_key(key) {
                continue;
            }
            let list: Vec<Value> = entries
                .into_iter()
                .map(|(name, v)| serde_json::json!({ "name": name, inner: v }))
                .collect();
            out[key] = Value::Array(list);
        }
        out
    }

    /// The `(names, [(name, rebuilt inner object)])` of one list; every entry needs a unique, non-empty name and
    /// an object under `inner`.
    fn entries(
        &mut self,
        top: &Map<String, Value>,
        key: &str,
        inner: &str,
        mut check: impl FnMut(&mut Self, &str, &Map<String, Value>) -> Value,
    ) -> (BTreeSet<String>, Vec<(String, Value)>) {
        let mut names = BTreeSet::new();
        let mut out = Vec::new();
        let list = match top.get(key) {
            None | Some(Value::Null) => return (names, out),
            Some(Value::Array(l)) => l,
            Some(_) => {
                self.problem(format!("{key} is not a list"));
                return (names, out);
            }
        };
        for entry in list {
            let name = entry
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let body = entry.get(inner).and_then(Value::as_object);
            let extra = entry
                .as_object()
                .map(|o| o.keys().any(|k| k != "name" && k != inner))
                .unwrap_or(true);
            let Some(body) = body.filter(|_| !name.is_empty() && !extra) else {
                self.problem(format!(
                    "{key} entry {name:?} is not {{name, {inner}}} with a non-empty name"
                ));
                continue;
            };
            if !names.insert(name.to_string()) {
                self.problem(format!("{key} has two entries named {name:?}"));
                continue;
            }
            let rebuilt = check(self, name, body);
            out.push((name.to_string(), rebuilt));
        }
        (names, out)
    }

    fn only_keys(&mut self, obj: &Map<String, Value>, allowed: &[&str], what: &str) {
        for k in obj.keys().filter(|k| !allowed.contains(&k.as_str())) {
            self.problem(format!(
                "{what} sets {k:?}, which tka never writes (allowed: {})",
                allowed.join(", ")
            ));
        }
    }

    /// Only tka's own marker extension, holding strings.
    fn extensions(&mut self, obj: &Map<String, Value>, what: &str) {
        let Some(exts) = obj.get("extensions") else {
            return;
        };
        let ok = exts.as_array().is_some_and(|list| {
            list.iter().all(|e| {
                e.get("name").and_then(Value::as_str) == Some(MANAGED_EXTENSION)
                    && e.get("extension")
                        .and_then(Value::as_object)
                        .is_some_and(|x| x.values().all(|v| v.is_string() || v.is_null()))
            })
        });
        if !ok {
            self.problem(format!(
                "{what} carries extensions other than tka's own {MANAGED_EXTENSION:?}"
            ));
        }
    }

    fn cluster(&mut self, name: &str, c: &Map<String, Value>, allow_insecure: bool) {
        let what = format!("cluster {name:?}");
        self.only_keys(c, CLUSTER_KEYS, &what);
        self.extensions(c, &what);
        let server = c.get("server").and_then(Value::as_str).unwrap_or_default();
        let url_ok = reqwest::Url::parse(server)
            .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host_str().is_some());
        if !url_ok {
            self.problem(format!(
                "{what}: server {server:?} is not an https:// (or http://) URL"
            ));
        }
        if c.get("certificate-authority-data")
            .is_some_and(|v| !v.is_string())
        {
            self.problem(format!(
                "{what}: certificate-authority-data is not a string"
            ));
        }
        match c.get("insecure-skip-tls-verify") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) if allow_insecure => self.warnings.push(format!(
                "cluster {name:?} sets insecure-skip-tls-verify: kubectl will not verify its API server's \
                 certificate (allowed by --allow-insecure-skip-tls-verify / kubeconfig.allowInsecureSkipTLSVerify)"
            )),
            Some(Value::Bool(true)) => self.problem(format!(
                "{what} sets insecure-skip-tls-verify: kubectl would not verify its API server's certificate \
                 (allow it with --allow-insecure-skip-tls-verify or kubeconfig.allowInsecureSkipTLSVerify)"
            )),
            Some(other) => self.problem(format!(
                "{what}: insecure-skip-tls-verify is {other}, not a boolean"
            )),
        }
    }

    /// A token user as is; an exec user rebuilt from its checked values.
    fn user(&mut self, name: &str, u: &Map<String, Value>, server: &str) -> Value {
        let what = format!("user {name:?}");
        self.only_keys(u, USER_KEYS, &what);
        self.extensions(u, &what);
        let mut out = u.clone();
        match (u.get("token"), u.get("exec")) {
            (Some(Value::String(_)), None) => {}
            (None, Some(Value::Object(exec))) => {
                if let Some(stanza) = self.exec(&what, exec, server) {
                    out.insert("exec".into(), stanza);
                }
            }
            _ => self.problem(format!(
                "{what} must have either a token or a `tka credential` exec plugin"
            )),
        }
        Value::Object(out)
    }

    fn exec(&mut self, what: &str, e: &Map<String, Value>, server: &str) -> Option<Value> {
        let before = self.problems.len();
        self.only_keys(e, EXEC_KEYS, &format!("{what}'s exec plugin"));
        let command = e.get("command").and_then(Value::as_str).unwrap_or_default();
        if command != "tka" {
            self.problem(format!(
                "{what} runs {command:?}: a kubeconfig from the tka server may only run `tka credential`"
            ));
        }
        let api_version = e
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if api_version != EXEC_API_V1 && api_version != EXEC_API_V1BETA1 {
            self.problem(format!(
                "{what}: exec apiVersion {api_version:?} is not {EXEC_API_V1} or {EXEC_API_V1BETA1}"
            ));
        }
        match e.get("env") {
            None | Some(Value::Null) => {}
            Some(Value::Array(l)) if l.is_empty() => {}
            Some(_) => self.problem(format!(
                "{what} sets environment variables for its plugin; tka's plugin needs none"
            )),
        }
        if !matches!(e.get("interactiveMode"), None | Some(Value::Null))
            && e.get("interactiveMode").and_then(Value::as_str) != Some("Never")
        {
            self.problem(format!(
                "{what}: interactiveMode must be Never (the plugin never prompts)"
            ));
        }
        if !matches!(
            e.get("provideClusterInfo"),
            None | Some(Value::Null) | Some(Value::Bool(false))
        ) {
            self.problem(format!("{what}: provideClusterInfo must be false"));
        }
        let args = credential_args(e.get("args"), server).map_err(|p| format!("{what}: {p}"));
        let args = match args {
            Ok(a) => Some(a),
            Err(p) => {
                self.problem(p);
                None
            }
        };
        let (cluster, auto_login) = args?;
        if self.problems.len() > before {
            return None;
        }
        let mut stanza = exec_stanza(server, &cluster, auto_login);
        stanza["apiVersion"] = Value::String(api_version.to_string());
        Some(stanza)
    }
}

/// `credential --server <server> --cluster <name> [--auto-login]` (flags in any order, each once) → the
/// cluster and whether `--auto-login` is set.
fn credential_args(args: Option<&Value>, server: &str) -> Result<(String, bool), String> {
    let args: Vec<&str> = match args {
        Some(Value::Array(l)) => l
            .iter()
            .map(|a| a.as_str().ok_or("exec args must be strings"))
            .collect::<Result<_, _>>()?,
        _ => return Err("exec args are missing".into()),
    };
    if args.first() != Some(&"credential") {
        return Err(format!("exec args {args:?} do not start with `credential`"));
    }
    let (mut seen_server, mut cluster, mut auto_login) = (None, None, false);
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        match *flag {
            "--server" if seen_server.is_none() => seen_server = rest.next().copied(),
            "--cluster" if cluster.is_none() => cluster = rest.next().copied(),
            "--auto-login" if !auto_login => auto_login = true,
            other => {
                return Err(format!(
                    "exec argument {other:?} is not one `tka credential` gets from a tka server"
                ));
            }
        }
    }
    if seen_server != Some(server) {
        return Err(format!(
            "the plugin asks {:?}, not the server this CLI reached ({server})",
            seen_server.unwrap_or_default()
        ));
    }
    let cluster = cluster.unwrap_or_default();
    if !is_cluster_name(cluster) {
        return Err(format!(
            "cluster {cluster:?} is not a valid cluster name (lowercase letters, digits, '-' and '.')"
        ));
    }
    Ok((cluster.to_string(), auto_login))
}

/// `operator.clusterName`: a DNS-1123 subdomain (≤ 253, labels of `[a-z0-9-]` with alphanumeric ends).
fn is_cluster_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(crate::model::naming::is_dns1123_label)
}

#[cfg(test)]
#[path = "kubeconfig_check_tests.rs"]
mod tests;
