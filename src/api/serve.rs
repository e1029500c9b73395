//! The connection loop: accepts tailnet connections, caps them (all together and per peer, see [`super::limits`]),
//! tags every request with its connection's remote address (the only input to identity) and its peer's
//! tailnet address (the key of the limits), applies per-connection timeouts and drains on shutdown. What
//! happens to one connection is in [`super::connection`].

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use super::connection::{Guard, ServeOptions};

use super::connection::Connection;

/// Largest header section hyper reads; the middleware refuses more than 16 KiB with an error body.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// HTTP/2 streams one connection may have open at once (a request each).
const MAX_STREAMS: u32 = 32;
/// HTTP/2 pings find connections whose peer vanished without closing them.
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/1 and HTTP/2 settings of every connection.
fn http(opts: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.read_header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(MAX_STREAMS)
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT);
    builder
}

/// Serves `router` on `listener` until `shutdown` becomes true, then drains: every connection finishes the
/// requests it has in flight, for at most `opts.drain`; what is left then is cut.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    opts: ServeOptions,
    tls: Option<TlsAcceptor>,
    guard: Option<Guard>,
    shutdown: watch::Receiver<bool>,
) {
    let builder = http(&opts);
    let mut connections = JoinSet::new();
    let accept = |connections: &mut JoinSet<()>, stream: tokio::net::TcpStream, remote| {
        // The total cap comes first and costs nothing: a full server closes at once.
        let slot = match guard.as_ref().map(|g| g.limits.slot()) {
            Some(Err(why)) => {
                guard.as_ref().expect("guarded").refused(why, remote);
                return;
            }
            Some(Ok(slot)) => Some(slot),
            None => None,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            remote,
            router: router.clone(),
            builder: builder.clone(),
            opts,
            tls: tls.clone(),
            guard: guard.clone(),
            shutdown: shutdown.clone(),
        };
        connections.spawn(connection.run(stream, slot));
    };
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => accept(&mut connections, stream, remote),
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stopped(&mut stop) => break,
        }
    }
    // Connections the kernel completed but we had not accepted yet have sent their request already (their
    // client saw the connect succeed): closing the listener would reset them. They are served like the rest.
    for (stream, remote) in backlog(listener) {
        accept(&mut connections, stream, remote);
    }
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(opts.drain, drained).await.is_err() {
        tracing::warn!("some connections did not finish within the shutdown timeout");
    }
}

/// Takes the connections waiting in the listener's backlog, without waiting for more; closes the listener.
fn backlog(listener: TcpListener) -> Vec<(tokio::net::TcpStream, std::net::SocketAddr)> {
    let Ok(listener) = listener.into_std() else {
        return Vec::new();
    };
    std::iter::from_fn(|| listener.accept().ok())
        .filter_map(|(s, remote)| {
            s.set_nonblocking(true).ok()?;
            Some((tokio::net::TcpStream::from_std(s).ok()?, remote))
        })
        .collect()
}

/// Resolves once shutdown is requested (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
