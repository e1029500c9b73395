//! Supervised mode (spec: identity.md §2.1): tka-server runs its own `tailscaled` with userspace networking
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

    /// Writes the run directory (0700), config and auth key (0600). Fails fast with advice when the
    /// directories are not writable (typically a volume without `fsGroup: 65532`).
    pub fn prepare(&self) -> Result<(), String> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let mkdir = |dir: &Path, what: &str| {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| {
                format!("cannot create {what} {}: {e} (is it writable by this user? in Kubernetes set fsGroup: 65532)", dir.display())
            })
        };
        mkdir(&self.run_dir, "tailscale.runDir")?;
        if self.state_secret.is_none() {
            mkdir(&self.state_dir, "tailscale.stateDir")?;
            let probe = self.state_dir.join(".tka-write-test");
            std::fs::write(&probe, b"").map_err(|e| {
                format!(
                    "tailscale.stateDir {} is not writable: {e} (in Kubernetes set fsGroup: 65532)",
                    self.state_dir.display()
                )
            })?;
            let _ = std::fs::remove_file(probe);
        }
        let write = |path: PathBuf, data: &[u8]| -> Result<(), String> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("cannot write {} in tailscale.runDir: {e}", path.display()))?;
            std::io::Write::write_all(&mut f, data)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        if let Some(key) = &self.auth_key {
            write(self.run_dir.join("authkey"), key.trim().as_bytes())?;
        }
        write(
            self.run_dir.join("tailscaled.conf"),
            self.config_json().to_string().as_bytes(),
        )
    }
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
}
