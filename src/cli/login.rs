//! `tka login` / `reauth` and `tka kubeconfig`.
//!
//! Normally one round trip: `POST /login?wait=…&include=kubeconfig&format=v1`. A 202 (still pending, or
//! `--no-wait`) is followed by polling `GET /kubeconfig?format=v1`. An upstream Go server (its answer has no
//! `provisioned` field) ignores `include`, so its legacy JSON kubeconfig is fetched and converted locally.

use std::path::PathBuf;

use crate::config::OutputFormat;
use crate::model::kubeconfig::legacy_to_v1;
use crate::model::wire::{ExecCredential, UserLoginResponse};
use serde_json::{Value, json};

use super::client::{Api, Method, Reply, human, retry_delay};
use super::credential_cache::{CachedToken, Slot};
use super::error::{CliError, Exit};
use super::kubeconfig_check;
use super::kubeconfig_files::{self as files, Shell};
use super::merge;
use super::output;
use super::progress::Progress;
use super::settings::{Settings, env_var};

/// Flags of `login` and `reauth`.
#[derive(Debug, Clone, Default)]
pub struct LoginOptions {
    pub role: Option<String>,
    pub replace: bool,
    pub no_wait: bool,
    pub stdout: bool,
    /// Exec-plugin kubeconfig; the response's credential seeds the plugin's cache.
    pub exec: bool,
    /// Write into the user's kubeconfig instead of a managed file.
    pub merge: bool,
}

/// `tka login` (also `reauth`: a login extends the session, no logout first).
pub async fn login(s: &Settings, o: &LoginOptions) -> Result<(), CliError> {
    let api = s.api()?;
    let progress = Progress::new(s);
    progress.step(&format!("Signing in to {}…", api.server.base));
    let (resp, doc, credential) = obtain(&api, o, &progress).await?;
    progress.done();
    let doc = accepted(s, &api, doc)?;
    if !o.stdout {
        seed_cache(&api, &resp, &doc, credential);
    }
    let to = if o.stdout {
        To::Stdout
    } else if o.merge {
        To::Merge
    } else {
        To::Managed
    };
    deliver(s, &api, Some(&resp), doc, to)?;
    // Federation: name the clusters that failed; exit 6 when some did.
    super::clusters::partial(&resp)
}

/// `tka kubeconfig`: a fresh kubeconfig for the existing session.
pub async fn kubeconfig(
    s: &Settings,
    stdout: bool,
    exec: bool,
    merge: bool,
) -> Result<(), CliError> {
    let api = s.api()?;
    let progress = Progress::new(s);
    progress.step(&format!(
        "Fetching the kubeconfig from {}…",
        api.server.base
    ));
    let doc = poll_kubeconfig(&api, true, true, exec, &progress).await?;
    progress.done();
    let doc = accepted(s, &api, doc)?;
    let to = match (stdout, merge) {
        (true, _) => To::Stdout,
        (false, true) => To::Merge,
        (false, false) => To::Managed,
    };
    deliver(s, &api, None, doc, to)
}

/// Where the kubeconfig goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// `--stdout`: printed, nothing written.
    Stdout,
    /// The managed file, plus the export line.
    Managed,
    /// `--merge`: into the user's kubeconfig.
    Merge,
}

/// After a login the plugin's cache must not serve a token of the previous session (another role, perhaps),
/// nor replay a remembered "not signed in": clear it, then store the login's own credential if it sent one.
fn seed_cache(
    api: &Api,
    resp: &UserLoginResponse,
    doc: &Value,
    credential: Option<ExecCredential>,
) {
    if let Err(e) = super::credential_cache::clear_server(&api.server.base) {
        eprintln!("tka: warning: {e}");
    }
    let mut targets = files::exec_targets(doc);
    targets.push((api.server.base.clone(), cluster_name(Some(resp), doc)));
    targets.push((api.server.base.clone(), String::new()));
    for (server, cluster) in &targets {
        if let Ok(slot) = Slot::new(server, cluster) {
            let _ = slot.clear();
        }
    }
    let Some(status) = credential.and_then(|c| c.status) else {
        return;
    };
    let Ok(expires_at) = status.expiration_timestamp.parse::<jiff::Timestamp>() else {
        return;
    };
    let token = CachedToken::new(status.token, expires_at, jiff::Timestamp::now());
    for (server, cluster) in files::exec_targets(doc).into_iter().take(1) {
        if let Err(e) = Slot::new(&server, &cluster).and_then(|slot| {
            slot.write_token(&token)
                .map_err(|e| CliError::other(format!("{}: {e}", slot.token_file.display())))
        }) {
            eprintln!("tka: warning: cannot cache the credential: {e}");
        }
    }
}

async fn obtain(
    api: &Api,
    o: &LoginOptions,
    progress: &Progress,
) -> Result<(UserLoginResponse, Value, Option<ExecCredential>), CliError> {
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(role) = o.role.as_deref().filter(|r| !r.is_empty()) {
        query.push(("role", role));
    }
    if o.replace {
        query.push(("replace", "true"));
    }
    if !o.no_wait {
        let include = if o.exec {
            "kubeconfig,credential"
        } else {
            "kubeconfig"
        };
        query.push(("include", include));
        query.push(("format", "v1"));
    }
    if o.exec {
        query.push(("auth", "exec"));
    }
    let reply = api.call(Method::Post, "/login", &query, !o.no_wait).await?;
    if !matches!(reply.status, 200 | 202) {
        return Err(reply.error());
    }
    let raw: Value = serde_json::from_slice(&reply.body).map_err(|e| unexpected(&reply, e))?;
    let upstream = raw.get("provisioned").is_none();
    let mut resp: UserLoginResponse =
        serde_json::from_value(raw).map_err(|e| unexpected(&reply, e))?;
    let included = resp.kubeconfig.take();
    let credential = resp.credential.take();
    if let (200, false, Some(doc)) = (reply.status, upstream, included) {
        return Ok((resp, normalize(doc, &api.server.base), credential));
    }
    // Pending, --no-wait, or an upstream server: fetch the kubeconfig separately.
    let doc = poll_kubeconfig(api, !o.no_wait && !upstream, !upstream, o.exec, progress).await?;
    Ok((resp, doc, None))
}

/// Polls `GET /kubeconfig` until it answers 200, honouring `Retry-After` on 202, until the deadline.
/// `long_poll` adds `wait`, `v1` asks for `format=v1` (both omitted for upstream servers), `exec` for an
/// exec-plugin kubeconfig (`auth=exec`).
async fn poll_kubeconfig(
    api: &Api,
    long_poll: bool,
    v1: bool,
    exec: bool,
    progress: &Progress,
) -> Result<Value, CliError> {
    let mut query: Vec<(&str, &str)> = Vec::new();
    if v1 {
        query.push(("format", "v1"));
    }
    if exec {
        query.push(("auth", "exec"));
    }
    let query = &query[..];
    let mut attempt: u32 = 0;
    let mut announced = false;
    loop {
        let reply = api
            .call(Method::Get, "/kubeconfig", query, long_poll)
            .await?;
        match reply.status {
            200 => {
                let doc = parse_document(&reply)?;
                return Ok(normalize(doc, &api.server.base));
            }
            202 => {
                if !announced {
                    progress.step("Waiting for provisioning…");
                    announced = true;
                }
                let delay = retry_delay(reply.retry_after, attempt, rand::random());
                api.pause(delay, || {
                    CliError::new(
                        Exit::Unavailable,
                        format!(
                            "timed out after {} waiting for the session to be provisioned",
                            human(api.timeout())
                        ),
                    )
                    .advice("run `tka get login` to see the session state, or raise --timeout")
                })
                .await?;
                attempt = attempt.saturating_add(1);
            }
            _ => return Err(reply.error()),
        }
    }
}

/// A 2xx answer whose body is not what the API promises.
pub fn unexpected(reply: &Reply, e: impl std::fmt::Display) -> CliError {
    let mut err = CliError::other(format!(
        "unexpected answer from the tka server (HTTP {}): {e}",
        reply.status
    ));
    err.request_id = reply.request_id.clone();
    err
}

/// The kubeconfig body: JSON, or YAML when the server chose that.
fn parse_document(reply: &Reply) -> Result<Value, CliError> {
    if reply.content_type.contains("yaml") {
        serde_yaml::from_slice(&reply.body).map_err(|e| unexpected(reply, e))
    } else {
        serde_json::from_slice(&reply.body).map_err(|e| unexpected(reply, e))
    }
}

/// A v1 document as is; the legacy map shape (upstream server) converted to v1. Exec users are pinned to the
/// server URL this CLI reached ([`files::pin_exec_server`]).
pub fn normalize(doc: Value, tka_server: &str) -> Value {
    let mut doc =
        if doc["clusters"].is_object() || doc["users"].is_object() || doc["contexts"].is_object() {
            legacy_to_v1(&doc, tka_server)
        } else {
            doc
        };
    files::pin_exec_server(&mut doc, tka_server);
    doc
}

/// The server's kubeconfig if the CLI may write it ([`kubeconfig_check`]); its warnings go to stderr even with
/// `--quiet`, since they concern the safety of the connection to the cluster. Refused: exit 1, nothing written.
fn accepted(s: &Settings, api: &Api, doc: Value) -> Result<Value, CliError> {
    match kubeconfig_check::accept(&doc, &api.server.base, s.allow_insecure_clusters) {
        Ok(a) => {
            for w in &a.warnings {
                eprintln!("tka: warning: {w}");
            }
            Ok(a.doc)
        }
        Err(problems) => {
            let mut e = CliError::other(format!(
                "refusing the kubeconfig sent by {}: it is not one tka writes; nothing was written",
                api.server.base
            ))
            .advice(
                "a kubeconfig from the tka server may only use tokens or the `tka credential` plugin; check that \
                 --server names your tka server, and tell its administrator",
            );
            e.causes = problems;
            Err(e)
        }
    }
}

/// The cluster the file is named after: the response's `cluster`, else the current context's cluster, else the
/// first cluster, else `default`.
pub fn cluster_name(resp: Option<&UserLoginResponse>, doc: &Value) -> String {
    if let Some(c) = resp.map(|r| r.cluster.as_str()).filter(|c| !c.is_empty()) {
        return c.to_string();
    }
    let current = doc["current-context"].as_str().unwrap_or_default();
    let contexts = doc["contexts"].as_array().cloned().unwrap_or_default();
    contexts
        .iter()
        .find(|c| c["name"].as_str() == Some(current))
        .and_then(|c| c["context"]["cluster"].as_str())
        .or_else(|| doc["clusters"][0]["name"].as_str())
        .filter(|c| !c.is_empty())
        .unwrap_or("default")
        .to_string()
}

/// Prints (`--stdout`) or writes the kubeconfig and prints the export line and the login summary.
fn deliver(
    s: &Settings,
    api: &Api,
    resp: Option<&UserLoginResponse>,
    doc: Value,
    to: To,
) -> Result<(), CliError> {
    if to == To::Merge {
        return deliver_merged(s, resp, &doc);
    }
    if to == To::Stdout {
        if let (Some(r), true, false) = (resp, s.text(), s.quiet) {
            eprint!("{}", output::login_text(r));
        }
        let format = match s.format {
            OutputFormat::Json => OutputFormat::Json,
            _ => OutputFormat::Yaml,
        };
        output::out(output::structured(format, &doc)?);
        return Ok(());
    }

    let (path, entries) = write_managed(s, api, resp, &doc)?;
    let line = files::export_line(Shell::detect(&env_var), &entries);

    if s.text() {
        if !s.quiet {
            if let Some(r) = resp {
                eprint!("{}", output::login_text(r));
            }
            eprintln!("Kubeconfig written to {}", path.display());
        }
        output::out(format!("{line}\n"));
    } else {
        let object = match resp {
            Some(r) => serde_json::to_value(output::without_secrets(r))
                .map_err(|e| CliError::other(e.to_string()))?,
            None => json!({ "file": path, "kubeconfig": entries }),
        };
        output::out(output::structured(s.format, &object)?);
        if !s.quiet {
            eprintln!("{line}");
        }
    }
    Ok(())
}

/// `--merge`: tka's entries into the first `KUBECONFIG` file (or `~/.kube/config`); no export line needed.
fn deliver_merged(
    s: &Settings,
    resp: Option<&UserLoginResponse>,
    doc: &Value,
) -> Result<(), CliError> {
    let file = merge::target(std::env::var_os("KUBECONFIG").as_deref(), home().as_deref())
        .ok_or_else(|| {
            CliError::usage("--merge: no KUBECONFIG and no home directory to find ~/.kube/config")
        })?;
    merge::update(&file, s.timeout, |old| merge::merge(old, doc).map(Some))?;
    if s.text() {
        if !s.quiet {
            if let Some(r) = resp {
                eprint!("{}", output::login_text(r));
            }
            eprintln!(
                "Kubeconfig merged into {} (previous version in {}.bak)",
                file.display(),
                file.display()
            );
        }
    } else {
        let object = match resp {
            Some(r) => serde_json::to_value(output::without_secrets(r))
                .map_err(|e| CliError::other(e.to_string()))?,
            None => json!({ "merged_into": file }),
        };
        output::out(output::structured(s.format, &object)?);
    }
    Ok(())
}

/// Writes the managed kubeconfig file; returns it and the new `KUBECONFIG` entries (it first, then the
/// previous value or `~/.kube/config`).
fn write_managed(
    s: &Settings,
    api: &Api,
    resp: Option<&UserLoginResponse>,
    doc: &Value,
) -> Result<(PathBuf, Vec<PathBuf>), CliError> {
    let cluster = cluster_name(resp, doc);
    let path = files::managed_path(&s.kubeconfig_dir, &api.server.host_dir(), &cluster);
    let yaml = serde_yaml::to_string(doc)
        .map_err(|e| CliError::other(format!("cannot render the kubeconfig: {e}")))?;
    files::write_atomic(&s.kubeconfig_dir, &path, yaml.as_bytes()).map_err(|e| {
        CliError::other(format!("cannot write {}: {e}", path.display()))
            .advice("check kubeconfig.dir and the permissions of its directory")
    })?;
    let entries = files::compose(
        std::slice::from_ref(&path),
        std::env::var_os("KUBECONFIG").as_deref(),
        home().as_deref(),
    );
    Ok((path, entries))
}

/// The login of `tka shell`: an exec-mode kubeconfig (so tokens refresh however long the shell lives), the
/// summary on stderr, nothing on stdout. Returns the `KUBECONFIG` entries for the subshell.
pub async fn login_for_shell(s: &Settings, o: &LoginOptions) -> Result<Vec<PathBuf>, CliError> {
    let api = s.api()?;
    let o = LoginOptions {
        exec: true,
        stdout: false,
        ..o.clone()
    };
    let progress = Progress::new(s);
    progress.step(&format!("Signing in to {}…", api.server.base));
    let (resp, doc, credential) = obtain(&api, &o, &progress).await?;
    progress.done();
    let doc = accepted(s, &api, doc)?;
    seed_cache(&api, &resp, &doc, credential);
    let (path, entries) = write_managed(s, &api, Some(&resp), &doc)?;
    if !s.quiet {
        eprint!("{}", output::login_text(&resp));
        eprintln!("Kubeconfig written to {}", path.display());
    }
    Ok(entries)
}

/// The home directory (`$HOME`, else the platform's).
pub fn home() -> Option<PathBuf> {
    env_var("HOME").map(PathBuf::from).or_else(dirs::home_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_documents_from_upstream_servers_become_v1() {
        let legacy = json!({"kind":"Config","apiVersion":"v1",
            "clusters":{"prod":{"server":"https://k8s:6443"}},
            "users":{"tka-user-alice":{"token":"t"}},
            "contexts":{"tka-context-alice":{"cluster":"prod","user":"tka-user-alice"}},
            "current-context":"tka-context-alice"});
        let v1 = normalize(legacy, "https://tka.ts.net");
        assert!(v1["clusters"].is_array());
        assert_eq!(v1["clusters"][0]["name"], "prod");
        assert_eq!(cluster_name(None, &v1), "prod");
        // v1 passes through unchanged (its extensions already name this server).
        assert_eq!(normalize(v1.clone(), "https://tka.ts.net"), v1);
    }

    #[test]
    fn cluster_name_prefers_the_response() {
        let doc = json!({"clusters":[{"name":"a"}],"contexts":[{"name":"c","context":{"cluster":"b"}}],
            "current-context":"c"});
        assert_eq!(cluster_name(None, &doc), "b");
        let r = UserLoginResponse {
            cluster: "prod".into(),
            ..Default::default()
        };
        assert_eq!(cluster_name(Some(&r), &doc), "prod");
        assert_eq!(cluster_name(None, &json!({})), "default");
    }
}
