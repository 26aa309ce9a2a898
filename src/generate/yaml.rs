//! A small YAML writer for JSON values: Kubernetes manifests and stack files are YAML documents of
//! maps, lists, strings, numbers and booleans, and nothing else is needed to write them readably
//! (no YAML dependency; multi-line strings such as a config file become literal blocks).

use serde_json::Value;

/// One YAML document for `v` (a map), ending with a newline.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => map(m, 0, &mut out),
        other => {
            out.push_str(&scalar(other, 0));
            out.push('\n');
        }
    }
    out
}

fn pad(n: usize) -> String {
    " ".repeat(n)
}

fn map(m: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    for (k, v) in m {
        out.push_str(&pad(indent));
        out.push_str(&key(k));
        out.push(':');
        value_after_key(v, indent, out);
    }
}

/// The value of a `key:` (or `- key:`) at `indent`.
fn value_after_key(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            map(m, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            list(a, indent, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other, indent + 2));
            out.push('\n');
        }
    }
}

fn list(a: &[Value], indent: usize, out: &mut String) {
    for item in a {
        out.push_str(&pad(indent));
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => {
                // first key on the dash line, the rest aligned under it
                let mut first = true;
                for (k, v) in m {
                    if !first {
                        out.push_str(&pad(indent + 2));
                    }
                    first = false;
                    out.push_str(&key(k));
                    out.push(':');
                    value_after_key(v, indent + 2, out);
                }
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                list(inner, indent + 2, out);
            }
            other => {
                out.push_str(&scalar(other, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn key(k: &str) -> String {
    if plain(k) { k.to_string() } else { quoted(k) }
}

/// A scalar; multi-line strings become literal blocks indented to `indent`.
fn scalar(v: &Value, indent: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.contains('\n') => block(s, indent),
        Value::String(s) if plain(s) => s.clone(),
        Value::String(s) => quoted(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// `|2`-style literal block with an explicit indentation indicator (so a first line that starts
/// with spaces stays exact) and the chomping that keeps the text's trailing newlines.
fn block(s: &str, indent: usize) -> String {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let body = s.trim_end_matches('\n');
    let mut out = format!("|2{chomp}\n");
    let lines: Vec<&str> = body.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if !line.is_empty() {
            out.push_str(&pad(indent));
            out.push_str(line);
        }
        if i + 1 < lines.len() {
            out.push('\n');
        }
    }
    for _ in 1..trailing {
        out.push('\n');
    }
    // the caller adds the final newline
    out
}

fn quoted(s: &str) -> String {
    // a JSON string is a valid YAML double-quoted scalar
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Safe to write unquoted: no YAML syntax, not read back as another type.
fn plain(s: &str) -> bool {
    const RESERVED: [&str; 11] = ["true", "false", "yes", "no", "on", "off", "null", "y", "n", "~", ""];
    if RESERVED.contains(&s.to_ascii_lowercase().as_str()) {
        return false;
    }
    if s.parse::<f64>().is_ok() || s.starts_with(['-', '.', '/', ':']) {
        return false;
    }
    s.chars().all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn maps_lists_and_scalars() {
        let v = json!({"apiVersion": "v1", "kind": "List", "n": 3, "on": true, "empty": {},
            "items": [{"name": "a", "args": ["run", "pg"]}, "x y", "0 2 * * *"], "yes": "yes"});
        let y = to_yaml(&v);
        // keys come sorted (serde_json maps); `n`, `on`, `yes` would read back as booleans unquoted
        assert_eq!(
            y,
            "apiVersion: v1\nempty: {}\nitems:\n- args:\n  - run\n  - pg\n  name: a\n- \"x y\"\n- \"0 2 * * *\"\nkind: List\n\"n\": 3\n\"on\": true\n\"yes\": \"yes\"\n"
        );
    }

    #[test]
    fn literal_blocks_keep_text_exactly() {
        let y = |text: &str| to_yaml(&json!({"data": {"drctl.toml": text}}));
        assert_eq!(y("a = 1\n  b = 2\n"), "data:\n  drctl.toml: |2\n    a = 1\n      b = 2\n");
        assert_eq!(y("  leading\nx"), "data:\n  drctl.toml: |2-\n      leading\n    x\n");
        assert_eq!(y("two\n\nthree\n\n"), "data:\n  drctl.toml: |2+\n    two\n\n    three\n\n");
        let in_list = to_yaml(&json!({"items": [{"text": "x\ny\n"}]}));
        assert_eq!(in_list, "items:\n- text: |2\n    x\n    y\n");
    }

    #[test]
    fn plain_or_quoted() {
        assert!(plain("drctl-config"));
        assert!(plain("batch/v1"));
        assert!(!plain("/etc/drctl"));
        assert!(!plain("123"));
        assert!(!plain("no"));
        assert!(!plain("a: b"));
        assert!(!plain("@daily"));
    }
}
