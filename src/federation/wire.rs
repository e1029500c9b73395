//! JSON bodies of the federation endpoints. snake_case like the user API; every
//! optional field defaults so an older or newer peer still decodes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /federation/v1alpha1/heartbeat` (member → primary): the member's announcement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub cluster_name: String,
    /// `https://<member FQDN>[:port]` of the member's tailnet listener.
    pub member_url: String,
    #[serde(default)]
    pub api_endpoint: String,
    #[serde(default)]
    pub ca_data: String,
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub context_prefix: String,
    #[serde(default)]
    pub user_prefix: String,
    #[serde(default)]
    pub allowed_roles: Vec<String>,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub api_versions: Vec<String>,
}

/// The primary's answer to a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    pub accepted: bool,
    pub primary_cluster: String,
    /// Go duration; the member adopts it.
    pub heartbeat_interval: String,
}

/// `POST /federation/v1alpha1/sessions` (primary → member): provision a session for this user's node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionRequest {
    pub login_name: String,
    pub node: String,
    pub node_id: String,
    #[serde(default)]
    pub node_ip: String,
    pub role: String,
    /// Go duration; the member clamps it to its own `operator.maxPeriod`.
    pub period: String,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub requested_at: String,
    #[serde(default)]
    pub request_id: String,
    /// The user asked to end sessions with another role (`tka login --replace`).
    #[serde(default)]
    pub replace: bool,
}

/// `DELETE /federation/v1alpha1/sessions`: one node's session, or all of the user's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionRef {
    pub login_name: String,
    #[serde(default)]
    pub node_id: String,
    #[serde(default)]
    pub all: bool,
}

/// `POST /federation/v1alpha1/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenCall {
    pub login_name: String,
    pub node_id: String,
    /// `kubeconfig` (token for the rest of the session) or `exec` (short-lived).
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenAnswer {
    pub token: String,
    pub expiration_timestamp: String,
}

/// One entry of `GET /federation/v1alpha1/sessions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberSession {
    pub login_name: String,
    pub node_id: String,
    /// The user's tailnet address: the primary re-runs WhoIs on it to revalidate the grant.
    #[serde(default)]
    pub node_ip: String,
    pub role: String,
    /// The session's RoleBinding namespaces (empty: cluster-wide); the primary revalidates the scope too.
    #[serde(default)]
    pub namespaces: Vec<String>,
    pub until: String,
    /// The latest login (RFC 3339): the session's period counts from here. Empty from members that predate
    /// it, whose sessions then keep their end.
    #[serde(default)]
    pub started: String,
    pub provisioned: bool,
}

impl MemberSession {
    /// Has a grant period shortened to `period` run out for this session by `now`?
    pub fn period_ran_out(&self, period: std::time::Duration, now: jiff::Timestamp) -> bool {
        let (Ok(started), Ok(until)) = (
            self.started.parse::<jiff::Timestamp>(),
            self.until.parse::<jiff::Timestamp>(),
        ) else {
            return false;
        };
        crate::model::rules::shortened_end(started, until, period).is_some_and(|end| end <= now)
    }
}
