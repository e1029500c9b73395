//! The real `tka` binary against a hostile "tka server" on loopback: a spoofed or compromised server answers
//! logins with kubeconfigs that would run its code (`/bin/sh` exec users, plugin `env`, auth providers), read
//! local files (`tokenFile`, certificate paths) or disable TLS verification. The CLI must refuse every one of them
//! with exit 1, write nothing (no managed file, no merged entry, no cached token, no subshell) and say why; a
//! kubeconfig as tka writes it is accepted. Also: plain HTTP is never spoken to a name outside the tailnet.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

/// A one-trick HTTP/1.1 server: every login and kubeconfig request gets `doc`.
struct Hostile {
    url: String,
    port: u16,
    requests: Arc<AtomicUsize>,
}

impl Hostile {
    fn serving(doc: Value) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let path = request_line.split(' ').nth(1).unwrap_or_default();
                let answer = if path.starts_with("/api/v1alpha1/login") {
                    json!({"username": "alice@example.com", "role": "view", "until": "2099-01-01T00:00:00Z",
                        "provisioned": true, "cluster": "prod", "kubeconfig": doc,
                        "credential": {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                            "status": {"token": "planted-token", "expirationTimestamp": "2099-01-01T00:00:00Z"}}})
                } else if path.starts_with("/api/v1alpha1/kubeconfig") {
                    doc.clone()
                } else {
                    json!({"message": "not found"})
                };
                let body = answer.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Hostile {
            url: format!("http://127.0.0.1:{port}"),
            port,
            requests,
        }
    }
}

/// A user's private directories.
struct Home(tempfile::TempDir);

impl Home {
    fn new() -> Home {
        let h = Home(tempfile::tempdir().unwrap());
        std::fs::create_dir_all(h.0.path().join(".kube")).unwrap();
        h
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
    fn managed_dir(&self) -> PathBuf {
        self.path().join(".config/tka/kubeconfig")
    }
    fn cache_dir(&self) -> PathBuf {
        self.path().join(".cache/tka/credentials")
    }
    fn tka(&self, server: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tka"))
            .args(["--server", server, "--timeout", "5s"])
            .args(args)
            .env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.path().join(".config"))
            .env("XDG_CACHE_HOME", self.path().join(".cache"))
            .env("XDG_RUNTIME_DIR", self.path().join("run"))
            .env("KUBECONFIG", self.path().join(".kube/config"))
            .env("SHELL", "/bin/sh")
            .env_remove("TKA_CONFIG")
            .env_remove("TKA_TEST_BIND_ADDRESS")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("tka runs")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every file below `dir` (none when it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A kubeconfig as tka writes it (token user). The managed extension names some server: the CLI pins it to
/// the one it reached.
fn tka_doc() -> Value {
    let server = "https://tka.example.ts.net";
    let ext = json!([{"name": "tka.specht-labs.de/managed", "extension": {"server": server, "cluster": "prod"}}]);
    json!({"apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "prod", "cluster": {"server": "https://k8s.example:6443",
            "certificate-authority-data": "Q0E=", "extensions": ext}}],
        "users": [{"name": "tka-user-alice@example.com", "user": {"token": "t", "extensions": ext}}],
        "contexts": [{"name": "tka-context-alice@example.com",
            "context": {"cluster": "prod", "user": "tka-user-alice@example.com", "extensions": ext}}],
        "current-context": "tka-context-alice@example.com"})
}

/// `tka_doc` with the user's credentials replaced by `user`.
fn with_user(user: Value) -> Value {
    let mut d = tka_doc();
    d["users"][0]["user"] = user;
    d
}

fn exec_user(command: &str, args: Value, extra: Value) -> Value {
    let mut exec = json!({"apiVersion": "client.authentication.k8s.io/v1", "command": command, "args": args,
        "interactiveMode": "Never", "provideClusterInfo": false});
    for (k, v) in extra.as_object().unwrap() {
        exec[k] = v.clone();
    }
    json!({"exec": exec})
}

/// The refusal every hostile document must get: exit 1, the reason, nothing on stdout, nothing written.
fn assert_refused(home: &Home, out: &Output, why: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{why}: {stderr}");
    assert!(stderr.contains("refusing the kubeconfig"), "{stderr}");
    assert!(stderr.contains(why), "expected {why:?} in: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "no export line: {}",
        text(&out.stdout)
    );
    assert!(
        files(&home.managed_dir()).is_empty(),
        "no managed kubeconfig: {:?}",
        files(&home.managed_dir())
    );
    assert!(
        files(&home.cache_dir()).is_empty(),
        "no planted token: {:?}",
        files(&home.cache_dir())
    );
}

#[test]
fn a_shell_exec_user_is_refused_on_every_path_that_writes_a_kubeconfig() {
    // The confirmed attack: `/bin/sh -c …` as the exec plugin, with a marker proving it never runs.
    let home = Home::new();
    let marker = home.path().join("pwned");
    let doc = with_user(exec_user(
        "/bin/sh",
        json!(["-c", format!("touch {}", marker.display())]),
        json!({}),
    ));
    let server = Hostile::serving(doc);
    let own = home.path().join(".kube/config");
    std::fs::write(&own, "apiVersion: v1\nkind: Config\n").unwrap();
    for args in [
        &["login"][..],
        &["login", "--exec"],
        &["login", "--stdout"],
        &["login", "--merge"],
        &["kubeconfig"],
        &["kubeconfig", "--merge"],
        &["shell", "--", "/bin/sh", "-c", "echo subshell-ran"],
    ] {
        let out = home.tka(&server.url, args);
        assert_refused(&home, &out, "runs \"/bin/sh\"");
        assert!(!text(&out.stdout).contains("subshell-ran"), "{args:?}");
    }
    assert_eq!(
        std::fs::read_to_string(&own).unwrap(),
        "apiVersion: v1\nkind: Config\n",
        "--merge wrote nothing"
    );
    assert!(!home.path().join(".kube/config.bak").exists());
    assert!(!marker.exists());
    assert!(server.requests.load(Ordering::SeqCst) >= 7);
}

#[test]
fn plugin_tricks_auth_providers_and_file_reads_are_refused() {
    // `--server` of a `credential` plugin is pinned to the server the CLI reached before the check.
    let args = |extra: &[&str]| {
        let mut a = vec![
            "credential",
            "--server",
            "https://anything",
            "--cluster",
            "prod",
        ];
        a.extend_from_slice(extra);
        json!(a)
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            exec_user(
                "tka",
                args(&[]),
                json!({"env": [{"name": "LD_PRELOAD", "value": "/tmp/evil.so"}]}),
            ),
            "sets environment variables",
        ),
        (exec_user("./tka", args(&[]), json!({})), "runs \"./tka\""),
        (
            exec_user("tka", args(&["--config", "/tmp/evil.yaml"]), json!({})),
            "\"--config\"",
        ),
        (
            json!({"auth-provider": {"name": "oidc", "config": {"idp-issuer-url": "https://evil"}}}),
            "sets \"auth-provider\"",
        ),
        (json!({"tokenFile": "/etc/shadow"}), "sets \"tokenFile\""),
        (
            json!({"client-certificate": "/home/alice/.ssh/id", "client-key": "/home/alice/.ssh/id"}),
            "sets \"client-certificate\"",
        ),
    ];
    for (user, why) in cases {
        let home = Home::new();
        let server = Hostile::serving(with_user(user));
        let out = home.tka(&server.url, &["login", "--exec"]);
        assert_refused(&home, &out, why);
    }
}

#[test]
fn insecure_clusters_need_the_users_consent_and_are_announced() {
    let mut doc = tka_doc();
    doc["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = json!(true);
    let server = Hostile::serving(doc);

    let home = Home::new();
    let out = home.tka(&server.url, &["login"]);
    assert_refused(&home, &out, "insecure-skip-tls-verify");
    assert!(
        text(&out.stderr).contains("--allow-insecure-skip-tls-verify"),
        "{}",
        text(&out.stderr)
    );

    // Opted in by flag: written, and said so on stderr.
    let out = home.tka(&server.url, &["--allow-insecure-skip-tls-verify", "login"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("will not verify"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(files(&home.managed_dir()).len(), 1);

    // Opted in by configuration key.
    let home = Home::new();
    let config = home.path().join(".config/tka/config.yaml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "kubeconfig:\n  allowInsecureSkipTLSVerify: true\n").unwrap();
    let out = home.tka(&server.url, &["login", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("will not verify"),
        "announced even with -q: {}",
        text(&out.stderr)
    );
}

#[test]
fn what_tka_writes_is_accepted() {
    let server = Hostile::serving(tka_doc());
    let home = Home::new();
    let out = home.tka(&server.url, &["login", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("export KUBECONFIG="));
    assert_eq!(files(&home.managed_dir()).len(), 1);
}

#[test]
fn plain_http_is_never_spoken_to_a_name_outside_the_tailnet() {
    let server = Hostile::serving(Value::Null);
    let home = Home::new();
    let port = server.port.to_string();
    // Derived from host and port (port ≠ 443 means plain HTTP), and spelled out: `localhost` is not a tailnet
    // address, so the CLI refuses before sending anything.
    for (server_arg, extra) in [
        ("localhost", vec!["--port", port.as_str()]),
        (&*format!("http://localhost:{port}"), vec![]),
    ] {
        let mut args = extra.clone();
        args.push("login");
        let out = home.tka(server_arg, &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{server_arg}: {stderr}");
        assert!(
            stderr.contains("not to a tailnet address") && stderr.contains("127.0.0.1"),
            "{stderr}"
        );
    }
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        0,
        "not a byte was sent"
    );
}
