//! Attacks on federation trust, against two real control planes: a device that takes the primary's tailnet
//! name, and a member that announces another cluster's name or the kubeconfig names of the primary or of
//! another member. Each must be refused and leave nothing behind.

use std::process::Command;
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::{Value, json};
use tka::operator::crd::TkaSignin;

use crate::harness::{Env, Federated, PRIMARY_NODE as PRIMARY, User, fresh_ip, node};

scenarios!(
    federation_member_refuses_a_device_that_took_the_primarys_name,
    federation_cluster_names_and_prefixes_stay_with_their_nodes,
    federation_relayed_tokens_follow_the_grant_as_it_is_now,
);

/// A session request as the primary sends it, for a user the attacker picks.
fn session_request(login: &str) -> Value {
    json!({
        "login_name": login, "node": "evil.test.ts.net", "node_id": "nevil", "node_ip": "127.0.0.1",
        "role": "view", "period": "1h", "namespaces": [], "requested_at": "", "request_id": "x",
    })
}

async fn users_on(signins: &Api<TkaSignin>) -> Vec<String> {
    signins
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.spec.username)
        .collect()
}

async fn federation_member_refuses_a_device_that_took_the_primarys_name(env: Arc<Env>) {
    let mut f = Federated::start(&env, "takeover", |_| {}, |_| {}, |n| n).await;
    let member_signins: Api<TkaSignin> = Api::namespaced(f.member_env.admin.clone(), &f.member.ns);
    // The member has not heard from its primary yet: a device with the primary's name but without the
    // primary's tag is refused, and pins nothing.
    let untagged_ip = fresh_ip();
    f.member
        .identity
        .set(untagged_ip, node(PRIMARY, "nsquatter", untagged_ip, &[]));
    let squatter = User::new(untagged_ip, &f.member.url);
    let r = squatter
        .post_json(
            "/federation/v1alpha1/sessions",
            &session_request("mallory@example.com"),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("not_primary")),
        "{}",
        r.text
    );

    // The real primary's first call pins its node.
    let alice = f.primary.user(
        "alice@example.com",
        json!([{"role": "view", "period": "1h", "clusters": ["*"]}]),
    );
    f.wait_member(&alice, "healthy").await;
    let r = alice.login_settled("/api/v1alpha1/login?wait=15s").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let pins: Api<ConfigMap> = Api::namespaced(f.member_env.admin.clone(), &f.member.ns);
    let pinned = pins.get("tka-federation").await.expect("pins are kept");
    assert_eq!(pinned.data.unwrap()["primary"], "nprimary");

    // A device that took the primary's name, even with the primary's tag, is another node: refused on every
    // federation route, before and after a member restart (the pin is kept in its namespace).
    let thief_ip = fresh_ip();
    f.member
        .identity
        .set(thief_ip, node(PRIMARY, "nthief", thief_ip, &["tag:tka"]));
    let thief = User::new(thief_ip, &f.member.url);
    for restart in [false, true] {
        if restart {
            f.member.restart().await;
        }
        let r = thief
            .post_json(
                "/federation/v1alpha1/sessions",
                &session_request("mallory@example.com"),
            )
            .await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (403, Some("not_primary")),
            "{}",
            r.text
        );
        let token = json!({"login_name": "alice@example.com", "node_id": alice_node(&alice), "kind": "exec"});
        let r = thief.post_json("/federation/v1alpha1/tokens", &token).await;
        assert_eq!(r.status, 403, "a token for alice's session: {}", r.text);
        let r = thief
            .get("/federation/v1alpha1/sessions?origin=federation")
            .await;
        assert_eq!(r.status, 403, "{}", r.text);
        let r = thief
            .send(
                thief
                    .http
                    .delete(format!("{}/federation/v1alpha1/sessions", f.member.url))
                    .json(&json!({"login_name": "alice@example.com", "all": true})),
            )
            .await;
        assert_eq!(r.status, 403, "{}", r.text);
    }
    assert_eq!(
        users_on(&member_signins).await,
        vec!["alice@example.com".to_string()],
        "nothing was created or deleted on the member"
    );
    f.stop().await;
}

/// alice's node ID as the harness gives it (`n` + node name).
fn alice_node(u: &User) -> String {
    format!("nnode-{}", u.ip)
}

async fn heartbeat(
    rogue: &User,
    name: &str,
    user_prefix: &str,
    context_prefix: &str,
) -> (u16, String) {
    let hb = json!({
        "cluster_name": name, "member_url": "https://rogue.test.ts.net",
        "api_endpoint": "https://10.9.9.9:6443", "context_prefix": context_prefix,
        "user_prefix": user_prefix, "api_versions": ["v1alpha1"],
    });
    let r = rogue.post_json("/federation/v1alpha1/heartbeat", &hb).await;
    (r.status, r.body["code"].as_str().unwrap_or("").to_string())
}

async fn federation_cluster_names_and_prefixes_stay_with_their_nodes(env: Arc<Env>) {
    let mut f = Federated::start(&env, "names", |_| {}, |_| {}, |n| n).await;
    let alice = f.primary.user(
        "alice@example.com",
        json!([{"role": "view", "period": "1h", "clusters": ["primary", "member"]}]),
    );
    f.wait_member(&alice, "healthy").await;
    // A second admitted member node (it carries the member tag) tries to take names.
    let rogue_ip = fresh_ip();
    f.primary.identity.set(
        rogue_ip,
        node("rogue.test.ts.net", "nrogue", rogue_ip, &["tag:tka-member"]),
    );
    let rogue = User::new(rogue_ip, &f.primary.url);
    let taken = (409, "cluster_name_conflict".to_string());
    assert_eq!(
        heartbeat(&rogue, "member", "r-user-", "r-").await,
        taken,
        "the member's name"
    );
    assert_eq!(
        heartbeat(&rogue, "primary", "r-user-", "r-").await,
        taken,
        "the primary's name"
    );
    let names = (409, "kubeconfig_names_conflict".to_string());
    assert_eq!(
        heartbeat(&rogue, "rogue", "tka-user-", "tka-context-").await,
        names,
        "the primary's prefixes"
    );
    assert_eq!(
        heartbeat(&rogue, "rogue", "member-user-", "member-").await,
        names,
        "the member's prefixes"
    );
    // After a primary restart the registry is empty, but the names are still bound.
    f.primary.restart().await;
    assert_eq!(
        heartbeat(&rogue, "member", "r-user-", "r-").await,
        taken,
        "after a restart"
    );
    f.wait_member(&alice, "healthy").await;
    // Its own names are fine: the checks refuse collisions, not members.
    assert_eq!(heartbeat(&rogue, "rogue", "r-user-", "r-").await.0, 200);
    // One cluster per node: names (and with them metric labels and pins) stay bounded by admitted nodes.
    assert_eq!(
        heartbeat(&rogue, "rogue-2", "r2-user-", "r2-").await,
        names,
        "a second name for the same node"
    );

    // Where the API servers are is shown only to callers the grant gives a role there.
    let bob = f.primary.user("bob@example.com", json!([]));
    let r = bob.get("/api/v1alpha1/clusters").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let listed = r.body.as_array().unwrap();
    assert!(
        listed.iter().all(|c| c["server_url"].is_null()),
        "{}",
        r.text
    );
    let r = alice.get("/api/v1alpha1/clusters").await;
    let urls: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["server_url"].as_str())
        .collect();
    assert_eq!(urls.len(), 2, "primary and member for alice: {}", r.text);
    // The kubeconfigs alice gets have no duplicate names in any format, and kubectl loads the v1 one.
    let r = alice
        .login_settled("/api/v1alpha1/login?wait=15s&include=kubeconfig&format=v1")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v1 = &r.body["kubeconfig"];
    for list in ["clusters", "users", "contexts"] {
        let names: Vec<&str> = v1[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{list}: {names:?}");
        assert_eq!(names.len(), 2, "{list}: primary and member: {names:?}");
    }
    let file = std::env::temp_dir().join(format!("tka-names-{}.yaml", std::process::id()));
    std::fs::write(&file, serde_yaml::to_string(v1).unwrap()).unwrap();
    let out = Command::new(env.cp.kubectl())
        .args(["config", "get-contexts", "-o", "name", "--kubeconfig"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let contexts = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        contexts.contains("tka-context-alice@example.com")
            && contexts.contains("member-alice@example.com"),
        "{contexts}"
    );
    let legacy = alice.get("/api/v1alpha1/kubeconfig").await;
    assert_eq!(legacy.status, 200, "{}", legacy.text);
    for map in ["clusters", "users", "contexts"] {
        let keys = legacy.body[map].as_object().map(|m| m.len()).unwrap_or(0);
        assert_eq!(keys, 2, "legacy {map}: {}", legacy.body[map]);
    }
    f.stop().await;
}

/// A relayed mint checks the member's session against the caller's grant as it is now, like a local mint:
/// with revalidation off, a grant narrowed from `edit` to `view` must not keep yielding edit tokens there.
async fn federation_relayed_tokens_follow_the_grant_as_it_is_now(env: Arc<Env>) {
    let f = Federated::start(
        &env,
        "narrowed",
        |c| c.operator.revalidate_interval = tka::model::duration::GoDuration::from_secs(0),
        |_| {},
        |n| n,
    )
    .await;
    let member_signins: Api<TkaSignin> = Api::namespaced(f.member_env.admin.clone(), &f.member.ns);
    let login = "ed@example.com";
    let edit = json!([{"role": "edit", "period": "1h", "clusters": ["*"]}]);
    let ed = f.primary.user(login, edit);
    f.wait_member(&ed, "healthy").await;
    let r = ed.login_settled("/api/v1alpha1/login?wait=15s").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let credential = "/api/v1alpha1/exec-credential?cluster=member";
    assert_eq!(ed.get(credential).await.status, 200);
    // The tailnet admin narrows the grant.
    f.primary.grant(
        &ed,
        login,
        json!([{"role": "view", "period": "1h", "clusters": ["*"]}]),
    );
    let r = ed.get(credential).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("grant_changed")),
        "{}",
        r.text
    );
    let ended = crate::harness::eventually(std::time::Duration::from_secs(10), || async {
        !users_on(&member_signins).await.contains(&login.to_string())
    });
    assert!(
        ended.await.is_some(),
        "the edit session on the member was ended"
    );
    let r = ed.get("/api/v1alpha1/kubeconfig?format=v1").await;
    assert!(
        !r.text.contains("member-ed@example.com"),
        "no member entry for the old grant: {} {}",
        r.status,
        r.text
    );
    f.stop().await;
}
