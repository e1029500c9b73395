//! The key table: canonical spelling and type of every configuration key.
//!
//! One table drives case-insensitive key matching, unknown-key detection, environment variable names and type
//! checking, so file and environment follow exactly the same rules. A unit test keeps it in step with the structs
//! in `sections.rs`.
//!
//! Values are checked here rather than by serde because serde stops at the first error, while all errors must be
//! reported together, each with its key. Like upstream's viper (weakly typed decoding), scalars are converted where
//! the meaning is unambiguous: `"443"` is accepted for an integer, `"true"` for a boolean, `443` for a string.

use serde_yaml::{Mapping, Value};

use super::sections::{Backend, LogFormat, LogLevel, OtelProtocol, OutputFormat, Theme, TlsMode};
use crate::model::duration::GoDuration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    Float,
    Str,
    Duration,
    Enum(&'static [&'static str]),
    /// A list of strings; comma-separated in the environment.
    List,
    /// A string → string map; `k=v,k=v` in the environment. Keys keep their case (they are user data).
    Map,
    /// `tailscale.embedded.tagRules`: tag → list of JSON rule objects. Not settable from the environment.
    TagRules,
}

const PORT: Kind = Kind::Int { min: 0, max: 65535 };
const U32: Kind = Kind::Int {
    min: 0,
    max: u32::MAX as i64,
};
const I64: Kind = Kind::Int {
    min: i64::MIN,
    max: i64::MAX,
};

pub(crate) struct KeySpec {
    pub path: &'static str,
    pub kind: Kind,
}

const fn k(path: &'static str, kind: Kind) -> KeySpec {
    KeySpec { path, kind }
}

use Kind::{Bool, Duration as Dur, Float, List, Map, Str, TagRules};

/// Every configuration key, in documentation order (which is also the order of `check`'s output).
pub(crate) const KEYS: &[KeySpec] = &[
    k("debug", Bool),
    k("log.level", Kind::Enum(LogLevel::NAMES)),
    k("log.format", Kind::Enum(LogFormat::NAMES)),
    k("tailscale.hostname", Str),
    k("tailscale.port", PORT),
    k("tailscale.tailnet", Str),
    k("tailscale.capName", Str),
    k("tailscale.stateDir", Str),
    k("tailscale.stateSecret", Str),
    k("tailscale.backend", Kind::Enum(Backend::NAMES)),
    k("tailscale.socket", Str),
    k("tailscale.tailscaledPath", Str),
    k("tailscale.runDir", Str),
    k("tailscale.controlURL", Str),
    k("tailscale.authKeyFile", Str),
    k("tailscale.tags", List),
    k("tailscale.uploadLogs", Bool),
    k("tailscale.allowTaggedNodes", Bool),
    k("tailscale.allowSelfConnections", Bool),
    k("tailscale.startTimeout", Dur),
    k("tailscale.embedded.tagRules", TagRules),
    k("server.readTimeout", Dur),
    k("server.readHeaderTimeout", Dur),
    k("server.writeTimeout", Dur),
    k("server.idleTimeout", Dur),
    k("server.shutdownTimeout", Dur),
    k("server.listenAddresses", List),
    k("server.maxConnections", U32),
    k("server.maxConnectionsPerPeer", U32),
    k("tls.mode", Kind::Enum(TlsMode::NAMES)),
    k("tls.certFile", Str),
    k("tls.keyFile", Str),
    k("health.port", PORT),
    k("health.bindAddress", Str),
    k("api.retryAfterSeconds", I64),
    k("api.maxWait", Dur),
    k("api.execCredentialTTL", Dur),
    k("api.rateLimit", U32),
    k("api.rateBurst", U32),
    k("api.federationRateLimit", U32),
    k("api.federationRateBurst", U32),
    k("operator.namespace", Str),
    k("operator.clusterName", Str),
    k("operator.contextPrefix", Str),
    k("operator.userPrefix", Str),
    k("operator.allowedRoles", List),
    k("operator.maxPeriod", Dur),
    k("operator.tokenAudiences", List),
    k("operator.sweepInterval", Dur),
    k("operator.revalidateInterval", Dur),
    k("operator.leaderElection.enabled", Bool),
    k("operator.leaderElection.leaseName", Str),
    k("operator.leaderElection.leaseDuration", Dur),
    k("operator.leaderElection.renewDeadline", Dur),
    k("operator.leaderElection.retryPeriod", Dur),
    k("otel.endpoint", Str),
    k("otel.insecure", Bool),
    k("otel.protocol", Kind::Enum(OtelProtocol::NAMES)),
    k("otel.serviceName", Str),
    k("otel.sampleRatio", Float),
    k("clusterInfo.apiEndpoint", Str),
    k("clusterInfo.caData", Str),
    k("clusterInfo.insecureSkipTLSVerify", Bool),
    k("clusterInfo.labels", Map),
    k("clusterInfo.configMapRef.enabled", Bool),
    k("clusterInfo.configMapRef.name", Str),
    k("clusterInfo.configMapRef.namespace", Str),
    k("clusterInfo.configMapRef.keys.apiEndpoint", Str),
    k("clusterInfo.configMapRef.keys.caData", Str),
    k("clusterInfo.configMapRef.keys.insecure", Str),
    k("clusterInfo.configMapRef.keys.kubeconfig", Str),
    k("federation.loginServer", Str),
    k("federation.heartbeatInterval", Dur),
    k("federation.missedHeartbeats", U32),
    k("federation.requestTimeout", Dur),
    k("federation.memberTags", List),
    k("federation.memberCapName", Str),
    k("federation.primaryTags", List),
    k("federation.primaryCapName", Str),
    k("federation.allowDirectLogin", Bool),
    k("output.theme", Kind::Enum(Theme::NAMES)),
    k("output.quiet", Bool),
    k("output.long", Bool),
    k("output.format", Kind::Enum(OutputFormat::NAMES)),
    k("output.noColor", Bool),
    k("output.markdownlint-fix", Bool),
    k("client.timeout", Dur),
    k("client.caFile", Str),
    k("kubeconfig.exec", Bool),
    k("kubeconfig.merge", Bool),
    k("kubeconfig.dir", Str),
    k("kubeconfig.allowInsecureSkipTLSVerify", Bool),
];

/// Keys accepted for compatibility with upstream files; the loader handles their meaning.
pub(crate) const LEGACY_SERVER_HOST: &str = "server.host";
pub(crate) const LEGACY_SERVER_DEBUG: &str = "server.debug";
const LEGACY: &[KeySpec] = &[k(LEGACY_SERVER_HOST, Str), k(LEGACY_SERVER_DEBUG, Bool)];

/// What a key segment under some section names.
pub(crate) enum Node {
    /// A section (canonical path), e.g. `operator.leaderElection`.
    Section(&'static str),
    Leaf(&'static KeySpec),
}

/// Resolves the raw (any-case) key `raw` below the canonical section `parent` (`""` for the top level).
pub(crate) fn child(parent: &str, raw: &str) -> Option<Node> {
    // A dotted key such as `tailscale.port:` at the top level is not a path: reject it as unknown.
    if raw.is_empty() || raw.contains('.') {
        return None;
    }
    let wanted_len = if parent.is_empty() {
        raw.len()
    } else {
        parent.len() + 1 + raw.len()
    };
    let matches = |path: &str| {
        let Some(prefix) = path.get(..wanted_len) else {
            return false;
        };
        let (p, r) = prefix.split_at(wanted_len - raw.len());
        r.eq_ignore_ascii_case(raw) && (parent.is_empty() || p.strip_suffix('.') == Some(parent))
    };
    for spec in KEYS.iter().chain(LEGACY) {
        if !matches(spec.path) {
            continue;
        }
        if spec.path.len() == wanted_len {
            return Some(Node::Leaf(spec));
        }
        if spec.path.as_bytes()[wanted_len] == b'.' {
            return Some(Node::Section(&spec.path[..wanted_len]));
        }
    }
    None
}

/// Canonical names of the keys and sections directly below `parent`, for "did you mean" hints.
pub(crate) fn children(parent: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for spec in KEYS {
        let rest = if parent.is_empty() {
            Some(spec.path)
        } else {
            spec.path
                .strip_prefix(parent)
                .and_then(|r| r.strip_prefix('.'))
        };
        if let Some(rest) = rest {
            let name = rest.split('.').next().unwrap_or(rest);
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// Looks up a dotted key in any case (`TAILSCALE.capname` → `tailscale.capName`).
pub(crate) fn lookup(key: &str) -> Option<&'static KeySpec> {
    let mut parent = "";
    let mut segments = key.split('.').peekable();
    while let Some(seg) = segments.next() {
        match child(parent, seg)? {
            Node::Section(path) if segments.peek().is_some() => parent = path,
            Node::Leaf(spec) if segments.peek().is_none() => {
                // Legacy keys are accepted in files but not offered as keys.
                return KEYS.iter().any(|k| std::ptr::eq(k, spec)).then_some(spec);
            }
            _ => return None,
        }
    }
    None
}

/// `tailscale.capName` → `TKA_TAILSCALE_CAPNAME`.
pub(crate) fn env_name(path: &str) -> String {
    format!("TKA_{}", path.to_ascii_uppercase().replace(['.', '-'], "_"))
}

/// A short description of a YAML value for error messages.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.chars().count() > 40 => {
            format!("\"{}…\"", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

impl Kind {
    pub(crate) fn expected(self) -> String {
        match self {
            Bool => "a boolean (true or false)".into(),
            Kind::Int { min, max } if min == i64::MIN => format!("an integer (at most {max})"),
            Kind::Int { min, max } => format!("an integer between {min} and {max}"),
            Float => "a number".into(),
            Str => "a string".into(),
            Dur => "a duration such as 30s, 5m or 1h30m".into(),
            Kind::Enum(names) => format!("one of {}", names.join(", ")),
            List => "a list of strings".into(),
            Map => "a mapping of names to strings".into(),
            TagRules => "a mapping of tags to lists of rules".into(),
        }
    }
}

/// A problem with a value: `sub` names the entry inside a map (e.g. the label key), if any.
#[derive(Debug)]
pub(crate) struct ValueError {
    pub sub: Option<String>,
    pub message: String,
}

impl ValueError {
    fn new(message: String) -> Self {
        ValueError { sub: None, message }
    }
}

/// Go's `strconv.ParseBool`, which viper used for strings.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Checks a file value (not null) against `kind` and returns it in the form the typed structs deserialize from.
pub(crate) fn coerce(kind: Kind, v: &Value) -> Result<Value, Vec<ValueError>> {
    let mismatch = || {
        vec![ValueError::new(format!(
            "expected {}, got {}",
            kind.expected(),
            describe(v)
        ))]
    };
    let single = |r: Result<Value, String>| r.map_err(|m| vec![ValueError::new(m)]);
    match (kind, v) {
        (Bool, Value::Bool(_)) => Ok(v.clone()),
        (Bool, Value::String(s)) => parse_bool(s).map(Value::Bool).ok_or_else(mismatch),
        (Kind::Int { min, max }, Value::Number(_) | Value::String(_)) => {
            let n = match v {
                Value::Number(n) => n.as_i64().or_else(|| n.as_u64().map(|_| i64::MAX)),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if (min..=max).contains(&n) => Ok(Value::from(n)),
                _ => Err(mismatch()),
            }
        }
        (Float, Value::Number(n)) => n.as_f64().map(Value::from).ok_or_else(mismatch),
        (Float, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map(Value::from)
            .map_err(|_| mismatch()),
        (Str, Value::String(_) | Value::Number(_) | Value::Bool(_)) => {
            Ok(Value::String(scalar_string(v).unwrap_or_default()))
        }
        (Dur, Value::String(_) | Value::Number(_)) => {
            let s = scalar_string(v).unwrap_or_default();
            single(
                GoDuration::parse(&s)
                    .map(|d| Value::String(d.to_string()))
                    .map_err(|e| e.to_string()),
            )
        }
        (Kind::Enum(names), Value::String(s)) => names
            .iter()
            .find(|n| n.eq_ignore_ascii_case(s.trim()))
            .map(|n| Value::String((*n).into()))
            .ok_or_else(mismatch),
        (List, Value::Sequence(items)) => {
            let mut out = Vec::with_capacity(items.len());
            let mut errors = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match scalar_string(item) {
                    Some(s) => out.push(Value::String(s)),
                    None => errors.push(ValueError {
                        sub: Some(format!("[{i}]")),
                        message: format!("expected a string, got {}", describe(item)),
                    }),
                }
            }
            if errors.is_empty() {
                Ok(Value::Sequence(out))
            } else {
                Err(errors)
            }
        }
        (Map, Value::Mapping(m)) => coerce_entries(m, |_, v| {
            scalar_string(v)
                .map(Value::String)
                .ok_or_else(|| format!("expected a string, got {}", describe(v)))
        }),
        (TagRules, Value::Mapping(m)) => coerce_entries(m, |_, v| match v {
            // Rules become serde_json values, so anything JSON cannot represent is rejected here.
            Value::Sequence(_) => serde_yaml::from_value::<Vec<serde_json::Value>>(v.clone())
                .map(|_| v.clone())
                .map_err(|e| format!("invalid rule list: {e}")),
            _ => Err(format!("expected a list of rules, got {}", describe(v))),
        }),
        _ => Err(mismatch()),
    }
}

/// Checks each entry of a map; keys must be scalars and are kept as strings.
fn coerce_entries(
    m: &Mapping,
    check: impl Fn(&str, &Value) -> Result<Value, String>,
) -> Result<Value, Vec<ValueError>> {
    let mut out = Mapping::new();
    let mut errors = Vec::new();
    for (key, value) in m {
        let Some(name) = scalar_string(key) else {
            errors.push(ValueError::new(format!(
                "map keys must be strings, got {}",
                describe(key)
            )));
            continue;
        };
        match check(&name, value) {
            Ok(v) => {
                out.insert(Value::String(name), v);
            }
            Err(message) => errors.push(ValueError {
                sub: Some(name),
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(Value::Mapping(out))
    } else {
        Err(errors)
    }
}

/// Parses a value given as text (environment variable, `tka set config`): lists are comma-separated, maps are
/// `k=v,k=v`, everything else as a YAML string scalar would be.
pub(crate) fn coerce_text(kind: Kind, text: &str) -> Result<Value, String> {
    let first = |errors: Vec<ValueError>| {
        errors
            .into_iter()
            .next()
            .map(|e| e.message)
            .unwrap_or_default()
    };
    match kind {
        List => Ok(Value::Sequence(
            split_list(text).map(|s| Value::String(s.into())).collect(),
        )),
        Map => {
            let mut m = Mapping::new();
            for item in split_list(text) {
                let Some((k, v)) = item.split_once('=') else {
                    return Err(format!(
                        "expected key=value pairs separated by commas, got {item:?}"
                    ));
                };
                m.insert(
                    Value::String(k.trim().into()),
                    Value::String(v.trim().into()),
                );
            }
            Ok(Value::Mapping(m))
        }
        TagRules => Err("cannot be set from the environment; use the configuration file".into()),
        _ => coerce(kind, &Value::String(text.into())).map_err(first),
    }
}

fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}
