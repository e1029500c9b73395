//! `tka generate integration <shell>` run by the real shells (bash, zsh, fish; PowerShell is not available in
//! the test image, its script is only checked for the same word lists by a unit test): the function evaluates
//! exactly the same commands in every shell. A stand-in `tka` on PATH records its arguments and `SHELL`, and
//! prints an export line in the syntax the wrapper asked for.

use std::path::Path;
use std::process::Command;

/// The stand-in: prints the line for `$SHELL`, records `$SHELL` and its arguments, exits 4 for `logout`.
const FAKE_TKA: &str = r#"#!/bin/sh
echo "SHELL=$SHELL ARGS=$*" >> "$TKA_FAKE_LOG"
case "$SHELL" in
  fish) echo "set -gx --path KUBECONFIG '/it/$1'" ;;
  *) echo "export KUBECONFIG='/it/$1'" ;;
esac
case " $* " in *" logout "*) exit 4 ;; esac
exit 0
"#;

/// (command line, whether KUBECONFIG must change)
const CASES: &[(&str, bool)] = &[
    ("login", true),
    ("-s prod signin", true),
    ("--server prod --timeout 5s reauth --role view", true),
    ("kubeconfig --exec", true),
    ("get kubeconfig", true),
    ("get login", false),
    ("login --stdout", false),
    ("login --no-eval", false),
    ("-e login", false),
    ("login -o json", false),
    ("login --output=yaml", false),
    ("login --help", false),
    ("version", false),
    ("cluster-info", false),
];

fn shell_available(shell: &str) -> bool {
    Command::new(shell)
        .arg("-c")
        .arg("exit 0")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(shell: &str, script: &str, dir: &Path) -> String {
    let out = Command::new(shell)
        .arg("-c")
        .arg(script)
        .env(
            "PATH",
            format!("{}:{}", dir.display(), std::env::var("PATH").unwrap()),
        )
        .env("TKA_FAKE_LOG", dir.join("log"))
        .env("SHELL", "/bin/sh")
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check(shell: &str) {
    if !shell_available(shell) {
        // .ci/run installs zsh and fish; a developer machine may lack them.
        eprintln!("skipping {shell}: not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("tka");
    std::fs::write(&fake, FAKE_TKA).unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let wrapper = Command::new(env!("CARGO_BIN_EXE_tka"))
        .args(["generate", "integration", shell])
        .output()
        .unwrap();
    assert!(wrapper.status.success());
    let wrapper = String::from_utf8(wrapper.stdout).unwrap();
    for (line, evaluated) in CASES {
        let script = if shell == "fish" {
            format!(
                "{wrapper}\nset -e KUBECONFIG\ntka {line} >/dev/null\necho \"rc=$status KUBECONFIG=$KUBECONFIG\""
            )
        } else {
            format!(
                "{wrapper}\nunset KUBECONFIG\ntka {line} >/dev/null\necho \"rc=$? KUBECONFIG=$KUBECONFIG\""
            )
        };
        let got = run(shell, &script, dir.path());
        let first = line
            .split_whitespace()
            .find(|w| !w.starts_with('-') && !["prod", "5s"].contains(w))
            .unwrap();
        let want = if *evaluated {
            format!(
                "rc=0 KUBECONFIG=/it/{}\n",
                line.split_whitespace().next().unwrap()
            )
        } else {
            "rc=0 KUBECONFIG=\n".to_string()
        };
        assert_eq!(got, want, "{shell}: tka {line} (subcommand {first})");
    }
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(
        log.contains(&format!("SHELL={shell} ARGS=login --quiet")),
        "{log}"
    );

    // A failing logout: the line is still evaluated and the exit code kept.
    let script = if shell == "fish" {
        format!("{wrapper}\ntka logout >/dev/null\necho \"rc=$status KUBECONFIG=$KUBECONFIG\"")
    } else {
        format!("{wrapper}\ntka logout >/dev/null\necho \"rc=$? KUBECONFIG=$KUBECONFIG\"")
    };
    assert_eq!(
        run(shell, &script, dir.path()),
        "rc=4 KUBECONFIG=/it/logout\n",
        "{shell}"
    );
}

#[test]
fn bash_wrapper_evaluates_the_same_commands() {
    check("bash");
}

#[test]
fn zsh_wrapper_evaluates_the_same_commands() {
    check("zsh");
}

#[test]
fn fish_wrapper_evaluates_the_same_commands() {
    check("fish");
}
