//! Outbound federation calls (primary ↔ member) through the identity backend's `dial`, so they travel the
//! tailnet in userspace mode too. One connection per call: calls are rare (logins, heartbeats) and a fresh
//! connection never hits a peer that restarted. TLS when the URL is https (port 443).
//!
//! [`Client`] owns every call: its `federation.<operation>` span, the `tka_federation_requests_total`
//! count and the log line of a failure; the typed calls below are the whole federation protocol.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::PREFIX;
use super::registry::Member;
use super::trust::url_host;
use super::wire::{
    Heartbeat, HeartbeatAck, MemberSession, SessionRef, SessionRequest, TokenAnswer, TokenCall,
};
use crate::identity::{Identity, PeerStream};
use crate::model::wire::{ErrorResponse, UserLoginResponse};
use crate::telemetry::Metrics;

/// Calls to federation peers, counted and traced.
pub struct Client {
    identity: Arc<dyn Identity>,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

/// Who a call goes to: the cluster (for metrics and spans) and its tailnet URL.
#[derive(Clone, Copy)]
pub struct To<'a> {
    pub cluster: &'a str,
    pub url: &'a str,
}

impl<'a> To<'a> {
    pub fn member(m: &'a Member) -> To<'a> {
        To {
            cluster: &m.announcement.cluster_name,
            url: &m.announcement.member_url,
        }
    }
}

/// Which of a member's federated sessions to list.
pub enum SessionQuery<'a> {
    /// Every session the federation created there (revalidation).
    Federated,
    /// One user's session on one node.
    Of { login: &'a str, node_id: &'a str },
}

impl Client {
    pub fn new(identity: Arc<dyn Identity>, metrics: Arc<Metrics>, timeout: Duration) -> Client {
        Client {
            identity,
            metrics,
            timeout,
        }
    }

    /// One call to a peer, bounded by `federation.requestTimeout`.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        to: To<'_>,
        method: http::Method,
        path: &str,
        body: Option<&B>,
        operation: &str,
        rid: &str,
    ) -> Result<Answer<T>, CallError> {
        let cluster = to.cluster;
        let span = tracing::info_span!("federation", otel.name = %format_args!("federation.{operation}"), operation,
            tka.cluster = %cluster, tka.result = tracing::field::Empty);
        let r = call(
            self.identity.as_ref(),
            method,
            to.url,
            path,
            body,
            self.timeout,
            rid,
        )
        .instrument(span.clone())
        .await;
        let result = match &r {
            Ok(_) => "success",
            Err(e) => e.label(),
        };
        span.record("tka.result", result);
        self.metrics
            .federation_requests
            .with_label_values(&[cluster, operation, result])
            .inc();
        if let Err(e) = &r {
            tracing::info!(cluster, operation, request_id = %rid, "federation call failed: {e}");
        }
        r
    }

    /// Member → primary: the heartbeat, counted under the member's own cluster name.
    pub async fn heartbeat(
        &self,
        primary_url: &str,
        hb: &Heartbeat,
        rid: &str,
    ) -> Result<Answer<HeartbeatAck>, CallError> {
        let path = format!("{PREFIX}/heartbeat");
        let to = To {
            cluster: &hb.cluster_name,
            url: primary_url,
        };
        self.call(to, http::Method::POST, &path, Some(hb), "heartbeat", rid)
            .await
    }

    /// Provision the user's session on member `m`, waiting up to `wait` for it to be ready.
    pub async fn signin(
        &self,
        m: &Member,
        req: &SessionRequest,
        wait: Option<Duration>,
        rid: &str,
    ) -> Result<Answer<UserLoginResponse>, CallError> {
        let path = match wait {
            Some(w) => format!("{PREFIX}/sessions?wait={}ms", w.as_millis()),
            None => format!("{PREFIX}/sessions"),
        };
        self.call(
            To::member(m),
            http::Method::POST,
            &path,
            Some(req),
            "signin",
            rid,
        )
        .await
    }

    /// End sessions on member `m`.
    pub async fn signout(&self, m: &Member, r: &SessionRef, rid: &str) -> Result<(), CallError> {
        let path = format!("{PREFIX}/sessions");
        self.call::<_, serde_json::Value>(
            To::member(m),
            http::Method::DELETE,
            &path,
            Some(r),
            "signout",
            rid,
        )
        .await
        .map(|_| ())
    }

    /// A token minted by member `m` for the user's session there; `Err(status)` when it has none ready yet.
    pub async fn token(
        &self,
        m: &Member,
        call: &TokenCall,
        rid: &str,
    ) -> Result<Result<TokenAnswer, u16>, CallError> {
        let path = format!("{PREFIX}/tokens");
        let t: Answer<Option<TokenAnswer>> = self
            .call(
                To::member(m),
                http::Method::POST,
                &path,
                Some(call),
                "token",
                rid,
            )
            .await?;
        Ok(match t.body {
            Some(token) if !token.token.is_empty() => Ok(token),
            _ => Err(t.status),
        })
    }

    /// Member `m`'s federated sessions; `operation` names the purpose in metrics and spans.
    pub async fn sessions(
        &self,
        m: &Member,
        query: SessionQuery<'_>,
        operation: &str,
        rid: &str,
    ) -> Result<Vec<MemberSession>, CallError> {
        let path = match query {
            SessionQuery::Federated => format!("{PREFIX}/sessions?origin=federation"),
            SessionQuery::Of { login, node_id } => format!(
                "{PREFIX}/sessions?login_name={}&node_id={}",
                encode(login),
                encode(node_id)
            ),
        };
        self.call::<(), _>(
            To::member(m),
            http::Method::GET,
            &path,
            None,
            operation,
            rid,
        )
        .await
        .map(|a| a.body)
    }
}

/// Minimal percent-encoding for a query value (login names may hold `@`, `+`, spaces).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Why a call produced no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Unreachable(String),
    /// The peer answered with an error status and (usually) an `ErrorResponse`.
    #[error("{status}: {}", .body.message)]
    Status { status: u16, body: ErrorResponse },
    #[error("undecodable answer: {0}")]
    Decode(String),
}

impl CallError {
    /// The error as it is shown per cluster: the member's own body when it sent one.
    pub fn to_error_response(&self) -> ErrorResponse {
        match self {
            CallError::Status { body, .. } => body.clone(),
            other => ErrorResponse {
                message: other.to_string(),
                code: "member_unreachable".into(),
                ..ErrorResponse::default()
            },
        }
    }

    /// `result` label of `tka_federation_requests_total`.
    pub fn label(&self) -> &'static str {
        match self {
            CallError::Timeout(_) => "timeout",
            CallError::Unreachable(_) | CallError::Decode(_) => "unreachable",
            CallError::Status { .. } => "rejected",
        }
    }
}

/// A successful answer: status (2xx) and decoded body.
#[derive(Debug)]
pub struct Answer<T> {
    pub status: u16,
    pub body: T,
}

/// Sends one JSON request to `base_url` + `path`, bounded as a whole by `timeout`.
async fn call<B: Serialize, T: DeserializeOwned>(
    identity: &dyn Identity,
    method: http::Method,
    base_url: &str,
    path: &str,
    body: Option<&B>,
    timeout: Duration,
    request_id: &str,
) -> Result<Answer<T>, CallError> {
    let fut = async {
        let (status, bytes) = exchange(identity, method, base_url, path, body, request_id).await?;
        if !(200..300).contains(&status) {
            let body =
                serde_json::from_slice::<ErrorResponse>(&bytes).unwrap_or_else(|_| ErrorResponse {
                    message: format!("answered {status}"),
                    ..ErrorResponse::default()
                });
            return Err(CallError::Status { status, body });
        }
        // 204 or an empty 202 decode from `null`.
        let slice: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        let body = serde_json::from_slice(slice).map_err(|e| CallError::Decode(e.to_string()))?;
        Ok(Answer { status, body })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or(Err(CallError::Timeout(timeout)))
}

async fn exchange<B: Serialize>(
    identity: &dyn Identity,
    method: http::Method,
    base_url: &str,
    path: &str,
    body: Option<&B>,
    request_id: &str,
) -> Result<(u16, Bytes), CallError> {
    let (scheme, host, port) = url_host(base_url)
        .ok_or_else(|| CallError::Unreachable(format!("{base_url:?} is not an http(s) URL")))?;
    let unreachable = |e: String| CallError::Unreachable(e);
    let stream = identity
        .dial(&host, port)
        .await
        .map_err(|e| unreachable(format!("cannot connect to {host}:{port}: {e}")))?;
    let stream: Box<dyn PeerStream> = if scheme == "https" {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| unreachable(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, stream)
            .await
            .map_err(|e| unreachable(format!("TLS with {host}: {e}")))?;
        Box::new(tls)
    } else {
        stream
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let payload = match body {
        Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| unreachable(e.to_string()))?),
        None => Bytes::new(),
    };
    let authority = if (scheme == "https" && port == 443) || (scheme == "http" && port == 80) {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json")
        .header("x-request-id", request_id);
    if body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let mut req = req
        .body(Full::new(payload))
        .map_err(|e| unreachable(e.to_string()))?;
    // W3C trace context: the member's spans join the primary's trace.
    crate::telemetry::otel::inject(&tracing::Span::current(), req.headers_mut());
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    Ok((status, bytes))
}

/// Client TLS with the system's roots (Tailscale certificates are publicly trusted).
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}
