//! The floor: a bare kube client doing the writes the product needs, nothing else (no reads, no watches, no
//! server-side apply, no finalizer), with the server's own identity and RBAC. What tka does beyond this is
//! the distance the benchmark measures.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tka::model::naming;
use tka::operator::crd::{Origin, TkaSignin, TkaSigninSpec};
use tka::operator::objects::{self, Session};

use crate::stats::{self, Run};

/// The TkaSignin a login of `login` from node `node_id` writes (labels, annotations and spec as the API's).
pub fn signin(ns: &str, login: &str, node_id: &str) -> TkaSignin {
    let uk = naming::subject_key(login);
    let nk = naming::node_key(node_id);
    let name = naming::signin_name(&uk, &nk);
    let now = Timestamp::now();
    let node = format!("{node_id}.bench.ts.net");
    let mut s = TkaSignin::new(
        &name,
        TkaSigninSpec {
            username: login.into(),
            role: "view".into(),
            validity_period: "1h0m0s".into(),
            subject_key: uk.clone(),
            node: node.clone(),
            node_id: node_id.into(),
            node_ip: String::new(),
            requested_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
            namespaces: vec![],
            origin: Some(Origin {
                kind: "local".into(),
                primary: String::new(),
            }),
        },
    );
    s.metadata.namespace = Some(ns.into());
    s.metadata.labels = Some(
        [
            (objects::MANAGED_BY, "tka".to_string()),
            (objects::INSTANCE, ns.to_string()),
            (objects::USER_KEY, uk),
            (objects::SESSION, name),
            (objects::NODE_KEY, nk),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    );
    let until = now + jiff::SignedDuration::from_hours(1);
    s.metadata.annotations = Some(
        [
            (objects::LOGIN_NAME, login.to_string()),
            (objects::NODE, node),
            (objects::CLUSTER_ROLE, "view".to_string()),
            (objects::LAST_SIGN_IN, now.to_string()),
            (objects::VALID_UNTIL, until.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    );
    s
}

fn err(what: &str) -> impl Fn(kube::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// What a floor login created, so that its cleanup needs no reads.
#[derive(Debug, Clone)]
pub struct Created {
    pub signin: String,
    pub secret: String,
    /// The user's ServiceAccount.
    pub user: String,
    /// The user's ClusterRoleBinding (named per tka instance).
    pub binding: String,
}

/// ServiceAccount, Secret, ClusterRoleBinding and the Ready status for an existing TkaSignin; returns it with
/// that status (what a token is minted from).
async fn provision(c: &Client, ns: &str, created: &TkaSignin) -> Result<TkaSignin, String> {
    let s = Session::from_signin(created, ns);
    let pp = PostParams::default();
    Api::<ServiceAccount>::namespaced(c.clone(), ns)
        .create(&pp, &s.service_account())
        .await
        .map_err(err("ServiceAccount"))?;
    let secret = Api::<Secret>::namespaced(c.clone(), ns)
        .create(&pp, &s.session_secret())
        .await
        .map_err(err("Secret"))?;
    Api::<ClusterRoleBinding>::all(c.clone())
        .create(&pp, &s.cluster_role_binding())
        .await
        .map_err(err("ClusterRoleBinding"))?;
    let now = Timestamp::now().to_string();
    let status = json!({"status": {
        "provisioned": true,
        "signed_in": created.spec.requested_at,
        "valid_until": (Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string(),
        "service_account": s.user_object_name(),
        "session_secret": {"name": secret.name_any(), "uid": secret.uid()},
        "bindings": [{"kind": "ClusterRoleBinding", "name": s.binding_name(), "role": s.role}],
        "observedGeneration": created.metadata.generation,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Provisioned",
            "message": "session is ready", "observedGeneration": created.metadata.generation,
            "lastTransitionTime": now}],
    }});
    Api::<TkaSignin>::namespaced(c.clone(), ns)
        .patch_status(
            &created.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .map_err(err("status"))
}

/// One login's writes: `creator` writes the TkaSignin, `c` the ServiceAccount, Secret, ClusterRoleBinding,
/// status and, with `mint`, the TokenRequest (without it: a TkaSignin created by an admin and provisioned by
/// the controller).
pub async fn login(
    creator: &Client,
    c: &Client,
    ns: &str,
    login: &str,
    node_id: &str,
    mint: bool,
) -> Result<Created, String> {
    let created = Api::<TkaSignin>::namespaced(creator.clone(), ns)
        .create(&PostParams::default(), &signin(ns, login, node_id))
        .await
        .map_err(err("TkaSignin"))?;
    let ready = provision(c, ns, &created).await?;
    if mint {
        tka::operator::token::mint(c, ns, &ready, 3600, &[])
            .await
            .map_err(|e| format!("TokenRequest: {e}"))?;
    }
    let binding = Session::from_signin(&ready, ns).binding_name();
    let secret = ready.status.and_then(|s| s.session_secret);
    Ok(Created {
        binding,
        signin: ready.metadata.name.unwrap_or_default(),
        secret: secret.map(|s| s.name).unwrap_or_default(),
        user: naming::user_object_name(&ready.spec.subject_key),
    })
}

/// One session's cleanup: the TkaSignin (no finalizer here), its Secret, binding and ServiceAccount.
pub async fn cleanup(c: &Client, ns: &str, created: &Created) -> Result<(), String> {
    let dp = DeleteParams::default();
    Api::<TkaSignin>::namespaced(c.clone(), ns)
        .delete(&created.signin, &dp)
        .await
        .map_err(err("TkaSignin"))?;
    Api::<Secret>::namespaced(c.clone(), ns)
        .delete(&created.secret, &dp)
        .await
        .map_err(err("Secret"))?;
    Api::<ClusterRoleBinding>::all(c.clone())
        .delete(&created.binding, &dp)
        .await
        .map_err(err("ClusterRoleBinding"))?;
    Api::<ServiceAccount>::namespaced(c.clone(), ns)
        .delete(&created.user, &dp)
        .await
        .map_err(err("ServiceAccount"))?;
    Ok(())
}

/// `n` floor logins (`<prefix><i>@example.com`) at `concurrency`: the run and what they created.
pub async fn logins(
    creator: &Client,
    c: &Client,
    ns: &str,
    prefix: &str,
    n: usize,
    concurrency: usize,
    mint: bool,
) -> (Run, Vec<Created>) {
    let created = std::sync::Mutex::new(Vec::new());
    let run = stats::run(n, concurrency, |i| {
        let created = &created;
        async move {
            let user = format!("{prefix}{i}@example.com");
            let c = login(creator, c, ns, &user, &format!("n{prefix}{i}"), mint).await?;
            created.lock().unwrap().push(c);
            Ok(())
        }
    })
    .await;
    (run, created.into_inner().unwrap())
}

/// Cleans up what [`logins`] created, at `concurrency`.
pub async fn cleanups(c: &Client, ns: &str, created: &[Created], concurrency: usize) -> Run {
    stats::run(created.len(), concurrency, |i| cleanup(c, ns, &created[i])).await
}
