//! One accepted connection, from its place among the open connections to its last response: which peer it
//! is (the key of every limit), its place among that peer's connections, the TLS handshake, and the HTTP
//! connection with its timeouts. hyper bounds reading an HTTP/1 request's headers; everything else is timed
//! here, for both protocols: the client must start its first request within `readHeaderTimeout` (hyper's
//! protocol detection would wait forever), and a connection with no request in flight for `idleTimeout` is
//! closed (HTTP/2 has no header or idle timeout of its own).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::RemoteAddr;
use super::limits::{Admitted, Limits, PeerAddr, Refused, Slot};
use crate::identity::Identity;
use crate::telemetry::Metrics;

/// How long an idle connection that is being closed may take to say goodbye.
const IDLE_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// `server.readHeaderTimeout`: how long a client may take to send a request's headers, TLS handshake
    /// included for the first one; also how long an idle HTTP/1 keep-alive connection waits for the next.
    pub read_header_timeout: Duration,
    /// `server.idleTimeout`: a connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub drain: Duration,
}

/// What the tailnet listener guards with; the health port goes without.
#[derive(Clone)]
pub struct Guard {
    pub limits: Arc<Limits>,
    /// Names the tailnet address of the node behind a connection.
    pub identity: Arc<dyn Identity>,
    pub metrics: Arc<Metrics>,
}

impl Guard {
    /// A connection closed at once. Logged at debug only: a peer must not be able to flood the log.
    pub(super) fn refused(&self, why: Refused, remote: SocketAddr) {
        self.metrics
            .connections_refused
            .with_label_values(&[why.reason()])
            .inc();
        tracing::debug!(%remote, reason = why.reason(), "connection refused");
    }
}

pub(super) struct Connection {
    pub remote: SocketAddr,
    pub router: Router,
    pub builder: auto::Builder<TokioExecutor>,
    pub opts: ServeOptions,
    pub tls: Option<TlsAcceptor>,
    pub guard: Option<Guard>,
    pub shutdown: watch::Receiver<bool>,
}

/// Counts an admitted connection in `tka_connections_open` while it lives.
struct Open(prometheus::IntGauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Connection {
    /// Serves the connection until it ends, is idle too long, or shutdown drained it. `slot`: its place among
    /// all open connections (taken at accept) when the listener is guarded.
    pub async fn run(self, stream: TcpStream, slot: Option<Slot>) {
        // The peer lookup and the TLS handshake share the time the client has to send its first request.
        let deadline = Instant::now() + self.opts.read_header_timeout;
        let Some((peer, _admitted)) = self.admit(slot, deadline).await else {
            return;
        };
        let _open = self.guard.as_ref().map(|g| {
            g.metrics.connections_open.inc();
            Open(g.metrics.connections_open.clone())
        });
        let remote = self.remote;
        match self.tls.clone() {
            None => self.serve(stream, peer).await,
            Some(acceptor) => {
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => self.serve(s, peer).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, %remote, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            }
        }
    }

    /// The peer behind the connection and its place among that peer's connections; `None`: refused.
    async fn admit(
        &self,
        slot: Option<Slot>,
        deadline: Instant,
    ) -> Option<(IpAddr, Option<Admitted>)> {
        let (Some(guard), Some(slot)) = (&self.guard, slot) else {
            return Some((self.remote.ip(), None));
        };
        let lookup = guard.identity.peer_addr(self.remote);
        let peer = tokio::time::timeout_at(deadline, lookup)
            .await
            .unwrap_or(self.remote.ip());
        match guard.limits.admit(slot, peer) {
            Ok(admitted) => Some((peer, Some(admitted))),
            Err(refused) => {
                guard.refused(refused, self.remote);
                None
            }
        }
    }

    async fn serve<I>(self, io: I, peer: IpAddr)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::default();
        let (remote, router, tracker) = (self.remote, self.router.clone(), activity.clone());
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(RemoteAddr(remote));
            req.extensions_mut().insert(PeerAddr(peer));
            let (router, busy) = (router.clone(), tracker.busy());
            async move {
                let response = router.oneshot(req).await;
                drop(busy);
                Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
            }
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut shutdown = self.shutdown.clone();
        // On shutdown, a connection accepted just before the drain began has usually sent its first request
        // already, unread: closing it now would drop that request (HTTP/2 answers it with GOAWAY, HTTP/1 with
        // a bare close or a reset). Like Go's `Shutdown`, it may reach the handler first (briefly: a silent
        // client must not hold the drain). Only a connection with a request in flight then gets the drain's
        // grace; any other has nothing to finish and gets the idle one, or a client that stops halfway
        // through its headers or never acknowledges HTTP/2's GOAWAY would hold the stop for the whole drain.
        let draining = async {
            let _ = shutdown.wait_for(|s| *s).await;
            activity
                .first_request(IDLE_GRACE.min(self.opts.read_header_timeout))
                .await;
        };
        let grace = tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %remote, "connection ended with an error");
                }
                return;
            }
            _ = activity.idle(self.opts.read_header_timeout, self.opts.idle_timeout) => IDLE_GRACE,
            _ = draining => if activity.in_flight() { self.opts.drain } else { IDLE_GRACE },
        };
        conn.as_mut().graceful_shutdown();
        if tokio::time::timeout(grace, conn).await.is_err() {
            tracing::debug!(%remote, "connection cut after its grace period");
        }
    }
}

/// Requests on one connection: how many are in flight, and whether any has started yet.
#[derive(Clone)]
struct Activity(Arc<watch::Sender<(usize, bool)>>);

impl Default for Activity {
    fn default() -> Activity {
        Activity(Arc::new(watch::Sender::new((0, false))))
    }
}

/// One request in flight; ends when dropped (also when the client cancels it).
struct Busy(Arc<watch::Sender<(usize, bool)>>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|(n, _)| *n -= 1);
    }
}

impl Activity {
    fn busy(&self) -> Busy {
        self.0.send_modify(|(n, started)| {
            *n += 1;
            *started = true;
        });
        Busy(self.0.clone())
    }

    /// Is a request being handled now?
    fn in_flight(&self) -> bool {
        self.0.borrow().0 > 0
    }

    /// Resolves once a first request has reached the handler (at once if one has), or after `within`.
    async fn first_request(&self, within: Duration) {
        let mut changes = self.0.subscribe();
        let _ = tokio::time::timeout(within, changes.wait_for(|(_, started)| *started)).await;
    }

    /// Resolves once no request has been in flight for `first` (before the first request: the time the
    /// client has to send it) or `idle` (afterwards), counted from when the last one ended.
    async fn idle(&self, first: Duration, idle: Duration) {
        let mut changes = self.0.subscribe();
        loop {
            let (in_flight, started) = *changes.borrow_and_update();
            if in_flight > 0 {
                // The sender lives in `self`: this never fails.
                let _ = changes.changed().await;
                continue;
            }
            let allowed = if started { idle } else { first };
            tokio::select! {
                _ = tokio::time::sleep(allowed) => return,
                _ = changes.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_last_request_and_never_during_one() {
        let a = Activity::default();
        let start = Instant::now();
        a.idle(Duration::from_secs(5), Duration::from_secs(60))
            .await;
        assert_eq!(start.elapsed(), Duration::from_secs(5), "no request yet");

        let busy = a.busy();
        let watcher = tokio::spawn({
            let a = a.clone();
            async move {
                a.idle(Duration::from_secs(5), Duration::from_secs(60))
                    .await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!watcher.is_finished(), "a request in flight is never idle");
        let ended = Instant::now();
        drop(busy);
        assert_eq!(watcher.await.unwrap() - ended, Duration::from_secs(60));
    }
}
