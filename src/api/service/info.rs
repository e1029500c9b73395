//! Read-only answers: who the caller is and what its grant would give (`whoami`), the clusters it may use
//! (`clusters`), and this cluster's endpoint (`cluster-info`).

use serde_json::{Value, json};

use super::authorize::rules_of;
use super::{Caller, Service};
use crate::api::error::ApiError;
use crate::federation::Health;
use crate::model::wire::TkaClusterInfo;

/// The clusters the caller may use, and whether the list may still be incomplete.
pub struct Clusters {
    pub list: Vec<Value>,
    /// A primary's registry is still filling up after a (re)start.
    pub rebuilding: bool,
}

impl Service {
    /// `GET /cluster-info`: for callers with a grant for this cluster.
    pub fn cluster_info_for(&self, caller: &Caller) -> Result<TkaClusterInfo, ApiError> {
        self.grant(caller)?;
        self.cluster_info()
    }

    /// `GET /whoami`: identity and grant evaluation, without side effects; grant problems are reported, not
    /// raised.
    pub fn whoami(&self, caller: &Caller, role: Option<&str>) -> Value {
        let values = caller
            .peer
            .cap_map
            .get(&self.settings.auth.cap_name)
            .cloned()
            .unwrap_or_default();
        let rules = match rules_of(caller, &self.settings.auth.cap_name) {
            Ok(r) => serde_json::to_value(r).unwrap_or_default(),
            Err(_) => Value::Array(values),
        };
        let (selected, reject) = match self.select(caller, role) {
            Ok(rule) => (serde_json::to_value(rule).ok(), Value::Null),
            Err(e) => (None, json!({ "code": e.code, "message": e.message })),
        };
        json!({
            "login_name": caller.login,
            "node": caller.peer.node_fqdn,
            "node_id": caller.peer.node_stable_id,
            "tags": caller.peer.tags,
            "cluster": self.settings.cluster_name(),
            "rules": rules,
            "selected": selected,
            "reject": reject,
        })
    }

    /// `GET /clusters`: this cluster, then the members (healthy and stale) the caller's grant names, each
    /// with the role the caller would get there.
    pub fn clusters(&self, caller: &Caller) -> Clusters {
        let role = self.select(caller, None).ok().map(|r| r.role);
        let info = self.cluster_info.get().unwrap_or_default();
        // Where a cluster's API server is, only for callers the grant gives a role there.
        let server_url = role.as_ref().map(|_| info.server_url);
        let mut own = json!({
            "name": self.settings.cluster_name(),
            "labels": info.labels,
            "server_url": server_url,
            "status": "self",
            "role": role,
        });
        // After a primary (re)start the registry fills up within one heartbeat interval: the own entry is
        // marked (an added field keeps the body the array clients expect).
        let rebuilding = self.federation.rebuilding();
        if rebuilding {
            own["rebuilding"] = Value::Bool(true);
        }
        let mut list = vec![own];
        list.extend(self.member_clusters(caller));
        Clusters { list, rebuilding }
    }

    fn member_clusters(&self, caller: &Caller) -> Vec<Value> {
        let listed: Vec<_> = self.federation.list();
        let Ok(rules) = self.rules(caller) else {
            return Vec::new();
        };
        self.granted(&rules, listed)
            .into_iter()
            .map(|(m, health, rule): (_, Health, _)| {
                let a = &m.announcement;
                let server_url = rule.as_ref().map(|_| &a.api_endpoint);
                json!({
                    "name": a.cluster_name,
                    "labels": a.labels,
                    "server_url": server_url,
                    "status": health.label(),
                    "role": rule.map(|r| r.role),
                })
            })
            .collect()
    }
}
