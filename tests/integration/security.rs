//! Attacks on the edges of tka, against the real apiserver: a stolen controller token forging bindings (the
//! shipped ValidatingAdmissionPolicy, applied in `main` for every test), two tka instances in one cluster, a
//! grant reaching the server's own namespace, a run directory another local user prepared, sessions under the
//! short subject keys of earlier versions. The CLI's side is in `cli_security.rs`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tka::model::naming;
use tka::operator::crd::TkaSignin;

use crate::cli::text;
use crate::harness::{Env, Harness, eventually};
use crate::scenarios::can;

scenarios!(
    security_controller_token_cannot_forge_bindings,
    security_two_instances_keep_their_own_bindings,
    security_grants_cannot_reach_the_servers_namespace,
    security_run_dir_others_can_write_is_refused_by_the_server,
    security_sessions_with_short_subject_keys_are_ended,
    security_a_stale_copy_never_releases_a_new_sessions_finalizer,
);

const VIEW: &str = r#"[{"role": "view", "period": "1h"}]"#;

fn rules(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

/// Applies `deploy/kustomize/base/admission-policy.yaml` as the admin (once, for the whole run).
pub async fn install_admission_policy(admin: &Client) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kustomize/base/admission-policy.yaml");
    crate::harness::apply_yaml(admin, &std::fs::read_to_string(path).unwrap()).await;
}

fn binding(kind: &str, name: &str, namespace: Option<&str>, subject: Value) -> Value {
    let mut b = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [subject]});
    if let Some(ns) = namespace {
        b["metadata"]["namespace"] = json!(ns);
    }
    b
}

/// Creates a binding with `client`; `Err` carries the apiserver's message.
async fn create(client: &Client, b: &Value) -> Result<(), String> {
    let pp = PostParams::default();
    let r = match b["metadata"]["namespace"].as_str() {
        Some(ns) => Api::<RoleBinding>::namespaced(client.clone(), ns)
            .create(&pp, &serde_json::from_value(b.clone()).unwrap())
            .await
            .map(|_| ()),
        None => Api::<ClusterRoleBinding>::all(client.clone())
            .create(&pp, &serde_json::from_value(b.clone()).unwrap())
            .await
            .map(|_| ()),
    };
    r.map_err(|e| e.to_string())
}

async fn security_controller_token_cannot_forge_bindings(env: Arc<Env>) {
    let h = Harness::new(&env, "vap").await;
    let ctl = h.server_client.clone();
    let ns = h.ns.clone();
    let own_sa = |name: &str| json!({"kind": "ServiceAccount", "name": name, "namespace": ns});

    // Granting `view` (which the controller may bind) to someone else: RBAC allows it, the policy does not.
    // (The policy is applied at start; give the apiserver a moment to load it.)
    let forged = binding(
        "ClusterRoleBinding",
        &format!("tka-user-forged-{ns}"),
        None,
        json!({"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}),
    );
    let mut last = Ok(());
    for _ in 0..30 {
        last = create(&ctl, &forged).await;
        if last.is_err() {
            break;
        }
        // Created before the policy was active: remove it (as the admin) and try again.
        Api::<ClusterRoleBinding>::all(h.admin.clone())
            .delete(
                forged["metadata"]["name"].as_str().unwrap(),
                &DeleteParams::default(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let e = last.expect_err("a forged binding was accepted");
    assert!(
        e.contains("tka-controller-bindings") && e.contains("tka-user-* ServiceAccounts"),
        "{e}"
    );

    for (why, b, needle) in [
        (
            "not a tka-user-* name",
            binding(
                "ClusterRoleBinding",
                &format!("innocent-{ns}"),
                None,
                own_sa("tka-user-x"),
            ),
            "bindings named tka-user-*",
        ),
        (
            "a subject in another namespace",
            binding(
                "ClusterRoleBinding",
                &format!("tka-user-y-{ns}"),
                None,
                json!({"kind": "ServiceAccount", "name": "tka-user-y", "namespace": "kube-system"}),
            ),
            "tka-user-* ServiceAccounts",
        ),
        (
            "the controller's own ServiceAccount",
            binding(
                "ClusterRoleBinding",
                &format!("tka-user-z-{ns}"),
                None,
                own_sa("tka-controller"),
            ),
            "tka-user-* ServiceAccounts",
        ),
        (
            "a RoleBinding in the controller's own namespace",
            binding(
                "RoleBinding",
                &format!("tka-user-w-{ns}"),
                Some(&ns),
                own_sa("tka-user-w"),
            ),
            "its own namespace",
        ),
    ] {
        let e = create(&ctl, &b).await.expect_err(why);
        assert!(e.contains(needle), "{why}: {e}");
    }
    // Deleting a binding that is not tka's own (the server's own RBAC binding, which RBAC lets it delete).
    let e = Api::<ClusterRoleBinding>::all(ctl.clone())
        .delete(&format!("tka-server-{ns}"), &DeleteParams::default())
        .await
        .expect_err("deleting a foreign binding");
    assert!(e.to_string().contains("bindings named tka-user-*"), "{e}");

    // What tka itself does still works: its own binding shape, and a whole login through the real server.
    let ok = binding(
        "ClusterRoleBinding",
        &format!("tka-user-ok-{ns}"),
        None,
        own_sa("tka-user-ok"),
    );
    create(&ctl, &ok).await.unwrap();
    Api::<ClusterRoleBinding>::all(ctl.clone())
        .delete(&format!("tka-user-ok-{ns}"), &DeleteParams::default())
        .await
        .unwrap();
    let u = h.user("vap@example.com", rules(VIEW));
    let (r, client) = u.login().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(can(&client.unwrap(), "list", "pods", "default").await);
    assert_eq!(u.post("/api/v1alpha1/logout").await.status, 200);
    h.stop().await;
}

/// Bindings of `instance` (a test namespace), as the admin sees them: (name, subject namespaces). Cluster-wide
/// with `in_ns` `None`, else the RoleBindings of that namespace.
async fn bindings_of(
    admin: &Client,
    instance: &str,
    in_ns: Option<&str>,
) -> Vec<(String, Vec<String>)> {
    let lp =
        kube::api::ListParams::default().labels(&format!("tka.specht-labs.de/instance={instance}"));
    let items: Vec<Value> = match in_ns {
        None => to_values(
            Api::<ClusterRoleBinding>::all(admin.clone())
                .list(&lp)
                .await
                .unwrap()
                .items,
        ),
        Some(ns) => to_values(
            Api::<RoleBinding>::namespaced(admin.clone(), ns)
                .list(&lp)
                .await
                .unwrap()
                .items,
        ),
    };
    items
        .iter()
        .map(|b| {
            let subjects = b["subjects"].as_array().into_iter().flatten();
            (
                b["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                subjects
                    .map(|s| s["namespace"].as_str().unwrap_or_default().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn to_values<T: serde::Serialize>(items: Vec<T>) -> Vec<Value> {
    items
        .iter()
        .map(|i| serde_json::to_value(i).unwrap())
        .collect()
}

/// Two tka instances (two namespaces) in one cluster, the same user signed in to both: each instance has its own
/// ClusterRoleBinding and RoleBinding, and logging out of one leaves the other's grant alone.
async fn security_two_instances_keep_their_own_bindings(env: Arc<Env>) {
    let a = Harness::new(&env, "twin-a").await;
    let b = Harness::new(&env, "twin-b").await;
    let shared = "t-twins-shared";
    crate::harness::apply_value(
        &env.admin,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": shared}}),
    )
    .await;
    let login = "twin@example.com";
    let namespaced = format!(r#"[{{"role": "edit", "period": "1h", "namespaces": ["{shared}"]}}]"#);
    for (grant, in_ns, verb, target_ns) in [
        (VIEW, None, "list", "default"),
        (namespaced.as_str(), Some(shared), "create", shared),
    ] {
        let (ua, ub) = (a.user(login, rules(grant)), b.user(login, rules(grant)));
        let (ra, ca) = ua.login().await;
        assert_eq!(ra.status, 200, "{}", ra.text);
        let (rb, cb) = ub.login().await;
        assert_eq!(rb.status, 200, "{}", rb.text);
        let (ca, cb) = (ca.unwrap(), cb.unwrap());
        assert!(can(&ca, verb, "configmaps", target_ns).await);
        assert!(can(&cb, verb, "configmaps", target_ns).await);
        let (ba, bb) = (
            bindings_of(&env.admin, &a.ns, in_ns).await,
            bindings_of(&env.admin, &b.ns, in_ns).await,
        );
        assert_eq!(ba.len(), 1, "instance a's binding is a's: {ba:?} / {bb:?}");
        assert_eq!(bb.len(), 1, "{bb:?}");
        assert_ne!(ba[0].0, bb[0].0, "one binding per instance");
        assert_eq!(ba[0].1, vec![a.ns.clone()]);
        assert_eq!(bb[0].1, vec![b.ns.clone()]);

        // Logging out of b removes b's binding only.
        assert_eq!(ub.post("/api/v1alpha1/logout").await.status, 200);
        let gone = eventually(Duration::from_secs(10), || async {
            bindings_of(&env.admin, &b.ns, in_ns).await.is_empty()
        })
        .await;
        assert!(gone.is_some(), "b's binding is removed");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            bindings_of(&env.admin, &a.ns, in_ns).await,
            ba,
            "a's binding is untouched"
        );
        assert!(
            can(&ca, verb, "configmaps", target_ns).await,
            "a's session keeps its rights"
        );
        assert_eq!(ua.post("/api/v1alpha1/logout").await.status, 200);
        let gone = eventually(Duration::from_secs(10), || async {
            bindings_of(&env.admin, &a.ns, in_ns).await.is_empty()
        })
        .await;
        assert!(gone.is_some());
    }
    a.stop().await;
    b.stop().await;
}

/// A rule naming the server's own namespace (its token, the sessions' Secrets, the tailnet state) is refused
/// at login, naming the rule; and the controller refuses such a session whoever wrote it.
async fn security_grants_cannot_reach_the_servers_namespace(env: Arc<Env>) {
    let h = Harness::new(&env, "ownns").await;
    let grant = format!(
        r#"[{{"role": "edit", "period": "1h", "namespaces": ["team-x", "{}"]}}]"#,
        h.ns
    );
    let u = h.user("ownns@example.com", rules(&grant));
    let (r, _) = u.login().await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["code"], "invalid_grant");
    let msg = r.body["message"].as_str().unwrap();
    assert!(
        msg.contains("\"edit\"") && msg.contains(&format!("\"{}\"", h.ns)),
        "{msg}"
    );
    assert!(h.names::<TkaSignin>().await.is_empty(), "nothing created");

    // A TkaSignin written by someone else (not through the API) gets no binding there either.
    let login = "direct@example.com";
    let uk = naming::subject_key(login);
    let api: Api<TkaSignin> = Api::namespaced(h.admin.clone(), &h.ns);
    let name = create_signin(&api, login, &uk, "edit", &[h.ns.as_str()]).await;
    let refused = eventually(Duration::from_secs(10), || async {
        api.get(&name)
            .await
            .ok()
            .and_then(|s| s.status)
            .is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason == "NamespaceProtected")
            })
    })
    .await;
    assert!(
        refused.is_some(),
        "{:?}",
        api.get(&name).await.map(|s| s.status)
    );
    assert!(bindings_of(&h.admin, &h.ns, Some(&h.ns)).await.is_empty());
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    h.stop().await;
}

/// A TkaSignin written directly (not through the API), as a person or an older version might; returns its name.
async fn create_signin(
    api: &Api<TkaSignin>,
    login: &str,
    key: &str,
    role: &str,
    namespaces: &[&str],
) -> String {
    let name = naming::signin_name(key, &naming::node_key("ndirect"));
    let signin: TkaSignin = serde_json::from_value(json!({
        "apiVersion": "tka.specht-labs.de/v1alpha1", "kind": "TkaSignin",
        "metadata": {"name": name},
        "spec": {"username": login, "role": role, "validity_period": "1h0m0s", "subject_key": key,
            "node": "direct.test.ts.net", "node_id": "ndirect", "node_ip": "",
            "requested_at": jiff::Timestamp::now().to_string(), "namespaces": namespaces}}))
    .unwrap();
    api.create(&PostParams::default(), &signin).await.unwrap();
    name
}

/// `tka-server serve` itself, with a run directory another local user could have prepared (mode 0777): exit 1
/// naming `tailscale.runDir`, before any key is written or tailscaled started.
async fn security_run_dir_others_can_write_is_refused_by_the_server(env: Arc<Env>) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let health = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = health.local_addr().unwrap().port();
    drop(health);
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "tailscale:\n  runDir: {}\n  stateDir: {}\n  tailscaledPath: /bin/false\n\
             health:\n  port: {port}\n  bindAddress: 127.0.0.1\n\
             operator:\n  namespace: t-rundir\n  leaderElection:\n    enabled: false\n\
             clusterInfo:\n  apiEndpoint: {}\n",
            run.display(),
            dir.path().join("state").display(),
            env.cp.server_url()
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tka-server"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("KUBECONFIG", env.cp.admin_kubeconfig_path())
        .env("TS_AUTHKEY", "tskey-auth-secret")
        .env_remove("TKA_CONFIG")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("tka-server exits by itself")
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("tailscale.runDir") && stderr.contains("mode 0777"),
        "{stderr}"
    );
    assert!(!run.join("authkey").exists(), "the key was not written");
}

/// A session an earlier version recorded under a 40-bit subject key (and its `tka-user-<key>` objects, named
/// without the instance): the controller ends it and removes its objects, so no session lives on under a key
/// that logout and `replace` no longer look up.
async fn security_sessions_with_short_subject_keys_are_ended(env: Arc<Env>) {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let h = Harness::new(&env, "shortkey").await;
    let login = "old@example.com";
    let old_key = format!("{}-{}", naming::sanitize(login), naming::hash(login, 8));
    assert_ne!(old_key, naming::subject_key(login));
    let old_name = naming::user_object_name(&old_key);
    let meta = json!({"name": old_name, "labels": {"app.kubernetes.io/managed-by": "tka",
        "tka.specht-labs.de/instance": h.ns, "tka.specht-labs.de/user-key": old_key},
        "annotations": {"tka.specht-labs.de/login-name": login}});
    let sas: Api<ServiceAccount> = Api::namespaced(h.admin.clone(), &h.ns);
    let mut sa_meta = meta.clone();
    sa_meta["namespace"] = json!(h.ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": sa_meta})).unwrap(),
    )
    .await
    .unwrap();
    let crbs: Api<ClusterRoleBinding> = Api::all(h.admin.clone());
    crbs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": old_name, "namespace": h.ns}]}))
        .unwrap(),
    )
    .await
    .unwrap();
    let api: Api<TkaSignin> = Api::namespaced(h.admin.clone(), &h.ns);
    let name = create_signin(&api, login, &old_key, "view", &[]).await;
    let gone = eventually(Duration::from_secs(15), || async {
        api.get_opt(&name).await.unwrap().is_none()
            && sas.get_opt(&old_name).await.unwrap().is_none()
            && crbs.get_opt(&old_name).await.unwrap().is_none()
    })
    .await;
    assert!(
        gone.is_some(),
        "signin {:?}, sa {}, crb {}",
        api.get_opt(&name).await.unwrap().map(|s| s.status),
        sas.get_opt(&old_name).await.unwrap().is_some(),
        crbs.get_opt(&old_name).await.unwrap().is_some()
    );
    h.stop().await;
}

/// The controller cleans up ending sessions from its cache without reading them again, so the copy it holds
/// may be stale: the session may be gone and a re-login may have created a new one of the same name. The
/// finalizer release it sends then must not touch the new session (it would lose its cleanup); the same
/// release on the current object works.
async fn security_a_stale_copy_never_releases_a_new_sessions_finalizer(env: Arc<Env>) {
    let (ns, _) = crate::harness::server_namespace(&env, "stale-release").await;
    let api: Api<TkaSignin> = Api::namespaced(env.admin.clone(), &ns);
    let mut signin = TkaSignin::new(
        "tka-stale",
        tka::operator::crd::TkaSigninSpec {
            username: "stale@example.com".into(),
            role: "view".into(),
            validity_period: "1h0m0s".into(),
            subject_key: naming::subject_key("stale@example.com"),
            node_id: "nstale".into(),
            ..Default::default()
        },
    );
    signin.metadata.finalizers = Some(vec![tka::operator::crd::FINALIZER.to_string()]);
    let old = api.create(&PostParams::default(), &signin).await.unwrap();
    api.delete("tka-stale", &DeleteParams::default())
        .await
        .unwrap();
    let stale = api.get("tka-stale").await.unwrap();
    assert!(stale.metadata.deletion_timestamp.is_some());
    // Someone releases it (the controller, an earlier reconcile); a re-login creates the new session.
    let release = |s: &TkaSignin| {
        kube::api::Patch::Json::<()>(
            tka::operator::reconcile::finalizer_release(s).expect("carries the finalizer"),
        )
    };
    let pp = kube::api::PatchParams::default();
    api.patch("tka-stale", &pp, &release(&stale)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            api.get_opt("tka-stale").await.unwrap().is_none()
        })
        .await
        .is_some()
    );
    let new = api.create(&PostParams::default(), &signin).await.unwrap();
    assert_ne!(new.metadata.uid, old.metadata.uid);
    match api.patch("tka-stale", &pp, &release(&stale)).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 422, "{s:?}"),
        other => panic!("the stale release must fail: {other:?}"),
    }
    let kept = api.get("tka-stale").await.unwrap();
    assert_eq!(
        kept.metadata.finalizers.as_deref(),
        Some(&[tka::operator::crd::FINALIZER.to_string()][..]),
        "the new session keeps its finalizer"
    );
    api.patch("tka-stale", &pp, &release(&kept)).await.unwrap();
    api.delete("tka-stale", &DeleteParams::default())
        .await
        .unwrap();
}
