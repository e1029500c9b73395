//! What the per-peer limits cost on the request path, server and client in one process on loopback: an
//! authorized request (`whoami`, WhoIs and grant evaluation) on a kept-alive connection and on a fresh one
//! (accept, the peer's place among its connections, the request), a request over the peer's budget (429
//! before WhoIs), and a connection over the peer's cap (closed at once).
//!
//! `cargo bench --features integration --bench limits [-- --requests N]`; prints a table and writes
//! `target/bench/limits.json`. Numbers are reported, never asserted.

#[path = "../tests/support/controlplane.rs"]
mod controlplane;
#[path = "../tests/integration/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncReadExt;

async fn timed<F: std::future::Future<Output = u16>>(want: u16, f: F) -> Duration {
    let t = Instant::now();
    let status = f.await;
    assert_eq!(status, want);
    t.elapsed()
}

async fn run(env: &harness::Env, n: usize) -> serde_json::Value {
    let grant = json!([{"role": "view", "period": "1h"}]);
    let h = harness::Harness::with_config(env, "bench-limits", |c| {
        c.api.rate_limit = 1_000_000;
        c.api.rate_burst = 1_000_000;
    })
    .await;
    let cap = h.config.server.max_connections_per_peer as usize;
    let u = h.user("bench@example.com", grant.clone());
    let mut kept = Vec::new();
    for _ in 0..n {
        kept.push(timed(200, async { u.get("/api/v1alpha1/whoami").await.status }).await);
    }
    let fresh_client = reqwest::Client::builder()
        .local_address(u.ip)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let fresh_user = harness::User {
        ip: u.ip,
        http: fresh_client,
        base: u.base.clone(),
    };
    let mut fresh = Vec::new();
    for _ in 0..n {
        fresh.push(
            timed(200, async {
                fresh_user.get("/api/v1alpha1/whoami").await.status
            })
            .await,
        );
    }
    // Idle connections hold all the peer's places; every further one is closed at once.
    let mut held = Vec::new();
    for _ in 0..cap {
        held.push(connect(u.ip, h.listener_addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut refused = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let mut s = connect(u.ip, h.listener_addr).await;
        let mut buf = [0u8; 16];
        assert!(matches!(s.read(&mut buf).await, Ok(0) | Err(_)));
        refused.push(t.elapsed());
    }
    drop(held);
    h.stop().await;

    let h = harness::Harness::with_config(env, "bench-429", |c| {
        c.api.rate_limit = 1;
        c.api.rate_burst = 1;
    })
    .await;
    let u = h.user("over@example.com", grant);
    // One request a second refills the budget: only the 429 answers are counted.
    let mut limited = Vec::new();
    while limited.len() < n {
        let t = Instant::now();
        if u.get("/api/v1alpha1/whoami").await.status == 429 {
            limited.push(t.elapsed());
        }
    }
    h.stop().await;
    json!({
        "whoami_kept_alive": harness::latencies(kept),
        "whoami_new_connection": harness::latencies(fresh),
        "over_budget_429": harness::latencies(limited),
        "over_connection_cap_closed": harness::latencies(refused),
    })
}

async fn connect(ip: std::net::IpAddr, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args
        .iter()
        .position(|a| a == "--requests")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let (rt, mut env) = harness::bench_env();
    let results = rt.block_on(run(&env, n));
    env.cp.stop();
    println!(
        "profile: {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!("| what | n | p50 ms | p99 ms |\n|---|---|---|---|");
    for (name, v) in results.as_object().unwrap() {
        println!(
            "| {name} | {} | {:.3} | {:.3} |",
            v["n"],
            v["p50_ms"].as_f64().unwrap(),
            v["p99_ms"].as_f64().unwrap()
        );
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("limits.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
}
