//! The `tailscaled` backend: WhoIs and status through the LocalAPI of a Go
//! tailscaled, either supervised by tka-server or an existing daemon (sidecar or host).

pub mod localapi;
#[cfg(test)]
mod peer_addr_tests;
pub mod supervisor;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use self::localapi::{LocalApi, LocalApiError};
use super::{BackendState, BackendStatus, Identity, IdentityError, PeerIdentity};

/// How often the cached status (used by `/ready` and metrics) is refreshed.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

pub struct TailscaledIdentity {
    api: LocalApi,
    status: RwLock<BackendStatus>,
    /// `tailscale.allowSelfConnections`: accept callers on this server's own node.
    allow_self: AtomicBool,
}

fn stopped() -> BackendStatus {
    BackendStatus {
        state: BackendState::Stopped,
        self_fqdn: String::new(),
        self_stable_id: String::new(),
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
            allow_self: AtomicBool::new(false),
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

    /// `tailscale.allowSelfConnections`: also identify connections coming from this server's own node
    /// (refused by default, see [`crate::identity::screen_own_node`]).
    pub fn allow_self_connections(&self, allow: bool) {
        self.allow_self.store(allow, Ordering::SeqCst);
    }

    /// This node's stable ID: the polled status, else asked now. Unknown is an error, never "anyone".
    async fn own_stable_id(&self) -> Result<String, IdentityError> {
        let cached = self.status().self_stable_id;
        if !cached.is_empty() {
            return Ok(cached);
        }
        let fresh = self
            .api
            .status()
            .await
            .map_err(|e| IdentityError::Unavailable(e.to_string()))?
            .to_backend_status()
            .self_stable_id;
        if fresh.is_empty() {
            return Err(IdentityError::Unavailable(
                "tailscaled does not report this node's stable ID yet".into(),
            ));
        }
        Ok(fresh)
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
        let peer = self.api.whois(remote).await.map_err(|e| match e {
            LocalApiError::Connect { .. }
            | LocalApiError::Call { .. }
            | LocalApiError::Status { .. } => IdentityError::Unavailable(e.to_string()),
        })?;
        let Some(peer) = peer else {
            return Ok(None);
        };
        let allow = self.allow_self.load(Ordering::SeqCst);
        if allow {
            return Ok(Some(peer));
        }
        let own = self.own_stable_id().await?;
        let node = peer.node_fqdn.clone();
        let screened = crate::identity::screen_own_node(peer, &own, allow);
        if screened.is_none() {
            tracing::warn!(%remote, %node, "refused a connection from this server's own tailnet node (a local process, not a tailnet user); set tailscale.allowSelfConnections to allow it");
        }
        Ok(screened)
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;

    /// A stand-in daemon on a unix socket: this node is `nSELF` at 100.64.0.2; 100.64.0.1 is alice's laptop.
    fn fake_daemon(sock: &std::path::Path) {
        let listener = tokio::net::UnixListener::bind(sock).unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let node = |id: &str, name: &str, ip: &str| {
                            format!(
                                r#"{{"Node":{{"StableID":"{id}","Name":"{name}.","Addresses":["{ip}/32"]}},
                               "UserProfile":{{"ID":1,"LoginName":"alice@example.com"}},"CapMap":{{}}}}"#
                            )
                        };
                        let q = req.uri().query().unwrap_or_default().to_string();
                        let (code, body) = match req.uri().path() {
                        "/localapi/v0/status" => (
                            200,
                            r#"{"BackendState":"Running","Self":{"ID":"nSELF","DNSName":"tka.tailnet.test."}}"#
                                .to_string(),
                        ),
                        "/localapi/v0/whois" if q.starts_with("addr=100.64.0.2:") => {
                            (200, node("nSELF", "tka.tailnet.test", "100.64.0.2"))
                        }
                        "/localapi/v0/whois" if q.starts_with("addr=100.64.0.1:") => {
                            (200, node("nLAPTOP", "laptop.tailnet.test", "100.64.0.1"))
                        }
                        _ => (404, String::new()),
                    };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(code)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
    }

    #[tokio::test]
    async fn connections_from_the_servers_own_node_are_not_identified() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("tailscaled.sock");
        fake_daemon(&sock);
        let id = TailscaledIdentity::start(LocalApi::new(&sock));
        let laptop = id.whois("100.64.0.1:40000".parse().unwrap()).await.unwrap();
        assert_eq!(laptop.unwrap().node_stable_id, "nLAPTOP");
        // A local process connecting to the node's own address is WhoIs'd as the node: refused.
        let own = id.whois("100.64.0.2:40001".parse().unwrap()).await.unwrap();
        assert!(own.is_none(), "{own:?}");
        id.allow_self_connections(true);
        let own = id.whois("100.64.0.2:40001".parse().unwrap()).await.unwrap();
        assert_eq!(own.unwrap().node_fqdn, "tka.tailnet.test");
        assert!(
            id.whois("100.64.0.9:1".parse().unwrap())
                .await
                .unwrap()
                .is_none()
        );
    }
}
