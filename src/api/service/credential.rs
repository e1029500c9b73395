//! Exec credentials for `tka credential`: minted here for this cluster, relayed to the member for a member's
//! cluster (re-authenticated here first: the caller's grant must name that cluster).

use std::time::Duration;

use super::local::{Progress, TokenKind};
use super::relay::OnMember;
use super::{Caller, Service};
use crate::api::error::ApiError;
use crate::federation::FedError;
use crate::model::rules::Reject;
use crate::model::wire::{self, ExecCredential};
use crate::operator::crd::TkaSignin;

impl Service {
    /// An ExecCredential for a ready session on this cluster.
    pub async fn credential_for(
        &self,
        s: &TkaSignin,
        api_version: &str,
        rid: &str,
    ) -> Result<ExecCredential, ApiError> {
        let m = self.mint(s, TokenKind::Exec, rid).await?;
        Ok(ExecCredential::new(
            api_version,
            m.token,
            wire::rfc3339(m.expires_at),
        ))
    }

    /// `GET /exec-credential[?cluster=]`: this cluster (no `cluster`, or our own name), or a member's.
    pub async fn credential(
        &self,
        caller: &Caller,
        cluster: Option<&str>,
        api_version: &str,
        wait: Option<Duration>,
        rid: &str,
    ) -> Result<Progress<ExecCredential>, ApiError> {
        if let Some(c) = cluster.filter(|c| *c != self.settings.cluster_name()) {
            if self.federation.is_member() {
                return Err(FedError::UnknownCluster(c.to_string()).into());
            }
            return self
                .relayed_credential(caller, c, api_version, rid)
                .await
                .map(Progress::Ready);
        }
        self.direct_use()?;
        self.grant(caller)?;
        let s = match self.ready(self.lookup(caller).await?, wait).await? {
            Progress::Ready(s) => s,
            Progress::Pending => return Ok(Progress::Pending),
        };
        let s = self.holds_now(caller, s).await?;
        Ok(Progress::Ready(
            self.credential_for(&s, api_version, rid).await?,
        ))
    }

    async fn relayed_credential(
        &self,
        caller: &Caller,
        cluster: &str,
        api_version: &str,
        rid: &str,
    ) -> Result<ExecCredential, ApiError> {
        let Some(m) = self.federation.member(cluster) else {
            return Err(FedError::UnknownCluster(cluster.to_string()).into());
        };
        let rules = self.rules(caller)?;
        if !rules
            .iter()
            .any(|r| r.applies_to(cluster, self.settings.cluster_name()))
        {
            let e = ApiError::from(Reject::NoGrant {
                cluster: cluster.to_string(),
            });
            self.reject(&e);
            return Err(e);
        }
        match self
            .on_member(&m, caller, &rules, rid)
            .await
            .map_err(|e| ApiError::relayed(cluster, e))?
        {
            OnMember::Holds(_) => {}
            OnMember::NotSignedIn => {
                return Err(ApiError::not_signed_in(http::StatusCode::UNAUTHORIZED));
            }
            OnMember::Ended(rejected) => {
                let e = ApiError::from(rejected);
                self.reject(&e);
                return Err(e);
            }
        }
        match self
            .member_token(&m, caller, TokenKind::Exec, rid)
            .await
            .map_err(|e| ApiError::relayed(cluster, e))?
        {
            Ok(t) => Ok(ExecCredential::new(
                api_version,
                t.token,
                t.expiration_timestamp,
            )),
            Err(_) => Err(ApiError::session_pending(
                cluster,
                self.settings.retry_after(),
            )),
        }
    }
}
