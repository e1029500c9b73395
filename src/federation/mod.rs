//! Federation: one login at the primary gives a context for every member cluster.
//!
//! [`Federation`] is the one door: the member registry, the revocations kept for absent members, the member
//! client and the trust checks sit behind it, and it keeps its own gauges current. Pure parts (no I/O, tested
//! without a network): [`wire`] bodies, the member [`registry`] judged by a clock passed in, the [`trust`]
//! checks on WhoIs results, per-cluster rule selection in [`plan`], and the layer's [`FedError`]. I/O glue:
//! [`client`] (outbound calls through the identity backend's `dial`, with their span and metrics) and
//! [`heartbeat`] (the member leader's registration loop). The HTTP handlers live in `api`.

pub mod client;
pub mod error;
pub mod heartbeat;
pub mod plan;
mod registry;
pub mod trust;
pub mod wire;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use client::Client;
pub use error::FedError;
pub use registry::{Health, Member};

use crate::identity::{Identity, PeerIdentity};
use crate::telemetry::Metrics;

/// The federation API version this server speaks (sent in heartbeats as `api_versions`).
pub const API_VERSION: &str = "v1alpha1";
/// Path prefix of the federation endpoints.
pub const PREFIX: &str = "/federation/v1alpha1";
/// How long a missed revocation is kept for a member's return.
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

/// The federation side of one running server: a primary (with or without members) or a member.
pub struct Federation {
    settings: Settings,
    /// Host of `login_server` (members only): the one node whose federation calls are accepted.
    primary_host: Option<String>,
    /// The member registry (primary only; empty on members and standalone servers).
    registry: Mutex<registry::Registry>,
    /// Revocations a member missed (down at logout): retried on its heartbeats for up to a day. In memory
    /// only: lost on failover, when the members' own expiry still ends the sessions.
    retries: Mutex<Vec<(String, wire::SessionRef, Instant)>>,
    /// When this leader started: until one interval has passed the registry may still be filling up.
    started: Instant,
    client: Client,
    metrics: Arc<Metrics>,
}

impl Federation {
    pub fn new(
        settings: Settings,
        identity: Arc<dyn Identity>,
        metrics: Arc<Metrics>,
    ) -> Federation {
        let primary_host = trust::url_host(&settings.login_server).map(|(_, h, _)| h);
        let registry =
            registry::Registry::new(settings.heartbeat_interval, settings.missed_heartbeats);
        let client = Client::new(identity, metrics.clone(), settings.request_timeout);
        Federation {
            settings,
            primary_host,
            registry: Mutex::new(registry),
            retries: Mutex::new(Vec::new()),
            started: Instant::now(),
            client,
            metrics,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Calls to members (and, on a member, to the primary).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn is_member(&self) -> bool {
        self.primary_host.is_some()
    }

    /// A member with `allowDirectLogin: false` serves its users only through the primary.
    pub fn direct_login_disabled(&self) -> bool {
        self.is_member() && !self.settings.allow_direct_login
    }

    /// Member side: is this caller our primary?
    pub fn check_primary(&self, peer: &PeerIdentity) -> Result<(), FedError> {
        match &self.primary_host {
            None => Err(FedError::WrongRole("member")),
            Some(host) => trust::check_primary(peer, host),
        }
    }

    /// Primary side: a heartbeat from `peer`. Admits it (tag or capability, URL pointing at the caller),
    /// records it and keeps the members gauge current. `Ok(true)`: a member new to this registry.
    pub fn admit(&self, peer: &PeerIdentity, hb: wire::Heartbeat) -> Result<bool, FedError> {
        if self.is_member() {
            return Err(FedError::WrongRole("primary"));
        }
        trust::admit(
            peer,
            &hb,
            &self.settings.member_tags,
            &self.settings.member_cap_name,
        )?;
        let now = Instant::now();
        let mut reg = self.registry.lock().expect("lock poisoned");
        let new = reg.get(&hb.cluster_name, now).is_none();
        reg.register(hb, &peer.node_fqdn, &peer.node_stable_id, now)?;
        self.set_gauges(&reg, now);
        Ok(new)
    }

    /// Drops members that missed their heartbeats; returns their names.
    pub fn prune(&self) -> Vec<String> {
        let now = Instant::now();
        let mut reg = self.registry.lock().expect("lock poisoned");
        let removed = reg.prune(now);
        self.set_gauges(&reg, now);
        removed
    }

    fn set_gauges(&self, reg: &registry::Registry, now: Instant) {
        let (healthy, stale) = reg.counts(now);
        let gauge = &self.metrics.federation_members;
        gauge.with_label_values(&["healthy"]).set(healthy as i64);
        gauge.with_label_values(&["stale"]).set(stale as i64);
    }

    /// Keeps a revocation for `cluster` to retry on its next heartbeat.
    pub fn retry_later(&self, cluster: &str, r: wire::SessionRef) {
        let mut q = self.retries.lock().expect("lock poisoned");
        if !q.iter().any(|(c, x, _)| c == cluster && *x == r) {
            q.push((cluster.to_string(), r, Instant::now()));
        }
    }

    /// The revocations waiting for `cluster` (removed from the list; re-add what fails again).
    pub fn take_retries(&self, cluster: &str) -> Vec<wire::SessionRef> {
        let now = Instant::now();
        let mut q = self.retries.lock().expect("lock poisoned");
        q.retain(|(_, _, since)| now.duration_since(*since) < RETRY_FOR);
        let (mine, rest): (Vec<_>, Vec<_>) = q.drain(..).partition(|(c, _, _)| c == cluster);
        *q = rest;
        mine.into_iter().map(|(_, r, _)| r).collect()
    }

    /// A member that missed logouts is back: send them again, in the background (its heartbeat is answered
    /// now). What fails again stays on the list.
    pub fn redeliver(self: &Arc<Self>, cluster: &str) {
        let pending = self.take_retries(cluster);
        if pending.is_empty() {
            return;
        }
        let fed = self.clone();
        let cluster = cluster.to_string();
        tokio::spawn(async move {
            let Some(m) = fed.member(&cluster) else {
                return;
            };
            let rid = hex::encode(rand::random::<[u8; 8]>());
            for r in pending {
                match fed.client.signout(&m, &r, &rid).await {
                    Ok(()) | Err(client::CallError::Status { status: 404, .. }) => {
                        tracing::info!(cluster = %cluster, "missed federated logout delivered");
                    }
                    Err(_) => fed.retry_later(&cluster, r),
                }
            }
        });
    }

    /// After a (re)start the registry is rebuilt from heartbeats within one interval.
    pub fn rebuilding(&self) -> bool {
        !self.is_member() && self.started.elapsed() < self.settings.heartbeat_interval
    }

    /// The members that take part in logins now (healthy only), by name.
    pub fn healthy_members(&self) -> Vec<Member> {
        self.members(Health::Healthy)
    }

    /// True when logins go to members too (a primary with at least one healthy member).
    pub fn has_members(&self) -> bool {
        !self.healthy_members().is_empty()
    }

    /// Members that missed heartbeats but are not removed yet: probably down, so a logout cannot reach
    /// them now and must be kept for their return.
    pub fn stale_members(&self) -> Vec<Member> {
        self.members(Health::Stale)
    }

    /// Names of members removed for missed heartbeats within the retry period.
    pub fn departed_members(&self) -> Vec<String> {
        self.registry
            .lock()
            .expect("lock poisoned")
            .departed(Instant::now())
    }

    /// A member by cluster name (healthy or stale).
    pub fn member(&self, cluster: &str) -> Option<Member> {
        let reg = self.registry.lock().expect("lock poisoned");
        reg.get(cluster, Instant::now()).map(|(m, _)| m.clone())
    }

    /// Every member not yet removed, with its health, by name.
    pub fn list(&self) -> Vec<(Member, Health)> {
        let reg = self.registry.lock().expect("lock poisoned");
        reg.list(Instant::now())
            .into_iter()
            .map(|(m, h)| (m.clone(), h))
            .collect()
    }

    fn members(&self, health: Health) -> Vec<Member> {
        self.list()
            .into_iter()
            .filter(|(_, h)| *h == health)
            // Version skew: a member that does not speak our federation API takes no part.
            .filter(|(m, _)| m.announcement.api_versions.iter().any(|v| v == API_VERSION))
            .map(|(m, _)| m)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::StaticIdentity;

    #[test]
    fn members_without_our_api_version_take_no_part() {
        let metrics = Arc::new(Metrics::new("static"));
        let fed = Federation::new(
            Settings {
                member_tags: vec!["tag:m".into()],
                ..Settings::default()
            },
            Arc::new(StaticIdentity::new()),
            metrics.clone(),
        );
        let hb = |name: &str, versions: &[&str]| wire::Heartbeat {
            cluster_name: name.into(),
            member_url: format!("https://{name}.ts.net"),
            api_endpoint: "https://10.0.0.1:6443".into(),
            api_versions: versions.iter().map(|v| v.to_string()).collect(),
            ..wire::Heartbeat::default()
        };
        let peer = |name: &str, id: &str| PeerIdentity {
            node_fqdn: format!("{name}.ts.net"),
            node_stable_id: id.into(),
            tags: vec!["tag:m".into()],
            ..PeerIdentity::default()
        };
        assert!(
            fed.admit(&peer("new", "n1"), hb("new", &["v1alpha1"]))
                .unwrap()
        );
        assert!(
            fed.admit(&peer("future", "n2"), hb("future", &["v2"]))
                .unwrap()
        );
        let names: Vec<String> = fed
            .healthy_members()
            .into_iter()
            .map(|m| m.announcement.cluster_name)
            .collect();
        assert_eq!(names, vec!["new".to_string()]);
        assert_eq!(
            metrics
                .federation_members
                .with_label_values(&["healthy"])
                .get(),
            2,
            "the gauge counts every registered member"
        );
        assert!(!fed.is_member());
        assert!(
            fed.rebuilding(),
            "a fresh primary's registry is still filling up"
        );
    }
}
