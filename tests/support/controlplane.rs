//! A real Kubernetes control plane for integration tests: etcd and
//! kube-apiserver, built from pinned sources by `tests/peers/build.sh`, on free loopback
//! ports with a throw-away PKI and data dir.
//!
//! There is no kube-controller-manager: no garbage collector, no namespace finalization,
//! no default ServiceAccounts. The RBAC bootstrap ClusterRoles (`view`, `edit`, `admin`,
//! `cluster-admin`) exist once `start` returns, but the aggregated ones (`view`, `edit`,
//! `admin`) have no rules: filling them is the controller manager's job.
//!
//! Note: kube-apiserver caches successful token authentications for 10 s (not
//! configurable), so a revoked token keeps working for up to 10 s after its last
//! successful use.
//!
//! Included by test binaries with `#[path = "../support/controlplane.rs"] mod controlplane;`.
//! Uses only dev-dependencies and normal dependencies of the `tka` package.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// How long `start` waits for etcd, and then for the apiserver to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Issuer and audience of service-account tokens; what a real cluster uses by default.
const SA_ISSUER: &str = "https://kubernetes.default.svc";

pub struct ControlPlane {
    /// Temp dir with PKI, kubeconfig, etcd data and logs; `None` once stopped.
    dir: Option<tempfile::TempDir>,
    bin: PathBuf,
    kubeconfig: PathBuf,
    port: u16,
    ca_pem: String,
    /// Started children in start order; stopped in reverse (apiserver before etcd).
    children: Vec<(&'static str, Child)>,
}

/// How a control plane differs from the tests' default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// API Priority and Fairness on, as in a real cluster. Off by default: the tests need no queuing, and a
    /// benchmark that wants the apiserver to push back (HTTP 429) turns it on.
    pub priority_and_fairness: bool,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until the apiserver is ready (`/readyz`
    /// and the bootstrap ClusterRole `view` readable). Blocking; may be called from any
    /// thread, also inside a Tokio runtime, and several times (independent control planes).
    /// The children get SIGKILL when the test process dies, even by SIGKILL.
    pub fn start() -> Result<ControlPlane, String> {
        ControlPlane::start_with(Options::default())
    }

    /// [`ControlPlane::start`] with `options`.
    pub fn start_with(options: Options) -> Result<ControlPlane, String> {
        let bin = peers_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("tka-controlplane-")
            .tempdir()
            .map_err(|e| format!("creating temp dir: {e}"))?;
        let root = dir.path().to_path_buf();
        let [etcd_port, etcd_peer_port, port] = free_ports();
        let pki = Pki::write(&root, port)?;

        // From here on, an early return drops `cp`, which kills what was started.
        let mut cp = ControlPlane {
            dir: Some(dir),
            kubeconfig: root.join("admin.kubeconfig"),
            bin,
            port,
            ca_pem: pki.ca_pem,
            children: Vec::new(),
        };

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd_peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        cp.spawn(
            "etcd",
            &[
                "--name=tka-test".into(),
                format!("--data-dir={}", root.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={etcd_peer_url}"),
                format!("--initial-advertise-peer-urls={etcd_peer_url}"),
                format!("--initial-cluster=tka-test={etcd_peer_url}"),
                // Throw-away data: durability only costs time.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        )?;
        cp.wait_etcd(etcd_port)?;

        let f = |name: &str| root.join(name).display().to_string();
        cp.spawn(
            "kube-apiserver",
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", f("apiserver-certs")),
                format!("--tls-cert-file={}", f("apiserver.crt")),
                format!("--tls-private-key-file={}", f("apiserver.key")),
                format!("--client-ca-file={}", f("ca.crt")),
                "--authorization-mode=RBAC".into(),
                // On by default since 1.30; named so the shipped ValidatingAdmissionPolicy (which the
                // integration tests apply) can never be silently inert here.
                "--enable-admission-plugins=ValidatingAdmissionPolicy".into(),
                format!("--service-account-issuer={SA_ISSUER}"),
                format!("--service-account-key-file={}", f("sa.pub")),
                format!("--service-account-signing-key-file={}", f("sa.key")),
                format!("--api-audiences={SA_ISSUER}"),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                format!(
                    "--enable-priority-and-fairness={}",
                    options.priority_and_fairness
                ),
                // Nothing serves the `kubernetes` Service, and loopback addresses are not
                // valid Endpoints anyway.
                "--endpoint-reconciler-type=none".into(),
                "--profiling=false".into(),
            ],
        )?;
        cp.wait_apiserver()?;
        Ok(cp)
    }

    /// Kubeconfig (context `admin`) with a `system:masters` client certificate.
    pub fn admin_kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// PEM of the CA that signed the apiserver's serving certificate (and the client certs).
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// A cluster-admin client built from `admin_kubeconfig_path`. Panics if that fails.
    pub async fn admin_client(&self) -> kube::Client {
        client_from_kubeconfig(&self.kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("admin client: {e}"))
    }

    /// Path of the `kubectl` built by `tests/peers/build.sh`.
    pub fn kubectl(&self) -> PathBuf {
        self.bin.join("kubectl")
    }

    /// The running processes by name (`etcd`, `kube-apiserver`) and pid: the storm bench reads their CPU time.
    #[allow(dead_code)]
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.children.iter().map(|(n, c)| (*n, c.id())).collect()
    }

    /// Kills the children (apiserver first), reaps them and removes the temp dir.
    /// Idempotent; also run on drop.
    pub fn stop(&mut self) {
        while let Some((_, mut child)) = self.children.pop() {
            // Neither binary forks helpers, so killing the pid leaves nothing behind.
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }

    fn root(&self) -> &Path {
        self.dir.as_ref().expect("control plane stopped").path()
    }

    /// Starts `bin/<name>` with its output in `<temp>/<name>.log`.
    fn spawn(&mut self, name: &'static str, args: &[String]) -> Result<(), String> {
        let log_path = self.root().join(format!("{name}.log"));
        let log =
            fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let exe = self.bin.join(name);
        // setpriv (util-linux) sets PR_SET_PDEATHSIG and execs, so the child is killed
        // when we die, even by SIGKILL; without it we rely on stop()/Drop only.
        let mut cmd = match setpriv() {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args).stdin(Stdio::null()).stdout(log).stderr(log2);
        let child =
            spawn_on_spawner_thread(cmd).map_err(|e| format!("starting {}: {e}", exe.display()))?;
        self.children.push((name, child));
        Ok(())
    }

    /// Fails with the log tail if child `name` has exited.
    fn check_alive(&mut self, name: &str) -> Result<(), String> {
        let (_, child) = self
            .children
            .iter_mut()
            .find(|(n, _)| *n == name)
            .expect("child");
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("{name} exited ({status})\n{}", self.log_tail(name))),
            Err(e) => Err(format!("{name}: {e}")),
        }
    }

    /// Last lines of `<temp>/<name>.log`, for error messages.
    fn log_tail(&self, name: &str) -> String {
        let path = self.root().join(format!("{name}.log"));
        let text = fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- last lines of {} ---\n{tail}", path.display())
    }

    /// Waits until etcd answers `GET /health` with `"health":"true"`.
    fn wait_etcd(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive("etcd")?;
            if etcd_healthy(port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd not healthy after {READY_TIMEOUT:?}\n{}",
                    self.log_tail("etcd")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls the apiserver on a helper thread with its own Tokio runtime (so `start` also
    /// works when called inside a runtime), while watching that the children stay alive.
    fn wait_apiserver(&mut self) -> Result<(), String> {
        let abort = Arc::new(AtomicBool::new(false));
        let poller = {
            let (kubeconfig, abort) = (self.kubeconfig.clone(), abort.clone());
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("tokio runtime: {e}"))?
                    .block_on(poll_ready(&kubeconfig, &abort))
            })
        };
        let alive = loop {
            if poller.is_finished() {
                break Ok(());
            }
            if let Err(e) = self
                .check_alive("kube-apiserver")
                .and_then(|_| self.check_alive("etcd"))
            {
                abort.store(true, Ordering::Relaxed);
                break Err(e);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let ready = poller
            .join()
            .unwrap_or_else(|_| Err("readiness poller panicked".into()));
        alive?;
        ready.map_err(|e| {
            format!(
                "kube-apiserver not ready: {e}\n{}",
                self.log_tail("kube-apiserver")
            )
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `$TKA_PEERS_BIN` or `<crate>/tests/peers/bin`, which must hold all needed binaries.
fn peers_bin() -> Result<PathBuf, String> {
    let bin = std::env::var_os("TKA_PEERS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/bin"));
    let missing: Vec<&str> = ["etcd", "kube-apiserver", "kubectl"]
        .into_iter()
        .filter(|b| !bin.join(b).is_file())
        .collect();
    if missing.is_empty() {
        Ok(bin)
    } else {
        Err(format!(
            "peer binaries missing in {}: {} — run tests/peers/build.sh (or point TKA_PEERS_BIN at its bin/ directory)",
            bin.display(),
            missing.join(", ")
        ))
    }
}

/// Spawns `cmd` from one thread that lives as long as the process: the parent-death
/// signal fires when the *thread* that forked the child exits, not the process, so
/// spawning from the caller's (maybe short-lived) thread would kill the children early.
fn spawn_on_spawner_thread(cmd: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("controlplane-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the controlplane-spawner thread");
        tx
    });
    let gone = || std::io::Error::other("controlplane-spawner thread is gone");
    let (reply, answer) = mpsc::channel();
    spawner.send((cmd, reply)).map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

fn setpriv() -> Option<&'static str> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
}

/// Three distinct free loopback ports. The listeners are held until all are chosen so the
/// kernel does not hand out the same port twice; a race with other processes remains
/// possible but is unlikely.
fn free_ports() -> [u16; 3] {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    let port = |i: usize| listeners[i].local_addr().expect("local_addr").port();
    [port(0), port(1), port(2)]
}

fn etcd_healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut resp = String::new();
    s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_ok()
        && s.read_to_string(&mut resp).is_ok()
        && resp.contains("\"health\":\"true\"")
}

async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, String> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    kube::Client::try_from(config).map_err(|e| format!("kube client: {e}"))
}

/// Until `/readyz` answers 200 and ClusterRole `view` exists, or the deadline / `abort`.
async fn poll_ready(kubeconfig: &Path, abort: &AtomicBool) -> Result<(), String> {
    let client = client_from_kubeconfig(kubeconfig).await?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let probe = async {
            let readyz = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("request");
            client
                .request_text(readyz)
                .await
                .map_err(|e| format!("/readyz: {e}"))?;
            kube::Api::<ClusterRole>::all(client.clone())
                .get("view")
                .await
                .map_err(|e| format!("ClusterRole view: {e}"))?;
            Ok::<(), String>(())
        };
        let last = match tokio::time::timeout(Duration::from_secs(5), probe).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => "probe timed out".into(),
        };
        if abort.load(Ordering::Relaxed) {
            return Err(last);
        }
        if Instant::now() > deadline {
            return Err(format!("still failing after {READY_TIMEOUT:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The generated PKI. Files written to the temp dir:
/// `ca.crt`, `apiserver.crt/.key`, `admin.crt/.key`, `sa.key` (PKCS#8) / `sa.pub` (PKIX),
/// and `admin.kubeconfig` (certificates embedded).
struct Pki {
    ca_pem: String,
}

impl Pki {
    fn write(dir: &Path, port: u16) -> Result<Pki, String> {
        let err = |e: rcgen::Error| format!("generating PKI: {e}");
        let write = |name: &str, text: &str| {
            fs::write(dir.join(name), text).map_err(|e| format!("writing {name}: {e}"))
        };

        // All keys are ECDSA P-256 (rcgen's default), which Go and rustls both accept.
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.distinguished_name = rcgen::DistinguishedName::new();
        ca.distinguished_name
            .push(DnType::CommonName, "tka-test-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca.self_signed(&ca_key).map_err(err)?;

        // Leaf certificates signed by the CA.
        let leaf = |cn: &str, org: Option<&str>, sans: &[&str], eku: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().map_err(err)?;
            let mut params =
                CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .map_err(err)?;
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, cn);
            if let Some(org) = org {
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, org);
            }
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![eku];
            let cert = params.signed_by(&key, &ca, &ca_key).map_err(err)?;
            Ok::<_, String>((cert.pem(), key.serialize_pem()))
        };
        let (serving_crt, serving_key) = leaf(
            "kube-apiserver",
            None,
            &[
                "127.0.0.1",
                "::1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (admin_crt, admin_key) = leaf(
            "admin",
            Some("system:masters"),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;

        let sa_key = KeyPair::generate().map_err(err)?;

        write("ca.crt", &ca.pem())?;
        write("apiserver.crt", &serving_crt)?;
        write("apiserver.key", &serving_key)?;
        write("admin.crt", &admin_crt)?;
        write("admin.key", &admin_key)?;
        write("sa.key", &sa_key.serialize_pem())?;
        write("sa.pub", &sa_key.public_key_pem())?;

        let b64 = |s: &str| data_encoding::BASE64.encode(s.as_bytes());
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "tka-test", "cluster": {
                "server": format!("https://127.0.0.1:{port}"),
                "certificate-authority-data": b64(&ca.pem()),
            }}],
            "users": [{"name": "admin", "user": {
                "client-certificate-data": b64(&admin_crt),
                "client-key-data": b64(&admin_key),
            }}],
            "contexts": [{"name": "admin", "context": {"cluster": "tka-test", "user": "admin"}}],
            "current-context": "admin",
        });
        let yaml = serde_yaml::to_string(&kubeconfig).map_err(|e| format!("kubeconfig: {e}"))?;
        write("admin.kubeconfig", &yaml)?;

        Ok(Pki { ca_pem: ca.pem() })
    }
}
