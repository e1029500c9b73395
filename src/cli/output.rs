//! Rendering: aligned text tables for people, JSON/YAML of the server's objects for scripts.
//!
//! Tokens never reach these functions' output: [`without_secrets`] strips the kubeconfig and credential of a
//! `UserLoginResponse` before it is printed.

use crate::config::OutputFormat;
use crate::model::wire::{TkaClusterInfo, UserLoginResponse};
use data_encoding::{BASE64, BASE64_NOPAD, HEXUPPER};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::CliError;

/// Writes a command's result to stdout. A closed pipe (`tka … | head`) is not an error worth a panic.
pub fn out(text: impl AsRef<str>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_ref().as_bytes())
        .and_then(|()| stdout.flush());
}

/// JSON (pretty) or YAML of `value`, ending in a newline. `Text` is rendered as JSON too (callers use their own
/// text form instead).
pub fn structured<T: Serialize>(format: OutputFormat, value: &T) -> Result<String, CliError> {
    let text = match format {
        OutputFormat::Yaml => serde_yaml::to_string(value)
            .map_err(|e| CliError::other(format!("cannot render YAML: {e}")))?,
        OutputFormat::Json | OutputFormat::Text => serde_json::to_string_pretty(value)
            .map_err(|e| CliError::other(format!("cannot render JSON: {e}")))?,
    };
    Ok(if text.ends_with('\n') {
        text
    } else {
        text + "\n"
    })
}

/// The response without anything that may carry a token (`kubeconfig`, `credential`).
pub fn without_secrets(r: &UserLoginResponse) -> UserLoginResponse {
    UserLoginResponse {
        kubeconfig: None,
        credential: None,
        ..r.clone()
    }
}

/// `Label:  value` rows with the values aligned; empty values are skipped.
pub fn table(rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows.iter().filter(|(_, v)| !v.is_empty()) {
        let pad = width - k.chars().count();
        out.push_str(&format!("{k}:{} {v}\n", " ".repeat(pad)));
    }
    out
}

/// An RFC 3339 timestamp in the local time zone with the time left (`2026-11-24 19:00:00 CET (in 8h0m)`);
/// unparseable input is shown as received.
pub fn local_time(rfc3339: &str) -> String {
    format_time(
        rfc3339,
        &jiff::tz::TimeZone::system(),
        jiff::Timestamp::now(),
    )
}

fn format_time(rfc3339: &str, tz: &jiff::tz::TimeZone, now: jiff::Timestamp) -> String {
    let Ok(ts) = rfc3339.parse::<jiff::Timestamp>() else {
        return rfc3339.to_string();
    };
    let local = ts
        .to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string();
    let secs = ts.as_second() - now.as_second();
    let relative = if secs <= 0 {
        " (expired)".to_string()
    } else {
        let (d, h, m) = (secs / 86_400, (secs % 86_400) / 3600, (secs % 3600) / 60);
        if d > 1 {
            format!(" (in {d}d{h}h)")
        } else if d == 1 {
            format!(" (in {}h{m}m)", 24 + h)
        } else if h > 0 {
            format!(" (in {h}h{m}m)")
        } else if m > 0 {
            format!(" (in {m}m)")
        } else {
            format!(" (in {secs}s)")
        }
    };
    format!("{local}{relative}")
}

/// User / Role / Until of a login (plus cluster and namespaces when known).
pub fn login_text(r: &UserLoginResponse) -> String {
    table(&[
        ("User", r.username.clone()),
        ("Role", r.role.clone()),
        ("Until", local_time(&r.until)),
        ("Cluster", r.cluster.clone()),
        ("Namespaces", r.namespaces.join(", ")),
    ])
}

/// `tka get login`: the session's state.
pub fn status_text(r: &UserLoginResponse, provisioned: bool) -> String {
    table(&[
        ("User", r.username.clone()),
        ("Role", r.role.clone()),
        ("Until", local_time(&r.until)),
        (
            "Provisioned",
            if provisioned { "yes" } else { "no (pending)" }.into(),
        ),
        ("Node", r.node.clone()),
        ("Cluster", r.cluster.clone()),
        ("Session", r.session.clone()),
        ("Namespaces", r.namespaces.join(", ")),
    ])
}

/// `tka get login --explain`: the `/whoami` answer.
pub fn whoami_text(v: &Value) -> String {
    let s = |key: &str| v[key].as_str().unwrap_or_default().to_string();
    let tags = v["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let node = match (s("node"), s("node_id")) {
        (n, id) if !n.is_empty() && !id.is_empty() => format!("{n} ({id})"),
        (n, id) => format!("{n}{id}"),
    };
    let mut out = table(&[
        ("User", s("login_name")),
        ("Node", node),
        ("Tags", tags),
        ("Cluster", s("cluster")),
    ]);
    let rules = v["rules"].as_array().cloned().unwrap_or_default();
    if rules.is_empty() {
        out.push_str("Rules:    none (no capability grant for tka reaches this node)\n");
    } else {
        out.push_str("Rules:\n");
        for (i, rule) in rules.iter().enumerate() {
            out.push_str(&format!("  {}. {}\n", i + 1, rule_text(rule)));
        }
    }
    match &v["selected"] {
        Value::Null => out.push_str("Selected: none\n"),
        rule => out.push_str(&format!("Selected: {}\n", rule_text(rule))),
    }
    match &v["reject"] {
        Value::Null => {}
        r => out.push_str(&format!(
            "Rejected: {} ({})\n",
            r["message"].as_str().unwrap_or_default(),
            r["code"].as_str().unwrap_or_default()
        )),
    }
    out
}

/// `role=view priority=10 period=8h0m0s clusters=prod-*`.
fn rule_text(rule: &Value) -> String {
    let Some(map) = rule.as_object() else {
        return rule.to_string();
    };
    let mut parts = Vec::new();
    for key in ["role", "priority", "period", "clusters", "namespaces"] {
        if let Some(v) = map.get(key) {
            parts.push(format!("{key}={}", scalar(v)));
        }
    }
    for (k, v) in map {
        if !["role", "priority", "period", "clusters", "namespaces"].contains(&k.as_str()) {
            parts.push(format!("{k}={}", scalar(v)));
        }
    }
    parts.join(" ")
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// `tka cluster-info`.
pub fn cluster_info_text(info: &TkaClusterInfo) -> String {
    let ca = match ca_fingerprint(&info.ca_data) {
        Ok(None) => "none (system roots)".to_string(),
        Ok(Some(fp)) => format!("SHA256 {fp}"),
        Err(e) => format!("unreadable ({e})"),
    };
    let labels = info
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    table(&[
        ("Cluster", info.cluster_name.clone()),
        ("Server", info.server_url.clone()),
        ("Insecure", info.insecure_skip_tls_verify.to_string()),
        ("CA", ca),
        ("Labels", labels),
    ])
}

/// SHA-256 fingerprint (`AB:CD:…`) of the DER of the first certificate in `ca_data` (base64 of a PEM bundle;
/// a bare PEM or base64 DER is accepted too). `None` when empty. The input is decoded, never sliced.
pub fn ca_fingerprint(ca_data: &str) -> Result<Option<String>, String> {
    let compact: String = ca_data.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Ok(None);
    }
    let decoded = if ca_data.contains("-----BEGIN") {
        ca_data.as_bytes().to_vec()
    } else {
        BASE64
            .decode(compact.as_bytes())
            .or_else(|_| BASE64_NOPAD.decode(compact.trim_end_matches('=').as_bytes()))
            .map_err(|e| format!("CA data is not base64: {e}"))?
    };
    let der = first_certificate_der(&decoded)?;
    let digest = Sha256::digest(&der);
    let hex = HEXUPPER.encode(&digest);
    let pairs: Vec<String> = hex
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    Ok(Some(pairs.join(":")))
}

fn first_certificate_der(data: &[u8]) -> Result<Vec<u8>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(data);
    let Some(start) = text.find(BEGIN) else {
        // Not PEM: DER starts with a SEQUENCE tag.
        return if data.first() == Some(&0x30) {
            Ok(data.to_vec())
        } else {
            Err("no PEM certificate in the CA data".into())
        };
    };
    let body_start = start + BEGIN.len();
    let body_len = text[body_start..]
        .find(END)
        .ok_or("unterminated PEM certificate in the CA data")?;
    let body: String = text[body_start..body_start + body_len]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    BASE64
        .decode(body.as_bytes())
        .map_err(|e| format!("bad base64 in the PEM certificate: {e}"))
}

/// `tka version`.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    pub version: String,
    pub commit: String,
    pub date: String,
    pub target: String,
}

impl VersionInfo {
    pub fn current() -> Self {
        VersionInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            commit: crate::BUILD_COMMIT.into(),
            date: crate::BUILD_DATE.into(),
            target: format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        }
    }

    pub fn text(&self) -> String {
        table(&[
            ("Version", self.version.clone()),
            ("Commit", self.commit.clone()),
            ("Built", self.date.clone()),
            ("Target", self.target.clone()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_skip_empty_values() {
        assert_eq!(
            table(&[
                ("User", "a@b".into()),
                ("Namespaces", String::new()),
                ("Role", "view".into())
            ]),
            "User: a@b\nRole: view\n"
        );
    }

    #[test]
    fn times_are_local_with_time_left() {
        let tz = jiff::tz::TimeZone::fixed(jiff::tz::offset(1));
        let now: jiff::Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        assert_eq!(
            format_time("2026-11-24T18:00:00Z", &tz, now),
            "2026-11-24 19:00:00 +01 (in 8h0m)"
        );
        assert!(format_time("2026-11-24T09:00:00Z", &tz, now).ends_with("(expired)"));
        assert!(format_time("2026-11-27T12:00:00Z", &tz, now).ends_with("(in 3d2h)"));
        assert!(format_time("2026-11-25T12:00:00Z", &tz, now).ends_with("(in 26h0m)"));
        assert!(format_time("2026-11-24T10:00:30Z", &tz, now).ends_with("(in 30s)"));
        assert_eq!(format_time("garbage", &tz, now), "garbage");
    }

    #[test]
    fn secrets_are_stripped_before_printing() {
        let r = UserLoginResponse {
            username: "alice@example.com".into(),
            kubeconfig: Some(json!({"users": [{"user": {"token": "SECRET"}}]})),
            ..Default::default()
        };
        let out = structured(OutputFormat::Json, &without_secrets(&r)).unwrap();
        assert!(!out.contains("SECRET"), "{out}");
        assert!(out.contains("alice@example.com"));
        let yaml = structured(OutputFormat::Yaml, &without_secrets(&r)).unwrap();
        assert!(yaml.contains("username: alice@example.com"), "{yaml}");
    }

    // A tiny DER blob standing in for a certificate: the fingerprint is over whatever DER the PEM carries.
    const DER: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x05];

    fn pem() -> String {
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            BASE64.encode(DER)
        )
    }

    #[test]
    fn ca_fingerprint_of_the_first_certificate() {
        let expected = {
            let hex = HEXUPPER.encode(&Sha256::digest(DER));
            hex.as_bytes()
                .chunks(2)
                .map(|c| std::str::from_utf8(c).unwrap().to_string())
                .collect::<Vec<_>>()
                .join(":")
        };
        let bundle = format!(
            "{}{}",
            pem(),
            "-----BEGIN CERTIFICATE-----\nMAMCAQY=\n-----END CERTIFICATE-----\n"
        );
        let b64 = BASE64.encode(bundle.as_bytes());
        assert_eq!(ca_fingerprint(&b64).unwrap(), Some(expected.clone()));
        assert_eq!(ca_fingerprint(&pem()).unwrap(), Some(expected.clone()));
        assert_eq!(ca_fingerprint(&BASE64.encode(DER)).unwrap(), Some(expected));
        assert_eq!(ca_fingerprint("  ").unwrap(), None);
    }

    #[test]
    fn short_or_broken_ca_data_is_an_error_not_a_panic() {
        for bad in ["Q", "QQ==", "!!", "LS0t"] {
            assert!(ca_fingerprint(bad).is_err(), "{bad}");
        }
        let info = TkaClusterInfo {
            server_url: "https://k8s:6443".into(),
            ca_data: "x".into(),
            ..Default::default()
        };
        let text = cluster_info_text(&info);
        assert!(
            text.contains("CA:") && text.contains("unreadable"),
            "{text}"
        );
    }

    #[test]
    fn whoami_explains_rules_selection_and_rejection() {
        let v = json!({"login_name":"alice@example.com","node":"laptop.ts.net","node_id":"n1","tags":[],
            "cluster":"prod","rules":[{"role":"view","period":"8h0m0s","priority":1,"clusters":["prod-*"]}],
            "selected":null,"reject":{"code":"no_grant","message":"no rule matches cluster prod"}});
        let t = whoami_text(&v);
        assert!(
            t.contains("1. role=view priority=1 period=8h0m0s clusters=prod-*"),
            "{t}"
        );
        assert!(t.contains("Selected: none"), "{t}");
        assert!(
            t.contains("Rejected: no rule matches cluster prod (no_grant)"),
            "{t}"
        );
        assert!(t.contains("Node:    laptop.ts.net (n1)"), "{t}");
    }

    #[test]
    fn version_has_all_fields() {
        let v = VersionInfo::current();
        assert_eq!(v.version, env!("CARGO_PKG_VERSION"));
        let json = structured(OutputFormat::Json, &v).unwrap();
        for key in ["version", "commit", "date", "target"] {
            assert!(json.contains(&format!("\"{key}\"")), "{json}");
        }
    }
}
