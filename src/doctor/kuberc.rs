//! kubectl's credential plugin policy (`~/.kube/kuberc`, kubectl ≥ 1.35): would it let kubectl run `tka`?
//!
//! kubectl reads `--kuberc`, else `$KUBERC` (`off` disables the file), else `~/.kube/kuberc`. The policy is
//! `AllowAll` (also when empty), `DenyAll` or `Allowlist`; an allowlist entry (`command`, or the deprecated
//! `name`) admits the plugin when it equals the kubeconfig's command, or when both resolve to the same file on
//! `PATH` (client-go compares `exec.LookPath` results).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The kubeconfig's exec command (`tka`, as tka writes it).
pub const PLUGIN: &str = "tka";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Preference {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    credential_plugin_policy: String,
    #[serde(default)]
    credential_plugin_allowlist: Option<Vec<Entry>>,
}

#[derive(Debug, Default, Deserialize)]
struct Entry {
    #[serde(default)]
    name: String,
    #[serde(default)]
    command: String,
}

/// What the policy means for `tka`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No policy, `AllowAll`, or `tka` on the allowlist (the matching entry).
    Allowed(String),
    /// kubectl would refuse to run `tka`: why.
    Blocked(String),
    /// kubectl would refuse the file itself (and fail every command): why.
    Invalid(String),
}

/// The kuberc file kubectl would read, or `None` when `$KUBERC=off`.
pub fn path(kuberc_env: Option<&str>, home: Option<&Path>) -> Option<PathBuf> {
    match kuberc_env.filter(|v| !v.is_empty()) {
        Some("off") => None,
        Some(p) => Some(PathBuf::from(p)),
        None => home.map(|h| h.join(".kube").join("kuberc")),
    }
}

/// Evaluates the kuberc `text`. `resolve` is `exec.LookPath`: the absolute file a command name runs.
pub fn evaluate(text: &str, resolve: &dyn Fn(&str) -> Option<PathBuf>) -> Verdict {
    let mut preference = None;
    for doc in serde_yaml::Deserializer::from_str(text) {
        match Preference::deserialize(doc) {
            Ok(p) if p.kind == "Preference" || p.kind.is_empty() => {
                preference = Some(p);
                break;
            }
            Ok(_) => {}
            Err(e) => return Verdict::Invalid(format!("not a kuberc Preference: {e}")),
        }
    }
    let Some(p) = preference else {
        return Verdict::Allowed("no credential plugin policy".into());
    };
    match p.credential_plugin_policy.as_str() {
        "" | "AllowAll" => {
            if p.credential_plugin_allowlist.is_some() {
                Verdict::Invalid(
                    "credentialPluginAllowlist is set but credentialPluginPolicy is not Allowlist"
                        .into(),
                )
            } else {
                Verdict::Allowed("credential plugin policy AllowAll".into())
            }
        }
        "DenyAll" => Verdict::Blocked("credentialPluginPolicy is DenyAll".into()),
        "Allowlist" => allowlist(p.credential_plugin_allowlist, resolve),
        other => Verdict::Invalid(format!("unknown credentialPluginPolicy {other:?}")),
    }
}

fn allowlist(list: Option<Vec<Entry>>, resolve: &dyn Fn(&str) -> Option<PathBuf>) -> Verdict {
    let list = match list {
        None => {
            return Verdict::Invalid("policy Allowlist without credentialPluginAllowlist".into());
        }
        Some(l) if l.is_empty() => return Verdict::Blocked("the allowlist is empty".into()),
        Some(l) => l,
    };
    let resolved = resolve(PLUGIN);
    let mut names = Vec::new();
    for e in &list {
        let entry = if e.command.is_empty() {
            &e.name
        } else {
            &e.command
        };
        if entry.is_empty() {
            return Verdict::Invalid("an allowlist entry has neither command nor name".into());
        }
        names.push(entry.clone());
        let same_file = resolved.is_some() && resolve(entry) == resolved;
        if entry == PLUGIN || resolved.as_deref() == Some(Path::new(entry)) || same_file {
            return Verdict::Allowed(format!("allowlisted ({entry})"));
        }
    }
    Verdict::Blocked(format!(
        "the credential plugin allowlist ({}) does not include tka",
        names.join(", ")
    ))
}

/// The snippet that admits tka.
pub const SNIPPET: &str =
    "credentialPluginPolicy: Allowlist + credentialPluginAllowlist: [{name: tka}]";

#[cfg(test)]
mod tests {
    use super::*;

    fn on_path(name: &str) -> Option<PathBuf> {
        match name {
            "tka" | "/usr/local/bin/tka" => Some("/usr/local/bin/tka".into()),
            "gke-gcloud-auth-plugin" => Some("/usr/bin/gke-gcloud-auth-plugin".into()),
            _ => None,
        }
    }

    const HEAD: &str = "apiVersion: kubectl.config.k8s.io/v1beta1\nkind: Preference\n";

    #[test]
    fn no_policy_or_allow_all_allows() {
        assert!(matches!(evaluate(HEAD, &on_path), Verdict::Allowed(_)));
        assert!(matches!(evaluate("", &on_path), Verdict::Allowed(_)));
        let all = format!("{HEAD}credentialPluginPolicy: AllowAll\n");
        assert!(matches!(evaluate(&all, &on_path), Verdict::Allowed(_)));
    }

    #[test]
    fn the_readme_snippet_and_a_full_path_allow_tka() {
        let readme = format!(
            "{HEAD}credentialPluginPolicy: Allowlist\ncredentialPluginAllowlist:\n- name: tka\n"
        );
        assert_eq!(
            evaluate(&readme, &on_path),
            Verdict::Allowed("allowlisted (tka)".into())
        );
        let full = format!(
            "{HEAD}credentialPluginPolicy: Allowlist\ncredentialPluginAllowlist:\n- command: /usr/local/bin/tka\n"
        );
        assert!(matches!(evaluate(&full, &on_path), Verdict::Allowed(_)));
    }

    #[test]
    fn an_allowlist_without_tka_or_deny_all_blocks() {
        let other = format!(
            "{HEAD}credentialPluginPolicy: Allowlist\ncredentialPluginAllowlist:\n- name: gke-gcloud-auth-plugin\n"
        );
        assert_eq!(
            evaluate(&other, &on_path),
            Verdict::Blocked(
                "the credential plugin allowlist (gke-gcloud-auth-plugin) does not include tka"
                    .into()
            )
        );
        let deny = format!("{HEAD}credentialPluginPolicy: DenyAll\n");
        assert!(matches!(evaluate(&deny, &on_path), Verdict::Blocked(_)));
        let empty =
            format!("{HEAD}credentialPluginPolicy: Allowlist\ncredentialPluginAllowlist: []\n");
        assert!(matches!(evaluate(&empty, &on_path), Verdict::Blocked(_)));
    }

    #[test]
    fn misconfigured_files_are_reported_as_invalid() {
        for bad in [
            format!("{HEAD}credentialPluginPolicy: Allowlist\n"),
            format!("{HEAD}credentialPluginPolicy: Sometimes\n"),
            format!("{HEAD}credentialPluginAllowlist:\n- name: tka\n"),
            "- not a mapping\n".to_string(),
        ] {
            assert!(
                matches!(evaluate(&bad, &on_path), Verdict::Invalid(_)),
                "{bad}"
            );
        }
    }

    #[test]
    fn kuberc_location_follows_kubectl() {
        let home = Path::new("/home/a");
        assert_eq!(
            path(None, Some(home)),
            Some(PathBuf::from("/home/a/.kube/kuberc"))
        );
        assert_eq!(path(Some("off"), Some(home)), None);
        assert_eq!(
            path(Some("/etc/kuberc"), Some(home)),
            Some(PathBuf::from("/etc/kuberc"))
        );
        assert_eq!(
            path(Some(""), Some(home)),
            Some(PathBuf::from("/home/a/.kube/kuberc"))
        );
    }
}
