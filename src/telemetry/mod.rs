//! Metrics, health endpoints and logging.

pub mod health;
pub mod kube_api;
pub mod logging;
pub mod metrics;
pub mod otel;
pub mod readiness;

pub use metrics::Metrics;
