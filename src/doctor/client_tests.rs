use super::*;
use crate::doctor::Status;
use serde_json::json;

fn daemon(state: &str) -> Daemon {
    Daemon {
        backend_state: state.into(),
        login: "alice@example.com".into(),
        fqdn: "laptop.tailnet.test".into(),
        magic_dns_suffix: "tailnet.test".into(),
        magic_dns_enabled: Some(true),
    }
}

#[test]
fn tailscaled_running_logged_out_or_down() {
    assert_eq!(tailscaled(&Ok(daemon("Running"))).status, Status::Ok);
    let c = tailscaled(&Ok(daemon("NeedsLogin")));
    assert_eq!(
        (c.status, c.advice[0].as_str()),
        (Status::Fail, "run `tailscale up` (or `tailscale login`)")
    );
    assert_eq!(tailscaled(&Ok(daemon("Stopped"))).status, Status::Fail);
    let down = tailscaled(&Err("connection refused".into()));
    assert_eq!(down.status, Status::Fail);
    assert!(down.advice[0].contains("systemctl start tailscaled"));
}

#[test]
fn magicdns_matters_only_for_names() {
    assert_eq!(magicdns(&daemon("Running"), true).status, Status::Ok);
    let off = Daemon {
        magic_dns_enabled: Some(false),
        magic_dns_suffix: String::new(),
        ..daemon("Running")
    };
    assert_eq!(magicdns(&off, true).status, Status::Fail);
    assert_eq!(magicdns(&off, false).status, Status::Skip);
}

#[test]
fn clock_skew_thresholds() {
    let t = |s: &str| s.parse::<Timestamp>().unwrap();
    let server = Some(t("2026-01-01T00:00:00Z"));
    let c = clock(
        server,
        t("2026-01-01T00:00:00.100Z"),
        t("2026-01-01T00:00:00.300Z"),
    );
    assert_eq!(c.status, Status::Ok, "{c:?}");
    assert_eq!(
        clock(server, t("2026-01-01T00:00:20Z"), t("2026-01-01T00:00:20Z")).status,
        Status::Warn
    );
    let behind = clock(server, t("2025-12-31T23:58:00Z"), t("2025-12-31T23:58:00Z"));
    assert_eq!(behind.status, Status::Fail);
    assert!(
        behind.message.contains("120.0 s behind"),
        "{}",
        behind.message
    );
    assert_eq!(
        clock(None, t("2026-01-01T00:00:00Z"), t("2026-01-01T00:00:00Z")).status,
        Status::Skip
    );
}

#[test]
fn grant_selected_or_rejected_with_advice() {
    let ok = json!({"login_name": "alice", "node": "laptop", "cluster": "prod", "rules": [{"role": "view"}],
        "selected": {"role": "view", "period": "8h0m0s"}, "reject": null});
    let c = grant(&ok);
    assert_eq!(c.status, Status::Ok);
    assert_eq!(
        c.message,
        "alice on laptop: role view for 8h0m0s (1 rule(s) for cluster prod)"
    );
    let none = json!({"login_name": "bob", "node": "pc", "rules": [], "selected": null,
        "reject": {"code": "no_grant", "message": "no tka grant for bob"}});
    let c = grant(&none);
    assert_eq!(c.status, Status::Fail);
    assert_eq!(c.message, "bob on pc: no tka grant for bob (no_grant)");
    assert!(c.advice[0].contains("specht-labs.de/cap/tka"));
}

#[test]
fn session_states() {
    let body = json!({"username": "alice", "role": "view", "until": "2026-01-01T08:00:00Z"});
    assert_eq!(session(200, &body, &|t| t.to_string()).status, Status::Ok);
    assert_eq!(session(202, &body, &|t| t.to_string()).status, Status::Warn);
    assert_eq!(
        session(401, &json!({}), &|t| t.to_string()).status,
        Status::Warn
    );
    assert_eq!(
        session(500, &json!({}), &|t| t.to_string()).status,
        Status::Fail
    );
}

fn line(paths: &[PathBuf]) -> String {
    let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    format!("export KUBECONFIG='{}'", list.join(":"))
}

#[test]
fn kubeconfig_stale_entries_get_the_fixed_export_line() {
    let root = PathBuf::from("/h/.config/tka/kubeconfig");
    let gone = root.join("tka.t/prod.yaml");
    let f = KubeconfigFacts {
        entries: vec![(gone.clone(), false), ("/h/.kube/config".into(), true)],
        root: root.clone(),
        signed_in: Some(false),
        ..Default::default()
    };
    let c = kubeconfig(&f, &line);
    assert_eq!(c.status, Status::Fail);
    assert!(c.message.contains("prod.yaml"), "{}", c.message);
    assert!(
        c.advice[0].ends_with("export KUBECONFIG='/h/.kube/config'"),
        "{}",
        c.advice[0]
    );
    // A missing file outside tka's directory is not tka's business.
    let other = KubeconfigFacts {
        entries: vec![("/h/missing".into(), false)],
        ..f.clone()
    };
    assert_eq!(kubeconfig(&other, &line).status, Status::Ok);
}

#[test]
fn kubeconfig_files_without_a_session_or_a_session_without_files() {
    let root = PathBuf::from("/h/.config/tka/kubeconfig");
    let file = root.join("tka.t/prod.yaml");
    let leftover = KubeconfigFacts {
        root: root.clone(),
        managed: vec![file.clone()],
        signed_in: Some(false),
        ..Default::default()
    };
    let c = kubeconfig(&leftover, &line);
    assert_eq!(c.status, Status::Fail);
    assert!(c.advice[0].contains("tka logout"));
    let unused = KubeconfigFacts {
        signed_in: Some(true),
        entries: vec![("/h/.kube/config".into(), true)],
        ..leftover.clone()
    };
    let c = kubeconfig(&unused, &line);
    assert_eq!(c.status, Status::Warn);
    assert!(
        c.advice[0].contains(&format!("'{}:/h/.kube/config'", file.display())),
        "{}",
        c.advice[0]
    );
    let used = KubeconfigFacts {
        entries: vec![(file.clone(), true)],
        ..unused.clone()
    };
    assert_eq!(kubeconfig(&used, &line).status, Status::Ok);
    let merged = KubeconfigFacts {
        managed: vec![],
        merge_target: Some("/h/.kube/config".into()),
        merged: vec!["tka-prod".into()],
        ..unused.clone()
    };
    assert!(
        kubeconfig(&merged, &line)
            .message
            .contains("merged into /h/.kube/config: tka-prod")
    );
    let nothing = KubeconfigFacts {
        managed: vec![],
        ..unused
    };
    assert_eq!(kubeconfig(&nothing, &line).status, Status::Warn);
}

#[test]
fn kubectl_and_the_plugin_on_path() {
    let f = |version, tka: Option<&str>, exec| KubectlFacts {
        version,
        tka: tka.map(PathBuf::from),
        exec_in_use: exec,
    };
    assert_eq!(
        kubectl(&f(Ok((37, "v1.37.2".into())), Some("/usr/bin/tka"), true)).status,
        Status::Ok
    );
    assert_eq!(
        kubectl(&f(Ok((37, "v1.37.2".into())), None, true)).status,
        Status::Fail
    );
    assert_eq!(
        kubectl(&f(Ok((37, "v1.37.2".into())), None, false)).status,
        Status::Ok
    );
    assert_eq!(
        kubectl(&f(Ok((21, "v1.21.0".into())), Some("/t"), true)).status,
        Status::Fail
    );
    assert_eq!(
        kubectl(&f(Err("not found".into()), None, false)).status,
        Status::Warn
    );
}

#[test]
fn kuberc_blocks_only_where_kubectl_enforces_it() {
    let resolve = |n: &str| (n == "tka").then(|| PathBuf::from("/usr/bin/tka"));
    let p = Path::new("/h/.kube/kuberc");
    let deny = Ok(Some("kind: Preference\ncredentialPluginPolicy: Allowlist\ncredentialPluginAllowlist:\n- name: other\n".to_string()));
    let c = kuberc(Some(p), &deny, &resolve, Some(37));
    assert_eq!(c.status, Status::Fail);
    assert!(c.advice[0].contains("{name: tka}"), "{}", c.advice[0]);
    assert_eq!(
        kuberc(Some(p), &deny, &resolve, Some(34)).status,
        Status::Warn
    );
    assert_eq!(
        kuberc(Some(p), &Ok(None), &resolve, Some(37)).status,
        Status::Ok
    );
    assert_eq!(
        kuberc(None, &Ok(None), &resolve, Some(37)).status,
        Status::Ok
    );
}

#[test]
fn token_files_must_be_private_and_ours() {
    let item = |path: &str, mode, uid, dir| Private {
        path: path.into(),
        mode,
        uid,
        dir,
    };
    let good = [
        item("/c/tka", 0o700, 1000, true),
        item("/c/tka/credentials/a.json", 0o600, 1000, false),
    ];
    assert_eq!(permissions(&good, 1000).status, Status::Ok);
    let open = [
        item("/c/tka", 0o755, 1000, true),
        item("/c/tka/credentials/a.json", 0o644, 1000, false),
    ];
    let c = permissions(&open, 1000);
    assert_eq!(c.status, Status::Fail);
    assert_eq!(
        c.message,
        "readable by others: /c/tka (755), /c/tka/credentials/a.json (644)"
    );
    assert_eq!(permissions(&good, 0).status, Status::Fail);
    assert_eq!(permissions(&[], 1000).status, Status::Ok);
}
