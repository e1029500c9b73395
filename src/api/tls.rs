//! TLS for the tailnet listener, terminated in-process with rustls. One certificate is
//! served regardless of SNI; it is swapped without a restart when its source changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::identity::tailscaled::localapi::LocalApi;

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// PEM files (chain allowed; PKCS#8, RSA or EC key), re-read when their mtime changes.
    Files { cert: PathBuf, key: PathBuf },
    /// tailscaled's cert endpoint for the node's MagicDNS name (control planes with DNS-01 support).
    Tailscale { api: LocalApi },
}

/// The certificate currently served; `None` until one could be loaded.
#[derive(Debug, Default)]
pub struct CurrentCert(RwLock<Option<Arc<CertifiedKey>>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().expect("lock poisoned").clone()
    }
}

impl CurrentCert {
    pub fn is_loaded(&self) -> bool {
        self.0.read().expect("lock poisoned").is_some()
    }

    /// DER of the leaf certificate currently served.
    pub fn leaf(&self) -> Option<Vec<u8>> {
        self.0
            .read()
            .expect("lock poisoned")
            .as_ref()
            .and_then(|k| k.cert.first().map(|c| c.to_vec()))
    }

    fn set(&self, key: CertifiedKey) {
        *self.0.write().expect("lock poisoned") = Some(Arc::new(key));
    }
}

/// Parses a PEM certificate chain and private key into a rustls key pair.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the certificate PEM".into());
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("private key PEM: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("private key: {e}"))?;
    Ok(CertifiedKey::new(chain, signing))
}

fn read_files(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let c = std::fs::read(cert).map_err(|e| format!("tls.certFile {}: {e}", cert.display()))?;
    let k = std::fs::read(key).map_err(|e| format!("tls.keyFile {}: {e}", key.display()))?;
    certified_key(&c, &k)
}

fn mtimes(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    Some((
        std::fs::metadata(cert).ok()?.modified().ok()?,
        std::fs::metadata(key).ok()?.modified().ok()?,
    ))
}

/// Loads the first certificate (an error for files, which must be right at start-up) and keeps it fresh in
/// the background. Returns the acceptor and the handle `/ready` looks at.
pub async fn start(
    source: CertSource,
    fqdn: String,
) -> Result<(TlsAcceptor, Arc<CurrentCert>), String> {
    let current = Arc::new(CurrentCert::default());
    // The mtimes of the loaded pair, taken before reading, so a change made right after start-up is seen.
    let mut seen = None;
    match &source {
        CertSource::Files { cert, key } => {
            seen = mtimes(cert, key);
            current.set(read_files(cert, key)?)
        }
        CertSource::Tailscale { api } => match api.cert_pair(&fqdn).await {
            Ok(Some((key, cert))) => current.set(certified_key(&cert, &key)?),
            _ => {
                tracing::warn!(%fqdn, "no certificate from tailscaled yet (does the control plane offer HTTPS certificates?); retrying")
            }
        },
    }
    tokio::spawn(refresh(source, fqdn, seen, Arc::downgrade(&current)));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_cert_resolver(current.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), current))
}

/// Files: re-read every 30 s when an mtime changed; a bad new pair keeps the old one. Tailscale: ask
/// tailscaled every hour (it renews its cached certificate itself when a third of its lifetime is left),
/// every 10 s while none is loaded.
async fn refresh(
    source: CertSource,
    fqdn: String,
    mut seen: Option<(SystemTime, SystemTime)>,
    current: std::sync::Weak<CurrentCert>,
) {
    loop {
        let loaded = match current.upgrade() {
            Some(c) => c.is_loaded(),
            None => return,
        };
        let pause = match &source {
            CertSource::Files { .. } => Duration::from_secs(30),
            CertSource::Tailscale { .. } if loaded => Duration::from_secs(3600),
            CertSource::Tailscale { .. } => Duration::from_secs(10),
        };
        tokio::time::sleep(pause).await;
        let Some(target) = current.upgrade() else {
            return;
        };
        match &source {
            CertSource::Files { cert, key } => {
                let now = mtimes(cert, key);
                if now != seen {
                    match read_files(cert, key) {
                        Ok(k) => {
                            target.set(k);
                            seen = now;
                            tracing::info!("TLS certificate reloaded from files");
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "TLS files changed but do not load; keeping the previous certificate")
                        }
                    }
                }
            }
            CertSource::Tailscale { api } => {
                match api.cert_pair(&node_name(api, &fqdn).await).await {
                    Ok(Some((key, cert))) => match certified_key(&cert, &key) {
                        Ok(k) => target.set(k),
                        Err(e) => {
                            tracing::error!(error = %e, "tailscaled returned an unusable certificate")
                        }
                    },
                    other => {
                        tracing::warn!(result = ?other.err().map(|e| e.to_string()), "no certificate from tailscaled")
                    }
                }
            }
        }
    }
}

/// The node's name: as known at start-up, else asked again (the node may have come up since).
async fn node_name(api: &LocalApi, known: &str) -> String {
    if !known.is_empty() {
        return known.to_string();
    }
    api.status()
        .await
        .map(|s| s.to_backend_status().self_fqdn)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_pem_pairs_and_rejects_garbage() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["tka.tailnet.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert!(certified_key(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).is_ok());
        assert!(
            certified_key(b"nothing", key.serialize_pem().as_bytes())
                .unwrap_err()
                .contains("no certificate")
        );
        assert!(certified_key(cert.pem().as_bytes(), b"junk").is_err());
    }

    #[tokio::test]
    async fn file_certificates_are_served_and_missing_files_are_a_startup_error() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["tka.tailnet.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        let (_acceptor, current) = start(
            CertSource::Files {
                cert: c.clone(),
                key: k,
            },
            String::new(),
        )
        .await
        .unwrap();
        assert!(current.is_loaded());
        let missing = start(
            CertSource::Files {
                cert: c,
                key: dir.path().join("none"),
            },
            String::new(),
        )
        .await;
        assert!(missing.err().unwrap().contains("tls.keyFile"));
    }

    #[tokio::test(start_paused = true)]
    async fn changed_files_are_reloaded_and_bad_ones_keep_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let issue = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec![name.into()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            (cert, key)
        };
        let (cert_a, key_a) = issue("a.test");
        std::fs::write(&c, cert_a.pem()).unwrap();
        std::fs::write(&k, key_a.serialize_pem()).unwrap();
        let (_acceptor, current) = start(
            CertSource::Files {
                cert: c.clone(),
                key: k.clone(),
            },
            String::new(),
        )
        .await
        .unwrap();
        assert_eq!(current.leaf().unwrap(), cert_a.der().to_vec());

        // mtimes have whole-second resolution on some filesystems: make the change visible.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let (cert_b, key_b) = issue("b.test");
        std::fs::write(&c, cert_b.pem()).unwrap();
        std::fs::write(&k, key_b.serialize_pem()).unwrap();
        tokio::time::sleep(Duration::from_secs(31)).await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            current.leaf().unwrap(),
            cert_b.der().to_vec(),
            "a changed pair is served without restart"
        );

        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::write(&k, b"not a key").unwrap();
        tokio::time::sleep(Duration::from_secs(31)).await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            current.leaf().unwrap(),
            cert_b.der().to_vec(),
            "a broken pair keeps the previous certificate"
        );
    }
}
