//! Periodic garbage sweep: removes managed objects that no live session needs any more, e.g. after a crash between two cleanup steps or a TkaSignin deleted with its finalizer
//! stripped by hand.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};

use super::cleanup::delete_user_objects;
use super::crd::TkaSignin;
use super::error::{At, Error, Step, ignore_not_found};
use super::objects::{self, SESSION, USER_KEY};

/// One sweep. Returns how many users' objects and how many Secrets were removed.
pub async fn sweep_once(client: &Client, namespace: &str) -> Result<(usize, usize), Error> {
    let now = Timestamp::now();
    let signins: Api<TkaSignin> = Api::namespaced(client.clone(), namespace);
    let all = signins
        .list(&ListParams::default())
        .await
        .at(Step::ListSignins)?;
    let live_users: BTreeSet<String> = all
        .iter()
        .filter(|s| s.is_live(now))
        .map(|s| s.spec.subject_key.clone())
        .collect();
    // A user with any TkaSignin left (even one being cleaned up) is the reconciler's business, not ours.
    let known_users: BTreeSet<String> = all.iter().map(|s| s.spec.subject_key.clone()).collect();
    let sessions: BTreeSet<String> = all.iter().map(|s| s.name_any()).collect();

    let lp = ListParams::default().labels(&objects::managed_selector(namespace));
    // Objects younger than a minute may belong to a TkaSignin created after the list above.
    let settled = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.creation_timestamp
            .as_ref()
            .is_some_and(|t| now.duration_since(t.0).as_secs() >= 60)
    };
    let mut users: BTreeSet<String> = BTreeSet::new();
    for sa in Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await
        .at(Step::ListManaged)?
    {
        if settled(&sa.metadata) {
            users.extend(sa.labels().get(USER_KEY).cloned());
        }
    }
    for crb in Api::<ClusterRoleBinding>::all(client.clone())
        .list(&lp)
        .await
        .at(Step::ListManaged)?
    {
        if settled(&crb.metadata) {
            users.extend(crb.labels().get(USER_KEY).cloned());
        }
    }
    let mut removed_users = 0;
    for user in users
        .iter()
        .filter(|u| !live_users.contains(*u) && !known_users.contains(*u))
    {
        tracing::info!(user_key = %user, "sweep: removing objects of a user without sessions");
        delete_user_objects(client, namespace, user).await?;
        removed_users += 1;
    }

    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut removed_secrets = 0;
    for secret in secrets.list(&lp).await.at(Step::ListManaged)? {
        let orphan = settled(&secret.metadata)
            && secret
                .labels()
                .get(SESSION)
                .is_none_or(|s| !sessions.contains(s));
        if orphan {
            ignore_not_found(
                secrets
                    .delete(&secret.name_any(), &DeleteParams::default())
                    .await,
            )
            .at(Step::Revoke)?;
            removed_secrets += 1;
        }
    }
    Ok((removed_users, removed_secrets))
}

/// Sweeps every `interval` until the task is dropped; errors are logged and retried next time.
pub async fn run(client: Client, namespace: String, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        if let Err(e) = sweep_once(&client, &namespace).await {
            tracing::warn!(error = %e, category = e.category(), "sweep failed");
        }
    }
}
