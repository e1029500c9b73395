//! Configuration shared by `tka-server` and `tka`.
//!
//! [`load`] reads one YAML file, applies `TKA_*` environment variables and validates the result, reporting all
//! problems at once with their position. Command-line flags come last: callers assign them to the public fields
//! of [`Config`] and then run [`Config::normalize`] and [`Config::validate`] again.
//!
//! - `sections.rs`: the typed sections and their defaults;
//! - `schema.rs`: the key table (canonical spelling and type of each key) and value checks;
//! - `positions.rs`: line/column of each key in the source;
//! - `load.rs`: file discovery and the loading entry points; `host.rs`: what it reads from the host;
//! - `builder.rs`: YAML → canonical keys with positions, environment overrides, host defaults;
//! - `validate.rs`: cross-field rules and normalisation;
//! - `edit.rs`: setting one key in a file's text, keeping the rest of it (`tka set config`).

mod builder;
mod edit;
mod host;
mod load;
mod positions;
mod schema;
mod sections;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

pub use builder::nest;
pub use edit::set_key;
pub use host::Host;
pub use load::{Loaded, find_file, load, load_str, load_with, user_file};
pub use sections::*;
pub use validate::decode_ca_data;

/// The effective configuration. Every section has its documented defaults.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Config {
    /// Turns `log.level` up to `debug` (see [`Config::log_level`]).
    pub debug: bool,
    pub log: LogConfig,
    pub tailscale: TailscaleConfig,
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub health: HealthConfig,
    pub api: ApiConfig,
    pub operator: OperatorConfig,
    pub otel: OtelConfig,
    pub cluster_info: ClusterInfoConfig,
    pub federation: FederationConfig,
    pub output: OutputConfig,
    pub client: ClientConfig,
    pub kubeconfig: KubeconfigConfig,
}

impl Config {
    /// The effective value of a canonical key (`client.timeout` → `"30s"`), as it would be written to a file.
    pub fn value(&self, key: &str) -> Option<Value> {
        let tree = serde_yaml::to_value(self).expect("Config serializes to YAML");
        key.split('.')
            .try_fold(&tree, |node, seg| node.get(seg))
            .cloned()
    }

    /// `log.level`, raised to `debug` when `debug` is set (a more verbose `trace` is kept).
    pub fn log_level(&self) -> LogLevel {
        if self.debug && self.log.level != LogLevel::Trace {
            LogLevel::Debug
        } else {
            self.log.level
        }
    }

    /// The effective configuration as YAML for `tka-server check`: URL credentials are redacted and the long
    /// `clusterInfo.caData` is shortened. (TKA keeps no secrets in its configuration: the auth key comes from a
    /// file or `TS_AUTHKEY`.)
    pub fn redacted_yaml(&self) -> String {
        let mut tree = serde_yaml::to_value(self).expect("Config serializes to YAML");
        for path in [
            "tailscale.controlURL",
            "otel.endpoint",
            "clusterInfo.apiEndpoint",
            "federation.loginServer",
        ] {
            if let Some(Value::String(s)) = get_mut(&mut tree, path) {
                *s = redact_userinfo(s);
            }
        }
        if let Some(Value::String(s)) = get_mut(&mut tree, "clusterInfo.caData") {
            let len = s.chars().count();
            if len > 24 {
                *s = format!(
                    "{}… ({len} characters)",
                    s.chars().take(16).collect::<String>()
                );
            }
        }
        serde_yaml::to_string(&tree).expect("YAML value serializes")
    }
}

fn get_mut<'a>(tree: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    path.split('.')
        .try_fold(tree, |node, seg| node.get_mut(seg))
}

/// `https://user:pw@host/x` → `https://REDACTED@host/x`.
fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://REDACTED{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// One problem with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `config.yaml:9:5` for file values, `$TKA_TAILSCALE_PORT` for environment values, `None` otherwise.
    pub location: Option<String>,
    /// Canonical key path (`tailscale.capName`); for unknown keys the path as written; empty for the document.
    pub key: String,
    /// Self-contained message naming the key, e.g. `unknown key "tailscale.capname2"`.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(f, "{location}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// All problems found; `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// All canonical key paths, in documentation order.
pub fn keys() -> impl Iterator<Item = &'static str> {
    schema::KEYS.iter().map(|k| k.path)
}

/// The canonical spelling of a dotted key given in any case (`TAILSCALE.CAPNAME` → `tailscale.capName`).
pub fn canonical_key(key: &str) -> Option<&'static str> {
    schema::lookup(key).map(|k| k.path)
}

/// The environment variable of a key (`tailscale.capName` → `TKA_TAILSCALE_CAPNAME`).
pub fn env_var_name(key: &str) -> Option<String> {
    canonical_key(key).map(schema::env_name)
}

/// Type-checks a value given as text for `key`, with the rules of environment variables (lists comma-separated,
/// maps `k=v,k=v`); returns the canonical key and the value as it would be written to the file.
/// A duration is returned as given (`5m`, not Go's `5m0s`), once it parsed.
pub fn parse_value(key: &str, text: &str) -> Result<(&'static str, Value), String> {
    let spec = schema::lookup(key).ok_or_else(|| unknown_key(key))?;
    schema::coerce_text(spec.kind, text)
        .map(|v| match spec.kind {
            schema::Kind::Duration => (spec.path, Value::String(text.trim().into())),
            _ => (spec.path, v),
        })
        .map_err(|m| format!("{}: {m}", spec.path))
}

/// `unknown key "x"`, with the keys of the section when `x` is one, else with close matches.
pub fn unknown_key(key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    let section: Vec<&str> = keys()
        .filter(|k| {
            k.to_ascii_lowercase()
                .strip_prefix(&lower)
                .is_some_and(|rest| rest.starts_with('.'))
        })
        .collect();
    if !section.is_empty() {
        return format!(
            "{key:?} is a section, not a key; its keys: {}",
            section.join(", ")
        );
    }
    let last = lower.rsplit('.').next().unwrap_or(&lower);
    let limit = (lower.chars().count() / 4).clamp(1, 3);
    let close: Vec<&str> = keys()
        .filter(|k| {
            let k = k.to_ascii_lowercase();
            builder::edit_distance(&lower, &k) <= limit || k.rsplit('.').next() == Some(last)
        })
        .collect();
    match close.as_slice() {
        [] => format!("unknown key {key:?}"),
        close => format!("unknown key {key:?} (did you mean {}?)", close.join(", ")),
    }
}
