//! The `static` backend: a fixed map from caller IP to identity. For unit and integration tests, where each
//! test user connects from its own loopback address (127.0.0.x), so identity still comes from the
//! connection, exactly as with tailscaled.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::RwLock;

use super::{BackendState, BackendStatus, Identity, IdentityError, PeerIdentity};

#[derive(Default)]
pub struct StaticIdentity {
    peers: RwLock<HashMap<IpAddr, PeerIdentity>>,
    /// Simulates a backend outage.
    down: std::sync::atomic::AtomicBool,
}

impl StaticIdentity {
    pub fn new() -> StaticIdentity {
        StaticIdentity::default()
    }

    /// Adds or replaces the identity of `ip` (tests change grants this way, like a tailnet policy edit).
    pub fn set(&self, ip: IpAddr, identity: PeerIdentity) {
        self.peers
            .write()
            .expect("lock poisoned")
            .insert(ip, identity);
    }

    pub fn remove(&self, ip: IpAddr) {
        self.peers.write().expect("lock poisoned").remove(&ip);
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Identity for StaticIdentity {
    fn backend(&self) -> &'static str {
        "static"
    }

    fn status(&self) -> BackendStatus {
        let down = self.down.load(std::sync::atomic::Ordering::SeqCst);
        BackendStatus {
            state: if down {
                BackendState::Stopped
            } else {
                BackendState::Running
            },
            self_fqdn: "tka.test.ts.net".into(),
            tailnet_ips: vec![],
            magic_dns_suffix: "test.ts.net".into(),
        }
    }

    async fn whois(&self, remote: SocketAddr) -> Result<Option<PeerIdentity>, IdentityError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(IdentityError::Unavailable(
                "static backend marked down".into(),
            ));
        }
        Ok(self
            .peers
            .read()
            .expect("lock poisoned")
            .get(&remote.ip())
            .cloned())
    }
}
