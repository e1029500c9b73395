//! Rules that involve more than one value's type: names, URLs, ranges, mutually exclusive keys, CA data.

use data_encoding::{BASE64, BASE64_NOPAD};

use super::{ClusterInfoConfig, Config, ConfigError, ConfigErrors, TlsMode};
use crate::model::duration::GoDuration;

/// The TokenRequest API's floor for token lifetimes.
const MIN_EXEC_CREDENTIAL_TTL: GoDuration = GoDuration::from_secs(600);

impl Config {
    /// Applies upstream's value mappings: `health.port: 0` means 8080, `api.retryAfterSeconds` ≤ 0 means 1.
    pub fn normalize(&mut self) {
        if self.health.port == 0 {
            self.health.port = 8080;
        }
        if self.api.retry_after_seconds <= 0 {
            self.api.retry_after_seconds = 1;
        }
    }

    /// Checks every rule that spans values; all violations are returned together. Run again after applying flags.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let errors = self.validation_errors(&|_| None);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// `locate` maps a canonical key to where its value came from (`config.yaml:3:5`, `$TKA_…`).
    pub(crate) fn validation_errors(
        &self,
        locate: &dyn Fn(&str) -> Option<String>,
    ) -> Vec<ConfigError> {
        let mut problems = Problems::new();
        self.check_operator(&mut problems);
        self.check_server(&mut problems);
        self.check_tls(&mut problems);
        self.check_api(&mut problems);
        self.check_cluster_info(&mut problems);
        self.check_urls(&mut problems);
        self.check_otel(&mut problems);
        problems
            .into_iter()
            .map(|(key, message)| ConfigError {
                // A missing partner key has no origin; point at the one that is set.
                location: locate(key).or_else(|| partner(key).and_then(locate)),
                key: key.to_string(),
                message: format!("{key}: {message}"),
            })
            .collect()
    }

    /// Warnings for a configuration that is valid but weaker than it looks, shown at start.
    pub fn caveats(&self) -> Vec<String> {
        let f = &self.federation;
        let mut caveats = Vec::new();
        if !f.login_server.is_empty() && f.primary_tags.is_empty() {
            caveats.push(
                "federation.primaryTags is empty: this member recognises its primary by name and the node ID \
                 first seen under that name only (trust on first use); set it to the primary's tag, e.g. \
                 [\"tag:tka\"]"
                    .into(),
            );
        }
        caveats
    }

    /// The operator's names and leader-election timings.
    fn check_operator(&self, problems: &mut Problems) {
        let mut fail = |key: &'static str, message: String| problems.push((key, message));
        let op = &self.operator;
        if !is_dns1123_subdomain(&op.cluster_name) {
            fail(
                "operator.clusterName",
                format!(
                    "{:?} is not a DNS-1123 subdomain: use at most 63 lower-case letters, digits, '-' and '.', \
                     starting and ending with a letter or digit",
                    op.cluster_name
                ),
            );
        }
        if !is_dns1123_label(&op.namespace) {
            fail(
                "operator.namespace",
                format!(
                    "{:?} is not a valid namespace name (DNS-1123 label)",
                    op.namespace
                ),
            );
        }
        let le = &op.leader_election;
        if le.renew_deadline >= le.lease_duration {
            fail(
                "operator.leaderElection.renewDeadline",
                format!(
                    "must be shorter than leaseDuration ({} ≥ {})",
                    le.renew_deadline, le.lease_duration
                ),
            );
        }
        if le.retry_period >= le.renew_deadline || le.retry_period.is_zero() {
            fail(
                "operator.leaderElection.retryPeriod",
                format!(
                    "must be positive and shorter than renewDeadline (got {})",
                    le.retry_period
                ),
            );
        }
    }

    /// Connection caps.
    fn check_server(&self, problems: &mut Problems) {
        let mut fail = |key: &'static str, message: String| problems.push((key, message));
        let server = &self.server;
        if server.max_connections == 0 {
            fail(
                "server.maxConnections",
                "must be at least 1 (it caps the open tailnet connections)".into(),
            );
        }
        if server.max_connections_per_peer == 0
            || server.max_connections_per_peer > server.max_connections
        {
            fail(
                "server.maxConnectionsPerPeer",
                format!(
                    "must be between 1 and server.maxConnections ({}), got {}",
                    server.max_connections, server.max_connections_per_peer
                ),
            );
        }
    }

    /// TLS: a certificate and its key come together.
    fn check_tls(&self, problems: &mut Problems) {
        let mut fail = |key: &'static str, message: String| problems.push((key, message));
        let tls = &self.tls;
        let (cert, key) = (
            !tls.cert_file.as_os_str().is_empty(),
            !tls.key_file.as_os_str().is_empty(),
        );
        if cert != key {
            let (set, missing) = if cert {
                ("tls.certFile", "tls.keyFile")
            } else {
                ("tls.keyFile", "tls.certFile")
            };
            fail(missing, format!("must be set together with {set}"));
        } else if tls.mode == TlsMode::Files && !cert {
            fail(
                "tls.mode",
                "is \"files\" but tls.certFile and tls.keyFile are not set".into(),
            );
        }
    }

    /// Token lifetimes.
    fn check_api(&self, problems: &mut Problems) {
        let mut fail = |key: &'static str, message: String| problems.push((key, message));
        if self.api.exec_credential_ttl < MIN_EXEC_CREDENTIAL_TTL {
            fail(
                "api.execCredentialTTL",
                format!(
                    "must be at least 10m (got {})",
                    self.api.exec_credential_ttl
                ),
            );
        }
    }

    /// Where the cluster's endpoint and CA come from, one source at a time.
    fn check_cluster_info(&self, problems: &mut Problems) {
        let mut fail = |key: &'static str, message: String| problems.push((key, message));
        let ci = &self.cluster_info;
        if !ci.api_endpoint.is_empty() && ci.config_map_ref.enabled {
            fail(
                "clusterInfo.apiEndpoint",
                "cannot be combined with clusterInfo.configMapRef.enabled: either set the endpoint (and caData) \
                 here or read them from the ConfigMap"
                    .into(),
            );
        }
        if let Err(message) = ci.ca_pem() {
            fail("clusterInfo.caData", message);
        }
    }

    /// Every URL key holds an http(s) URL.
    fn check_urls(&self, problems: &mut Problems) {
        let mut fail = |key: &'static str, message: String| problems.push((key, message));
        let ci = &self.cluster_info;
        for (key, value, example) in [
            (
                "tailscale.controlURL",
                &self.tailscale.control_url,
                "https://headscale.example",
            ),
            (
                "clusterInfo.apiEndpoint",
                &ci.api_endpoint,
                "https://10.0.0.1:6443",
            ),
            (
                "federation.loginServer",
                &self.federation.login_server,
                "https://tka.your-tailnet.ts.net",
            ),
        ] {
            if !value.is_empty() && !is_http_url(value) {
                fail(
                    key,
                    format!("{value:?} is not an http(s) URL; use e.g. {example}"),
                );
            }
        }
    }

    /// Trace sampling.
    fn check_otel(&self, problems: &mut Problems) {
        let mut fail = |key: &'static str, message: String| problems.push((key, message));
        let ratio = self.otel.sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            fail(
                "otel.sampleRatio",
                format!("must be between 0 and 1 (got {ratio})"),
            );
        }
    }
}

/// (key, message) pairs, located later.
type Problems = Vec<(&'static str, String)>;

fn partner(key: &str) -> Option<&'static str> {
    match key {
        "tls.certFile" => Some("tls.keyFile"),
        "tls.keyFile" => Some("tls.certFile"),
        _ => None,
    }
}

impl ClusterInfoConfig {
    /// The decoded CA bundle (PEM text) of `caData`, `None` when unset.
    pub fn ca_pem(&self) -> Result<Option<String>, String> {
        if self.ca_data.trim().is_empty() {
            return Ok(None);
        }
        decode_ca_data(&self.ca_data).map(Some)
    }
}

/// Decodes `caData` (base64 of a PEM bundle, like a kubeconfig's `certificate-authority-data`) and checks that it
/// holds at least one well-formed `CERTIFICATE` block. Returns the PEM text.
pub fn decode_ca_data(data: &str) -> Result<String, String> {
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.starts_with("-----BEGIN") {
        return Err("is raw PEM; it must be base64-encoded (e.g. base64 -w0 ca.crt)".into());
    }
    let bytes = BASE64
        .decode(compact.as_bytes())
        .or_else(|_| BASE64_NOPAD.decode(compact.as_bytes()))
        .map_err(|e| {
            format!("is not valid base64 ({e}); expected the base64-encoded PEM CA bundle")
        })?;
    let pem = String::from_utf8(bytes).map_err(|_| {
        "does not decode to PEM text (expected base64 of a PEM CA bundle)".to_string()
    })?;
    let certificates = pem_certificates(&pem)?;
    if certificates == 0 {
        return Err("decodes to data without a PEM CERTIFICATE block".into());
    }
    Ok(pem)
}

/// Counts `CERTIFICATE` blocks, rejecting blocks that are unterminated or whose body is not base64.
fn pem_certificates(pem: &str) -> Result<usize, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut count = 0;
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let body_and_rest = &rest[start + BEGIN.len()..];
        let end = body_and_rest
            .find(END)
            .ok_or("holds a PEM CERTIFICATE block without its END line")?;
        let body: String = body_and_rest[..end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        match BASE64.decode(body.as_bytes()) {
            Ok(der) if !der.is_empty() => count += 1,
            _ => {
                return Err(format!(
                    "holds a malformed PEM CERTIFICATE block (#{})",
                    count + 1
                ));
            }
        }
        rest = &body_and_rest[end + END.len()..];
    }
    Ok(count)
}

fn is_http_url(s: &str) -> bool {
    match s.parse::<http::Uri>() {
        Ok(uri) => {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.host().is_some_and(|h| !h.is_empty())
        }
        Err(_) => false,
    }
}

fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| alnum(c) || *c == b'-')
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
}

/// A DNS-1123 subdomain, limited to 63 characters because the name is also used where labels are required.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 63 && s.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "prod-login-cluster", "a.b-c.d", "x1"] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        let long = format!("{}ab", "ab.".repeat(21)); // 65 characters of short labels
        for bad in ["", "A", "-a", "a-", "a..b", "a_b", &"a".repeat(64), &long] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
        assert!(!is_dns1123_label("a.b"));
    }

    #[test]
    fn urls() {
        assert!(is_http_url("https://tka.your-tailnet.ts.net"));
        assert!(is_http_url("http://127.0.0.1:8080/x"));
        for bad in [
            "tka.example",
            "ftp://x",
            "https://",
            "https://:443",
            "://x",
            "https:// x",
        ] {
            assert!(!is_http_url(bad), "{bad}");
        }
    }
}
