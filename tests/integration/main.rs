//! Integration tests against a real kube-apiserver + etcd. One control plane per run,
//! started in `main` and always stopped at the end; every test has its own namespace and server.
//!
//! Run: `cargo test --features integration --test integration` (needs `tests/peers/build.sh` first).

/// `scenarios!(a, b)` in a test module: its `ALL` table, each test named after its function. Defined before
/// the modules so they all see it.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        pub const ALL: &[(&str, fn(Arc<Env>) -> LocalBoxFuture<'static, ()>)] = &[$((stringify!($name), |env| Box::pin($name(env)))),*];
    };
}

mod cli;
mod cli_security;
#[path = "../support/controlplane.rs"]
mod controlplane;
mod dashboard;
mod doctor;
mod doctor_cli;
mod federation;
mod federation_trust;
mod harness;
mod leader;
mod limits;
mod manifests;
mod monitoring;
mod pushback;
mod scenarios;
mod security;
mod shortened;

use std::sync::Arc;

use libtest_mimic::{Arguments, Trial};

use harness::Env;

type TestFn = fn(Arc<Env>) -> futures::future::LocalBoxFuture<'static, ()>;

fn main() {
    let args = Arguments::from_args();
    let cp = match controlplane::ControlPlane::start() {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("cannot start the test control plane: {e}");
            std::process::exit(1);
        }
    };
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
    let admin = rt.block_on(cp.admin_client());
    rt.block_on(harness::install_crd(&admin));
    rt.block_on(harness::aggregate_cluster_roles(&admin));
    rt.block_on(security::install_admission_policy(&admin));
    let env = Arc::new(Env { cp, admin });

    let tests: Vec<Trial> = scenarios::ALL
        .iter()
        .chain(manifests::ALL)
        .chain(monitoring::ALL)
        .chain(dashboard::ALL)
        .chain(federation::ALL)
        .chain(federation_trust::ALL)
        .chain(cli::ALL)
        .chain(security::ALL)
        .chain(cli_security::ALL)
        .chain(shortened::ALL)
        .chain(leader::ALL)
        .chain(limits::ALL)
        .chain(doctor::ALL)
        .chain(doctor_cli::ALL)
        .chain(pushback::ALL)
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
