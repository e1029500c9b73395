//! How much one tailnet peer may use: open connections (per peer and all together) and requests per second.
//!
//! A peer is a tailnet address: the connection's remote address, or, for connections a userspace tailscaled
//! forwards from loopback, the address its WhoIs names (looked up once per connection, see
//! [`crate::identity::Identity::peer_addr`]). On a tailnet a node cannot send from another node's address
//! (WireGuard checks the source against the peer's allowed IPs), so the address is a key a peer cannot
//! multiply. Everything here is decided before WhoIs of a request and before any handler runs: a peer without
//! a grant cannot make the server do expensive work faster than its budget.
//!
//! Admitted federation peers (the primary at a member, members at the primary) are remembered for a while
//! once the federation's trust check passed: on the federation routes they draw on a separate, larger budget,
//! and they are not held to the per-peer connection cap (the primary relays every user's login, each on its
//! own connection), only to the total one. Before admission they are limited like any node.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long an admitted federation peer is remembered after its last admitted call: longer than the
/// primary's quietest period towards a member (grant revalidation, every 5 minutes by default).
const TRUST_TTL: Duration = Duration::from_secs(600);
/// At most this many admitted federation peers are remembered (a federation has a handful).
const MAX_TRUSTED: usize = 1024;
/// The request limiters forget idle peers once they know more than this many.
const RETAIN_ABOVE: usize = 4096;

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `server.maxConnections`.
    pub max_connections: usize,
    /// `server.maxConnectionsPerPeer`.
    pub max_connections_per_peer: usize,
    /// `api.rateLimit` / `api.rateBurst`: requests per second of one node.
    pub rate: u32,
    pub burst: u32,
    /// `api.federationRateLimit` / `api.federationRateBurst`: an admitted federation peer on the federation routes.
    pub federation_rate: u32,
    pub federation_burst: u32,
}

/// Extension of every request on the tailnet listener: the tailnet address of the node behind its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub IpAddr);

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `server.maxConnections` connections are open.
    Total,
    /// This peer has `server.maxConnectionsPerPeer` connections open.
    PerPeer,
}

impl Refused {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::PerPeer => "per_peer",
        }
    }
}

pub struct Limits {
    s: Settings,
    total: Arc<Semaphore>,
    per_peer: Mutex<HashMap<IpAddr, usize>>,
    users: DefaultKeyedRateLimiter<IpAddr>,
    federation: DefaultKeyedRateLimiter<IpAddr>,
    /// Admitted federation peers, and when that was last confirmed.
    trusted: Mutex<HashMap<IpAddr, Instant>>,
    checks: AtomicU64,
}

/// A place among all open connections, taken when the connection is accepted (before anything else) and
/// held until it ends.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// A connection admitted for its peer; gives both places back when dropped.
pub struct Admitted {
    _slot: Slot,
    counted: Option<(Arc<Limits>, IpAddr)>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((limits, peer)) = self.counted.take() {
            let mut open = limits.per_peer.lock().expect("lock poisoned");
            if let Some(n) = open.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&peer);
                }
            }
        }
    }
}

fn quota(rate: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(rate.max(1)).expect("non-zero");
    let burst = NonZeroU32::new(burst.max(rate.get())).expect("non-zero");
    Quota::per_second(rate).allow_burst(burst)
}

impl Limits {
    pub fn new(s: Settings) -> Arc<Limits> {
        Arc::new(Limits {
            total: Arc::new(Semaphore::new(s.max_connections.max(1))),
            per_peer: Mutex::default(),
            users: RateLimiter::keyed(quota(s.rate, s.burst)),
            federation: RateLimiter::keyed(quota(s.federation_rate, s.federation_burst)),
            trusted: Mutex::default(),
            checks: AtomicU64::new(0),
            s,
        })
    }

    /// A place among all open connections, if one is free.
    pub fn slot(&self) -> Result<Slot, Refused> {
        self.total
            .clone()
            .try_acquire_owned()
            .map(|permit| Slot { _permit: permit })
            .map_err(|_| Refused::Total)
    }

    /// Open connections, all peers together.
    pub fn open(&self) -> usize {
        self.s.max_connections.max(1) - self.total.available_permits()
    }

    /// Admits one more connection of `peer`, which holds `slot`.
    pub fn admit(self: &Arc<Self>, slot: Slot, peer: IpAddr) -> Result<Admitted, Refused> {
        if self.is_trusted(peer) {
            return Ok(Admitted {
                _slot: slot,
                counted: None,
            });
        }
        let mut open = self.per_peer.lock().expect("lock poisoned");
        let n = open.entry(peer).or_insert(0);
        if *n >= self.s.max_connections_per_peer {
            return Err(Refused::PerPeer);
        }
        *n += 1;
        Ok(Admitted {
            _slot: slot,
            counted: Some((self.clone(), peer)),
        })
    }

    /// Whether one more request of `peer` is within its budget; `federation`: the request is for a
    /// federation route.
    pub fn request(&self, peer: IpAddr, federation: bool) -> bool {
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(256)
        {
            for limiter in [&self.users, &self.federation] {
                if limiter.len() > RETAIN_ABOVE {
                    limiter.retain_recent();
                }
            }
        }
        let limiter = if federation && self.is_trusted(peer) {
            &self.federation
        } else {
            &self.users
        };
        limiter.check_key(&peer).is_ok()
    }

    /// `peer` passed the federation's trust check just now.
    pub fn trust(&self, peer: IpAddr) {
        let now = Instant::now();
        let mut trusted = self.trusted.lock().expect("lock poisoned");
        if trusted.len() >= MAX_TRUSTED && !trusted.contains_key(&peer) {
            trusted.retain(|_, at| now.duration_since(*at) < TRUST_TTL);
            if trusted.len() >= MAX_TRUSTED {
                return;
            }
        }
        trusted.insert(peer, now);
    }

    fn is_trusted(&self, peer: IpAddr) -> bool {
        self.trusted
            .lock()
            .expect("lock poisoned")
            .get(&peer)
            .is_some_and(|at| at.elapsed() < TRUST_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_peer: usize) -> Arc<Limits> {
        Limits::new(Settings {
            max_connections: total,
            max_connections_per_peer: per_peer,
            rate: 1,
            burst: 2,
            federation_rate: 1,
            federation_burst: 5,
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([100, 64, 0, last])
    }

    #[test]
    fn connections_are_capped_per_peer_and_in_total() {
        let l = limits(3, 2);
        let a1 = l.admit(l.slot().unwrap(), ip(1)).unwrap();
        let _a2 = l.admit(l.slot().unwrap(), ip(1)).unwrap();
        let refused = l.admit(l.slot().unwrap(), ip(1));
        assert_eq!(refused.err(), Some(Refused::PerPeer));
        let _b1 = l.admit(l.slot().unwrap(), ip(2)).unwrap();
        assert_eq!(l.open(), 3);
        assert_eq!(l.slot().err(), Some(Refused::Total), "three open in total");
        drop(a1);
        assert_eq!(l.open(), 2);
        let _a3 = l
            .admit(l.slot().unwrap(), ip(1))
            .expect("a place of peer 1 freed");
    }

    #[test]
    fn requests_are_limited_per_peer() {
        let l = limits(10, 10);
        assert!(l.request(ip(1), false) && l.request(ip(1), false));
        assert!(!l.request(ip(1), false), "burst of 2 spent");
        assert!(l.request(ip(2), false), "another node has its own budget");
        assert!(
            !l.request(ip(1), true),
            "federation routes: same budget before admission"
        );
    }

    #[test]
    fn admitted_federation_peers_have_their_own_budget_and_no_per_peer_cap() {
        let l = limits(6, 1);
        let _first = l.admit(l.slot().unwrap(), ip(9)).unwrap();
        assert!(l.admit(l.slot().unwrap(), ip(9)).is_err());
        l.trust(ip(9));
        let _more: Vec<_> = (0..5)
            .map(|_| l.admit(l.slot().unwrap(), ip(9)).expect("no per-peer cap"))
            .collect();
        assert_eq!(
            l.slot().err(),
            Some(Refused::Total),
            "the total cap still holds"
        );
        assert_eq!((0..5).filter(|_| l.request(ip(9), true)).count(), 5);
        assert!(
            !l.request(ip(9), true),
            "the federation budget is bounded too"
        );
        assert!(l.request(ip(9), false), "user routes keep the node budget");
    }
}
