//! Outbound federation calls (primary ↔ member) through the identity backend's `dial`, so they travel the
//! tailnet in userspace mode too. One connection per call: calls are rare (logins, heartbeats) and a fresh
//! connection never hits a peer that restarted. TLS when the URL is https (port 443, `federation.md` §1).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::trust::url_host;
use crate::identity::{Identity, PeerStream};
use crate::model::wire::ErrorResponse;

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
pub async fn call<B: Serialize, T: DeserializeOwned>(
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
    // W3C trace context: the member's spans join the primary's trace (federation.md §1).
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
