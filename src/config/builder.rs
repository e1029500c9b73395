//! The loader's working state: walks the YAML document against the key table, records each value's
//! origin (`file:line:col`), collects every problem instead of stopping at the first, then overlays `TKA_*`
//! variables and host-dependent defaults.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use serde_yaml::{Mapping, Value};

use super::host::{Host, NON_CONFIG_PREFIXES, NON_CONFIG_VARS};
use super::positions::{KeyPositions, Pos};
use super::schema::{self, KeySpec, Kind, LEGACY_SERVER_DEBUG, LEGACY_SERVER_HOST, Node};
use super::{ConfigError, ConfigErrors};

pub(super) struct Builder {
    file: String,
    positions: KeyPositions,
    /// How often each lower-cased raw path was visited, to pick the position of the right occurrence.
    visits: HashMap<Vec<String>, usize>,
    /// Canonical key → checked value.
    values: BTreeMap<&'static str, Value>,
    /// Canonical key → where its value came from (`None` when the position is unknown).
    pub(super) origins: HashMap<&'static str, Option<String>>,
    /// Keys whose value was rejected.
    pub(super) failed: HashSet<&'static str>,
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<String>,
    /// `server.debug` from the file, used when `debug` is not set.
    legacy_debug: Option<(Value, Option<String>)>,
}

impl Builder {
    pub(super) fn new(file: &str, yaml: &str) -> Self {
        Builder {
            file: file.to_string(),
            positions: KeyPositions::scan(yaml),
            visits: HashMap::new(),
            values: BTreeMap::new(),
            origins: HashMap::new(),
            failed: HashSet::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            legacy_debug: None,
        }
    }

    fn at(&self, pos: Option<Pos>) -> Option<String> {
        match pos {
            _ if self.file.is_empty() => None,
            Some((line, col)) => Some(format!("{}:{line}:{col}", self.file)),
            None => Some(self.file.clone()),
        }
    }

    pub(super) fn error(&mut self, location: Option<String>, key: &str, message: String) {
        self.errors.push(ConfigError {
            location,
            key: key.to_string(),
            message,
        });
    }

    fn warn(&mut self, location: &Option<String>, message: String) {
        self.warnings.push(match location {
            Some(l) => format!("{l}: {message}"),
            None => message,
        });
    }

    pub(super) fn read_file(&mut self, yaml: &str) -> Result<(), ConfigErrors> {
        let parsed =
            serde_yaml::from_str::<Value>(yaml).and_then(|mut v| v.apply_merge().map(|()| v));
        let doc = match parsed {
            Ok(doc) => doc,
            Err(e) => {
                let pos = e.location().map(|l| (l.line(), l.column()));
                let mut message = e.to_string();
                if let Some((line, col)) = pos {
                    // The position is already in front of the message.
                    message = message.replacen(&format!(" at line {line} column {col}"), "", 1);
                }
                let location = self.at(pos).or_else(|| Some("configuration".into()));
                return Err(ConfigErrors(vec![ConfigError {
                    location,
                    key: String::new(),
                    message: format!("malformed YAML: {message}"),
                }]));
            }
        };
        match doc {
            Value::Null => {}
            Value::Mapping(map) => {
                self.walk("", &mut Vec::new(), &map);
                if let Some((v, location)) = self.legacy_debug.take()
                    && !self.values.contains_key("debug")
                {
                    self.values.insert("debug", v);
                    self.origins.insert("debug", location);
                }
            }
            other => {
                let location = self.at(Some((1, 1)));
                let message = format!(
                    "expected a mapping of sections, got {}",
                    schema::describe(&other)
                );
                self.error(location, "", message);
            }
        }
        Ok(())
    }

    /// Checks the entries of the section `parent` (canonical path); `raw` is the path as written.
    fn walk(&mut self, parent: &'static str, raw: &mut Vec<String>, map: &Mapping) {
        for (key, value) in map {
            let name = match key {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    let location = self.at(self.positions.nearest(&lower(raw)));
                    let shown = join(parent, &schema::describe(other));
                    self.error(
                        location,
                        &shown,
                        format!("unsupported key {shown:?}: keys must be strings"),
                    );
                    continue;
                }
            };
            raw.push(name);
            let pos = self.visit(raw);
            let location = self.at(pos);
            let name = raw.last().expect("just pushed");
            match schema::child(parent, name) {
                None => {
                    let shown = join(parent, name);
                    let hint = suggest(name, schema::children(parent))
                        .map(|s| format!(" (did you mean {:?}?)", join(parent, s)))
                        .unwrap_or_default();
                    self.error(location, &shown, format!("unknown key {shown:?}{hint}"));
                }
                Some(Node::Section(path)) => match value {
                    Value::Mapping(inner) => self.walk(path, raw, inner),
                    Value::Null => {}
                    other => {
                        let got = schema::describe(other);
                        self.error(
                            location,
                            path,
                            format!("{path}: expected a section (key: value lines), got {got}"),
                        );
                    }
                },
                Some(Node::Leaf(spec)) => self.leaf(spec, value, raw, location),
            }
            raw.pop();
        }
    }

    /// Position of the next occurrence of `raw` (in document order), else of its nearest ancestor.
    fn visit(&mut self, raw: &[String]) -> Option<Pos> {
        let lower = lower(raw);
        let all = self.positions.all(&lower);
        let n = self.visits.entry(lower.clone()).or_default();
        let pos = all.get(*n).copied();
        *n += 1;
        pos.or_else(|| self.positions.nearest(&lower))
    }

    fn leaf(
        &mut self,
        spec: &'static KeySpec,
        value: &Value,
        raw: &[String],
        location: Option<String>,
    ) {
        if value.is_null() {
            return; // `key:` without a value keeps the default, as in viper
        }
        let target = match spec.path {
            LEGACY_SERVER_HOST => {
                self.warn(&location, "server.host is deprecated and ignored".into());
                return;
            }
            LEGACY_SERVER_DEBUG => {
                self.warn(&location, "server.debug is deprecated; use debug".into());
                "debug"
            }
            path => path,
        };
        match schema::coerce(spec.kind, value) {
            Ok(v) if spec.path == LEGACY_SERVER_DEBUG => {
                // Applied after the walk: the top-level `debug` wins wherever it appears.
                self.legacy_debug = Some((v, location));
            }
            Ok(v) => {
                if let Some(first) = self.origins.get(target) {
                    let first = first.as_deref().unwrap_or("elsewhere");
                    let message = format!(
                        "{target} is set twice (keys match case-insensitively; first at {first})"
                    );
                    self.error(location, target, message);
                    return;
                }
                self.values.insert(target, v);
                self.origins.insert(target, location);
            }
            Err(errors) => {
                self.failed.insert(target);
                for e in errors {
                    let (key, location) = match &e.sub {
                        Some(sub) if sub.starts_with('[') => {
                            (format!("{}{sub}", spec.path), location.clone())
                        }
                        Some(sub) => {
                            let mut path = raw.to_vec();
                            path.push(sub.clone());
                            let at = self.at(self.positions.nearest(&lower(&path)));
                            (format!("{}.{sub}", spec.path), at)
                        }
                        None => (spec.path.to_string(), location.clone()),
                    };
                    self.error(location, spec.path, format!("{key}: {}", e.message));
                }
            }
        }
    }

    /// `TKA_<KEY>` variables override file values; unknown `TKA_*` variables only warn.
    pub(super) fn apply_env(&mut self, host: &Host) {
        let mut known: HashSet<String> = NON_CONFIG_VARS.iter().map(|s| s.to_string()).collect();
        for spec in schema::KEYS {
            let name = schema::env_name(spec.path);
            known.insert(name.clone());
            let Some(text) = host.var(&name) else {
                continue;
            };
            if spec.kind == Kind::TagRules {
                self.warnings.push(format!(
                    "{name}: {} cannot be set from the environment; ignored",
                    spec.path
                ));
                continue;
            }
            let location = Some(format!("${name}"));
            match schema::coerce_text(spec.kind, &text) {
                Ok(v) => {
                    self.values.insert(spec.path, v);
                    self.origins.insert(spec.path, location);
                }
                Err(message) => {
                    self.failed.insert(spec.path);
                    self.error(location, spec.path, format!("{}: {message}", spec.path));
                }
            }
        }

        for (legacy, replacement) in [
            (LEGACY_SERVER_HOST, None),
            (LEGACY_SERVER_DEBUG, Some("debug")),
        ] {
            let name = schema::env_name(legacy);
            known.insert(name.clone());
            let Some(text) = host.var(&name) else {
                continue;
            };
            let Some(target) = replacement else {
                self.warnings
                    .push(format!("{name} is deprecated and ignored"));
                continue;
            };
            self.warnings.push(format!(
                "{name} is deprecated; use {}",
                schema::env_name(target)
            ));
            if host.var(&schema::env_name(target)).is_some() {
                continue;
            }
            match schema::coerce_text(Kind::Bool, &text) {
                Ok(v) => {
                    self.values.insert("debug", v);
                    self.origins.insert("debug", Some(format!("${name}")));
                }
                Err(message) => self.error(
                    Some(format!("${name}")),
                    "debug",
                    format!("debug: {message}"),
                ),
            }
        }

        let mut unknown: Vec<&String> = host
            .var_names
            .iter()
            .filter(|n| n.starts_with("TKA_") && !known.contains(*n))
            .filter(|n| !NON_CONFIG_PREFIXES.iter().any(|p| n.starts_with(p)))
            .collect();
        unknown.sort();
        for name in unknown {
            let hint = suggest(name, known.iter().map(String::as_str))
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            self.warnings.push(format!(
                "unknown environment variable {name} is ignored{hint}"
            ));
        }
    }

    /// Defaults that depend on where the process runs.
    pub(super) fn apply_host_defaults(&mut self, host: &Host) {
        if let Some(ns) = host.service_account_namespace.as_deref().map(str::trim)
            && !ns.is_empty()
        {
            self.values
                .entry("operator.namespace")
                .or_insert_with(|| Value::String(ns.into()));
        }
        if host.in_cluster() {
            self.values
                .entry("operator.leaderElection.enabled")
                .or_insert(Value::Bool(true));
        }
        let run_dir = super::sections::default_run_dir(
            host.var("XDG_RUNTIME_DIR").as_deref(),
            &host
                .var("TMPDIR")
                .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from),
            super::sections::current_uid(),
        );
        self.values
            .entry("tailscale.runDir")
            .or_insert_with(|| Value::String(run_dir.display().to_string()));
        if let Some(dir) = host.user_config_dir() {
            let dir = dir.join("tka").join("kubeconfig").display().to_string();
            self.values
                .entry("kubeconfig.dir")
                .or_insert(Value::String(dir));
        }
    }

    /// The flat canonical keys as the nested tree serde expects.
    pub(super) fn nested(&self) -> Value {
        nest(self.values.iter().map(|(k, v)| (*k, v.clone())))
    }
}

/// Dotted keys and their values as nested sections (`a.b: 1` → `a: {b: 1}`).
pub fn nest<'a>(values: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    let mut root = Mapping::new();
    for (path, value) in values {
        let mut node = &mut root;
        let mut segments = path.split('.').peekable();
        while let Some(seg) = segments.next() {
            let key = Value::String(seg.into());
            if segments.peek().is_none() {
                node.insert(key, value);
                break;
            }
            let child = node
                .entry(key)
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            node = child.as_mapping_mut().expect("sections are mappings");
        }
    }
    Value::Mapping(root)
}

fn lower(path: &[String]) -> Vec<String> {
    path.iter().map(|s| s.to_lowercase()).collect()
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// The closest candidate by case-insensitive edit distance, if close enough to be a plausible typo.
fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours (`prot`).
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}
