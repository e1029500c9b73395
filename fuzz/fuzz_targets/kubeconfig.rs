//! The CLI's kubeconfig handling: the server's document (`normalize`: legacy shape → v1, exec users pinned
//! to the server reached), the managed file's name, the user's own kubeconfig read for `--merge`, the merge
//! and logout's removal.
//!
//! Input: `<the user's kubeconfig>\0<the server's document>\0<server URL>`. The server's document is JSON or
//! YAML, or, after a leading `!`, lines that build a document with tka's own builder: `login`,
//! `userPrefix|contextPrefix`, then one `cluster|apiserver|namespace|token` per cluster (`token` `exec` for
//! the exec plugin); `!l` builds the legacy map shape. Properties:
//! - nothing panics, whatever either side sends;
//! - every `tka credential` user asks the server reached, and normalizing twice changes nothing;
//! - the managed file of the document is `<root>/<one name>/<one name>.yaml`, never elsewhere;
//! - a merged kubeconfig re-reads to the same document, keeps every entry and setting of the user's,
//!   holds every entry of the new document and its current context;
//! - removing the server's entries leaves none of them and all of the user's; when the user's file had no
//!   tka entries, it is exactly the user's document again.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tka::cli::fuzzing::{
    cluster_name, exec_targets, managed_path, merge, normalize, read_document, remove_server,
    render_document,
};
use tka::model::kubeconfig::{Auth, ClusterEntry, MANAGED_EXTENSION, Naming, legacy, v1};

const LISTS: [(&str, &str); 3] = [
    ("clusters", "cluster"),
    ("users", "user"),
    ("contexts", "context"),
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let (mine, theirs) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let server = Some(parts.next().unwrap_or_default())
        .filter(|s| !s.is_empty())
        .unwrap_or("https://tka.tailnet.test");

    let Some(doc) = server_document(theirs, server) else {
        return;
    };
    let doc = normalize(doc, server);
    for (asks, _) in exec_targets(&doc) {
        assert_eq!(asks, server, "an exec user asks another server");
    }
    assert_eq!(
        normalize(doc.clone(), server),
        doc,
        "normalizing twice changes nothing"
    );
    managed_file_stays_inside(server, &cluster_name(None, &doc));

    let existing = match read_document(mine.as_bytes()) {
        Ok(existing) => existing,
        Err(e) => return assert!(!e.to_string().is_empty()),
    };
    let merged = match merge(&existing, &doc) {
        Ok(merged) => merged,
        Err(message) if message.contains("not a kubeconfig") => {
            return assert!(!kubeconfig_shaped(&existing), "{message}: {existing}");
        }
        Err(message) => return assert!(message.contains("not written by tka"), "{message}"),
    };
    let rendered = render_document(&merged).expect("a merged document renders");
    let reread = read_document(rendered.as_bytes())
        .unwrap_or_else(|e| panic!("the merged file does not re-read: {e}\n{rendered}"));
    assert_eq!(
        reread, merged,
        "the merged file re-reads differently:\n{rendered}"
    );
    keeps_the_users(&existing, &merged);
    // Merging notes the user's current context in tka's context entry (for logout); nothing else changes.
    let mut noted = merged.clone();
    for ctx in noted
        .get_mut("contexts")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        forget_previous_context(ctx);
    }
    for (list, _) in LISTS {
        for entry in doc[list].as_array().into_iter().flatten() {
            let mut entry = entry.clone();
            forget_previous_context(&mut entry);
            assert!(
                entries(&noted, list).contains(&&entry),
                "new {list} entry missing: {entry}"
            );
        }
    }
    if let Some(ctx) = doc["current-context"].as_str() {
        assert_eq!(merged["current-context"], ctx);
    }

    let removed = remove_server(&merged, server).unwrap_or_else(|| merged.clone());
    keeps_the_users(&existing, &removed);
    for (list, inner) in LISTS {
        for entry in entries(&removed, list) {
            assert_ne!(
                managed_by(entry, inner).map(|(s, _)| s),
                Some(server),
                "{entry}"
            );
        }
    }
    if restorable(&existing, &doc, server) {
        let mut want = existing.clone();
        if !want.is_object() {
            want = json!({});
        }
        for (key, default) in [("apiVersion", "v1"), ("kind", "Config")] {
            if want[key].is_null() {
                want[key] = json!(default);
            }
        }
        // A list the user did not have (or had as null) may stay behind empty.
        let mut removed = removed.clone();
        for doc in [&mut removed, &mut want] {
            for (list, _) in LISTS {
                if doc[list] == json!([]) || doc[list].is_null() {
                    doc.as_object_mut().expect("a mapping").remove(list);
                }
            }
        }
        assert_eq!(
            removed, want,
            "logout does not restore the user's kubeconfig"
        );
    }
});

/// The document as the server sent it, or built by tka's own builder (see the module comment).
fn server_document(theirs: &str, server: &str) -> Option<Value> {
    let Some(spec) = theirs.strip_prefix('!') else {
        return serde_json::from_str(theirs)
            .ok()
            .or_else(|| serde_yaml::from_str(theirs).ok());
    };
    let (shape_legacy, spec) = match spec.strip_prefix('l') {
        Some(rest) => (true, rest),
        None => (false, spec),
    };
    let mut lines = spec.lines();
    let login = lines.next().unwrap_or_default().to_string();
    let (user_prefix, context_prefix) = lines
        .next()
        .unwrap_or_default()
        .split_once('|')
        .unwrap_or(("tka-user-", "tka-"));
    let naming = Naming {
        login,
        user_prefix: user_prefix.into(),
        context_prefix: context_prefix.into(),
        tka_server: server.into(),
    };
    let clusters: Vec<ClusterEntry> = lines
        .map(|line| {
            let mut f = line.split('|');
            let mut next = || f.next().unwrap_or_default().to_string();
            let (name, server_url, namespace, token) = (next(), next(), next(), next());
            ClusterEntry {
                name,
                server_url,
                ca_data: String::new(),
                insecure_skip_tls_verify: false,
                namespace: Some(namespace).filter(|n| !n.is_empty()),
                auth: match token.as_str() {
                    "exec" => Auth::Exec {
                        server: server.into(),
                        auto_login: false,
                    },
                    _ => Auth::Token(token),
                },
                names: None,
            }
        })
        .collect();
    Some(if shape_legacy {
        legacy(&naming, &clusters)
    } else {
        v1(&naming, &clusters)
    })
}

fn managed_file_stays_inside(server: &str, cluster: &str) {
    assert!(!cluster.is_empty());
    let root = Path::new("/home/u/.config/tka/kubeconfig");
    let path = managed_path(root, server, cluster);
    let rest: Vec<Component> = path
        .strip_prefix(root)
        .expect("under the root")
        .components()
        .collect();
    assert_eq!(rest.len(), 2, "{path:?}");
    assert!(
        rest.iter().all(|c| matches!(c, Component::Normal(_))),
        "{path:?}"
    );
    assert!(path.extension().is_some_and(|e| e == "yaml"), "{path:?}");
}

/// A context entry without the user's previous context that `merge` notes in tka's extension.
fn forget_previous_context(entry: &mut Value) {
    let extensions = entry
        .get_mut("context")
        .and_then(|c| c.get_mut("extensions"))
        .and_then(Value::as_array_mut);
    for ext in extensions.into_iter().flatten() {
        if let Some(e) = ext.get_mut("extension").and_then(Value::as_object_mut) {
            e.remove("previous-context");
        }
    }
}

fn entries<'a>(doc: &'a Value, list: &str) -> Vec<&'a Value> {
    doc[list].as_array().into_iter().flatten().collect()
}

/// `(server, cluster)` of a tka entry, as the CLI recognises its own entries.
fn managed_by<'a>(entry: &'a Value, inner: &str) -> Option<(&'a str, &'a str)> {
    let ext = entry[inner]["extensions"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == MANAGED_EXTENSION)?;
    Some((
        ext["extension"]["server"].as_str().unwrap_or_default(),
        ext["extension"]["cluster"].as_str().unwrap_or_default(),
    ))
}

/// Empty, or a mapping whose entry lists are lists (or null).
fn kubeconfig_shaped(doc: &Value) -> bool {
    doc.is_null()
        || doc.is_object()
            && LISTS
                .iter()
                .all(|(list, _)| doc[list].is_array() || doc[list].is_null())
}

/// Everything in the user's document that is not tka's is still in `doc`.
fn keeps_the_users(existing: &Value, doc: &Value) {
    if existing.is_null() {
        return;
    }
    let Some(mine) = existing.as_object() else {
        panic!("the user's document {existing} is gone: {doc}");
    };
    for (key, value) in mine {
        match LISTS.iter().find(|(list, _)| list == key) {
            Some((list, inner)) => {
                let Some(items) = value.as_array() else {
                    assert!(value.is_null(), "the user's {list} {value} are gone: {doc}");
                    continue;
                };
                for item in items.iter().filter(|e| managed_by(e, inner).is_none()) {
                    assert!(
                        entries(doc, list).contains(&item),
                        "the user's {list} entry {item} is gone"
                    );
                }
            }
            None if key == "current-context" => {}
            // A null apiVersion or kind is filled in.
            None if value.is_null() && (key == "apiVersion" || key == "kind") => {}
            None => assert_eq!(&doc[key], value, "the user's {key:?} changed"),
        }
    }
}

/// Logout gives back exactly the user's document when: the user's file had no tka entries and a current
/// context that exists, every new entry is the server's, and the new current context is one of them.
fn restorable(existing: &Value, doc: &Value, server: &str) -> bool {
    let no_tka_entries = LISTS.iter().all(|(list, inner)| {
        entries(existing, list)
            .iter()
            .all(|e| managed_by(e, inner).is_none())
    });
    let current_exists = existing["current-context"]
        .as_str()
        .is_some_and(|c| entries(existing, "contexts").iter().any(|e| e["name"] == c));
    let all_servers = LISTS.iter().all(|(list, inner)| {
        entries(doc, list)
            .iter()
            .all(|e| managed_by(e, inner).is_some_and(|(s, _)| s == server))
    });
    let ours_current = doc["current-context"].as_str().is_some_and(|c| {
        entries(doc, "contexts").iter().any(|e| {
            e["name"] == c
                && e["context"]["extensions"].as_array().is_some_and(|x| {
                    x.iter()
                        .any(|x| x["name"] == MANAGED_EXTENSION && x["extension"].is_object())
                })
        })
    });
    let lists_ok = LISTS
        .iter()
        .all(|(list, _)| existing[list].is_array() || existing[list].is_null());
    existing.is_object()
        && no_tka_entries
        && current_exists
        && all_servers
        && ours_current
        && lists_ok
}
