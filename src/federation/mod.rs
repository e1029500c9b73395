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
pub mod pins;
pub mod plan;
mod registry;
pub mod trust;
pub mod wire;

use std::collections::BTreeMap;
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
    /// Member: what marks the primary's node besides its name.
    pub primary: trust::PrimaryMarks,
    /// This server's own cluster and kubeconfig names, which no member may announce.
    pub own_names: trust::EntryNames,
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
            primary: trust::PrimaryMarks {
                tags: vec!["tag:tka".into()],
                cap_name: "specht-labs.de/cap/tka-primary".into(),
            },
            own_names: trust::EntryNames {
                cluster: String::new(),
                user_prefix: "tka-user-".into(),
                context_prefix: "tka-context-".into(),
            },
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
    pins: Arc<dyn pins::Pins>,
    /// The pins as last read or written (loaded on first use).
    pinned: tokio::sync::Mutex<Option<BTreeMap<String, String>>>,
}

impl Federation {
    pub fn new(
        settings: Settings,
        identity: Arc<dyn Identity>,
        metrics: Arc<Metrics>,
        pins: Arc<dyn pins::Pins>,
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
            pins,
            pinned: tokio::sync::Mutex::new(None),
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

    /// Member side: is this caller our primary? By name, by tag or capability, and by the node ID pinned at
    /// the first contact (pinned now if there is none yet).
    pub async fn check_primary(&self, peer: &PeerIdentity) -> Result<(), FedError> {
        let Some(host) = &self.primary_host else {
            return Err(FedError::WrongRole("member"));
        };
        trust::check_primary(peer, host, &self.settings.primary)?;
        let held = self.pin(pins::PRIMARY, &peer.node_stable_id).await?;
        if held != peer.node_stable_id {
            tracing::warn!(caller = %peer.node_fqdn, node_id = %peer.node_stable_id, pinned = %held,
                "federation call from the primary's name on another node refused; to trust a new primary node, delete key {:?} of {}",
                pins::PRIMARY, self.pins.location());
            return Err(FedError::NotPrimary {
                primary: host.clone(),
                caller: format!(
                    "{} (node {}, not the pinned node)",
                    peer.node_fqdn, peer.node_stable_id
                ),
            });
        }
        Ok(())
    }

    /// The value pinned at `key`, pinning `value` there if there is none (logged: it is a trust decision). A
    /// cached pin that differs is read again first, so an operator's reset takes effect without a restart.
    async fn pin(&self, key: &str, value: &str) -> Result<String, FedError> {
        let mut cache = self.pinned.lock().await;
        let cached = cache.as_ref().and_then(|m| m.get(key).cloned());
        if cached.as_deref() == Some(value) {
            return Ok(value.to_string());
        }
        let mut map = self.pins.load().await.map_err(FedError::PinsUnavailable)?;
        let held = match map.get(key) {
            Some(v) => v.clone(),
            None => {
                let held = self
                    .pins
                    .pin(key, value)
                    .await
                    .map_err(FedError::PinsUnavailable)?;
                if held == value {
                    tracing::warn!(key, value, store = %self.pins.location(), "federation: pinned");
                }
                held
            }
        };
        map.insert(key.to_string(), held.clone());
        *cache = Some(map);
        Ok(held)
    }

    /// Primary side: a heartbeat from `peer`. Admits it (tag or capability, URL pointing at the caller),
    /// binds its cluster name and prefixes to its node on first sight (persisted), refuses them to any other
    /// node, records it and keeps the members gauge current. `Ok(true)`: a member new to this registry.
    pub async fn admit(&self, peer: &PeerIdentity, hb: wire::Heartbeat) -> Result<bool, FedError> {
        if self.is_member() {
            return Err(FedError::WrongRole("primary"));
        }
        trust::admit(
            peer,
            &hb,
            &self.settings.member_tags,
            &self.settings.member_cap_name,
        )?;
        self.bind(peer, &hb).await?;
        let now = Instant::now();
        let mut reg = self.registry.lock().expect("lock poisoned");
        let new = reg.get(&hb.cluster_name, now).is_none();
        reg.register(hb, &peer.node_fqdn, &peer.node_stable_id, now)?;
        self.set_gauges(&reg, now);
        Ok(new)
    }

    /// The cluster name belongs to the node that first announced it, with the prefixes it announced; no
    /// name or prefix may equal the primary's own or another binding's.
    async fn bind(&self, peer: &PeerIdentity, hb: &wire::Heartbeat) -> Result<(), FedError> {
        let names = trust::EntryNames {
            cluster: hb.cluster_name.clone(),
            user_prefix: hb.user_prefix.clone(),
            context_prefix: hb.context_prefix.clone(),
        };
        let wanted = pins::Binding {
            node_id: peer.node_stable_id.clone(),
            user_prefix: hb.user_prefix.clone(),
            context_prefix: hb.context_prefix.clone(),
        };
        let key = pins::cluster_key(&hb.cluster_name);
        let bindings = self.bindings().await?;
        if let Some(held) = bindings
            .iter()
            .find(|(c, _)| *c == hb.cluster_name)
            .map(|(_, b)| b)
            && held.node_id != peer.node_stable_id
        {
            return Err(FedError::ClusterNameConflict {
                cluster: hb.cluster_name.clone(),
                holder: format!(
                    "node {} (pinned; delete key {key:?} of {} to move it)",
                    held.node_id,
                    self.pins.location()
                ),
            });
        }
        // One cluster per node: the names a node can bind (and with them the `cluster` label values of
        // the federation metrics and the pins ConfigMap) stay bounded by the nodes the policy admits.
        if let Some((other, _)) = bindings
            .iter()
            .find(|(c, b)| *c != hb.cluster_name && b.node_id == peer.node_stable_id)
        {
            return Err(FedError::NamesConflict {
                cluster: hb.cluster_name.clone(),
                what: "a second cluster name for its node".into(),
                holder: format!(
                    "cluster {other:?} (one cluster per node; delete key {:?} of {} to rename it)",
                    pins::cluster_key(other),
                    self.pins.location()
                ),
            });
        }
        let others: Vec<trust::EntryNames> = bindings
            .iter()
            .filter(|(c, _)| *c != hb.cluster_name)
            .map(|(c, b)| trust::EntryNames {
                cluster: c.clone(),
                user_prefix: b.user_prefix.clone(),
                context_prefix: b.context_prefix.clone(),
            })
            .collect();
        trust::check_names(&names, &self.settings.own_names, &others)?;
        let held = self.pin(&key, &wanted.encode()).await?;
        if pins::Binding::decode(&held).is_some_and(|b| b.node_id != peer.node_stable_id) {
            // Another replica or request bound it first.
            return Err(FedError::ClusterNameConflict {
                cluster: hb.cluster_name.clone(),
                holder: "another node".into(),
            });
        }
        if held != wanted.encode() {
            // The holder changed its prefixes (checked above against everyone else).
            self.pins
                .update(&key, &wanted.encode())
                .await
                .map_err(FedError::PinsUnavailable)?;
            if let Some(map) = self.pinned.lock().await.as_mut() {
                map.insert(key, wanted.encode());
            }
        }
        Ok(())
    }

    /// Every cluster binding, by name.
    async fn bindings(&self) -> Result<Vec<(String, pins::Binding)>, FedError> {
        let mut cache = self.pinned.lock().await;
        if cache.is_none() {
            *cache = Some(self.pins.load().await.map_err(FedError::PinsUnavailable)?);
        }
        Ok(cache
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("cluster.")?;
                Some((name.to_string(), pins::Binding::decode(v)?))
            })
            .collect())
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

    fn federation(metrics: Arc<Metrics>) -> Federation {
        let mut settings = Settings {
            member_tags: vec!["tag:m".into()],
            ..Settings::default()
        };
        settings.own_names.cluster = "primary".into();
        Federation::new(
            settings,
            Arc::new(StaticIdentity::new()),
            metrics,
            Arc::new(pins::MemoryPins::default()),
        )
    }

    fn hb(name: &str, versions: &[&str]) -> wire::Heartbeat {
        wire::Heartbeat {
            cluster_name: name.into(),
            member_url: format!("https://{name}.ts.net"),
            api_endpoint: "https://10.0.0.1:6443".into(),
            api_versions: versions.iter().map(|v| v.to_string()).collect(),
            user_prefix: format!("{name}-user-"),
            context_prefix: format!("{name}-"),
            ..wire::Heartbeat::default()
        }
    }

    fn peer(name: &str, id: &str) -> PeerIdentity {
        PeerIdentity {
            node_fqdn: format!("{name}.ts.net"),
            node_stable_id: id.into(),
            tags: vec!["tag:m".into()],
            ..PeerIdentity::default()
        }
    }

    #[tokio::test]
    async fn members_without_our_api_version_take_no_part() {
        let metrics = Arc::new(Metrics::new("static"));
        let fed = federation(metrics.clone());
        assert!(
            fed.admit(&peer("new", "n1"), hb("new", &["v1alpha1"]))
                .await
                .unwrap()
        );
        assert!(
            fed.admit(&peer("future", "n2"), hb("future", &["v2"]))
                .await
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

    #[tokio::test]
    async fn a_cluster_name_stays_with_its_first_node() {
        let fed = federation(Arc::new(Metrics::new("static")));
        let v = &["v1alpha1"];
        fed.admit(&peer("west", "n1"), hb("west", v)).await.unwrap();
        // Another node, even the same name on the tailnet, gets 409 whatever the holder's health.
        let e = fed
            .admit(&peer("west", "n9"), hb("west", v))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "cluster_name_conflict");
        // Prefixes of another member or of the primary are refused too.
        let mut copy = hb("east", v);
        copy.user_prefix = "west-user-".into();
        let e = fed.admit(&peer("east", "n2"), copy).await.unwrap_err();
        assert_eq!(e.code(), "kubeconfig_names_conflict");
        let mut primary_like = hb("east", v);
        primary_like.context_prefix = "tka-context-".into();
        let e = fed
            .admit(&peer("east", "n2"), primary_like)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "kubeconfig_names_conflict");
        let e = fed
            .admit(&peer("primary", "n3"), hb("primary", v))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "cluster_name_conflict");
        // The holder may change its own prefixes.
        let mut renamed = hb("west", v);
        renamed.user_prefix = "w-user-".into();
        fed.admit(&peer("west", "n1"), renamed).await.unwrap();
    }
}
