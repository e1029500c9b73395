//! Kubeconfigs: an entry per cluster where the caller has a ready session, this cluster's with a token
//! minted here, a member's with a token its member minted (or the exec plugin), in the legacy map shape or
//! as a loadable v1 document. Clusters that failed are named for the `Tka-Partial` header, since the
//! kubeconfig format has no room for errors.

use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;

use super::local::{Progress, TokenKind};
use super::relay::OnMember;
use super::{Caller, Service};
use crate::api::error::ApiError;
use crate::federation::client::CallError;
use crate::federation::plan::{self, Target};
use crate::federation::wire::TokenCall;
use crate::federation::{FedError, Member};
use crate::model::kubeconfig::{self, Auth, ClusterEntry, Naming};
use crate::model::rules::Rule;
use crate::model::wire::{ErrorResponse, TkaClusterInfo};
use crate::operator::crd::TkaSignin;

/// The document's shape: upstream's map-shaped JSON, or a kubeconfig `kubectl` loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Legacy,
    V1,
}

/// What a kubeconfig request asks for.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub format: Format,
    /// Users run `tka credential` (the exec plugin) instead of carrying a token.
    pub exec: bool,
    pub wait: Option<Duration>,
}

/// A kubeconfig and the clusters that could not be included.
pub struct Document {
    pub doc: Value,
    pub partial: Vec<String>,
}

impl Service {
    /// A kubeconfig of `entries` (the first one is the current context).
    pub fn document(&self, login: &str, entries: &[ClusterEntry], format: Format) -> Value {
        let naming = Naming {
            login: login.to_string(),
            user_prefix: self.settings.user_prefix.clone(),
            context_prefix: self.settings.context_prefix.clone(),
            tka_server: self.settings.self_url.clone(),
        };
        match format {
            Format::Legacy => kubeconfig::legacy(&naming, entries),
            Format::V1 => kubeconfig::v1(&naming, entries),
        }
    }

    /// This cluster's entry for a session.
    pub fn own_entry(&self, s: &TkaSignin, info: &TkaClusterInfo, auth: Auth) -> ClusterEntry {
        ClusterEntry {
            name: self.settings.cluster_name().to_string(),
            server_url: info.server_url.clone(),
            ca_data: info.ca_data.clone(),
            insecure_skip_tls_verify: info.insecure_skip_tls_verify,
            namespace: s.spec.namespaces.first().cloned(),
            auth,
            names: None,
        }
    }

    /// How a kubeconfig's user authenticates: the exec plugin, or a token minted now for the rest of the
    /// session.
    pub async fn auth_for(&self, s: &TkaSignin, exec: bool, rid: &str) -> Result<Auth, ApiError> {
        if exec {
            return Ok(self.exec_auth());
        }
        Ok(Auth::Token(
            self.mint(s, TokenKind::Kubeconfig, rid).await?.token,
        ))
    }

    fn exec_auth(&self) -> Auth {
        Auth::Exec {
            server: self.settings.self_url.clone(),
            auto_login: false,
        }
    }

    /// This cluster's entry, ready to use.
    pub async fn own_ready_entry(
        &self,
        s: &TkaSignin,
        exec: bool,
        rid: &str,
    ) -> Result<ClusterEntry, ApiError> {
        let info = self.cluster_info()?;
        let auth = self.auth_for(s, exec, rid).await?;
        Ok(self.own_entry(s, &info, auth))
    }

    /// A member's entry, named with the member's own prefixes; the token is minted by the member.
    pub async fn member_entry(
        &self,
        m: &Member,
        caller: &Caller,
        namespace: Option<String>,
        exec: bool,
        rid: &str,
    ) -> Result<ClusterEntry, CallError> {
        let a = &m.announcement;
        let auth = if exec {
            self.exec_auth()
        } else {
            match self
                .member_token(m, caller, TokenKind::Kubeconfig, rid)
                .await?
            {
                Ok(t) => Auth::Token(t.token),
                Err(status) => {
                    return Err(CallError::Status {
                        status,
                        body: ErrorResponse {
                            message: "the session is still being provisioned".into(),
                            code: "pending".into(),
                            ..Default::default()
                        },
                    });
                }
            }
        };
        Ok(ClusterEntry {
            name: a.cluster_name.clone(),
            server_url: a.api_endpoint.clone(),
            ca_data: a.ca_data.clone(),
            insecure_skip_tls_verify: a.insecure_skip_tls_verify,
            namespace,
            auth,
            names: Some((
                format!("{}{}", a.user_prefix, caller.login),
                format!("{}{}", a.context_prefix, caller.login),
            )),
        })
    }

    /// A token of `kind` for the caller's federated session, minted by member `m`; the answer's status
    /// when the member has none yet (still provisioning).
    pub async fn member_token(
        &self,
        m: &Member,
        caller: &Caller,
        kind: TokenKind,
        rid: &str,
    ) -> Result<Result<crate::federation::wire::TokenAnswer, u16>, CallError> {
        let call = TokenCall {
            login_name: caller.login.clone(),
            node_id: caller.peer.node_stable_id.clone(),
            kind: kind.as_str().into(),
        };
        self.federation.client().token(m, &call, rid).await
    }

    /// `GET /kubeconfig`: this cluster's session, and with members every member session of the caller.
    pub async fn kubeconfig(
        &self,
        caller: &Caller,
        req: Request,
        rid: &str,
    ) -> Result<Progress<Document>, ApiError> {
        if self.federation.has_members() {
            return self
                .federated_kubeconfig(caller, req, rid)
                .await
                .map(Progress::Ready);
        }
        self.direct_use()?;
        self.grant(caller)?;
        let s = match self.ready(self.lookup(caller).await?, req.wait).await? {
            Progress::Ready(s) => s,
            Progress::Pending => return Ok(Progress::Pending),
        };
        let s = self.holds_now(caller, s).await?;
        let entry = self.own_ready_entry(&s, req.exec, rid).await?;
        Ok(Progress::Ready(Document {
            doc: self.document(&caller.login, &[entry], req.format),
            partial: Vec::new(),
        }))
    }

    async fn federated_kubeconfig(
        &self,
        caller: &Caller,
        req: Request,
        rid: &str,
    ) -> Result<Document, ApiError> {
        let rules = self.rules(caller)?;
        let members = self
            .federation
            .healthy_members()
            .into_iter()
            .map(|m| (m, ()))
            .collect();
        let permitted = self.granted(&rules, members);
        let mut partial = Vec::new();
        let mut entries = Vec::new();
        if self.grant(caller).is_ok() {
            let own = match self.lookup(caller).await {
                Ok(s) => self.ready(s, req.wait).await,
                Err(e) => Err(e),
            };
            let own = match own {
                Ok(Progress::Ready(s)) => self.holds_now(caller, s).await.map(Progress::Ready),
                other => other,
            };
            match own {
                Ok(Progress::Ready(s)) => {
                    entries.push(self.own_ready_entry(&s, req.exec, rid).await?)
                }
                Err(e) if e.status == http::StatusCode::UNAUTHORIZED => {}
                _ => partial.push(self.settings.cluster_name().to_string()),
            }
        }
        // Each member's session is checked against the grant as it is now before its member mints; exec
        // mode mints nothing now and includes a member that holds a ready session.
        let lookups = permitted.iter().map(|(m, (), _)| async {
            let s = match self.on_member(m, caller, &rules, rid).await? {
                OnMember::Holds(s) if s.provisioned => s,
                OnMember::Holds(_) | OnMember::NotSignedIn | OnMember::Ended(_) => return Ok(None),
            };
            let ns = s.namespaces.first().cloned();
            match self.member_entry(m, caller, ns, req.exec, rid).await {
                Ok(e) => Ok(Some(e)),
                Err(CallError::Status { status: 401, .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        for ((m, (), _), r) in permitted.iter().zip(join_all(lookups).await) {
            match r {
                Ok(Some(e)) => entries.push(e),
                Ok(None) => {}
                Err(_) => partial.push(m.announcement.cluster_name.clone()),
            }
        }
        if entries.is_empty() {
            if partial.is_empty() {
                return Err(ApiError::not_signed_in(http::StatusCode::UNAUTHORIZED));
            }
            return Err(FedError::AllFailed(Vec::new()).into());
        }
        Ok(Document {
            doc: self.document(&caller.login, &entries, req.format),
            partial,
        })
    }

    /// The members (each with data of the caller's) whose cluster the caller's grant names, each with the
    /// rule that would apply there (`None` when no rule can be selected, e.g. the member does not allow the
    /// role).
    pub fn granted<T>(
        &self,
        rules: &[Rule],
        members: Vec<(Member, T)>,
    ) -> Vec<(Member, T, Option<Rule>)> {
        let targets: Vec<Target> = members.iter().map(|(m, _)| m.target()).collect();
        let mut planned = plan::plan(rules, &self.settings.auth.policy, &targets, None, &[]);
        let own = self.settings.cluster_name();
        members
            .into_iter()
            .filter(|(m, _)| {
                rules
                    .iter()
                    .any(|r| r.applies_to(&m.announcement.cluster_name, own))
            })
            .map(|(m, data)| {
                let rule = planned
                    .iter()
                    .position(|(n, _)| *n == m.announcement.cluster_name)
                    .and_then(|i| planned.swap_remove(i).1.ok());
                (m, data, rule)
            })
            .collect()
    }
}
