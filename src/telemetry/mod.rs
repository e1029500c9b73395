//! Metrics, health endpoints and logging (spec: observability.md).

pub mod health;
pub mod logging;
pub mod metrics;

pub use metrics::Metrics;
