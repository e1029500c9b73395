//! The kustomize manifests under `deploy/kustomize/`: they render, the
//! real apiserver accepts them, their pods pass Pod Security "restricted" (and the deployment guide's do not),
//! the generated RBAC has not drifted, and every shipped `config.yaml` passes `tka-server check`.
//!
//! Shared-apiserver rules: namespaces `tka-system` and `pss-test` belong to these tests; cluster-scoped
//! objects of the manifests (ClusterRole/ClusterRoleBinding `tka-server`, the TkaSignin CRD) and the
//! kube-public RBAC are only ever dry-run. Only the Prometheus Operator stand-in CRDs are installed for real.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use serde_json::{Value, json};

use crate::harness::{Env, eventually};

scenarios!(
    manifests_every_overlay_and_install_render,
    manifests_keep_the_guides_objects_and_add_the_hardening,
    manifests_are_accepted_by_the_apiserver,
    manifests_pods_pass_pod_security_restricted_and_the_guides_do_not,
    manifests_rbac_yaml_is_what_tka_server_rbac_prints,
    manifests_overlay_configs_pass_tka_server_check,
);

/// Overlays that deploy the server, relative to `deploy/kustomize`.
const OVERLAYS: &[&str] = &["overlays/primary", "overlays/federated", "overlays/test"];
const NS: &str = "tka-system";
const ROLES: &[&str] = &["view", "edit", "admin"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn kustomize_dir() -> PathBuf {
    root().join("deploy/kustomize")
}

fn fixture(name: &str) -> String {
    let path = root().join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse_docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML document parses"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// Runs a command, feeding `stdin`, and returns its output (never panics on a non-zero exit).
fn run(cmd: &mut Command, stdin: Option<&str>) -> Output {
    use std::io::Write;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// kubectl as the admin, with a throw-away discovery cache (a stale one would not know the CRDs
/// installed a moment ago).
fn kubectl(env: &Env, args: &[&str], stdin: Option<&str>) -> Output {
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env.cp.kubectl());
    cmd.arg("--kubeconfig")
        .arg(env.cp.admin_kubeconfig_path())
        .arg("--cache-dir")
        .arg(cache.path())
        .args(args);
    run(&mut cmd, stdin)
}

fn kubectl_ok(env: &Env, args: &[&str], stdin: Option<&str>) -> Output {
    let out = kubectl(env, args, stdin);
    assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
    out
}

/// `kubectl kustomize deploy/kustomize/<dir>`: the YAML and its objects.
pub fn render(env: &Env, dir: &str) -> (String, Vec<Value>) {
    let out = run(
        Command::new(env.cp.kubectl())
            .arg("kustomize")
            .arg(kustomize_dir().join(dir)),
        None,
    );
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        text(&out)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let docs = parse_docs(&yaml);
    assert!(!docs.is_empty(), "{dir} renders nothing");
    (yaml, docs)
}

pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn get<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    find(docs, kind, name).unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// `(kind, namespace/name)` of every object, sorted.
fn ids(docs: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = docs
        .iter()
        .map(|d| {
            let m = &d["metadata"];
            match m["namespace"].as_str() {
                Some(ns) => format!("{} {ns}/{}", d["kind"].as_str().unwrap(), m["name"]),
                None => format!("{} {}", d["kind"].as_str().unwrap(), m["name"]),
            }
            .replace('"', "")
        })
        .collect();
    ids.sort();
    ids
}

/// `small` is contained in `big`: objects key by key, arrays element-wise (each element of `small` is
/// contained in some element of `big`), scalars equal.
fn contains(big: &Value, small: &Value) -> bool {
    match (big, small) {
        (Value::Object(b), Value::Object(s)) => s
            .iter()
            .all(|(k, v)| b.get(k).is_some_and(|bv| contains(bv, v))),
        (Value::Array(b), Value::Array(s)) => {
            s.iter().all(|sv| b.iter().any(|bv| contains(bv, sv)))
        }
        _ => big == small,
    }
}

fn assert_contains(big: &Value, small: &Value, what: &str) {
    assert!(
        contains(big, small),
        "{what}: expected\n{}\nto contain\n{}",
        serde_yaml::to_string(big).unwrap(),
        serde_yaml::to_string(small).unwrap()
    );
}

/// The objects every server overlay has (on top of its own).
fn base_ids() -> Vec<&'static str> {
    vec![
        "ClusterRole tka-server",
        "ClusterRoleBinding tka-server",
        "ConfigMap tka-system/tka-config",
        "CustomResourceDefinition tkasignins.tka.specht-labs.de",
        "Deployment tka-system/tka-server",
        "FlowSchema tka-controller",
        "FlowSchema tka-urgent",
        "Namespace tka-system",
        "NetworkPolicy tka-system/tka-server",
        "PriorityLevelConfiguration tka",
        "Role kube-public/tka-server-cluster-info",
        "Role tka-system/tka-server",
        "RoleBinding kube-public/tka-server-cluster-info",
        "RoleBinding tka-system/tka-server",
        "Service tka-system/tka-server",
        "ServiceAccount tka-system/tka-controller",
        "ValidatingAdmissionPolicy tka-controller-bindings",
        "ValidatingAdmissionPolicyBinding tka-controller-bindings",
    ]
}

async fn manifests_every_overlay_and_install_render(env: Arc<Env>) {
    let sorted = |mut v: Vec<&str>| {
        v.sort();
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let pvc = "PersistentVolumeClaim tka-system/tka-tsnet-state";

    let mut primary = base_ids();
    primary.extend([
        pvc,
        "ServiceMonitor tka-system/tka-server",
        "PrometheusRule tka-system/tka-alerts",
        "ConfigMap tka-system/tka-grafana-dashboard",
        "NetworkPolicy tka-system/tka-server-otel-egress",
    ]);
    assert_eq!(ids(&render(&env, "overlays/primary").1), sorted(primary));

    let mut federated = base_ids();
    federated.push(pvc);
    assert_eq!(
        ids(&render(&env, "overlays/federated").1),
        sorted(federated)
    );

    // ha-secret-state: the PVC goes, the state Secret comes.
    let mut test = base_ids();
    test.push("Secret tka-system/tka-tailscale-state");
    let (_, test_docs) = render(&env, "overlays/test");
    assert_eq!(ids(&test_docs), sorted(test));
    let deploy = get(&test_docs, "Deployment", "tka-server");
    assert_eq!(deploy["spec"]["replicas"], 1);
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Never");
    // The VM test imports the Nix-built image, tagged with the crate version.
    assert_eq!(
        c["image"],
        format!("ghcr.io/spechtlabs/tka:{}", env!("CARGO_PKG_VERSION"))
    );
    assert_contains(
        c,
        &json!({"env": [{"name": "TKA_TAILSCALE_STATESECRET", "value": "tka-tailscale-state"}]}),
        "test overlay: state in the Secret",
    );
    let state = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tsnet-state")
        .unwrap();
    assert_eq!(state, &json!({"name": "tsnet-state", "emptyDir": {}}));
    assert!(pod["affinity"].get("podAffinity").is_none(), "{pod}");
    assert!(
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            .is_array()
    );
    assert_contains(
        pod,
        &json!({"volumes": [{"name": "tls", "secret": {"secretName": "tka-tls"}}],
                "containers": [{"volumeMounts": [{"name": "tls", "mountPath": "/etc/tka-tls", "readOnly": true}]}]}),
        "test overlay: TLS files from the Secret",
    );

    // install/ (the release asset tka-k8s.yaml): CRD, SA, RBAC and the SA's API Priority and Fairness, exactly
    // the base's files. No Namespace: the guide creates it unlabelled and applies its own (unhardened)
    // Deployment next.
    let (_, install) = render(&env, "install");
    let base = kustomize_dir().join("base");
    let mut expected = Vec::new();
    for f in [
        "crd.yaml",
        "serviceaccount.yaml",
        "rbac.yaml",
        "flowcontrol.yaml",
        "admission-policy.yaml",
    ] {
        expected.extend(parse_docs(&std::fs::read_to_string(base.join(f)).unwrap()));
    }
    assert_eq!(ids(&install), ids(&expected));
    for doc in &expected {
        assert!(
            install.contains(doc),
            "install/ changes {}",
            serde_yaml::to_string(doc).unwrap()
        );
    }
}

async fn manifests_keep_the_guides_objects_and_add_the_hardening(env: Arc<Env>) {
    let guide = parse_docs(&fixture("guide-manifests.yaml"));
    let mut guide_deploy = get(&guide, "Deployment", "tka-server").clone();
    // The guide's probes on /metrics are replaced by /healthz and /ready.
    let c = &mut guide_deploy["spec"]["template"]["spec"]["containers"][0];
    let c = c.as_object_mut().unwrap();
    assert!(c.remove("readinessProbe").is_some() && c.remove("livenessProbe").is_some());

    for overlay in ["overlays/primary", "overlays/federated"] {
        let (_, docs) = render(&env, overlay);
        // Everything the guide sets is still there, unchanged.
        assert_contains(
            get(&docs, "Deployment", "tka-server"),
            &guide_deploy,
            overlay,
        );
        for (kind, name) in [
            ("PersistentVolumeClaim", "tka-tsnet-state"),
            ("Service", "tka-server"),
            ("NetworkPolicy", "tka-server"),
            ("Namespace", NS),
        ] {
            assert_contains(get(&docs, kind, name), get(&guide, kind, name), overlay);
        }
        // The Service is the guide's, verbatim.
        assert_eq!(
            get(&docs, "Service", "tka-server"),
            get(&guide, "Service", "tka-server")
        );
    }

    let (_, primary) = render(&env, "overlays/primary");
    // The monitoring component: the guide's objects, verbatim (the dashboard: tests/integration/dashboard.rs).
    for (kind, name) in [
        ("ServiceMonitor", "tka-server"),
        ("PrometheusRule", "tka-alerts"),
    ] {
        assert_eq!(get(&primary, kind, name), get(&guide, kind, name), "{kind}");
    }

    // The hardening table: what the product adds to the guide's Deployment.
    let deploy = get(&primary, "Deployment", "tka-server");
    let port_probe = |path: &str| json!({"httpGet": {"path": path, "port": "metrics"}});
    assert_contains(
        deploy,
        &json!({"spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "tka-server"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "tka-server", "control-plane": "controller-manager", "app.kubernetes.io/name": "tka"}},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "tka-server"}}, "topologyKey": "kubernetes.io/hostname"}]}},
                    "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}],
                    "containers": [{
                        "name": "tka-server",
                        "env": [
                            {"name": "TS_AUTHKEY", "valueFrom": {"secretKeyRef": {"name": "tka-tailscale", "key": "TS_AUTHKEY", "optional": true}}},
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        ],
                        "volumeMounts": [
                            {"name": "tmp", "mountPath": "/tmp"},
                            {"name": "config", "mountPath": "/etc/tka", "readOnly": true},
                        ],
                        "startupProbe": port_probe("/healthz"),
                        "readinessProbe": port_probe("/ready"),
                        "livenessProbe": port_probe("/healthz"),
                    }],
                },
            },
        }}),
        "the hardening table",
    );
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(
        pod["securityContext"],
        json!({
            "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
            "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"},
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
        })
    );
    assert_eq!(
        pod["containers"][0]["securityContext"],
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}})
    );
    let c = &pod["containers"][0];
    assert_eq!(c["startupProbe"]["periodSeconds"], 2);
    assert_eq!(c["startupProbe"]["failureThreshold"], 30);
    assert_eq!(c["readinessProbe"]["periodSeconds"], 5);
    assert_eq!(c["livenessProbe"]["periodSeconds"], 10);
    assert_eq!(c["livenessProbe"]["failureThreshold"], 3);

    // NetworkPolicy: the guide's rules plus DNS, WireGuard/STUN and the automatic namespace label.
    assert_contains(
        get(&primary, "NetworkPolicy", "tka-server"),
        &json!({"spec": {
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                         "ports": [{"protocol": "TCP", "port": 8080}]}],
            "egress": [
                {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                         "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                 "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"ports": [{"protocol": "UDP", "port": 41641}, {"protocol": "UDP", "port": 3478}]},
            ],
        }}),
        "NetworkPolicy",
    );
    assert_contains(
        get(&primary, "NetworkPolicy", "tka-server-otel-egress"),
        &json!({"spec": {
            "podSelector": {"matchLabels": {"app": "tka-server"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                        "ports": [{"protocol": "TCP", "port": 4317}, {"protocol": "TCP", "port": 14250}]}],
        }}),
        "otel-egress",
    );
}

/// Installs the Prometheus Operator stand-in CRDs (for real) and waits until kubectl can use them.
async fn install_monitoring_crds(env: &Env) {
    let crds = fixture("monitoring-crds.yaml");
    kubectl_ok(
        env,
        &[
            "apply",
            "--server-side",
            "--field-manager=tka-manifests-test",
            "-f",
            "-",
        ],
        Some(&crds),
    );
    for crd in [
        "servicemonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
    ] {
        kubectl_ok(
            env,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                &format!("crd/{crd}"),
            ],
            None,
        );
    }
}

fn dry_run_apply(env: &Env, yaml: &str) -> Output {
    kubectl(
        env,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=tka-manifests-test",
            // The run applies the admission policy for real (another field manager); a dry run only checks
            // that the apiserver accepts the objects.
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(yaml),
    )
}

async fn manifests_are_accepted_by_the_apiserver(env: Arc<Env>) {
    install_monitoring_crds(&env).await;
    // The namespace for real (dry-run namespaced objects need it); everything else only dry-run.
    let (_, primary) = render(&env, "overlays/primary");
    let ns = serde_json::to_string(get(&primary, "Namespace", NS)).unwrap();
    kubectl_ok(
        &env,
        &[
            "apply",
            "--server-side",
            "--field-manager=tka-manifests-test",
            "-f",
            "-",
        ],
        Some(&ns),
    );

    for dir in OVERLAYS.iter().chain(&["install"]) {
        let (yaml, docs) = render(&env, dir);
        // Right after the CRDs became Established the apiserver may still answer "no matches for kind".
        // Retry only that; any other error is final.
        let mut last = None;
        eventually(Duration::from_secs(20), || {
            let out = dry_run_apply(&env, &yaml);
            let done = out.status.success()
                || !String::from_utf8_lossy(&out.stderr).contains("no matches for kind");
            last = Some(out);
            async move { done }
        })
        .await;
        let out = last.unwrap();
        assert!(out.status.success(), "{dir} is rejected: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout
                .lines()
                .filter(|l| l.contains("(server dry run)"))
                .count(),
            docs.len(),
            "{dir}: every object accepted: {}",
            text(&out)
        );
        // The restricted namespace warns about Deployments whose pods would be rejected.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("PodSecurity"), "{dir}: {stderr}");
    }

    // That warning check can fail: the guide's Deployment draws it.
    let guide = parse_docs(&fixture("guide-manifests.yaml"));
    let deploy = serde_json::to_string(get(&guide, "Deployment", "tka-server")).unwrap();
    let out = dry_run_apply(&env, &deploy);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("would violate PodSecurity \"restricted:latest\""),
        "{}",
        text(&out)
    );
}

/// A Pod in `pss-test` with the given spec; `dry_run` for pods expected to be rejected.
fn create_pod(env: &Env, name: &str, spec: &Value, dry_run: bool) -> Output {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "pss-test", "labels": {"app": "tka-server"}},
        "spec": spec,
    });
    let mut args = vec!["create", "-f", "-"];
    if dry_run {
        args.push("--dry-run=server");
    }
    kubectl(env, &args, Some(&pod.to_string()))
}

fn assert_rejected(out: &Output, what: &str, reasons: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("violates PodSecurity \"restricted:latest\""),
        "{what} must be rejected by Pod Security: {}",
        text(out)
    );
    for r in reasons {
        assert!(err.contains(r), "{what}: expected {r:?} in {err}");
    }
}

/// Static checks on a rendered pod spec.
fn assert_restricted_shape(yaml: &str, pod: &Value, what: &str) {
    assert!(!yaml.contains("hostPath"), "{what}: hostPath");
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{what}");
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(pod.get(key).is_none_or(|v| v == false), "{what}: {key}");
    }
    let containers = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(pod["initContainers"].as_array().into_iter().flatten());
    for c in containers {
        let sc = &c["securityContext"];
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{what}");
        assert!(sc["capabilities"].get("add").is_none(), "{what}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
        assert!(sc.get("privileged").is_none_or(|v| v == false), "{what}");
        assert!(
            c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|p| p.get("hostPort").is_none()),
            "{what}: hostPort"
        );
    }
}

async fn manifests_pods_pass_pod_security_restricted_and_the_guides_do_not(env: Arc<Env>) {
    let setup = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "pss-test",
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "tka-controller", "namespace": "pss-test"}},
    ]});
    kubectl_ok(
        &env,
        &[
            "apply",
            "--server-side",
            "--field-manager=tka-manifests-test",
            "-f",
            "-",
        ],
        Some(&setup.to_string()),
    );

    let mut primary_pod = None;
    for overlay in OVERLAYS {
        let (yaml, docs) = render(&env, overlay);
        let pod = &get(&docs, "Deployment", "tka-server")["spec"]["template"]["spec"];
        assert_restricted_shape(&yaml, pod, overlay);
        let name = format!("tka-{}", overlay.trim_start_matches("overlays/"));
        let out = create_pod(&env, &name, pod, false);
        assert!(
            out.status.success(),
            "{overlay}: the pod must pass Pod Security restricted: {}",
            text(&out)
        );
        if *overlay == "overlays/primary" {
            primary_pod = Some(pod.clone());
        }
    }

    // Weakened copies are rejected: the check can fail.
    let pod = primary_pod.unwrap();
    let weaken = |name: &str, f: &dyn Fn(&mut Value), reasons: &[&str]| {
        let mut weak = pod.clone();
        f(&mut weak);
        assert_rejected(&create_pod(&env, name, &weak, true), name, reasons);
    };
    weaken(
        "weak-run-as-root",
        &|p| {
            p["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("runAsNonRoot");
        },
        &["runAsNonRoot != true"],
    );
    weaken(
        "weak-escalation",
        &|p| p["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true),
        &["allowPrivilegeEscalation != false"],
    );
    weaken(
        "weak-capabilities",
        &|p| p["containers"][0]["securityContext"]["capabilities"] = json!({"add": ["NET_ADMIN"]}),
        &["unrestricted capabilities"],
    );
    weaken(
        "weak-seccomp",
        &|p| {
            p["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("seccompProfile");
        },
        &["seccompProfile"],
    );
    weaken(
        "weak-hostpath",
        &|p| {
            p["volumes"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "host", "hostPath": {"path": "/var/lib"}}))
        },
        &["\"hostPath\""],
    );

    // The deployment guide's pod spec as written is rejected.
    let guide = parse_docs(&fixture("guide-manifests.yaml"));
    let guide_pod = &get(&guide, "Deployment", "tka-server")["spec"]["template"]["spec"];
    assert_rejected(
        &create_pod(&env, "guide", guide_pod, true),
        "the guide's pod",
        &[
            "allowPrivilegeEscalation != false",
            "unrestricted capabilities",
            "runAsNonRoot != true",
            "seccompProfile",
        ],
    );
}

async fn manifests_rbac_yaml_is_what_tka_server_rbac_prints(_env: Arc<Env>) {
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_tka-server")).args([
            "rbac",
            "--allowed-roles",
            &ROLES.join(","),
            "--namespace",
            NS,
        ]),
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let generated = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(kustomize_dir().join("base/rbac.yaml")).unwrap();
    assert!(
        committed == generated,
        "deploy/kustomize/base/rbac.yaml is stale; regenerate it with \
         `tka-server rbac --allowed-roles {} --namespace {NS} > deploy/kustomize/base/rbac.yaml`",
        ROLES.join(",")
    );
}

/// `tka-server check` on a config file; the effective configuration it prints.
fn check(config: &str, what: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_tka-server"))
            .arg("check")
            .arg("--config")
            .arg(&path),
        None,
    );
    assert!(
        out.status.success(),
        "{what} fails `tka-server check`: {}",
        text(&out)
    );
    serde_yaml::from_slice(&out.stdout).expect("check prints YAML")
}

async fn manifests_overlay_configs_pass_tka_server_check(env: Arc<Env>) {
    let roles = json!(ROLES);
    let mut effective = Vec::new();
    for dir in ["base"].iter().chain(OVERLAYS) {
        let (_, docs) = render(&env, dir);
        // What ships is the rendered ConfigMap's key.
        let config = get(&docs, "ConfigMap", "tka-config")["data"]["config.yaml"]
            .as_str()
            .unwrap_or_else(|| panic!("{dir}: tka-config has no config.yaml"));
        let eff = check(config, dir);
        assert_contains(
            &eff,
            &json!({"tailscale": {"hostname": if *dir == "overlays/federated" { "tka-west" } else { "tka" },
                                  "port": 443, "capName": "specht-labs.de/cap/tka", "stateDir": "/var/lib/tsnet"},
                    "operator": {"namespace": NS}}),
            dir,
        );
        // The grantable roles equal what the ClusterRole may bind.
        assert_eq!(eff["operator"]["allowedRoles"], roles, "{dir}");
        let bind = get(&docs, "ClusterRole", "tka-server")["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["verbs"].as_array().unwrap().contains(&json!("bind")))
            .unwrap()["resourceNames"]
            .clone();
        assert_eq!(bind, roles, "{dir}");
        effective.push((*dir, serde_yaml::from_str::<Value>(config).unwrap(), eff));
    }

    // The guide's configurations are contained unchanged.
    let primary_guide: Value = serde_yaml::from_str(&fixture("config-primary.yaml")).unwrap();
    let federated_guide: Value = serde_yaml::from_str(&fixture("config-federated.yaml")).unwrap();
    for (dir, raw, eff) in &effective {
        match *dir {
            "overlays/primary" => {
                assert_contains(raw, &primary_guide, dir);
                assert!(
                    eff["clusterInfo"]["apiEndpoint"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("https://")),
                    "{eff}"
                );
                assert_eq!(eff["federation"]["memberTags"], json!(["tag:tka-member"]));
                assert_eq!(eff["federation"]["loginServer"], "");
            }
            "overlays/federated" => {
                assert_contains(raw, &federated_guide, dir);
                assert!(
                    eff["clusterInfo"]["apiEndpoint"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("https://")),
                    "{eff}"
                );
            }
            "overlays/test" => {
                assert!(
                    eff["tailscale"]["controlURL"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("https://")),
                    "{eff}"
                );
                assert_contains(
                    eff,
                    &json!({"tls": {"mode": "files", "certFile": "/etc/tka-tls/tls.crt", "keyFile": "/etc/tka-tls/tls.key"}}),
                    dir,
                );
            }
            _ => {}
        }
    }
}
