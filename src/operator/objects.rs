//! Pure builders of the objects the controller manages. No I/O: tested as data.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use super::crd::TkaSignin;
use crate::model::naming;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const INSTANCE: &str = "tka.specht-labs.de/instance";
pub const USER_KEY: &str = "tka.specht-labs.de/user-key";
pub const SESSION: &str = "tka.specht-labs.de/session";
pub const NODE_KEY: &str = "tka.specht-labs.de/node-key";
pub const LOGIN_NAME: &str = "tka.specht-labs.de/login-name";
pub const NODE: &str = "tka.specht-labs.de/node";
pub const CLUSTER_ROLE: &str = "tka.specht-labs.de/cluster-role";
pub const SESSION_SECRET_TYPE: &str = "tka.specht-labs.de/session";
/// Upstream annotations, still written (merged) for tools that read them.
pub const LAST_SIGN_IN: &str = "tka.specht-labs.de/last-attempted-sign-in";
pub const VALID_UNTIL: &str = "tka.specht-labs.de/sign-in-valid-until";

/// Label selector of everything this instance manages.
pub fn managed_selector(instance: &str) -> String {
    format!("{MANAGED_BY}=tka,{INSTANCE}={instance}")
}

/// The facts every object of one session is built from, taken from a validated TkaSignin.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// `operator.namespace`, also the `instance` label.
    pub namespace: String,
    pub signin_name: String,
    pub signin_uid: String,
    pub login: String,
    pub subject_key: String,
    pub node: String,
    pub node_key: String,
    pub role: String,
    pub namespaces: Vec<String>,
}

impl Session {
    pub fn from_signin(signin: &TkaSignin, namespace: &str) -> Session {
        Session {
            namespace: namespace.to_string(),
            signin_name: signin.name_any(),
            signin_uid: signin.uid().unwrap_or_default(),
            login: signin.spec.username.clone(),
            subject_key: signin.spec.subject_key.clone(),
            node: signin.spec.node.clone(),
            node_key: naming::node_key(&signin.spec.node_id),
            role: signin.spec.role.clone(),
            namespaces: signin.spec.namespaces.clone(),
        }
    }

    pub fn user_object_name(&self) -> String {
        naming::user_object_name(&self.subject_key)
    }

    /// Name of the user's (Cluster)RoleBindings: per user *and* instance, since they live outside the
    /// instance's namespace.
    pub fn binding_name(&self) -> String {
        naming::binding_name(&self.subject_key, &self.namespace)
    }

    /// Whether an existing object with one of this session's names is ours to update or replace: written for
    /// the same login name (never adopt another user's object after a key collision) and, when it says so, by
    /// this instance (never take over another tka instance's binding).
    pub fn owns(&self, meta: &ObjectMeta) -> bool {
        let login_ok = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(LOGIN_NAME))
            .is_none_or(|l| *l == self.login);
        let instance_ok = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(INSTANCE))
            .is_none_or(|i| *i == self.namespace);
        login_ok && instance_ok
    }

    /// Labels of the per-user objects (SA, bindings).
    pub fn user_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY.into(), "tka".into()),
            (INSTANCE.into(), self.namespace.clone()),
            (USER_KEY.into(), self.subject_key.clone()),
        ])
    }

    /// Labels of per-session objects (Secret, TkaSignin).
    pub fn session_labels(&self) -> BTreeMap<String, String> {
        let mut l = self.user_labels();
        l.insert(SESSION.into(), self.signin_name.clone());
        l.insert(NODE_KEY.into(), self.node_key.clone());
        l
    }

    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LOGIN_NAME.into(), self.login.clone()),
            (NODE.into(), self.node.clone()),
            (CLUSTER_ROLE.into(), self.role.clone()),
        ])
    }

    fn user_meta(&self, name: String, namespace: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: namespace.map(str::to_string),
            labels: Some(self.user_labels()),
            annotations: Some(self.annotations()),
            ..ObjectMeta::default()
        }
    }

    /// The per-user ServiceAccount: no owner, no finalizer, no automounted token.
    pub fn service_account(&self) -> ServiceAccount {
        ServiceAccount {
            metadata: self.user_meta(self.user_object_name(), Some(&self.namespace)),
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        }
    }

    /// The name of this session's Secret (it follows from the TkaSignin's UID).
    pub fn session_secret_name(&self) -> String {
        naming::session_secret_name(&self.signin_name, &self.signin_uid)
    }

    /// A new session Secret: the bound object of every token of this session, deleted to revoke them.
    /// Owned by its TkaSignin only as a garbage-collection backstop; never carries a finalizer, because a
    /// Secret held by a finalizer keeps its tokens valid while deletion waits.
    pub fn session_secret(&self) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(self.session_secret_name()),
                namespace: Some(self.namespace.clone()),
                labels: Some(self.session_labels()),
                annotations: Some(self.annotations()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "tka.specht-labs.de/v1alpha1".into(),
                    kind: "TkaSignin".into(),
                    name: self.signin_name.clone(),
                    uid: self.signin_uid.clone(),
                    controller: Some(true),
                    block_owner_deletion: Some(false),
                }]),
                ..ObjectMeta::default()
            },
            type_: Some(SESSION_SECRET_TYPE.into()),
            ..Secret::default()
        }
    }

    fn subjects(&self) -> Vec<Subject> {
        vec![Subject {
            kind: "ServiceAccount".into(),
            name: self.user_object_name(),
            namespace: Some(self.namespace.clone()),
            ..Subject::default()
        }]
    }

    fn role_ref(&self) -> RoleRef {
        RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: self.role.clone(),
        }
    }

    /// Desired binding when the session has no namespaces.
    pub fn cluster_role_binding(&self) -> ClusterRoleBinding {
        ClusterRoleBinding {
            metadata: self.user_meta(self.binding_name(), None),
            role_ref: self.role_ref(),
            subjects: Some(self.subjects()),
        }
    }

    /// Desired binding in `namespace` for a namespace-scoped session (references the ClusterRole).
    pub fn role_binding(&self, namespace: &str) -> RoleBinding {
        RoleBinding {
            metadata: self.user_meta(self.binding_name(), Some(namespace)),
            role_ref: self.role_ref(),
            subjects: Some(self.subjects()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            namespace: "tka-system".into(),
            signin_name: "tka-alice-example-com-abcdefgh-xyz123".into(),
            signin_uid: "uid-1".into(),
            login: "alice@example.com".into(),
            subject_key: "alice-example-com-abcdefgh".into(),
            node: "laptop.tailnet.ts.net".into(),
            node_key: "xyz123".into(),
            role: "view".into(),
            namespaces: vec![],
        }
    }

    #[test]
    fn service_account_has_no_owner_no_finalizer_no_automount() {
        let sa = session().service_account();
        assert_eq!(
            sa.metadata.name.as_deref(),
            Some("tka-user-alice-example-com-abcdefgh")
        );
        assert_eq!(sa.automount_service_account_token, Some(false));
        assert!(sa.metadata.owner_references.is_none() && sa.metadata.finalizers.is_none());
        assert_eq!(
            sa.metadata.annotations.unwrap()[LOGIN_NAME],
            "alice@example.com"
        );
    }

    #[test]
    fn session_secret_is_a_backstop_owned_typed_secret_without_data_or_finalizer() {
        let s = session().session_secret();
        assert_eq!(s.type_.as_deref(), Some(SESSION_SECRET_TYPE));
        assert!(s.data.is_none() && s.metadata.finalizers.is_none());
        let owner = &s.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(false))
        );
        assert_eq!(
            s.metadata.labels.unwrap()[SESSION],
            "tka-alice-example-com-abcdefgh-xyz123"
        );
        let name = s.metadata.name.unwrap();
        assert!(
            name.starts_with("tka-alice-example-com-abcdefgh-xyz123-"),
            "{name}"
        );
        let other = Session {
            signin_uid: "another-uid".into(),
            ..session()
        };
        assert_ne!(
            other.session_secret().metadata.name.unwrap(),
            name,
            "a new TkaSignin of the same name gets a new Secret"
        );
    }

    #[test]
    fn bindings_reference_the_cluster_role_and_the_user_sa() {
        let crb = session().cluster_role_binding();
        assert_eq!(crb.role_ref.kind, "ClusterRole");
        assert_eq!(crb.role_ref.name, "view");
        assert!(crb.metadata.owner_references.is_none());
        assert_eq!(
            crb.metadata.name.as_deref(),
            Some("tka-user-alice-example-com-abcdefgh-tka-system"),
            "the instance is part of the name"
        );
        let rb = session().role_binding("team-a");
        assert_eq!(rb.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(rb.metadata.name, crb.metadata.name);
        let subject = &rb.subjects.unwrap()[0];
        assert_eq!(subject.namespace.as_deref(), Some("tka-system"));
        assert_eq!(subject.name, "tka-user-alice-example-com-abcdefgh");
    }

    #[test]
    fn ownership_needs_the_same_login_and_instance() {
        let s = session();
        let mine = s.cluster_role_binding().metadata;
        assert!(s.owns(&mine));
        let mut other_instance = mine.clone();
        other_instance
            .labels
            .as_mut()
            .unwrap()
            .insert(INSTANCE.into(), "tka-other".into());
        assert!(!s.owns(&other_instance));
        let mut other_login = mine.clone();
        other_login
            .annotations
            .as_mut()
            .unwrap()
            .insert(LOGIN_NAME.into(), "mallory@example.com".into());
        assert!(!s.owns(&other_login));
        assert!(
            s.owns(&ObjectMeta::default()),
            "unlabelled: decided by name alone"
        );
        // Two instances never name the same binding for one user.
        let mut b = session();
        b.namespace = "tka-other".into();
        assert_ne!(b.binding_name(), s.binding_name());
        assert_eq!(
            b.user_object_name(),
            s.user_object_name(),
            "SAs are namespaced anyway"
        );
    }
}
