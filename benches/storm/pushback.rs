//! The apiserver pushing back: tka's priority level shrunk to a few seats and short queues, so that a smaller
//! storm overflows them and the apiserver answers 429. The apiserver counts its rejections; the users must see none of them.

use std::time::Duration;

use serde_json::{Value, json};

use crate::census::Census;
use crate::harness::{self, Env, Harness, User};
use crate::storm::{LOGIN, LOGOUT, expect_ok};
use crate::{apiserver, stats};

/// tka's priority level as deploy/kustomize/base/flowcontrol.yaml ships it, or shrunk to reject at once.
pub fn priority_level(tight: bool) -> Value {
    let limited = if tight {
        // About 3 seats (of the apiserver's 600) and queues of 5: a storm overflows them at once.
        json!({"nominalConcurrencyShares": 1, "lendablePercent": 0, "borrowingLimitPercent": 0,
            "limitResponse": {"type": "Queue", "queuing": {"queues": 8, "handSize": 2, "queueLengthLimit": 5}}})
    } else {
        crate::flowcontrol_docs()
            .into_iter()
            .find(|d| d["kind"] == "PriorityLevelConfiguration")
            .expect("the base has a PriorityLevelConfiguration")["spec"]["limited"]
            .clone()
    };
    json!({"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
        "metadata": {"name": "tka"}, "spec": {"type": "Limited", "limited": limited}})
}

pub async fn run(env: &Env, n: usize, concurrency: usize) -> Value {
    harness::apply_value(&env.admin, &priority_level(true)).await;
    // The apiserver's APF config controller picks the change up asynchronously.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let h = Harness::with_config(env, "pushback", |_| {}).await;
    let census = Census::start(&env.admin, &h.ns).await;
    let rules = json!([{"role": "view", "period": "1h"}]);
    let users: Vec<User> = (0..n)
        .map(|i| h.user(&format!("push{i}@example.com"), rules.clone()))
        .collect();
    let before = apiserver::scrape(&env.admin).await;
    let storm = stats::run(n, concurrency, |i| expect_ok(&users[i], LOGIN)).await;
    let after = apiserver::scrape(&env.admin).await;
    let exact = census
        .until(Duration::from_secs(120), |c| c.exactly(n))
        .await
        .is_some();
    let objects = census.counts();
    let logouts = stats::run(n, concurrency, |i| expect_ok(&users[i], LOGOUT)).await;
    let gone = census
        .until(Duration::from_secs(300), |c| c.exactly(0))
        .await
        .is_some();
    let after_logout = apiserver::scrape(&env.admin).await;
    h.stop().await;
    harness::apply_value(&env.admin, &priority_level(false)).await;
    json!({
        "users": n,
        "concurrency": concurrency,
        "login": storm.json(),
        "objects_after": objects,
        "objects_exact": exact,
        "apiserver": apiserver::report(&before, &after, n, "tka"),
        "logout": logouts.json(),
        "all_gone": gone,
        "apiserver_logouts": apiserver::report(&after, &after_logout, n, "tka"),
    })
}
