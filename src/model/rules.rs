//! Capability grants: parsing the rules under `tailscale.capName`, choosing one for a new session and
//! checking an existing session against them. Pure functions, no I/O: the API and the grant revalidation share them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::GoDuration;

/// The shortest session a rule may ask for: the TokenRequest API's minimum token lifetime.
pub const MIN_PERIOD: Duration = Duration::from_secs(600);

/// One parsed rule of a capability grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub role: String,
    pub period: GoDuration,
    pub priority: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Cluster name globs; `None` means "only the cluster of the server evaluating the grant".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<String>>,
}

/// The wire form; unknown fields are ignored for forward compatibility.
#[derive(Deserialize)]
struct RawRule {
    role: Option<String>,
    period: Option<String>,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    namespaces: Vec<String>,
    clusters: Option<Vec<String>>,
}

/// Where the grant is evaluated and what the server allows.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `operator.clusterName` of the evaluating server.
    pub cluster: String,
    /// `operator.allowedRoles`; empty means RBAC decides.
    pub allowed_roles: Vec<String>,
    /// `operator.maxPeriod`; `None` means no cap.
    pub max_period: Option<Duration>,
    /// `operator.namespace` of the evaluating server: where its ServiceAccount, the sessions' Secrets and the
    /// tailnet state live. A rule naming it would let users run pods as the server, so it is refused.
    pub protected_namespace: Option<String>,
}

/// Why a grant did not yield a rule. Each variant is one stable `code` of the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("capability rule {index} is invalid: {reason}")]
    InvalidGrant { index: usize, reason: String },
    #[error("your tailnet grant gives you no access to cluster {cluster}")]
    NoGrant { cluster: String },
    #[error("role {role:?} is not granted to you on this cluster")]
    RoleNotGranted { role: String, granted: Vec<String> },
    #[error("several different rules share the highest priority {priority}")]
    AmbiguousGrant { priority: i64, roles: Vec<String> },
    #[error("role {role:?} is not in this server's allow-list")]
    RoleNotAllowed { role: String, allowed: Vec<String> },
    #[error("your grant no longer includes role {role:?}")]
    GrantChanged { role: String },
    #[error(
        "your grant now allows sessions of at most {period}; this one has reached that and ended"
    )]
    PeriodShortened { period: GoDuration },
    #[error(
        "the rule for role {role:?} names namespace {namespace:?}, where this tka server keeps its own state; no grant may reach it"
    )]
    ProtectedNamespace { role: String, namespace: String },
}

impl Reject {
    /// Stable machine-readable code (also the `reason` metric label).
    pub fn code(&self) -> &'static str {
        match self {
            Reject::InvalidGrant { .. } => "invalid_grant",
            Reject::NoGrant { .. } => "no_grant",
            Reject::RoleNotGranted { .. } => "role_not_granted",
            Reject::AmbiguousGrant { .. } => "ambiguous_grant",
            Reject::RoleNotAllowed { .. } => "role_not_allowed",
            Reject::GrantChanged { .. } | Reject::PeriodShortened { .. } => "grant_changed",
            Reject::ProtectedNamespace { .. } => "invalid_grant",
        }
    }

    /// What the caller can do about it.
    pub fn advice(&self) -> Vec<String> {
        match self {
            Reject::InvalidGrant { index, .. } => vec![format!(
                "ask your tailnet admin to fix rule #{index} of the grant: it needs \"role\" and a \"period\" of at least 10m such as \"8h\""
            )],
            Reject::NoGrant { .. } => {
                vec![
                    "ask your tailnet admin for a grant of the tka capability for this cluster"
                        .into(),
                ]
            }
            Reject::RoleNotGranted { granted, .. } => {
                vec![format!("roles granted to you here: {}", granted.join(", "))]
            }
            Reject::AmbiguousGrant { roles, .. } => vec![
                format!(
                    "choose one with `tka login --role <role>` (candidates: {})",
                    roles.join(", ")
                ),
                "or ask your tailnet admin to give the rules different priorities".into(),
            ],
            Reject::RoleNotAllowed { allowed, .. } => vec![format!(
                "this server only grants: {}; ask the cluster admin to allow the role",
                allowed.join(", ")
            )],
            Reject::GrantChanged { .. } | Reject::PeriodShortened { .. } => {
                vec!["run `tka login` to start a session with your current grant".into()]
            }
            Reject::ProtectedNamespace { namespace, .. } => vec![format!(
                "ask your tailnet admin to remove {namespace:?} from the rule's namespaces: anyone who can create \
                 pods there can act as the tka server"
            )],
        }
    }
}

/// Step 4: every value under the capability name is one rule; any malformed one rejects the grant, since
/// silently skipping it could leave the caller with a role the admin did not mean to be the winner.
pub fn parse_rules(values: &[serde_json::Value]) -> Result<Vec<Rule>, Reject> {
    values
        .iter()
        .enumerate()
        .map(|(index, v)| parse_rule(v).map_err(|reason| Reject::InvalidGrant { index, reason }))
        .collect()
}

fn parse_rule(value: &serde_json::Value) -> Result<Rule, String> {
    let raw: RawRule = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let role = raw
        .role
        .filter(|r| !r.trim().is_empty())
        .ok_or("missing \"role\"")?;
    let period = raw.period.ok_or("missing \"period\"")?;
    let period = GoDuration::parse(&period).map_err(|e| e.to_string())?;
    if period.as_std() < MIN_PERIOD {
        return Err(format!("period {period} is shorter than the minimum 10m0s"));
    }
    if let Some(bad) = raw
        .namespaces
        .iter()
        .find(|ns| !super::naming::is_dns1123_label(ns))
    {
        return Err(format!(
            "namespace {bad:?} is not a valid Kubernetes namespace name"
        ));
    }
    if let Some(bad) = raw.clusters.iter().flatten().find(|c| c.is_empty()) {
        return Err(format!("cluster pattern {bad:?} is empty"));
    }
    Ok(Rule {
        role,
        period,
        priority: raw.priority,
        namespaces: raw.namespaces,
        clusters: raw.clusters,
    })
}

impl Rule {
    /// Step 5: does this rule apply to `cluster`, evaluated by the server of `own_cluster`?
    pub fn applies_to(&self, cluster: &str, own_cluster: &str) -> bool {
        match &self.clusters {
            None => cluster == own_cluster,
            Some(globs) => globs.iter().any(|g| glob_match(g, cluster)),
        }
    }
}

/// Steps 5–9 for the evaluating server's own cluster: the rule that wins, its period clamped.
pub fn select(
    rules: &[Rule],
    policy: &Policy,
    requested_role: Option<&str>,
) -> Result<Rule, Reject> {
    select_for(rules, policy, &policy.cluster, requested_role)
}

/// Steps 5–9 for `cluster` (a federation member or the server's own cluster).
pub fn select_for(
    rules: &[Rule],
    policy: &Policy,
    cluster: &str,
    requested_role: Option<&str>,
) -> Result<Rule, Reject> {
    let for_cluster = applicable(rules, policy, cluster)?;
    // Like a malformed rule, a rule reaching the server's own namespace rejects the whole grant, not just
    // itself: skipping it could hand the caller a role the admin did not mean to be the winner. Only the own
    // cluster's namespace is known here; members check theirs when the primary asks them.
    if cluster == policy.cluster {
        for r in &for_cluster {
            check_protected(&r.role, &r.namespaces, policy)?;
        }
    }
    let candidates: Vec<&Rule> = match requested_role {
        Some(role) => for_cluster
            .iter()
            .copied()
            .filter(|r| r.role == role)
            .collect(),
        None => for_cluster.clone(),
    };
    if candidates.is_empty() {
        return Err(Reject::RoleNotGranted {
            role: requested_role.unwrap_or_default().to_string(),
            granted: distinct(for_cluster.iter().map(|r| r.role.clone())),
        });
    }
    let top = candidates
        .iter()
        .map(|r| r.priority)
        .max()
        .unwrap_or_default();
    let mut winners: Vec<&Rule> = Vec::new();
    for r in candidates.into_iter().filter(|r| r.priority == top) {
        // Identical rules delivered twice (overlapping grants) are one rule, not a tie.
        if !winners.contains(&r) {
            winners.push(r);
        }
    }
    if winners.len() > 1 {
        return Err(Reject::AmbiguousGrant {
            priority: top,
            roles: distinct(winners.iter().map(|r| r.role.clone())),
        });
    }
    within_policy(winners[0], policy)
}

/// The rules that apply to `cluster`: at least one, else `no_grant`.
fn applicable<'a>(
    rules: &'a [Rule],
    policy: &Policy,
    cluster: &str,
) -> Result<Vec<&'a Rule>, Reject> {
    let for_cluster: Vec<&Rule> = rules
        .iter()
        .filter(|r| r.applies_to(cluster, &policy.cluster))
        .collect();
    if for_cluster.is_empty() {
        return Err(Reject::NoGrant {
            cluster: cluster.to_string(),
        });
    }
    Ok(for_cluster)
}

/// The server's own limits on a chosen rule: the role must be allowed, the period is clamped.
fn within_policy(rule: &Rule, policy: &Policy) -> Result<Rule, Reject> {
    if !policy.allowed_roles.is_empty() && !policy.allowed_roles.contains(&rule.role) {
        return Err(Reject::RoleNotAllowed {
            role: rule.role.clone(),
            allowed: policy.allowed_roles.clone(),
        });
    }
    let mut chosen = rule.clone();
    if let Some(max) = policy.max_period.filter(|m| !m.is_zero())
        && chosen.period.as_std() > max
    {
        chosen.period = GoDuration::from_std(max);
    }
    Ok(chosen)
}

/// Does the grant still give a session on `cluster` what it holds (`role` with exactly `namespaces`)? The
/// one check behind every token mint (local or relayed), grant revalidation and the primary's verdict on
/// its members' sessions. Returns the best matching rule (its period clamped), so callers can compare it.
pub fn verdict(
    rules: &[Rule],
    policy: &Policy,
    cluster: &str,
    role: &str,
    namespaces: &[String],
) -> Result<Rule, Reject> {
    let for_cluster = applicable(rules, policy, cluster)?;
    let Some(best) = for_cluster
        .into_iter()
        .filter(|r| r.role == role && r.namespaces == namespaces)
        .max_by_key(|r| r.priority)
    else {
        return Err(Reject::GrantChanged { role: role.into() });
    };
    within_policy(best, policy)
}

/// A grant whose period was shortened shortens live sessions too: a session that started at `started`
/// under a grant that now gives `period` ends at `started + period` when that comes before its current
/// end `until`. A longer period never lengthens a session (that takes a new login). `None`: the end stands.
pub fn shortened_end(
    started: jiff::Timestamp,
    until: jiff::Timestamp,
    period: Duration,
) -> Option<jiff::Timestamp> {
    let period = jiff::SignedDuration::try_from(period).ok()?;
    let end = started.checked_add(period).ok()?;
    (end < until).then_some(end)
}

/// Why a federation member refuses what its primary asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    /// The member's own allow-list does not have the role.
    Role(Reject),
    /// The request itself is malformed.
    Invalid(String),
}

/// A member's own limits on a session its primary asks for: the role must be in the member's allow-list,
/// the period at least the minimum (clamped to the member's maximum), the namespaces valid names. The member
/// trusts the primary's word on the user and the rule, never on these.
pub fn member_limits(
    policy: &Policy,
    role: &str,
    period: Duration,
    namespaces: &[String],
) -> Result<Duration, Refused> {
    if !policy.allowed_roles.is_empty() && !policy.allowed_roles.iter().any(|a| a == role) {
        return Err(Refused::Role(Reject::RoleNotAllowed {
            role: role.into(),
            allowed: policy.allowed_roles.clone(),
        }));
    }
    if period < MIN_PERIOD {
        return Err(Refused::Invalid("period is shorter than 10m".into()));
    }
    if let Some(bad) = namespaces
        .iter()
        .find(|n| !super::naming::is_dns1123_label(n))
    {
        return Err(Refused::Invalid(format!("namespace {bad:?} is not valid")));
    }
    Ok(match policy.max_period.filter(|m| !m.is_zero()) {
        Some(max) => period.min(max),
        None => period,
    })
}

/// Refuses `namespaces` when they include the server's own namespace (`policy.protected_namespace`).
pub fn check_protected(role: &str, namespaces: &[String], policy: &Policy) -> Result<(), Reject> {
    match &policy.protected_namespace {
        Some(p) if namespaces.iter().any(|n| n == p) => Err(Reject::ProtectedNamespace {
            role: role.to_string(),
            namespace: p.clone(),
        }),
        _ => Ok(()),
    }
}

fn distinct(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Shell-style glob with `*` (any run) and `?` (any one character), matched on characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn policy() -> Policy {
        Policy {
            cluster: "prod-login-cluster".into(),
            ..Policy::default()
        }
    }

    fn rules(values: serde_json::Value) -> Vec<Rule> {
        parse_rules(values.as_array().unwrap()).unwrap()
    }

    #[test]
    fn a_shorter_period_moves_the_end_earlier_and_a_longer_one_never_later() {
        let start: jiff::Timestamp = "2026-12-06T08:00:00Z".parse().unwrap();
        let until: jiff::Timestamp = "2026-12-06T16:00:00Z".parse().unwrap();
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(
            shortened_end(start, until, h(1)),
            Some("2026-12-06T09:00:00Z".parse().unwrap())
        );
        assert_eq!(shortened_end(start, until, h(8)), None);
        assert_eq!(shortened_end(start, until, h(24)), None);
    }

    #[test]
    fn parses_upstream_rules_and_ignores_unknown_fields() {
        let r = rules(json!([{"role": "view", "period": "8h", "future": 1}]));
        assert_eq!(r[0].role, "view");
        assert_eq!(r[0].period.to_string(), "8h0m0s");
        assert_eq!(r[0].priority, 0);
        assert_eq!(r[0].clusters, None);
    }

    #[test]
    fn malformed_rules_name_their_index() {
        for (bad, needle) in [
            (json!({"period": "8h"}), "missing \"role\""),
            (json!({"role": "view"}), "missing \"period\""),
            (
                json!({"role": "view", "period": "5m"}),
                "shorter than the minimum",
            ),
            (json!({"role": "view", "period": "1d"}), "invalid duration"),
            (
                json!({"role": "view", "period": "8h", "priority": "high"}),
                "invalid type",
            ),
            (
                json!({"role": "view", "period": "8h", "namespaces": ["Team_A"]}),
                "namespace",
            ),
            (json!("view"), "invalid type"),
        ] {
            let err = parse_rules(&[json!({"role": "edit", "period": "1h"}), bad]).unwrap_err();
            assert_eq!(err.code(), "invalid_grant");
            let Reject::InvalidGrant { index, reason } = &err else {
                unreachable!()
            };
            assert_eq!(*index, 1);
            assert!(reason.contains(needle), "{reason} should mention {needle}");
            assert!(err.advice()[0].contains("#1"));
        }
    }

    #[test]
    fn highest_priority_wins_and_lower_ties_are_fine() {
        let r = rules(json!([
            {"role": "view", "period": "8h", "priority": 1},
            {"role": "edit", "period": "8h", "priority": 1},
            {"role": "admin", "period": "1h", "priority": 5}
        ]));
        assert_eq!(select(&r, &policy(), None).unwrap().role, "admin");
    }

    #[test]
    fn a_tie_at_the_top_is_ambiguous_but_duplicates_are_not() {
        let tie =
            rules(json!([{"role": "view", "period": "8h"}, {"role": "edit", "period": "8h"}]));
        let err = select(&tie, &policy(), None).unwrap_err();
        assert_eq!(err.code(), "ambiguous_grant");
        assert!(err.advice()[0].contains("--role"));
        assert_eq!(select(&tie, &policy(), Some("edit")).unwrap().role, "edit");

        let dup =
            rules(json!([{"role": "view", "period": "8h"}, {"role": "view", "period": "8h"}]));
        assert_eq!(select(&dup, &policy(), None).unwrap().role, "view");
    }

    #[test]
    fn clusters_filter_rules() {
        let r = rules(json!([
            {"role": "view", "period": "8h", "clusters": ["prod-*"]},
            {"role": "edit", "period": "8h", "priority": 9, "clusters": ["staging-?"]}
        ]));
        assert_eq!(select(&r, &policy(), None).unwrap().role, "view");
        assert_eq!(
            select_for(&r, &policy(), "staging-1", None).unwrap().role,
            "edit"
        );
        assert_eq!(
            select_for(&r, &policy(), "dev", None).unwrap_err().code(),
            "no_grant"
        );
        // A rule without `clusters` never applies to another (member) cluster.
        let local = rules(json!([{"role": "view", "period": "8h"}]));
        assert_eq!(
            select_for(&local, &policy(), "prod-west", None)
                .unwrap_err()
                .code(),
            "no_grant"
        );
    }

    #[test]
    fn role_choice_allow_list_and_clamping() {
        let r = rules(
            json!([{"role": "view", "period": "8h"}, {"role": "cluster-admin", "period": "24h", "priority": 9}]),
        );
        let err = select(&r, &policy(), Some("edit")).unwrap_err();
        assert_eq!(
            err,
            Reject::RoleNotGranted {
                role: "edit".into(),
                granted: vec!["view".into(), "cluster-admin".into()]
            }
        );

        let strict = Policy {
            allowed_roles: vec!["view".into()],
            max_period: Some(Duration::from_secs(3600)),
            ..policy()
        };
        assert_eq!(
            select(&r, &strict, None).unwrap_err().code(),
            "role_not_allowed"
        );
        let chosen = select(&r, &strict, Some("view")).unwrap();
        assert_eq!(chosen.period.to_string(), "1h0m0s");
    }

    #[test]
    fn verdict_holds_only_for_the_exact_role_and_scope() {
        let p = policy();
        let r = rules(json!([
            {"role": "view", "period": "8h", "priority": 1},
            {"role": "edit", "period": "1h", "namespaces": ["dev"], "priority": 2},
        ]));
        assert_eq!(
            verdict(&r, &p, "prod-login-cluster", "view", &[])
                .unwrap()
                .role,
            "view"
        );
        assert_eq!(
            verdict(&r, &p, "prod-login-cluster", "edit", &["dev".into()])
                .unwrap()
                .period
                .to_string(),
            "1h0m0s"
        );
        assert_eq!(
            verdict(&r, &p, "prod-login-cluster", "edit", &[])
                .unwrap_err()
                .code(),
            "grant_changed",
            "a narrowed or widened scope is a changed grant"
        );
        assert_eq!(
            verdict(&r, &p, "prod-login-cluster", "admin", &[])
                .unwrap_err()
                .code(),
            "grant_changed"
        );
        assert_eq!(
            verdict(&r, &p, "dev", "view", &[]).unwrap_err().code(),
            "no_grant"
        );
        let only_edit = Policy {
            allowed_roles: vec!["edit".into()],
            ..policy()
        };
        assert_eq!(
            verdict(&r, &only_edit, "prod-login-cluster", "view", &[])
                .unwrap_err()
                .code(),
            "role_not_allowed"
        );
    }

    #[test]
    fn members_keep_their_own_limits() {
        let h = Duration::from_secs(3600);
        let p = Policy {
            allowed_roles: vec!["view".into()],
            max_period: Some(h),
            ..policy()
        };
        assert_eq!(member_limits(&p, "view", 8 * h, &[]), Ok(h));
        assert!(matches!(
            member_limits(&p, "admin", h, &[]),
            Err(Refused::Role(Reject::RoleNotAllowed { .. }))
        ));
        assert!(matches!(
            member_limits(&p, "view", Duration::from_secs(60), &[]),
            Err(Refused::Invalid(_))
        ));
        assert!(matches!(
            member_limits(&p, "view", h, &["Not_A_Name".into()]),
            Err(Refused::Invalid(_))
        ));
    }

    #[test]
    fn a_rule_naming_the_servers_own_namespace_rejects_the_grant() {
        let guarded = Policy {
            protected_namespace: Some("tka-system".into()),
            ..policy()
        };
        let r = rules(json!([
            {"role": "view", "period": "8h", "priority": 9},
            {"role": "edit", "period": "8h", "namespaces": ["team-a", "tka-system"]}
        ]));
        let err = select(&r, &guarded, None).unwrap_err();
        assert_eq!(
            err,
            Reject::ProtectedNamespace {
                role: "edit".into(),
                namespace: "tka-system".into()
            }
        );
        assert_eq!(err.code(), "invalid_grant");
        assert!(err.to_string().contains("\"edit\"") && err.to_string().contains("\"tka-system\""));
        // Other namespaces are fine, and so is the rule when the server lives elsewhere.
        let fine = rules(json!([{"role": "edit", "period": "8h", "namespaces": ["team-a"]}]));
        assert!(select(&fine, &guarded, None).is_ok());
        assert!(select(&r, &policy(), None).is_ok());
        // A member's namespace is the member's business: rules for other clusters are not judged here.
        let for_member = rules(json!([
            {"role": "edit", "period": "8h", "namespaces": ["tka-system"], "clusters": ["prod-west"]}
        ]));
        assert!(select_for(&for_member, &guarded, "prod-west", None).is_ok());
        assert!(check_protected("edit", &["tka-system".into()], &guarded).is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("prod-*", "prod-login-cluster"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*-cluster", "prod-west-cluster"));
        assert!(!glob_match("prod-*", "staging-prod-x"));
    }

    proptest! {
        #[test]
        fn the_selected_rule_has_maximal_priority(prios in proptest::collection::vec(-5i64..5, 1..8)) {
            let values: Vec<_> = prios.iter().enumerate()
                .map(|(i, p)| json!({"role": format!("r{i}"), "period": "1h", "priority": p})).collect();
            let r = parse_rules(&values).unwrap();
            let max = *prios.iter().max().unwrap();
            match select(&r, &policy(), None) {
                Ok(chosen) => {
                    prop_assert_eq!(chosen.priority, max);
                    prop_assert_eq!(prios.iter().filter(|p| **p == max).count(), 1);
                }
                Err(e) => prop_assert_eq!(e.code(), "ambiguous_grant"),
            }
        }
    }
}
