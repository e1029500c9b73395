//! Both doctors against the real apiserver: `tka-server doctor` run as the server's ServiceAccount next to an
//! in-process server (here), and `tka doctor` run as a user against it with a real kubectl (`doctor_cli.rs`).
//! Each check is shown passing on a healthy setup and failing, with its advice, on a broken one: CRD missing
//! or outdated, RBAC missing a permission or binding too much, no allow-list, no tailscaled, no grant, a
//! kuberc allowlist without tka, stale KUBECONFIG entries, token files readable by others.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::Role;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::{Value, json};

use crate::cli::text;
use crate::controlplane::ControlPlane;
use crate::harness::{self, Env, Harness, apply_value, apply_yaml};

scenarios!(
    doctor_server_healthy_kubernetes_side_and_no_tailscaled,
    doctor_server_rbac_missing_a_permission_or_binding_too_much,
    doctor_server_crd_missing_then_outdated_then_current,
);

pub const VIEW: &str = r#"[{"role": "view", "period": "1h"}]"#;

/// The roles the doctor tests' servers may grant.
fn view_edit() -> tka::operator::rbac::GrantableRoles {
    tka::operator::rbac::GrantableRoles::new(["view", "edit"]).expect("valid roles")
}

/// The check called `name` in a doctor's JSON report.
pub fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} check in {report:#}"))
}

pub fn status(report: &Value, name: &str) -> String {
    check(report, name)["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn advice(report: &Value, name: &str) -> String {
    check(report, name)["advice"].to_string()
}

/// A token of the ServiceAccount `tka-controller` in `ns`, as the pod would have it.
async fn server_token(admin: &Client, ns: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    sas.create_token_request("tka-controller", &PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

/// What the doctor runs with: the server's configuration and kubeconfig (no tailscaled at `tailscale.socket`).
struct ServerSide {
    dir: tempfile::TempDir,
}

impl ServerSide {
    async fn new(cp: &ControlPlane, admin: &Client, ns: &str, health_port: u16) -> ServerSide {
        let dir = tempfile::tempdir().unwrap();
        let token = server_token(admin, ns).await;
        let kc = harness::token_kubeconfig(&cp.server_url(), &cp.ca_pem(), &token);
        std::fs::write(
            dir.path().join("kubeconfig"),
            serde_yaml::to_string(&kc).unwrap(),
        )
        .unwrap();
        let config = format!(
            "operator:\n  namespace: {ns}\n  clusterName: {}\n  allowedRoles: [view, edit]\n\
             health:\n  port: {health_port}\n  bindAddress: 127.0.0.1\n\
             tailscale:\n  socket: {}\n",
            harness::CLUSTER,
            dir.path().join("tailscaled.sock").display()
        );
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        ServerSide { dir }
    }

    /// Rewrites `operator.allowedRoles` in the configuration (a YAML flow list).
    fn allowed_roles(&self, list: &str) {
        let path = self.dir.path().join("config.yaml");
        let config = std::fs::read_to_string(&path).unwrap();
        let (head, tail) = config.split_once("  allowedRoles: ").unwrap();
        let rest = tail.split_once('\n').unwrap().1;
        std::fs::write(&path, format!("{head}  allowedRoles: {list}\n{rest}")).unwrap();
    }

    /// `tka-server doctor -o json` (or text): exit code and output.
    fn run(&self, json_output: bool) -> (Option<i32>, String) {
        let out =
            crate::harness::without_tka_env(&mut Command::new(env!("CARGO_BIN_EXE_tka-server")))
                .args(["doctor", "--config"])
                .arg(self.dir.path().join("config.yaml"))
                .args(["-o", if json_output { "json" } else { "text" }])
                .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
                .env_remove("KUBERNETES_SERVICE_HOST")
                .output()
                .unwrap();
        (out.status.code(), text(&out.stdout))
    }

    fn json(&self) -> (Option<i32>, Value) {
        let (code, out) = self.run(true);
        (
            code,
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}")),
        )
    }

    /// Runs the doctor until `done` holds (RBAC and discovery changes reach the apiserver's caches a
    /// moment after they are written).
    async fn until(&self, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..40 {
            let (_, r) = self.json();
            if done(&r) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let (_, r) = self.json();
        panic!("the doctor never reported the expected state: {r:#}");
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

async fn doctor_server_healthy_kubernetes_side_and_no_tailscaled(env: Arc<Env>) {
    let h = Harness::new(&env, "doctor-ok").await;
    let side = ServerSide::new(&env.cp, &env.admin, &h.ns, port_of(&h.health_url)).await;
    let (code, r) = side.json();
    for name in [
        "config",
        "kubernetes",
        "crd",
        "rbac",
        "bind",
        "leader",
        "ready",
    ] {
        assert_eq!(status(&r, name), "ok", "{name}: {r:#}");
    }
    assert!(
        check(&r, "bind")["message"]
            .as_str()
            .unwrap()
            .contains("view, edit")
    );
    // No tailscaled answers on tailscale.socket: the one failure, with what to do.
    assert_eq!(status(&r, "tailscaled"), "fail");
    assert!(
        advice(&r, "tailscaled").contains("tailscale.socket"),
        "{r:#}"
    );
    assert_eq!((code, r["ok"].as_bool()), (Some(1), Some(false)));
    let (_, text) = side.run(false);
    assert!(text.contains("✓ crd "), "{text}");
    assert!(text.contains("✗ tailscaled "), "{text}");
    eprintln!("{text}");
    h.stop().await;
}

async fn doctor_server_rbac_missing_a_permission_or_binding_too_much(env: Arc<Env>) {
    let h = Harness::new(&env, "doctor-rbac").await;
    let side = ServerSide::new(&env.cp, &env.admin, &h.ns, port_of(&h.health_url)).await;
    // Break it: no TokenRequests any more, and bind on cluster-admin through an extra ClusterRole.
    // The harness names the Role per test, as it does the cluster-scoped objects.
    let name = format!("tka-server-{}", h.ns);
    let roles: Api<Role> = Api::namespaced(env.admin.clone(), &h.ns);
    let mut role = roles.get(&name).await.unwrap();
    role.rules.as_mut().unwrap().retain(|r| {
        !r.resources
            .iter()
            .flatten()
            .any(|x| x == "serviceaccounts/token")
    });
    roles
        .replace(&name, &PostParams::default(), &role)
        .await
        .unwrap();
    let excess = format!("tka-doctor-excess-{}", h.ns);
    apply_value(
        &env.admin,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": excess}, "rules": [{"apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["clusterroles"], "resourceNames": ["cluster-admin"], "verbs": ["bind"]}]}),
    )
    .await;
    apply_value(&env.admin, &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": excess}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": excess},
        "subjects": [{"kind": "ServiceAccount", "name": "tka-controller", "namespace": h.ns}]}))
    .await;
    let r = side
        .until(|r| status(r, "rbac") == "fail" && status(r, "bind") == "fail")
        .await;
    assert_eq!(
        check(&r, "rbac")["message"],
        format!("missing: create serviceaccounts/token in {}", h.ns)
    );
    assert!(
        advice(&r, "rbac").contains(&format!(
            "tka-server rbac --allowed-roles view,edit --namespace {}",
            h.ns
        )),
        "{r:#}"
    );
    assert!(
        check(&r, "bind")["message"]
            .as_str()
            .unwrap()
            .contains("also cluster-admin"),
        "{r:#}"
    );
    eprintln!("{}", side.run(false).1);
    // Without an allow-list that extra binding lets any grant name cluster-admin.
    side.allowed_roles("[]");
    let (_, r) = side.json();
    assert_eq!(status(&r, "bind"), "fail", "{r:#}");
    assert!(
        check(&r, "bind")["message"]
            .as_str()
            .unwrap()
            .contains("a grant naming cluster-admin makes its holder cluster-admin"),
        "{r:#}"
    );
    side.allowed_roles("[view, edit]");
    // Repaired as the advice says: the generated RBAC again, the extra binding gone.
    let rbac = tka::operator::rbac::manifests(&h.ns, &view_edit())
        .replace(
            "name: tka-server\n",
            &format!("name: tka-server-{}\n", h.ns),
        )
        .replace(
            "name: tka-server-cluster-info\n",
            &format!("name: tka-server-cluster-info-{}\n", h.ns),
        );
    apply_yaml(&env.admin, &rbac).await;
    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(env.admin.clone());
    crbs.delete(&excess, &DeleteParams::default())
        .await
        .unwrap();
    let r = side
        .until(|r| status(r, "rbac") == "ok" && status(r, "bind") == "ok")
        .await;
    assert_eq!(status(&r, "crd"), "ok");
    // No allow-list: allowed, the RBAC's bind decides (here view and edit), which the doctor names.
    side.allowed_roles("[]");
    let (_, r) = side.json();
    assert_eq!(status(&r, "rbac"), "ok", "{r:#}");
    assert_eq!(status(&r, "bind"), "warn", "{r:#}");
    assert!(
        check(&r, "bind")["message"]
            .as_str()
            .unwrap()
            .contains("the RBAC decides (may bind edit, view)"),
        "{r:#}"
    );
    // A wildcard entry: no RBAC can be generated for it, so none is checked.
    side.allowed_roles("[view, \"*\"]");
    let (code, r) = side.json();
    assert_eq!(code, Some(1));
    assert_eq!(status(&r, "rbac"), "fail", "{r:#}");
    assert!(
        check(&r, "rbac")["message"]
            .as_str()
            .unwrap()
            .contains("operator.allowedRoles: \"*\" is not a ClusterRole name"),
        "{r:#}"
    );
    assert!(
        !r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "bind"),
        "{r:#}"
    );
    h.stop().await;
}

/// The CRD without `spec.subject_key`: what an older release installed.
fn outdated_crd() -> Value {
    let mut crd = serde_json::to_value(tka::operator::crd::TkaSignin::crd()).unwrap();
    let spec = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    spec["properties"]
        .as_object_mut()
        .unwrap()
        .remove("subject_key");
    crd
}

async fn doctor_server_crd_missing_then_outdated_then_current(_env: Arc<Env>) {
    // A control plane of its own: the shared one's CRD is needed by every other test.
    // Retried once: its free ports are picked before etcd binds them, and parallel tests bind ports too.
    let cp =
        tokio::task::spawn_blocking(|| ControlPlane::start().or_else(|_| ControlPlane::start()))
            .await
            .unwrap()
            .expect("control plane");
    let admin = cp.admin_client().await;
    let ns = "doctor-crd";
    apply_value(
        &admin,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    let sa = serde_json::from_value(json!({"metadata": {"name": "tka-controller"}})).unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
    apply_yaml(&admin, &tka::operator::rbac::manifests(ns, &view_edit())).await;
    let side = ServerSide::new(&cp, &admin, ns, 9).await;

    let r = side.until(|r| status(r, "crd") == "fail").await;
    assert!(
        check(&r, "crd")["message"]
            .as_str()
            .unwrap()
            .contains("is not installed"),
        "{r:#}"
    );
    assert!(
        advice(&r, "crd").contains("tka-server crd | kubectl apply -f -"),
        "{r:#}"
    );
    eprintln!("{}", side.run(false).1);

    apply_value(&admin, &outdated_crd()).await;
    let r = side
        .until(|r| {
            check(r, "crd")["message"]
                .as_str()
                .unwrap_or_default()
                .contains("drops")
        })
        .await;
    assert_eq!(status(&r, "crd"), "fail");
    assert!(
        check(&r, "crd")["message"]
            .as_str()
            .unwrap()
            .ends_with("it drops spec.subject_key"),
        "{r:#}"
    );

    harness::install_crd(&admin).await;
    let r = side.until(|r| status(r, "crd") == "ok").await;
    assert_eq!(status(&r, "rbac"), "ok");
    // Nothing answers on the health port: the running server is named as missing.
    assert_eq!(status(&r, "ready"), "fail");
    drop(cp);
}
