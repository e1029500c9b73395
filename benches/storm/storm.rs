//! The login storm: `n` distinct tailnet identities (one loopback address each) log in with `wait` at a
//! fixed concurrency against the in-process server, then all log out. Meanwhile the health port is sampled,
//! a few logouts are timed, and one noisy node hammers the API to show the per-node limiter.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::apiserver;
use crate::census::Census;
use crate::harness::latencies as summary;
use crate::harness::{Env, Harness, User};
use crate::stats;

pub const LOGIN: &str = "/api/v1alpha1/login?wait=30s&include=kubeconfig&format=v1";
pub const LOGOUT: &str = "/api/v1alpha1/logout";
/// Users who log in before the storm and log out before (idle) or during it.
const PROBES: usize = 20;

fn rules() -> Value {
    json!([{"role": "view", "period": "1h"}])
}

/// A request that must answer 200; anything else is the error, with the server's error code.
pub async fn expect_ok(u: &User, path: &str) -> Result<(), String> {
    let r = u.post(path).await;
    if r.status == 200 {
        Ok(())
    } else {
        Err(format!(
            "{} {}",
            r.status,
            r.body["code"].as_str().unwrap_or(&r.text)
        ))
    }
}

async fn timed(u: &User, path: &str) -> Duration {
    let t = Instant::now();
    expect_ok(u, path)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    t.elapsed()
}

/// `/healthz`, `/ready` and `/metrics` every 100 ms until `stop`: their latencies.
async fn sample_health(base: String, mut stop: watch::Receiver<bool>) -> Value {
    let http = reqwest::Client::new();
    let paths = ["/healthz", "/ready", "/metrics"];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); paths.len()];
    while !*stop.borrow() {
        for (i, p) in paths.iter().enumerate() {
            let t = Instant::now();
            let ok = http
                .get(format!("{base}{p}"))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() < 600);
            if ok {
                samples[i].push(t.elapsed());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => {}
        }
    }
    let mut out = serde_json::Map::new();
    for (p, s) in paths.iter().zip(samples) {
        out.insert(p.to_string(), summary(s));
    }
    Value::Object(out)
}

/// One node sending `whoami` every 5 ms (ten times the default per-node limit of 20/s) until `stop`: how
/// many it sent and how many the per-node limiter turned away with 429.
async fn noisy_node(u: User, mut stop: watch::Receiver<bool>) -> Value {
    let (mut sent, mut limited) = (0, 0);
    while !*stop.borrow() {
        let r = u.get("/api/v1alpha1/whoami").await;
        sent += 1;
        if r.status == 429 {
            limited += 1;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            _ = stop.changed() => {}
        }
    }
    json!({"requests": sent, "rate_limited_429": limited})
}

pub async fn run(env: &Env, n: usize, concurrency: usize) -> Value {
    let h = Harness::with_config(env, "storm", |_| {}).await;
    let census = Census::start(&env.admin, &h.ns).await;
    let users: Vec<User> = (0..n)
        .map(|i| h.user(&format!("storm{i}@example.com"), rules()))
        .collect();
    let probes: Vec<User> = (0..PROBES)
        .map(|i| h.user(&format!("probe{i}@example.com"), rules()))
        .collect();
    let noisy = h.user("noisy@example.com", rules());

    // Idle: the probes log in one after another, half of them log out again.
    let mut idle_login = Vec::new();
    for p in &probes {
        idle_login.push(timed(p, LOGIN).await);
    }
    let mut idle_logout = Vec::new();
    for p in &probes[..PROBES / 2] {
        idle_logout.push(timed(p, LOGOUT).await);
    }
    let half = PROBES - PROBES / 2;
    census
        .until(Duration::from_secs(60), |c| c.exactly(half))
        .await
        .expect("idle probes cleaned up");

    let before = apiserver::scrape(&env.admin).await;
    let (stop, stop_rx) = watch::channel(false);
    let health = tokio::spawn(sample_health(h.health_url.clone(), stop_rx.clone()));
    let noise = tokio::spawn(noisy_node(noisy, stop_rx));
    let storm_logouts = async {
        let mut out = Vec::new();
        tokio::time::sleep(Duration::from_secs(1)).await;
        for p in &probes[PROBES / 2..] {
            out.push(timed(p, LOGOUT).await);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        out
    };
    let storm = stats::run(n, concurrency, |i| expect_ok(&users[i], LOGIN));
    let (storm, storm_logout) = tokio::join!(storm, storm_logouts);
    let _ = stop.send(true);
    let after = apiserver::scrape(&env.admin).await;
    let settled = census
        .until(Duration::from_secs(120), |c| c.exactly(n))
        .await;
    let objects = census.counts();

    let logout_started = Instant::now();
    let logouts = stats::run(n, concurrency, |i| expect_ok(&users[i], LOGOUT)).await;
    let (gone, timeline) = census
        .until_sampled(Duration::from_secs(600), |c| c.exactly(0))
        .await;
    let gone = gone.map(|_| logout_started.elapsed());
    let after_logout = apiserver::scrape(&env.admin).await;
    let left = census.counts();
    h.stop().await;
    json!({
        "users": n,
        "concurrency": concurrency,
        "login": storm.json(),
        "objects_after": objects,
        "objects_exact": settled.is_some(),
        "apiserver_during_logins": apiserver::report(&before, &after, n, "tka"),
        "health_during_storm": health.await.unwrap(),
        "noisy_node": noise.await.unwrap(),
        "logout_idle": summary(idle_logout),
        "logout_during_storm": summary(storm_logout),
        "login_idle": summary(idle_login),
        "logout": logouts.json(),
        "all_gone_after_logout_s": gone.map(|d| d.as_secs_f64()),
        "logout_timeline": timeline,
        "objects_left": left,
        "apiserver_during_logouts": apiserver::report(&after, &after_logout, n, "tka"),
    })
}
