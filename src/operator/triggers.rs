//! Which changes are worth a reconcile. Every reconcile costs apiserver round trips, and in a login storm
//! most watch events are the controller's own writes coming back: its status write on the TkaSignin, the
//! objects it has just created. Only these trigger one:
//!
//! - a TkaSignin's identity, spec (its generation), finalizers or deletion ([`lifecycle`]), never its status
//!   (written by this controller and by the token expiry recorder);
//! - an owned or watched object changed or deleted by someone else ([`foreign_changes`]), never its first
//!   sighting, which is its creation by a reconcile (or, after a restart, an object whose TkaSignin is
//!   reconciled anyway);
//! - every sweep interval, the sessions that are not settled ([`due`]): not live, or not `Ready` for their
//!   current generation. Settled ones need no sweep: their expiry is a scheduled requeue and their objects
//!   are watched;
//! - every session after a watch of their objects listed again ([`Relisted`]): a watch that was down saw
//!   no deletions meanwhile, and a list does not report them.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use jiff::Timestamp;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};

use super::crd::TkaSignin;

/// What decides whether a TkaSignin needs a reconcile: identity, spec (generation; a deletion with a
/// finalizer sets its timestamp), finalizers and deletion. Status writes do not change it.
pub fn lifecycle(s: &TkaSignin) -> Option<u64> {
    let mut h = DefaultHasher::new();
    s.metadata.uid.hash(&mut h);
    s.metadata.generation.hash(&mut h);
    s.metadata.finalizers.hash(&mut h);
    s.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

fn hashed(s: Option<&str>) -> u64 {
    let mut h = DefaultHasher::new();
    s.unwrap_or_default().hash(&mut h);
    h.finish()
}

/// Remembers each object's version (UID and resourceVersion, hashed: 16 bytes an object) and decides which
/// watch events are changes by someone else.
#[derive(Default)]
pub struct Versions(HashMap<u64, u64>);

impl Versions {
    /// An object seen in an event: `true` if it was seen before in another version.
    pub fn changed<K: Resource>(&mut self, o: &K) -> bool {
        let uid = hashed(o.meta().uid.as_deref());
        let version = hashed(o.meta().resource_version.as_deref());
        matches!(self.0.insert(uid, version), Some(before) if before != version)
    }

    /// An object deleted: always a change, and forgotten.
    pub fn deleted<K: Resource>(&mut self, o: &K) {
        self.0.remove(&hashed(o.meta().uid.as_deref()));
    }
}

/// Shared by the watches of owned objects: raised when one of them lists again after its first list (the
/// watch had ended, e.g. the apiserver restarted). Deletions while it was down are not in the list, so
/// every session is looked at again.
#[derive(Clone, Default)]
pub struct Relisted(Arc<tokio::sync::Notify>);

/// One watch's lists: the first fills the caches, every later one is a relist.
#[derive(Default)]
pub struct Lists(bool);

impl Lists {
    /// A list starts: `true` when it is a relist.
    pub fn started(&mut self) -> bool {
        std::mem::replace(&mut self.0, true)
    }
}

/// Metadata-only watch of `api` (labels and owners are all the mappers and cleanup read), with the capped
/// backoff; field-ownership records are dropped.
pub fn watch_meta<K>(
    api: Api<PartialObjectMeta<K>>,
    config: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<PartialObjectMeta<K>>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Clone + Eq + std::hash::Hash,
{
    super::backoff::paced(watcher(api, config))
        .modify(|o: &mut PartialObjectMeta<K>| o.managed_fields_mut().clear())
}

/// Of a watch's `events`, only changes of objects seen before, and deletions; a relist raises `relisted`.
pub fn foreign_changes<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    relisted: Relisted,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Send + 'static,
{
    let mut versions = Versions::default();
    let mut lists = Lists::default();
    events.try_filter_map(move |event| {
        let changed = match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                versions.changed(&o).then_some(o)
            }
            watcher::Event::Delete(o) => {
                versions.deleted(&o);
                Some(o)
            }
            watcher::Event::Init => {
                if lists.started() {
                    relisted.0.notify_one();
                }
                None
            }
            watcher::Event::InitDone => None,
        };
        futures::future::ready(Ok(changed))
    })
}

/// Is this session where the controller left it: live, and `Ready` for its current generation?
pub fn settled(s: &TkaSignin, now: Timestamp) -> bool {
    s.is_live(now) && s.is_ready()
}

/// Every `interval`, the sessions of `store` that are not [`settled`], so that they are looked at again even
/// if a timer was lost; after a relist of a watch (`relisted`), all of them.
pub fn due(
    store: Store<TkaSignin>,
    interval: Duration,
    relisted: Relisted,
) -> impl Stream<Item = ObjectRef<TkaSignin>> + Send + 'static {
    futures::stream::unfold(store, move |store| {
        let relisted = relisted.clone();
        async move {
            let all = tokio::select! {
                _ = tokio::time::sleep(interval) => false,
                _ = relisted.0.notified() => true,
            };
            let now = Timestamp::now();
            let due: Vec<ObjectRef<TkaSignin>> = store
                .state()
                .iter()
                .filter(|s| all || !settled(s, now))
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect();
            Some((futures::stream::iter(due), store))
        }
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::{TkaSigninSpec, TkaSigninStatus};
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn signin(generation: i64, observed: Option<i64>, ready: &str) -> TkaSignin {
        let now = Timestamp::now();
        let mut s = TkaSignin::new(
            "tka-a-b",
            TkaSigninSpec {
                username: "a@example.com".into(),
                role: "view".into(),
                validity_period: "1h0m0s".into(),
                subject_key: "a".into(),
                requested_at: Some(Time(now)),
                ..Default::default()
            },
        );
        s.metadata.uid = Some("u1".into());
        s.metadata.generation = Some(generation);
        s.status = Some(TkaSigninStatus {
            observed_generation: observed,
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ready.into(),
                reason: "Provisioned".into(),
                message: String::new(),
                observed_generation: observed,
                last_transition_time: Time(now),
            }],
            ..Default::default()
        });
        s
    }

    #[test]
    fn status_writes_do_not_trigger_but_spec_finalizers_and_deletion_do() {
        let s = signin(1, None, "False");
        let mut status_only = s.clone();
        status_only.status = None;
        status_only.metadata.resource_version = Some("99".into());
        assert_eq!(lifecycle(&s), lifecycle(&status_only));
        let mut spec = s.clone();
        spec.metadata.generation = Some(2);
        assert_ne!(lifecycle(&s), lifecycle(&spec));
        let mut finalized = s.clone();
        finalized.metadata.finalizers = Some(vec!["x".into()]);
        assert_ne!(lifecycle(&s), lifecycle(&finalized));
        let mut deleted = s.clone();
        deleted.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert_ne!(lifecycle(&s), lifecycle(&deleted));
        let mut recreated = s.clone();
        recreated.metadata.uid = Some("u2".into());
        assert_ne!(lifecycle(&s), lifecycle(&recreated));
    }

    fn secret(uid: &str, version: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.uid = Some(uid.into());
        s.metadata.resource_version = Some(version.into());
        s
    }

    #[test]
    fn first_sightings_are_not_changes_later_versions_and_recreations_are() {
        let mut v = Versions::default();
        assert!(!v.changed(&secret("a", "1")), "created by a reconcile");
        assert!(
            !v.changed(&secret("a", "1")),
            "the same version again (a relist)"
        );
        assert!(v.changed(&secret("a", "2")), "changed by someone");
        v.deleted(&secret("a", "2"));
        assert!(!v.changed(&secret("b", "3")), "a new object, new UID");
        assert!(!v.changed(&secret("a", "4")), "forgotten after deletion");
    }

    #[test]
    fn a_watch_relists_after_its_first_list() {
        let mut lists = Lists::default();
        assert!(!lists.started(), "the first list fills the cache");
        assert!(lists.started());
        assert!(lists.started());
    }

    #[test]
    fn only_unsettled_sessions_are_swept() {
        let now = Timestamp::now();
        assert!(settled(&signin(1, Some(1), "True"), now));
        assert!(!settled(&signin(2, Some(1), "True"), now), "new generation");
        assert!(!settled(&signin(1, Some(1), "False"), now), "not ready");
        assert!(!settled(&signin(1, None, "True"), now), "never observed");
        let later = now + jiff::SignedDuration::from_hours(2);
        assert!(!settled(&signin(1, Some(1), "True"), later), "expired");
        let mut deleting = signin(1, Some(1), "True");
        deleting.metadata.deletion_timestamp = Some(Time(now));
        assert!(!settled(&deleting, now), "being deleted");
    }
}
