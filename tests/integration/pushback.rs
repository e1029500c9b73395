//! The apiserver pushing back (HTTP 429 from API Priority and Fairness) must slow tka down, never fail a
//! user. A control plane of its own with APF on (the shared one runs without), tka's ServiceAccount put in a
//! priority level of about 3 seats with short queues, and a storm that overflows it. Every login and logout
//! is driven as `tka` does it (one 30 s deadline, a 202 followed by a long poll of the kubeconfig, a 503
//! retried): all must end 200 without a single 5xx on the way, and nothing may be left behind. Before the
//! server capped its retry pauses, APF's growing `Retry-After` sent requests to sleep past their deadline
//! and users got `503 timeout`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::LocalBoxFuture;
use serde_json::json;
use tka::operator::crd::TkaSignin;

use crate::controlplane::{ControlPlane, Options};
use crate::harness::{self, Env, Harness, User, eventually};

scenarios!(apiserver_pushback_slows_users_down_but_never_fails_them);

const USERS: usize = 80;
const CONCURRENCY: usize = 40;

/// tka's requests (its ServiceAccount in namespace `t-pushback`) in a priority level of about 3 seats.
fn squeeze() -> [serde_json::Value; 2] {
    [
        json!({"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
            "metadata": {"name": "tka-squeezed"},
            "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 1, "lendablePercent": 0,
                "borrowingLimitPercent": 0, "limitResponse": {"type": "Queue",
                    "queuing": {"queues": 8, "handSize": 2, "queueLengthLimit": 5}}}}}),
        json!({"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
            "metadata": {"name": "tka-squeezed"},
            "spec": {"priorityLevelConfiguration": {"name": "tka-squeezed"}, "matchingPrecedence": 500,
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [{"subjects": [{"kind": "ServiceAccount",
                        "serviceAccount": {"name": "tka-controller", "namespace": "t-pushback"}}],
                    "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                        "clusterScope": true, "namespaces": ["*"]}],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}}),
    ]
}

/// Runs `path` for every user at `CONCURRENCY`: the failed commands, and every 5xx answer on the way.
async fn storm(users: &[User], path: &str) -> (Vec<String>, Vec<String>) {
    let started = Instant::now();
    let results: Vec<(Vec<String>, bool, Duration)> = futures::stream::iter(users)
        .map(|u| async move {
            let t = Instant::now();
            let (answers, ok) = u.command(path).await;
            (answers, ok, t.elapsed())
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let slowest = results.iter().map(|r| r.2).max().unwrap_or_default();
    let retried = results.iter().filter(|r| r.0.len() > 1).count();
    eprintln!(
        "{path}: {} commands in {:.1} s, the slowest {:.1} s, {retried} needed more than one request",
        results.len(),
        started.elapsed().as_secs_f64(),
        slowest.as_secs_f64()
    );
    let results: Vec<(Vec<String>, bool)> = results.into_iter().map(|(a, ok, _)| (a, ok)).collect();
    let failed = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(a, _)| a.join(" → "))
        .collect();
    let server_errors = results
        .iter()
        .flat_map(|(a, _)| a.iter().filter(|s| s.starts_with('5')).cloned())
        .collect();
    (failed, server_errors)
}

/// Every command ended 200, and none met a 5xx on the way.
fn all_ended_200(what: &str, failed: &[String], errors: &[String]) {
    assert!(
        failed.is_empty(),
        "{} {what}s failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        errors.is_empty(),
        "{} 5xx answers to {what}s: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
}

async fn apiserver_pushback_slows_users_down_but_never_fails_them(_shared: Arc<Env>) {
    let cp = tokio::task::spawn_blocking(|| {
        ControlPlane::start_with(Options {
            priority_and_fairness: true,
        })
    })
    .await
    .unwrap()
    .expect("a control plane with API Priority and Fairness");
    let admin = cp.admin_client().await;
    harness::install_crd(&admin).await;
    harness::aggregate_cluster_roles(&admin).await;
    for doc in squeeze() {
        harness::apply_value(&admin, &doc).await;
    }
    // The apiserver's APF controller picks the new level up asynchronously.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let env = Env { cp, admin };
    let h = Harness::new(&env, "pushback").await;
    let users: Vec<User> = (0..USERS)
        .map(|i| {
            h.user(
                &format!("pushed{i}@example.com"),
                json!([{"role": "view", "period": "1h"}]),
            )
        })
        .collect();

    let (failed, errors) = storm(
        &users,
        "/api/v1alpha1/login?wait=15s&include=kubeconfig&format=v1",
    )
    .await;
    all_ended_200("login", &failed, &errors);
    let pushed_back = h
        .metric(
            "/metrics/controller",
            "tka_kube_api_requests_total",
            "code=\"429\"",
        )
        .await;
    assert!(
        pushed_back > 0.0,
        "the apiserver never answered 429: the test proves nothing"
    );

    let (failed, errors) = storm(&users, "/api/v1alpha1/logout").await;
    all_ended_200("logout", &failed, &errors);
    let gone = eventually(Duration::from_secs(60), || async {
        let sessions = h.names::<TkaSignin>().await.len();
        let secrets = h.names::<k8s_openapi::api::core::v1::Secret>().await.len();
        let accounts = h
            .names::<k8s_openapi::api::core::v1::ServiceAccount>()
            .await;
        sessions + secrets == 0 && accounts.iter().all(|a| a == "tka-controller")
    })
    .await;
    assert!(
        gone.is_some(),
        "sessions, Secrets or ServiceAccounts left a minute after the logouts"
    );
    eprintln!(
        "pushback: {USERS} users, the apiserver answered tka {pushed_back} times with 429, {} in all",
        h.metric(
            "/metrics/controller",
            "tka_kube_api_requests_total",
            "code=\"429\""
        )
        .await
    );
    h.stop().await;
}
