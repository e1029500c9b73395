//! The CLI's side of the security tests, with the real `tka` binary against a real server and apiserver: a
//! symlinked kubeconfig for `--merge`, and cached exec credentials that outlive their session.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use serde_json::{Value, json};

use crate::cli::{Home, text, tka};
use crate::harness::{Env, Harness};

scenarios!(
    security_merge_writes_through_a_symlinked_kubeconfig,
    security_cli_forgets_credentials_of_an_ended_session,
);

const VIEW: &str = r#"[{"role": "view", "period": "1h"}]"#;

fn rules(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

/// `tka login --merge` into a symlinked `~/.kube/config`: written through to the link's target, the link kept,
/// and no directory's mode changed.
async fn security_merge_writes_through_a_symlinked_kubeconfig(env: Arc<Env>) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let h = Harness::new(&env, "symlink").await;
    let home = Home::new();
    let user = h.user("link@example.com", rules(VIEW));
    let kube = home.path().join(".kube");
    let dotfiles = home.path().join("dotfiles");
    std::fs::create_dir_all(&dotfiles).unwrap();
    for d in [&kube, &dotfiles] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let real = dotfiles.join("kubeconfig");
    std::fs::write(&real, "apiVersion: v1\nkind: Config\n").unwrap();
    let link = kube.join("config");
    std::os::unix::fs::symlink("../dotfiles/kubeconfig", &link).unwrap();

    let out = tka(
        &h,
        &home,
        &user,
        link.to_str().unwrap(),
        &["login", "--merge", "-q"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link is kept"
    );
    let merged: Value = serde_yaml::from_slice(&std::fs::read(&real).unwrap()).unwrap();
    assert_eq!(
        merged["current-context"], "tka-context-link@example.com",
        "{merged}"
    );
    assert_eq!(mode(&kube), 0o755, "~/.kube keeps its mode");
    assert_eq!(mode(&dotfiles), 0o755);
    assert_eq!(mode(&real), 0o600, "the credentials file is private");
    let out = tka(&h, &home, &user, link.to_str().unwrap(), &["logout", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    h.stop().await;
}

/// The exec plugin's cache file of (server, cluster), as `tka credential` names it.
fn slot_file(home: &Home, server: &str, cluster: &str) -> std::path::PathBuf {
    use sha2::Digest;
    let key = hex::encode(sha2::Sha256::digest(
        format!("{server}\n{cluster}").as_bytes(),
    ));
    home.path()
        .join(format!(".cache/tka/credentials/{key}.json"))
}

/// A fresh cached token for `cluster` of `server`, as an earlier `tka credential --cluster …` left it.
fn plant(home: &Home, server: &str, cluster: &str, token: &str) {
    let f = slot_file(home, server, cluster);
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    let body = json!({"server": server, "token": token,
        "expires_at": "2099-01-01T00:00:00Z", "refresh_at": "2099-01-01T00:00:00Z"});
    std::fs::write(f, body.to_string()).unwrap();
}

/// After the session ends on the server, no cached token of that server is served once the CLI has heard of it:
/// a 401 from `/exec-credential` drops every cluster's token of the server, and `tka logout` does too.
async fn security_cli_forgets_credentials_of_an_ended_session(env: Arc<Env>) {
    let h = Harness::new(&env, "revoked").await;
    let home = Home::new();
    let user = h.user("revoked@example.com", rules(VIEW));
    let kc = home.path().join(".kube/config");
    let kc = kc.to_str().unwrap();
    let cluster = crate::harness::CLUSTER;
    let plugin = |cluster: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tka"));
        home.apply(&mut cmd, &user);
        cmd.args(["credential", "--server", &h.url, "--cluster", cluster])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = tka(&h, &home, &user, kc, &["login", "--exec", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        slot_file(&home, &h.url, cluster).exists(),
        "login seeded the cache"
    );
    plant(&home, &h.url, "prod-west", "member-token");

    // The session ends on the server (another device's `logout --all`, an admin, a grant change).
    assert_eq!(user.post("/api/v1alpha1/logout").await.status, 200);
    // Until the CLI hears of it, a fresh cached token is all it knows (kubectl would get 401 from the apiserver).
    let out = plugin("prod-west");
    assert!(
        text(&out.stdout).contains("member-token"),
        "{}",
        text(&out.stderr)
    );

    // The own cluster's token is due: the refresh gets 401, and every token of this server is dropped.
    let own = slot_file(&home, &h.url, cluster);
    let mut c: Value = serde_json::from_slice(&std::fs::read(&own).unwrap()).unwrap();
    c["expires_at"] = json!("2020-01-01T00:00:00Z");
    c["refresh_at"] = json!("2020-01-01T00:00:00Z");
    std::fs::write(&own, c.to_string()).unwrap();
    let out = plugin(cluster);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    // (This server has no member of that name and says so, where it used to serve the cached token.)
    let out = plugin("prod-west");
    assert!(!out.status.success(), "{}", text(&out.stderr));
    assert!(
        out.stdout.is_empty(),
        "the member's token is no longer served"
    );
    assert!(!slot_file(&home, &h.url, "prod-west").exists());

    // `tka logout` forgets every cached token of the server too, not only the clusters it wrote files for.
    let out = tka(&h, &home, &user, kc, &["login", "--exec", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    plant(&home, &h.url, "prod-west", "member-token");
    plant(&home, "https://other-tka.example", "prod", "other-server");
    let out = tka(&h, &home, &user, kc, &["logout", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !slot_file(&home, &h.url, "prod-west").exists(),
        "logout forgot the member token"
    );
    assert!(!slot_file(&home, &h.url, cluster).exists());
    assert!(
        slot_file(&home, "https://other-tka.example", "prod").exists(),
        "another server's token stays"
    );
    h.stop().await;
}
