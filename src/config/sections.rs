//! The typed configuration sections and their defaults.
//!
//! Field names serialize to the canonical camelCase keys; the loader hands serde a tree that already uses those
//! spellings, so `deny_unknown_fields` only guards the schema table against drifting from these structs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::duration::GoDuration;

/// Declares a closed set of lower-case string values: serde and clap both use the same spellings, and
/// `NAMES` feeds the schema so the loader can report every accepted value.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] #[value(name = $text)] $variant),+
        }

        impl $name {
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// `log.level`.
    LogLevel { Trace = "trace", Debug = "debug", #[default] Info = "info", Warn = "warn", Error = "error" }
);
string_enum!(
    /// `log.format`: `auto` is text on a TTY, else JSON.
    LogFormat { #[default] Auto = "auto", Json = "json", Text = "text" }
);
string_enum!(
    /// `tailscale.backend`.
    Backend { #[default] Tailscaled = "tailscaled", Embedded = "embedded" }
);
string_enum!(
    /// `tls.mode`: where the listener's certificate comes from.
    TlsMode { #[default] Auto = "auto", Tailscale = "tailscale", Files = "files", Off = "off" }
);
string_enum!(
    /// `otel.protocol`.
    OtelProtocol { #[default] Grpc = "grpc", HttpProtobuf = "http/protobuf" }
);
string_enum!(
    /// `output.theme` (CLI): upstream's theme names. The text output has no colours, so all render alike.
    Theme {
        Ascii = "ascii", Dark = "dark", Dracula = "dracula", #[default] TokyoNight = "tokyo-night",
        Light = "light", Notty = "notty", Markdown = "markdown"
    }
);
string_enum!(
    /// `output.format` (CLI).
    OutputFormat { #[default] Text = "text", Json = "json", Yaml = "yaml" }
);

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct TailscaleConfig {
    pub hostname: String,
    pub port: u16,
    pub tailnet: String,
    pub cap_name: String,
    pub state_dir: PathBuf,
    pub state_secret: String,
    pub backend: Backend,
    /// Empty: supervise an own tailscaled.
    pub socket: PathBuf,
    pub tailscaled_path: PathBuf,
    pub run_dir: PathBuf,
    /// Empty: Tailscale's control plane.
    #[serde(rename = "controlURL")]
    pub control_url: String,
    pub auth_key_file: PathBuf,
    pub tags: Vec<String>,
    pub upload_logs: bool,
    pub allow_tagged_nodes: bool,
    /// Identify connections from this server's own tailnet node (local processes); refused by default.
    pub allow_self_connections: bool,
    pub start_timeout: GoDuration,
    pub embedded: EmbeddedConfig,
}

/// `tailscale.runDir`'s default: `$XDG_RUNTIME_DIR/tka` (per user, 0700 by definition), else `tka-<uid>`
/// under the system temp dir. Never a fixed name in a shared directory, where another local user could create
/// it first; the supervisor still refuses any run directory that is not private to this uid.
pub fn default_run_dir(
    xdg_runtime_dir: Option<&str>,
    temp_dir: &std::path::Path,
    uid: u32,
) -> PathBuf {
    match xdg_runtime_dir.map(std::path::Path::new) {
        Some(d) if d.is_absolute() => d.join("tka"),
        _ => temp_dir.join(format!("tka-{uid}")),
    }
}

/// The effective uid of this process (0 where there is no such thing).
pub fn current_uid() -> u32 {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }
    #[cfg(not(unix))]
    {
        0
    }
}

impl Default for TailscaleConfig {
    fn default() -> Self {
        TailscaleConfig {
            hostname: "tka".into(),
            port: 443,
            tailnet: String::new(),
            cap_name: "specht-labs.de/cap/tka".into(),
            state_dir: "/var/lib/tsnet".into(),
            state_secret: String::new(),
            backend: Backend::default(),
            socket: PathBuf::new(),
            tailscaled_path: "tailscaled".into(),
            // The loader replaces this with the host's default (`$XDG_RUNTIME_DIR/tka` when set).
            run_dir: default_run_dir(None, std::path::Path::new("/tmp"), current_uid()),
            control_url: String::new(),
            auth_key_file: PathBuf::new(),
            tags: Vec::new(),
            upload_logs: false,
            allow_tagged_nodes: false,
            allow_self_connections: false,
            start_timeout: GoDuration::from_secs(60),
            embedded: EmbeddedConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Tag → capability rules (the same JSON objects as in a grant), for the `embedded` backend. Kept as raw JSON
    /// so that `model::rules` parses them exactly like rules from a tailnet policy.
    pub tag_rules: BTreeMap<String, Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ServerConfig {
    pub read_timeout: GoDuration,
    pub read_header_timeout: GoDuration,
    pub write_timeout: GoDuration,
    pub idle_timeout: GoDuration,
    pub shutdown_timeout: GoDuration,
    /// Empty: bind addresses are chosen automatically.
    pub listen_addresses: Vec<String>,
    /// Open tailnet connections, all peers together; more are closed at once.
    pub max_connections: u32,
    /// Open tailnet connections of one peer (one tailnet node); admitted federation peers only count
    /// towards `max_connections`.
    pub max_connections_per_peer: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            read_timeout: GoDuration::from_secs(10),
            read_header_timeout: GoDuration::from_secs(5),
            write_timeout: GoDuration::from_secs(20),
            idle_timeout: GoDuration::from_secs(120),
            shutdown_timeout: GoDuration::from_secs(25),
            listen_addresses: Vec::new(),
            max_connections: 2048,
            max_connections_per_peer: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct TlsConfig {
    pub mode: TlsMode,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct HealthConfig {
    /// `0` is turned into 8080 by [`super::Config::normalize`] (upstream behaviour).
    pub port: u16,
    pub bind_address: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            port: 8080,
            bind_address: "0.0.0.0".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Values ≤ 0 are turned into 1 by [`super::Config::normalize`] (upstream behaviour).
    pub retry_after_seconds: i64,
    pub max_wait: GoDuration,
    #[serde(rename = "execCredentialTTL")]
    pub exec_credential_ttl: GoDuration,
    pub rate_limit: u32,
    pub rate_burst: u32,
    /// The budget of an admitted federation peer (the primary at a member, a member at the primary) on the
    /// federation routes, separate from and larger than a node's: the primary relays every user's requests.
    pub federation_rate_limit: u32,
    pub federation_rate_burst: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            retry_after_seconds: 1,
            max_wait: GoDuration::from_secs(30),
            exec_credential_ttl: GoDuration::from_secs(3600),
            rate_limit: 20,
            rate_burst: 40,
            federation_rate_limit: 200,
            federation_rate_burst: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct OperatorConfig {
    /// Default `tka-dev`; the loader uses the pod's own namespace when running in a cluster.
    pub namespace: String,
    pub cluster_name: String,
    pub context_prefix: String,
    pub user_prefix: String,
    /// Empty: any role the server may `bind`.
    pub allowed_roles: Vec<String>,
    /// Zero means no cap; see [`OperatorConfig::max_period`].
    pub max_period: GoDuration,
    pub token_audiences: Vec<String>,
    pub sweep_interval: GoDuration,
    /// Zero disables revalidation.
    pub revalidate_interval: GoDuration,
    pub leader_election: LeaderElectionConfig,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            namespace: "tka-dev".into(),
            cluster_name: "tka-cluster".into(),
            context_prefix: "tka-context-".into(),
            user_prefix: "tka-user-".into(),
            allowed_roles: Vec::new(),
            max_period: GoDuration::ZERO,
            token_audiences: Vec::new(),
            sweep_interval: GoDuration::from_secs(300),
            revalidate_interval: GoDuration::from_secs(300),
            leader_election: LeaderElectionConfig::default(),
        }
    }
}

impl OperatorConfig {
    /// The cap on grant periods, `None` when `maxPeriod` is zero.
    pub fn max_period(&self) -> Option<GoDuration> {
        Some(self.max_period).filter(|d| !d.is_zero())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct LeaderElectionConfig {
    /// Default `false`; the loader turns it on when running in a cluster (`KUBERNETES_SERVICE_HOST` set).
    pub enabled: bool,
    pub lease_name: String,
    pub lease_duration: GoDuration,
    pub renew_deadline: GoDuration,
    pub retry_period: GoDuration,
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            enabled: false,
            lease_name: "controller.tka.specht-labs.de".into(),
            lease_duration: GoDuration::from_secs(15),
            renew_deadline: GoDuration::from_secs(10),
            retry_period: GoDuration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct OtelConfig {
    /// `host:port` or URL; empty: no export.
    pub endpoint: String,
    pub insecure: bool,
    pub protocol: OtelProtocol,
    pub service_name: String,
    pub sample_ratio: f64,
}

impl Default for OtelConfig {
    fn default() -> Self {
        OtelConfig {
            endpoint: String::new(),
            insecure: true,
            protocol: OtelProtocol::default(),
            service_name: "tka-server".into(),
            sample_ratio: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ClusterInfoConfig {
    pub api_endpoint: String,
    /// Base64 of a PEM bundle; see [`ClusterInfoConfig::ca_pem`].
    pub ca_data: String,
    #[serde(rename = "insecureSkipTLSVerify")]
    pub insecure_skip_tls_verify: bool,
    pub labels: BTreeMap<String, String>,
    pub config_map_ref: ConfigMapRefConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ConfigMapRefConfig {
    pub enabled: bool,
    pub name: String,
    pub namespace: String,
    pub keys: ConfigMapKeys,
}

impl Default for ConfigMapRefConfig {
    fn default() -> Self {
        ConfigMapRefConfig {
            enabled: false,
            name: "cluster-info".into(),
            namespace: "kube-public".into(),
            keys: ConfigMapKeys::default(),
        }
    }
}

/// Which ConfigMap keys hold which cluster-info field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ConfigMapKeys {
    pub api_endpoint: String,
    pub ca_data: String,
    pub insecure: String,
    pub kubeconfig: String,
}

impl Default for ConfigMapKeys {
    fn default() -> Self {
        ConfigMapKeys {
            api_endpoint: "apiEndpoint".into(),
            ca_data: "caData".into(),
            insecure: "insecure".into(),
            kubeconfig: "kubeconfig".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct FederationConfig {
    /// Set: this server is a member of that primary.
    pub login_server: String,
    pub heartbeat_interval: GoDuration,
    pub missed_heartbeats: u32,
    pub request_timeout: GoDuration,
    pub member_tags: Vec<String>,
    pub member_cap_name: String,
    /// Member: the primary's node must carry one of these tags (or hold `primary_cap_name`).
    pub primary_tags: Vec<String>,
    pub primary_cap_name: String,
    pub allow_direct_login: bool,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            login_server: String::new(),
            heartbeat_interval: GoDuration::from_secs(30),
            missed_heartbeats: 3,
            request_timeout: GoDuration::from_secs(10),
            member_tags: Vec::new(),
            member_cap_name: "specht-labs.de/cap/tka-federation".into(),
            primary_tags: vec!["tag:tka".into()],
            primary_cap_name: "specht-labs.de/cap/tka-primary".into(),
            allow_direct_login: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct OutputConfig {
    pub theme: Theme,
    pub quiet: bool,
    pub long: bool,
    pub format: OutputFormat,
    pub no_color: bool,
    #[serde(rename = "markdownlint-fix")]
    pub markdownlint_fix: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ClientConfig {
    pub timeout: GoDuration,
    pub ca_file: PathBuf,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: GoDuration::from_secs(30),
            ca_file: PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct KubeconfigConfig {
    pub exec: bool,
    pub merge: bool,
    /// Empty in [`Default`]; the loader fills in the platform default (`<user config dir>/tka/kubeconfig`).
    pub dir: PathBuf,
    /// Accept server-sent clusters with `insecure-skip-tls-verify` (refused by default).
    #[serde(rename = "allowInsecureSkipTLSVerify")]
    pub allow_insecure_skip_tls_verify: bool,
}
