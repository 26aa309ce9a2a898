//! `kind = "postgres"`: the job's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::exec::ExecConfig;
use crate::jobs::KindSettings;
use crate::redact::Secret;
use std::path::Path;

/// `kind = "postgres"`: `pg_dump --format=custom` per database, optionally `pg_dumpall --globals-only`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresJob {
    /// libpq URL of the server and default database, e.g. `postgres://backup@db:5432/app`. A password
    /// in the URL works (it is masked everywhere) but `password_file` keeps it out of the config.
    #[serde(serialize_with = "crate::redact::serialize_url")]
    pub url: String,
    /// The password, if not in the URL (prefer `password_file`).
    pub password: Option<Secret>,
    /// File holding the password (first line).
    pub password_file: Option<PathBuf>,
    /// Databases to dump, one artifact each (default: the URL's database).
    #[serde(default)]
    pub databases: Vec<String>,
    /// Also dump roles and tablespaces with `pg_dumpall --globals-only` (its own artifact).
    #[serde(default)]
    pub globals: bool,
    /// Directory holding `pg_dump`, `pg_dumpall`, `pg_restore`, `psql` (default: `PATH`, then the
    /// newest `/usr/lib/postgresql/*/bin`).
    pub bin_dir: Option<PathBuf>,
    /// Row counts recorded in the manifest (drills compare them): `exact` counts every table in
    /// the dump's own snapshot while the dump runs (default; one extra scan of the data),
    /// `estimate` reads the planner's statistics (free, approximate).
    #[serde(default)]
    pub row_counts: RowCounts,
    /// How long to wait for the server to answer a new connection (drctl's own connections and,
    /// as `PGCONNECT_TIMEOUT`, pg_dump's, pg_restore's and psql's), e.g. `15s` (the default). A
    /// server that accepts TCP and never answers fails the run and `drctl check` after this long
    /// instead of hanging.
    pub connect_timeout: Option<String>,
    /// How long a backup or restore waits for a table lock held by another session, e.g. `60s`
    /// (the default): `pg_dump --lock-wait-timeout` (an `ACCESS EXCLUSIVE` lock from `ALTER
    /// TABLE`, `TRUNCATE` or `VACUUM FULL` fails the backup with a message naming it) and
    /// `lock_timeout` for `pg_restore`/`psql` (`restore --force` does not wait silently on an
    /// application's lock; its single transaction rolls back).
    pub lock_timeout: Option<String>,
    /// `dump` (default): a logical `pg_dump` per database, as always. `physical`: base backups
    /// (`pg_basebackup`) on `schedule` plus continuous WAL archiving by `drctl wal stream`, for
    /// point-in-time recovery (`restore --to-time`). The URL's role needs `REPLICATION`.
    #[serde(default)]
    pub method: Method,
    /// `method = "physical"`: the WAL receiver's settings.
    pub wal: Option<WalConfig>,
}

/// How a postgres job backs up.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// `pg_dump` per database (logical; restores into any newer server).
    #[default]
    Dump,
    /// Base backups and WAL (physical; same major version; any point in time).
    Physical,
}

/// `wal = { … }` of a physical postgres job.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    /// The physical replication slot the receiver streams from (created if missing; it keeps the
    /// server from recycling WAL that is not archived yet, so a receiver that stays down fills
    /// the server's disk unless `max_slot_wal_keep_size` is set). Default `drctl_<job>` (`-` → `_`).
    pub slot: Option<String>,
    /// The longest time received WAL waits before it is on every target: a segment not yet full
    /// is shipped as `<segment>.partial` at least this often, which bounds the data a lost server
    /// can take with it, e.g. `60s` (the default).
    pub max_delay: Option<String>,
    /// How far back every moment stays recoverable: prune keeps WAL continuous from the newest
    /// base backup consistent before `now - keep`; older kept base backups keep only their own
    /// start..stop WAL (restorable to their consistent point), e.g. `14d` (default `7d`).
    pub keep: Option<String>,
}

impl WalConfig {
    /// Default of [`WalConfig::max_delay`].
    pub const DEFAULT_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(60);
    /// Default of [`WalConfig::keep`].
    pub const DEFAULT_KEEP: std::time::Duration = std::time::Duration::from_secs(7 * 86400);
}

impl PostgresJob {
    /// The replication slot of a physical job.
    pub fn wal_slot(&self, job: &str) -> String {
        self.wal
            .as_ref()
            .and_then(|w| w.slot.clone())
            .unwrap_or_else(|| format!("drctl_{}", job.replace('-', "_").to_lowercase()))
    }

    /// `wal.keep`, or its default (validation rejects an unreadable value).
    pub fn wal_keep(&self) -> std::time::Duration {
        duration_or(self.wal.as_ref().and_then(|w| w.keep.as_deref()), WalConfig::DEFAULT_KEEP)
    }

    /// `wal.max_delay`, or its default (validation rejects an unreadable value).
    pub fn wal_max_delay(&self) -> std::time::Duration {
        duration_or(self.wal.as_ref().and_then(|w| w.max_delay.as_deref()), WalConfig::DEFAULT_MAX_DELAY)
    }
}

impl PostgresJob {
    /// Default of [`PostgresJob::connect_timeout`].
    pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
    /// Default of [`PostgresJob::lock_timeout`].
    pub const DEFAULT_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

    /// `connect_timeout`, or its default (validation rejects an unreadable value).
    pub fn connect_timeout(&self) -> std::time::Duration {
        duration_or(self.connect_timeout.as_deref(), Self::DEFAULT_CONNECT_TIMEOUT)
    }

    /// `lock_timeout`, or its default (validation rejects an unreadable value).
    pub fn lock_timeout(&self) -> std::time::Duration {
        duration_or(self.lock_timeout.as_deref(), Self::DEFAULT_LOCK_TIMEOUT)
    }
}

fn duration_or(value: Option<&str>, default: std::time::Duration) -> std::time::Duration {
    value.and_then(|v| humantime::parse_duration(v).ok()).unwrap_or(default)
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RowCounts {
    #[default]
    Exact,
    Estimate,
}

impl KindSettings for PostgresJob {
    fn secret_files(&self) -> Vec<(&'static str, Option<&Path>)> {
        vec![("password_file", self.password_file.as_deref())]
    }
    fn resolve_paths(&mut self, fix: &mut dyn FnMut(&mut PathBuf)) {
        self.password_file.iter_mut().for_each(&mut *fix);
        self.bin_dir.iter_mut().for_each(fix);
    }
    fn exec(&self) -> Option<&ExecConfig> {
        None // libpq and pg_dump over the network
    }
    fn kubernetes_obstacle(&self) -> Option<String> {
        None
    }
    fn needs_docker(&self) -> bool {
        false
    }
    fn host_path(&self) -> Option<&Path> {
        None
    }
}
