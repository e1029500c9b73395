//! Logout: needs identity only (a user whose grant was revoked can still log out). Ends the caller's
//! session on this node (or all of the user's), then on every member. A member that cannot be reached now —
//! not answering, missing heartbeats, or already removed for missing them — gets the logout on its next
//! heartbeat; members end sessions at `valid_until` on their own in any case.

use std::sync::Arc;

use futures::future::join_all;
use kube::ResourceExt;

use super::{Caller, Service};
use crate::api::error::ApiError;
use crate::federation::client::CallError;
use crate::federation::wire::SessionRef;
use crate::federation::{FedError, Member};
use crate::model::naming;
use crate::model::wire::{ClusterResult, UserLoginResponse};
use crate::operator::crd::TkaSignin;

impl Service {
    /// `POST /logout[?all]`.
    pub async fn logout(
        &self,
        caller: &Caller,
        all: bool,
        rid: &str,
    ) -> Result<UserLoginResponse, ApiError> {
        let targets = self.own_targets(caller, all).await?;
        let members = self.federation.healthy_members();
        let down = self.federation.stale_members();
        let what = session_ref(caller, all);
        // Removed members are no longer part of the federation (not listed in the answer), but may still
        // hold a session of this user: their return delivers the logout.
        for name in self.federation.departed_members() {
            self.federation.retry_later(&name, what.clone());
        }
        if targets.is_empty() && members.is_empty() && down.is_empty() {
            return Err(ApiError::not_signed_in(http::StatusCode::NOT_FOUND));
        }
        self.end(&targets, "logout", rid).await?;
        let first = targets.first();
        if members.is_empty() && down.is_empty() {
            let first = first.expect("checked above");
            return Ok(self.response_for(first));
        }
        let mut clusters = self.logout_members(&what, rid, members, down).await;
        if first.is_none() && !clusters.iter().any(|c| c.status == "ok") {
            if clusters.is_empty() {
                return Err(ApiError::not_signed_in(http::StatusCode::NOT_FOUND));
            }
            return Err(FedError::AllFailed(clusters).into());
        }
        let mut body = match first {
            Some(s) => {
                clusters.insert(0, line(self.settings.cluster_name(), "ok", None));
                self.response_for(s)
            }
            None => UserLoginResponse {
                username: caller.login.clone(),
                ..Default::default()
            },
        };
        body.clusters = clusters;
        Ok(body)
    }

    /// The sessions to end on this cluster: the caller's node's, and with `all` every one of the user's.
    async fn own_targets(
        &self,
        caller: &Caller,
        all: bool,
    ) -> Result<Vec<Arc<TkaSignin>>, ApiError> {
        let own = self.lookup(caller).await?.filter(|s| !s.is_ending());
        let mut targets: Vec<Arc<TkaSignin>> = own.into_iter().collect();
        if all {
            for s in self.store.of_user(&naming::subject_key(&caller.login)) {
                if !s.is_ending() && !targets.iter().any(|t| t.name_any() == s.name_any()) {
                    targets.push(s);
                }
            }
        }
        Ok(targets)
    }

    /// Revokes on every healthy member; one that cannot be reached is listed as failed and retried on its
    /// next heartbeats. So is a stale member, without a call: were it skipped, a member that missed a few
    /// heartbeats would keep the session until `valid_until` although it is back within minutes.
    async fn logout_members(
        &self,
        what: &SessionRef,
        rid: &str,
        members: Vec<Member>,
        down: Vec<Member>,
    ) -> Vec<ClusterResult> {
        let client = self.federation.client();
        let calls = members
            .iter()
            .map(|m| async move { (m, client.signout(m, what, rid).await) });
        let mut results = Vec::new();
        for (m, out) in join_all(calls).await {
            let name = &m.announcement.cluster_name;
            match out {
                Ok(()) => results.push(line(name, "ok", None)),
                Err(CallError::Status { status: 404, .. }) => {}
                Err(e) => {
                    self.federation.retry_later(name, what.clone());
                    results.push(line(name, "failed", Some(e.to_error_response())));
                }
            }
        }
        for m in down {
            let name = m.announcement.cluster_name;
            self.federation.retry_later(&name, what.clone());
            let e = FedError::Unreachable {
                cluster: name.clone(),
                detail: "it missed its heartbeats; the logout is delivered when it is back".into(),
            };
            results.push(line(&name, "failed", Some(ApiError::from(e).body())));
        }
        results.sort_by(|a, b| a.name.cmp(&b.name));
        results
    }
}

/// What a logout ends on a member: the caller's node's session, or all of the user's.
pub fn session_ref(caller: &Caller, all: bool) -> SessionRef {
    SessionRef {
        login_name: caller.login.clone(),
        node_id: if all {
            String::new()
        } else {
            caller.peer.node_stable_id.clone()
        },
        all,
    }
}

fn line(
    name: &str,
    status: &str,
    error: Option<crate::model::wire::ErrorResponse>,
) -> ClusterResult {
    ClusterResult {
        name: name.to_string(),
        status: status.to_string(),
        error,
        ..Default::default()
    }
}
