//! Grant revalidation (spec: kubernetes.md §4): every `operator.revalidateInterval` each local session's
//! node is looked up again and the pipeline (steps 3–9) re-run for its role. A session whose node is gone,
//! whose login name changed or whose grant no longer selects its role is ended (`grant_revoked`). An
//! identity-backend error never revokes: an outage must not log everybody out.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use jiff::Timestamp;
use kube::ResourceExt;

use super::App;
use super::auth;
use crate::operator::crd::TkaSignin;
use crate::operator::reconcile::is_live;

/// Why a session must end, or `None` to keep it.
pub async fn verdict(app: &App, s: &TkaSignin) -> Option<&'static str> {
    let ip: IpAddr = s.spec.node_ip.parse().ok()?;
    let peer = match app.identity.whois(SocketAddr::new(ip, 0)).await {
        Ok(Some(p)) => p,
        Ok(None) => return Some("node_gone"),
        Err(_) => return None,
    };
    if peer.node_stable_id != s.spec.node_id {
        return Some("node_gone");
    }
    let caller = match auth::identify(
        app.identity.as_ref(),
        SocketAddr::new(ip, 0),
        &HeaderMap::new(),
        &app.settings.auth,
    )
    .await
    {
        Ok(c) => c,
        Err(e) if e.code == "identity_unavailable" => return None,
        Err(_) => return Some("identity_changed"),
    };
    if caller.login != s.spec.username {
        return Some("identity_changed");
    }
    match auth::evaluate(&caller, &app.settings.auth, Some(&s.spec.role)) {
        Ok(rule) if rule.namespaces == s.spec.namespaces => None,
        _ => Some("grant_changed"),
    }
}

/// Runs until the task is dropped.
pub async fn run(app: Arc<App>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let now = Timestamp::now();
        for s in app.sessions.all().into_iter().filter(|s| is_live(s, now)) {
            if s.spec.origin.as_ref().is_some_and(|o| o.kind != "local") {
                continue;
            }
            if let Some(reason) = verdict(&app, &s).await {
                tracing::info!(audit = true, event = "revoked", user = %s.spec.username, node = %s.spec.node, role = %s.spec.role,
                    session = %s.name_any(), reason, "grant revoked");
                match app.sessions.delete(&s).await {
                    Ok(()) => app
                        .metrics
                        .revocations
                        .with_label_values(&["grant_revoked"])
                        .inc(),
                    Err(e) => {
                        tracing::warn!(error = %e, "revalidation: deleting the session failed")
                    }
                }
            }
        }
        // Federated sessions are revalidated here on the primary, where the grants are evaluated.
        if !app.federation.is_member() {
            super::handlers::revalidate_members(&app).await;
        }
    }
}
