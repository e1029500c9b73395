//! Federation (spec: federation.md): one login at the primary gives a context for every member cluster.
//!
//! Pure parts (no I/O, tested without a network): [`wire`] bodies, the member [`registry`] judged by a clock
//! passed in, the [`trust`] checks on WhoIs results, per-cluster rule selection in [`plan`], and the layer's
//! [`FedError`]. I/O glue: [`client`] (outbound calls through the identity backend's `dial`) and
//! [`heartbeat`] (the member leader's registration loop). The HTTP handlers live in `api::handlers`.

pub mod client;
pub mod error;
pub mod heartbeat;
pub mod plan;
pub mod registry;
pub mod trust;
pub mod wire;

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use error::FedError;

/// The federation API version this server speaks (sent in heartbeats as `api_versions`).
pub const API_VERSION: &str = "v1alpha1";
/// Path prefix of the federation endpoints.
pub const PREFIX: &str = "/federation/v1alpha1";
/// How long a missed revocation is kept for a member's return (federation.md §6).
pub const RETRY_FOR: Duration = Duration::from_secs(24 * 3600);

/// Federation settings, from `federation.*`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `federation.loginServer`: set ⇒ this server is a member of that primary.
    pub login_server: String,
    pub heartbeat_interval: Duration,
    pub missed_heartbeats: u32,
    pub request_timeout: Duration,
    pub member_tags: Vec<String>,
    pub member_cap_name: String,
    pub allow_direct_login: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            login_server: String::new(),
            heartbeat_interval: Duration::from_secs(30),
            missed_heartbeats: 3,
            request_timeout: Duration::from_secs(10),
            member_tags: Vec::new(),
            member_cap_name: "specht-labs.de/cap/tka-federation".into(),
            allow_direct_login: true,
        }
    }
}

/// The federation side of one running server.
pub struct Federation {
    pub settings: Settings,
    /// Host of `login_server` (members only): the one node whose federation calls are accepted.
    pub primary_host: Option<String>,
    /// The member registry (primary only; empty on members and standalone servers).
    pub registry: Mutex<registry::Registry>,
    /// Revocations a member missed (down at logout): retried on its heartbeats for up to a day. In memory
    /// only: lost on failover, when the members' own expiry still ends the sessions.
    retries: Mutex<Vec<(String, wire::SessionRef, Instant)>>,
    /// When this leader started: until one interval has passed the registry may still be filling up.
    pub started: Instant,
}

impl Federation {
    pub fn new(settings: Settings) -> Federation {
        let primary_host = trust::url_host(&settings.login_server).map(|(_, h, _)| h);
        let registry =
            registry::Registry::new(settings.heartbeat_interval, settings.missed_heartbeats);
        Federation {
            settings,
            primary_host,
            registry: Mutex::new(registry),
            retries: Mutex::new(Vec::new()),
            started: Instant::now(),
        }
    }

    /// Keeps a revocation for `cluster` to retry on its next heartbeat.
    pub fn retry_later(&self, cluster: &str, r: wire::SessionRef) {
        let mut q = self.retries.lock().expect("lock poisoned");
        if !q.iter().any(|(c, x, _)| c == cluster && *x == r) {
            q.push((cluster.to_string(), r, Instant::now()));
        }
    }

    /// The revocations waiting for `cluster` (removed from the list; re-add what fails again).
    pub fn take_retries(&self, cluster: &str, now: Instant) -> Vec<wire::SessionRef> {
        let mut q = self.retries.lock().expect("lock poisoned");
        q.retain(|(_, _, since)| now.duration_since(*since) < RETRY_FOR);
        let (mine, rest): (Vec<_>, Vec<_>) = q.drain(..).partition(|(c, _, _)| c == cluster);
        *q = rest;
        mine.into_iter().map(|(_, r, _)| r).collect()
    }

    pub fn is_member(&self) -> bool {
        self.primary_host.is_some()
    }

    /// After a (re)start the registry is rebuilt from heartbeats within one interval.
    pub fn rebuilding(&self, now: Instant) -> bool {
        !self.is_member() && now.duration_since(self.started) < self.settings.heartbeat_interval
    }

    /// The members that take part in logins now (healthy only), by name.
    pub fn healthy_members(&self, now: Instant) -> Vec<registry::Member> {
        self.members(now, registry::Health::Healthy)
    }

    /// Members that missed heartbeats but are not removed yet: probably down, so a logout cannot reach
    /// them now and must be kept for their return.
    pub fn stale_members(&self, now: Instant) -> Vec<registry::Member> {
        self.members(now, registry::Health::Stale)
    }

    /// Names of members removed for missed heartbeats within the retry period.
    pub fn departed_members(&self, now: Instant) -> Vec<String> {
        self.registry.lock().expect("lock poisoned").departed(now)
    }

    fn members(&self, now: Instant, health: registry::Health) -> Vec<registry::Member> {
        let reg = self.registry.lock().expect("lock poisoned");
        reg.list(now)
            .into_iter()
            .filter(|(_, h)| *h == health)
            // Version skew: a member that does not speak our federation API takes no part.
            .filter(|(m, _)| m.announcement.api_versions.iter().any(|v| v == API_VERSION))
            .map(|(m, _)| m.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_without_our_api_version_take_no_part() {
        let fed = Federation::new(Settings::default());
        let now = Instant::now();
        let hb = |name: &str, versions: &[&str]| wire::Heartbeat {
            cluster_name: name.into(),
            member_url: format!("https://{name}.ts.net"),
            api_endpoint: "https://10.0.0.1:6443".into(),
            api_versions: versions.iter().map(|v| v.to_string()).collect(),
            ..wire::Heartbeat::default()
        };
        {
            let mut reg = fed.registry.lock().unwrap();
            reg.register(hb("new", &["v1alpha1"]), "new.ts.net", "n1", now)
                .unwrap();
            reg.register(hb("future", &["v2"]), "future.ts.net", "n2", now)
                .unwrap();
        }
        let names: Vec<String> = fed
            .healthy_members(now)
            .into_iter()
            .map(|m| m.announcement.cluster_name)
            .collect();
        assert_eq!(names, vec!["new".to_string()]);
        assert!(!fed.is_member());
        assert!(
            fed.rebuilding(now),
            "a fresh primary's registry is still filling up"
        );
    }
}
