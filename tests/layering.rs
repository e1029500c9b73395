//! The architecture's rules, checked on the source (ARCHITECTURE.md explains them): which module may use
//! which, no handler using another, and no import circle between the files of `src/`. Run it alone with
//! `cargo test --test layering`; it reads files only, so it needs nothing else.
//!
//! An edge is a `crate::…`, `super::…` or `self::…` path (also inside `{…}` groups), resolved to the deepest
//! module file it names. Test modules (`#[cfg(test)] mod tests {` to the end of a file) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

struct Crate {
    /// Module path → file.
    files: BTreeMap<Module, PathBuf>,
    /// Module → the modules it uses.
    edges: BTreeMap<Module, BTreeSet<Module>>,
    /// Module → the external crates it names in `use` lines.
    externs: BTreeMap<Module, BTreeSet<String>>,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn module_files(dir: &Path, root: &Path, out: &mut BTreeMap<Module, PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            module_files(&path, root, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .expect("below src")
            .with_extension("");
        let mut m: Module = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if m[0] == "bin" {
            continue;
        }
        if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
            m.pop();
        }
        out.insert(m, path);
    }
}

fn strip_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// Every `crate|super|self::a::b` path in `text`, with `{x, y::z}` groups expanded (one level).
fn paths(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for kind in ["crate", "super", "self"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(kind) {
            let start = from + i;
            from = start + kind.len();
            let before = start.checked_sub(1).map(|j| bytes[j]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
                continue;
            }
            let mut segs = Vec::new();
            let mut rest = &text[from..];
            while let Some(r) = rest.strip_prefix("::") {
                if let Some(group) = r.strip_prefix('{') {
                    let end = group.find('}').unwrap_or(group.len());
                    for item in group[..end].split(',') {
                        let item = item.trim().split(" as ").next().unwrap_or("").trim();
                        let mut full = segs.clone();
                        if item != "self" && !item.is_empty() {
                            full.extend(item.split("::").map(|s| s.trim().to_string()));
                        }
                        out.push((kind.to_string(), full));
                    }
                    segs.clear();
                    break;
                }
                let len = r
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(r.len());
                if len == 0 {
                    break;
                }
                segs.push(r[..len].to_string());
                rest = &r[len..];
            }
            if !segs.is_empty() {
                out.push((kind.to_string(), segs));
            }
        }
    }
    out
}

/// The deepest module file a path names.
fn resolve(
    files: &BTreeMap<Module, PathBuf>,
    base: &Module,
    kind: &str,
    segs: &[String],
) -> Option<Module> {
    let mut start: Module = match kind {
        "crate" => Vec::new(),
        "super" => base[..base.len().saturating_sub(1)].to_vec(),
        _ => base.clone(),
    };
    let mut segs = segs;
    while kind == "super" && segs.first().is_some_and(|s| s == "super") {
        start.pop();
        segs = &segs[1..];
    }
    let mut best = None;
    for i in 0..=segs.len() {
        let mut cand = start.clone();
        cand.extend(segs[..i].iter().cloned());
        if files.contains_key(&cand) {
            best = Some(cand);
        }
    }
    best
}

fn load() -> Crate {
    let root = src();
    let mut files = BTreeMap::new();
    module_files(&root, &root, &mut files);
    let mut edges = BTreeMap::new();
    let mut externs = BTreeMap::new();
    for (m, path) in &files {
        let full = std::fs::read_to_string(path).expect("readable");
        let text = strip_tests(&full);
        let dir_module = path
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs");
        // `super` in a/mod.rs is the parent of a.
        let mut base = m.clone();
        if dir_module {
            base.push("_".into());
        }
        let mut used = BTreeSet::new();
        for (kind, segs) in paths(text) {
            let from = if kind == "self" { m } else { &base };
            let Some(t) = resolve(&files, from, &kind, &segs) else {
                continue;
            };
            // Itself, or an ancestor (a mod.rs re-exporting its children).
            if t == *m || (t.len() < m.len() && m.starts_with(&t)) {
                continue;
            }
            used.insert(t);
        }
        let crates: BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("use "))
            .filter_map(|l| l.split("::").next())
            .map(|c| c.trim_end_matches(';').to_string())
            .collect();
        edges.insert(m.clone(), used);
        externs.insert(m.clone(), crates);
    }
    Crate {
        files,
        edges,
        externs,
    }
}

fn top(m: &Module) -> &str {
    m.first().map(String::as_str).unwrap_or("lib")
}

/// (module prefix, what it must not use: other top-level modules, or external crates).
const RULES: &[(&str, &[&str], &[&str])] = &[
    // The domain: pure, it uses nothing of the crate.
    (
        "model",
        &[
            "api",
            "cli",
            "config",
            "federation",
            "identity",
            "operator",
            "server",
            "telemetry",
        ],
        &["axum", "hyper", "kube", "tokio"],
    ),
    // Kubernetes, never HTTP or the tailnet.
    (
        "operator",
        &["api", "cli", "federation", "identity", "server"],
        &["axum", "hyper"],
    ),
    // The laptop side: talks to the server over HTTP only.
    (
        "cli",
        &["api", "operator", "server", "federation"],
        &["axum"],
    ),
    // The user's side of the doctor, which `cli` uses: pure checks, nothing of the server.
    (
        "doctor/client",
        &["api", "federation", "identity", "operator", "server"],
        &["axum", "hyper", "kube"],
    ),
    (
        "doctor/kuberc",
        &["api", "federation", "identity", "operator", "server"],
        &["axum", "hyper", "kube"],
    ),
    // Observability reads nothing of the parts it reports on: they register flags and hooks.
    (
        "telemetry",
        &["api", "cli", "federation", "operator", "server"],
        &[],
    ),
    (
        "federation",
        &["api", "cli", "operator", "server"],
        &["axum"],
    ),
    (
        "identity",
        &["api", "cli", "federation", "operator", "server"],
        &[],
    ),
    (
        "config",
        &["api", "cli", "federation", "operator", "server"],
        &[],
    ),
    // The service below the handlers: no routing or extractors.
    ("api/service", &["server", "cli"], &[]),
];

#[test]
fn modules_use_only_what_their_layer_allows() {
    let c = load();
    let mut problems = Vec::new();
    for (m, used) in &c.edges {
        let name = m.join("/");
        for (prefix, banned, banned_crates) in RULES {
            if !(name == *prefix || name.starts_with(&format!("{prefix}/"))) {
                continue;
            }
            for t in used {
                if banned.contains(&top(t)) {
                    problems.push(format!("{name} uses {}", t.join("/")));
                }
            }
            for krate in &c.externs[m] {
                if banned_crates.contains(&krate.as_str()) {
                    problems.push(format!("{name} uses the crate {krate}"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_handler_uses_another() {
    let c = load();
    let handlers = |m: &Module| m.len() == 3 && m[..2] == ["api", "handlers"];
    let mut problems = Vec::new();
    for (m, used) in c.edges.iter().filter(|(m, _)| handlers(m)) {
        for t in used.iter().filter(|t| handlers(t)) {
            problems.push(format!("{} uses {}", m.join("/"), t.join("/")));
        }
    }
    assert!(
        problems.is_empty(),
        "handlers must not share code directly:\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_import_circles_between_files() {
    let c = load();
    let circles = strongly_connected(&c.edges);
    let shown: Vec<String> = circles
        .iter()
        .map(|scc| {
            let names: Vec<String> = scc.iter().map(|m| m.join("/")).collect();
            names.join(" ↔ ")
        })
        .collect();
    assert!(shown.is_empty(), "import circles:\n{}", shown.join("\n"));
    assert!(c.files.len() > 50, "the scan found the source files");
}

/// Comments explain themselves: the product spec's files are not in the repository, so a comment citing
/// `api.md §4.3` sends the reader nowhere. Every tracked text file is read (the fuzz corpus is data).
#[test]
fn comments_cite_no_spec_sections() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let listed = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
        .expect("git runs");
    assert!(listed.status.success(), "git ls-files");
    let mut found = Vec::new();
    let mut read = 0;
    for name in listed.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name);
        if name.starts_with("fuzz/corpus/") || name == "tests/layering.rs" {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(root.join(&*name)) else {
            continue; // binary, or deleted in the work tree
        };
        read += 1;
        for (n, line) in text.lines().enumerate() {
            if line.contains('§') {
                found.push(format!("{name}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(read > 100, "the scan read the repository ({read} files)");
    assert!(found.is_empty(), "spec citations:\n{}", found.join("\n"));
}

/// The checks themselves: a circle and a banned use are found when present.
#[test]
fn the_checks_catch_what_they_look_for() {
    let a: Module = vec!["a".into()];
    let b: Module = vec!["b".into()];
    let edges = BTreeMap::from([
        (a.clone(), BTreeSet::from([b.clone()])),
        (b.clone(), BTreeSet::from([a.clone()])),
    ]);
    assert_eq!(strongly_connected(&edges).len(), 1);
    let files = BTreeMap::from([
        (vec!["api".to_string()], PathBuf::new()),
        (vec!["api".to_string(), "error".to_string()], PathBuf::new()),
        (
            vec!["model".to_string(), "rules".to_string()],
            PathBuf::new(),
        ),
    ]);
    let found: Vec<Option<Module>> =
        paths("use crate::api::{error::ApiError, x};\nsuper::rules::f()")
            .into_iter()
            .map(|(k, s)| resolve(&files, &vec!["model".into(), "naming".into()], &k, &s))
            .collect();
    assert!(found.contains(&Some(vec!["api".into(), "error".into()])));
    assert!(found.contains(&Some(vec!["model".into(), "rules".into()])));
}

/// Tarjan's strongly connected components with more than one member.
fn strongly_connected(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on: BTreeSet<&'a Module>,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}
