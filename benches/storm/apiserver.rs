//! The apiserver's own account of a phase, from its `/metrics`: requests by verb and resource, and what API
//! Priority and Fairness did with tka's requests (dispatched, rejected with 429, time spent queued).

use std::collections::BTreeMap;

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
    json!({
        "requests_per_op": (total / per * 100.0).round() / 100.0,
        "requests_per_op_by_verb": by_verb,
        "tka_dispatched": d(&after.dispatched, &before.dispatched),
        "tka_rejected_429": d(&after.rejected, &before.rejected),
        "answered_429": minus(&after.too_many, &before.too_many),
        "tka_mean_queue_wait_ms": if waits > 0.0 { d(&after.wait_sum, &before.wait_sum) / waits * 1000.0 } else { 0.0 },
    })
}
