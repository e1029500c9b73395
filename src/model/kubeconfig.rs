//! Kubeconfig documents handed to the caller. Pure builders.
//!
//! Two shapes exist: the *legacy* map-shaped JSON that the upstream Go CLI decodes into client-go's internal
//! type (kept field for field), and a standard `v1` kubeconfig that kubectl loads (always used for YAML;
//! upstream's YAML was the map shape and not loadable).

use serde_json::{Map, Value, json};

/// Extension that marks kubeconfig entries written by tka, so the CLI only ever touches its own entries.
pub const MANAGED_EXTENSION: &str = "tka.specht-labs.de/managed";

/// One cluster entry of a kubeconfig.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterEntry {
    pub name: String,
    pub server_url: String,
    /// Base64 PEM, empty when none is configured.
    pub ca_data: String,
    pub insecure_skip_tls_verify: bool,
    /// Default namespace of the context (first namespace of a namespace-scoped rule).
    pub namespace: Option<String>,
    /// How the user authenticates to this cluster.
    pub auth: Auth,
    /// (user, context) names chosen by the cluster itself (a federation member's own prefixes); `None`:
    /// derived from [`Naming`].
    pub names: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    Token(String),
    /// `tka credential` exec plugin; `server` is the tka server URL the plugin asks.
    Exec {
        server: String,
        auto_login: bool,
    },
}

/// Names and the tka server URL shared by all entries of one document.
#[derive(Debug, Clone, PartialEq)]
pub struct Naming {
    pub login: String,
    pub user_prefix: String,
    pub context_prefix: String,
    /// URL of the tka server that issued the document (for the managed extension).
    pub tka_server: String,
}

impl ClusterEntry {
    /// `server`, and the CA and insecure flag only when set (as upstream).
    fn cluster_fields(&self) -> Map<String, Value> {
        let mut cluster = Map::new();
        cluster.insert("server".into(), json!(self.server_url));
        if !self.ca_data.is_empty() {
            cluster.insert("certificate-authority-data".into(), json!(self.ca_data));
        }
        if self.insecure_skip_tls_verify {
            cluster.insert("insecure-skip-tls-verify".into(), json!(true));
        }
        cluster
    }
}

impl Naming {
    /// User and context names of entry `i`: `<prefix><login>` for the first (own) cluster,
    /// `<prefix><login>@<cluster>` for the others (federation).
    fn entry_names(&self, i: usize, c: &ClusterEntry) -> (String, String) {
        if let Some(names) = &c.names {
            return names.clone();
        }
        let suffix = if i == 0 {
            String::new()
        } else {
            format!("@{}", c.name)
        };
        (
            format!("{}{suffix}", self.user()),
            format!("{}{suffix}", self.context()),
        )
    }

    fn user(&self) -> String {
        format!("{}{}", self.user_prefix, self.login)
    }
    fn context(&self) -> String {
        format!("{}{}", self.context_prefix, self.login)
    }

    /// The first entry's context is the current one.
    fn current(&self, clusters: &[ClusterEntry]) -> String {
        clusters
            .first()
            .map_or_else(|| self.context(), |c| self.entry_names(0, c).1)
    }
}

/// The entries with their (user, context) names, without any entry whose cluster, user or context name an
/// earlier entry already has: in a map-shaped document a later entry would silently replace the earlier one
/// (a member could repoint the primary's context), and kubectl refuses a list with duplicate names. Members'
/// names are checked when they join; this holds whatever reaches a document.
fn distinct<'a>(
    naming: &Naming,
    clusters: &'a [ClusterEntry],
) -> Vec<(&'a ClusterEntry, String, String)> {
    let mut out: Vec<(&ClusterEntry, String, String)> = Vec::new();
    for (i, c) in clusters.iter().enumerate() {
        let (user, ctx) = naming.entry_names(i, c);
        if out
            .iter()
            .any(|(o, u, x)| o.name == c.name || *u == user || *x == ctx)
        {
            continue;
        }
        out.push((c, user, ctx));
    }
    out
}

/// The upstream map-shaped document (upstream keyed users and contexts by login only).
pub fn legacy(naming: &Naming, clusters: &[ClusterEntry]) -> Value {
    let (mut cs, mut us, mut ctxs) = (Map::new(), Map::new(), Map::new());
    for (c, user, ctx) in distinct(naming, clusters) {
        let cluster = c.cluster_fields();
        cs.insert(c.name.clone(), Value::Object(cluster));
        let token = match &c.auth {
            Auth::Token(t) => t.clone(),
            Auth::Exec { .. } => String::new(),
        };
        us.insert(user.clone(), json!({ "token": token }));
        let mut context = Map::new();
        context.insert("cluster".into(), json!(c.name));
        context.insert("user".into(), json!(user));
        if let Some(ns) = &c.namespace {
            context.insert("namespace".into(), json!(ns));
        }
        ctxs.insert(ctx, Value::Object(context));
    }
    json!({
        "kind": "Config",
        "apiVersion": "v1",
        "clusters": cs,
        "users": us,
        "contexts": ctxs,
        "current-context": naming.current(clusters),
    })
}

/// A standard v1 kubeconfig; the first cluster's context is the current one.
pub fn v1(naming: &Naming, clusters: &[ClusterEntry]) -> Value {
    let mut cs = Vec::new();
    let mut us = Vec::new();
    let mut ctxs = Vec::new();
    for (c, user, ctx) in distinct(naming, clusters) {
        let ext = json!([{ "name": MANAGED_EXTENSION, "extension": { "server": naming.tka_server, "cluster": c.name } }]);
        let mut cluster = c.cluster_fields();
        cluster.insert("extensions".into(), ext.clone());
        cs.push(json!({ "name": c.name, "cluster": cluster }));
        let mut auth = match &c.auth {
            Auth::Token(t) => json!({ "token": t }),
            Auth::Exec { server, auto_login } => {
                json!({ "exec": exec_stanza(server, &c.name, *auto_login) })
            }
        };
        auth["extensions"] = ext.clone();
        us.push(json!({ "name": user, "user": auth }));
        let mut context = json!({ "cluster": c.name, "user": user, "extensions": ext });
        if let Some(ns) = &c.namespace {
            context["namespace"] = json!(ns);
        }
        ctxs.push(json!({ "name": ctx, "context": context }));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": cs,
        "users": us,
        "contexts": ctxs,
        "current-context": naming.current(clusters),
    })
}

/// The exec stanza that runs `tka credential`.
pub fn exec_stanza(tka_server: &str, cluster: &str, auto_login: bool) -> Value {
    let mut args = vec!["credential", "--server", tka_server, "--cluster", cluster];
    if auto_login {
        args.push("--auto-login");
    }
    json!({
        "apiVersion": super::wire::EXEC_API_V1,
        "command": "tka",
        "args": args,
        "interactiveMode": "Never",
        "provideClusterInfo": false,
        "installHint": "tka is required for this context: install the tka CLI, then run `tka login`",
    })
}

/// Converts the legacy map shape (an upstream server's answer) into a v1 document.
pub fn legacy_to_v1(legacy: &Value, tka_server: &str) -> Value {
    let named = |key: &str, inner: &str| -> Vec<Value> {
        legacy[key]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(name, v)| json!({ "name": name, inner: v }))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": named("clusters", "cluster"),
        "users": named("users", "user"),
        "contexts": named("contexts", "context"),
        "current-context": legacy["current-context"],
    });
    for (list, inner) in [
        ("clusters", "cluster"),
        ("users", "user"),
        ("contexts", "context"),
    ] {
        for entry in doc[list].as_array_mut().into_iter().flatten() {
            let cluster = entry[inner]["cluster"]
                .as_str()
                .map(str::to_string)
                .or_else(|| entry["name"].as_str().map(str::to_string));
            entry[inner]["extensions"] = json!([{ "name": MANAGED_EXTENSION, "extension": { "server": tka_server, "cluster": cluster } }]);
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming() -> Naming {
        Naming {
            login: "alice@example.com".into(),
            user_prefix: "tka-user-".into(),
            context_prefix: "tka-context-".into(),
            tka_server: "https://tka.ts.net".into(),
        }
    }

    fn entry(auth: Auth) -> ClusterEntry {
        ClusterEntry {
            name: "prod".into(),
            server_url: "https://k8s:6443".into(),
            ca_data: "Q0E=".into(),
            insecure_skip_tls_verify: false,
            namespace: None,
            auth,
            names: None,
        }
    }

    #[test]
    fn legacy_shape_matches_upstream_field_for_field() {
        let doc = legacy(&naming(), &[entry(Auth::Token("tok".into()))]);
        assert_eq!(
            doc,
            json!({"kind":"Config","apiVersion":"v1",
                "clusters":{"prod":{"server":"https://k8s:6443","certificate-authority-data":"Q0E="}},
                "users":{"tka-user-alice@example.com":{"token":"tok"}},
                "contexts":{"tka-context-alice@example.com":{"cluster":"prod","user":"tka-user-alice@example.com"}},
                "current-context":"tka-context-alice@example.com"})
        );
    }

    #[test]
    fn v1_is_a_loadable_named_list_document_with_the_managed_extension() {
        let mut e = entry(Auth::Exec {
            server: "https://tka.ts.net".into(),
            auto_login: false,
        });
        e.namespace = Some("team-a".into());
        let doc = v1(&naming(), &[e]);
        assert_eq!(doc["clusters"][0]["name"], "prod");
        assert_eq!(doc["contexts"][0]["context"]["namespace"], "team-a");
        assert_eq!(doc["users"][0]["user"]["exec"]["args"][4], "prod");
        assert_eq!(
            doc["users"][0]["user"]["extensions"][0]["name"],
            MANAGED_EXTENSION
        );
        assert_eq!(doc["current-context"], "tka-context-alice@example.com");
        let yaml = serde_yaml::to_string(&doc).unwrap();
        assert!(
            yaml.contains("current-context: tka-context-alice@example.com"),
            "{yaml}"
        );
    }

    #[test]
    fn legacy_converts_to_v1() {
        let doc = legacy_to_v1(
            &legacy(&naming(), &[entry(Auth::Token("tok".into()))]),
            "https://tka",
        );
        assert_eq!(doc["users"][0]["user"]["token"], "tok");
        assert_eq!(doc["contexts"][0]["name"], "tka-context-alice@example.com");
        assert_eq!(
            doc["clusters"][0]["cluster"]["extensions"][0]["extension"]["cluster"],
            "prod"
        );
    }

    #[test]
    fn a_later_entry_never_replaces_an_earlier_ones_names() {
        let own = entry(Auth::Token("own".into()));
        let mut rogue = entry(Auth::Token("rogue".into()));
        rogue.name = "rogue".into();
        rogue.server_url = "https://evil:6443".into();
        // A member that announced the primary's prefixes.
        rogue.names = Some((
            "tka-user-alice@example.com".into(),
            "tka-context-alice@example.com".into(),
        ));
        let mut same_cluster = entry(Auth::Token("other".into()));
        same_cluster.names = Some(("x".into(), "y".into()));
        let entries = [own, rogue, same_cluster];
        let doc = legacy(&naming(), &entries);
        assert_eq!(doc["users"]["tka-user-alice@example.com"]["token"], "own");
        assert_eq!(doc["clusters"]["prod"]["server"], "https://k8s:6443");
        assert_eq!(doc["clusters"].as_object().unwrap().len(), 1);
        let doc = v1(&naming(), &entries);
        assert_eq!(doc["users"].as_array().unwrap().len(), 1);
        assert_eq!(doc["users"][0]["user"]["token"], "own");
    }
}
