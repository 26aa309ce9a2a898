//! The runbooks' runnable blocks (fenced ` ```sh test `) run, in order, against the local test
//! services: a scratch config with jobs `postgres`, `redis` and `volume` that have a backup each,
//! and the variables each page asks the reader to set. Afterwards the data is checked, so a
//! runbook whose commands stopped working (or stopped restoring) fails CI.

mod common;
#[path = "common/openbao.rs"]
mod openbao;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{Scratch, count, create_sample_db, drop_db, pg_url, run, unique};

/// The blocks of a runbook opened by exactly `marker`, in order.
fn marked_blocks(page: &str, marker: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks").join(page)).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim() == marker => current = Some(String::new()),
            Some(b) if line.trim() == "```" => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "{page}: unterminated block");
    blocks
}

/// Run `page`'s test blocks in order, in one `bash -euo pipefail`, in `s`'s work dir, with `s`'s
/// config as `DRCTL_CONFIG`, drctl (and the OpenBao CLI) on PATH and `vars`; panics with the output
/// on failure.
fn run_blocks(page: &str, s: &Scratch, vars: &[(&str, String)]) {
    run_marked(page, "```sh test", s, vars);
}

/// [`run_blocks`] for the blocks opened by `marker`.
fn run_marked(page: &str, marker: &str, s: &Scratch, vars: &[(&str, String)]) {
    let blocks = marked_blocks(page, marker);
    assert!(!blocks.is_empty(), "{page} has no ```sh test blocks");
    let work = s.path("work");
    std::fs::create_dir_all(&work).unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_drctl")).parent().unwrap().to_path_buf();
    let bao_dir = PathBuf::from(common::endpoint("DRCTL_TEST_BAO_BIN")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}:{}", bin_dir.display(), bao_dir.display(), std::env::var("PATH").unwrap_or_default());
    let script = format!("set -euo pipefail\nset -x\n{}", blocks.join("\n"));
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(&script).current_dir(&work).env("PATH", path).env("DRCTL_CONFIG", s.config_path());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{page}: a runnable block failed\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway redis-server on a free port.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let r = Redis { child, port, _dir: dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while r.cli(&["PING"]) != "PONG" {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start");
            std::thread::yield_now();
        }
        r
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
    fn keys(&self) -> usize {
        self.cli(&["DBSIZE"]).parse().unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch site: config with the three jobs, one backup each, and restore destinations.
struct Site {
    s: Scratch,
    db: String,
    restore_db: String,
    redis: Redis,
    redis_dest: Redis,
    volume: PathBuf,
}

impl Site {
    fn new() -> Site {
        let s = Scratch::new();
        let db = unique("rb_app");
        create_sample_db(&db, 500);
        let redis = Redis::start();
        for i in 0..300 {
            redis.cli(&["SET", &format!("key:{i}"), &format!("value {i}")]);
        }
        let redis_dest = Redis::start();
        let volume = s.path("volume-src");
        std::fs::create_dir_all(volume.join("sub")).unwrap();
        for i in 0..20 {
            std::fs::write(volume.join("sub").join(format!("f{i}.txt")), format!("file {i}\n").repeat(i + 1)).unwrap();
        }
        s.write_config(&format!(
            "{head}[jobs.postgres]\nkind = \"postgres\"\nurl = \"{pg}\"\ntargets = [\"local\"]\n\n\
             [jobs.redis]\nkind = \"redis\"\nurl = \"{redis}\"\ntargets = [\"local\"]\n\n\
             [jobs.volume]\nkind = \"volume\"\npath = \"{vol}\"\ntargets = [\"local\"]\n",
            head = s.head(),
            pg = pg_url(&db),
            redis = redis.url(),
            vol = volume.display(),
        ));
        for job in ["postgres", "redis", "volume"] {
            let r = run(s.drctl().args(["run", job]));
            assert_eq!(r.code, 0, "backup of {job}: {r:?}");
        }
        let restore_db = unique("rb_restored");
        Site { s, db, restore_db, redis, redis_dest, volume }
    }

    /// Run a runbook's test blocks with the variables it asks for; panics with the output on failure.
    fn run_runbook(&self, page: &str) {
        run_blocks(
            page,
            &self.s,
            &[
                ("PG_RESTORE_URL", pg_url(&self.restore_db)),
                ("REDIS_RESTORE_URL", self.redis_dest.url()),
                ("VOLUME_RESTORE_DIR", self.s.path("volume-restored").display().to_string()),
                ("AGE_IDENTITY", self.s.path("age.key").display().to_string()),
                ("NEW_IDENTITY", self.s.path("new-age.key").display().to_string()),
            ],
        );
    }

    fn assert_postgres_restored(&self) {
        assert_eq!(count(&self.restore_db, "users"), count(&self.db, "users"));
        assert_eq!(count(&self.restore_db, "orders"), count(&self.db, "orders"));
    }

    fn assert_redis_restored(&self) {
        assert_eq!(self.redis_dest.keys(), self.redis.keys());
        assert_eq!(self.redis_dest.cli(&["GET", "key:42"]), "value 42");
    }

    fn assert_volume_restored(&self) {
        let out =
            Command::new("diff").arg("-r").arg(&self.volume).arg(self.s.path("volume-restored")).output().unwrap();
        assert!(out.status.success(), "diff -r: {}", String::from_utf8_lossy(&out.stdout));
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        drop_db(&self.db);
        drop_db(&self.restore_db);
    }
}

#[test]
fn runbook_postgres() {
    let site = Site::new();
    site.run_runbook("postgres.md");
    site.assert_postgres_restored();
}

#[test]
fn runbook_redis() {
    let site = Site::new();
    site.run_runbook("redis.md");
    site.assert_redis_restored();
}

#[test]
fn runbook_volumes() {
    let site = Site::new();
    site.run_runbook("volumes.md");
    site.assert_volume_restored();
}

#[test]
fn runbook_site_loss_on_a_fresh_catalog() {
    let site = Site::new();
    // the fresh machine: no catalog
    std::fs::remove_file(site.s.path("catalog.db")).unwrap();
    site.run_runbook("site-loss.md");
    site.assert_postgres_restored();
    site.assert_redis_restored();
    site.assert_volume_restored();
}

#[test]
fn runbook_key_rotation() {
    let site = Site::new();
    site.run_runbook("key-rotation.md");
    // the config now encrypts to both; a new backup was made and read with the new identity alone
    let config = std::fs::read_to_string(site.s.config_path()).unwrap();
    assert!(config.matches("age1").count() >= 2, "{config}");
    let r = run(site.s.drctl().args(["list", "postgres", "--json"]));
    let listed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(listed.as_array().unwrap().iter().filter(|b| b["status"] == "ok").count() >= 2);
}

#[test]
fn runbook_vault_same_cluster_and_another_cluster() {
    use serde_json::json;
    let source = openbao::OwnBao::start(false);
    let other = openbao::OwnBao::start(false);
    source.bao.put_secret("app/config", json!({ "password": "at-backup-time" }));
    let s = Scratch::new();
    std::fs::write(s.path("vault-token"), &source.bao.token).unwrap();
    s.write_config(&format!(
        "{}[jobs.vault]\nkind = \"vault\"\naddress = \"{}\"\ntoken_file = \"{}\"\ntargets = [\"local\"]\n",
        s.head(),
        source.bao.addr,
        s.path("vault-token").display()
    ));
    let r = run(s.drctl().args(["run", "vault"]));
    assert_eq!(r.code, 0, "{r:?}");
    source.bao.put_secret("app/config", json!({ "password": "changed-after" }));

    run_blocks(
        "vault.md",
        &s,
        &[
            ("BAO_ADDR", source.bao.addr.clone()),
            ("BAO_TOKEN", source.bao.token.clone()),
            ("NEW_VAULT_ADDR", other.bao.addr.clone()),
            ("NEW_VAULT_TOKEN", other.bao.token.clone()),
            ("SOURCE_UNSEAL_KEY", source.unseal_key.clone()),
        ],
    );
    // both clusters hold the value of backup time; the other one answers the source's token
    source.bao.eventually("the rewound value", || {
        source.bao.secret("app/config").is_some_and(|d| d["password"] == "at-backup-time")
    });
    let restored = openbao::Bao { addr: other.bao.addr.clone(), token: source.bao.token.clone(), ca: None };
    assert_eq!(restored.secret("app/config").unwrap()["password"], "at-backup-time");
}

#[test]
fn every_runbook_has_the_sections_a_reader_needs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks");
    for page in ["postgres.md", "redis.md", "volumes.md", "vault.md", "gitlab.md", "site-loss.md", "key-rotation.md"] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_else(|_| panic!("runbooks/{page} missing"));
        for section in ["## When to use it", "## What you need at hand", "## Check the result", "## What can go wrong"]
        {
            assert!(text.contains(section), "runbooks/{page} lacks `{section}`");
        }
        assert!(text.contains("```sh"), "runbooks/{page} has no commands");
    }
}

/// runbooks/postgres.md "Restore to a point in time": its ` ```sh test-pitr ` blocks, run against a
/// cluster of the test's own with a WAL receiver, must bring back exactly the rows committed before
/// the chosen moment, promoted and open for writes.
#[test]
fn runbook_postgres_point_in_time() {
    use common::cluster::{Cluster, give_to_postgres};
    let s = Scratch::new();
    let src = Cluster::init(&s.path("src"));
    src.psql("postgres", "CREATE ROLE replicator LOGIN REPLICATION");
    s.write_config(&format!(
        "{}[targets.offsite]\ntype = \"fs\"\npath = \"{}\"\nmedium = \"remote-disk\"\noffsite = true\n\n\
         [jobs.db]\nkind = \"postgres\"\nmethod = \"physical\"\nurl = \"{}\"\ntargets = [\"local\", \"offsite\"]\n\
         wal = {{ max_delay = \"2s\" }}\n",
        s.head(),
        s.path("offsite").display(),
        src.url("postgres").replace("postgres@", "replicator@")
    ));
    std::fs::create_dir_all(s.path("backups")).unwrap();
    std::fs::create_dir_all(s.path("pitr")).unwrap();
    give_to_postgres(s.dir.path());
    let mut receiver =
        s.drctl().args(["wal", "stream", "db"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    src.psql("postgres", "CREATE TABLE t (batch int, i int, PRIMARY KEY (batch, i))");
    let r = run(s.drctl().args(["run", "db"]));
    assert_eq!(r.code, 0, "{r:?}");
    src.psql("postgres", "INSERT INTO t SELECT 1, i FROM generate_series(1, 100) i");
    let time = src
        .psql("postgres", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')");
    src.psql("postgres", "INSERT INTO t SELECT 2, i FROM generate_series(1, 100) i");
    // the segment holding both batches complete in the archive
    let seg = src.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_insert_lsn())");
    src.psql("postgres", "SELECT pg_switch_wal()");
    let stored = s.path(&format!("backups/db/wal/00000001/{seg}.zst.age"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !stored.exists() {
        assert!(std::time::Instant::now() < deadline, "segment {seg} not archived");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pgdata = s.path("pitr/data");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let stop = |data: &Path| {
        let _ = common::cluster::as_postgres(&common::pg_bin().join("pg_ctl"))
            .arg("-D")
            .arg(data)
            .args(["-m", "fast", "-w", "stop"])
            .output();
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_marked(
            "postgres.md",
            "```sh test-pitr",
            &s,
            &[
                ("JOB", "db".to_string()),
                ("PGDATA", pgdata.display().to_string()),
                ("TIME", time.clone()),
                ("PG_BIN", common::pg_bin().display().to_string()),
                ("AS_POSTGRES", if root { "runuser -u postgres --".to_string() } else { String::new() }),
                ("PGPORT", port.to_string()),
            ],
        );
    }));
    let restored = Command::new(common::pg_bin().join("psql"))
        .args(["-X", "-Atc", "SELECT string_agg(batch || ':' || n, ',' ORDER BY batch) FROM (SELECT batch, count(*) n FROM t GROUP BY batch) b; SELECT pg_is_in_recovery()"])
        .env("PGHOST", "/var/run/postgresql")
        .env("PGPORT", port.to_string())
        .env("PGUSER", "postgres")
        .output();
    stop(&pgdata);
    let _ = receiver.kill();
    let _ = receiver.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    let out = restored.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "1:100\nf",
        "only the rows before {time}, promoted: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
