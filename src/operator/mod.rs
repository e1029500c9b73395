//! The operator: turns `TkaSignin` objects into a ServiceAccount, a session Secret and RBAC bindings, expires
//! them on time and mints tokens (spec: kubernetes.md).
//!
//! Layout follows fetch → validate → build (pure, [`objects`]) → apply → status ([`reconcile`]).

pub mod cleanup;
pub mod controller;
pub mod crd;
pub mod error;
pub mod leader;
pub mod objects;
pub mod provision;
pub mod rbac;
pub mod reconcile;
pub mod sweep;
pub mod token;

pub use crd::{TkaSignin, TkaSigninSpec, TkaSigninStatus};
pub use error::Error;
