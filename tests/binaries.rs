//! The built binaries, run as a user runs them: exit codes and messages of `tka-server check`, `crd`, `rbac`
//! and `tka version`.

use std::process::{Command, Output};

fn server(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tka-server"))
        .args(args)
        .env_remove("TKA_CONFIG")
        .output()
        .expect("runs")
}

fn write(yaml: &str) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), yaml).unwrap();
    f
}

#[test]
fn both_deployment_guide_configs_check_clean() {
    for fixture in [
        "tests/fixtures/config-primary.yaml",
        "tests/fixtures/config-federated.yaml",
    ] {
        let out = server(&["check", "--config", fixture]);
        assert!(
            out.status.success(),
            "{fixture}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let effective = String::from_utf8_lossy(&out.stdout);
        assert!(effective.contains("namespace: tka-system"), "{effective}");
    }
    // The upstream spelling of the subcommand works too.
    assert!(
        server(&[
            "check-config",
            "--config",
            "tests/fixtures/config-primary.yaml"
        ])
        .status
        .success()
    );
}

#[test]
fn bad_configs_exit_2_naming_the_key_and_the_reason() {
    for (yaml, needles) in [
        (
            "tailscale:\n  capname2: x\n",
            vec![":2:3", "tailscale.capname2", "unknown key"],
        ),
        ("tailscale:\n  port: abc\n", vec!["tailscale.port"]),
        (
            "server:\n  readTimeout: 30\n",
            vec!["server.readTimeout", "30s"],
        ),
        ("server:\n  readTimeout: -5s\n", vec!["server.readTimeout"]),
        ("tailscale: [1, 2\n", vec!["YAML"]),
        (
            "clusterInfo:\n  apiEndpoint: https://x\n  configMapRef:\n    enabled: true\n",
            vec!["clusterInfo"],
        ),
    ] {
        let f = write(yaml);
        let out = server(&["check", "--config", f.path().to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{yaml:?} must be rejected");
        let err = String::from_utf8_lossy(&out.stderr);
        for n in needles {
            assert!(
                err.to_lowercase().contains(&n.to_lowercase()),
                "{yaml:?}: {err:?} lacks {n:?}"
            );
        }
    }
}

#[test]
fn crd_and_rbac_print_what_is_committed() {
    let out = server(&["crd"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string("deploy/kustomize/base/crd.yaml").unwrap()
    );
    let out = server(&["rbac", "--allowed-roles", "view,edit"]);
    let rbac = String::from_utf8(out.stdout).unwrap();
    assert!(rbac.contains("- bind") && rbac.contains("- edit") && !rbac.contains("- admin"));
}

#[test]
fn versions_print() {
    let out = server(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let out = Command::new(env!("CARGO_BIN_EXE_tka"))
        .arg("version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}
