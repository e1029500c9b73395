//! The status a reconcile reports, computed without I/O from the object, the provisioning outcome and the
//! clock; and what changed (the transition), from which the reconcile derives events and metrics.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;

use super::crd::{BindingRef, SecretRef, TkaSignin, TkaSigninStatus};
use super::objects::Session;

/// The outcome of provisioning: ready, or a definite reason why not (written as `Ready=False`).
#[derive(Debug, Clone, PartialEq)]
pub enum Provisioned {
    Ready {
        secret: SecretRef,
        bindings: Vec<BindingRef>,
        missing_namespaces: Vec<String>,
    },
    NotReady {
        reason: &'static str,
        message: String,
        retry: Option<Duration>,
    },
}

impl Provisioned {
    pub fn not_ready(reason: &'static str, message: String, retry_secs: u64) -> Provisioned {
        Provisioned::NotReady {
            reason,
            message,
            retry: Some(Duration::from_secs(retry_secs)),
        }
    }

    /// When a not-ready session should be looked at again.
    pub fn retry(&self) -> Option<Duration> {
        match self {
            Provisioned::NotReady { retry, .. } => *retry,
            Provisioned::Ready { .. } => None,
        }
    }
}

/// What a status write means for people and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Nothing to write.
    Unchanged,
    /// Ready for the first time.
    Provisioned,
    /// Ready again after a new login (a newer generation).
    Extended,
    /// Rewritten without news (e.g. a Degraded condition changed).
    Updated,
    /// `Ready=False` with this reason.
    Failed {
        reason: &'static str,
        message: String,
    },
}

/// The status for `outcome`, keeping each condition's transition time while its status stays the same.
pub fn desired(
    signin: &TkaSignin,
    namespace: &str,
    outcome: &Provisioned,
    until: Timestamp,
    now: Timestamp,
) -> TkaSigninStatus {
    let previous = signin.status.clone().unwrap_or_default();
    let generation = signin.meta().generation;
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" }.to_string();
        let keep_time = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone());
        Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: keep_time.unwrap_or(Time(now)),
        }
    };
    match outcome {
        Provisioned::Ready {
            secret,
            bindings,
            missing_namespaces,
        } => {
            let mut conditions = vec![condition(
                "Ready",
                true,
                "Provisioned",
                "session is ready".into(),
            )];
            if !missing_namespaces.is_empty() {
                conditions.push(condition(
                    "Degraded",
                    true,
                    "NamespacesNotFound",
                    format!("namespaces not found: {}", missing_namespaces.join(", ")),
                ));
            }
            TkaSigninStatus {
                provisioned: Some(true),
                signed_in: signin.spec.requested_at.clone(),
                valid_until: Some(Time(until)),
                service_account: Some(Session::from_signin(signin, namespace).user_object_name()),
                session_secret: Some(secret.clone()),
                bindings: bindings.clone(),
                // Written only by the expiry recorder (an Update, not this Apply), so a stale cached value
                // can never overwrite a newer expiry.
                token_expires_at: None,
                observed_generation: generation,
                conditions,
            }
        }
        Provisioned::NotReady {
            reason, message, ..
        } => TkaSigninStatus {
            provisioned: Some(false),
            valid_until: Some(Time(until)),
            observed_generation: generation,
            conditions: vec![condition("Ready", false, reason, message.clone())],
            token_expires_at: None,
            ..TkaSigninStatus::default()
        },
    }
}

/// What writing `status` over the object's current status means.
pub fn transition(
    signin: &TkaSignin,
    status: &TkaSigninStatus,
    outcome: &Provisioned,
) -> Transition {
    let current = signin.status.clone().unwrap_or_default();
    let unchanged = signin.status.is_some()
        && TkaSigninStatus {
            token_expires_at: None,
            ..current.clone()
        } == *status;
    if unchanged {
        return Transition::Unchanged;
    }
    match outcome {
        Provisioned::Ready { .. } if current.provisioned != Some(true) => Transition::Provisioned,
        Provisioned::Ready { .. } if current.observed_generation < status.observed_generation => {
            Transition::Extended
        }
        Provisioned::Ready { .. } => Transition::Updated,
        Provisioned::NotReady {
            reason, message, ..
        } => Transition::Failed {
            reason,
            message: message.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::TkaSigninSpec;

    fn signin() -> TkaSignin {
        let mut s = TkaSignin::new(
            "s",
            TkaSigninSpec {
                username: "a@b".into(),
                role: "view".into(),
                validity_period: "1h0m0s".into(),
                subject_key: "a-b-1234".into(),
                ..Default::default()
            },
        );
        s.metadata.generation = Some(1);
        s
    }

    fn ready() -> Provisioned {
        Provisioned::Ready {
            secret: SecretRef {
                name: "x".into(),
                uid: "u".into(),
            },
            bindings: vec![],
            missing_namespaces: vec![],
        }
    }

    #[test]
    fn first_ready_then_unchanged_then_extended() {
        let now: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let until: Timestamp = "2026-11-24T11:00:00Z".parse().unwrap();
        let mut s = signin();
        let st = desired(&s, "ns", &ready(), until, now);
        assert_eq!(st.service_account.as_deref(), Some("tka-user-a-b-1234"));
        assert_eq!(transition(&s, &st, &ready()), Transition::Provisioned);
        s.status = Some(st);
        let later: Timestamp = "2026-11-24T10:30:00Z".parse().unwrap();
        let again = desired(&s, "ns", &ready(), until, later);
        assert_eq!(
            again.conditions[0].last_transition_time.0, now,
            "the transition time stays while Ready stays True"
        );
        assert_eq!(transition(&s, &again, &ready()), Transition::Unchanged);
        s.metadata.generation = Some(2);
        let renewed = desired(&s, "ns", &ready(), until, later);
        assert_eq!(transition(&s, &renewed, &ready()), Transition::Extended);
    }

    #[test]
    fn not_ready_is_a_failed_transition() {
        let now: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let s = signin();
        let out = Provisioned::not_ready("RoleNotFound", "no role".into(), 60);
        let st = desired(&s, "ns", &out, now, now);
        assert_eq!(st.provisioned, Some(false));
        assert_eq!(st.conditions[0].reason, "RoleNotFound");
        assert!(matches!(
            transition(&s, &st, &out),
            Transition::Failed {
                reason: "RoleNotFound",
                ..
            }
        ));
    }
}
