//! Who is calling. Every tailnet-specific detail sits behind [`Identity`]; the API
//! and the controller only see [`PeerIdentity`], and identity comes only from the accepted connection's
//! address, never from a header.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

pub mod fixed;
pub mod tailscaled;

pub use fixed::StaticIdentity;

/// What the tailnet says about the peer behind one connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerIdentity {
    /// `UserProfile.LoginName`; `None` for backends that do not know users.
    pub login_name: Option<String>,
    pub display_name: Option<String>,
    pub user_id: Option<String>,
    /// Node FQDN without the trailing dot.
    pub node_fqdn: String,
    pub node_stable_id: String,
    pub node_ip: Option<IpAddr>,
    pub tags: Vec<String>,
    /// Capability name → raw JSON values (Tailscale `PeerCapMap`: what the caller may do towards this node).
    pub cap_map: BTreeMap<String, Vec<serde_json::Value>>,
    /// The connection came in through Funnel (public internet): never allowed.
    pub via_funnel: bool,
}

/// Backend state, as `/ready` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    Starting,
    NeedsLogin,
    Running,
    Stopped,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendStatus {
    pub state: BackendState,
    pub self_fqdn: String,
    /// This node's stable ID (LocalAPI status `Self.ID`); empty while unknown.
    pub self_stable_id: String,
    pub tailnet_ips: Vec<IpAddr>,
    pub magic_dns_suffix: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The backend cannot answer now (daemon down, socket missing): 503, never a guess.
    #[error("identity backend unavailable: {0}")]
    Unavailable(String),
}

/// Connections from this server's own node are not a caller the tailnet vouches for: with a kernel-TUN daemon on
/// a shared host, any local process reaching the node's own address is WhoIs'd as the node's owner (and in
/// userspace mode, anything that can dial through the daemon). So a peer whose node is the server's own node
/// (same stable ID, which a name or address change cannot fake) is treated as unknown, unless
/// `tailscale.allowSelfConnections` says otherwise. Pure; `own_stable_id` must be known (non-empty).
pub fn screen_own_node(
    peer: PeerIdentity,
    own_stable_id: &str,
    allow: bool,
) -> Option<PeerIdentity> {
    if allow || peer.node_stable_id != own_stable_id {
        Some(peer)
    } else {
        None
    }
}

/// An outbound byte stream to a tailnet peer (federation calls).
pub trait PeerStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> PeerStream for T {}

/// An identity backend: `tailscaled` (LocalAPI), `embedded`, or the fixed map used by tests.
#[async_trait::async_trait]
pub trait Identity: Send + Sync + 'static {
    /// Short backend name, for metrics and logs.
    fn backend(&self) -> &'static str;
    /// Current state of the node.
    fn status(&self) -> BackendStatus;
    /// `Ok(None)`: no such peer, or the server's own node ([`screen_own_node`]) (403 `unknown_peer`); `Err`:
    /// cannot tell now (503).
    async fn whois(&self, remote: SocketAddr) -> Result<Option<PeerIdentity>, IdentityError>;
    /// Outbound TCP to a tailnet peer; `host` may be a MagicDNS name. The default uses the host's own
    /// sockets (kernel TUN); backends in userspace mode route through the tailnet node instead.
    async fn dial(&self, host: &str, port: u16) -> std::io::Result<Box<dyn PeerStream>> {
        let s = tokio::net::TcpStream::connect((host, port)).await?;
        Ok(Box::new(s))
    }
    /// The tailnet address of the node behind a connection, as cheaply as the backend can tell; the key of the
    /// per-peer connection and request limits. By default the connection's remote address, which on a tailnet
    /// is the peer's own (WireGuard admits no other source address).
    async fn peer_addr(&self, remote: SocketAddr) -> IpAddr {
        remote.ip()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str) -> PeerIdentity {
        PeerIdentity {
            login_name: Some("alice@example.com".into()),
            node_fqdn: "laptop.tailnet.test".into(),
            node_stable_id: id.into(),
            ..PeerIdentity::default()
        }
    }

    #[test]
    fn the_servers_own_node_is_refused_unless_allowed() {
        assert_eq!(
            screen_own_node(peer("nOTHER"), "nSELF", false),
            Some(peer("nOTHER"))
        );
        assert_eq!(screen_own_node(peer("nSELF"), "nSELF", false), None);
        assert_eq!(
            screen_own_node(peer("nSELF"), "nSELF", true),
            Some(peer("nSELF"))
        );
    }
}
