//! The configuration loader: YAML text plus `TKA_*` environment variables.
//!
//! Input: the YAML file, optionally followed by a NUL byte and environment lines `NAME=value` (`NAME` is a
//! variable such as `TKA_TAILSCALE_PORT`, or a configuration key such as `tailscale.port`, which stands for
//! its variable) and `@sa=<namespace>` (the mounted in-cluster namespace). Properties:
//! - a rejected configuration lists at least one problem, each with a message, none an internal error, and
//!   every `file:line:col` inside the file;
//! - an accepted configuration validates, re-loads from its own YAML rendering unchanged, and holds each
//!   variable's value (the environment wins over the file);
//! - rendering every key, `check`'s redacted YAML and the effective log level never panic.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use tka::config::{self, Config, Host, env_var_name, keys, load_str, nest, parse_value};

const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (yaml, env_text) = text.split_once('\0').unwrap_or((text, ""));
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut namespace = None;
    for line in env_text.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        if name == "@sa" {
            namespace = Some(value.to_string());
            continue;
        }
        let name = env_var_name(name).unwrap_or_else(|| name.to_string());
        vars.insert(name, value.to_string());
    }
    let host = Host::from_vars(vars.clone()).with_service_account_namespace(namespace);

    match load_str(yaml, FILE, &host) {
        Err(errors) => rejected(yaml, &errors),
        Ok(loaded) => accepted(&loaded.config, &vars),
    }
});

fn rejected(yaml: &str, errors: &config::ConfigErrors) {
    assert!(!errors.0.is_empty(), "an error without problems");
    let lines = yaml_lines(yaml);
    for e in &errors.0 {
        assert!(!e.message.is_empty(), "{e:?}");
        assert!(!e.message.starts_with("internal error"), "{e}");
        let Some(location) = &e.location else {
            continue;
        };
        if let Some(at) = location.strip_prefix(&format!("{FILE}:")) {
            let (line, col) = at.split_once(':').unwrap_or_else(|| panic!("{location}"));
            let (line, col): (usize, usize) = (line.parse().unwrap(), col.parse().unwrap());
            assert!(
                (1..=lines + 1).contains(&line) && col >= 1,
                "{location} in {lines} lines: {e}"
            );
        } else {
            assert!(
                location == FILE || location.starts_with("$TKA_"),
                "{location}"
            );
        }
    }
}

/// Lines as YAML counts them: CR LF, CR, LF, NEL, LS and PS each end one.
fn yaml_lines(yaml: &str) -> usize {
    let breaks = yaml.replace("\r\n", "\n");
    1 + breaks
        .matches(['\r', '\n', '\u{85}', '\u{2028}', '\u{2029}'])
        .count()
}

fn accepted(config: &Config, vars: &BTreeMap<String, String>) {
    assert_eq!(config.validate(), Ok(()));
    let rendered = serde_yaml::to_string(config).expect("a configuration renders");
    let again = load_str(
        &rendered,
        "",
        &Host::from_vars(Vec::<(String, String)>::new()),
    )
    .unwrap_or_else(|e| panic!("its own rendering does not load:\n{rendered}\n{e}"));
    assert_eq!(&again.config, config, "{rendered}");
    let _ = (config.redacted_yaml(), config.log_level());

    for key in keys() {
        let Some(text) = env_var_name(key)
            .and_then(|name| vars.get(&name))
            .filter(|t| !t.is_empty())
        else {
            continue;
        };
        let effective = config.value(key);
        let Ok((_, value)) = parse_value(key, text) else {
            // Only the tag rules cannot come from the environment (ignored with a warning).
            assert_eq!(
                key, "tailscale.embedded.tagRules",
                "{key}={text:?} was accepted"
            );
            continue;
        };
        // The variable's value alone, through the same deserialization and normalization.
        let mut alone: Config =
            serde_yaml::from_value(nest([(key, value)])).expect("a checked value");
        alone.normalize();
        assert_eq!(effective, alone.value(key), "{key}={text:?}");
    }
}
