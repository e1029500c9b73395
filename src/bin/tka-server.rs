//! `tka-server`: the sign-in server and operator. A thin entry point over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tka::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "tka-server",
    version,
    about = "Tailscale Kubernetes Auth: sign-in server and operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Validate a configuration file and print the effective configuration (secrets redacted).
    #[command(alias = "check-config")]
    Check {
        #[arg(short, long, env = "TKA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Diagnose a running server from inside its container: configuration, apiserver, CRD, RBAC, Lease,
    /// tailscaled, certificate, tailnet listener, federation. Exit 1 if a check fails.
    Doctor {
        #[arg(short, long, env = "TKA_CONFIG")]
        config: Option<PathBuf>,
        /// text, or json for scripts.
        #[arg(short, long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
    /// Print the TkaSignin CRD.
    Crd,
    /// Print the server's least-privilege RBAC for the given grantable roles.
    Rbac {
        #[arg(long, value_delimiter = ',', default_value = "view,edit,admin")]
        allowed_roles: Vec<String>,
        #[arg(long, default_value = "tka-system")]
        namespace: String,
    },
    /// Print version information.
    Version {
        #[arg(short, long, default_value = "text")]
        output: String,
    },
}

/// Flags of `serve`; each one overrides its configuration key (flag > environment > file > default).
#[derive(Args)]
struct ServeArgs {
    #[arg(short, long, env = "TKA_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    debug: bool,
    /// tailscale.hostname
    #[arg(short = 's', long = "server")]
    hostname: Option<String>,
    /// tailscale.port
    #[arg(short, long)]
    port: Option<u16>,
    /// tailscale.stateDir
    #[arg(short = 'd', long = "dir")]
    state_dir: Option<PathBuf>,
    /// tailscale.capName
    #[arg(short = 'n', long)]
    cap_name: Option<String>,
    /// health.port
    #[arg(long)]
    health_port: Option<u16>,
    /// clusterInfo.apiEndpoint
    #[arg(long)]
    api_endpoint: Option<String>,
    /// clusterInfo.caData
    #[arg(long)]
    ca_data: Option<String>,
    /// clusterInfo.insecureSkipTLSVerify
    #[arg(long)]
    insecure_skip_tls_verify: bool,
    /// clusterInfo.labels (k=v,k=v)
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// tailscale.backend
    #[arg(long)]
    backend: Option<String>,
    /// tailscale.controlURL
    #[arg(long)]
    control_url: Option<String>,
    /// tailscale.socket
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Accepted for compatibility with upstream; no effect on the server.
    #[arg(short = 'l', long, hide = true)]
    long: bool,
    /// Accepted for compatibility with upstream; no effect on the server.
    #[arg(short = 'q', long, hide = true)]
    quiet: bool,
}

fn load(path: Option<&std::path::Path>) -> Result<config::Loaded, ExitCode> {
    let env = |k: &str| std::env::var(k).ok();
    config::load(path, &env).map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::from(2)
    })
}

fn apply_flags(cfg: &mut Config, a: &ServeArgs) -> Result<(), String> {
    if a.debug {
        cfg.debug = true;
    }
    if let Some(h) = &a.hostname {
        cfg.tailscale.hostname = h.clone();
    }
    if let Some(p) = a.port {
        cfg.tailscale.port = p;
    }
    if let Some(d) = &a.state_dir {
        cfg.tailscale.state_dir = d.clone();
    }
    if let Some(n) = &a.cap_name {
        cfg.tailscale.cap_name = n.clone();
    }
    if let Some(p) = a.health_port {
        cfg.health.port = p;
    }
    if let Some(e) = &a.api_endpoint {
        cfg.cluster_info.api_endpoint = e.clone();
    }
    if let Some(c) = &a.ca_data {
        cfg.cluster_info.ca_data = c.clone();
    }
    if a.insecure_skip_tls_verify {
        cfg.cluster_info.insecure_skip_tls_verify = true;
    }
    for kv in &a.labels {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--labels: {kv:?} is not key=value"))?;
        cfg.cluster_info.labels.insert(k.to_string(), v.to_string());
    }
    if let Some(b) = &a.backend {
        let (_, value) = config::parse_value("tailscale.backend", b)?;
        cfg.tailscale.backend =
            serde_yaml::from_value(value).map_err(|e| format!("--backend: {e}"))?;
    }
    if let Some(u) = &a.control_url {
        cfg.tailscale.control_url = u.clone();
    }
    if let Some(s) = &a.socket {
        cfg.tailscale.socket = s.clone();
    }
    cfg.normalize();
    cfg.validate().map_err(|e| e.to_string())
}

/// `tka-server doctor`: every check, one line each (or JSON); exit 1 when one failed.
fn doctor(config: Option<&std::path::Path>, output: &str) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    let report = runtime.block_on(tka::doctor::server_probe::run(config, &env));
    if output == "json" {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", tka::operator::crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Rbac {
            allowed_roles,
            namespace,
        } => match tka::operator::rbac::GrantableRoles::new(&allowed_roles) {
            Ok(roles) => {
                print!("{}", tka::operator::rbac::manifests(&namespace, &roles));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tka-server rbac: --allowed-roles: {e}");
                ExitCode::from(2)
            }
        },
        Command::Version { output } => {
            let v = serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"), "commit": tka::BUILD_COMMIT, "date": tka::BUILD_DATE,
                "target": format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
            });
            if output == "json" {
                println!("{v}");
            } else {
                println!(
                    "tka-server {} (commit {}, built {}, {})",
                    v["version"].as_str().unwrap_or(""),
                    tka::BUILD_COMMIT,
                    tka::BUILD_DATE,
                    v["target"].as_str().unwrap_or("")
                );
            }
            ExitCode::SUCCESS
        }
        Command::Doctor { config, output } => doctor(config.as_deref(), &output),
        Command::Check { config } => match load(config.as_deref()) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    eprintln!("warning: {w}");
                }
                print!("{}", loaded.config.redacted_yaml());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve(args) => {
            let mut loaded = match load(args.config.as_deref()) {
                Ok(l) => l,
                Err(code) => return code,
            };
            if let Err(e) = apply_flags(&mut loaded.config, &args) {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
            let cfg = loaded.config;
            let otel = match tka::telemetry::otel::Otel::start(&cfg.otel, &cfg.operator.namespace) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            tka::telemetry::logging::init(
                &cfg.log_level().to_string(),
                &cfg.log.format.to_string(),
                otel.as_ref(),
            );
            for w in &loaded.warnings {
                tracing::warn!("{w}");
            }
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let code = runtime.block_on(tka::server::run::serve(cfg));
            // Last step of shutdown: flush spans, outside async code.
            drop(runtime);
            if let Some(o) = otel {
                o.shutdown();
            }
            code
        }
    }
}
