//! `tka config [key [value]]`, `tka get config [key] [--filename]`, `tka set config <key> <value> [--force]`
//! — git-config style access to the configuration file.
//!
//! Reading shows the effective value (file, `TKA_*` variables and global flags, as every other command sees it).
//! Writing changes only the one key in the file in use (`config::set_key` keeps every other line, comments
//! included), never writes defaults, type-checks the value against the shared schema and refuses a change that
//! would make the file invalid. The file is replaced atomically (temporary file in the same directory, then
//! rename), keeping its mode; a symlinked file is written through the link, so dotfile setups survive.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use crate::config::{self, ConfigError, Host, OutputFormat};

use super::GlobalArgs;
use super::error::CliError;
use super::output;
use super::settings::load_config;

/// The keys the CLI uses (the CLI-only keys plus the server address and `debug`): what `tka config` lists. Any
/// key of the shared schema can be read and set by name.
const CLI_KEYS: &[&str] = &[
    "tailscale.hostname",
    "tailscale.port",
    "tailscale.tailnet",
    "tailscale.socket",
    "output.theme",
    "output.quiet",
    "output.long",
    "output.format",
    "output.noColor",
    "output.markdownlint-fix",
    "client.timeout",
    "client.caFile",
    "kubeconfig.exec",
    "kubeconfig.merge",
    "kubeconfig.dir",
    "kubeconfig.allowInsecureSkipTLSVerify",
    "debug",
];

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// `tka config` / `tka get config [key]`: the effective configuration, or one key's effective value.
pub fn show(g: &GlobalArgs, key: Option<&str>) -> Result<(), CliError> {
    let (c, _) = load_config(g)?;
    let format = c.output.format;
    let Some(key) = key else {
        let values = CLI_KEYS
            .iter()
            .map(|k| (*k, c.value(k).unwrap_or(Value::Null)));
        output::out(match format {
            OutputFormat::Text => values
                .map(|(k, v)| format!("{k}={}\n", text(&v)))
                .collect::<String>(),
            _ => output::structured(format, &config::nest(values))?,
        });
        return Ok(());
    };
    let canonical = config::canonical_key(key).ok_or_else(|| unknown(key))?;
    let value = c.value(canonical).unwrap_or(Value::Null);
    output::out(match format {
        OutputFormat::Text => format!("{}\n", text(&value)),
        _ => output::structured(format, &value)?,
    });
    Ok(())
}

/// `tka get config --filename`: the file in use.
pub fn filename(g: &GlobalArgs) -> Result<(), CliError> {
    let host = Host::process(&env);
    match config::find_file(g.config.as_deref(), &host) {
        Some(file) => {
            output::out(format!("{}\n", file.display()));
            Ok(())
        }
        None => Err(CliError::other(
            "no configuration file: tka uses defaults and TKA_* variables",
        )
        .advice(create_advice(&host))),
    }
}

/// `tka set config <key> <value> [--force]` and `tka config <key> <value>`.
pub fn set(g: &GlobalArgs, key: &str, text: &str, force: bool) -> Result<(), CliError> {
    let (canonical, value) = config::parse_value(key, text).map_err(|m| {
        if config::canonical_key(key).is_none() {
            unknown(key)
        } else {
            CliError::usage(m)
        }
    })?;
    let host = Host::process(&env);
    let file = match config::find_file(g.config.as_deref(), &host) {
        Some(f) if f.exists() || force => f,
        Some(f) => {
            return Err(CliError::usage(format!("{} does not exist", f.display()))
                .advice("run again with --force to create it"));
        }
        None if force => config::user_file(&host).ok_or_else(|| {
            CliError::usage(
                "cannot determine the configuration directory: set HOME or XDG_CONFIG_HOME",
            )
        })?,
        None => {
            return Err(
                CliError::usage("no configuration file to change").advice(create_advice(&host))
            );
        }
    };
    let old = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(CliError::other(format!(
                "cannot read {}: {e}",
                file.display()
            )));
        }
    };
    let new = config::set_key(&old, canonical, &value)
        .map_err(|m| CliError::usage(format!("{}: {m}", file.display())))?;
    let name = file.display().to_string();
    let introduced = new_errors(&errors(&old, &name), errors(&new, &name));
    if !introduced.is_empty() {
        let lines: Vec<String> = introduced.iter().map(|e| format!("  {e}")).collect();
        return Err(CliError::usage(format!(
            "not changed: {canonical} = {text} would make the configuration invalid:\n{}",
            lines.join("\n")
        )));
    }
    if new != old {
        write_keeping_mode(&file, new.as_bytes())
            .map_err(|e| CliError::other(format!("cannot write {}: {e}", file.display())))?;
    }
    if !g.quiet {
        eprintln!("Set {canonical} in {}", file.display());
        if let Some(var) = config::env_var_name(canonical).filter(|v| env(v).is_some()) {
            eprintln!("tka: warning: ${var} is set and overrides the file's value");
        }
    }
    Ok(())
}

fn unknown(key: &str) -> CliError {
    CliError::usage(config::unknown_key(key))
}

fn create_advice(host: &Host) -> String {
    match config::user_file(host) {
        Some(f) => format!(
            "`tka set config <key> <value> --force` creates {}",
            f.display()
        ),
        None => "set HOME or XDG_CONFIG_HOME, or pass --config FILE".into(),
    }
}

/// The problems of a file's text by itself (no environment), as (key, message).
fn errors(yaml: &str, name: &str) -> Vec<ConfigError> {
    match config::load_str(yaml, name, &Host::from_vars::<String, String>([])) {
        Ok(_) => Vec::new(),
        Err(e) => e.0,
    }
}

/// The problems of `after` that `before` did not have: a file that was already broken elsewhere can still be
/// changed, but no change may break it. Positions are ignored (inserting a line moves them).
fn new_errors(before: &[ConfigError], after: Vec<ConfigError>) -> Vec<ConfigError> {
    after
        .into_iter()
        .filter(|a| {
            !before
                .iter()
                .any(|b| b.key == a.key && b.message == a.message)
        })
        .collect()
}

/// A value as one line of text, in the syntax `set config` accepts: lists comma-separated, maps `k=v,k=v`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Sequence(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| format!("{}={}", text(k), text(v)))
            .collect::<Vec<_>>()
            .join(","),
        Value::Tagged(t) => text(&t.value),
    }
}

/// Replaces `file` atomically with `contents`, keeping the mode of the file it replaces (a new file is 0600).
/// A symlink is followed, so the link stays and its target changes.
fn write_keeping_mode(file: &Path, contents: &[u8]) -> std::io::Result<()> {
    let target = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tka-config.")
        .tempfile_in(&dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    if let Ok(meta) = std::fs::metadata(&target) {
        std::fs::set_permissions(tmp.path(), meta.permissions())?;
    }
    tmp.persist(&target).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(key: &str, message: &str) -> ConfigError {
        ConfigError {
            location: Some("config.yaml:1:1".into()),
            key: key.into(),
            message: message.into(),
        }
    }

    #[test]
    fn only_errors_the_change_introduced_count() {
        let before = [err("x", "unknown key \"x\"")];
        let mut moved = err("x", "unknown key \"x\"");
        moved.location = Some("config.yaml:7:1".into());
        let added = err("tls.certFile", "both or neither");
        assert_eq!(new_errors(&before, vec![moved, added.clone()]), vec![added]);
    }

    #[test]
    fn values_print_in_the_syntax_set_accepts() {
        assert_eq!(text(&Value::from(443)), "443");
        assert_eq!(text(&Value::from("30s")), "30s");
        assert_eq!(text(&Value::Sequence(vec!["a".into(), "b".into()])), "a,b");
        let mut m = serde_yaml::Mapping::new();
        m.insert("env".into(), "prod".into());
        assert_eq!(text(&Value::Mapping(m)), "env=prod");
    }

    #[cfg(unix)]
    #[test]
    fn writes_atomically_keeping_mode_and_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.yaml");
        std::fs::write(&real, "old\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("config.yaml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_keeping_mode(&link, b"new\n").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new\n");
        let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let created = dir.path().join("sub/new.yaml");
        write_keeping_mode(&created, b"x: 1\n").unwrap();
        assert_eq!(
            std::fs::metadata(&created).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }
}
