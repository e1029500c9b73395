//! What the loader needs from the host: environment variables and the in-cluster namespace file.
//! Injectable, so tests never read or change the real process environment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where the in-cluster namespace is mounted.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// `TKA_*` variables that are not configuration keys (test harness, this repository's tooling) and are
/// ignored without a warning.
pub(super) const NON_CONFIG_VARS: &[&str] =
    &["TKA_INSECURE_TEST_IDENTITY", "TKA_CONFIG", "TKA_TOOLS_DIR"];
pub(super) const NON_CONFIG_PREFIXES: &[&str] = &["TKA_TEST_", "TKA_E2E_", "TKA_PEERS_"];

type VarFn<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// The host the configuration is loaded on.
pub struct Host<'a> {
    var: VarFn<'a>,
    pub(super) var_names: Vec<String>,
    pub(super) service_account_namespace: Option<String>,
}

impl<'a> Host<'a> {
    /// `var` looks up a variable, `var_names` lists all variables (to warn about unknown `TKA_*` ones), and
    /// `service_account_namespace` is the content of the in-cluster namespace file, if present.
    pub fn new(
        var: impl Fn(&str) -> Option<String> + 'a,
        var_names: Vec<String>,
        service_account_namespace: Option<String>,
    ) -> Self {
        Host {
            var: Box::new(var),
            var_names,
            service_account_namespace,
        }
    }

    /// The real host: `var` for lookups (normally `|k| std::env::var(k).ok()`), the names of the process's
    /// variables and the mounted service-account namespace.
    pub fn process(var: &'a dyn Fn(&str) -> Option<String>) -> Self {
        let names = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .collect();
        let namespace = std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE).ok();
        Host::new(var, names, namespace)
    }

    /// A fixed set of variables and no service-account namespace (tests, tools).
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Host<'static> {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let names = vars.keys().cloned().collect();
        Host::new(move |k| vars.get(k).cloned(), names, None)
    }

    pub fn with_service_account_namespace(mut self, namespace: Option<String>) -> Self {
        self.service_account_namespace = namespace;
        self
    }

    pub(super) fn var(&self, name: &str) -> Option<String> {
        (self.var)(name).filter(|v| !v.is_empty())
    }

    /// `$XDG_CONFIG_HOME`, else `~/.config` (also on macOS, as upstream), else `%APPDATA%` on Windows.
    pub fn user_config_dir(&self) -> Option<PathBuf> {
        if let Some(xdg) = self.var("XDG_CONFIG_HOME").map(PathBuf::from)
            && xdg.is_absolute()
        {
            return Some(xdg);
        }
        if cfg!(windows)
            && let Some(appdata) = self.var("APPDATA")
        {
            return Some(appdata.into());
        }
        self.var("HOME").map(|h| Path::new(&h).join(".config"))
    }

    pub(super) fn in_cluster(&self) -> bool {
        self.var("KUBERNETES_SERVICE_HOST").is_some()
    }
}
