//! Integration tests against a real kube-apiserver + etcd (spec: testing.md §4). One control plane per run,
//! started in `main` and always stopped at the end; every test has its own namespace and server.
//!
//! Run: `cargo test --features integration --test integration` (needs `tests/peers/build.sh` first).

#[path = "../support/controlplane.rs"]
mod controlplane;
mod harness;
mod scenarios;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, CustomResourceExt};
use libtest_mimic::{Arguments, Trial};

use harness::Env;

type TestFn = fn(Arc<Env>) -> futures::future::LocalBoxFuture<'static, ()>;

async fn install_crd(admin: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let crd = tka::operator::crd::TkaSignin::crd();
    crds.patch("tkasignins.tka.specht-labs.de", &PatchParams::apply("tka-tests").force(), &Patch::Apply(&crd)).await.expect("CRD applies");
    let established = await_condition(crds, "tkasignins.tka.specht-labs.de", conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(30), established).await.expect("CRD established in time").expect("watch");
}

/// There is no kube-controller-manager, so the aggregated ClusterRoles (`view`, `edit`, `admin`) have no rules
/// of their own. Do once what its clusterrole-aggregation controller does.
async fn aggregate_cluster_roles(admin: &kube::Client) {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let api: Api<ClusterRole> = Api::all(admin.clone());
    let all = api.list(&Default::default()).await.expect("list ClusterRoles").items;
    for name in ["view", "edit", "admin"] {
        let role = all.iter().find(|r| r.metadata.name.as_deref() == Some(name)).expect("bootstrap role");
        let selectors = role.aggregation_rule.as_ref().and_then(|a| a.cluster_role_selectors.clone()).unwrap_or_default();
        let mut rules = Vec::new();
        for other in &all {
            let labels = other.metadata.labels.clone().unwrap_or_default();
            let selected = selectors.iter().any(|sel| {
                sel.match_labels.as_ref().is_some_and(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
            });
            if selected && other.metadata.name.as_deref() != Some(name) {
                rules.extend(other.rules.clone().unwrap_or_default());
            }
        }
        let patch = serde_json::json!({ "rules": rules });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("aggregate rules");
    }
}

fn main() {
    let args = Arguments::from_args();
    let cp = match controlplane::ControlPlane::start() {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("cannot start the test control plane: {e}");
            std::process::exit(1);
        }
    };
    let rt = Arc::new(tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap());
    let admin = rt.block_on(cp.admin_client());
    rt.block_on(install_crd(&admin));
    rt.block_on(aggregate_cluster_roles(&admin));
    let env = Arc::new(Env { cp, admin });

    let tests: Vec<Trial> = scenarios::ALL
        .iter()
        .map(|(name, f)| {
            let (env, rt, f) = (env.clone(), rt.clone(), *f as TestFn);
            Trial::test(*name, move || {
                rt.block_on(f(env));
                Ok(())
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, tests);
    if let Ok(mut env) = Arc::try_unwrap(env) {
        env.cp.stop();
    }
    conclusion.exit();
}
