//! The API listener as users reach it: a request dialled through tailscaled to the node's own name (else on
//! the local listener address), with TLS when the API serves it, recording the certificate it presents.

use std::sync::{Arc, Mutex};

use super::bounded;
use super::tailnet::ListenerFacts;
use crate::config::{Config, TlsMode};
use crate::identity::Identity;

/// Whether the API serves TLS, as `tls.mode` resolves (`auto`: port 443 only).
pub(super) fn tls_on(config: &Config) -> bool {
    match config.tls.mode {
        TlsMode::Off => false,
        TlsMode::Auto => config.tailscale.port == 443,
        _ => true,
    }
}

/// Asks `GET /api/v1alpha1/whoami` over the tailnet (through tailscaled, as users arrive), else on the local
/// listener address; returns the facts and the served certificate.
pub(super) async fn listener(
    config: &Config,
    identity: &dyn Identity,
    fqdn: &str,
) -> (ListenerFacts, Option<Vec<u8>>) {
    let port = config.tailscale.port;
    let tls = tls_on(config);
    let url = crate::server::self_url(config, fqdn);
    let seen = Arc::new(Mutex::new(None));
    let tailnet = bounded(async {
        let stream = identity.dial(fqdn, port).await.map_err(|e| e.to_string())?;
        whoami(stream, fqdn, tls, seen.clone()).await
    })
    .await;
    let local = if tailnet.is_err() {
        let addr = config
            .server
            .listen_addresses
            .first()
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".into());
        Some(
            bounded(async {
                let s = tokio::net::TcpStream::connect((addr.as_str(), port))
                    .await
                    .map_err(|e| e.to_string())?;
                whoami(Box::new(s), fqdn, tls, seen.clone()).await
            })
            .await,
        )
    } else {
        None
    };
    let der = seen.lock().expect("lock poisoned").take();
    (
        ListenerFacts {
            url,
            tailnet,
            local,
        },
        der,
    )
}

/// One HTTP/1.1 `GET /api/v1alpha1/whoami` on `stream` (TLS first when `tls`); the status code.
async fn whoami(
    stream: Box<dyn crate::identity::PeerStream>,
    host: &str,
    tls: bool,
    seen: Arc<Mutex<Option<Vec<u8>>>>,
) -> Result<u16, String> {
    let stream: Box<dyn crate::identity::PeerStream> = if tls {
        let name =
            rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(capture_config(seen));
        Box::new(
            connector
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?,
        )
    } else {
        stream
    };
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get("/api/v1alpha1/whoami")
        .header(hyper::header::HOST, host)
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

/// The doctor inspects the listener's certificate instead of trusting it (clients' roots are not known
/// here): this verifier records the leaf and accepts it, while signatures are still checked. Nothing secret
/// is sent on such a connection.
#[derive(Debug)]
struct Capture {
    seen: Arc<Mutex<Option<Vec<u8>>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.seen.lock().expect("lock poisoned") = Some(end_entity.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn capture_config(seen: Arc<Mutex<Option<Vec<u8>>>>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Capture { seen, provider }))
        .with_no_client_auth();
    Arc::new(config)
}
