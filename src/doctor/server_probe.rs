//! `tka-server doctor`: gathers the facts inside the server's container, with what the distroless image has
//! (no shell, no curl): the configuration, the pod's Kubernetes credentials, tailscaled's LocalAPI socket,
//! the health port on loopback and the tailnet listener. Every call is bounded; nothing is written to the
//! cluster (the CRD check is a dry run).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::{Client, Resource};
use serde_json::{Value, json};

use super::listener_probe::{listener, tls_on};
use super::rbac_probe::rbac;
use super::server::{self as checks, CrdFacts, LeaseFacts, Ready};
use super::tailnet::{self, NodeFacts};
use super::{Check, PROBE, Report, bounded, cert};
use crate::config::{self, Config};
use crate::federation;
use crate::identity::Identity;
use crate::identity::tailscaled::TailscaledIdentity;
use crate::identity::tailscaled::localapi::LocalApi;
use crate::identity::tailscaled::supervisor;
use crate::operator::crd::TkaSignin;
use crate::telemetry::Metrics;

/// Runs every check; `env` supplies `TKA_*`, `KUBECONFIG`, `POD_NAME`.
pub async fn run(config_path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Report {
    let mut report = Report::default();
    let loaded = match config::load(config_path, env) {
        Ok(l) => l,
        Err(errors) => {
            report.push(Check::fail("config", format!("invalid configuration:\n{errors}")).advice(
                "fix the listed keys (`tka-server check --config <file>` shows the effective configuration)",
            ));
            return report;
        }
    };
    let source = loaded.source.as_ref().map_or(
        "no configuration file: defaults and TKA_* variables".into(),
        |p| format!("{} is valid", p.display()),
    );
    report.push(match loaded.warnings.as_slice() {
        [] => Check::ok("config", source),
        w => Check::warn(
            "config",
            format!("{source}, with warnings: {}", w.join("; ")),
        ),
    });
    let config = loaded.config;
    kubernetes(&config, env, &mut report).await;
    let health = health_base(&config);
    let ready = ready(&health).await;
    report.push(checks::ready(&format!("{health}/ready"), &ready));
    let metrics = fetch(&format!("{health}/metrics")).await;
    if ready.as_ref().is_ok_and(|r| r.role == "standby") {
        for name in ["tailscaled", "listener", "federation"] {
            report.push(Check::skip(
                name,
                "standby: only the leader runs the tailnet node and the API",
            ));
        }
        return report;
    }
    tailnet(&config, &metrics, &mut report).await;
    report
}

/// The apiserver, the CRD, the server's RBAC and the Lease.
async fn kubernetes(config: &Config, env: &dyn Fn(&str) -> Option<String>, report: &mut Report) {
    let (client, server) = match client().await {
        Ok(c) => c,
        Err(e) => {
            report.push(
                Check::fail(
                    "kubernetes",
                    format!("no Kubernetes client configuration: {e}"),
                )
                .advice("run inside the tka-server pod (service account), or set KUBECONFIG"),
            );
            return;
        }
    };
    let version = bounded(async {
        client
            .apiserver_version()
            .await
            .map(|v| checks::Version {
                major: v.major,
                minor: v.minor,
                git_version: v.git_version,
            })
            .map_err(|e| e.to_string())
    })
    .await;
    report.push(checks::apiserver(&server, &version));
    if version.is_err() {
        return;
    }
    let op = &config.operator;
    report.push(checks::crd(
        &bounded(crd(&client, &op.namespace, &op.allowed_roles)).await,
    ));
    rbac(&client, op, report).await;
    let le = &op.leader_election;
    let lease = if le.enabled {
        Some(bounded(lease(&client, &op.namespace, &le.lease_name)).await)
    } else {
        None
    };
    let me = env("POD_NAME")
        .or_else(|| env("HOSTNAME"))
        .unwrap_or_default();
    report.push(checks::leader(
        &le.lease_name,
        lease.as_ref(),
        &me,
        Timestamp::now(),
    ));
}

/// The pod's (or `KUBECONFIG`'s) client and the apiserver's URL.
async fn client() -> Result<(Client, String), String> {
    let config = kube::Config::infer().await.map_err(|e| e.to_string())?;
    let url = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    Ok((Client::try_from(config).map_err(|e| e.to_string())?, url))
}

/// Discovery of `tka.specht-labs.de/v1alpha1`, then a dry-run create of a TkaSignin with every field set.
async fn crd(client: &Client, namespace: &str, roles: &[String]) -> Result<CrdFacts, String> {
    let gv = format!("{}/v1alpha1", crate::operator::crd::GROUP);
    let list = match client.list_api_group_resources(&gv).await {
        Ok(l) => l,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(CrdFacts::default()),
        Err(e) => return Err(e.to_string()),
    };
    let has = |n: &str| list.resources.iter().any(|r| r.name == n);
    let mut facts = CrdFacts {
        served: has("tkasignins"),
        status_subresource: has("tkasignins/status"),
        ..CrdFacts::default()
    };
    if !facts.served {
        return Ok(facts);
    }
    let sent = probe_signin(roles.first().map_or("view", String::as_str));
    let ar = ApiResource::erase::<TkaSignin>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let obj: DynamicObject = serde_json::from_value(sent.clone()).map_err(|e| e.to_string())?;
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&params, &obj).await {
        Ok(got) => {
            let got = serde_json::to_value(got).map_err(|e| e.to_string())?;
            facts.pruned = checks::pruned_fields(&sent["spec"], &got["spec"], "spec");
        }
        Err(kube::Error::Api(s)) if s.code == 403 => {} // the rbac line names the missing permission
        Err(e) => facts.dry_run_error = Some(e.to_string()),
    }
    Ok(facts)
}

/// A TkaSignin with every spec field set, as this server writes them.
fn probe_signin(role: &str) -> Value {
    let now = Timestamp::now().to_string();
    json!({
        "apiVersion": TkaSignin::api_version(&()), "kind": TkaSignin::kind(&()),
        "metadata": { "generateName": "tka-doctor-" },
        "spec": {
            "username": "doctor@tka.invalid", "role": role, "validity_period": "10m0s",
            "subject_key": "doctor-probe", "node": "doctor.tka.invalid", "node_id": "ndoctor",
            "node_ip": "100.64.0.1", "requested_at": now, "namespaces": ["default"],
            "origin": { "kind": "federation", "primary": "primary.tka.invalid" }
        }
    })
}

async fn lease(client: &Client, namespace: &str, name: &str) -> Result<Option<LeaseFacts>, String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let lease = api.get_opt(name).await.map_err(|e| e.to_string())?;
    Ok(lease.map(|l| {
        let spec = l.spec.unwrap_or_default();
        LeaseFacts {
            holder: spec.holder_identity.unwrap_or_default(),
            renewed: spec.renew_time.map(|t| t.0),
            duration_secs: spec.lease_duration_seconds.unwrap_or(15).into(),
        }
    }))
}

/// `http://<health address>:<port>`, with a wildcard bind address asked on loopback.
fn health_base(config: &Config) -> String {
    let addr = match config.health.bind_address.as_str() {
        "" | "0.0.0.0" => "127.0.0.1".to_string(),
        "::" | "[::]" => "[::1]".to_string(),
        a if a.contains(':') && !a.starts_with('[') => format!("[{a}]"),
        a => a.to_string(),
    };
    format!("http://{addr}:{}", config.health.port)
}

async fn fetch(url: &str) -> Result<(u16, String), String> {
    let http = reqwest::Client::builder()
        .timeout(PROBE)
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let r = http.get(url).send().await.map_err(|e| innermost(&e))?;
    let code = r.status().as_u16();
    Ok((code, r.text().await.map_err(|e| e.to_string())?))
}

async fn ready(base: &str) -> Result<Ready, String> {
    let (code, body) = fetch(&format!("{base}/ready")).await?;
    let v: Value =
        serde_json::from_str(&body).map_err(|e| format!("HTTP {code}, not /ready's JSON: {e}"))?;
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    Ok(Ready {
        code,
        reason: s("reason"),
        role: s("role"),
    })
}

/// The root cause of an error chain (`Connection refused (os error 111)`, not reqwest's URL wrapper).
fn innermost(e: &dyn std::error::Error) -> String {
    let mut e = e;
    while let Some(inner) = e.source() {
        e = inner;
    }
    e.to_string()
}

/// The value of a sample in Prometheus text (`name{label="value"} 3`), summed over matching series.
pub fn metric(text: &str, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let want = label.map(|(k, v)| format!("{k}=\"{v}\""));
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let base = series.split('{').next().unwrap_or_default();
        if base != name || want.as_ref().is_some_and(|w| !series.contains(w.as_str())) {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// tailscaled, the node's name, the served certificate, the listener and federation.
async fn tailnet(config: &Config, metrics: &Result<(u16, String), String>, report: &mut Report) {
    let ts = &config.tailscale;
    let supervised = ts.socket.as_os_str().is_empty();
    let socket = if supervised {
        supervisor::socket_path(&ts.run_dir)
    } else {
        ts.socket.clone()
    };
    let api = LocalApi::new(&socket);
    let node = bounded(async {
        let s = api.status().await.map_err(|e| e.to_string())?;
        let b = s.to_backend_status();
        Ok(NodeFacts {
            backend_state: s.backend_state.clone(),
            fqdn: b.self_fqdn,
            ips: b.tailnet_ips.iter().map(|i| i.to_string()).collect(),
            online: s.self_node.as_ref().and_then(|n| n.online),
            magic_dns_suffix: s.magic_dns_suffix().to_string(),
        })
    })
    .await;
    report.push(tailnet::tailscaled(&node, supervised));
    let Some(node) = node.ok().filter(|n| n.backend_state == "Running") else {
        // The rest goes through the node: one failure, not a cascade of its consequences.
        for name in ["magicdns", "certificate", "listener", "federation"] {
            report.push(Check::skip(name, "needs a Running tailscaled (above)"));
        }
        return;
    };
    report.push(tailnet::node_name(&ts.hostname, &ts.tailnet, &node));
    let identity = TailscaledIdentity::start(api);
    let served = listener(config, identity.as_ref(), &node.fqdn).await;
    match (tls_on(config), &served.1) {
        (false, _) => report.push(Check::skip(
            "certificate",
            format!("TLS is off: plain HTTP on port {}", ts.port),
        )),
        (true, Some(der)) => report.push(match cert::parse(der) {
            Ok(f) => cert::check(&f, &node.fqdn, Timestamp::now()),
            Err(e) => Check::fail("certificate", e),
        }),
        (true, None) => report.push(Check::fail(
            "certificate",
            "no certificate was served (no TLS handshake completed)",
        )),
    }
    report.push(tailnet::listener(&served.0));
    report.push(federation(config, identity, metrics).await);
}

/// A member: the primary answers over the tailnet and accepted a heartbeat lately. A primary: its members.
async fn federation(
    config: &Config,
    identity: Arc<dyn Identity>,
    metrics: &Result<(u16, String), String>,
) -> Check {
    let f = &config.federation;
    let text = metrics
        .as_ref()
        .map(|(_, t)| t.as_str())
        .unwrap_or_default();
    if !f.login_server.is_empty() {
        // The server's own federation client (its TLS trust, its timeout); its metrics are thrown away.
        let client = federation::Client::new(
            identity,
            Arc::new(Metrics::new("tailscaled")),
            f.request_timeout.as_std().max(Duration::from_secs(1)),
        );
        let to = federation::client::To {
            cluster: "doctor",
            url: &f.login_server,
        };
        let reach = match client
            .call::<(), Value>(
                to,
                http::Method::GET,
                "/api/v1alpha1/clusters",
                None,
                "doctor",
                "doctor",
            )
            .await
        {
            Ok(a) => Ok(a.status),
            Err(federation::client::CallError::Status { status, .. }) => Ok(status),
            Err(e) => Err(e.to_string()),
        };
        let last = metric(
            text,
            "tka_federation_last_heartbeat_timestamp_seconds",
            None,
        )
        .filter(|t| *t > 0.0);
        let max_age =
            f.heartbeat_interval.as_std().as_secs_f64() * f64::from(f.missed_heartbeats.max(1));
        return tailnet::federation_member(
            &f.login_server,
            &reach,
            last,
            max_age.max(1.0),
            Timestamp::now(),
        );
    }
    let count = |state| {
        metric(text, "tka_federation_members", Some(("state", state))).unwrap_or(0.0) as u64
    };
    let (healthy, stale) = (count("healthy"), count("stale"));
    if healthy + stale == 0 && f.member_tags.is_empty() {
        return Check::skip(
            "federation",
            "not federated (no federation.loginServer, no members)",
        );
    }
    tailnet::federation_primary(healthy, stale)
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_are_read_from_prometheus_text() {
        let text = "# HELP x\ntka_federation_members{state=\"healthy\"} 2\ntka_federation_members{state=\"stale\"} 1\n\
                    tka_federation_last_heartbeat_timestamp_seconds 1767225600\n";
        assert_eq!(
            super::metric(text, "tka_federation_members", Some(("state", "healthy"))),
            Some(2.0)
        );
        assert_eq!(
            super::metric(text, "tka_federation_members", None),
            Some(3.0)
        );
        assert_eq!(
            super::metric(
                text,
                "tka_federation_last_heartbeat_timestamp_seconds",
                None
            ),
            Some(1_767_225_600.0)
        );
        assert_eq!(super::metric(text, "tka_missing", None), None);
    }
}
