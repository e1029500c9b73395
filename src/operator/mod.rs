//! The operator: turns `TkaSignin` objects into a ServiceAccount, a session Secret and RBAC bindings, expires
//! them on time, and mints their tokens. It knows Kubernetes and nothing of HTTP or the tailnet.
//!
//! Layout follows fetch → validate → build → apply → status: [`signin`] (what an object says), [`objects`]
//! and [`status`] (pure builders), [`provision`] and [`cleanup`] (apply), [`reconcile`] (one pass),
//! [`controller`] (the kube-runtime wiring) and [`triggers`] (which changes need a reconcile), [`sweep`]
//! (garbage), [`token`] and [`expiry`] (tokens), [`cluster_info`] (the endpoint users get), [`rbac`] (the
//! server's own permissions), [`backoff`] (when to try the apiserver again).

pub mod backoff;
pub mod cleanup;
pub mod cluster_info;
pub mod context;
pub mod controller;
pub mod crd;
pub mod ensure;
pub mod error;
pub mod expiry;
pub mod objects;
pub mod provision;
pub mod rbac;
pub mod reconcile;
pub mod signin;
pub mod status;
pub mod sweep;
pub mod token;
pub mod triggers;

pub use crd::{TkaSignin, TkaSigninSpec, TkaSigninStatus};
pub use error::Error;
pub use signin::{OriginKind, SessionState};
