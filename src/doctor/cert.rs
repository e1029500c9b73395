//! The certificate the tailnet listener serves: does it name the node, and when does it expire?

use jiff::Timestamp;

use super::Check;

/// Warn when less than this is left: Tailscale renews with a third of the lifetime (30 days of 90) left, so a
/// certificate this close to its end means renewal is failing.
const WARN_DAYS: i64 = 14;

/// What the check needs from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub not_after: Timestamp,
    /// DNS names of the subject alternative name extension, else the subject's common name.
    pub names: Vec<String>,
}

/// Reads the validity end and the DNS names of a DER certificate.
pub fn parse(der: &[u8]) -> Result<Facts, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let not_after = Timestamp::from_second(cert.validity().not_after.timestamp())
        .map_err(|e| format!("certificate end of validity: {e}"))?;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_string)),
        );
    }
    Ok(Facts { not_after, names })
}

/// `*.example.ts.net` covers `tka.example.ts.net` (one label), as TLS clients match wildcards.
fn covers(name: &str, host: &str) -> bool {
    let (name, host) = (name.to_ascii_lowercase(), host.to_ascii_lowercase());
    match name.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(label, parent)| !label.is_empty() && parent == rest),
        None => name == host,
    }
}

/// `1 day`, `3 days`.
fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// The `certificate` check of a served certificate for the node name `host`.
pub fn check(facts: &Facts, host: &str, now: Timestamp) -> Check {
    let left = facts.not_after.as_second() - now.as_second();
    let days = left / 86_400;
    let names = facts.names.join(", ");
    if !host.is_empty() && !facts.names.iter().any(|n| covers(n, host)) {
        return Check::fail(
            "certificate",
            format!("the served certificate names {names}, not {host}: clients refuse it"),
        )
        .advice(
            "with tls.mode files, issue the certificate for the node's MagicDNS name; if the node was \
             renamed (tka-1), remove the old node in the admin console and restart",
        );
    }
    if left <= 0 {
        return Check::fail(
            "certificate",
            format!("expired {} ({names})", facts.not_after),
        )
        .advice(
            "tls.mode tailscale: check that the control server offers HTTPS certificates; tls.mode files: \
             replace tls.certFile (tka-server reloads it within 30 s)",
        );
    }
    if days < WARN_DAYS {
        return Check::warn(
            "certificate",
            format!(
                "{names}: expires in {} ({})",
                plural(days, "day"),
                facts.not_after
            ),
        )
        .advice("renewal seems to fail: see the server log for `certificate`");
    }
    Check::ok(
        "certificate",
        format!("{names}, valid for another {}", plural(days, "day")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn facts(names: &[&str], not_after: &str) -> Facts {
        Facts {
            not_after: not_after.parse().unwrap(),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn expiry_and_names_decide() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let host = "tka.example.ts.net";
        let c = check(&facts(&[host], "2026-03-01T00:00:00Z"), host, now);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(
            c.message.contains("valid for another 59 days"),
            "{}",
            c.message
        );
        let soon = check(&facts(&[host], "2026-01-05T00:00:00Z"), host, now);
        assert_eq!(soon.status, Status::Warn);
        let gone = check(&facts(&[host], "2025-12-31T00:00:00Z"), host, now);
        assert_eq!(gone.status, Status::Fail);
        let wrong = check(
            &facts(&["tka-1.example.ts.net"], "2026-03-01T00:00:00Z"),
            host,
            now,
        );
        assert_eq!(wrong.status, Status::Fail);
        assert!(wrong.message.contains("not tka.example.ts.net"));
        let wild = check(
            &facts(&["*.example.ts.net"], "2026-03-01T00:00:00Z"),
            host,
            now,
        );
        assert_eq!(wild.status, Status::Ok);
        assert!(!covers("*.ts.net", host));
    }

    #[test]
    fn parses_a_real_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["tka.example.ts.net".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2030, 1, 2);
        let cert = params.self_signed(&key).unwrap();
        let f = parse(cert.der()).unwrap();
        assert_eq!(f.names, vec!["tka.example.ts.net".to_string()]);
        assert_eq!(f.not_after.to_string(), "2030-01-02T00:00:00Z");
        assert!(parse(b"junk").is_err());
    }
}
