//! A tailnet admin who shortens a grant's period shortens the sessions begun under the longer one: their
//! end moves to the latest login plus the new period, checked before every mint and at every revalidation
//! pass; a session whose new period has already run out ends at once, locally and on a member.

use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use jiff::Timestamp;
use kube::Api;
use serde_json::{Value, json};
use tka::model::duration::GoDuration;
use tka::operator::crd::TkaSignin;

use crate::harness::{Env, Federated, Harness, eventually};
use crate::scenarios::age_session;

scenarios!(
    security_a_shortened_grant_period_shortens_live_sessions,
    federation_a_shortened_period_ends_relayed_sessions_that_ran_out,
);

fn period(p: &str) -> Value {
    json!([{"role": "view", "period": p, "clusters": ["*"]}])
}

const H: Duration = Duration::from_secs(3600);

async fn security_a_shortened_grant_period_shortens_live_sessions(env: Arc<Env>) {
    // Revalidation off: the mint path alone must apply the new period.
    let h = Harness::with_config(&env, "shorten", |c| {
        c.operator.revalidate_interval = GoDuration::from_secs(0)
    })
    .await;
    let signins: Api<TkaSignin> = Api::namespaced(h.admin.clone(), &h.ns);
    let sam = h.user("sam@example.com", period("8h"));
    let (r, _) = sam.login().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let name = r.body["session"].as_str().unwrap().to_string();
    h.grant(&sam, "sam@example.com", period("1h"));
    let r = sam.get("/api/v1alpha1/exec-credential").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let s = signins.get(&name).await.unwrap();
    assert_eq!(
        s.spec.validity_period, "1h0m0s",
        "the session's period follows the grant"
    );
    let end = s.started().unwrap() + jiff::SignedDuration::try_from(H).unwrap();
    let expires: Timestamp = r.body["status"]["expirationTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // Token lifetimes are whole seconds, rounded up.
    let slack = jiff::SignedDuration::from_secs(1);
    assert!(
        expires <= end + slack,
        "token until {expires}, session until {end}"
    );
    let reported = eventually(Duration::from_secs(10), || async {
        let s = signins.get(&name).await.unwrap();
        s.status
            .and_then(|st| st.valid_until)
            .is_some_and(|t| t.0 == end)
    });
    assert!(
        reported.await.is_some(),
        "the controller ends it at the new end"
    );

    // A session whose shortened period has already run out ends at the next mint.
    let ria = h.user("ria@example.com", period("8h"));
    let (r, _) = ria.login().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let name = r.body["session"].as_str().unwrap().to_string();
    age_session(&h, &name, 8 * H, 6 * H).await; // logged in 2 h ago, 6 h left
    h.grant(&ria, "ria@example.com", period("1h"));
    let r = ria.get("/api/v1alpha1/kubeconfig?wait=10s").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("grant_changed")),
        "{}",
        r.text
    );
    let gone = eventually(Duration::from_secs(10), || async {
        signins.get_opt(&name).await.unwrap().is_none()
    });
    assert!(gone.await.is_some(), "the run-out session was ended");
    h.stop().await;

    // Revalidation does the same without any request from the user.
    let h = Harness::with_config(&env, "shorten-reval", |c| {
        c.operator.revalidate_interval = GoDuration::from_secs(1)
    })
    .await;
    let signins: Api<TkaSignin> = Api::namespaced(h.admin.clone(), &h.ns);
    let tom = h.user("tom@example.com", period("8h"));
    let (r, _) = tom.login().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let name = r.body["session"].as_str().unwrap().to_string();
    h.grant(&tom, "tom@example.com", period("2h"));
    let shortened = eventually(Duration::from_secs(10), || async {
        signins.get(&name).await.unwrap().spec.validity_period == "2h0m0s"
    });
    assert!(
        shortened.await.is_some(),
        "revalidation shortened the session"
    );
    h.stop().await;
}

async fn federation_a_shortened_period_ends_relayed_sessions_that_ran_out(env: Arc<Env>) {
    let f = Federated::start(
        &env,
        "shortened",
        |c| c.operator.revalidate_interval = GoDuration::from_secs(0),
        |_| {},
        |n| n,
    )
    .await;
    let on_member: Api<TkaSignin> = Api::namespaced(f.member_env.admin.clone(), &f.member.ns);
    let login = "una@example.com";
    let una = f.primary.user(login, period("8h"));
    f.wait_member(&una, "healthy").await;
    let r = una.login_settled("/api/v1alpha1/login?wait=15s").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let credential = "/api/v1alpha1/exec-credential?cluster=member";
    assert_eq!(una.get(credential).await.status, 200);
    // The member's session began 2 h ago (6 h left); the admin shortens the grant to 1 h.
    let name = on_member.list(&Default::default()).await.unwrap().items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    age_session(&f.member, &name, 8 * H, 6 * H).await;
    let settled = eventually(Duration::from_secs(10), || async {
        una.get(credential).await.status == 200
    });
    assert!(settled.await.is_some(), "the aged session is ready again");
    f.primary.grant(&una, login, period("1h"));
    let r = una.get(credential).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("grant_changed")),
        "{}",
        r.text
    );
    let gone = eventually(Duration::from_secs(10), || async {
        on_member.get_opt(&name).await.unwrap().is_none()
    });
    assert!(
        gone.await.is_some(),
        "the member's run-out session was ended"
    );
    f.stop().await;
}
