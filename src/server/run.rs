//! `tka-server serve` as a process: Kubernetes client, tailnet, listeners, TLS, the server, signals.
//! SIGTERM/SIGINT/SIGQUIT start the ordered shutdown; a second signal exits at once with 130.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM};
use tokio::net::TcpListener;

use super::tailnet::{self, Tailnet};
use super::{Parts, StartError, start, start_error};
use crate::config::Config;

async fn kube_client() -> Result<kube::Client, StartError> {
    kube::Client::try_default().await.map_err(|e| {
        start_error(
            format!("no Kubernetes client configuration: {e}"),
            "run in a pod with a service account, or set KUBECONFIG",
        )
    })
}

/// Runs until a signal; returns the process exit code.
pub async fn serve(config: Config) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let mut signals = match signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGQUIT]) {
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
    let prepared = async {
        // The health port first, so probes get an answer (not ready) while the rest starts.
        let health = TcpListener::bind(health_addr).await.map_err(|e| {
            start_error(
                format!("cannot bind the health port {health_addr}: {e}"),
                "set health.port",
            )
        })?;
        let client = kube_client().await?;
        let tailnet = Tailnet::start(&config, &env).await?;
        let listeners = tailnet::listeners(&config, &tailnet).await?;
        let tls = tailnet::tls(&config, &tailnet).await?;
        let parts = Parts {
            client,
            identity: tailnet.identity.clone(),
            api_listeners: listeners,
            tls,
            health_listener: Some(health),
        };
        Ok::<_, StartError>((tailnet, parts))
    };
    let (mut tailnet, parts) = tokio::select! {
        r = prepared => match r {
            Ok(p) => p,
            Err(e) => { tracing::error!(hint = %e.hint, "{}", e.message); eprintln!("{e}"); return ExitCode::FAILURE; }
        },
        _ = signals.next() => return ExitCode::from(130),
    };
    let running = match start(&config, parts).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(hint = %e.hint, "{}", e.message);
            eprintln!("{e}");
            tailnet.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    let mut supervisor = tailnet.supervisor.take();
    let daemon_failed = async {
        match supervisor.as_mut() {
            Some(s) => s.await.ok().and_then(Result::err),
            None => futures::future::pending().await,
        }
    };
    let code = tokio::select! {
        _ = signals.next() => ExitCode::SUCCESS,
        Some(e) = daemon_failed => {
            tracing::error!(error = %e, "tailscaled keeps failing; exiting so the pod restarts");
            ExitCode::FAILURE
        }
    };
    tracing::info!("shutting down");
    let timeout = config.server.shutdown_timeout.as_std();
    let ordered = async {
        running.shutdown(timeout).await;
        tailnet.supervisor = supervisor;
        tailnet.shutdown().await;
    };
    tokio::select! {
        _ = ordered => code,
        _ = signals.next() => ExitCode::from(130),
        _ = tokio::time::sleep(timeout + Duration::from_secs(6)) => ExitCode::FAILURE,
    }
}
