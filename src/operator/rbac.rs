//! The server's own least-privilege RBAC (spec: kubernetes.md §6), generated so that the manifests and
//! `operator.allowedRoles` cannot drift: `tka-server rbac --allowed-roles view,edit,admin`.

use serde_json::{Value, json};

/// ClusterRole `tka-server`, Role `tka-server` and Role `tka-server-cluster-info`, with their bindings to the
/// ServiceAccount `tka-controller` in `namespace`, as one multi-document YAML.
pub fn manifests(namespace: &str, allowed_roles: &[String]) -> String {
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
    #[test]
    fn bind_is_limited_to_the_allow_list_and_nothing_is_wildcarded() {
        let yaml = super::manifests("tka-system", &["view".into(), "edit".into()]);
        assert!(yaml.contains("- bind"));
        assert!(yaml.contains("- view\n") && yaml.contains("- edit\n"));
        assert!(!yaml.contains("'*'") && !yaml.contains("escalate"));
    }
}
