//! `tka doctor` as a user against an in-process server on the real apiserver, with a real kubectl: healthy,
//! no grant, token files readable by others, a kuberc allowlist without tka, stale KUBECONFIG entries.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use serde_json::{Value, json};

use crate::cli::{Home, KUBERC_ALLOW_TKA, text, tka};
use crate::doctor::{VIEW, advice, check, status};
use crate::harness::{self, Env, Harness, User};

scenarios!(
    doctor_cli_healthy_no_grant_and_open_token_files,
    doctor_cli_kuberc_without_tka_and_stale_kubeconfig,
);

/// `tka doctor` as `user`, with kubectl and tka on PATH, no tailscaled at `--socket`.
fn cli_doctor(
    env: &Env,
    h: &Harness,
    home: &Home,
    user: &User,
    kubeconfig: Option<&str>,
) -> (Option<i32>, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tka"));
    home.apply(&mut cmd, user);
    let dirs = [
        Path::new(env!("CARGO_BIN_EXE_tka"))
            .parent()
            .unwrap()
            .to_path_buf(),
        env.cp.kubectl().parent().unwrap().to_path_buf(),
        PathBuf::from("/usr/bin"),
        PathBuf::from("/bin"),
    ];
    cmd.env("PATH", std::env::join_paths(dirs).unwrap())
        .args(["--server", &h.url, "--socket"])
        .arg(home.path().join("no-tailscaled.sock"))
        .args(["doctor", "-o", "json"]);
    match kubeconfig {
        Some(k) => cmd.env("KUBECONFIG", k),
        None => cmd.env_remove("KUBECONFIG"),
    };
    let out = cmd.output().unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", text(&out.stdout), text(&out.stderr)));
    (out.status.code(), report)
}

fn login(h: &Harness, home: &Home, user: &User, args: &[&str]) -> String {
    let own = home.path().join(".kube/config");
    let out = tka(h, home, user, own.to_str().unwrap(), args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    line.trim()
        .strip_prefix("export KUBECONFIG='")
        .and_then(|r| r.strip_suffix('\''))
        .unwrap_or_else(|| panic!("export line: {line}"))
        .to_string()
}

async fn doctor_cli_healthy_no_grant_and_open_token_files(env: Arc<Env>) {
    let h = Harness::new(&env, "doctor-cli").await;
    let home = Home::new();
    let alice = h.user("alice@example.com", serde_json::from_str(VIEW).unwrap());
    let (code, r) = cli_doctor(&env, &h, &home, &alice, None);
    // No tailscaled on this test machine: the first failure, so the exit code is 5 (unreachable).
    assert_eq!(status(&r, "tailscaled"), "fail");
    assert_eq!(code, Some(5));
    for name in [
        "config",
        "server",
        "clock",
        "grant",
        "kubeconfig",
        "kubectl",
        "kuberc",
        "permissions",
    ] {
        assert_eq!(status(&r, name), "ok", "{name}: {r:#}");
    }
    assert!(
        check(&r, "grant")["message"]
            .as_str()
            .unwrap()
            .contains("role view for 1h0m0s"),
        "{r:#}"
    );
    assert_eq!(status(&r, "session"), "warn");
    assert!(advice(&r, "session").contains("tka login"));

    let kubeconfig = login(&h, &home, &alice, &["login", "--exec", "-q"]);
    let (_, r) = cli_doctor(&env, &h, &home, &alice, Some(&kubeconfig));
    for name in ["session", "kubeconfig", "permissions"] {
        assert_eq!(status(&r, name), "ok", "{name}: {r:#}");
    }
    assert!(
        check(&r, "kubectl")["message"]
            .as_str()
            .unwrap()
            .contains("exec plugin"),
        "{r:#}"
    );
    // A cached token made readable by others.
    let cache = home.path().join(".cache/tka/credentials");
    let file = std::fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (_, r) = cli_doctor(&env, &h, &home, &alice, Some(&kubeconfig));
    assert_eq!(status(&r, "permissions"), "fail");
    assert!(
        check(&r, "permissions")["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{} (644)", file.display()))
    );
    assert!(advice(&r, "permissions").contains("chmod -R go-rwx"));

    // bob has no grant: the reason and what to ask for.
    let bob = h.user("bob@example.com", json!([]));
    let (_, r) = cli_doctor(&env, &h, &Home::new(), &bob, None);
    assert_eq!(status(&r, "grant"), "fail");
    assert!(
        check(&r, "grant")["message"]
            .as_str()
            .unwrap()
            .contains("(no_grant)"),
        "{r:#}"
    );
    assert!(
        advice(&r, "grant").contains("specht-labs.de/cap/tka"),
        "{r:#}"
    );
    h.stop().await;
}

const KUBERC_OTHER_ONLY: &str = "apiVersion: kubectl.config.k8s.io/v1beta1
kind: Preference
credentialPluginPolicy: Allowlist
credentialPluginAllowlist:
- name: gke-gcloud-auth-plugin
";

async fn doctor_cli_kuberc_without_tka_and_stale_kubeconfig(env: Arc<Env>) {
    let h = Harness::new(&env, "doctor-kuberc").await;
    let home = Home::new();
    let alice = h.user("alice@example.com", serde_json::from_str(VIEW).unwrap());
    let kubeconfig = login(&h, &home, &alice, &["login", "--exec", "-q"]);
    let kuberc = home.path().join(".kube/kuberc");
    let kubectl_works = || {
        let mut cmd = Command::new(env.cp.kubectl());
        home.apply(&mut cmd, &alice);
        let out = cmd
            .args(["auth", "whoami"])
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap();
        (out.status.success(), text(&out.stderr))
    };
    // An allowlist without tka: the doctor says so, and kubectl really refuses the plugin.
    std::fs::write(&kuberc, KUBERC_OTHER_ONLY).unwrap();
    let (code, r) = cli_doctor(&env, &h, &home, &alice, Some(&kubeconfig));
    assert_eq!(status(&r, "kuberc"), "fail", "{r:#}");
    assert!(
        check(&r, "kuberc")["message"]
            .as_str()
            .unwrap()
            .contains("does not include tka")
    );
    assert!(
        advice(&r, "kuberc").contains("credentialPluginAllowlist: [{name: tka}]"),
        "{r:#}"
    );
    assert_eq!(code, Some(5), "tailscaled is still the first failure here");
    let (ok, err) = kubectl_works();
    assert!(!ok && err.contains("allowlist"), "{err}");
    // The README's snippet: both agree it is fine.
    std::fs::write(&kuberc, KUBERC_ALLOW_TKA).unwrap();
    let (_, r) = cli_doctor(&env, &h, &home, &alice, Some(&kubeconfig));
    assert_eq!(status(&r, "kuberc"), "ok", "{r:#}");
    assert!(kubectl_works().0);

    // Another shell logs out: this shell's KUBECONFIG still names the deleted file.
    let out = tka(&h, &home, &alice, &kubeconfig, &["logout", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (code, r) = cli_doctor(&env, &h, &home, &alice, Some(&kubeconfig));
    assert_eq!(status(&r, "kubeconfig"), "fail", "{r:#}");
    let own = home.path().join(".kube/config");
    assert!(
        advice(&r, "kubeconfig").contains(&format!("export KUBECONFIG='{}'", own.display())),
        "{r:#}"
    );
    assert_eq!(code, Some(5));

    // The session ends on the server (expiry, an admin), the files stay: stale entries, and how to clean up.
    let kubeconfig = login(&h, &home, &alice, &["login", "-q"]);
    assert_eq!(alice.post("/api/v1alpha1/logout").await.status, 200);
    // Until the controller has cleaned up, the ending session still answers GET /login.
    let gone = harness::eventually(Duration::from_secs(30), || async {
        alice.get("/api/v1alpha1/login").await.status == 401
    })
    .await;
    assert!(gone.is_some(), "the session ends on the server");
    let (_, r) = cli_doctor(&env, &h, &home, &alice, Some(&kubeconfig));
    assert_eq!(status(&r, "kubeconfig"), "fail", "{r:#}");
    assert!(
        check(&r, "kubeconfig")["message"]
            .as_str()
            .unwrap()
            .contains("not signed in, but stale entries remain")
    );
    assert!(advice(&r, "kubeconfig").contains("tka logout"));
    h.stop().await;
}
