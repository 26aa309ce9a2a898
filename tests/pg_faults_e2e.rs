//! PostgreSQL jobs under faults (issue 11, items 8 and 10), against the real server: a server that
//! accepts TCP and never answers, a table held in `ACCESS EXCLUSIVE` mode during a backup and
//! during `restore --force`, and a full disk on the only target.

#[path = "common/blackhole.rs"]
mod blackhole;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blackhole::Blackhole;
use common::*;

fn job(db: &str, targets: &str, extra: &str) -> String {
    format!("[jobs.pg]\nkind = \"postgres\"\ntargets = [{targets}]\nurl = \"{}\"\n{extra}\n", pg_url(db))
}

/// Every file below `dir`, relative.
fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// A tmpfs of `size` mounted at `dir`, unmounted when dropped (needs root, as the tests run).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount tmpfs (the tests run as root): {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_on_the_only_target_is_named_not_the_sources_sigpipe() {
    let db = unique("enospc");
    psql("postgres", &format!("DROP DATABASE IF EXISTS \"{db}\""));
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    // ~10 MB of md5 text: about 5 MB after zstd, far more than the 2 MiB disk
    psql(
        &db,
        "CREATE TABLE blob AS SELECT i, md5(i::text) || md5((i * 7)::text) || md5(random()::text) AS v FROM generate_series(1, 100000) i",
    );
    let s = Scratch::new();
    let tiny_dir = s.path("tiny");
    let _tmpfs = Tmpfs::mount(&tiny_dir, "2m");
    let tiny = format!("[targets.tiny]\ntype = \"fs\"\npath = \"{}\"\nmedium = \"usb\"\n\n", tiny_dir.display());
    s.write_config(&format!("{}{tiny}{}", s.head(), job(&db, "\"tiny\"", "")));

    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 1, "{r:?}");
    let error = r.stderr.lines().find(|l| l.starts_with("drctl: ")).unwrap_or_else(|| panic!("{r:?}"));
    assert!(
        error.starts_with("drctl: job `pg`: no target accepted the backup: `tiny`:"),
        "leads with the target: {r:?}"
    );
    assert!(error.to_lowercase().contains("no space left on device"), "{r:?}");
    assert!(r.stderr.contains("ENOSPC"), "the hint names the cause: {r:?}");
    // nothing committed, nothing left behind
    assert_eq!(files_below(&tiny_dir), Vec::<String>::new());
    let list = run(s.drctl().args(["--json", "list", "pg"]));
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert!(
        v.as_array().unwrap().iter().all(|b| b["status"] == "failed" && b["targets"] == serde_json::json!([])),
        "{list:?}"
    );
    drop_db(&db);
}

/// Run `cmd` to completion, failing the test if it takes longer than `limit` (it is killed):
/// the point of these tests is that drctl never hangs.
fn run_within(cmd: &mut Command, limit: Duration) -> (Ran, Duration) {
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("drctl runs");
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?} (killed): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    let out = child.wait_with_output().unwrap();
    let ran = Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (ran, took)
}

#[test]
fn a_stalled_server_fails_run_and_check_within_the_connect_timeout() {
    let hole = Blackhole::start();
    let s = Scratch::new();
    s.write_config(&format!(
        "{}[jobs.pg]\nkind = \"postgres\"\ntargets = [\"local\"]\nurl = \"{}\"\nconnect_timeout = \"2s\"\n",
        s.head(),
        hole.postgres_url("app")
    ));

    let (r, took) = run_within(s.drctl().args(["run", "pg"]), Duration::from_secs(30));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(took < Duration::from_secs(10), "{took:?}: {r:?}");
    assert!(r.stderr.contains("job `pg`: cannot connect to") && r.stderr.contains("no answer within 2s"), "{r:?}");
    assert!(r.stderr.contains("connect_timeout"), "{r:?}");
    assert!(hole.accepted() >= 1, "the connection reached the blackhole");
    assert!(s.fs_files().is_empty(), "{:?}", s.fs_files());

    let (r, took) = run_within(s.drctl().arg("check"), Duration::from_secs(30));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(took < Duration::from_secs(10), "{took:?}: {r:?}");
    let line = r.stdout.lines().find(|l| l.contains("job pg")).unwrap_or_else(|| panic!("{r:?}"));
    assert!(line.starts_with("FAIL") && line.contains("no answer within 2s"), "{r:?}");
}

/// A session holding `LOCK TABLE table IN ACCESS EXCLUSIVE MODE` in an open transaction, until
/// dropped (what `ALTER TABLE` or `VACUUM FULL` do for their duration).
struct LockHolder(Child);

impl LockHolder {
    fn take(db: &str, table: &str) -> LockHolder {
        use std::io::Write;
        let mut child = Command::new(pg_bin().join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &pg_url(db)])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.as_mut().unwrap();
        writeln!(stdin, "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;").unwrap();
        stdin.flush().unwrap();
        // wait until the server shows the lock granted
        let q = format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE c.relname = '{table}' AND l.mode = 'AccessExclusiveLock' AND l.granted"
        );
        let started = Instant::now();
        while psql(db, &q) != "1" {
            assert!(started.elapsed() < Duration::from_secs(20), "the lock on `{table}` was never granted");
            std::thread::sleep(Duration::from_millis(50));
        }
        LockHolder(child)
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_access_exclusive_lock_fails_the_backup_after_the_lock_timeout() {
    let db = unique("locked");
    create_sample_db(&db, 100);
    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), job(&db, "\"local\"", "lock_timeout = \"2s\"")));
    let lock = LockHolder::take(&db, "users");

    let (r, took) = run_within(s.drctl().args(["-v", "run", "pg"]), Duration::from_secs(60));
    drop(lock);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(took < Duration::from_secs(20), "{took:?}: {r:?}");
    // what it waited for, then why it stopped
    assert!(r.stderr.contains("waits up to 2s for a session holding an ACCESS EXCLUSIVE lock"), "{r:?}");
    let error = r.stderr.lines().find(|l| l.starts_with("drctl: ")).unwrap_or_else(|| panic!("{r:?}"));
    assert!(error.contains(&format!("pg_dump on database `{db}` gave up after 2s (`lock_timeout`)")), "{r:?}");
    assert!(error.contains("ACCESS EXCLUSIVE") && error.contains("users"), "{r:?}");
    assert!(r.stderr.contains("hint: nothing was changed or committed; find the holder"), "{r:?}");
    assert!(!s.fs_files().iter().any(|f| f.ends_with(".manifest.json")), "{:?}", s.fs_files());

    // released: the same job backs up
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 0, "{r:?}");
    drop_db(&db);
}

#[test]
fn restore_force_into_a_locked_table_fails_after_the_lock_timeout_and_changes_nothing() {
    let db = unique("rlocked");
    create_sample_db(&db, 100);
    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), job(&db, "\"local\"", "lock_timeout = \"2s\"")));
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 0, "{r:?}");
    // the live data moves on after the backup
    psql(&db, "INSERT INTO users VALUES (100001, 'new', 'new@example.com')");
    let lock = LockHolder::take(&db, "users");

    // in place, in one transaction (`--jobs 1`); the parallel restore replaces the database by
    // rename and ends its sessions instead (tests/pg_parallel_e2e.rs)
    let (r, took) = run_within(
        s.drctl().args(["-v", "restore", "pg", "--latest", "--force", "--jobs", "1"]),
        Duration::from_secs(60),
    );
    drop(lock);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(took < Duration::from_secs(20), "{took:?}: {r:?}");
    assert!(r.stderr.contains("waits up to 2s for locks other sessions hold"), "{r:?}");
    assert!(r.stderr.contains("pg_restore waits for a lock on `users`"), "says what it waits for: {r:?}");
    assert!(r.stderr.contains("pg_restore waited 2s for a lock on `users`"), "{r:?}");
    let error = r.stderr.lines().find(|l| l.starts_with("drctl: ")).unwrap_or_else(|| panic!("{r:?}"));
    assert!(error.contains("`lock_timeout` ran out") && error.contains("nothing was changed"), "{r:?}");
    // nothing half-restored: the live rows are all there, the orders untouched
    assert_eq!(count(&db, "users"), 101);
    assert_eq!(count(&db, "orders"), 300);
    drop_db(&db);
}

#[test]
fn a_drill_into_a_stalled_scratch_server_fails_within_the_connect_timeout() {
    let db = unique("drillhole");
    create_sample_db(&db, 50);
    let hole = Blackhole::start();
    let s = Scratch::new();
    let extra = format!("connect_timeout = \"2s\"\nverify = {{ scratch_url = \"{}\" }}", hole.postgres_url("postgres"));
    s.write_config(&format!("{}{}", s.head(), job(&db, "\"local\"", &extra)));
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 0, "{r:?}");

    let (r, took) = run_within(s.drctl().args(["verify", "pg"]), Duration::from_secs(30));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(took < Duration::from_secs(10), "{took:?}: {r:?}");
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("scratch server") && all.contains("no answer within 2s"), "{r:?}");
    drop_db(&db);
}
