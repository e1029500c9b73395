//! Logging setup: JSON or text (`log.format`), level from `log.level`/`debug`, `RUST_LOG` overrides; the
//! OpenTelemetry layer joins when `otel.endpoint` is set (spec: observability.md §4–5).

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use super::otel::Otel;

/// The subscriber: logs to stderr (`format` is `auto`, `json` or `text`) plus the span exporter if any.
/// Tests install it per thread with `tracing::subscriber::set_default`; [`init`] installs it globally.
pub fn subscriber(
    level: &str,
    format: &str,
    otel: Option<&Otel>,
) -> impl tracing::Subscriber + Send + Sync + use<> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},kube_runtime=warn,hyper=warn")));
    let json = match format {
        "json" => true,
        "text" => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if json {
        fmt.json().flatten_event(true).with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    // Spans are exported whatever the log level: the exporter filters by target on its own.
    Registry::default().with(logs).with(otel.map(|o| o.layer()))
}

/// Installs [`subscriber`] globally (once per process; later calls are no-ops).
pub fn init(level: &str, format: &str, otel: Option<&Otel>) {
    let _ = tracing::subscriber::set_global_default(subscriber(level, format, otel));
}
