//! HTTP client for the tailnet API.
//!
//! - rustls with the built-in web PKI roots plus `client.caFile` and `$SSL_CERT_FILE` as extra roots,
//!   `User-Agent: tka/<version>`, `HTTPS_PROXY`/`NO_PROXY` honoured (reqwest's defaults);
//! - one deadline (`--timeout`) for a whole command: every request's timeout is the time left, long polls ask
//!   the server to wait at most that long;
//! - network errors, 502/503/504 and 429 are retried until the deadline, honouring `Retry-After` (capped at
//!   5 s), else with exponential backoff from 200 ms with jitter. Other statuses are returned to the caller,
//!   which matches them numerically;
//! - `--debug` prints each exchange (method, URL, status, timing, request ID) on stderr, and the body only of
//!   error answers: bodies of successful answers may carry tokens and are never printed.
//!
//! Test hook: `TKA_TEST_BIND_ADDRESS` (test-only, not a configuration key) sets the local source IP of every
//! connection, so integration tests can act as different tailnet users from different loopback addresses
//! (`127.0.0.x`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, RETRY_AFTER};

use super::error::{CliError, Exit};
use super::plain_http;
use super::server_url::ServerUrl;

/// Test-only: local source address of the HTTP client.
pub const TEST_BIND_ADDRESS_VAR: &str = "TKA_TEST_BIND_ADDRESS";

/// Upper bound for a server-provided `Retry-After`.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(5);
/// First backoff step when the server gives no `Retry-After`.
pub const BACKOFF_START: Duration = Duration::from_millis(200);
/// Longest wait the CLI asks the server for (`?wait=30s`).
pub const MAX_LONG_POLL: Duration = Duration::from_secs(30);

/// Parses `Retry-After`: delay-seconds or an HTTP date (relative to `now`). Not capped.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let delta = at.duration_since(now);
    Some(if delta.is_negative() {
        Duration::ZERO
    } else {
        delta.unsigned_abs()
    })
}

/// Exponential backoff for `attempt` (0-based): 200 ms, 400 ms, 800 ms, … plus up to 25 % jitter
/// (`jitter` in `[0, 1)`), at most 5 s.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base = BACKOFF_START.saturating_mul(1u32 << attempt.min(16));
    base.mul_f64(1.0 + 0.25 * jitter.clamp(0.0, 1.0))
        .min(RETRY_AFTER_CAP)
}

/// How long to wait before the next attempt: the server's `Retry-After` capped at 5 s (at least 100 ms so a
/// `0` cannot spin), else [`backoff`].
pub fn retry_delay(retry_after: Option<Duration>, attempt: u32, jitter: f64) -> Duration {
    match retry_after {
        Some(d) => d.clamp(Duration::from_millis(100), RETRY_AFTER_CAP),
        None => backoff(attempt, jitter),
    }
}

/// Statuses retried until the deadline. A 503 whose `code` says the condition is not transient is not.
fn retryable(status: u16, body: &[u8]) -> bool {
    match status {
        429 | 502 | 504 => true,
        503 => !serde_json::from_slice::<crate::model::wire::ErrorResponse>(body)
            .is_ok_and(|e| e.code == "cluster_info_unavailable"),
        _ => false,
    }
}

/// The `wait` a long poll asks for: at most 30 s and about 1 s less than the time left (whole seconds, at least
/// 1 s), so the server answers before the client gives up.
pub fn long_poll_wait(remaining: Duration) -> Duration {
    let ceil_secs = remaining.as_millis().div_ceil(1000);
    let secs = u64::try_from(ceil_secs.saturating_sub(1)).unwrap_or(u64::MAX);
    Duration::from_secs(secs.clamp(1, MAX_LONG_POLL.as_secs()))
}

/// How to build the client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub server: ServerUrl,
    /// The whole command's deadline (`--timeout`).
    pub timeout: Duration,
    /// `client.caFile` (errors are fatal).
    pub ca_file: Option<PathBuf>,
    /// `$SSL_CERT_FILE` (errors only warn).
    pub ssl_cert_file: Option<PathBuf>,
    /// `$TKA_TEST_BIND_ADDRESS`.
    pub bind_address: Option<IpAddr>,
    pub debug: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// A final answer (not retried any more).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub retry_after: Option<Duration>,
    pub request_id: Option<String>,
    pub content_type: String,
    /// The `Date` header (`tka doctor` compares clocks with it).
    pub date: Option<String>,
}

impl Reply {
    /// This answer as an error (message, advice, request ID; exit code by status).
    pub fn error(&self) -> CliError {
        CliError::from_response(self.status, &self.body, self.request_id.as_deref())
    }
}

/// The API client of one command.
pub struct Api {
    http: reqwest::Client,
    pub server: ServerUrl,
    deadline: Instant,
    timeout: Duration,
    debug: bool,
}

impl Api {
    pub fn new(opts: ClientOptions) -> Result<Api, CliError> {
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("tka/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(opts.timeout.min(Duration::from_secs(10)));
        if let Some(file) = &opts.ca_file {
            for cert in read_bundle(file).map_err(|m| {
                CliError::usage(format!("client.caFile: {m}"))
                    .advice("point --ca-file (client.caFile) to a PEM file with CA certificates")
            })? {
                b = b.add_root_certificate(cert);
            }
        }
        if let Some(file) = &opts.ssl_cert_file {
            match read_bundle(file) {
                Ok(certs) => {
                    for cert in certs {
                        b = b.add_root_certificate(cert);
                    }
                }
                Err(m) => eprintln!("tka: warning: SSL_CERT_FILE ignored: {m}"),
            }
        }
        if let Some(ip) = opts.bind_address {
            b = b.local_address(ip);
        }
        if plain_http::needs_tailnet_resolver(&opts.server.base) {
            // Plain HTTP is safe only through the tailnet: no proxy, and only tailnet addresses.
            b = b
                .no_proxy()
                .dns_resolver(std::sync::Arc::new(plain_http::TailnetResolver));
        }
        let http = b.build().map_err(|e| {
            CliError::other(format!("cannot set up the HTTP client: {}", chain(&e)))
        })?;
        Ok(Api {
            http,
            server: opts.server,
            deadline: Instant::now() + opts.timeout,
            timeout: opts.timeout,
            debug: opts.debug,
        })
    }

    /// Time left until the command's deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The configured overall timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sleeps `delay` if the deadline allows it; otherwise fails with `timed_out`.
    pub async fn pause(
        &self,
        delay: Duration,
        timed_out: impl FnOnce() -> CliError,
    ) -> Result<(), CliError> {
        if delay >= self.remaining() {
            return Err(timed_out());
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// One logical request: retried on network errors, 429 and 502/503/504 until the deadline. With
    /// `long_poll`, `wait=<n>s` is added (recomputed per attempt from the time left).
    pub async fn call(
        &self,
        method: Method,
        route: &str,
        query: &[(&str, &str)],
        long_poll: bool,
    ) -> Result<Reply, CliError> {
        let url = self.server.route(route);
        let mut attempt: u32 = 0;
        loop {
            let remaining = self.remaining();
            let mut pairs: Vec<(String, String)> = query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if long_poll {
                let wait = long_poll_wait(remaining);
                pairs.insert(0, ("wait".into(), format!("{}s", wait.as_secs())));
            }
            let (method_name, rb) = match method {
                Method::Get => ("GET", self.http.get(&url)),
                Method::Post => ("POST", self.http.post(&url)),
            };
            let rb = rb
                .query(&pairs)
                .header(ACCEPT, "application/json")
                .timeout(remaining.max(Duration::from_millis(1)));
            if self.debug {
                let qs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let sep = if qs.is_empty() { "" } else { "?" };
                eprintln!("tka: debug: → {method_name} {url}{sep}{}", qs.join("&"));
            }
            let started = Instant::now();
            let outcome = match rb.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    resp.bytes()
                        .await
                        .map(|body| (status, headers, body.to_vec()))
                }
                Err(e) => Err(e),
            };
            let jitter: f64 = rand::random();
            match outcome {
                Ok((status, headers, body)) => {
                    let reply = reply_from(status, &headers, body);
                    if self.debug {
                        self.debug_reply(&reply, started.elapsed());
                    }
                    if !retryable(status, &reply.body) {
                        return Ok(reply);
                    }
                    let delay = retry_delay(reply.retry_after, attempt, jitter);
                    let err = reply.error();
                    self.pause(delay, || CliError {
                        exit: Exit::Unavailable,
                        ..err
                    })
                    .await?;
                }
                Err(e) => {
                    if self.debug {
                        eprintln!(
                            "tka: debug: ← {} after {} ms",
                            chain(&e),
                            started.elapsed().as_millis()
                        );
                    }
                    if is_certificate_error(&e) {
                        // Not transient: retrying cannot fix a certificate the client does not trust.
                        return Err(self.network_error(&e));
                    }
                    if let Some(n) = plain_http::not_tailnet(&e) {
                        return Err(CliError::usage(format!("refusing to talk plain HTTP to {}: {n}", self.server.base))
                            .advice("connect Tailscale (MagicDNS must resolve the name to the server's tailnet address), or use the server's HTTPS address (port 443, or --server https://…)"));
                    }
                    let delay = backoff(attempt, jitter);
                    self.pause(delay, || self.network_error(&e)).await?;
                }
            }
            attempt = attempt.saturating_add(1);
        }
    }

    fn network_error(&self, e: &reqwest::Error) -> CliError {
        let what = if e.is_timeout() {
            format!(
                "timed out after {} talking to the tka server at {}",
                human(self.timeout),
                self.server.base
            )
        } else {
            format!(
                "cannot reach the tka server at {}: {}",
                self.server.base,
                chain(e)
            )
        };
        let mut err = CliError::unavailable(what).advice(
            "check that Tailscale is connected (`tailscale status`) and the server address (--server, --port, --tailnet)",
        );
        if let Some(w) = &self.server.warning {
            err = err.advice(w.clone());
        }
        if e.is_timeout() {
            err = err.advice("raise --timeout (client.timeout) if the server is slow");
        }
        if is_certificate_error(e) {
            err = err.advice(
                "the server's TLS certificate is not trusted: use the full MagicDNS name (--tailnet) or add its CA \
                 with --ca-file (client.caFile)",
            );
        }
        err
    }

    fn debug_reply(&self, r: &Reply, took: Duration) {
        let mut line = format!("tka: debug: ← {} in {} ms", r.status, took.as_millis());
        if let Some(ra) = r.retry_after {
            line.push_str(&format!(", retry after {} ms", ra.as_millis()));
        }
        if let Some(id) = &r.request_id {
            line.push_str(&format!(", request id {id}"));
        }
        if !r.content_type.is_empty() {
            line.push_str(&format!(", {}", r.content_type));
        }
        eprintln!("{line}");
        // Only error bodies: successful answers may contain tokens.
        if r.status >= 400 && !r.body.is_empty() {
            eprintln!("tka: debug:   {}", String::from_utf8_lossy(&r.body).trim());
        }
    }
}

fn reply_from(status: u16, headers: &HeaderMap, body: Vec<u8>) -> Reply {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Reply {
        status,
        retry_after: header(RETRY_AFTER.as_str())
            .and_then(|v| parse_retry_after(&v, jiff::Timestamp::now())),
        request_id: header("x-request-id").filter(|v| !v.is_empty()),
        content_type: header(CONTENT_TYPE.as_str()).unwrap_or_default(),
        date: header(reqwest::header::DATE.as_str()),
        body,
    }
}

fn read_bundle(file: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: contains no certificates", file.display()));
    }
    Ok(certs)
}

/// TLS verification failures (rustls' `invalid peer certificate: …`). reqwest does not expose the rustls error
/// type, so its text is inspected.
fn is_certificate_error(e: &reqwest::Error) -> bool {
    e.is_connect() && chain(e).contains("certificate")
}

/// An error with its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// `30s`, `1m30s`, `500ms`.
pub fn human(d: Duration) -> String {
    crate::model::duration::GoDuration::from_std(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn retry_after_seconds_and_http_dates() {
        let now = ts("2026-11-24T10:00:00Z");
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Tue, 24 Nov 2026 10:00:03 GMT", now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after("Tue, 24 Nov 2026 09:59:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn retry_after_is_capped_at_five_seconds() {
        assert_eq!(
            retry_delay(Some(Duration::from_secs(120)), 0, 0.5),
            Duration::from_secs(5)
        );
        assert_eq!(
            retry_delay(Some(Duration::from_secs(2)), 7, 0.5),
            Duration::from_secs(2)
        );
        assert_eq!(
            retry_delay(Some(Duration::ZERO), 0, 0.0),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn backoff_starts_at_200ms_doubles_with_jitter_and_caps() {
        assert_eq!(retry_delay(None, 0, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(1, 0.0), Duration::from_millis(400));
        assert_eq!(backoff(2, 0.0), Duration::from_millis(800));
        let j = backoff(0, 0.99);
        assert!(
            j > Duration::from_millis(200) && j < Duration::from_millis(250),
            "{j:?}"
        );
        assert_eq!(backoff(10, 0.5), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX, 0.5), Duration::from_secs(5));
    }

    #[test]
    fn retryable_statuses() {
        for s in [429, 502, 503, 504] {
            assert!(retryable(s, b""), "{s}");
        }
        for s in [200, 202, 400, 401, 403, 404, 409, 422, 500] {
            assert!(!retryable(s, b""), "{s}");
        }
        assert!(!retryable(
            503,
            br#"{"message":"no cluster info","code":"cluster_info_unavailable"}"#
        ));
    }

    #[test]
    fn long_poll_wait_fits_the_deadline() {
        assert_eq!(
            long_poll_wait(Duration::from_secs(120)),
            Duration::from_secs(30)
        );
        assert_eq!(
            long_poll_wait(Duration::from_millis(29_990)),
            Duration::from_secs(29)
        );
        assert_eq!(
            long_poll_wait(Duration::from_millis(10_900)),
            Duration::from_secs(10)
        );
        assert_eq!(
            long_poll_wait(Duration::from_millis(300)),
            Duration::from_secs(1)
        );
    }
}
