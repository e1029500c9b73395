//! Line and column of every mapping key in a YAML document.
//!
//! serde_yaml 0.9 reports positions only for its own parse errors, never for values it accepted, yet an unknown
//! key or a wrongly typed value must be reported as `config.yaml:9:5`. Configuration files are block-style YAML,
//! where a key's nesting follows from its indentation, so one pass over the source recovers the position of each
//! key path (`tailscale` → `capname`), which the loader looks up after parsing the document with serde_yaml.
//!
//! Limits (positions only; the document itself is always parsed by serde_yaml):
//! - keys inside flow collections (`tailscale: {capName: x}`) and complex keys (`? k`) are not located; errors
//!   there point at the nearest enclosing key that was located;
//! - a continuation line of a multi-line quoted scalar that looks like `key: value` may be recorded as a
//!   (never looked-up) key;
//! - anchors, aliases and merge keys (`<<: *base`) are not followed.

use std::collections::HashMap;

/// 1-based line and column.
pub(crate) type Pos = (usize, usize);

/// Key paths (lower-cased segments, as keys match case-insensitively) → positions, in document order.
#[derive(Debug, Default)]
pub(crate) struct KeyPositions(HashMap<Vec<String>, Vec<Pos>>);

/// Marks a sequence entry on the path stack; real key paths never contain it, so keys inside sequences are
/// recorded but never looked up.
const SEQ: &str = "\0-";

impl KeyPositions {
    pub(crate) fn scan(src: &str) -> Self {
        let mut found: HashMap<Vec<String>, Vec<Pos>> = HashMap::new();
        // Open nodes: (indentation, lower-cased key or SEQ), strictly increasing indentation.
        let mut stack: Vec<(usize, String)> = Vec::new();
        // Indentation of the node owning a block scalar (`key: |`) whose content lines are being skipped.
        let mut block_scalar: Option<usize> = None;

        for (index, line) in src.lines().enumerate() {
            let mut indent = line.len() - line.trim_start_matches(' ').len();
            let mut rest = &line[indent..];
            if let Some(owner) = block_scalar {
                if rest.trim().is_empty() || indent > owner {
                    continue;
                }
                block_scalar = None;
            }
            if rest.is_empty() || rest.starts_with('#') {
                continue;
            }
            if indent == 0 && (rest.starts_with("---") || rest.starts_with("...")) {
                stack.clear();
                continue;
            }
            // `- ` opens a sequence entry; its content (maybe `key: value`) is nested one level deeper.
            while rest == "-" || rest.starts_with("- ") {
                stack.retain(|(i, _)| *i < indent);
                stack.push((indent, SEQ.into()));
                let content = rest[1..].trim_start_matches(' ');
                indent += rest.len() - content.len();
                rest = content;
            }
            if rest.starts_with(['|', '>']) {
                // `- |`: the content belongs to the sequence entry, so it only has to be deeper than the dash.
                block_scalar = stack.last().map(|(i, _)| *i);
                continue;
            }
            let Some((key, value)) = split_key(rest) else {
                continue;
            };
            let key = key.to_lowercase();
            stack.retain(|(i, _)| *i < indent);
            let path: Vec<String> = stack
                .iter()
                .map(|(_, k)| k.clone())
                .chain([key.clone()])
                .collect();
            // Columns count characters; indentation is ASCII spaces and dashes.
            found.entry(path).or_default().push((index + 1, indent + 1));
            stack.push((indent, key));
            if value.trim_start().starts_with(['|', '>']) {
                block_scalar = Some(indent);
            }
        }
        KeyPositions(found)
    }

    /// Positions of all occurrences of `path` (lower-cased segments).
    pub(crate) fn all(&self, path: &[String]) -> &[Pos] {
        self.0.get(path).map(Vec::as_slice).unwrap_or_default()
    }

    /// The first position of `path`, or of its nearest located ancestor.
    pub(crate) fn nearest(&self, path: &[String]) -> Option<Pos> {
        (1..=path.len())
            .rev()
            .find_map(|len| self.all(&path[..len]).first().copied())
    }
}

/// Splits `key: value` (key plain, single- or double-quoted) into key and the text after the colon.
pub(crate) fn split_key(text: &str) -> Option<(String, &str)> {
    let after_colon = |rest: &str| -> Option<usize> {
        // The key ends at a ':' followed by a space or the end of the line.
        let trimmed = rest.trim_start_matches(' ');
        let colon = rest.len() - trimmed.len();
        let tail = trimmed.strip_prefix(':')?;
        (tail.is_empty() || tail.starts_with([' ', '\t'])).then_some(colon + 1)
    };
    match text.chars().next()? {
        quote @ ('"' | '\'') => {
            let mut key = String::new();
            let mut chars = text.char_indices().skip(1);
            while let Some((i, c)) = chars.next() {
                match c {
                    // '' is an escaped quote in single-quoted scalars.
                    '\'' if quote == '\'' && text[i + 1..].starts_with('\'') => {
                        key.push('\'');
                        chars.next();
                    }
                    '\\' if quote == '"' => {
                        if let Some((_, escaped)) = chars.next() {
                            key.push(escaped);
                        }
                    }
                    c if c == quote => {
                        let rest = &text[i + 1..];
                        let end = after_colon(rest)?;
                        return Some((key, &rest[end..]));
                    }
                    c => key.push(c),
                }
            }
            None
        }
        // Flow collections, anchors, aliases, tags, block scalars, directives, complex keys: not a plain key.
        '{' | '[' | '&' | '*' | '!' | '|' | '>' | '%' | '@' | '`' | '?' | '#' => None,
        _ => {
            let mut search = 0;
            loop {
                let colon = search + text[search..].find(':')?;
                let candidate = &text[..colon];
                if candidate.contains(" #") {
                    return None; // the colon is inside a comment
                }
                let tail = &text[colon + 1..];
                if tail.is_empty() || tail.starts_with([' ', '\t']) {
                    let key = candidate.trim_end();
                    return (!key.is_empty()).then(|| (key.to_string(), tail));
                }
                // A colon inside a plain key (`tag:ci:`), keep looking.
                search = colon + 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &str) -> Vec<String> {
        path.split('.').map(str::to_lowercase).collect()
    }

    #[test]
    fn locates_block_style_keys() {
        let src = "\
# comment
tailscale:
  hostname: tka-west  # Unique per cluster
  capName: \"a: b\"
  embedded:
    tagRules:
      tag:ci:
        - role: view
          period: 1h
server:
  'read''Timeout': |
    not: a key
  \"idle\\\"Timeout\": 5s
labels: {a: b}
list:
  - |
    not: a key either
";
        let pos = KeyPositions::scan(src);
        assert_eq!(pos.all(&p("tailscale")), &[(2, 1)]);
        assert_eq!(pos.all(&p("tailscale.hostname")), &[(3, 3)]);
        assert_eq!(pos.all(&p("tailscale.capName")), &[(4, 3)]);
        assert_eq!(pos.all(&p("tailscale.embedded.tagRules.tag:ci")), &[(7, 7)]);
        assert_eq!(pos.all(&p("server.read'timeout")), &[(11, 3)]);
        assert!(pos.all(&p("server.read'timeout.not")).is_empty());
        assert!(pos.all(&p("server.not")).is_empty());
        assert_eq!(pos.all(&p("server.idle\"timeout")), &[(13, 3)]);
        assert_eq!(pos.all(&p("labels")), &[(14, 1)]);
        // Inside a flow mapping: the nearest located ancestor.
        assert_eq!(pos.nearest(&p("labels.a")), Some((14, 1)));
        // Keys inside sequences are never confused with section keys.
        assert!(
            pos.all(&p("tailscale.embedded.tagRules.tag:ci.period"))
                .is_empty()
        );
        assert_eq!(pos.all(&p("list")), &[(15, 1)]);
        // Nothing is recorded inside block scalars.
        let mut keys: Vec<String> = pos.0.keys().map(|k| k.join(".")).collect();
        keys.sort();
        assert!(keys.iter().all(|k| !k.contains("not")), "{keys:?}");
    }

    #[test]
    fn sequences_at_parent_indentation_and_documents() {
        let src = "---\noperator:\n  allowedRoles:\n  - view\n  - edit\n  clusterName: x\n";
        let pos = KeyPositions::scan(src);
        assert_eq!(pos.all(&p("operator.clusterName")), &[(6, 3)]);
        assert_eq!(pos.all(&p("operator.allowedRoles")), &[(3, 3)]);
    }
}
