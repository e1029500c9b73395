//! Records the latest token expiry of each session in `status.token_expires_at`, so `kubectl get signin`
//! shows how long handed-out tokens live. Tokens are minted by the API; the status write is the operator's,
//! as every status write is: it starts with leadership, beside the controller, under the controller's field
//! manager (a merge patch of this one field, which the controller's own Apply never lists).

use jiff::Timestamp;
use kube::{Api, Client};

use super::context::FIELD_MANAGER;
use super::crd::TkaSignin;

/// The API reports every minted token here, in process; at most one status write per session per 5 s, so a
/// burst of `kubectl` refreshes costs one write.
#[derive(Clone)]
pub struct ExpiryNotifier(tokio::sync::mpsc::UnboundedSender<(String, Timestamp)>);

impl ExpiryNotifier {
    pub fn notify(&self, session: &str, expires_at: Timestamp) {
        let _ = self.0.send((session.to_string(), expires_at));
    }

    /// Starts the writer; it ends when every notifier is dropped.
    pub fn start(client: Client, namespace: &str) -> ExpiryNotifier {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Timestamp)>();
        let api: Api<TkaSignin> = Api::namespaced(client, namespace);
        tokio::spawn(async move {
            let mut pending: std::collections::BTreeMap<String, Timestamp> = Default::default();
            loop {
                let flush = tokio::time::sleep(std::time::Duration::from_secs(5));
                tokio::pin!(flush);
                loop {
                    tokio::select! {
                        next = rx.recv() => match next {
                            Some((session, at)) => {
                                let e = pending.entry(session).or_insert(at);
                                *e = (*e).max(at);
                            }
                            None if pending.is_empty() => return,
                            None => break,
                        },
                        _ = &mut flush => break,
                    }
                }
                for (session, at) in std::mem::take(&mut pending) {
                    // A merge patch (an Update, field manager tka-controller): the controller's own Apply of
                    // status never lists this field, so neither write removes the other's.
                    let patch = serde_json::json!({ "status": { "token_expires_at": crate::model::wire::rfc3339(at) } });
                    let pp = kube::api::PatchParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..Default::default()
                    };
                    if let Err(e) = api
                        .patch_status(&session, &pp, &kube::api::Patch::Merge(&patch))
                        .await
                    {
                        tracing::debug!(error = %e, %session, "recording the token expiry failed");
                    }
                }
                if rx.is_closed() && rx.is_empty() {
                    return;
                }
            }
        });
        ExpiryNotifier(tx)
    }
}
