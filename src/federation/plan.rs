//! Which clusters a login reaches and with which rule. Rules without `clusters`
//! apply only to the primary's own cluster; a member's announced `allowed_roles` rejects early (the member
//! enforces its own limits again).

use crate::model::rules::{Policy, Reject, Rule, select_for};

/// A cluster a login may target.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    /// The member's announced `operator.allowedRoles` (ignored for the own cluster: `own` has them).
    pub allowed_roles: Vec<String>,
}

/// The outcome of rule selection for every candidate, own cluster first, members by name. `only` (the
/// login's `cluster=` parameters) limits the candidates when not empty.
pub fn plan(
    rules: &[Rule],
    own: &Policy,
    members: &[Target],
    role: Option<&str>,
    only: &[String],
) -> Vec<(String, Result<Rule, Reject>)> {
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut out = Vec::new();
    if wanted(&own.cluster) {
        out.push((
            own.cluster.clone(),
            select_for(rules, own, &own.cluster, role),
        ));
    }
    let mut members: Vec<&Target> = members.iter().filter(|m| m.name != own.cluster).collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    for m in members.into_iter().filter(|m| wanted(&m.name)) {
        // `cluster` stays the primary's own name, so rules without `clusters` never match a member.
        let policy = Policy {
            cluster: own.cluster.clone(),
            allowed_roles: m.allowed_roles.clone(),
            max_period: own.max_period,
            ..Policy::default()
        };
        out.push((m.name.clone(), select_for(rules, &policy, &m.name, role)));
    }
    out
}

impl super::Member {
    /// The member as a login target: its name and its announced allow-list.
    pub fn target(&self) -> Target {
        Target {
            name: self.announcement.cluster_name.clone(),
            allowed_roles: self.announcement.allowed_roles.clone(),
        }
    }
}

/// `forbidden` or `conflict`: the status a rejected cluster gets in `clusters`.
pub fn status_of(r: &Reject) -> &'static str {
    match r {
        Reject::AmbiguousGrant { .. } => "conflict",
        _ => "forbidden",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rules::parse_rules;
    use serde_json::json;

    fn rules(v: serde_json::Value) -> Vec<Rule> {
        parse_rules(v.as_array().unwrap()).unwrap()
    }

    fn own() -> Policy {
        Policy {
            cluster: "prod".into(),
            ..Policy::default()
        }
    }

    fn t(name: &str, allowed: &[&str]) -> Target {
        Target {
            name: name.into(),
            allowed_roles: allowed.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn roles(p: &[(String, Result<Rule, Reject>)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(n, r)| {
                let v = match r {
                    Ok(rule) => rule.role.clone(),
                    Err(e) => e.code().to_string(),
                };
                (n.clone(), v)
            })
            .collect()
    }

    #[test]
    fn rules_without_clusters_stay_on_the_primary() {
        let r = rules(json!([{"role": "edit", "period": "1h"}]));
        let p = plan(&r, &own(), &[t("west", &[])], None, &[]);
        assert_eq!(
            roles(&p),
            vec![
                ("prod".into(), "edit".into()),
                ("west".into(), "no_grant".into())
            ]
        );
    }

    #[test]
    fn per_cluster_rules_allow_lists_and_ties() {
        let r = rules(json!([
            {"role": "view", "period": "1h", "clusters": ["*"]},
            {"role": "edit", "period": "1h", "priority": 5, "clusters": ["prod-*"]},
            {"role": "admin", "period": "1h", "priority": 5, "clusters": ["prod-tie"]},
        ]));
        let members = [
            t("prod-west", &[]),
            t("dev", &["view"]),
            t("prod-locked", &["view"]),
            t("prod-tie", &[]),
        ];
        let p = plan(&r, &own(), &members, None, &[]);
        assert_eq!(
            roles(&p),
            vec![
                ("prod".into(), "view".into()),
                ("dev".into(), "view".into()),
                ("prod-locked".into(), "role_not_allowed".into()),
                ("prod-tie".into(), "ambiguous_grant".into()),
                ("prod-west".into(), "edit".into()),
            ]
        );
        assert_eq!(status_of(p[3].1.as_ref().unwrap_err()), "conflict");
        let only = plan(&r, &own(), &members, None, &["dev".into()]);
        assert_eq!(roles(&only), vec![("dev".into(), "view".into())]);
    }
}
