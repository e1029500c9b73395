//! One reconcile of one TkaSignin: expire, provision, write status, requeue at `valid_until`. Every step is
//! idempotent, so a crash or restart anywhere just repeats it. The shape is fetch → build (pure, in
//! [`super::objects`] and [`super::status`]) → apply ([`super::provision`], [`super::cleanup`]) → status.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::cleanup::{cleanup, remove_legacy};
use super::context::{Context, FIELD_MANAGER, Holder};
use super::crd::{FINALIZER, TkaSignin};
use super::error::{At, Error, Step, is_status};
use super::objects::Session;
use super::provision::provision;
use super::status::{self, Provisioned, Transition};

/// Entry point called by the kube-runtime Controller.
pub async fn reconcile(signin: Arc<TkaSignin>, ctx: Arc<Context>) -> Result<Action, Error> {
    use tracing::Instrument;
    let span = tracing::info_span!("reconcile", tka.session = %signin.name_any(), tka.action = tracing::field::Empty,
        tka.result = tracing::field::Empty);
    crate::telemetry::logging::tag_log_ids(&span, &opentelemetry::Context::new());
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
        if signin.is_ending() {
            ("cleanup", finish(&signin, &ctx).await)
        } else {
            // kube-runtime's helper adds the finalizer before the first apply; the session is not being
            // deleted, so its cleanup branch is not taken (ending sessions go to `finish` above).
            let r = finalizer(&ctx.signins(), FINALIZER, signin, |event| async {
                match event {
                    Event::Apply(s) => apply(&s, &ctx).await,
                    Event::Cleanup(s) => finish(&s, &ctx).await,
                }
            })
            .await
            .map_err(|e| Error::Finalizer(Box::new(e)));
            ("provision", r)
        }
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

/// A session being deleted: clean up, then release the finalizer. The object is the controller's cached
/// copy, which may be stale: the object may be gone already and a re-login may have created a new one of the
/// same name. kube-runtime's finalizer helper removes the finalizer by name, so on a stale copy it would take
/// the *new* session's finalizer; here the removal is a JSON patch that first tests the UID, and fails without
/// effect on any other object (that object's own reconcile follows). This saves a GET per ending session.
///
/// Cleanup itself is safe on a stale copy: the Secret it deletes is named after this object's UID, and a new
/// session of the same name has not been provisioned yet (the cache holds one object per name, so it would
/// show the new one), so the user objects it may remove are created again by that session's reconcile.
async fn finish(signin: &TkaSignin, ctx: &Context) -> Result<Action, Error> {
    let Some(release) = finalizer_release(signin) else {
        return Ok(Action::await_change());
    };
    cleanup(signin, ctx).await?;
    match ctx
        .signins()
        .patch(
            &signin.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(release),
        )
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        // Gone, or no longer this object with the finalizer where it was: nothing of ours to release.
        Err(e) if is_status(&e, 404) || is_status(&e, 422) => Ok(Action::await_change()),
        Err(e) => Err(e).at(Step::ReleaseFinalizer),
    }
}

/// Error policy: log once, count by category, back off.
pub fn error_policy(signin: Arc<TkaSignin>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&signin.name_any(), error.is_transient());
    ctx.metrics.requeues.with_label_values(&["error"]).inc();
    tracing::warn!(signin = %signin.name_any(), category = error.category(), step = error.step().map(|s| s.to_string()),
        error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply(signin: &TkaSignin, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let until = signin.valid_until()?;
    // A session recorded under an earlier (40-bit) subject key: logout and `replace` look sessions up by the
    // current key and would not find it, so it is ended now; its cleanup removes the objects of the old key.
    let old_key = !crate::model::naming::is_current_subject_key(
        &signin.spec.subject_key,
        &signin.spec.username,
    );
    if old_key {
        end(signin, ctx, Ending::Superseded).await?;
        return Ok(Action::await_change());
    }
    if now >= until {
        end(signin, ctx, Ending::Expired).await?;
        return Ok(Action::await_change());
    }
    let session = Session::from_signin(signin, &ctx.namespace);
    let outcome = match held_elsewhere(signin, ctx) {
        Some(other) => role_conflict(&other),
        None => provision(&session, signin, ctx).await?,
    };
    if matches!(outcome, Provisioned::Ready { .. }) {
        ctx.hold(signin);
    }
    write_status(signin, ctx, &outcome, until).await?;
    // Always requeue at the deadline, also after renewals and restarts; jitter spreads a burst of sessions
    // that were created together.
    let left = until
        .duration_since(now)
        .unsigned_abs()
        .max(Duration::from_secs(1));
    let jitter = Duration::from_millis(rand::random::<u64>() % 1000);
    Ok(Action::requeue(
        outcome.retry().map_or(left, |r| r.min(left)) + jitter,
    ))
}

/// One role per user: the user's ServiceAccount and binding are shared by all of the user's sessions, so a
/// session whose role or scope differs from the one that holds them must not take them over (the two would
/// recreate the binding alternately forever, and one device's tokens would carry the other's role). Decided
/// under the per-user lock from the controller's own record of the holder: two concurrent logins the API let
/// through both end here, and the first one provisioned wins.
fn held_elsewhere(signin: &TkaSignin, ctx: &Context) -> Option<Holder> {
    let holder = ctx.holder(&signin.spec.subject_key)?;
    let other = holder.uid != signin.uid().unwrap_or_default();
    let differs = holder.role != signin.spec.role || holder.namespaces != signin.spec.namespaces;
    (other && differs).then_some(holder)
}

fn role_conflict(other: &Holder) -> Provisioned {
    Provisioned::NotReady {
        reason: "RoleConflict",
        message: format!(
            "another session of this user holds role {} on {}; log out there, or log in with --replace",
            other.role, other.node
        ),
        retry: None,
    }
}

/// Why the controller ends a session itself.
enum Ending {
    /// It reached `valid_until`.
    Expired,
    /// It was written by an earlier tka version under a subject key that is no longer current.
    Superseded,
}

/// Ends a session: delete it (the finalizer then revokes).
async fn end(signin: &TkaSignin, ctx: &Context, why: Ending) -> Result<(), Error> {
    let (event, reason, label, message) = match why {
        Ending::Expired => ("expired", "Expired", "expiry", "session reached its end"),
        Ending::Superseded => (
            "superseded",
            "Superseded",
            "legacy",
            "session of an earlier tka version ended; sign in again",
        ),
    };
    tracing::info!(audit = true, event, user = %signin.spec.username, session = %signin.name_any(), "session ended: {message}");
    ctx.event(signin, false, reason, message.into());
    ctx.metrics.revocations.with_label_values(&[label]).inc();
    signin
        .delete_exactly(&ctx.signins())
        .await
        .at(Step::ExpireSignin)
}

/// The JSON patch that removes tka's finalizer from exactly this object: it tests the UID and the finalizer's
/// position first, so applied to any other object of the same name it fails (422) and changes nothing.
/// `None` when the object does not carry the finalizer.
pub fn finalizer_release(signin: &TkaSignin) -> Option<json_patch::Patch> {
    let i = signin.finalizers().iter().position(|f| f == FINALIZER)?;
    let patch = json!([
        { "op": "test", "path": "/metadata/uid", "value": signin.uid() },
        { "op": "test", "path": format!("/metadata/finalizers/{i}"), "value": FINALIZER },
        { "op": "remove", "path": format!("/metadata/finalizers/{i}") },
    ]);
    Some(serde_json::from_value(patch).expect("a valid JSON patch"))
}

/// Writes the computed status when it changed, then tells people (events) and metrics what happened.
async fn write_status(
    signin: &TkaSignin,
    ctx: &Context,
    outcome: &Provisioned,
    until: Timestamp,
) -> Result<(), Error> {
    let now = Timestamp::now();
    let status = status::desired(signin, &ctx.namespace, outcome, until, now);
    let transition = status::transition(signin, &status, outcome);
    if transition == Transition::Unchanged {
        return Ok(());
    }
    let patch = json!({ "apiVersion": "tka.specht-labs.de/v1alpha1", "kind": "TkaSignin", "status": status });
    ctx.signins()
        .patch_status(
            &signin.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .at(Step::WriteStatus)?;
    match transition {
        Transition::Provisioned => {
            ctx.metrics
                .user_signins
                .with_label_values(&[&signin.spec.role])
                .inc();
            if let Some(created) = signin.meta().creation_timestamp.as_ref() {
                ctx.metrics
                    .session_provision
                    .observe(now.duration_since(created.0).as_secs_f64().max(0.0));
            }
            let note = format!("session ready with role {}", signin.spec.role);
            ctx.event(signin, false, "Provisioned", note);
        }
        Transition::Extended => {
            let note = format!(
                "session extended until {}",
                crate::model::wire::rfc3339(until)
            );
            ctx.event(signin, false, "Extended", note);
        }
        Transition::Failed { reason, message } => {
            let reason = if reason == "RoleNotGrantable" {
                "BindFailed"
            } else {
                reason
            };
            ctx.event(signin, true, reason, message)
        }
        Transition::Updated | Transition::Unchanged => {}
    }
    Ok(())
}
