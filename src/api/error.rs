//! The API layer's one error type: an HTTP status, a stable `code` (also the metric label), a message and
//! advice for the caller. Internal details (kube errors, LocalAPI errors) are logged, never returned.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

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

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
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

    pub fn not_signed_in(status: StatusCode) -> ApiError {
        ApiError::new(
            status,
            "not_signed_in",
            "you are not signed in on this node",
        )
        .advice("run `tka login`")
    }

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

    pub fn internal_error(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
        .advice("tell the server's admin and quote the request ID")
        .internal(e)
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
            | Reject::RoleNotAllowed { .. } => StatusCode::FORBIDDEN,
        };
        ApiError {
            status,
            code: r.code(),
            message: r.to_string(),
            advice: r.advice(),
            retry_after: None,
            internal: None,
        }
    }
}

impl From<crate::federation::FedError> for ApiError {
    fn from(e: crate::federation::FedError) -> ApiError {
        use crate::federation::FedError as F;
        let status = match &e {
            F::MemberNotAllowed { .. } | F::NotPrimary { .. } => StatusCode::FORBIDDEN,
            F::ClusterNameConflict { .. } => StatusCode::CONFLICT,
            F::InvalidHeartbeat(_) | F::InvalidBody(_) => StatusCode::BAD_REQUEST,
            F::WrongRole(_) | F::UnknownCluster(_) => StatusCode::NOT_FOUND,
            F::Unreachable { .. } | F::AllFailed(_) => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(status, e.code(), e.to_string()).advice(e.advice())
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
