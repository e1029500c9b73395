//! Making one of a user's objects (ServiceAccount, binding) as desired with the fewest apiserver round trips,
//! never adopting an object that belongs to another login name or tka instance.
//!
//! A session that was never provisioned is most likely a new user's, so its objects are created: one POST
//! each, what a bare client pays, and a name that is taken fails with 409 instead of being overwritten.
//! Otherwise (and after a 409) the object is read, and written only when it differs from the desired one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, Subject};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};

use super::context::FIELD_MANAGER;
use super::error::{ignore_not_found, is_status};
use super::objects::Session;

/// How to reach the desired object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Probably absent: create it; only if it exists after all, take the checked path.
    Create,
    /// Read it; write only what differs.
    Check,
}

impl Mode {
    /// `Create` for a session never provisioned, else `Check`.
    pub fn for_session(provisioned: bool) -> Mode {
        if provisioned {
            Mode::Check
        } else {
            Mode::Create
        }
    }
}

/// What [`ensure`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Ensured {
    /// The object is as desired (created, applied, or already so).
    Done,
    /// An object of that name belongs to another login name or tka instance: left alone.
    Collision,
}

/// Makes `desired` this session's object. Checked path: absent → apply; another login's or instance's →
/// [`Ensured::Collision`]; different → apply (first deleted when an immutable field differs: a binding's
/// `roleRef` cannot be updated in place); as desired → nothing to write.
pub async fn ensure<K>(
    api: &Api<K>,
    s: &Session,
    desired: K,
    mode: Mode,
) -> Result<Ensured, kube::Error>
where
    K: Resource
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Desired,
{
    if mode == Mode::Create {
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match api.create(&pp, &desired).await {
            Ok(_) => return Ok(Ensured::Done),
            Err(e) if is_status(&e, 409) => {}
            Err(e) => return Err(e),
        }
    }
    let name = desired.name_any();
    if let Some(existing) = api.get_opt(&name).await? {
        if !s.owns(existing.meta()) {
            return Ok(Ensured::Collision);
        }
        if existing.is_as(&desired) {
            return Ok(Ensured::Done);
        }
        if existing.must_replace(&desired) {
            ignore_not_found(api.delete(&name, &DeleteParams::default()).await)?;
        }
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await?;
    Ok(Ensured::Done)
}

/// Comparing an existing object with the desired one.
pub trait Desired: Resource {
    /// Does it already have everything `desired` sets (foreign labels and annotations may be added)?
    fn is_as(&self, desired: &Self) -> bool;
    /// Must it be deleted before it can become `desired` (an immutable field differs)?
    fn must_replace(&self, _desired: &Self) -> bool {
        false
    }
}

/// `desired`'s labels and annotations are all present with the same values.
fn has_meta<K: Resource>(existing: &K, desired: &K) -> bool {
    let subset = |have: &BTreeMap<String, String>, want: &BTreeMap<String, String>| {
        want.iter().all(|(k, v)| have.get(k) == Some(v))
    };
    subset(existing.labels(), desired.labels())
        && subset(existing.annotations(), desired.annotations())
}

impl Desired for ServiceAccount {
    fn is_as(&self, desired: &Self) -> bool {
        has_meta(self, desired)
            && self.automount_service_account_token == desired.automount_service_account_token
    }
}

/// Subjects compared as the apiserver stores them (it fills in an empty `apiGroup`).
fn same_subjects(a: &Option<Vec<Subject>>, b: &Option<Vec<Subject>>) -> bool {
    let norm = |s: &Option<Vec<Subject>>| -> Vec<(String, String, Option<String>)> {
        s.iter()
            .flatten()
            .map(|x| (x.kind.clone(), x.name.clone(), x.namespace.clone()))
            .collect()
    };
    norm(a) == norm(b)
}

/// The two binding kinds have the same fields (`roleRef`, `subjects`) but no common trait.
macro_rules! binding_desired {
    ($($kind:ty),+) => {$(
        impl Desired for $kind {
            fn is_as(&self, desired: &Self) -> bool {
                has_meta(self, desired)
                    && self.role_ref == desired.role_ref
                    && same_subjects(&self.subjects, &desired.subjects)
            }
            fn must_replace(&self, desired: &Self) -> bool {
                self.role_ref != desired.role_ref
            }
        }
    )+};
}
binding_desired!(ClusterRoleBinding, RoleBinding);

#[cfg(test)]
mod tests {
    use super::*;

    fn session(role: &str, node: &str) -> Session {
        Session {
            namespace: "tka-system".into(),
            signin_name: "tka-a-b".into(),
            signin_uid: "u1".into(),
            login: "alice@example.com".into(),
            subject_key: "alice-example-com-abc".into(),
            node: node.into(),
            node_key: "n".into(),
            role: role.into(),
            namespaces: vec![],
        }
    }

    #[test]
    fn a_binding_as_stored_is_as_desired_and_foreign_metadata_is_tolerated() {
        let desired = session("view", "laptop").cluster_role_binding();
        let mut stored = desired.clone();
        // The apiserver fills in the subject's apiGroup; someone adds a label.
        for s in stored.subjects.iter_mut().flatten() {
            s.api_group = Some(String::new());
        }
        stored.labels_mut().insert("team".into(), "a".into());
        assert!(stored.is_as(&desired));
        assert!(!stored.must_replace(&desired));
    }

    #[test]
    fn another_role_replaces_the_binding_other_differences_update_it() {
        let stored = session("view", "laptop").cluster_role_binding();
        let edit = session("edit", "laptop").cluster_role_binding();
        assert!(!stored.is_as(&edit) && stored.must_replace(&edit));
        let other_node = session("view", "desktop").cluster_role_binding();
        assert!(!stored.is_as(&other_node) && !stored.must_replace(&other_node));
        let mut changed_subject = stored.clone();
        for s in changed_subject.subjects.iter_mut().flatten() {
            s.name = "someone-else".into();
        }
        assert!(!changed_subject.is_as(&stored));
    }

    #[test]
    fn a_service_account_with_automount_changed_is_not_as_desired() {
        let desired = session("view", "laptop").service_account();
        assert!(desired.is_as(&desired));
        let mut changed = desired.clone();
        changed.automount_service_account_token = Some(true);
        assert!(!changed.is_as(&desired));
        let mut relabelled = desired.clone();
        relabelled
            .labels_mut()
            .insert(crate::operator::objects::INSTANCE.into(), "other".into());
        assert!(!relabelled.is_as(&desired));
    }

    #[test]
    fn never_provisioned_sessions_create() {
        assert_eq!(Mode::for_session(false), Mode::Create);
        assert_eq!(Mode::for_session(true), Mode::Check);
    }
}
