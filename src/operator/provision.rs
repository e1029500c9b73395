//! Provisioning one session, idempotently: the role must exist, then the user's ServiceAccount, the session
//! Secret and the bindings are made as desired ([`super::ensure`]: created for a new session, otherwise read
//! and written only where they differ). Pure object builders are in [`super::objects`]; this is the apply
//! step.

use std::ops::ControlFlow::{self, Break, Continue};

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Resource, ResourceExt};

use super::context::Context;
use super::crd::{BindingRef, SecretRef, TkaSignin};
use super::ensure::{Ensured, Mode, ensure};
use super::error::{At, Error, Step, ignore_not_found, is_status};
use super::objects::Session;
use super::status::Provisioned;

/// Applies everything a session needs, in order; stops at the first definite reason why it cannot be ready.
pub(super) async fn provision(
    s: &Session,
    signin: &TkaSignin,
    ctx: &Context,
) -> Result<Provisioned, Error> {
    // The API refuses such grants; this holds whoever wrote the TkaSignin.
    if s.namespaces.contains(&s.namespace) {
        return Ok(Provisioned::NotReady {
            reason: "NamespaceProtected",
            message: format!(
                "namespace {:?} is this tka server's own; no session may be bound there",
                s.namespace
            ),
            retry: None,
        });
    }
    if let Break(not_ready) = check_role(s, ctx).await? {
        return Ok(not_ready);
    }
    let mode = Mode::for_session(signin.is_provisioned());
    if let Break(not_ready) = apply_service_account(s, ctx, mode).await? {
        return Ok(not_ready);
    }
    let secret = ensure_session_secret(s, signin, ctx).await?;
    let (bindings, missing) = match apply_bindings(s, ctx, mode).await? {
        Continue(applied) => applied,
        Break(not_ready) => return Ok(not_ready),
    };
    remove_unwanted_role_bindings(signin, &bindings, ctx).await?;
    if !s.namespaces.is_empty() && bindings.is_empty() {
        return Ok(Provisioned::not_ready(
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

/// How long a ClusterRole seen to exist is not looked up again. A role deleted meanwhile only makes a binding
/// to nothing, which grants nothing; whether the server may bind it the apiserver decides at every binding
/// write (RBAC escalation prevention).
const ROLE_SEEN_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// The role must exist and be grantable; the server may only `get` allow-listed roles, so 403 here already
/// tells us the role is outside the allow-list.
async fn check_role(s: &Session, ctx: &Context) -> Result<ControlFlow<Provisioned>, Error> {
    if ctx.role_seen_within(&s.role, ROLE_SEEN_FOR) {
        return Ok(Continue(()));
    }
    match Api::<ClusterRole>::all(ctx.client.clone())
        .get_opt(&s.role)
        .await
    {
        Ok(Some(_)) => {
            ctx.role_seen(&s.role);
            Ok(Continue(()))
        }
        Ok(None) => Ok(Break(Provisioned::not_ready(
            "RoleNotFound",
            format!("ClusterRole {:?} does not exist", s.role),
            60,
        ))),
        Err(e) if is_status(&e, 403) => Ok(Break(Provisioned::not_ready(
            "RoleNotGrantable",
            format!("this server may not grant ClusterRole {:?}", s.role),
            60,
        ))),
        Err(e) => Err(e).at(Step::GetRole),
    }
}

/// The user's ServiceAccount; one named for this subject key but owned by another login is never adopted.
async fn apply_service_account(
    s: &Session,
    ctx: &Context,
    mode: Mode,
) -> Result<ControlFlow<Provisioned>, Error> {
    let sas: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &s.namespace);
    match ensure(&sas, s, s.service_account(), mode)
        .await
        .at(Step::ApplyServiceAccount)?
    {
        Ensured::Done => Ok(Continue(())),
        Ensured::Collision => Ok(Break(collision(s))),
    }
}

/// One ClusterRoleBinding, or a RoleBinding per namespace of the grant (the ClusterRoleBinding of an
/// earlier cluster-wide session is removed). Returns the bindings applied and the namespaces missing.
async fn apply_bindings(
    s: &Session,
    ctx: &Context,
    mode: Mode,
) -> Result<ControlFlow<Provisioned, (Vec<BindingRef>, Vec<String>)>, Error> {
    let client = &ctx.client;
    let mut bindings = Vec::new();
    let mut missing = Vec::new();
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    if s.namespaces.is_empty() {
        match ensure_binding(&crbs, s, s.cluster_role_binding(), mode).await? {
            BindingOutcome::Applied => bindings.push(binding_ref("ClusterRoleBinding", None, s)),
            BindingOutcome::Collision => return Ok(Break(collision(s))),
            BindingOutcome::Forbidden => return Ok(Break(not_grantable(s))),
            BindingOutcome::NamespaceMissing => unreachable!("cluster-scoped"),
        }
        return Ok(Continue((bindings, missing)));
    }
    ignore_not_found(
        crbs.delete(&s.user_object_name(), &DeleteParams::default())
            .await,
    )
    .at(Step::DeleteBinding)?;
    for ns in &s.namespaces {
        let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
        match ensure_binding(&rbs, s, s.role_binding(ns), mode).await? {
            BindingOutcome::Applied => bindings.push(binding_ref("RoleBinding", Some(ns), s)),
            BindingOutcome::Collision => return Ok(Break(collision(s))),
            BindingOutcome::Forbidden => return Ok(Break(not_grantable(s))),
            BindingOutcome::NamespaceMissing => missing.push(ns.clone()),
        }
    }
    Ok(Continue((bindings, missing)))
}

/// RoleBindings recorded earlier that are no longer wanted (namespaces removed from the grant). The sweep
/// catches any that were never recorded.
async fn remove_unwanted_role_bindings(
    signin: &TkaSignin,
    wanted: &[BindingRef],
    ctx: &Context,
) -> Result<(), Error> {
    let previous = signin
        .status
        .as_ref()
        .map(|st| st.bindings.clone())
        .unwrap_or_default();
    for old in previous.iter().filter(|b| b.kind == "RoleBinding") {
        let ns = old.namespace.clone().unwrap_or_default();
        if !wanted
            .iter()
            .any(|b| b.namespace.as_deref() == Some(ns.as_str()))
        {
            let api: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), &ns);
            ignore_not_found(api.delete(&old.name, &DeleteParams::default()).await)
                .at(Step::DeleteBinding)?;
        }
    }
    Ok(())
}

pub(super) fn collision(s: &Session) -> Provisioned {
    tracing::error!(user_key = %s.subject_key, "an object named for this subject key belongs to another login name or tka instance; not adopting it");
    Provisioned::NotReady {
        reason: "SubjectKeyCollision",
        message: format!(
            "objects named {} or {} belong to another user or tka instance",
            s.user_object_name(),
            s.binding_name()
        ),
        retry: None,
    }
}

pub(super) fn not_grantable(s: &Session) -> Provisioned {
    Provisioned::not_ready(
        "RoleNotGrantable",
        format!("this server may not bind ClusterRole {:?}", s.role),
        60,
    )
}

pub(super) fn binding_ref(kind: &str, namespace: Option<&String>, s: &Session) -> BindingRef {
    BindingRef {
        kind: kind.into(),
        namespace: namespace.cloned(),
        name: s.binding_name(),
        role: s.role.clone(),
    }
}

pub(super) enum BindingOutcome {
    Applied,
    Collision,
    Forbidden,
    NamespaceMissing,
}

/// A (Cluster)RoleBinding made as desired, with the apiserver's refusals read as outcomes: 403 is RBAC
/// escalation prevention (the server holds neither the role nor `bind` on it), 404 a missing namespace.
async fn ensure_binding<K>(
    api: &Api<K>,
    s: &Session,
    desired: K,
    mode: Mode,
) -> Result<BindingOutcome, Error>
where
    K: Resource
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + super::ensure::Desired,
{
    match ensure(api, s, desired, mode).await {
        Ok(Ensured::Done) => Ok(BindingOutcome::Applied),
        Ok(Ensured::Collision) => Ok(BindingOutcome::Collision),
        Err(e) if is_status(&e, 403) => Ok(BindingOutcome::Forbidden),
        Err(e) if is_status(&e, 404) => Ok(BindingOutcome::NamespaceMissing),
        Err(e) => Err(e).at(Step::ApplyBinding),
    }
}

/// Keeps this session's Secret, or creates one. Only a Secret owned by *this* TkaSignin object (same UID) is
/// kept, so a new session after logout or expiry always gets a new Secret and old tokens cannot revive. A GET
/// by name, not a LIST: a consistent LIST waits for the apiserver's watch cache and costs up to ~100 ms on
/// the login path. A new session costs one POST.
pub(super) async fn ensure_session_secret(
    s: &Session,
    signin: &TkaSignin,
    ctx: &Context,
) -> Result<SecretRef, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &s.namespace);
    // The recorded Secret stays the session's (also one an earlier version named with generateName).
    let recorded = signin
        .status
        .as_ref()
        .and_then(|st| st.session_secret.clone());
    if let Some(recorded) = recorded
        && let Some(secret) = secrets
            .get_opt(&recorded.name)
            .await
            .at(Step::GetSessionSecret)?
        && is_sessions(&secret, s)
        && secret.uid().as_deref() == Some(recorded.uid.as_str())
    {
        return Ok(recorded);
    }
    let desired = s.session_secret();
    let secret = match secrets.create(&PostParams::default(), &desired).await {
        Ok(created) => created,
        // The name is taken: by an earlier attempt for this session whose status write failed (or whose
        // process stopped before it), which holds no tokens yet (tokens are only minted for the recorded
        // Secret) and is reused; anything else (being deleted, another owner) is the conflict it is.
        Err(conflict) if is_status(&conflict, 409) => match secrets
            .get_opt(&desired.name_any())
            .await
            .at(Step::GetSessionSecret)?
        {
            Some(existing) if is_sessions(&existing, s) => existing,
            _ => return Err(conflict).at(Step::CreateSessionSecret),
        },
        Err(e) => return Err(e).at(Step::CreateSessionSecret),
    };
    Ok(SecretRef {
        name: secret.name_any(),
        uid: secret.uid().unwrap_or_default(),
    })
}

/// Owned by this TkaSignin object and not being deleted.
fn is_sessions(secret: &Secret, s: &Session) -> bool {
    secret.meta().deletion_timestamp.is_none()
        && secret
            .owner_references()
            .iter()
            .any(|o| o.uid == s.signin_uid)
}
