//! From configuration to a running tailnet side: the identity backend (own supervised tailscaled or an
//! existing daemon), the listener(s) tailnet connections arrive on, and TLS.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::{StartError, start_error};
use crate::api::tls::{self, CertSource, CurrentCert};
use crate::config::{Backend, Config, TlsMode};
use crate::identity::tailscaled::TailscaledIdentity;
use crate::identity::tailscaled::localapi::LocalApi;
use crate::identity::tailscaled::supervisor::{self, DaemonSettings};
use crate::identity::{BackendStatus, Identity};

pub struct Tailnet {
    pub identity: Arc<TailscaledIdentity>,
    /// The supervisor of our own tailscaled; ends with an error when the daemon keeps dying.
    pub supervisor: Option<JoinHandle<Result<(), String>>>,
    /// Whether tka-server runs tailscaled itself (always userspace networking).
    pub supervised: bool,
    stop: watch::Sender<bool>,
}

/// The auth key: `tailscale.authKeyFile`, else `TS_AUTHKEY` (legacy `TS_AUTH_KEY`).
fn auth_key(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, StartError> {
    let file = &config.tailscale.auth_key_file;
    if !file.as_os_str().is_empty() {
        let key = std::fs::read_to_string(file).map_err(|e| {
            start_error(
                format!("tailscale.authKeyFile {}: {e}", file.display()),
                "mount the auth key file or unset the key",
            )
        })?;
        return Ok(Some(key.trim().to_string()));
    }
    Ok(env("TS_AUTHKEY")
        .or_else(|| env("TS_AUTH_KEY"))
        .filter(|k| !k.trim().is_empty()))
}

impl Tailnet {
    /// Attaches to or starts tailscaled and waits up to `tailscale.startTimeout` for it to be `Running`; a
    /// slower start is not fatal: `/ready` reports it and the API answers 503 meanwhile.
    pub async fn start(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Tailnet, StartError> {
        let ts = &config.tailscale;
        if ts.backend == Backend::Embedded {
            return Err(start_error(
                "the embedded tailnet backend is not part of this build",
                "use tailscale.backend: tailscaled (the default)",
            ));
        }
        let (stop, stop_rx) = watch::channel(false);
        let supervised = ts.socket.as_os_str().is_empty();
        let (socket, supervisor) = if supervised {
            let settings = DaemonSettings {
                tailscaled: ts.tailscaled_path.clone(),
                run_dir: ts.run_dir.clone(),
                state_dir: ts.state_dir.clone(),
                state_secret: Some(ts.state_secret.clone()).filter(|s| !s.is_empty()),
                control_url: Some(ts.control_url.clone()).filter(|s| !s.is_empty()),
                hostname: ts.hostname.clone(),
                auth_key: auth_key(config, env)?,
                upload_logs: ts.upload_logs,
            };
            if !ts.tags.is_empty() {
                tracing::warn!(
                    "tailscale.tags is ignored in supervised mode: tags come from the auth key"
                );
            }
            settings.prepare().map_err(|e| {
                start_error(e, "tailscale.runDir must be a writable tmpfs or emptyDir")
            })?;
            let socket = settings.socket();
            (
                socket,
                Some(tokio::spawn(supervisor::supervise(settings, stop_rx))),
            )
        } else {
            (ts.socket.clone(), None)
        };
        let identity = TailscaledIdentity::start(LocalApi::new(&socket));
        identity.allow_self_connections(ts.allow_self_connections);
        let status = identity.wait_running(ts.start_timeout.as_std()).await;
        if status.state != crate::identity::BackendState::Running {
            tracing::warn!(state = ?status.state, socket = %socket.display(), "tailnet not running yet (tailnet_not_running); serving 503 until it is");
        } else {
            check_names(config, &status);
        }
        Ok(Tailnet {
            identity,
            supervisor,
            supervised,
            stop,
        })
    }

    /// Stops our own tailscaled at once (SIGKILL, no grace): after leadership is lost a standby may already be
    /// starting the same node. Dropping the supervisor drops its child, which is spawned `kill_on_drop`; the
    /// signal has been sent when this returns. An external daemon is left alone.
    pub async fn kill(self) {
        if let Some(s) = self.supervisor {
            s.abort();
            let _ = s.await;
        }
    }

    /// Stops our own tailscaled (SIGTERM, 5 s, SIGKILL); an external daemon is left alone.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Some(s) = self.supervisor {
            let _ = s.await;
        }
    }
}

/// External daemons are not managed, only compared.
fn check_names(config: &Config, status: &BackendStatus) {
    let tailnet = &config.tailscale.tailnet;
    if !tailnet.is_empty()
        && !status.magic_dns_suffix.is_empty()
        && *tailnet != status.magic_dns_suffix
    {
        tracing::warn!(configured = %tailnet, actual = %status.magic_dns_suffix, "tailscale.tailnet differs from the node's MagicDNS suffix");
    }
    let host = status.self_fqdn.split('.').next().unwrap_or_default();
    if !host.is_empty() && host != config.tailscale.hostname {
        tracing::warn!(configured = %config.tailscale.hostname, actual = %host, "tailscale.hostname differs from the node's name");
    }
}

/// Binds the API listener(s). In userspace mode tailscaled forwards tailnet connections to the same port on
/// loopback; with a kernel TUN the node's tailnet IPs are local addresses and are bound directly.
pub async fn listeners(config: &Config, tailnet: &Tailnet) -> Result<Vec<TcpListener>, StartError> {
    let port = config.tailscale.port;
    let configured: Vec<IpAddr> = config
        .server
        .listen_addresses
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    let mut out = Vec::new();
    if !configured.is_empty() {
        for ip in configured {
            out.push(bind(SocketAddr::new(ip, port)).await?);
        }
        return Ok(out);
    }
    if !tailnet.supervised {
        // A TUN daemon: its tailnet IPs are ours to bind (EADDRNOTAVAIL otherwise, i.e. userspace).
        for ip in tailnet.identity.status().tailnet_ips {
            if let Ok(l) = TcpListener::bind(SocketAddr::new(ip, port)).await {
                out.push(l);
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
    }
    out.push(bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)).await?);
    if let Ok(l) = TcpListener::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)).await {
        out.push(l);
    }
    Ok(out)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            start_error(
                format!("cannot bind {addr}: {e}"),
                "ports below 1024 need net.ipv4.ip_unprivileged_port_start <= the port in this network namespace \
                 (a Pod Security safe sysctl; containerd >= 2.0 sets 0), or CAP_NET_BIND_SERVICE",
            )
        } else {
            start_error(format!("cannot bind {addr}: {e}"), "is another process using the port? see server.listenAddresses")
        }
    })
}

/// TLS per `tls.mode`: `auto` = port 443 ⇒ files when `tls.certFile` is set, else tailscale; other ports ⇒ off.
/// The API's TLS (when it serves https): the acceptor and the certificate `/ready` checks.
pub type Tls = Option<(TlsAcceptor, Arc<CurrentCert>)>;

pub async fn tls(config: &Config, tailnet: &Tailnet) -> Result<Tls, StartError> {
    let t = &config.tls;
    let mode = match t.mode {
        TlsMode::Auto if config.tailscale.port != 443 => TlsMode::Off,
        TlsMode::Auto if !t.cert_file.as_os_str().is_empty() => TlsMode::Files,
        TlsMode::Auto => TlsMode::Tailscale,
        m => m,
    };
    let source = match mode {
        TlsMode::Off | TlsMode::Auto => return Ok(None),
        TlsMode::Files => CertSource::Files {
            cert: t.cert_file.clone(),
            key: t.key_file.clone(),
        },
        TlsMode::Tailscale => CertSource::Tailscale {
            api: tailnet.identity.localapi().clone(),
        },
    };
    let fqdn = tailnet.identity.status().self_fqdn;
    tls::start(source, fqdn).await.map(Some).map_err(|e| {
        start_error(
            e,
            "check tls.certFile and tls.keyFile (PEM, chain allowed, PKCS#8/RSA/EC key)",
        )
    })
}
