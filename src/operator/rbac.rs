//! The server's own least-privilege RBAC, generated so that the manifests and
//! `operator.allowedRoles` cannot drift: `tka-server rbac --allowed-roles view,edit,admin`.

use serde_json::{Value, json};

/// The ClusterRoles the server may bind: never empty, since an RBAC rule with an empty `resourceNames` means
/// *every* name, and `bind` on every ClusterRole would let the server grant cluster-admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantableRoles(Vec<String>);

impl GrantableRoles {
    /// The roles, de-duplicated in order; refuses an empty list and empty or wildcard names.
    pub fn new<S: AsRef<str>>(
        roles: impl IntoIterator<Item = S>,
    ) -> Result<GrantableRoles, String> {
        let mut out: Vec<String> = Vec::new();
        for r in roles {
            let r = r.as_ref().trim();
            if r.is_empty() || r.contains('*') {
                return Err(format!(
                    "{r:?} is not a ClusterRole name: list the roles the server may grant, e.g. view,edit,admin"
                ));
            }
            if !out.iter().any(|o| o == r) {
                out.push(r.to_string());
            }
        }
        if out.is_empty() {
            return Err(
                "no grantable roles: name at least one (e.g. --allowed-roles view,edit,admin); an empty list \
                 would give the server `bind` on every ClusterRole"
                    .into(),
            );
        }
        Ok(GrantableRoles(out))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// ClusterRole `tka-server`, Role `tka-server` and Role `tka-server-cluster-info`, with their bindings to the
/// ServiceAccount `tka-controller` in `namespace`, as one multi-document YAML.
pub fn manifests(namespace: &str, allowed_roles: &GrantableRoles) -> String {
    let allowed_roles = allowed_roles.as_slice();
    let subject =
        json!([{ "kind": "ServiceAccount", "name": "tka-controller", "namespace": namespace }]);
    let docs = [
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": { "name": "tka-server" },
            "rules": [
                { "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterrolebindings", "rolebindings"],
                  "verbs": ["get", "list", "watch", "create", "patch", "delete"] },
                // `bind` on exactly the grantable roles replaces upstream's `*/*/*`: escalation prevention lets
                // the server grant these roles and nothing else.
                { "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                  "resourceNames": allowed_roles, "verbs": ["get", "bind"] }
            ]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": { "name": "tka-server" },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tka-server" },
            "subjects": subject
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": { "name": "tka-server", "namespace": namespace },
            "rules": [
                { "apiGroups": ["tka.specht-labs.de"], "resources": ["tkasignins"], "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"] },
                { "apiGroups": ["tka.specht-labs.de"], "resources": ["tkasignins/status"], "verbs": ["get", "patch", "update"] },
                { "apiGroups": ["tka.specht-labs.de"], "resources": ["tkasignins/finalizers"], "verbs": ["update"] },
                { "apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "list", "watch", "create", "patch", "delete"] },
                { "apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"] },
                { "apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"] },
                // Federation pins (the primary's node, which node holds which cluster name): this one ConfigMap.
                { "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["tka-federation"], "verbs": ["get", "update"] },
                { "apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"] },
                { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["controller.tka.specht-labs.de"], "verbs": ["get", "update"] },
                { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"] },
                { "apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"] }
            ]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": { "name": "tka-server", "namespace": namespace },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tka-server" },
            "subjects": subject
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": { "name": "tka-server-cluster-info", "namespace": "kube-public" },
            "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cluster-info"], "verbs": ["get", "list", "watch"] }]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": { "name": "tka-server-cluster-info", "namespace": "kube-public" },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tka-server-cluster-info" },
            "subjects": subject
        }),
    ];
    docs.iter()
        .map(|d: &Value| format!("---\n{}", serde_yaml::to_string(d).expect("serializes")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::GrantableRoles;

    #[test]
    fn bind_is_limited_to_the_allow_list_and_nothing_is_wildcarded() {
        let roles = GrantableRoles::new(["view", "edit", "view"]).unwrap();
        assert_eq!(roles.as_slice(), ["view", "edit"]);
        let yaml = super::manifests("tka-system", &roles);
        assert!(yaml.contains("- bind"));
        assert!(yaml.contains("- view\n") && yaml.contains("- edit\n"));
        assert!(!yaml.contains("'*'") && !yaml.contains("escalate"));
        assert!(!yaml.contains("resourceNames: []"));
    }

    #[test]
    fn an_empty_allow_list_cannot_be_built() {
        let none: [&str; 0] = [];
        assert!(
            GrantableRoles::new(none)
                .unwrap_err()
                .contains("every ClusterRole")
        );
        assert!(GrantableRoles::new([""]).is_err());
        assert!(GrantableRoles::new([" "]).is_err());
        assert!(GrantableRoles::new(["*"]).is_err());
        assert!(GrantableRoles::new(["view", "ed*"]).is_err());
    }
}
