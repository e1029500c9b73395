//! tka: Tailscale Kubernetes Auth.
//!
//! Data flows one way: a request arrives on the tailnet listener ([`api`]), the caller is identified
//! ([`identity`]), authorized against its capability grant ([`model::rules`]), its session is written as a
//! `TkaSignin` that the [`operator`] turns into a ServiceAccount, a session Secret and bindings, and finally
//! a short-lived token is minted and handed out as a kubeconfig ([`model::kubeconfig`]).

pub mod api;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod federation;
pub mod identity;
pub mod model;
pub mod operator;
pub mod server;
pub mod telemetry;

/// Git commit the binary was built from (`TKA_BUILD_COMMIT` at build time), or `unknown`.
pub const BUILD_COMMIT: &str = match option_env!("TKA_BUILD_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// Build date (`TKA_BUILD_DATE` at build time), or `unknown`.
pub const BUILD_DATE: &str = match option_env!("TKA_BUILD_DATE") {
    Some(d) => d,
    None => "unknown",
};
