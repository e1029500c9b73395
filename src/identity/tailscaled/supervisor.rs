//! Supervised mode: tka-server runs its own `tailscaled` with userspace networking
//! (no NET_ADMIN, non-root), restarts it when it dies, and stops it on shutdown.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// What the child is started with.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    pub tailscaled: PathBuf,
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    /// `--state=kube:<secret>` instead of a state file.
    pub state_secret: Option<String>,
    pub control_url: Option<String>,
    pub hostname: String,
    pub auth_key: Option<String>,
    pub upload_logs: bool,
}

/// The LocalAPI socket of a supervised tailscaled in `run_dir` (also what `tka-server doctor` asks).
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("tailscaled.sock")
}

impl DaemonSettings {
    pub fn socket(&self) -> PathBuf {
        socket_path(&self.run_dir)
    }

    /// The config file (`Version: alpha0`). The auth key goes to its own 0600 file referenced as `file:`, so
    /// it never appears on a command line or in the config. Tags come from the auth key: tailscaled's config
    /// file has no tags field, and headscale refuses advertised tags with a pre-auth key.
    pub fn config_json(&self) -> serde_json::Value {
        let mut c = serde_json::json!({
            "Version": "alpha0",
            "Locked": false,
            "Hostname": self.hostname,
            "Enabled": true,
            "acceptDNS": false,
            "acceptRoutes": false,
        });
        if let Some(url) = &self.control_url {
            c["ServerURL"] = url.clone().into();
        }
        if self.auth_key.is_some() {
            c["AuthKey"] = format!("file:{}", self.run_dir.join("authkey").display()).into();
        }
        c
    }

    pub fn args(&self) -> Vec<String> {
        let state = match &self.state_secret {
            Some(secret) => format!("kube:{secret}"),
            None => self
                .state_dir
                .join("tailscaled.state")
                .display()
                .to_string(),
        };
        let mut args = vec![
            "--tun=userspace-networking".to_string(),
            format!("--socket={}", self.socket().display()),
            format!("--statedir={}", self.state_dir.display()),
            format!("--state={state}"),
            format!(
                "--config={}",
                self.run_dir.join("tailscaled.conf").display()
            ),
        ];
        if !self.upload_logs {
            args.push("--no-logs-no-support".into());
        }
        args
    }

    /// Prepares the run directory (private, see [`private_run_dir`]), then writes config and auth key as new
    /// 0600 files. Fails fast with advice when the directories are not writable (typically a volume without
    /// `fsGroup: 65532`).
    pub fn prepare(&self) -> Result<(), String> {
        use std::os::unix::fs::DirBuilderExt;
        private_run_dir(&self.run_dir)?;
        if self.state_secret.is_none() {
            let dir = &self.state_dir;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| {
                format!("cannot create tailscale.stateDir {}: {e} (is it writable by this user? in Kubernetes set fsGroup: 65532)", dir.display())
            })?;
            let probe = dir.join(".tka-write-test");
            std::fs::write(&probe, b"").map_err(|e| {
                format!(
                    "tailscale.stateDir {} is not writable: {e} (in Kubernetes set fsGroup: 65532)",
                    dir.display()
                )
            })?;
            let _ = std::fs::remove_file(probe);
        }
        if let Some(key) = &self.auth_key {
            write_secret(&self.run_dir.join("authkey"), key.trim().as_bytes())?;
        }
        write_secret(
            &self.run_dir.join("tailscaled.conf"),
            self.config_json().to_string().as_bytes(),
        )
    }
}

/// The run directory holds the auth key and the LocalAPI socket whose WhoIs answers decide who a caller is, so
/// nobody but this uid may create, replace or read anything in it. It is created 0700 when missing; an
/// existing one must be a real directory (not a symlink), owned by this uid, without group/other access.
/// Nothing is tightened silently: a directory someone else could have prepared is refused.
pub fn private_run_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            format!(
                "cannot create tailscale.runDir {}: {e} (is it writable by this user? in Kubernetes set fsGroup: 65532)",
                dir.display()
            )
        })?;
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("tailscale.runDir {}: {e}", dir.display()))?;
    let uid = crate::config::current_uid();
    let problem = if meta.file_type().is_symlink() {
        Some("is a symbolic link".to_string())
    } else if !meta.is_dir() {
        Some("is not a directory".to_string())
    } else if meta.uid() != uid {
        Some(format!(
            "is owned by uid {}, not by this server's uid {uid}",
            meta.uid()
        ))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!(
            "has mode {:04o}: group and others must have no access",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(format!(
            "tailscale.runDir {} {p}; it holds the auth key and the tailscaled socket, so it must be a directory \
             private to this user (remove it, or point tailscale.runDir at a directory owned by uid {uid} with \
             mode 0700)",
            dir.display()
        )),
    }
}

/// Writes a secret file as a new 0600 file: created exclusively and never through a symlink. A regular file
/// left by an earlier run is replaced; a symlink or anything else at that name is refused.
pub fn write_secret(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(format!(
                "{} is a symbolic link: refusing to write a secret through it (remove it; tailscale.runDir must \
                 contain only what tka-server writes)",
                path.display()
            ));
        }
        Ok(m) if !m.is_file() => {
            return Err(format!(
                "{} exists and is not a regular file: remove it",
                path.display()
            ));
        }
        Ok(_) => std::fs::remove_file(path)
            .map_err(|e| format!("cannot replace {}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("cannot write {} in tailscale.runDir: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, data)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Restart policy: backoff 1 s → 30 s; more than this many exits within the window is fatal.
const MAX_EXITS: usize = 5;
const EXIT_WINDOW: Duration = Duration::from_secs(300);

/// Runs and restarts tailscaled until `stop` turns true; then SIGTERM, 5 s, SIGKILL. Returns an error when it
/// keeps dying (the caller exits non-zero so Kubernetes can restart the pod).
pub async fn supervise(
    settings: DaemonSettings,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut exits: Vec<Instant> = Vec::new();
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut child = spawn(&settings)?;
        let started = Instant::now();
        tracing::info!(pid = child.id(), socket = %settings.socket().display(), "tailscaled started");
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| e.to_string())?;
                tracing::warn!(%status, "tailscaled exited; restarting");
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_secs(1);
                }
                exits.retain(|t| t.elapsed() < EXIT_WINDOW);
                exits.push(Instant::now());
                if exits.len() > MAX_EXITS {
                    return Err(format!("tailscaled exited {} times within 5 minutes; giving up", exits.len()));
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped(&mut stop) => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            _ = stopped(&mut stop) => {
                terminate(&mut child).await;
                return Ok(());
            }
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn spawn(settings: &DaemonSettings) -> Result<Child, String> {
    let mut command = Command::new(&settings.tailscaled);
    // If tka-server dies without its orderly shutdown (SIGKILL, OOM), its tailscaled must die too: an orphan
    // would keep the node key online while a standby takes over the same identity from the shared state.
    // The signal follows the forking thread, a Tokio worker that lives as long as the runtime.
    #[cfg(target_os = "linux")]
    unsafe {
        let parent = libc::getpid();
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != parent
            {
                return Err(std::io::Error::other("parent gone before exec"));
            }
            Ok(())
        });
    }
    let mut child = command
        .args(settings.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {}: {e} (set tailscale.tailscaledPath)",
                settings.tailscaled.display()
            )
        })?;
    // Re-log the daemon's output at debug level under its own target.
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child.stderr.take().map(|p| Box::new(p) as _),
    ]
    .into_iter()
    .flatten()
    {
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "tailscaled", "{line}");
            }
        });
    }
    Ok(child)
}

/// SIGTERM, up to 5 s to exit, then SIGKILL.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: sending a signal to our own child's pid has no memory-safety implications.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> DaemonSettings {
        DaemonSettings {
            tailscaled: "tailscaled".into(),
            run_dir: dir.join("run"),
            state_dir: dir.join("state"),
            state_secret: None,
            control_url: Some("http://10.77.0.1:8080".into()),
            hostname: "tka".into(),
            auth_key: Some("tskey-secret\n".into()),
            upload_logs: false,
        }
    }

    #[test]
    fn the_auth_key_is_in_a_0600_file_never_in_args_or_config() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        s.prepare().unwrap();
        let key = dir.path().join("run/authkey");
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "tskey-secret");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let conf = std::fs::read_to_string(dir.path().join("run/tailscaled.conf")).unwrap();
        assert!(
            !conf.contains("tskey") && conf.contains("file:") && conf.contains("\"ServerURL\"")
        );
        assert!(!s.args().join(" ").contains("tskey"));
        assert!(s.args().contains(&"--tun=userspace-networking".to_string()));
        assert!(s.args().contains(&"--no-logs-no-support".to_string()));
    }

    #[test]
    fn an_unwritable_state_dir_fails_fast_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.state_dir = "/proc/tka-not-writable".into();
        let err = s.prepare().unwrap_err();
        assert!(err.contains("fsGroup: 65532"), "{err}");
    }

    #[test]
    fn kube_state_uses_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.state_secret = Some("tka-tailscale-state".into());
        assert!(
            s.args()
                .contains(&"--state=kube:tka-tailscale-state".to_string())
        );
    }

    #[test]
    fn a_run_dir_others_can_write_is_refused_and_left_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        // Another local user got there first: a world-writable directory with a fake socket in it.
        std::fs::create_dir(&s.run_dir).unwrap();
        std::fs::set_permissions(&s.run_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = s.prepare().unwrap_err();
        assert!(
            err.contains("tailscale.runDir")
                && err.contains("mode 0777")
                && err.contains("private"),
            "{err}"
        );
        assert!(!s.run_dir.join("authkey").exists(), "no key written");
        assert_eq!(
            std::fs::metadata(&s.run_dir).unwrap().permissions().mode() & 0o777,
            0o777,
            "not silently tightened"
        );
        // Group access is refused as well.
        std::fs::set_permissions(&s.run_dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(s.prepare().unwrap_err().contains("mode 0750"));
        // A symlink to a private directory is refused too: its owner could re-point it at any time.
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::remove_dir(&s.run_dir).unwrap();
        std::os::unix::fs::symlink(&real, &s.run_dir).unwrap();
        assert!(s.prepare().unwrap_err().contains("is a symbolic link"));
    }

    #[test]
    fn a_directory_of_another_uid_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let (dir, owner) = if crate::config::current_uid() == 0 {
            // As root (CI containers): a private directory handed to another uid.
            let d = tmp.path().join("run");
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&d, Some(12345), None).unwrap();
            (d, 12345)
        } else {
            ("/".into(), 0)
        };
        let err = private_run_dir(&dir).unwrap_err();
        assert!(err.contains(&format!("is owned by uid {owner}")), "{err}");
    }

    #[test]
    fn a_symlinked_auth_key_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        private_run_dir(&s.run_dir).unwrap();
        let elsewhere = dir.path().join("attacker-readable");
        std::fs::write(&elsewhere, b"").unwrap();
        std::os::unix::fs::symlink(&elsewhere, s.run_dir.join("authkey")).unwrap();
        let err = s.prepare().unwrap_err();
        assert!(
            err.contains("authkey is a symbolic link") && err.contains("refusing"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(&elsewhere).unwrap(),
            b"",
            "nothing written through it"
        );
    }

    #[test]
    fn files_of_an_earlier_run_are_replaced_by_new_private_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        s.prepare().unwrap();
        let key = s.run_dir.join("authkey");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        s.prepare().unwrap();
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&s.run_dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
