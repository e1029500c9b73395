//! `peer_addr` of the tailscaled backend against a stand-in daemon on a unix socket (real HTTP): a connection
//! tailscaled forwarded from loopback is placed at its node's address, also when the daemon learns the mapping
//! a moment after the connection arrived; others keep their own address.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::TailscaledIdentity;
use super::localapi::LocalApi;
use crate::identity::Identity;

const LAPTOP: &str = r#"{"Node":{"ID":7,"StableID":"n7","Name":"laptop.tailnet.test.",
    "Addresses":["100.64.0.7/32","fd7a:115c:a1e0::7/128"]},"UserProfile":{"ID":2,"LoginName":"bob"},"CapMap":{}}"#;

/// Answers WhoIs for 127.0.0.1:4000 at once and for 127.0.0.1:4001 from its second question on (the
/// mapping arrives late); counts the WhoIs questions.
fn fake_daemon(sock: &std::path::Path, asked: Arc<AtomicUsize>) {
    let listener = tokio::net::UnixListener::bind(sock).unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let asked = asked.clone();
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let n = match req.uri().path() {
                        "/localapi/v0/whois" => asked.fetch_add(1, Ordering::SeqCst),
                        _ => usize::MAX,
                    };
                    let query = req.uri().query().unwrap_or_default().to_string();
                    async move {
                        let (code, body) = match query.as_str() {
                            "addr=127.0.0.1:4000" => (200, LAPTOP),
                            "addr=127.0.0.1:4001" if n > 0 => (200, LAPTOP),
                            _ => (404, "no match"),
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(code)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
}

#[tokio::test]
async fn forwarded_connections_are_placed_at_their_node() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("tailscaled.sock");
    let asked = Arc::new(AtomicUsize::new(0));
    fake_daemon(&sock, asked.clone());
    let id = TailscaledIdentity::start(LocalApi::new(&sock));
    let laptop: IpAddr = "100.64.0.7".parse().unwrap();

    let direct = "100.64.0.3:51000".parse().unwrap();
    assert_eq!(
        id.peer_addr(direct).await,
        direct.ip(),
        "a direct connection"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 0, "needs no lookup");

    assert_eq!(
        id.peer_addr("127.0.0.1:4000".parse().unwrap()).await,
        laptop
    );
    assert_eq!(asked.load(Ordering::SeqCst), 1, "one lookup per connection");

    asked.store(0, Ordering::SeqCst);
    assert_eq!(
        id.peer_addr("127.0.0.1:4001".parse().unwrap()).await,
        laptop,
        "a mapping that arrives late is found by the second lookup"
    );

    let local = "127.0.0.1:9".parse().unwrap();
    assert_eq!(
        id.peer_addr(local).await,
        local.ip(),
        "unplaced: the loopback address"
    );
}
