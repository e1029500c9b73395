//! Logging setup: JSON or text (`log.format`), level from `log.level`/`debug`, `RUST_LOG` overrides; the
//! OpenTelemetry layer joins when `otel.endpoint` is set.
//!
//! JSON lines carry `trace_id` and `span_id` at the top level so a log line leads to its trace. The IDs are
//! attached to a span once, where it is created ([`tag_ids`]), as a span extension: not as fields, which would
//! be exported again as span attributes, and not looked up through the OpenTelemetry layer while formatting,
//! which would take that layer's locks inside every log call.

use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use super::otel::Otel;

/// The subscriber: logs to stderr (`format` is `auto`, `json` or `text`) plus the span exporter if any.
/// Tests install it per thread with `tracing::subscriber::set_default`; [`init`] installs it globally.
pub fn subscriber(
    level: &str,
    format: &str,
    otel: Option<&Otel>,
) -> impl tracing::Subscriber + Send + Sync + use<> {
    subscriber_to(level, format, otel, std::io::stderr)
}

/// [`subscriber`] writing its log lines to `writer` (tests read them back).
pub fn subscriber_to<W>(
    level: &str,
    format: &str,
    otel: Option<&Otel>,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync + use<W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},kube_runtime=warn,hyper=warn")));
    let json = match format {
        "json" => true,
        "text" => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let logs = if json {
        fmt.fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .with_filter(filter)
            .boxed()
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

/// The trace a span belongs to, as lowercase hex, for its log lines.
#[derive(Debug, Clone, PartialEq)]
pub struct LogIds {
    pub trace_id: String,
    /// `None` when spans are not exported: the trace is then only the caller's, and the span has no ID.
    pub span_id: Option<String>,
}

/// Attaches `ids` to `span` (a no-op when the current subscriber is not ours or the span is disabled).
pub fn tag_ids(span: &tracing::Span, ids: LogIds) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(span) = dispatch.downcast_ref::<Registry>().and_then(|r| r.span(id)) {
            span.extensions_mut().insert(ids);
        }
    });
}

/// Gives `span`'s log lines its trace and span ID. Without span export the span has no
/// IDs of its own; its lines then carry the trace ID of `parent` (the caller's `traceparent`), if any.
pub fn tag_log_ids(span: &tracing::Span, parent: &opentelemetry::Context) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let own = span.context();
    let ids = if own.span().span_context().is_valid() {
        let sc = own.span().span_context().clone();
        LogIds {
            trace_id: sc.trace_id().to_string(),
            span_id: Some(sc.span_id().to_string()),
        }
    } else if parent.span().span_context().is_valid() {
        LogIds {
            trace_id: parent.span().span_context().trace_id().to_string(),
            span_id: None,
        }
    } else {
        return;
    };
    tag_ids(span, ids);
}

/// One JSON object per line: `timestamp`, `level`, `target`, the event's fields (`message` among them),
/// `trace_id`/`span_id` of the innermost tagged span, and `spans` (root first, each its name and fields).
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        let now = jiff::Timestamp::now();
        line.insert("timestamp".into(), now.to_string().into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        event.record(&mut JsonVisitor(&mut line));
        let mut spans = Vec::new();
        let mut ids = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                let ext = span.extensions();
                if ids.is_none() {
                    ids = ext.get::<LogIds>().cloned();
                }
                let mut entry = match ext
                    .get::<FormattedFields<N>>()
                    .and_then(|f| serde_json::from_str::<Value>(f).ok())
                {
                    Some(Value::Object(fields)) => fields,
                    _ => Map::new(),
                };
                entry.insert("name".into(), span.name().into());
                spans.push(Value::Object(entry));
            }
        }
        if let Some(ids) = ids {
            line.insert("trace_id".into(), ids.trace_id.into());
            if let Some(span_id) = ids.span_id {
                line.insert("span_id".into(), span_id.into());
            }
        }
        if !spans.is_empty() {
            spans.reverse();
            line.insert("spans".into(), spans.into());
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// An event's fields as JSON values (numbers and booleans stay typed).
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(buf: &Buffer) -> Vec<Value> {
        String::from_utf8(buf.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn json_lines_carry_the_innermost_tagged_ids_and_the_span_fields() {
        let buf = Buffer::default();
        let writer = buf.clone();
        let sub = subscriber_to("info", "json", None, move || writer.clone());
        tracing::subscriber::with_default(sub, || {
            let outer = tracing::info_span!("http.server", tka.request_id = "r1");
            let ids = LogIds {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: Some("00f067aa0ba902b7".into()),
            };
            tag_ids(&outer, ids);
            let _o = outer.enter();
            let inner = tracing::info_span!("login", tka.role = "view");
            let _i = inner.enter();
            tracing::info!(audit = true, count = 3, "signed in");
        });
        let got = lines(&buf);
        assert_eq!(got.len(), 1, "{got:?}");
        let l = &got[0];
        assert_eq!(l["message"], "signed in");
        assert_eq!(l["audit"], true);
        assert_eq!(l["count"], 3);
        assert_eq!(l["level"], "INFO");
        assert_eq!(l["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(l["span_id"], "00f067aa0ba902b7");
        assert_eq!(l["spans"][0]["name"], "http.server");
        assert_eq!(l["spans"][0]["tka.request_id"], "r1");
        assert_eq!(l["spans"][1]["tka.role"], "view");
    }

    #[test]
    fn json_lines_outside_spans_have_no_ids() {
        let buf = Buffer::default();
        let writer = buf.clone();
        tracing::subscriber::with_default(
            subscriber_to("info", "json", None, move || writer.clone()),
            || tracing::warn!(reason = "x", "plain"),
        );
        let l = &lines(&buf)[0];
        assert_eq!(l["message"], "plain");
        assert!(
            l.get("trace_id").is_none() && l.get("spans").is_none(),
            "{l}"
        );
    }
}
