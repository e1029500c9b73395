//! Counts of one server's objects, kept by watches of the benchmark's own (admin) client: waiting for "all
//! ready" or "all gone" costs the apiserver no LISTs while it is being measured.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::Serialize;
use tka::operator::crd::TkaSignin;
use tka::operator::objects;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub signins: usize,
    /// TkaSignins whose `Ready=True` describes their current generation.
    pub ready: usize,
    pub service_accounts: usize,
    pub secrets: usize,
    pub bindings: usize,
}

impl Counts {
    /// Exactly `n` sessions, all ready, and one of each object per session.
    pub fn exactly(&self, n: usize) -> bool {
        *self
            == Counts {
                signins: n,
                ready: n,
                service_accounts: n,
                secrets: n,
                bindings: n,
            }
    }
}

pub struct Census {
    signins: Store<TkaSignin>,
    sas: Store<PartialObjectMeta<ServiceAccount>>,
    secrets: Store<PartialObjectMeta<Secret>>,
    crbs: Store<PartialObjectMeta<ClusterRoleBinding>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A cache of `api`'s objects (selected by `config`), kept current by a watch.
fn keep<K>(api: Api<K>, config: watcher::Config) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let task = tokio::spawn(stream.for_each(|_| async {}));
    (store, task)
}

impl Census {
    /// Watches the TkaSignins, managed ServiceAccounts and Secrets of `ns` and the ClusterRoleBindings of its
    /// instance; returns once all four caches hold their initial list.
    pub async fn start(admin: &Client, ns: &str) -> Census {
        let managed = watcher::Config::default().labels(&objects::managed_selector(ns));
        let instance = watcher::Config::default().labels(&format!("{}={ns}", objects::INSTANCE));
        let (signins, t1) = keep(Api::namespaced(admin.clone(), ns), Default::default());
        // Metadata-only watches (`PartialObjectMeta`): counting needs no more.
        let (sas, t2) = keep(Api::namespaced(admin.clone(), ns), managed.clone());
        let (secrets, t3) = keep(Api::namespaced(admin.clone(), ns), managed);
        let (crbs, t4) = keep(Api::all(admin.clone()), instance);
        for ready in [
            signins.wait_until_ready().await,
            sas.wait_until_ready().await,
            secrets.wait_until_ready().await,
            crbs.wait_until_ready().await,
        ] {
            ready.expect("census watch");
        }
        Census {
            signins,
            sas,
            secrets,
            crbs,
            tasks: vec![t1, t2, t3, t4],
        }
    }

    pub fn counts(&self) -> Counts {
        let signins = self.signins.state();
        let ready = signins.iter().filter(|s| is_ready(s)).count();
        Counts {
            signins: signins.len(),
            ready,
            service_accounts: self.sas.state().len(),
            secrets: self.secrets.state().len(),
            bindings: self.crbs.state().len(),
        }
    }

    /// Waits (checking every 20 ms) until `done` holds; the time it took, or `None` after `limit`.
    pub async fn until(&self, limit: Duration, done: impl Fn(&Counts) -> bool) -> Option<Duration> {
        self.until_sampled(limit, done).await.0
    }

    /// [`Census::until`], also returning the counts every 500 ms (seconds since the call, counts): whether
    /// the objects went at an even pace or a few lagged behind.
    pub async fn until_sampled(
        &self,
        limit: Duration,
        done: impl Fn(&Counts) -> bool,
    ) -> (Option<Duration>, Vec<(f64, Counts)>) {
        let started = Instant::now();
        let mut samples = Vec::new();
        while started.elapsed() < limit {
            let counts = self.counts();
            let t = started.elapsed();
            if done(&counts) {
                samples.push((t.as_secs_f64(), counts));
                return (Some(t), samples);
            }
            if samples.len() as f64 * 0.5 <= t.as_secs_f64() {
                samples.push((t.as_secs_f64(), counts));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (None, samples)
    }
}

impl Drop for Census {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Ready for the current generation, as the API decides it.
pub fn is_ready(s: &TkaSignin) -> bool {
    let generation = s.metadata.generation.unwrap_or_default();
    let observed = s
        .status
        .as_ref()
        .and_then(|st| st.observed_generation)
        .unwrap_or(-1);
    s.metadata.deletion_timestamp.is_none()
        && observed >= generation
        && s.ready_condition().is_some_and(|c| c.status == "True")
}
