//! The tailnet's MagicDNS suffix from the local Tailscale daemon, for when `tailscale.tailnet` is
//! not configured: `tka` becomes `tka.<suffix>`, the name on the server's certificate.
//!
//! One `GET /localapi/v0/status` over tailscaled's unix socket (any local user may read it). The socket is
//! `--socket` / `tailscale.socket` when set, else the platform default, as tailscale's own CLI finds it
//! (`paths.DefaultTailscaledSocket`). Only commands that talk to the server with a short host name ask; the exec
//! plugin's kubeconfigs carry the full URL, so `tka credential` never does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::identity::tailscaled::localapi::LocalApi;

/// A healthy daemon answers in milliseconds; a wedged one must not hold up the command.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// tailscaled's socket when nothing is configured: macOS's open-source daemon and everything else (Windows
/// uses a named pipe, which this client does not speak).
pub fn default_socket() -> Option<PathBuf> {
    if cfg!(windows) {
        None
    } else if cfg!(target_os = "macos") {
        Some("/var/run/tailscaled.socket".into())
    } else {
        Some("/var/run/tailscale/tailscaled.sock".into())
    }
}

/// The MagicDNS suffix known to the daemon at `socket` (`None`: the platform default), or why there is none.
pub async fn lookup(socket: Option<&Path>) -> Result<String, String> {
    let socket = socket
        .map(Path::to_path_buf)
        .or_else(default_socket)
        .ok_or("no tailscaled socket on this platform; set --socket")?;
    let api = LocalApi::new(&socket);
    let status = tokio::time::timeout(LOOKUP_TIMEOUT, api.status())
        .await
        .map_err(|_| format!("tailscaled at {} did not answer", socket.display()))?
        .map_err(|e| e.to_string())?;
    match status.magic_dns_suffix() {
        "" => Err(format!(
            "tailscaled at {} knows no MagicDNS suffix (not logged in, or MagicDNS is off)",
            socket.display()
        )),
        suffix => Ok(suffix.to_string()),
    }
}
