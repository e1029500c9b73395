//! Grant revalidation: every `operator.revalidateInterval` each live session's node is looked up again and
//! the grant re-checked for what the session holds. A session whose node is gone, whose user changed or
//! whose grant no longer gives its role and scope is ended (`grant_revoked`). An identity-backend error
//! never revokes: an outage must not log everybody out. The primary does the same for its members'
//! federated sessions, where the grants are evaluated.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;

use super::Service;
use super::authorize::Recheck;
use crate::federation::Member;
use crate::federation::client::SessionQuery;
use crate::federation::wire::{MemberSession, SessionRef};
use crate::model::rules::{self, Policy, Rule};

impl Service {
    /// The rule that still gives a session of (login, node) holding `role`/`namespaces` on `cluster`
    /// (under `policy`), or why the session must end; `Ok(None)` keeps it unchecked (identity backend down).
    async fn verdict(
        &self,
        held: &Held<'_>,
        cluster: &str,
        policy: &Policy,
    ) -> Result<Option<Rule>, &'static str> {
        let caller = match self.recheck(held.node_ip, held.node_id, held.login).await {
            Recheck::Same(c) => c,
            Recheck::Unknown => return Ok(None),
            Recheck::NodeGone => return Err("node_gone"),
            Recheck::IdentityChanged => return Err("identity_changed"),
        };
        let Ok(all) = super::authorize::rules_of(&caller, &self.settings.auth.cap_name) else {
            return Err("grant_changed");
        };
        rules::verdict(&all, policy, cluster, held.role, held.namespaces)
            .map(Some)
            .map_err(|_| "grant_changed")
    }

    /// One pass over this cluster's local sessions.
    pub async fn revalidate_local(&self) {
        let now = Timestamp::now();
        let policy = self.settings.auth.policy.clone();
        for s in self.store.all().into_iter().filter(|s| s.is_live(now)) {
            if s.is_federated() {
                continue;
            }
            let held = Held {
                login: &s.spec.username,
                node_id: &s.spec.node_id,
                node_ip: &s.spec.node_ip,
                role: &s.spec.role,
                namespaces: &s.spec.namespaces,
            };
            let reason = match self.verdict(&held, &policy.cluster, &policy).await {
                Ok(None) => continue,
                Ok(Some(rule)) => {
                    // Ends it (logged and counted there) only when a shortened period has run out.
                    if let Err(e) = self.fit_period(s, &rule).await {
                        tracing::debug!(
                            code = e.code,
                            "revalidation: fitting the session's period"
                        );
                    }
                    continue;
                }
                Err(reason) => reason,
            };
            tracing::info!(audit = true, event = "revoked", user = %s.spec.username, node = %s.spec.node, role = %s.spec.role,
                session = %s.name_any(), reason, "grant revoked");
            match self.store.delete(&s).await {
                Ok(()) => self.count_revoked(),
                Err(e) => tracing::warn!(error = %e, "revalidation: deleting the session failed"),
            }
        }
    }

    /// One pass over the federated sessions of every healthy member (primary only). An unreachable member
    /// revokes nothing now.
    pub async fn revalidate_members(&self) {
        let rid = hex::encode(rand::random::<[u8; 8]>());
        let client = self.federation.client();
        for m in self.federation.healthy_members() {
            let Ok(list) = client
                .sessions(&m, SessionQuery::Federated, "revalidate", &rid)
                .await
            else {
                continue;
            };
            for s in list {
                let Some(reason) = self.member_verdict(&m, &s).await else {
                    continue;
                };
                let r = SessionRef {
                    login_name: s.login_name.clone(),
                    node_id: s.node_id.clone(),
                    all: false,
                };
                if client.signout(&m, &r, &rid).await.is_ok() {
                    self.count_revoked();
                    tracing::info!(audit = true, event = "revoked", user = %s.login_name, cluster = %m.announcement.cluster_name,
                        role = %s.role, reason, "federated grant revoked");
                }
            }
        }
    }

    /// The verdict for a member's session: evaluated here, under the member's announced allow-list. A
    /// shortened period ends it once the new period has run out (within one revalidation interval).
    async fn member_verdict(&self, m: &Member, s: &MemberSession) -> Option<&'static str> {
        let policy = Policy {
            cluster: self.settings.cluster_name().to_string(),
            allowed_roles: m.announcement.allowed_roles.clone(),
            ..Policy::default()
        };
        let held = Held {
            login: &s.login_name,
            node_id: &s.node_id,
            node_ip: &s.node_ip,
            role: &s.role,
            namespaces: &s.namespaces,
        };
        match self
            .verdict(&held, &m.announcement.cluster_name, &policy)
            .await
        {
            Ok(Some(rule)) if s.period_ran_out(rule.period.as_std(), Timestamp::now()) => {
                Some("period_shortened")
            }
            Ok(_) => None,
            Err(reason) => Some(reason),
        }
    }

    fn count_revoked(&self) {
        self.metrics
            .revocations
            .with_label_values(&["grant_revoked"])
            .inc();
    }
}

/// What a session holds, as revalidation checks it.
struct Held<'a> {
    login: &'a str,
    node_id: &'a str,
    node_ip: &'a str,
    role: &'a str,
    namespaces: &'a [String],
}

/// Runs until the task is dropped.
pub async fn run(service: Arc<Service>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        service.revalidate_local().await;
        if !service.federation.is_member() {
            service.revalidate_members().await;
        }
    }
}
