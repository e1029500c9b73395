//! Leader election against the real apiserver when the network misbehaves: a leader whose apiserver
//! connection freezes steps down before anyone else may lead, and a Lease that keeps changing is never taken
//! over, whatever its `renewTime` says.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::LocalBoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client};
use tka::server::leader::{Elector, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::harness::{Env, Harness};

scenarios!(
    a_frozen_leader_steps_down_before_anyone_takes_over,
    a_renewed_lease_is_never_taken_whatever_its_renew_time,
);

const LEASE_NAME: &str = "controller.tka.specht-labs.de";
const LEASE: Duration = Duration::from_secs(3);
const RENEW_DEADLINE: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(300);

fn settings(ns: &str, id: &str) -> Settings {
    Settings {
        namespace: ns.into(),
        lease_name: LEASE_NAME.into(),
        identity: id.into(),
        lease_duration: LEASE,
        renew_deadline: RENEW_DEADLINE,
        retry_period: RETRY,
    }
}

/// A TCP proxy in front of the apiserver that can be frozen: from then on it delivers nothing in either
/// direction and new connections hang, like a partition that drops packets (the kube client's own timeouts
/// are minutes long). Dropping it closes everything.
struct Proxy {
    url: String,
    freeze: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("https://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (freeze, frozen) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, frozen) = (upstream.clone(), frozen.clone());
                pipes.spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, frozen.clone()), pump(sr, cw, frozen));
                });
            }
        });
        Proxy { url, freeze, task }
    }

    fn freeze(&self) {
        let _ = self.freeze.send(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies bytes while not frozen; bytes read when the freeze starts are held back, never delivered.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            r = from.read(&mut buf) => Some(r),
            _ = frozen.wait_for(|f| *f) => None,
        };
        let n = match read {
            None => return std::future::pending().await,
            Some(Ok(0) | Err(_)) => return,
            Some(Ok(n)) => n,
        };
        let held = *frozen.borrow();
        if held || to.write_all(&buf[..n]).await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// A cluster-admin client whose connections go to `url` instead of the apiserver (same certificate: the
/// proxy listens on 127.0.0.1 too).
async fn client_via(env: &Env, url: &str) -> Client {
    let kc = Kubeconfig::read_from(env.cp.admin_kubeconfig_path()).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    cfg.cluster_url = url.parse().unwrap();
    Client::try_from(cfg).unwrap()
}

/// Every version of the Lease the apiserver reports, with when we saw it: (holder, resourceVersion).
type History = Arc<Mutex<Vec<(Instant, String, String)>>>;

fn record_history(admin: &Client, ns: &str) -> (History, tokio::task::JoinHandle<()>) {
    let api: Api<Lease> = Api::namespaced(admin.clone(), ns);
    let history: History = Arc::default();
    let log = history.clone();
    let cfg = watcher::Config::default().fields(&format!("metadata.name={LEASE_NAME}"));
    let task = tokio::spawn(async move {
        let mut events = watcher(api, cfg).boxed();
        while let Some(e) = events.next().await {
            if let Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) = e {
                let holder = l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
                let rv = l.metadata.resource_version.unwrap_or_default();
                log.lock().unwrap().push((Instant::now(), holder, rv));
            }
        }
    });
    (history, task)
}

/// The leader's apiserver connection freezes (a proxy stops delivering): it must notice on its own clock
/// and give up within renewDeadline, strictly before the standby may take over (leaseDuration after the
/// standby last saw the Lease change), and the Lease history must show one hand-over and no write by the
/// old leader after it.
async fn a_frozen_leader_steps_down_before_anyone_takes_over(env: Arc<Env>) {
    let h = Harness::new(&env, "leader-freeze").await;
    let proxy = Proxy::start(&env.cp.server_url()).await;
    let a = Arc::new(Elector::new(
        client_via(&env, &proxy.url).await,
        settings(&h.ns, "pod-a_1"),
    ));
    let b = Arc::new(Elector::new(
        h.server_client.clone(),
        settings(&h.ns, "pod-b_2"),
    ));
    let (history, watching) = record_history(&h.admin, &h.ns);
    let (_stop, stop) = watch::channel(false);

    let won = a.acquire(stop.clone()).await.expect("a leads");
    let (a2, s2) = (a.clone(), stop.clone());
    let a_task = tokio::spawn(async move {
        let released = a2.hold(won, s2).await;
        (released, Instant::now())
    });
    let (b2, s2) = (b.clone(), stop.clone());
    let b_task = tokio::spawn(async move {
        b2.acquire(s2).await.expect("b leads");
        Instant::now()
    });
    tokio::time::sleep(LEASE * 2).await;
    assert!(
        !b_task.is_finished() && !a_task.is_finished(),
        "a renews, b waits"
    );

    proxy.freeze();
    let frozen = Instant::now();
    let (released, a_gone) = tokio::time::timeout(LEASE * 4, a_task)
        .await
        .expect("the frozen leader never noticed that it could not renew: it still leads")
        .unwrap();
    assert!(!released, "hold() reports lost leadership");
    let b_leads = tokio::time::timeout(LEASE * 4, b_task)
        .await
        .expect("b takes over")
        .unwrap();
    let (gave_up, took_over) = (a_gone - frozen, b_leads - frozen);
    println!("frozen → a gave up {gave_up:?}, b leads {took_over:?}");
    assert!(
        gave_up <= RENEW_DEADLINE + Duration::from_millis(200),
        "a gave up after {gave_up:?}, later than renewDeadline {RENEW_DEADLINE:?}"
    );
    assert!(
        b_leads > a_gone + (LEASE - RENEW_DEADLINE) / 2,
        "two leaders: b led {took_over:?} after the freeze, a gave up only after {gave_up:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    watching.abort();
    let history = history.lock().unwrap().clone();
    let holders: Vec<&str> = history.iter().map(|(_, h, _)| h.as_str()).collect();
    let first_b = holders
        .iter()
        .position(|h| *h == "pod-b_2")
        .unwrap_or_else(|| panic!("b never wrote the Lease: {holders:?}"));
    assert!(
        holders[..first_b].iter().all(|h| *h == "pod-a_1") && first_b > 1,
        "a held the Lease (and renewed it) before b: {holders:?}"
    );
    assert!(
        holders[first_b..].iter().all(|h| *h == "pod-b_2"),
        "a wrote the Lease after b took it: {holders:?}"
    );
    drop(proxy);
    h.stop().await;
}

/// A holder whose clock is an hour behind keeps renewing (its `renewTime` is always an hour old): the
/// standby judges by when it saw the record change, so it never takes over while the renews go on, and
/// does once they stop, after leaseDuration.
async fn a_renewed_lease_is_never_taken_whatever_its_renew_time(env: Arc<Env>) {
    let h = Harness::new(&env, "leader-skew").await;
    let api: Api<Lease> = Api::namespaced(h.admin.clone(), &h.ns);
    let stale = || MicroTime(jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1));
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(LEASE_NAME.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("skewed_1".into()),
            lease_duration_seconds: Some(LEASE.as_secs() as i32),
            renew_time: Some(stale()),
            ..LeaseSpec::default()
        }),
    };
    api.create(&PostParams::default(), &lease).await.unwrap();
    let renewing = tokio::spawn({
        let api = api.clone();
        async move {
            loop {
                tokio::time::sleep(RETRY).await;
                let mut l = api.get(LEASE_NAME).await.unwrap();
                l.spec.as_mut().unwrap().renew_time = Some(stale());
                api.replace(LEASE_NAME, &PostParams::default(), &l)
                    .await
                    .unwrap();
            }
        }
    });
    let b = Elector::new(h.server_client.clone(), settings(&h.ns, "pod-b_2"));
    let (_stop, stop) = watch::channel(false);
    let early = tokio::time::timeout(LEASE * 3, b.acquire(stop.clone())).await;
    assert!(
        early.is_err(),
        "took over a Lease that was renewed every {RETRY:?} (its renewTime is an hour old)"
    );
    renewing.abort();
    let stopped = Instant::now();
    b.acquire(stop).await.expect("b leads");
    let took = stopped.elapsed();
    assert!(
        took >= LEASE - RETRY && took <= LEASE + RETRY * 3,
        "the standby should lead leaseDuration after the last renew it saw: {took:?}"
    );
    h.stop().await;
}
