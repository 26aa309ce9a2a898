//! The catalog: an index of backups and where their copies are.
//!
//! The targets are the source of truth (a backup exists where its manifest is); the catalog makes
//! `list` and `restore --latest` fast and remembers failed runs. It can always be recreated from
//! the targets with [`Catalog::rebuild_from`], which is what a fresh machine does first.
//!
//! Two backends, one set of SQL statements:
//! - **SQLite** (`sqlite://…`, the default: a file in the state directory), for one runner. Only one
//!   `drctl daemon` may use a SQLite catalog: the per-job lock below is a no-op there.
//! - **PostgreSQL** (`postgres://…`), when several runners (daemon replicas, CronJobs) share the
//!   catalog. A run takes the job's advisory lock ([`Catalog::try_lock_job`]) so that exactly one
//!   replica runs a job at a time, and scheduled runs claim their slot ([`Catalog::claim_slot`]).
//!
//! The statements are written once, with `?` placeholders, and run on either pool
//! ([`with_pool!`]); [`Catalog::sql`] numbers the placeholders (`$1`, `$2`, …) for PostgreSQL.
//! They stay portable: TEXT timestamps (RFC 3339 UTC, [`sortable`]), BIGINT sizes, `ON CONFLICT`,
//! no aggregates that differ between the two. Migrations are embedded in the binary and applied in
//! order on open, in one transaction (on PostgreSQL under an advisory lock, so replicas starting
//! together do not race).

use std::path::PathBuf;
use std::str::FromStr;

use jiff::Timestamp;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};

use crate::manifest::Manifest;
use crate::{Error, Result};

/// Embedded migrations, applied in order; never edit one that has shipped, add a new one.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_schedule_claims.sql")),
    (3, include_str!("migrations/0003_drills.sql")),
];

/// The advisory lock key migrations run under (PostgreSQL): `hashtext('drctl:migrate')`.
const MIGRATE_LOCK: &str = "drctl:migrate";

/// Run `$body` with `$pool` bound to whichever pool the catalog has: the statements are the same,
/// only the driver differs.
macro_rules! with_pool {
    ($cat:expr, $pool:ident => $body:expr) => {
        match &$cat.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// Outcome of a backup run, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupStatus {
    /// Committed on every target of the job.
    Ok,
    /// Committed on some targets only (`drctl sync` repairs it).
    Partial,
    /// Nothing committed.
    Failed,
}

impl BackupStatus {
    /// As the catalog, the API and logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupStatus::Ok => "ok",
            BackupStatus::Partial => "partial",
            BackupStatus::Failed => "failed",
        }
    }
    fn parse(s: &str) -> BackupStatus {
        match s {
            "ok" => BackupStatus::Ok,
            "partial" => BackupStatus::Partial,
            _ => BackupStatus::Failed,
        }
    }
}

/// A backup as listed.
#[derive(Debug, Clone, Serialize)]
pub struct BackupEntry {
    pub id: String,
    pub job: String,
    pub kind: String,
    pub status: BackupStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub plaintext_bytes: Option<u64>,
    pub stored_bytes: Option<u64>,
    /// Targets holding a committed copy.
    pub targets: Vec<String>,
    pub error: Option<String>,
    #[serde(skip)]
    pub manifest: Option<Manifest>,
}

/// Which backup of a job to pick.
#[derive(Debug, Clone)]
pub enum Selector {
    Latest,
    Id(String),
    /// The newest backup started at or before this time.
    Before(Timestamp),
    /// `--to-time`: the newest physical base backup consistent (by the server's clock) at or
    /// before this time.
    ConsistentBefore(Timestamp),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Latest => f.write_str("--latest"),
            Selector::Id(id) => write!(f, "--id {id}"),
            Selector::Before(t) => write!(f, "--before {t}"),
            Selector::ConsistentBefore(t) => write!(f, "--to-time {t} (a base backup consistent by then)"),
        }
    }
}

impl Selector {
    /// Whether a committed backup with this manifest matches.
    pub fn matches(&self, m: &Manifest) -> bool {
        match self {
            Selector::Latest => true,
            Selector::Id(id) => &m.backup_id == id,
            Selector::Before(t) => m.started_at <= *t,
            Selector::ConsistentBefore(t) => {
                crate::jobs::postgres::physical::PhysicalFacts::of(&m.facts).is_some_and(|f| f.stop_time <= *t)
            }
        }
    }
}

pub struct Catalog {
    pool: Pool,
    /// The URL without its password.
    url: String,
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A job's lock, held for a run ([`Catalog::try_lock_job`]). Dropping it without
/// [`JobLock::release`] (an aborted run) closes its connection, which releases the lock too.
pub struct JobLock {
    /// PostgreSQL: the connection holding the advisory lock; SQLite: nothing.
    conn: Option<(PgConnection, String)>,
}

impl JobLock {
    /// Release the lock (and close its connection).
    pub async fn release(mut self) {
        if let Some((mut conn, key)) = self.conn.take() {
            let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))").bind(&key).execute(&mut conn).await;
            let _ = conn.close().await;
        }
    }
}

/// RFC 3339 UTC with a fixed nine-digit fraction, so that timestamps sort as strings (the
/// catalog orders by them; `12Z` would otherwise sort after `12.5Z`).
pub fn sortable(t: Timestamp) -> String {
    format!("{}.{:09}Z", t.strftime("%Y-%m-%dT%H:%M:%S"), t.subsec_nanosecond())
}

/// The state directory: `$DRCTL_STATE_DIR`, else `/var/lib/drctl` as root, else
/// `~/.local/state/drctl` (the default catalog, the files caches of chunked volume jobs).
pub fn state_dir() -> PathBuf {
    if let Ok(d) = std::env::var("DRCTL_STATE_DIR") {
        PathBuf::from(d)
    } else if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/var/lib/drctl")
    } else {
        let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
        PathBuf::from(home).join(".local/state/drctl")
    }
}

/// The default catalog location: `catalog.db` in the state directory.
pub fn default_url() -> String {
    format!("sqlite://{}", state_dir().join("catalog.db").display())
}

impl Catalog {
    /// Open (creating if needed) and migrate the catalog at `url`.
    ///
    /// # Errors
    /// [`Error::Catalog`] when it cannot be opened, [`Error::Migration`] when its schema is newer.
    pub async fn open(url: &str) -> Result<Catalog> {
        let shown = crate::redact::url_for_display(url);
        let err = |source| Error::Catalog { url: shown.clone(), source };
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url).map_err(err)?;
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(std::time::Duration::from_secs(30))
                .connect_with(opts)
                .await
                .map_err(err)?;
            let cat = Catalog { pool: Pool::Postgres(pool), url: shown };
            cat.migrate().await?;
            return Ok(cat);
        }
        if !url.starts_with("sqlite:") {
            return Err(Error::Migration(format!(
                "catalog `{shown}`: unsupported URL scheme (use `sqlite://PATH` or `postgres://…`)"
            )));
        }
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(30));
        if let Some(parent) = std::path::Path::new(opts.get_filename()).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|source| Error::WriteFile { path: parent.to_path_buf(), source })?;
        }
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await.map_err(err)?;
        let cat = Catalog { pool: Pool::Sqlite(pool), url: shown };
        cat.migrate().await?;
        Ok(cat)
    }

    /// Open the catalog for `drctl catalog rebuild`: a SQLite file that is not a database (garbage,
    /// truncated) or is corrupt is moved aside to `<file>.corrupt-<UTC time>` (with its `-wal` and
    /// `-shm` files) and a new, empty catalog is created in its place. Nothing is deleted: the
    /// damaged file stays for inspection. Returns the path it was moved to, if it was.
    ///
    /// # Errors
    /// As [`Catalog::open`], and [`Error::WriteFile`] when the damaged file cannot be moved.
    pub async fn open_replacing_damaged(url: &str) -> Result<(Catalog, Option<PathBuf>)> {
        let source = match Catalog::open(url).await {
            Ok(cat) => return Ok((cat, None)),
            Err(Error::Catalog { source, .. }) if crate::error::catalog_file_damaged(&source) => source,
            Err(e) => return Err(e),
        };
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::Catalog { url: crate::redact::url_for_display(url), source: e })?;
        let file = opts.get_filename().to_path_buf();
        let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        let aside = PathBuf::from(format!("{}.corrupt-{stamp}", file.display()));
        tracing::warn!(file = %file.display(), error = %source, "the catalog file is damaged: moving it aside");
        std::fs::rename(&file, &aside).map_err(|e| Error::WriteFile { path: aside.clone(), source: e })?;
        for side in ["-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{side}", file.display()));
            if from.exists() {
                let to = PathBuf::from(format!("{}{side}", aside.display()));
                std::fs::rename(&from, &to).map_err(|e| Error::WriteFile { path: to.clone(), source: e })?;
            }
        }
        Ok((Catalog::open(url).await?, Some(aside)))
    }

    /// Whether this catalog is on PostgreSQL (several runners may share it).
    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// The URL, password removed.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn err(&self) -> impl Fn(sqlx::Error) -> Error + '_ {
        move |source| Error::Catalog { url: self.url.clone(), source }
    }

    /// `statement` for this catalog's driver: `?` placeholders become `$1`, `$2`, … on PostgreSQL.
    /// (The statements here have no `?` inside string literals.)
    fn sql(&self, statement: &'static str) -> AssertSqlSafe<String> {
        AssertSqlSafe(match self.pool {
            Pool::Sqlite(_) => statement.to_string(),
            Pool::Postgres(_) => number_placeholders(statement),
        })
    }

    /// A cheap round trip (`/readyz`).
    ///
    /// # Errors
    /// [`Error::Catalog`] when the catalog does not answer.
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()).map_err(self.err()))
    }

    async fn migrate(&self) -> Result<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(self.err())?;
            if self.is_postgres() {
                sqlx::query(self.sql("SELECT pg_advisory_xact_lock(hashtext(?))"))
                    .bind(MIGRATE_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err())?;
            }
            sqlx::query("CREATE TABLE IF NOT EXISTS drctl_schema (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)")
                .execute(&mut *tx)
                .await
                .map_err(self.err())?;
            let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM drctl_schema")
                .fetch_one(&mut *tx)
                .await
                .map_err(self.err())?
                .get(0);
            let newest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
            if current > newest {
                return Err(Error::Migration(format!(
                    "catalog `{}` has schema {current}, this drctl knows up to {newest}: upgrade drctl",
                    self.url
                )));
            }
            for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
                sqlx::raw_sql(AssertSqlSafe(*sql)).execute(&mut *tx).await.map_err(self.err())?;
                sqlx::query(self.sql("INSERT INTO drctl_schema (version, applied_at) VALUES (?, ?)"))
                    .bind(version)
                    .bind(sortable(Timestamp::now()))
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err())?;
            }
            tx.commit().await.map_err(self.err())
        })
    }

    /// Take `job`'s lock for one run, without waiting: `None` when another runner holds it.
    ///
    /// PostgreSQL: `pg_try_advisory_lock(hashtext('drctl:' || job))` on a connection of its own
    /// (not from the pool), held until [`JobLock::release`] or until the lock is dropped (the
    /// connection closes, the server releases the lock: a crashed or aborted run never leaves the
    /// job locked). SQLite: always granted, there is only one daemon.
    ///
    /// # Errors
    /// [`Error::Catalog`] when PostgreSQL cannot be reached.
    pub async fn try_lock_job(&self, job: &str) -> Result<Option<JobLock>> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(Some(JobLock { conn: None }));
        };
        let opts = pool.connect_options().as_ref().clone().log_statements(tracing::log::LevelFilter::Debug);
        let mut conn = opts.connect().await.map_err(self.err())?;
        let key = format!("drctl:{job}");
        let got: bool = sqlx::query("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(&key)
            .fetch_one(&mut conn)
            .await
            .map_err(self.err())?
            .get(0);
        if got {
            Ok(Some(JobLock { conn: Some((conn, key)) }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// Claim the scheduled run of `job` (`kind`: backup or verify) due at `slot` for `replica`:
    /// true when this call recorded it, false when another runner already had.
    ///
    /// # Errors
    /// [`Error::Catalog`].
    pub async fn claim_slot(&self, job: &str, kind: &str, slot: Timestamp, replica: &str) -> Result<bool> {
        let q = self.sql(
            "INSERT INTO schedule_claims (job, kind, slot, replica, claimed_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (job, kind, slot) DO NOTHING",
        );
        let done = with_pool!(self, pool => sqlx::query(q)
            .bind(job)
            .bind(kind)
            .bind(sortable(slot))
            .bind(replica)
            .bind(sortable(Timestamp::now()))
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(self.err())?);
        Ok(done == 1)
    }

    /// Record a committed backup and the targets that hold it.
    pub async fn record_backup(&self, m: &Manifest, status: BackupStatus, targets: &[String]) -> Result<()> {
        with_pool!(self, pool => {
        let mut tx = pool.begin().await.map_err(self.err())?;
        sqlx::query(self.sql(
            "INSERT INTO backups (id, job, kind, status, started_at, finished_at, plaintext_bytes, stored_bytes, error, manifest)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, manifest = excluded.manifest,
               finished_at = excluded.finished_at, plaintext_bytes = excluded.plaintext_bytes,
               stored_bytes = excluded.stored_bytes, error = NULL",
        ))
        .bind(&m.backup_id)
        .bind(&m.job)
        .bind(&m.kind)
        .bind(status.as_str())
        .bind(sortable(m.started_at))
        .bind(sortable(m.finished_at))
        .bind(m.plaintext_bytes() as i64)
        .bind(m.stored_bytes() as i64)
        .bind(String::from_utf8_lossy(&m.to_json()).into_owned())
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        for t in targets {
            sqlx::query(self.sql("INSERT INTO copies (backup_id, target, stored_at) VALUES (?, ?, ?) ON CONFLICT (backup_id, target) DO NOTHING"))
                .bind(&m.backup_id)
                .bind(t)
                .bind(sortable(m.finished_at))
                .execute(&mut *tx)
                .await
                .map_err(self.err())?;
        }
        tx.commit().await.map_err(self.err())
        })
    }

    /// Record a run that committed nothing, so `list` and metrics show it.
    pub async fn record_failure(&self, id: &str, job: &str, kind: &str, started: Timestamp, error: &str) -> Result<()> {
        let q = self.sql(
            "INSERT INTO backups (id, job, kind, status, started_at, finished_at, error) VALUES (?, ?, ?, 'failed', ?, ?, ?)
             ON CONFLICT (id) DO NOTHING",
        );
        with_pool!(self, pool => sqlx::query(q)
            .bind(id)
            .bind(job)
            .bind(kind)
            .bind(sortable(started))
            .bind(sortable(Timestamp::now()))
            .bind(crate::redact::scrub(error))
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(self.err())?);
        Ok(())
    }

    /// Backups, newest first, optionally of one job and/or held by one target.
    pub async fn list(&self, job: Option<&str>, target: Option<&str>) -> Result<Vec<BackupEntry>> {
        // one row per (backup, copy); the copies are folded into `targets` below
        let q = self.sql(
            "SELECT b.id, b.job, b.kind, b.status, b.started_at, b.finished_at, b.plaintext_bytes, b.stored_bytes, b.error, b.manifest,
                    c.target AS target
             FROM backups b LEFT JOIN copies c ON c.backup_id = b.id
             WHERE (CAST(? AS TEXT) IS NULL OR b.job = ?)
               AND (CAST(? AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM copies c2 WHERE c2.backup_id = b.id AND c2.target = ?))
             ORDER BY b.started_at DESC, b.id DESC, c.target",
        );
        let mut out: Vec<BackupEntry> = Vec::new();
        with_pool!(self, pool => {
            let rows = sqlx::query(q)
                .bind(job)
                .bind(job)
                .bind(target)
                .bind(target)
                .fetch_all(pool)
                .await
                .map_err(self.err())?;
            for r in rows {
                let id: String = r.get("id");
                let copy: Option<String> = r.get("target");
                if let Some(last) = out.last_mut()
                    && last.id == id
                {
                    last.targets.extend(copy);
                    continue;
                }
                let manifest: Option<String> = r.get("manifest");
                out.push(BackupEntry {
                    id,
                    job: r.get("job"),
                    kind: r.get("kind"),
                    status: BackupStatus::parse(r.get::<String, _>("status").as_str()),
                    started_at: r.get("started_at"),
                    finished_at: r.get("finished_at"),
                    plaintext_bytes: r.get::<Option<i64>, _>("plaintext_bytes").map(|v| v as u64),
                    stored_bytes: r.get::<Option<i64>, _>("stored_bytes").map(|v| v as u64),
                    targets: copy.into_iter().collect(),
                    error: r.get("error"),
                    manifest: manifest.and_then(|m| Manifest::from_json("catalog", m.as_bytes()).ok()),
                });
            }
        });
        Ok(out)
    }

    /// The committed backup of `job` that `selector` picks (newest first).
    pub async fn find(&self, job: &str, selector: &Selector) -> Result<Option<BackupEntry>> {
        Ok(self
            .list(Some(job), None)
            .await?
            .into_iter()
            .filter(|b| b.status != BackupStatus::Failed)
            .find(|b| b.manifest.as_ref().is_some_and(|m| selector.matches(m))))
    }

    /// Forget the copy of `id` on `target` (pruned); the backup disappears with its last copy.
    pub async fn remove_copy(&self, id: &str, target: &str) -> Result<()> {
        with_pool!(self, pool => {
        let mut tx = pool.begin().await.map_err(self.err())?;
        sqlx::query(self.sql("DELETE FROM copies WHERE backup_id = ? AND target = ?"))
            .bind(id)
            .bind(target)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        sqlx::query(self.sql("DELETE FROM backups WHERE id = ? AND status <> 'failed' AND NOT EXISTS (SELECT 1 FROM copies WHERE backup_id = ?)"))
            .bind(id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        tx.commit().await.map_err(self.err())
        })
    }

    /// Replace what the catalog knows about committed backups with `found` (manifest, targets).
    /// Failed-run records are kept.
    pub async fn rebuild_from(&self, found: &[(Manifest, Vec<String>, BackupStatus)]) -> Result<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(self.err())?;
            sqlx::query("DELETE FROM copies").execute(&mut *tx).await.map_err(self.err())?;
            sqlx::query("DELETE FROM backups WHERE status <> 'failed'").execute(&mut *tx).await.map_err(self.err())?;
            tx.commit().await.map_err(self.err())?;
        });
        for (m, targets, status) in found {
            self.record_backup(m, *status, targets).await?;
        }
        Ok(())
    }
}

/// `?` → `$1`, `$2`, … (PostgreSQL's placeholders).
fn number_placeholders(statement: &str) -> String {
    let mut out = String::with_capacity(statement.len() + 8);
    let mut n = 0;
    for c in statement.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

mod drills;
pub use drills::{BackupFlags, ListedBackup};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(number_placeholders("SELECT ? , ?, x FROM t WHERE a = ?"), "SELECT $1 , $2, x FROM t WHERE a = $3");
    }

    #[tokio::test]
    async fn slots_are_claimed_once_and_locks_are_free_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(&format!("sqlite://{}/catalog.db", dir.path().display())).await.unwrap();
        let slot: Timestamp = "2026-11-24T02:00:00Z".parse().unwrap();
        assert!(cat.claim_slot("pg", "backup", slot, "a").await.unwrap());
        assert!(!cat.claim_slot("pg", "backup", slot, "b").await.unwrap());
        assert!(cat.claim_slot("pg", "verify", slot, "b").await.unwrap());
        assert!(cat.claim_slot("redis", "backup", slot, "b").await.unwrap());
        let a = cat.try_lock_job("pg").await.unwrap().expect("sqlite: always granted");
        assert!(cat.try_lock_job("pg").await.unwrap().is_some());
        a.release().await;
        cat.ping().await.unwrap();
        assert!(!cat.is_postgres());
    }

    #[tokio::test]
    async fn record_list_find_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/catalog.db", dir.path().display());
        let cat = Catalog::open(&url).await.unwrap();
        let m1 = crate::manifest::sample();
        let mut m2 = m1.clone();
        m2.backup_id = "20261124T020000Z-000001".into();
        m2.started_at = "2026-11-24T02:00:00Z".parse().unwrap();
        cat.record_backup(&m1, BackupStatus::Ok, &["a".into(), "b".into()]).await.unwrap();
        cat.record_backup(&m2, BackupStatus::Partial, &["a".into()]).await.unwrap();
        cat.record_failure(
            "20261125T020000Z-000002",
            "pg",
            "postgres",
            "2026-11-25T02:00:00Z".parse().unwrap(),
            "boom",
        )
        .await
        .unwrap();

        let all = cat.list(Some("pg"), None).await.unwrap();
        assert_eq!(
            all.iter().map(|b| b.status).collect::<Vec<_>>(),
            [BackupStatus::Failed, BackupStatus::Partial, BackupStatus::Ok]
        );
        assert_eq!(cat.list(None, Some("b")).await.unwrap().len(), 1);
        let latest = cat.find("pg", &Selector::Latest).await.unwrap().unwrap();
        assert_eq!(latest.id, m2.backup_id);
        let before = cat.find("pg", &Selector::Before("2026-11-23T12:00:00Z".parse().unwrap())).await.unwrap().unwrap();
        assert_eq!(before.id, m1.backup_id);
        assert!(cat.find("other", &Selector::Latest).await.unwrap().is_none());

        // reopening does not re-apply migrations
        drop(cat);
        let cat = Catalog::open(&url).await.unwrap();
        cat.rebuild_from(&[(m1.clone(), vec!["b".into()], BackupStatus::Ok)]).await.unwrap();
        let all = cat.list(Some("pg"), None).await.unwrap();
        assert_eq!(all.len(), 2, "rebuild keeps failed records and replaces committed ones");
        assert_eq!(all[1].targets, vec!["b".to_string()]);
    }
}
