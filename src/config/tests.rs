//! Loader tests. They never touch the process environment: every test passes its variables through a [`Host`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_yaml::Value;

use super::*;
use crate::model::duration::GoDuration;

const PRIMARY: &str = include_str!("../../tests/fixtures/config-primary.yaml");
const FEDERATED: &str = include_str!("../../tests/fixtures/config-federated.yaml");

/// base64 of a PEM block with a (syntactically valid) base64 body.
const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";

fn host(vars: &[(&str, &str)]) -> Host<'static> {
    Host::from_vars(vars.iter().copied())
}

fn load_env(yaml: &str, vars: &[(&str, &str)]) -> Result<Loaded, ConfigErrors> {
    load_str(yaml, "config.yaml", &host(vars))
}

fn ok(yaml: &str) -> Loaded {
    load_env(yaml, &[]).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
}

fn errors(yaml: &str) -> Vec<String> {
    errors_env(yaml, &[])
}

fn errors_env(yaml: &str, vars: &[(&str, &str)]) -> Vec<String> {
    match load_env(yaml, vars) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn d(s: &str) -> GoDuration {
    GoDuration::parse(s).unwrap()
}

fn b64(s: &str) -> String {
    data_encoding::BASE64.encode(s.as_bytes())
}

#[test]
fn primary_guide_config_loads_unchanged() {
    let loaded = ok(PRIMARY);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);

    let mut want = Config::default();
    want.tailscale.tailnet = "your-tailnet.ts.net".into();
    want.server.read_timeout = d("30s");
    want.server.read_header_timeout = d("10s");
    want.server.write_timeout = d("60s");
    want.server.idle_timeout = d("5m");
    want.operator.namespace = "tka-system".into();
    want.operator.cluster_name = "prod-login-cluster".into();
    want.operator.context_prefix = "tka-".into();
    want.operator.user_prefix = "tka-user-".into();
    want.otel.endpoint = "jaeger-collector.monitoring.svc.cluster.local:14250".into();
    want.otel.insecure = false;
    assert_eq!(loaded.config, want);

    // Consequences of the rules above, spelled out.
    let c = &loaded.config;
    assert_eq!(c.tailscale.hostname, "tka");
    assert_eq!(c.tailscale.port, 443);
    assert_eq!(c.tailscale.cap_name, "specht-labs.de/cap/tka");
    assert_eq!(c.tailscale.state_dir, PathBuf::from("/var/lib/tsnet"));
    assert_eq!(c.otel.protocol, OtelProtocol::Grpc);
    assert_eq!(c.server.idle_timeout.to_string(), "5m0s");
    assert!(c.cluster_info.api_endpoint.is_empty() && !c.cluster_info.config_map_ref.enabled);
}

#[test]
fn federated_guide_config_loads_unchanged() {
    let loaded = ok(FEDERATED);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);

    let mut want = Config::default();
    want.tailscale.hostname = "tka-west".into();
    want.tailscale.tailnet = "your-tailnet.ts.net".into();
    want.operator.namespace = "tka-system".into();
    want.operator.cluster_name = "prod-west-cluster".into();
    want.operator.context_prefix = "west-".into();
    want.operator.user_prefix = "west-user-".into();
    want.federation.login_server = "https://tka.your-tailnet.ts.net".into();
    assert_eq!(loaded.config, want);
}

#[test]
fn host_dependent_defaults() {
    // Out of cluster: tka-dev, no leader election.
    let c = ok("").config;
    assert_eq!(c.operator.namespace, "tka-dev");
    assert!(!c.operator.leader_election.enabled);

    // In cluster: the mounted namespace and leader election, unless configured otherwise.
    let in_cluster = || {
        host(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1")])
            .with_service_account_namespace(Some("tka-system\n".into()))
    };
    let c = load_str("", "config.yaml", &in_cluster()).unwrap().config;
    assert_eq!(c.operator.namespace, "tka-system");
    assert!(c.operator.leader_election.enabled);
    let yaml = "operator:\n  namespace: other\n  leaderElection:\n    enabled: false\n";
    let c = load_str(yaml, "config.yaml", &in_cluster()).unwrap().config;
    assert_eq!(c.operator.namespace, "other");
    assert!(!c.operator.leader_election.enabled);

    // The kubeconfig directory follows the user's config directory.
    let c = load_env("", &[("HOME", "/home/a")]).unwrap().config;
    assert_eq!(
        c.kubeconfig.dir,
        PathBuf::from("/home/a/.config/tka/kubeconfig")
    );
    let c = load_env("", &[("HOME", "/home/a"), ("XDG_CONFIG_HOME", "/x")])
        .unwrap()
        .config;
    assert_eq!(c.kubeconfig.dir, PathBuf::from("/x/tka/kubeconfig"));

    // The tailscaled run directory is private to the user: never a fixed name in a shared directory.
    let uid = crate::config::current_uid();
    let c = load_env("", &[("XDG_RUNTIME_DIR", "/run/user/7")])
        .unwrap()
        .config;
    assert_eq!(c.tailscale.run_dir, PathBuf::from("/run/user/7/tka"));
    let c = load_env("", &[("TMPDIR", "/var/tmp")]).unwrap().config;
    assert_eq!(
        c.tailscale.run_dir,
        PathBuf::from(format!("/var/tmp/tka-{uid}"))
    );
    let c = load_env("", &[]).unwrap().config;
    assert_eq!(
        c.tailscale.run_dir,
        PathBuf::from(format!("/tmp/tka-{uid}"))
    );
    let c = load_env(
        "tailscale:\n  runDir: /srv/tka\n",
        &[("XDG_RUNTIME_DIR", "/run/user/7")],
    )
    .unwrap()
    .config;
    assert_eq!(c.tailscale.run_dir, PathBuf::from("/srv/tka"));
}

#[test]
fn unknown_key_names_path_and_position() {
    let yaml = "tailscale:\n  hostname: tka\n\n  capname2: x\n";
    assert_eq!(
        errors(yaml),
        [
            "config.yaml:4:3: unknown key \"tailscale.capname2\" (did you mean \"tailscale.capName\"?)"
        ]
    );
    let e = load_env(yaml, &[]).unwrap_err().0.remove(0);
    assert_eq!(e.key, "tailscale.capname2");
    assert_eq!(e.location.as_deref(), Some("config.yaml:4:3"));

    // Unknown sections and deeper keys; no hint when nothing is close.
    let yaml = "operator:\n  leaderElection:\n    leaseNme: x\nwhatever: 1\n";
    assert_eq!(
        errors(yaml),
        [
            "config.yaml:3:5: unknown key \"operator.leaderElection.leaseNme\" (did you mean \
             \"operator.leaderElection.leaseName\"?)",
            "config.yaml:4:1: unknown key \"whatever\"",
        ]
    );
    // A dotted key is not a path.
    assert_eq!(
        errors("tailscale.port: 1\n"),
        ["config.yaml:1:1: unknown key \"tailscale.port\""]
    );
}

#[test]
fn all_errors_are_reported_together() {
    let yaml = "\
tailscale:
  port: abc
  capname2: x
server:
  readTimeout: 30
operator:
  clusterName: Prod_Cluster
api:
  execCredentialTTL: 5m
";
    assert_eq!(
        errors_env(yaml, &[("TKA_HEALTH_PORT", "http")]),
        [
            "config.yaml:2:3: tailscale.port: expected an integer between 0 and 65535, got \"abc\"",
            "config.yaml:3:3: unknown key \"tailscale.capname2\" (did you mean \"tailscale.capName\"?)",
            "config.yaml:5:3: server.readTimeout: invalid duration \"30\": missing unit (add a unit, e.g. 30s)",
            "$TKA_HEALTH_PORT: health.port: expected an integer between 0 and 65535, got \"http\"",
            "config.yaml:7:3: operator.clusterName: \"Prod_Cluster\" is not a DNS-1123 subdomain: use at most 63 \
             lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
            "config.yaml:9:3: api.execCredentialTTL: must be at least 10m (got 5m0s)",
        ]
    );
    // Display lists one per line.
    let shown = load_env(yaml, &[]).unwrap_err().to_string();
    assert_eq!(shown.lines().count(), 5, "{shown}");
}

#[test]
fn wrong_types_name_key_position_and_expected_type() {
    let cases = [
        (
            "tailscale:\n  port: abc\n",
            "config.yaml:2:3: tailscale.port: expected an integer between 0 and 65535, got \"abc\"",
        ),
        (
            "tailscale:\n  port: 70000\n",
            "config.yaml:2:3: tailscale.port: expected an integer between 0 and 65535, got 70000",
        ),
        (
            "debug: maybe\n",
            "config.yaml:1:1: debug: expected a boolean (true or false), got \"maybe\"",
        ),
        (
            "otel:\n  sampleRatio: [1]\n",
            "config.yaml:2:3: otel.sampleRatio: expected a number, got a list",
        ),
        (
            "log:\n  format: xml\n",
            "config.yaml:2:3: log.format: expected one of auto, json, text, got \"xml\"",
        ),
        (
            "tls: on\n",
            "config.yaml:1:1: tls: expected a section (key: value lines), got \"on\"",
        ),
        (
            "operator:\n  allowedRoles: view\n",
            "config.yaml:2:3: operator.allowedRoles: expected a list of strings, got \"view\"",
        ),
        (
            "operator:\n  allowedRoles: [view, {a: b}]\n",
            "config.yaml:2:3: operator.allowedRoles[1]: expected a string, got a mapping",
        ),
        (
            "clusterInfo:\n  labels:\n    env: prod\n    team: [a]\n",
            "config.yaml:4:5: clusterInfo.labels.team: expected a string, got a list",
        ),
        (
            "- a\n",
            "config.yaml:1:1: expected a mapping of sections, got a list",
        ),
    ];
    for (yaml, want) in cases {
        assert_eq!(errors(yaml), [want], "for {yaml:?}");
    }
    // Unambiguous scalar conversions are accepted (as viper's weak typing did).
    let c = ok("tailscale:\n  port: \"8443\"\n  hostname: 123\notel:\n  insecure: \"False\"\n  sampleRatio: 1\nlog:\n  level: DEBUG\n").config;
    assert_eq!(
        (c.tailscale.port, c.tailscale.hostname.as_str()),
        (8443, "123")
    );
    assert!(!c.otel.insecure);
    assert_eq!(c.otel.sample_ratio, 1.0);
    assert_eq!(c.log.level, LogLevel::Debug);
}

#[test]
fn bare_number_duration_is_rejected_with_advice() {
    for yaml in [
        "server:\n  readTimeout: 30\n",
        "server:\n  readTimeout: \"30\"\n",
    ] {
        assert_eq!(
            errors(yaml),
            [
                "config.yaml:2:3: server.readTimeout: invalid duration \"30\": missing unit (add a unit, e.g. 30s)"
            ]
        );
    }
    // Go accepts a bare 0.
    assert!(
        ok("operator:\n  maxPeriod: 0\n")
            .config
            .operator
            .max_period()
            .is_none()
    );
    assert_eq!(
        errors_env("", &[("TKA_CLIENT_TIMEOUT", "30")]),
        [
            "$TKA_CLIENT_TIMEOUT: client.timeout: invalid duration \"30\": missing unit (add a unit, e.g. 30s)"
        ]
    );
}

#[test]
fn negative_and_day_durations_are_rejected() {
    assert_eq!(
        errors("federation:\n  heartbeatInterval: -5s\n"),
        [
            "config.yaml:2:3: federation.heartbeatInterval: invalid duration \"-5s\": negative durations are not allowed"
        ]
    );
    assert_eq!(
        errors("operator:\n  maxPeriod: 1d\n"),
        [
            "config.yaml:2:3: operator.maxPeriod: invalid duration \"1d\": unknown unit \"d\" (use ns, us, ms, s, m or h)"
        ]
    );
    let c = ok("operator:\n  maxPeriod: 1.5h\n").config;
    assert_eq!(c.operator.max_period(), Some(d("90m")));
}

#[test]
fn environment_overrides_file_and_defaults() {
    let vars = [
        ("TKA_TAILSCALE_CAPNAME", "example.com/cap/x"),
        ("TKA_OPERATOR_ALLOWEDROLES", "view,edit"),
        ("TKA_CLUSTERINFO_LABELS", "env=prod,team=a"),
        ("TKA_OPERATOR_LEADERELECTION_ENABLED", "true"),
        ("TKA_SERVER_READTIMEOUT", "45s"),
        ("TKA_OUTPUT_MARKDOWNLINT_FIX", "1"),
        ("TKA_TAILSCALE_TAILNET", ""), // empty variables are ignored, as in viper
    ];
    let loaded = load_env(PRIMARY, &vars).unwrap();
    let c = &loaded.config;
    assert_eq!(c.tailscale.cap_name, "example.com/cap/x");
    assert_eq!(c.operator.allowed_roles, ["view", "edit"]);
    let labels: BTreeMap<String, String> = [("env", "prod"), ("team", "a")]
        .map(|(k, v)| (k.into(), v.into()))
        .into();
    assert_eq!(c.cluster_info.labels, labels);
    assert!(c.operator.leader_election.enabled);
    assert_eq!(c.server.read_timeout, d("45s")); // file says 30s
    assert!(c.output.markdownlint_fix);
    assert_eq!(c.tailscale.tailnet, "your-tailnet.ts.net");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);

    assert_eq!(
        errors_env("", &[("TKA_CLUSTERINFO_LABELS", "env=prod,oops")]),
        [
            "$TKA_CLUSTERINFO_LABELS: clusterInfo.labels: expected key=value pairs separated by commas, got \"oops\""
        ]
    );
}

#[test]
fn unknown_environment_variables_only_warn() {
    let vars = [
        ("TKA_TAILSCALE_CAPNAM", "x"),
        ("TKA_WHATEVER", "x"),
        ("TKA_PEERS_BIN", "/tmp/bin"),
        ("TKA_PEERS_DROP_GO_CACHES", "1"),
        ("TKA_TOOLS_DIR", "/tmp/tools"),
        ("TKA_INSECURE_TEST_IDENTITY", "1"),
        ("TKA_TAILSCALE_EMBEDDED_TAGRULES", "{}"),
        ("OTHER", "x"),
    ];
    let loaded = load_env("", &vars).unwrap();
    assert_eq!(
        loaded.warnings,
        [
            "TKA_TAILSCALE_EMBEDDED_TAGRULES: tailscale.embedded.tagRules cannot be set from the environment; ignored",
            "unknown environment variable TKA_TAILSCALE_CAPNAM is ignored (did you mean TKA_TAILSCALE_CAPNAME?)",
            "unknown environment variable TKA_WHATEVER is ignored",
        ]
    );
}

#[test]
fn keys_match_case_insensitively() {
    let c = ok("TAILSCALE: {CAPNAME: x, Port: 8443}\nOperator:\n  LEADERELECTION:\n    Enabled: true\nOUTPUT:\n  MarkdownLint-Fix: true\n").config;
    assert_eq!(c.tailscale.cap_name, "x");
    assert_eq!(c.tailscale.port, 8443);
    assert!(c.operator.leader_election.enabled);
    assert!(c.output.markdownlint_fix);

    // The same key twice in different spellings is ambiguous.
    assert_eq!(
        errors("tailscale:\n  capName: a\n  CAPNAME: b\n"),
        [
            "config.yaml:3:3: tailscale.capName is set twice (keys match case-insensitively; first at config.yaml:2:3)"
        ]
    );
    // Map keys are data and keep their case.
    let c = ok("clusterInfo:\n  labels:\n    Env: Prod\n").config;
    assert_eq!(
        c.cluster_info.labels.get("Env").map(String::as_str),
        Some("Prod")
    );
    // Errors inside flow mappings point at the enclosing key.
    assert_eq!(
        errors("tailscale: {port: x}\n"),
        ["config.yaml:1:1: tailscale.port: expected an integer between 0 and 65535, got \"x\""]
    );
}

#[test]
fn legacy_keys_are_accepted_with_warnings() {
    let loaded = ok("server:\n  host: 0.0.0.0\n  debug: true\n");
    assert!(loaded.config.debug);
    assert_eq!(
        loaded.warnings,
        [
            "config.yaml:2:3: server.host is deprecated and ignored",
            "config.yaml:3:3: server.debug is deprecated; use debug",
        ]
    );
    // The current key wins, wherever it appears.
    assert!(!ok("server:\n  debug: true\ndebug: false\n").config.debug);
    assert_eq!(
        errors("server:\n  debug: sure\n"),
        ["config.yaml:2:3: server.debug: expected a boolean (true or false), got \"sure\""]
    );
    let loaded = load_env("", &[("TKA_SERVER_DEBUG", "true")]).unwrap();
    assert!(loaded.config.debug);
    assert_eq!(
        loaded.warnings,
        ["TKA_SERVER_DEBUG is deprecated; use TKA_DEBUG"]
    );
    assert_eq!(loaded.config.log_level(), LogLevel::Debug);
}

#[test]
fn mutually_exclusive_and_paired_keys() {
    let yaml =
        "clusterInfo:\n  apiEndpoint: https://10.0.0.1:6443\n  configMapRef:\n    enabled: true\n";
    assert_eq!(
        errors(yaml),
        [
            "config.yaml:2:3: clusterInfo.apiEndpoint: cannot be combined with clusterInfo.configMapRef.enabled: \
             either set the endpoint (and caData) here or read them from the ConfigMap"
        ]
    );
    assert_eq!(
        errors("tls:\n  certFile: /tls/tls.crt\n"),
        ["config.yaml:2:3: tls.keyFile: must be set together with tls.certFile"]
    );
    assert_eq!(
        errors_env("", &[("TKA_TLS_KEYFILE", "/k")]),
        ["$TKA_TLS_KEYFILE: tls.certFile: must be set together with tls.keyFile"]
    );
    assert_eq!(
        errors("tls:\n  mode: files\n"),
        ["config.yaml:2:3: tls.mode: is \"files\" but tls.certFile and tls.keyFile are not set"]
    );
    let c = ok("tls:\n  mode: FILES\n  certFile: /c\n  keyFile: /k\n").config;
    assert_eq!(c.tls.mode, TlsMode::Files);
}

#[test]
fn connection_caps_must_be_positive_and_nested() {
    assert_eq!(
        errors("server:\n  maxConnections: 0\n  maxConnectionsPerPeer: 0\n"),
        [
            "config.yaml:2:3: server.maxConnections: must be at least 1 (it caps the open tailnet connections)",
            "config.yaml:3:3: server.maxConnectionsPerPeer: must be between 1 and server.maxConnections (0), got 0"
        ]
    );
    assert_eq!(
        errors_env("", &[("TKA_SERVER_MAXCONNECTIONSPERPEER", "5000")]),
        [
            "$TKA_SERVER_MAXCONNECTIONSPERPEER: server.maxConnectionsPerPeer: must be between 1 and server.maxConnections (2048), got 5000"
        ]
    );
    let c = ok("server:\n  maxConnections: 10\n  maxConnectionsPerPeer: 10\napi:\n  federationRateLimit: 5\n").config;
    assert_eq!(
        (
            c.server.max_connections,
            c.server.max_connections_per_peer,
            c.api.federation_rate_limit
        ),
        (10, 10, 5)
    );
}

#[test]
fn ca_data_must_be_base64_pem_with_a_certificate() {
    let cases = [
        ("not base64!", "is not valid base64"),
        (&*b64("hello"), "without a PEM CERTIFICATE block"),
        (PEM, "is raw PEM; it must be base64-encoded"),
        (
            &*b64("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n"),
            "malformed PEM CERTIFICATE block",
        ),
        (
            &*b64("-----BEGIN CERTIFICATE-----\nMIIB\n"),
            "without its END line",
        ),
    ];
    for (data, want) in cases {
        let yaml = format!("clusterInfo:\n  caData: {data:?}\n");
        let got = errors(&yaml);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("config.yaml:2:3: clusterInfo.caData: "),
            "{got:?}"
        );
        assert!(got[0].contains(want), "{data}: {got:?}");
    }
    let c = ok(&format!("clusterInfo:\n  caData: {}\n", b64(PEM))).config;
    assert_eq!(c.cluster_info.ca_pem().unwrap().as_deref(), Some(PEM));
    assert_eq!(ClusterInfoConfig::default().ca_pem(), Ok(None));
}

#[test]
fn other_validation_and_normalisation() {
    let c = ok("health:\n  port: 0\napi:\n  retryAfterSeconds: -3\n").config;
    assert_eq!((c.health.port, c.api.retry_after_seconds), (8080, 1));
    assert_eq!(
        errors("federation:\n  loginServer: tka.example\n"),
        [
            "config.yaml:2:3: federation.loginServer: \"tka.example\" is not an http(s) URL; use e.g. https://tka.your-tailnet.ts.net"
        ]
    );
    assert_eq!(
        errors("otel:\n  sampleRatio: 1.5\n"),
        ["config.yaml:2:3: otel.sampleRatio: must be between 0 and 1 (got 1.5)"]
    );
    // Flags are applied by the caller; validate() re-checks them.
    let mut c = Config::default();
    c.operator.cluster_name = "-bad".into();
    c.api.exec_credential_ttl = d("1m");
    assert_eq!(c.validate().unwrap_err().0.len(), 2);
    assert!(Config::default().validate().is_ok());
}

#[test]
fn malformed_yaml_reports_its_position() {
    let got = errors("tailscale:\n  port: 443\n bad\n");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("config.yaml:3:"), "{got:?}");
    assert!(got[0].contains("malformed YAML: "), "{got:?}");
    assert!(
        !got[0].contains(" at line 3"),
        "position printed twice: {got:?}"
    );
}

#[test]
fn tag_rules_are_kept_as_json() {
    let yaml = "\
tailscale:
  backend: embedded
  embedded:
    tagRules:
      tag:ci:
        - role: view
          period: 1h
          priority: 10
";
    let c = ok(yaml).config;
    assert_eq!(c.tailscale.backend, Backend::Embedded);
    let rules = &c.tailscale.embedded.tag_rules["tag:ci"];
    assert_eq!(
        rules,
        &[serde_json::json!({"role": "view", "period": "1h", "priority": 10})]
    );
    assert_eq!(
        errors("tailscale:\n  embedded:\n    tagRules:\n      tag:ci: view\n"),
        [
            "config.yaml:4:7: tailscale.embedded.tagRules.tag:ci: expected a list of rules, got \"view\""
        ]
    );
}

#[test]
fn files_are_found_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().display().to_string();
    std::fs::create_dir_all(dir.path().join("tka")).unwrap();
    let file = dir.path().join("tka/config.yaml");
    std::fs::write(&file, FEDERATED).unwrap();

    let loaded = load_with(None, &host(&[("XDG_CONFIG_HOME", &xdg)])).unwrap();
    assert_eq!(loaded.source.as_deref(), Some(file.as_path()));
    assert_eq!(loaded.config.tailscale.hostname, "tka-west");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "tailscale:\n  prot: 1\n").unwrap();
    let e = load_with(Some(&bad), &host(&[])).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:2:3: unknown key \"tailscale.prot\" (did you mean \"tailscale.port\"?)",
            bad.display()
        )
    );

    let missing = dir.path().join("missing.yaml");
    let e = load_with(Some(&missing), &host(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("{}: cannot read", missing.display())),
        "{e}"
    );
}

#[test]
fn redacted_yaml_is_loadable_and_shortens_ca_data() {
    let ca = b64(&PEM.repeat(3));
    let yaml = format!(
        "{PRIMARY}clusterInfo:\n  caData: {ca}\n  labels: {{env: prod}}\nfederation:\n  loginServer: https://u:pw@tka.example/x\n"
    );
    let c = ok(&yaml).config;
    let out = c.redacted_yaml();
    assert!(
        !out.contains(&ca)
            && out.contains(&format!("caData: {}… ({} characters)", &ca[..16], ca.len())),
        "{out}"
    );
    assert!(
        out.contains("loginServer: https://REDACTED@tka.example/x"),
        "{out}"
    );
    assert!(!out.contains("pw"), "{out}");

    // Without redacted values, the output is a complete, loadable configuration.
    let out = ok(PRIMARY).config.redacted_yaml();
    assert_eq!(ok(&out).config, ok(PRIMARY).config);
}

/// Flattens a serialized `Config` to its leaf key paths (maps and lists are leaves).
fn leaf_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Mapping(m) if !m.is_empty() || prefix.is_empty() => {
            for (k, v) in m {
                let k = k.as_str().unwrap();
                let path = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_paths(v, &path, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

#[test]
fn key_table_matches_the_structs() {
    let mut paths = BTreeSet::new();
    leaf_paths(
        &serde_yaml::to_value(Config::default()).unwrap(),
        "",
        &mut paths,
    );
    let table: BTreeSet<String> = keys().map(String::from).collect();
    assert_eq!(paths, table);

    // Every enum value the table accepts deserializes into its Rust enum.
    for spec in schema::KEYS {
        if let schema::Kind::Enum(names) = spec.kind {
            for name in names {
                let (section, key) = spec.path.split_once('.').unwrap();
                // Other rules may object (tls.mode files needs files), but never to the value itself.
                if let Err(e) = load_env(&format!("{section}:\n  {key}: {name:?}\n"), &[]) {
                    assert!(
                        e.0.iter().all(|e| !e.message.contains("expected")),
                        "{name}: {e}"
                    );
                }
            }
        }
    }
}

#[test]
fn public_key_helpers() {
    assert_eq!(
        canonical_key("TAILSCALE.CAPNAME"),
        Some("tailscale.capName")
    );
    assert_eq!(canonical_key("tailscale"), None);
    assert_eq!(canonical_key("server.host"), None);
    assert_eq!(
        env_var_name("output.markdownlint-fix").as_deref(),
        Some("TKA_OUTPUT_MARKDOWNLINT_FIX")
    );
    assert_eq!(
        env_var_name("operator.leaderElection.enabled").as_deref(),
        Some("TKA_OPERATOR_LEADERELECTION_ENABLED")
    );
    assert_eq!(
        parse_value("tailscale.port", "8443"),
        Ok(("tailscale.port", Value::from(8443)))
    );
    assert_eq!(
        parse_value("operator.allowedroles", "a, b"),
        Ok((
            "operator.allowedRoles",
            Value::Sequence(vec!["a".into(), "b".into()])
        ))
    );
    assert!(
        parse_value("server.readTimeout", "30")
            .unwrap_err()
            .contains("add a unit")
    );
    assert!(parse_value("nope", "1").is_err());
}

#[test]
fn set_config_helpers_unknown_keys_durations_and_effective_values() {
    assert_eq!(
        unknown_key("tailscale.prot"),
        "unknown key \"tailscale.prot\" (did you mean tailscale.port?)"
    );
    // The last segment alone finds every key of that name.
    assert_eq!(
        unknown_key("port"),
        "unknown key \"port\" (did you mean tailscale.port, health.port?)"
    );
    assert!(
        unknown_key("KUBECONFIG").starts_with(
            "\"KUBECONFIG\" is a section, not a key; its keys: kubeconfig.exec, kubeconfig.merge"
        ),
        "{}",
        unknown_key("KUBECONFIG")
    );
    assert_eq!(unknown_key("zzz"), "unknown key \"zzz\"");
    // Durations are written as typed once they parse.
    assert_eq!(
        parse_value("client.timeout", "5m"),
        Ok(("client.timeout", Value::String("5m".into())))
    );
    let c = Config::default();
    assert_eq!(c.value("client.timeout"), Some(Value::String("30s".into())));
    assert_eq!(c.value("tailscale.port"), Some(Value::from(443)));
    assert_eq!(c.value("output.markdownlint-fix"), Some(Value::Bool(false)));
    assert_eq!(c.value("tailscale.nope"), None);
}

#[test]
fn a_member_without_primary_tags_is_warned_at_start() {
    let member = "federation:\n  loginServer: https://tka.example.ts.net\n";
    assert!(
        ok(member).warnings.is_empty(),
        "the default tag marks the primary"
    );
    let loaded = ok(&format!("{member}  primaryTags: []\n"));
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].starts_with("federation.primaryTags is empty"),
        "{:?}",
        loaded.warnings
    );
    // A primary (no loginServer) never checks a primary.
    assert!(ok("federation:\n  primaryTags: []\n").warnings.is_empty());
}
