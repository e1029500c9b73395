//! The member leader's registration loop (federation.md §3): a heartbeat right after start and then every
//! interval (the primary's answer sets it). Failures are logged when they change, never fatal: the member
//! keeps serving its own users and its sessions keep expiring on their own.

use std::sync::Arc;
use std::time::Duration;

use super::client::{self, CallError};
use super::wire::{Heartbeat, HeartbeatAck};
use super::{API_VERSION, Federation, PREFIX};
use crate::api::cluster_info::ClusterInfoSource;
use crate::identity::Identity;
use crate::model::duration::GoDuration;
use crate::telemetry::Metrics;

/// What the member announces besides its cluster info.
#[derive(Debug, Clone)]
pub struct Announce {
    pub cluster_name: String,
    pub context_prefix: String,
    pub user_prefix: String,
    pub allowed_roles: Vec<String>,
    /// Builds the member URL from the node's current FQDN (known only once the tailnet is up).
    pub member_url: fn(&crate::config::Config, &str) -> String,
    pub config: Arc<crate::config::Config>,
}

/// The heartbeat body from the current cluster info.
pub fn heartbeat(
    a: &Announce,
    fqdn: &str,
    info: Option<crate::model::wire::TkaClusterInfo>,
) -> Heartbeat {
    let info = info.unwrap_or_default();
    Heartbeat {
        cluster_name: a.cluster_name.clone(),
        member_url: (a.member_url)(&a.config, fqdn),
        api_endpoint: info.server_url,
        ca_data: info.ca_data,
        insecure_skip_tls_verify: info.insecure_skip_tls_verify,
        labels: info.labels,
        context_prefix: a.context_prefix.clone(),
        user_prefix: a.user_prefix.clone(),
        allowed_roles: a.allowed_roles.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_versions: vec![API_VERSION.into()],
    }
}

/// Runs until the task is dropped (the leader stepping down or shutdown).
pub async fn run(
    fed: Arc<Federation>,
    identity: Arc<dyn Identity>,
    announce: Announce,
    cluster_info: ClusterInfoSource,
    metrics: Arc<Metrics>,
) {
    let mut interval = fed.settings.heartbeat_interval;
    let mut last_error: Option<String> = None;
    let mut registered = false;
    loop {
        let fqdn = identity.status().self_fqdn;
        let hb = heartbeat(&announce, &fqdn, cluster_info.get());
        let rid = hex::encode(rand::random::<[u8; 8]>());
        let r: Result<client::Answer<HeartbeatAck>, CallError> = client::call(
            identity.as_ref(),
            http::Method::POST,
            &fed.settings.login_server,
            &format!("{PREFIX}/heartbeat"),
            Some(&hb),
            fed.settings.request_timeout,
            &rid,
        )
        .await;
        let result = match &r {
            Ok(_) => "success",
            Err(e) => e.label(),
        };
        metrics
            .federation_requests
            .with_label_values(&[&announce.cluster_name, "heartbeat", result])
            .inc();
        match r {
            Ok(a) => {
                metrics
                    .federation_last_heartbeat
                    .set(jiff::Timestamp::now().as_second());
                if last_error.take().is_some() || !registered {
                    registered = true;
                    tracing::info!(primary = %fed.settings.login_server, "registered with the federation primary");
                }
                if let Ok(d) = GoDuration::parse(&a.body.heartbeat_interval) {
                    interval = d.as_std().max(Duration::from_secs(1));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(primary = %fed.settings.login_server, error = %msg, "federation heartbeat failed");
                    last_error = Some(msg);
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_carries_cluster_info_and_names() {
        let mut config = crate::config::Config::default();
        config.tailscale.port = 443;
        let a = Announce {
            cluster_name: "prod-west-cluster".into(),
            context_prefix: "west-".into(),
            user_prefix: "west-user-".into(),
            allowed_roles: vec!["view".into()],
            member_url: crate::server::self_url,
            config: Arc::new(config),
        };
        let info = crate::model::wire::TkaClusterInfo {
            server_url: "https://10.0.0.1:6443".into(),
            ..Default::default()
        };
        let hb = heartbeat(&a, "tka-west.ts.net", Some(info));
        assert_eq!(hb.member_url, "https://tka-west.ts.net");
        assert_eq!(hb.api_endpoint, "https://10.0.0.1:6443");
        assert_eq!(hb.api_versions, vec!["v1alpha1".to_string()]);
        // No cluster info yet: announced without an endpoint, which the primary refuses (400).
        assert!(heartbeat(&a, "x", None).api_endpoint.is_empty());
    }
}
