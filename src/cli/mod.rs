//! The `tka` command line: command definitions, dispatch and [`main`].
//!
//! - `settings.rs`: configuration + global flags → effective settings;
//! - `server_url.rs`: the server address, `magicdns.rs`: its tailnet suffix from tailscaled;
//! - `client.rs`: HTTP, retries, `Retry-After`, deadline;
//! - `error.rs`: [`CliError`](error::CliError) and the exit codes;
//! - `kubeconfig_files.rs`: managed files, atomic writes, the `KUBECONFIG` export line;
//! - `output.rs`: text, JSON and YAML rendering;
//! - `login.rs`, `logout.rs`, `inspect.rs`, `config_command.rs`, `doctor.rs`: the commands.
//!
//! Output discipline: stdout carries only the command's result (the export line, `--stdout` kubeconfig, `-o`
//! objects, `get` tables); summaries, progress and errors go to stderr, so `eval "$(tka login -q)"` works.

mod client;
mod clusters;
mod config_command;
mod credential;
mod credential_cache;
mod doctor;
mod error;
mod generate;
mod inspect;
mod integration;
mod kubeconfig_check;
mod kubeconfig_files;
mod login;
mod logout;
mod magicdns;
mod merge;
mod output;
mod plain_http;
mod progress;
mod server_url;
mod settings;
#[cfg(unix)]
mod shell;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{OutputFormat, Theme};
use crate::model::duration::GoDuration;
use clap::{Args, CommandFactory, Parser, Subcommand};

use error::CliError;
use settings::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "tka",
    version,
    about = "Tailscale Kubernetes Auth: short-lived Kubernetes credentials from your tailnet identity",
    after_help = "Exit codes: 0 ok, 1 other error, 2 usage or configuration error, 3 not authorized, \
                  4 not signed in, 5 server unreachable or timeout, 6 partial success, 130 interrupted; \
                  `tka shell` exits with its shell's code."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Flags accepted by every command.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// Configuration file (default: $XDG_CONFIG_HOME/tka/config.yaml, then /etc/tka/config.yaml).
    #[arg(
        short = 'c',
        long,
        global = true,
        env = "TKA_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,
    /// tka server: host name (tailscale.hostname, default `tka`) or full URL (https://tka.example.ts.net).
    #[arg(short = 's', long, global = true, value_name = "HOST|URL")]
    server: Option<String>,
    /// Server port (tailscale.port): 443 means HTTPS, anything else plain HTTP over the tailnet.
    #[arg(short = 'p', long, global = true)]
    port: Option<u16>,
    /// MagicDNS suffix (tailscale.tailnet), e.g. your-tailnet.ts.net.
    #[arg(long, global = true, value_name = "SUFFIX")]
    tailnet: Option<String>,
    /// tailscaled's LocalAPI socket, asked for the MagicDNS suffix when no tailnet is set (tailscale.socket;
    /// default: the platform's, as for `tailscale --socket`).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Output format (output.format).
    #[arg(short = 'o', long, global = true, value_enum, value_name = "FORMAT")]
    output: Option<OutputFormat>,
    /// Print only the export line, or nothing (output.quiet).
    #[arg(short = 'q', long, global = true)]
    quiet: bool,
    /// Disable colours (output.noColor).
    #[arg(long, global = true)]
    no_color: bool,
    /// Theme of the text output (output.theme). Accepted for upstream compatibility; tka's text output has no
    /// colours, so every theme looks the same.
    #[arg(short = 't', long, global = true, value_enum, value_name = "THEME")]
    theme: Option<Theme>,
    /// Overall timeout of the command, Go syntax (client.timeout, default 30s).
    #[arg(long, global = true, value_parser = parse_duration, value_name = "DURATION")]
    timeout: Option<GoDuration>,
    /// Extra CA bundle (PEM) for the server's certificate (client.caFile).
    #[arg(long, global = true, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Accept kubeconfigs whose clusters set insecure-skip-tls-verify (kubeconfig.allowInsecureSkipTLSVerify);
    /// refused by default, and announced on stderr when accepted.
    #[arg(long, global = true)]
    allow_insecure_skip_tls_verify: bool,
    /// Print HTTP exchanges on stderr (never tokens).
    #[arg(long, global = true)]
    debug: bool,
    /// Marker for the shell wrappers (long output); no effect here.
    #[arg(short = 'l', long, global = true, hide = true)]
    long: bool,
    /// Marker for the shell wrappers (do not eval the output); no effect here.
    #[arg(short = 'e', long, global = true, hide = true)]
    no_eval: bool,
}

fn parse_duration(s: &str) -> Result<GoDuration, String> {
    GoDuration::parse(s).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sign in: create or extend your session, write the kubeconfig and print the KUBECONFIG export line.
    #[command(visible_aliases = ["signin", "auth"])]
    Login(LoginArgs),
    /// Sign out: end the session, delete the kubeconfig files and print the line removing them from KUBECONFIG.
    #[command(visible_alias = "signout")]
    Logout(LogoutArgs),
    /// Sign in again to extend the session (same as login).
    #[command(visible_aliases = ["refresh", "reauthenticate"])]
    Reauth(LoginArgs),
    /// Fetch a fresh kubeconfig for the current session.
    Kubeconfig(KubeconfigArgs),
    /// Show things: login, kubeconfig, cluster-info, clusters, config.
    Get {
        #[command(subcommand)]
        what: GetCommand,
    },
    /// Change things: config.
    Set {
        #[command(subcommand)]
        what: SetCommand,
    },
    /// Show or change the configuration, git-config style: no arguments lists the effective CLI settings, KEY
    /// shows one, KEY VALUE sets it in the configuration file (as `tka set config`).
    Config(ConfigArgs),
    /// Show the cluster's API server URL, TLS settings, CA fingerprint and labels.
    ClusterInfo,
    /// Sign in and open a subshell with KUBECONFIG set (exec-mode: tokens refresh); sign out when it exits.
    #[cfg(unix)]
    Shell(ShellArgs),
    /// kubectl exec credential plugin: print an ExecCredential for the cluster (used by exec-mode kubeconfigs).
    Credential(credential::CredentialArgs),
    /// Check this machine end to end (Tailscale, MagicDNS, the server, your grant and session, KUBECONFIG,
    /// kubectl and kuberc, token file permissions, the clock) and say what to fix. Exits with the code of the
    /// first problem.
    Doctor,
    /// Print version, commit, build date and target.
    Version,
    /// Print shell completions: `source <(tka completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Generate the shell integration (and, hidden, man pages and the Markdown reference).
    Generate {
        #[command(subcommand)]
        what: GenerateCommand,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Powershell,
    Elvish,
}

impl From<CompletionShell> for clap_complete::Shell {
    fn from(s: CompletionShell) -> Self {
        match s {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
            CompletionShell::Powershell => clap_complete::Shell::PowerShell,
            CompletionShell::Elvish => clap_complete::Shell::Elvish,
        }
    }
}

#[derive(Debug, Subcommand)]
enum GenerateCommand {
    /// Print the `tka` shell function that evaluates the KUBECONFIG line: `eval "$(tka generate integration bash)"`.
    Integration {
        #[arg(value_enum)]
        shell: integration::IntegrationShell,
    },
    /// Write man pages (tka.1, tka-login.1, …) into DIR.
    #[command(hide = true)]
    Man { dir: PathBuf },
    /// Write the Markdown command reference into DIR.
    #[command(hide = true)]
    Documentation { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
enum GetCommand {
    /// Show your session: user, role, until, provisioned, node.
    #[command(visible_alias = "signin")]
    Login(GetLoginArgs),
    /// Fetch a fresh kubeconfig for the current session (same as `tka kubeconfig`).
    Kubeconfig(KubeconfigArgs),
    /// Same as `tka cluster-info`.
    ClusterInfo,
    /// The clusters you can use (federation: the primary's and its members').
    Clusters,
    /// The effective configuration, or one key's value; --filename: the configuration file in use.
    Config(GetConfigArgs),
}

#[derive(Debug, Subcommand)]
enum SetCommand {
    /// Set KEY to VALUE in the configuration file in use, changing nothing else in it.
    Config(SetConfigArgs),
}

#[derive(Debug, Clone, Args)]
struct ConfigArgs {
    /// A key such as client.timeout (any case).
    key: Option<String>,
    /// The new value (lists comma-separated, maps k=v,k=v).
    value: Option<String>,
    /// Create $XDG_CONFIG_HOME/tka/config.yaml (or the --config file) if there is no file yet.
    #[arg(long, requires = "value")]
    force: bool,
}

#[derive(Debug, Clone, Args)]
struct GetConfigArgs {
    /// A key such as client.timeout (any case); all CLI keys if omitted.
    key: Option<String>,
    /// Print the path of the configuration file in use instead.
    #[arg(long, conflicts_with = "key")]
    filename: bool,
}

#[derive(Debug, Clone, Args)]
struct SetConfigArgs {
    /// A key such as client.timeout (any case).
    key: String,
    /// The new value, checked against the key's type (lists comma-separated, maps k=v,k=v).
    value: String,
    /// Create $XDG_CONFIG_HOME/tka/config.yaml (or the --config file) if there is no file yet.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Clone, Args)]
struct LoginArgs {
    /// Choose among your granted roles.
    #[arg(long, value_name = "ROLE")]
    role: Option<String>,
    /// End your sessions on other devices that have a different role or namespaces.
    #[arg(long)]
    replace: bool,
    /// Do not ask the server to wait for provisioning; poll instead.
    #[arg(long)]
    no_wait: bool,
    /// Print the kubeconfig instead of writing it.
    #[arg(long)]
    stdout: bool,
    #[command(flatten)]
    auth: AuthArgs,
    /// Write tka's entries into your kubeconfig (first KUBECONFIG file or ~/.kube/config; kubeconfig.merge).
    #[arg(long, conflicts_with = "stdout")]
    merge: bool,
    /// Then open `tka shell` (Unix): a subshell with KUBECONFIG set, signed out when it exits.
    #[cfg(unix)]
    #[arg(long, conflicts_with = "stdout")]
    shell: bool,
}

/// How the written kubeconfig authenticates (default: kubeconfig.exec).
#[derive(Debug, Clone, Default, Args)]
struct AuthArgs {
    /// Write an exec-plugin kubeconfig: kubectl runs `tka credential`, which refreshes short-lived tokens.
    #[arg(long, conflicts_with = "token")]
    exec: bool,
    /// Write a kubeconfig with a token valid for the rest of the session (overrides kubeconfig.exec).
    #[arg(long)]
    token: bool,
}

impl AuthArgs {
    fn exec(&self, default: bool) -> bool {
        self.exec || (default && !self.token)
    }
}

impl LoginArgs {
    fn options(self, s: &Settings) -> login::LoginOptions {
        login::LoginOptions {
            role: self.role,
            replace: self.replace,
            no_wait: self.no_wait,
            stdout: self.stdout,
            exec: self.auth.exec(s.exec),
            merge: self.merge || s.merge,
        }
    }
}

#[cfg(unix)]
#[derive(Debug, Clone, Args)]
struct ShellArgs {
    /// Choose among your granted roles.
    #[arg(long, value_name = "ROLE")]
    role: Option<String>,
    /// End your sessions on other devices that have a different role or namespaces.
    #[arg(long)]
    replace: bool,
    /// Run CMD with `$SHELL -c` instead of an interactive shell (`-c` is the global --config).
    #[arg(long, value_name = "CMD", conflicts_with = "args")]
    command: Option<String>,
    /// Command line to run instead of an interactive shell (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

#[derive(Debug, Clone, Args)]
struct LogoutArgs {
    /// End your sessions on all devices.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Clone, Args)]
struct KubeconfigArgs {
    /// Print the kubeconfig instead of writing it.
    #[arg(long)]
    stdout: bool,
    #[command(flatten)]
    auth: AuthArgs,
    /// Write tka's entries into your kubeconfig (first KUBECONFIG file or ~/.kube/config; kubeconfig.merge).
    #[arg(long, conflicts_with = "stdout")]
    merge: bool,
}

#[derive(Debug, Clone, Args)]
struct GetLoginArgs {
    /// Explain the grant evaluation: your rules, the selected rule and why a login would be rejected.
    #[arg(long)]
    explain: bool,
}

/// Entry point of the `tka` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    // The exec plugin's cached path: no runtime, no configuration file, no network (p99 ≤ 5 ms).
    if let Command::Credential(a) = &cli.command
        && credential::answer_from_cache(&cli.global, a)
    {
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tka: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("{e}");
            }
            ExitCode::from(e.exit.code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    // Offline commands: work without (or with a broken) configuration file.
    match &cli.command {
        Command::Completion { shell } => {
            generate::completion(Cli::command(), (*shell).into());
            return Ok(());
        }
        Command::Generate { what } => return generate(what),
        _ => {}
    }
    if let Some(result) = config_command(&cli) {
        return result;
    }
    if let Command::Doctor = cli.command {
        // Reports a broken configuration as a check instead of failing before it.
        return tokio::select! {
            r = doctor::doctor(&cli.global) => r,
            _ = tokio::signal::ctrl_c() => Err(CliError::interrupted()),
        };
    }
    if let Command::Version = cli.command {
        // Works even with a broken configuration file.
        let format = cli.global.output.unwrap_or_else(|| {
            settings::load_config(&cli.global)
                .map(|(c, _)| c.output.format)
                .unwrap_or_default()
        });
        return inspect::version(format);
    }
    let settings = Settings::resolve(&cli.global).await?;
    if !settings.quiet {
        for w in &settings.warnings {
            eprintln!("tka: warning: {w}");
        }
    }
    #[cfg(unix)]
    if matches!(&cli.command, Command::Shell(_))
        || matches!(&cli.command, Command::Login(a) | Command::Reauth(a) if a.shell)
    {
        // The subshell owns Ctrl-C; `tka shell` cancels only its own login phase.
        return dispatch(&settings, cli.command).await;
    }
    tokio::select! {
        r = dispatch(&settings, cli.command) => r,
        _ = tokio::signal::ctrl_c() => Err(CliError::interrupted()),
    }
}

/// The configuration commands: offline, before the server address is resolved.
fn config_command(cli: &Cli) -> Option<Result<(), CliError>> {
    let g = &cli.global;
    Some(match &cli.command {
        Command::Config(a) => match (&a.key, &a.value) {
            (Some(k), Some(v)) => config_command::set(g, k, v, a.force),
            (k, _) => config_command::show(g, k.as_deref()),
        },
        Command::Get {
            what: GetCommand::Config(a),
        } if a.filename => config_command::filename(g),
        Command::Get {
            what: GetCommand::Config(a),
        } => config_command::show(g, a.key.as_deref()),
        Command::Set {
            what: SetCommand::Config(a),
        } => config_command::set(g, &a.key, &a.value, a.force),
        _ => return None,
    })
}

fn generate(what: &GenerateCommand) -> Result<(), CliError> {
    let written = match what {
        GenerateCommand::Integration { shell } => {
            output::out(integration::script(*shell));
            return Ok(());
        }
        GenerateCommand::Man { dir } => (generate::man(Cli::command(), dir)?, dir),
        GenerateCommand::Documentation { dir } => {
            (generate::documentation(Cli::command(), dir)?, dir)
        }
    };
    for f in written.0 {
        eprintln!("Wrote {}", written.1.join(f).display());
    }
    Ok(())
}

async fn dispatch(s: &Settings, command: Command) -> Result<(), CliError> {
    match command {
        #[cfg(unix)]
        Command::Login(a) | Command::Reauth(a) if a.shell => {
            shell::shell(s, &a.options(s), shell::Run::Shell).await
        }
        Command::Login(a) | Command::Reauth(a) => login::login(s, &a.options(s)).await,
        Command::Logout(a) => logout::logout(s, a.all, true).await,
        #[cfg(unix)]
        Command::Shell(a) => {
            let o = login::LoginOptions {
                role: a.role,
                replace: a.replace,
                exec: true,
                ..Default::default()
            };
            let run = match (a.command, a.args.is_empty()) {
                (Some(c), _) => shell::Run::Script(c),
                (None, false) => shell::Run::Argv(a.args),
                (None, true) => shell::Run::Shell,
            };
            shell::shell(s, &o, run).await
        }
        Command::Kubeconfig(a)
        | Command::Get {
            what: GetCommand::Kubeconfig(a),
        } => login::kubeconfig(s, a.stdout, a.auth.exec(s.exec), a.merge || s.merge).await,
        Command::Get {
            what: GetCommand::Login(a),
        } => {
            if a.explain {
                inspect::explain(s).await
            } else {
                inspect::get_login(s).await
            }
        }
        Command::ClusterInfo
        | Command::Get {
            what: GetCommand::ClusterInfo,
        } => inspect::cluster_info(s).await,
        Command::Get {
            what: GetCommand::Clusters,
        } => clusters::get_clusters(s).await,
        Command::Credential(a) => credential::credential(s, &a).await,
        Command::Version => inspect::version(s.format),
        // Handled in `run`.
        Command::Completion { .. }
        | Command::Doctor
        | Command::Generate { .. }
        | Command::Config(_)
        | Command::Set { .. }
        | Command::Get {
            what: GetCommand::Config(_),
        } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn aliases_and_global_flags_parse() {
        let cli = Cli::try_parse_from([
            "tka",
            "signin",
            "--role",
            "view",
            "-q",
            "-s",
            "http://127.0.0.1:8080",
            "--timeout",
            "5s",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Login(ref a) if a.role.as_deref() == Some("view")));
        assert!(cli.global.quiet);
        assert_eq!(cli.global.timeout, Some(GoDuration::from_secs(5)));
        for args in [
            &["tka", "auth"][..],
            &["tka", "refresh"],
            &["tka", "signout", "--all"],
            &["tka", "get", "signin", "--explain"],
            &["tka", "get", "kubeconfig", "--stdout"],
            &["tka", "get", "cluster-info"],
            &["tka", "get", "clusters"],
            &["tka", "version", "-o", "json"],
            &["tka", "doctor", "-o", "json"],
            &["tka", "login", "-l", "-e", "--no-wait"],
            &["tka", "config"],
            &["tka", "config", "client.timeout", "1m", "--force"],
            &["tka", "get", "config", "--filename"],
            &["tka", "set", "config", "output.format", "json", "--force"],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        let e = Cli::try_parse_from(["tka", "login", "--timeout", "30"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
