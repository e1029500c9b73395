//! The API layer's one error type: an HTTP status, a stable `code` (also the metric label), a message and
//! advice for the caller. Internal details (kube errors, LocalAPI errors) are logged, never returned.
//!
//! Every code has a named constructor here; [`ApiError::new`] is private, so no code is spelled anywhere
//! else. The grant's codes come from [`Reject`], the federation's from [`FedError`]; [`CODES`] lists the
//! rest, and a test checks that the three lists stay disjoint and complete.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::federation::FedError;
use crate::federation::client::CallError;
use crate::model::rules::Reject;
use crate::model::wire::ErrorResponse;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub advice: Vec<String>,
    pub retry_after: Option<u64>,
    /// Logged with the request ID, never sent.
    pub internal: Option<String>,
}

/// The codes of the API layer itself (not counting [`Reject`]'s and [`FedError`]'s).
pub const CODES: &[&str] = &[
    "invalid_query",
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "headers_too_large",
    "timeout",
    "internal",
    "rate_limited",
    "funnel_not_allowed",
    "unknown_peer",
    "identity_unavailable",
    "tagged_node_not_allowed",
    "user_identity_unsupported",
    "not_signed_in",
    "session_expired",
    "session_ending",
    "session_changing",
    "session_pending",
    "provisioning_failed",
    "role_conflict",
    "shutting_down",
    "kubernetes_unavailable",
    "cluster_info_unavailable",
    "direct_login_disabled",
    "member_error",
];

/// Codes a member may answer with, passed on by the primary as they are; anything else is `member_error`.
const RELAYED: &[&str] = &[
    "not_signed_in",
    "session_expired",
    "session_changing",
    "provisioning_failed",
    "role_not_allowed",
    "kubernetes_unavailable",
    "not_primary",
];

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        debug_assert!(CODES.contains(&code), "unlisted code {code}");
        ApiError {
            status,
            code,
            message: message.into(),
            advice: vec![],
            retry_after: None,
            internal: None,
        }
    }

    pub fn advice(mut self, advice: impl Into<String>) -> ApiError {
        self.advice.push(advice.into());
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn internal(mut self, detail: impl std::fmt::Display) -> ApiError {
        self.internal = Some(detail.to_string());
        self
    }

    /// The body the client sees (the request ID is added by the middleware).
    pub fn body(&self) -> ErrorResponse {
        ErrorResponse {
            message: self.message.clone(),
            advice: self.advice.clone(),
            code: self.code.into(),
            ..Default::default()
        }
    }

    // -- requests -------------------------------------------------------------------------------------

    pub fn invalid_query(message: String, advice: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message).advice(advice)
    }

    pub fn no_route() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
            .advice("see /openapi.json for the routes")
    }

    pub fn method_not_allowed(method: &str) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed here"),
        )
        .advice("the Allow header lists the methods of this route; see /openapi.json")
    }

    pub fn payload_too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        )
        .advice("tka requests need no body; send the parameters in the query string")
    }

    pub fn headers_too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "the request headers are too large",
        )
        .advice(format!("keep request headers below {} KiB", limit / 1024))
    }

    pub fn timeout(retry_after: u64) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long",
        )
        .retry_after(retry_after)
    }

    pub fn internal_error(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
        .advice("tell the server's admin and quote the request ID")
        .internal(e)
    }

    pub fn rate_limited() -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from your device",
        )
        .advice("slow down and retry after the time in Retry-After")
        .retry_after(1)
    }

    // -- identity -------------------------------------------------------------------------------------

    pub fn funnel() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "funnel_not_allowed",
            "requests through Tailscale Funnel are not allowed",
        )
        .advice("connect to the server over your tailnet")
    }

    pub fn unknown_peer() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "unknown_peer",
            "the tailnet does not know who you are",
        )
        .advice("connect through your tailnet (is Tailscale running and logged in on this device?)")
    }

    pub fn identity_unavailable(detail: impl std::fmt::Display, retry_after: u64) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "identity_unavailable",
            "the tailnet identity service is not available",
        )
        .advice("try again in a moment; the server's tailnet connection is starting or recovering")
        .retry_after(retry_after)
        .internal(detail)
    }

    pub fn tagged_node() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "tagged_node_not_allowed",
            "tagged nodes may not log in to this server",
        )
        .advice("log in from a device owned by a user, or ask the admin to set tailscale.allowTaggedNodes")
    }

    pub fn user_identity_unsupported() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "user_identity_unsupported",
            "this server's tailnet backend cannot identify users",
        )
        .advice("log in from a tagged node, or ask the admin to use the tailscaled backend")
    }

    // -- sessions -------------------------------------------------------------------------------------

    /// No session: 401 for token routes, 404 for logout.
    pub fn not_signed_in(status: StatusCode) -> ApiError {
        ApiError::new(
            status,
            "not_signed_in",
            "you are not signed in on this node",
        )
        .advice("run `tka login`")
    }

    pub fn session_expired() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "session_expired",
            "your session has ended",
        )
        .advice("run `tka login`")
    }

    pub fn session_ending(retry_after: u64) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "session_ending",
            "your previous session is still being cleaned up",
        )
        .retry_after(retry_after)
    }

    pub fn session_changing(retry_after: u64) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "session_changing",
            "the session is being re-provisioned",
        )
        .retry_after(retry_after)
    }

    pub fn session_pending(cluster: &str, retry_after: u64) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "session_pending",
            format!("your session on cluster {cluster} is still being provisioned"),
        )
        .retry_after(retry_after)
    }

    /// The controller reported the session as failed. A `RoleConflict` (another of the user's sessions holds
    /// another role) is the conflict it is, as when the API itself sees it.
    pub fn provisioning_failed(reason: &str, message: &str) -> ApiError {
        if reason == "RoleConflict" {
            return ApiError::new(StatusCode::CONFLICT, "role_conflict", message).advice(
                "log in with `--replace` to end them, or log in with the same role (`--role`)",
            );
        }
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "provisioning_failed",
            format!("the session could not be provisioned: {reason}: {message}"),
        )
        .advice("ask the cluster admin to check the role and namespaces of your grant")
    }

    /// Live sessions of the user elsewhere with another role or scope: `on` lists "role on node".
    pub fn role_conflict(on: &[String]) -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            "role_conflict",
            format!(
                "you have live sessions with another role: {}",
                on.join(", ")
            ),
        )
        .advice("log in with `--replace` to end them, or log in with the same role (`--role`)")
    }

    pub fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        )
        .retry_after(1)
    }

    // -- dependencies ---------------------------------------------------------------------------------

    /// The Kubernetes API failed: the caller can only retry; the detail goes to the log.
    pub fn kube(e: impl std::fmt::Display, retry_after: u64) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "kubernetes_unavailable",
            "the Kubernetes API is not available right now",
        )
        .advice(
            "try again in a moment; if it persists, tell the cluster admin (quote the request ID)",
        )
        .retry_after(retry_after)
        .internal(e)
    }

    pub fn cluster_info_unavailable(retry_after: u64) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_info_unavailable",
            "this server does not know the cluster's API endpoint",
        )
        .advice(
            "ask the server's admin to set clusterInfo.apiEndpoint (or clusterInfo.configMapRef)",
        )
        .retry_after(retry_after)
    }

    // -- federation -----------------------------------------------------------------------------------

    pub fn direct_login_disabled(login_server: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "direct_login_disabled",
            "this cluster takes logins only through its federation primary",
        )
        .advice(format!("log in at {login_server}"))
    }

    /// A member's failure as this server's answer, naming the cluster: the member's own code when it is
    /// one a user can act on, else `member_error`; an unreachable member is `member_unreachable`.
    pub fn relayed(cluster: &str, e: CallError) -> ApiError {
        match e {
            CallError::Status { status, body } => {
                let code = RELAYED
                    .iter()
                    .find(|c| **c == body.code)
                    .copied()
                    .unwrap_or("member_error");
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                let mut err = ApiError::from_parts(
                    status,
                    code,
                    format!("cluster {cluster}: {}", body.message),
                );
                err.advice = body.advice;
                err
            }
            other => FedError::Unreachable {
                cluster: cluster.to_string(),
                detail: other.to_string(),
            }
            .into(),
        }
    }

    /// For codes defined by the layers below (grant, federation), which keep their own lists.
    fn from_parts(status: StatusCode, code: &'static str, message: String) -> ApiError {
        ApiError {
            status,
            code,
            message,
            advice: vec![],
            retry_after: None,
            internal: None,
        }
    }
}

impl From<Reject> for ApiError {
    fn from(r: Reject) -> ApiError {
        let status = match r {
            Reject::InvalidGrant { .. } | Reject::ProtectedNamespace { .. } => {
                StatusCode::BAD_REQUEST
            }
            Reject::AmbiguousGrant { .. } => StatusCode::CONFLICT,
            Reject::NoGrant { .. }
            | Reject::RoleNotGranted { .. }
            | Reject::RoleNotAllowed { .. }
            | Reject::GrantChanged { .. }
            | Reject::PeriodShortened { .. } => StatusCode::FORBIDDEN,
        };
        ApiError {
            advice: r.advice(),
            ..ApiError::from_parts(status, r.code(), r.to_string())
        }
    }
}

impl From<FedError> for ApiError {
    fn from(e: FedError) -> ApiError {
        use FedError as F;
        let status = match &e {
            F::MemberNotAllowed { .. } | F::NotPrimary { .. } => StatusCode::FORBIDDEN,
            F::ClusterNameConflict { .. } | F::NamesConflict { .. } => StatusCode::CONFLICT,
            F::PinsUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            F::InvalidHeartbeat(_) | F::InvalidBody(_) => StatusCode::BAD_REQUEST,
            F::WrongRole(_) | F::UnknownCluster(_) => StatusCode::NOT_FOUND,
            F::Unreachable { .. } | F::AllFailed(_) => StatusCode::BAD_GATEWAY,
        };
        ApiError::from_parts(status, e.code(), e.to_string()).advice(e.advice())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        // The middleware finishes the body (request ID) and logs the error once.
        response.extensions_mut().insert(self);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code a client can see, from all three lists.
    fn all_codes() -> Vec<&'static str> {
        let rejects = [
            Reject::InvalidGrant {
                index: 0,
                reason: String::new(),
            },
            Reject::NoGrant {
                cluster: String::new(),
            },
            Reject::RoleNotGranted {
                role: String::new(),
                granted: vec![],
            },
            Reject::AmbiguousGrant {
                priority: 0,
                roles: vec![],
            },
            Reject::RoleNotAllowed {
                role: String::new(),
                allowed: vec![],
            },
            Reject::GrantChanged {
                role: String::new(),
            },
        ];
        let fed = [
            FedError::MemberNotAllowed {
                node: String::new(),
                cluster: String::new(),
            },
            FedError::ClusterNameConflict {
                cluster: String::new(),
                holder: String::new(),
            },
            FedError::NamesConflict {
                cluster: String::new(),
                what: String::new(),
                holder: String::new(),
            },
            FedError::PinsUnavailable(String::new()),
            FedError::InvalidHeartbeat(String::new()),
            FedError::NotPrimary {
                primary: String::new(),
                caller: String::new(),
            },
            FedError::WrongRole("member"),
            FedError::UnknownCluster(String::new()),
            FedError::Unreachable {
                cluster: String::new(),
                detail: String::new(),
            },
            FedError::AllFailed(vec![]),
            FedError::InvalidBody(String::new()),
        ];
        let mut all: Vec<&'static str> = CODES.to_vec();
        all.extend(rejects.iter().map(Reject::code));
        all.extend(fed.iter().map(FedError::code));
        all
    }

    #[test]
    fn codes_are_unique_snake_case_and_relayed_ones_exist() {
        let all = all_codes();
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len(), "a code is defined twice: {all:?}");
        for c in &all {
            assert!(
                c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{c} is not snake_case"
            );
        }
        for c in RELAYED {
            assert!(all.contains(c), "relayed code {c} is not defined");
        }
    }

    #[test]
    fn constructors_use_listed_codes_and_statuses() {
        let cases = [
            (ApiError::rate_limited(), 429, "rate_limited"),
            (
                ApiError::not_signed_in(StatusCode::NOT_FOUND),
                404,
                "not_signed_in",
            ),
            (ApiError::session_expired(), 401, "session_expired"),
            (
                ApiError::role_conflict(&["view on n".into()]),
                409,
                "role_conflict",
            ),
            (
                ApiError::provisioning_failed("R", "m"),
                422,
                "provisioning_failed",
            ),
            (ApiError::kube("x", 1), 503, "kubernetes_unavailable"),
            (
                ApiError::direct_login_disabled("https://tka"),
                403,
                "direct_login_disabled",
            ),
            (
                ApiError::from(Reject::GrantChanged { role: "x".into() }),
                403,
                "grant_changed",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status.as_u16(), e.code), (status, code));
            assert!(all_codes().contains(&e.code));
        }
        assert!(
            ApiError::kube("secret detail", 1)
                .body()
                .message
                .contains("not available")
        );
    }

    #[test]
    fn members_codes_pass_only_when_listed() {
        let body = |code: &str| CallError::Status {
            status: 401,
            body: ErrorResponse {
                message: "m".into(),
                code: code.into(),
                ..Default::default()
            },
        };
        assert_eq!(
            ApiError::relayed("w", body("session_expired")).code,
            "session_expired"
        );
        assert_eq!(
            ApiError::relayed("w", body("something_else")).code,
            "member_error"
        );
        assert_eq!(
            ApiError::relayed("w", CallError::Unreachable("x".into())).code,
            "member_unreachable"
        );
    }
}
