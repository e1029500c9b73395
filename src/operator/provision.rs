//! Provisioning one session, idempotently (spec: kubernetes.md §4 step 5): the role must exist, then the
//! user's ServiceAccount, the session Secret and the bindings are applied. Pure object builders are in
//! [`super::objects`]; this is the apply step.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};

use super::crd::{BindingRef, SecretRef, TkaSignin};
use super::error::{Error, ignore_not_found, is_status};
use super::objects::Session;
use super::reconcile::{Context, FIELD_MANAGER};

/// The outcome of provisioning: ready, or a definite reason why not (written as `Ready=False`).
pub(super) enum Provisioned {
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

pub(super) async fn provision(
    s: &Session,
    signin: &TkaSignin,
    ctx: &Context,
) -> Result<Provisioned, Error> {
    let client = &ctx.client;
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
        && !s.owns(existing.meta())
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
        ignore_not_found(
            crbs.delete(&s.binding_name(), &DeleteParams::default())
                .await,
        )?;
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

pub(super) fn not_ready(reason: &'static str, message: String, retry_secs: u64) -> Provisioned {
    Provisioned::NotReady {
        reason,
        message,
        retry: Some(Duration::from_secs(retry_secs)),
    }
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
    not_ready(
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

/// Applies a (Cluster)RoleBinding. `roleRef` is immutable, so a binding with another role is deleted and
/// recreated (upstream updated it in place and got stuck: bug B2).
pub(super) async fn ensure_binding<K>(
    api: &Api<K>,
    s: &Session,
    desired: K,
) -> Result<BindingOutcome, Error>
where
    K: Resource
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + RoleRefOf,
{
    let name = s.binding_name();
    match api.get_opt(&name).await {
        Ok(Some(existing)) => {
            if !s.owns(existing.meta()) {
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
pub(super) async fn ensure_session_secret(
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
