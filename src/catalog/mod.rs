//! The catalog: an index of backups and where their copies are.
//!
//! The targets are the source of truth (a backup exists where its manifest is); the catalog makes
//! `list` and `restore --latest` fast and remembers failed runs. It can always be recreated from
//! the targets with [`Catalog::rebuild_from`], which is what a fresh machine does first.
//!
//! SQLite by default (a file in the state directory). Migrations are embedded in the binary and
//! applied in order on open; the SQL is kept portable for a later PostgreSQL backend.

use std::path::PathBuf;
use std::str::FromStr;

use jiff::Timestamp;
use serde::Serialize;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::manifest::Manifest;
use crate::{Error, Result};

/// Embedded migrations, applied in order; never edit one that has shipped, add a new one.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("migrations/0001_init.sql"))];

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
    fn as_str(self) -> &'static str {
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
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Latest => f.write_str("--latest"),
            Selector::Id(id) => write!(f, "--id {id}"),
            Selector::Before(t) => write!(f, "--before {t}"),
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
        }
    }
}

pub struct Catalog {
    pool: SqlitePool,
    url: String,
}

/// RFC 3339 UTC with a fixed nine-digit fraction, so that timestamps sort as strings (the
/// catalog orders by them; `12Z` would otherwise sort after `12.5Z`).
pub fn sortable(t: Timestamp) -> String {
    format!("{}.{:09}Z", t.strftime("%Y-%m-%dT%H:%M:%S"), t.subsec_nanosecond())
}

/// The default catalog location: `catalog.db` in the state directory.
pub fn default_url() -> String {
    let dir = if let Ok(d) = std::env::var("DRCTL_STATE_DIR") {
        PathBuf::from(d)
    } else if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/var/lib/drctl")
    } else {
        let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
        PathBuf::from(home).join(".local/state/drctl")
    };
    format!("sqlite://{}", dir.join("catalog.db").display())
}

impl Catalog {
    /// Open (creating if needed) and migrate the catalog at `url`.
    ///
    /// # Errors
    /// [`Error::Catalog`] when it cannot be opened, [`Error::Migration`] when its schema is newer.
    pub async fn open(url: &str) -> Result<Catalog> {
        let shown = crate::redact::url_for_display(url);
        let err = |source| Error::Catalog { url: shown.clone(), source };
        if !url.starts_with("sqlite:") {
            return Err(Error::Migration(format!(
                "catalog `{shown}`: only `sqlite:` catalogs are supported by this version"
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
        let cat = Catalog { pool, url: shown };
        cat.migrate().await?;
        Ok(cat)
    }

    fn err(&self) -> impl Fn(sqlx::Error) -> Error + '_ {
        move |source| Error::Catalog { url: self.url.clone(), source }
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS drctl_schema (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)")
            .execute(&self.pool)
            .await
            .map_err(self.err())?;
        let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM drctl_schema")
            .fetch_one(&self.pool)
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
            let mut tx = self.pool.begin().await.map_err(self.err())?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql)).execute(&mut *tx).await.map_err(self.err())?;
            sqlx::query("INSERT INTO drctl_schema (version, applied_at) VALUES (?, ?)")
                .bind(version)
                .bind(sortable(Timestamp::now()))
                .execute(&mut *tx)
                .await
                .map_err(self.err())?;
            tx.commit().await.map_err(self.err())?;
        }
        Ok(())
    }

    /// Record a committed backup and the targets that hold it.
    pub async fn record_backup(&self, m: &Manifest, status: BackupStatus, targets: &[String]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(self.err())?;
        sqlx::query(
            "INSERT INTO backups (id, job, kind, status, started_at, finished_at, plaintext_bytes, stored_bytes, error, manifest)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, manifest = excluded.manifest,
               finished_at = excluded.finished_at, plaintext_bytes = excluded.plaintext_bytes,
               stored_bytes = excluded.stored_bytes, error = NULL",
        )
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
            sqlx::query("INSERT INTO copies (backup_id, target, stored_at) VALUES (?, ?, ?) ON CONFLICT (backup_id, target) DO NOTHING")
                .bind(&m.backup_id)
                .bind(t)
                .bind(sortable(m.finished_at))
                .execute(&mut *tx)
                .await
                .map_err(self.err())?;
        }
        tx.commit().await.map_err(self.err())
    }

    /// Record a run that committed nothing, so `list` and metrics show it.
    pub async fn record_failure(&self, id: &str, job: &str, kind: &str, started: Timestamp, error: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO backups (id, job, kind, status, started_at, finished_at, error) VALUES (?, ?, ?, 'failed', ?, ?, ?)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(job)
        .bind(kind)
        .bind(sortable(started))
        .bind(sortable(Timestamp::now()))
        .bind(crate::redact::scrub(error))
        .execute(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(())
    }

    /// Backups, newest first, optionally of one job and/or held by one target.
    pub async fn list(&self, job: Option<&str>, target: Option<&str>) -> Result<Vec<BackupEntry>> {
        let rows = sqlx::query(
            "SELECT b.id, b.job, b.kind, b.status, b.started_at, b.finished_at, b.plaintext_bytes, b.stored_bytes, b.error, b.manifest,
                    (SELECT GROUP_CONCAT(c.target, ',') FROM copies c WHERE c.backup_id = b.id) AS targets
             FROM backups b
             WHERE (? IS NULL OR b.job = ?)
               AND (? IS NULL OR EXISTS (SELECT 1 FROM copies c2 WHERE c2.backup_id = b.id AND c2.target = ?))
             ORDER BY b.started_at DESC, b.id DESC",
        )
        .bind(job)
        .bind(job)
        .bind(target)
        .bind(target)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let targets: Option<String> = r.get("targets");
                let mut targets: Vec<String> =
                    targets.unwrap_or_default().split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
                targets.sort();
                let manifest: Option<String> = r.get("manifest");
                BackupEntry {
                    id: r.get("id"),
                    job: r.get("job"),
                    kind: r.get("kind"),
                    status: BackupStatus::parse(r.get::<String, _>("status").as_str()),
                    started_at: r.get("started_at"),
                    finished_at: r.get("finished_at"),
                    plaintext_bytes: r.get::<Option<i64>, _>("plaintext_bytes").map(|v| v as u64),
                    stored_bytes: r.get::<Option<i64>, _>("stored_bytes").map(|v| v as u64),
                    targets,
                    error: r.get("error"),
                    manifest: manifest.and_then(|m| Manifest::from_json("catalog", m.as_bytes()).ok()),
                }
            })
            .collect())
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
        let mut tx = self.pool.begin().await.map_err(self.err())?;
        sqlx::query("DELETE FROM copies WHERE backup_id = ? AND target = ?")
            .bind(id)
            .bind(target)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        sqlx::query("DELETE FROM backups WHERE id = ? AND status <> 'failed' AND NOT EXISTS (SELECT 1 FROM copies WHERE backup_id = ?)")
            .bind(id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        tx.commit().await.map_err(self.err())
    }

    /// Replace what the catalog knows about committed backups with `found` (manifest, targets).
    /// Failed-run records are kept.
    pub async fn rebuild_from(&self, found: &[(Manifest, Vec<String>, BackupStatus)]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(self.err())?;
        sqlx::query("DELETE FROM copies").execute(&mut *tx).await.map_err(self.err())?;
        sqlx::query("DELETE FROM backups WHERE status <> 'failed'").execute(&mut *tx).await.map_err(self.err())?;
        tx.commit().await.map_err(self.err())?;
        for (m, targets, status) in found {
            self.record_backup(m, *status, targets).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
