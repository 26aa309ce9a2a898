//! Shared helpers for the integration tests: endpoints of the real services started by
//! `scripts/services.sh`, scratch directories with a config, the drctl binary, a fault-injecting
//! TCP proxy (in `faults`).
//!
//! A missing service is a loud failure, never a skip: every endpoint comes from the environment
//! (or `$DRCTL_SERVICES_DIR/endpoints.env`, written by `scripts/services.sh start`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Endpoints of the services, from the environment or endpoints.env.
pub fn endpoint(name: &str) -> String {
    static FILE: OnceLock<HashMap<String, String>> = OnceLock::new();
    if let Ok(v) = std::env::var(name) {
        return v;
    }
    let file = FILE.get_or_init(|| {
        let dir = std::env::var("DRCTL_SERVICES_DIR").unwrap_or_else(|_| "/tmp/drctl-services".into());
        std::fs::read_to_string(Path::new(&dir).join("endpoints.env"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    });
    file.get(name).cloned().unwrap_or_else(|| {
        panic!("{name} is not set and not in endpoints.env: start the test services with `scripts/services.sh start` (or run `scripts/test`)")
    })
}

pub fn pg_url(db: &str) -> String {
    let base = endpoint("DRCTL_TEST_PG_URL");
    let mut u = url::Url::parse(&base).unwrap();
    u.set_path(&format!("/{db}"));
    u.to_string()
}

pub fn pg_bin() -> PathBuf {
    PathBuf::from(endpoint("DRCTL_TEST_PG_BIN"))
}

/// Run SQL with psql against `db`; panics on failure. Returns stdout (unaligned, tuples only).
pub fn psql(db: &str, sql: &str) -> String {
    let out = Command::new(pg_bin().join("psql"))
        .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", &pg_url(db), "-c", sql])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A unique, valid identifier for databases, buckets prefixes and job names.
///
/// The services keep their data between runs (the Garage bucket, the SFTP tree) and process ids
/// come back (pid_max is 32768 here), so the pid alone named the same prefix in two runs: a test
/// then counted an older run's backup as its own. A random tag per test process separates runs.
pub fn unique(prefix: &str) -> String {
    use std::hash::{BuildHasher as _, RandomState};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    static TAG: OnceLock<String> = OnceLock::new();
    let tag = TAG.get_or_init(|| format!("{:06x}", RandomState::new().hash_one(std::process::id()) & 0xff_ffff));
    format!("{prefix}_{}{tag}_{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// Create database `db` with tables `users` (n rows) and `orders` (3n rows).
pub fn create_sample_db(db: &str, n: u32) {
    psql("postgres", &format!("DROP DATABASE IF EXISTS \"{db}\""));
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    psql(
        db,
        &format!(
            "CREATE TABLE users (id int primary key, name text, email text);
             INSERT INTO users SELECT i, 'user ' || i, md5(i::text) || '@example.com' FROM generate_series(1, {n}) i;
             CREATE TABLE orders (id serial primary key, user_id int references users(id), amount numeric, note text);
             INSERT INTO orders (user_id, amount, note) SELECT 1 + (i % {n}), i * 1.5, repeat('x', i % 50) FROM generate_series(1, {n} * 3) i;"
        ),
    );
}

pub fn count(db: &str, table: &str) -> i64 {
    psql(db, &format!("SELECT count(*) FROM {table}")).parse().unwrap()
}

pub fn drop_db(db: &str) {
    psql("postgres", &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"));
}

/// A scratch directory holding a config, an age identity, an fs target and a catalog.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub recipient: String,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let out = drctl_bare().args(["keygen", "--output"]).arg(dir.path().join("age.key")).output().unwrap();
        assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
        let recipient = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Scratch { dir, recipient }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("drctl.toml")
    }

    /// The common head of a config: catalog, encryption, an fs target `local`.
    pub fn head(&self) -> String {
        format!(
            "[catalog]\nurl = \"sqlite://{cat}\"\n\n[encryption]\nrecipients = [\"{r}\"]\nidentity_file = \"{key}\"\n\n\
             [targets.local]\ntype = \"fs\"\npath = \"{fs}\"\nmedium = \"disk\"\n\n",
            cat = self.path("catalog.db").display(),
            r = self.recipient,
            key = self.path("age.key").display(),
            fs = self.path("backups").display(),
        )
    }

    /// An S3 target named `name` on the test S3 server, under a unique prefix.
    pub fn s3_target(&self, name: &str, endpoint_override: Option<&str>) -> String {
        let ep = endpoint_override.map(str::to_string).unwrap_or_else(|| endpoint("DRCTL_TEST_S3_ENDPOINT"));
        format!(
            "[targets.{name}]\ntype = \"s3\"\nendpoint = \"{ep}\"\nregion = \"{region}\"\nbucket = \"{bucket}\"\nroot = \"{root}\"\n\
             access_key_id = \"{ak}\"\nsecret_access_key = \"{sk}\"\npart_size_mib = 5\nmedium = \"object-storage\"\noffsite = true\n\n",
            region = endpoint("DRCTL_TEST_S3_REGION"),
            bucket = endpoint("DRCTL_TEST_S3_BUCKET"),
            root = unique("t"),
            ak = endpoint("DRCTL_TEST_S3_ACCESS_KEY"),
            sk = endpoint("DRCTL_TEST_S3_SECRET_KEY"),
        )
    }

    /// An SFTP target named `name` on the test sshd (a Storage Box stand-in), under a unique root.
    pub fn sftp_target(&self, name: &str) -> String {
        format!(
            "[targets.{name}]\ntype = \"sftp\"\nhost = \"{host}\"\nport = {port}\nuser = \"{user}\"\nkey_file = \"{key}\"\n\
             known_hosts_file = \"{kh}\"\nroot = \"{root}\"\nmedium = \"remote-disk\"\noffsite = true\n\n",
            host = endpoint("DRCTL_TEST_SFTP_HOST"),
            port = endpoint("DRCTL_TEST_SFTP_PORT"),
            user = endpoint("DRCTL_TEST_SFTP_USER"),
            key = endpoint("DRCTL_TEST_SFTP_KEY"),
            kh = endpoint("DRCTL_TEST_SFTP_KNOWN_HOSTS"),
            root = unique("e2e/t"),
        )
    }

    /// A WebDAV target named `name` on the test WebDAV server, under a unique root.
    pub fn webdav_target(&self, name: &str) -> String {
        format!(
            "[targets.{name}]\ntype = \"webdav\"\nurl = \"{url}\"\nuser = \"{user}\"\npassword = \"{pass}\"\nroot = \"{root}\"\n\
             medium = \"remote-disk\"\noffsite = true\n\n",
            url = endpoint("DRCTL_TEST_WEBDAV_URL"),
            user = endpoint("DRCTL_TEST_WEBDAV_USER"),
            pass = endpoint("DRCTL_TEST_WEBDAV_PASS"),
            root = unique("e2e/t"),
        )
    }

    /// `config` with `[encryption] chunk_key_file` set to this scratch's `chunk.key`, which
    /// `drctl keygen --chunk-key` makes the first time (`storage = "chunked"` jobs need it).
    pub fn with_chunk_key(&self, config: &str) -> String {
        let key = self.path("chunk.key");
        if !key.exists() {
            let r = run(drctl_bare().args(["keygen", "--chunk-key"]).arg(&key));
            assert_eq!(r.code, 0, "{r:?}");
        }
        config.replace("identity_file = ", &format!("chunk_key_file = \"{}\"\nidentity_file = ", key.display()))
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// `drctl --config <this config> ARGS…`
    pub fn drctl(&self) -> Command {
        let mut c = drctl_bare();
        c.arg("--config").arg(self.config_path());
        c
    }

    /// Every file under the fs target, relative.
    pub fn fs_files(&self) -> Vec<String> {
        let root = self.path("backups");
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path().strip_prefix(&root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }
}

pub fn drctl_bare() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_drctl"));
    c.env_remove("DRCTL_CONFIG").env("DRCTL_STATE_DIR", std::env::temp_dir().join("drctl-test-state-unused"));
    c
}

/// Output of a finished command, for assertions with context.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Ran {
    let out = cmd.output().expect("drctl runs");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Stored bytes a backup added, from its manifest: each artifact's object (a chunked one's recipe)
/// and the blobs a chunked artifact was the first to store.
pub fn added(m: &serde_json::Value) -> u64 {
    m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["stored"]["size"].as_u64().unwrap() + a["chunked"]["added_bytes"].as_u64().unwrap_or(0))
        .sum()
}

pub mod cluster;
pub mod faults;
#[allow(unused_imports)]
pub use faults::CuttingProxy;
