//! The apiserver's own account of a phase, from its `/metrics`: requests by verb and resource, and what API
//! Priority and Fairness did with tka's requests (dispatched, rejected with 429, time spent queued); and where
//! the machine's CPU went meanwhile, which says whether a phase was CPU-bound and what one operation costs the
//! apiserver and etcd.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use kube::Client;
use serde_json::{Value, json};

/// Counters summed by a key built from their labels.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// `apiserver_request_total` by `VERB resource[/subresource]`, without WATCH (long-running).
    pub requests: BTreeMap<String, f64>,
    /// `apiserver_flowcontrol_dispatched_requests_total` by priority level.
    pub dispatched: BTreeMap<String, f64>,
    /// `apiserver_flowcontrol_rejected_requests_total` by priority level.
    pub rejected: BTreeMap<String, f64>,
    /// `apiserver_request_total` answered 429, by `VERB resource`.
    pub too_many: BTreeMap<String, f64>,
    /// Sum and count of `apiserver_flowcontrol_request_wait_duration_seconds` by priority level.
    pub wait_sum: BTreeMap<String, f64>,
    pub wait_count: BTreeMap<String, f64>,
    /// CPU seconds used so far by each process of [`count_cpu_of`] and by this one (`bench`: the clients and
    /// an in-process tka-server).
    pub cpu: BTreeMap<String, f64>,
    /// The machine's busy and total CPU seconds so far, over all CPUs (`/proc/stat`).
    pub machine_busy: f64,
    pub machine_all: f64,
}

static PROCESSES: OnceLock<Vec<(&'static str, u32)>> = OnceLock::new();

/// The control plane's processes, whose CPU time every scrape records.
pub fn count_cpu_of(pids: Vec<(&'static str, u32)>) {
    let _ = PROCESSES.set(pids);
}

/// Linux reports CPU times in USER_HZ, which is 100 on every architecture that matters here.
const TICKS_PER_S: f64 = 100.0;

/// utime + stime of `/proc/<pid>/stat` in seconds (fields 14 and 15, counted after the `(comm)` field,
/// which may hold spaces).
fn process_cpu_s(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / TICKS_PER_S)
}

/// (busy, all) CPU seconds of the machine: the `cpu` line of `/proc/stat`, idle and iowait not busy.
fn machine_cpu_s() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let all: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).unwrap_or(&0.0) + ticks.get(4).unwrap_or(&0.0);
    ((all - idle) / TICKS_PER_S, all / TICKS_PER_S)
}

/// `name{k="v",...} value` → (name, labels, value); `None` for comments and unparsable lines.
pub fn parse(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    if line.starts_with('#') {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => (n, rest.strip_suffix('}')?),
        None => (head, ""),
    };
    let mut map = BTreeMap::new();
    let mut rest = labels;
    while let Some((k, after)) = rest.split_once("=\"") {
        let (v, tail) = after.split_once('"')?;
        map.insert(k.trim_start_matches(','), v);
        rest = tail;
    }
    Some((name, map, value))
}

pub async fn scrape(admin: &Client) -> Scrape {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = admin.request_text(req).await.expect("apiserver /metrics");
    let mut s = Scrape::default();
    let processes = PROCESSES.get().into_iter().flatten();
    for (name, pid) in processes
        .map(|(n, p)| (*n, p.to_string()))
        .chain([("bench", "self".into())])
    {
        if let Some(cpu) = process_cpu_s(&pid) {
            s.cpu.insert(name.into(), cpu);
        }
    }
    (s.machine_busy, s.machine_all) = machine_cpu_s();
    for (name, l, v) in text.lines().filter_map(parse) {
        let get = |k: &str| l.get(k).copied().unwrap_or("");
        let add = |m: &mut BTreeMap<String, f64>, key: String| *m.entry(key).or_default() += v;
        match name {
            "apiserver_request_total" if get("verb") != "WATCH" => {
                let sub = get("subresource");
                let key = if sub.is_empty() {
                    format!("{} {}", get("verb"), get("resource"))
                } else {
                    format!("{} {}/{sub}", get("verb"), get("resource"))
                };
                if get("code") == "429" {
                    add(&mut s.too_many, key.clone());
                }
                add(&mut s.requests, key);
            }
            "apiserver_flowcontrol_dispatched_requests_total" => {
                add(&mut s.dispatched, get("priority_level").into())
            }
            "apiserver_flowcontrol_rejected_requests_total" => {
                add(&mut s.rejected, get("priority_level").into())
            }
            "apiserver_flowcontrol_request_wait_duration_seconds_sum" => {
                add(&mut s.wait_sum, get("priority_level").into())
            }
            "apiserver_flowcontrol_request_wait_duration_seconds_count" => {
                add(&mut s.wait_count, get("priority_level").into())
            }
            _ => {}
        }
    }
    s
}

fn minus(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// What happened between two scrapes, per `per` operations (e.g. per login), for priority level `level`.
pub fn report(before: &Scrape, after: &Scrape, per: usize, level: &str) -> Value {
    let per = per.max(1) as f64;
    let requests = minus(&after.requests, &before.requests);
    let total: f64 = requests.values().sum();
    let by_verb: BTreeMap<String, f64> = requests
        .iter()
        .filter(|(_, v)| **v >= per / 10.0)
        .map(|(k, v)| (k.clone(), (v / per * 100.0).round() / 100.0))
        .collect();
    let d = |m: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| {
        m.get(level).copied().unwrap_or(0.0) - b.get(level).copied().unwrap_or(0.0)
    };
    let waits = d(&after.wait_count, &before.wait_count);
    let cpu_ms: BTreeMap<String, f64> = after
        .cpu
        .iter()
        .map(|(k, v)| {
            let used = v - before.cpu.get(k).copied().unwrap_or(0.0);
            (k.clone(), (used / per * 1e5).round() / 100.0)
        })
        .collect();
    let all = after.machine_all - before.machine_all;
    let busy = if all > 0.0 {
        (after.machine_busy - before.machine_busy) / all * 100.0
    } else {
        0.0
    };
    json!({
        "requests_per_op": (total / per * 100.0).round() / 100.0,
        "requests_per_op_by_verb": by_verb,
        "tka_dispatched": d(&after.dispatched, &before.dispatched),
        "tka_rejected_429": d(&after.rejected, &before.rejected),
        "answered_429": minus(&after.too_many, &before.too_many),
        "cpu_ms_per_op": cpu_ms,
        "machine_busy_pct": busy.round(),
        "tka_mean_queue_wait_ms": if waits > 0.0 { d(&after.wait_sum, &before.wait_sum) / waits * 1000.0 } else { 0.0 },
    })
}
