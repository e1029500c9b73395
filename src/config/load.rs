//! Loading: file discovery, YAML → canonical keys with positions, environment overrides, host-dependent defaults.
//!
//! The document is parsed by serde_yaml into a `Value`, walked against the key table (keys match in any case;
//! unknown keys and bad values are collected with their `file:line:col`), flattened to canonical key → checked
//! value, overlaid with `TKA_*` variables, and only then deserialized into [`Config`] — which therefore cannot
//! fail on user input.

use std::path::{Path, PathBuf};

use super::builder::Builder;
use super::host::Host;
use super::{Config, ConfigError, ConfigErrors};

const SYSTEM_CONFIG: &str = "/etc/tka/config.yaml";

/// The result of loading.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file that was read; `None` when no file exists (defaults and environment only).
    pub source: Option<PathBuf>,
    /// Deprecated keys, unknown `TKA_*` variables and the like: worth logging, not fatal.
    pub warnings: Vec<String>,
}

/// Loads the configuration of this process: `path`, else the first existing of
/// `$XDG_CONFIG_HOME/tka/config.yaml` and `/etc/tka/config.yaml`, else defaults; then `TKA_*` variables.
pub fn load(
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    load_with(path, &Host::process(env))
}

/// The file [`load_with`] reads: `path` (whether it exists or not), else the first existing of the user's file
/// ([`user_file`]) and `/etc/tka/config.yaml`; `None` when there is none.
pub fn find_file(path: Option<&Path>, host: &Host) -> Option<PathBuf> {
    match path {
        Some(p) => Some(p.to_path_buf()),
        None => user_file(host)
            .into_iter()
            .chain([PathBuf::from(SYSTEM_CONFIG)])
            .find(|p| p.is_file()),
    }
}

/// `$XDG_CONFIG_HOME/tka/config.yaml` (default `~/.config/tka/config.yaml`).
pub fn user_file(host: &Host) -> Option<PathBuf> {
    host.user_config_dir()
        .map(|d| d.join("tka").join("config.yaml"))
}

/// [`load`] with an explicit host.
pub fn load_with(path: Option<&Path>, host: &Host) -> Result<Loaded, ConfigErrors> {
    let Some(path) = find_file(path, host) else {
        return load_str("", "", host);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            location: Some(path.display().to_string()),
            key: String::new(),
            message: format!("cannot read the configuration file: {e}"),
        }])
    })?;
    let mut loaded = load_str(&text, &path.display().to_string(), host)?;
    loaded.source = Some(path);
    Ok(loaded)
}

/// Loads from YAML text; `file_name` prefixes positions in messages (`config.yaml:9:5`). `source` is `None`.
pub fn load_str(yaml: &str, file_name: &str, host: &Host) -> Result<Loaded, ConfigErrors> {
    let mut b = Builder::new(file_name, yaml);
    b.read_file(yaml)?;
    b.apply_env(host);
    b.apply_host_defaults(host);

    let mut config = match serde_yaml::from_value::<Config>(b.nested()) {
        Ok(c) => c,
        Err(e) => {
            // Values were checked against the key table already; this means the table and structs disagree.
            b.error(
                None,
                "",
                format!("internal error: configuration does not match its schema: {e}"),
            );
            Config::default()
        }
    };
    config.normalize();
    let locate = |key: &str| b.origins.get(key).cloned().flatten();
    let validation: Vec<ConfigError> = config
        .validation_errors(&locate)
        .into_iter()
        // A key whose value was rejected already would only produce follow-up errors.
        .filter(|e| !b.failed.contains(e.key.as_str()))
        .collect();
    b.errors.extend(validation);
    let mut warnings = b.warnings;
    warnings.extend(config.caveats());

    if b.errors.is_empty() {
        Ok(Loaded {
            config,
            source: None,
            warnings,
        })
    } else {
        Err(ConfigErrors(b.errors))
    }
}
