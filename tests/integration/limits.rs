//! What one tailnet peer can make the real server hold or do: connections are capped per peer, a client
//! that never finishes its headers (or never starts) is closed after readHeaderTimeout, an idle HTTP/2
//! connection after idleTimeout, a streamed body over the limit is refused without being read, and the
//! per-node budget answers 429 before WhoIs. Admitted federation peers keep their own budget. A graceful
//! stop waits for a connection's first request only briefly, so silent clients cannot hold it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::LocalBoxFuture;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::{Env, Federated, Harness, eventually};

scenarios!(
    idle_connections_of_one_peer_are_capped,
    slow_or_silent_clients_are_closed_after_the_header_timeout,
    silent_clients_cannot_hold_a_graceful_stop,
    idle_http2_connections_are_closed_after_the_idle_timeout,
    a_streamed_body_over_the_limit_is_413_without_being_read,
    the_node_budget_answers_429_before_whois_on_every_route,
    a_thousand_nodes_are_not_limited_as_one,
    the_admitted_primary_is_not_throttled_like_a_node,
);

const VIEW: &str = r#"[{"role": "view", "period": "1h"}]"#;

fn view() -> Value {
    serde_json::from_str(VIEW).unwrap()
}

/// A raw TCP connection from `ip` (a test user's tailnet address) to the server.
async fn connect(ip: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// How long until the server closes `s` (reads until EOF or reset), at most `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all)
        .await
        .ok()
        .map(|()| started.elapsed())
}

/// Ten idle connections from one peer: four are kept (its cap), six are closed at once; another peer is
/// served meanwhile.
async fn idle_connections_of_one_peer_are_capped(env: Arc<Env>) {
    let h = Harness::with_config(&env, "conncap", |c| {
        c.server.max_connections_per_peer = 4;
        c.server.read_header_timeout = tka::model::duration::GoDuration::from_secs(30);
    })
    .await;
    let greedy = h.user("greedy@example.com", view());
    let mut conns = Vec::new();
    for _ in 0..10 {
        conns.push(connect(greedy.ip, h.listener_addr).await);
    }
    let mut closed = 0;
    for c in &mut conns {
        if closed_within(c, Duration::from_millis(300)).await.is_some() {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 6,
        "of 10 idle connections of one peer, all but 4 are closed"
    );
    assert_eq!(
        h.metric(
            "/metrics",
            "tka_server_connections_refused_total",
            "per_peer"
        )
        .await,
        6.0
    );
    assert_eq!(
        h.metric("/metrics", "tka_server_connections_open", "")
            .await,
        4.0
    );
    let other = h.user("calm@example.com", view());
    assert_eq!(other.get("/api/v1alpha1/whoami").await.status, 200);
    drop(conns);
    // Its places are free again once they close.
    let url = format!("{}/api/v1alpha1/whoami", h.url);
    let back = eventually(Duration::from_secs(5), || async {
        // Until the server has seen them close, a new connection may still be refused.
        let r = greedy.http.get(&url).send().await;
        r.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(
        back.is_some(),
        "the peer is served again after closing its idle connections"
    );
    h.stop().await;
}

/// Three connections from `ip` that never get a request to the handler: one sends nothing, one half of its
/// HTTP/1 headers, one the HTTP/2 preface and an empty SETTINGS frame.
async fn silent_clients(ip: IpAddr, to: SocketAddr) -> [(&'static str, TcpStream); 3] {
    let silent = connect(ip, to).await;
    let mut partial = connect(ip, to).await;
    partial
        .write_all(b"GET /api/v1alpha1/whoami HTTP/1.1\r\nHost: tka\r\nX-Slow: 1\r\n")
        .await
        .unwrap();
    let mut h2 = connect(ip, to).await;
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    [
        ("silent", silent),
        ("partial headers", partial),
        ("HTTP/2 without a request", h2),
    ]
}

/// With readHeaderTimeout 1 s: a client that sends nothing, one that never finishes its HTTP/1 headers, and
/// one that opens HTTP/2 but never sends a request are each closed after about a second.
async fn slow_or_silent_clients_are_closed_after_the_header_timeout(env: Arc<Env>) {
    let h = Harness::with_config(&env, "slowloris", |c| {
        c.server.read_header_timeout = tka::model::duration::GoDuration::from_secs(1);
    })
    .await;
    let u = h.user("slow@example.com", view());
    for (name, mut conn) in silent_clients(u.ip, h.listener_addr).await {
        let took = closed_within(&mut conn, Duration::from_secs(10)).await;
        println!("{name}: closed after {took:?}");
        let took = took.unwrap_or_else(|| panic!("{name}: still open after 10 s"));
        assert!(
            took <= Duration::from_millis(3500),
            "{name}: closed only after {took:?}"
        );
    }
    h.stop().await;
}

/// The drain gives a connection without a request up to 1 s for its first one (a login sent just before the
/// SIGTERM is answered), then 1 s to close, never its whole readHeaderTimeout or the drain's grace: a peer
/// that connects and sends nothing, or half of its headers, or only the HTTP/2 preface (and never answers
/// GOAWAY), cannot keep a stopping server (a rollout) waiting. Here readHeaderTimeout is 30 s, so only the
/// drain's own bounds can close them in time; the harness gives the stop 5 s before it gives up on it.
async fn silent_clients_cannot_hold_a_graceful_stop(env: Arc<Env>) {
    let h = Harness::with_config(&env, "silentstop", |c| {
        c.server.read_header_timeout = tka::model::duration::GoDuration::from_secs(30);
    })
    .await;
    let u = h.user("silent@example.com", view());
    let [(_, mut silent), (_, mut partial), (_, mut h2)] =
        silent_clients(u.ip, h.listener_addr).await;
    // Let the server accept them before the stop begins.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let limit = Duration::from_secs(10);
    let started = Instant::now();
    let stopped = async {
        h.stop().await;
        started.elapsed()
    };
    let (stopped, a, b, c) = tokio::join!(
        stopped,
        closed_within(&mut silent, limit),
        closed_within(&mut partial, limit),
        closed_within(&mut h2, limit),
    );
    println!("stop took {stopped:?}; closed: silent {a:?}, partial {b:?}, HTTP/2 {c:?}");
    for (name, took) in [("silent", a), ("partial headers", b), ("HTTP/2 preface", c)] {
        let took = took.unwrap_or_else(|| panic!("{name}: still open 10 s into the stop"));
        assert!(
            took <= Duration::from_millis(3500),
            "{name}: held the stop for {took:?}"
        );
    }
    assert!(
        stopped <= Duration::from_millis(4500),
        "the graceful stop took {stopped:?} with three silent clients"
    );
}

/// An HTTP/2 connection that served one request and then stays idle is closed after idleTimeout.
async fn idle_http2_connections_are_closed_after_the_idle_timeout(env: Arc<Env>) {
    let h = Harness::with_config(&env, "h2idle", |c| {
        c.server.idle_timeout = tka::model::duration::GoDuration::from_secs(2);
    })
    .await;
    let u = h.user("idle@example.com", view());
    let io = TokioIo::new(connect(u.ip, h.listener_addr).await);
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/api/v1alpha1/whoami", h.listener_addr))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let answered = send.send_request(req).await.unwrap();
    assert_eq!(answered.status(), 200);
    let idle_since = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    let took = idle_since.elapsed();
    assert!(
        ended.is_ok(),
        "an idle HTTP/2 connection was still open after 10 s"
    );
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_secs(5),
        "closed {took:?} after its last request (idleTimeout 2 s)"
    );
    h.stop().await;
}

/// A chunked body of 1 MiB (under axum's 2 MiB default, over the API's 64 KiB) is refused with 413 and
/// the common error body; an endless one gets the same answer while the client is still sending, so the
/// server never read it all.
async fn a_streamed_body_over_the_limit_is_413_without_being_read(env: Arc<Env>) {
    let h = Harness::new(&env, "chunked").await;
    let u = h.user("big@example.com", view());
    for (total, label) in [(1usize << 20, "1 MiB"), (usize::MAX, "endless")] {
        // The server answers and closes while the client is still writing; hyper's client then sometimes
        // reports the broken pipe instead of the answer that is already on its way. That race is the
        // client's: such an attempt is made again, and the answer must come in one of five.
        let mut attempts = 0;
        let (status, body, sent) = loop {
            attempts += 1;
            match send_streamed(&h, &u, total, label).await {
                Ok(answer) => break answer,
                Err(e) => {
                    println!("{label}: attempt {attempts}: {e:?}");
                    assert!(
                        attempts < 5,
                        "{label}: no answer in {attempts} attempts: {e:?}"
                    );
                }
            }
        };
        println!("{label}: {status} {body} after {sent} bytes sent");
        assert_eq!(status, 413, "{label}: {body}");
        assert_eq!(body["code"], "payload_too_large", "{label}: {body}");
        assert!(
            sent < 16 << 20,
            "{label}: the server read {sent} bytes before answering"
        );
    }
    h.stop().await;
}

/// POSTs `total` bytes (chunked, no Content-Length) as `u`: the status, the JSON body and the bytes sent.
async fn send_streamed(
    h: &Harness,
    u: &crate::harness::User,
    total: usize,
    label: &str,
) -> Result<(u16, Value, usize), hyper::Error> {
    let chunk = Bytes::from(vec![b'{'; 16 * 1024]);
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let frames = futures::stream::iter(0..)
        .take_while(move |_| futures::future::ready(counter.load(Ordering::SeqCst) < total))
        .map({
            let counter = sent.clone();
            move |_| {
                counter.fetch_add(chunk.len(), Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone()))
            }
        });
    let io = TokioIo::new(connect(u.ip, h.listener_addr).await);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let req = http::Request::post(format!(
        "http://{}/federation/v1alpha1/heartbeat",
        h.listener_addr
    ))
    .header("content-type", "application/json")
    .body(StreamBody::new(frames))
    .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .unwrap_or_else(|_| panic!("{label}: no answer within 10 s"))?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok((status, body, sent.load(Ordering::SeqCst)))
}

/// Budget 1/s, burst 2: of ten quick requests from one node two reach WhoIs; the other eight are 429 and
/// WhoIs never runs for them. The same on a federation route, which skipped the limiter before.
async fn the_node_budget_answers_429_before_whois_on_every_route(env: Arc<Env>) {
    let h = Harness::with_config(&env, "before-whois", |c| {
        c.api.rate_limit = 1;
        c.api.rate_burst = 2;
    })
    .await;
    for path in ["/api/v1alpha1/whoami", "/federation/v1alpha1/sessions"] {
        let u = h.user("eager@example.com", view());
        let before = h.identity.whois_calls();
        let mut statuses = Vec::new();
        for _ in 0..10 {
            statuses.push(u.get(path).await.status);
        }
        let whois = h.identity.whois_calls() - before;
        let limited = statuses.iter().filter(|s| **s == 429).count() as u64;
        println!("{path}: {statuses:?}, {whois} WhoIs calls");
        assert!(limited >= 7, "{path}: {statuses:?}");
        assert_eq!(
            whois,
            10 - limited,
            "{path}: WhoIs ran for rate-limited requests: {statuses:?}"
        );
    }
    h.stop().await;
}

/// Budget 1/s, burst 1, and 200 nodes each asking once at the same time: every one is served.
async fn a_thousand_nodes_are_not_limited_as_one(env: Arc<Env>) {
    let h = Harness::with_config(&env, "many-nodes", |c| {
        c.api.rate_limit = 1;
        c.api.rate_burst = 1;
    })
    .await;
    let users: Vec<_> = (0..200)
        .map(|i| h.user(&format!("u{i}@example.com"), view()))
        .collect();
    let statuses: Vec<u16> = futures::future::join_all(
        users
            .iter()
            .map(|u| async { u.get("/api/v1alpha1/whoami").await.status }),
    )
    .await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    h.stop().await;
}

/// The member's node budget is 1/s with a burst of 1, but the primary relays every user's login: once
/// admitted, its calls draw on the federation budget, so ten logins in a row all reach the member.
async fn the_admitted_primary_is_not_throttled_like_a_node(env: Arc<Env>) {
    let f = Federated::start(
        &env,
        "fedbudget",
        |_| {},
        |c| {
            c.api.rate_limit = 1;
            c.api.rate_burst = 1;
        },
        |n| n,
    )
    .await;
    let grant = json!([{"role": "view", "period": "1h", "clusters": ["*"]}]);
    let first = f.primary.user("first@example.com", grant.clone());
    f.wait_member(&first, "healthy").await;
    for i in 0..10 {
        let u = f
            .primary
            .user(&format!("fed{i}@example.com"), grant.clone());
        let r = u
            .post("/api/v1alpha1/login?wait=15s&include=kubeconfig&format=v1")
            .await;
        let member = r.body["clusters"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "member"))
            .map(|c| c["status"].clone());
        assert_eq!(
            (r.status, member),
            (200, Some(json!("ready"))),
            "login {i}: {}",
            r.body["clusters"]
        );
    }
    f.stop().await;
}
