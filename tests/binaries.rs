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

fn tka(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tka"))
        .args(args)
        .env_remove("TKA_CONFIG")
        .output()
        .expect("runs")
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions() {
    for (shell, marker) in [
        ("bash", "_tka()"),
        ("zsh", "#compdef tka"),
        ("fish", "complete -c tka"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = tka(&["completion", shell]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: {text:.200}");
        assert!(
            text.contains("credential"),
            "{shell} completes the credential command"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = tka(&["generate", "man", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(dir.path().join("tka-credential.1")).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH tka-credential"),
        "{page:.300}"
    );
    assert!(page.contains("auto\\-login"), "{page}");
    assert!(dir.path().join("tka-get-login.1").exists());
    assert!(
        !dir.path().join("tka-help.1").exists(),
        "no pages for clap's help"
    );
    let out = tka(&["generate", "documentation", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    let md = std::fs::read_to_string(dir.path().join("tka.md")).unwrap();
    assert!(md.contains("## `tka shell`"), "{md:.500}");
}
