//! Finding the line a configuration key is on, for problem reports.
//!
//! Deserialization works on plain `toml::Value`s (so every table can be checked on its own and all
//! problems collected); this module re-parses the source with spans and walks a key path to the
//! closest line it can find.

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// Render a path like `jobs.postgres.targets[1]`.
pub fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The 1-based line of the deepest part of `path` found in `source` (`None` if not even the first
/// key is there, or the source does not parse).
pub fn line_of(source: &str, path: &[Step]) -> Option<usize> {
    let doc = toml::de::DeTable::parse(source).ok()?;
    let mut best: Option<usize> = None;
    let mut table = doc.get_ref();
    let mut value: Option<&toml::de::DeValue<'_>> = None;
    for step in path {
        match (step, value) {
            (Step::Key(k), None) => {
                let Some((key, v)) = table.iter().find(|(key, _)| key.get_ref().as_ref() == k.as_str()) else {
                    break;
                };
                best = Some(key.span().start);
                value = Some(v.get_ref());
            }
            (Step::Key(k), Some(toml::de::DeValue::Table(t))) => {
                let Some((key, v)) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k.as_str()) else {
                    break;
                };
                best = Some(key.span().start);
                table = t;
                value = Some(v.get_ref());
            }
            (Step::Index(i), Some(toml::de::DeValue::Array(a))) => {
                let Some(item) = a.get(*i) else { break };
                best = Some(item.span().start);
                value = Some(item.get_ref());
            }
            _ => break,
        }
        if let Some(toml::de::DeValue::Table(t)) = value {
            table = t;
            value = None;
        }
    }
    best.map(|offset| source[..offset].matches('\n').count() + 1)
}

/// Parse serde_path_to_error's rendering (`a.b[2].c`) back into steps.
pub fn parse_path(rendered: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for part in rendered.split('.') {
        if part.is_empty() || part == "?" {
            continue;
        }
        let mut rest = part;
        if let Some(bracket) = rest.find('[') {
            let key = &rest[..bracket];
            if !key.is_empty() {
                steps.push(Step::Key(key.to_string()));
            }
            rest = &rest[bracket..];
            while let Some(end) = rest.find(']') {
                if let Ok(i) = rest[1..end].parse() {
                    steps.push(Step::Index(i));
                }
                rest = &rest[end + 1..];
                if !rest.starts_with('[') {
                    break;
                }
            }
        } else {
            steps.push(Step::Key(rest.to_string()));
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "[catalog]\nurl = \"x\"\n\n[jobs.pg]\nkind = \"postgres\"\ntargets = [\n  \"a\",\n  \"b\",\n]\n";

    fn k(s: &str) -> Step {
        Step::Key(s.into())
    }

    #[test]
    fn finds_nested_keys_and_array_items() {
        assert_eq!(line_of(SRC, &[k("catalog"), k("url")]), Some(2));
        assert_eq!(line_of(SRC, &[k("jobs"), k("pg"), k("kind")]), Some(5));
        assert_eq!(line_of(SRC, &[k("jobs"), k("pg"), k("targets"), Step::Index(1)]), Some(8));
        // a missing leaf falls back to its parent
        assert_eq!(line_of(SRC, &[k("jobs"), k("pg"), k("nope")]), Some(4));
        assert_eq!(line_of(SRC, &[k("nothing")]), None);
    }

    #[test]
    fn path_round_trip() {
        let p = parse_path("keep.daily");
        assert_eq!(p, vec![k("keep"), k("daily")]);
        let p = parse_path("targets[1]");
        assert_eq!(render(&p), "targets[1]");
    }
}
