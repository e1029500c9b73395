//! Ending a session: revoke by deleting the session Secret, remove the user's objects when no other live
//! session needs them, and migrate objects written by upstream TKA.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::context::Context;
use super::crd::TkaSignin;
use super::error::{At, Error, Step, ignore_not_found};
use super::objects::{self, Session};

/// Under the finalizer: revoke (delete the session Secret), then remove the user's SA and bindings unless
/// another live session of the same user still needs them. NotFound counts as done everywhere.
pub(super) async fn cleanup(signin: &TkaSignin, ctx: &Context) -> Result<Action, Error> {
    let s = Session::from_signin(signin, &ctx.namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    // Revoke first: the recorded Secret is deleted by name, without waiting for any LIST.
    if let Some(recorded) = signin
        .status
        .as_ref()
        .and_then(|st| st.session_secret.as_ref())
    {
        ignore_not_found(
            secrets
                .delete(&recorded.name, &DeleteParams::default())
                .await,
        )
        .at(Step::Revoke)?;
    }
    tracing::info!(audit = true, event = "revoked", user = %s.login, node = %s.node, role = %s.role, session = %s.signin_name, "session revoked");
    ctx.event(
        signin,
        false,
        "Revoked",
        "session ended; its tokens are revoked".into(),
    );
    let lp = ListParams::default().labels(&format!("{}={}", objects::SESSION, s.signin_name));
    // Only this object's Secrets: a new session of the same name (a re-login) has its own owner UID.
    for secret in secrets.list(&lp).await.at(Step::Revoke)? {
        if secret
            .owner_references()
            .iter()
            .any(|o| o.uid == s.signin_uid)
        {
            ignore_not_found(
                secrets
                    .delete(&secret.name_any(), &DeleteParams::default())
                    .await,
            )
            .at(Step::Revoke)?;
        }
    }
    ctx.created_secrets
        .lock()
        .expect("lock poisoned")
        .remove(&s.signin_uid);
    ctx.release(signin);

    let now = Timestamp::now();
    // A fresh list, not the cache: a session of this user created a moment ago must keep its SA (its
    // tokens are bound to the SA's UID). This runs after revocation, so it costs no revocation latency.
    let lp = ListParams::default().labels(&format!("{}={}", objects::USER_KEY, s.subject_key));
    let still_used = ctx
        .signins()
        .list(&lp)
        .await
        .at(Step::ListSignins)?
        .items
        .iter()
        .any(|o| o.name_any() != s.signin_name && o.is_live(now));
    if !still_used {
        delete_user_objects(&ctx.client, &ctx.namespace, &s.subject_key).await?;
    }
    Ok(Action::await_change())
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
