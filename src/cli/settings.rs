//! The effective CLI settings: configuration file and `TKA_*` variables (shared loader), then the global flags
//! on top (precedence: flag > environment > file > default).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{self, Config, OutputFormat};

use super::GlobalArgs;
use super::client::{Api, ClientOptions, TEST_BIND_ADDRESS_VAR};
use super::error::CliError;
use super::magicdns;
use super::server_url::{ServerUrl, needs_suffix};

/// Everything a command needs besides its own flags.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerUrl,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub format: OutputFormat,
    pub quiet: bool,
    pub debug: bool,
    /// Root of the managed kubeconfig files.
    pub kubeconfig_dir: PathBuf,
    /// `kubeconfig.exec`: default for `--exec`.
    pub exec: bool,
    /// `kubeconfig.merge`: default for `--merge`.
    pub merge: bool,
    /// `kubeconfig.allowInsecureSkipTLSVerify` / `--allow-insecure-skip-tls-verify`: accept server-sent
    /// clusters without certificate verification.
    pub allow_insecure_clusters: bool,

    /// Config loader warnings and address warnings, printed unless quiet.
    pub warnings: Vec<String>,
    ssl_cert_file: Option<PathBuf>,
    bind_address: Option<IpAddr>,
}

/// Looks up a process environment variable (non-empty values only).
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Loads the configuration (exit code 2 on errors) and applies the global flags to it.
pub fn load_config(g: &GlobalArgs) -> Result<(Config, Vec<String>), CliError> {
    let env = |k: &str| std::env::var(k).ok();
    let loaded = config::load(g.config.as_deref(), &env).map_err(|errors| {
        let lines: Vec<String> = errors.0.iter().map(|e| format!("  {e}")).collect();
        CliError::usage(format!("invalid configuration:\n{}", lines.join("\n")))
    })?;
    let mut c = loaded.config;
    if let Some(s) = &g.server {
        c.tailscale.hostname = s.clone();
    }
    if let Some(p) = g.port {
        c.tailscale.port = p;
    }
    if let Some(t) = &g.tailnet {
        c.tailscale.tailnet = t.clone();
    }
    if let Some(o) = g.output {
        c.output.format = o;
    }
    if g.quiet {
        c.output.quiet = true;
    }
    if g.no_color {
        c.output.no_color = true;
    }
    if let Some(t) = g.theme {
        c.output.theme = t;
    }
    if let Some(t) = g.timeout {
        c.client.timeout = t;
    }
    if let Some(s) = &g.socket {
        c.tailscale.socket = s.clone();
    }
    if let Some(f) = &g.ca_file {
        c.client.ca_file = f.clone();
    }
    if g.debug {
        c.debug = true;
    }
    if g.allow_insecure_skip_tls_verify {
        c.kubeconfig.allow_insecure_skip_tls_verify = true;
    }
    Ok((c, loaded.warnings))
}

impl Settings {
    pub async fn resolve(g: &GlobalArgs) -> Result<Settings, CliError> {
        let (c, mut warnings) = load_config(g)?;
        let mut tailnet = c.tailscale.tailnet.clone();
        let mut lookup_error = None;
        if needs_suffix(&c.tailscale.hostname, &tailnet) {
            let socket = Some(c.tailscale.socket.as_path()).filter(|p| !p.as_os_str().is_empty());
            match magicdns::lookup(socket).await {
                Ok(suffix) => tailnet = suffix,
                Err(e) => lookup_error = Some(e),
            }
        }
        let server = ServerUrl::resolve(&c.tailscale.hostname, &tailnet, c.tailscale.port)
            .map_err(CliError::usage)?;
        if let Some(w) = &server.warning {
            warnings.push(match lookup_error {
                Some(e) => format!("{w} (asking tailscaled: {e})"),
                None => w.clone(),
            });
        }
        let timeout = c.client.timeout.as_std();
        if timeout.is_zero() {
            return Err(CliError::usage(
                "--timeout (client.timeout) must be greater than zero",
            ));
        }
        let kubeconfig_dir = if c.kubeconfig.dir.as_os_str().is_empty() {
            dirs::config_dir()
                .map(|d| d.join("tka").join("kubeconfig"))
                .ok_or_else(|| {
                    CliError::usage(
                        "cannot determine the kubeconfig directory: set kubeconfig.dir or HOME",
                    )
                })?
        } else {
            c.kubeconfig.dir.clone()
        };
        let bind_address = match env_var(TEST_BIND_ADDRESS_VAR) {
            Some(v) => Some(
                v.trim()
                    .parse::<IpAddr>()
                    .map_err(|e| CliError::usage(format!("{TEST_BIND_ADDRESS_VAR}={v:?}: {e}")))?,
            ),
            None => None,
        };
        Ok(Settings {
            server,
            timeout,
            ca_file: Some(c.client.ca_file.clone()).filter(|p| !p.as_os_str().is_empty()),
            format: c.output.format,
            quiet: c.output.quiet,
            debug: c.debug,
            kubeconfig_dir,
            exec: c.kubeconfig.exec,
            merge: c.kubeconfig.merge,
            allow_insecure_clusters: c.kubeconfig.allow_insecure_skip_tls_verify,
            warnings,
            ssl_cert_file: env_var("SSL_CERT_FILE").map(PathBuf::from),
            bind_address,
        })
    }

    /// The API client; its deadline (`--timeout`) starts now.
    pub fn api(&self) -> Result<Api, CliError> {
        Api::new(ClientOptions {
            server: self.server.clone(),
            timeout: self.timeout,
            ca_file: self.ca_file.clone(),
            ssl_cert_file: self.ssl_cert_file.clone(),
            bind_address: self.bind_address,
            debug: self.debug,
        })
    }

    /// Text output for people (not `-o json|yaml`).
    pub fn text(&self) -> bool {
        self.format == OutputFormat::Text
    }
}
