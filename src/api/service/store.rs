//! The API's view of sessions: a watch-fed cache of TkaSignins, so status reads and long-poll waits never
//! poll the apiserver, and the one place where the API writes a session's spec (never its status: that is
//! the operator's).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use crate::model::naming;
use crate::operator::backoff;
use crate::operator::crd::{FINALIZER, Origin, TkaSignin, TkaSigninSpec};
use crate::operator::objects::{self, CLUSTER_ROLE, LAST_SIGN_IN, LOGIN_NAME, NODE, VALID_UNTIL};

/// Field manager of the spec the API writes.
pub const FIELD_MANAGER: &str = "tka-api";

#[derive(Clone)]
pub struct Store {
    client: Client,
    namespace: String,
    store: reflector::Store<TkaSignin>,
    changed: watch::Receiver<u64>,
}

impl Store {
    /// Starts the watch; returns once the cache holds the initial list.
    pub async fn start(client: Client, namespace: &str) -> Store {
        let api: Api<TkaSignin> = Api::namespaced(client.clone(), namespace);
        let (store, writer) = reflector::store();
        let (tx, changed) = watch::channel(0u64);
        // The cache keeps no field-ownership records: nothing reads them, and they are most of a TkaSignin.
        let stream = reflector::reflector(
            writer,
            backoff::paced(watcher(api, watcher::Config::default()))
                .modify(|s: &mut TkaSignin| s.managed_fields_mut().clear()),
        );
        tokio::spawn(async move {
            stream
                .for_each(|_| {
                    tx.send_modify(|n| *n += 1);
                    futures::future::ready(())
                })
                .await;
        });
        let _ = store.wait_until_ready().await;
        Store {
            client,
            namespace: namespace.to_string(),
            store,
            changed,
        }
    }

    pub fn api(&self) -> Api<TkaSignin> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn get(&self, name: &str) -> Option<Arc<TkaSignin>> {
        self.store
            .get(&ObjectRef::new(name).within(&self.namespace))
    }

    /// A session by name: from the cache, else (just written, cache lagging) from the apiserver.
    pub async fn find(&self, name: &str) -> Result<Option<Arc<TkaSignin>>, kube::Error> {
        if let Some(s) = self.get(name) {
            return Ok(Some(s));
        }
        Ok(self.api().get_opt(name).await?.map(Arc::new))
    }

    /// All sessions of a user (any node).
    pub fn of_user(&self, subject_key: &str) -> Vec<Arc<TkaSignin>> {
        self.store
            .state()
            .into_iter()
            .filter(|s| s.spec.subject_key == subject_key)
            .collect()
    }

    pub fn all(&self) -> Vec<Arc<TkaSignin>> {
        self.store.state()
    }

    /// Waits until `done` holds for the cached object `name` (or its absence), or the deadline passes, or
    /// `cancel` fires. Returns the last seen value. Woken by the watch, never by polling.
    pub async fn wait_for(
        &self,
        name: &str,
        deadline: tokio::time::Instant,
        mut cancel: watch::Receiver<bool>,
        done: impl Fn(Option<&TkaSignin>) -> bool,
    ) -> Option<Arc<TkaSignin>> {
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            let current = self.get(name);
            if done(current.as_deref()) || *cancel.borrow() {
                return current;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return self.get(name),
                r = changed.changed() => if r.is_err() { return self.get(name) },
                _ = cancel.changed() => return self.get(name),
            }
        }
    }

    /// Creates or extends a session: server-side apply of spec, labels and annotations (foreign
    /// annotations are kept: SSA merges map keys). Never touches status. Returns the new generation.
    pub async fn write(&self, new: &NewSession) -> Result<TkaSignin, kube::Error> {
        let name = new.name();
        let uk = naming::subject_key(&new.login);
        let now = Timestamp::now();
        let until = now
            .checked_add(jiff::SignedDuration::try_from(new.period).unwrap_or_default())
            .unwrap_or(now);
        let spec = TkaSigninSpec {
            username: new.login.clone(),
            role: new.role.clone(),
            validity_period: crate::model::duration::GoDuration::from_std(new.period).to_string(),
            subject_key: uk.clone(),
            node: new.node.clone(),
            node_id: new.node_id.clone(),
            node_ip: new.node_ip.clone(),
            requested_at: Some(Time(now)),
            namespaces: new.namespaces.clone(),
            origin: Some(new.origin.clone()),
        };
        let patch = json!({
            "apiVersion": "tka.specht-labs.de/v1alpha1",
            "kind": "TkaSignin",
            "metadata": {
                "name": name,
                // The controller's finalizer, set with the session: the controller would otherwise add it
                // in a write and a watch round trip of its own before provisioning.
                "finalizers": [FINALIZER],
                "labels": {
                    objects::MANAGED_BY: "tka",
                    objects::INSTANCE: self.namespace,
                    objects::USER_KEY: uk,
                    objects::SESSION: name,
                    objects::NODE_KEY: naming::node_key(&new.node_id),
                },
                "annotations": {
                    LOGIN_NAME: new.login,
                    NODE: new.node,
                    CLUSTER_ROLE: new.role,
                    LAST_SIGN_IN: crate::model::wire::rfc3339(now),
                    VALID_UNTIL: crate::model::wire::rfc3339(until),
                },
            },
            "spec": spec,
        });
        self.api()
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
    }

    /// Moves a session's end earlier: its period becomes `period` (counted from its latest login, so the
    /// controller ends it at `until`). Guarded by the resource version: a login in between wrote the
    /// current grant's period itself, and this write then fails with 409 instead of undoing it.
    pub async fn shorten(
        &self,
        signin: &TkaSignin,
        period: Duration,
        until: Timestamp,
    ) -> Result<TkaSignin, kube::Error> {
        let patch = json!({
            "metadata": {
                "resourceVersion": signin.metadata.resource_version,
                "annotations": { VALID_UNTIL: crate::model::wire::rfc3339(until) },
            },
            "spec": {
                "validity_period": crate::model::duration::GoDuration::from_std(period).to_string(),
            },
        });
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        self.api()
            .patch(&signin.name_any(), &pp, &Patch::Merge(&patch))
            .await
    }

    /// Deletes one session object (its finalizer revokes the tokens).
    pub async fn delete(&self, signin: &TkaSignin) -> Result<(), kube::Error> {
        signin.delete_exactly(&self.api()).await
    }
}

/// What a login asks for.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub login: String,
    pub node: String,
    pub node_id: String,
    pub node_ip: String,
    pub role: String,
    pub period: Duration,
    pub namespaces: Vec<String>,
    /// Local, or created by a federation primary.
    pub origin: Origin,
}

impl NewSession {
    pub fn name(&self) -> String {
        naming::signin_name(
            &naming::subject_key(&self.login),
            &naming::node_key(&self.node_id),
        )
    }
}
