//! End to end: `kind = "volume"` with `pvc_path`, read and written through pod exec, with the real
//! binary and the fs target.
//!
//! No Kubernetes cluster can run here: the stand-in API server (tests/common/kubeapi.rs) speaks the
//! real exec protocol and runs the command on this host, so the "PVC" is a temporary directory and
//! the pod's tar is this host's GNU tar. Restored trees are compared with `diff -r` and `stat`, as
//! in tests/volume_e2e.rs; the stored artifacts are compared with a local-path backup of the same
//! tree. The tests run as root (owners are part of what is checked).

mod common;
#[path = "common/kubeapi.rs"]
mod kubeapi;
#[path = "common/tree.rs"]
mod tree;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use kubeapi::{Behaviour, FakePod, KubeApi};
use tree::{EXCLUDE, Extras, LinkCounts, chmod, entries_of, sh, stat_all, write};

fn pods() -> Vec<FakePod> {
    vec![FakePod::running("apps", "web-0", &[("app", "web")], &["web"])]
}

/// A stand-in API server and a kubeconfig for it.
fn kube(s: &Scratch, behaviour: Behaviour) -> (KubeApi, PathBuf) {
    let api = KubeApi::start(pods(), behaviour);
    let kubeconfig = api.write_kubeconfig(s.dir.path(), "apps");
    (api, kubeconfig)
}

fn pvc_job(name: &str, root: &Path, pod: &str, extra: &str) -> String {
    format!(
        "[jobs.{name}]\nkind = \"volume\"\ntargets = [\"local\"]\npvc_path = \"{}\"\n\
         exec = {{ kubernetes = {{ namespace = \"apps\", pod = \"{pod}\" }} }}\n{extra}\n",
        root.display()
    )
}

fn config(s: &Scratch, jobs: &[String]) {
    s.write_config(&format!("{}{}", s.head(), jobs.join("\n")));
}

/// The common tree (tests/common/tree.rs) plus: a hard link whose first name is excluded (the next
/// name carries the content, and is restored with fewer links: link counts are not compared), a
/// 180-byte name (a pax header in the pod's tar), and a 6 MB file.
fn build_tree(root: &Path) {
    tree::build_tree(
        root,
        &Extras {
            big: ("big/six.bin", 6 * 1024 * 1024),
            more: &|root| {
                write(root, "first.tmp", b"linked from an excluded name");
                std::fs::hard_link(root.join("first.tmp"), root.join("second")).unwrap();
                write(root, &format!("long/{}", "n".repeat(180)), b"long name");
            },
            older: &[],
        },
    );
}

/// Source and restored trees are the same; link counts are not compared (see [`build_tree`]).
fn assert_same_tree(src: &Path, dst: &Path) {
    tree::assert_same_tree(src, dst, LinkCounts::Ignore);
}

fn manifests(s: &Scratch) -> Vec<serde_json::Value> {
    s.fs_files()
        .iter()
        .filter(|f| f.ends_with(".manifest.json"))
        .map(|m| serde_json::from_slice(&std::fs::read(s.path("backups").join(m)).unwrap()).unwrap())
        .collect()
}

fn ok(r: &Ran) -> String {
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout.trim().to_string()
}

#[test]
fn pvc_round_trip_through_pod_exec_keeps_every_entry_and_its_metadata() {
    let s = Scratch::new();
    let (api, kc) = kube(&s, Behaviour::default());
    let src = s.path("pvc/data");
    build_tree(&src);
    config(&s, &[pvc_job("vol", &src, "web-0", EXCLUDE)]);
    let id = ok(&run(s.drctl().env("KUBECONFIG", &kc).args(["run", "vol"])));
    assert!(api.execs().iter().any(|e| e.command.iter().any(|c| c.contains("exec tar -C"))), "{:?}", api.execs());

    let m = &manifests(&s)[0];
    assert_eq!(m["backup_id"], id.as_str());
    let f = &m["facts"];
    assert_eq!(f["source"], "pvc");
    assert_eq!(f["root"], src.to_str().unwrap());
    assert_eq!(f["pod"], "pod apps/web-0");
    assert_eq!(f["tar_format"], "pax");
    assert_eq!(f["hardlink_count"], 2);
    assert_eq!(f["symlink_count"], 3);
    assert_eq!(f["special_count"], 1);
    assert_eq!(f["excluded"], 3, "cache/, a.tmp, first.tmp");

    // into a new path in the pod (its parent does not exist either)
    let dst = s.path("pvc/restored/here");
    let r = run(s.drctl().env("KUBECONFIG", &kc).args(["restore", "vol", "--latest", "--to"]).arg(&dst));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("in pod apps/web-0"), "{r:?}");
    assert_same_tree(&src, &dst);
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = |p: &str| std::fs::symlink_metadata(dst.join(p)).unwrap();
    assert_eq!(md("links/a.bin").ino(), md("nested/c.bin").ino(), "hard links are links again");
    assert_eq!(md("links/a.bin").nlink(), 3);
    assert_eq!(std::fs::read(dst.join("second")).unwrap(), b"linked from an excluded name");
    assert_eq!((md("owned/by-other.txt").uid(), md("owned/by-other.txt").gid()), (1234, 5678));
    assert_eq!((md("rel-link").uid(), md("rel-link").gid()), (4321, 8765));
    assert_eq!(md(".").mode() & 0o7777, 0o750);
    assert_eq!((md("big/six.bin").mtime(), md("big/six.bin").mtime_nsec()), (946_684_799, 500_000_000));
    assert!(md("pipe.fifo").file_type().is_fifo());
    assert_eq!(entries_of(&s.path("pvc/restored")), ["here"], "no staging directory left beside it");
    assert!(
        api.execs().iter().any(|e| e.stdin && e.command.first().is_some_and(|c| c == "tar")),
        "extracted by tar in the pod: {:?}",
        api.execs()
    );
}

#[test]
fn a_pvc_backup_stores_the_same_artifacts_as_a_local_one() {
    let s = Scratch::new();
    let (_api, kc) = kube(&s, Behaviour::default());
    let src = s.path("pvc/data");
    build_tree(&src);
    let local =
        format!("[jobs.loc]\nkind = \"volume\"\ntargets = [\"local\"]\npath = \"{}\"\n{EXCLUDE}\n", src.display());
    config(&s, &[pvc_job("vol", &src, "web-0", EXCLUDE), local]);
    ok(&run(s.drctl().env("KUBECONFIG", &kc).args(["run", "vol"])));
    ok(&run(s.drctl().args(["run", "loc"])));
    let facts: Vec<serde_json::Value> = manifests(&s).into_iter().map(|m| m["facts"].clone()).collect();
    let (p, l) = if facts[0]["source"] == "pvc" { (&facts[0], &facts[1]) } else { (&facts[1], &facts[0]) };
    for k in ["file_count", "dir_count", "symlink_count", "hardlink_count", "special_count", "total_bytes", "excluded"]
    {
        assert_eq!(p[k], l[k], "{k}");
    }

    // the file lists are identical, entry for entry (sha256, modes, owners, ns mtimes)
    let files = |job: &str| {
        let r = run(s.drctl().env("KUBECONFIG", &kc).args([
            "restore",
            job,
            "--latest",
            "--artifact",
            "files",
            "--output",
            "-",
        ]));
        let v: serde_json::Value = serde_json::from_str(&ok_raw(&r)).unwrap();
        v
    };
    let (pf, lf) = (files("vol"), files("loc"));
    assert_eq!(pf["format"], "drctl-volume-files");
    assert_eq!(pf, lf);

    // the stored archive decrypts with the age CLI and lists with the tar CLI like the local one
    let listing = |job: &str| {
        let stored = s
            .fs_files()
            .into_iter()
            .filter(|f| f.ends_with(".data.tar.zst.age"))
            .map(|f| s.path("backups").join(f))
            .find(|f| {
                let m = std::fs::read_to_string(f.to_string_lossy().replace(".data.tar.zst.age", ".manifest.json"))
                    .unwrap_or_default();
                m.contains(&format!("\"job\":\"{job}\"")) || m.contains(&format!("\"job\": \"{job}\""))
            })
            .unwrap_or_else(|| panic!("a data artifact of `{job}` in {:?}", s.fs_files()));
        let tar = s.path(&format!("{job}.tar"));
        sh(&format!(
            "age -d -i '{}' '{}' | zstd -d -q -o '{}'",
            s.path("age.key").display(),
            stored.display(),
            tar.display()
        ));
        let out = Command::new("tar").args(["--numeric-owner", "--full-time", "-tvf"]).arg(&tar).output().unwrap();
        assert!(out.status.success(), "tar -tvf: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let (pl, ll) = (listing("vol"), listing("loc"));
    for needle in [
        "ünïcødé/日本語 ファイル.txt",
        "rel-link -> nested/dir/file.txt",
        "links/b.bin link to links/a.bin",
        "1234/5678",
    ] {
        assert!(pl.contains(needle), "`{needle}` in\n{pl}");
    }
    assert!(!pl.contains("cache/junk.bin") && !pl.contains("first.tmp"), "{pl}");
    assert_eq!(pl, ll, "the same archive as a local backup, entry for entry");
}

fn ok_raw(r: &Ran) -> String {
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout.clone()
}

#[test]
fn a_non_empty_pod_destination_needs_force_and_is_replaced_whole() {
    let s = Scratch::new();
    let (_api, kc) = kube(&s, Behaviour::default());
    let src = s.path("pvc/data");
    build_tree(&src);
    config(&s, &[pvc_job("vol", &src, "web-0", EXCLUDE)]);
    ok(&run(s.drctl().env("KUBECONFIG", &kc).args(["run", "vol"])));

    let dst = s.path("pvc/other");
    write(&dst, "keep-me", b"precious");
    std::fs::create_dir(dst.join("lost+found")).unwrap();
    let r = run(s.drctl().env("KUBECONFIG", &kc).args(["restore", "vol", "--latest", "--to"]).arg(&dst));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not empty") && r.stderr.contains("--force"), "{r:?}");
    assert!(r.stderr.contains("1 entry at its top level"), "lost+found does not count: {r:?}");
    assert_eq!(entries_of(&dst), ["keep-me", "lost+found"], "a refused restore changes nothing");

    let dry = run(s
        .drctl()
        .env("KUBECONFIG", &kc)
        .args(["restore", "vol", "--latest", "--force", "--dry-run", "--to"])
        .arg(&dst));
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("replace what it holds (1 top-level entry)"), "{dry:?}");
    assert_eq!(entries_of(&dst), ["keep-me", "lost+found"], "a dry run changes nothing");

    let r = run(s.drctl().env("KUBECONFIG", &kc).args(["restore", "vol", "--latest", "--force", "--to"]).arg(&dst));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!dst.join("keep-me").exists(), "replaced, not merged");
    assert!(dst.join("lost+found").is_dir(), "an empty lost+found the backup lacks stays");
    let root_stat = |p: &Path| stat_all(p, &[PathBuf::from(".")], LinkCounts::Ignore);
    assert_eq!(root_stat(&src), root_stat(&dst), "the destination itself gets the archive root's metadata");
    // (removing lost+found changes the mtime the restore set: put it back for the comparison)
    std::fs::remove_dir(dst.join("lost+found")).unwrap();
    sh(&format!("touch -r '{}' '{}'", src.display(), dst.display()));
    assert_same_tree(&src, &dst);
    assert!(!entries_of(&s.path("pvc")).iter().any(|n| n.contains("drctl-")), "{:?}", entries_of(&s.path("pvc")));

    // back into the job's own path in the pod
    std::fs::remove_file(src.join("nested/dir/file.txt")).unwrap();
    write(&src, "new-since-backup", b"x");
    let r = run(s.drctl().env("KUBECONFIG", &kc).args(["restore", "vol", "--latest"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(src.join("new-since-backup").exists());
    let r = run(s.drctl().env("KUBECONFIG", &kc).args(["restore", "vol", "--latest", "--force"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!src.join("new-since-backup").exists());
    assert_same_tree(&dst, &src);
}

#[test]
fn a_failing_tar_in_the_pod_commits_nothing() {
    let s = Scratch::new();
    let (_api, kc) = kube(&s, Behaviour::default());
    let missing = s.path("pvc/missing");
    // with a before hook the root is only checked by tar itself
    let (hook, after) = (s.path("before-ran"), s.path("after-status"));
    let hooks = format!(
        "before = [\"touch '{}'\"]\nafter = [\"echo $DRCTL_BACKUP_STATUS $DRCTL_VOLUME_PATH > '{}'\"]",
        hook.display(),
        after.display()
    );
    config(&s, &[pvc_job("vol", &missing, "web-0", &hooks)]);
    let r = run(s.drctl().env("KUBECONFIG", &kc).args(["run", "vol"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("tar -C") && r.stderr.contains("in pod apps/web-0"), "{r:?}");
    assert!(r.stderr.contains("exit code 2") && r.stderr.contains("No such file or directory"), "tar's stderr: {r:?}");
    assert!(r.stderr.contains("nothing was committed"), "{r:?}");
    assert!(s.fs_files().iter().all(|f| !f.contains(".manifest.json") && !f.contains(".age")), "{:?}", s.fs_files());
    assert!(hook.exists(), "hooks run on this host");
    assert_eq!(std::fs::read_to_string(&after).unwrap().trim(), format!("failed {}", missing.display()));

    // without hooks, the missing root is found before anything starts
    config(&s, &[pvc_job("vol", &missing, "web-0", "")]);
    let r = run(s.drctl().env("KUBECONFIG", &kc).args(["run", "vol"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not a directory") && r.stderr.contains("pvc_path"), "{r:?}");
    assert!(s.fs_files().iter().all(|f| !f.contains(".manifest.json")), "{:?}", s.fs_files());
}

#[test]
fn a_cut_exec_stream_fails_the_backup() {
    let s = Scratch::new();
    let (_api, kc) = kube(&s, Behaviour { cut_stdout_after: Some(1 << 20), ..Default::default() });
    let src = s.path("pvc/data");
    build_tree(&src);
    config(&s, &[pvc_job("vol", &src, "web-0", EXCLUDE)]);
    let r = run(s.drctl().env("KUBECONFIG", &kc).args(["run", "vol"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("without an exit status") || r.stderr.contains("cut short"), "{r:?}");
    assert!(s.fs_files().iter().all(|f| !f.contains(".manifest.json")), "nothing committed: {:?}", s.fs_files());
    let list = run(s.drctl().env("KUBECONFIG", &kc).args(["--json", "list", "vol"]));
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list[0]["status"], "failed");
}

#[test]
fn an_unreachable_pod_fails_clearly_and_commits_nothing() {
    let s = Scratch::new();
    let (_api, kc) = kube(&s, Behaviour::default());
    let src = s.path("pvc/data");
    write(&src, "f", b"x");
    config(&s, &[pvc_job("vol", &src, "web-9", "")]);
    let r = run(s.drctl().env("KUBECONFIG", &kc).args(["run", "vol"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("pods \"web-9\" not found") && r.stderr.contains("hint:"), "{r:?}");
    assert!(s.fs_files().iter().all(|f| !f.contains(".manifest.json")), "{:?}", s.fs_files());

    // and an API server that is not there at all
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = s.path("dead-kubeconfig");
    std::fs::write(
        &dead,
        std::fs::read_to_string(&kc).unwrap().replace(&_api.url, &format!("http://127.0.0.1:{port}")),
    )
    .unwrap();
    config(&s, &[pvc_job("vol", &src, "web-0", "")]);
    let r = run(s.drctl().env("KUBECONFIG", &dead).args(["run", "vol"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("cannot exec"), "{r:?}");
    assert!(s.fs_files().iter().all(|f| !f.contains(".manifest.json")), "{:?}", s.fs_files());
}

/// A `tar` earlier on PATH for the commands the stand-in runs "in the pod": `tar -c` prints the
/// archive in `$DRCTL_FAKE_TAR`, everything else goes to the real tar.
fn fake_tar(dir: &Path, archive: &Path) {
    let bin = dir.join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let real = String::from_utf8(Command::new("sh").args(["-c", "command -v tar"]).output().unwrap().stdout).unwrap();
    let script = format!(
        "#!/bin/sh\n# stand-in: a pod whose tar produces a crafted archive\n\
         for a in \"$@\"; do [ \"$a\" = -cf ] && exec cat '{}'; done\nexec {} \"$@\"\n",
        archive.display(),
        real.trim()
    );
    std::fs::write(bin.join("tar"), script).unwrap();
    chmod(&bin, "tar", 0o755);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    // SAFETY: nextest runs each test in its own process; the stand-in's commands inherit this
    unsafe { std::env::set_var("PATH", path) };
}

#[test]
fn an_escaping_archive_is_refused_for_a_pvc_restore_and_changes_nothing() {
    let s = Scratch::new();
    // an archive with `link -> OUTSIDE` and then `link/evil`: written through the symlink, it would
    // land outside the destination
    let outside = s.path("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"precious").unwrap();
    let (a, b) = (s.path("craft/a"), s.path("craft/b"));
    std::fs::create_dir_all(&a).unwrap();
    symlink(&outside, a.join("link")).unwrap();
    write(&b, "link/evil", b"evil");
    write(&b, "link/victim", b"overwritten");
    let crafted = s.path("crafted.tar");
    sh(&format!(
        "tar -cf '{}' --format=posix --no-recursion -C '{}' . ./link -C '{}' ./link/evil ./link/victim",
        crafted.display(),
        a.display(),
        b.display()
    ));
    fake_tar(s.dir.path(), &crafted);
    let (_api, kc) = kube(&s, Behaviour::default());
    let src = s.path("pvc/data");
    write(&src, "f", b"x");
    config(&s, &[pvc_job("vol", &src, "web-0", "")]);
    ok(&run(s.drctl().env("KUBECONFIG", &kc).args(["run", "vol"])));

    // into the pod, a new path and an existing one
    let dst = s.path("pvc/restored");
    let r = run(s.drctl().env("KUBECONFIG", &kc).args(["restore", "vol", "--latest", "--to"]).arg(&dst));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("refused archive entry") && r.stderr.contains("symbolic link"), "{r:?}");
    assert!(r.stderr.contains("nothing was changed"), "{r:?}");
    assert!(!dst.exists(), "nothing created");
    let r = run(s.drctl().env("KUBECONFIG", &kc).args(["restore", "vol", "--latest", "--force"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("refused archive entry"), "{r:?}");
    assert_eq!(entries_of(&src), ["f"], "the destination is untouched, no staging directory left");
    assert_eq!(entries_of(&s.path("pvc")), ["data"]);
    assert_eq!(entries_of(&outside), ["victim"]);
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"precious");

    // the local extractor refuses the same archive
    let local = s.path("local-restore");
    let r = run(s.drctl().env("KUBECONFIG", &kc).args(["restore", "vol", "--latest", "--to-dir"]).arg(&local));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("refused archive entry"), "{r:?}");
    assert_eq!(entries_of(&outside), ["victim"]);
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"precious");
}

#[test]
fn pvc_path_without_kubernetes_exec_is_a_config_error() {
    let s = Scratch::new();
    s.write_config(&format!(
        "{}[jobs.vol]\nkind = \"volume\"\ntargets = [\"local\"]\npvc_path = \"/data\"\n",
        s.head()
    ));
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("pvc_path") && r.stderr.contains("kubernetes"), "{r:?}");
    s.write_config(&format!(
        "{}[jobs.vol]\nkind = \"volume\"\ntargets = [\"local\"]\npvc_path = \"data\"\nexec = {{ kubernetes = {{ pod = \"p\" }} }}\n",
        s.head()
    ));
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("not an absolute path"), "{r:?}");
}
