//! `kind = "redis"`: one RDB snapshot per backup (artifact `dump`, format `rdb`).
//!
//! Backup, `mode = "replication"` (default): drctl connects like a replica and asks for the RDB only
//! (`REPLCONF rdb-only 1` + `SYNC`, as `redis-cli --rdb` does). The server forks and snapshots
//! exactly as for BGSAVE, but the file never touches its disk (diskless transfer) or drctl's: the
//! payload streams straight into the pipeline. Both payload forms are read (`$<len>` after a
//! disk-based save, `$EOF:<mark>` diskless), and the completion vouches for the bytes only if the
//! payload was complete, starts with `REDIS`, ends with the EOF opcode and its CRC64 matches.
//!
//! `mode = "bgsave"`: `BGSAVE`, wait until `rdb_bgsave_in_progress:0` and a new save is recorded,
//! then read `dump.rdb` where `exec` runs (this host, a container or a pod).
//!
//! With `sentinel`, the backup is read from a healthy, in-sync replica when there is one (the
//! freshest), else from the master.
//!
//! Restore (`--to redis://…` or the job's own server): drctl itself acts as a master. It listens on
//! an ephemeral port, tells the destination `REPLICAOF`, answers its handshake with
//! `+FULLRESYNC` and streams the RDB, holding the last bytes back until every integrity check
//! passed; a replica discards a partial transfer, so an unverified backup never loads. Once the
//! destination reports the link up it is promoted (`REPLICAOF NO ONE`). `--to-dir DIR` writes
//! `DIR/dump.rdb` (temporary name, renamed only when verified) for an offline restart.

mod config;
pub(crate) mod drill;
pub(crate) mod facts;
mod validate;
pub use config::{RedisJob, RedisMode};

mod bgsave;
mod conn;
mod info;
mod master;
mod rdb;
mod resp;
mod restore;
mod sentinel;
mod source;

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{ArtifactPlan, SourceStream};
use crate::config::secrets::read_secret_file;
use crate::exec::Place;
use crate::redact::Secret;
use crate::redact::percent_decode;
use crate::{Error, Result};
use conn::{Auth, Conn, Dial, Endpoint, Failure, TlsFiles};
pub use info::DbKeys;
use info::Info;

/// Parse the text of `INFO` (for drills reading a scratch server).
pub fn parse_info(text: &str) -> Info {
    Info::parse(text)
}

pub use restore::{open_sink, plan_restore};

pub const FORMAT_RDB: &str = "rdb";
const ARTIFACT: &str = "dump";
const DEFAULT_PORT: u16 = 6379;
const SENTINEL_PORT: u16 = 26379;

/// Facts recorded in the manifest of a redis backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Facts {
    pub redis_version: String,
    /// `replication` or `bgsave`.
    pub mode: String,
    /// The server the RDB was read from (`host:port`).
    pub source: String,
    /// That server's role: `master` or `replica`.
    pub role: String,
    /// The master's name at the sentinels, when found through them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel_master: Option<String>,
    /// The master's address when the source is a replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// RDB format version (`REDIS0010` → 10): a restore needs a server that reads it.
    pub rdb_version: u32,
    /// Whether the RDB carried a CRC64 checksum (verified during the backup).
    pub rdb_checksum: bool,
    /// `diskless` (`$EOF:` mark), `disk` (`$<len>`: the server saved to its disk first) or `file`.
    pub transfer: String,
    /// Keys and keys with a TTL over every database, per INFO keyspace when the snapshot started
    /// (a server taking writes may differ by the writes of that moment).
    pub keys: u64,
    pub expires: u64,
    pub databases: Vec<DbKeys>,
}

/// A failure talking to `at`, as a source error with a hint.
fn failed(job: &str, at: &str, doing: &str, f: Failure) -> Error {
    let hint = f.hint(at);
    Error::source_failed(job, format!("{doing} {at}: {f}"), hint)
}

/// A `redis://` / `rediss://` URL taken apart; the password is a [`Secret`] at once.
#[derive(Clone, Debug)]
struct ParsedUrl {
    endpoint: Endpoint,
    tls: bool,
    username: Option<String>,
    password: Option<Secret>,
}

fn parse_url(raw: &str) -> std::result::Result<ParsedUrl, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    let tls = match url.scheme() {
        "redis" => false,
        "rediss" => true,
        other => return Err(format!("scheme `{other}`: expected redis:// or rediss://")),
    };
    let host = url.host_str().ok_or("the URL has no host")?.trim_start_matches('[').trim_end_matches(']').to_string();
    let username = Some(percent_decode(url.username())).filter(|u| !u.is_empty());
    let password = url.password().map(|p| Secret::new(percent_decode(p)));
    Ok(ParsedUrl { endpoint: Endpoint { host, port: url.port().unwrap_or(DEFAULT_PORT) }, tls, username, password })
}

/// `redis://host:port` for messages: never a password.
fn display_url(tls: bool, e: &Endpoint) -> String {
    format!("{}://{e}", if tls { "rediss" } else { "redis" })
}

/// Everything needed to reach the job's servers.
#[derive(Clone)]
struct Settings {
    /// The URL's server (absent with sentinels only).
    endpoint: Option<Endpoint>,
    auth: Auth,
    dial: Dial,
    tls: bool,
    sentinel: Option<SentinelSettings>,
}

#[derive(Clone)]
struct SentinelSettings {
    addrs: Vec<Endpoint>,
    master_name: String,
    auth: Auth,
}

impl Settings {
    fn from_job(job: &str, cfg: &RedisJob) -> Result<Settings> {
        let parsed = match &cfg.url {
            Some(u) => Some(parse_url(u).map_err(|e| {
                Error::source_failed(
                    job,
                    format!("url: {e}"),
                    Some("e.g. `redis://redis:6379` or `rediss://…` for TLS".into()),
                )
            })?),
            None => None,
        };
        let mut auth = Auth {
            username: parsed.as_ref().and_then(|p| p.username.clone()),
            password: parsed.as_ref().and_then(|p| p.password.clone()),
        };
        if let Some(u) = &cfg.username {
            auth.username = Some(u.clone());
        }
        if let Some(p) = &cfg.password {
            auth.password = Some(p.clone());
        }
        if let Some(f) = &cfg.password_file {
            auth.password = Some(read_secret_file(f)?);
        }
        let tls = cfg.tls || parsed.as_ref().is_some_and(|p| p.tls);
        let dial = if tls {
            Dial::with_tls(&TlsFiles {
                ca_file: cfg.tls_ca_file.clone(),
                cert_file: cfg.tls_cert_file.clone(),
                key_file: cfg.tls_key_file.clone(),
            })
            .map_err(|f| failed(job, "TLS settings", "cannot use the", f))?
        } else {
            Dial::plain()
        };
        let sentinel = if cfg.sentinel.is_empty() {
            None
        } else {
            let mut addrs = Vec::new();
            for s in &cfg.sentinel {
                addrs.push(Endpoint::parse(s, SENTINEL_PORT).ok_or_else(|| {
                    Error::source_failed(job, format!("sentinel address `{s}` is not host:port"), None)
                })?);
            }
            let mut password = cfg.sentinel_password.clone();
            if let Some(f) = &cfg.sentinel_password_file {
                password = Some(read_secret_file(f)?);
            }
            let master_name = cfg
                .master_name
                .clone()
                .ok_or_else(|| Error::source_failed(job, "`sentinel` needs `master_name`", None))?;
            Some(SentinelSettings { addrs, master_name, auth: Auth { username: None, password } })
        };
        if parsed.is_none() && sentinel.is_none() {
            return Err(Error::source_failed(job, "set `url` (or `sentinel` and `master_name`)", None));
        }
        Ok(Settings { endpoint: parsed.map(|p| p.endpoint), auth, dial, tls, sentinel })
    }

    fn display(&self, e: &Endpoint) -> String {
        display_url(self.tls, e)
    }
}

/// The server a backup reads from, connected and described.
struct Node {
    endpoint: Endpoint,
    conn: Conn,
    info: Info,
    /// Why this server (with sentinels: which replica, or why the master).
    why: Option<String>,
    sentinel_master: Option<String>,
}

async fn connect_node(job: &str, s: &Settings) -> Result<Node> {
    if let Some(sent) = &s.sentinel {
        return sentinel::choose(job, s, sent).await;
    }
    let Some(endpoint) = s.endpoint.clone() else {
        return Err(Error::source_failed(job, "no `url` configured", None));
    };
    let shown = s.display(&endpoint);
    let mut conn = s.dial.connect(&endpoint, &s.auth).await.map_err(|f| failed(job, &shown, "cannot connect to", f))?;
    let info = conn.info().await.map_err(|f| failed(job, &shown, "INFO failed on", f))?;
    Ok(Node { endpoint, conn, info, why: None, sentinel_master: None })
}

/// A redis backup in progress.
pub struct BackupSession {
    job: String,
    mode: RedisMode,
    settings: Settings,
    cfg: RedisJob,
    /// Where dump.rdb is read (`bgsave` mode).
    place: Option<Place>,
    node: Option<Node>,
    shown: String,
    describe: String,
    facts: Arc<Mutex<Facts>>,
}

impl BackupSession {
    pub async fn prepare(job: &str, cfg: &RedisJob) -> Result<BackupSession> {
        let settings = Settings::from_job(job, cfg)?;
        // bgsave reads dump.rdb where the server runs: find that place before anything starts
        let place = match cfg.mode {
            RedisMode::Bgsave => Some(Place::resolve(&cfg.exec).await.map_err(|e| e.for_job(job))?),
            RedisMode::Replication => None,
        };
        let node = connect_node(job, &settings).await?;
        let shown = settings.display(&node.endpoint);
        let info = &node.info;
        let dbs = info.keyspace.len();
        let mut describe = format!(
            "source reachable: redis {} {} at {} ({} keys in {} {})",
            info.version(),
            info.role(),
            shown,
            info.total_keys(),
            dbs,
            if dbs == 1 { "database" } else { "databases" }
        );
        if let Some(why) = &node.why {
            describe.push_str(&format!(", {why}"));
        }
        describe.push_str(match cfg.mode {
            RedisMode::Replication => "; will store: dump (RDB over the replication protocol)",
            RedisMode::Bgsave => "; will store: dump (BGSAVE, then dump.rdb read",
        });
        if let Some(place) = &place {
            describe.push_str(&format!(" {})", place.at()));
        }
        let facts = Facts {
            redis_version: info.version(),
            mode: match cfg.mode {
                RedisMode::Replication => "replication".into(),
                RedisMode::Bgsave => "bgsave".into(),
            },
            source: node.endpoint.to_string(),
            role: info.role().into(),
            sentinel_master: node.sentinel_master.clone(),
            master: if info.is_replica() { info.master() } else { None },
            ..Default::default()
        };
        Ok(BackupSession {
            job: job.to_string(),
            mode: cfg.mode,
            settings,
            cfg: cfg.clone(),
            place,
            node: Some(node),
            shown,
            describe,
            facts: Arc::new(Mutex::new(facts)),
        })
    }

    pub fn artifacts(&self) -> Vec<ArtifactPlan> {
        // memory is no estimate of an RDB (compressed, no overhead): no total, see ArtifactPlan
        vec![ArtifactPlan { name: ARTIFACT.into(), format: FORMAT_RDB, ext: "rdb", size_hint: None }]
    }

    pub async fn open(&mut self, _artifact: &ArtifactPlan) -> Result<SourceStream> {
        let job = self.job.clone();
        let node = match self.node.take() {
            Some(n) => n,
            // a second open (not planned today): start over with a fresh connection
            None => connect_node(&job, &self.settings).await?,
        };
        let Node { mut conn, .. } = node;
        // the keyspace as close to the snapshot as possible
        let info = conn.info().await.map_err(|f| failed(&job, &self.shown, "INFO failed on", f))?;
        if let Ok(mut f) = self.facts.lock() {
            f.databases = info.keyspace.clone();
            f.keys = info.total_keys();
            f.expires = info.keyspace.iter().map(|d| d.expires).sum();
        }
        match self.mode {
            RedisMode::Replication => source::open_sync(&job, conn, &self.shown, self.facts.clone()).await,
            RedisMode::Bgsave => {
                let place = self.place.clone().unwrap_or(Place::Local);
                bgsave::open(&job, conn, &self.shown, &self.cfg, &place, self.facts.clone()).await
            }
        }
    }

    pub async fn finish(&mut self) -> Result<serde_json::Value> {
        let facts = self.facts.lock().map(|f| f.clone()).unwrap_or_default();
        Ok(serde_json::to_value(facts).unwrap_or_default())
    }

    /// Nothing to undo: the connections close with the session.
    pub async fn close(self, _committed: bool) {}

    pub fn describe(&self) -> String {
        self.describe.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let p = parse_url("redis://backup:p%40ss@cache.internal:7000/2").unwrap();
        assert_eq!(p.endpoint, Endpoint { host: "cache.internal".into(), port: 7000 });
        assert_eq!(p.username.as_deref(), Some("backup"));
        assert_eq!(p.password.as_ref().map(|s| s.expose()), Some("p@ss"));
        assert!(!p.tls);
        let p = parse_url("rediss://:secret-pw@[::1]").unwrap();
        assert!(p.tls && p.username.is_none());
        assert_eq!(p.endpoint, Endpoint { host: "::1".into(), port: 6379 });
        assert!(parse_url("http://x").unwrap_err().contains("redis://"));
        assert!(parse_url("nonsense").is_err());
        assert_eq!(display_url(true, &p.endpoint), "rediss://[::1]:6379");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2"), "a b%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
