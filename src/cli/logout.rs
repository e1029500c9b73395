//! `tka logout`: `POST /logout[?all=true]`, then delete this server's managed kubeconfig files
//! and print the line that removes them from `KUBECONFIG`. 404 means "not signed in" (exit 4); the local files
//! are stale then and are removed as well.

use crate::model::wire::{ErrorResponse, UserLoginResponse};

use std::path::Path;

use super::client::Method;
use super::credential_cache::{self, Slot};
use super::error::{CliError, Exit};
use super::kubeconfig_files::{self as files, Shell};
use super::login::home;
use super::merge;
use super::output;
use super::progress::Progress;
use super::settings::{Settings, env_var};

/// `print_export`: false for `tka shell`, whose environment dies with the subshell.
pub async fn logout(s: &Settings, all: bool, print_export: bool) -> Result<(), CliError> {
    let api = s.api()?;
    let query: &[(&str, &str)] = if all { &[("all", "true")] } else { &[] };
    let progress = Progress::new(s);
    progress.step(&format!("Signing out of {}…", api.server.base));
    let reply = api.call(Method::Post, "/logout", query, false).await?;
    progress.done();
    let not_signed_in = reply.status == 404;
    if !(200..300).contains(&reply.status) && !not_signed_in {
        return Err(reply.error());
    }

    let host_dir = api.server.host_dir();
    forget_credentials(
        &files::server_dir(&s.kubeconfig_dir, &host_dir),
        &api.server.base,
        &reply.body,
    );
    let removed = files::remove_server_files(&s.kubeconfig_dir, &host_dir).map_err(|e| {
        CliError::other(format!(
            "signed out, but cannot remove the kubeconfig files in {}: {e}",
            files::server_dir(&s.kubeconfig_dir, &host_dir).display()
        ))
    })?;
    // The user's kubeconfig being unreadable must not make the logout fail: the session is already ended.
    let unmerged = unmerge(s, &api.server.base).unwrap_or_else(|e| {
        eprintln!("tka: warning: {}", e.message);
        None
    });
    let entries = files::cleanup(
        std::env::var_os("KUBECONFIG").as_deref(),
        &removed,
        &files::server_dir(&s.kubeconfig_dir, &host_dir),
    );
    let line = files::export_line(Shell::detect(&env_var), &entries);

    if not_signed_in {
        if s.text() && print_export {
            output::out(format!("{line}\n"));
        }
        let mut err = reply.error();
        err.exit = Exit::NotSignedIn;
        if serde_json::from_slice::<ErrorResponse>(&reply.body)
            .map_or(true, |b| b.message.is_empty())
        {
            err.message = "not signed in".into();
        }
        return Err(err);
    }

    // An upstream server's body may differ; the summary is best effort.
    let resp = serde_json::from_slice::<UserLoginResponse>(&reply.body).ok();
    if s.text() {
        if !s.quiet {
            if let Some(r) = &resp {
                let role = if r.role.is_empty() {
                    String::new()
                } else {
                    format!(" (role {})", r.role)
                };
                eprintln!("Signed out {}{role}", r.username);
            } else {
                eprintln!("Signed out");
            }
            for f in &removed {
                eprintln!("Removed {}", f.display());
            }
            if let Some(f) = &unmerged {
                eprintln!("Removed tka's entries from {}", f.display());
            }
        }
        if print_export {
            output::out(format!("{line}\n"));
        }
    } else {
        let object = resp
            .map(|r| output::without_secrets(&r))
            .unwrap_or_default();
        output::out(output::structured(s.format, &object)?);
        if !s.quiet && print_export {
            eprintln!("{line}");
        }
    }
    Ok(())
}

/// Deletes the exec plugin's cached tokens (and remembered failures) of this server: every entry recorded for
/// it, plus (for entries of older tka versions, which do not record their server) those of the clusters named
/// by this server's managed kubeconfigs, the logout answer's cluster, and the server's default slot.
fn forget_credentials(server_dir: &Path, base: &str, body: &[u8]) {
    if let Err(e) = credential_cache::clear_server(base) {
        eprintln!("tka: warning: cannot delete the cached credentials: {e}");
    }
    let mut targets = files::exec_targets_in(server_dir);
    let cluster = serde_json::from_slice::<UserLoginResponse>(body)
        .map(|r| r.cluster)
        .unwrap_or_default();
    targets.push((base.to_string(), cluster));
    targets.push((base.to_string(), String::new()));
    for (server, cluster) in targets {
        if let Ok(slot) = Slot::new(&server, &cluster)
            && let Err(e) = slot.clear()
        {
            eprintln!(
                "tka: warning: cannot delete the cached credential {}: {e}",
                slot.token_file.display()
            );
        }
    }
}

/// Removes this server's `--merge` entries from the user's kubeconfig (only tka's own entries; the file is not
/// touched at all when it has none). Returns the file when it changed.
fn unmerge(s: &Settings, base: &str) -> Result<Option<std::path::PathBuf>, CliError> {
    let Some(file) = merge::target(std::env::var_os("KUBECONFIG").as_deref(), home().as_deref())
    else {
        return Ok(None);
    };
    if !file.exists() {
        return Ok(None);
    }
    let changed = merge::update(&file, s.timeout, |old| Ok(merge::remove_server(old, base)))?;
    Ok(changed.then_some(file))
}
