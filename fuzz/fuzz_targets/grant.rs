//! Capability grants: `parse_rules` (the JSON values under the capability name), `select_for` (the rule a
//! login gets) and `verdict` (does a session still hold), checked against a direct transcription of the
//! selection rules.
//!
//! Input: a first line `cluster|allowed,roles|maxPeriod|requested role|evaluated cluster|protected
//! namespace` (every field optional), then the JSON grant: an array of rule values, or any other value as
//! the only rule.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tka::model::duration::GoDuration;
use tka::model::naming::is_dns1123_label;
use tka::model::rules::{
    MIN_PERIOD, Policy, Reject, Rule, glob_match, parse_rules, select_for, verdict,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (header, json) = text.split_once('\n').unwrap_or((text, ""));
    let mut fields = header.split('|');
    let mut field = || fields.next().unwrap_or_default();
    let policy = Policy {
        cluster: field().to_string(),
        allowed_roles: field()
            .split(',')
            .filter(|r| !r.is_empty())
            .map(String::from)
            .collect(),
        max_period: GoDuration::parse(field()).ok().map(GoDuration::as_std),
        protected_namespace: None,
    };
    let requested = Some(field()).filter(|r| !r.is_empty());
    let cluster = Some(field())
        .filter(|c| !c.is_empty())
        .unwrap_or(&policy.cluster)
        .to_string();
    let policy = Policy {
        protected_namespace: Some(field()).filter(|n| !n.is_empty()).map(String::from),
        ..policy
    };

    let values = match serde_json::from_str::<Value>(json) {
        Ok(Value::Array(values)) => values,
        Ok(other) => vec![other],
        Err(_) => return,
    };
    let Some(rules) = parsed(&values) else {
        return;
    };
    let got = select_for(&rules, &policy, &cluster, requested);
    assert_eq!(got, reference_select(&rules, &policy, &cluster, requested));
    if let Err(e) = &got {
        assert!(!e.to_string().is_empty() && !e.advice().is_empty(), "{e:?}");
    }
    // A session holds exactly while a rule of its role and namespaces applies; one just granted holds.
    for rule in &rules {
        let held = verdict(&rules, &policy, &cluster, &rule.role, &rule.namespaces);
        reference_verdict(&rules, &policy, &cluster, rule, &held);
    }
    if let Ok(granted) = &got {
        let held = verdict(
            &rules,
            &policy,
            &cluster,
            &granted.role,
            &granted.namespaces,
        )
        .expect("a session holds under the grant that made it");
        assert_eq!(held.priority, granted.priority);
    }
    for rule in &rules {
        for pattern in rule.clusters.iter().flatten() {
            assert_eq!(
                glob_match(pattern, &cluster),
                reference_glob(pattern, &cluster),
                "{pattern:?} vs {cluster:?}"
            );
        }
    }
});

/// `parse_rules`, checked: accepted rules are valid and say what the JSON said (and survive their own
/// serialization); a rejection names the first bad rule.
fn parsed(values: &[Value]) -> Option<Vec<Rule>> {
    match parse_rules(values) {
        Ok(rules) => {
            assert_eq!(rules.len(), values.len());
            for (rule, value) in rules.iter().zip(values) {
                assert!(!rule.role.trim().is_empty(), "{rule:?}");
                assert_eq!(value["role"], rule.role.as_str());
                assert!(rule.period.as_std() >= MIN_PERIOD, "{rule:?}");
                assert_eq!(
                    GoDuration::parse(value["period"].as_str().expect("period is text")),
                    Ok(rule.period)
                );
                assert_eq!(value["priority"].as_i64().unwrap_or(0), rule.priority);
                assert!(
                    rule.namespaces.iter().all(|n| is_dns1123_label(n)),
                    "{rule:?}"
                );
                assert!(
                    rule.clusters.iter().flatten().all(|c| !c.is_empty()),
                    "{rule:?}"
                );
                let again = serde_json::to_value(rule).expect("a rule serializes");
                assert_eq!(
                    parse_rules(&[again]).as_deref(),
                    Ok(std::slice::from_ref(rule))
                );
            }
            Some(rules)
        }
        Err(Reject::InvalidGrant { index, reason }) => {
            assert!(index < values.len() && !reason.is_empty());
            assert!(
                parse_rules(&values[..index]).is_ok(),
                "rule {index} is the first bad one"
            );
            assert!(parse_rules(&values[index..=index]).is_err());
            None
        }
        Err(other) => panic!("parse_rules can only reject a grant as invalid, got {other:?}"),
    }
}

/// The selection rules, written down directly: rules for the cluster, of the requested role, of the top
/// priority (identical duplicates count once), allowed by the server, period capped.
fn reference_select(
    rules: &[Rule],
    policy: &Policy,
    cluster: &str,
    requested: Option<&str>,
) -> Result<Rule, Reject> {
    let applies = |r: &Rule| match &r.clusters {
        None => cluster == policy.cluster,
        Some(globs) => globs.iter().any(|g| reference_glob(g, cluster)),
    };
    let here: Vec<&Rule> = rules.iter().filter(|r| applies(r)).collect();
    if here.is_empty() {
        return Err(Reject::NoGrant {
            cluster: cluster.into(),
        });
    }
    // Any rule for the server's own cluster reaching its own namespace rejects the whole grant.
    if cluster == policy.cluster
        && let Some(protected) = &policy.protected_namespace
        && let Some(r) = here.iter().find(|r| r.namespaces.contains(protected))
    {
        return Err(Reject::ProtectedNamespace {
            role: r.role.clone(),
            namespace: protected.clone(),
        });
    }
    let roles = |rs: &[&Rule]| {
        let mut out: Vec<String> = Vec::new();
        for r in rs {
            if !out.contains(&r.role) {
                out.push(r.role.clone());
            }
        }
        out
    };
    let candidates: Vec<&Rule> = here
        .iter()
        .copied()
        .filter(|r| requested.is_none_or(|q| r.role == q))
        .collect();
    let Some(top) = candidates.iter().map(|r| r.priority).max() else {
        return Err(Reject::RoleNotGranted {
            role: requested.unwrap_or_default().into(),
            granted: roles(&here),
        });
    };
    let winners: Vec<&Rule> = candidates
        .into_iter()
        .filter(|r| r.priority == top)
        .collect();
    let first = winners[0];
    if winners.iter().any(|w| *w != first) {
        let mut distinct: Vec<&Rule> = Vec::new();
        for w in winners {
            if !distinct.contains(&w) {
                distinct.push(w);
            }
        }
        return Err(Reject::AmbiguousGrant {
            priority: top,
            roles: roles(&distinct),
        });
    }
    if !policy.allowed_roles.is_empty() && !policy.allowed_roles.contains(&first.role) {
        return Err(Reject::RoleNotAllowed {
            role: first.role.clone(),
            allowed: policy.allowed_roles.clone(),
        });
    }
    Ok(capped(first, policy))
}

fn capped(rule: &Rule, policy: &Policy) -> Rule {
    let mut chosen = rule.clone();
    if let Some(max) = policy.max_period.filter(|m| *m > Duration::ZERO) {
        chosen.period = chosen.period.min(GoDuration::from_std(max));
    }
    chosen
}

/// `verdict` for a session of `held`'s role and namespaces: no rule for the cluster → no_grant; none of that
/// role and exactly those namespaces → grant_changed; else one of the highest priority among them, capped,
/// if the server allows the role.
fn reference_verdict(
    rules: &[Rule],
    policy: &Policy,
    cluster: &str,
    held: &Rule,
    got: &Result<Rule, Reject>,
) {
    let applies = |r: &Rule| match &r.clusters {
        None => cluster == policy.cluster,
        Some(globs) => globs.iter().any(|g| reference_glob(g, cluster)),
    };
    let here: Vec<&Rule> = rules.iter().filter(|r| applies(r)).collect();
    let same: Vec<&Rule> = here
        .iter()
        .copied()
        .filter(|r| r.role == held.role && r.namespaces == held.namespaces)
        .collect();
    let top = same.iter().map(|r| r.priority).max();
    match got {
        Err(Reject::NoGrant { .. }) => assert!(here.is_empty()),
        Err(Reject::GrantChanged { role }) => {
            assert!(!here.is_empty() && same.is_empty() && *role == held.role)
        }
        Err(Reject::RoleNotAllowed { role, .. }) => assert!(
            !same.is_empty()
                && !policy.allowed_roles.is_empty()
                && !policy.allowed_roles.contains(role)
        ),
        Ok(best) => {
            assert!(policy.allowed_roles.is_empty() || policy.allowed_roles.contains(&best.role));
            assert!(
                same.iter()
                    .any(|r| Some(r.priority) == top && capped(r, policy) == *best),
                "{best:?} is not a top rule of {same:?}"
            );
        }
        Err(other) => panic!("verdict cannot reject with {other:?}"),
    }
}

/// `*` matches any run of characters, `?` exactly one; everything else itself. Dynamic programming over
/// (pattern prefix, text prefix).
fn reference_glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // m[j]: does the pattern prefix seen so far match t[..j]?
    let mut m = vec![false; t.len() + 1];
    m[0] = true;
    for &pc in &p {
        let mut next = vec![false; t.len() + 1];
        for j in 0..=t.len() {
            next[j] = match pc {
                '*' => m[j] || (j > 0 && next[j - 1]),
                '?' => j > 0 && m[j - 1],
                c => j > 0 && m[j - 1] && t[j - 1] == c,
            };
        }
        m = next;
    }
    m[t.len()]
}
