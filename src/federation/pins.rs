//! What federation trust remembers across restarts and failovers: the primary's node (on a member) and which
//! node holds each cluster name, with its kubeconfig prefixes (on a primary). A name on the tailnet can be
//! re-registered by another device, so the first node seen is pinned by its stable ID; changing a pin is an
//! operator's explicit act (deleting it), never something a peer can cause. They are kept in a ConfigMap of the
//! server's namespace, so a restart or a failover to the other replica keeps them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};

/// A durable map of pins, written only when a key is new (compare-and-set).
#[async_trait::async_trait]
pub trait Pins: Send + Sync {
    /// Every pin.
    async fn load(&self) -> Result<BTreeMap<String, String>, String>;
    /// Sets `key` to `value` unless it is set already; returns the value it holds afterwards (the existing one
    /// when another writer was first).
    async fn pin(&self, key: &str, value: &str) -> Result<String, String>;
    /// Replaces the value of `key` (only for the holder's own updates, e.g. changed prefixes).
    async fn update(&self, key: &str, value: &str) -> Result<(), String>;
    /// Where the pins are kept, for messages that tell the operator how to reset one.
    fn location(&self) -> String;
}

/// Key of the member's pin of its primary.
pub const PRIMARY: &str = "primary";

/// Key of a cluster name's binding on the primary.
pub fn cluster_key(name: &str) -> String {
    format!("cluster.{name}")
}

/// What a primary pins for a cluster name: the node that holds it and the prefixes it announced, so no
/// other member can later take the name or the kubeconfig entry names derived from the prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub node_id: String,
    pub user_prefix: String,
    pub context_prefix: String,
}

impl Binding {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a binding serializes")
    }

    pub fn decode(s: &str) -> Option<Binding> {
        serde_json::from_str(s).ok()
    }
}

/// Pins in memory only: for tests and for servers without federation.
#[derive(Default)]
pub struct MemoryPins(std::sync::Mutex<BTreeMap<String, String>>);

#[async_trait::async_trait]
impl Pins for MemoryPins {
    async fn load(&self) -> Result<BTreeMap<String, String>, String> {
        Ok(self.0.lock().expect("lock poisoned").clone())
    }

    async fn pin(&self, key: &str, value: &str) -> Result<String, String> {
        let mut m = self.0.lock().expect("lock poisoned");
        Ok(m.entry(key.to_string())
            .or_insert_with(|| value.to_string())
            .clone())
    }

    async fn update(&self, key: &str, value: &str) -> Result<(), String> {
        self.0
            .lock()
            .expect("lock poisoned")
            .insert(key.to_string(), value.to_string());
        Ok(())
    }

    fn location(&self) -> String {
        "memory".into()
    }
}

/// Name of the ConfigMap holding the pins.
pub const NAME: &str = "tka-federation";

pub struct ConfigMapPins {
    api: Api<ConfigMap>,
    namespace: String,
}

impl ConfigMapPins {
    pub fn new(client: Client, namespace: &str) -> ConfigMapPins {
        ConfigMapPins {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
        }
    }

    /// Applies `change` to the map and writes it back, retrying on a concurrent write.
    async fn modify(
        &self,
        change: impl Fn(&mut BTreeMap<String, String>) -> bool,
    ) -> Result<BTreeMap<String, String>, String> {
        for _ in 0..5 {
            let current = self.api.get_opt(NAME).await.map_err(|e| e.to_string())?;
            let mut cm = current.clone().unwrap_or_else(|| ConfigMap {
                metadata: ObjectMeta {
                    name: Some(NAME.into()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            });
            let data = cm.data.get_or_insert_with(BTreeMap::new);
            if !change(data) {
                return Ok(data.clone());
            }
            let written = match current {
                None => self.api.create(&PostParams::default(), &cm).await,
                Some(_) => self.api.replace(NAME, &PostParams::default(), &cm).await,
            };
            match written {
                Ok(cm) => return Ok(cm.data.unwrap_or_default()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("the pins ConfigMap keeps changing under us".into())
    }
}

#[async_trait::async_trait]
impl Pins for ConfigMapPins {
    async fn load(&self) -> Result<BTreeMap<String, String>, String> {
        let cm = self.api.get_opt(NAME).await.map_err(|e| e.to_string())?;
        Ok(cm.and_then(|c| c.data).unwrap_or_default())
    }

    async fn pin(&self, key: &str, value: &str) -> Result<String, String> {
        let data = self
            .modify(|d| {
                if d.contains_key(key) {
                    return false;
                }
                d.insert(key.to_string(), value.to_string());
                true
            })
            .await?;
        Ok(data.get(key).cloned().unwrap_or_default())
    }

    async fn update(&self, key: &str, value: &str) -> Result<(), String> {
        self.modify(|d| {
            let changed = d.get(key).is_none_or(|v| v != value);
            d.insert(key.to_string(), value.to_string());
            changed
        })
        .await
        .map(|_| ())
    }

    fn location(&self) -> String {
        format!("ConfigMap {}/{NAME}", self.namespace)
    }
}
