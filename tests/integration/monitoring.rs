//! The deployment guide's monitoring (deploy-production.md "PrometheusRule") against
//! what tka-server really exports: `promtool check rules`/`test rules` on the rules as the monitoring
//! component ships them, `promtool check metrics` on a live scrape, and a real Prometheus scraping a running
//! server that must see `TKAHighErrorRate` go pending on server errors (and only on those) and
//! `TKAServerDown` once the server stops. Needs Debian's `prometheus` package (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use serde_json::Value;

use crate::harness::{Env, Harness, eventually};

scenarios!(
    monitoring_promtool_checks_the_rules_and_a_live_scrape,
    monitoring_prometheus_evaluates_the_guides_alerts_against_a_running_server,
);

const VIEW: &str = r#"[{"role": "view", "period": "1h"}]"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The PrometheusRule's `spec` (a Prometheus rules file) in `dir/rules.yml`.
fn write_rules(dir: &Path) -> PathBuf {
    let rule: Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            repo().join("deploy/kustomize/components/monitoring/prometheusrule.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(rule["kind"], "PrometheusRule");
    let path = dir.join("rules.yml");
    std::fs::write(&path, serde_yaml::to_string(&rule["spec"]).unwrap()).unwrap();
    path
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn scrape(h: &Harness, path: &str) -> String {
    reqwest::get(format!("{}{path}", h.health_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn monitoring_promtool_checks_the_rules_and_a_live_scrape(env: Arc<Env>) {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules(dir.path());
    let (ok, out) = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert!(ok, "promtool check rules: {out}");
    std::fs::copy(
        repo().join("tests/monitoring/rules.test.yaml"),
        dir.path().join("rules.test.yaml"),
    )
    .unwrap();
    let (ok, out) = promtool(
        &[
            "test",
            "rules",
            dir.path().join("rules.test.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "promtool test rules: {out}");

    // A live scrape after some traffic: both registries pass promtool's exposition lint, and the series the
    // rules select exist with the labels they use.
    let h = Harness::new(&env, "promtool").await;
    let u = h.user("prom@example.com", serde_json::from_str(VIEW).unwrap());
    assert_eq!(u.login().await.0.status, 200);
    for path in ["/metrics", "/metrics/controller"] {
        let text = scrape(&h, path).await;
        let (ok, out) = promtool(&["check", "metrics"], Some(&text));
        assert!(ok, "promtool check metrics {path}: {out}\n{text}");
    }
    let text = scrape(&h, "/metrics").await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("tka_server_requests_total{")
                && l.contains(r#"method="POST""#)
                && l.contains(r#"route="/api/v1alpha1/login""#)
                && l.contains(r#"status="200""#)),
        "no tka_server_requests_total with method, route and numeric status:\n{text}"
    );
    assert!(
        !text.contains("prom@example.com"),
        "a user name in the metrics"
    );
    // Controller gauges computed from the cache: one live view session, nothing waiting once it is ready.
    let controller = scrape(&h, "/metrics/controller").await;
    for want in [
        r#"tka_active_user_sessions{cluster_role="view"} 1"#,
        "tka_controller_queue_depth 0",
        "tka_controller_managed_signins 1",
    ] {
        assert!(
            controller.lines().any(|l| l == want),
            "no `{want}` in /metrics/controller:\n{controller}"
        );
    }
    assert!(
        controller
            .lines()
            .any(|l| l.starts_with(r#"tka_controller_requeues_total{reason="scheduled"}"#)),
        "the live session's expiry is scheduled as a requeue:\n{controller}"
    );
    h.stop().await;
}

/// The namespace and pod labels the ServiceMonitor's targets carry in a cluster, given to the test scrapes.
pub const NAMESPACE: &str = "tka-system";
pub const POD: &str = "tka-server-0";

/// A Prometheus server on a free loopback port, killed on drop.
pub struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` (`host:port` of the health port) every second as the monitoring component's
    /// ServiceMonitor does in a cluster: `/metrics` and `/metrics/controller`, both with the job label of the
    /// Service (`tka-server`, which TKAServerDown selects on) and the target labels the Prometheus Operator
    /// adds (`namespace`, `pod`, `endpoint`), which the dashboard's variables select on.
    pub fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        write_rules(dir.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let labels =
            format!("{{job: tka-server, namespace: {NAMESPACE}, pod: {POD}, endpoint: metrics}}");
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [rules.yml]\n\
             scrape_configs:\n\
             - job_name: tka-server\n  metrics_path: /metrics\n  static_configs: [{{targets: ['{target}'], labels: {labels}}}]\n\
             - job_name: tka-server-controller\n  metrics_path: /metrics/controller\n  static_configs: [{{targets: ['{target}'], labels: {labels}}}]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .current_dir(dir.path())
            .args([
                "--config.file=prometheus.yml",
                "--storage.tsdb.path=data",
                &format!("--web.listen-address=127.0.0.1:{port}"),
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package prometheus) is installed");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// Prometheus's view of its targets (health, last error), for failure messages.
    pub async fn targets(&self) -> String {
        match reqwest::get(format!("{}/api/v1/targets", self.url)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        }
    }

    /// The result vector of an instant query; empty while Prometheus is not up yet.
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        self.api("query", &[("query", expr)]).await
    }

    /// The result matrix of a range query over the last `seconds`, one point per `step` seconds.
    pub async fn query_range(&self, expr: &str, seconds: u64, step: u64) -> Vec<Value> {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let (start, end, step) = (
            (end - seconds).to_string(),
            end.to_string(),
            step.to_string(),
        );
        self.api(
            "query_range",
            &[
                ("query", expr),
                ("start", &start),
                ("end", &end),
                ("step", &step),
            ],
        )
        .await
    }

    /// An API call's `data.result`; a query Prometheus rejects fails the test with its error.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Vec<Value> {
        let r: Value = match reqwest::Client::new()
            .get(format!("{}/api/v1/{path}", self.url))
            .query(params)
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => return vec![],
        };
        assert_ne!(
            r["errorType"], "bad_data",
            "Prometheus rejects {params:?}: {r}"
        );
        r["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Active alerts (pending or firing) named `name`.
    async fn alert(&self, name: &str) -> Vec<Value> {
        self.query(&format!(r#"ALERTS{{alertname="{name}"}}"#))
            .await
    }
}

async fn monitoring_prometheus_evaluates_the_guides_alerts_against_a_running_server(env: Arc<Env>) {
    // The 503 phase sends ~100 requests/s from one node: above the default budget, which would answer 429.
    let h = Harness::with_config(&env, "prometheus", |c| c.api.rate_limit = 1000).await;
    let prom = Prometheus::start(h.health_url.trim_start_matches("http://"));
    let up = eventually(Duration::from_secs(30), || async {
        prom.query(r#"up{job="tka-server"} == 1"#).await.len() == 1
    })
    .await;
    assert!(up.is_some(), "Prometheus never scraped the server");

    // Successes and client errors (a user without a grant): no alert.
    let ok = h.user("prom-ok@example.com", serde_json::from_str(VIEW).unwrap());
    let denied = h.user("prom-denied@example.com", serde_json::json!([]));
    for _ in 0..6 {
        assert_eq!(ok.login().await.0.status, 200);
        for _ in 0..5 {
            assert_eq!(denied.post("/api/v1alpha1/login").await.status, 403);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        !prom
            .query(r#"tka_server_requests_total{status=~"4.."}"#)
            .await
            .is_empty(),
        "Prometheus has the 4xx series"
    );
    assert!(
        prom.alert("TKAHighErrorRate").await.is_empty(),
        "client errors raised TKAHighErrorRate"
    );

    // Server errors: the identity service fails, every request is a 503; the rule's expression selects them.
    h.identity.set_down(true);
    let pending = eventually(Duration::from_secs(30), || async {
        for _ in 0..5 {
            assert_eq!(ok.post("/api/v1alpha1/login").await.status, 503);
        }
        prom.alert("TKAHighErrorRate")
            .await
            .iter()
            .any(|a| a["metric"]["status"] == "503" && a["metric"]["alertstate"] == "pending")
    })
    .await;
    assert!(
        pending.is_some(),
        "TKAHighErrorRate never went pending on 503s: {:?}",
        prom.query(r#"rate(tka_server_requests_total{status=~"5.."}[5m])"#)
            .await
    );
    h.identity.set_down(false);

    // The server stops answering scrapes: TKAServerDown goes pending.
    h.stop().await;
    let down = eventually(Duration::from_secs(30), || async {
        !prom.alert("TKAServerDown").await.is_empty()
    })
    .await;
    assert!(down.is_some(), "TKAServerDown never went pending");
}
