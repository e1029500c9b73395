//! Plain HTTP only inside the tailnet.
//!
//! With a port other than 443 the CLI talks `http://` to the server (as upstream; the server then
//! serves no TLS). That is safe only when the connection runs through the tailnet: WireGuard encrypts it and
//! authenticates the peer by its node key, so whoever answers at a tailnet address is the node the tailnet
//! policy says. It is not safe when the *name* resolves somewhere else (MagicDNS off, a search domain, a LAN
//! resolver or a spoofed DNS answer): then a stranger on the path reads the traffic and can answer as the
//! server. So an `http://` URL whose host is a DNS name is connected only to tailnet addresses (100.64.0.0/10,
//! fd7a:115c:a1e0::/48), resolved by the CLI itself with proxies disabled; any other answer is refused before a
//! byte is sent. An IP address typed by the user (`http://127.0.0.1:8080`) is used as given.

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Tailscale's address ranges: IPv4 CGNAT `100.64.0.0/10` and the IPv6 ULA `fd7a:115c:a1e0::/48`.
pub fn is_tailnet_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 100 && (o[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[0] == 0xfd7a && s[1] == 0x115c && s[2] == 0xa1e0
        }
    }
}

/// Whether requests to `base` must go through [`TailnetResolver`]: plain `http://` to a DNS name.
pub fn needs_tailnet_resolver(base: &str) -> bool {
    reqwest::Url::parse(base).is_ok_and(|u| {
        let host = u.host_str().unwrap_or_default();
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok();
        u.scheme() == "http" && !host.is_empty() && !literal
    })
}

/// A name that resolved only to addresses outside the tailnet.
#[derive(Debug, thiserror::Error)]
#[error(
    "{name} resolves to {found}, not to a tailnet address, and plain HTTP is only used inside the tailnet"
)]
pub struct NotTailnet {
    pub name: String,
    pub found: String,
}

/// Resolves with the system resolver and keeps only tailnet addresses.
#[derive(Debug, Default)]
pub struct TailnetResolver;

impl Resolve for TailnetResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let tailnet = tailnet_only(&all);
            if tailnet.is_empty() {
                let found = if all.is_empty() {
                    "no address".to_string()
                } else {
                    all.iter()
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(Box::new(NotTailnet { name: host, found }) as _);
            }
            Ok(Box::new(tailnet.into_iter()) as Addrs)
        })
    }
}

fn tailnet_only(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    addrs
        .iter()
        .copied()
        .filter(|a| is_tailnet_ip(a.ip()))
        .collect()
}

/// The [`NotTailnet`] behind a request error, if that is why it failed.
pub fn not_tailnet<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a NotTailnet> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(n) = err.downcast_ref::<NotTailnet>() {
            return Some(n);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tailnet_ranges() {
        for ip in [
            "100.64.0.1",
            "100.127.255.254",
            "fd7a:115c:a1e0::1",
            "fd7a:115c:a1e0:ab12::5",
        ] {
            assert!(is_tailnet_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "100.63.255.255",
            "100.128.0.1",
            "127.0.0.1",
            "192.168.1.5",
            "fd7a:115c:a1e1::1",
            "::1",
        ] {
            assert!(!is_tailnet_ip(ip.parse().unwrap()), "{ip}");
        }
        let mixed: Vec<SocketAddr> = vec![
            "10.0.0.1:0".parse().unwrap(),
            "100.100.1.2:0".parse().unwrap(),
        ];
        assert_eq!(tailnet_only(&mixed), vec![mixed[1]]);
    }

    #[test]
    fn only_plain_http_to_names_is_restricted() {
        assert!(needs_tailnet_resolver("http://tka.example.ts.net:8080"));
        assert!(needs_tailnet_resolver("http://localhost:8080"));
        assert!(!needs_tailnet_resolver("https://tka.example.ts.net"));
        assert!(!needs_tailnet_resolver("http://127.0.0.1:8080"));
        assert!(!needs_tailnet_resolver("http://[fd7a:115c:a1e0::1]:8080"));
    }

    #[tokio::test]
    async fn a_name_outside_the_tailnet_is_refused_with_its_addresses() {
        let err = match TailnetResolver.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost is not in the tailnet"),
            Err(e) => e,
        };
        let n = not_tailnet(err.as_ref()).expect("a NotTailnet error");
        assert_eq!(n.name, "localhost");
        assert!(
            n.found.contains("127.0.0.1") || n.found.contains("::1"),
            "{}",
            n.found
        );
    }
}
