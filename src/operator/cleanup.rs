//! Ending a session: revoke by deleting the session Secret, remove the user's objects when no other live
//! session needs them, and migrate objects written by upstream TKA.

use std::collections::{BTreeMap, BTreeSet};

use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::context::Context;
use super::crd::{BindingRef, TkaSignin};
use super::error::{At, Error, Step, ignore_not_found};
use super::objects::{self, Session};

/// Under the finalizer: revoke (delete the session Secret) and remove the user's SA and bindings unless
/// another live session of the same user still needs them. NotFound counts as done everywhere. The deletes
/// are independent (deleting either the Secret or the SA invalidates the session's tokens), so they are sent
/// together: a cleanup waits for one round trip, not one per object.
pub(super) async fn cleanup(signin: &TkaSignin, ctx: &Context) -> Result<Action, Error> {
    let s = Session::from_signin(signin, &ctx.namespace);
    let remove = async {
        if still_used(&s, ctx).await? {
            return Ok(());
        }
        match known_bindings(&s, signin, ctx) {
            Some(bindings) => delete_known_user_objects(ctx, &s, bindings).await,
            None => delete_user_objects(&ctx.client, &ctx.namespace, &s.subject_key).await,
        }
    };
    let (revoked, removed) = tokio::join!(revoke(signin, &s, ctx), remove);
    revoked?;
    tracing::info!(audit = true, event = "revoked", user = %s.login, node = %s.node, role = %s.role, session = %s.signin_name, "session revoked");
    ctx.event(
        signin,
        false,
        "Revoked",
        "session ended; its tokens are revoked".into(),
    );
    ctx.release(signin);
    removed?;
    Ok(Action::await_change())
}

/// Deletes the session's Secret by name, without waiting for any LIST: its name follows from the
/// TkaSignin's UID, so this finds it also when the status write that records it failed. A Secret recorded
/// under another name (named by an earlier version) is deleted too.
async fn revoke(signin: &TkaSignin, s: &Session, ctx: &Context) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let own = s.session_secret_name();
    let recorded = signin
        .status
        .as_ref()
        .and_then(|st| st.session_secret.as_ref())
        .map(|r| r.name.clone())
        .filter(|r| *r != own);
    for name in std::iter::once(own).chain(recorded) {
        ignore_not_found(secrets.delete(&name, &DeleteParams::default()).await).at(Step::Revoke)?;
    }
    Ok(())
}

/// Does another live session of this user still need the SA (its tokens are bound to the SA's UID) and the
/// bindings? Answered from the controller's cache under the user's lock, without a LIST: every session this
/// controller provisioned was in the cache before its reconcile ran (the cache is written before a reconcile
/// is triggered) and stays there until it is deleted; one not provisioned yet creates the objects again when
/// its reconcile runs after this one. Without a cache (the controller has not started) a LIST answers.
async fn still_used(s: &Session, ctx: &Context) -> Result<bool, Error> {
    let now = Timestamp::now();
    let other_live = |o: &TkaSignin| {
        o.spec.subject_key == s.subject_key && o.name_any() != s.signin_name && o.is_live(now)
    };
    if let Some(cache) = ctx.cache.get() {
        return Ok(cache.state().iter().any(|o| other_live(o)));
    }
    let lp = ListParams::default().labels(&format!("{}={}", objects::USER_KEY, s.subject_key));
    let list = ctx.signins().list(&lp).await.at(Step::ListSignins)?;
    Ok(list.items.iter().any(other_live))
}

/// A binding: its namespace (none for a ClusterRoleBinding) and name.
pub(super) type BindingKey = (Option<String>, String);

/// The user's bindings, found without a LIST, or `None` while the controller's binding caches have not
/// listed yet (then a LIST finds them).
fn known_bindings(s: &Session, signin: &TkaSignin, ctx: &Context) -> Option<BTreeSet<BindingKey>> {
    let caches = ctx.bindings.get()?;
    let listed = caches
        .cluster
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|r| r.is_ok())
        && caches
            .namespaced
            .wait_until_ready()
            .now_or_never()
            .is_some_and(|r| r.is_ok());
    if !listed {
        return None;
    }
    let mine = |labels: &BTreeMap<String, String>| is_users(labels, &s.namespace, &s.subject_key);
    let cached = caches
        .cluster
        .state()
        .iter()
        .filter(|b| mine(b.labels()))
        .map(|b| (None, b.name_any()))
        .chain(
            caches
                .namespaced
                .state()
                .iter()
                .filter(|b| mine(b.labels()))
                .map(|b| (b.namespace(), b.name_any())),
        )
        .collect::<Vec<_>>();
    let recorded = signin
        .status
        .as_ref()
        .map(|st| st.bindings.as_slice())
        .unwrap_or_default();
    Some(user_bindings(s, recorded, cached))
}

/// The bindings to delete for a user: those the caches hold with the user's key and this instance, and
/// those this session recorded in its status (made by its provisioning a moment ago, a cache may not show
/// them yet). Recorded ones only under the user's own binding name: a status names nothing else to delete.
/// A binding of that name which provisioning found to be someone else's is never recorded.
pub(super) fn user_bindings(
    s: &Session,
    recorded: &[BindingRef],
    cached: impl IntoIterator<Item = BindingKey>,
) -> BTreeSet<BindingKey> {
    let name = s.binding_name();
    let mut all: BTreeSet<BindingKey> = cached.into_iter().collect();
    all.extend(
        recorded
            .iter()
            .filter(|b| b.name == name)
            .map(|b| (b.namespace.clone(), b.name.clone())),
    );
    all
}

/// Labels of one of this instance's objects of this user.
fn is_users(labels: &BTreeMap<String, String>, instance: &str, subject_key: &str) -> bool {
    let is = |k: &str, v: &str| labels.get(k).is_some_and(|x| x == v);
    is(objects::MANAGED_BY, "tka")
        && is(objects::INSTANCE, instance)
        && is(objects::USER_KEY, subject_key)
}

/// Deletes the user's SA and `bindings` by name.
async fn delete_known_user_objects(
    ctx: &Context,
    s: &Session,
    bindings: BTreeSet<BindingKey>,
) -> Result<(), Error> {
    let dp = &DeleteParams::default();
    let binding = |(namespace, name): BindingKey| async move {
        match namespace {
            None => Api::<ClusterRoleBinding>::all(ctx.client.clone())
                .delete(&name, dp)
                .await
                .map(drop),
            Some(ns) => Api::<RoleBinding>::namespaced(ctx.client.clone(), &ns)
                .delete(&name, dp)
                .await
                .map(drop),
        }
    };
    let sa = async {
        Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ctx.namespace)
            .delete(&s.user_object_name(), dp)
            .await
            .map(drop)
    };
    let deletes = bindings
        .into_iter()
        .map(|b| binding(b).boxed())
        .chain(std::iter::once(sa.boxed()));
    for deleted in futures::future::join_all(deletes).await {
        ignore_not_found(deleted).at(Step::DeleteUserObjects)?;
    }
    Ok(())
}

/// Deletes a user's SA and every binding of this instance labelled with the user's key. Bindings are found by
/// label, not by name, so names of earlier versions (`tka-user-<key>`, before the instance was part of it) are
/// removed too, and another instance's bindings never are.
pub async fn delete_user_objects(
    client: &Client,
    namespace: &str,
    subject_key: &str,
) -> Result<(), Error> {
    delete_user_objects_steps(client, namespace, subject_key)
        .await
        .at(Step::DeleteUserObjects)
}

async fn delete_user_objects_steps(
    client: &Client,
    namespace: &str,
    subject_key: &str,
) -> Result<(), kube::Error> {
    let name = crate::model::naming::user_object_name(subject_key);
    let dp = DeleteParams::default();
    let lp = ListParams::default().labels(&format!(
        "{},{}={}",
        objects::managed_selector(namespace),
        objects::USER_KEY,
        subject_key
    ));
    let crbs = Api::<ClusterRoleBinding>::all(client.clone());
    for crb in crbs.list(&lp).await? {
        ignore_not_found(crbs.delete(&crb.name_any(), &dp).await)?;
    }
    for rb in Api::<RoleBinding>::all(client.clone()).list(&lp).await? {
        let api: Api<RoleBinding> =
            Api::namespaced(client.clone(), &rb.namespace().unwrap_or_default());
        ignore_not_found(api.delete(&rb.name_any(), &dp).await)?;
    }
    ignore_not_found(
        Api::<ServiceAccount>::namespaced(client.clone(), namespace)
            .delete(&name, &dp)
            .await,
    )?;
    Ok(())
}

/// An object written by upstream TKA (no `subject_key`): remove its `tka-user-<username>` SA and
/// `tka-user-<username>-binding`, then the object itself. It is never updated: it would not pass the new
/// schema's validation, and its user simply logs in again.
pub(super) async fn remove_legacy(signin: &TkaSignin, ctx: &Context) -> Result<Action, Error> {
    remove_legacy_objects(signin, ctx)
        .await
        .at(Step::RemoveLegacy)?;
    ctx.metrics.revocations.with_label_values(&["legacy"]).inc();
    Ok(Action::await_change())
}

async fn remove_legacy_objects(signin: &TkaSignin, ctx: &Context) -> Result<(), kube::Error> {
    let user = &signin.spec.username;
    tracing::warn!(signin = %signin.name_any(), "removing a TkaSignin written by upstream TKA; its user must log in again");
    let dp = DeleteParams::default();
    if crate::model::naming::is_dns1123_label(&format!("tka-user-{user}")) {
        ignore_not_found(
            Api::<ClusterRoleBinding>::all(ctx.client.clone())
                .delete(&format!("tka-user-{user}-binding"), &dp)
                .await,
        )?;
        ignore_not_found(
            Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ctx.namespace)
                .delete(&format!("tka-user-{user}"), &dp)
                .await,
        )?;
    }
    if !signin.finalizers().is_empty() {
        let patch = json!({ "metadata": { "finalizers": null } });
        ignore_not_found(
            ctx.signins()
                .patch(
                    &signin.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await,
        )?;
    }
    ignore_not_found(ctx.signins().delete(&signin.name_any(), &dp).await)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(namespaces: &[&str]) -> Session {
        Session {
            namespace: "tka-system".into(),
            signin_name: "tka-a-b".into(),
            signin_uid: "u1".into(),
            login: "alice@example.com".into(),
            subject_key: "alice-example-com-abc".into(),
            node: "laptop".into(),
            node_key: "n".into(),
            role: "view".into(),
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn recorded(namespace: Option<&str>, name: &str) -> BindingRef {
        BindingRef {
            kind: if namespace.is_some() {
                "RoleBinding"
            } else {
                "ClusterRoleBinding"
            }
            .into(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
            role: "view".into(),
        }
    }

    #[test]
    fn cached_and_recorded_bindings_are_deleted_other_names_in_a_status_never() {
        let s = session(&["team-a"]);
        let name = s.binding_name();
        let cached = vec![(None, "tka-user-old-name".to_string())];
        let status = [
            recorded(Some("team-a"), &name),
            recorded(Some("kube-system"), "someone-elses-binding"),
        ];
        let all = user_bindings(&s, &status, cached);
        let want: BTreeSet<BindingKey> = [
            (None, "tka-user-old-name".to_string()),
            (Some("team-a".to_string()), name),
        ]
        .into_iter()
        .collect();
        assert_eq!(all, want);
    }

    #[test]
    fn only_this_users_objects_of_this_instance_are_the_users() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let own = [
            (objects::MANAGED_BY, "tka"),
            (objects::INSTANCE, "tka-system"),
            (objects::USER_KEY, "alice"),
        ];
        assert!(is_users(&labels(&own), "tka-system", "alice"));
        assert!(!is_users(&labels(&own), "tka-other", "alice"));
        assert!(!is_users(&labels(&own), "tka-system", "bob"));
        assert!(!is_users(&labels(&own[1..]), "tka-system", "alice"));
    }
}
