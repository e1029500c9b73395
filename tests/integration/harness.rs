//! Per-test environment: a namespace, the server's least-privilege ServiceAccount and RBAC, an in-process
//! tka-server (real controller, real API listener) talking to the real apiserver, and test users who
//! connect from their own loopback address (the static identity backend maps address → identity, as
//! tailscaled's WhoIs does).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use data_encoding::BASE64;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use serde_json::{Value, json};
use tka::config::Config;
use tka::identity::{PeerIdentity, StaticIdentity};
use tka::server::{Parts, Running};

use crate::controlplane::ControlPlane;

pub const CAP: &str = "specht-labs.de/cap/tka";
pub const CLUSTER: &str = "test-cluster";

/// Shared by all tests of the binary.
pub struct Env {
    pub cp: ControlPlane,
    pub admin: Client,
}

static NEXT_HOST: AtomicU16 = AtomicU16::new(10);

/// Removes every `TKA_*` variable the test process inherited (the developer's or CI's shell) from `cmd`'s
/// environment: a child runs with only the configuration its test gives it, and reports no warning about a
/// variable nobody meant for it.
pub fn without_tka_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for (name, _) in std::env::vars_os().filter(|(n, _)| n.to_string_lossy().starts_with("TKA_")) {
        cmd.env_remove(name);
    }
    cmd
}

/// A fresh loopback address for one test user (127.<n>.<m>.1), unique within the test binary.
pub fn fresh_ip() -> IpAddr {
    let n = NEXT_HOST.fetch_add(1, Ordering::SeqCst);
    IpAddr::V4(Ipv4Addr::new(127, 1 + (n >> 8) as u8, n as u8, 1))
}

pub struct Harness {
    pub ns: String,
    pub config: Config,
    pub identity: Arc<StaticIdentity>,
    /// What the server actually asks; the static map unless a test swaps in another backend.
    pub backend: Arc<dyn tka::identity::Identity>,
    /// `/ready`, `/metrics` and friends.
    pub health_url: String,
    /// The server's own client: a token of SA `tka-controller`, bound only by the generated RBAC.
    pub server_client: Client,
    /// What it is built from: each server start gets its own client with request metrics.
    pub server_config: kube::Config,
    pub admin: Client,
    pub server: Option<Running>,
    pub url: String,
    pub listener_addr: SocketAddr,
    /// Certificate and key files the API serves TLS with; plain HTTP when `None`.
    pub tls_files: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// Kube client from a kubeconfig document (YAML or JSON value).
pub async fn client_from(doc: &Value) -> Client {
    Client::try_from(config_from(doc).await).expect("client")
}

/// Kube client configuration from a kubeconfig document.
pub async fn config_from(doc: &Value) -> kube::Config {
    let kc =
        Kubeconfig::from_yaml(&serde_yaml::to_string(doc).unwrap()).expect("kubeconfig parses");
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads")
}

pub fn token_kubeconfig(server: &str, ca_pem: &str, token: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": BASE64.encode(ca_pem.as_bytes())}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    })
}

/// Server-side applies a list of YAML documents as the admin.
pub async fn apply_yaml(admin: &Client, yaml: &str) {
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value: Value = serde::Deserialize::deserialize(doc).unwrap();
        if value.is_null() {
            continue;
        }
        apply_value(admin, &value).await;
    }
}

pub async fn apply_value(admin: &Client, value: &Value) {
    let (group, version) = match value["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            value["apiVersion"].as_str().unwrap().to_string(),
        ),
    };
    let kind = value["kind"].as_str().unwrap();
    let gvk = GroupVersionKind::gvk(&group, &version, kind);
    let plural = match kind {
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "CustomResourceDefinition" => "customresourcedefinitions",
        "Namespace" => "namespaces",
        "FlowSchema" => "flowschemas",
        "PriorityLevelConfiguration" => "prioritylevelconfigurations",
        "ValidatingAdmissionPolicy" => "validatingadmissionpolicies",
        "ValidatingAdmissionPolicyBinding" => "validatingadmissionpolicybindings",
        other => panic!("add a plural for {other}"),
    };
    let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
    let name = value["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = match value["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(admin.clone(), ns, &ar),
        None => Api::all_with(admin.clone(), &ar),
    };
    api.patch(
        name,
        &PatchParams::apply("tka-tests").force(),
        &Patch::Apply(value),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
}

/// The roles every test server may grant.
pub fn server_roles() -> Vec<String> {
    vec!["view".to_string(), "edit".to_string()]
}

/// Namespace `t-<name>` with the server's ServiceAccount `tka-controller` and the RBAC `tka-server rbac`
/// prints (cluster-scoped names made unique per namespace); returns the namespace and a client with a token
/// of that ServiceAccount, i.e. exactly what the server may do.
#[allow(dead_code)] // the storm benchmark's floor; the tests start a whole server
pub async fn server_namespace(env: &Env, name: &str) -> (String, Client) {
    let (ns, kubeconfig) = server_namespace_kubeconfig(env, name).await;
    (ns, client_from(&kubeconfig).await)
}

/// [`server_namespace`], with the client as a kubeconfig document (for a server in its own process).
pub async fn server_namespace_kubeconfig(env: &Env, name: &str) -> (String, Value) {
    let ns = format!("t-{name}");
    let admin = env.admin.clone();
    apply_value(
        &admin,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns);
    let sa = ServiceAccount {
        metadata: kube::core::ObjectMeta {
            name: Some("tka-controller".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let _ = sas.create(&PostParams::default(), &sa).await;
    let grantable = tka::operator::rbac::GrantableRoles::new(server_roles()).unwrap();
    let rbac = tka::operator::rbac::manifests(&ns, &grantable)
        // Cluster-scoped objects and the kube-public Role are shared by name; make them per test.
        .replace("name: tka-server\n", &format!("name: tka-server-{ns}\n"))
        .replace(
            "name: tka-server-cluster-info\n",
            &format!("name: tka-server-cluster-info-{ns}\n"),
        );
    apply_yaml(&admin, &rbac).await;
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            // Long enough for the scale benchmark's longest run.
            expiration_seconds: Some(6 * 3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = sas
        .create_token_request("tka-controller", &PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    (
        ns,
        token_kubeconfig(&env.cp.server_url(), &env.cp.ca_pem(), &token),
    )
}

impl Harness {
    /// A namespace of its own, RBAC as `tka-server rbac` prints it (cluster-scoped names made unique per
    /// test), and a started server.
    pub async fn new(env: &Env, name: &str) -> Harness {
        Harness::with_config(env, name, |_| {}).await
    }

    pub async fn with_config(env: &Env, name: &str, tweak: impl FnOnce(&mut Config)) -> Harness {
        // `TKA_TEST_LOG=debug` shows the server's logs while debugging a test.
        if let Ok(level) = std::env::var("TKA_TEST_LOG") {
            tka::telemetry::logging::init(&level, "text", None);
        }
        let (ns, kubeconfig) = server_namespace_kubeconfig(env, name).await;
        let server_config = config_from(&kubeconfig).await;
        let server_client = Client::try_from(server_config.clone()).expect("client");
        let admin = env.admin.clone();
        let mut config = Config::default();
        config.operator.namespace = ns.clone();
        config.operator.cluster_name = CLUSTER.into();
        config.operator.allowed_roles = server_roles();
        config.cluster_info.api_endpoint = env.cp.server_url();
        config.cluster_info.ca_data = BASE64.encode(env.cp.ca_pem().as_bytes());
        config.tailscale.port = 8443;
        tweak(&mut config);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener_addr = listener.local_addr().unwrap();
        let identity = Arc::new(StaticIdentity::new());
        let backend: Arc<dyn tka::identity::Identity> = identity.clone();
        let mut h = Harness {
            ns,
            config,
            identity,
            backend,
            health_url: String::new(),
            server_client,
            server_config,
            admin,
            server: None,
            url: format!("http://{listener_addr}"),
            listener_addr,
            tls_files: None,
        };
        h.start_with(listener).await;
        h
    }

    async fn start_with(&mut self, listener: tokio::net::TcpListener) {
        let health = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.health_url = format!("http://{}", health.local_addr().unwrap());
        // The server's client counts its Kubernetes API requests into the server's registries, as the one
        // `tka-server serve` builds does (fresh ones per start, like a new process).
        let metrics = Arc::new(tka::telemetry::Metrics::new(self.backend.backend()));
        let client = tka::server::apiserver::client(self.server_config.clone(), metrics.clone())
            .expect("client config");
        let parts = Parts {
            client,
            identity: self.backend.clone(),
            api_listeners: vec![listener],
            tls: match &self.tls_files {
                Some((cert, key)) => {
                    let files = tka::api::tls::CertSource::Files {
                        cert: cert.clone(),
                        key: key.clone(),
                    };
                    Some(
                        tka::api::tls::start(files, "tka.test".into())
                            .await
                            .expect("TLS"),
                    )
                }
                None => None,
            },
            health_listener: Some(health),
        };
        self.server = Some(
            tka::server::start_with_metrics(&self.config, parts, metrics)
                .await
                .unwrap_or_else(|e| panic!("server start: {e}")),
        );
    }

    /// Restarts the server with another identity backend.
    pub async fn use_backend(&mut self, backend: Arc<dyn tka::identity::Identity>) {
        self.backend = backend;
        self.restart().await;
    }

    /// Stops the server like a crash (no draining) and starts a new one on the same address.
    pub async fn crash(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }

    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(5)).await;
        }
        let listener = tokio::net::TcpListener::bind(self.listener_addr)
            .await
            .unwrap();
        self.start_with(listener).await;
    }

    /// Serves the API over TLS (HTTP/2 and HTTP/1.1, as in production) from now on: restarts the server.
    pub async fn use_tls(&mut self, cert: std::path::PathBuf, key: std::path::PathBuf) {
        self.tls_files = Some((cert, key));
        self.url = format!("https://{}", self.listener_addr);
        self.restart().await;
    }

    /// Registers a tailnet user at a fresh loopback address with these capability rules.
    pub fn user(&self, login: &str, rules: Value) -> User {
        let ip = fresh_ip();
        self.identity.set(ip, identity_at(ip, login, rules));
        User::new(ip, &self.url)
    }

    pub fn grant(&self, user: &User, login: &str, rules: Value) {
        self.identity
            .set(user.ip, identity_at(user.ip, login, rules));
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(5)).await;
        }
    }

    /// The sum of a metric's samples whose line contains `selector`, from the health port's `path`.
    pub async fn metric(&self, path: &str, name: &str, selector: &str) -> f64 {
        let text = reqwest::get(format!("{}{path}", self.health_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(selector))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Names of objects of a kind in the test namespace, as the admin sees them.
    pub async fn names<K>(&self) -> Vec<String>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.admin.clone(), &self.ns);
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|o| kube::ResourceExt::name_any(o))
            .collect()
    }

    /// ClusterRoleBindings managed by this test's server.
    pub async fn crbs(&self) -> Vec<k8s_openapi::api::rbac::v1::ClusterRoleBinding> {
        let api: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(self.admin.clone());
        let lp = kube::api::ListParams::default()
            .labels(&format!("tka.specht-labs.de/instance={}", self.ns));
        api.list(&lp).await.unwrap().items
    }
}

/// The identity of a user's device at `ip` (its tailnet address, as WhoIs reports it).
pub fn identity_at(ip: IpAddr, login: &str, rules: Value) -> PeerIdentity {
    PeerIdentity {
        node_ip: Some(ip),
        ..identity(login, &format!("node-{ip}"), rules)
    }
}

pub fn identity(login: &str, node: &str, rules: Value) -> PeerIdentity {
    PeerIdentity {
        login_name: Some(login.into()),
        node_fqdn: format!("{node}.test.ts.net"),
        node_stable_id: format!("n{node}"),
        cap_map: std::collections::BTreeMap::from([(
            CAP.to_string(),
            rules.as_array().cloned().unwrap_or_default(),
        )]),
        ..PeerIdentity::default()
    }
}

/// A test user's HTTP client, bound to the user's loopback address.
pub struct User {
    pub ip: IpAddr,
    pub http: reqwest::Client,
    pub base: String,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl User {
    pub fn new(ip: IpAddr, base: &str) -> User {
        let http = reqwest::Client::builder()
            .local_address(ip)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        User {
            ip,
            http,
            base: base.to_string(),
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn post(&self, path: &str) -> Reply {
        self.send(self.http.post(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// One `tka` command as the CLI runs it: one 30 s deadline; the request again after 429/502/503/504 (but
    /// not `cluster_info_unavailable`), after `Retry-After` (0.1–5 s, else 0.5 s); after a 202 the long poll
    /// of `GET /kubeconfig`, as `tka login` does. Every answer (status and error code) on the way, and
    /// whether it ended 200.
    pub async fn command(&self, path: &str) -> (Vec<String>, bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut answers, mut pending) = (Vec::new(), false);
        loop {
            let r = if pending {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .as_secs()
                    .max(1);
                self.get(&format!("/api/v1alpha1/kubeconfig?format=v1&wait={left}s"))
                    .await
            } else {
                self.post(path).await
            };
            let code = r.body["code"].as_str().unwrap_or_default();
            answers.push(format!("{} {code}", r.status).trim().to_string());
            pending |= r.status == 202;
            let again = match r.status {
                202 | 429 | 502 | 504 => true,
                503 => code != "cluster_info_unavailable",
                _ => false,
            };
            let pause = r
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map_or(Duration::from_millis(500), Duration::from_secs)
                .clamp(Duration::from_millis(100), Duration::from_secs(5));
            if r.status == 200 || !again || Instant::now() + pause >= deadline {
                return (answers, r.status == 200);
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// A federated login that waits until every cluster has settled. A member waits at most the
    /// primary's request timeout less a second (1 s in these tests), so on a loaded machine the first
    /// answer can be 202 with the member still pending; logging in again is idempotent and picks up
    /// where it left off. Stops at the first answer that is not 202 (or after 20 s).
    pub async fn login_settled(&self, path: &str) -> Reply {
        let start = Instant::now();
        loop {
            let r = self.post(path).await;
            if r.status != 202 || start.elapsed() > Duration::from_secs(20) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One-round-trip login; returns the reply and a kube client using the minted token.
    pub async fn login(&self) -> (Reply, Option<Client>) {
        let r = self
            .post("/api/v1alpha1/login?wait=15s&include=kubeconfig&format=v1")
            .await;
        let client = if r.status == 200 {
            Some(client_from(&r.body["kubeconfig"]).await)
        } else {
            None
        };
        (r, client)
    }
}

/// For benchmarks: a runtime and a control plane with the CRD installed. Panics when it cannot start.
#[allow(dead_code)] // the integration tests start theirs in `main`
pub fn bench_env() -> (tokio::runtime::Runtime, Env) {
    let cp = ControlPlane::start().unwrap_or_else(|e| panic!("control plane: {e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin = rt.block_on(cp.admin_client());
    rt.block_on(install_crd(&admin));
    (rt, Env { cp, admin })
}

/// For benchmarks: p50, p90, p95, p99 and max of `samples` in milliseconds (nearest rank).
#[allow(dead_code)] // only the benchmarks report latencies
pub fn latencies(mut samples: Vec<Duration>) -> Value {
    samples.sort();
    let at = |p: f64| {
        let idx = ((samples.len().max(1) as f64 - 1.0) * p).round() as usize;
        samples.get(idx).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    json!({
        "n": samples.len(),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "max_ms": at(1.0),
    })
}

/// Polls `check` every 50 ms until it returns true or `limit` passes; returns the time it took.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

pub async fn install_crd(admin: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let crd = tka::operator::crd::TkaSignin::crd();
    crds.patch(
        "tkasignins.tka.specht-labs.de",
        &PatchParams::apply("tka-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("CRD applies");
    let established = await_condition(
        crds,
        "tkasignins.tka.specht-labs.de",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .expect("CRD established in time")
        .expect("watch");
}

/// There is no kube-controller-manager, so the aggregated ClusterRoles (`view`, `edit`, `admin`) have no rules
/// of their own. Do once what its clusterrole-aggregation controller does.
pub async fn aggregate_cluster_roles(admin: &kube::Client) {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let api: Api<ClusterRole> = Api::all(admin.clone());
    let all = api
        .list(&Default::default())
        .await
        .expect("list ClusterRoles")
        .items;
    for name in ["view", "edit", "admin"] {
        let role = all
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .expect("bootstrap role");
        let selectors = role
            .aggregation_rule
            .as_ref()
            .and_then(|a| a.cluster_role_selectors.clone())
            .unwrap_or_default();
        let mut rules = Vec::new();
        for other in &all {
            let labels = other.metadata.labels.clone().unwrap_or_default();
            let selected = selectors.iter().any(|sel| {
                sel.match_labels
                    .as_ref()
                    .is_some_and(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
            });
            if selected && other.metadata.name.as_deref() != Some(name) {
                rules.extend(other.rules.clone().unwrap_or_default());
            }
        }
        let patch = serde_json::json!({ "rules": rules });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("aggregate rules");
    }
}

/// The primary's and the member's tailnet node names in [`Federated`].
pub const PRIMARY_NODE: &str = "primary.test.ts.net";
pub const MEMBER_NODE: &str = "member.test.ts.net";

/// A federation of two servers, each against its own kube-apiserver, on a loopback "tailnet": each
/// side's static WhoIs knows the other node and resolves its name to the other server's listener.
pub struct Federated {
    pub primary: Harness,
    pub member: Harness,
    /// The member's control plane; stopped when dropped, so drop it after the member.
    pub member_env: Env,
    /// The member's node address (what the primary's WhoIs sees).
    pub member_ip: IpAddr,
}

/// A node as the other server's WhoIs reports it.
pub fn node(fqdn: &str, id: &str, ip: IpAddr, tags: &[&str]) -> PeerIdentity {
    PeerIdentity {
        node_fqdn: fqdn.into(),
        node_stable_id: id.into(),
        node_ip: Some(ip),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..PeerIdentity::default()
    }
}

impl Federated {
    /// Primary `primary` (members tagged `tag:tka-member` admitted) and member `member` (prefixes `member-`,
    /// `member-user-`), 1 s heartbeats, 2 s request timeout. `primary_tweak`/`member_tweak` adjust the
    /// configs; `member_node` is the member's node as the primary's WhoIs sees it (tagged by default).
    pub async fn start(
        env: &Env,
        name: &str,
        primary_tweak: impl FnOnce(&mut Config),
        member_tweak: impl FnOnce(&mut Config),
        member_node: impl FnOnce(PeerIdentity) -> PeerIdentity,
    ) -> Federated {
        let cp = tokio::task::spawn_blocking(ControlPlane::start)
            .await
            .unwrap()
            .expect("second control plane");
        let admin = cp.admin_client().await;
        install_crd(&admin).await;
        aggregate_cluster_roles(&admin).await;
        let member_env = Env { cp, admin };
        let beat = |c: &mut Config| {
            c.federation.heartbeat_interval = tka::model::duration::GoDuration::from_secs(1);
            c.federation.missed_heartbeats = 3;
            c.federation.request_timeout = tka::model::duration::GoDuration::from_secs(2);
        };
        let primary = Harness::with_config(env, &format!("{name}-primary"), |c| {
            c.operator.cluster_name = "primary".into();
            c.federation.member_tags = vec!["tag:tka-member".into()];
            beat(c);
            primary_tweak(c);
        })
        .await;
        let member = Harness::with_config(&member_env, &format!("{name}-member"), |c| {
            c.operator.cluster_name = "member".into();
            c.operator.context_prefix = "member-".into();
            c.operator.user_prefix = "member-user-".into();
            c.federation.login_server = format!("http://{PRIMARY_NODE}:8443");
            beat(c);
            member_tweak(c);
        })
        .await;
        let (primary_ip, member_ip) = (fresh_ip(), fresh_ip());
        primary.identity.set_self(PRIMARY_NODE, primary_ip);
        member.identity.set_self(MEMBER_NODE, member_ip);
        let seen = node(MEMBER_NODE, "nmember", member_ip, &["tag:tka-member"]);
        primary.identity.set(member_ip, member_node(seen));
        member.identity.set(
            primary_ip,
            node(PRIMARY_NODE, "nprimary", primary_ip, &["tag:tka"]),
        );
        primary.identity.set_host(MEMBER_NODE, member.listener_addr);
        member
            .identity
            .set_host(PRIMARY_NODE, primary.listener_addr);
        Federated {
            primary,
            member,
            member_env,
            member_ip,
        }
    }

    /// The member as `GET /clusters` at the primary shows it to `u` (`healthy`, `stale`, or `absent`).
    pub async fn member_state(&self, u: &User) -> String {
        let r = u.get("/api/v1alpha1/clusters").await;
        r.body
            .as_array()
            .and_then(|l| l.iter().find(|c| c["name"] == "member"))
            .and_then(|c| c["status"].as_str())
            .unwrap_or("absent")
            .to_string()
    }

    /// Waits until the primary lists the member as `state` (10 s at most).
    pub async fn wait_member(&self, u: &User, state: &str) {
        let seen = eventually(Duration::from_secs(10), || async {
            self.member_state(u).await == state
        })
        .await;
        assert!(
            seen.is_some(),
            "member never {state}: {}",
            self.member_state(u).await
        );
    }

    pub async fn stop(self) {
        self.primary.stop().await;
        self.member.stop().await;
        drop(self.member_env);
    }
}
