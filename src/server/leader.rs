//! Lease-based leader election. Only the leader runs the tailnet node, the API and the controller; a standby
//! serves health and metrics and waits. The Lease name is upstream's election ID, so an upstream replica and
//! this one exclude each other during a migration.
//!
//! The protocol is client-go's, including how time is judged:
//!
//! - A holder renews the Lease; anyone may take a Lease whose holder is empty (released), or whose record has
//!   not changed for `leaseDurationSeconds` **as measured on the candidate's own monotonic clock since it first
//!   saw that record** (by `resourceVersion`). The holder's `renewTime` comes from another machine's clock and
//!   is never compared with ours: a skewed clock must not make a live Lease look expired.
//! - Every call to the apiserver is bounded by the retry period, and the holder gives up once it has not
//!   renewed within `renewDeadline` of the start of its last successful renew, on its own monotonic clock. A
//!   standby can only have seen that renew after it started, so the holder gives up at least `leaseDuration −
//!   renewDeadline` before any standby may take over.
//! - Every write carries the `resourceVersion` it read, so two candidates can never both win, and a delayed
//!   write of a holder that gave up cannot overwrite its successor's record.

use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;

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
    /// The Lease record as this process last saw it, and since when.
    observed: Mutex<Option<Observed>>,
}

/// What a candidate compares between two reads of the Lease.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    /// Changes on every write, whoever makes it.
    version: String,
    holder: String,
    /// How long the holder claims the Lease after each renew.
    duration: Duration,
}

/// A record and when this process first saw it in this form, on its own monotonic clock.
#[derive(Debug, Clone)]
struct Observed {
    record: Record,
    at: Instant,
}

/// What a Lease says about us.
#[derive(Debug, PartialEq)]
enum Seen {
    Ours,
    Free,
    Held,
}

/// The observation after reading `record` at `now`: an unchanged record keeps the time it was first seen.
fn observe(previous: Option<&Observed>, record: Record, now: Instant) -> Observed {
    match previous {
        Some(p) if p.record == record => p.clone(),
        _ => Observed { record, at: now },
    }
}

/// Whether `me` may write the Lease at `now`: it is ours, released, or unchanged for its whole duration since
/// we first saw it.
fn seen(o: &Observed, me: &str, now: Instant) -> Seen {
    if o.record.holder == me {
        Seen::Ours
    } else if o.record.holder.is_empty() || now.saturating_duration_since(o.at) >= o.record.duration
    {
        Seen::Free
    } else {
        Seen::Held
    }
}

/// How one renew round of the holder ended.
enum Renewal {
    /// Renewed by an attempt that started at this instant.
    Renewed(Instant),
    Stopped,
    Lost(&'static str),
}

impl Elector {
    pub fn new(client: Client, s: Settings) -> Elector {
        Elector {
            api: Api::namespaced(client, &s.namespace),
            s,
            observed: Mutex::new(None),
        }
    }

    fn record_of(&self, lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            version: lease.metadata.resource_version.clone().unwrap_or_default(),
            holder: spec.holder_identity.unwrap_or_default(),
            duration: spec
                .lease_duration_seconds
                .filter(|s| *s > 0)
                .map_or(self.s.lease_duration, |s| Duration::from_secs(s as u64)),
        }
    }

    /// Remembers `lease` as read now; returns the observation.
    fn note(&self, lease: &Lease) -> Observed {
        let record = self.record_of(lease);
        let mut observed = self.observed.lock().expect("lock poisoned");
        let o = observe(observed.as_ref(), record, Instant::now());
        *observed = Some(o.clone());
        o
    }

    /// One attempt to acquire or renew, not bounded in time (callers bound it). `Ok(true)`: we hold the Lease.
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
                Ok(created) => {
                    self.note(&created);
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let state = seen(&self.note(&lease), me, Instant::now());
        if state == Seen::Held {
            return Ok(false);
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if state == Seen::Free {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(me.clone());
        }
        // Informational only: nobody compares it with their own clock.
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(secs);
        // `replace` sends the resourceVersion we read: a concurrent winner makes this a 409.
        match self
            .api
            .replace(&self.s.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.note(&written);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One attempt bounded by `budget`; a timeout is an error like any other.
    async fn attempt(&self, budget: Duration) -> Result<bool, String> {
        match tokio::time::timeout(budget, self.try_acquire_or_renew()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer from the apiserver within {budget:?}")),
        }
    }

    /// Waits until we are the leader; returns when the winning attempt started (on our monotonic clock), or
    /// `None` when `stop` turned true first.
    pub async fn acquire(&self, mut stop: watch::Receiver<bool>) -> Option<Instant> {
        loop {
            let started = Instant::now();
            match self.attempt(self.s.retry_period).await {
                Ok(true) => {
                    tracing::info!(lease = %self.s.lease_name, identity = %self.s.identity, "became leader");
                    return Some(started);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot read or write the Lease")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(started + self.s.retry_period) => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
    }

    /// Renews every `retry_period`, starting from a leadership won (or renewed) at `since`, until `stop`
    /// (`true`: the Lease is still ours to release) or until leadership is lost (`false`: the caller must stop
    /// the tailnet node at once, then everything else).
    pub async fn hold(&self, since: Instant, mut stop: watch::Receiver<bool>) -> bool {
        let mut renewed = since;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(renewed + self.s.retry_period) => {}
                _ = stop.wait_for(|s| *s) => return true,
            }
            match self
                .renew_by(renewed + self.s.renew_deadline, &mut stop)
                .await
            {
                Renewal::Renewed(at) => renewed = at,
                Renewal::Stopped => return true,
                Renewal::Lost(why) => {
                    tracing::error!(lease = %self.s.lease_name, "leader election: {why}; leadership lost");
                    return false;
                }
            }
        }
    }

    /// Attempts to renew, one attempt per retry period, each bounded by the retry period and by `deadline`.
    async fn renew_by(&self, deadline: Instant, stop: &mut watch::Receiver<bool>) -> Renewal {
        loop {
            let started = Instant::now();
            if started >= deadline {
                return Renewal::Lost("could not renew within renewDeadline");
            }
            match self
                .attempt(self.s.retry_period.min(deadline - started))
                .await
            {
                Ok(true) => return Renewal::Renewed(started),
                Ok(false) => return Renewal::Lost("the Lease is held by someone else"),
                Err(e) => tracing::warn!(error = %e, "leader election: renewing failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep_until((started + self.s.retry_period).min(deadline)) => {}
                _ = stop.wait_for(|s| *s) => return Renewal::Stopped,
            }
        }
    }

    /// Gives the Lease up (empty holder), so a standby takes over within one retry period. Bounded by the
    /// renew deadline: an unreachable apiserver just means the standby waits for the Lease to expire.
    pub async fn release(&self) {
        let release = async {
            let Some(mut lease) = self.api.get_opt(&self.s.lease_name).await? else {
                return Ok(());
            };
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(self.s.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = Some(String::new());
            self.api
                .replace(&self.s.lease_name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        };
        let outcome = tokio::time::timeout(self.s.renew_deadline, release).await;
        if let Some(e) = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer from the apiserver".to_string()),
        } {
            tracing::warn!(error = %e, "leader election: releasing the Lease failed; a standby takes over after leaseDuration");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn record(version: &str, holder: &str) -> Record {
        Record {
            version: version.into(),
            holder: holder.into(),
            duration: LEASE,
        }
    }

    /// The expiry decision with an injected clock: only the time since *we* saw the record change counts.
    #[test]
    fn a_lease_expires_leaseduration_after_we_last_saw_it_change() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let first = observe(None, record("1", "other"), t0);
        assert_eq!(seen(&first, "me", t0), Seen::Held);
        assert_eq!(seen(&first, "me", s(14)), Seen::Held);
        assert_eq!(seen(&first, "me", s(15)), Seen::Free, "unchanged for 15 s");
        // Reading the same record again does not move the clock…
        let again = observe(Some(&first), record("1", "other"), s(10));
        assert_eq!(again.at, t0);
        assert_eq!(seen(&again, "me", s(15)), Seen::Free);
        // …a renew (new resourceVersion) restarts it from when we saw it, whatever its renewTime says.
        let renewed = observe(Some(&again), record("2", "other"), s(12));
        assert_eq!(renewed.at, s(12));
        assert_eq!(seen(&renewed, "me", s(26)), Seen::Held);
        assert_eq!(seen(&renewed, "me", s(27)), Seen::Free);
        // A candidate that has just started has seen the record only now: it waits a whole leaseDuration,
        // however old the holder's renewTime is.
        let fresh = observe(None, record("2", "other"), s(100));
        assert_eq!(seen(&fresh, "me", s(101)), Seen::Held);
        // The holder's own duration counts, not ours.
        let short = observe(
            None,
            Record {
                duration: Duration::from_secs(3),
                ..record("3", "other")
            },
            t0,
        );
        assert_eq!(seen(&short, "me", s(3)), Seen::Free);
    }

    #[test]
    fn ours_and_released_leases() {
        let t0 = Instant::now();
        assert_eq!(
            seen(&observe(None, record("1", "me"), t0), "me", t0),
            Seen::Ours
        );
        assert_eq!(
            seen(&observe(None, record("1", ""), t0), "me", t0),
            Seen::Free,
            "released"
        );
    }
}
