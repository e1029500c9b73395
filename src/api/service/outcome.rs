//! How a login ended, counted once per request: `tka_login_attempts_total{role, outcome}` and, for a
//! login that finished (ready or failed), `tka_login_duration_seconds{outcome}`.

use std::time::Instant;

use crate::api::error::ApiError;
use crate::telemetry::Metrics;

#[derive(Debug, Clone, PartialEq)]
pub struct LoginOutcome {
    /// The selected rule's role; empty when the grant selected none.
    pub role: String,
    /// `success` (ready or still provisioning), `conflict`, `invalid`, `forbidden` or `error`.
    pub outcome: &'static str,
    /// Finished: ready, or definitely failed (not a refusal, not pending).
    pub finished: bool,
}

impl LoginOutcome {
    /// `result`: whether the session is ready, or the error the login answered with.
    pub fn of(role: &str, result: Result<bool, &ApiError>) -> LoginOutcome {
        let (outcome, finished) = match result {
            Ok(ready) => ("success", ready),
            Err(e) => match e.status.as_u16() {
                409 => ("conflict", false),
                400 => ("invalid", false),
                401 | 403 => ("forbidden", false),
                _ => ("error", true),
            },
        };
        LoginOutcome {
            role: role.to_string(),
            outcome,
            finished,
        }
    }

    pub fn record(&self, metrics: &Metrics, started: Instant) {
        metrics
            .login_attempts
            .with_label_values(&[&self.role, self.outcome])
            .inc();
        if self.finished {
            let label = if self.outcome == "success" {
                "success"
            } else {
                "error"
            };
            metrics
                .login_duration
                .with_label_values(&[label])
                .observe(started.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rules::Reject;

    #[test]
    fn refusals_are_not_errors_and_only_finished_logins_are_timed() {
        let refused = ApiError::from(Reject::AmbiguousGrant {
            priority: 1,
            roles: vec![],
        });
        assert_eq!(LoginOutcome::of("", Err(&refused)).outcome, "conflict");
        let failed = ApiError::provisioning_failed("RoleNotFound", "x");
        let o = LoginOutcome::of("view", Err(&failed));
        assert_eq!((o.outcome, o.finished), ("error", true));
        let o = LoginOutcome::of("view", Ok(false));
        assert_eq!((o.outcome, o.finished), ("success", false));
        let metrics = Metrics::new("static");
        o.record(&metrics, Instant::now());
        assert_eq!(
            metrics
                .login_attempts
                .with_label_values(&["view", "success"])
                .get(),
            1
        );
    }
}
