//! Before the primary relays a token request to a member, it checks the member's session against the
//! caller's grant as it is now, exactly as a local mint is checked: a grant narrowed from `admin` to `view`
//! must not keep yielding admin tokens on a member until the next revalidation (or forever, with
//! revalidation off). A session that no longer holds is ended on the member.

use super::{Caller, Service};
use crate::federation::Member;
use crate::federation::client::{CallError, SessionQuery};
use crate::federation::wire::{MemberSession, SessionRef};
use crate::model::rules::{self, Policy, Reject, Rule};

/// The caller's session on a member, as the grant judges it now.
pub enum OnMember {
    /// A session the grant still gives (ready or still provisioning).
    Holds(MemberSession),
    NotSignedIn,
    /// The grant no longer gives it; it was ended on the member.
    Ended(Reject),
}

impl Service {
    /// Looks the caller's session up on member `m` and checks it with `model::rules::verdict` under the
    /// member's announced allow-list; ends it there when the grant no longer holds.
    pub async fn on_member(
        &self,
        m: &Member,
        caller: &Caller,
        rules: &[Rule],
        rid: &str,
    ) -> Result<OnMember, CallError> {
        let query = SessionQuery::Of {
            login: &caller.login,
            node_id: &caller.peer.node_stable_id,
        };
        let client = self.federation.client();
        let Some(s) = client
            .sessions(m, query, "token", rid)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(OnMember::NotSignedIn);
        };
        let policy = Policy {
            cluster: self.settings.cluster_name().to_string(),
            allowed_roles: m.announcement.allowed_roles.clone(),
            ..Policy::default()
        };
        let cluster = &m.announcement.cluster_name;
        let rejected = match rules::verdict(rules, &policy, cluster, &s.role, &s.namespaces) {
            Ok(rule) if s.period_ran_out(rule.period.as_std(), jiff::Timestamp::now()) => {
                Reject::PeriodShortened {
                    period: rule.period,
                }
            }
            Ok(_) => return Ok(OnMember::Holds(s)),
            Err(rejected) => rejected,
        };
        let r = SessionRef {
            login_name: caller.login.clone(),
            node_id: caller.peer.node_stable_id.clone(),
            all: false,
        };
        if client.signout(m, &r, rid).await.is_ok() {
            self.metrics
                .revocations
                .with_label_values(&["grant_revoked"])
                .inc();
            tracing::info!(audit = true, event = "revoked", user = %caller.login, cluster = %cluster, role = %s.role,
                reason = rejected.code(), request_id = %rid, "federated session ended: the grant no longer gives it");
        }
        Ok(OnMember::Ended(rejected))
    }
}
