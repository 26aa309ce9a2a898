//! End to end: `drctl run` / `restore` of `kind = "volume"` jobs with the real binary and the fs
//! target: a tree with every kind of entry and odd metadata, compared after restore with `diff -r`
//! and `stat`; excludes; `--force`; hooks; the `files` artifact; interop with `age`, `zstd` and GNU
//! `tar`; `docker_volume` through a stand-in `docker` CLI (no Docker engine here).
//!
//! The tests run as root (file owners are part of what is checked).

mod common;
#[path = "common/tree.rs"]
mod tree;

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::{Digest, Sha256};
use tree::{
    EXCLUDE, Extras, LinkCounts, assert_same_tree, chmod, diff_r, entries_of, excluded, noise, sh, stat_all, walk,
    write,
};

fn job(s: &Scratch, source: &str, extra: &str) -> String {
    format!("{}[jobs.vol]\nkind = \"volume\"\ntargets = [\"local\"]\n{source}\n{extra}\n", s.head())
}

fn path_job(s: &Scratch, root: &Path, extra: &str) -> String {
    job(s, &format!("path = \"{}\"", root.display()), extra)
}

fn backup_id(r: &Ran) -> String {
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout.trim().to_string()
}

/// The common tree (tests/common/tree.rs) plus: a symlink to a directory, an executable, an emoji
/// name, an excluded file below the root (`nested/dir/b.tmp`: patterns match at any depth), a 20 MB
/// file, and an older mtime on a symlink itself (`rel-link`).
fn build_tree(root: &Path) {
    tree::build_tree(
        root,
        &Extras {
            big: ("big/twenty.bin", 20 * 1024 * 1024),
            more: &|root| {
                symlink("nested", root.join("dir-link")).unwrap();
                write(root, "bin/run.sh", b"#!/bin/sh\necho hi\n");
                chmod(root, "bin/run.sh", 0o755);
                write(root, "émoji-🎉.txt", b"party");
                write(root, "nested/dir/b.tmp", b"scratch");
            },
            older: &["rel-link"],
        },
    );
}

fn manifest(s: &Scratch) -> serde_json::Value {
    let files = s.fs_files();
    let m = files.iter().find(|f| f.ends_with(".manifest.json")).expect("a manifest");
    serde_json::from_slice(&std::fs::read(s.path("backups").join(m)).unwrap()).unwrap()
}

#[test]
fn round_trip_keeps_every_entry_and_its_metadata() {
    let s = Scratch::new();
    let src = s.path("src");
    build_tree(&src);
    s.write_config(&path_job(&s, &src, EXCLUDE));
    let id = backup_id(&run(s.drctl().args(["run", "vol"])));
    let files = s.fs_files();
    for art in ["data.tar", "files.json"] {
        assert!(files.iter().any(|f| f.ends_with(&format!("{id}.{art}.zst.age"))), "{art} in {files:?}");
    }

    let dst = s.path("restored/here");
    let r = run(s.drctl().args(["restore", "vol", "--latest", "--to"]).arg(&dst));
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&src, &dst, LinkCounts::Compare);

    // the points most likely to break, spelled out
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = |p: &str| std::fs::symlink_metadata(dst.join(p)).unwrap();
    assert_eq!(m("links/a.bin").nlink(), 3);
    assert_eq!(m("links/a.bin").ino(), m("nested/c.bin").ino(), "hard links are links again");
    assert_eq!((m("owned/by-other.txt").uid(), m("owned/by-other.txt").gid()), (1234, 5678));
    assert_eq!((m("rel-link").uid(), m("rel-link").gid()), (4321, 8765));
    assert_eq!(m("shared").mode() & 0o7777, 0o2775);
    assert_eq!(m("bin/suid").mode() & 0o7777, 0o4755);
    assert_eq!(m("tmpdir").mode() & 0o7777, 0o1777);
    assert_eq!(m(".").mode() & 0o7777, 0o750);
    assert_eq!((m("big/twenty.bin").mtime(), m("big/twenty.bin").mtime_nsec()), (946_684_799, 500_000_000));
    assert_eq!((m("secret.key").mtime(), m("secret.key").mtime_nsec()), (981_173_106, 123_456_789));
    assert_eq!(std::fs::read_link(dst.join("abs-link")).unwrap(), Path::new("/etc/hostname"));
    assert!(m("pipe.fifo").file_type().is_fifo());
    assert!(!dst.join("cache").exists() && !dst.join("a.tmp").exists() && !dst.join("nested/dir/b.tmp").exists());
    assert_eq!(entries_of(&s.path("restored")), ["here"], "no staging directory left beside it");

    // the manifest's facts: counts, no file names
    let m = manifest(&s);
    let f = &m["facts"];
    assert_eq!(m["kind"], "volume");
    assert_eq!(f["source"], "path");
    assert_eq!(f["root"], src.to_str().unwrap());
    let regular: Vec<std::fs::Metadata> = walk(&src)
        .iter()
        .filter(|p| !excluded(p))
        .map(|p| src.join(p).symlink_metadata().unwrap())
        .filter(|m| m.is_file())
        .collect();
    assert_eq!(f["file_count"], regular.len() as u64);
    let mut inodes = std::collections::BTreeSet::new();
    let bytes: u64 = regular.iter().filter(|m| inodes.insert(m.ino())).map(|m| m.len()).sum();
    assert!(bytes > 20 * 1024 * 1024);
    assert_eq!(f["total_bytes"], bytes, "each hard-linked file counted once");
    assert_eq!(f["hardlink_count"], 2);
    assert_eq!(f["symlink_count"], 4);
    assert_eq!(f["special_count"], 1);
    assert_eq!(f["excluded"], 3, "cache/, a.tmp, nested/dir/b.tmp");
    assert!(!m.to_string().contains("twenty.bin"), "file names stay in the encrypted artifacts");
}

#[test]
fn the_files_artifact_lists_every_entry_with_its_sha256() {
    let s = Scratch::new();
    let src = s.path("src");
    build_tree(&src);
    s.write_config(&path_job(&s, &src, EXCLUDE));
    backup_id(&run(s.drctl().args(["run", "vol"])));

    let r = run(s.drctl().args(["restore", "vol", "--latest", "--artifact", "files", "--output", "-"]));
    assert_eq!(r.code, 0, "{r:?}");
    let list: serde_json::Value = serde_json::from_str(&r.stdout).expect("the file list is JSON");
    assert_eq!(list["format"], "drctl-volume-files");
    let entries = list["entries"].as_array().unwrap();
    let by_path: BTreeMap<&str, &serde_json::Value> =
        entries.iter().map(|e| (e["path"].as_str().unwrap(), e)).collect();

    let expected: Vec<PathBuf> = walk(&src).into_iter().filter(|p| !excluded(p)).collect();
    assert_eq!(by_path.len(), expected.len(), "one entry per path");
    for rel in &expected {
        let key = rel.to_str().unwrap();
        let e = by_path.get(key).unwrap_or_else(|| panic!("`{key}` is listed"));
        let meta = std::fs::symlink_metadata(src.join(rel)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(e["mode"], format!("{:04o}", meta.mode() & 0o7777), "{key}");
        assert_eq!(
            (e["uid"].as_u64().unwrap(), e["mtime"].as_i64().unwrap()),
            (meta.uid() as u64, meta.mtime()),
            "{key}"
        );
        if meta.is_file() {
            let sha = hex::encode(Sha256::digest(std::fs::read(src.join(rel)).unwrap()));
            assert_eq!(e["sha256"], sha, "sha256 of {key}");
            assert_eq!(e["size"], meta.len(), "{key}");
        }
    }
    assert_eq!(by_path["links/b.bin"]["type"], "hardlink");
    assert_eq!(by_path["links/a.bin"]["type"], "file");
    assert_eq!(by_path["dangling"]["target"], "does/not/exist");
    assert_eq!(by_path["shared"]["mode"], "2775");
    assert_eq!(by_path["big/twenty.bin"]["mtime_nsec"], 500_000_000);
}

#[test]
fn the_stored_archive_opens_with_age_zstd_and_gnu_tar() {
    let s = Scratch::new();
    let src = s.path("src");
    build_tree(&src);
    s.write_config(&path_job(&s, &src, EXCLUDE));
    let id = backup_id(&run(s.drctl().args(["run", "vol"])));
    let stored = s.path("backups").join(s.fs_files().into_iter().find(|f| f.ends_with(".data.tar.zst.age")).unwrap());
    assert!(stored.to_string_lossy().contains(&id));
    let tar = s.path("data.tar");
    sh(&format!(
        "age -d -i '{}' '{}' | zstd -d -q -o '{}'",
        s.path("age.key").display(),
        stored.display(),
        tar.display()
    ));
    let out = Command::new("tar").arg("-tvf").arg(&tar).output().unwrap();
    assert!(out.status.success(), "tar -tvf: {}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "ünïcødé/日本語 ファイル.txt",
        "big/twenty.bin",
        "rel-link -> nested/dir/file.txt",
        "links/b.bin link to links/a.bin",
        "1234/5678",
    ] {
        assert!(listing.contains(needle), "`{needle}` in\n{listing}");
    }
    assert!(!listing.contains("cache/junk.bin"), "{listing}");

    // GNU tar extracts it to the same tree (owners, modes, nanosecond mtimes, links)
    let gnu = s.path("gnu");
    std::fs::create_dir(&gnu).unwrap();
    let out = Command::new("tar").args(["--numeric-owner", "-xpf"]).arg(&tar).arg("-C").arg(&gnu).output().unwrap();
    assert!(out.status.success(), "tar -x: {}", String::from_utf8_lossy(&out.stderr));
    let expected: Vec<PathBuf> = walk(&src).into_iter().filter(|p| !excluded(p) && p != Path::new(".")).collect();
    let (a, b) = (stat_all(&src, &expected, LinkCounts::Compare), stat_all(&gnu, &expected, LinkCounts::Compare));
    for (path, line) in &a {
        assert_eq!(Some(line), b.get(path), "stat of `{path}` after GNU tar");
    }
    diff_r(&src, &gnu);
}

#[test]
fn a_non_empty_destination_needs_force_and_is_replaced_whole() {
    let s = Scratch::new();
    let src = s.path("src");
    build_tree(&src);
    s.write_config(&path_job(&s, &src, EXCLUDE));
    backup_id(&run(s.drctl().args(["run", "vol"])));

    let dst = s.path("dst");
    write(&dst, "keep-me", b"precious");
    let r = run(s.drctl().args(["restore", "vol", "--latest", "--to"]).arg(&dst));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not empty") && r.stderr.contains("--force"), "{r:?}");
    assert_eq!(entries_of(&dst), ["keep-me"], "a refused restore changes nothing");

    let dry = run(s.drctl().args(["restore", "vol", "--latest", "--force", "--dry-run", "--to"]).arg(&dst));
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("replace what it holds (1 top-level entry)"), "{dry:?}");
    assert_eq!(entries_of(&dst), ["keep-me"], "a dry run changes nothing");

    let r = run(s.drctl().args(["restore", "vol", "--latest", "--force", "--to"]).arg(&dst));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!dst.join("keep-me").exists(), "replaced, not merged");
    assert_same_tree(&src, &dst, LinkCounts::Compare);
    let around = entries_of(s.dir.path());
    assert!(!around.iter().any(|n| n.contains("drctl-")), "no staging or old tree left: {around:?}");

    // back to the job's own path: damage the source, refuse, then force
    std::fs::remove_file(src.join("nested/dir/file.txt")).unwrap();
    write(&src, "new-since-backup", b"x");
    std::fs::write(src.join("secret.key"), b"changed").unwrap();
    let r = run(s.drctl().args(["restore", "vol", "--latest"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not empty"), "{r:?}");
    assert!(src.join("new-since-backup").exists());
    let r = run(s.drctl().args(["restore", "vol", "--latest", "--force"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!src.join("new-since-backup").exists());
    assert_eq!(std::fs::read(src.join("secret.key")).unwrap(), b"s3cr3t");
    assert_same_tree(&dst, &src, LinkCounts::Compare);
}

#[test]
fn a_failing_before_hook_commits_nothing_and_the_after_hooks_still_run() {
    let s = Scratch::new();
    let src = s.path("src");
    write(&src, "f", b"data");
    let (first, never, after, status) = (s.path("first"), s.path("never"), s.path("after-ran"), s.path("status"));
    s.write_config(&path_job(
        &s,
        &src,
        &format!(
            "before = [\"touch '{}'\", \"echo pause failed >&2; exit 3\", \"touch '{}'\"]\nafter = [\"touch '{}'\", \"echo $DRCTL_BACKUP_STATUS > '{}'\"]",
            first.display(),
            never.display(),
            after.display(),
            status.display()
        ),
    ));
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("before hook 2 of 3") && r.stderr.contains("exit code 3"), "{r:?}");
    assert!(r.stderr.contains("pause failed"), "the hook's own error output is shown: {r:?}");
    assert!(s.fs_files().is_empty(), "nothing committed: {:?}", s.fs_files());
    assert!(first.exists(), "hooks run in order");
    assert!(!never.exists(), "the first failing before hook stops the others");
    assert!(after.exists(), "the after hook ran");
    assert_eq!(std::fs::read_to_string(&status).unwrap().trim(), "failed");
    let list = run(s.drctl().args(["--json", "list", "vol"]));
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list[0]["status"], "failed");
}

#[test]
fn after_hooks_always_all_run_and_a_failing_one_is_a_warning() {
    let s = Scratch::new();
    let src = s.path("src");
    write(&src, "f", b"data");
    let (env, status, last, checked) = (s.path("env"), s.path("status"), s.path("last"), s.path("checked"));
    s.write_config(&path_job(
        &s,
        &src,
        &format!(
            "before = [\"echo \\\"$DRCTL_JOB $DRCTL_VOLUME_PATH\\\" > '{}'\", \"touch '{}'\"]\nafter = [\"echo $DRCTL_BACKUP_STATUS > '{}'\", \"exit 7\", \"touch '{}'\"]",
            env.display(),
            checked.display(),
            status.display(),
            last.display()
        ),
    ));
    // `drctl check` prepares the job but must not run its hooks (they may stop containers)
    let c = run(s.drctl().arg("check"));
    assert!(c.stdout.contains("will archive") || c.stderr.contains("will archive"), "{c:?}");
    assert!(!checked.exists() && !status.exists(), "check ran no hook: {c:?}");

    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("after hook") && r.stderr.contains("exit code 7"), "warned: {r:?}");
    assert_eq!(std::fs::read_to_string(&status).unwrap().trim(), "committed");
    assert!(last.exists(), "a failing after hook does not stop the next ones");
    assert_eq!(std::fs::read_to_string(&env).unwrap().trim(), format!("vol {}", src.display()));
    assert_eq!(s.fs_files().len(), 3, "committed: {:?}", s.fs_files());
}

/// drctl with the repository's stand-in `docker` CLI (tests/standins/docker; there is no Docker
/// engine here): `docker volume inspect` answers `$DRCTL_STANDIN_VOLUMES/NAME/_data` for the
/// volumes that exist there, and "no such volume" for the others, like the real one.
fn drctl_with_docker(s: &Scratch) -> Command {
    let mut c = s.drctl();
    c.env("DRCTL_DOCKER", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/standins/docker"))
        .env("DRCTL_STANDIN_VOLUMES", s.path("docker/volumes"))
        .env("DRCTL_STANDIN_LOG", s.path("docker.log"));
    c
}

#[test]
fn docker_volumes_are_found_through_the_docker_cli() {
    let s = Scratch::new();
    let mountpoint = s.path("docker/volumes/appdata/_data");
    write(&mountpoint, "uploads/photo.jpg", &noise(50_000, 9));
    write(&mountpoint, "db.sqlite", b"SQLite format 3");
    s.write_config(&job(&s, "docker_volume = \"appdata\"", ""));

    let id = backup_id(&run(drctl_with_docker(&s).args(["run", "vol"])));
    let m = manifest(&s);
    assert_eq!(m["backup_id"], id.as_str());
    assert_eq!(m["facts"]["source"], "docker_volume");
    assert_eq!(m["facts"]["docker_volume"], "appdata");
    assert_eq!(m["facts"]["root"], mountpoint.to_str().unwrap());
    assert_eq!(m["facts"]["file_count"], 2);
    let log = std::fs::read_to_string(s.path("docker.log")).unwrap();
    assert_eq!(log.lines().collect::<Vec<_>>(), ["docker volume inspect --format {{ .Mountpoint }} appdata"]);

    // restore into the volume itself (found through docker again)
    let reference = s.path("reference");
    let r = run(drctl_with_docker(&s).args(["restore", "vol", "--latest", "--to"]).arg(&reference));
    assert_eq!(r.code, 0, "{r:?}");
    std::fs::remove_dir_all(mountpoint.join("uploads")).unwrap();
    let r = run(drctl_with_docker(&s).args(["restore", "vol", "--latest", "--force"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(mountpoint.to_str().unwrap()), "{r:?}");
    diff_r(&reference, &mountpoint);

    // a volume docker does not know
    s.write_config(&job(&s, "docker_volume = \"nope\"", ""));
    let before = s.fs_files();
    let r = run(drctl_with_docker(&s).args(["run", "vol"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no such volume") && r.stderr.contains("docker volume ls"), "{r:?}");
    assert_eq!(s.fs_files(), before, "nothing committed");
}

#[test]
fn unusable_sources_fail_clearly_and_commit_nothing() {
    let s = Scratch::new();
    // (`pvc_path` through pod exec: tests/volume_pvc_e2e.rs)

    // a path that does not exist
    s.write_config(&path_job(&s, &s.path("missing"), ""));
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("cannot open the volume") && r.stderr.contains("missing"), "{r:?}");

    // configuration mistakes are caught before anything runs (exit 2)
    s.write_config(&path_job(&s, Path::new("/srv"), "exclude = [\"ok\", \"a[b\"]"));
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("exclude") && r.stderr.contains("a[b"), "{r:?}");
    s.write_config(&job(&s, "path = \"relative/dir\"", ""));
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("not an absolute path"), "{r:?}");
    assert!(s.fs_files().is_empty(), "{:?}", s.fs_files());
}
