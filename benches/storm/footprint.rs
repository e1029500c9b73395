//! The release `tka-server` binary as its own process (so its RSS is its own): memory idle, with 1,000 and
//! with 10,000 live sessions, and the controller provisioning and cleaning up 1,000 pre-created TkaSignins
//! beside the floors doing the same writes.
//!
//! The process runs `tka-server serve` with a supervised tailscaled that has no control server to talk to:
//! after `tailscale.startTimeout` the server starts its controller and API anyway (answering 503 until the
//! tailnet runs), which is all the controller and the caches need.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tka::operator::crd::TkaSignin;

use crate::census::Census;
use crate::harness::{self, Env};
use crate::{apiserver, floor, stats};

/// A running `tka-server serve`; killed (with its tailscaled) when dropped.
pub struct Server {
    child: Child,
    health: String,
    pub dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `tka-server` under test: `TKA_SERVER_BIN` (a saved build, to measure an earlier version beside this
/// one), else the one cargo built with this benchmark.
pub fn server_bin() -> PathBuf {
    std::env::var_os("TKA_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tka-server")))
}

fn peers_bin() -> PathBuf {
    std::env::var_os("TKA_PEERS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/bin"))
}

impl Server {
    pub async fn start(env: &Env, ns: &str, client_token_kubeconfig: &Value) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("tka-bench-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let health_port = free_port();
        let kubeconfig = d.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            serde_yaml::to_string(client_token_kubeconfig).unwrap(),
        )
        .unwrap();
        let config = format!(
            "tailscale:\n  hostname: tka-bench\n  port: {api}\n  controlURL: http://127.0.0.1:{dead}\n  \
             stateDir: {d}/state\n  runDir: {d}/run\n  tailscaledPath: {ts}\n  startTimeout: 1s\n\
             health:\n  port: {health_port}\n  bindAddress: 127.0.0.1\n\
             operator:\n  namespace: {ns}\n  clusterName: bench\n  allowedRoles: [view, edit]\n  \
             leaderElection:\n    enabled: false\n\
             clusterInfo:\n  apiEndpoint: {endpoint}\n  caData: {ca}\n",
            api = free_port(),
            dead = free_port(),
            d = d.display(),
            ts = peers_bin().join("tailscaled").display(),
            endpoint = env.cp.server_url(),
            ca = data_encoding::BASE64.encode(env.cp.ca_pem().as_bytes()),
        );
        std::fs::write(d.join("config.yaml"), config).unwrap();
        let log = std::fs::File::create(d.join("tka-server.log")).unwrap();
        let child = Command::new(server_bin())
            .args(["serve", "--config"])
            .arg(d.join("config.yaml"))
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tka-server starts");
        let server = Server {
            child,
            health: format!("http://127.0.0.1:{health_port}"),
            dir,
        };
        server.wait_started().await;
        server
    }

    /// Until `/ready` shows the caches filled and the listener bound (the tailnet stays down).
    async fn wait_started(&self) {
        let http = reqwest::Client::new();
        let started = harness::eventually(Duration::from_secs(60), || async {
            let Ok(r) = http.get(format!("{}/ready", self.health)).send().await else {
                return false;
            };
            let body: Value = r.json().await.unwrap_or_default();
            body["checks"]["caches"] == true && body["checks"]["listener"] == true
        })
        .await;
        if started.is_none() {
            let log =
                std::fs::read_to_string(self.dir.path().join("tka-server.log")).unwrap_or_default();
            panic!("tka-server did not start:\n{log}");
        }
    }

    /// Sum and count of the controller's latency histograms so far, by `reconcile ACTION` and
    /// `kube VERB RESOURCE`: where a reconcile's time goes (waiting for the apiserver or not).
    pub async fn latencies(&self) -> BTreeMap<String, (f64, f64)> {
        let url = format!("{}/metrics/controller", self.health);
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for (name, l, v) in text.lines().filter_map(apiserver::parse) {
            let get = |k: &str| l.get(k).copied().unwrap_or("");
            let (histogram, is_sum) = match (name.strip_suffix("_sum"), name.strip_suffix("_count"))
            {
                (Some(h), _) => (h, true),
                (_, Some(h)) => (h, false),
                _ => continue,
            };
            let key = match histogram {
                "tka_controller_reconcile_duration_seconds" => {
                    format!("reconcile {}", get("action"))
                }
                "tka_kube_api_request_duration_seconds" => {
                    format!("kube {} {}", get("verb"), get("resource"))
                }
                _ => continue,
            };
            let e = out.entry(key).or_default();
            if is_sum { e.0 += v } else { e.1 += v }
        }
        out
    }

    /// VmRSS, RssAnon and RssFile of the process, in MiB.
    pub fn rss(&self) -> Value {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        json!({
            "rss_mib": kib("VmRSS:") / 1024.0,
            "anon_mib": kib("RssAnon:") / 1024.0,
            "file_mib": kib("RssFile:") / 1024.0,
        })
    }

    pub fn stop(mut self) {
        // SIGTERM: the ordered shutdown also stops its tailscaled.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn settle_rss(server: &Server) -> Value {
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.rss()
}

/// Creates `n` TkaSignins (`<prefix><i>`) as the admin at `concurrency` and waits until the census shows
/// `n` ready ones: the creation run and the time from the first create to the last Ready.
async fn create_and_wait(
    admin: &Client,
    census: &Census,
    ns: &str,
    prefix: &str,
    n: usize,
    concurrency: usize,
    limit: Duration,
) -> (stats::Run, Option<Duration>) {
    let api: Api<TkaSignin> = Api::namespaced(admin.clone(), ns);
    let started = Instant::now();
    let creates = stats::run(n, concurrency, |i| {
        let api = api.clone();
        async move {
            let s = floor::signin(
                ns,
                &format!("{prefix}{i}@example.com"),
                &format!("n{prefix}{i}"),
            );
            api.create(&PostParams::default(), &s)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let ready = census
        .until(limit, |c| c.ready >= n)
        .await
        .map(|_| started.elapsed());
    (creates, ready)
}

pub async fn run(env: &Env, n: usize, big: usize, concurrency: usize) -> Value {
    let admin = &env.admin;
    let (ns, server_client_token) = harness::server_namespace_kubeconfig(env, "footprint").await;
    let server = Server::start(env, &ns, &server_client_token).await;
    let census = Census::start(admin, &ns).await;
    let idle = settle_rss(&server).await;
    let latencies_idle = server.latencies().await;

    // The floors: the admin creates, a bare client with the server's identity writes the rest.
    let floors = floor::both(env, "provfloor", Some(admin), n, concurrency, false).await;

    let before = apiserver::scrape(admin).await;
    let (creates, ready) = create_and_wait(
        admin,
        &census,
        &ns,
        "fp",
        n,
        concurrency,
        Duration::from_secs(600),
    )
    .await;
    let after = apiserver::scrape(admin).await;
    let latencies_after_provision = server.latencies().await;
    let with_n = settle_rss(&server).await;
    let objects = census.counts();

    let api: Api<TkaSignin> = Api::namespaced(admin.clone(), &ns);
    let started = Instant::now();
    let deletes = stats::run(n, concurrency, |i| {
        let api = api.clone();
        async move {
            let name = tka::model::naming::signin_name(
                &tka::model::naming::subject_key(&format!("fp{i}@example.com")),
                &tka::model::naming::node_key(&format!("nfp{i}")),
            );
            api.delete(&name, &DeleteParams::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let (gone, timeline) = census
        .until_sampled(Duration::from_secs(600), |c| c.exactly(0))
        .await;
    let gone = gone.map(|_| started.elapsed());
    let after_cleanup = apiserver::scrape(admin).await;
    let latencies_after_cleanup = server.latencies().await;

    let big_result = if big > 0 {
        let (creates, ready) = create_and_wait(
            admin,
            &census,
            &ns,
            "big",
            big,
            concurrency,
            Duration::from_secs(1800),
        )
        .await;
        let rss = settle_rss(&server).await;
        // Ready sessions when the wait ended: all of them unless it timed out.
        json!({"sessions": big, "create": creates.json(), "all_ready_s": ready.map(|d| d.as_secs_f64()),
            "ready": census.counts().ready, "rss": rss})
    } else {
        Value::Null
    };
    server.stop();

    let rate = |d: Option<Duration>| d.map(|d| n as f64 / d.as_secs_f64());
    json!({
        "sessions": n,
        "concurrency": concurrency,
        "rss_idle": idle,
        "rss_with_sessions": with_n,
        "provision": {
            "create": creates.json(),
            "all_ready_s": ready.map(|d| d.as_secs_f64()),
            "per_s": rate(ready),
            "objects": objects,
            "mean_ms": mean_ms(&latencies_idle, &latencies_after_provision),
            "apiserver": apiserver::report(&before, &after, n, "tka"),
        },
        "cleanup": {
            "delete": deletes.json(),
            "all_gone_s": gone.map(|d| d.as_secs_f64()),
            "per_s": rate(gone),
            "timeline": timeline,
            "mean_ms": mean_ms(&latencies_after_provision, &latencies_after_cleanup),
            "apiserver": apiserver::report(&after, &after_cleanup, n, "tka"),
        },
        "floor": floors,
        "big": big_result,
    })
}

/// Mean latency in ms and count between two [`Server::latencies`], for what happened at least 10 times.
fn mean_ms(
    before: &BTreeMap<String, (f64, f64)>,
    after: &BTreeMap<String, (f64, f64)>,
) -> BTreeMap<String, (f64, f64)> {
    after
        .iter()
        .filter_map(|(k, (sum, n))| {
            let (s0, n0) = before.get(k).copied().unwrap_or_default();
            let n = n - n0;
            (n >= 10.0).then(|| (k.clone(), (((sum - s0) / n * 1e4).round() / 10.0, n)))
        })
        .collect()
}
