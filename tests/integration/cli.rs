//! The `tka` CLI as kubectl uses it: a real kubectl runs the real `tka credential` exec plugin
//! against the real apiserver, through a cache expiry, with 50 parallel refreshes, and a user kubeconfig holding
//! other clusters that tka must never touch.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use serde_json::Value;

use crate::harness::{Env, Harness, User};

type Scenario = fn(Arc<Env>) -> LocalBoxFuture<'static, ()>;

pub const ALL: &[(&str, Scenario)] = &[
    ("cli_exec_plugin_refreshes_once_for_fifty_kubectls", |env| {
        Box::pin(cli_exec_plugin_refreshes_once_for_fifty_kubectls(env))
    }),
    ("cli_shell_in_a_terminal", |env| {
        Box::pin(cli_shell_in_a_terminal(env))
    }),
    ("cli_merge_into_the_users_kubeconfig", |env| {
        Box::pin(cli_merge_into_the_users_kubeconfig(env))
    }),
];

const VIEW: &str = r#"[{"role": "view", "period": "1h"}]"#;

/// A user's private directories, so the CLI's config, cache and runtime dirs are all inside the test.
pub struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        let dir = tempfile::tempdir().unwrap();
        for d in [".kube", "run"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::set_permissions(
            dir.path().join("run"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        Home { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// The environment every process of this user gets (kubectl passes it on to the exec plugin).
    pub fn apply(&self, cmd: &mut Command, user: &User) {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_tka")).parent().unwrap();
        let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .unwrap();
        crate::harness::without_tka_env(cmd)
            .env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.path().join(".config"))
            .env("XDG_CACHE_HOME", self.path().join(".cache"))
            .env("XDG_RUNTIME_DIR", self.path().join("run"))
            .env("PATH", path)
            .env("SHELL", "/bin/bash")
            .env("TKA_TEST_BIND_ADDRESS", user.ip.to_string());
    }
}

pub fn tka(h: &Harness, home: &Home, user: &User, kubeconfig: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tka"));
    home.apply(&mut cmd, user);
    cmd.args(["--server", &h.url])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("tka runs")
}

fn kubectl(env: &Env, home: &Home, user: &User, kubeconfig: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env.cp.kubectl());
    home.apply(&mut cmd, user);
    cmd.args(args).env("KUBECONFIG", kubeconfig);
    cmd
}

/// `kubectl auth whoami`, printing just the user name.
fn whoami(env: &Env, home: &Home, user: &User, kubeconfig: &str) -> Output {
    kubectl(
        env,
        home,
        user,
        kubeconfig,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    )
    .output()
    .unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `tka_server_requests_total` for `GET /exec-credential`, all statuses.
async fn exec_credential_requests(h: &Harness) -> u64 {
    let body = reqwest::get(format!("{}/metrics", h.health_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .filter(|l| l.starts_with("tka_server_requests_total{") && l.contains("exec-credential"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The cache file of the only cached credential.
fn cache_file(home: &Home) -> PathBuf {
    let dir = home.path().join(".cache/tka/credentials");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".failed.json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// Marks the cached token as expired (and, for good measure, not a token the apiserver accepts), as if its
/// lifetime had run out: the next plugin call must refresh.
fn expire_cache(home: &Home) {
    let file = cache_file(home);
    let mut c: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    c["token"] = "expired-token".into();
    c["expires_at"] = "2020-01-01T00:00:00Z".into();
    c["refresh_at"] = "2020-01-01T00:00:00Z".into();
    std::fs::write(&file, serde_json::to_vec(&c).unwrap()).unwrap();
}

/// Must stay equal to the README's snippet.
pub const KUBERC_ALLOW_TKA: &str = "apiVersion: kubectl.config.k8s.io/v1beta1
kind: Preference
credentialPluginPolicy: Allowlist
credentialPluginAllowlist:
- name: tka
";
const KUBERC_DENY_ALL: &str = "apiVersion: kubectl.config.k8s.io/v1beta1
kind: Preference
credentialPluginPolicy: DenyAll
";

const OTHER_KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters:
- name: other
  cluster:
    server: https://other.example:6443
users:
- name: other-admin
  user:
    token: not-tkas
contexts:
- name: other
  context:
    cluster: other
    user: other-admin
current-context: other
";

async fn cli_exec_plugin_refreshes_once_for_fifty_kubectls(env: Arc<Env>) {
    let h = Harness::new(&env, "cliexec").await;
    let home = Home::new();
    let user = h.user("exec@example.com", serde_json::from_str(VIEW).unwrap());
    let own = home.path().join(".kube/config");
    std::fs::write(&own, OTHER_KUBECONFIG).unwrap();
    let own_str = own.to_str().unwrap();

    let out = tka(&h, &home, &user, own_str, &["login", "--exec", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let kubeconfig = stdout
        .trim()
        .strip_prefix("export KUBECONFIG='")
        .and_then(|r| r.strip_suffix('\''))
        .unwrap_or_else(|| panic!("POSIX export line: {stdout}"))
        .to_string();
    let managed = kubeconfig.split(':').next().unwrap().to_string();
    assert_eq!(
        kubeconfig.split(':').nth(1),
        Some(own_str),
        "the user's KUBECONFIG follows"
    );
    let doc: Value = serde_yaml::from_slice(&std::fs::read(&managed).unwrap()).unwrap();
    let exec = &doc["users"][0]["user"]["exec"];
    assert_eq!(exec["command"], "tka", "{doc}");
    assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(
        exec["args"],
        serde_json::json!([
            "credential",
            "--server",
            h.url,
            "--cluster",
            crate::harness::CLUSTER
        ])
    );
    // login --exec seeded the cache: 0600 in a 0700 directory.
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    let cached = cache_file(&home);
    assert_eq!(mode(&cached), 0o600);
    assert_eq!(mode(cached.parent().unwrap()), 0o700);

    // kubectl merges the managed file with the user's own, runs the plugin from the cache: no request.
    let before = exec_credential_requests(&h).await;
    let who = whoami(&env, &home, &user, &kubeconfig);
    assert_eq!(
        text(&who.stdout),
        format!(
            "system:serviceaccount:{}:{}",
            h.ns,
            crate::scenarios::sa_name("exec@example.com")
        ),
        "{}",
        text(&who.stderr)
    );
    assert_eq!(
        exec_credential_requests(&h).await,
        before,
        "served from the cache"
    );

    // The README's kuberc snippet (kubectl ≥ 1.35 credential plugin policy) admits tka; DenyAll proves kubectl
    // reads the file at all. The rest of the test runs under the README's policy (~/.kube/kuberc).
    let kuberc = home.path().join(".kube/kuberc");
    for (rc, ok) in [(KUBERC_DENY_ALL, false), (KUBERC_ALLOW_TKA, true)] {
        std::fs::write(&kuberc, rc).unwrap();
        let out = kubectl(&env, &home, &user, &kubeconfig, &["auth", "whoami"])
            .env("KUBERC", &kuberc)
            .output()
            .unwrap();
        assert_eq!(out.status.success(), ok, "{rc}: {}", text(&out.stderr));
    }
    let contexts = kubectl(
        &env,
        &home,
        &user,
        &kubeconfig,
        &["config", "get-contexts", "-o", "name"],
    )
    .output()
    .unwrap();
    assert!(
        text(&contexts.stdout).lines().any(|l| l == "other"),
        "{}",
        text(&contexts.stdout)
    );

    // The token "expires": 50 kubectl processes at once make exactly one refresh.
    expire_cache(&home);
    let children: Vec<_> = (0..50)
        .map(|_| {
            kubectl(
                &env,
                &home,
                &user,
                &kubeconfig,
                &["get", "configmaps", "-n", "default", "-o", "name"],
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl after expiry: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        exec_credential_requests(&h).await,
        before + 1,
        "50 parallel kubectl calls with an expired cache make exactly one refresh"
    );

    // Logout removes the managed file and the cached token; the user's own kubeconfig is untouched.
    let out = tka(&h, &home, &user, &kubeconfig, &["logout", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("export KUBECONFIG='{own_str}'")
    );
    assert!(!Path::new(&managed).exists());
    assert!(!cached.exists(), "logout deletes the cached credential");
    assert_eq!(std::fs::read_to_string(&own).unwrap(), OTHER_KUBECONFIG);

    // The plugin after logout: a clear message on stderr, nothing on stdout, exit 4, no prompt; a second call
    // within 5 s replays the failure without asking the server.
    let plugin = |home: &Home| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tka"));
        home.apply(&mut cmd, &user);
        cmd.args(["credential", "--server", &h.url, "--cluster", crate::harness::CLUSTER])
            .env("KUBERNETES_EXEC_INFO", r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false}}"#)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let before = exec_credential_requests(&h).await;
    for round in 0..2 {
        let out = plugin(&home);
        assert_eq!(
            out.status.code(),
            Some(4),
            "round {round}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "stdout carries only credentials");
        assert!(
            text(&out.stderr).contains(&format!(
                "not signed in to {}: run `tka login`",
                crate::harness::CLUSTER
            )),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        exec_credential_requests(&h).await,
        before + 1,
        "negative cache"
    );

    // The grant is revoked: 403 becomes the server's message and advice on stderr, exit 3. (The remembered
    // 401 is deleted first, as if its 5 s had passed.)
    for f in walk(&home.path().join(".cache/tka/credentials")) {
        std::fs::remove_file(f).unwrap();
    }
    h.grant(&user, "exec@example.com", serde_json::json!([]));
    let out = plugin(&home);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("advice: "), "the server's advice: {stderr}");
    assert!(!stderr.contains("not signed in"), "{stderr}");

    // Granted again, still signed out: only a kubeconfig written with --auto-login may sign in by itself.
    h.grant(
        &user,
        "exec@example.com",
        serde_json::from_str(VIEW).unwrap(),
    );
    for f in walk(&home.path().join(".cache/tka/credentials")) {
        std::fs::remove_file(f).unwrap();
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tka"));
    home.apply(&mut cmd, &user);
    let out = cmd
        .args([
            "credential",
            "--server",
            &h.url,
            "--cluster",
            crate::harness::CLUSTER,
            "--auto-login",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cred: Value =
        serde_json::from_slice(&out.stdout).expect("only the ExecCredential on stdout");
    assert_eq!(cred["kind"], "ExecCredential");
    assert!(
        cred["status"]["token"]
            .as_str()
            .is_some_and(|t| t.len() > 20)
    );
    assert!(
        text(&out.stderr).contains("signing in"),
        "{}",
        text(&out.stderr)
    );

    // `tka kubeconfig --exec --stdout` prints an exec user pointing at the server this CLI reached.
    let out = tka(
        &h,
        &home,
        &user,
        own_str,
        &["kubeconfig", "--exec", "--stdout"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["users"][0]["user"]["exec"]["args"][2],
        h.url.as_str(),
        "{doc}"
    );
    assert!(doc["users"][0]["user"]["token"].is_null());
    h.stop().await;
}

/// A pseudo-terminal with a process on its slave side (its controlling terminal) and everything written to it
/// collected from the master side.
struct Terminal {
    master: std::fs::File,
    screen: Arc<std::sync::Mutex<Vec<u8>>>,
    child: std::process::Child,
}

impl Terminal {
    fn spawn(mut cmd: Command, rows: u16, cols: u16) -> Terminal {
        use std::os::fd::{FromRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let (mut master, mut slave) = (0, 0);
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty fills two fds we own from here on.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty");
        // SAFETY: fresh fds from openpty, owned exactly once.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn in a pty");
        let master = std::fs::File::from(master);
        let screen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), screen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut reader, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            master,
            screen,
            child,
        }
    }

    fn type_line(&mut self, line: &str) {
        std::io::Write::write_all(&mut self.master, format!("{line}\n").as_bytes()).unwrap();
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits until `needle` appears on the screen `count` times.
    fn wait_for(&self, needle: &str, count: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.text().matches(needle).count() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {needle:?}; screen:\n{}",
                self.text()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn resize(&self, rows: u16, cols: u16) {
        use std::os::fd::AsRawFd;
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ on our own master fd with a valid winsize.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(rc, 0, "TIOCSWINSZ");
    }
}

/// `tka shell` on a real terminal: login, a prompt marked `(tka)`, kubectl through the exec plugin, a window
/// resize that reaches the subshell, and on `exit 7` a logout that removes the files, with exit code 7.
async fn cli_shell_in_a_terminal(env: Arc<Env>) {
    let h = Harness::new(&env, "clishell").await;
    let home = Home::new();
    let user = h.user("shell@example.com", serde_json::from_str(VIEW).unwrap());
    let own = home.path().join(".kube/config");
    std::fs::write(&own, OTHER_KUBECONFIG).unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tka"));
    home.apply(&mut cmd, &user);
    let kubectl_dir = env.cp.kubectl().parent().unwrap().to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(kubectl_dir).chain(std::env::split_paths(&cmd_path(&cmd))),
    )
    .unwrap();
    cmd.args(["--server", &h.url, "shell"])
        .env("PATH", path)
        .env("KUBECONFIG", &own)
        .env("SHELL", "/bin/sh") // dash: no rc file rewrites PS1
        .env("TERM", "dumb")
        .env_remove("PS1");
    let mut term = Terminal::spawn(cmd, 24, 80);
    term.wait_for("(tka) $ ", 1);
    let screen = term.text();
    assert!(screen.contains("Kubeconfig written to"), "{screen}");

    term.type_line("kubectl auth whoami -o jsonpath='{.status.userInfo.username}'; echo");
    let sa = format!(
        "system:serviceaccount:{}:{}",
        h.ns,
        crate::scenarios::sa_name("shell@example.com")
    );
    term.wait_for(&sa, 1);
    term.type_line("kubectl config current-context; echo \"KC=$KUBECONFIG\"");
    term.wait_for(&format!(":{}", own.display()), 1);

    term.resize(50, 132);
    term.type_line("stty size");
    term.wait_for("50 132", 1);

    term.type_line("exit 7");
    let status = tokio::task::spawn_blocking(move || {
        let status = term.child.wait().unwrap();
        (status, term)
    })
    .await
    .unwrap();
    let (status, term) = status;
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        status.code(),
        Some(7),
        "the child's exit code; screen:\n{}",
        term.text()
    );
    let screen = term.text();
    assert!(screen.contains("Signed out shell@example.com"), "{screen}");
    let managed = home.path().join(".config/tka/kubeconfig");
    let left: Vec<_> = walk(&managed);
    assert!(
        left.is_empty(),
        "logout removed the managed files: {left:?}"
    );
    assert!(
        walk(&home.path().join(".cache/tka/credentials")).is_empty(),
        "and the cached token"
    );
    assert_eq!(std::fs::read_to_string(&own).unwrap(), OTHER_KUBECONFIG);

    // SIGTERM to tka ends the child (SIGTERM, exit 128 + 15) and still signs out.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tka"));
    home.apply(&mut cmd, &user);
    let mut child = cmd
        .args(["--server", &h.url, "-q", "shell", "--", "sleep", "30"])
        .env("KUBECONFIG", &own)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while walk(&managed).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "tka shell never logged in"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200)); // the child is running
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15), "the child was terminated");
    assert!(walk(&managed).is_empty(), "signed out after SIGTERM");
    h.stop().await;
}

fn cmd_path(cmd: &Command) -> std::ffi::OsString {
    cmd.get_envs()
        .find(|(k, _)| *k == "PATH")
        .and_then(|(_, v)| v.map(|v| v.to_os_string()))
        .unwrap_or_default()
}

/// All files below `dir` (none if it does not exist).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `--merge`: tka's entries go into the user's own kubeconfig (after a `.bak` copy) and become current; kubectl
/// uses them; logout takes exactly them out again and switches back to the user's context.
async fn cli_merge_into_the_users_kubeconfig(env: Arc<Env>) {
    let h = Harness::new(&env, "climerge").await;
    let home = Home::new();
    let user = h.user("merge@example.com", serde_json::from_str(VIEW).unwrap());
    let own = home.path().join(".kube/config");
    std::fs::write(&own, OTHER_KUBECONFIG).unwrap();
    let own_str = own.to_str().unwrap();
    let yaml = |p: &Path| -> Value { serde_yaml::from_slice(&std::fs::read(p).unwrap()).unwrap() };

    let out = tka(
        &h,
        &home,
        &user,
        own_str,
        &["login", "--merge", "--exec", "-q"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        out.stdout.is_empty(),
        "nothing to eval: {}",
        text(&out.stdout)
    );
    assert!(
        !home.path().join(".config/tka/kubeconfig").exists(),
        "no managed file with --merge"
    );
    let merged = yaml(&own);
    assert_eq!(merged["current-context"], "tka-context-merge@example.com");
    assert_eq!(merged["contexts"].as_array().unwrap().len(), 2, "{merged}");
    let mut bak = own.as_os_str().to_owned();
    bak.push(".bak");
    assert_eq!(std::fs::read_to_string(&bak).unwrap(), OTHER_KUBECONFIG);
    let who = whoami(&env, &home, &user, own_str);
    assert!(
        text(&who.stdout).starts_with(&format!("system:serviceaccount:{}:", h.ns)),
        "{}",
        text(&who.stderr)
    );

    // A re-login replaces tka's entries instead of adding more.
    let out = tka(&h, &home, &user, own_str, &["login", "--merge", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(yaml(&own)["users"].as_array().unwrap().len(), 2);

    let out = tka(&h, &home, &user, own_str, &["logout"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Removed tka's entries from"),
        "{}",
        text(&out.stderr)
    );
    let expected: Value = serde_yaml::from_str(OTHER_KUBECONFIG).unwrap();
    assert_eq!(
        yaml(&own),
        expected,
        "only tka's entries were removed, the user's context is current again"
    );
    h.stop().await;
}
