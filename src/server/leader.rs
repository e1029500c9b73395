//! Lease-based leader election (spec: kubernetes.md §7). Only the leader runs the tailnet node, the API and
//! the controller; a standby serves health and metrics and waits. The Lease name is upstream's election ID,
//! so an upstream replica and this one exclude each other during a migration.
//!
//! The protocol is client-go's: a holder renews `renewTime`; anyone may take a Lease whose `renewTime +
//! leaseDurationSeconds` has passed, or whose holder is empty (released). Every write carries the
//! `resourceVersion` it read, so two candidates can never both win.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Settings {
    pub namespace: String,
    pub lease_name: String,
    /// `<POD_NAME>_<random>`.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

pub struct Elector {
    api: Api<Lease>,
    s: Settings,
}

/// What a Lease says about us.
#[derive(Debug, PartialEq)]
enum Seen {
    Ours,
    Free,
    Held,
}

fn seen(lease: &Lease, me: &str, now: Timestamp) -> Seen {
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder == me {
        return Seen::Ours;
    }
    if holder.is_empty() {
        return Seen::Free;
    }
    let duration =
        jiff::SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15) as i64);
    let renewed = spec
        .renew_time
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    if renewed
        .checked_add(duration)
        .is_ok_and(|expiry| expiry < now)
    {
        Seen::Free
    } else {
        Seen::Held
    }
}

impl Elector {
    pub fn new(client: Client, s: Settings) -> Elector {
        Elector {
            api: Api::namespaced(client, &s.namespace),
            s,
        }
    }

    /// One attempt to acquire or renew. `Ok(true)`: we hold the Lease now.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let me = &self.s.identity;
        let secs = self.s.lease_duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.s.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.s.lease_name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let state = seen(&lease, me, now);
        if state == Seen::Held {
            return Ok(false);
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if state == Seen::Free {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(me.clone());
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(secs);
        // `replace` sends the resourceVersion we read: a concurrent winner makes this a 409.
        match self
            .api
            .replace(&self.s.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until we are the leader (or `stop` turns true: `false`).
    pub async fn acquire(&self, mut stop: watch::Receiver<bool>) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.s.lease_name, identity = %self.s.identity, "became leader");
                    return true;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot read or write the Lease")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.s.retry_period) => {}
                _ = stop.wait_for(|s| *s) => return false,
            }
        }
    }

    /// Renews every `retry_period` until `stop`; returns `false` when renewing failed for `renew_deadline`
    /// (leadership is lost: the caller stops everything and exits).
    pub async fn hold(&self, mut stop: watch::Receiver<bool>) -> bool {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.s.retry_period) => {}
                _ = stop.wait_for(|s| *s) => return true,
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("leader election: the Lease is held by someone else");
                    return false;
                }
                Err(e) => tracing::warn!(error = %e, "leader election: renewing failed"),
            }
            if last_ok.elapsed() > self.s.renew_deadline {
                tracing::error!("leader election: could not renew within renewDeadline");
                return false;
            }
        }
    }

    /// Gives the Lease up (empty holder), so a standby takes over within one retry period.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.s.lease_name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.s.identity.as_str()) {
            return;
        }
        spec.holder_identity = Some(String::new());
        if let Err(e) = self
            .api
            .replace(&self.s.lease_name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "leader election: releasing the Lease failed; a standby takes over after leaseDuration");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_secs_ago: i64) -> Lease {
        let renewed = Timestamp::now() - jiff::SignedDuration::from_secs(renewed_secs_ago);
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn who_may_take_the_lease() {
        let now = Timestamp::now();
        assert_eq!(seen(&lease("me", 1), "me", now), Seen::Ours);
        assert_eq!(seen(&lease("other", 1), "me", now), Seen::Held);
        assert_eq!(seen(&lease("other", 20), "me", now), Seen::Free, "expired");
        assert_eq!(seen(&lease("", 1), "me", now), Seen::Free, "released");
    }
}
