//! A client of tailscaled's LocalAPI over its unix socket. tailscaled authorizes
//! callers by the socket's peer credentials; no secret is sent.
//!
//! One HTTP/1.1 connection per call: connecting to a unix socket costs microseconds, and a fresh connection
//! recovers by itself when tailscaled restarts (a pooled one would be dead).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::identity::{BackendState, BackendStatus, PeerIdentity};

/// Per-call limit, so a wedged daemon cannot hold a request forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LocalApiError {
    #[error("cannot reach tailscaled at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tailscaled LocalAPI {call}: {detail}")]
    Call { call: String, detail: String },
    #[error("tailscaled LocalAPI {call} answered {status}")]
    Status { call: String, status: u16 },
}

#[derive(Debug, Clone)]
pub struct LocalApi {
    socket: PathBuf,
}

/// `GET /localapi/v0/status`, the fields we use.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Status {
    #[serde(default)]
    pub backend_state: String,
    #[serde(default, rename = "Self")]
    pub self_node: Option<PeerStatus>,
    #[serde(default)]
    pub current_tailnet: Option<Tailnet>,
    #[serde(default)]
    pub cert_domains: Option<Vec<String>>,
    /// The tailnet's MagicDNS suffix (`tail1234.ts.net`); empty when MagicDNS is off.
    #[serde(default, rename = "MagicDNSSuffix")]
    pub magic_dns_suffix: String,
    /// User profiles by ID (`Self.UserID` names the node's owner); `null` before the node is logged in.
    #[serde(default)]
    pub user: Option<BTreeMap<String, UserProfile>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserProfile {
    #[serde(default)]
    pub login_name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PeerStatus {
    /// The node's stable ID (`tailcfg.StableNodeID`), as WhoIs reports it in `Node.StableID`.
    #[serde(default, rename = "ID")]
    pub id: String,
    #[serde(default, rename = "DNSName")]
    pub dns_name: String,
    #[serde(default, rename = "TailscaleIPs")]
    pub tailscale_ips: Option<Vec<IpAddr>>,
    /// Connected to the control server (for `Self`).
    #[serde(default)]
    pub online: Option<bool>,
    /// Key into [`Status::user`].
    #[serde(default, rename = "UserID")]
    pub user_id: serde_json::Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tailnet {
    #[serde(default, rename = "MagicDNSSuffix")]
    pub magic_dns_suffix: String,
    #[serde(default, rename = "MagicDNSEnabled")]
    pub magic_dns_enabled: Option<bool>,
}

impl Status {
    /// The login name of the node's owner (`Self.UserID` looked up in `User`); `None` when not logged in.
    pub fn login_of_self(&self) -> Option<&str> {
        let id = self.self_node.as_ref()?.user_id.to_string();
        let profile = self.user.as_ref()?.get(id.trim_matches('"'))?;
        Some(profile.login_name.as_str()).filter(|l| !l.is_empty())
    }

    /// The MagicDNS suffix without dots at either end: the top-level field, else the current tailnet's.
    pub fn magic_dns_suffix(&self) -> &str {
        let top = self.magic_dns_suffix.trim_matches('.');
        if !top.is_empty() {
            return top;
        }
        self.current_tailnet
            .as_ref()
            .map_or("", |t| t.magic_dns_suffix.trim_matches('.'))
    }

    pub fn to_backend_status(&self) -> BackendStatus {
        let state = match self.backend_state.as_str() {
            "Running" => BackendState::Running,
            "NeedsLogin" | "NeedsMachineAuth" => BackendState::NeedsLogin,
            "Stopped" => BackendState::Stopped,
            _ => BackendState::Starting,
        };
        let node = self.self_node.clone().unwrap_or_default();
        BackendStatus {
            state,
            self_fqdn: node.dns_name.trim_end_matches('.').to_string(),
            self_stable_id: node.id,
            tailnet_ips: node.tailscale_ips.unwrap_or_default(),
            magic_dns_suffix: self
                .current_tailnet
                .as_ref()
                .map(|t| t.magic_dns_suffix.clone())
                .unwrap_or_default(),
        }
    }
}

/// `GET /localapi/v0/whois`, the fields we use.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WhoIs {
    #[serde(default)]
    node: Option<WhoIsNode>,
    #[serde(default)]
    user_profile: Option<WhoIsUser>,
    #[serde(default)]
    cap_map: Option<BTreeMap<String, Option<Vec<serde_json::Value>>>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WhoIsNode {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "StableID")]
    stable_id: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    addresses: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WhoIsUser {
    #[serde(default, rename = "ID")]
    id: serde_json::Value,
    #[serde(default)]
    login_name: String,
    #[serde(default)]
    display_name: String,
}

/// Maps a WhoIs answer to the backend-neutral identity.
pub fn parse_whois(body: &[u8]) -> Result<PeerIdentity, String> {
    let w: WhoIs =
        serde_json::from_slice(body).map_err(|e| format!("undecodable whois answer: {e}"))?;
    let node = w.node.ok_or("whois answer without Node")?;
    let user = w.user_profile.unwrap_or_default();
    let node_ip = node
        .addresses
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a.split('/').next()?.parse::<IpAddr>().ok())
        .next();
    Ok(PeerIdentity {
        login_name: Some(user.login_name).filter(|l| !l.is_empty()),
        display_name: Some(user.display_name).filter(|d| !d.is_empty()),
        user_id: match user.id {
            serde_json::Value::Null => None,
            v => Some(v.to_string().trim_matches('"').to_string()),
        },
        node_fqdn: node.name.trim_end_matches('.').to_string(),
        node_stable_id: node.stable_id,
        node_ip,
        tags: node.tags.unwrap_or_default(),
        cap_map: w
            .cap_map
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect(),
        via_funnel: false,
    })
}

impl LocalApi {
    pub fn new(socket: impl Into<PathBuf>) -> LocalApi {
        LocalApi {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// One GET; returns status and body.
    async fn get(&self, path_and_query: &str) -> Result<(u16, Bytes), LocalApiError> {
        let call = path_and_query
            .split('?')
            .next()
            .unwrap_or(path_and_query)
            .to_string();
        let fut = async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|source| LocalApiError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| LocalApiError::Call {
                    call: call.clone(),
                    detail: e.to_string(),
                })?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let req = hyper::Request::get(path_and_query)
                .header(hyper::header::HOST, "local-tailscaled.sock")
                .header("Sec-Tailscale", "localapi")
                .body(Empty::<Bytes>::new())
                .expect("valid request");
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| LocalApiError::Call {
                    call: call.clone(),
                    detail: e.to_string(),
                })?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| LocalApiError::Call {
                    call: call.clone(),
                    detail: e.to_string(),
                })?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(CALL_TIMEOUT, fut)
            .await
            .unwrap_or_else(|_| {
                Err(LocalApiError::Call {
                    call: call.clone(),
                    detail: "timed out".into(),
                })
            })
    }

    pub async fn status(&self) -> Result<Status, LocalApiError> {
        let (code, body) = self.get("/localapi/v0/status").await?;
        if code != 200 {
            return Err(LocalApiError::Status {
                call: "status".into(),
                status: code,
            });
        }
        serde_json::from_slice(&body).map_err(|e| LocalApiError::Call {
            call: "status".into(),
            detail: e.to_string(),
        })
    }

    /// `Ok(None)` when tailscaled knows no peer at that address.
    /// `POST /localapi/v0/dial`: after `101 Switching Protocols` the connection is a raw stream to
    /// `host:port` through the tailnet (userspace mode cannot reach 100.x with the pod's own sockets;
    /// MagicDNS names are resolved inside tailscaled).
    pub async fn dial(
        &self,
        host: &str,
        port: u16,
    ) -> std::io::Result<TokioIo<hyper::upgrade::Upgraded>> {
        let io_err =
            |e: String| std::io::Error::other(format!("tailscaled dial {host}:{port}: {e}"));
        let stream = tokio::net::UnixStream::connect(&self.socket).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| io_err(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let req = hyper::Request::post("/localapi/v0/dial")
            .header(hyper::header::HOST, "local-tailscaled.sock")
            .header("Sec-Tailscale", "localapi")
            .header(hyper::header::CONNECTION, "upgrade")
            .header(hyper::header::UPGRADE, "ts-dial")
            .header("Dial-Host", host)
            .header("Dial-Port", port.to_string())
            .header("Dial-Network", "tcp")
            .body(Empty::<Bytes>::new())
            .map_err(|e| io_err(e.to_string()))?;
        let resp = tokio::time::timeout(CALL_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| io_err("timed out".into()))?
            .map_err(|e| io_err(e.to_string()))?;
        if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            return Err(io_err(format!("answered {}", resp.status())));
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .map_err(|e| io_err(e.to_string()))?;
        Ok(TokioIo::new(upgraded))
    }

    pub async fn whois(&self, remote: SocketAddr) -> Result<Option<PeerIdentity>, LocalApiError> {
        let (code, body) = self
            .get(&format!("/localapi/v0/whois?addr={remote}"))
            .await?;
        match code {
            200 => parse_whois(&body)
                .map(Some)
                .map_err(|detail| LocalApiError::Call {
                    call: "whois".into(),
                    detail,
                }),
            // 404: no such peer; 400: not a tailnet address. Both mean "unknown", never a guess.
            404 | 400 => Ok(None),
            status => Err(LocalApiError::Status {
                call: "whois".into(),
                status,
            }),
        }
    }

    /// Key and certificate PEM for the node's name, when the control plane offers certificates.
    pub async fn cert_pair(&self, fqdn: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>, LocalApiError> {
        let (code, body) = self
            .get(&format!("/localapi/v0/cert/{fqdn}?type=pair"))
            .await?;
        if code != 200 {
            return Ok(None);
        }
        // The answer is the key PEM followed by the certificate chain PEM.
        let text = String::from_utf8_lossy(&body);
        let split = text
            .find("-----BEGIN CERTIFICATE-----")
            .unwrap_or(text.len());
        let (key, cert) = text.split_at(split);
        if key.is_empty() || cert.is_empty() {
            return Ok(None);
        }
        Ok(Some((key.as_bytes().to_vec(), cert.as_bytes().to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from tailscaled 1.102.5 under headscale 0.29.3 (shortened).
    const WHOIS: &str = r#"{"Node":{"ID":1,"StableID":"1","Name":"smoke2.tailnet.test.","User":2,
        "Addresses":["100.64.0.1/32","fd7a:115c:a1e0::1/128"],"Online":true},
        "UserProfile":{"ID":2,"LoginName":"bob","DisplayName":"bob"},
        "CapMap":{"specht-labs.de/cap/tka":[{"role":"view","period":"1h"}],"other":null}}"#;

    #[test]
    fn whois_maps_to_peer_identity() {
        let p = parse_whois(WHOIS.as_bytes()).unwrap();
        assert_eq!(p.login_name.as_deref(), Some("bob"));
        assert_eq!(p.node_fqdn, "smoke2.tailnet.test");
        assert_eq!(p.node_stable_id, "1");
        assert_eq!(p.node_ip, Some("100.64.0.1".parse().unwrap()));
        assert_eq!(p.user_id.as_deref(), Some("2"));
        assert_eq!(p.cap_map["specht-labs.de/cap/tka"][0]["role"], "view");
        assert!(p.cap_map["other"].is_empty());
        assert!(p.tags.is_empty());
        assert!(parse_whois(b"{}").is_err());
    }

    #[test]
    fn status_maps_to_backend_status() {
        let s: Status = serde_json::from_str(
            r#"{"BackendState":"Running","Self":{"ID":"nSELF","DNSName":"tka.tailnet.test.","TailscaleIPs":["100.64.0.2"],"UserID":3},
                "CurrentTailnet":{"MagicDNSSuffix":"tailnet.test"},"User":{"3":{"ID":3,"LoginName":"alice"}}}"#,
        )
        .unwrap();
        assert_eq!(s.login_of_self(), Some("alice"));
        let b = s.to_backend_status();
        assert_eq!(b.state, BackendState::Running);
        assert_eq!(b.self_fqdn, "tka.tailnet.test");
        assert_eq!(b.self_stable_id, "nSELF");
        assert_eq!(b.magic_dns_suffix, "tailnet.test");
        assert_eq!(b.tailnet_ips, vec!["100.64.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.magic_dns_suffix(), "tailnet.test");
        let top: Status = serde_json::from_str(
            r#"{"MagicDNSSuffix":"tail1234.ts.net.","CurrentTailnet":{"MagicDNSSuffix":"other"}}"#,
        )
        .unwrap();
        assert_eq!(top.magic_dns_suffix(), "tail1234.ts.net");
        assert_eq!(Status::default().magic_dns_suffix(), "");
    }

    /// A daemon that is not logged in (the image's, before its control server answers) sends nulls where a
    /// logged-in one sends objects; the status still parses, so callers see the state, not an error.
    #[test]
    fn status_of_a_daemon_not_logged_in() {
        let s: Status = serde_json::from_str(
            r#"{"BackendState":"NeedsLogin","Self":{"ID":"","DNSName":"","TailscaleIPs":null,"UserID":0,"Online":false},
                "CurrentTailnet":null,"CertDomains":null,"User":null,"Peer":null}"#,
        )
        .unwrap();
        assert_eq!(s.to_backend_status().state, BackendState::NeedsLogin);
        assert!(s.login_of_self().is_none());
    }

    /// A fake daemon on a unix socket answering like tailscaled: the client speaks real HTTP to it.
    #[tokio::test]
    async fn talks_http_over_the_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ts.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let (code, body) = match req.uri().path() {
                            "/localapi/v0/whois"
                                if req.uri().query() == Some("addr=100.64.0.1:5000") =>
                            {
                                (200, WHOIS.to_string())
                            }
                            "/localapi/v0/whois" => (404, "no match".to_string()),
                            "/localapi/v0/status" => {
                                (200, r#"{"BackendState":"NeedsLogin"}"#.to_string())
                            }
                            "/localapi/v0/cert/tka.tailnet.test" if req.uri().query() == Some("type=pair") => (
                                200,
                                "-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nC\n-----END CERTIFICATE-----\n"
                                    .to_string(),
                            ),
                            _ => (404, String::new()),
                        };
                        assert_eq!(req.headers()["host"], "local-tailscaled.sock");
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(code)
                                .body(http_body_util::Full::new(Bytes::from(body)))
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
        let api = LocalApi::new(&sock);
        let who = api
            .whois("100.64.0.1:5000".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(who.login_name.as_deref(), Some("bob"));
        assert!(
            api.whois("100.64.0.9:1".parse().unwrap())
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            api.status().await.unwrap().to_backend_status().state,
            BackendState::NeedsLogin
        );
        let (key, cert) = api
            .cert_pair("tka.tailnet.test")
            .await
            .unwrap()
            .expect("a pair");
        assert!(
            String::from_utf8(key)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert!(
            String::from_utf8(cert)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(
            api.cert_pair("other.tailnet.test").await.unwrap().is_none(),
            "no certificate offered"
        );
        let missing = LocalApi::new(dir.path().join("nope.sock"));
        assert!(matches!(
            missing.whois("100.64.0.1:1".parse().unwrap()).await,
            Err(LocalApiError::Connect { .. })
        ));
    }
}
