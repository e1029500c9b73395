//! Managed kubeconfig files and the `KUBECONFIG` export line.
//!
//! Layout: `<kubeconfig dir>/<server host>/<cluster>.yaml`, files 0600, directories 0700, written atomically
//! (temp file in the same directory, then rename), so nothing is ever left in `$TMPDIR`. The export line puts
//! the managed files in front of the previous `KUBECONFIG` (or `~/.kube/config`), de-duplicated and quoted for
//! the user's shell. Everything except [`write_atomic`] and [`remove_server_files`] is pure.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::model::kubeconfig::MANAGED_EXTENSION;

/// Separator of `KUBECONFIG` lists on this platform (what kubectl's `filepath.SplitList` expects).
pub const LIST_SEP: char = if cfg!(windows) { ';' } else { ':' };

/// Keeps `[A-Za-z0-9._-]`, replaces everything else by `_`; never yields an empty name, `.` or `..`.
pub fn safe_file_name(raw: &str) -> String {
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.chars().all(|c| c == '.') {
        format!("_{name}")
    } else {
        name
    }
}

/// The directory holding one server's managed files.
pub fn server_dir(root: &Path, host_dir: &str) -> PathBuf {
    root.join(safe_file_name(host_dir))
}

/// `<root>/<server host>/<cluster>.yaml`.
pub fn managed_path(root: &Path, host_dir: &str, cluster: &str) -> PathBuf {
    server_dir(root, host_dir).join(format!("{}.yaml", safe_file_name(cluster)))
}

/// Writes `contents` to `path` atomically with mode 0600, creating the parent directories with mode 0700. The
/// parent and `root` (both tka's own) are also tightened to 0700 if they already existed.
pub fn write_atomic(root: &Path, path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("kubeconfig path has no parent directory"))?;
    create_private_dir(dir)?;
    for d in [root, dir] {
        restrict_dir(d)?;
    }
    replace_file(path, contents, 0o600)
}

/// Replaces `path` with `contents` atomically (a temporary file in the same directory, then rename), the new
/// file getting `mode`. Touches no directory's permissions.
pub fn replace_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("the file has no parent directory"))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut f = create_private_file(&tmp, mode)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Where writing to `path` must go: through any chain of symlinks to the final target (which need not exist
/// yet), so a symlinked `~/.kube/config` keeps being a symlink. At most 40 links, like the kernel.
pub fn through_symlinks(path: &Path) -> io::Result<PathBuf> {
    let mut cur = path.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = fs::read_link(&cur)?;
                cur = match cur.parent() {
                    Some(parent) if link.is_relative() => parent.join(link),
                    _ => link,
                };
            }
            Ok(_) => return Ok(cur),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(cur),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "{}: too many levels of symbolic links",
        path.display()
    )))
}

#[cfg(unix)]
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

#[cfg(unix)]
fn restrict_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if dir.is_dir() {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn create_private_file(path: &Path, mode: u32) -> io::Result<fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    // The umask may have taken bits away; the mode asked for is the mode wanted.
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(f)
}

#[cfg(not(unix))]
fn create_private_file(path: &Path, _mode: u32) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Deletes the managed `*.yaml` files of one server (and its directory when that ends up empty). Returns the
/// removed files. A missing directory is not an error.
pub fn remove_server_files(root: &Path, host_dir: &str) -> io::Result<Vec<PathBuf>> {
    let dir = server_dir(root, host_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension() == Some(OsStr::new("yaml")) && path.is_file() {
            fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    removed.sort();
    let _ = fs::remove_dir(&dir); // only succeeds when empty
    Ok(removed)
}

/// The `(tka server, cluster)` pairs of the document's `tka credential` exec users.
pub fn exec_targets(doc: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for user in doc["users"].as_array().into_iter().flatten() {
        let args: Vec<&str> = user["user"]["exec"]["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .collect();
        if args.first() != Some(&"credential") {
            continue;
        }
        let after = |flag: &str| {
            args.iter()
                .position(|a| *a == flag)
                .and_then(|i| args.get(i + 1))
                .map(|v| v.to_string())
        };
        out.push((
            after("--server").unwrap_or_default(),
            after("--cluster").unwrap_or_default(),
        ));
    }
    out
}

/// [`exec_targets`] of every managed `*.yaml` file in `dir` (unreadable files are skipped).
pub fn exec_targets_in(dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension() == Some(OsStr::new("yaml")))
        .filter_map(|p| serde_yaml::from_slice::<serde_json::Value>(&fs::read(p).ok()?).ok())
        .flat_map(|doc| exec_targets(&doc))
        .collect()
}

/// Points every `tka credential` exec user and every tka extension at `server`: the URL this CLI just reached,
/// rather than the name the server calls itself (which may not resolve from here), so the plugin asks the same
/// server, its cache key matches the one `login --exec` seeded, and logout finds the `--merge` entries again.
pub fn pin_exec_server(doc: &mut serde_json::Value, server: &str) {
    for (list, inner) in [
        ("clusters", "cluster"),
        ("users", "user"),
        ("contexts", "context"),
    ] {
        for entry in doc
            .get_mut(list)
            .and_then(|l| l.as_array_mut())
            .into_iter()
            .flatten()
        {
            let exts = entry
                .get_mut(inner)
                .and_then(|i| i.get_mut("extensions"))
                .and_then(|e| e.as_array_mut());
            for ext in exts.into_iter().flatten() {
                if ext.get("name").and_then(|n| n.as_str()) == Some(MANAGED_EXTENSION)
                    && let Some(e) = ext.get_mut("extension").and_then(|e| e.as_object_mut())
                {
                    e.insert("server".into(), server.into());
                }
            }
        }
    }
    for user in doc["users"].as_array_mut().into_iter().flatten() {
        // `get_mut`, not `[]`: indexing a missing key mutably would insert `exec: null` into token users.
        let Some(args) = user
            .get_mut("user")
            .and_then(|u| u.get_mut("exec"))
            .and_then(|e| e.get_mut("args"))
            .and_then(|a| a.as_array_mut())
        else {
            continue;
        };
        if args.first().and_then(|a| a.as_str()) != Some("credential") {
            continue;
        }
        match args.iter().position(|a| a == "--server") {
            Some(i) if i + 1 < args.len() => args[i + 1] = server.into(),
            _ => {
                args.push("--server".into());
                args.push(server.into());
            }
        }
    }
}

/// The previous `KUBECONFIG` entries: the variable's entries, or `~/.kube/config` when unset or empty.
pub fn previous_entries(current: Option<&OsStr>, home: Option<&Path>) -> Vec<PathBuf> {
    let entries: Vec<PathBuf> = current
        .map(|c| {
            std::env::split_paths(c)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    if !entries.is_empty() {
        return entries;
    }
    home.map(|h| vec![h.join(".kube").join("config")])
        .unwrap_or_default()
}

/// The new `KUBECONFIG` after a login: `managed` first, then the previous entries, de-duplicated (first
/// occurrence wins).
pub fn compose(managed: &[PathBuf], current: Option<&OsStr>, home: Option<&Path>) -> Vec<PathBuf> {
    dedupe(
        managed
            .iter()
            .cloned()
            .chain(previous_entries(current, home)),
    )
}

/// The `KUBECONFIG` after a logout: the current entries without the `removed` files and without anything else
/// inside `server_dir`. Empty means "unset the variable".
pub fn cleanup(current: Option<&OsStr>, removed: &[PathBuf], server_dir: &Path) -> Vec<PathBuf> {
    let entries = current
        .map(|c| {
            std::env::split_paths(c)
                .filter(|p| !p.as_os_str().is_empty())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    dedupe(
        entries
            .into_iter()
            .filter(|p| !removed.contains(p) && !p.starts_with(server_dir)),
    )
}

fn dedupe(paths: impl Iterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The shell the export line is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// sh, bash, zsh, ksh, dash, …
    Posix,
    Fish,
    /// PowerShell (`pwsh`, Windows PowerShell).
    Pwsh,
}

impl Shell {
    /// As upstream: the name in `$SHELL`, then `FISH_VERSION`, `ZSH_VERSION`, `BASH_VERSION`,
    /// `POWERSHELL_DISTRIBUTION_CHANNEL`; PowerShell on Windows, POSIX elsewhere.
    pub fn detect(env: &dyn Fn(&str) -> Option<String>) -> Shell {
        let set = |k: &str| env(k).is_some_and(|v| !v.is_empty());
        if let Some(shell) = env("SHELL").filter(|s| !s.is_empty()) {
            let name = Path::new(&shell)
                .file_stem()
                .map(|n| n.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            return match name.as_str() {
                "fish" => Shell::Fish,
                "pwsh" | "powershell" => Shell::Pwsh,
                _ => Shell::Posix,
            };
        }
        if set("FISH_VERSION") {
            Shell::Fish
        } else if set("ZSH_VERSION") || set("BASH_VERSION") {
            Shell::Posix
        } else if set("POWERSHELL_DISTRIBUTION_CHANNEL") || cfg!(windows) {
            Shell::Pwsh
        } else {
            Shell::Posix
        }
    }
}

/// The line that sets `KUBECONFIG` to `paths` (or unsets it when `paths` is empty).
///
/// - POSIX: `export KUBECONFIG='<a>:<b>'` (`'` written as `'\''`);
/// - fish: `set -gx --path KUBECONFIG '<a>' '<b>'` (`\` and `'` backslash-escaped). `--path` (fish ≥ 3.2) makes
///   fish export the list joined with `:`; without it fish joins exported lists with spaces, which kubectl would
///   read as one file name;
/// - PowerShell: `$env:KUBECONFIG = '<a>;<b>'` (`'` doubled; the list separator is the platform's).
pub fn export_line(shell: Shell, paths: &[PathBuf]) -> String {
    let strs: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let joined = strs.join(&LIST_SEP.to_string());
    match (shell, paths.is_empty()) {
        (Shell::Posix, true) => "unset KUBECONFIG".into(),
        (Shell::Fish, true) => "set -e KUBECONFIG".into(),
        (Shell::Pwsh, true) => "Remove-Item Env:KUBECONFIG -ErrorAction SilentlyContinue".into(),
        (Shell::Posix, false) => format!("export KUBECONFIG={}", posix_quote(&joined)),
        (Shell::Fish, false) => {
            let quoted: Vec<String> = strs.iter().map(|s| fish_quote(s)).collect();
            format!("set -gx --path KUBECONFIG {}", quoted.join(" "))
        }
        (Shell::Pwsh, false) => {
            format!("$env:KUBECONFIG = {}", powershell_quote(&joined))
        }
    }
}

fn posix_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn fish_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', r"\\").replace('\'', r"\'"))
}

fn powershell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn export_quoting_per_shell_including_a_single_quote() {
        let paths = [
            p("/home/o'brien/.config/tka/kubeconfig/tka/prod.yaml"),
            p("/home/o'brien/.kube/config"),
        ];
        let s = LIST_SEP;
        assert_eq!(
            export_line(Shell::Posix, &paths),
            format!(
                r"export KUBECONFIG='/home/o'\''brien/.config/tka/kubeconfig/tka/prod.yaml{s}/home/o'\''brien/.kube/config'"
            )
        );
        assert_eq!(
            export_line(Shell::Fish, &paths),
            r"set -gx --path KUBECONFIG '/home/o\'brien/.config/tka/kubeconfig/tka/prod.yaml' '/home/o\'brien/.kube/config'"
        );
        assert_eq!(
            export_line(Shell::Pwsh, &paths),
            format!(
                "$env:KUBECONFIG = '/home/o''brien/.config/tka/kubeconfig/tka/prod.yaml{s}/home/o''brien/.kube/config'"
            )
        );
        assert_eq!(
            export_line(Shell::Fish, &[p(r"C:\a b")]),
            r"set -gx --path KUBECONFIG 'C:\\a b'"
        );
        // Spaces and `$` stay literal inside single quotes.
        assert_eq!(
            export_line(Shell::Posix, &[p("/a b/$HOME")]),
            "export KUBECONFIG='/a b/$HOME'"
        );
    }

    #[test]
    fn empty_list_unsets() {
        assert_eq!(export_line(Shell::Posix, &[]), "unset KUBECONFIG");
        assert_eq!(export_line(Shell::Fish, &[]), "set -e KUBECONFIG");
        assert!(export_line(Shell::Pwsh, &[]).starts_with("Remove-Item Env:KUBECONFIG"));
    }

    #[test]
    fn shell_detection_order() {
        let detect = |vars: &[(&str, &str)]| {
            let m: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Shell::detect(&move |k| m.get(k).cloned())
        };
        assert_eq!(detect(&[("SHELL", "/usr/bin/fish")]), Shell::Fish);
        assert_eq!(
            detect(&[("SHELL", "/bin/zsh"), ("FISH_VERSION", "3.7")]),
            Shell::Posix
        );
        assert_eq!(
            detect(&[("SHELL", "/opt/microsoft/powershell/7/pwsh")]),
            Shell::Pwsh
        );
        assert_eq!(detect(&[("FISH_VERSION", "3.7")]), Shell::Fish);
        assert_eq!(detect(&[("BASH_VERSION", "5.2")]), Shell::Posix);
        assert_eq!(
            detect(&[("POWERSHELL_DISTRIBUTION_CHANNEL", "PSDocker")]),
            Shell::Pwsh
        );
        if !cfg!(windows) {
            assert_eq!(detect(&[]), Shell::Posix);
        }
    }

    fn join(paths: &[&str]) -> std::ffi::OsString {
        std::env::join_paths(paths).unwrap()
    }

    #[test]
    fn composition_puts_managed_first_dedupes_and_defaults_to_kube_config() {
        let m = p("/h/.config/tka/kubeconfig/tka/prod.yaml");
        assert_eq!(
            compose(std::slice::from_ref(&m), None, Some(Path::new("/h"))),
            vec![m.clone(), p("/h/.kube/config")]
        );
        // An empty variable counts as unset.
        assert_eq!(
            compose(
                std::slice::from_ref(&m),
                Some(OsStr::new("")),
                Some(Path::new("/h"))
            ),
            vec![m.clone(), p("/h/.kube/config")]
        );
        let current = join(&["/x/a", m.to_str().unwrap(), "/x/b", "/x/a"]);
        assert_eq!(
            compose(
                std::slice::from_ref(&m),
                Some(&current),
                Some(Path::new("/h"))
            ),
            vec![m.clone(), p("/x/a"), p("/x/b")]
        );
        assert_eq!(compose(std::slice::from_ref(&m), None, None), vec![m]);
    }

    #[test]
    fn cleanup_removes_this_servers_files_only() {
        let dir = p("/h/.config/tka/kubeconfig/tka.ts.net");
        let removed = vec![dir.join("prod.yaml")];
        let current = join(&[
            "/h/.config/tka/kubeconfig/tka.ts.net/prod.yaml",
            "/h/.config/tka/kubeconfig/tka.ts.net/old.yaml",
            "/h/.config/tka/kubeconfig/other.ts.net/x.yaml",
            "/h/.kube/config",
            "/h/.kube/config",
        ]);
        assert_eq!(
            cleanup(Some(&current), &removed, &dir),
            vec![
                p("/h/.config/tka/kubeconfig/other.ts.net/x.yaml"),
                p("/h/.kube/config")
            ]
        );
        assert!(cleanup(None, &removed, &dir).is_empty());
        let only = join(&["/h/.config/tka/kubeconfig/tka.ts.net/prod.yaml"]);
        assert_eq!(
            export_line(Shell::Posix, &cleanup(Some(&only), &removed, &dir)),
            "unset KUBECONFIG"
        );
    }

    #[test]
    fn exec_users_are_found_and_pinned_to_the_reached_server() {
        let mut doc = serde_json::json!({"users": [
            {"name": "a", "user": {"exec": {"command": "tka",
                "args": ["credential", "--server", "https://tka.other", "--cluster", "prod"]},
                "extensions": [{"name": MANAGED_EXTENSION, "extension": {"server": "https://tka.other"}}]}},
            {"name": "b", "user": {"token": "t"}},
            {"name": "c", "user": {"exec": {"command": "aws", "args": ["eks", "--server", "x"]}}}
        ]});
        pin_exec_server(&mut doc, "http://127.0.0.1:8080");
        assert_eq!(
            exec_targets(&doc),
            vec![("http://127.0.0.1:8080".to_string(), "prod".to_string())]
        );
        assert_eq!(
            doc["users"][2]["user"]["exec"]["args"][2], "x",
            "foreign plugins untouched"
        );
        assert_eq!(
            doc["users"][0]["user"]["extensions"][0]["extension"]["server"],
            "http://127.0.0.1:8080",
            "the managed extension names the reached server too"
        );
        assert_eq!(
            doc["users"][1]["user"],
            serde_json::json!({"token": "t"}),
            "token users untouched"
        );
    }

    #[test]
    fn managed_path_layout_is_sanitised() {
        let root = Path::new("/r");
        assert_eq!(
            managed_path(root, "tka.example.ts.net", "prod-cluster"),
            p("/r/tka.example.ts.net/prod-cluster.yaml")
        );
        assert_eq!(
            managed_path(root, "127.0.0.1_8080", "../../etc/passwd"),
            p("/r/127.0.0.1_8080/.._.._etc_passwd.yaml")
        );
        assert_eq!(managed_path(root, "..", "a:b"), p("/r/_../a_b.yaml"));
        assert_eq!(safe_file_name(""), "_");
    }

    #[cfg(unix)]
    #[test]
    fn atomic_write_modes_and_removal() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tka").join("kubeconfig");
        let path = managed_path(&root, "tka.ts.net", "prod");
        write_atomic(&root, &path, b"first").unwrap();
        write_atomic(&root, &path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&root), 0o700);
        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("prod.yaml")]);

        // A pre-existing, too open directory is tightened.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        write_atomic(&root, &managed_path(&root, "tka.ts.net", "dev"), b"x").unwrap();
        assert_eq!(mode(&root), 0o700);

        fs::write(server_dir(&root, "tka.ts.net").join("notes.txt"), b"keep").unwrap();
        let removed = remove_server_files(&root, "tka.ts.net").unwrap();
        assert_eq!(
            removed,
            vec![managed_path(&root, "tka.ts.net", "dev"), path.clone()]
        );
        assert!(!path.exists());
        assert!(server_dir(&root, "tka.ts.net").join("notes.txt").exists());
        assert!(remove_server_files(&root, "missing").unwrap().is_empty());
    }
}
