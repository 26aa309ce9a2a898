//! End to end: `drctl verify` restore drills against real servers — PostgreSQL (an ephemeral
//! initdb'd cluster, and a scratch URL on the test server), redis-server, OpenBao, volumes, and the
//! GitLab stand-ins — plus damaged backups (a flipped byte, a truncated object, the wrong age
//! identity, a missing manifest) that must fail with a clear message, a failed-drill record on
//! the target and `drctl_verify_last_status 0` on the Pushgateway.

mod common;
#[path = "common/openbao.rs"]
mod openbao;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

// ---------------------------------------------------------------- helpers

fn pushgateway() -> String {
    endpoint("DRCTL_TEST_PUSHGATEWAY_URL")
}

fn http(method: &str, path: &str) -> (u16, String) {
    let url = url::Url::parse(&pushgateway()).unwrap();
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port_or_known_default().unwrap());
    let mut s = std::net::TcpStream::connect(&addr).expect("the Pushgateway is reachable");
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), body.to_string())
}

/// The value of `name{drctl_job="job"}` on the Pushgateway.
fn pushed(job: &str, name: &str) -> Option<f64> {
    let (status, body) = http("GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    let want = format!("drctl_job=\"{job}\"");
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&want) && l.contains("job=\"drctl\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .next()
}

/// Deletes the job's Pushgateway group when the test ends.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = http("DELETE", &format!("/metrics/job/drctl/drctl_job/{}", self.0));
    }
}

fn head(s: &Scratch) -> String {
    format!("{}[pushgateway]\nurl = \"{}\"\n\n", s.head(), pushgateway())
}

fn backup(s: &Scratch, job: &str) -> String {
    let r = run(s.drctl().args(["run", job]));
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout.trim().to_string()
}

/// `drctl --json verify JOB`: (exit code, the job's drill record, the run).
fn verify(s: &Scratch, job: &str) -> (i32, Value, Ran) {
    let r = run(s.drctl().args(["--json", "verify", job]));
    let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"));
    (r.code, v[0].clone(), r)
}

fn errors(rec: &Value) -> Vec<String> {
    rec["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| format!("{}: {}", f["subject"].as_str().unwrap(), f["message"].as_str().unwrap()))
        .collect()
}

fn assert_passed(code: i32, rec: &Value, r: &Ran) {
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(rec["status"], "ok", "{rec:#}");
    assert!(errors(rec).is_empty(), "{rec:#}");
    assert!(rec["restore_seconds"].as_f64().unwrap() > 0.0, "{rec:#}");
    assert!(rec["restored_bytes"].as_u64().unwrap() > 0, "{rec:#}");
}

/// The drill record beside the backup on the fs target.
fn record_on_target(s: &Scratch, id: &str) -> Value {
    let f = s.fs_files().into_iter().find(|f| f.ends_with(&format!("{id}.verify.json"))).expect("a drill record");
    serde_json::from_slice(&std::fs::read(s.path("backups").join(f)).unwrap()).unwrap()
}

/// The one artifact of `id` whose name contains `part`, as a path on the fs target.
fn artifact_path(s: &Scratch, id: &str, part: &str) -> PathBuf {
    let f = s
        .fs_files()
        .into_iter()
        .find(|f| f.contains(id) && f.ends_with(".zst.age") && f.contains(part))
        .expect("the artifact");
    s.path("backups").join(f)
}

fn volume_lab(job: &str) -> (Scratch, PathBuf) {
    let s = Scratch::new();
    let src = s.path("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("a.txt"), "hello drills\n").unwrap();
    std::fs::write(src.join("sub/b.bin"), vec![7u8; 300_000]).unwrap();
    std::fs::write(src.join("sub/deeper/c"), "c").unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    s.write_config(&format!(
        "{}[jobs.{job}]\nkind = \"volume\"\ntargets = [\"local\"]\npath = \"{}\"\n",
        head(&s),
        src.display()
    ));
    (s, src)
}

fn tree_digest(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
                out.insert(rel, b"dir".to_vec());
            } else if ft.is_symlink() {
                out.insert(rel, std::fs::read_link(e.path()).unwrap().display().to_string().into_bytes());
            } else {
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

// ---------------------------------------------------------------- postgres

fn pg_lab(db: &str, job: &str, verify: &str) -> Scratch {
    create_sample_db(db, 200);
    let s = Scratch::new();
    s.write_config(&format!(
        "{}[jobs.{job}]\nkind = \"postgres\"\ntargets = [\"local\"]\nurl = \"{}\"\nbin_dir = \"{}\"\n{verify}\n",
        head(&s),
        pg_url(db),
        pg_bin().display()
    ));
    s
}

fn pg_state(db: &str) -> String {
    psql(db, "SELECT count(*) || ':' || md5(string_agg(id || name || email, ',' ORDER BY id)) FROM users")
        + &psql(db, "SELECT ':' || count(*) || ':' || sum(amount) FROM orders")
}

#[test]
fn postgres_drill_into_an_ephemeral_cluster_passes_and_leaves_the_source_unchanged() {
    let (db, job) = (unique("vpg"), unique("pgv"));
    let _c = Cleanup(job.clone());
    let s = pg_lab(&db, &job, "verify = { checks = [\"SELECT count(*) = 200 FROM users\", \"SELECT true\"] }");
    let id = backup(&s, &job);
    let before = pg_state(&db);

    let (code, rec, r) = verify(&s, &job);
    assert_passed(code, &rec, &r);
    assert_eq!(rec["backup_id"], id.as_str());
    let all = serde_json::to_string(&rec["findings"]).unwrap();
    assert!(all.contains("2 tables, 800 rows: as the manifest says"), "{rec:#}");
    assert!(all.contains("SELECT count(*) = 200 FROM users"), "{rec:#}");
    // restored into the ephemeral cluster, not the source server
    let dest = rec["destinations"][0].as_str().unwrap();
    assert!(dest.contains("127.0.0.1") && !dest.contains(&pg_url(&db)), "{dest}");
    assert_eq!(pg_state(&db), before, "the drill touched the source");
    eprintln!("measured restore time (postgres, ephemeral): {:.3}s", rec["restore_seconds"].as_f64().unwrap());

    // recorded beside the backup, and pushed
    let on_target = record_on_target(&s, &id);
    assert_eq!(on_target["status"], "ok");
    assert_eq!(on_target["format"], "drctl-drill");
    assert_eq!(pushed(&job, "drctl_verify_last_status"), Some(1.0));
    let pushed_duration = pushed(&job, "drctl_verify_duration_seconds").unwrap();
    assert!((pushed_duration - rec["restore_seconds"].as_f64().unwrap()).abs() < 1e-6);
    assert!(pushed(&job, "drctl_verify_last_success_timestamp_seconds").unwrap() > 1.7e9);

    // human output: one line per job on stdout
    let r = run(s.drctl().args(["verify", &job]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), format!("{job} {id} ok"));
    drop_db(&db);
}

#[test]
fn postgres_drill_reports_a_row_count_mismatch_and_a_false_check_via_a_scratch_url() {
    let (db, job) = (unique("vpgm"), unique("pgm"));
    let _c = Cleanup(job.clone());
    let verify_cfg = format!(
        "verify = {{ scratch_url = \"{}\", checks = [\"SELECT count(*) = 999 FROM users\"] }}",
        pg_url("postgres")
    );
    let s = pg_lab(&db, &job, &verify_cfg);
    let id = backup(&s, &job);
    let before = pg_state(&db);

    // a manifest whose facts disagree with the data: users had one more row
    let mf = s.fs_files().into_iter().find(|f| f.ends_with(".manifest.json")).unwrap();
    let path = s.path("backups").join(&mf);
    let mut m: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let tables = m["facts"]["databases"][0]["tables"].as_array_mut().unwrap();
    let users = tables.iter_mut().find(|t| t["name"] == "users").unwrap();
    users["rows"] = serde_json::json!(201);
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let r = run(s.drctl().args(["catalog", "rebuild"]));
    assert_eq!(r.code, 0, "{r:?}");

    let (code, rec, r) = verify(&s, &job);
    assert_eq!(code, 1, "{r:?}");
    assert_eq!(rec["status"], "failed");
    let errs = errors(&rec);
    assert!(
        errs.iter().any(|e| e.contains("public.users") && e.contains("200 rows restored, the manifest says 201")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("SELECT count(*) = 999 FROM users") && e.contains("returned false")),
        "{errs:?}"
    );
    assert_eq!(errs.len(), 2, "orders matched: {errs:?}");
    // the throwaway database is gone, the source unchanged
    let dest = rec["destinations"][0].as_str().unwrap().to_string();
    let name = dest.rsplit('/').next().unwrap();
    assert!(name.starts_with("drctl_verify_"), "{dest}");
    assert_eq!(psql("postgres", &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'")), "0");
    assert_eq!(pg_state(&db), before);
    assert_eq!(record_on_target(&s, &id)["status"], "failed");
    assert_eq!(pushed(&job, "drctl_verify_last_status"), Some(0.0));
    drop_db(&db);
}

// ---------------------------------------------------------------- redis

struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn start_redis() -> Redis {
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--daemonize", "no", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--repl-diskless-sync-delay", "0", "--logfile", ""])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let mut r = Redis { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = r.child.try_wait() {
                break;
            }
            if redis_cli(port, &["PING"]) == "PONG" {
                return r;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = r.child.kill();
    }
    panic!("redis-server did not start");
}

#[test]
fn redis_drill_loads_the_rdb_into_a_throwaway_server_and_compares_keys() {
    let job = unique("rdv");
    let _c = Cleanup(job.clone());
    let src = start_redis();
    for i in 0..500 {
        redis_cli(src.port, &["SET", &format!("k{i}"), &format!("v{i}")]);
    }
    redis_cli(src.port, &["-n", "3", "RPUSH", "list", "a", "b", "c"]);
    redis_cli(src.port, &["-n", "3", "SET", "t", "x", "EX", "3600"]);
    let s = Scratch::new();
    s.write_config(&format!(
        "{}[jobs.{job}]\nkind = \"redis\"\ntargets = [\"local\"]\nurl = \"redis://127.0.0.1:{}\"\n",
        head(&s),
        src.port
    ));
    let id = backup(&s, &job);
    let (code, rec, r) = verify(&s, &job);
    assert_passed(code, &rec, &r);
    let all = serde_json::to_string(&rec["findings"]).unwrap();
    assert!(all.contains("502 keys in 2 databases: as the manifest says"), "{rec:#}");
    assert!(rec["destinations"].to_string().contains("throwaway"), "{rec:#}");
    // the source kept its data and its role
    assert_eq!(redis_cli(src.port, &["DBSIZE"]), "500");
    assert!(redis_cli(src.port, &["INFO", "replication"]).contains("role:master"));
    assert_eq!(record_on_target(&s, &id)["status"], "ok");
    eprintln!("measured restore time (redis): {:.3}s", rec["restore_seconds"].as_f64().unwrap());
}

// ---------------------------------------------------------------- volume

#[test]
fn volume_drill_compares_every_file_and_leaves_the_source_unchanged() {
    let job = unique("vol");
    let _c = Cleanup(job.clone());
    let (s, src) = volume_lab(&job);
    let id = backup(&s, &job);
    let before = tree_digest(&src);
    let (code, rec, r) = verify(&s, &job);
    assert_passed(code, &rec, &r);
    let all = serde_json::to_string(&rec["findings"]).unwrap();
    assert!(all.contains("sizes and sha256 as listed"), "{rec:#}");
    assert_eq!(tree_digest(&src), before, "the drill touched the source");
    assert_eq!(record_on_target(&s, &id)["status"], "ok");
    assert_eq!(pushed(&job, "drctl_verify_last_status"), Some(1.0));
    eprintln!("measured restore time (volume): {:.3}s", rec["restore_seconds"].as_f64().unwrap());

    // `drctl list` shows the drill's verdict
    let r = run(s.drctl().args(["--json", "list", &job]));
    let rows: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rows[0]["verified"], "ok", "{rows:#}");
    assert!(rows[0]["suspicious"].is_null(), "{rows:#}");
    let r = run(s.drctl().args(["list", &job]));
    assert!(r.stdout.lines().nth(1).unwrap().contains(" ok "), "{r:?}");
}

#[test]
fn a_rebuilt_catalog_knows_which_backups_were_verified() {
    let job = unique("rebv");
    let _c = Cleanup(job.clone());
    let (s, _) = volume_lab(&job);
    let (drilled, failed, never) = (backup(&s, &job), backup(&s, &job), backup(&s, &job));
    let drill = |id: &str| {
        let r = run(s.drctl().args(["--json", "verify", &job, "--id", id]));
        serde_json::from_str::<Value>(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))[0].clone()
    };
    assert_eq!(drill(&drilled)["status"], "ok");
    let p = artifact_path(&s, &failed, ".data.");
    let mut bytes = std::fs::read(&p).unwrap();
    let good = bytes.clone();
    bytes[100] ^= 0x01;
    std::fs::write(&p, &bytes).unwrap();
    assert_eq!(drill(&failed)["status"], "failed");
    std::fs::write(&p, good).unwrap();
    let verified = |s: &Scratch| {
        let r = run(s.drctl().args(["--json", "list", &job]));
        assert_eq!(r.code, 0, "{r:?}");
        let rows: Value = serde_json::from_str(&r.stdout).unwrap();
        let by_id = |id: &str| {
            rows.as_array().unwrap().iter().find(|b| b["id"] == id).unwrap_or_else(|| panic!("{id}: {rows:#}")).clone()
        };
        [&drilled, &failed, &never].map(|id| by_id(id)["verified"].clone())
    };
    let before = verified(&s);
    assert_eq!(before, [Value::from("ok"), Value::from("failed"), Value::Null]);

    // the catalog is lost: a rebuild reads the drill records back from the target
    std::fs::remove_file(s.path("catalog.db")).unwrap();
    let r = run(s.drctl().args(["--json", "catalog", "rebuild"]));
    assert_eq!(r.code, 0, "{r:?}");
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!((report["backups"].as_u64(), report["drills"].as_u64()), (Some(3), Some(2)), "{report:#}");
    assert_eq!(verified(&s), before);
    let rows: Value = serde_json::from_str(&run(s.drctl().args(["--json", "list", &job])).stdout).unwrap();
    let row = rows.as_array().unwrap().iter().find(|b| b["id"] == drilled.as_str()).unwrap();
    assert!(row["verified_at"].as_str().is_some_and(|t| t.starts_with("20")), "{row:#}");
    // a second rebuild does not count a drill twice
    let r = run(s.drctl().args(["--json", "catalog", "rebuild"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(verified(&s), before);
    // and retention still knows the newest verified backup
    let r = run(s.drctl().args(["prune", &job, "--dry-run"]));
    assert_eq!(r.code, 0, "{r:?}");
    let line = r.stdout.lines().find(|l| l.contains(&drilled)).unwrap_or_else(|| panic!("{r:?}"));
    assert!(line.contains("newest verified backup"), "{r:?}");
}

#[test]
fn an_empty_or_shrunken_backup_is_committed_but_flagged_suspicious() {
    let job = unique("susp");
    let (s, src) = volume_lab(&job);
    let first = backup(&s, &job);
    // most of the data gone: more than half of the source size
    std::fs::remove_file(src.join("sub/b.bin")).unwrap();
    let shrunk = backup(&s, &job);
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(p).unwrap()
        } else {
            std::fs::remove_file(p).unwrap()
        }
    }
    let empty = backup(&s, &job);
    let r = run(s.drctl().args(["--json", "list", &job]));
    let rows: Value = serde_json::from_str(&r.stdout).unwrap();
    let flag = |id: &str| rows.as_array().unwrap().iter().find(|b| b["id"] == id).unwrap()["suspicious"].clone();
    assert!(flag(&first).is_null(), "{rows:#}");
    assert!(flag(&shrunk).as_str().unwrap().contains("source size fell by"), "{rows:#}");
    assert!(flag(&empty).as_str().unwrap().contains("empty"), "{rows:#}");
    // committed all the same
    assert!(rows.as_array().unwrap().iter().all(|b| b["status"] == "ok"), "{rows:#}");
    let r = run(s.drctl().args(["list", &job]));
    assert!(r.stdout.contains("ok!") && r.stderr.contains("is suspicious"), "{r:?}");
}

#[test]
fn a_flipped_byte_fails_the_drill_with_a_clear_message_and_a_failed_metric() {
    let job = unique("flip");
    let _c = Cleanup(job.clone());
    let (s, _) = volume_lab(&job);
    let id = backup(&s, &job);
    // a passing drill first, so the failure must overwrite status 1
    let (code, _, r) = verify(&s, &job);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(pushed(&job, "drctl_verify_last_status"), Some(1.0));
    let passed_at = pushed(&job, "drctl_verify_last_success_timestamp_seconds").unwrap();

    let p = artifact_path(&s, &id, ".data.");
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&p, bytes).unwrap();

    let (code, rec, r) = verify(&s, &job);
    assert_eq!(code, 1, "{r:?}");
    assert_eq!(rec["status"], "failed");
    let errs = errors(&rec);
    assert!(
        errs.iter().any(|e| e.contains("integrity check failed") && e.contains("the data is damaged or truncated")),
        "{errs:?}"
    );
    assert_eq!(record_on_target(&s, &id)["status"], "failed");
    assert_eq!(pushed(&job, "drctl_verify_last_status"), Some(0.0));
    // the last success stays what it was
    assert_eq!(pushed(&job, "drctl_verify_last_success_timestamp_seconds"), Some(passed_at));
    // human output names the failure
    let r = run(s.drctl().args(["verify", &job]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("FAILED"), "{r:?}");
    assert!(r.stderr.contains("integrity check failed") && r.stderr.contains("drill-failed.md"), "{r:?}");
}

#[test]
fn a_truncated_object_fails_the_drill() {
    let job = unique("trunc");
    let _c = Cleanup(job.clone());
    let (s, _) = volume_lab(&job);
    let id = backup(&s, &job);
    let p = artifact_path(&s, &id, ".data.");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let (code, rec, r) = verify(&s, &job);
    assert_eq!(code, 1, "{r:?}");
    let errs = errors(&rec);
    assert!(errs.iter().any(|e| e.contains("integrity check failed") && e.contains("the manifest says")), "{errs:?}");
    assert_eq!(pushed(&job, "drctl_verify_last_status"), Some(0.0));
    assert_eq!(record_on_target(&s, &id)["status"], "failed");
}

#[test]
fn the_wrong_identity_fails_the_drill() {
    let job = unique("wrongkey");
    let _c = Cleanup(job.clone());
    let (s, _) = volume_lab(&job);
    let id = backup(&s, &job);
    let other = s.path("other.key");
    let r = run(drctl_bare().args(["keygen", "--output"]).arg(&other));
    assert_eq!(r.code, 0, "{r:?}");
    let cfg = std::fs::read_to_string(s.config_path()).unwrap();
    s.write_config(&cfg.replace(&s.path("age.key").display().to_string(), &other.display().to_string()));
    let (code, rec, r) = verify(&s, &job);
    assert_eq!(code, 1, "{r:?}");
    let errs = errors(&rec);
    assert!(
        errs.iter().any(|e| e.contains("cannot decrypt") && e.contains("none of the configured identities")),
        "{errs:?}"
    );
    assert_eq!(pushed(&job, "drctl_verify_last_status"), Some(0.0));
    assert_eq!(record_on_target(&s, &id)["status"], "failed");
}

#[test]
fn a_missing_manifest_fails_the_drill() {
    let job = unique("nomf");
    let _c = Cleanup(job.clone());
    let (s, _) = volume_lab(&job);
    let id = backup(&s, &job);
    let mf = s.fs_files().into_iter().find(|f| f.ends_with(".manifest.json")).unwrap();
    std::fs::remove_file(s.path("backups").join(mf)).unwrap();
    let (code, rec, r) = verify(&s, &job);
    assert_eq!(code, 1, "{r:?}");
    let errs = errors(&rec);
    assert!(errs.iter().any(|e| e.contains("manifest") && e.contains("is missing")), "{errs:?}");
    assert_eq!(rec["backup_id"], id.as_str());
    // and a job with no backup at all fails too
    let r = run(s.drctl().args(["catalog", "rebuild"]));
    assert_eq!(r.code, 0, "{r:?}");
    let (code, rec, r) = verify(&s, &job);
    assert_eq!(code, 1, "{r:?}");
    assert!(errors(&rec).iter().any(|e| e.contains("no backup matches")), "{rec:#}");
    assert_eq!(pushed(&job, "drctl_verify_last_status"), Some(0.0));
}

// ---------------------------------------------------------------- vault

#[test]
fn vault_drill_checks_the_snapshot_sha256sums() {
    let job = unique("vlt");
    let _c = Cleanup(job.clone());
    let s = Scratch::new();
    let token = s.path("vault_token");
    std::fs::write(&token, format!("{}\n", endpoint("DRCTL_TEST_VAULT_TOKEN"))).unwrap();
    s.write_config(&format!(
        "{}[jobs.{job}]\nkind = \"vault\"\ntargets = [\"local\"]\naddress = \"{}\"\ntoken_file = \"{}\"\n",
        head(&s),
        endpoint("DRCTL_TEST_VAULT_ADDR"),
        token.display()
    ));
    let id = backup(&s, &job);
    let (code, rec, r) = verify(&s, &job);
    assert_passed(code, &rec, &r);
    let all = serde_json::to_string(&rec["findings"]).unwrap();
    assert!(all.contains("SHA256SUMS match"), "{rec:#}");
    assert_eq!(record_on_target(&s, &id)["status"], "ok");
    eprintln!("measured restore time (vault): {:.3}s", rec["restore_seconds"].as_f64().unwrap());
}

#[test]
fn vault_drill_restores_into_a_scratch_server_and_reads_the_paths_back() {
    let job = unique("vlts");
    let _c = Cleanup(job.clone());
    let (src, scratch) = (openbao::OwnBao::start(false), openbao::OwnBao::start(false));
    src.bao.put_secret("app/db", serde_json::json!({ "password": "drill-1" }));
    src.bao.put_secret("app/api", serde_json::json!({ "key": "k-1" }));
    scratch.bao.put_secret("app/db", serde_json::json!({ "password": "scratch's own" }));
    let s = Scratch::new();
    let token = s.path("vault_token");
    std::fs::write(&token, format!("{}\n", src.bao.token)).unwrap();
    let keys = s.path("unseal_keys");
    std::fs::write(&keys, format!("{}\n", src.unseal_key)).unwrap();
    let config = |paths: &str| {
        format!(
            "{}[jobs.{job}]\nkind = \"vault\"\ntargets = [\"local\"]\naddress = \"{}\"\ntoken_file = \"{}\"\n\
             verify = {{ scratch_address = \"{}\", unseal_keys_file = \"{}\", read_paths = [{paths}] }}\n",
            head(&s),
            src.bao.addr,
            token.display(),
            scratch.bao.addr,
            keys.display()
        )
    };
    s.write_config(&config("\"secret/data/app/db\", \"secret/data/app/api\""));
    let id = backup(&s, &job);
    // the restore into the scratch server needs a token of it (VAULT_TOKEN); the job's never goes there
    let drill = |scratch_token: &str| {
        let r = run(s.drctl().env("VAULT_TOKEN", scratch_token).args(["--json", "verify", &job]));
        let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"));
        (r.code, v[0].clone(), r)
    };
    let (code, rec, r) = drill(&scratch.bao.token);
    assert_passed(code, &rec, &r);
    let all = serde_json::to_string(&rec["findings"]).unwrap();
    assert!(all.contains("SHA256SUMS match"), "{rec:#}");
    assert!(all.contains("unsealed and active"), "{rec:#}");
    for p in ["secret/data/app/db", "secret/data/app/api"] {
        assert!(all.contains(&format!("path `{p}`")) && all.contains("read back from the restored server"), "{rec:#}");
    }
    assert!(!all.contains("drill-1") && !all.contains(&src.unseal_key) && !all.contains(&src.bao.token), "{rec:#}");
    assert!(!r.stderr.contains(&src.unseal_key) && !r.stderr.contains(&src.bao.token), "{r:?}");
    // the scratch server holds the source's data now; the source is untouched
    let as_src = openbao::Bao { token: src.bao.token.clone(), ..scratch.bao.clone() };
    assert_eq!(as_src.secret("app/db").unwrap()["password"], "drill-1");
    assert_eq!(src.bao.secret("app/db").unwrap()["password"], "drill-1");
    assert_eq!(src.bao.seal_status()["sealed"], false);
    assert_eq!(record_on_target(&s, &id)["status"], "ok");
    eprintln!("measured restore time (vault into a scratch server): {:.3}s", rec["restore_seconds"].as_f64().unwrap());

    // a path the backup does not hold fails the drill, by name (the scratch server now takes the
    // source's tokens)
    s.write_config(&config("\"secret/data/app/db\", \"secret/data/app/missing\""));
    let (code, rec, r) = drill(&src.bao.token);
    assert_eq!(code, 1, "{r:?}");
    let errs = errors(&rec);
    assert_eq!(errs, ["path `secret/data/app/missing`: missing on the restored server (404)"], "{rec:#}");
    assert_eq!(record_on_target(&s, &id)["status"], "failed");
    assert_eq!(pushed(&job, "drctl_verify_last_status"), Some(0.0));
}

// ---------------------------------------------------------------- gitlab

#[test]
fn gitlab_drill_checks_the_archive_layout_and_the_secrets() {
    let job = unique("gl");
    let _c = Cleanup(job.clone());
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("etc")).unwrap();
    std::fs::create_dir_all(s.path("backups-gitlab")).unwrap();
    std::fs::write(s.path("etc/gitlab-secrets.json"), "{\"gitlab_rails\": {\"secret_key_base\": \"x\"}}\n").unwrap();
    std::fs::write(s.path("etc/gitlab.rb"), "external_url 'https://gitlab.example'\n").unwrap();
    std::fs::write(s.path("VERSION"), "16.5.1\n").unwrap();
    s.write_config(&format!(
        "{head}[jobs.{job}]\nkind = \"gitlab\"\ntargets = [\"local\"]\nbackup_dir = \"{bd}\"\n\
         secrets_files = [\"{etc}/gitlab-secrets.json\", \"{etc}/gitlab.rb\"]\nversion_file = \"{vf}\"\n",
        head = head(&s),
        bd = s.path("backups-gitlab").display(),
        etc = s.path("etc").display(),
        vf = s.path("VERSION").display(),
    ));
    let standins = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standins/gitlab");
    let path = format!("{}:{}", standins.display(), std::env::var("PATH").unwrap_or_default());
    let with_env = |c: &mut Command| {
        c.env("PATH", &path)
            .env("GITLAB_STANDIN_BACKUP_DIR", s.path("backups-gitlab"))
            .env("GITLAB_STANDIN_LOG", s.path("calls.log"))
            .env("GITLAB_STANDIN_SECRETS", s.path("etc/gitlab-secrets.json"))
            .env("GITLAB_STANDIN_VERSION", "16.5.1");
    };
    let backup_in = |mode: &str| {
        let mut c = s.drctl();
        with_env(&mut c);
        let r = run(c.env("GITLAB_STANDIN_MODE", mode).args(["run", &job]));
        assert_eq!(r.code, 0, "{r:?}");
        r.stdout.trim().to_string()
    };
    let id = backup_in("ok");
    let (code, rec, r) = verify(&s, &job);
    assert_passed(code, &rec, &r);
    let all = serde_json::to_string(&rec["findings"]).unwrap();
    assert!(all.contains("gitlab-secrets.json") && all.contains("parses"), "{rec:#}");
    assert!(all.contains("GitLab 16.5.1 archive with parts"), "{rec:#}");
    // the database dump was loaded by psql into the ephemeral cluster: both tables, every row
    assert!(
        all.contains("db/database.sql.gz")
            && all.contains("loaded into a scratch PostgreSQL with psql: 2 tables, 2003 rows"),
        "{rec:#}"
    );
    assert!(rec["destinations"].to_string().contains("db/database.sql.gz → postgres://postgres@127.0.0.1:"), "{rec:#}");
    assert_eq!(record_on_target(&s, &id)["status"], "ok");
    // GitLab itself was not called by the drill (only `run` called the stand-ins)
    let calls = std::fs::read_to_string(s.path("calls.log")).unwrap_or_default();
    assert!(!calls.contains("restore"), "{calls}");

    // the same through `verify.scratch_url`: a throwaway database, dropped afterwards
    let cfg = std::fs::read_to_string(s.config_path()).unwrap();
    let with_url = format!("{cfg}verify = {{ scratch_url = \"{}\" }}\n", pg_url("postgres"));
    s.write_config(&with_url);
    let (code, rec, r) = verify(&s, &job);
    assert_passed(code, &rec, &r);
    assert!(serde_json::to_string(&rec["findings"]).unwrap().contains("2 tables, 2003 rows"), "{rec:#}");
    let dest = rec["destinations"].as_array().unwrap().iter().find(|d| d.as_str().unwrap().contains("sql.gz")).unwrap();
    let name = dest.as_str().unwrap().rsplit('/').next().unwrap().to_string();
    assert!(name.starts_with("drctl_verify_"), "{dest}");
    assert_eq!(psql("postgres", &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'")), "0");
    s.write_config(&cfg);

    // a backup whose database dump is damaged (cut in the middle of the gzip stream) fails the drill
    let bad = backup_in("baddb");
    let r = run(s.drctl().args(["--json", "verify", &job, "--id", &bad]));
    let rec: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"));
    let rec = rec[0].clone();
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(rec["backup_id"], bad.as_str());
    let errs = errors(&rec);
    assert!(
        errs.iter().any(|e| e.starts_with("`db/database.sql.gz`: ") && e.contains("is damaged: gunzip failed")),
        "{errs:?}"
    );
    assert_eq!(errs.len(), 1, "the rest of the archive is fine: {errs:?}");
    assert_eq!(record_on_target(&s, &bad)["status"], "failed");
}
