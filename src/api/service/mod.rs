//! The session service: everything the API does, without HTTP. Handlers parse a request, identify the
//! caller ([`authorize`]) and make one call here; the answer is a value they render.
//!
//! Operations are federation-aware: a login plans its clusters, provisions the own one and the members
//! concurrently and assembles one answer ([`login`]); kubeconfigs, credentials and logouts do the same for
//! the clusters where the caller has sessions ([`kubeconfig`], [`credential`], [`logout`]). [`local`] holds
//! the primitives on this cluster's sessions that they share, [`members`] the member side of federation,
//! [`outcome`] how a login is counted and logged (once), [`relay`] the grant check before a member mints,
//! [`revalidate`] the periodic grant check.

pub mod authorize;
pub mod credential;
pub mod info;
pub mod kubeconfig;
pub mod local;
pub mod login;
pub mod logout;
pub mod members;
pub mod outcome;
pub mod period;
pub mod relay;
pub mod revalidate;
pub mod store;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use authorize::{AuthSettings, Caller};
pub use store::Store;

use crate::api::limits::Limits;
use crate::federation::Federation;
use crate::identity::Identity;
use crate::operator::cluster_info::ClusterInfoSource;
use crate::operator::expiry::ExpiryNotifier;
use crate::telemetry::Metrics;

/// Settings of the API, taken from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub auth: AuthSettings,
    pub namespace: String,
    pub user_prefix: String,
    pub context_prefix: String,
    pub max_wait: Duration,
    pub write_timeout: Duration,
    pub exec_credential_ttl: Duration,
    pub token_audiences: Vec<String>,
    /// This server's own URL, recorded in kubeconfig extensions and exec stanzas.
    pub self_url: String,
}

impl Settings {
    pub fn cluster_name(&self) -> &str {
        &self.auth.policy.cluster
    }
    pub fn retry_after(&self) -> u64 {
        self.auth.retry_after
    }
    /// The longest a request may wait for a session: `api.maxWait`, and 2 s before the write timeout.
    pub fn wait_cap(&self) -> Duration {
        self.max_wait
            .min(self.write_timeout.saturating_sub(Duration::from_secs(2)))
    }
}

/// What the service runs with, assembled by the server on the leader.
pub struct Parts {
    pub identity: Arc<dyn Identity>,
    pub client: kube::Client,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub cluster_info: ClusterInfoSource,
    pub expiries: ExpiryNotifier,
    pub federation: Arc<Federation>,
    /// Flips to true on shutdown: long-poll waiters are released with 503.
    pub shutdown: watch::Receiver<bool>,
    /// Per-peer limits of the tailnet listener (shared with the connection loop).
    pub limits: Arc<Limits>,
}

pub struct Service {
    pub settings: Settings,
    identity: Arc<dyn Identity>,
    client: kube::Client,
    store: Store,
    metrics: Arc<Metrics>,
    cluster_info: ClusterInfoSource,
    expiries: ExpiryNotifier,
    federation: Arc<Federation>,
    shutdown: watch::Receiver<bool>,
    limits: Arc<Limits>,
}

impl Service {
    pub fn new(settings: Settings, parts: Parts) -> Service {
        Service {
            limits: parts.limits,
            settings,
            identity: parts.identity,
            client: parts.client,
            store: parts.store,
            metrics: parts.metrics,
            cluster_info: parts.cluster_info,
            expiries: parts.expiries,
            federation: parts.federation,
            shutdown: parts.shutdown,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn federation(&self) -> &Federation {
        &self.federation
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The peer at `peer` passed the federation's trust check: on the federation routes it draws on the
    /// admitted peers' budget from now on, and only the total connection cap applies to it.
    pub fn admitted(&self, peer: Option<IpAddr>) {
        if let Some(p) = peer {
            self.limits.trust(p);
        }
    }
}
