//! `tka credential`: the kubectl exec credential plugin.
//!
//! stdout carries only the ExecCredential JSON; everything else goes to stderr and nothing ever prompts.
//!
//! 1. Fast path ([`answer_from_cache`], called before the async runtime or the configuration exist): a fresh
//!    cached token is printed with no network call and no lock.
//! 2. Otherwise take the per-(server, cluster) file lock, re-read the cache (another process may have just
//!    refreshed it), replay a failure remembered less than 5 s ago, and only then call
//!    `GET /exec-credential?cluster=…&wait=…`. So N parallel kubectl calls with an expired cache make one request.
//!
//! Errors: 401 ⇒ "not signed in to <cluster>: run `tka login`" (exit 4); 403/409 ⇒ the server's message and
//! advice (exit 3); unreachable ⇒ exit 5. With `--auto-login` (only when the kubeconfig was written that way)
//! a 401 is followed by one `POST /login` that returns the credential.

use std::io::Write;
use std::time::Duration;

use jiff::Timestamp;

use crate::model::wire::{EXEC_API_V1, EXEC_API_V1BETA1, ExecCredential, UserLoginResponse};

use super::GlobalArgs;
use super::client::{Api, Method, Reply, retry_delay};
use super::credential_cache::{CachedToken, Failure, Slot};
use super::error::{CliError, Exit};
use super::login::unexpected;
use super::server_url::ServerUrl;
use super::settings::Settings;

/// Flags of `tka credential`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CredentialArgs {
    /// Cluster to get a credential for (default: the server's own cluster).
    #[arg(long, value_name = "NAME", default_value = "")]
    pub cluster: String,
    /// On "not signed in", sign in once (only for kubeconfigs written with --auto-login).
    #[arg(long)]
    pub auto_login: bool,
}

/// Environment variable kubectl sets for exec plugins.
const EXEC_INFO_VAR: &str = "KUBERNETES_EXEC_INFO";

/// The fast path: prints a fresh cached token and returns true. Only possible when `--server` is a full URL
/// (as in the kubeconfigs tka writes), so that no configuration file needs to be read. Any problem ⇒ false,
/// and the normal path runs (and reports it).
pub fn answer_from_cache(g: &GlobalArgs, a: &CredentialArgs) -> bool {
    let Some(server) = g.server.as_deref().filter(|s| s.contains("://")) else {
        return false;
    };
    let (Ok(url), Ok(api_version)) = (ServerUrl::resolve(server, "", 443), exec_api_version())
    else {
        return false;
    };
    let Ok(slot) = Slot::new(&url.base, &a.cluster) else {
        return false;
    };
    match slot.read_token() {
        Some(t) if t.fresh(Timestamp::now()) => print_credential(&api_version, &t).is_ok(),
        _ => false,
    }
}

/// The full path: cache, lock, re-read, negative cache, request.
pub async fn credential(s: &Settings, a: &CredentialArgs) -> Result<(), CliError> {
    let api_version = exec_api_version()?;
    let slot = Slot::new(&s.server.base, &a.cluster)?;
    if let Some(t) = slot.read_token().filter(|t| t.fresh(Timestamp::now())) {
        return print_credential(&api_version, &t);
    }
    let api = s.api()?;
    let _lock = lock(&slot, &api).await?;
    // Whoever held the lock before us may have refreshed the cache or failed a moment ago.
    let now = Timestamp::now();
    if let Some(t) = slot.read_token().filter(|t| t.fresh(now)) {
        return print_credential(&api_version, &t);
    }
    if let Some(f) = slot.read_failure().filter(|f| f.until > now) {
        return Err(f.to_error(now));
    }
    match refresh(&api, a).await {
        Ok(t) => {
            if let Err(e) = slot.write_token(&t) {
                eprintln!(
                    "tka: warning: cannot cache the credential in {}: {e}",
                    slot.token_file.display()
                );
            }
            print_credential(&api_version, &t)
        }
        Err(e) => {
            if e.exit != Exit::Interrupted {
                let _ = slot.write_failure(&Failure::from_error(&e, Timestamp::now()));
            }
            Err(e)
        }
    }
}

/// The `apiVersion` to answer in: the one of `KUBERNETES_EXEC_INFO`, `v1` when the variable is absent.
pub fn exec_api_version() -> Result<String, CliError> {
    let Some(info) = std::env::var_os(EXEC_INFO_VAR).filter(|v| !v.is_empty()) else {
        return Ok(EXEC_API_V1.into());
    };
    let parsed: serde_json::Value = serde_json::from_slice(info.as_encoded_bytes())
        .map_err(|e| CliError::usage(format!("{EXEC_INFO_VAR} is not JSON: {e}")))?;
    match parsed["apiVersion"].as_str() {
        None | Some("") => Ok(EXEC_API_V1.into()),
        Some(v) if v == EXEC_API_V1 || v == EXEC_API_V1BETA1 => Ok(v.to_string()),
        Some(other) => Err(CliError::usage(format!(
            "{EXEC_INFO_VAR} asks for apiVersion {other:?}, which tka does not speak"
        ))
        .advice(format!(
            "set the kubeconfig's exec apiVersion to {EXEC_API_V1} (or {EXEC_API_V1BETA1})"
        ))),
    }
}

fn print_credential(api_version: &str, t: &CachedToken) -> Result<(), CliError> {
    // kubectl refreshes at `expirationTimestamp`: the skewed time, truncated to whole seconds (never later).
    let expiry = t.refresh_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let cred = ExecCredential::new(api_version, t.token.clone(), expiry);
    let mut body = serde_json::to_vec(&cred).map_err(|e| CliError::other(e.to_string()))?;
    body.push(b'\n');
    let mut out = std::io::stdout().lock();
    out.write_all(&body)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::other(format!("cannot write the credential to stdout: {e}")))
}

/// Waits for the exclusive lock until the command's deadline. Polls `try_lock` (a blocking `lock` could not be
/// abandoned at the deadline or on Ctrl-C).
async fn lock(slot: &Slot, api: &Api) -> Result<std::fs::File, CliError> {
    let file = slot.open_lock().map_err(|e| {
        CliError::other(format!(
            "cannot open the lock file {}: {e}",
            slot.lock_file.display()
        ))
        .advice("check the permissions of $XDG_RUNTIME_DIR/tka (or the cache directory)")
    })?;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                let delay = Duration::from_millis(5 + rand::random::<u64>() % 15);
                api.pause(delay, || {
                    CliError::unavailable(format!(
                        "timed out waiting for another `tka credential` holding {}",
                        slot.lock_file.display()
                    ))
                })
                .await?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(CliError::other(format!(
                    "cannot lock {}: {e}",
                    slot.lock_file.display()
                )));
            }
        }
    }
}

/// One refresh against the server; 202 (still provisioning) is waited out until the deadline.
async fn refresh(api: &Api, a: &CredentialArgs) -> Result<CachedToken, CliError> {
    let mut query: Vec<(&str, &str)> = vec![("apiVersion", EXEC_API_V1)];
    if !a.cluster.is_empty() {
        query.push(("cluster", &a.cluster));
    }
    let mut attempt = 0u32;
    loop {
        let reply = api
            .call(Method::Get, "/exec-credential", &query, true)
            .await?;
        match reply.status {
            200 => {
                let cred: ExecCredential =
                    serde_json::from_slice(&reply.body).map_err(|e| unexpected(&reply, e))?;
                return cached_token(&reply, cred);
            }
            202 => {
                let delay = retry_delay(reply.retry_after, attempt, rand::random());
                api.pause(delay, || {
                    CliError::unavailable("timed out waiting for the session to be provisioned")
                        .advice("run `tka get login` to see the session state")
                })
                .await?;
                attempt = attempt.saturating_add(1);
            }
            401 if a.auto_login => return auto_login(api, a).await,
            401 | 404 => {
                // The session is gone (logout elsewhere, revocation, expiry): no cached token of this server
                // may be served any more, whichever cluster it was for.
                if let Err(e) = super::credential_cache::clear_server(&api.server.base) {
                    eprintln!("tka: warning: {e}");
                }
                return Err(plugin_error(&reply, api, &a.cluster));
            }
            _ => return Err(plugin_error(&reply, api, &a.cluster)),
        }
    }
}

/// `--auto-login`: `POST /login?include=credential` once; its credential is the answer.
async fn auto_login(api: &Api, a: &CredentialArgs) -> Result<CachedToken, CliError> {
    eprintln!(
        "tka: not signed in to {}: signing in",
        shown(api, &a.cluster)
    );
    let reply = api
        .call(Method::Post, "/login", &[("include", "credential")], true)
        .await?;
    if reply.status != 200 {
        return Err(plugin_error(&reply, api, &a.cluster));
    }
    let resp: UserLoginResponse =
        serde_json::from_slice(&reply.body).map_err(|e| unexpected(&reply, e))?;
    match resp.credential {
        Some(cred) => cached_token(&reply, cred),
        None => Err(CliError::other(
            "the server signed you in but sent no credential (an older server?)",
        )
        .advice("run `tka login`, then retry")),
    }
}

fn cached_token(reply: &Reply, cred: ExecCredential) -> Result<CachedToken, CliError> {
    let status = cred
        .status
        .ok_or_else(|| unexpected(reply, "no status in the ExecCredential"))?;
    let expires_at: Timestamp = status
        .expiration_timestamp
        .parse()
        .map_err(|e| unexpected(reply, format!("bad expirationTimestamp: {e}")))?;
    Ok(CachedToken::new(status.token, expires_at, Timestamp::now()))
}

/// The error of a final non-200 answer, worded for someone running kubectl.
fn plugin_error(reply: &Reply, api: &Api, cluster: &str) -> CliError {
    let mut e = reply.error();
    if reply.status == 401 {
        // The server's own words ("your session has ended") become the cause.
        e.causes.insert(0, std::mem::take(&mut e.message));
        e.message = format!("not signed in to {}: run `tka login`", shown(api, cluster));
        e.advice.retain(|a| !a.contains("tka login"));
    }
    e
}

fn shown(api: &Api, cluster: &str) -> String {
    if cluster.is_empty() {
        api.server.base.clone()
    } else {
        cluster.to_string()
    }
}
