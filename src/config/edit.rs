//! Changing one key in the text of a configuration file (`tka set config`), keeping everything else.
//!
//! serde_yaml drops comments, blank lines, quoting and key order when a document is re-serialized, and a user's
//! configuration file is theirs: so the new value is spliced into the original text instead. Every other line
//! stays byte-for-byte, including comments; only the key's own line (and the lines of its old value) change, or
//! new lines are inserted at the end of the section (creating missing sections as needed).
//!
//! The text edit follows the block-style layout of configuration files (a key's nesting follows from its
//! indentation, as in `positions.rs`). To be safe on anything else (flow collections, anchors, odd multi-line
//! scalars), the result is parsed again and must equal the old document with exactly this one key changed;
//! otherwise the edit is refused with advice to edit the file by hand, and nothing is written.

use serde_yaml::{Mapping, Value};

use super::positions::split_key;

/// Returns `yaml` with `key` (canonical dotted path, e.g. `client.timeout`) set to `value`. Existing keys match
/// case-insensitively, like the loader, and keep their spelling.
pub fn set_key(yaml: &str, key: &str, value: &Value) -> Result<String, String> {
    let path: Vec<&str> = key.split('.').collect();
    let old = parse(yaml)?;
    let expected = with_key(old, &path, value)?;
    let edited = splice(yaml, &path, value)?;
    match parse(&edited) {
        Ok(new) if new == expected => Ok(edited),
        _ => Err(format!(
            "cannot change {key} in this file's layout (flow style, anchors or similar) without disturbing \
             other entries; edit the file by hand"
        )),
    }
}

/// The document as a value: empty (or only comments) is an empty mapping.
fn parse(yaml: &str) -> Result<Value, String> {
    let doc: Value =
        serde_yaml::from_str(yaml).map_err(|e| format!("the file is not valid YAML: {e}"))?;
    match doc {
        Value::Null => Ok(Value::Mapping(Mapping::new())),
        Value::Mapping(_) => Ok(doc),
        other => Err(format!(
            "the file is not a mapping of sections but {}",
            super::schema::describe(&other)
        )),
    }
}

/// `doc` with `path` set to `value`: segments match existing keys case-insensitively; missing sections are
/// created. This is what the text edit must produce.
fn with_key(mut doc: Value, path: &[&str], value: &Value) -> Result<Value, String> {
    let mut node = &mut doc;
    for (i, seg) in path.iter().enumerate() {
        if node.is_null() {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else {
            return Err(format!(
                "{} is not a section in the file; fix it by hand first",
                path[..i].join(".")
            ));
        };
        let existing = map
            .keys()
            .find(|k| k.as_str().is_some_and(|s| s.eq_ignore_ascii_case(seg)))
            .cloned();
        let k = existing.unwrap_or_else(|| Value::String((*seg).into()));
        if i + 1 == path.len() {
            map.insert(k, value.clone());
            break;
        }
        node = map.entry(k).or_insert(Value::Null);
    }
    Ok(doc)
}

/// One line of the source, without its line break.
struct Line<'a> {
    text: &'a str,
    indent: usize,
    /// Blank or comment-only.
    empty: bool,
}

fn lines(yaml: &str) -> Vec<Line<'_>> {
    yaml.split_inclusive('\n')
        .map(|raw| {
            let text = raw.trim_end_matches('\n').trim_end_matches('\r');
            let rest = text.trim_start_matches(' ');
            Line {
                text,
                indent: text.len() - rest.len(),
                empty: rest.is_empty() || rest.starts_with('#'),
            }
        })
        .collect()
}

/// A key line found in the text: its index and where its value's lines end (exclusive; trailing comment and
/// blank lines are not part of it, as they usually introduce what follows).
struct Found {
    line: usize,
    end: usize,
}

/// The key `seg` among the children of the node spanning `lines[from..to]` (the children are the lines at the
/// smallest indentation in that range).
fn find_child(lines: &[Line], from: usize, to: usize, seg: &str) -> Option<Found> {
    let child_indent = lines[from..to].iter().find(|l| !l.empty)?.indent;
    (from..to)
        .filter(|&i| !lines[i].empty && lines[i].indent == child_indent)
        .find(|&i| {
            split_key(&lines[i].text[child_indent..])
                .is_some_and(|(k, _)| k.eq_ignore_ascii_case(seg))
        })
        .map(|i| Found {
            line: i,
            end: value_end(lines, i, to),
        })
}

/// The end of the value of the key at `lines[at]`: the following lines that are indented deeper, or (YAML allows
/// it for lists) at the same indentation starting with `- `.
fn value_end(lines: &[Line], at: usize, to: usize) -> usize {
    let indent = lines[at].indent;
    let mut end = at + 1;
    for (i, l) in lines.iter().enumerate().take(to).skip(at + 1) {
        if l.empty {
            continue;
        }
        let rest = &l.text[l.indent..];
        let same_level_list = l.indent == indent && (rest == "-" || rest.starts_with("- "));
        if l.indent > indent || same_level_list {
            end = i + 1;
        } else {
            break;
        }
    }
    end
}

/// The smallest indentation step used in the file (2 when nothing is nested yet).
fn indent_unit(lines: &[Line]) -> usize {
    lines
        .iter()
        .filter(|l| !l.empty && l.indent > 0)
        .map(|l| l.indent)
        .min()
        .unwrap_or(2)
}

/// The text after `key:` on a key line, split into the value and a trailing ` # comment` (with its leading
/// whitespace), if any.
fn value_and_comment(after_colon: &str) -> (&str, &str) {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in after_colon.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') if prev == ' ' || prev == '\t' => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev == ' ' || prev == '\t' => {
                let start = after_colon[..i].trim_end_matches([' ', '\t']).len();
                return (&after_colon[..start], &after_colon[start..]);
            }
            _ => {}
        }
        prev = c;
    }
    (after_colon, "")
}

/// `value` as the text following `key:` for a key indented by `indent` (`unit` deeper for list items and map
/// entries), without a final line break.
fn render(value: &Value, indent: usize, unit: usize, newline: &str) -> Result<String, String> {
    let yaml = serde_yaml::to_string(value).map_err(|e| format!("cannot render the value: {e}"))?;
    let mut out = String::new();
    let nested = matches!(value, Value::Sequence(s) if !s.is_empty())
        || matches!(value, Value::Mapping(m) if !m.is_empty());
    let pad = " ".repeat(if nested { indent + unit } else { indent });
    for (i, line) in yaml.lines().enumerate() {
        if i == 0 && !nested {
            out.push(' ');
        } else {
            out.push_str(newline);
            out.push_str(&pad);
        }
        out.push_str(line);
    }
    Ok(out)
}

/// The text edit; [`set_key`] checks its result.
fn splice(yaml: &str, path: &[&str], value: &Value) -> Result<String, String> {
    let lines = lines(yaml);
    let newline = if yaml.contains("\r\n") { "\r\n" } else { "\n" };
    let unit = indent_unit(&lines);

    // Descend as far as the path exists in the text.
    let (mut from, mut to) = (0, lines.len());
    let mut parent: Option<Found> = None;
    let mut depth = 0;
    while depth < path.len() {
        let child = if from < to {
            find_child(&lines, from, to, path[depth])
        } else {
            None
        };
        let Some(found) = child else { break };
        from = found.line + 1;
        to = found.end;
        parent = Some(found);
        depth += 1;
    }

    let mut out: Vec<String> = lines.iter().map(|l| l.text.to_string()).collect();
    if depth == path.len() {
        // The key exists: replace its value, keeping a trailing comment of a one-line value.
        let found = parent.expect("depth > 0");
        let line = &lines[found.line];
        let (_, after) = split_key(&line.text[line.indent..]).expect("found lines are key lines");
        let prefix = &line.text[..line.text.len() - after.len()];
        let (_, comment) = value_and_comment(after);
        let rendered = render(value, line.indent, unit, newline)?;
        let keep_comment = found.end == found.line + 1 && !rendered.contains('\n');
        let new = format!(
            "{prefix}{rendered}{}",
            if keep_comment { comment } else { "" }
        );
        out.splice(found.line..found.end, [new]);
        return Ok(join(out, newline));
    }

    // Insert the missing part of the path below the deepest existing section.
    let (insert_at, indent) = match &parent {
        None => (lines.len(), 0),
        Some(section) => {
            let line = &lines[section.line];
            let (_, after) =
                split_key(&line.text[line.indent..]).expect("found lines are key lines");
            let (inline, comment) = value_and_comment(after);
            match inline.trim() {
                "" => {}
                // An empty section written inline: make it a block section.
                "{}" | "~" | "null" | "Null" | "NULL" => {
                    let prefix = &line.text[..line.text.len() - after.len()];
                    out[section.line] = format!("{prefix}{comment}");
                }
                _ => {
                    return Err(format!(
                        "{} is written in flow style; edit the file by hand",
                        path[..depth].join(".")
                    ));
                }
            }
            let child_indent = lines[section.line + 1..section.end]
                .iter()
                .find(|l| !l.empty)
                .map_or(line.indent + unit, |l| l.indent);
            (section.end, child_indent)
        }
    };
    let mut added = Vec::new();
    for (i, seg) in path[depth..].iter().enumerate() {
        let ind = indent + i * unit;
        let pad = " ".repeat(ind);
        if depth + i + 1 == path.len() {
            added.push(format!("{pad}{seg}:{}", render(value, ind, unit, newline)?));
        } else {
            added.push(format!("{pad}{seg}:"));
        }
    }
    out.splice(insert_at..insert_at, added);
    Ok(join(out, newline))
}

/// The lines joined again, ending with a line break (also when the original's last line had none).
fn join(lines: Vec<String>, newline: &str) -> String {
    let mut text = lines.join(newline);
    text.push_str(newline);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(yaml: &str, key: &str, value: Value) -> String {
        set_key(yaml, key, &value).unwrap_or_else(|e| panic!("{key} in {yaml:?}: {e}"))
    }

    #[test]
    fn replaces_a_value_keeping_every_other_byte_and_the_comment() {
        let yaml = "\
# my tka settings
tailscale:
  hostname: tka   # the server
  Port: 443 # tailnet port

output:
  format: text
";
        assert_eq!(
            set(yaml, "tailscale.port", Value::from(8443)),
            yaml.replace("Port: 443 #", "Port: 8443 #")
        );
        assert_eq!(
            set(yaml, "tailscale.hostname", "tka-west".into()),
            yaml.replace("hostname: tka ", "hostname: tka-west ")
        );
        // A string that YAML would read as something else is quoted.
        assert_eq!(
            set(yaml, "tailscale.hostname", "true".into()),
            yaml.replace("hostname: tka ", "hostname: 'true' ")
        );
    }

    #[test]
    fn adds_keys_at_the_end_of_their_section_creating_sections() {
        let yaml = "tailscale:\n  hostname: tka\n  # trailing comment of the section\n\nkubeconfig:\n    exec: true\n";
        assert_eq!(
            set(yaml, "tailscale.tailnet", "example.ts.net".into()),
            "tailscale:\n  hostname: tka\n  tailnet: example.ts.net\n  # trailing comment of the section\n\n\
             kubeconfig:\n    exec: true\n"
        );
        // The section's own indentation is used.
        assert_eq!(
            set(yaml, "kubeconfig.merge", true.into()),
            format!("{yaml}    merge: true\n")
        );
        assert_eq!(
            set(yaml, "client.timeout", "1m".into()),
            format!("{yaml}client:\n  timeout: 1m\n")
        );
        assert_eq!(
            set(
                "# only a comment",
                "operator.leaderElection.enabled",
                false.into()
            ),
            "# only a comment\noperator:\n  leaderElection:\n    enabled: false\n"
        );
        assert_eq!(set("", "debug", true.into()), "debug: true\n");
        assert_eq!(
            set("output: {}\n", "output.format", "json".into()),
            "output:\n  format: json\n"
        );
        assert_eq!(
            set("output:  # mine\n", "output.quiet", true.into()),
            "output:  # mine\n  quiet: true\n"
        );
    }

    #[test]
    fn lists_and_maps_replace_multi_line_values() {
        let yaml = "tailscale:\n  tags:\n  - tag:a\n  - tag:b\n  # after the list\n  port: 443\n";
        let tags = Value::Sequence(vec!["tag:x".into()]);
        assert_eq!(
            set(yaml, "tailscale.tags", tags),
            "tailscale:\n  tags:\n    - tag:x\n  # after the list\n  port: 443\n"
        );
        assert_eq!(
            set(yaml, "tailscale.tags", Value::Sequence(vec![])),
            "tailscale:\n  tags: []\n  # after the list\n  port: 443\n"
        );
        let mut labels = Mapping::new();
        labels.insert("env".into(), "prod".into());
        assert_eq!(
            set(
                "clusterInfo:\n  labels: {}\n",
                "clusterInfo.labels",
                labels.into()
            ),
            "clusterInfo:\n  labels:\n    env: prod\n"
        );
    }

    #[test]
    fn crlf_files_stay_crlf() {
        assert_eq!(
            set("output:\r\n  quiet: false\r\n", "output.quiet", true.into()),
            "output:\r\n  quiet: true\r\n"
        );
    }

    #[test]
    fn layouts_it_cannot_edit_safely_are_refused() {
        for (yaml, needle) in [
            ("tailscale: {hostname: tka}\n", "flow style"),
            ("tailscale: [1]\n", "not a section"),
            ("- a\n", "not a mapping"),
            ("tailscale: [1, 2\n", "not valid YAML"),
            ("{tailscale: {port: 1}}\n", "edit the file by hand"),
            // A quoted scalar's continuation that looks like a comment: the inserted line would land inside
            // the string. Only the check of the result notices.
            (
                "tailscale:\n  hostname: \"a\n  # b\"\n",
                "edit the file by hand",
            ),
        ] {
            let e = set_key(yaml, "tailscale.port", &Value::from(1)).unwrap_err();
            assert!(e.contains(needle), "{yaml:?}: {e}");
        }
    }
}
