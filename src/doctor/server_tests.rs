use super::*;
use crate::doctor::Status;
use serde_json::json;

fn roles() -> Vec<String> {
    vec!["view".into(), "edit".into()]
}

fn grantable() -> GrantableRoles {
    GrantableRoles::new(roles()).unwrap()
}

#[test]
fn apiserver_version_is_checked() {
    let v = |minor: &str| Version {
        major: "1".into(),
        minor: minor.into(),
        git_version: format!("v1.{minor}.0"),
    };
    assert_eq!(apiserver("https://k", &Ok(v("37"))).status, Status::Ok);
    let old = apiserver("https://k", &Ok(v("27+")));
    assert_eq!(old.status, Status::Fail);
    assert!(old.message.contains("needs 1.28"), "{}", old.message);
    let down = apiserver("https://k", &Err("connection refused".into()));
    assert_eq!(down.status, Status::Fail);
    assert!(!down.advice.is_empty());
}

#[test]
fn crd_missing_old_or_current() {
    let missing = crd(&Ok(CrdFacts::default()));
    assert_eq!(missing.status, Status::Fail);
    assert!(missing.message.contains("not installed"));
    assert!(missing.advice[0].contains("tka-server crd | kubectl apply -f -"));
    let old = crd(&Ok(CrdFacts {
        served: true,
        status_subresource: true,
        pruned: vec!["spec.subject_key".into()],
        dry_run_error: None,
    }));
    assert_eq!(old.status, Status::Fail);
    assert!(
        old.message.contains("drops spec.subject_key"),
        "{}",
        old.message
    );
    let good = crd(&Ok(CrdFacts {
        served: true,
        status_subresource: true,
        ..Default::default()
    }));
    assert_eq!(good.status, Status::Ok);
}

#[test]
fn pruned_fields_are_the_missing_leaves() {
    let sent = json!({"spec": {"username": "a", "subject_key": "k", "origin": {"kind": "local"}}, "kind": "X"});
    let got = json!({"spec": {"username": "a", "origin": {}}, "kind": "X"});
    assert_eq!(
        pruned_fields(&sent, &got, ""),
        vec![
            "spec.origin.kind".to_string(),
            "spec.subject_key".to_string()
        ]
    );
    assert!(pruned_fields(&sent, &sent, "").is_empty());
}

#[test]
fn required_permissions_come_from_the_generated_rbac() {
    let perms = required_permissions("tka-system", Some(&grantable()));
    let has = |s: &str| perms.iter().any(|p| p.to_string() == s);
    assert!(has("create serviceaccounts/token in tka-system"));
    assert!(has("create secrets in tka-system"));
    assert!(has("create clusterrolebindings"));
    assert!(has("get clusterroles \"view\""));
    assert!(has(
        "update leases \"controller.tka.specht-labs.de\" in tka-system"
    ));
    assert!(has("get configmaps \"cluster-info\" in kube-public"));
    assert!(
        !perms.iter().any(|p| p.verb == "bind"),
        "bind is checked separately"
    );
}

#[test]
fn without_allowed_roles_no_named_cluster_role_is_required() {
    let all = required_permissions("ns", Some(&grantable()));
    let unlisted = required_permissions("ns", None);
    assert!(!unlisted.iter().any(|p| p.resource == "clusterroles"));
    assert!(
        unlisted
            .iter()
            .any(|p| p.to_string() == "create serviceaccounts/token in ns")
    );
    // Only the `get` on each named role is left out.
    assert_eq!(unlisted.len(), all.len() - roles().len());
}

#[test]
fn rbac_names_each_missing_permission() {
    let perms = required_permissions("ns", Some(&grantable()));
    let mut results: Vec<_> = perms.iter().map(|p| (p.clone(), Ok(true))).collect();
    assert_eq!(rbac(&results, "ns", &roles()).status, Status::Ok);
    let i = results
        .iter()
        .position(|(p, _)| p.subresource == "token")
        .unwrap();
    results[i].1 = Ok(false);
    let c = rbac(&results, "ns", &roles());
    assert_eq!(c.status, Status::Fail);
    assert_eq!(c.message, "missing: create serviceaccounts/token in ns");
    assert!(c.advice[0].contains("tka-server rbac --allowed-roles view,edit --namespace ns"));
}

#[test]
fn bind_must_cover_exactly_the_allowed_roles() {
    let ok = |n: &str, b: bool| (n.to_string(), Ok(b));
    let exact = BindFacts {
        allowed: vec![ok("view", true), ok("edit", true)],
        others: vec![ok("cluster-admin", false), ok("tka-doctor-probe", false)],
        escalate: Ok(false),
        absent: vec![],
    };
    assert_eq!(bind_roles(&exact, "ns", &roles()).status, Status::Ok);
    let wild = BindFacts {
        others: vec![ok("cluster-admin", true), ok("tka-doctor-probe", true)],
        ..exact.clone()
    };
    let c = bind_roles(&wild, "ns", &roles());
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.message.contains("also cluster-admin, tka-doctor-probe"),
        "{}",
        c.message
    );
    let short = BindFacts {
        allowed: vec![ok("view", true), ok("edit", false)],
        ..exact.clone()
    };
    assert!(
        bind_roles(&short, "ns", &roles())
            .message
            .contains("cannot bind edit")
    );
    let absent = BindFacts {
        absent: vec!["edit".into()],
        ..exact
    };
    assert_eq!(bind_roles(&absent, "ns", &roles()).status, Status::Warn);
}

#[test]
fn without_allowed_roles_the_rbac_decides_but_not_cluster_admin() {
    let ok = |n: &str, b: bool| (n.to_string(), Ok(b));
    let facts = |view, admin, made_up| BindFacts {
        allowed: vec![],
        others: vec![
            ok("cluster-admin", admin),
            ok("view", view),
            ok("tka-doctor-not-allowed", made_up),
        ],
        escalate: Ok(false),
        absent: vec![],
    };
    let c = bind_unlisted(&facts(true, false, false), "ns");
    assert_eq!(c.status, Status::Warn);
    assert!(
        c.message.contains("the RBAC decides (may bind view)"),
        "{}",
        c.message
    );
    assert!(c.advice[0].contains("role_not_allowed"), "{:?}", c.advice);
    let c = bind_unlisted(&facts(true, true, true), "ns");
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.message
            .contains("cluster-admin, view, tka-doctor-not-allowed"),
        "{}",
        c.message
    );
    assert!(
        c.advice[0].contains("--allowed-roles <the roles"),
        "{:?}",
        c.advice
    );
    let escalate = BindFacts {
        escalate: Ok(true),
        ..facts(false, false, false)
    };
    assert_eq!(bind_unlisted(&escalate, "ns").status, Status::Fail);
    assert_eq!(
        bind_unlisted(&facts(false, false, false), "ns").status,
        Status::Warn
    );
}

#[test]
fn leader_lease_states() {
    let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
    let lease = |holder: &str, renewed: &str| {
        Ok(Some(LeaseFacts {
            holder: holder.into(),
            renewed: Some(renewed.parse().unwrap()),
            duration_secs: 15,
        }))
    };
    let held = leader(
        "l",
        Some(&lease("tka-server-0_ab12", "2026-01-01T00:00:58Z")),
        "tka-server-0",
        now,
    );
    assert_eq!(held.status, Status::Ok);
    assert!(held.message.contains("(this pod)"), "{}", held.message);
    let gone = leader(
        "l",
        Some(&lease("tka-server-1_cd34", "2026-01-01T00:00:00Z")),
        "tka-server-0",
        now,
    );
    assert_eq!(gone.status, Status::Fail);
    assert!(gone.message.contains("not renewed for 60 s"));
    assert_eq!(leader("l", Some(&Ok(None)), "", now).status, Status::Fail);
    assert_eq!(
        leader("l", Some(&lease("", "2026-01-01T00:00:58Z")), "", now).status,
        Status::Fail
    );
    assert_eq!(leader("l", None, "", now).status, Status::Ok);
}

#[test]
fn ready_reasons_get_the_shared_advice() {
    let r = |code, reason: &str, role: &str| {
        Ok(Ready {
            code,
            reason: reason.into(),
            role: role.into(),
        })
    };
    assert_eq!(ready("u", &r(200, "ok", "leader")).status, Status::Ok);
    assert_eq!(ready("u", &r(200, "standby", "standby")).status, Status::Ok);
    let c = ready("u", &r(503, "tailnet_not_running", "leader"));
    assert_eq!(c.status, Status::Fail);
    assert_eq!(
        c.advice,
        vec![
            readiness::advice("tailnet_not_running")
                .unwrap()
                .to_string()
        ]
    );
    assert_eq!(
        ready("u", &Err("connection refused".into())).status,
        Status::Fail
    );
}
