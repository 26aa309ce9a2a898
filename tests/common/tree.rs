//! Fixtures for the `kind = "volume"` tests: a source tree with every kind of entry and odd
//! metadata, and the checks that a restored (or GNU-tar-extracted) tree is the same tree.
//!
//! The checks do not trust drctl's own reading of a tree: entries come from `read_dir`, metadata
//! from the `stat` CLI, contents from `diff -r`, so a restore that is wrong in the same way as the
//! backup still fails. The tests run as root: owners are part of what is compared.
//!
//! Included with `#[path = "common/tree.rs"] mod tree;` by tests/volume_e2e.rs (local paths and
//! Docker volumes) and tests/volume_pvc_e2e.rs (a PVC through pod exec).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The job's `exclude`, for the trees [`build_tree`] makes: they hold entries it matches.
pub const EXCLUDE: &str = r#"exclude = ["*.tmp", "cache/"]"#;
/// What [`EXCLUDE`] leaves out, for `diff -x` (which matches names), plus the fifo, whose
/// "contents" `diff` cannot compare (`stat` checks that it is restored as a fifo).
pub const DIFF_EXCLUDES: [&str; 3] = ["*.tmp", "cache", "pipe.fifo"];

/// Runs `sh -c CMD` and fails the test, with its stderr, when it fails.
pub fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Writes `root/rel`, creating its parent directories.
pub fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Sets the mode of `root/rel` (special bits included).
pub fn chmod(root: &Path, rel: &str, mode: u32) {
    std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Deterministic incompressible bytes: compression cannot hide a file that is lost or truncated,
/// and the stored sizes are those of real data.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What one test file adds to the common tree of [`build_tree`].
pub struct Extras<'a> {
    /// The large incompressible file, `(path, bytes)`: large enough to cross many buffers and
    /// stream chunks, so that a restore which drops or reorders a chunk shows.
    pub big: (&'a str, usize),
    /// The test file's own entries (for the counts and cases its assertions are about), made
    /// before the mtimes are set so that they get them too.
    pub more: &'a dyn Fn(&Path),
    /// More paths (besides the big file and `nested`) that get the older mtime, not followed.
    pub older: &'a [&'a str],
}

/// A tree with nested and empty directories, relative/absolute/dangling symlinks, hard links
/// (three names of one file), odd modes (0600, setuid, setgid and sticky directories, a 0750
/// root), a non-ASCII name, [`Extras::big`], a fifo, files and a directory owned by other ids, a
/// symlink with its own owner, entries [`EXCLUDE`] leaves out (`cache/`, `a.tmp`), and
/// [`Extras::more`]. Every entry gets an mtime in the past with nanoseconds (symlinks themselves
/// included); the big file, `nested` and [`Extras::older`] an older one with a half second, so a
/// restore that sets one mtime for all, or drops the nanoseconds, fails the `stat` comparison.
pub fn build_tree(root: &Path, extras: &Extras) {
    std::fs::create_dir_all(root).unwrap();
    write(root, "nested/dir/deeper/file.txt", b"deep\n");
    write(root, "nested/dir/file.txt", b"hello\n");
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::create_dir_all(root.join("nested/empty-too")).unwrap();
    write(root, "empty-file", b"");
    symlink("nested/dir/file.txt", root.join("rel-link")).unwrap();
    symlink("/etc/hostname", root.join("abs-link")).unwrap();
    symlink("does/not/exist", root.join("dangling")).unwrap();
    write(root, "links/a.bin", &noise(10_000, 1));
    std::fs::hard_link(root.join("links/a.bin"), root.join("links/b.bin")).unwrap();
    std::fs::hard_link(root.join("links/a.bin"), root.join("nested/c.bin")).unwrap();
    write(root, "secret.key", b"s3cr3t");
    chmod(root, "secret.key", 0o600);
    write(root, "bin/suid", b"x");
    chmod(root, "bin/suid", 0o4755);
    write(root, "shared/doc.txt", b"doc");
    chmod(root, "shared", 0o2775);
    std::fs::create_dir_all(root.join("tmpdir")).unwrap();
    chmod(root, "tmpdir", 0o1777);
    write(root, "ünïcødé/日本語 ファイル.txt", "こんにちは".as_bytes());
    let (big, big_len) = extras.big;
    write(root, big, &noise(big_len, 7));
    write(root, "owned/by-other.txt", b"not root's");
    std::os::unix::fs::chown(root.join("owned/by-other.txt"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::chown(root.join("owned"), Some(2345), Some(6789)).unwrap();
    std::os::unix::fs::lchown(root.join("rel-link"), Some(4321), Some(8765)).unwrap();
    sh(&format!("mkfifo '{}'", root.join("pipe.fifo").display()));
    write(root, "cache/junk.bin", &noise(5000, 3));
    write(root, "a.tmp", b"scratch");
    (extras.more)(root);
    chmod(root, ".", 0o750);
    // mtimes in the past, to the nanosecond, on everything (symlinks themselves included)
    let all: Vec<String> = walk(root).into_iter().map(|p| format!("'{}'", root.join(p).display())).collect();
    sh(&format!("touch -h -d '2001-02-03 04:05:06.123456789 UTC' {}", all.join(" ")));
    let older: Vec<String> =
        [big, "nested"].iter().chain(extras.older).map(|p| format!("'{}'", root.join(p).display())).collect();
    sh(&format!("touch -h -d '1999-12-31 23:59:59.5 UTC' {}", older.join(" ")));
}

/// Every path below `root` (relative, `.` for the root), sorted; symlinks are not followed.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(".")];
    let mut stack = vec![PathBuf::new()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(root.join(&d)).unwrap() {
            let e = e.unwrap();
            let rel = d.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                stack.push(rel.clone());
            }
            out.push(rel);
        }
    }
    out.sort();
    out
}

/// Whether [`EXCLUDE`] leaves `rel` (relative to the root) out.
pub fn excluded(rel: &Path) -> bool {
    let s = rel.to_string_lossy();
    s.ends_with(".tmp") || s == "cache" || s.starts_with("cache/")
}

/// Whether [`stat_all`] keeps the link counts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LinkCounts {
    /// Compared (except the root's: excluded directories change it), so hard links must come
    /// back as links.
    Compare,
    /// Left out: when one name of a hard-linked file is excluded, the others are restored with
    /// fewer links.
    Ignore,
}

/// `stat` of every path: type, mode, owner, link count (see [`LinkCounts`]; never the root's),
/// size (not for directories: it depends on the file system's history), mtime with nanoseconds,
/// and the symlink target.
pub fn stat_all(root: &Path, paths: &[PathBuf], links: LinkCounts) -> BTreeMap<String, String> {
    let out = Command::new("stat")
        .current_dir(root)
        .arg("--printf")
        .arg("%N|%F|%a|%u|%g|%h|%s|%y\\n")
        .arg("--")
        .args(paths)
        .output()
        .unwrap();
    assert!(out.status.success(), "stat: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), paths.len());
    paths
        .iter()
        .zip(lines)
        .map(|(p, l)| {
            let mut f: Vec<String> = l.split('|').map(str::to_string).collect();
            if f[1] == "directory" {
                f[6] = "-".into();
            }
            if links == LinkCounts::Ignore || p == Path::new(".") {
                f[5] = "-".into();
            }
            (p.to_string_lossy().into_owned(), f.join("|"))
        })
        .collect()
}

/// `diff -r --no-dereference` of two trees, minus [`DIFF_EXCLUDES`]: the same contents, and the
/// same symlink targets.
pub fn diff_r(a: &Path, b: &Path) {
    let mut cmd = Command::new("diff");
    cmd.arg("-r").arg("--no-dereference");
    for x in DIFF_EXCLUDES {
        cmd.arg("-x").arg(x);
    }
    let out = cmd.arg(a).arg(b).output().unwrap();
    assert!(
        out.status.success(),
        "diff -r {} {}:\n{}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Source and restored trees have the same entries (minus the excluded ones: nothing more, nothing
/// less) with the same `stat` and the same contents.
pub fn assert_same_tree(src: &Path, dst: &Path, links: LinkCounts) {
    let expected: Vec<PathBuf> = walk(src).into_iter().filter(|p| !excluded(p)).collect();
    assert_eq!(walk(dst), expected, "the restored tree has exactly the source's entries, minus excluded ones");
    let (a, b) = (stat_all(src, &expected, links), stat_all(dst, &expected, links));
    for (path, line) in &a {
        assert_eq!(Some(line), b.get(path), "stat of `{path}`");
    }
    diff_r(src, dst);
}

/// The names in `dir`, sorted: to show that a refused or dry-run restore changed nothing and that
/// no staging directory is left beside the destination.
pub fn entries_of(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}
