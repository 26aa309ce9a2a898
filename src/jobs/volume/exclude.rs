//! `exclude` patterns of a volume job.
//!
//! Rules (close to `.gitignore`, so they read the way operators expect):
//!
//! * a pattern without `/` matches an entry's *name* at any depth: `*.tmp`, `.cache`, `lost+found`;
//! * a pattern with `/` is anchored at the root of the volume and matched against the whole relative
//!   path: `cache/**`, `/logs/*.log`, `**/node_modules` (a leading `/` is only an anchor); `*` and `?`
//!   do not cross `/`, `**` does;
//! * a trailing `/` limits the pattern to directories: `tmp/`;
//! * an excluded directory is left out with everything below it (`cache` drops the directory,
//!   `cache/**` keeps it, empty).
//!
//! The root itself is never excluded.

use std::path::Path;

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

/// Compiled exclude patterns.
#[derive(Debug, Clone)]
pub struct Excludes {
    by_name: GlobSet,
    by_name_dirs: GlobSet,
    anchored: GlobSet,
    anchored_dirs: GlobSet,
}

impl Excludes {
    /// Compile `patterns`; the error names the index of the first bad pattern and why.
    pub fn new(patterns: &[String]) -> Result<Excludes, (usize, String)> {
        let mut sets = [GlobSetBuilder::new(), GlobSetBuilder::new(), GlobSetBuilder::new(), GlobSetBuilder::new()];
        for (i, raw) in patterns.iter().enumerate() {
            let (pattern, dirs_only) = match raw.strip_suffix('/') {
                Some(p) => (p, true),
                None => (raw.as_str(), false),
            };
            let anchored = pattern.contains('/');
            let pattern = pattern.trim_start_matches('/');
            if pattern.is_empty() || pattern == "." || (matches!(pattern, "*" | "**") && !dirs_only) {
                return Err((i, format!("`{raw}` would exclude everything")));
            }
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| (i, format!("`{raw}` is not a valid glob: {}", e.kind())))?;
            let slot = match (anchored, dirs_only) {
                (false, false) => 0,
                (false, true) => 1,
                (true, false) => 2,
                (true, true) => 3,
            };
            sets[slot].add(glob);
        }
        let [a, b, c, d] = sets.map(|s| s.build());
        let build = |r: Result<GlobSet, globset::Error>| r.map_err(|e| (0, format!("exclude patterns: {e}")));
        Ok(Excludes { by_name: build(a)?, by_name_dirs: build(b)?, anchored: build(c)?, anchored_dirs: build(d)? })
    }

    /// Whether the entry at `rel` (relative to the root, never empty) is left out.
    pub fn is_excluded(&self, rel: &Path, is_dir: bool) -> bool {
        let whole = Candidate::new(rel);
        if self.anchored.is_match_candidate(&whole) || (is_dir && self.anchored_dirs.is_match_candidate(&whole)) {
            return true;
        }
        let Some(name) = rel.file_name() else {
            return false;
        };
        let name = Candidate::new(name);
        self.by_name.is_match_candidate(&name) || (is_dir && self.by_name_dirs.is_match_candidate(&name))
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
            && self.by_name_dirs.is_empty()
            && self.anchored.is_empty()
            && self.anchored_dirs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Excludes {
        Excludes::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn names_match_at_any_depth() {
        let e = ex(&["*.tmp", ".cache"]);
        assert!(e.is_excluded(Path::new("a.tmp"), false));
        assert!(e.is_excluded(Path::new("deep/er/b.tmp"), false));
        assert!(e.is_excluded(Path::new("x/.cache"), true));
        assert!(!e.is_excluded(Path::new("a.tmp.keep"), false));
        assert!(!e.is_excluded(Path::new("tmp"), true));
    }

    #[test]
    fn patterns_with_a_slash_are_anchored() {
        let e = ex(&["cache/**", "/logs/*.log", "**/node_modules"]);
        assert!(e.is_excluded(Path::new("cache/a"), false));
        assert!(e.is_excluded(Path::new("cache/a/b"), false));
        assert!(!e.is_excluded(Path::new("cache"), true), "cache/** keeps the directory itself");
        assert!(!e.is_excluded(Path::new("sub/cache/a"), false));
        assert!(e.is_excluded(Path::new("logs/app.log"), false));
        assert!(!e.is_excluded(Path::new("logs/old/app.log"), false), "`*` does not cross `/`");
        assert!(e.is_excluded(Path::new("node_modules"), true));
        assert!(e.is_excluded(Path::new("web/app/node_modules"), true));
    }

    #[test]
    fn trailing_slash_means_directories_only() {
        let e = ex(&["tmp/", "var/run/"]);
        assert!(e.is_excluded(Path::new("a/tmp"), true));
        assert!(!e.is_excluded(Path::new("a/tmp"), false));
        assert!(e.is_excluded(Path::new("var/run"), true));
        assert!(!e.is_excluded(Path::new("var/run"), false));
    }

    #[test]
    fn bad_patterns_are_reported_with_their_index() {
        let bad = |p: &[&str]| Excludes::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_err();
        assert_eq!(bad(&["ok", "a[b"]).0, 1);
        assert!(bad(&["/"]).1.contains("everything"));
        assert!(bad(&["**"]).1.contains("everything"));
        assert!(ex(&[]).is_empty());
    }

    #[test]
    fn non_utf8_names_are_matched_by_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let e = ex(&["*.tmp"]);
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.tmp");
        assert!(e.is_excluded(Path::new(name), false));
    }
}
