//! Smoke check of the control-plane harness: the admin client works and the RBAC
//! bootstrap roles exist. Include next to `controlplane.rs`, e.g.
//! `#[path = "../support/smoke.rs"] mod smoke;` after the `controlplane` module.
#![allow(dead_code)]

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use kube::api::ListParams;

use super::controlplane::ControlPlane;

pub async fn smoke(cp: &ControlPlane) -> Result<(), String> {
    let client = cp.admin_client().await;

    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing namespaces: {e}"))?;
    let names: Vec<String> = namespaces
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    for want in ["default", "kube-system"] {
        if !names.iter().any(|n| n == want) {
            return Err(format!("namespace {want} missing; have {names:?}"));
        }
    }

    let view = Api::<ClusterRole>::all(client)
        .get("view")
        .await
        .map_err(|e| format!("reading ClusterRole view: {e}"))?;
    if view.rules.unwrap_or_default().is_empty() && view.aggregation_rule.is_none() {
        return Err("ClusterRole view has neither rules nor an aggregation rule".into());
    }
    Ok(())
}
