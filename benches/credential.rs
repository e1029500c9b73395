//! Exec plugin benchmark: wall time of a whole `tka credential` process on a warm cache, as
//! kubectl experiences it (fork, exec, dynamic loading, argument parsing, one cache read, the JSON on stdout).
//! Target: p99 ≤ 5 ms.
//!
//! `cargo bench --bench credential [-- --runs N]` (the bench profile is the release build). Prints p50/p90/p99
//! and writes `target/bench/credential.json`. Numbers are reported, never asserted.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const SERVER: &str = "https://tka.bench.example";
const CLUSTER: &str = "bench";

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

fn main() {
    let mut runs = 1000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N");
        }
    }
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("cache");
    // A warm cache exactly as `tka credential` writes it.
    let key = hex::encode(Sha256::digest(format!("{SERVER}\n{CLUSTER}")));
    let dir = cache.join("tka/credentials");
    std::fs::create_dir_all(&dir).unwrap();
    let now = jiff::Timestamp::now();
    let hour = jiff::SignedDuration::from_secs(3600);
    let entry = serde_json::json!({
        "token": "bench-token-not-a-secret",
        "expires_at": now + hour,
        "refresh_at": now + hour - jiff::SignedDuration::from_secs(60),
    });
    std::fs::write(dir.join(format!("{key}.json")), entry.to_string()).unwrap();

    let exe = env!("CARGO_BIN_EXE_tka");
    let run = || {
        let t = Instant::now();
        let out = Command::new(exe)
            .args(["credential", "--server", SERVER, "--cluster", CLUSTER])
            .env_clear()
            .env("HOME", home.path())
            .env("XDG_CACHE_HOME", &cache)
            .env(
                "KUBERNETES_EXEC_INFO",
                r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false}}"#,
            )
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("tka runs");
        let took = t.elapsed();
        assert!(out.status.success(), "tka credential failed");
        assert!(
            out.stdout
                .starts_with(br#"{"apiVersion":"client.authentication.k8s.io/v1""#),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        took
    };
    for _ in 0..20 {
        run(); // warm the page cache
    }
    let mut samples: Vec<Duration> = (0..runs).map(|_| run()).collect();
    samples.sort();
    let report = serde_json::json!({
        "runs": runs,
        "p50_ms": percentile(&samples, 0.50),
        "p90_ms": percentile(&samples, 0.90),
        "p99_ms": percentile(&samples, 0.99),
        "max_ms": percentile(&samples, 1.0),
    });
    println!(
        "tka credential (warm cache, whole process, {runs} runs): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        report["p50_ms"].as_f64().unwrap(),
        report["p90_ms"].as_f64().unwrap(),
        report["p99_ms"].as_f64().unwrap(),
        report["max_ms"].as_f64().unwrap(),
    );
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("credential.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
}
