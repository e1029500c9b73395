//! OpenTelemetry trace export over OTLP.
//!
//! Decisions:
//! - The protocol is `otel.protocol` (`grpc` by default, or `http/protobuf`); it is never guessed from the port
//!   (upstream exported nothing unless the endpoint ended in 4317/4318).
//! - TLS: an `https://` endpoint always uses TLS, an `http://` one never does; a bare `host:port` uses TLS
//!   unless `otel.insecure` (the default, as upstream).
//! - Exports run on a dedicated one-thread runtime behind the SDK's batch processor: ending a span only
//!   queues it (bounded queue, dropped when full), so a slow or dead collector can neither block nor slow a
//!   request, and the exporter's own HTTP/2 stack never competes with the API for the main runtime.
//! - Only spans of the `tka` crate are exported ([`layer`] filters by target), so the exporter's own
//!   hyper/tonic spans cannot feed back into the export.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;

use crate::config::{OtelConfig, OtelProtocol};

/// Upper bound of one export call; the batch processor drops the batch after it.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Spans waiting for export; beyond this they are dropped, never waited for.
const MAX_QUEUE: usize = 2048;
/// Export failures are logged at most this often.
const ERROR_LOG_INTERVAL_SECS: u64 = 60;

/// Where and how to export, resolved from `otel.*`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Full URL: gRPC endpoint, or the HTTP traces URL (`…/v1/traces`).
    pub url: String,
    pub tls: bool,
    pub protocol: OtelProtocol,
}

/// Pure: `otel.endpoint` + `otel.insecure` + `otel.protocol` → [`Target`]; `None` when export is off.
pub fn target(cfg: &OtelConfig) -> Option<Target> {
    let endpoint = cfg.endpoint.trim().trim_end_matches('/');
    if endpoint.is_empty() {
        return None;
    }
    let (tls, base) = if let Some(rest) = endpoint.strip_prefix("https://") {
        (true, format!("https://{rest}"))
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        (false, format!("http://{rest}"))
    } else if cfg.insecure {
        (false, format!("http://{endpoint}"))
    } else {
        (true, format!("https://{endpoint}"))
    };
    let url = match cfg.protocol {
        OtelProtocol::Grpc => base,
        OtelProtocol::HttpProtobuf => {
            // A URL with a path is taken as the traces URL itself; a bare authority gets the OTLP path.
            let authority_only = base.splitn(4, '/').nth(3).is_none();
            if authority_only {
                format!("{base}/v1/traces")
            } else {
                base
            }
        }
    };
    Some(Target {
        url,
        tls,
        protocol: cfg.protocol,
    })
}

/// A running exporter: the tracer provider and the runtime its exports run on. Dropping it without
/// [`Otel::shutdown`] loses the spans still queued.
pub struct Otel {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Otel {
    /// Builds the exporter for `cfg`; `Ok(None)` when `otel.endpoint` is empty. Works with or without a
    /// current Tokio runtime.
    pub fn start(cfg: &OtelConfig, namespace: &str) -> Result<Option<Otel>, String> {
        let Some(target) = target(cfg) else {
            return Ok(None);
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otel-export")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the trace export runtime: {e}"))?;
        let exporter = {
            let _in_runtime = runtime.enter(); // tonic's channel and hyper's pool bind to this runtime
            exporter(&target)?
        };
        let exporter = OnRuntime {
            inner: Arc::new(exporter),
            runtime: runtime.handle().clone(),
            last_error_log: AtomicU64::new(0),
            url: target.url.clone(),
        };
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(MAX_QUEUE)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sample_ratio,
            ))))
            .with_resource(resource(cfg, namespace))
            .build();
        tracing::info!(endpoint = %target.url, protocol = %cfg.protocol, tls = target.tls, "exporting traces over OTLP");
        Ok(Some(Otel {
            provider,
            runtime: Some(runtime),
        }))
    }

    /// The `tracing` layer feeding this exporter; only `tka` spans pass.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("tka"))
            .with_filter(Targets::new().with_target("tka", tracing::Level::TRACE))
    }

    /// Flushes queued spans (bounded by the export timeout) and stops the export runtime. Blocking: call
    /// it outside async code, as the last step of shutdown.
    pub fn shutdown(mut self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::debug!(error = %e, "trace export shutdown");
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Otel {
    fn drop(&mut self) {
        // Never block (or panic by dropping a runtime) inside async code.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn resource(cfg: &OtelConfig, namespace: &str) -> Resource {
    // OTEL_SERVICE_NAME applies when the configuration keeps the default name.
    let service = match std::env::var("OTEL_SERVICE_NAME") {
        Ok(v) if !v.is_empty() && cfg.service_name == OtelConfig::default().service_name => v,
        _ => cfg.service_name.clone(),
    };
    let mut attrs = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    if let Ok(pod) = std::env::var("POD_NAME") {
        attrs.push(KeyValue::new("k8s.pod.name", pod));
    }
    let ns = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| namespace.to_string());
    attrs.push(KeyValue::new("k8s.namespace.name", ns));
    Resource::builder()
        .with_service_name(service)
        .with_attributes(attrs)
        .build()
}

fn exporter(t: &Target) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let built = match t.protocol {
        OtelProtocol::Grpc => {
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&t.url)
                .with_timeout(EXPORT_TIMEOUT);
            if t.tls {
                b = b.with_tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots());
            }
            b.build()
        }
        OtelProtocol::HttpProtobuf => {
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .build();
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(opentelemetry_http::hyper::HyperClient::new(
                    https,
                    EXPORT_TIMEOUT,
                    None,
                ))
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(&t.url)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
        }
    };
    built.map_err(|e| format!("otel.endpoint {}: {e}", t.url))
}

/// Runs each export on the export runtime; the SDK's batch thread only waits for the result.
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
    last_error_log: AtomicU64,
    url: String,
}

impl SpanExporter for OnRuntime {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = self.inner.clone();
        let result = match self
            .runtime
            .spawn(async move { inner.export(batch).await })
            .await
        {
            Ok(r) => r,
            Err(e) => Err(OTelSdkError::InternalFailure(e.to_string())),
        };
        if let Err(e) = &result {
            self.log_rarely(e);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called while the provider is built, before any export holds a clone.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

impl OnRuntime {
    fn log_rarely(&self, e: &OTelSdkError) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_error_log.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= ERROR_LOG_INTERVAL_SECS
            && self
                .last_error_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(endpoint = %self.url, error = %e, "trace export failed (logged at most once a minute; requests are not affected)");
        }
    }
}

/// W3C trace context of an incoming request (`traceparent`, `tracestate`).
pub fn extract(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Adds the current span's W3C trace context to outgoing request headers (federation calls).
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(endpoint: &str, insecure: bool, protocol: OtelProtocol) -> OtelConfig {
        OtelConfig {
            endpoint: endpoint.into(),
            insecure,
            protocol,
            ..OtelConfig::default()
        }
    }

    #[test]
    fn targets_follow_the_protocol_key_never_the_port() {
        use OtelProtocol::*;
        assert_eq!(target(&cfg("", true, Grpc)), None);
        let t = |e, i, p| target(&cfg(e, i, p)).unwrap();
        // Port 4318 with the default protocol is still gRPC (upstream guessed HTTP from the port).
        assert_eq!(
            t("collector:4318", true, Grpc),
            Target {
                url: "http://collector:4318".into(),
                tls: false,
                protocol: Grpc
            }
        );
        // The guide's Jaeger endpoint with insecure: false is gRPC over TLS.
        assert_eq!(
            t(
                "jaeger-collector.monitoring.svc.cluster.local:14250",
                false,
                Grpc
            )
            .url,
            "https://jaeger-collector.monitoring.svc.cluster.local:14250"
        );
        assert!(t("jaeger:14250", false, Grpc).tls);
        assert_eq!(
            t("collector:4317", true, HttpProtobuf).url,
            "http://collector:4317/v1/traces"
        );
        assert_eq!(
            t("https://otel.example.com/", true, HttpProtobuf),
            Target {
                url: "https://otel.example.com/v1/traces".into(),
                tls: true,
                protocol: HttpProtobuf
            }
        );
        assert_eq!(
            t("http://c:4318/custom/traces", false, HttpProtobuf).url,
            "http://c:4318/custom/traces"
        );
        assert!(!t("http://c:4318", false, Grpc).tls);
    }

    #[test]
    fn trace_context_round_trips_through_headers() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let cx = extract(&h);
        use opentelemetry::trace::TraceContextExt;
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}
