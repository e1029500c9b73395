//! The apiserver pushing back: tka's priority level shrunk to a few seats and short queues, so that a smaller
//! storm overflows them and the apiserver answers 429. The apiserver counts its rejections; the users must see
//! none of them. A user here is what `tka login`/`tka logout` is: one command with one deadline (the CLI's
//! default 30 s), which follows a 202 (still provisioning) and retries 429/502/503/504 after `Retry-After`
//! (at most 5 s). Reported: the commands that failed (the errors a user sees), and every answer the server
//! gave on the way (a 202 or 503 there is a retry, not an error).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use crate::census::Census;
use crate::harness::{self, Env, Harness, User};
use crate::storm::{LOGIN, LOGOUT};
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
    let answers = Answers::default();
    let before = apiserver::scrape(&env.admin).await;
    let storm = stats::run(n, concurrency, |i| answers.command(&users[i], LOGIN)).await;
    let login_answers = answers.take();
    let after = apiserver::scrape(&env.admin).await;
    let exact = census
        .until(Duration::from_secs(120), |c| c.exactly(n))
        .await
        .is_some();
    let objects = census.counts();
    let logouts = stats::run(n, concurrency, |i| answers.command(&users[i], LOGOUT)).await;
    let logout_answers = answers.take();
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
        "login_answers": login_answers,
        "objects_after": objects,
        "objects_exact": exact,
        "apiserver": apiserver::report(&before, &after, n, "tka"),
        "logout": logouts.json(),
        "logout_answers": logout_answers,
        "all_gone": gone,
        "apiserver_logouts": apiserver::report(&after, &after_logout, n, "tka"),
    })
}

/// Every answer the server gave, by status and error code.
#[derive(Default)]
struct Answers(Mutex<BTreeMap<String, u64>>);

impl Answers {
    /// One `tka` command ([`User::command`]); its answers are counted, its last one is the error.
    async fn command(&self, u: &User, path: &str) -> Result<(), String> {
        let (answers, ok) = u.command(path).await;
        let mut counts = self.0.lock().unwrap();
        for a in &answers {
            *counts.entry(a.clone()).or_default() += 1;
        }
        if ok {
            Ok(())
        } else {
            Err(answers.last().cloned().unwrap_or_default())
        }
    }

    fn take(&self) -> Value {
        json!(std::mem::take(&mut *self.0.lock().unwrap()))
    }
}
