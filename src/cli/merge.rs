//! `--merge`: tka's entries written into the user's own kubeconfig instead of a managed file.
//!
//! - The file is the first entry of `KUBECONFIG`, else `~/.kube/config` (what kubectl writes to as well).
//! - Locking uses kubectl's own protocol, a `<file>.lock` created exclusively and removed afterwards, so a
//!   concurrent `kubectl config …` and tka never interleave their writes.
//! - Before each change the file is copied to `<file>.bak`; the new content is written atomically.
//! - Only entries carrying the `tka.specht-labs.de/managed` extension are ever replaced or removed. A foreign
//!   entry with the name tka wants is a conflict: nothing is written and the error says which entry.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::model::kubeconfig::MANAGED_EXTENSION;

use super::error::CliError;
use super::kubeconfig_files::{
    create_private_dir, previous_entries, replace_file, through_symlinks,
};

const LISTS: [(&str, &str); 3] = [
    ("clusters", "cluster"),
    ("users", "user"),
    ("contexts", "context"),
];

/// The file `--merge` writes to.
pub fn target(kubeconfig_env: Option<&std::ffi::OsStr>, home: Option<&Path>) -> Option<PathBuf> {
    previous_entries(kubeconfig_env, home).into_iter().next()
}

/// `(server, cluster)` of a tka-managed entry, `None` for anyone else's.
fn managed_by(entry: &Value, inner: &str) -> Option<(String, String)> {
    entry[inner]["extensions"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == MANAGED_EXTENSION)
        .map(|e| {
            let ext = &e["extension"];
            (
                ext["server"].as_str().unwrap_or_default().to_string(),
                ext["cluster"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// `existing` with the entries of `new` in place of tka's entries of the same names or the same
/// (server, cluster), and `new`'s current context. Pure.
pub fn merge(existing: &Value, new: &Value) -> Result<Value, String> {
    let mut out = base(existing);
    for (list, inner) in LISTS {
        let incoming: Vec<Value> = new[list].as_array().cloned().unwrap_or_default();
        let names: Vec<&str> = incoming.iter().filter_map(|e| e["name"].as_str()).collect();
        let targets: Vec<(String, String)> = incoming
            .iter()
            .filter_map(|e| managed_by(e, inner))
            .collect();
        let mut kept = Vec::new();
        for e in out[list].as_array().cloned().unwrap_or_default() {
            let name = e["name"].as_str().unwrap_or_default();
            match managed_by(&e, inner) {
                Some(t) if targets.contains(&t) || names.contains(&name) => {} // replaced
                None if names.contains(&name) => {
                    return Err(format!(
                        "{list} entry {name:?} already exists and was not written by tka; it is left alone"
                    ));
                }
                _ => kept.push(e),
            }
        }
        kept.extend(incoming);
        out[list] = Value::Array(kept);
    }
    if let Some(ctx) = new["current-context"].as_str() {
        // Remember the user's context in ours, so logout can switch back to it.
        // If tka's context was current (a re-login), the user's context is the one it remembered.
        let current = existing["current-context"].as_str().unwrap_or_default();
        let previous = match existing["contexts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == current && managed_by(c, "context").is_some())
        {
            Some(c) => previous_of(c).unwrap_or_default().to_string(),
            None => current.to_string(),
        };
        if !previous.is_empty() {
            for c in out["contexts"].as_array_mut().into_iter().flatten() {
                if c["name"] == ctx
                    && let Some(ext) = c["context"]["extensions"].as_array_mut()
                    && let Some(e) = ext.iter_mut().find(|e| e["name"] == MANAGED_EXTENSION)
                {
                    e["extension"][PREVIOUS_CONTEXT] = json!(previous);
                }
            }
        }
        out["current-context"] = json!(ctx);
    }
    Ok(out)
}

/// Names of tka's contexts for `server` in a kubeconfig document (what `--merge` wrote there). Pure.
pub fn managed_contexts(doc: &Value, server: &str) -> Vec<String> {
    doc["contexts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| managed_by(c, "context").is_some_and(|(s, _)| s == server))
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// The remembered context of one of tka's context entries.
fn previous_of(context: &Value) -> Option<&str> {
    context["context"]["extensions"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == MANAGED_EXTENSION)?["extension"][PREVIOUS_CONTEXT]
        .as_str()
}

/// Field of tka's context extension holding the context that was current before `--merge`.
const PREVIOUS_CONTEXT: &str = "previous-context";

/// `existing` without tka's entries for `server`; the current context is cleared if it was one of them.
/// Returns `None` when nothing had to change. Pure.
pub fn remove_server(existing: &Value, server: &str) -> Option<Value> {
    let mut out = base(existing);
    let mut removed_contexts: Vec<Value> = Vec::new();
    let mut changed = false;
    for (list, inner) in LISTS {
        let entries = out[list].as_array().cloned().unwrap_or_default();
        let (gone, kept): (Vec<Value>, Vec<Value>) = entries
            .into_iter()
            .partition(|e| managed_by(e, inner).is_some_and(|(s, _)| s == server));
        changed |= !gone.is_empty();
        if list == "contexts" {
            removed_contexts.extend(gone.iter().cloned());
        }
        out[list] = Value::Array(kept);
    }
    let current = out["current-context"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(gone) = removed_contexts
        .iter()
        .find(|c| c["name"] == current.as_str())
    {
        // Back to the user's own context when it still exists, else none.
        let previous = previous_of(gone)
            .filter(|p| {
                out["contexts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["name"] == *p)
            })
            .unwrap_or_default()
            .to_string();
        out["current-context"] = json!(previous);
    }
    changed.then_some(out)
}

fn base(existing: &Value) -> Value {
    let mut out = if existing.is_object() {
        existing.clone()
    } else {
        json!({})
    };
    if out["apiVersion"].is_null() {
        out["apiVersion"] = json!("v1");
    }
    if out["kind"].is_null() {
        out["kind"] = json!("Config");
    }
    out
}

/// kubectl's lock: `<file>.lock`, created exclusively; removed on drop.
struct FileLock(PathBuf);

impl FileLock {
    fn acquire(file: &Path, deadline: Instant) -> Result<FileLock, CliError> {
        let mut name = file.as_os_str().to_owned();
        name.push(".lock");
        let lock = PathBuf::from(name);
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
            {
                Ok(_) => return Ok(FileLock(lock)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(
                        CliError::other(format!("cannot lock {}: {e}", file.display())).advice(
                            format!(
                                "if no kubectl or tka is running, delete the stale {}",
                                lock.display()
                            ),
                        ),
                    );
                }
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Locks `file`, reads it (missing = empty), applies `change`, and if it returns a document, writes a `.bak`
/// copy and then the new content. Returns whether the file changed.
///
/// The user's files and directories keep their shape: a symlinked kubeconfig is written through to its target
/// (the link stays), the target keeps its mode minus any group/other bits (it holds credentials now), and no
/// existing directory's permissions are touched; only a directory tka has to create is made 0700.
pub fn update(
    file: &Path,
    timeout: Duration,
    change: impl FnOnce(&Value) -> Result<Option<Value>, String>,
) -> Result<bool, CliError> {
    let target = through_symlinks(file)
        .map_err(|e| CliError::other(format!("cannot resolve {}: {e}", file.display())))?;
    for d in [file, target.as_path()] {
        let dir = d.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)
            .map_err(|e| CliError::other(format!("cannot create {}: {e}", dir.display())))?;
    }
    let _lock = FileLock::acquire(file, Instant::now() + timeout)?;
    let old = match fs::read(&target) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(CliError::other(format!(
                "cannot read {}: {e}",
                file.display()
            )));
        }
    };
    let existing: Value = match &old {
        Some(b) if !b.iter().all(u8::is_ascii_whitespace) => {
            serde_yaml::from_slice(b).map_err(|e| {
                CliError::usage(format!("{} is not a valid kubeconfig: {e}", file.display()))
                    .advice("fix the file, or sign in without --merge")
            })?
        }
        _ => json!({}),
    };
    let Some(new) = change(&existing).map_err(|m| {
        CliError::usage(format!("cannot merge into {}: {m}", file.display()))
            .advice("rename that entry, or sign in without --merge (managed files)")
    })?
    else {
        return Ok(false);
    };
    let write_err =
        |e: io::Error, p: &Path| CliError::other(format!("cannot write {}: {e}", p.display()));
    if let Some(b) = &old {
        let mut bak = file.as_os_str().to_owned();
        bak.push(".bak");
        let bak = PathBuf::from(bak);
        replace_file(&bak, b, 0o600).map_err(|e| write_err(e, &bak))?;
    }
    let yaml = serde_yaml::to_string(&new).map_err(|e| CliError::other(e.to_string()))?;
    replace_file(&target, yaml.as_bytes(), private_mode(&target))
        .map_err(|e| write_err(e, &target))?;
    Ok(true)
}

/// The mode for the rewritten kubeconfig: the existing file's, without group/other bits; 0600 for a new file.
fn private_mode(path: &Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = fs::metadata(path) {
            let owner = m.permissions().mode() & 0o700;
            if owner & 0o600 == 0o600 {
                return owner;
            }
        }
    }
    let _ = path;
    0o600
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tka_doc(server: &str, cluster: &str, token: &str) -> Value {
        let ext = json!([{"name": MANAGED_EXTENSION, "extension": {"server": server, "cluster": cluster}}]);
        json!({"apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": cluster, "cluster": {"server": "https://k8s", "extensions": ext}}],
            "users": [{"name": "tka-user-a", "user": {"token": token, "extensions": ext}}],
            "contexts": [{"name": "tka-context-a", "context": {"cluster": cluster, "user": "tka-user-a", "extensions": ext}}],
            "current-context": "tka-context-a"})
    }

    fn user_doc() -> Value {
        json!({"apiVersion": "v1", "kind": "Config", "preferences": {"colors": true},
            "clusters": [{"name": "other", "cluster": {"server": "https://other"}}],
            "users": [{"name": "me", "user": {"token": "mine"}}],
            "contexts": [{"name": "other", "context": {"cluster": "other", "user": "me"}}],
            "current-context": "other"})
    }

    #[test]
    fn merge_replaces_only_tka_entries_and_logout_restores_the_rest() {
        let first = merge(&user_doc(), &tka_doc("https://tka", "prod", "t1")).unwrap();
        assert_eq!(first["current-context"], "tka-context-a");
        assert_eq!(first["clusters"].as_array().unwrap().len(), 2);
        let second = merge(&first, &tka_doc("https://tka", "prod", "t2")).unwrap();
        assert_eq!(
            second["users"].as_array().unwrap().len(),
            2,
            "replaced, not added"
        );
        assert_eq!(second["users"][1]["user"]["token"], "t2");
        assert_eq!(second["preferences"], json!({"colors": true}));

        let out = remove_server(&second, "https://tka").unwrap();
        assert_eq!(
            out,
            user_doc(),
            "logout switches back to the user's context"
        );
        assert!(
            remove_server(&out, "https://tka").is_none(),
            "nothing left to remove"
        );
        assert!(remove_server(&second, "https://elsewhere").is_none());
        let mut gone = user_doc();
        gone["contexts"] = json!([]);
        let out = remove_server(
            &merge(&gone, &tka_doc("https://tka", "prod", "t")).unwrap(),
            "https://tka",
        );
        assert_eq!(
            out.unwrap()["current-context"],
            "",
            "no context to go back to"
        );
    }

    #[test]
    fn a_foreign_entry_with_the_same_name_is_a_conflict() {
        let mut mine = user_doc();
        mine["users"][0]["name"] = json!("tka-user-a");
        let e = merge(&mine, &tka_doc("https://tka", "prod", "t")).unwrap_err();
        assert!(
            e.contains("\"tka-user-a\"") && e.contains("not written by tka"),
            "{e}"
        );
    }

    #[test]
    fn update_locks_backs_up_and_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("config");
        fs::write(&file, serde_yaml::to_string(&user_doc()).unwrap()).unwrap();
        let changed = update(&file, Duration::from_secs(1), |old| {
            merge(old, &tka_doc("https://tka", "prod", "t")).map(Some)
        })
        .unwrap();
        assert!(changed);
        let bak: Value =
            serde_yaml::from_slice(&fs::read(tmp.path().join("config.bak")).unwrap()).unwrap();
        assert_eq!(bak, user_doc());
        assert!(!tmp.path().join("config.lock").exists(), "lock released");
        // A held lock (kubectl writing) makes tka wait, then give up with advice.
        fs::write(tmp.path().join("config.lock"), b"").unwrap();
        let e = update(&file, Duration::from_millis(100), |_| Ok(None)).unwrap_err();
        assert!(e.to_string().contains("stale"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn update_writes_through_a_symlink_and_leaves_directories_alone() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let tmp = tempfile::tempdir().unwrap();
        // ~/.kube/config -> ../dotfiles/kubeconfig, both directories 0755 as users have them.
        let kube = tmp.path().join(".kube");
        let dotfiles = tmp.path().join("dotfiles");
        for d in [&kube, &dotfiles] {
            fs::create_dir(d).unwrap();
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let real = dotfiles.join("kubeconfig");
        fs::write(&real, serde_yaml::to_string(&user_doc()).unwrap()).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o644)).unwrap();
        let link = kube.join("config");
        std::os::unix::fs::symlink("../dotfiles/kubeconfig", &link).unwrap();

        update(&link, Duration::from_secs(1), |old| {
            merge(old, &tka_doc("https://tka", "prod", "t")).map(Some)
        })
        .unwrap();

        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "the link stays a link"
        );
        let merged: Value = serde_yaml::from_slice(&fs::read(&real).unwrap()).unwrap();
        assert_eq!(
            merged["current-context"], "tka-context-a",
            "the target got the entries"
        );
        assert_eq!(mode(&real), 0o600, "credentials: no group/other access");
        assert_eq!(mode(&kube), 0o755, "~/.kube untouched");
        assert_eq!(mode(&dotfiles), 0o755, "the target's directory untouched");
        assert_eq!(
            serde_yaml::from_slice::<Value>(&fs::read(kube.join("config.bak")).unwrap()).unwrap(),
            user_doc()
        );

        // A kubeconfig in a directory that does not exist yet: tka creates it, privately.
        let fresh = tmp.path().join("new/dir/config");
        update(&fresh, Duration::from_secs(1), |old| {
            merge(old, &tka_doc("https://tka", "prod", "t")).map(Some)
        })
        .unwrap();
        assert_eq!(mode(fresh.parent().unwrap()), 0o700);
        assert_eq!(mode(&fresh), 0o600);
    }
}
