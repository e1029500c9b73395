//! Where the cluster's API endpoint and CA come from: the configuration, or a
//! watched ConfigMap (kubeadm's `kube-public/cluster-info` by default). CA data is validated when loaded, so
//! a request can never crash on it (upstream called `Fatal` inside a request).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use data_encoding::BASE64;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::model::wire::TkaClusterInfo;

/// Static part from the configuration.
#[derive(Debug, Clone, Default)]
pub struct ClusterInfoSettings {
    pub cluster_name: String,
    pub api_endpoint: String,
    /// Base64 PEM, already validated by the config loader.
    pub ca_data: String,
    pub insecure: bool,
    pub labels: BTreeMap<String, String>,
    /// ConfigMap to read when `api_endpoint` is empty: (namespace, name, keys).
    pub config_map: Option<ConfigMapRef>,
}

#[derive(Debug, Clone)]
pub struct ConfigMapRef {
    pub namespace: String,
    pub name: String,
    pub key_endpoint: String,
    pub key_ca: String,
    pub key_insecure: String,
    pub key_kubeconfig: String,
}

/// The current cluster info, `None` while unknown.
#[derive(Clone, Default)]
pub struct ClusterInfoSource(Arc<RwLock<Option<TkaClusterInfo>>>);

impl ClusterInfoSource {
    pub fn get(&self) -> Option<TkaClusterInfo> {
        self.0.read().expect("lock poisoned").clone()
    }

    fn set(&self, info: Option<TkaClusterInfo>) {
        *self.0.write().expect("lock poisoned") = info;
    }

    /// From configuration alone, or by watching the ConfigMap in the background.
    pub fn start(settings: ClusterInfoSettings, client: Client) -> ClusterInfoSource {
        let source = ClusterInfoSource::default();
        if !settings.api_endpoint.is_empty() || settings.config_map.is_none() {
            if !settings.api_endpoint.is_empty() {
                source.set(Some(info(
                    &settings,
                    settings.api_endpoint.clone(),
                    settings.ca_data.clone(),
                    settings.insecure,
                )));
            }
            return source;
        }
        let cm = settings.config_map.clone().expect("checked above");
        let api: Api<ConfigMap> = Api::namespaced(client, &cm.namespace);
        let cfg = watcher::Config::default().fields(&format!("metadata.name={}", cm.name));
        let writer = source.clone();
        tokio::spawn(async move {
            let mut stream = super::backoff::paced(watcher(api, cfg))
                .applied_objects()
                .boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(map) => match from_config_map(&settings, &cm, &map) {
                        Ok(i) => {
                            tracing::info!(server = %i.server_url, "cluster info loaded from ConfigMap {}/{}", cm.namespace, cm.name);
                            writer.set(Some(i));
                        }
                        // Keep the previous value: a bad edit must not take the service down.
                        Err(e) => {
                            tracing::error!(error = %e, "ignoring invalid cluster info ConfigMap {}/{}", cm.namespace, cm.name)
                        }
                    },
                    Err(e) => tracing::debug!(error = %e, "cluster info ConfigMap watch"),
                }
            }
        });
        source
    }
}

fn info(
    s: &ClusterInfoSettings,
    server_url: String,
    ca_data: String,
    insecure: bool,
) -> TkaClusterInfo {
    TkaClusterInfo {
        server_url,
        insecure_skip_tls_verify: insecure,
        ca_data,
        labels: s.labels.clone(),
        cluster_name: s.cluster_name.clone(),
    }
}

/// Reads endpoint and CA from the ConfigMap's keys, falling back to the first cluster of an embedded
/// kubeconfig (kubeadm's `cluster-info`).
pub fn from_config_map(
    s: &ClusterInfoSettings,
    cm: &ConfigMapRef,
    map: &ConfigMap,
) -> Result<TkaClusterInfo, String> {
    let data = map.data.clone().unwrap_or_default();
    let mut endpoint = data.get(&cm.key_endpoint).cloned().unwrap_or_default();
    let mut ca = data.get(&cm.key_ca).cloned().unwrap_or_default();
    let insecure = data
        .get(&cm.key_insecure)
        .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "TRUE" | "True"));
    if endpoint.is_empty()
        && ca.is_empty()
        && let Some(kc) = data.get(&cm.key_kubeconfig)
    {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(kc).map_err(|e| format!("key {}: {e}", cm.key_kubeconfig))?;
        let cluster = &doc["clusters"][0]["cluster"];
        endpoint = cluster["server"].as_str().unwrap_or_default().to_string();
        ca = cluster["certificate-authority-data"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    if endpoint.is_empty() {
        return Err("no API endpoint in the ConfigMap".into());
    }
    if !ca.is_empty() {
        validate_ca(&ca)?;
    }
    Ok(info(s, endpoint, ca, insecure))
}

/// CA data must be base64 of a PEM bundle with at least one certificate.
pub fn validate_ca(b64: &str) -> Result<(), String> {
    let pem = BASE64
        .decode(b64.trim().as_bytes())
        .map_err(|e| format!("CA data is not base64: {e}"))?;
    let pem = String::from_utf8(pem).map_err(|_| "CA data is not PEM text".to_string())?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err("CA data holds no PEM certificate".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm_ref() -> ConfigMapRef {
        ConfigMapRef {
            namespace: "kube-public".into(),
            name: "cluster-info".into(),
            key_endpoint: "apiEndpoint".into(),
            key_ca: "caData".into(),
            key_insecure: "insecure".into(),
            key_kubeconfig: "kubeconfig".into(),
        }
    }

    #[test]
    fn reads_kubeadm_cluster_info() {
        let ca = BASE64.encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
        let kc = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: https://10.0.0.1:6443\n  name: ''\n"
        );
        let map = ConfigMap {
            data: Some(BTreeMap::from([("kubeconfig".to_string(), kc)])),
            ..Default::default()
        };
        let i = from_config_map(&ClusterInfoSettings::default(), &cm_ref(), &map).unwrap();
        assert_eq!(i.server_url, "https://10.0.0.1:6443");
        assert_eq!(i.ca_data, ca);
    }

    #[test]
    fn rejects_bad_ca_instead_of_crashing_later() {
        let map = ConfigMap {
            data: Some(BTreeMap::from([
                ("apiEndpoint".to_string(), "https://x".to_string()),
                ("caData".to_string(), "bm9wZQ==".to_string()),
            ])),
            ..Default::default()
        };
        assert!(
            from_config_map(&ClusterInfoSettings::default(), &cm_ref(), &map)
                .unwrap_err()
                .contains("no PEM")
        );
        assert!(validate_ca("***").is_err());
    }
}
