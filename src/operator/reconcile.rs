//! One reconcile of one TkaSignin (spec: kubernetes.md §4): expire, provision, write status, requeue at
//! `valid_until`. Every step is idempotent, so a crash or restart anywhere just repeats it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::cleanup::{cleanup, remove_legacy};
use super::crd::{FINALIZER, SecretRef, TkaSignin, TkaSigninStatus};
use super::error::{Error, is_status};
use super::objects::{self, Session};
use super::provision::{Provisioned, provision};
use crate::model::duration::GoDuration;
use crate::telemetry::Metrics;

pub const FIELD_MANAGER: &str = "tka-controller";

/// What the reconciler needs; shared by all reconciles.
pub struct Context {
    pub client: Client,
    /// `operator.namespace`: TkaSignins, SAs and Secrets live here; also the `instance` label.
    pub namespace: String,
    pub metrics: Arc<Metrics>,
    /// Serializes reconciles of the same user (they share the SA and bindings).
    user_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Consecutive failures per object, for the 1 s → 5 min backoff.
    failures: Mutex<HashMap<String, u32>>,
    recorder: Recorder,
    /// Session Secret created per TkaSignin UID. A reconcile may run on a cached object that does not yet
    /// show the status written a moment ago; this keeps it from creating a second Secret.
    pub(super) created_secrets: Mutex<HashMap<String, SecretRef>>,
}

impl Context {
    pub fn new(client: Client, namespace: &str, metrics: Arc<Metrics>) -> Context {
        let client_for_events = client.clone();
        Context {
            client,
            namespace: namespace.to_string(),
            metrics,
            user_locks: Mutex::default(),
            failures: Mutex::default(),
            created_secrets: Mutex::default(),
            recorder: Recorder::new(
                client_for_events,
                Reporter {
                    controller: "tka-server".into(),
                    instance: std::env::var("POD_NAME").ok(),
                },
            ),
        }
    }

    /// Publishes a Kubernetes Event on the TkaSignin in the background: events are for people running
    /// `kubectl describe`, never a reason to slow down or fail a reconcile.
    pub(super) fn event(&self, signin: &TkaSignin, warning: bool, reason: &str, note: String) {
        let recorder = self.recorder.clone();
        let reference = signin.object_ref(&());
        let event = KubeEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "publishing an event failed");
            }
        });
    }

    fn user_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.user_locks.lock().expect("lock poisoned");
        // Forget locks nobody holds, so the map does not grow with every user ever seen.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(key.to_string()).or_default().clone()
    }

    /// Backoff for the next retry of `name` after an error: 1 s, 2 s, 4 s … capped at 5 min.
    pub fn backoff(&self, name: &str) -> Duration {
        let mut f = self.failures.lock().expect("lock poisoned");
        let n = f.entry(name.to_string()).or_insert(0);
        *n = (*n + 1).min(20);
        Duration::from_secs(1u64 << (*n - 1).min(9)).min(Duration::from_secs(300))
    }

    fn succeeded(&self, name: &str) {
        self.failures.lock().expect("lock poisoned").remove(name);
    }

    pub(super) fn signins(&self) -> Api<TkaSignin> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

/// Entry point called by the kube-runtime Controller.
pub async fn reconcile(signin: Arc<TkaSignin>, ctx: Arc<Context>) -> Result<Action, Error> {
    use tracing::Instrument;
    let span = tracing::info_span!("reconcile", tka.session = %signin.name_any(), tka.action = tracing::field::Empty,
        tka.result = tracing::field::Empty);
    crate::telemetry::otel::tag_log_ids(&span, &opentelemetry::Context::new());
    let result = reconcile_observed(signin, ctx.clone())
        .instrument(span.clone())
        .await;
    span.record(
        "tka.result",
        match &result {
            Ok(_) => "success",
            Err(e) => e.category(),
        },
    );
    if matches!(&result, Ok(action) if *action != Action::await_change()) {
        ctx.metrics.requeues.with_label_values(&["scheduled"]).inc();
    }
    result
}

async fn reconcile_observed(signin: Arc<TkaSignin>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let name = signin.name_any();
    let (action, result) = if signin.spec.subject_key.is_empty() {
        ("legacy", remove_legacy(&signin, &ctx).await)
    } else {
        let lock = ctx.user_lock(&signin.spec.subject_key);
        let _guard = lock.lock().await;
        let action = if signin.meta().deletion_timestamp.is_some() {
            "cleanup"
        } else {
            "provision"
        };
        // A cached object being deleted may be stale: it may already be gone and a re-login may have created
        // a new object of the same name. Cleaning up then would remove the *new* session's SA and finalizer
        // (kube's finalizer helper patches by name), so deletions are confirmed against the apiserver.
        let signin = if signin.meta().deletion_timestamp.is_some() {
            match ctx.signins().get_opt(&name).await {
                Ok(Some(fresh)) if fresh.uid() == signin.uid() => Arc::new(fresh),
                Ok(_) => return Ok(Action::await_change()),
                Err(e) => return Err(e.into()),
            }
        } else {
            signin
        };
        let r = finalizer(&ctx.signins(), FINALIZER, signin, |event| async {
            match event {
                Event::Apply(s) => apply(&s, &ctx).await,
                Event::Cleanup(s) => cleanup(&s, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)));
        (action, r)
    };
    tracing::Span::current().record("tka.action", action);
    ctx.metrics.observe_reconcile(
        action,
        result.as_ref().err().map(Error::category),
        started.elapsed(),
    );
    if result.is_ok() {
        ctx.succeeded(&name);
    }
    result
}

/// Error policy: log once, count by category, back off.
pub fn error_policy(signin: Arc<TkaSignin>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&signin.name_any());
    ctx.metrics.requeues.with_label_values(&["error"]).inc();
    tracing::warn!(signin = %signin.name_any(), category = error.category(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// `requested_at + validity_period`. `requested_at` is bumped by every login, so a re-login during or
/// after cleanup is never killed by the previous deadline (upstream bug B4).
pub fn valid_until(signin: &TkaSignin) -> Result<Timestamp, Error> {
    let invalid = |reason: String| Error::InvalidSpec {
        name: signin.name_any(),
        reason,
    };
    let period =
        GoDuration::parse(&signin.spec.validity_period).map_err(|e| invalid(e.to_string()))?;
    let requested = signin
        .spec
        .requested_at
        .as_ref()
        .map(|t| t.0)
        .or_else(|| signin.meta().creation_timestamp.as_ref().map(|t| t.0))
        .ok_or_else(|| invalid("spec.requested_at is missing".into()))?;
    let period =
        jiff::SignedDuration::try_from(period.as_std()).map_err(|e| invalid(e.to_string()))?;
    requested
        .checked_add(period)
        .map_err(|e| invalid(e.to_string()))
}

/// Is this session alive: not being deleted and not past `valid_until`?
pub fn is_live(signin: &TkaSignin, now: Timestamp) -> bool {
    signin.meta().deletion_timestamp.is_none() && valid_until(signin).is_ok_and(|until| until > now)
}

async fn apply(signin: &TkaSignin, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let until = valid_until(signin)?;
    // A session recorded under an earlier (40-bit) subject key: logout and `replace` look sessions up by the
    // current key and would not find it, so it is ended now; its cleanup removes the objects of the old key.
    let old_key = !crate::model::naming::is_current_subject_key(
        &signin.spec.subject_key,
        &signin.spec.username,
    );
    if now >= until || old_key {
        let (event, reason, message) = if old_key {
            (
                "superseded",
                "legacy",
                "session of an earlier tka version ended; sign in again",
            )
        } else {
            ("expired", "expiry", "session reached its end")
        };
        tracing::info!(audit = true, event, user = %signin.spec.username, session = %signin.name_any(), "session ended: {message}");
        ctx.event(
            signin,
            false,
            if old_key { "Superseded" } else { "Expired" },
            message.into(),
        );
        ctx.metrics.revocations.with_label_values(&[reason]).inc();
        let uid = signin.uid();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        // NotFound: already gone. Conflict: a new object of the same name exists and is reconciled on its own.
        match ctx.signins().delete(&signin.name_any(), &dp).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::await_change());
    }

    let session = Session::from_signin(signin, &ctx.namespace);
    let outcome = provision(&session, signin, ctx).await?;
    write_status(signin, ctx, &outcome, until).await?;
    let retry = match &outcome {
        Provisioned::NotReady { retry: Some(r), .. } => Some(*r),
        _ => None,
    };
    // Always requeue at the deadline, also after renewals and restarts (upstream bug B1); jitter spreads a
    // burst of sessions that were created together.
    let left = until
        .duration_since(now)
        .unsigned_abs()
        .max(Duration::from_secs(1));
    let jitter = Duration::from_millis(rand::random::<u64>() % 1000);
    Ok(Action::requeue(
        retry.map_or(left, |r| r.min(left)) + jitter,
    ))
}

async fn write_status(
    signin: &TkaSignin,
    ctx: &Context,
    outcome: &Provisioned,
    until: Timestamp,
) -> Result<(), Error> {
    let previous = signin.status.clone().unwrap_or_default();
    let generation = signin.meta().generation;
    let now = Timestamp::now();
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
    let status = match outcome {
        Provisioned::Ready {
            secret,
            bindings,
            missing_namespaces,
        } => {
            let newly = previous.provisioned != Some(true);
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
            if newly {
                ctx.metrics
                    .user_signins
                    .with_label_values(&[&signin.spec.role])
                    .inc();
                if let Some(created) = signin.meta().creation_timestamp.as_ref() {
                    ctx.metrics
                        .session_provision
                        .observe(now.duration_since(created.0).as_secs_f64().max(0.0));
                }
            }
            TkaSigninStatus {
                provisioned: Some(true),
                signed_in: signin.spec.requested_at.clone(),
                valid_until: Some(Time(until)),
                service_account: Some(
                    objects::Session::from_signin(signin, &ctx.namespace).user_object_name(),
                ),
                session_secret: Some(secret.clone()),
                bindings: bindings.clone(),
                // Written only by the token notifier (an Update, not this Apply), so a stale cached value
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
    };
    let unchanged = signin.status.as_ref().is_some_and(|current| {
        TkaSigninStatus {
            token_expires_at: None,
            ..current.clone()
        } == status
    });
    if unchanged {
        return Ok(());
    }
    let patch = json!({ "apiVersion": "tka.specht-labs.de/v1alpha1", "kind": "TkaSignin", "status": status });
    ctx.signins()
        .patch_status(
            &signin.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    match outcome {
        Provisioned::Ready { .. } if previous.provisioned != Some(true) => ctx.event(
            signin,
            false,
            "Provisioned",
            format!("session ready with role {}", signin.spec.role),
        ),
        Provisioned::Ready { .. } if previous.observed_generation < generation => ctx.event(
            signin,
            false,
            "Extended",
            format!(
                "session extended until {}",
                crate::model::wire::rfc3339(until)
            ),
        ),
        Provisioned::NotReady {
            reason, message, ..
        } => {
            let reason = if *reason == "RoleNotGrantable" {
                "BindFailed"
            } else {
                reason
            };
            ctx.event(signin, true, reason, message.clone())
        }
        _ => {}
    }
    Ok(())
}
