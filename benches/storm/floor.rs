//! The floor: a bare kube client doing the writes the product needs, nothing else (no reads, no watches, no
//! server-side apply), with the server's own identity and RBAC. What tka does beyond this is the distance
//! the benchmark measures. Two floors: [`Writes::Bare`] writes only the objects, the status and the token;
//! [`Writes::Spec`] also what the spec requires of every session beyond them (the finalizer and the Events).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tka::model::naming;
use tka::operator::crd::{FINALIZER, Origin, TkaSignin, TkaSigninSpec};
use tka::operator::objects::{self, Session};

use crate::stats::{self, Run};
use crate::{apiserver, harness};

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

/// What a floor writes for a session beyond its objects, its status and its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writes {
    /// Nothing.
    Bare,
    /// What the product specification requires of every session: the cleanup finalizer on the TkaSignin
    /// (written with it by a login, patched in when an admin created it, patched out after the cleanup: no
    /// deletion skips the revocation) and an Event when it is provisioned and when it is revoked.
    Spec,
}

impl Writes {
    /// The floor's name in reports and its namespace's suffix.
    pub fn name(self) -> &'static str {
        match self {
            Writes::Bare => "bare",
            Writes::Spec => "spec",
        }
    }
}

/// What a floor login created, so that its cleanup needs no reads.
#[derive(Debug, Clone)]
pub struct Created {
    pub signin: TkaSignin,
    pub secret: String,
    /// The user's ServiceAccount.
    pub user: String,
    /// The user's ClusterRoleBinding (named per tka instance).
    pub binding: String,
}

/// A floor client: writes as the server's identity in its namespace.
pub struct Floor {
    c: Client,
    ns: String,
    writes: Writes,
    events: Recorder,
}

impl Floor {
    pub fn new(c: Client, ns: &str, writes: Writes) -> Floor {
        let reporter = Reporter {
            controller: "tka-server".into(),
            instance: None,
        };
        Floor {
            events: Recorder::new(c.clone(), reporter),
            c,
            ns: ns.into(),
            writes,
        }
    }

    fn signins(&self) -> Api<TkaSignin> {
        Api::namespaced(self.c.clone(), &self.ns)
    }

    async fn event(&self, on: &ObjectReference, reason: &str, note: String) -> Result<(), String> {
        let event = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        self.events.publish(&event, on).await.map_err(err("Event"))
    }

    /// ServiceAccount, Secret, ClusterRoleBinding and the Ready status for an existing TkaSignin (and, for
    /// [`Writes::Spec`], its finalizer unless it has one, and the Provisioned Event); returns it with that
    /// status (what a token is minted from).
    async fn provision(&self, created: &TkaSignin) -> Result<TkaSignin, String> {
        let (c, ns) = (&self.c, self.ns.as_str());
        if self.writes == Writes::Spec && created.finalizers().is_empty() {
            let patch = json!({"metadata": {"finalizers": [FINALIZER]}});
            self.signins()
                .patch(
                    &created.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(err("finalizer"))?;
        }
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
        let ready = self
            .signins()
            .patch_status(
                &created.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .map_err(err("status"))?;
        if self.writes == Writes::Spec {
            let note = format!("session ready with role {}", s.role);
            self.event(&ready.object_ref(&()), "Provisioned", note)
                .await?;
        }
        Ok(ready)
    }

    /// One login's writes: `creator` writes the TkaSignin, the floor the rest and, with `mint`, the
    /// TokenRequest. With `mint` it is a login through the API, which writes the finalizer with the
    /// TkaSignin; without, a TkaSignin created by an admin and provisioned by the controller.
    pub async fn login(
        &self,
        creator: &Client,
        login: &str,
        node_id: &str,
        mint: bool,
    ) -> Result<Created, String> {
        let mut new = signin(&self.ns, login, node_id);
        if mint && self.writes == Writes::Spec {
            new.metadata.finalizers = Some(vec![FINALIZER.into()]);
        }
        let created = Api::<TkaSignin>::namespaced(creator.clone(), &self.ns)
            .create(&PostParams::default(), &new)
            .await
            .map_err(err("TkaSignin"))?;
        let ready = self.provision(&created).await?;
        if mint {
            tka::operator::token::mint(&self.c, &self.ns, &ready, 3600, &[])
                .await
                .map_err(|e| format!("TokenRequest: {e}"))?;
        }
        let binding = Session::from_signin(&ready, &self.ns).binding_name();
        let secret = ready.status.as_ref().and_then(|s| s.session_secret.clone());
        Ok(Created {
            binding,
            secret: secret.map(|s| s.name).unwrap_or_default(),
            user: naming::user_object_name(&ready.spec.subject_key),
            signin: ready,
        })
    }

    /// One session's cleanup: the TkaSignin, its Secret, binding and ServiceAccount; for [`Writes::Spec`]
    /// also the Revoked Event and the finalizer's release (the patch tka sends), which deletes the TkaSignin.
    pub async fn cleanup(&self, created: &Created) -> Result<(), String> {
        let (c, ns) = (&self.c, self.ns.as_str());
        let dp = DeleteParams::default();
        self.signins()
            .delete(&created.signin.name_any(), &dp)
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
        if self.writes == Writes::Spec {
            let note = "session ended; its tokens are revoked".to_string();
            self.event(&created.signin.object_ref(&()), "Revoked", note)
                .await?;
            let release = tka::operator::reconcile::finalizer_release(&created.signin)
                .ok_or("the floor's TkaSignin has no finalizer")?;
            self.signins()
                .patch(
                    &created.signin.name_any(),
                    &PatchParams::default(),
                    &Patch::Json::<()>(release),
                )
                .await
                .map_err(err("finalizer"))?;
        }
        Ok(())
    }

    /// `n` floor logins (`<prefix><i>@example.com`) at `concurrency`: the run and what they created.
    pub async fn logins(
        &self,
        creator: &Client,
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
                let c = self
                    .login(creator, &user, &format!("n{prefix}{i}"), mint)
                    .await?;
                created.lock().unwrap().push(c);
                Ok(())
            }
        })
        .await;
        (run, created.into_inner().unwrap())
    }

    /// Cleans up what [`Floor::logins`] created, at `concurrency`.
    pub async fn cleanups(&self, created: &[Created], concurrency: usize) -> Run {
        stats::run(created.len(), concurrency, |i| self.cleanup(&created[i])).await
    }
}

/// Both floors, one after the other, each in its own namespace `t-<name>-<floor>`: `n` logins (TkaSignins
/// written by `creator`, or by the floor's own client when `None`) and their cleanups at `concurrency`, with
/// the apiserver's counts for each. `{"bare": …, "spec": …}`, each `{login, apiserver_login, cleanup,
/// apiserver_cleanup}`.
pub async fn both(
    env: &harness::Env,
    name: &str,
    creator: Option<&Client>,
    n: usize,
    concurrency: usize,
    mint: bool,
) -> Value {
    let mut out = serde_json::Map::new();
    for writes in [Writes::Bare, Writes::Spec] {
        let (ns, c) = harness::server_namespace(env, &format!("{name}-{}", writes.name())).await;
        let floor = Floor::new(c.clone(), &ns, writes);
        let creator = creator.unwrap_or(&c);
        let before = apiserver::scrape(&env.admin).await;
        let (login, created) = floor.logins(creator, name, n, concurrency, mint).await;
        let after = apiserver::scrape(&env.admin).await;
        let cleanup = floor.cleanups(&created, concurrency).await;
        let after_cleanup = apiserver::scrape(&env.admin).await;
        out.insert(
            writes.name().into(),
            json!({
                "login": login.json(),
                "apiserver_login": apiserver::report(&before, &after, n, "tka"),
                "cleanup": cleanup.json(),
                "apiserver_cleanup": apiserver::report(&after, &after_cleanup, n, "tka"),
            }),
        );
    }
    Value::Object(out)
}
