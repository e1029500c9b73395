//! The tka server's address: `https://host.tailnet` for port 443, `http://host.tailnet:port`
//! otherwise, or `--server` verbatim when it already is a URL.
//!
//! When `tailscale.tailnet` is empty, the caller asks the local Tailscale daemon for the MagicDNS suffix first
//! ([`needs_suffix`], `magicdns.rs`) and passes it as `tailnet`; if that fails too, the short name is used with a
//! warning.

/// API prefix of every route.
pub const API_PREFIX: &str = "/api/v1alpha1";

/// Whether `hostname` would get the MagicDNS suffix but `tailnet` does not name one: a single DNS label, not a
/// URL, an FQDN or an IP address.
pub fn needs_suffix(hostname: &str, tailnet: &str) -> bool {
    let hostname = hostname.trim();
    tailnet.trim().trim_matches('.').is_empty() && single_label(hostname) && !hostname.is_empty()
}

/// `tka`, not `tka.example.ts.net`, `100.64.0.1`, `::1` or `https://…`.
fn single_label(hostname: &str) -> bool {
    !hostname.contains('.') && !hostname.contains(':')
}

/// A resolved server address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// Scheme, authority and optional path prefix, without a trailing `/` (`https://tka.example.ts.net`). This is
    /// also the value of the kubeconfig's managed extension.
    pub base: String,
    /// Set when the short name is used over HTTPS without a tailnet suffix.
    pub warning: Option<String>,
}

impl ServerUrl {
    /// `hostname` is `tailscale.hostname` / `--server` (a host name or a full URL).
    pub fn resolve(hostname: &str, tailnet: &str, port: u16) -> Result<ServerUrl, String> {
        let hostname = hostname.trim();
        if hostname.is_empty() {
            return Err("the server name is empty: set --server or tailscale.hostname".into());
        }
        if hostname.contains("://") {
            let url = reqwest::Url::parse(hostname)
                .map_err(|e| format!("--server {hostname:?} is not a valid URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(format!(
                    "--server {hostname:?} must be an http:// or https:// URL with a host"
                ));
            }
            let mut base = hostname.trim_end_matches('/').to_string();
            if let Some(stripped) = base.strip_suffix(API_PREFIX) {
                base = stripped.trim_end_matches('/').to_string();
            }
            return Ok(ServerUrl {
                base,
                warning: None,
            });
        }
        if port == 0 {
            return Err("the server port must be between 1 and 65535".into());
        }
        let tailnet = tailnet.trim().trim_matches('.');
        // Only a single DNS label gets the MagicDNS suffix: a FQDN or an IP address is used as given.
        let single_label = single_label(hostname);
        let host = if single_label && !tailnet.is_empty() {
            format!("{hostname}.{tailnet}")
        } else if hostname.contains(':') && !hostname.starts_with('[') {
            format!("[{hostname}]") // IPv6 literal
        } else {
            hostname.to_string()
        };
        let (base, https) = if port == 443 {
            (format!("https://{host}"), true)
        } else {
            (format!("http://{host}:{port}"), false)
        };
        let warning = (https && single_label && tailnet.is_empty()).then(|| {
            format!(
                "the MagicDNS suffix is unknown: using the short name {hostname:?}, so TLS certificate \
                 verification may fail; set --tailnet (e.g. your-tailnet.ts.net) or tailscale.tailnet"
            )
        });
        Ok(ServerUrl { base, warning })
    }

    /// Full URL of an API route (`/login` → `<base>/api/v1alpha1/login`).
    pub fn route(&self, route: &str) -> String {
        format!("{}{API_PREFIX}{route}", self.base)
    }

    /// The directory name for this server's managed kubeconfigs: the host, plus `_<port>` when the URL names a
    /// non-default port (`127.0.0.1_8080`). Only `[A-Za-z0-9._-]` survive, so the name is safe in paths and in
    /// `KUBECONFIG` lists (no `:` or `;`).
    pub fn host_dir(&self) -> String {
        let (host, port) = match reqwest::Url::parse(&self.base) {
            Ok(u) => (u.host_str().unwrap_or("server").to_string(), u.port()),
            Err(_) => (self.base.clone(), None),
        };
        let raw = match port {
            Some(p) => format!("{host}_{p}"),
            None => host,
        };
        super::kubeconfig_files::safe_file_name(&raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, tailnet: &str, port: u16) -> ServerUrl {
        ServerUrl::resolve(host, tailnet, port).unwrap()
    }

    #[test]
    fn port_443_is_https_without_a_port() {
        let u = url("tka", "your-tailnet.ts.net", 443);
        assert_eq!(u.base, "https://tka.your-tailnet.ts.net");
        assert_eq!(u.warning, None);
        assert_eq!(
            u.route("/login"),
            "https://tka.your-tailnet.ts.net/api/v1alpha1/login"
        );
        assert_eq!(u.host_dir(), "tka.your-tailnet.ts.net");
    }

    #[test]
    fn other_ports_are_plain_http_with_the_port() {
        let u = url("tka", ".your-tailnet.ts.net.", 8123);
        assert_eq!(u.base, "http://tka.your-tailnet.ts.net:8123");
        assert_eq!(u.host_dir(), "tka.your-tailnet.ts.net_8123");
        assert_eq!(url("127.0.0.1", "x.ts.net", 80).base, "http://127.0.0.1:80");
        assert_eq!(url("::1", "", 8080).base, "http://[::1]:8080");
    }

    #[test]
    fn full_urls_pass_through() {
        let u = url("https://tka.example.ts.net/", "ignored.ts.net", 8080);
        assert_eq!(u.base, "https://tka.example.ts.net");
        assert_eq!(u.warning, None);
        let u = url("http://127.0.0.2:9000/api/v1alpha1", "", 443);
        assert_eq!(u.base, "http://127.0.0.2:9000");
        assert_eq!(
            u.route("/logout"),
            "http://127.0.0.2:9000/api/v1alpha1/logout"
        );
        assert_eq!(u.host_dir(), "127.0.0.2_9000");
        assert!(ServerUrl::resolve("ftp://x", "", 443).is_err());
    }

    #[test]
    fn fqdn_is_not_suffixed_and_short_https_name_warns() {
        assert_eq!(
            url("tka.other.ts.net", "mine.ts.net", 443).base,
            "https://tka.other.ts.net"
        );
        let u = url("tka", "", 443);
        assert_eq!(u.base, "https://tka");
        assert!(u.warning.unwrap().contains("tailnet"));
        assert_eq!(url("tka", "", 8080).warning, None);
        assert!(ServerUrl::resolve("", "", 443).is_err());
    }

    #[test]
    fn only_short_names_without_a_tailnet_need_the_suffix() {
        assert!(needs_suffix("tka", ""));
        assert!(needs_suffix(" tka ", " . "));
        assert!(!needs_suffix("tka", "example.ts.net"));
        for host in [
            "tka.example.ts.net",
            "https://tka",
            "http://127.0.0.1:8080",
            "100.64.0.1",
            "::1",
            "",
        ] {
            assert!(!needs_suffix(host, ""), "{host}");
        }
        // The looked-up suffix is then the tailnet of the URL.
        assert_eq!(
            url("tka", "tail1234.ts.net", 443).base,
            "https://tka.tail1234.ts.net"
        );
    }
}
