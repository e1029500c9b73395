//! The federation layer's error type. Each variant is one stable `code` (also the metric label); the API
//! layer maps it to an HTTP status and advice (`api::error`).

use crate::model::wire::ClusterResult;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FedError {
    /// A heartbeat from a node that holds neither a member tag nor the member capability for the name.
    #[error("node {node} may not join this federation as cluster {cluster:?}")]
    MemberNotAllowed { node: String, cluster: String },
    /// Another healthy node already holds the announced cluster name.
    #[error("cluster name {cluster:?} is held by another node ({holder})")]
    ClusterNameConflict { cluster: String, holder: String },
    /// A member's kubeconfig names (prefixes) would equal the primary's or another member's.
    #[error("cluster {cluster:?} announces {what}, which {holder} already uses")]
    NamesConflict {
        cluster: String,
        what: String,
        holder: String,
    },
    /// The pins (who the primary is, who holds which cluster name) cannot be read or written now.
    #[error("the federation's pinned identities cannot be read or written: {0}")]
    PinsUnavailable(String),
    /// A heartbeat with a missing or malformed field.
    #[error("invalid heartbeat: {0}")]
    InvalidHeartbeat(String),
    /// A federation call on a member from a node other than its configured primary.
    #[error("only the primary ({primary}) may call this member; {caller} may not")]
    NotPrimary { primary: String, caller: String },
    /// A federation endpoint reached on a server not in that role.
    #[error("this server is not a federation {0}")]
    WrongRole(&'static str),
    /// A cluster name that is neither this server's nor a healthy member's.
    #[error("no cluster {0:?} in this federation")]
    UnknownCluster(String),
    /// A member could not be reached or answered nonsense.
    #[error("cluster {cluster} is unreachable: {detail}")]
    Unreachable { cluster: String, detail: String },
    /// Every permitted cluster failed.
    #[error("every cluster failed: {}", summary(.0))]
    AllFailed(Vec<ClusterResult>),
    /// A request body that does not decode.
    #[error("invalid request body: {0}")]
    InvalidBody(String),
}

fn summary(r: &[ClusterResult]) -> String {
    r.iter()
        .map(|c| {
            let why = c.error.as_ref().map(|e| e.message.as_str()).unwrap_or("");
            format!("{}: {why}", c.name)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl FedError {
    pub fn code(&self) -> &'static str {
        match self {
            FedError::MemberNotAllowed { .. } => "member_not_allowed",
            FedError::ClusterNameConflict { .. } => "cluster_name_conflict",
            FedError::NamesConflict { .. } => "kubeconfig_names_conflict",
            FedError::PinsUnavailable(_) => "federation_state_unavailable",
            FedError::InvalidHeartbeat(_) => "invalid_heartbeat",
            FedError::NotPrimary { .. } => "not_primary",
            FedError::WrongRole(_) => "not_federated",
            FedError::UnknownCluster(_) => "unknown_cluster",
            FedError::Unreachable { .. } => "member_unreachable",
            FedError::AllFailed(_) => "federation_failed",
            FedError::InvalidBody(_) => "invalid_body",
        }
    }

    pub fn advice(&self) -> String {
        match self {
            FedError::MemberNotAllowed { .. } => "give the member's node a tag from federation.memberTags, or the federation capability for this cluster name".into(),
            FedError::ClusterNameConflict { .. } => "give every cluster of the federation its own operator.clusterName".into(),
            FedError::NamesConflict { .. } => "give every cluster of the federation its own operator.userPrefix and operator.contextPrefix".into(),
            FedError::PinsUnavailable(_) => "try again in a moment; the server cannot reach its Kubernetes API".into(),
            FedError::InvalidHeartbeat(_) => "check the member's clusterInfo (apiEndpoint) and operator settings".into(),
            FedError::NotPrimary { .. } => "only the server named in federation.loginServer may call a member".into(),
            FedError::WrongRole(_) => "check federation.loginServer on both servers".into(),
            FedError::UnknownCluster(_) => "run `tka get clusters` to list the clusters you can use".into(),
            FedError::Unreachable { .. } => "try again later; the member cluster's tka-server may be down".into(),
            FedError::AllFailed(_) => "see the per-cluster errors; try again later or ask the cluster admins".into(),
            FedError::InvalidBody(_) => "send the JSON body the federation API defines (see /openapi.json)".into(),
        }
    }
}
