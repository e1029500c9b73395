//! The `tailscaled` backend (spec: identity.md §2): WhoIs and status through the LocalAPI of a Go
//! tailscaled, either supervised by tka-server or an existing daemon (sidecar or host).

pub mod localapi;
#[cfg(test)]
mod peer_addr_tests;
pub mod supervisor;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use self::localapi::{LocalApi, LocalApiError};
use super::{BackendState, BackendStatus, Identity, IdentityError, PeerIdentity};

/// How often the cached status (used by `/ready` and metrics) is refreshed.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

pub struct TailscaledIdentity {
    api: LocalApi,
    status: RwLock<BackendStatus>,
}

fn stopped() -> BackendStatus {
    BackendStatus {
        state: BackendState::Stopped,
        self_fqdn: String::new(),
        tailnet_ips: vec![],
        magic_dns_suffix: String::new(),
    }
}

impl TailscaledIdentity {
    /// Starts polling the daemon's status in the background; a daemon that is down is reported as
    /// `Stopped` (not ready) and is picked up again as soon as it answers.
    pub fn start(api: LocalApi) -> Arc<TailscaledIdentity> {
        let me = Arc::new(TailscaledIdentity {
            api,
            status: RwLock::new(stopped()),
        });
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            let mut last = None;
            while let Some(me) = weak.upgrade() {
                let fresh = match me.api.status().await {
                    Ok(s) => s.to_backend_status(),
                    Err(e) => {
                        tracing::debug!(error = %e, "tailscaled status");
                        stopped()
                    }
                };
                if last != Some(fresh.state) {
                    tracing::info!(state = ?fresh.state, node = %fresh.self_fqdn, "tailnet backend state");
                    last = Some(fresh.state);
                }
                *me.status.write().expect("lock poisoned") = fresh;
                drop(me);
                tokio::time::sleep(STATUS_INTERVAL).await;
            }
        });
        me
    }

    pub fn localapi(&self) -> &LocalApi {
        &self.api
    }

    /// Waits until the daemon reports `Running`, at most `timeout`. Returns the last status either way.
    pub async fn wait_running(&self, timeout: Duration) -> BackendStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(s) = self.api.status().await {
                let s = s.to_backend_status();
                *self.status.write().expect("lock poisoned") = s.clone();
                if s.state == BackendState::Running || tokio::time::Instant::now() >= deadline {
                    return s;
                }
            } else if tokio::time::Instant::now() >= deadline {
                return self.status();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[async_trait::async_trait]
impl Identity for TailscaledIdentity {
    fn backend(&self) -> &'static str {
        "tailscaled"
    }

    fn status(&self) -> BackendStatus {
        self.status.read().expect("lock poisoned").clone()
    }

    async fn whois(&self, remote: SocketAddr) -> Result<Option<PeerIdentity>, IdentityError> {
        self.api.whois(remote).await.map_err(|e| match e {
            LocalApiError::Connect { .. }
            | LocalApiError::Call { .. }
            | LocalApiError::Status { .. } => IdentityError::Unavailable(e.to_string()),
        })
    }

    async fn dial(&self, host: &str, port: u16) -> std::io::Result<Box<dyn super::PeerStream>> {
        Ok(Box::new(self.api.dial(host, port).await?))
    }

    /// In userspace mode tailscaled forwards every tailnet connection from loopback, so the remote address
    /// names no node; the daemon's WhoIs maps the forwarded connection to its peer. One lookup per
    /// connection; a connection it cannot place (a local process, a daemon that is down) keeps the loopback
    /// address, so all of those share one peer's limits.
    async fn peer_addr(&self, remote: SocketAddr) -> std::net::IpAddr {
        if !remote.ip().is_loopback() {
            return remote.ip();
        }
        // tailscaled records the mapping just after its connection to us is established, so a lookup made
        // the moment we accept can come too early: one more try a little later.
        for pause in [Duration::ZERO, Duration::from_millis(10)] {
            tokio::time::sleep(pause).await;
            if let Ok(Some(peer)) = self.api.whois(remote).await {
                return peer.node_ip.unwrap_or(remote.ip());
            }
        }
        remote.ip()
    }
}
