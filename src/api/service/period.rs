//! A grant's period shortened while a session runs shortens the session: its end moves to its latest
//! login plus the new period (the controller then ends it there and its tokens die with it), or, when that
//! moment has passed, it ends now. Checked before every mint on this cluster and at every revalidation
//! pass, so a tailnet admin who shortens a grant does not have to wait out sessions begun under the old one.

use std::sync::Arc;

use jiff::Timestamp;
use kube::ResourceExt;

use super::Service;
use super::authorize::Caller;
use crate::api::error::ApiError;
use crate::model::rules::{self, Reject, Rule};
use crate::operator::crd::TkaSignin;

impl Service {
    /// The caller's session as the grant gives it now: refused when the grant no longer gives its role and
    /// scope, ended when a shortened period has run out, its end moved earlier when the period shrank.
    pub async fn holds_now(
        &self,
        caller: &Caller,
        s: Arc<TkaSignin>,
    ) -> Result<Arc<TkaSignin>, ApiError> {
        let rule = self.still_holds(caller, &s)?;
        self.fit_period(s, &rule).await
    }

    /// `s` fitted to `rule`, the rule that still gives it. Ending it is counted and logged as a revocation.
    /// A cached copy can lag a write (a login, an admin's edit): a conflict re-reads the session once.
    pub(super) async fn fit_period(
        &self,
        s: Arc<TkaSignin>,
        rule: &Rule,
    ) -> Result<Arc<TkaSignin>, ApiError> {
        match self.fit_once(s.clone(), rule).await {
            Err(Fit::Conflict) => {}
            Err(Fit::Failed(e)) => return Err(e),
            Ok(s) => return Ok(s),
        }
        let fresh = match self.store.api().get_opt(&s.name_any()).await {
            Ok(Some(fresh)) => Arc::new(fresh),
            Ok(None) => return Err(ApiError::not_signed_in(http::StatusCode::UNAUTHORIZED)),
            Err(e) => return Err(ApiError::kube(e, self.settings.retry_after())),
        };
        self.fit_once(fresh, rule).await.map_err(|e| match e {
            Fit::Conflict => ApiError::session_changing(self.settings.retry_after()),
            Fit::Failed(e) => e,
        })
    }

    async fn fit_once(&self, s: Arc<TkaSignin>, rule: &Rule) -> Result<Arc<TkaSignin>, Fit> {
        let (Some(started), Some(until)) = (s.started(), s.valid_until().ok()) else {
            return Ok(s);
        };
        let Some(end) = rules::shortened_end(started, until, rule.period.as_std()) else {
            return Ok(s);
        };
        let unavailable = |e: kube::Error| {
            Fit::Failed(ApiError::kube(
                format!("fitting the session to the grant's period: {e}"),
                self.settings.retry_after(),
            ))
        };
        if end > Timestamp::now() {
            let shorter = match self.store.shorten(&s, rule.period.as_std(), end).await {
                Ok(shorter) => shorter,
                Err(kube::Error::Api(e)) if e.code == 409 => return Err(Fit::Conflict),
                Err(e) => return Err(unavailable(e)),
            };
            tracing::info!(audit = true, event = "shortened", user = %s.spec.username, session = %s.name_any(),
                until = %crate::model::wire::rfc3339(end), "session shortened to the grant's period");
            return Ok(Arc::new(shorter));
        }
        self.store.delete(&s).await.map_err(unavailable)?;
        tracing::info!(audit = true, event = "revoked", user = %s.spec.username, node = %s.spec.node, role = %s.spec.role,
            session = %s.name_any(), reason = "period_shortened", "grant revoked");
        self.metrics
            .revocations
            .with_label_values(&["grant_revoked"])
            .inc();
        let e = ApiError::from(Reject::PeriodShortened {
            period: rule.period,
        });
        self.reject(&e);
        Err(Fit::Failed(e))
    }
}

enum Fit {
    /// The session changed since it was read.
    Conflict,
    Failed(ApiError),
}
