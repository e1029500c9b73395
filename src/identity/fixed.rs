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
    /// Tailnet names this node resolves (MagicDNS stand-in) → where the peer listens.
    hosts: RwLock<HashMap<String, SocketAddr>>,
    /// This node's own name and tailnet address: outbound connections leave from it, so the peer's WhoIs
    /// (its own static map) sees this node, as on a tailnet.
    me: RwLock<Option<(String, IpAddr)>>,
    /// WhoIs calls answered so far (tests check what runs before identification).
    whois_calls: std::sync::atomic::AtomicU64,
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

    /// Makes `fqdn` reachable at `addr` (any port asked for: tests bind random ports).
    pub fn set_host(&self, fqdn: &str, addr: SocketAddr) {
        self.hosts
            .write()
            .expect("lock poisoned")
            .insert(fqdn.to_ascii_lowercase(), addr);
    }

    /// This node's own FQDN (`status().self_fqdn`) and the address its outbound connections use.
    pub fn set_self(&self, fqdn: &str, ip: IpAddr) {
        *self.me.write().expect("lock poisoned") = Some((fqdn.to_string(), ip));
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many WhoIs calls this backend has answered.
    pub fn whois_calls(&self) -> u64 {
        self.whois_calls.load(std::sync::atomic::Ordering::SeqCst)
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
            self_fqdn: self
                .me
                .read()
                .expect("lock poisoned")
                .as_ref()
                .map_or_else(|| "tka.test.ts.net".into(), |(f, _)| f.clone()),
            self_stable_id: String::new(),
            tailnet_ips: vec![],
            magic_dns_suffix: "test.ts.net".into(),
        }
    }

    async fn whois(&self, remote: SocketAddr) -> Result<Option<PeerIdentity>, IdentityError> {
        self.whois_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
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

    async fn dial(&self, host: &str, port: u16) -> std::io::Result<Box<dyn super::PeerStream>> {
        let target = self
            .hosts
            .read()
            .expect("lock poisoned")
            .get(&host.trim_end_matches('.').to_ascii_lowercase())
            .copied();
        let Some(addr) = target else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no tailnet peer named {host}:{port}"),
            ));
        };
        let socket = tokio::net::TcpSocket::new_v4()?;
        if let Some((_, ip)) = self.me.read().expect("lock poisoned").clone() {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        Ok(Box::new(socket.connect(addr).await?))
    }
}
