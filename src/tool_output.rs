//! What an external tool said, shortened for an error message: the last few non-empty lines of
//! its output, ` / `-joined and scrubbed of secrets. One rule for every tool drctl runs (pg_dump,
//! pg_restore, psql, tar, GitLab's commands, the drills' scratch servers).

/// The last `lines` non-empty lines of `text`, ` / `-joined and scrubbed; `empty` when there are
/// none.
pub fn tail(text: &str, lines: usize, empty: &str) -> String {
    let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if kept.is_empty() {
        return empty.to_string();
    }
    crate::redact::scrub(&kept[kept.len().saturating_sub(lines)..].join(" / "))
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn last_non_empty_lines_joined() {
        assert_eq!(tail("a\n\nb\n", 6, "none"), "a / b");
        assert_eq!(tail("", 6, "no output"), "no output");
        assert_eq!(tail("1\n2\n3\n4", 2, ""), "3 / 4");
    }
}
