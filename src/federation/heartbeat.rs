//! The member leader's registration loop: a heartbeat right after start and then every interval (the
//! primary's answer sets it). Failures are logged when they change, never fatal: the member keeps serving its
//! own users and its sessions keep expiring on their own.

use std::sync::Arc;
use std::time::Duration;

use super::wire::Heartbeat;
use super::{API_VERSION, Federation};
use crate::model::duration::GoDuration;
use crate::model::wire::TkaClusterInfo;

/// What the member announces besides its cluster info.
#[derive(Debug, Clone)]
pub struct Announce {
    pub cluster_name: String,
    pub context_prefix: String,
    pub user_prefix: String,
    pub allowed_roles: Vec<String>,
}

/// The heartbeat body: this server's current URL (`https://<member FQDN>[:port]`) and cluster info.
pub fn heartbeat(a: &Announce, member_url: String, info: Option<TkaClusterInfo>) -> Heartbeat {
    let info = info.unwrap_or_default();
    Heartbeat {
        cluster_name: a.cluster_name.clone(),
        member_url,
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

/// Runs until the task is dropped (the leader stepping down or shutdown). Each beat reads this server's URL
/// (its node name may change) and the API endpoint and CA (a watched ConfigMap may change them).
pub async fn run(
    fed: Arc<Federation>,
    announce: Announce,
    member_url: impl Fn() -> String,
    cluster_info: impl Fn() -> Option<TkaClusterInfo>,
) {
    let primary = fed.settings().login_server.clone();
    let mut interval = fed.settings().heartbeat_interval;
    let mut last_error: Option<String> = None;
    let mut registered = false;
    loop {
        let hb = heartbeat(&announce, member_url(), cluster_info());
        let rid = hex::encode(rand::random::<[u8; 8]>());
        match fed.client().heartbeat(&primary, &hb, &rid).await {
            Ok(a) => {
                if last_error.take().is_some() || !registered {
                    registered = true;
                    tracing::info!(primary = %primary, "registered with the federation primary");
                }
                if let Ok(d) = GoDuration::parse(&a.body.heartbeat_interval) {
                    interval = d.as_std().max(Duration::from_secs(1));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(primary = %primary, error = %msg, "federation heartbeat failed");
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
        let a = Announce {
            cluster_name: "prod-west-cluster".into(),
            context_prefix: "west-".into(),
            user_prefix: "west-user-".into(),
            allowed_roles: vec!["view".into()],
        };
        let info = TkaClusterInfo {
            server_url: "https://10.0.0.1:6443".into(),
            ..Default::default()
        };
        let hb = heartbeat(&a, "https://tka-west.ts.net".into(), Some(info));
        assert_eq!(hb.member_url, "https://tka-west.ts.net");
        assert_eq!(hb.api_endpoint, "https://10.0.0.1:6443");
        assert_eq!(hb.api_versions, vec!["v1alpha1".to_string()]);
        // No cluster info yet: announced without an endpoint, which the primary refuses (400).
        assert!(heartbeat(&a, String::new(), None).api_endpoint.is_empty());
    }
}
