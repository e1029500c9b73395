//! Benchmark reports: each benchmark writes `target/bench/<name>.json` and `<name>.md`, and
//! `target/bench/report.md` is rebuilt from every section present, so benchmarks run separately still end
//! up in one report.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::{Value, json};

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench")
}

/// Commit, CPUs, profile and peer versions: what a number was measured on.
pub fn context() -> Value {
    // `TKA_BENCH_COMMIT`: what saved binaries of an earlier version were built from (HEAD has moved on).
    let commit = std::env::var("TKA_BENCH_COMMIT").ok().or_else(|| {
        std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    });
    let versions = std::fs::read_to_string(
        std::env::var("TKA_PEERS_BIN")
            .map(|b| format!("{b}/versions.txt"))
            .unwrap_or_else(|_| "tests/peers/bin/versions.txt".into()),
    )
    .unwrap_or_default();
    json!({
        "commit": commit,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "peers": versions.lines().collect::<Vec<_>>(),
    })
}

/// The load average (1, 5, 15 min) right now: other work on the machine, noted beside every number.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes `<name>.json` and `<name>.md`, then `report.md` from all sections (sorted by name).
pub fn write(name: &str, report: &Value, markdown: &str) {
    let dir = dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(report).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join(format!("{name}.md")), markdown).unwrap();
    let mut sections: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md") && !p.ends_with("report.md"))
        .collect();
    sections.sort();
    let all: Vec<String> = sections
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    std::fs::write(dir.join("report.md"), all.join("\n")).unwrap();
}
