//! Login latency benchmark: request in to kubeconfig out, server side, against the
//! real local apiserver, beside the apiserver's own floor (one ServiceAccount create).
//!
//! `cargo bench --features integration --bench login [-- --logins N]`; writes `target/bench/login.json`
//! and `target/bench/login.md` (and rebuilds `target/bench/report.md`). Numbers are reported, never asserted.

#[path = "../tests/support/controlplane.rs"]
mod controlplane;
#[path = "../tests/integration/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "support/report.rs"]
mod report;

use std::time::Instant;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

async fn run(env: &harness::Env, logins: usize) -> serde_json::Value {
    // Floor: what one ServiceAccount create costs on this apiserver.
    let h = harness::Harness::with_config(env, "bench", |c| c.api.rate_limit = 1000).await;
    let sas: Api<ServiceAccount> = Api::namespaced(env.admin.clone(), &h.ns);
    let mut floor = Vec::new();
    for i in 0..200 {
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": format!("floor-{i}")}})).unwrap();
        let t = Instant::now();
        sas.create(&PostParams::default(), &sa).await.unwrap();
        floor.push(t.elapsed());
    }

    // New sessions: every login is a new user (SA, Secret, binding, status, token).
    let users: Vec<harness::User> = (0..logins)
        .map(|i| {
            h.user(
                &format!("bench{i}@example.com"),
                json!([{"role": "view", "period": "1h"}]),
            )
        })
        .collect();
    for u in users.iter().take(5) {
        let _ = u.post("/api/v1alpha1/logout").await; // warm-up of the HTTP path, no session yet
    }
    let mut fresh = Vec::new();
    for u in &users {
        let t = Instant::now();
        let r = u
            .post("/api/v1alpha1/login?wait=15s&include=kubeconfig&format=v1")
            .await;
        fresh.push(t.elapsed());
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // Renewals: an existing session is extended and a new token minted.
    let mut renew = Vec::new();
    for u in users.iter().take(logins.min(200)) {
        let t = Instant::now();
        let r = u
            .post("/api/v1alpha1/login?wait=15s&include=kubeconfig&format=v1")
            .await;
        renew.push(t.elapsed());
        assert_eq!(r.status, 200, "{}", r.text);
    }
    h.stop().await;
    json!({
        "apiserver_serviceaccount_create": harness::latencies(floor),
        "login_new_session": harness::latencies(fresh),
        "login_renewal": harness::latencies(renew),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let logins = args
        .iter()
        .position(|a| a == "--logins")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let (rt, mut env) = harness::bench_env();
    let results = rt.block_on(run(&env, logins));
    env.cp.stop();

    let mut report = report::context();
    report["results"] = results;
    let mut md = String::from(
        "## Single logins (`cargo bench --features integration --bench login`)\n\n\
         | metric | n | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n",
    );
    for (name, v) in report["results"].as_object().unwrap() {
        md.push_str(&format!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            v["n"],
            v["p50_ms"].as_f64().unwrap(),
            v["p90_ms"].as_f64().unwrap(),
            v["p99_ms"].as_f64().unwrap(),
            v["max_ms"].as_f64().unwrap()
        ));
    }
    report::write("login", &report, &md);
    println!("{md}");
}
