//! Point-in-time recovery end to end against a real PostgreSQL 15 cluster of the test's own:
//! `drctl wal stream` archives WAL while rows arrive in batches, `drctl run` takes a base
//! backup, `drctl restore --to-time/--latest --to-dir` lays out data directories that a real
//! server recovers through `drctl wal fetch`; a killed receiver leaves no gap, a deleted segment
//! stops recovery with its name. The stored objects open with the `age` and `zstd` CLIs into what
//! `pg_verifybackup` and `pg_waldump` accept.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, as_postgres, give_to_postgres};
use common::{Scratch, pg_bin, run};

const MAX_DELAY_SECS: u64 = 2;

struct Pitr {
    s: Scratch,
    src: Cluster,
    receiver: Option<Child>,
    /// The receiver is `drctl daemon` (its API on this port) instead of `drctl wal stream`.
    daemon: Option<u16>,
}

impl Pitr {
    fn new() -> Pitr {
        Pitr::with(None)
    }

    fn with(daemon: Option<u16>) -> Pitr {
        Pitr::build(daemon, false)
    }

    /// The job with `storage = "chunked"` (its base backups; WAL is stored as always).
    fn chunked() -> Pitr {
        Pitr::build(None, true)
    }

    fn build(daemon: Option<u16>, chunked: bool) -> Pitr {
        let s = Scratch::new();
        // the restored servers run `drctl wal fetch` as postgres: it reads this directory
        let src = Cluster::init(&s.path("src"));
        // what the docs ask for: a role with REPLICATION, not a superuser
        src.psql("postgres", "CREATE ROLE replicator LOGIN REPLICATION");
        let (head, storage) =
            if chunked { (s.with_chunk_key(&s.head()), "storage = \"chunked\"\n") } else { (s.head(), "") };
        s.write_config(
            &(format!(
                "{}[jobs.db]\nkind = \"postgres\"\nmethod = \"physical\"\nurl = \"{}\"\ntargets = [\"local\"]\n\
             wal = {{ max_delay = \"{MAX_DELAY_SECS}s\" }}\nverify = {{ checks = [\"SELECT count(*) > 0 FROM t\"] }}\n{storage}",
                head,
                src.url("postgres").replace("postgres@", "replicator@")
            ) + &daemon.map(|port| format!("[api]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap_or_default()),
        );
        std::fs::create_dir_all(s.path("backups")).unwrap();
        give_to_postgres(s.dir.path());
        let mut p = Pitr { s, src, receiver: None, daemon };
        p.start_receiver();
        p
    }

    fn start_receiver(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.s.path("receiver.log")).unwrap();
        let child = self
            .s
            .drctl()
            .args(if self.daemon.is_some() { &["daemon"][..] } else { &["wal", "stream", "db"][..] })
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("drctl wal stream starts");
        self.receiver = Some(child);
    }

    fn kill_receiver(&mut self) {
        if let Some(mut c) = self.receiver.take() {
            c.kill().unwrap(); // SIGKILL: no goodbye, no last partial
            c.wait().unwrap();
        }
    }

    fn receiver_log(&self) -> String {
        std::fs::read_to_string(self.s.path("receiver.log")).unwrap_or_default()
    }

    fn wal_dir(&self) -> PathBuf {
        self.s.path("backups/db/wal/00000001")
    }

    /// Wait until the archive holds WAL up to the source's current insert position; returns
    /// how long that took.
    fn wait_archived(&self) -> Duration {
        wait_archived_in(&self.s, &self.src, &|| self.receiver_log())
    }

    fn base_backup(&self) {
        let r = run(self.s.drctl().args(["run", "db"]));
        assert_eq!(r.code, 0, "{r:?}\nreceiver:\n{}", self.receiver_log());
    }

    fn insert_batch(&self, batch: u32) {
        self.src.psql("postgres", &format!("INSERT INTO t SELECT {batch}, i FROM generate_series(1, 100) i"));
    }

    /// Restore into a new directory and start a server on it.
    fn restore_and_start(&self, name: &str, args: &[&str]) -> Result<Cluster, String> {
        let dir = self.s.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        give_to_postgres(&dir);
        let data = dir.join("data");
        let r = run(self.s.drctl().args(["restore", "db", "--to-dir"]).arg(&data).args(args));
        assert_eq!(r.code, 0, "{r:?}");
        Cluster::try_start_on(&dir, &data)
    }
}

/// Wait until the archive of job `db` in `s` holds WAL up to `src`'s current insert position (on
/// its current timeline); returns how long that took. `log` explains a timeout.
fn wait_archived_in(s: &Scratch, src: &Cluster, log: &dyn Fn() -> String) -> Duration {
    let lsn = src.psql("postgres", "SELECT pg_current_wal_insert_lsn()");
    let seg = src.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_insert_lsn())");
    let dir = s.path(&format!("backups/db/wal/{}", &seg[..8]));
    let (_, lo) = lsn.split_once('/').unwrap();
    let offset = u64::from_str_radix(lo, 16).unwrap() % (16 << 20);
    let began = Instant::now();
    let deadline = began + Duration::from_secs(MAX_DELAY_SECS * 10 + 20);
    loop {
        let names: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let covered = names.iter().any(|n| {
            n == &format!("{seg}.zst.age")
                || n.strip_prefix(&format!("{seg}."))
                    .and_then(|r| r.strip_suffix(".partial.zst.age"))
                    .and_then(|o| u64::from_str_radix(o, 16).ok())
                    .is_some_and(|o| o >= offset)
        });
        if covered {
            return began.elapsed();
        }
        assert!(Instant::now() < deadline, "WAL up to {lsn} ({seg}) not archived; have {names:?}\n{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Pitr {
    fn drop(&mut self) {
        self.kill_receiver();
    }
}

fn wait_for(what: &str, c: &Cluster, sql: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = c.psql("postgres", sql);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: `{sql}` gave {got}, want {want}\n{}", c.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn batches(c: &Cluster) -> String {
    c.psql("postgres", "SELECT coalesce(string_agg(batch || ':' || n, ',' ORDER BY batch), '') FROM (SELECT batch, count(*) n FROM t GROUP BY batch) b")
}

#[test]
fn recovers_to_a_time_between_batches_and_to_the_latest_within_max_delay() {
    let p = Pitr::new();
    p.src.psql("postgres", "CREATE TABLE t (batch int, i int, PRIMARY KEY (batch, i))");
    p.base_backup();
    p.insert_batch(1);
    let between = p
        .src
        .psql("postgres", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')");
    p.insert_batch(2);
    // no pg_switch_wal(): batch 2 sits in a segment that is not full; the partial carries it
    let took = p.wait_archived();
    assert!(took <= Duration::from_secs(MAX_DELAY_SECS + 3), "archived after {took:?}, max_delay is {MAX_DELAY_SECS}s");

    let mut at = p.restore_and_start("at", &["--to-time", &between]).unwrap_or_else(|log| panic!("{log}"));
    wait_for("paused at the target", &at, "SELECT pg_get_wal_replay_pause_state()", "paused");
    assert_eq!(batches(&at), "1:100", "exactly the rows committed before {between}");
    at.stop();

    let mut latest = p.restore_and_start("latest", &["--latest"]).unwrap_or_else(|log| panic!("{log}"));
    wait_for("promoted after replaying everything", &latest, "SELECT pg_is_in_recovery()", "f");
    assert_eq!(batches(&latest), "1:100,2:100");
    latest.stop();

    // the drill replays everything archived into a scratch server, runs the checks, says how far
    let r = run(p.s.drctl().args(["verify", "db"]));
    assert_eq!(r.code, 0, "{r:?}");
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(out.contains("recovery point") && out.contains("replayed WAL to"), "{out}");

    // a non-empty directory is refused without --force
    let r = run(p.s.drctl().args(["restore", "db", "--latest", "--to-dir"]).arg(p.s.path("latest/data")));
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("--force") || r.stderr.contains("not empty"), "{r:?}");
}

/// `storage = "chunked"` on a physical job: the base backup (pg_basebackup's tar stream) is stored
/// as chunks, WAL as always; `--latest` recovers every row, the drill passes, and a second base
/// backup of a barely changed cluster stores less than half of the first (measured: 0.7-1.2 MB
/// after 4.1 MB, for a 200 000-row table; the chunk key, so the cut points, differ every run).
#[test]
fn a_chunked_base_backup_recovers_and_a_second_one_stores_little() {
    let p = Pitr::chunked();
    p.src.psql("postgres", "CREATE TABLE t (batch int, i int, PRIMARY KEY (batch, i))");
    p.src.psql("postgres", "INSERT INTO t SELECT 0, i FROM generate_series(1, 200000) i");
    // hint bits and the visibility map set now, not by the first reads after the backup
    p.src.psql("postgres", "VACUUM FREEZE t");
    p.src.psql("postgres", "CHECKPOINT");
    p.base_backup();
    p.insert_batch(1);
    p.src.psql("postgres", "CHECKPOINT");
    p.base_backup();
    p.insert_batch(2);
    p.wait_archived();

    let mut manifests: Vec<serde_json::Value> =
        p.s.fs_files()
            .into_iter()
            .filter(|f| f.starts_with("db/") && f.ends_with(".manifest.json"))
            .map(|f| serde_json::from_slice(&std::fs::read(p.s.path("backups").join(f)).unwrap()).unwrap())
            .collect();
    // oldest first (both may carry the same second in their ids)
    manifests.sort_by_key(|m| m["started_at"].as_str().unwrap_or_default().parse::<jiff::Timestamp>().unwrap());
    assert_eq!(manifests.len(), 2, "two base backups");
    assert!(manifests.iter().all(|m| m["artifacts"][0]["chunked"].is_object()), "{manifests:?}");
    let (first, second) = (common::added(&manifests[0]), common::added(&manifests[1]));
    eprintln!("base backups added {first} and {second} bytes");
    assert!(second * 2 < first, "the second base backup added {second} bytes, the first {first}");

    let mut latest = p.restore_and_start("latest", &["--latest"]).unwrap_or_else(|log| panic!("{log}"));
    wait_for("promoted after replaying everything", &latest, "SELECT pg_is_in_recovery()", "f");
    assert_eq!(batches(&latest), "0:200000,1:100,2:100");
    latest.stop();
    let r = run(p.s.drctl().args(["verify", "db"]));
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn a_killed_receiver_resumes_without_gap_or_duplicate() {
    let mut p = Pitr::new();
    p.src.psql("postgres", "CREATE TABLE t (batch int, i int, PRIMARY KEY (batch, i))");
    p.base_backup();
    p.insert_batch(1);
    p.wait_archived();
    p.insert_batch(2);
    p.kill_receiver(); // mid-segment, batch 2 possibly unshipped
    p.insert_batch(3);
    p.src.psql("postgres", "SELECT pg_switch_wal()");
    p.insert_batch(4);
    p.start_receiver();
    p.wait_archived();
    let names: Vec<String> = std::fs::read_dir(p.wal_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut complete: Vec<u64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".zst.age").filter(|s| s.len() == 24))
        .map(|s| u64::from_str_radix(&s[16..], 16).unwrap())
        .collect();
    complete.sort();
    assert!(complete.windows(2).all(|w| w[1] == w[0] + 1), "segments contiguous: {names:?}");
    let mut latest = p.restore_and_start("latest", &["--latest"]).unwrap_or_else(|log| panic!("{log}"));
    wait_for("promoted", &latest, "SELECT pg_is_in_recovery()", "f");
    assert_eq!(batches(&latest), "1:100,2:100,3:100,4:100", "every row once (the primary key forbids duplicates)");
    latest.stop();
}

#[test]
fn a_deleted_segment_stops_recovery_naming_it() {
    let p = Pitr::new();
    p.src.psql("postgres", "CREATE TABLE t (batch int, i int, PRIMARY KEY (batch, i))");
    p.base_backup();
    let mut segments = Vec::new();
    for b in 1..=3 {
        p.insert_batch(b);
        segments.push(p.src.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_insert_lsn())"));
        p.src.psql("postgres", "SELECT pg_switch_wal()");
    }
    p.insert_batch(4);
    p.wait_archived();
    let victim = &segments[1];
    std::fs::remove_file(p.wal_dir().join(format!("{victim}.zst.age"))).unwrap();
    // check sees it: the target is not a good copy for recovery past the hole
    let r = run(p.s.drctl().arg("check"));
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(out.contains(&format!("misses WAL segment(s) {victim}")), "{out}");
    // and its copy no longer counts in 3-2-1: the live data alone
    assert!(out.contains("3-2-1 db: copies 1"), "{out}");
    let started = p.restore_and_start("holed", &["--latest"]);
    // the server must not promote with batch 1 only: recovery stops, naming the segment
    let log = match started {
        Err(log) => log,
        Ok(c) => {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && !c.log().contains(victim.as_str()) {
                std::thread::sleep(Duration::from_millis(100));
            }
            c.log()
        }
    };
    assert!(log.contains(&format!("WAL segment {victim} is missing")), "{log}");
    assert!(log.contains("GAP"), "{log}");
    // and the drill fails, naming it
    let r = run(p.s.drctl().args(["verify", "db"]));
    assert_eq!(r.code, 1, "{r:?}");
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(out.contains(victim.as_str()), "the drill names the missing segment: {out}");
}

fn age_zstd(s: &Scratch, stored: &Path, out: &Path) {
    let sh = format!(
        "age -d -i '{}' < '{}' | zstd -d -q > '{}'",
        s.path("age.key").display(),
        stored.display(),
        out.display()
    );
    let st = Command::new("sh").arg("-c").arg(&sh).status().unwrap();
    assert!(st.success(), "{sh}");
}

#[test]
fn stored_objects_open_with_the_reference_tools() {
    let p = Pitr::new();
    p.src.psql("postgres", "CREATE TABLE t (batch int, i int, PRIMARY KEY (batch, i))");
    p.base_backup();
    p.insert_batch(1);
    let seg = p.src.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_insert_lsn())");
    p.src.psql("postgres", "SELECT pg_switch_wal()");
    p.insert_batch(2);
    p.wait_archived();

    let base = p.s.fs_files().into_iter().find(|f| f.ends_with(".base.tar.zst.age")).expect("a stored base backup");
    let out = p.s.path("interop");
    std::fs::create_dir_all(out.join("data")).unwrap();
    age_zstd(&p.s, &p.s.path("backups").join(&base), &out.join("base.tar"));
    let st = Command::new("tar").arg("-xf").arg(out.join("base.tar")).arg("-C").arg(out.join("data")).status().unwrap();
    assert!(st.success());
    assert!(out.join("data/backup_manifest").is_file(), "the manifest is in the tar");
    give_to_postgres(&out);
    let v = as_postgres(&pg_bin().join("pg_verifybackup")).arg("-n").arg(out.join("data")).output().unwrap();
    assert!(
        v.status.success(),
        "pg_verifybackup: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );

    let wal = out.join("wal");
    std::fs::create_dir_all(&wal).unwrap();
    age_zstd(&p.s, &p.wal_dir().join(format!("{seg}.zst.age")), &wal.join(&seg));
    assert_eq!(std::fs::metadata(wal.join(&seg)).unwrap().len(), 16 << 20, "a whole 16 MiB segment");
    let dump = Command::new(pg_bin().join("pg_waldump")).arg("--path").arg(&wal).arg(&seg).output().unwrap();
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains("rmgr: Heap") && text.contains("INSERT"), "pg_waldump reads the inserts:\n{text}");
}

#[test]
fn the_daemon_runs_the_receiver_and_ships_the_last_partial_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut p = Pitr::with(Some(port));
    p.src.psql("postgres", "CREATE TABLE t (batch int, i int, PRIMARY KEY (batch, i))");
    p.base_backup();
    p.insert_batch(1);
    p.wait_archived();
    assert!(p.receiver_log().contains("starting the WAL receiver"), "{}", p.receiver_log());
    // the receiver's gauges on the daemon's /metrics (reported every 10 s)
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let text = http_get(port, "/metrics");
        if text.contains("drctl_wal_last_archived_timestamp_seconds{drctl_job=\"db\"}") {
            break text;
        }
        assert!(Instant::now() < deadline, "no WAL gauges on /metrics:\n{text}\n{}", p.receiver_log());
        std::thread::sleep(Duration::from_millis(200));
    };
    for name in ["drctl_wal_archive_delay_bytes", "drctl_wal_max_delay_seconds", "drctl_wal_slot_retained_bytes"] {
        assert!(metrics.contains(&format!("{name}{{drctl_job=\"db\"}}")), "{name}:\n{metrics}");
    }
    assert!(metrics.contains("drctl_wal_max_delay_seconds{drctl_job=\"db\"} 2"), "{metrics}");
    // the status page shows the recoverable window: the base backup's end .. what the receiver archived
    let page = http_get(port, "/");
    assert!(page.contains("recoverable 20") && !page.contains("receiver elsewhere"), "{page}");
    let jobs = http_get(port, "/api/v1/jobs");
    assert!(jobs.contains("\"recoverable\":{\"from\":\"20"), "{jobs}");
    // SIGTERM: the daemon stops its receiver, which ships what it holds before exiting
    p.insert_batch(2);
    let mut child = p.receiver.take().unwrap();
    let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "daemon exit: {status:?}\n{}", p.receiver_log());
    p.wait_archived();
    let mut latest = p.restore_and_start("latest", &["--latest"]).unwrap_or_else(|log| panic!("{log}"));
    wait_for("promoted", &latest, "SELECT pg_is_in_recovery()", "f");
    assert_eq!(batches(&latest), "1:100,2:100");
    latest.stop();
}

#[test]
fn prune_deletes_wal_no_kept_base_backup_needs_and_the_rest_still_restores() {
    let p = Pitr::new();
    p.src.psql("postgres", "CREATE TABLE t (batch int, i int, PRIMARY KEY (batch, i))");
    p.base_backup();
    for b in 1..=2 {
        p.insert_batch(b);
        p.src.psql("postgres", "SELECT pg_switch_wal()");
    }
    let before_second = p.src.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_insert_lsn())");
    p.base_backup();
    p.insert_batch(3);
    p.wait_archived();
    // keep one base backup, and no window of WAL beyond it
    let config = std::fs::read_to_string(p.s.config_path()).unwrap();
    let config = config.replace("medium = \"disk\"\n", "medium = \"disk\"\nkeep = { last = 1 }\n").replace(
        &format!("max_delay = \"{MAX_DELAY_SECS}s\""),
        &format!("max_delay = \"{MAX_DELAY_SECS}s\", keep = \"0s\""),
    );
    p.s.write_config(&config);
    let segments = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p.wal_dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".zst.age"))
            .map(|n| n[..24].to_string())
            .collect();
        v.sort();
        v
    };
    assert!(segments().iter().any(|s| s < &before_second), "older WAL is there before the prune");

    let dry = run(p.s.drctl().args(["prune", "db", "--dry-run"]));
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("WAL object(s) past `wal.keep`"), "{dry:?}");
    assert!(segments().iter().any(|s| s < &before_second), "a dry run deletes nothing");

    let r = run(p.s.drctl().args(["prune", "db"]));
    assert_eq!(r.code, 0, "{r:?}");
    let left = segments();
    assert!(left.iter().all(|s| s >= &before_second), "only WAL from the kept base backup on: {left:?}");
    assert!(!left.is_empty());

    let mut latest = p.restore_and_start("latest", &["--latest"]).unwrap_or_else(|log| panic!("{log}"));
    wait_for("promoted", &latest, "SELECT pg_is_in_recovery()", "f");
    assert_eq!(batches(&latest), "1:100,2:100,3:100");
    latest.stop();
}

/// GET `path` on 127.0.0.1:`port`; the body ("" when nothing answers yet).
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

#[test]
fn check_warns_about_an_unbounded_slot_and_a_receiver_that_is_not_running() {
    let mut p = Pitr::new();
    p.src.psql("postgres", "CREATE TABLE t (batch int, i int, PRIMARY KEY (batch, i))");
    p.base_backup(); // the receiver is streaming: the slot exists and is active
    let r = run(p.s.drctl().arg("check"));
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(out.contains("max_slot_wal_keep_size` is unlimited"), "{out}");
    assert!(!out.contains("no WAL receiver is streaming"), "{out}");
    p.kill_receiver();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = run(p.s.drctl().arg("check"));
        let out = format!("{}{}", r.stdout, r.stderr);
        if out.contains("no WAL receiver is streaming from slot `drctl_db`") {
            assert!(out.contains("drctl wal stream db"), "the hint says what to run: {out}");
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The receiver streams from a standby; the standby is promoted (the old primary is gone): the
/// receiver follows the new timeline (its history file archived, its segments under `00000002/`),
/// and a restore of the base backup taken on timeline 1 replays across the switch.
#[test]
fn the_receiver_follows_a_promotion_to_a_new_timeline() {
    let s = Scratch::new();
    let mut primary = Cluster::init(&s.path("primary"));
    primary.psql("postgres", "CREATE ROLE replicator LOGIN REPLICATION");
    primary.psql("postgres", "CREATE TABLE t (batch int, i int, PRIMARY KEY (batch, i))");
    let standby_dir = s.path("standby");
    std::fs::create_dir_all(&standby_dir).unwrap();
    give_to_postgres(&standby_dir);
    let out = as_postgres(&pg_bin().join("pg_basebackup"))
        .arg("-D")
        .arg(standby_dir.join("data"))
        .args(["-R", "-X", "stream", "-h", "127.0.0.1", "-p", &primary.port.to_string(), "-U", "postgres"])
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_basebackup -R: {}", String::from_utf8_lossy(&out.stderr));
    let standby = Cluster::start_on(&standby_dir, &standby_dir.join("data"));
    s.write_config(&format!(
        "{}[jobs.db]\nkind = \"postgres\"\nmethod = \"physical\"\nurl = \"{}\"\ntargets = [\"local\"]\n\
         wal = {{ max_delay = \"{MAX_DELAY_SECS}s\" }}\n",
        s.head(),
        standby.url("postgres").replace("postgres@", "replicator@")
    ));
    std::fs::create_dir_all(s.path("backups")).unwrap();
    give_to_postgres(s.dir.path());
    let log = s.path("receiver.log");
    let _receiver = KillOnDrop(
        s.drctl().args(["wal", "stream", "db"]).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap(),
    );
    let receiver_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let replayed = |n: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while standby.psql("postgres", "SELECT count(*) FROM t") != n {
            assert!(Instant::now() < deadline, "the standby did not replay to {n} rows");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    primary.psql("postgres", "INSERT INTO t SELECT 1, i FROM generate_series(1, 100) i");
    replayed("100");
    let r = run(s.drctl().args(["run", "db"]));
    assert_eq!(r.code, 0, "a base backup of the standby: {r:?}\n{}", receiver_log());
    primary.psql("postgres", "INSERT INTO t SELECT 2, i FROM generate_series(1, 100) i");
    replayed("200");

    // failover: the primary is gone, the standby takes over on timeline 2
    primary.stop();
    standby.psql("postgres", "SELECT pg_promote()");
    let deadline = Instant::now() + Duration::from_secs(60);
    while standby.psql("postgres", "SELECT pg_is_in_recovery()") != "f" {
        assert!(Instant::now() < deadline, "no promotion");
        std::thread::sleep(Duration::from_millis(100));
    }
    standby.psql("postgres", "INSERT INTO t SELECT 3, i FROM generate_series(1, 100) i");
    wait_archived_in(&s, &standby, &receiver_log);
    assert!(s.path("backups/db/wal/00000002.history.zst.age").is_file(), "{:?}\n{}", s.fs_files(), receiver_log());
    assert!(receiver_log().contains("following timeline 2"), "the stream told the switch:\n{}", receiver_log());

    let dir = s.path("restored");
    std::fs::create_dir_all(&dir).unwrap();
    give_to_postgres(&dir);
    let r = run(s.drctl().args(["restore", "db", "--latest", "--to-dir"]).arg(dir.join("data")));
    assert_eq!(r.code, 0, "{r:?}");
    let mut restored = Cluster::try_start_on(&dir, &dir.join("data")).unwrap_or_else(|l| panic!("{l}"));
    wait_for("promoted", &restored, "SELECT pg_is_in_recovery()", "f");
    assert_eq!(batches(&restored), "1:100,2:100,3:100", "across the timeline switch");
    restored.stop();
}

/// A child process killed (and reaped) when the test ends, passed or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two receivers for one job (two daemon replicas): the slot admits one, the other stands by
/// quietly and takes over when the first goes away, without a gap.
#[test]
fn a_second_receiver_stands_by_and_takes_over() {
    let mut p = Pitr::new();
    p.src.psql("postgres", "CREATE TABLE t (batch int, i int, PRIMARY KEY (batch, i))");
    p.base_backup(); // the first receiver streams
    let log2 = p.s.path("receiver2.log");
    let _second = KillOnDrop(
        p.s.drctl().args(["wal", "stream", "db"]).stderr(std::fs::File::create(&log2).unwrap()).spawn().unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log2).unwrap_or_default().contains("standing by") {
        assert!(Instant::now() < deadline, "{}", std::fs::read_to_string(&log2).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(100));
    }
    p.insert_batch(1);
    p.wait_archived();
    p.kill_receiver();
    p.insert_batch(2);
    p.src.psql("postgres", "SELECT pg_switch_wal()");
    p.insert_batch(3);
    // the second one takes over: everything reaches the archive
    wait_archived_in(&p.s, &p.src, &|| std::fs::read_to_string(&log2).unwrap_or_default());
    let text = std::fs::read_to_string(&log2).unwrap_or_default();
    assert_eq!(text.matches("standing by").count(), 1, "said once, not at every retry:\n{text}");
    assert!(!text.contains("WAL receiver: "), "standing by is no reconnect warning:\n{text}");
    assert!(text.contains("WAL receiver streaming"), "it took over:\n{text}");
    let mut latest = p.restore_and_start("latest", &["--latest"]).unwrap_or_else(|log| panic!("{log}"));
    wait_for("promoted", &latest, "SELECT pg_is_in_recovery()", "f");
    assert_eq!(batches(&latest), "1:100,2:100,3:100");
    latest.stop();
}
