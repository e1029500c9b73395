//! `tka-server serve` as a process: Kubernetes client, tailnet, listeners, TLS, the server, signals.
//! SIGTERM/SIGINT/SIGQUIT start the ordered shutdown; a second signal exits at once with 130.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM};
use tokio::net::TcpListener;
use tracing::Instrument;

use super::tailnet::{self, Tailnet};
use super::{StartError, start_base, start_error, start_leader};
use std::sync::Arc;

use super::leader::{Elector, Settings};
use crate::config::Config;
use crate::telemetry::Metrics;

/// Time tailscaled gets to deliver the final responses before it is stopped.
const TAILNET_FLUSH: Duration = Duration::from_secs(1);

/// The one shared kube client (in-cluster or KUBECONFIG), with request metrics.
async fn kube_client(metrics: &Arc<Metrics>) -> Result<kube::Client, StartError> {
    let config = kube::Config::infer().await.map_err(|e| {
        start_error(
            format!("no Kubernetes client configuration: {e}"),
            "run in a pod with a service account, or set KUBECONFIG",
        )
    })?;
    super::apiserver::client(config, metrics.clone()).map_err(|e| {
        start_error(
            format!("Kubernetes client: {e}"),
            "check the kubeconfig's TLS settings",
        )
    })
}

type Signals = signal_hook_tokio::Signals;

/// Runs until a signal; returns the process exit code. Every replica serves health and metrics; a standby
/// waits for leadership; the leader starts the tailnet and the server, and stops them in order.
pub async fn serve(config: Config) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGQUIT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let health_addr: SocketAddr =
        match format!("{}:{}", config.health.bind_address, config.health.port).parse() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("health.bindAddress/health.port: {e}");
                return ExitCode::from(2);
            }
        };
    super::nofile::raise(config.server.max_connections.into());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // A first signal before anything serves is a clean stop.
    let (client, base) = tokio::select! {
        r = prepare(&config, health_addr) => match r {
            Ok(p) => p,
            Err(e) => return fail(e),
        },
        _ = signals.next() => return ExitCode::SUCCESS,
    };
    // A standby waits here, serving health (ready, reason `standby`) and metrics.
    let elector = config
        .operator
        .leader_election
        .enabled
        .then(|| Elector::new(client.clone(), election_settings(&config, &env)));
    let won = match &elector {
        Some(e) => {
            tracing::info!("waiting for leadership");
            tokio::select! {
                won = e.acquire(stop_rx.clone()) => won,
                _ = signals.next() => return ExitCode::SUCCESS,
            }
        }
        None => None,
    };
    let code = lead(
        &config,
        &mut signals,
        base,
        client,
        elector.as_ref(),
        won,
        stop_rx,
    )
    .await;
    let _ = stop_tx.send(true);
    code
}

/// The leader's life: start the tailnet and the server, serve, stop in order (or at once when leadership is
/// lost). From here on the Lease is renewed alongside everything the leader does, start-up and draining
/// included: a slow tailnet start or a long drain must not let it expire under a running node.
async fn lead(
    config: &Config,
    signals: &mut Signals,
    base: super::Base,
    client: kube::Client,
    elector: Option<&Elector>,
    won: Option<tokio::time::Instant>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let lost = leadership_lost(elector, won, stop);
    tokio::pin!(lost);
    // Elected (or election disabled): from now on /ready reports the leader's checks.
    base.health
        .leader
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut tailnet, listeners, tls) = tokio::select! {
        r = start_tailnet(config, &env) => match r {
            Ok(p) => p,
            Err(e) => return fail(e),
        },
        // Returning drops the half-started daemon with the runtime (SIGKILL).
        _ = &mut lost => return ExitCode::FAILURE,
        _ = signals.next() => return ExitCode::SUCCESS,
    };
    let identity = tailnet.identity.clone();
    let running = tokio::select! {
        r = start_leader(config, base, client, identity, listeners, tls) => match r {
            Ok(r) => r,
            Err(e) => {
                tailnet.shutdown().await;
                return fail(e);
            }
        },
        _ = &mut lost => {
            tailnet.kill().await;
            return ExitCode::FAILURE;
        }
    };
    let mut supervisor = tailnet.supervisor.take();
    let stopped = until_stopped(signals, &mut supervisor, lost.as_mut()).await;
    tailnet.supervisor = supervisor;
    let code = match stopped {
        Stopped::Lost => {
            lose(running, tailnet).await;
            return ExitCode::FAILURE;
        }
        Stopped::Signal => ExitCode::SUCCESS,
        Stopped::DaemonFailed => ExitCode::FAILURE,
    };
    tracing::info!("shutting down");
    let timeout = config.server.shutdown_timeout.as_std();
    tokio::select! {
        lost = stop_in_order(running, tailnet, elector, timeout, lost.as_mut()) => {
            if lost { ExitCode::FAILURE } else { code }
        }
        _ = signals.next() => ExitCode::from(130),
        _ = tokio::time::sleep(timeout + Duration::from_secs(6)) => ExitCode::FAILURE,
    }
}

/// Resolves only when leadership is lost (never without election).
async fn leadership_lost(
    elector: Option<&Elector>,
    won: Option<tokio::time::Instant>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    if let (Some(e), Some(since)) = (elector, won)
        && !e.hold(since, stop).await
    {
        return;
    }
    futures::future::pending().await
}

/// Lost leadership while serving: another replica may take the Lease as soon as it expires, so our tailnet
/// node goes first and at once (in-flight requests fail), then everything else, without draining.
async fn lose(running: super::Running, tailnet: Tailnet) {
    running
        .health
        .leader
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    tailnet.kill().await;
    running.abort();
    tracing::error!(
        stopped_ms = started.elapsed().as_millis() as u64,
        "stopped the tailnet node and the API after losing leadership; exiting so the pod restarts as a standby"
    );
}

/// Why [`until_stopped`] returned.
enum Stopped {
    Signal,
    DaemonFailed,
    Lost,
}

/// Every replica: the health port, the Kubernetes client, the apiserver and CRD checks.
async fn prepare(
    config: &Config,
    health_addr: SocketAddr,
) -> Result<(kube::Client, super::Base), StartError> {
    let health = TcpListener::bind(health_addr).await.map_err(|e| {
        start_error(
            format!("cannot bind the health port {health_addr}: {e}"),
            "set health.port",
        )
    })?;
    let metrics = Arc::new(Metrics::new(&config.tailscale.backend.to_string()));
    let client = kube_client(&metrics).await?;
    let base = start_base(config, &client, metrics, Some(health)).await?;
    Ok((client, base))
}

/// The leader's tailnet side: tailscaled, the listener(s) connections arrive on, TLS.
async fn start_tailnet(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Tailnet, Vec<TcpListener>, tailnet::Tls), StartError> {
    let span = tracing::info_span!("tailnet.start", tka.backend = %config.tailscale.backend, tka.state = tracing::field::Empty, tka.result = tracing::field::Empty);
    let tailnet = Tailnet::start(config, env).instrument(span.clone()).await;
    span.record("tka.result", if tailnet.is_ok() { "ok" } else { "error" });
    let tailnet = tailnet?;
    let state = crate::identity::Identity::status(tailnet.identity.as_ref()).state;
    span.record("tka.state", format!("{state:?}").as_str());
    let listeners = tailnet::listeners(config, &tailnet).await?;
    let tls = tailnet::tls(config, &tailnet).await?;
    Ok((tailnet, listeners, tls))
}

/// Serves until a signal, a tailscaled that keeps failing, or lost leadership.
async fn until_stopped(
    signals: &mut Signals,
    supervisor: &mut Option<tokio::task::JoinHandle<Result<(), String>>>,
    lost: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Stopped {
    let daemon_failed = async {
        match supervisor.as_mut() {
            Some(s) => s.await.ok().and_then(Result::err),
            None => futures::future::pending().await,
        }
    };
    tokio::select! {
        _ = signals.next() => Stopped::Signal,
        Some(e) = daemon_failed => {
            tracing::error!(error = %e, "tailscaled keeps failing; exiting so the pod restarts");
            Stopped::DaemonFailed
        }
        _ = lost => Stopped::Lost,
    }
}

/// Stop serving and reconciling, stop our tailscaled, and only then release the Lease: a standby must never
/// run the same tailnet identity while ours is still up. The Lease is renewed while the API drains; losing
/// it meanwhile stops the node at once (returns `true`).
async fn stop_in_order(
    running: super::Running,
    tailnet: Tailnet,
    elector: Option<&Elector>,
    timeout: Duration,
    mut lost: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    let span = tracing::info_span!(
        "shutdown",
        tka.serving_ms = tracing::field::Empty,
        tka.tailnet_ms = tracing::field::Empty,
        tka.lease_ms = tracing::field::Empty
    );
    let phase = std::time::Instant::now();
    let drained = async {
        running.shutdown(timeout).await;
        // The last responses may still sit in tailscaled's buffers (in userspace mode its netstack forwards
        // them after our socket closed); stopping it at once cut one off in the end-to-end replicas test.
        tokio::time::sleep(TAILNET_FLUSH).await;
    };
    tokio::select! {
        _ = drained => {}
        _ = lost.as_mut() => {
            // Returning drops what is still draining with the runtime.
            tailnet.kill().await;
            return true;
        }
    }
    span.record("tka.serving_ms", phase.elapsed().as_millis() as u64);
    let phase = std::time::Instant::now();
    tokio::select! {
        _ = tailnet.shutdown() => {}
        // tailscaled already has its SIGTERM; returning drops it with the runtime (SIGKILL).
        _ = lost => return true,
    }
    span.record("tka.tailnet_ms", phase.elapsed().as_millis() as u64);
    let phase = std::time::Instant::now();
    if let Some(e) = elector {
        e.release().await;
    }
    span.record("tka.lease_ms", phase.elapsed().as_millis() as u64);
    false
}

fn fail(e: StartError) -> ExitCode {
    tracing::error!(hint = %e.hint, "{}", e.message);
    eprintln!("{e}");
    ExitCode::FAILURE
}

/// Lease settings; holder identity `<POD_NAME>_<random>`.
fn election_settings(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Settings {
    let le = &config.operator.leader_election;
    let pod = env("POD_NAME")
        .or_else(|| env("HOSTNAME"))
        .unwrap_or_else(|| "tka-server".into());
    Settings {
        namespace: config.operator.namespace.clone(),
        lease_name: le.lease_name.clone(),
        identity: format!("{pod}_{}", hex::encode(rand::random::<[u8; 4]>())),
        lease_duration: le.lease_duration.as_std(),
        renew_deadline: le.renew_deadline.as_std(),
        retry_period: le.retry_period.as_std(),
    }
}
