//! One reconcile of one TkaSignin (spec: kubernetes.md §4): expire, provision, write status, requeue at
//! `valid_until`. Every step is idempotent, so a crash or restart anywhere just repeats it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::crd::{BindingRef, FINALIZER, SecretRef, TkaSignin, TkaSigninStatus};
use super::error::{Error, ignore_not_found, is_status};
use super::objects::{self, LOGIN_NAME, Session};
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
    created_secrets: Mutex<HashMap<String, SecretRef>>,
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
    fn event(&self, signin: &TkaSignin, warning: bool, reason: &str, note: String) {
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

    fn signins(&self) -> Api<TkaSignin> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

/// Entry point called by the kube-runtime Controller.
pub async fn reconcile(signin: Arc<TkaSignin>, ctx: Arc<Context>) -> Result<Action, Error> {
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

/// The outcome of provisioning: ready, or a definite reason why not (written as `Ready=False`).
enum Provisioned {
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

async fn apply(signin: &TkaSignin, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let until = valid_until(signin)?;
    if now >= until {
        tracing::info!(audit = true, event = "expired", user = %signin.spec.username, session = %signin.name_any(), "session expired");
        ctx.event(signin, false, "Expired", "session reached its end".into());
        ctx.metrics.revocations.with_label_values(&["expiry"]).inc();
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

async fn provision(s: &Session, signin: &TkaSignin, ctx: &Context) -> Result<Provisioned, Error> {
    let client = &ctx.client;
    // The role must exist and be grantable; the server may only `get` allow-listed roles, so 403 here
    // already tells us the role is outside the allow-list.
    match Api::<ClusterRole>::all(client.clone())
        .get_opt(&s.role)
        .await
    {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Ok(not_ready(
                "RoleNotFound",
                format!("ClusterRole {:?} does not exist", s.role),
                60,
            ));
        }
        Err(e) if is_status(&e, 403) => {
            return Ok(not_ready(
                "RoleNotGrantable",
                format!("this server may not grant ClusterRole {:?}", s.role),
                60,
            ));
        }
        Err(e) => return Err(e.into()),
    }

    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let sa_name = s.user_object_name();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &s.namespace);
    if let Some(existing) = sas.get_opt(&sa_name).await?
        && !owned_by_login(existing.annotations(), &s.login)
    {
        return Ok(collision(s));
    }
    sas.patch(&sa_name, &pp, &Patch::Apply(&s.service_account()))
        .await?;

    let secret = ensure_session_secret(s, signin, ctx).await?;

    let mut bindings = Vec::new();
    let mut missing = Vec::new();
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    if s.namespaces.is_empty() {
        match ensure_binding(&crbs, s, s.cluster_role_binding()).await? {
            BindingOutcome::Applied => bindings.push(binding_ref("ClusterRoleBinding", None, s)),
            BindingOutcome::Collision => return Ok(collision(s)),
            BindingOutcome::Forbidden => return Ok(not_grantable(s)),
            BindingOutcome::NamespaceMissing => unreachable!("cluster-scoped"),
        }
    } else {
        ignore_not_found(crbs.delete(&sa_name, &DeleteParams::default()).await)?;
        for ns in &s.namespaces {
            let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
            match ensure_binding(&rbs, s, s.role_binding(ns)).await? {
                BindingOutcome::Applied => bindings.push(binding_ref("RoleBinding", Some(ns), s)),
                BindingOutcome::Collision => return Ok(collision(s)),
                BindingOutcome::Forbidden => return Ok(not_grantable(s)),
                BindingOutcome::NamespaceMissing => missing.push(ns.clone()),
            }
        }
    }
    // RoleBindings recorded earlier that are no longer wanted (namespaces removed from the grant). The sweep
    // catches any that were never recorded.
    let previous = signin
        .status
        .as_ref()
        .map(|st| st.bindings.clone())
        .unwrap_or_default();
    for old in previous.iter().filter(|b| b.kind == "RoleBinding") {
        let ns = old.namespace.clone().unwrap_or_default();
        if !bindings
            .iter()
            .any(|b| b.namespace.as_deref() == Some(ns.as_str()))
        {
            let api: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
            ignore_not_found(api.delete(&old.name, &DeleteParams::default()).await)?;
        }
    }
    if !s.namespaces.is_empty() && bindings.is_empty() {
        return Ok(not_ready(
            "NamespacesNotFound",
            format!("none of the namespaces {:?} exist", s.namespaces),
            60,
        ));
    }
    Ok(Provisioned::Ready {
        secret,
        bindings,
        missing_namespaces: missing,
    })
}

fn not_ready(reason: &'static str, message: String, retry_secs: u64) -> Provisioned {
    Provisioned::NotReady {
        reason,
        message,
        retry: Some(Duration::from_secs(retry_secs)),
    }
}

fn collision(s: &Session) -> Provisioned {
    tracing::error!(user_key = %s.subject_key, "an object named for this subject key belongs to another login name; not adopting it");
    Provisioned::NotReady {
        reason: "SubjectKeyCollision",
        message: format!(
            "objects named {} belong to another user",
            s.user_object_name()
        ),
        retry: None,
    }
}

fn not_grantable(s: &Session) -> Provisioned {
    not_ready(
        "RoleNotGrantable",
        format!("this server may not bind ClusterRole {:?}", s.role),
        60,
    )
}

fn owned_by_login(annotations: &BTreeMap<String, String>, login: &str) -> bool {
    annotations.get(LOGIN_NAME).is_none_or(|l| l == login)
}

fn binding_ref(kind: &str, namespace: Option<&String>, s: &Session) -> BindingRef {
    BindingRef {
        kind: kind.into(),
        namespace: namespace.cloned(),
        name: s.user_object_name(),
        role: s.role.clone(),
    }
}

enum BindingOutcome {
    Applied,
    Collision,
    Forbidden,
    NamespaceMissing,
}

/// Applies a (Cluster)RoleBinding. `roleRef` is immutable, so a binding with another role is deleted and
/// recreated (upstream updated it in place and got stuck: bug B2).
async fn ensure_binding<K>(api: &Api<K>, s: &Session, desired: K) -> Result<BindingOutcome, Error>
where
    K: Resource
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + RoleRefOf,
{
    let name = s.user_object_name();
    match api.get_opt(&name).await {
        Ok(Some(existing)) => {
            if !owned_by_login(existing.annotations(), &s.login) {
                return Ok(BindingOutcome::Collision);
            }
            if existing.role_name() != s.role {
                ignore_not_found(api.delete(&name, &DeleteParams::default()).await)?;
            }
        }
        Ok(None) => {}
        Err(e) if is_status(&e, 403) => return Ok(BindingOutcome::Forbidden),
        Err(e) => return Err(e.into()),
    }
    match api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
    {
        Ok(_) => Ok(BindingOutcome::Applied),
        // RBAC escalation prevention: the server holds neither the role nor `bind` on it.
        Err(e) if is_status(&e, 403) => Ok(BindingOutcome::Forbidden),
        Err(e) if is_status(&e, 404) => Ok(BindingOutcome::NamespaceMissing),
        Err(e) => Err(e.into()),
    }
}

/// Both binding kinds expose their role the same way.
pub trait RoleRefOf {
    fn role_name(&self) -> &str;
}
impl RoleRefOf for ClusterRoleBinding {
    fn role_name(&self) -> &str {
        &self.role_ref.name
    }
}
impl RoleRefOf for RoleBinding {
    fn role_name(&self) -> &str {
        &self.role_ref.name
    }
}

/// Keeps this session's Secret, or creates one. Only the Secret recorded in status, still owned by *this*
/// TkaSignin object (same UID), is kept, so a new session after logout or expiry always gets a new Secret and
/// old tokens cannot revive. A GET by name, not a LIST: a consistent LIST waits for the apiserver's watch
/// cache and costs up to ~100 ms on the login path.
async fn ensure_session_secret(
    s: &Session,
    signin: &TkaSignin,
    ctx: &Context,
) -> Result<SecretRef, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &s.namespace);
    let remembered = ctx
        .created_secrets
        .lock()
        .expect("lock poisoned")
        .get(&s.signin_uid)
        .cloned();
    let recorded = signin
        .status
        .as_ref()
        .and_then(|st| st.session_secret.clone());
    for candidate in remembered.into_iter().chain(recorded) {
        if let Some(secret) = secrets.get_opt(&candidate.name).await? {
            let recorded = candidate;
            let owned = secret
                .owner_references()
                .iter()
                .any(|o| o.uid == s.signin_uid);
            if owned
                && secret.uid().as_deref() == Some(recorded.uid.as_str())
                && secret.meta().deletion_timestamp.is_none()
            {
                return Ok(recorded);
            }
        }
    }
    // Secrets of an earlier attempt whose status write failed hold no handed-out tokens (tokens are only
    // minted for the recorded Secret); cleanup removes every Secret labelled with the session.
    let created = secrets
        .create(&PostParams::default(), &s.session_secret())
        .await?;
    let r = SecretRef {
        name: created.name_any(),
        uid: created.uid().unwrap_or_default(),
    };
    ctx.created_secrets
        .lock()
        .expect("lock poisoned")
        .insert(s.signin_uid.clone(), r.clone());
    Ok(r)
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
                token_expires_at: previous.token_expires_at.clone(),
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
            token_expires_at: previous.token_expires_at.clone(),
            ..TkaSigninStatus::default()
        },
    };
    if signin.status.as_ref() == Some(&status) {
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

/// Under the finalizer: revoke (delete the session Secret), then remove the user's SA and bindings unless
/// another live session of the same user still needs them. NotFound counts as done everywhere.
async fn cleanup(signin: &TkaSignin, ctx: &Context) -> Result<Action, Error> {
    let s = Session::from_signin(signin, &ctx.namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    // Revoke first: the recorded Secret is deleted by name, without waiting for any LIST.
    if let Some(recorded) = signin
        .status
        .as_ref()
        .and_then(|st| st.session_secret.as_ref())
    {
        ignore_not_found(
            secrets
                .delete(&recorded.name, &DeleteParams::default())
                .await,
        )?;
    }
    tracing::info!(audit = true, event = "revoked", user = %s.login, node = %s.node, role = %s.role, session = %s.signin_name, "session revoked");
    ctx.event(
        signin,
        false,
        "Revoked",
        "session ended; its tokens are revoked".into(),
    );
    let lp = ListParams::default().labels(&format!("{}={}", objects::SESSION, s.signin_name));
    // Only this object's Secrets: a new session of the same name (a re-login) has its own owner UID.
    for secret in secrets.list(&lp).await? {
        if secret
            .owner_references()
            .iter()
            .any(|o| o.uid == s.signin_uid)
        {
            ignore_not_found(
                secrets
                    .delete(&secret.name_any(), &DeleteParams::default())
                    .await,
            )?;
        }
    }
    ctx.created_secrets
        .lock()
        .expect("lock poisoned")
        .remove(&s.signin_uid);

    let now = Timestamp::now();
    // A fresh list, not the cache: a session of this user created a moment ago must keep its SA (its
    // tokens are bound to the SA's UID). This runs after revocation, so it costs no revocation latency.
    let lp = ListParams::default().labels(&format!("{}={}", objects::USER_KEY, s.subject_key));
    let still_used = ctx
        .signins()
        .list(&lp)
        .await?
        .items
        .iter()
        .any(|o| o.name_any() != s.signin_name && is_live(o, now));
    if !still_used {
        delete_user_objects(&ctx.client, &ctx.namespace, &s.subject_key).await?;
    }
    Ok(Action::await_change())
}

/// Deletes a user's SA and every binding labelled with the user's key.
pub async fn delete_user_objects(
    client: &Client,
    namespace: &str,
    subject_key: &str,
) -> Result<(), Error> {
    let name = crate::model::naming::user_object_name(subject_key);
    let dp = DeleteParams::default();
    ignore_not_found(
        Api::<ClusterRoleBinding>::all(client.clone())
            .delete(&name, &dp)
            .await,
    )?;
    let lp = ListParams::default().labels(&format!(
        "{},{}={}",
        objects::managed_selector(namespace),
        objects::USER_KEY,
        subject_key
    ));
    for rb in Api::<RoleBinding>::all(client.clone()).list(&lp).await? {
        let api: Api<RoleBinding> =
            Api::namespaced(client.clone(), &rb.namespace().unwrap_or_default());
        ignore_not_found(api.delete(&rb.name_any(), &dp).await)?;
    }
    ignore_not_found(
        Api::<ServiceAccount>::namespaced(client.clone(), namespace)
            .delete(&name, &dp)
            .await,
    )?;
    Ok(())
}

/// An object written by upstream TKA (no `subject_key`): remove its `tka-user-<username>` SA and
/// `tka-user-<username>-binding`, then the object itself. It is never updated: it would not pass the new
/// schema's validation, and its user simply logs in again.
async fn remove_legacy(signin: &TkaSignin, ctx: &Context) -> Result<Action, Error> {
    let user = &signin.spec.username;
    tracing::warn!(signin = %signin.name_any(), "removing a TkaSignin written by upstream TKA; its user must log in again");
    let dp = DeleteParams::default();
    if crate::model::naming::is_dns1123_label(&format!("tka-user-{user}")) {
        ignore_not_found(
            Api::<ClusterRoleBinding>::all(ctx.client.clone())
                .delete(&format!("tka-user-{user}-binding"), &dp)
                .await,
        )?;
        ignore_not_found(
            Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ctx.namespace)
                .delete(&format!("tka-user-{user}"), &dp)
                .await,
        )?;
    }
    if !signin.finalizers().is_empty() {
        let patch = json!({ "metadata": { "finalizers": null } });
        ignore_not_found(
            ctx.signins()
                .patch(
                    &signin.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await,
        )?;
    }
    ignore_not_found(ctx.signins().delete(&signin.name_any(), &dp).await)?;
    ctx.metrics.revocations.with_label_values(&["legacy"]).inc();
    Ok(Action::await_change())
}
