//! Federation against two real control planes: a primary and a member
//! tka-server, each with its own apiserver, talking over loopback with the static identity backend mapping
//! each node's address to its tailnet identity (WhoIs), as tailscaled would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::{Value, json};
use tka::operator::crd::TkaSignin;

use crate::harness::{
    self, Env, Federated, MEMBER_NODE as MEMBER, PRIMARY_NODE as PRIMARY, User, eventually,
    fresh_ip, node,
};
use crate::scenarios::whoami;

scenarios!(
    federation_login_fans_out_survives_a_dead_member_and_logout_revokes_both,
    federation_logout_reaches_a_member_that_was_down_once_it_is_back,
    federation_logout_reaches_a_removed_member_once_it_registers_again,
    federation_exec_credential_relays_per_cluster,
    federation_member_without_direct_login_serves_only_the_primary,
    federation_clusters_marks_itself_rebuilding_after_start,
    federation_admits_members_by_capability,
);

/// A grant for every cluster of the federation.
fn everywhere() -> Value {
    json!([{"role": "view", "period": "1h", "clusters": ["*"]}])
}

/// Logs in at the primary; asserts both clusters are ready; returns the reply and a client for the
/// member's context.
async fn login_both(u: &User) -> (harness::Reply, Client) {
    let r = u
        .login_settled("/api/v1alpha1/login?wait=15s&include=kubeconfig&format=v1")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (status_of(&r.body, "primary"), status_of(&r.body, "member")),
        ("ready".into(), "ready".into()),
        "{}",
        r.text
    );
    let ctx = format!("member-{}", r.body["username"].as_str().unwrap());
    let on_member = client_for(&r.body["kubeconfig"], &ctx).await;
    (r, on_member)
}

/// A client of the apiserver at `server` (CA `ca_pem`) with a bare token.
async fn with_token(server: &str, ca_pem: &str, token: &str) -> Client {
    harness::client_from(&harness::token_kubeconfig(server, ca_pem, token)).await
}

/// Users with a session on the cluster of `signins`.
async fn signed_in(signins: &Api<TkaSignin>) -> Vec<String> {
    signins
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.spec.username)
        .collect()
}

/// Asserts that the apiserver `on` (URL, CA) accepts `token` and `not_on` refuses it.
async fn works_only_on(token: &str, on: (&str, &str), not_on: (&str, &str)) {
    let who = whoami(&with_token(on.0, on.1, token).await).await;
    assert!(who.is_ok(), "refused by {}: {who:?}", on.0);
    let who = whoami(&with_token(not_on.0, not_on.1, token).await).await;
    assert!(who.is_err(), "also accepted by {}: {who:?}", not_on.0);
}

/// Waits until `c`'s token is refused (the apiserver may honour a token for up to 10 s from its cache).
async fn refused_within(c: &Client, limit: Duration) -> Option<Duration> {
    eventually(limit, || async { whoami(c).await.is_err() }).await
}

/// A kube client for one context of a kubeconfig document.
async fn client_for(doc: &Value, context: &str) -> Client {
    let kc = Kubeconfig::from_yaml(&serde_yaml::to_string(doc).unwrap()).unwrap();
    let opts = KubeConfigOptions {
        context: Some(context.into()),
        ..Default::default()
    };
    let cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

fn contexts(doc: &Value) -> Vec<String> {
    doc["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

fn status_of(r: &Value, cluster: &str) -> String {
    r["clusters"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == cluster))
        .map(|c| c["status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| "absent".into())
}

async fn listed(u: &User) -> Vec<String> {
    let r = u.get("/api/v1alpha1/clusters").await;
    r.body
        .as_array()
        .map(|l| {
            l.iter()
                .map(|c| {
                    format!(
                        "{}={}",
                        c["name"].as_str().unwrap(),
                        c["status"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn federation_login_fans_out_survives_a_dead_member_and_logout_revokes_both(env: Arc<Env>) {
    let Federated {
        primary,
        mut member,
        member_env,
        member_ip: m_ip,
        ..
    } = Federated::start(
        &env,
        "fed",
        |c| c.operator.revalidate_interval = tka::model::duration::GoDuration::from_secs(1),
        |_| {},
        |n| n,
    )
    .await;
    let x_ip = fresh_ip();

    let rules = json!([{"role": "view", "period": "1h", "clusters": ["*"]}]);
    let alice = primary.user("alice@example.com", rules.clone());
    let registered = eventually(Duration::from_secs(10), || async {
        listed(&alice).await.contains(&"member=healthy".to_string())
    })
    .await;
    assert!(
        registered.is_some(),
        "member registers: {:?}",
        listed(&alice).await
    );
    let metrics = reqwest::get(format!("{}/metrics", primary.health_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tka_federation_members{state=\"healthy\"} 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("federation"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!metrics.contains("alice"), "no user names in metrics");
    // The member knows when its heartbeat was last accepted (what `tka-server doctor` reads there).
    let member_metrics = reqwest::get(format!("{}/metrics", member.health_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let last = tka::doctor::server_probe::metric(
        &member_metrics,
        "tka_federation_last_heartbeat_timestamp_seconds",
        None,
    )
    .unwrap_or_default();
    let age = jiff::Timestamp::now().as_second() as f64 - last;
    assert!(
        (0.0..10.0).contains(&age),
        "last accepted heartbeat {age} s ago"
    );

    // One login at the primary: one kubeconfig, a context per cluster, each working on its own apiserver.
    let (r, _) = login_both(&alice).await;
    let doc = r.body["kubeconfig"].clone();
    let ctxs = contexts(&doc);
    assert_eq!(ctxs.len(), 2, "{ctxs:?}");
    assert_eq!(doc["current-context"], "tka-context-alice@example.com");
    assert!(
        ctxs.contains(&"member-alice@example.com".to_string()),
        "{ctxs:?}"
    );
    let on_primary = client_for(&doc, "tka-context-alice@example.com").await;
    let on_member = client_for(&doc, "member-alice@example.com").await;
    let who_p = whoami(&on_primary).await.unwrap();
    let who_m = whoami(&on_member).await.unwrap();
    assert!(who_p.contains(":t-fed-primary:"), "{who_p}");
    assert!(who_m.contains(":t-fed-member:"), "{who_m}");
    let pods: Api<Pod> = Api::namespaced(on_member.clone(), "default");
    pods.list(&Default::default())
        .await
        .expect("view on the member");
    let signins: Api<TkaSignin> = Api::namespaced(member.admin.clone(), &member.ns);
    let on_member_objs = signins.list(&Default::default()).await.unwrap().items;
    assert_eq!(on_member_objs.len(), 1);
    let origin = on_member_objs[0].spec.origin.clone().unwrap();
    assert_eq!(
        (origin.kind.as_str(), origin.primary.as_str()),
        ("federation", PRIMARY)
    );

    // Relays: /kubeconfig and /exec-credential?cluster= at the primary.
    let k = alice.get("/api/v1alpha1/kubeconfig?format=v1").await;
    assert_eq!(k.status, 200, "{}", k.text);
    assert_eq!(contexts(&k.body).len(), 2);
    let e = alice
        .get("/api/v1alpha1/exec-credential?cluster=member")
        .await;
    assert_eq!(e.status, 200, "{}", e.text);
    assert!(!e.body["status"]["token"].as_str().unwrap().is_empty());

    // A member accepts federation calls only from its primary.
    member
        .identity
        .set(x_ip, node("intruder.test.ts.net", "nx", x_ip, &["tag:tka"]));
    let intruder = User::new(x_ip, &member.url);
    let body = json!({"login_name": "mallory@example.com", "node": "m", "node_id": "nm", "role": "edit", "period": "1h"});
    let x = intruder
        .post_json("/federation/v1alpha1/sessions", &body)
        .await;
    assert_eq!(
        (x.status, x.body["code"].as_str()),
        (403, Some("not_primary")),
        "{}",
        x.text
    );
    let token_call =
        json!({"login_name": "alice@example.com", "node_id": alice_node(&alice), "kind": "exec"});
    let x = intruder
        .post_json("/federation/v1alpha1/tokens", &token_call)
        .await;
    assert_eq!(x.status, 403, "{}", x.text);

    // A node without the member tag cannot join.
    primary
        .identity
        .set(x_ip, node("intruder.test.ts.net", "nx", x_ip, &["tag:tka"]));
    let hb = json!({"cluster_name": "evil", "member_url": "http://intruder.test.ts.net:8443", "api_endpoint": "https://10.9.9.9:6443"});
    let intruder_p = User::new(x_ip, &primary.url);
    let x = intruder_p
        .post_json("/federation/v1alpha1/heartbeat", &hb)
        .await;
    assert_eq!(
        (x.status, x.body["code"].as_str()),
        (403, Some("member_not_allowed")),
        "{}",
        x.text
    );

    // A member that accepts connections but never answers: the login still answers within
    // requestTimeout (2 s) plus the own cluster's work, and the primary's own cluster is unaffected.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    primary
        .identity
        .set_host(MEMBER, hole.local_addr().unwrap());
    let t = Instant::now();
    let r = alice
        .login_settled("/api/v1alpha1/login?wait=15s&include=kubeconfig&format=v1")
        .await;
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(status_of(&r.body, "primary"), "ready");
    assert_eq!(status_of(&r.body, "member"), "failed", "{}", r.text);
    assert_eq!(contexts(&r.body["kubeconfig"]).len(), 1);
    assert!(
        took < Duration::from_secs(4),
        "slow member delayed the login: {took:?}"
    );
    eprintln!("login with a hanging member answered in {took:?}");
    drop(hole);
    primary.identity.set_host(MEMBER, member.listener_addr);

    // A dead member: gone from /clusters after missed heartbeats; the primary alone still logs in.
    member.crash().await;
    let removed = eventually(Duration::from_secs(10), || async {
        !listed(&alice)
            .await
            .iter()
            .any(|c| c.starts_with("member="))
    })
    .await;
    assert!(
        removed.is_some(),
        "dead member removed: {:?}",
        listed(&alice).await
    );
    let r = alice.post("/api/v1alpha1/login?wait=15s").await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Its tokens keep working until expiry: the member's apiserver still accepts them.
    assert!(whoami(&on_member).await.is_ok());

    // Back up: registers again; logout at the primary revokes on both clusters.
    member.restart().await;
    member.identity.set_self(MEMBER, m_ip);
    let back = eventually(Duration::from_secs(10), || async {
        listed(&alice).await.contains(&"member=healthy".to_string())
    })
    .await;
    assert!(back.is_some(), "member back: {:?}", listed(&alice).await);
    let r = alice
        .login_settled("/api/v1alpha1/login?wait=15s&include=kubeconfig&format=v1")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let on_member = client_for(&r.body["kubeconfig"], "member-alice@example.com").await;
    assert!(whoami(&on_member).await.is_ok());
    // The grant no longer names the member: the primary's revalidation ends the member's session.
    primary.grant(
        &alice,
        "alice@example.com",
        json!([{"role": "view", "period": "1h", "clusters": ["primary"]}]),
    );
    let ended = eventually(Duration::from_secs(10), || async {
        signed_in(&signins).await.is_empty()
    })
    .await;
    assert!(ended.is_some(), "revalidation ended the member's session");
    primary.grant(&alice, "alice@example.com", rules.clone());
    let r = alice
        .login_settled("/api/v1alpha1/login?wait=15s&include=kubeconfig&format=v1")
        .await;
    assert_eq!(status_of(&r.body, "member"), "ready", "{}", r.text);
    let doc = r.body["kubeconfig"].clone();
    let on_primary = client_for(&doc, "tka-context-alice@example.com").await;
    let on_member = client_for(&doc, "member-alice@example.com").await;
    let out = alice.post("/api/v1alpha1/logout").await;
    assert_eq!(out.status, 200, "{}", out.text);
    assert_eq!(status_of(&out.body, "member"), "ok", "{}", out.text);
    // A token in use may be honoured until the apiserver's 10 s token cache entry ages out.
    let revoked = eventually(Duration::from_secs(15), || async {
        whoami(&on_primary).await.is_err() && whoami(&on_member).await.is_err()
    })
    .await;
    assert!(
        revoked.is_some(),
        "tokens on both clusters revoked: primary {:?}, member {:?}; {}",
        whoami(&on_primary).await,
        whoami(&on_member).await,
        out.text
    );
    let cleaned = eventually(Duration::from_secs(10), || async {
        signed_in(&signins).await.is_empty()
    })
    .await;
    assert!(cleaned.is_some(), "the member's federated session is gone");
    eprintln!(
        "logout revoked both clusters' tokens within {:?}",
        revoked.unwrap()
    );

    // The primary is gone: the member still ends a federated session at its valid_until on its own.
    let r = alice
        .login_settled("/api/v1alpha1/login?wait=15s&include=kubeconfig&format=v1")
        .await;
    assert_eq!(status_of(&r.body, "member"), "ready", "{}", r.text);
    let on_member = client_for(&r.body["kubeconfig"], "member-alice@example.com").await;
    primary.stop().await;
    let session = signins.list(&Default::default()).await.unwrap().items[0].clone();
    let ends_soon = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3600 - 2);
    signins
        .patch(
            &kube::ResourceExt::name_any(&session),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"requested_at": ends_soon.to_string()}})),
        )
        .await
        .unwrap();
    let expired = eventually(Duration::from_secs(30), || async {
        signed_in(&signins).await.is_empty() && whoami(&on_member).await.is_err()
    })
    .await;
    assert!(
        expired.is_some(),
        "with the primary gone, the member did not end the session at valid_until"
    );

    member.stop().await;
    drop(member_env);
}

fn alice_node(u: &User) -> String {
    format!("nnode-{}", u.ip)
}

/// A member the primary cannot reach at logout is reported in `clusters` and kept on the
/// retry list; its next heartbeat delivers the revocation. Both ways of being unreachable: heartbeating but
/// not answering the primary, and down (stale in the registry).
async fn federation_logout_reaches_a_member_that_was_down_once_it_is_back(env: Arc<Env>) {
    let mut f = Federated::start(
        &env,
        "fedretry",
        // Removal only after 10 missed heartbeats: the member stays listed as stale while it is down.
        |c| c.federation.missed_heartbeats = 10,
        |_| {},
        |n| n,
    )
    .await;
    let alice = f.primary.user("alice@example.com", everywhere());
    f.wait_member(&alice, "healthy").await;
    let signins: Api<TkaSignin> = Api::namespaced(f.member.admin.clone(), &f.member.ns);

    // 1. The member heartbeats but the primary's calls to it hang.
    let (_, on_member) = login_both(&alice).await;
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    f.primary
        .identity
        .set_host(MEMBER, hole.local_addr().unwrap());
    let out = alice.post("/api/v1alpha1/logout").await;
    assert_eq!(out.status, 200, "{}", out.text);
    assert_eq!(status_of(&out.body, "primary"), "ok", "{}", out.text);
    assert_eq!(status_of(&out.body, "member"), "failed", "{}", out.text);
    assert!(whoami(&on_member).await.is_ok(), "not revoked yet");
    drop(hole);
    f.primary.identity.set_host(MEMBER, f.member.listener_addr);
    let took = refused_within(&on_member, Duration::from_secs(20)).await;
    assert!(
        took.is_some(),
        "the member's token still works after it became reachable again"
    );
    eprintln!("missed logout (member unreachable) revoked {took:?} after the member was reachable");

    // 2. The member is down (stale) at logout and comes back.
    let (_, on_member) = login_both(&alice).await;
    f.member.crash().await;
    f.wait_member(&alice, "stale").await;
    let out = alice.post("/api/v1alpha1/logout").await;
    assert_eq!(out.status, 200, "{}", out.text);
    assert_eq!(status_of(&out.body, "member"), "failed", "{}", out.text);
    assert!(
        whoami(&on_member).await.is_ok(),
        "the member's apiserver still honours the token while tka is down"
    );
    f.member.restart().await;
    let took = refused_within(&on_member, Duration::from_secs(20)).await;
    assert!(
        took.is_some(),
        "the member's token still works after the member came back; sessions: {:?}",
        signed_in(&signins).await
    );
    eprintln!("missed logout (member down) revoked {took:?} after the restart");
    let gone = eventually(Duration::from_secs(10), || async {
        signed_in(&signins).await.is_empty()
    })
    .await;
    assert!(gone.is_some(), "the member's session is gone");
    f.stop().await;
}

/// A member down long enough to be removed from the registry still holds the user's
/// session: a logout meanwhile is delivered when it registers again.
async fn federation_logout_reaches_a_removed_member_once_it_registers_again(env: Arc<Env>) {
    let mut f = Federated::start(&env, "fedgone", |_| {}, |_| {}, |n| n).await;
    let alice = f.primary.user("alice@example.com", everywhere());
    f.wait_member(&alice, "healthy").await;
    let (_, on_member) = login_both(&alice).await;
    f.member.crash().await;
    f.wait_member(&alice, "absent").await;
    let out = alice.post("/api/v1alpha1/logout").await;
    assert_eq!(out.status, 200, "{}", out.text);
    f.member.restart().await;
    f.wait_member(&alice, "healthy").await;
    let took = refused_within(&on_member, Duration::from_secs(20)).await;
    assert!(
        took.is_some(),
        "the member's token still works after it registered again"
    );
    eprintln!("missed logout (member removed) revoked {took:?} after it registered again");
    f.stop().await;
}

/// `/exec-credential?cluster=` at the primary relays to the member; the
/// token works on that cluster's apiserver only. The own name is served locally, an unknown one is 404.
async fn federation_exec_credential_relays_per_cluster(env: Arc<Env>) {
    let f = Federated::start(&env, "fedrelay", |_| {}, |_| {}, |n| n).await;
    let alice = f.primary.user("alice@example.com", everywhere());
    f.wait_member(&alice, "healthy").await;
    let _ = login_both(&alice).await;
    let (p_url, p_ca) = (env.cp.server_url(), env.cp.ca_pem());
    let (m_url, m_ca) = (f.member_env.cp.server_url(), f.member_env.cp.ca_pem());

    let (primary, member) = (
        (p_url.as_str(), p_ca.as_str()),
        (m_url.as_str(), m_ca.as_str()),
    );
    let token = |r: &harness::Reply| {
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["status"]["token"].as_str().unwrap().to_string()
    };
    let m = token(
        &alice
            .get("/api/v1alpha1/exec-credential?cluster=member")
            .await,
    );
    works_only_on(&m, member, primary).await;
    let p = token(
        &alice
            .get("/api/v1alpha1/exec-credential?cluster=primary")
            .await,
    );
    works_only_on(&p, primary, member).await;

    // The kubeconfig relay: each context's token is accepted by its own cluster only.
    let k = alice.get("/api/v1alpha1/kubeconfig?format=v1").await;
    assert_eq!(k.status, 200, "{}", k.text);
    let user_token = |name: &str| {
        k.body["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == name)
            .and_then(|u| u["user"]["token"].as_str())
            .unwrap_or_else(|| panic!("no user {name} in {}", k.text))
            .to_string()
    };
    works_only_on(
        &user_token("member-user-alice@example.com"),
        member,
        primary,
    )
    .await;
    works_only_on(&user_token("tka-user-alice@example.com"), primary, member).await;

    // auth=exec: the member's entry runs the plugin against the primary for that cluster.
    let k = alice
        .get("/api/v1alpha1/kubeconfig?format=v1&auth=exec")
        .await;
    assert_eq!(k.status, 200, "{}", k.text);
    let args: Vec<Vec<String>> = k.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| serde_json::from_value(u["user"]["exec"]["args"].clone()).unwrap_or_default())
        .collect();
    // Both entries name the primary's server (its own URL, whatever this harness's node calls itself).
    let server_for = |cluster: &str| {
        args.iter()
            .find_map(|a| {
                a.windows(4)
                    .find(|w| w[0] == "--server" && w[2] == "--cluster" && w[3] == cluster)
                    .map(|w| w[1].clone())
            })
            .unwrap_or_else(|| panic!("no exec entry for {cluster}: {args:?}"))
    };
    assert_eq!(server_for("member"), server_for("primary"), "{args:?}");
    // The member unreachable: the kubeconfig still comes, naming the missing cluster.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    f.primary
        .identity
        .set_host(MEMBER, hole.local_addr().unwrap());
    let k = alice.get("/api/v1alpha1/kubeconfig?format=v1").await;
    assert_eq!(k.status, 200, "{}", k.text);
    assert_eq!(contexts(&k.body), vec!["tka-context-alice@example.com"]);
    assert_eq!(
        k.headers.get("tka-partial").and_then(|v| v.to_str().ok()),
        Some("member")
    );
    let x = alice
        .get("/api/v1alpha1/exec-credential?cluster=member")
        .await;
    assert_eq!(
        (x.status, x.body["code"].as_str()),
        (502, Some("member_unreachable")),
        "{}",
        x.text
    );
    drop(hole);
    f.primary.identity.set_host(MEMBER, f.member.listener_addr);

    let x = alice
        .get("/api/v1alpha1/exec-credential?cluster=nowhere")
        .await;
    assert_eq!(
        (x.status, x.body["code"].as_str()),
        (404, Some("unknown_cluster")),
        "{}",
        x.text
    );
    // A grant without the member: refused at the primary, never relayed.
    let bob = f.primary.user(
        "bob@example.com",
        json!([{"role": "view", "period": "1h", "clusters": ["primary"]}]),
    );
    let x = bob
        .get("/api/v1alpha1/exec-credential?cluster=member")
        .await;
    assert_eq!(
        (x.status, x.body["code"].as_str()),
        (403, Some("no_grant")),
        "{}",
        x.text
    );
    // Granted but never logged in there: the member's 401 is passed on.
    let carol = f.primary.user("carol@example.com", everywhere());
    let r = carol
        .post("/api/v1alpha1/login?wait=15s&cluster=primary")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let x = carol
        .get("/api/v1alpha1/exec-credential?cluster=member")
        .await;
    assert_eq!(
        (x.status, x.body["code"].as_str()),
        (401, Some("not_signed_in")),
        "{}",
        x.text
    );
    f.stop().await;
}

/// `federation.allowDirectLogin: false`: the member refuses its users'
/// own logins but still serves the primary's fan-out.
async fn federation_member_without_direct_login_serves_only_the_primary(env: Arc<Env>) {
    let f = Federated::start(
        &env,
        "feddirect",
        |_| {},
        |c| c.federation.allow_direct_login = false,
        |n| n,
    )
    .await;
    let alice = f.primary.user("alice@example.com", everywhere());
    f.wait_member(&alice, "healthy").await;
    let (_, on_member) = login_both(&alice).await;
    assert!(whoami(&on_member).await.is_ok());

    // Nor does it mint tokens for its users directly, even for the session the primary made.
    f.member.grant(&alice, "alice@example.com", everywhere());
    let alice_direct = User::new(alice.ip, &f.member.url);
    for path in [
        "/api/v1alpha1/kubeconfig?format=v1",
        "/api/v1alpha1/exec-credential",
    ] {
        let r = alice_direct.get(path).await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (403, Some("direct_login_disabled")),
            "{path}: {}",
            r.text
        );
    }
    let e = alice
        .get("/api/v1alpha1/exec-credential?cluster=member")
        .await;
    assert_eq!(e.status, 200, "through the primary: {}", e.text);

    let direct = f.member.user("dave@example.com", everywhere());
    let r = direct.post("/api/v1alpha1/login?wait=15s").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("direct_login_disabled")),
        "{}",
        r.text
    );
    let signins: Api<TkaSignin> = Api::namespaced(f.member.admin.clone(), &f.member.ns);
    let users = signed_in(&signins).await;
    assert_eq!(users, vec!["alice@example.com".to_string()]);
    f.stop().await;
}

/// A member admitted by the capability `federation.memberCapName` (no tag), whose
/// `clusters` globs must match the announced name.
async fn federation_admits_members_by_capability(env: Arc<Env>) {
    let cap = "specht-labs.de/cap/tka-federation";
    let with_cap = move |mut n: tka::identity::PeerIdentity, clusters: &str| {
        n.tags.clear();
        n.cap_map = std::collections::BTreeMap::from([(
            cap.to_string(),
            vec![json!({ "clusters": [clusters] })],
        )]);
        n
    };
    let f = Federated::start(
        &env,
        "fedcap",
        |c| c.federation.member_tags = Vec::new(),
        |_| {},
        move |n| with_cap(n, "mem*"),
    )
    .await;
    let alice = f.primary.user("alice@example.com", everywhere());
    f.wait_member(&alice, "healthy").await;
    let (_, on_member) = login_both(&alice).await;
    assert!(whoami(&on_member).await.is_ok());

    // The capability names other clusters only: the member's heartbeats are refused and it drops out.
    let seen = node(MEMBER, "nmember", f.member_ip, &[]);
    f.primary
        .identity
        .set(f.member_ip, with_cap(seen, "other-*"));
    f.wait_member(&alice, "absent").await;
    let r = alice.post("/api/v1alpha1/login?wait=15s").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(status_of(&r.body, "member"), "absent", "{}", r.text);
    f.stop().await;
}

/// Until one heartbeat interval has passed since start, the registry may be incomplete and
/// `GET /clusters` marks itself (the own entry) `rebuilding: true`; afterwards the mark is gone.
async fn federation_clusters_marks_itself_rebuilding_after_start(env: Arc<Env>) {
    let h = harness::Harness::with_config(&env, "fed-rebuild", |c| {
        c.federation.heartbeat_interval = tka::model::duration::GoDuration::from_secs(3);
    })
    .await;
    let u = h.user("alice@example.com", everywhere());
    let own = |r: &harness::Reply| r.body[0].clone();
    let r = u.get("/api/v1alpha1/clusters").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(own(&r)["status"], "self", "{}", r.text);
    assert_eq!(own(&r)["rebuilding"], true, "{}", r.text);
    let settled = eventually(Duration::from_secs(6), || async {
        let r = u.get("/api/v1alpha1/clusters").await;
        r.status == 200 && own(&r).get("rebuilding").is_none()
    })
    .await;
    assert!(settled.is_some(), "still rebuilding after the interval");
    h.stop().await;
}
