//! What a `TkaSignin` says about its session: when it ends, whether it is live, ending or still waiting for
//! the controller, and where it came from. Every layer reads sessions through these methods, never through
//! raw metadata fields, so "live" and "ready" mean the same thing to the API, the controller and the metrics.

use jiff::Timestamp;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, Resource, ResourceExt};

use super::crd::{Origin, TkaSignin};
use super::error::{Error, is_status};
use crate::model::duration::GoDuration;

/// Where a session stands, as the API reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionState {
    /// The controller has not yet reported on the current generation.
    Pending,
    Ready,
    /// Terminal `Ready=False` for the current generation: reason and message.
    Failed {
        reason: String,
        message: String,
    },
}

/// Who asked for a session: a user at this server, or a federation primary on the user's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginKind {
    Local,
    Federation,
}

impl OriginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OriginKind::Local => "local",
            OriginKind::Federation => "federation",
        }
    }
}

impl Origin {
    pub fn local() -> Origin {
        Origin {
            kind: OriginKind::Local.as_str().into(),
            primary: String::new(),
        }
    }

    /// A session a federation primary (this node FQDN) created on the user's behalf.
    pub fn federation(primary: &str) -> Origin {
        Origin {
            kind: OriginKind::Federation.as_str().into(),
            primary: primary.to_string(),
        }
    }

    /// Anything but `federation` is local: objects written before origins existed have none.
    pub fn kind(&self) -> OriginKind {
        if self.kind == OriginKind::Federation.as_str() {
            OriginKind::Federation
        } else {
            OriginKind::Local
        }
    }
}

impl TkaSignin {
    /// `requested_at + validity_period`. `requested_at` is bumped by every login, so a re-login during or
    /// after cleanup is never killed by the previous deadline.
    pub fn valid_until(&self) -> Result<Timestamp, Error> {
        let invalid = |reason: String| Error::InvalidSpec {
            name: self.name_any(),
            reason,
        };
        let period =
            GoDuration::parse(&self.spec.validity_period).map_err(|e| invalid(e.to_string()))?;
        let requested = self
            .started()
            .ok_or_else(|| invalid("spec.requested_at is missing".into()))?;
        let period =
            jiff::SignedDuration::try_from(period.as_std()).map_err(|e| invalid(e.to_string()))?;
        requested
            .checked_add(period)
            .map_err(|e| invalid(e.to_string()))
    }

    /// The latest login (`spec.requested_at`; the creation time for objects written before it existed):
    /// the session's period counts from here.
    pub fn started(&self) -> Option<Timestamp> {
        self.spec
            .requested_at
            .as_ref()
            .map(|t| t.0)
            .or_else(|| self.meta().creation_timestamp.as_ref().map(|t| t.0))
    }

    /// The end as reported by the controller, or the estimate from the spec while it has not reported yet.
    pub fn until(&self) -> Option<Timestamp> {
        self.status
            .as_ref()
            .and_then(|s| s.valid_until.as_ref())
            .map(|t| t.0)
            .or_else(|| self.valid_until().ok())
    }

    /// Being deleted: its tokens are being revoked.
    pub fn is_ending(&self) -> bool {
        self.meta().deletion_timestamp.is_some()
    }

    /// Has the session passed its end? Judged from the spec, which the controller may not have acted on yet.
    pub fn expired(&self, now: Timestamp) -> bool {
        self.valid_until().is_ok_and(|u| u <= now)
    }

    /// Not being deleted and not past its end.
    pub fn is_live(&self, now: Timestamp) -> bool {
        !self.is_ending() && self.valid_until().is_ok_and(|until| until > now)
    }

    /// `metadata.generation`: bumped by every spec write (every login).
    pub fn generation(&self) -> i64 {
        self.meta().generation.unwrap_or_default()
    }

    /// The generation the controller last reported on (`-1` when never).
    pub fn observed_generation(&self) -> i64 {
        self.status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .unwrap_or(-1)
    }

    /// Work the controller still has to do: a spec it has not reported on, or a deletion.
    pub fn awaits_controller(&self) -> bool {
        self.is_ending() || self.observed_generation() < self.generation()
    }

    pub fn state(&self) -> SessionState {
        let current = self.observed_generation() >= self.generation();
        match self.ready_condition() {
            Some(c) if current && c.status == "True" => SessionState::Ready,
            Some(c) if current && c.status == "False" && c.reason != "Provisioning" => {
                SessionState::Failed {
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                }
            }
            _ => SessionState::Pending,
        }
    }

    /// The controller provisioned it (for some generation): it holds the user's binding.
    pub fn is_provisioned(&self) -> bool {
        self.status.as_ref().and_then(|s| s.provisioned) == Some(true)
    }

    /// Same role and the same namespaces: two such sessions of one user can share its ServiceAccount and
    /// binding; two that differ cannot.
    pub fn same_grant(&self, other: &TkaSignin) -> bool {
        self.spec.role == other.spec.role && self.spec.namespaces == other.spec.namespaces
    }

    pub fn is_ready(&self) -> bool {
        self.state() == SessionState::Ready
    }

    pub fn origin_kind(&self) -> OriginKind {
        self.spec
            .origin
            .as_ref()
            .map_or(OriginKind::Local, Origin::kind)
    }

    /// Created by a federation primary (members only).
    pub fn is_federated(&self) -> bool {
        self.origin_kind() == OriginKind::Federation
    }

    /// Deletes exactly this object (a UID precondition), so a new session of the same name is never hit.
    /// NotFound (already gone) and Conflict (replaced by a new object, reconciled on its own) are success.
    pub async fn delete_exactly(&self, api: &Api<TkaSignin>) -> Result<(), kube::Error> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: self.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&self.name_any(), &dp).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::{TkaSigninSpec, TkaSigninStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn signin(period: &str, requested: &str) -> TkaSignin {
        let mut s = TkaSignin::new(
            "s",
            TkaSigninSpec {
                username: "a@b".into(),
                role: "view".into(),
                validity_period: period.into(),
                requested_at: Some(Time(requested.parse().unwrap())),
                ..Default::default()
            },
        );
        s.metadata.generation = Some(2);
        s
    }

    fn ready(s: &mut TkaSignin, observed: i64, status: &str, reason: &str) {
        s.status = Some(TkaSigninStatus {
            observed_generation: Some(observed),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: status.into(),
                reason: reason.into(),
                message: "m".into(),
                observed_generation: Some(observed),
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
            }],
            ..Default::default()
        });
    }

    #[test]
    fn end_liveness_and_expiry_come_from_the_spec() {
        let s = signin("1h0m0s", "2026-11-24T10:00:00Z");
        let until: Timestamp = "2026-11-24T11:00:00Z".parse().unwrap();
        assert_eq!(s.valid_until().unwrap(), until);
        assert_eq!(s.until(), Some(until));
        assert!(s.is_live("2026-11-24T10:59:59Z".parse().unwrap()));
        assert!(!s.is_live(until));
        assert!(s.expired(until));
        assert!(
            signin("nonsense", "2026-11-24T10:00:00Z")
                .valid_until()
                .is_err()
        );
    }

    #[test]
    fn state_follows_the_current_generation_only() {
        let mut s = signin("1h", "2026-11-24T10:00:00Z");
        assert_eq!(s.state(), SessionState::Pending);
        assert!(s.awaits_controller());
        ready(&mut s, 1, "True", "Provisioned");
        assert_eq!(s.state(), SessionState::Pending, "a report on generation 1");
        ready(&mut s, 2, "True", "Provisioned");
        assert!(s.is_ready() && !s.awaits_controller());
        ready(&mut s, 2, "False", "Provisioning");
        assert_eq!(s.state(), SessionState::Pending);
        ready(&mut s, 2, "False", "RoleNotFound");
        assert!(
            matches!(s.state(), SessionState::Failed { reason, .. } if reason == "RoleNotFound")
        );
    }

    #[test]
    fn origins() {
        let mut s = signin("1h", "2026-11-24T10:00:00Z");
        assert_eq!(s.origin_kind(), OriginKind::Local);
        s.spec.origin = Some(Origin::federation("tka.ts.net"));
        assert!(s.is_federated());
        s.spec.origin = Some(Origin::local());
        assert!(!s.is_federated());
    }
}
