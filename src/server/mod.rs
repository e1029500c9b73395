//! `tka-server serve`: starts the parts in order and stops them in reverse.
//!
//! Startup: check the apiserver (≥ 1.28) and the CRD, fill the session cache, then run the controller,
//! the sweep, the API listener and the health server. Shutdown: not ready → stop accepting and release
//! long-poll waiters → drain → stop the controller after its current reconciles.

pub mod apiserver;
pub mod leader;
mod nofile;
pub mod run;
pub mod tailnet;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kube::Api;
use kube::api::ListParams;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::limits::{self, Limits};
use crate::api::serve::{Guard, ServeOptions, serve};
use crate::api::service::{self, AuthSettings, Service, Store};
use crate::api::tls::CurrentCert;
use crate::config::Config;
use crate::federation::Federation;
use crate::identity::Identity;
use crate::model::rules::Policy;
use crate::operator::cluster_info::{ClusterInfoSettings, ClusterInfoSource, ConfigMapRef};
use crate::operator::context::Context;
use crate::operator::crd::TkaSignin;
use crate::operator::expiry::ExpiryNotifier;
use crate::telemetry::Metrics;
use crate::telemetry::health::{self, Health};
use tokio_rustls::TlsAcceptor;

/// Minimum Kubernetes version (Secret-bound TokenRequest, CEL validation).
pub const MIN_KUBERNETES_MINOR: u32 = 28;

#[derive(Debug, thiserror::Error)]
#[error("{message}\n  hint: {hint}")]
pub struct StartError {
    pub message: String,
    pub hint: String,
}

fn start_error(message: impl Into<String>, hint: impl Into<String>) -> StartError {
    StartError {
        message: message.into(),
        hint: hint.into(),
    }
}

/// What the server runs with, supplied by the binary (or a test).
pub struct Parts {
    pub client: kube::Client,
    pub identity: Arc<dyn Identity>,
    /// Tailnet listener(s) of the API (e.g. 127.0.0.1 and ::1 in userspace mode).
    pub api_listeners: Vec<TcpListener>,
    /// TLS for the API listener, and the certificate `/ready` checks.
    pub tls: Option<(TlsAcceptor, Arc<CurrentCert>)>,
    /// Health and metrics listener; `None` to not serve one.
    pub health_listener: Option<TcpListener>,
}

/// A started server.
pub struct Running {
    pub api_addr: SocketAddr,
    pub health_addr: Option<SocketAddr>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    health_stop: watch::Sender<bool>,
    api_task: JoinHandle<()>,
    controller_task: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

/// API settings from the configuration.
pub fn api_settings(config: &Config, self_url: String) -> service::Settings {
    let op = &config.operator;
    service::Settings {
        auth: AuthSettings {
            cap_name: config.tailscale.cap_name.clone(),
            allow_tagged_nodes: config.tailscale.allow_tagged_nodes,
            policy: Policy {
                cluster: op.cluster_name.clone(),
                allowed_roles: op.allowed_roles.clone(),
                max_period: Some(op.max_period.as_std()).filter(|d| !d.is_zero()),
                protected_namespace: Some(op.namespace.clone()),
            },
            retry_after: config.api.retry_after_seconds.max(1) as u64,
        },
        namespace: op.namespace.clone(),
        user_prefix: op.user_prefix.clone(),
        context_prefix: op.context_prefix.clone(),
        max_wait: config.api.max_wait.as_std(),
        write_timeout: config.server.write_timeout.as_std(),
        exec_credential_ttl: config.api.exec_credential_ttl.as_std(),
        token_audiences: op.token_audiences.clone(),
        self_url,
    }
}

/// The per-peer limits of the tailnet listener.
pub fn limit_settings(config: &Config) -> limits::Settings {
    let (server, api) = (&config.server, &config.api);
    limits::Settings {
        max_connections: server.max_connections as usize,
        max_connections_per_peer: server.max_connections_per_peer as usize,
        rate: api.rate_limit,
        burst: api.rate_burst,
        federation_rate: api.federation_rate_limit,
        federation_burst: api.federation_rate_burst,
    }
}

fn cluster_info_settings(config: &Config) -> ClusterInfoSettings {
    let ci = &config.cluster_info;
    let r = &ci.config_map_ref;
    // Neither endpoint nor ConfigMap configured (the deployment guide's case): try kubeadm's cluster-info.
    let config_map = (ci.api_endpoint.is_empty()).then(|| ConfigMapRef {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        key_endpoint: r.keys.api_endpoint.clone(),
        key_ca: r.keys.ca_data.clone(),
        key_insecure: r.keys.insecure.clone(),
        key_kubeconfig: r.keys.kubeconfig.clone(),
    });
    ClusterInfoSettings {
        cluster_name: config.operator.cluster_name.clone(),
        api_endpoint: ci.api_endpoint.clone(),
        ca_data: ci.ca_data.clone(),
        insecure: ci.insecure_skip_tls_verify,
        labels: ci.labels.clone(),
        config_map,
    }
}

/// The tailnet URL of this server as clients reach it.
pub fn self_url(config: &Config, fqdn: &str) -> String {
    url_of(&config.tailscale, fqdn)
}

fn url_of(ts: &crate::config::TailscaleConfig, fqdn: &str) -> String {
    let host = if fqdn.is_empty() {
        if ts.tailnet.is_empty() {
            ts.hostname.clone()
        } else {
            format!("{}.{}", ts.hostname, ts.tailnet)
        }
    } else {
        fqdn.to_string()
    };
    match ts.port {
        443 => format!("https://{host}"),
        p => format!("http://{host}:{p}"),
    }
}

/// Why the apiserver checks did not pass.
#[derive(Debug)]
pub enum Preflight {
    /// Cannot reach or read the apiserver: wait.
    Unreachable(StartError),
    /// The apiserver answers but the CRD is missing: wait (it may be applied next).
    NoCrd(StartError),
    /// Waiting cannot help.
    Fatal(StartError),
}

/// Checks the apiserver version and that the CRD is installed.
pub async fn preflight(client: &kube::Client, namespace: &str) -> Result<(), Preflight> {
    let version = client.apiserver_version().await.map_err(|e| {
        Preflight::Unreachable(start_error(
            format!("cannot reach the Kubernetes API: {e}"),
            "check KUBECONFIG or the pod's service account and network policy",
        ))
    })?;
    let minor: u32 = version.minor.trim_end_matches('+').parse().unwrap_or(0);
    if version.major == "1" && minor < MIN_KUBERNETES_MINOR {
        return Err(Preflight::Fatal(start_error(
            format!("Kubernetes {}.{} is too old", version.major, version.minor),
            format!(
                "tka needs Kubernetes 1.{MIN_KUBERNETES_MINOR} or newer (Secret-bound tokens, CEL validation)"
            ),
        )));
    }
    let api: Api<TkaSignin> = Api::namespaced(client.clone(), namespace);
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(Preflight::NoCrd(start_error(
            "the TkaSignin CRD (tkasignins.tka.specht-labs.de) is not installed",
            "apply it first: `tka-server crd | kubectl apply -f -` or the install/ manifests",
        ))),
        Err(e) => Err(Preflight::Unreachable(start_error(
            format!("cannot list TkaSignins in namespace {namespace}: {e}"),
            "check the server's RBAC (Role tka-server)",
        ))),
    }
}

/// What every replica runs, leader or standby: the health port and the apiserver checks.
pub struct Base {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub health_addr: Option<SocketAddr>,
    health_stop: watch::Sender<bool>,
    background: Vec<JoinHandle<()>>,
}

/// Starts the health port (first, so probes get an answer while the rest starts), then checks the
/// apiserver and the CRD.
pub async fn start_base(
    config: &Config,
    client: &kube::Client,
    metrics: Arc<Metrics>,
    health_listener: Option<TcpListener>,
) -> Result<Base, StartError> {
    let health = Arc::new(Health::default());
    let mut background = Vec::new();
    // The health port outlives the API during shutdown (it reports `shutting_down`).
    let (health_stop, _) = watch::channel(false);
    let health_addr = health_listener.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(listener) = health_listener {
        let router = health::router(health.clone(), metrics.clone());
        let opts = ServeOptions {
            read_header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            drain: Duration::from_secs(1),
        };
        background.push(tokio::spawn(serve(
            listener,
            router,
            opts,
            None,
            None,
            health_stop.subscribe(),
        )));
    }
    // An unreachable apiserver or a missing CRD is waited out (not ready, with the reason in /ready and the
    // log); only a too old Kubernetes is fatal, since waiting cannot fix it.
    let mut pause = Duration::from_secs(1);
    loop {
        let waiting = match preflight(client, &config.operator.namespace).await {
            Ok(()) => break,
            Err(Preflight::Fatal(e)) => return Err(e),
            Err(Preflight::NoCrd(e)) => {
                health.kube_ok();
                e
            }
            Err(Preflight::Unreachable(e)) => e,
        };
        tracing::warn!(hint = %waiting.hint, retry_in = ?pause, "{}", waiting.message);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    }
    health.kube_ok();
    health.crd_present.store(true, Ordering::SeqCst);
    background.push(tokio::spawn(probe_kubernetes(
        client.clone(),
        health.clone(),
    )));
    Ok(Base {
        health,
        metrics,
        health_addr,
        health_stop,
        background,
    })
}

/// Starts everything on one replica that is (or need not be) elected; returns once the API accepts.
pub async fn start(config: &Config, parts: Parts) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new(parts.identity.backend()));
    start_with_metrics(config, parts, metrics).await
}

/// [`start`] recording into `metrics`: the registries whose Kubernetes API series the caller's client
/// already feeds (built with `KubeApiMetricsLayer(metrics)`, as `serve` builds its own), so they appear on
/// `/metrics/controller`.
pub async fn start_with_metrics(
    config: &Config,
    parts: Parts,
    metrics: Arc<Metrics>,
) -> Result<Running, StartError> {
    let base = start_base(config, &parts.client, metrics, parts.health_listener).await?;
    start_leader(
        config,
        base,
        parts.client,
        parts.identity,
        parts.api_listeners,
        parts.tls,
    )
    .await
}

/// The leader's work: session cache, controller, sweep, cluster info, federation, the API listener(s).
pub async fn start_leader(
    config: &Config,
    base: Base,
    client: kube::Client,
    identity: Arc<dyn Identity>,
    api_listeners: Vec<TcpListener>,
    tls: Option<(TlsAcceptor, Arc<CurrentCert>)>,
) -> Result<Running, StartError> {
    let Base {
        health,
        metrics,
        health_addr,
        health_stop,
        mut background,
    } = base;
    let _ = health.identity.set(identity.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    health.leader.store(true, Ordering::SeqCst);

    let store = start_cache(config, &client, &health).await;
    let (controller_task, expiries) =
        start_operator(config, &client, &metrics, &shutdown_rx, &mut background);
    let cluster_info = ClusterInfoSource::start(cluster_info_settings(config), client.clone());
    let self_url = self_url(config, &identity.status().self_fqdn);
    let pins =
        crate::federation::pins::ConfigMapPins::new(client.clone(), &config.operator.namespace);
    let federation = Arc::new(Federation::new(
        federation_settings(config),
        identity.clone(),
        metrics.clone(),
        Arc::new(pins),
    ));
    background.push(start_federation(
        config,
        &federation,
        &cluster_info,
        &identity,
    ));
    let limits = Limits::new(limit_settings(config));
    let guard = Guard {
        limits: limits.clone(),
        identity: identity.clone(),
        metrics: metrics.clone(),
    };
    let parts = service::Parts {
        identity,
        client,
        store,
        metrics: metrics.clone(),
        cluster_info,
        expiries,
        federation,
        shutdown: shutdown_rx.clone(),
        limits,
    };
    let svc = Arc::new(Service::new(api_settings(config, self_url), parts));
    let revalidate = config.operator.revalidate_interval.as_std();
    if !revalidate.is_zero() {
        let task = service::revalidate::run(svc.clone(), revalidate);
        background.push(tokio::spawn(task));
    }
    let acceptor = tls.map(|(acceptor, cert)| {
        let _ = health.tls_loaded.set(Box::new(move || cert.is_loaded()));
        acceptor
    });
    let (api_addr, api_task) =
        start_api(config, svc, api_listeners, (acceptor, guard), &shutdown_rx)?;
    health.listener_bound.store(true, Ordering::SeqCst);
    tracing::info!(%api_addr, namespace = %config.operator.namespace, cluster = %config.operator.cluster_name, "tka-server started");

    Ok(Running {
        api_addr,
        health_addr,
        health,
        metrics,
        shutdown: shutdown_tx,
        health_stop,
        api_task,
        controller_task,
        background,
    })
}

/// The session cache the API reads; the controller's gauges are computed from it on every scrape.
async fn start_cache(config: &Config, client: &kube::Client, health: &Health) -> Store {
    let store = Store::start(client.clone(), &config.operator.namespace).await;
    health.caches_ready.store(true, Ordering::SeqCst);
    let cache = store.clone();
    let _ = health.controller_gauges.set(Box::new(move |metrics| {
        crate::operator::controller::refresh_gauges(&cache.all(), metrics)
    }));
    store
}

/// The operator's parts on the leader: the controller (stopped by the shutdown signal after its current
/// reconciles), the sweep, and the recorder of token expiries (the status writes the API asks for).
fn start_operator(
    config: &Config,
    client: &kube::Client,
    metrics: &Arc<Metrics>,
    shutdown: &watch::Receiver<bool>,
    background: &mut Vec<JoinHandle<()>>,
) -> (JoinHandle<()>, ExpiryNotifier) {
    let namespace = &config.operator.namespace;
    let ctx = Arc::new(Context::new(client.clone(), namespace, metrics.clone()));
    let sweep = config
        .operator
        .sweep_interval
        .as_std()
        .max(Duration::from_secs(10));
    let mut stop = shutdown.clone();
    let controller = tokio::spawn(crate::operator::controller::run(ctx, sweep, async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
    background.push(tokio::spawn(crate::operator::sweep::run(
        client.clone(),
        namespace.clone(),
        sweep,
    )));
    (controller, ExpiryNotifier::start(client.clone(), namespace))
}

/// Federation runs on the leader only: a member's heartbeats come from it, a primary's registry lives in
/// its memory (pruned here).
fn start_federation(
    config: &Config,
    federation: &Arc<Federation>,
    cluster_info: &ClusterInfoSource,
    identity: &Arc<dyn Identity>,
) -> JoinHandle<()> {
    if !federation.is_member() {
        return tokio::spawn(prune_members(federation.clone()));
    }
    let op = &config.operator;
    let announce = crate::federation::heartbeat::Announce {
        cluster_name: op.cluster_name.clone(),
        context_prefix: op.context_prefix.clone(),
        user_prefix: op.user_prefix.clone(),
        allowed_roles: op.allowed_roles.clone(),
    };
    let info = cluster_info.clone();
    let (identity, tailscale) = (identity.clone(), config.tailscale.clone());
    let member_url = move || url_of(&tailscale, &identity.status().self_fqdn);
    tokio::spawn(crate::federation::heartbeat::run(
        federation.clone(),
        announce,
        member_url,
        move || info.get(),
    ))
}

/// Serves the API on every listener until shutdown, in one task: aborting it (a crash, lost leadership)
/// ends every connection too. The listeners share one set of per-peer limits.
fn start_api(
    config: &Config,
    svc: Arc<Service>,
    listeners: Vec<TcpListener>,
    (acceptor, guard): (Option<TlsAcceptor>, Guard),
    shutdown: &watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), StartError> {
    let api_addr = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .ok_or_else(|| start_error("no API listener", "check server.listenAddresses"))?;
    let opts = ServeOptions {
        read_header_timeout: config.server.read_header_timeout.as_std(),
        idle_timeout: config.server.idle_timeout.as_std(),
        drain: config.server.shutdown_timeout.as_std(),
    };
    let router = crate::api::router(svc);
    let serving: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            let (tls, guard) = (acceptor.clone(), Some(guard.clone()));
            serve(l, router.clone(), opts, tls, guard, shutdown.clone())
        })
        .collect();
    let task = tokio::spawn(async move {
        futures::future::join_all(serving).await;
    });
    Ok((api_addr, task))
}

/// Federation settings from the configuration.
pub fn federation_settings(config: &Config) -> crate::federation::Settings {
    let f = &config.federation;
    crate::federation::Settings {
        login_server: f.login_server.clone(),
        heartbeat_interval: f.heartbeat_interval.as_std().max(Duration::from_secs(1)),
        missed_heartbeats: f.missed_heartbeats.max(1),
        request_timeout: f.request_timeout.as_std().max(Duration::from_millis(100)),
        member_tags: f.member_tags.clone(),
        member_cap_name: f.member_cap_name.clone(),
        primary: crate::federation::trust::PrimaryMarks {
            tags: f.primary_tags.clone(),
            cap_name: f.primary_cap_name.clone(),
        },
        own_names: crate::federation::trust::EntryNames {
            cluster: config.operator.cluster_name.clone(),
            user_prefix: config.operator.user_prefix.clone(),
            context_prefix: config.operator.context_prefix.clone(),
        },
        allow_direct_login: f.allow_direct_login,
    }
}

/// Primary: drops members that missed their heartbeats (the federation keeps its gauge current).
async fn prune_members(fed: Arc<Federation>) {
    let tick = (fed.settings().heartbeat_interval / 2).max(Duration::from_millis(500));
    loop {
        tokio::time::sleep(tick).await;
        for name in fed.prune() {
            tracing::warn!(cluster = %name, "federation member removed after missed heartbeats");
        }
    }
}

/// Keeps the "apiserver reachable within 30 s" readiness fact fresh.
async fn probe_kubernetes(client: kube::Client, health: Arc<Health>) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        match client.apiserver_version().await {
            Ok(_) => health.kube_ok(),
            Err(e) => tracing::warn!(error = %e, "Kubernetes API unreachable"),
        }
    }
}

impl Running {
    /// Ordered shutdown, bounded by `timeout`.
    pub async fn shutdown(self, timeout: Duration) {
        self.health.shutting_down.store(true, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        let drained = async {
            let _ = self.api_task.await;
            let _ = self.controller_task.await;
        };
        if tokio::time::timeout(timeout, drained).await.is_err() {
            tracing::warn!("shutdown deadline reached");
        }
        self.health.leader.store(false, Ordering::SeqCst);
        let _ = self.health_stop.send(true);
        for t in self.background {
            t.abort();
        }
    }

    /// Stops like a crash would: no draining, nothing released.
    pub fn abort(self) {
        self.api_task.abort();
        self.controller_task.abort();
        for t in self.background {
            t.abort();
        }
    }
}
