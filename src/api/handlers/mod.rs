//! The routes. Every handler is parse → identify → one service call → render, and none imports another:
//! what they share lives in `params`, `render` and the service.

mod federation;
mod info;
mod session;
mod tokens;

pub use federation::{create_session, delete_sessions, heartbeat, list_sessions, tokens};
pub use info::{cluster_info, clusters, whoami};
pub use session::{get_login, login, logout};
pub use tokens::{exec_credential, kubeconfig};

use std::sync::Arc;

/// The router's state.
type Svc = axum::extract::State<Arc<crate::api::service::Service>>;
