//! The Grafana dashboard of the monitoring component (`tka-dashboard.json`) against what tka-server really
//! exports: a federation primary with a member serves logins, denials, kubeconfigs, exec credentials,
//! logouts, server errors and a reconcile error, a real Prometheus scrapes it as the ServiceMonitor does, and
//! every panel's query must return a number; every metric a panel names must be in the live scrape; every
//! data source is the `datasource` variable; the kustomize ConfigMap carries the file unchanged; and the JSON
//! satisfies Grafana's published dashboard types (`tests/monitoring/dashboard-schema.sh`).
//!
//! `TKA_DASHBOARD_PREVIEW=<file.json>` makes the data test run longer, with varying traffic, and write the
//! main panels' range data there (`tools/dashboard-preview.sh` turns it into the README's PNG).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use tka::operator::crd::{TkaSignin, TkaSigninSpec};

use crate::harness::{Env, Federated, Harness, User, eventually};
use crate::monitoring::{NAMESPACE, POD, Prometheus};

scenarios!(
    dashboard_every_panel_shows_data_from_a_real_server,
    dashboard_uses_only_the_datasource_variable_and_ships_as_the_sidecar_configmap,
    dashboard_satisfies_grafanas_published_schema,
);

const FILE: &str = "deploy/kustomize/components/monitoring/tka-dashboard.json";

fn dashboard() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(FILE);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included, except the rows themselves.
fn panels(d: &Value) -> Vec<&Value> {
    let top = d["panels"].as_array().expect("panels");
    top.iter()
        .flat_map(|p| std::iter::once(p).chain(p["panels"].as_array().into_iter().flatten()))
        .filter(|p| p["type"] != "row")
        .collect()
}

/// (panel title, legend, expression) of every query of every panel.
fn queries(d: &Value) -> Vec<(String, String, String)> {
    panels(d)
        .into_iter()
        .flat_map(|p| {
            p["targets"].as_array().unwrap().iter().map(move |t| {
                (
                    p["title"].as_str().unwrap().to_string(),
                    t["legendFormat"].as_str().unwrap_or_default().to_string(),
                    t["expr"].as_str().expect("a PromQL expr").to_string(),
                )
            })
        })
        .collect()
}

/// The expression as Grafana sends it for one namespace and pod: the template variables replaced
/// (`rate`: what Grafana makes `$__rate_interval`, at least four scrape intervals).
fn expand(expr: &str, rate: &str) -> String {
    expr.replace("$namespace", NAMESPACE)
        .replace("$pod", POD)
        .replace("$__rate_interval", rate)
        .replace("$__range", "5m")
}

/// The metric names a PromQL expression selects: identifiers that are not functions, keywords, label names
/// of a grouping clause or matcher, or parts of strings, numbers and durations.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    let chars: Vec<char> = expr.chars().collect();
    // The index after the `end` that closes what starts at `from`, stepping over quoted strings.
    let skip_to = |from: usize, end: char| {
        let mut j = from + 1;
        while j < chars.len() && chars[j] != end {
            if chars[j] == '"' && end != '"' {
                j = (j + 1..chars.len())
                    .find(|&k| chars[k] == '"')
                    .unwrap_or(chars.len());
            }
            j += 1;
        }
        j + 1
    };
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i = skip_to(i, '"');
        } else if c == '{' {
            i = skip_to(i, '}');
        } else if c == '[' {
            i = skip_to(i, ']');
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = (i..chars.len()).find(|&j| !chars[j].is_whitespace());
            let call = next.is_some_and(|j| chars[j] == '(');
            if GROUPING.contains(&word.as_str()) {
                if let Some(j) = next.filter(|_| call) {
                    i = skip_to(j, ')');
                }
            } else if !call
                && !KEYWORDS.contains(&word.to_lowercase().as_str())
                && !AGGREGATIONS.contains(&word.as_str())
            {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// A number in a query's result (NaN, which `histogram_quantile` gives over an idle window, is no data).
fn has_number(result: &[Value]) -> bool {
    result.iter().any(|s| {
        let values = s["values"].as_array().cloned().unwrap_or_default();
        s["value"]
            .as_array()
            .into_iter()
            .chain(values.iter().filter_map(Value::as_array))
            .any(|v| {
                v[1].as_str()
                    .is_some_and(|x| x.parse::<f64>().is_ok_and(f64::is_finite))
            })
    })
}

/// One round of what on-call wants to see: logins (fanned out to the member), a user without a grant, a
/// kubeconfig, an exec credential, a logout. `heavy` adds logins, for the preview's varying traffic.
async fn traffic(ok: &User, denied: &User, heavy: usize) {
    for _ in 0..=heavy {
        let (r, _) = ok.login().await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_eq!(denied.post("/api/v1alpha1/login").await.status, 403);
    let k = ok.get("/api/v1alpha1/kubeconfig?format=v1").await;
    assert_eq!(k.status, 200, "{}", k.text);
    let c = ok
        .get("/api/v1alpha1/exec-credential?cluster=primary")
        .await;
    assert_eq!(c.status, 200, "{}", c.text);
    let out = ok.post("/api/v1alpha1/logout").await;
    assert_eq!(out.status, 200, "{}", out.text);
}

/// A session object no reconcile can handle (its end lies beyond the last representable instant), as a
/// hand-edited or corrupted TkaSignin would be: the controller counts an `invalid_spec` error and backs off.
async fn broken_signin(h: &Harness) {
    let api: Api<TkaSignin> = Api::namespaced(h.admin.clone(), &h.ns);
    let mut s = TkaSignin::new(
        "tka-broken-abc",
        TkaSigninSpec {
            username: "broken@example.com".into(),
            role: "view".into(),
            validity_period: "8h0m0s".into(),
            subject_key: "broken-example-com-aaaaaaaa".into(),
            node_id: "nbroken".into(),
            ..Default::default()
        },
    );
    s.spec.requested_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "9999-12-30T21:00:00Z".parse().unwrap(),
    ));
    api.create(&PostParams::default(), &s).await.unwrap();
}

async fn dashboard_every_panel_shows_data_from_a_real_server(env: Arc<Env>) {
    let preview = std::env::var_os("TKA_DASHBOARD_PREVIEW").map(PathBuf::from);
    let fed = Federated::start(&env, "dash", |_| {}, |_| {}, |n| n).await;
    let h = &fed.primary;
    let prom = Prometheus::start(h.health_url.trim_start_matches("http://"));
    let ok = h.user(
        "dash@example.com",
        json!([{"role": "view", "period": "1h", "clusters": ["*"]}]),
    );
    let denied = h.user("dash-denied@example.com", json!([]));
    // A session that stays: the active-session gauges have a series only while one lives.
    let stays = h.user(
        "dash-stays@example.com",
        json!([{"role": "edit", "period": "1h"}]),
    );
    fed.wait_member(&ok, "healthy").await;
    // Rates need the traffic between two scrapes: wait for the first.
    let up = eventually(Duration::from_secs(60), || async {
        !prom.query(r#"up{job="tka-server"} == 1"#).await.is_empty()
    })
    .await;
    assert!(
        up.is_some(),
        "Prometheus never scraped the server: {}",
        prom.targets().await
    );
    broken_signin(h).await;
    assert_eq!(stays.login().await.0.status, 200);

    // A minute of varying traffic for the preview; a few rounds otherwise. Server errors (the identity
    // service down: 503) once in the middle.
    let rounds = if preview.is_some() { 45 } else { 6 };
    for round in 0..rounds {
        traffic(
            &ok,
            &denied,
            (round * 7 % 5) * usize::from(preview.is_some()),
        )
        .await;
        if round == rounds / 2 {
            h.identity.set_down(true);
            for _ in 0..(1 + round % 3) {
                assert_eq!(ok.post("/api/v1alpha1/login").await.status, 503);
            }
            h.identity.set_down(false);
        }
        tokio::time::sleep(Duration::from_millis(if preview.is_some() {
            1500
        } else {
            700
        }))
        .await;
    }

    let d = dashboard();
    let all = queries(&d);
    // Every metric a panel selects is in the live scrape (`up` is Prometheus's own, per target).
    let mut scraped = String::new();
    for path in ["/metrics", "/metrics/controller"] {
        scraped += &reqwest::get(format!("{}{path}", h.health_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    }
    let names: BTreeSet<String> = all.iter().flat_map(|(_, _, e)| metric_names(e)).collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| {
            *n != "up"
                && !scraped.lines().any(|l| {
                    l.strip_prefix(n.as_str())
                        .is_some_and(|r| r.starts_with(['{', ' ']))
                })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "panels use metrics the server does not export: {missing:?}"
    );
    assert!(
        names.len() > 20,
        "the name extraction found too little: {names:?}"
    );

    // Polled: the last scrape of the traffic may still be on its way.
    let deadline = Instant::now() + Duration::from_secs(30);
    let empty = loop {
        let mut empty = vec![];
        for (title, legend, expr) in &all {
            if !has_number(&prom.query(&expand(expr, "1m")).await) {
                empty.push(format!("{title} [{legend}]: {}", expand(expr, "1m")));
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            break empty;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    if !empty.is_empty() {
        let stored = prom
            .query(r#"count by (__name__) ({job="tka-server"})"#)
            .await;
        let stored: Vec<&str> = stored
            .iter()
            .filter_map(|s| s["metric"]["__name__"].as_str())
            .collect();
        panic!(
            "{} of {} panel queries return no data:\n{}\n\nPrometheus has: {stored:?}\nits targets: {}",
            empty.len(),
            all.len(),
            empty.join("\n"),
            prom.targets().await
        );
    }

    if let Some(file) = preview {
        write_preview(&prom, &d, &file).await;
    }
    fed.stop().await;
}

/// Range data of the main panels (title, unit, series) for `tools/dashboard-preview.py`.
async fn write_preview(prom: &Prometheus, d: &Value, file: &PathBuf) {
    let main = [
        "Login attempts by outcome",
        "Login latency",
        "Requests by status",
        "Active sessions by role",
        "Tokens minted",
        "ServiceAccounts",
        "Reconciles by action and result",
        "Federation members",
        "Requests rejected by authentication",
    ];
    let started = Instant::now();
    let mut out = vec![];
    for title in main {
        let p = panels(d)
            .into_iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title}"));
        let mut series = vec![];
        for t in p["targets"].as_array().unwrap() {
            // Grafana's rate interval for this range and step (1 s scrapes): the traffic's ups and downs show.
            let expr = expand(t["expr"].as_str().unwrap(), "10s");
            for s in prom.query_range(&expr, 120, 2).await {
                series.push(json!({"legend": legend(t["legendFormat"].as_str().unwrap_or(""), &s["metric"]), "values": s["values"]}));
            }
        }
        out.push(
            json!({"title": title, "unit": p["fieldConfig"]["defaults"]["unit"], "series": series}),
        );
    }
    std::fs::write(file, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    eprintln!("wrote {} ({:?})", file.display(), started.elapsed());
}

/// Grafana's legend: `{{label}}` replaced by the series' label value.
fn legend(format: &str, metric: &Value) -> String {
    let mut out = String::new();
    let mut rest = format;
    while let Some((before, after)) = rest.split_once("{{") {
        let Some((label, tail)) = after.split_once("}}") else {
            break;
        };
        out += before;
        out += metric[label.trim()].as_str().unwrap_or_default();
        rest = tail;
    }
    out + rest
}

/// Every `datasource` reference anywhere in the JSON, with its path.
fn datasources(v: &Value, path: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "datasource" && x.is_object() {
                    out.push((path.clone(), x.clone()));
                }
                datasources(x, format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                datasources(x, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

async fn dashboard_uses_only_the_datasource_variable_and_ships_as_the_sidecar_configmap(
    env: Arc<Env>,
) {
    let d = dashboard();
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(
        (&var("datasource")["type"], &var("datasource")["query"]),
        (&json!("datasource"), &json!("prometheus"))
    );
    assert!(
        var("namespace")["query"]["query"]
            .as_str()
            .unwrap()
            .contains("namespace")
    );
    assert!(
        var("pod")["query"]["query"]
            .as_str()
            .unwrap()
            .contains("pod")
    );
    let mut refs = vec![];
    datasources(&d, String::new(), &mut refs);
    let wrong: Vec<_> = refs
        .iter()
        .filter(|(_, ds)| *ds != json!({"type": "prometheus", "uid": "${datasource}"}))
        .collect();
    assert!(
        wrong.is_empty(),
        "data sources other than the variable: {wrong:?}"
    );
    // Every panel and query has one, so a changed default data source never changes what a panel shows.
    assert_eq!(refs.len(), 2 + panels(&d).len() + queries(&d).len());
    for (title, _, expr) in queries(&d) {
        assert!(
            expr.contains(r#"namespace="$namespace", pod=~"$pod""#),
            "{title}: not filtered by the namespace and pod variables: {expr}"
        );
    }
    // The name extraction the data test relies on.
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(tka_x_bucket{namespace="a", pod=~"b|c{d}"}[$__rate_interval]))) / on (pod) group_left tka_leader or vector(0) and time() - process_start_time_seconds > 1e3"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["process_start_time_seconds", "tka_leader", "tka_x_bucket"]
    );

    // The ConfigMap the component renders is the file, byte for byte, with the sidecar's label.
    let (_, docs) = crate::manifests::render(&env, "overlays/primary");
    let cm = crate::manifests::find(&docs, "ConfigMap", "tka-grafana-dashboard")
        .expect("the dashboard ConfigMap in overlays/primary");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["namespace"], "tka-system");
    let file =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(FILE)).unwrap();
    assert_eq!(
        cm["data"]["tka-dashboard.json"].as_str(),
        Some(file.as_str())
    );
}

async fn dashboard_satisfies_grafanas_published_schema(_env: Arc<Env>) {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/monitoring/dashboard-schema.sh");
    let out = std::process::Command::new(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed:\n{}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
