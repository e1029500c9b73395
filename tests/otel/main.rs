//! Trace export against a real OTLP receiver: a tonic gRPC `TraceService` and an HTTP
//! `/v1/traces` endpoint, both decoding the protobuf the exporter sends. Each scenario installs the
//! product's own subscriber (`logging::subscriber` + `otel::Otel`) on its thread and runs the server (the
//! integration harness, against a real kube-apiserver) on a current-thread runtime, so only its own spans
//! reach its receiver.
//!
//! A binary of its own, scenarios one after another: `tracing` caches callsite interest process-wide, and
//! with other tests emitting the same spans on other threads under no subscriber, a scoped subscriber was
//! seen to miss the API's spans. (The server itself has one global subscriber.)
//!
//! Run: `cargo test --features integration --test otel`.

#[path = "../support/controlplane.rs"]
mod controlplane;
#[allow(dead_code)]
#[path = "../integration/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tka::config::{OtelConfig, OtelProtocol};
use tka::telemetry::{logging, otel::Otel};

use crate::harness::{Env, Federated, Harness};

/// Scenarios that run their own runtime on the test's thread.
type Scenario = (&'static str, fn(Arc<Env>));

const ALL: &[Scenario] = &[
    ("otel_grpc_exports_one_span_per_operation", grpc),
    ("otel_http_protobuf_exports_one_span_per_operation", http),
    (
        "otel_unreachable_collector_never_slows_a_login",
        unreachable,
    ),
    (
        "otel_federated_login_continues_the_trace_on_the_member",
        federated,
    ),
];

const VIEW: &str = r#"[{"role": "view", "period": "1h"}]"#;
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// What the receiver got: (resource attributes, span) pairs.
type Received = Arc<Mutex<Vec<(Vec<(String, String)>, Span)>>>;

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn store(into: &Received, req: ExportTraceServiceRequest) {
    let mut got = into.lock().unwrap();
    for rs in req.resource_spans {
        let res: Vec<(String, String)> = rs
            .resource
            .map(|r| {
                r.attributes
                    .iter()
                    .map(|a| (a.key.clone(), text(&a.value)))
                    .collect()
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                got.push((res.clone(), s));
            }
        }
    }
}

struct Grpc(Received);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        store(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts a receiver of `protocol` on its own thread and runtime; returns its endpoint and what it gets.
fn receiver(protocol: OtelProtocol) -> (String, Received) {
    let got: Received = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let sink = got.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            match protocol {
                OtelProtocol::Grpc => {
                    let incoming = tokio_stream_compat(listener);
                    tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(Grpc(sink)))
                        .serve_with_incoming(incoming)
                        .await
                        .unwrap();
                }
                OtelProtocol::HttpProtobuf => {
                    let app = axum::Router::new().route(
                        "/v1/traces",
                        axum::routing::post(move |body: axum::body::Bytes| {
                            let sink = sink.clone();
                            async move {
                                store(&sink, ExportTraceServiceRequest::decode(body).unwrap());
                                (
                                    [("content-type", "application/x-protobuf")],
                                    ExportTraceServiceResponse::default().encode_to_vec(),
                                )
                            }
                        }),
                    );
                    axum::serve(listener, app).await.unwrap();
                }
            }
        });
    });
    (format!("127.0.0.1:{}", addr.port()), got)
}

fn tokio_stream_compat(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| text(&a.value))
}

/// What one traced session gave: the token the login handed out, how long each login took, and the
/// server's JSON log lines.
struct Session {
    token: String,
    took: Vec<Duration>,
    logs: Vec<serde_json::Value>,
}

/// Logs in (with a caller trace context) and out with the product's subscriber exporting to `endpoint`.
fn session_with_tracing(env: &Env, name: &str, cfg: OtelConfig, logins: usize) -> Session {
    let ((token, took), logs) = traced(&cfg, async {
        let h = Harness::new(env, name).await;
        let u = h.user(
            &format!("{name}@example.com"),
            serde_json::from_str(VIEW).unwrap(),
        );
        let mut token = String::new();
        let mut took = Vec::new();
        for _ in 0..logins {
            let started = Instant::now();
            let r = u
                .send(
                    u.http
                        .post(format!(
                            "{}/api/v1alpha1/login?wait=15s&include=kubeconfig&format=v1",
                            u.base
                        ))
                        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01")),
                )
                .await;
            took.push(started.elapsed());
            assert_eq!(r.status, 200, "login: {}", r.text);
            token = r.body["kubeconfig"]["users"][0]["user"]["token"]
                .as_str()
                .unwrap()
                .to_string();
        }
        let r = u.post("/api/v1alpha1/logout").await;
        assert_eq!(r.status, 200, "logout: {}", r.text);
        h.stop().await;
        (token, took)
    });
    Session { token, took, logs }
}

/// A log sink the subscriber writes JSON lines into.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `body` on a current-thread runtime under the product's subscriber, exporting with `cfg` and logging
/// JSON lines at info; returns its output and those lines. The spans are flushed when it returns.
fn traced<F: std::future::Future>(
    cfg: &OtelConfig,
    body: F,
) -> (F::Output, Vec<serde_json::Value>) {
    let otel = Otel::start(cfg, "t-otel")
        .expect("exporter")
        .expect("export enabled");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let logs = LogBuffer::default();
    let result = {
        let sink = logs.clone();
        let _installed = tracing::subscriber::set_default(logging::subscriber_to(
            "info",
            "json",
            Some(&otel),
            move || sink.clone(),
        ));
        rt.block_on(body)
    };
    drop(rt);
    otel.shutdown(); // flushes
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    (result, lines)
}

fn exports_one_span_per_operation(env: Arc<Env>, protocol: OtelProtocol, name: &str) {
    let (endpoint, got) = receiver(protocol);
    let cfg = OtelConfig {
        endpoint,
        insecure: true,
        protocol,
        ..OtelConfig::default()
    };
    let Session { token, logs, .. } = session_with_tracing(&env, name, cfg, 1);
    let got = got.lock().unwrap();
    let names: Vec<&str> = got.iter().map(|(_, s)| s.name.as_str()).collect();
    for want in [
        "http.server",
        "auth",
        "tailnet.whois",
        "login",
        "reconcile",
        "kube.token_request",
        "logout",
    ] {
        assert!(names.contains(&want), "no {want:?} span among {names:?}");
    }
    let (resource, login) = got.iter().find(|(_, s)| s.name == "login").unwrap();
    assert!(
        resource.contains(&("service.name".into(), "tka-server".into())),
        "resource {resource:?}"
    );
    assert_eq!(attr(login, "tka.role").as_deref(), Some("view"));
    assert!(
        attr(login, "tka.session").is_some_and(|s| s.starts_with("tka-")),
        "{login:?}"
    );
    assert_eq!(attr(login, "tka.outcome").as_deref(), Some("ok"));
    // The login span hangs under the request span, which continues the caller's trace.
    let http_span = got
        .iter()
        .map(|(_, s)| s)
        .find(|s| {
            s.name == "http.server"
                && attr(s, "http.route").as_deref() == Some("/api/v1alpha1/login")
        })
        .unwrap();
    assert_eq!(
        hex::encode(&http_span.trace_id),
        TRACE_ID,
        "caller's traceparent continued"
    );
    assert_eq!(hex::encode(&http_span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(login.parent_span_id, http_span.span_id);
    assert_eq!(
        attr(http_span, "http.response.status_code").as_deref(),
        Some("200")
    );
    let auth = got
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "auth")
        .unwrap();
    assert_eq!(
        attr(auth, "tka.user").as_deref(),
        Some(format!("{name}@example.com").as_str())
    );
    // The login's audit line leads to its span: the caller's trace ID and the login span's ID.
    let audit = logs
        .iter()
        .find(|l| l["audit"] == true && l["event"] == "login")
        .unwrap_or_else(|| panic!("no login audit line among {logs:?}"));
    assert_eq!(audit["trace_id"], TRACE_ID, "{audit}");
    assert_eq!(audit["span_id"], hex::encode(&login.span_id), "{audit}");
    assert!(
        logs.iter().all(|l| !l.to_string().contains(&token)),
        "a log line carries the token"
    );
    // Never a token in any attribute.
    for (_, s) in got.iter() {
        for a in &s.attributes {
            assert!(
                !text(&a.value).contains(&token),
                "span {} attribute {} carries the token",
                s.name,
                a.key
            );
        }
    }
}

fn grpc(env: Arc<Env>) {
    exports_one_span_per_operation(env, OtelProtocol::Grpc, "otel-grpc");
}

fn http(env: Arc<Env>) {
    exports_one_span_per_operation(env, OtelProtocol::HttpProtobuf, "otel-http");
}

/// A collector that accepts connections and never answers: exports hang until their 10 s timeout, logins
/// do not wait for them.
fn unreachable(env: Arc<Env>) {
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blackhole.local_addr().unwrap().port();
    let _keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in blackhole.incoming() {
            held.push(c); // accepted, never read or answered
        }
    });
    let cfg = OtelConfig {
        endpoint: format!("127.0.0.1:{port}"),
        insecure: true,
        protocol: OtelProtocol::Grpc,
        ..OtelConfig::default()
    };
    let started = Instant::now();
    let took = session_with_tracing(&env, "otel-dead", cfg, 20).took;
    let slowest = took.iter().max().unwrap();
    // Were an export in the request path, a login would wait for the 10 s export timeout.
    assert!(
        *slowest < Duration::from_secs(3),
        "a login took {slowest:?} with a dead collector (all: {took:?})"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// A login at the primary reaches the member with W3C trace context,
/// so the member's `http.server` span is in the caller's trace, a child of the primary's
/// `federation.signin` client span. Both servers run in this process and export to one receiver.
fn federated(env: Arc<Env>) {
    let (endpoint, got) = receiver(OtelProtocol::Grpc);
    let cfg = OtelConfig {
        endpoint,
        insecure: true,
        protocol: OtelProtocol::Grpc,
        ..OtelConfig::default()
    };
    let ((), logs) = traced(&cfg, async {
        let f = Federated::start(&env, "otel-fed", |_| {}, |_| {}, |n| n).await;
        let u = f.primary.user(
            "fed@example.com",
            serde_json::json!([{"role": "view", "period": "1h", "clusters": ["*"]}]),
        );
        f.wait_member(&u, "healthy").await;
        let r = u
            .send(
                u.http
                    .post(format!("{}/api/v1alpha1/login?wait=15s", u.base))
                    .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01")),
            )
            .await;
        assert_eq!(r.status, 200, "login: {}", r.text);
        let member = r.body["clusters"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["name"] == "member"))
            .cloned();
        assert_eq!(
            member.as_ref().map(|c| c["status"].clone()),
            Some("ready".into()),
            "{}",
            r.text
        );
        f.stop().await;
    });
    // Both servers' audit lines for this login name the caller's trace.
    let audits: Vec<&serde_json::Value> = logs
        .iter()
        .filter(|l| l["audit"] == true && l["event"] == "login")
        .collect();
    assert!(
        audits.len() >= 2 && audits.iter().all(|l| l["trace_id"] == TRACE_ID),
        "login audit lines of primary and member: {audits:?}"
    );
    let got = got.lock().unwrap();
    let spans: Vec<&Span> = got.iter().map(|(_, s)| s).collect();
    let in_trace: Vec<&Span> = spans
        .iter()
        .copied()
        .filter(|s| hex::encode(&s.trace_id) == TRACE_ID)
        .collect();
    let described = || {
        in_trace
            .iter()
            .map(|s| format!("{} {:?}", s.name, attr(s, "http.route")))
            .collect::<Vec<_>>()
    };
    let client = in_trace
        .iter()
        .find(|s| s.name == "federation.signin")
        .unwrap_or_else(|| panic!("no federation.signin span in the trace: {:?}", described()));
    assert_eq!(attr(client, "tka.cluster").as_deref(), Some("member"));
    assert_eq!(attr(client, "tka.result").as_deref(), Some("success"));
    let on_member = in_trace
        .iter()
        .find(|s| {
            s.name == "http.server"
                && attr(s, "http.route").as_deref() == Some("/federation/v1alpha1/sessions")
        })
        .unwrap_or_else(|| {
            panic!(
                "no member-side http.server span in the caller's trace: {:?}",
                described()
            )
        });
    assert_eq!(
        hex::encode(&on_member.parent_span_id),
        hex::encode(&client.span_id),
        "the member's request span is a child of the primary's federation.signin span"
    );
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let cp = match controlplane::ControlPlane::start() {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("cannot start the test control plane: {e}");
            std::process::exit(1);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin = rt.block_on(cp.admin_client());
    rt.block_on(harness::install_crd(&admin));
    rt.block_on(harness::aggregate_cluster_roles(&admin));
    let env = Arc::new(Env { cp, admin });
    let tests = ALL
        .iter()
        .map(|(name, f)| {
            let (env, f) = (env.clone(), *f);
            libtest_mimic::Trial::test(*name, move || {
                f(env);
                Ok(())
            })
        })
        .collect();
    // One after another (see the module comment).
    let args = libtest_mimic::Arguments {
        test_threads: Some(1),
        ..args
    };
    let conclusion = libtest_mimic::run(&args, tests);
    drop(rt);
    if let Ok(mut env) = Arc::try_unwrap(env) {
        env.cp.stop();
    }
    conclusion.exit();
}
