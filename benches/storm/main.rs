//! "Monday morning at scale": a login storm of many distinct users beside the floors (a bare kube client doing
//! the same writes: only the objects, or also the finalizer and Events the spec requires, see
//! [`floor::Writes`]), the apiserver pushing back with 429, controller provisioning and cleanup of pre-created
//! sessions beside their floors, tka-server's memory idle and with many sessions, and the binary sizes.
//!
//! `cargo bench --features integration --bench storm [-- --users 1000 --concurrency 100 --big 10000
//! --pushback 300 --skip floor,storm,pushback,footprint,big,static --as before]`; writes
//! `target/bench/storm.{json,md}` (with `--as L`: `storm-L.{json,md}`) and `target/bench/report.md`. When
//! `storm-before.json` exists (an earlier version measured with `--as before`, its `tka-server` given as
//! `TKA_SERVER_BIN`), the table shows it beside this run. Numbers are reported, never asserted. The apiserver
//! runs with API Priority and Fairness on and the FlowSchemas of deploy/kustomize/base/flowcontrol.yaml.

#[path = "../../tests/support/controlplane.rs"]
mod controlplane;
#[path = "../../tests/integration/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../support/report.rs"]
mod report;
#[path = "../support/stats.rs"]
mod stats;

mod apiserver;
mod census;
mod floor;
mod footprint;
mod pushback;
mod sizes;
mod storm;
mod table;

use serde_json::{Map, Value, json};

struct Args {
    users: usize,
    concurrency: usize,
    big: usize,
    pushback: usize,
    skip: Vec<String>,
    /// `--as`: the name of this run's report (e.g. `before`), none for the current version.
    label: Option<String>,
}

impl Args {
    fn parse() -> Args {
        let args: Vec<String> = std::env::args().collect();
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let number = |name: &str, default: usize| {
            value(name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} takes a number, not {v:?}"))
            })
        };
        Args {
            users: number("--users", 1000),
            concurrency: number("--concurrency", 100),
            big: number("--big", 10_000),
            pushback: number("--pushback", 300),
            skip: value("--skip")
                .map(|s| s.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            label: value("--as"),
        }
    }

    fn runs(&self, phase: &str) -> bool {
        !self.skip.iter().any(|s| s == phase)
    }
}

/// The documents of deploy/kustomize/base/flowcontrol.yaml.
pub fn flowcontrol_docs() -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kustomize/base/flowcontrol.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The shipped FlowSchemas and priority level, with the benchmark's namespaces in place of `tka-system`.
async fn install_flowcontrol(admin: &kube::Client, namespaces: &[&str]) {
    for mut doc in flowcontrol_docs() {
        if doc["kind"] == "FlowSchema" {
            for rule in doc["spec"]["rules"].as_array_mut().unwrap() {
                let subject = rule["subjects"][0].clone();
                rule["subjects"] = namespaces
                    .iter()
                    .map(|ns| {
                        let mut s = subject.clone();
                        s["serviceAccount"]["namespace"] = json!(format!("t-{ns}"));
                        s
                    })
                    .collect();
                for r in rule["resourceRules"].as_array_mut().into_iter().flatten() {
                    if r["namespaces"] != json!(["*"]) {
                        r["namespaces"] = namespaces.iter().map(|ns| format!("t-{ns}")).collect();
                    }
                }
            }
        }
        harness::apply_value(admin, &doc).await;
    }
}

/// Runs `phase` if not skipped, recording the load average before and after it.
async fn phase<F: Future<Output = Value>>(
    args: &Args,
    out: &mut Map<String, Value>,
    name: &str,
    f: impl FnOnce() -> F,
) {
    if !args.runs(name) {
        return;
    }
    eprintln!("== {name} (load {})", report::load());
    let before = report::load();
    let result = f().await;
    eprintln!("{}", serde_json::to_string(&result).unwrap());
    out.insert(name.into(), result);
    out.insert(
        format!("{name}_load"),
        json!({"before": before, "after": report::load()}),
    );
    // After every phase, so that an interrupted run keeps what it measured.
    write_report(args, out.clone());
}

/// `storm` or `storm-<label>`.
fn report_name(args: &Args) -> String {
    args.label
        .as_ref()
        .map_or("storm".into(), |l| format!("storm-{l}"))
}

fn write_report(args: &Args, results: Map<String, Value>) {
    let mut report = report::context();
    report["results"] = Value::Object(results);
    let before: Option<Value> = match args.label {
        Some(_) => None,
        None => std::fs::read_to_string(report::dir().join("storm-before.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok()),
    };
    let md = table::markdown(&report, before.as_ref(), args.label.as_deref());
    report::write(&report_name(args), &report, &md);
}

fn main() {
    let args = Args::parse();
    let options = controlplane::Options {
        priority_and_fairness: true,
    };
    let cp = controlplane::ControlPlane::start_with(options)
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    apiserver::count_cpu_of(cp.pids());
    let admin = rt.block_on(cp.admin_client());
    rt.block_on(harness::install_crd(&admin));
    let mut env = harness::Env { cp, admin };
    let (n, c) = (args.users, args.concurrency);
    let results = rt.block_on(async {
        let namespaces = [
            "floor-bare",
            "floor-spec",
            "storm",
            "pushback",
            "provfloor-bare",
            "provfloor-spec",
            "footprint",
        ];
        install_flowcontrol(&env.admin, &namespaces).await;
        let mut out = Map::new();
        phase(&args, &mut out, "floor", || {
            floor::both(&env, "floor", None, n, c, true)
        })
        .await;
        phase(&args, &mut out, "storm", || storm::run(&env, n, c)).await;
        let p = args.pushback;
        phase(&args, &mut out, "pushback", || pushback::run(&env, p, c)).await;
        let big = if args.runs("big") { args.big } else { 0 };
        phase(&args, &mut out, "footprint", || {
            footprint::run(&env, n, big, c)
        })
        .await;
        let build_static = args.runs("static");
        phase(&args, &mut out, "sizes", || async move {
            tokio::task::spawn_blocking(move || sizes::run(build_static))
                .await
                .unwrap()
        })
        .await;
        out
    });
    env.cp.stop();
    write_report(&args, results);
    let md =
        std::fs::read_to_string(report::dir().join(format!("{}.md", report_name(&args)))).unwrap();
    println!("{md}");
}
