//! The `TkaSignin` custom resource. One object per (user, node) session.
//!
//! The API writes only `spec`; the controller writes only `status` (server-side apply). Upstream wrote a
//! placeholder status right after create and raced the controller; here status fields are optional so that
//! never has to happen.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "tka.specht-labs.de";
pub const FINALIZER: &str = "tka.specht-labs.de/cleanup";

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "tka.specht-labs.de",
    version = "v1alpha1",
    kind = "TkaSignin",
    namespaced,
    status = "TkaSigninStatus",
    shortname = "signin",
    doc = "A short-lived Kubernetes session of one tailnet user on one node",
    validation = Rule::new("!has(self.spec.validity_period) || duration(self.spec.validity_period) >= duration('10m')").message("validity_period must be at least 10m"),
    printcolumn(name = "User", type_ = "string", json_path = ".spec.username"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Provisioned", type_ = "boolean", json_path = ".status.provisioned"),
    printcolumn(name = "Since", type_ = "date", json_path = ".status.signed_in"),
    printcolumn(name = "Period", type_ = "string", json_path = ".spec.validity_period"),
    printcolumn(name = "Until", type_ = "string", json_path = ".status.valid_until"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", priority = 1),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
pub struct TkaSigninSpec {
    /// Full login name (`alice@example.com`), never truncated.
    #[x_kube(validation = Rule::new("self == oldSelf").message("username is immutable"))]
    pub username: String,
    /// ClusterRole bound for this session.
    #[x_kube(validation = Rule::new("self != ''").message("role must not be empty"))]
    pub role: String,
    /// Go duration in canonical form (`8h0m0s`), at least 10m.
    pub validity_period: String,
    /// Collision-free key derived from the login name. Absent only on objects written by upstream TKA.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 49), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("subject_key is immutable"))]
    pub subject_key: String,
    /// Caller's node FQDN.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// Caller's node stable ID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("node_id is immutable"))]
    pub node_id: String,
    /// Caller's tailnet IP, used for grant revalidation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_ip: String,
    /// Time of the latest login; the session ends at `requested_at + validity_period`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<Time>,
    /// Non-empty: RoleBindings in these namespaces instead of one ClusterRoleBinding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
pub struct Origin {
    /// `local` or `federation`.
    pub kind: String,
    /// The primary's node FQDN (federation).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub primary: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
pub struct TkaSigninStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_in: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_secret: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<BindingRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<Time>,
    #[serde(
        default,
        rename = "observedGeneration",
        skip_serializing_if = "Option::is_none"
    )]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
pub struct SecretRef {
    pub name: String,
    pub uid: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub struct BindingRef {
    /// `ClusterRoleBinding` or `RoleBinding`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub role: String,
}

/// The CRD as YAML, as `tka-server crd` prints it and `deploy/kustomize/base/crd.yaml` holds it.
pub fn crd_yaml() -> String {
    let crd = TkaSignin::crd();
    format!(
        "---\n{}",
        serde_yaml::to_string(&crd).expect("the CRD serializes")
    )
}

impl TkaSignin {
    /// The `Ready` condition, if the controller has set one.
    pub fn ready_condition(&self) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_has_the_contracted_names_columns_and_rules() {
        let crd = TkaSignin::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("tkasignins.tka.specht-labs.de")
        );
        assert_eq!(crd.spec.names.short_names, Some(vec!["signin".to_string()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let yaml = crd_yaml();
        for needle in [
            ".spec.validity_period",
            ".status.valid_until",
            "duration(''10m'')",
            "subject_key is immutable",
            "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        ] {
            assert!(yaml.contains(needle), "CRD lacks {needle}");
        }
        // Upstream's broken printer paths must not come back.
        assert!(!yaml.contains(".status.validity_period"));
        assert!(!yaml.contains(".spec.valid_until"));
    }

    #[test]
    fn committed_crd_matches_the_rust_type() {
        let committed = include_str!("../../deploy/kustomize/base/crd.yaml");
        assert_eq!(
            committed,
            crd_yaml(),
            "run `cargo run --bin tka-server -- crd > deploy/kustomize/base/crd.yaml`"
        );
    }
}
