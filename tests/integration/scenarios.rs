//! The scenarios. Each gets its own namespace and server; assertions are on what the real apiserver says.

use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tka::model::naming;
use tka::operator::crd::TkaSignin;

use crate::harness::{Env, Harness, User, eventually};

scenarios!(
    login_provisions_objects_and_the_token_has_exactly_the_role,
    logout_revokes_the_token_within_two_seconds,
    expiry_removes_everything_without_logout,
    restart_mid_session_still_expires_on_time,
    a_crash_before_the_status_write_leaves_no_second_secret,
    renewal_rearms_expiry,
    role_change_recreates_the_binding,
    users_differing_after_the_at_sign_share_nothing,
    twenty_concurrent_logins,
    bad_grants_are_4xx_and_leave_nothing_behind,
    bad_requests_get_error_bodies,
    unicode_and_odd_login_names_work,
    namespaced_rule_uses_role_bindings,
    crd_validation_rejects_short_periods_and_key_changes,
    upstream_objects_are_migrated,
    kubeconfig_representations,
    exec_credential_and_session_status,
    cli_login_gives_kubectl_exactly_the_role,
    tailscaled_outage_is_503_and_recovers_without_restart,
    objects_deleted_by_hand_do_not_block_cleanup,
    logout_login_loops_never_break_the_new_session,
    a_second_device_with_another_role_conflicts,
    concurrent_logins_with_two_roles_leave_one_binding,
    only_the_controller_writes_status_and_foreign_annotations_survive,
    leader_election_has_one_leader_and_fails_over,
    revoked_grants_end_sessions_but_outages_do_not,
    per_node_rate_limit,
    a_graceful_stop_answers_every_login_in_flight,
);

const VIEW: &str = r#"[{"role": "view", "period": "1h"}]"#;

fn rules(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}

pub async fn whoami(c: &Client) -> Result<String, kube::Error> {
    let api: Api<SelfSubjectReview> = Api::all(c.clone());
    let r = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    Ok(r.status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default())
}

pub async fn can(c: &Client, verb: &str, resource: &str, namespace: &str) -> bool {
    let api: Api<SelfSubjectAccessReview> = Api::all(c.clone());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                resource: Some(resource.into()),
                namespace: Some(namespace.into()).filter(|n: &String| !n.is_empty()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap()
        .allowed
}

fn is_401(r: &Result<String, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 401)
}

pub fn sa_name(login: &str) -> String {
    naming::user_object_name(&naming::subject_key(login))
}

/// Moves a session's `requested_at` into the past so that it ends `left` from now.
pub async fn age_session(h: &Harness, name: &str, period: Duration, left: Duration) {
    let requested = Timestamp::now() - jiff::SignedDuration::try_from(period - left).unwrap();
    let api: Api<TkaSignin> = Api::namespaced(h.admin.clone(), &h.ns);
    let patch = json!({"spec": {"requested_at": requested.to_string()}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn login_provisions_objects_and_the_token_has_exactly_the_role(env: Arc<Env>) {
    let h = Harness::new(&env, "provision").await;
    let alice = h.user("alice@example.com", rules(VIEW));
    let (r, client) = alice.login().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["username"], "alice@example.com");
    assert_eq!(r.body["provisioned"], true);
    assert_eq!(r.headers["cache-control"], "no-store");
    assert!(r.headers.contains_key("x-request-id"));

    let sa = sa_name("alice@example.com");
    assert_eq!(
        h.names::<ServiceAccount>()
            .await
            .into_iter()
            .filter(|n| n == &sa)
            .count(),
        1
    );
    let secrets = h.names::<Secret>().await;
    assert_eq!(secrets.len(), 1, "one session Secret: {secrets:?}");
    let crbs = h.crbs().await;
    assert_eq!(crbs.len(), 1);
    assert_eq!(crbs[0].role_ref.name, "view");
    assert_eq!(
        crbs[0].name_any(),
        naming::binding_name(&naming::subject_key("alice@example.com"), &h.ns),
        "per user and instance"
    );

    let client = client.unwrap();
    assert_eq!(
        whoami(&client).await.unwrap(),
        format!("system:serviceaccount:{}:{sa}", h.ns)
    );
    assert!(
        can(&client, "list", "pods", "default").await,
        "view may list pods"
    );
    assert!(
        !can(&client, "create", "pods", "default").await,
        "view must not create pods"
    );
    assert!(
        !can(&client, "get", "secrets", "default").await,
        "view must not read secrets"
    );
    assert!(!can(&client, "create", "namespaces", "").await);
    // `kubectl describe signin` shows what happened.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.admin.clone(), &h.ns);
    let provisioned = eventually(Duration::from_secs(5), || async {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Provisioned"))
    })
    .await;
    assert!(
        provisioned.is_some(),
        "a Provisioned event on the TkaSignin"
    );
    h.stop().await;
}

/// kube-apiserver caches a successful token authentication for 10 s (`TokenSuccessCacheTTL`, not a flag), so
/// a token *used* in the 10 s before logout can keep working until that entry ages out; a token not used in
/// that window fails at once. Both bounds are asserted and the latencies printed.
async fn logout_revokes_the_token_within_two_seconds(env: Arc<Env>) {
    let h = Harness::new(&env, "logout").await;
    let bob = h.user("bob@example.com", rules(VIEW));
    let (_, client) = bob.login().await;
    let client = client.expect("logged in");
    let r = bob.post("/api/v1alpha1/logout").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["username"], "bob@example.com");
    let secret_gone = eventually(Duration::from_secs(5), || async {
        h.names::<Secret>().await.is_empty()
    })
    .await;
    eprintln!("    secret gone after {secret_gone:?}");
    let took = eventually(Duration::from_secs(15), || async {
        is_401(&whoami(&client).await)
    })
    .await;
    eprintln!("    401 after {took:?}");
    let took = took.expect("the token must get 401 within 2 s of logout");
    eprintln!(
        "    revocation latency (token idle before logout): {} ms",
        took.as_millis()
    );

    let amy = h.user("amy@example.com", rules(VIEW));
    let (_, client) = amy.login().await;
    let client = client.expect("logged in");
    assert!(
        whoami(&client).await.is_ok(),
        "the token works before logout"
    );
    assert_eq!(amy.post("/api/v1alpha1/logout").await.status, 200);
    let took = eventually(Duration::from_secs(12), || async {
        is_401(&whoami(&client).await)
    })
    .await;
    let took = took
        .expect("a token in use must get 401 once the apiserver's 10 s token cache entry ages out");
    eprintln!(
        "    revocation latency (token in use, apiserver cache): {} ms",
        took.as_millis()
    );

    // Everything is cleaned up, and a second logout is 404 (upstream contract).
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.names::<TkaSignin>().await.is_empty()
        })
        .await
        .is_some()
    );
    assert!(
        h.names::<ServiceAccount>()
            .await
            .iter()
            .all(|n| n == "tka-controller")
    );
    assert!(h.crbs().await.is_empty());
    assert_eq!(bob.post("/api/v1alpha1/logout").await.status, 404);
    assert_eq!(bob.get("/api/v1alpha1/login").await.status, 401);
    h.stop().await;
}

async fn expiry_removes_everything_without_logout(env: Arc<Env>) {
    let h = Harness::new(&env, "expiry").await;
    let carol = h.user(
        "carol@example.com",
        rules(r#"[{"role": "view", "period": "10m"}]"#),
    );
    let (r, client) = carol.login().await;
    assert_eq!(r.status, 200);
    let name = r.body["session"].as_str().unwrap().to_string();
    age_session(&h, &name, Duration::from_secs(600), Duration::from_secs(3)).await;
    let gone = eventually(Duration::from_secs(8), || async {
        h.names::<TkaSignin>().await.is_empty()
            && h.names::<Secret>().await.is_empty()
            && h.crbs().await.is_empty()
    })
    .await;
    assert!(
        gone.is_some(),
        "an expired session must be removed without logout"
    );
    assert!(is_401(&whoami(&client.unwrap()).await));
    assert_eq!(carol.get("/api/v1alpha1/login").await.status, 401);
    h.stop().await;
}

async fn restart_mid_session_still_expires_on_time(env: Arc<Env>) {
    let mut h = Harness::new(&env, "restart").await;
    let dave = h.user(
        "dave@example.com",
        rules(r#"[{"role": "view", "period": "10m"}]"#),
    );
    let (r, _) = dave.login().await;
    assert_eq!(r.status, 200);
    let name = r.body["session"].as_str().unwrap().to_string();
    // The server dies; while it is down the session's end comes close.
    h.crash().await;
    age_session(&h, &name, Duration::from_secs(600), Duration::from_secs(4)).await;
    h.restart().await;
    let gone = eventually(Duration::from_secs(9), || async {
        h.names::<TkaSignin>().await.is_empty() && h.crbs().await.is_empty()
    })
    .await;
    assert!(
        gone.is_some(),
        "a restarted server must still expire the session on time (upstream B1)"
    );
    h.stop().await;
}

/// The controller created the session Secret and stopped before recording it in status (killed between the
/// two writes; the chaos soak found the Secret this used to leave behind). After the restart the session
/// keeps that Secret instead of making a second one, and logout removes it: no garbage collector runs here,
/// so nothing else would.
async fn a_crash_before_the_status_write_leaves_no_second_secret(env: Arc<Env>) {
    let mut h = Harness::new(&env, "orphan").await;
    let frank = h.user("frank@example.com", rules(VIEW));
    let (r, _) = frank.login().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let name = r.body["session"].as_str().unwrap().to_string();
    let first = h.names::<Secret>().await;
    assert_eq!(first.len(), 1, "{first:?}");
    h.crash().await;
    let api: Api<TkaSignin> = Api::namespaced(h.admin.clone(), &h.ns);
    let unrecorded = json!({"status": {"session_secret": null}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&unrecorded))
        .await
        .unwrap();
    h.restart().await;
    let recorded = eventually(Duration::from_secs(10), || async {
        let s = api.get(&name).await.unwrap();
        s.status.and_then(|st| st.session_secret).is_some()
    })
    .await;
    assert!(
        recorded.is_some(),
        "the restarted controller provisions the session again"
    );
    assert_eq!(
        h.names::<Secret>().await,
        first,
        "the first attempt's Secret is the session's"
    );
    let (again, client) = frank.login().await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert!(whoami(&client.unwrap()).await.is_ok());
    let r = frank.post("/api/v1alpha1/logout").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let gone = eventually(Duration::from_secs(10), || async {
        h.names::<Secret>().await.is_empty() && h.names::<TkaSignin>().await.is_empty()
    })
    .await;
    assert!(gone.is_some(), "left: {:?}", h.names::<Secret>().await);
    h.stop().await;
}

async fn renewal_rearms_expiry(env: Arc<Env>) {
    let h = Harness::new(&env, "renewal").await;
    let erin = h.user(
        "erin@example.com",
        rules(r#"[{"role": "view", "period": "10m"}]"#),
    );
    let (first, _) = erin.login().await;
    let name = first.body["session"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (second, client) = erin.login().await;
    assert_eq!(second.status, 200);
    assert_eq!(
        second.body["session"], first.body["session"],
        "a renewal extends the same session"
    );
    assert!(
        second.body["until"].as_str() > first.body["until"].as_str(),
        "renewal moves the end"
    );
    // The renewed session keeps working, and still ends on time.
    let client = client.unwrap();
    assert!(whoami(&client).await.is_ok());
    age_session(&h, &name, Duration::from_secs(600), Duration::from_secs(3)).await;
    assert!(
        eventually(Duration::from_secs(8), || async {
            h.names::<TkaSignin>().await.is_empty()
        })
        .await
        .is_some()
    );
    // The token was used a moment ago: allow for the apiserver's 10 s authentication cache.
    assert!(
        eventually(Duration::from_secs(11), || async {
            is_401(&whoami(&client).await)
        })
        .await
        .is_some()
    );
    h.stop().await;
}

async fn role_change_recreates_the_binding(env: Arc<Env>) {
    let h = Harness::new(&env, "rolechange").await;
    let frank = h.user("frank@example.com", rules(VIEW));
    let (_, client) = frank.login().await;
    assert!(!can(&client.unwrap(), "create", "configmaps", "default").await);
    let before = h.crbs().await[0].uid();
    // The tailnet admin changes frank's grant; the next login takes it.
    h.grant(
        &frank,
        "frank@example.com",
        rules(r#"[{"role": "edit", "period": "1h"}]"#),
    );
    let (r, client) = frank.login().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["role"], "edit");
    let crbs = h.crbs().await;
    assert_eq!(crbs.len(), 1);
    assert_eq!(crbs[0].role_ref.name, "edit");
    assert_ne!(
        crbs[0].uid(),
        before,
        "roleRef is immutable: the binding is recreated (upstream B2)"
    );
    assert!(can(&client.unwrap(), "create", "configmaps", "default").await);
    // A token for the old role is refused once the grant no longer carries it.
    h.grant(&frank, "frank@example.com", rules(VIEW));
    let r = frank.get("/api/v1alpha1/kubeconfig").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("grant_changed")),
        "{}",
        r.text
    );
    h.stop().await;
}

async fn users_differing_after_the_at_sign_share_nothing(env: Arc<Env>) {
    let h = Harness::new(&env, "collision").await;
    let corp = h.user("alice@corp.com", rules(VIEW));
    let gmail = h.user(
        "alice@gmail.com",
        rules(r#"[{"role": "edit", "period": "1h"}]"#),
    );
    let (a, ca) = corp.login().await;
    let (b, cb) = gmail.login().await;
    assert_eq!((a.status, b.status), (200, 200));
    assert_ne!(a.body["session"], b.body["session"]);
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    let (wa, wb) = (whoami(&ca).await.unwrap(), whoami(&cb).await.unwrap());
    assert_ne!(
        wa, wb,
        "different users must never share a ServiceAccount (upstream truncated at @)"
    );
    assert_eq!(h.crbs().await.len(), 2);
    assert_eq!(h.names::<Secret>().await.len(), 2);
    assert!(
        !can(&ca, "create", "configmaps", "default").await
            && can(&cb, "create", "configmaps", "default").await
    );
    assert_eq!(corp.post("/api/v1alpha1/logout").await.status, 200);
    assert!(
        eventually(Duration::from_secs(12), || async {
            is_401(&whoami(&ca).await)
        })
        .await
        .is_some()
    );
    assert!(
        whoami(&cb).await.is_ok(),
        "the other user's session is untouched"
    );
    h.stop().await;
}

async fn twenty_concurrent_logins(env: Arc<Env>) {
    let h = Harness::with_config(&env, "concurrent", |c| c.api.rate_limit = 100).await;
    let users: Vec<User> = (0..20)
        .map(|i| h.user(&format!("user{i}@example.com"), rules(VIEW)))
        .collect();
    let replies = futures::future::join_all(users.iter().map(|u| u.login())).await;
    for (i, (r, _)) in replies.iter().enumerate() {
        assert_eq!(r.status, 200, "user{i}: {}", r.text);
    }
    assert_eq!(h.names::<TkaSignin>().await.len(), 20);
    assert_eq!(
        h.names::<ServiceAccount>().await.len(),
        21,
        "20 users + tka-controller"
    );
    assert_eq!(h.names::<Secret>().await.len(), 20);
    assert_eq!(h.crbs().await.len(), 20);
    let clients: Vec<Client> = replies.into_iter().map(|(_, c)| c.unwrap()).collect();
    let names = futures::future::join_all(clients.iter().map(whoami)).await;
    let distinct: std::collections::HashSet<_> = names.into_iter().map(Result::unwrap).collect();
    assert_eq!(distinct.len(), 20);
    h.stop().await;
}

async fn nothing_for(h: &Harness, login: &str) {
    let sa = sa_name(login);
    assert!(
        h.names::<TkaSignin>().await.is_empty(),
        "no TkaSignin may be left"
    );
    assert!(!h.names::<ServiceAccount>().await.contains(&sa));
    assert!(h.names::<Secret>().await.is_empty());
    assert!(h.crbs().await.is_empty());
}

async fn bad_grants_are_4xx_and_leave_nothing_behind(env: Arc<Env>) {
    let h = Harness::with_config(&env, "badgrant", |c| {
        c.operator.max_period = tka::model::duration::GoDuration::parse("2h").unwrap()
    })
    .await;
    for (grant, status, code) in [
        (r#"[{"role": "view"}]"#, 400, "invalid_grant"),
        (
            r#"[{"role": "view", "period": "5m"}]"#,
            400,
            "invalid_grant",
        ),
        (
            r#"[{"role": "view", "period": "8 hours"}]"#,
            400,
            "invalid_grant",
        ),
        (r#"["not an object"]"#, 400, "invalid_grant"),
        (r#"[]"#, 403, "no_grant"),
        (
            r#"[{"role": "view", "period": "1h", "clusters": ["other-*"]}]"#,
            403,
            "no_grant",
        ),
        (
            r#"[{"role": "cluster-admin", "period": "1h"}]"#,
            403,
            "role_not_allowed",
        ),
        (
            r#"[{"role": "view", "period": "1h"}, {"role": "edit", "period": "1h"}]"#,
            409,
            "ambiguous_grant",
        ),
    ] {
        let u = h.user("mallory@example.com", rules(grant));
        let r = u.post("/api/v1alpha1/login?wait=5s").await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (status, Some(code)),
            "grant {grant}: {}",
            r.text
        );
        assert!(!r.body["message"].as_str().unwrap_or("").is_empty());
        assert!(
            r.body["advice"].as_array().is_some_and(|a| !a.is_empty()),
            "advice for {grant}"
        );
        assert!(!r.body["request_id"].as_str().unwrap_or("").is_empty());
        nothing_for(&h, "mallory@example.com").await;
    }
    // An invalid rule is named by its index.
    let u = h.user(
        "mallory@example.com",
        rules(r#"[{"role": "view", "period": "1h"}, {"role": "edit", "period": "1m"}]"#),
    );
    let r = u.post("/api/v1alpha1/login").await;
    assert!(
        r.body["advice"][0].as_str().unwrap().contains("#1"),
        "{}",
        r.text
    );
    // A period above operator.maxPeriod is clamped to it.
    let u = h.user(
        "max@example.com",
        rules(r#"[{"role": "view", "period": "24h"}]"#),
    );
    let r = u.post("/api/v1alpha1/login?wait=10s").await;
    assert_eq!(r.status, 200);
    let until: Timestamp = r.body["until"].as_str().unwrap().parse().unwrap();
    let left = until.duration_since(Timestamp::now()).as_secs();
    assert!((7100..=7201).contains(&left), "clamped to 2h, got {left} s");
    // Unknown peer and identity outage.
    let stranger = User::new(crate::harness::fresh_ip(), &h.url);
    let r = stranger.post("/api/v1alpha1/login").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("unknown_peer"))
    );
    h.identity.set_down(true);
    let r = u.post("/api/v1alpha1/login").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (503, Some("identity_unavailable"))
    );
    assert!(r.headers.contains_key("retry-after"));
    h.identity.set_down(false);
    h.stop().await;
}

async fn bad_requests_get_error_bodies(env: Arc<Env>) {
    let h = Harness::new(&env, "badreq").await;
    let u = h.user("oscar@example.com", rules(VIEW));
    let r = u
        .send(
            u.http
                .post(format!("{}/api/v1alpha1/login", u.base))
                .body(vec![b'x'; 100_000]),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (413, Some("payload_too_large")),
        "{}",
        r.text
    );
    let r = u
        .send(
            u.http
                .post(format!("{}/api/v1alpha1/login", u.base))
                .header("x-padding", "y".repeat(20_000)),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (431, Some("headers_too_large")),
        "{}",
        r.text
    );
    let r = u.get("/api/v1alpha1/nope").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (404, Some("not_found"))
    );
    let r = u
        .send(u.http.delete(format!("{}/api/v1alpha1/login", u.base)))
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.body["code"], "method_not_allowed");
    assert!(
        r.body["advice"][0]
            .as_str()
            .is_some_and(|a| a.contains("Allow")),
        "{}",
        r.text
    );
    assert!(r.headers.contains_key("allow"));
    let r = u.post("/api/v1alpha1/login?wait=forever").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let r = u.post("/api/v1alpha1/login?include=kubeconfig").await;
    assert_eq!(r.status, 400, "include needs wait");
    // Identity headers from the client are ignored; the Funnel header is refused.
    let r = u
        .send(
            u.http
                .post(format!("{}/api/v1alpha1/login", u.base))
                .header("Tailscale-Funnel-Request", "?1"),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("funnel_not_allowed"))
    );
    let r = u
        .send(
            u.http
                .get(format!("{}/api/v1alpha1/whoami", u.base))
                .header("Tailscale-User-Login", "admin@example.com"),
        )
        .await;
    assert_eq!(r.body["login_name"], "oscar@example.com");
    nothing_for(&h, "oscar@example.com").await;
    // The request ID is echoed.
    let r = u
        .send(
            u.http
                .get(format!("{}/api/v1alpha1/nope", u.base))
                .header("x-request-id", "abc-123"),
        )
        .await;
    assert_eq!(r.body["request_id"], "abc-123");
    let r = u.get("/openapi.json").await;
    assert_eq!(r.body["openapi"], "3.1.0");
    h.stop().await;
}

async fn unicode_and_odd_login_names_work(env: Arc<Env>) {
    let h = Harness::new(&env, "names").await;
    for login in [
        "Ünïcødé_Üser+ops@Example.COM",
        "UPPER.case@x",
        "___@@@",
        "a@b",
    ] {
        let u = h.user(login, rules(VIEW));
        let (r, client) = u.login().await;
        assert_eq!(r.status, 200, "{login}: {}", r.text);
        assert_eq!(r.body["username"], login, "the full login name is kept");
        let who = whoami(&client.unwrap()).await.unwrap();
        assert!(who.ends_with(&sa_name(login)), "{who}");
        assert_eq!(u.post("/api/v1alpha1/logout").await.status, 200);
    }
    h.stop().await;
}

async fn namespaced_rule_uses_role_bindings(env: Arc<Env>) {
    let h = Harness::new(&env, "nsrule").await;
    crate::harness::apply_value(
        &h.admin,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t-nsrule-team"}}),
    )
    .await;
    let u = h.user("nina@example.com", rules(r#"[{"role": "edit", "period": "1h", "namespaces": ["t-nsrule-team", "t-nsrule-missing"]}]"#));
    let (r, client) = u.login().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        h.crbs().await.is_empty(),
        "a namespaced rule makes no ClusterRoleBinding"
    );
    let client = client.unwrap();
    assert!(can(&client, "create", "configmaps", "t-nsrule-team").await);
    assert!(!can(&client, "create", "configmaps", "default").await);
    assert_eq!(
        r.body["kubeconfig"]["contexts"][0]["context"]["namespace"],
        "t-nsrule-team"
    );
    let api: Api<TkaSignin> = Api::namespaced(h.admin.clone(), &h.ns);
    let s = api.get(r.body["session"].as_str().unwrap()).await.unwrap();
    let degraded = s
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded condition");
    assert!(degraded.message.contains("t-nsrule-missing"));
    h.stop().await;
}

async fn crd_validation_rejects_short_periods_and_key_changes(env: Arc<Env>) {
    let h = Harness::new(&env, "crd").await;
    let api: Api<TkaSignin> = Api::namespaced(h.admin.clone(), &h.ns);
    let mut s = TkaSignin::new(
        "tka-x-abc",
        tka::operator::crd::TkaSigninSpec {
            username: "x@y".into(),
            role: "view".into(),
            validity_period: "5m0s".into(),
            // The controller ends sessions whose key is not the user's current one.
            subject_key: naming::subject_key("x@y"),
            node_id: "n1".into(),
            ..Default::default()
        },
    );
    let err = api.create(&PostParams::default(), &s).await.unwrap_err();
    assert!(err.to_string().contains("at least 10m"), "{err}");
    s.spec.validity_period = "10m0s".into();
    api.create(&PostParams::default(), &s).await.unwrap();
    let err = api
        .patch(
            "tka-x-abc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"subject_key": "other-aaaaaaaa"}})),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");
    let err = api
        .patch(
            "tka-x-abc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"subject_key": "Not_Valid"}})),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("subject_key"), "{err}");
    h.stop().await;
}

async fn upstream_objects_are_migrated(env: Arc<Env>) {
    let h = Harness::new(&env, "legacy").await;
    let admin = h.admin.clone();
    // What upstream TKA 0.2 left behind: username truncated at '@', SA and CRB named after it, no subject_key.
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &h.ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "tka-user-olduser"}})).unwrap(),
    )
    .await
    .unwrap();
    crate::harness::apply_value(
        &admin,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "tka-user-olduser-binding"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "tka-user-olduser", "namespace": h.ns}]}),
    )
    .await;
    let api: Api<TkaSignin> = Api::namespaced(admin.clone(), &h.ns);
    let legacy = TkaSignin::new(
        "tka-user-olduser",
        tka::operator::crd::TkaSigninSpec {
            username: "olduser".into(),
            role: "view".into(),
            validity_period: "8h0m0s".into(),
            ..Default::default()
        },
    );
    api.create(&PostParams::default(), &legacy).await.unwrap();
    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(admin.clone());
    let gone = eventually(Duration::from_secs(10), || async {
        api.get_opt("tka-user-olduser").await.unwrap().is_none()
            && sas.get_opt("tka-user-olduser").await.unwrap().is_none()
            && crbs
                .get_opt("tka-user-olduser-binding")
                .await
                .unwrap()
                .is_none()
    })
    .await;
    assert!(gone.is_some(), "upstream objects must be removed");
    h.stop().await;
}

async fn kubeconfig_representations(env: Arc<Env>) {
    let h = Harness::new(&env, "kubeconfig").await;
    let u = h.user("kate@example.com", rules(VIEW));
    assert_eq!(
        u.get("/api/v1alpha1/kubeconfig").await.status,
        401,
        "no session yet"
    );
    let r = u.post("/api/v1alpha1/login?wait=15s").await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Default: the upstream map-shaped JSON.
    let r = u.get("/api/v1alpha1/kubeconfig").await;
    assert_eq!(r.status, 200);
    assert!(
        r.body["users"]["tka-user-kate@example.com"]["token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert_eq!(r.body["current-context"], "tka-context-kate@example.com");
    // YAML (q-values honoured) is always the loadable v1 document.
    let r = u
        .send(
            u.http
                .get(format!("{}/api/v1alpha1/kubeconfig", u.base))
                .header("accept", "application/json;q=0.1, application/yaml"),
        )
        .await;
    assert_eq!(r.headers["content-type"], "application/yaml");
    let doc: serde_json::Value = serde_yaml::from_str(&r.text).unwrap();
    let client = crate::harness::client_from(&doc).await;
    assert!(
        whoami(&client).await.is_ok(),
        "the YAML kubeconfig must be loadable and work"
    );
    let r = u.get("/api/v1alpha1/kubeconfig?format=v1&auth=exec").await;
    assert_eq!(r.body["users"][0]["user"]["exec"]["command"], "tka");
    let r = u.get("/api/v1alpha1/cluster-info").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["server_url"], env.cp.server_url());
    h.stop().await;
}

async fn exec_credential_and_session_status(env: Arc<Env>) {
    let h = Harness::new(&env, "exec").await;
    let u = h.user("ed@example.com", rules(VIEW));
    assert_eq!(u.get("/api/v1alpha1/login").await.status, 401);
    let r = u.post("/api/v1alpha1/login").await;
    assert_eq!(
        r.status, 202,
        "without wait the login answers 202 as upstream: {}",
        r.text
    );
    let r = u.get("/api/v1alpha1/login?wait=15s").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["provisioned"], true);
    let r = u
        .get("/api/v1alpha1/exec-credential?apiVersion=client.authentication.k8s.io/v1beta1")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["apiVersion"], "client.authentication.k8s.io/v1beta1");
    let expiry: Timestamp = r.body["status"]["expirationTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let secs = expiry.duration_since(Timestamp::now()).as_secs();
    assert!(
        (3500..=3601).contains(&secs),
        "exec token lifetime min(ttl 1h, session): {secs}"
    );
    // The expiry is recorded on the session (at most one write per 5 s).
    let api: Api<TkaSignin> = Api::namespaced(h.admin.clone(), &h.ns);
    let session = api.list(&Default::default()).await.unwrap().items[0].name_any();
    let recorded = eventually(Duration::from_secs(8), || async {
        let s = api.get(&session).await.unwrap();
        s.status
            .and_then(|st| st.token_expires_at)
            .is_some_and(|t| t.0.as_second() == expiry.as_second())
    })
    .await;
    assert!(
        recorded.is_some(),
        "status.token_expires_at records the minted token's expiry"
    );
    let r = u.get("/api/v1alpha1/whoami").await;
    assert_eq!(r.body["selected"]["role"], "view");
    let r = u.get("/api/v1alpha1/clusters").await;
    assert_eq!(r.body[0]["name"], crate::harness::CLUSTER);
    h.stop().await;
}

/// Runs the real `tka` binary as the user at `ip`, with its own config home.
fn tka(h: &Harness, user: &User, home: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tka"))
        .args(["--server", &h.url])
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("KUBECONFIG", home.join(".kube/config"))
        .env("SHELL", "/bin/bash")
        .env("TKA_TEST_BIND_ADDRESS", user.ip.to_string())
        .env_remove("TKA_CONFIG")
        .output()
        .expect("tka runs")
}

fn kubectl(env: &Env, kubeconfig: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env.cp.kubectl())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("kubectl runs")
}

async fn cli_login_gives_kubectl_exactly_the_role(env: Arc<Env>) {
    let h = Harness::new(&env, "cli").await;
    let home = tempfile::tempdir().unwrap();
    let stranger = h.user("nobody@example.com", rules("[]"));
    let out = tka(&h, &stranger, home.path(), &["login"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "no grant is exit 3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no access"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let user = h.user("cli@example.com", rules(VIEW));
    let out = tka(&h, &user, home.path(), &["login", "--quiet"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Quiet mode prints only the export line, ready for eval.
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let export = stdout
        .trim()
        .strip_prefix("export KUBECONFIG='")
        .and_then(|r| r.strip_suffix('\''))
        .expect("POSIX export line")
        .to_string();
    let managed = export.split(':').next().unwrap().to_string();
    let meta = std::fs::metadata(&managed).expect("managed kubeconfig written");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );

    let who = kubectl(
        &env,
        &export,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&who.stdout),
        format!(
            "system:serviceaccount:{}:{}",
            h.ns,
            sa_name("cli@example.com")
        ),
        "{}",
        String::from_utf8_lossy(&who.stderr)
    );
    let get = kubectl(&env, &export, &["get", "configmaps", "-n", "default"]);
    assert!(
        get.status.success(),
        "view may list: {}",
        String::from_utf8_lossy(&get.stderr)
    );
    let create = kubectl(&env, &export, &["create", "namespace", "not-allowed"]);
    assert!(!create.status.success());
    assert!(
        String::from_utf8_lossy(&create.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&create.stderr)
    );

    let out = tka(&h, &user, home.path(), &["get", "login", "-o", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["role"], "view");
    let out = tka(&h, &user, home.path(), &["logout"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !std::path::Path::new(&managed).exists(),
        "logout removes the managed kubeconfig"
    );
    let out = tka(&h, &user, home.path(), &["logout"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "a second logout is 'not signed in'"
    );
    h.stop().await;
}

/// The real tailscaled backend against a real (not logged-in) tailscaled: while the daemon is missing the
/// API answers 503 with advice and `/ready` is false; once a daemon appears on the socket, the same server
/// recovers by itself, and an address the daemon does not know is a 403, never a guess.
async fn tailscaled_outage_is_503_and_recovers_without_restart(env: Arc<Env>) {
    use tka::identity::tailscaled::{TailscaledIdentity, localapi::LocalApi};
    let mut h = Harness::new(&env, "tsoutage").await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tailscaled.sock");
    h.use_backend(TailscaledIdentity::start(LocalApi::new(&socket)))
        .await;
    let u = User::new(crate::harness::fresh_ip(), &h.url);
    let ready = |h: &Harness| {
        let url = format!("{}/ready", h.health_url);
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };

    let r = u.post("/api/v1alpha1/login").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (503, Some("identity_unavailable")),
        "{}",
        r.text
    );
    assert!(r.headers.contains_key("retry-after"));
    assert!(
        !r.text.contains("tailscaled.sock"),
        "internal details stay in the log"
    );
    let body = ready(&h).await;
    assert_eq!(
        (body["status"].as_str(), body["reason"].as_str()),
        (Some("not ready"), Some("tailnet_not_running")),
        "{body}"
    );

    let bin = std::env::var("TKA_PEERS_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/bin")
        });
    let mut daemon = tokio::process::Command::new(bin.join("tailscaled"))
        .args([
            "--tun=userspace-networking",
            "--no-logs-no-support",
            "--port=0",
        ])
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--statedir={}", dir.path().join("state").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("tests/peers/bin/tailscaled (run tests/peers/build.sh)");
    let recovered = eventually(Duration::from_secs(20), || async {
        u.post("/api/v1alpha1/login").await.status != 503
    })
    .await;
    assert!(
        recovered.is_some(),
        "the server must recover when tailscaled comes back"
    );
    let r = u.post("/api/v1alpha1/login").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("unknown_peer")),
        "{}",
        r.text
    );
    let _ = daemon.kill().await;
    nothing_for(&h, "anyone").await;
    h.stop().await;
}

/// Upstream B3: deprovisioning failed on NotFound and retried forever.
async fn objects_deleted_by_hand_do_not_block_cleanup(env: Arc<Env>) {
    let h = Harness::new(&env, "byhand").await;
    let u = h.user("hand@example.com", rules(VIEW));
    let (r, _) = u.login().await;
    assert_eq!(r.status, 200);
    // No managed object but the TkaSignin carries a finalizer (a held Secret keeps tokens valid).
    let sa = sa_name("hand@example.com");
    let sas: Api<ServiceAccount> = Api::namespaced(h.admin.clone(), &h.ns);
    assert!(sas.get(&sa).await.unwrap().metadata.finalizers.is_none());
    assert!(h.crbs().await[0].metadata.finalizers.is_none());
    let secrets: Api<Secret> = Api::namespaced(h.admin.clone(), &h.ns);
    for s in secrets.list(&Default::default()).await.unwrap() {
        assert!(s.metadata.finalizers.is_none());
    }
    sas.delete(&sa, &Default::default()).await.unwrap();
    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(h.admin.clone());
    let crb = naming::binding_name(&naming::subject_key("hand@example.com"), &h.ns);
    crbs.delete(&crb, &Default::default()).await.unwrap();
    assert_eq!(u.post("/api/v1alpha1/logout").await.status, 200);
    let done = eventually(Duration::from_secs(10), || async {
        h.names::<TkaSignin>().await.is_empty()
    })
    .await;
    assert!(
        done.is_some(),
        "cleanup must complete although objects were already gone"
    );
    assert!(h.crbs().await.is_empty() && h.names::<Secret>().await.is_empty());
    h.stop().await;
}

/// Upstream B4/B5: a re-login right after logout (or during cleanup) must give a working session.
async fn logout_login_loops_never_break_the_new_session(env: Arc<Env>) {
    let h = Harness::new(&env, "loops").await;
    let u = h.user("loop@example.com", rules(VIEW));
    for round in 0..10 {
        let (r, client) = u.login().await;
        assert_eq!(r.status, 200, "round {round}: {}", r.text);
        let who = whoami(&client.unwrap()).await;
        assert!(
            who.is_ok(),
            "round {round}: the new session's token must work: {who:?}"
        );
        assert_eq!(
            u.post("/api/v1alpha1/logout").await.status,
            200,
            "round {round}"
        );
    }
    let (r, client) = u.login().await;
    assert_eq!(r.status, 200);
    // Still valid a little later: nothing of an earlier round's cleanup catches up with it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(whoami(&client.unwrap()).await.is_ok());
    assert_eq!(
        h.names::<Secret>().await.len(),
        1,
        "exactly the new session's Secret"
    );
    h.stop().await;
}

async fn a_second_device_with_another_role_conflicts(env: Arc<Env>) {
    let h = Harness::new(&env, "conflict").await;
    let laptop = h.user("dual@example.com", rules(VIEW));
    let desktop = h.user(
        "dual@example.com",
        rules(r#"[{"role": "edit", "period": "1h"}]"#),
    );
    assert_eq!(laptop.login().await.0.status, 200);
    let r = desktop.post("/api/v1alpha1/login?wait=10s").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (409, Some("role_conflict")),
        "{}",
        r.text
    );
    assert!(r.body["advice"][0].as_str().unwrap().contains("--replace"));
    let r = desktop
        .post("/api/v1alpha1/login?wait=10s&replace=true")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.names::<TkaSignin>().await.len() == 1
        })
        .await
        .is_some()
    );
    assert_eq!(h.crbs().await[0].role_ref.name, "edit");
    // The same role on a second device is no conflict: both sessions share the user's SA.
    let third = h.user(
        "dual@example.com",
        rules(r#"[{"role": "edit", "period": "1h"}]"#),
    );
    assert_eq!(third.login().await.0.status, 200);
    assert_eq!(h.names::<TkaSignin>().await.len(), 2);
    // Logging out one device keeps the user's SA and binding for the other.
    assert_eq!(third.post("/api/v1alpha1/logout").await.status, 200);
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.names::<TkaSignin>().await.len() == 1
        })
        .await
        .is_some()
    );
    assert!(
        h.names::<ServiceAccount>()
            .await
            .contains(&sa_name("dual@example.com"))
    );
    assert_eq!(h.crbs().await.len(), 1);
    h.stop().await;
}

/// Two devices of one user log in at the same moment with different roles: the API's check (on its cache)
/// can let both through, so the controller decides under its per-user lock. Exactly one wins, the other gets
/// 409, the binding is never flipped back and forth, and each token carries only its own role.
async fn concurrent_logins_with_two_roles_leave_one_binding(env: Arc<Env>) {
    let h = Harness::new(&env, "race").await;
    let laptop = h.user("race@example.com", rules(VIEW));
    let desktop = h.user(
        "race@example.com",
        rules(r#"[{"role": "edit", "period": "1h"}]"#),
    );
    let (mut won_view, mut won_edit) = (0, 0);
    for round in 0..20 {
        let ((a, ca), (b, cb)) = futures::join!(laptop.login(), desktop.login());
        let statuses = (a.status, b.status);
        let (winner, role) = match statuses {
            (200, 409) => (ca.expect("token"), "view"),
            (409, 200) => (cb.expect("token"), "edit"),
            other => panic!(
                "round {round}: {other:?}: {} / {}",
                a.body["code"], b.body["code"]
            ),
        };
        let loser = if role == "view" { &b } else { &a };
        assert_eq!(loser.body["code"], "role_conflict", "{}", loser.text);
        // Only its own role: view may list pods but not create configmaps; edit may create them. The
        // apiserver's RBAC cache takes a moment to see a new binding.
        let (verb, resource) = if role == "edit" {
            ("create", "configmaps")
        } else {
            ("list", "pods")
        };
        let allowed = eventually(Duration::from_secs(10), || {
            can(&winner, verb, resource, &h.ns)
        });
        assert!(
            allowed.await.is_some(),
            "round {round}: the {role} token may not {verb} {resource}"
        );
        assert_eq!(
            can(&winner, "create", "configmaps", &h.ns).await,
            role == "edit",
            "round {round}: the {role} token has another role's rights"
        );
        let crbs = h.crbs().await;
        assert_eq!(crbs.len(), 1, "round {round}");
        assert_eq!(crbs[0].role_ref.name, role, "round {round}");
        if role == "view" {
            won_view += 1
        } else {
            won_edit += 1
        }
        if round < 19 {
            assert_eq!(
                laptop.post("/api/v1alpha1/logout?all=true").await.status,
                200
            );
            let gone = eventually(Duration::from_secs(10), || async {
                h.names::<TkaSignin>().await.is_empty()
            });
            assert!(gone.await.is_some(), "round {round}: sessions left");
        }
    }
    // No reconcile loop: with both sessions in place nothing is reconciled while nobody acts (once the last
    // token's expiry, recorded in status within 5 s, has been seen).
    tokio::time::sleep(Duration::from_secs(7)).await;
    let reconciles = || {
        h.metric(
            "/metrics/controller",
            "tka_controller_reconciliations_total",
            "",
        )
    };
    let before = reconciles().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = reconciles().await;
    assert_eq!(before, after, "reconciles went on without any change");
    assert_eq!(h.crbs().await.len(), 1);
    eprintln!("concurrent logins: view won {won_view}, edit won {won_edit} of 20");
    h.stop().await;
}

/// Upstream wrote status from the API right after create and raced the controller; and replaced the whole
/// annotation map on re-login.
async fn only_the_controller_writes_status_and_foreign_annotations_survive(env: Arc<Env>) {
    let h = Harness::new(&env, "owners").await;
    let u = h.user("own@example.com", rules(VIEW));
    let (r, _) = u.login().await;
    let name = r.body["session"].as_str().unwrap().to_string();
    let api: Api<TkaSignin> = Api::namespaced(h.admin.clone(), &h.ns);
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"example.com/owner": "team-a"}}})),
    )
    .await
    .unwrap();
    assert_eq!(u.login().await.0.status, 200);
    let s = api.get(&name).await.unwrap();
    let ann = s.metadata.annotations.clone().unwrap();
    assert_eq!(
        ann["example.com/owner"], "team-a",
        "foreign annotations are preserved"
    );
    assert!(ann.contains_key("tka.specht-labs.de/last-attempted-sign-in"));
    for mf in s.metadata.managed_fields.unwrap() {
        let status_writer = mf.subresource.as_deref() == Some("status");
        let manager = mf.manager.unwrap_or_default();
        if status_writer {
            assert_eq!(
                manager, "tka-controller",
                "only the controller writes status"
            );
        }
        if manager == "tka-api" {
            assert!(!status_writer);
        }
    }
    h.stop().await;
}

/// Two replicas contend for the Lease with the server's own (least-privilege) credentials: exactly one
/// leads; when it stops renewing (a crash), the other takes over within leaseDuration + 5 s; a released
/// Lease is taken within a few retry periods; never two leaders.
async fn leader_election_has_one_leader_and_fails_over(env: Arc<Env>) {
    use tka::server::leader::{Elector, Settings};
    let h = Harness::new(&env, "leader").await;
    let settings = |id: &str| Settings {
        namespace: h.ns.clone(),
        lease_name: "controller.tka.specht-labs.de".into(),
        identity: id.into(),
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(300),
    };
    let a = Elector::new(h.server_client.clone(), settings("pod-a_1"));
    let b = Elector::new(h.server_client.clone(), settings("pod-b_2"));
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "the first candidate leads"
    );
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "never two leaders"
    );
    assert!(a.try_acquire_or_renew().await.unwrap(), "the leader renews");
    // a crashes: it stops renewing. b must take over after the lease expires, not before.
    let started = std::time::Instant::now();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    assert!(b.acquire(stop_rx.clone()).await.is_some());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "took over before the lease expired: {took:?}"
    );
    assert!(
        took <= Duration::from_secs(3 + 5),
        "takeover within leaseDuration + 5 s: {took:?}"
    );
    assert!(
        !a.try_acquire_or_renew().await.unwrap(),
        "the old leader may not come back while b renews"
    );
    // A released Lease is taken at once.
    b.release().await;
    let started = std::time::Instant::now();
    assert!(a.acquire(stop_rx).await.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "released lease taken quickly: {:?}",
        started.elapsed()
    );
    h.stop().await;
}

async fn revoked_grants_end_sessions_but_outages_do_not(env: Arc<Env>) {
    let h = Harness::with_config(&env, "revalidate", |c| {
        c.operator.revalidate_interval = tka::model::duration::GoDuration::from_secs(1)
    })
    .await;
    let keep = h.user("keep@example.com", rules(VIEW));
    let lose = h.user("lose@example.com", rules(VIEW));
    assert_eq!(keep.login().await.0.status, 200);
    assert_eq!(lose.login().await.0.status, 200);
    // An identity outage revokes nothing.
    h.identity.set_down(true);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    h.identity.set_down(false);
    assert_eq!(
        h.names::<TkaSignin>().await.len(),
        2,
        "an outage must not end sessions"
    );
    // The tailnet admin takes lose's grant away: the session ends without any request from lose.
    h.grant(&lose, "lose@example.com", rules("[]"));
    let gone = eventually(Duration::from_secs(6), || async {
        h.names::<TkaSignin>().await.len() == 1
    })
    .await;
    assert!(gone.is_some(), "a revoked grant must end the session");
    let left = h.names::<TkaSignin>().await;
    assert!(left[0].contains("keep-example-com"), "{left:?}");
    h.stop().await;
}

async fn per_node_rate_limit(env: Arc<Env>) {
    let h = Harness::with_config(&env, "ratelimit", |c| {
        c.api.rate_limit = 1;
        c.api.rate_burst = 2;
    })
    .await;
    let u = h.user("fast@example.com", rules(VIEW));
    let statuses: Vec<u16> =
        futures::future::join_all((0..6).map(|_| u.get("/api/v1alpha1/whoami")))
            .await
            .iter()
            .map(|r| r.status)
            .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let r = u.get("/api/v1alpha1/whoami").await;
    if r.status == 429 {
        assert_eq!(r.body["code"], "rate_limited");
        assert!(r.headers.contains_key("retry-after"));
    }
    // Another device is not affected.
    let other = h.user("calm@example.com", rules(VIEW));
    assert_eq!(other.get("/api/v1alpha1/whoami").await.status, 200);
    h.stop().await;
}

/// A graceful stop while users keep logging in, over TLS with HTTP/2 and HTTP/1.1 as curl and the CLI speak
/// it (each request a new connection, as each `tka login` is): every connection the server accepted gets a
/// whole answer (200, or 503 `shutting_down` for a login still waiting), none is cut off or reset; the rest
/// are refused before they connect (curl exit 7). Before the drain served connections whose first request
/// was not read yet, curl exited 18 (HTTP/2 stream cut), 52 or 56 (HTTP/1.1), or 35 (reset in the backlog).
async fn a_graceful_stop_answers_every_login_in_flight(env: Arc<Env>) {
    let mut h = Harness::new(&env, "graceful").await;
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    h.use_tls(cert_file.clone(), key_file).await;
    let users: Vec<User> = (0..30)
        .map(|i| h.user(&format!("graceful{i}@example.com"), rules(VIEW)))
        .collect();
    let stop_at = tokio::time::Instant::now() + Duration::from_millis(1500);
    let url = format!("{}/api/v1alpha1/login?wait=10s", h.url);
    let loops = users.iter().enumerate().map(|(i, u)| {
        let (url, ca) = (url.clone(), cert_file.clone());
        async move {
            let protocol = if i % 2 == 0 { "--http2" } else { "--http1.1" };
            let mut exits = Vec::new();
            // Until refused: the listener is closed.
            while exits.last() != Some(&7) {
                let status = tokio::process::Command::new("curl")
                    .args(["-s", "-o", "/dev/null", "-m", "10", "-X", "POST", protocol])
                    .arg("--cacert")
                    .arg(&ca)
                    .args(["--interface", &u.ip.to_string(), &url])
                    .status()
                    .await
                    .expect("curl runs");
                exits.push(status.code().unwrap_or(-1));
            }
            (protocol, exits)
        }
    });
    let stopper = async {
        tokio::time::sleep_until(stop_at).await;
        h.stop().await;
    };
    let (runs, ()) = tokio::join!(futures::future::join_all(loops), stopper);
    let answered: usize = runs
        .iter()
        .map(|(_, e)| e.iter().filter(|&&c| c == 0).count())
        .sum();
    let bad: Vec<String> = runs
        .iter()
        .flat_map(|(p, exits)| {
            exits
                .iter()
                .filter(|&&c| c != 0 && c != 7)
                .map(move |c| format!("{p}: curl exit {c}"))
        })
        .collect();
    assert!(
        answered >= 30,
        "only {answered} logins answered before the stop: the test proves nothing"
    );
    assert!(
        bad.is_empty(),
        "{} requests cut off or reset ({answered} answered): {bad:?}",
        bad.len()
    );
}
