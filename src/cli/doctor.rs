//! `tka doctor`: checks this machine end to end (tailscaled, MagicDNS, the server, the grant, the session,
//! `KUBECONFIG`, kubectl and its kuberc policy, token file permissions, the clock) and says what to do about
//! each problem. The facts are gathered here; `crate::doctor::client` judges them.
//!
//! Exit code: 0 when nothing failed (warnings allowed), else the code of the first failed check in the CLI's
//! table: configuration 2, no grant 3, tailscaled/MagicDNS/server 5, anything else 1.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use crate::config::{Host, OutputFormat};
use crate::doctor::client::{self as checks, Daemon, KubeconfigFacts, KubectlFacts, Private};
use crate::doctor::{Check, Report, kuberc};
use crate::identity::tailscaled::localapi::LocalApi;

use super::GlobalArgs;
use super::client::{Method, Reply};
use super::error::{CliError, Exit};
use super::kubeconfig_files::{self as files, Shell};
use super::login::home;
use super::settings::{Settings, env_var, load_config};
use super::{magicdns, merge, output};

/// A doctor must answer quickly even when the server does not: at most this per request (with retries).
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);
const LOCAL_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn doctor(g: &GlobalArgs) -> Result<(), CliError> {
    let (report, format, quiet) = run(g).await;
    match format {
        OutputFormat::Text if quiet => {}
        OutputFormat::Text => output::out(report.text()),
        f => output::out(output::structured(f, &report.json())?),
    }
    match report.first_failure() {
        None => Ok(()),
        Some(c) => Err(CliError::new(exit_for(c), String::new())),
    }
}

/// The exit code a failed check stands for.
fn exit_for(c: &Check) -> Exit {
    match c.name.as_str() {
        "config" => Exit::Usage,
        "tailscaled" | "magicdns" | "server" => Exit::Unavailable,
        "grant" => Exit::NotAuthorized,
        _ => Exit::Other,
    }
}

async fn run(g: &GlobalArgs) -> (Report, OutputFormat, bool) {
    let mut report = Report::default();
    let env = |k: &str| std::env::var(k).ok();
    let (config, warnings) = match load_config(g) {
        Ok(c) => c,
        Err(e) => {
            report.push(
                Check::fail("config", e.message)
                    .advice("fix the file, or check it with `tka config`"),
            );
            return (report, g.output.unwrap_or_default(), g.quiet);
        }
    };
    let file =
        crate::config::find_file(g.config.as_deref(), &Host::process(&env)).filter(|f| f.exists());
    let source = file.map_or("no configuration file: defaults".into(), |f| {
        format!("{} is valid", f.display())
    });
    report.push(match warnings.as_slice() {
        [] => Check::ok("config", source),
        w => Check::warn("config", format!("{source}: {}", w.join("; "))),
    });
    let (format, quiet) = (config.output.format, config.output.quiet);
    let socket = Some(config.tailscale.socket.clone())
        .filter(|p| !p.as_os_str().is_empty())
        .or_else(magicdns::default_socket);
    let daemon = daemon(socket.as_deref()).await;
    report.push(checks::tailscaled(&daemon));
    let settings = match Settings::resolve(g).await {
        Ok(mut s) => {
            s.timeout = s.timeout.min(SERVER_TIMEOUT);
            s
        }
        Err(e) => {
            report.push(Check::fail("config", e.message));
            return (report, format, quiet);
        }
    };
    let host = host_of(&settings.server.base);
    if let Ok(d) = &daemon {
        report.push(checks::magicdns(d, host.parse::<IpAddr>().is_err()));
    }
    let signed_in = server(&settings, &host, &mut report).await;
    local(&settings, signed_in, &mut report).await;
    (report, format, quiet)
}

/// The local tailscaled's status.
async fn daemon(socket: Option<&Path>) -> Result<Daemon, String> {
    let socket = socket.ok_or("no tailscaled socket on this platform; set --socket")?;
    let s = tokio::time::timeout(LOCAL_TIMEOUT, LocalApi::new(socket).status())
        .await
        .map_err(|_| format!("{} did not answer", socket.display()))?
        .map_err(|e| e.to_string())?;
    let node = s.self_node.clone().unwrap_or_default();
    Ok(Daemon {
        backend_state: s.backend_state.clone(),
        login: s.login_of_self().unwrap_or_default().to_string(),
        fqdn: node.dns_name.trim_end_matches('.').to_string(),
        magic_dns_suffix: s.magic_dns_suffix().to_string(),
        magic_dns_enabled: s.current_tailnet.as_ref().and_then(|t| t.magic_dns_enabled),
    })
}

fn host_of(base: &str) -> String {
    reqwest::Url::parse(base)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
        .unwrap_or_default()
}

/// Resolution, reachability, clock, grant and session; returns whether the user is signed in.
async fn server(s: &Settings, host: &str, report: &mut Report) -> Option<bool> {
    let port = reqwest::Url::parse(&s.server.base)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .unwrap_or(443);
    let ips = tokio::time::timeout(LOCAL_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| "the resolver did not answer".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map(|addrs| {
            let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            ips.dedup();
            ips
        });
    if let Some(c) = checks::resolve(host, &ips) {
        report.push(c);
        return None;
    }
    let api = s.api().ok()?;
    let sent = Timestamp::now();
    let whoami = api.call(Method::Get, "/whoami", &[], false).await;
    let received = Timestamp::now();
    let reply = match whoami {
        Ok(r) => r,
        Err(e) => {
            report.push(from_error("server", &e));
            return None;
        }
    };
    let millis = (received.as_millisecond() - sent.as_millisecond()).max(0) as u128;
    report.push(checks::reached(
        &s.server.base,
        ips.as_deref().unwrap_or_default(),
        reply.status,
        millis,
    ));
    report.push(checks::clock(date(&reply), sent, received));
    report.push(match json(&reply) {
        Some(v) if reply.status == 200 => checks::grant(&v),
        _ => from_error("grant", &reply.error()),
    });
    let login = api.call(Method::Get, "/login", &[], false).await;
    match login {
        Ok(r) => {
            report.push(checks::session(
                r.status,
                &json(&r).unwrap_or(Value::Null),
                &output::local_time,
            ));
            Some(r.status == 200 || r.status == 202).filter(|_| matches!(r.status, 200 | 202 | 401))
        }
        Err(e) => {
            report.push(from_error("session", &e));
            None
        }
    }
}

fn from_error(name: &str, e: &CliError) -> Check {
    e.advice
        .iter()
        .fold(Check::fail(name, e.message.clone()), |c, a| {
            c.advice(a.clone())
        })
}

fn json(r: &Reply) -> Option<Value> {
    serde_json::from_slice(&r.body).ok()
}

fn date(r: &Reply) -> Option<Timestamp> {
    let d = r.date.as_deref()?;
    jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(d)
        .ok()
}

/// KUBECONFIG, kubectl, kuberc and file permissions: nothing here needs the network.
async fn local(s: &Settings, signed_in: Option<bool>, report: &mut Report) {
    let home = home();
    let kubeconfig_env = std::env::var_os("KUBECONFIG");
    let server_dir = files::server_dir(&s.kubeconfig_dir, &s.server.host_dir());
    // A managed file first in KUBECONFIG is not a `--merge` target: its contexts are tka's own file's.
    let merge_target = merge::target(kubeconfig_env.as_deref(), home.as_deref())
        .filter(|t| !t.starts_with(&s.kubeconfig_dir));
    let merged = merge_target
        .as_ref()
        .and_then(|t| std::fs::read(t).ok())
        .and_then(|b| serde_yaml::from_slice::<Value>(&b).ok())
        .map(|doc| merge::managed_contexts(&doc, &s.server.base))
        .unwrap_or_default();
    let entries = kubeconfig_env
        .as_deref()
        .map(|v| {
            std::env::split_paths(v)
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| {
                    let exists = p.exists();
                    (p, exists)
                })
                .collect()
        })
        .unwrap_or_default();
    let facts = KubeconfigFacts {
        entries,
        root: s.kubeconfig_dir.clone(),
        managed: yaml_files(&server_dir),
        merge_target,
        merged,
        signed_in,
    };
    let shell = Shell::detect(&env_var);
    report.push(checks::kubeconfig(&facts, &|paths| {
        files::export_line(shell, paths)
    }));
    let version = kubectl_version().await;
    let minor = version.as_ref().ok().map(|(m, _)| *m);
    report.push(checks::kubectl(&KubectlFacts {
        version,
        tka: look_path(kuberc::PLUGIN),
        exec_in_use: !files::exec_targets_in(&server_dir).is_empty(),
    }));
    let kuberc_path = kuberc::path(env_var("KUBERC").as_deref(), home.as_deref());
    let text = match &kuberc_path {
        None => Ok(None),
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        },
    };
    report.push(checks::kuberc(
        kuberc_path.as_deref(),
        &text,
        &look_path,
        minor,
    ));
    report.push(permissions(&s.kubeconfig_dir));
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && p.is_file())
        .collect();
    out.sort();
    out
}

/// `(minor, gitVersion)` of `kubectl version --client -o json`.
async fn kubectl_version() -> Result<(u32, String), String> {
    let run = tokio::process::Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(LOCAL_TIMEOUT, run)
        .await
        .map_err(|_| "`kubectl version` did not finish".to_string())?
        .map_err(|e| format!("cannot run kubectl: {e}"))?;
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|_| {
        format!(
            "`kubectl version --client -o json` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    let cv = &v["clientVersion"];
    let minor = cv["minor"]
        .as_str()
        .unwrap_or_default()
        .trim_end_matches('+')
        .parse()
        .unwrap_or(0);
    Ok((
        minor,
        cv["gitVersion"].as_str().unwrap_or_default().to_string(),
    ))
}

/// Go's `exec.LookPath`: a name with a slash as is, else the first executable file of that name on `PATH`.
fn look_path(name: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        }
        #[cfg(not(unix))]
        {
            p.is_file()
        }
    };
    if name.contains(std::path::MAIN_SEPARATOR) {
        return Some(PathBuf::from(name)).filter(|p| executable(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| executable(p))
}

/// The token cache, the exec plugin's lock directory and the managed kubeconfigs.
fn permissions(kubeconfig_dir: &Path) -> Check {
    let mut roots = vec![kubeconfig_dir.to_path_buf()];
    roots.extend(dirs::cache_dir().map(|d| d.join("tka")));
    roots.extend(dirs::runtime_dir().map(|d| d.join("tka")));
    let mut items = Vec::new();
    for root in roots {
        collect(&root, 2, &mut items);
    }
    #[cfg(unix)]
    let uid = unsafe { libc::geteuid() };
    #[cfg(not(unix))]
    let uid = 0;
    checks::permissions(&items, uid)
}

/// `path` and what is below it, `depth` levels deep (symlinks are not followed).
fn collect(path: &Path, depth: u32, out: &mut Vec<Private>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        out.push(Private {
            path: path.to_path_buf(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            dir: meta.is_dir(),
        });
    }
    if meta.is_dir() && depth > 0 {
        let mut children: Vec<PathBuf> = std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        children.sort();
        for c in children {
            collect(&c, depth - 1, out);
        }
    }
}
