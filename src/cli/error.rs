//! The CLI's one error type and its exit codes.
//!
//! Every failure carries what the user needs: the server's `message`, each `advice` line and the request ID, so
//! a report can be matched with the server's logs. Status codes are matched numerically, never by substring.

use std::fmt;

use crate::model::wire::ErrorResponse;

/// Process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// Anything not covered below.
    Other,
    /// Usage or configuration error (malformed config file included).
    Usage,
    /// 403, 409, 422: no grant, ambiguous grant, role not allowed, provisioning failed.
    NotAuthorized,
    /// 401, or 404 from logout: not signed in or session expired.
    NotSignedIn,
    /// Server unreachable, timeout, 5xx after retries.
    Unavailable,
    /// Federation: some clusters failed.
    Partial,
    /// Ctrl-C.
    Interrupted,
    /// `tka shell`: the subshell's own exit code.
    Child(u8),
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Other => 1,
            Exit::Usage => 2,
            Exit::NotAuthorized => 3,
            Exit::NotSignedIn => 4,
            Exit::Unavailable => 5,
            Exit::Partial => 6,
            Exit::Interrupted => 130,
            Exit::Child(c) => c,
        }
    }

    /// The exit code for a final (no longer retried) HTTP status. Logout maps its 404 itself.
    pub fn for_status(status: u16) -> Exit {
        match status {
            200..=299 => Exit::Success,
            401 => Exit::NotSignedIn,
            403 | 409 | 422 => Exit::NotAuthorized,
            // Rate limited or timed out until the deadline: the server is not serving us.
            408 | 429 => Exit::Unavailable,
            500..=599 => Exit::Unavailable,
            _ => Exit::Other,
        }
    }
}

/// A failed command: what to print on stderr and how to exit.
#[derive(Debug, Clone, PartialEq)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
    pub advice: Vec<String>,
    /// Messages of the server's `cause` chain.
    pub causes: Vec<String>,
    pub request_id: Option<String>,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            exit,
            message: message.into(),
            advice: Vec::new(),
            causes: Vec::new(),
            request_id: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        CliError::new(Exit::Usage, message)
    }

    pub fn other(message: impl Into<String>) -> Self {
        CliError::new(Exit::Other, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        CliError::new(Exit::Unavailable, message)
    }

    pub fn interrupted() -> Self {
        CliError::new(Exit::Interrupted, "interrupted")
    }

    pub fn advice(mut self, advice: impl Into<String>) -> Self {
        self.advice.push(advice.into());
        self
    }

    /// An error answer of the server. `body` is the raw body: an `ErrorResponse` when the server is tka, anything
    /// (or nothing) otherwise. The request ID comes from the body, else from the `X-Request-Id` header.
    pub fn from_response(status: u16, body: &[u8], header_request_id: Option<&str>) -> Self {
        let parsed = serde_json::from_slice::<ErrorResponse>(body)
            .ok()
            .filter(|e| !e.message.is_empty());
        let mut err = match parsed {
            Some(e) => {
                let mut causes = Vec::new();
                let mut cause = e.cause.as_deref();
                while let Some(c) = cause {
                    causes.push(c.message.clone());
                    cause = c.cause.as_deref();
                }
                CliError {
                    exit: Exit::for_status(status),
                    message: e.message,
                    advice: e.advice,
                    causes,
                    request_id: Some(e.request_id).filter(|r| !r.is_empty()),
                }
            }
            None => CliError::new(Exit::for_status(status), default_message(status)),
        };
        if err.request_id.is_none() {
            err.request_id = header_request_id
                .filter(|r| !r.is_empty())
                .map(str::to_string);
        }
        err
    }
}

/// A message for an error status without a usable body (an upstream server, a proxy).
fn default_message(status: u16) -> String {
    match status {
        401 => "not signed in: run `tka login`".into(),
        403 => "access denied by the tka server (HTTP 403)".into(),
        404 => "not found (HTTP 404): is this a tka server?".into(),
        409 => "conflict (HTTP 409)".into(),
        422 => "provisioning failed (HTTP 422)".into(),
        429 => "rate limited by the tka server (HTTP 429)".into(),
        s => format!("the tka server answered HTTP {s}"),
    }
}

impl fmt::Display for CliError {
    /// The stderr form: message, then one line per cause, advice and the request ID.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tka: {}", self.message)?;
        for c in &self.causes {
            write!(f, "\n  cause: {c}")?;
        }
        for a in &self.advice {
            write!(f, "\n  advice: {a}")?;
        }
        if let Some(id) = &self.request_id {
            write!(f, "\n  request id: {id}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_table() {
        let table: &[(u16, u8)] = &[
            (200, 0),
            (202, 0),
            (400, 1),
            (401, 4),
            (403, 3),
            (404, 1),
            (405, 1),
            (409, 3),
            (422, 3),
            (429, 5),
            (500, 5),
            (502, 5),
            (503, 5),
            (504, 5),
        ];
        for &(status, code) in table {
            assert_eq!(Exit::for_status(status).code(), code, "HTTP {status}");
        }
        assert_eq!(Exit::Usage.code(), 2);
        assert_eq!(Exit::Partial.code(), 6);
        assert_eq!(Exit::Interrupted.code(), 130);
    }

    #[test]
    fn error_body_message_advice_cause_and_request_id() {
        let body = br#"{"message":"ambiguous grant","advice":["use --role view","or --role edit"],
            "cause":{"message":"two rules at priority 5"},"code":"ambiguous_grant","request_id":"r-1"}"#;
        let e = CliError::from_response(409, body, Some("header-id"));
        assert_eq!(e.exit, Exit::NotAuthorized);
        assert_eq!(e.request_id.as_deref(), Some("r-1"));
        assert_eq!(
            e.to_string(),
            "tka: ambiguous grant\n  cause: two rules at priority 5\n  advice: use --role view\n  \
             advice: or --role edit\n  request id: r-1"
        );
    }

    #[test]
    fn request_id_falls_back_to_the_header_and_bodies_may_be_anything() {
        let e = CliError::from_response(503, b"<html>bad gateway</html>", Some("hdr"));
        assert_eq!(e.exit, Exit::Unavailable);
        assert_eq!(e.request_id.as_deref(), Some("hdr"));
        assert!(e.message.contains("503"), "{}", e.message);
        let e = CliError::from_response(401, b"", None);
        assert_eq!(e.exit, Exit::NotSignedIn);
        assert_eq!(e.request_id, None);
    }
}
