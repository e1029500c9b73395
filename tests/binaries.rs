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
    // An empty allow-list would be `resourceNames: []`, i.e. `bind` on every ClusterRole: refused.
    for roles in ["", ",", "*", "view,*"] {
        let out = server(&["rbac", "--allowed-roles", roles]);
        assert_eq!(out.status.code(), Some(2), "{roles:?}");
        assert!(out.stdout.is_empty(), "{roles:?}: nothing printed");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--allowed-roles"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
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

/// `tka` as a user with a private HOME and XDG_CONFIG_HOME (and nothing else from this process's environment).
struct User {
    home: tempfile::TempDir,
}

impl User {
    fn new() -> User {
        User {
            home: tempfile::tempdir().unwrap(),
        }
    }
    fn config_home(&self) -> std::path::PathBuf {
        self.home.path().join("xdg")
    }
    fn file(&self) -> std::path::PathBuf {
        self.config_home().join("tka").join("config.yaml")
    }
    fn tka(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_tka"))
            .args(args)
            .env_clear()
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.config_home())
            .output()
            .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn set_config_creates_the_users_file_only_with_force() {
    let u = User::new();
    let (code, _, err) = u.tka(&["get", "config", "--filename"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--force"), "{err}");
    let (code, _, err) = u.tka(&["set", "config", "client.timeout", "1m"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(!u.file().exists());

    let (code, _, err) = u.tka(&["set", "config", "Client.Timeout", "1m", "--force"]);
    assert_eq!(code, Some(0), "{err}");
    // $XDG_CONFIG_HOME wins over ~/.config, and only the key is written: no defaults.
    assert_eq!(
        std::fs::read_to_string(u.file()).unwrap(),
        "client:\n  timeout: 1m\n"
    );
    let (_, out, _) = u.tka(&["get", "config", "--filename"]);
    assert_eq!(out.trim(), u.file().to_str().unwrap());
    let (_, out, _) = u.tka(&["config", "client.timeout"]);
    assert_eq!(out, "1m0s\n");
    let (_, out, _) = u.tka(&["config"]);
    assert!(out.lines().any(|l| l == "client.timeout=1m0s"), "{out}");
    assert!(out.lines().any(|l| l == "tailscale.hostname=tka"), "{out}");
    let (_, out, _) = u.tka(&["config", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["client"]["timeout"], "1m0s");
    assert_eq!(v["tailscale"]["port"], 443);

    // `config KEY VALUE` is `set config`.
    let (code, _, err) = u.tka(&["config", "output.format", "yaml"]);
    assert_eq!(code, Some(0), "{err}");
    let (_, out, _) = u.tka(&["get", "config", "output.format"]);
    assert_eq!(out, "yaml\n");
}

#[cfg(unix)]
#[test]
fn set_config_changes_only_the_key_and_rejects_bad_values() {
    use std::os::unix::fs::PermissionsExt;
    let u = User::new();
    let original = "\
# tka CLI settings
tailscale:
  hostname: tka-west   # our server

  port: 443
client:
  caFile: /etc/ssl/tka.pem
";
    std::fs::create_dir_all(u.file().parent().unwrap()).unwrap();
    std::fs::write(u.file(), original).unwrap();
    std::fs::set_permissions(u.file(), std::fs::Permissions::from_mode(0o640)).unwrap();

    let (code, _, err) = u.tka(&["set", "config", "tailscale.hostname", "tka-east"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = u.tka(&["set", "config", "tailscale.tailnet", "example.ts.net"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = u.tka(&["set", "config", "kubeconfig.exec", "true"]);
    assert_eq!(code, Some(0), "{err}");
    let expected = "\
# tka CLI settings
tailscale:
  hostname: tka-east   # our server

  port: 443
  tailnet: example.ts.net
client:
  caFile: /etc/ssl/tka.pem
kubeconfig:
  exec: true
";
    assert_eq!(std::fs::read_to_string(u.file()).unwrap(), expected);
    let mode = std::fs::metadata(u.file()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);

    for (args, needle) in [
        (&["set", "config", "kubeconfig.exec", "yes"][..], "boolean"),
        (&["set", "config", "client.timeout", "30"], "add a unit"),
        (
            &["set", "config", "tailscale.port", "70000"],
            "between 0 and 65535",
        ),
        (
            &["set", "config", "output.format", "xml"],
            "text, json, yaml",
        ),
        (
            &["set", "config", "tailscale.prot", "1"],
            "did you mean tailscale.port",
        ),
        (&["config", "client"], "is a section"),
        // Valid alone, but the file would then be invalid: tls.keyFile is missing.
        (&["set", "config", "tls.certFile", "/x.pem"], "tls.keyFile"),
    ] {
        let (code, _, err) = u.tka(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }
    assert_eq!(std::fs::read_to_string(u.file()).unwrap(), expected);
}

#[test]
fn set_config_writes_the_file_named_by_config() {
    let u = User::new();
    let file = u.home.path().join("elsewhere.yaml");
    let f = file.to_str().unwrap();
    let (code, _, err) = u.tka(&["-c", f, "set", "config", "debug", "true"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = u.tka(&["-c", f, "set", "config", "debug", "true", "--force"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "debug: true\n");
    assert!(!u.file().exists());
    let (_, out, _) = u.tka(&["-c", f, "get", "config", "--filename"]);
    assert_eq!(out.trim(), f);
}

#[test]
fn themes_are_checked_on_the_command_line_and_in_the_file() {
    let u = User::new();
    let (code, out, err) = u.tka(&["-t", "dracula", "config", "output.theme"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "dracula\n");
    let (code, _, err) = u.tka(&["--theme", "neon", "version"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("tokyo-night"), "{err}");
    let (code, _, err) = u.tka(&["set", "config", "output.theme", "neon", "--force"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("ascii, dark, dracula, tokyo-night, light, notty, markdown"),
        "{err}"
    );
    let (code, _, err) = u.tka(&["set", "config", "output.theme", "Light", "--force"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        std::fs::read_to_string(u.file()).unwrap(),
        "output:\n  theme: light\n"
    );
}
