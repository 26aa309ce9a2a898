//! End to end: `storage = "chunked"` volume jobs with the real binary against the fs target, the
//! test S3 server and the test SFTP server: round trips, deduplication and the files cache over
//! several runs, a target added later, a backup host without the age identity (backup, prune and
//! check), garbage collection and its lock markers, a damaged pack, and interop: the stored tree
//! rebuilt from the target with nothing but the `age` and `zstd` CLIs is one GNU tar extracts.

mod common;
#[path = "common/tree.rs"]
mod tree;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use tree::{EXCLUDE, Extras, LinkCounts, assert_same_tree, diff_r, noise, sh, write};

/// A tree with every kind of entry (tests/common/tree.rs), a 12 MB file and 400 small ones.
fn build_tree(root: &Path) {
    tree::build_tree(
        root,
        &Extras {
            big: ("big/twelve.bin", 12 * 1024 * 1024),
            more: &|root| {
                for i in 0..400 {
                    write(root, &format!("many/f{i:03}.txt"), format!("small file {i}\n").as_bytes());
                }
            },
            older: &[],
        },
    );
}

struct Setup {
    s: Scratch,
    src: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let s = Scratch::new();
        let src = s.path("src");
        build_tree(&src);
        Setup { s, src }
    }

    /// The config: the scratch head with the chunk key, `extra_targets` (TOML), and the job
    /// writing to `targets`. `identity` false: a backup host that holds only the recipients.
    fn config(&self, extra_targets: &str, targets: &[&str], identity: bool) {
        let mut head = self.s.with_chunk_key(&self.s.head());
        if !identity {
            head = head.lines().filter(|l| !l.starts_with("identity_file")).collect::<Vec<_>>().join("\n") + "\n";
        }
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        self.s.write_config(&format!(
            "{head}{extra_targets}[jobs.vol]\nkind = \"volume\"\nstorage = \"chunked\"\ntargets = [{}]\npath = \"{}\"\n{EXCLUDE}\n",
            targets.join(", "),
            self.src.display()
        ));
    }

    /// The `local` target keeps only the newest backup (so prune has something to collect).
    fn keep_last_one(&self) {
        let cfg = std::fs::read_to_string(self.s.config_path()).unwrap();
        self.s.write_config(&cfg.replace("medium = \"disk\"\n", "medium = \"disk\"\nkeep = { last = 1 }\n"));
    }

    fn drctl(&self) -> Command {
        let mut c = self.s.drctl();
        c.env("DRCTL_STATE_DIR", self.s.path("state")).env("DRCTL_FILES_CACHE_RACY_MS", "0");
        c
    }

    /// `drctl -v run vol`: the backup id and how many runs of the tree were read.
    fn backup(&self) -> (String, u64) {
        let r = run(self.drctl().args(["-v", "run", "vol"]));
        assert_eq!(r.code, 0, "{r:?}");
        let read = r
            .stderr
            .lines()
            .find_map(|l| l.split("runs_read=").nth(1))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no files cache line in {r:?}"));
        (r.stdout.trim().to_string(), read)
    }

    fn manifest(&self, id: &str) -> serde_json::Value {
        let f = self.s.fs_files().into_iter().find(|f| f.ends_with(&format!("{id}.manifest.json"))).unwrap();
        serde_json::from_slice(&std::fs::read(self.s.path("backups").join(f)).unwrap()).unwrap()
    }

    fn packs(&self) -> Vec<String> {
        self.s.fs_files().into_iter().filter(|f| f.ends_with(".pack")).collect()
    }

    /// `--latest` restores into a new directory `name` as the same tree as the source.
    fn restores_the_tree(&self, extra: &[&str], name: &str) {
        let dst = self.s.path(name);
        let r = self.restore(extra, &dst);
        assert_eq!(r.code, 0, "{r:?}");
        assert_same_tree(&self.src, &dst, LinkCounts::Compare);
    }

    fn restore(&self, extra: &[&str], dst: &Path) -> Ran {
        run(self.drctl().args(["restore", "vol", "--latest", "--to-dir"]).arg(dst).args(extra))
    }
}

#[test]
fn chunked_round_trip_dedups_reads_only_changes_and_fills_a_new_target() {
    let t = Setup::new();
    t.config("", &["local"], true);
    let (first, read1) = t.backup();
    assert!(read1 > 0);
    let m1 = t.manifest(&first);
    assert_eq!(m1["version"], 2, "an older drctl must refuse a chunked manifest");
    let data = m1["artifacts"].as_array().unwrap().iter().find(|a| a["name"] == "data").unwrap().clone();
    assert!(data["key"].as_str().unwrap().ends_with(".data.tar.recipe.zst.age"), "{data}");
    assert!(added(&m1) > 12_000_000, "the first backup stores the big file: {}", added(&m1));
    let text = serde_json::to_string(&m1).unwrap();
    assert!(!text.contains("twelve.bin") && !text.contains("f001.txt"), "no file name in the plaintext manifest");

    // the files cache: one file, readable by drctl's user only, nothing left half written
    let caches: Vec<_> = std::fs::read_dir(t.s.path("state/files-cache")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    assert!(caches[0].to_string_lossy().ends_with(".cache"), "{caches:?}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&caches[0]).unwrap().permissions().mode() & 0o777, 0o600);

    // unchanged: nothing read, (almost) nothing stored
    let (second, read2) = t.backup();
    assert_eq!(read2, 0, "an unchanged tree is not read again");
    let m2 = t.manifest(&second);
    assert!(added(&m2) < 64 * 1024, "unchanged tree added {} bytes", added(&m2));
    let list = run(t.drctl().args(["list", "--json", "vol"]));
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows[0]["stored_bytes"].as_u64(), Some(added(&m2)), "list shows the bytes each backup added");

    // one small file changed: only its run is read again
    write(&t.src, "many/f123.txt", b"changed\n");
    let (_, read3) = t.backup();
    assert!((1..=3).contains(&read3), "{read3} runs read for one changed file");
    t.restores_the_tree(&[], "restored");
    // a fresh machine: no catalog, no files cache, only the config and the identity
    std::fs::remove_file(t.s.path("catalog.db")).unwrap();
    std::fs::remove_dir_all(t.s.path("state")).unwrap();
    t.restores_the_tree(&[], "fresh");
    let r = run(t.drctl().args(["catalog", "rebuild"]));
    assert_eq!(r.code, 0, "{r:?}");
    let list = run(t.drctl().args(["list", "--json", "vol"]));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&list.stdout).unwrap().as_array().unwrap().len(), 3);

    // a target added later holds nothing yet: the files cache must not skip what it lacks
    t.config(&t.s.s3_target("s3", None), &["local", "s3"], true);
    let (_, read4) = t.backup();
    assert!(read4 > 0, "the new target needs every chunk");
    let dst = t.s.path("from-s3");
    let r = t.restore(&["--target", "s3"], &dst);
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&t.src, &dst, LinkCounts::Compare);
    let (_, read5) = t.backup();
    assert_eq!(read5, 0, "both targets hold every chunk now");
}

#[test]
fn what_is_stored_opens_with_the_age_and_zstd_clis_into_a_tar_gnu_tar_extracts() {
    let t = Setup::new();
    t.config("", &["local"], true);
    let (id, _) = t.backup();
    let m = t.manifest(&id);
    let root = t.s.path("backups");
    let key = t.s.path("age.key");
    let open = |stored: &Path, out: &Path| {
        sh(&format!("age -d -i '{}' '{}' | zstd -d -q -f -o '{}'", key.display(), stored.display(), out.display()))
    };
    let data = m["artifacts"].as_array().unwrap().iter().find(|a| a["name"] == "data").unwrap();
    let recipe_json = t.s.path("recipe.json");
    open(&root.join(data["key"].as_str().unwrap()), &recipe_json);
    let recipe: serde_json::Value = serde_json::from_slice(&std::fs::read(&recipe_json).unwrap()).unwrap();
    let scope = recipe["scope"].as_str().unwrap();
    // where each chunk is, from the plaintext indexes
    let mut at: HashMap<String, (String, u64, u64)> = HashMap::new();
    for f in t.s.fs_files().into_iter().filter(|f| f.starts_with(&format!("chunks/{scope}/index/"))) {
        let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join(&f)).unwrap()).unwrap();
        for p in idx["packs"].as_array().unwrap() {
            let pack = p["id"].as_str().unwrap();
            for b in p["blobs"].as_array().unwrap() {
                let entry = (pack.to_string(), b[1].as_u64().unwrap(), b[2].as_u64().unwrap());
                at.insert(b[0].as_str().unwrap().to_string(), entry);
            }
        }
    }
    let tar = t.s.path("rebuilt.tar");
    let mut out = std::fs::File::create(&tar).unwrap();
    let (blob, chunk) = (t.s.path("blob.age"), t.s.path("chunk"));
    let chunks = recipe["chunks"].as_array().unwrap();
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    for c in chunks {
        let (pack, off, len) = at[c[0].as_str().unwrap()].clone();
        let bytes = std::fs::read(root.join(format!("chunks/{scope}/packs/{}/{pack}.pack", &pack[..2]))).unwrap();
        std::fs::write(&blob, &bytes[off as usize..(off + len) as usize]).unwrap();
        open(&blob, &chunk);
        let plain = std::fs::read(&chunk).unwrap();
        assert_eq!(plain.len() as u64, c[2].as_u64().unwrap());
        std::io::copy(&mut &plain[..], &mut out).unwrap();
    }
    drop(out);
    let gnu = t.s.path("gnu");
    std::fs::create_dir(&gnu).unwrap();
    let x = Command::new("tar").args(["--numeric-owner", "-xpf"]).arg(&tar).arg("-C").arg(&gnu).output().unwrap();
    assert!(x.status.success(), "tar -x: {}", String::from_utf8_lossy(&x.stderr));
    diff_r(&t.src, &gnu);
}

#[test]
fn a_host_without_the_identity_backs_up_prunes_and_checks() {
    let t = Setup::new();
    t.config(&t.s.sftp_target("sftp"), &["local", "sftp"], false);
    assert!(!std::fs::read_to_string(t.s.config_path()).unwrap().contains("identity_file"));
    t.backup();
    write(&t.src, "big/twelve.bin", &noise(12 * 1024 * 1024, 99));
    t.backup();
    let r = run(t.drctl().args(["prune"]));
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(t.drctl().args(["check"]));
    assert_eq!(r.code, 0, "check passes on a host without the identity: {r:?}");
    // restore happens elsewhere, with the identity
    t.config(&t.s.sftp_target("sftp"), &["local"], true);
    t.restores_the_tree(&[], "restored");
}

/// `prune --json`: the chunk collection report of the first target.
fn prune_gc(t: &Setup, extra: &[&str]) -> serde_json::Value {
    let r = run(t.drctl().args(["--json", "prune"]).args(extra));
    assert_eq!(r.code, 0, "{r:?}");
    let plans: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    plans[0]["chunks"][0].clone()
}

fn count(v: &serde_json::Value) -> usize {
    v.as_array().map(Vec::len).unwrap_or_else(|| panic!("not a list: {v}"))
}

#[test]
fn prune_marks_unused_packs_and_deletes_them_once_every_backup_that_saw_them_is_gone() {
    let t = Setup::new();
    t.config("", &["local"], true);
    t.keep_last_one();
    let (first, _) = t.backup();
    let before = t.packs();
    write(&t.src, "big/twelve.bin", &noise(12 * 1024 * 1024, 42));
    let (second, _) = t.backup();
    let with_both = t.packs();
    assert!(with_both.len() > before.len());

    // another host's backup is running (its marker is live): prune deletes the old backup and
    // marks the packs only it used, but deletes none of them, now or while that backup runs
    let scope = t.manifest(&second)["artifacts"][0]["chunked"]["scope"].as_str().unwrap().to_string();
    let locks = t.s.path("backups").join(format!("chunks/{scope}/locks"));
    std::fs::create_dir_all(&locks).unwrap();
    let now = jiff::Timestamp::now();
    let lock = serde_json::json!({"kind": "shared", "host": "other-host", "pid": 7, "purpose": "backup vol x",
        "created": now.to_string(), "refreshed": now.to_string()});
    let marker = locks.join("20990101T000000Z-abcdef.shared.json");
    std::fs::write(&marker, lock.to_string()).unwrap();
    let gc = prune_gc(&t, &[]);
    assert!(count(&gc["packs_marked"]) > 0, "{gc}");
    assert_eq!(count(&gc["packs_deleted"]), 0, "{gc}");
    assert!(!t.s.fs_files().iter().any(|f| f.starts_with("vol/") && f.contains(&first)), "the old backup is pruned");
    let fossils = t.s.fs_files().into_iter().filter(|f| f.contains("/fossils/")).collect::<Vec<_>>();
    assert_eq!(fossils.len(), 1, "one fossil record: {fossils:?}");
    let gc = prune_gc(&t, &[]);
    assert!(gc["packs_waiting"].as_u64().unwrap() > 0, "{gc}");
    assert_eq!(count(&gc["packs_deleted"]), 0, "{gc}");
    // (a mostly unused pack may have been repacked: new packs, none gone)
    let now_packs = t.packs();
    assert!(with_both.iter().all(|p| now_packs.contains(p)), "no pack deleted while a backup that may use it runs");

    // its holder died an hour ago (the marker went stale): the marked packs go
    let old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let stale = serde_json::json!({"kind": "shared", "host": "other-host", "pid": 7, "purpose": "backup vol x",
        "created": old.to_string(), "refreshed": old.to_string()});
    std::fs::write(&marker, stale.to_string()).unwrap();
    // and one whose holder died two days ago: removed by the next collection
    let ancient_at = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48);
    let ancient = locks.join("20200101T000000Z-dead00.shared.json");
    std::fs::write(
        &ancient,
        serde_json::json!({"kind": "shared", "host": "gone-host", "pid": 9, "purpose": "backup vol y",
            "created": ancient_at.to_string(), "refreshed": ancient_at.to_string()})
        .to_string(),
    )
    .unwrap();
    let r = run(t.drctl().args(["prune", "--dry-run"]));
    assert!(r.stdout.contains("marked pack(s) of chunk repository"), "{r:?}");
    assert_eq!(t.packs(), now_packs, "a dry run deletes nothing");
    let gc = prune_gc(&t, &[]);
    assert!(count(&gc["packs_deleted"]) > 0, "{gc}");
    let after = t.packs();
    assert!(
        after.len() < with_both.len(),
        "packs only the pruned backup used are gone: {} -> {}",
        with_both.len(),
        after.len()
    );
    assert!(!t.s.fs_files().iter().any(|f| f.contains("/fossils/")), "the record is done");
    assert!(!ancient.exists() && marker.exists(), "markers are swept after a day, not after 15 minutes");
    // a live exclusive marker (another collection) does not stop a backup either
    let other_gc = serde_json::json!({"kind": "exclusive", "host": "gc-host", "pid": 8, "purpose": "garbage collection",
        "created": now.to_string(), "refreshed": jiff::Timestamp::now().to_string()});
    std::fs::write(locks.join("20990101T000001Z-abcdef.exclusive.json"), other_gc.to_string()).unwrap();
    t.backup();
    let r = run(t.drctl().args(["prune"]));
    assert!(r.stderr.contains("garbage collection skipped") && r.stderr.contains("gc-host"), "{r:?}");
    t.restores_the_tree(&[], "restored");
}

/// `check --read-data --json`: the findings about the data on target `local`.
fn read_data(t: &Setup) -> Vec<serde_json::Value> {
    let r = run(t.drctl().args(["--json", "check", "--read-data"]));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    v["findings"].as_array().unwrap().iter().filter(|f| f["subject"] == "data local").cloned().collect()
}

#[test]
fn a_damaged_pack_fails_the_restore_and_read_data_naming_it_and_the_backups() {
    let t = Setup::new();
    t.config("", &["local"], false);
    let (id, _) = t.backup();
    let before = read_data(&t);
    assert!(before.len() == 1 && before[0]["status"] == "ok", "{before:?}");
    assert!(before[0]["message"].as_str().unwrap().contains("intact"), "{before:?}");
    t.config("", &["local"], true);
    let root = t.s.path("backups");
    let mut packs = t.packs();
    packs.sort_by_key(|p| std::fs::metadata(root.join(p)).unwrap().len());
    let victim = packs.last().unwrap().clone();
    let path = root.join(&victim);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let dst = t.s.path("restored");
    let r = t.restore(&[], &dst);
    assert_ne!(r.code, 0, "{r:?}");
    let pack_id = victim.rsplit('/').next().unwrap().trim_end_matches(".pack");
    assert!(r.stderr.contains(pack_id), "the error names the pack: {r:?}");
    assert!(!dst.exists(), "nothing applied");
    // found without the identity too, naming the pack and the backup it damages
    t.config("", &["local"], false);
    let after = read_data(&t);
    let bad: Vec<_> = after.iter().filter(|f| f["status"] == "failed").collect();
    assert_eq!(bad.len(), 1, "{after:?}");
    let msg = bad[0]["message"].as_str().unwrap();
    assert!(msg.contains(pack_id) && msg.contains(&id), "{msg}");
}

#[test]
fn chunked_storage_needs_a_chunk_key() {
    let s = Scratch::new();
    s.write_config(&format!(
        "{}[jobs.vol]\nkind = \"volume\"\nstorage = \"chunked\"\ntargets = [\"local\"]\npath = \"/tmp\"\n",
        s.head()
    ));
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("chunk_key_file") && r.stderr.contains("drctl keygen --chunk-key"), "{r:?}");
    // keygen never overwrites a key
    let key = s.path("chunk.key");
    assert_eq!(run(drctl_bare().args(["keygen", "--chunk-key"]).arg(&key)).code, 0);
    let before = std::fs::read(&key).unwrap();
    assert_ne!(run(drctl_bare().args(["keygen", "--chunk-key"]).arg(&key)).code, 0);
    assert_eq!(std::fs::read(&key).unwrap(), before);
}

#[test]
fn read_data_checks_stream_artifacts_too() {
    let t = Setup::new();
    t.config("", &["local"], false);
    let cfg =
        std::fs::read_to_string(t.s.config_path()).unwrap().replace("storage = \"chunked\"", "storage = \"stream\"");
    t.s.write_config(&cfg);
    let r = run(t.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(read_data(&t)[0]["status"], "ok");
    let artifact = t.s.fs_files().into_iter().find(|f| f.ends_with(".data.tar.zst.age")).unwrap();
    let path = t.s.path("backups").join(&artifact);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let after = read_data(&t);
    let msg = after.iter().find(|f| f["status"] == "failed").map(|f| f["message"].to_string()).unwrap_or_default();
    assert!(msg.contains(&artifact) && msg.contains("damaged"), "{after:?}");
}

#[test]
fn sync_copies_the_missing_chunks_encrypted_as_stored_without_the_identity() {
    let t = Setup::new();
    t.config("", &["local"], false);
    t.backup();
    write(&t.src, "many/f007.txt", b"second\n");
    t.backup();
    // a target added later: sync fills it from `local`, on a host without the identity
    let sftp = t.s.sftp_target("sftp");
    t.config(&sftp, &["local", "sftp"], false);
    let r = run(t.drctl().args(["--json", "sync"]));
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["copied"].as_array().unwrap().len(), 2, "{v}");
    assert!(v["copied"][0]["bytes"].as_u64().unwrap() > 12_000_000, "{v}");
    let r = run(t.drctl().args(["--json", "sync"]));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()["copied"].as_array().unwrap().len(), 0);
    // what sync stored restores on its own
    t.config(&sftp, &["local", "sftp"], true);
    t.restores_the_tree(&["--target", "sftp"], "from-sftp");
    // and the next backup finds every chunk on both targets: nothing read, nothing uploaded
    let (id, read) = t.backup();
    assert_eq!(read, 0);
    assert!(added(&t.manifest(&id)) < 64 * 1024);
}

#[test]
fn a_backup_racing_two_prunes_never_loses_a_chunk() {
    let t = Setup::new();
    t.config("", &["local"], false);
    t.keep_last_one();
    t.backup();
    for round in 0..3u64 {
        // a new big file each round: the backup's new chunks and the old ones prune frees race
        write(&t.src, "big/twelve.bin", &noise(12 * 1024 * 1024, 100 + round));
        let spawn = |args: &[&str]| {
            t.drctl()
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let backup = spawn(&["run", "vol"]);
        let prunes = [spawn(&["prune"]), spawn(&["prune"])];
        let b = backup.wait_with_output().unwrap();
        assert!(b.status.success(), "round {round} backup: {}", String::from_utf8_lossy(&b.stderr));
        for p in prunes {
            let o = p.wait_with_output().unwrap();
            assert!(o.status.success(), "round {round} prune: {}", String::from_utf8_lossy(&o.stderr));
        }
        // whatever interleaving happened: the newest backup is whole
        let r = run(t.drctl().args(["prune"]));
        assert_eq!(r.code, 0, "{r:?}");
        let data = read_data(&t);
        assert!(data.iter().all(|f| f["status"] == "ok"), "round {round}: {data:?}");
    }
    t.config("", &["local"], true);
    t.restores_the_tree(&[], "restored");
}

/// A `drctl run vol` held by the test hook once its packs are uploaded and before its index is
/// written: returns the child and the fifo's write end (drop it to let the backup go on).
fn held_backup(t: &Setup) -> (std::process::Child, std::fs::File) {
    held_backup_with(t, &[])
}

fn held_backup_with(t: &Setup, env: &[(&str, &str)]) -> (std::process::Child, std::fs::File) {
    let fifo = t.s.path(&format!("pause-{}.fifo", unique("p")));
    sh(&format!("mkfifo '{}'", fifo.display()));
    let backup = t
        .drctl()
        .envs(env.iter().copied())
        .args(["run", "vol"])
        .env("DRCTL_TEST_PAUSE_BEFORE_INDEX", &fifo)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // returns once the backup is there, and waits
    let hold = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    (backup, hold)
}

fn finishes(backup: std::process::Child, hold: std::fs::File) -> String {
    drop(hold);
    let b = backup.wait_with_output().unwrap();
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    String::from_utf8_lossy(&b.stdout).trim().to_string()
}

/// Keep-last-one on `local`; a first backup with a big file X, a second with Y instead, then a
/// third with X again held by the test hook (with `env`) after its packs: it deduplicated X's
/// chunks against packs only the first backup refers to. Returns the setup, the second backup's
/// id, and the held backup.
fn reusing_backup_held(env: &[(&str, &str)]) -> (Setup, String, std::process::Child, std::fs::File) {
    let t = Setup::new();
    t.config("", &["local"], true);
    t.keep_last_one();
    let x = noise(12 * 1024 * 1024, 7);
    write(&t.src, "big/twelve.bin", &x);
    t.backup();
    write(&t.src, "big/twelve.bin", &noise(12 * 1024 * 1024, 8));
    let (second, _) = t.backup();
    write(&t.src, "big/twelve.bin", &x);
    let (backup, hold) = held_backup_with(&t, env);
    (t, second, backup, hold)
}

/// A backup suspended (or cut off from the target) for longer than collections wait for its lock
/// marker must not commit: a collection may have deleted packs it reuses. The test hook
/// `DRCTL_TEST_LOCK_STALE_SECS=0` makes the marker stale at once, for the prunes and the backup.
#[test]
fn a_backup_whose_lock_marker_went_stale_does_not_commit() {
    let stale = [("DRCTL_TEST_LOCK_STALE_SECS", "0")];
    let (t, second, backup, hold) = reusing_backup_held(&stale);
    // the held backup reuses X's packs; its marker counts for nothing, so two prunes delete them
    for _ in 0..2 {
        let r = run(t.drctl().envs(stale).args(["prune"]));
        assert_eq!(r.code, 0, "{r:?}");
    }
    drop(hold);
    let b = backup.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&b.stderr);
    assert!(!b.status.success(), "a backup whose chunks may be gone committed: {err}");
    assert!(err.contains("lock marker") && err.contains("run the backup again"), "{err}");
    let manifests = t.s.fs_files().into_iter().filter(|f| f.ends_with(".manifest.json")).collect::<Vec<_>>();
    assert_eq!(manifests.len(), 1, "only the second backup is committed: {manifests:?}");
    assert!(manifests[0].contains(&second), "{manifests:?}");
    assert!(read_data(&t).iter().all(|f| f["status"] == "ok"));
}

#[test]
fn prune_in_the_window_between_a_backups_packs_and_its_index_deletes_nothing_of_it() {
    let t = Setup::new();
    t.config("", &["local"], false);
    t.keep_last_one();
    t.backup();
    write(&t.src, "big/twelve.bin", &noise(12 * 1024 * 1024, 5));
    let (backup, hold) = held_backup(&t);
    let unindexed = t.packs();
    // the running backup's packs are in no index yet: marked, then waited for, never deleted
    let gc = prune_gc(&t, &[]);
    assert!(count(&gc["packs_marked"]) > 0, "{gc}");
    let gc = prune_gc(&t, &[]);
    assert!(gc["packs_waiting"].as_u64().unwrap() > 0, "{gc}");
    assert!(unindexed.iter().all(|p| t.packs().contains(p)), "a pack of the running backup was deleted");
    finishes(backup, hold);
    let data = read_data(&t);
    assert!(data.iter().all(|f| f["status"] == "ok"), "{data:?}");
    // the backup committed: its packs are kept after all, and the first backup's big file is marked
    let gc = prune_gc(&t, &[]);
    assert!(count(&gc["packs_resurrected"]) > 0, "{gc}");
    assert!(count(&gc["packs_marked"]) > 0, "{gc}");
    assert!(read_data(&t).iter().all(|f| f["status"] == "ok"));
    // and goes at the next prune
    let before = t.packs().len();
    let gc = prune_gc(&t, &[]);
    assert!(count(&gc["packs_deleted"]) > 0, "{gc}");
    assert!(t.packs().len() < before, "{gc}");
    assert!(read_data(&t).iter().all(|f| f["status"] == "ok"));
    t.config("", &["local"], true);
    t.restores_the_tree(&[], "restored");
}

/// The race two-phase collection exists for: a backup reads the indexes while a chunk's only
/// backup is still there, the old backup is pruned and the chunk's pack marked while the new
/// backup runs, and the new backup then commits referring to that chunk. The pack must survive.
#[test]
fn a_backup_that_reuses_a_chunk_prune_is_collecting_keeps_it() {
    let (t, _, backup, hold) = reusing_backup_held(&[]);
    // meanwhile prune deletes the first backup (keep last 1: the second is the newest committed)
    // and marks the packs only it referred to, X's among them; twice: the second waits
    let gc = prune_gc(&t, &[]);
    assert!(count(&gc["packs_marked"]) > 0, "{gc}");
    let gc = prune_gc(&t, &[]);
    assert!(gc["packs_waiting"].as_u64().unwrap() > 0, "{gc}");
    assert_eq!(count(&gc["packs_deleted"]), 0, "{gc}");
    let id = finishes(backup, hold);
    // the third backup stored X's chunks only once: it referred to the marked packs
    assert!(added(&t.manifest(&id)) < 4 * 1024 * 1024, "{}", added(&t.manifest(&id)));
    let gc = prune_gc(&t, &[]);
    assert!(count(&gc["packs_resurrected"]) > 0, "{gc}");
    // whatever the next prunes do, the newest backup stays whole
    prune_gc(&t, &[]);
    prune_gc(&t, &[]);
    let data = read_data(&t);
    assert!(data.iter().all(|f| f["status"] == "ok"), "{data:?}");
    t.restores_the_tree(&[], "restored");
}

#[test]
fn prune_repacks_mostly_unused_packs_and_every_backup_still_restores() {
    let t = Setup::new();
    t.config("", &["local"], true);
    t.keep_last_one();
    // 3 MiB of one file shares packs with the files around it; replace it and prune the old backup
    write(&t.src, "big/twelve.bin", &noise(3 * 1024 * 1024, 1));
    write(&t.src, "bz/keep.bin", &noise(1024 * 1024, 2));
    t.backup();
    write(&t.src, "big/twelve.bin", &noise(3 * 1024 * 1024, 3));
    t.backup();
    let gc = prune_gc(&t, &[]);
    assert!(count(&gc["packs_repacked"]) > 0, "{gc}");
    // the live blobs were copied; the old packs are marked, and go at the next prune
    assert!(read_data(&t).iter().all(|f| f["status"] == "ok"));
    let next = prune_gc(&t, &[]);
    for p in gc["packs_repacked"].as_array().unwrap().iter().chain(gc["packs_marked"].as_array().unwrap()) {
        assert!(next["packs_deleted"].as_array().unwrap().contains(p), "{p}: {next}");
        assert!(!t.packs().iter().any(|f| f.contains(p.as_str().unwrap())), "{p} is gone");
    }
    assert!(read_data(&t).iter().all(|f| f["status"] == "ok"));
    t.restores_the_tree(&[], "restored");
    // and the next backup still finds every chunk it needs
    let (id, read) = t.backup();
    assert_eq!(read, 0);
    assert!(added(&t.manifest(&id)) < 64 * 1024);
}
