//! `tka-server doctor`'s RBAC probes: SelfSubjectAccessReviews for every rule of the generated RBAC, and
//! `bind` on the grantable roles and on roles it must not bind. Asks as the server's own credentials.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Client;
use kube::api::{Api, PostParams};

use super::server::{self as checks, BindFacts, Permission};
use super::{Report, bounded};
use crate::config;
use crate::operator::rbac::GrantableRoles;

/// The server's own RBAC: every permission of the generated RBAC, then `bind` on the grantable roles. An
/// empty `operator.allowedRoles` is allowed (the RBAC's `bind` decides); blank or wildcard entries are not.
pub(super) async fn rbac(client: &Client, op: &config::OperatorConfig, report: &mut Report) {
    let roles = match op.allowed_roles.as_slice() {
        [] => None,
        list => match GrantableRoles::new(list) {
            Ok(r) => Some(r),
            Err(problem) => return report.push(checks::allowed_roles(&problem)),
        },
    };
    let perms = checks::required_permissions(&op.namespace, roles.as_ref());
    let results = futures::future::join_all(perms.iter().map(|p| review(client, p))).await;
    let results: Vec<(Permission, Result<bool, String>)> = perms.into_iter().zip(results).collect();
    report.push(checks::rbac(&results, &op.namespace, &op.allowed_roles));
    let facts = bind(client, &op.allowed_roles).await;
    report.push(match &roles {
        Some(r) => checks::bind_roles(&facts, &op.namespace, r.as_slice()),
        None => checks::bind_unlisted(&facts, &op.namespace),
    });
}

/// One SelfSubjectAccessReview.
async fn access(client: &Client, attrs: ResourceAttributes) -> Result<bool, String> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(attrs),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    bounded(async {
        api.create(&PostParams::default(), &review)
            .await
            .map(|r| r.status.is_some_and(|s| s.allowed))
            .map_err(|e| e.to_string())
    })
    .await
}

fn attrs(
    verb: &str,
    group: &str,
    resource: &str,
    sub: &str,
    name: &str,
    ns: &str,
) -> ResourceAttributes {
    let opt = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    ResourceAttributes {
        verb: opt(verb),
        group: Some(group.to_string()),
        resource: opt(resource),
        subresource: opt(sub),
        name: opt(name),
        namespace: opt(ns),
        ..Default::default()
    }
}

async fn review(client: &Client, p: &Permission) -> Result<bool, String> {
    let a = attrs(
        &p.verb,
        &p.group,
        &p.resource,
        &p.subresource,
        &p.name,
        &p.namespace,
    );
    access(client, a).await
}

/// `bind` on the allowed roles, and on roles outside the list (a made-up name is bound only by a wildcard).
async fn bind(client: &Client, allowed: &[String]) -> BindFacts {
    const RBAC: &str = "rbac.authorization.k8s.io";
    let bind_on = |role: String| async move {
        let r = access(client, attrs("bind", RBAC, "clusterroles", "", &role, "")).await;
        (role, r)
    };
    let others: Vec<String> = [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "tka-doctor-not-allowed",
    ]
    .iter()
    .map(|s| s.to_string())
    .filter(|r| !allowed.contains(r))
    .collect();
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let mut absent = Vec::new();
    for role in allowed {
        if let Ok(None) =
            bounded(async { roles.get_opt(role).await.map_err(|e| e.to_string()) }).await
        {
            absent.push(role.clone());
        }
    }
    BindFacts {
        allowed: futures::future::join_all(allowed.iter().cloned().map(bind_on)).await,
        others: futures::future::join_all(others.into_iter().map(bind_on)).await,
        escalate: access(client, attrs("escalate", RBAC, "clusterroles", "", "", "")).await,
        absent,
    }
}
