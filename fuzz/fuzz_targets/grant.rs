//! Capability grants: `parse_rules` (the JSON values under the capability name) and `select_for` (the rule
//! a login gets), checked against a direct transcription of the selection rules.
//!
//! Input: a first line `cluster|allowed,roles|maxPeriod|requested role|evaluated cluster` (every field
//! optional), then the JSON grant: an array of rule values, or any other value as the only rule.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tka::model::duration::GoDuration;
use tka::model::naming::is_dns1123_label;
use tka::model::rules::{MIN_PERIOD, Policy, Reject, Rule, glob_match, parse_rules, select_for};

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
    };
    let requested = Some(field()).filter(|r| !r.is_empty());
    let cluster = Some(field())
        .filter(|c| !c.is_empty())
        .unwrap_or(&policy.cluster)
        .to_string();

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
    let mut chosen = first.clone();
    if let Some(max) = policy.max_period.filter(|m| *m > Duration::ZERO) {
        chosen.period = chosen.period.min(GoDuration::from_std(max));
    }
    Ok(chosen)
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
