//! Restore drills and suspicious backups in the catalog (schema 3): one row per drill with its
//! record, and the reason a committed backup was flagged suspicious at backup time. Kept in tables
//! of their own so that `rebuild_from` (which replaces the `backups` rows) leaves them alone.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;
use sqlx::Row;

use super::{Catalog, Pool, sortable};
use crate::Result;
use crate::manifest::DrillRecord;
use crate::retention::DrillResult;

/// What `drctl list` shows about a backup besides its copies.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BackupFlags {
    /// Result of the backup's latest drill (`ok`, `failed`), `None` if never drilled.
    pub verified: Option<String>,
    /// When that drill finished.
    pub verified_at: Option<String>,
    /// Why the backup was flagged suspicious at backup time.
    pub suspicious: Option<String>,
}

/// One row of `drctl list --json` and of the API's backups endpoint: the entry and its flags.
#[derive(Debug, Clone, Serialize)]
pub struct ListedBackup {
    #[serde(flatten)]
    pub entry: super::BackupEntry,
    #[serde(flatten)]
    pub flags: BackupFlags,
}

impl Catalog {
    /// Backups newest first with their drill and suspicious flags: what `drctl list` and
    /// `GET /api/v1/jobs/{job}/backups` show (one shape for both).
    pub async fn list_flagged(&self, job: Option<&str>, target: Option<&str>) -> Result<Vec<ListedBackup>> {
        let entries = self.list(job, target).await?;
        let mut flags = self.backup_flags(job).await?;
        Ok(entries
            .into_iter()
            .map(|entry| {
                let flags = flags.remove(&entry.id).unwrap_or_default();
                ListedBackup { entry, flags }
            })
            .collect())
    }

    /// Store a drill's result.
    pub async fn record_drill(&self, r: &DrillRecord) -> Result<()> {
        let q = self.sql(
            "INSERT INTO drills (job, backup_id, status, started_at, finished_at, restore_seconds, record)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (job, started_at) DO UPDATE SET status = excluded.status, record = excluded.record",
        );
        let record = crate::redact::scrub(&String::from_utf8_lossy(&r.to_json()));
        with_pool!(self, pool => sqlx::query(q)
            .bind(&r.job)
            .bind(r.backup_id.as_deref())
            .bind(r.status.as_str())
            .bind(sortable(r.started_at))
            .bind(sortable(r.finished_at))
            .bind(r.restore_seconds)
            .bind(record)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(self.err()))
    }

    /// The drills of `job`, newest first.
    pub async fn drills(&self, job: &str) -> Result<Vec<DrillRecord>> {
        let q = self.sql("SELECT record FROM drills WHERE job = ? ORDER BY started_at DESC");
        let rows: Vec<String> = with_pool!(self, pool => sqlx::query(q)
            .bind(job)
            .fetch_all(pool)
            .await
            .map(|rows| rows.iter().map(|r| r.get::<String, _>(0)).collect())
            .map_err(self.err())?);
        Ok(rows.iter().filter_map(|r| DrillRecord::from_json(r.as_bytes())).collect())
    }

    /// The drills of `job` as the retention planner sees them.
    pub async fn drill_results(&self, job: &str) -> Result<Vec<DrillResult>> {
        let q = self.sql("SELECT backup_id, status, finished_at FROM drills WHERE job = ? AND backup_id IS NOT NULL");
        let rows: Vec<(String, String, String)> = with_pool!(self, pool => sqlx::query(q)
            .bind(job)
            .fetch_all(pool)
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
            .map_err(self.err())?);
        Ok(rows
            .into_iter()
            .filter_map(|(backup_id, status, at)| {
                Some(DrillResult { backup_id, at: at.parse::<Timestamp>().ok()?, passed: status == "ok" })
            })
            .collect())
    }

    /// Flag a committed backup as suspicious.
    pub async fn set_suspicious(&self, backup_id: &str, job: &str, reason: &str) -> Result<()> {
        let q = self.sql(
            "INSERT INTO suspicious (backup_id, job, reason) VALUES (?, ?, ?)
             ON CONFLICT (backup_id) DO UPDATE SET reason = excluded.reason",
        );
        with_pool!(self, pool => sqlx::query(q)
            .bind(backup_id)
            .bind(job)
            .bind(reason)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(self.err()))
    }

    /// Per backup id (of `job`, or every job): its latest drill and its suspicious flag.
    pub async fn backup_flags(&self, job: Option<&str>) -> Result<BTreeMap<String, BackupFlags>> {
        let mut out: BTreeMap<String, BackupFlags> = BTreeMap::new();
        let q = self.sql(
            "SELECT backup_id, status, finished_at FROM drills
             WHERE backup_id IS NOT NULL AND (? IS NULL OR job = ?) ORDER BY started_at",
        );
        let drills: Vec<(String, String, String)> = with_pool!(self, pool => sqlx::query(q)
            .bind(job)
            .bind(job)
            .fetch_all(pool)
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
            .map_err(self.err())?);
        for (id, status, at) in drills {
            // oldest first: the latest drill of a backup wins
            let f = out.entry(id).or_default();
            f.verified = Some(status);
            f.verified_at = Some(at);
        }
        let q = self.sql("SELECT backup_id, reason FROM suspicious WHERE (? IS NULL OR job = ?)");
        let flagged: Vec<(String, String)> = with_pool!(self, pool => sqlx::query(q)
            .bind(job)
            .bind(job)
            .fetch_all(pool)
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            .map_err(self.err())?);
        for (id, reason) in flagged {
            out.entry(id).or_default().suspicious = Some(reason);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{DrillStatus, RECORD_FORMAT, RECORD_VERSION};

    fn record(id: &str, at: &str, status: DrillStatus) -> DrillRecord {
        let t: Timestamp = at.parse().unwrap();
        DrillRecord {
            format: RECORD_FORMAT.into(),
            version: RECORD_VERSION,
            job: "pg".into(),
            kind: "postgres".into(),
            backup_id: Some(id.into()),
            status,
            started_at: t,
            finished_at: t,
            restore_seconds: 1.0,
            duration_seconds: 2.0,
            plaintext_bytes: 1,
            stored_bytes: 1,
            restored_bytes: 1,
            destinations: vec![],
            findings: vec![],
            host: "h".into(),
            drctl_version: "0".into(),
        }
    }

    #[tokio::test]
    async fn drills_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(&format!("sqlite://{}/c.db", dir.path().display())).await.unwrap();
        cat.record_drill(&record("b1", "2026-11-23T06:00:00Z", DrillStatus::Ok)).await.unwrap();
        cat.record_drill(&record("b1", "2026-11-24T06:00:00Z", DrillStatus::Failed)).await.unwrap();
        cat.record_drill(&record("b2", "2026-11-24T07:00:00Z", DrillStatus::Ok)).await.unwrap();
        cat.set_suspicious("b3", "pg", "empty").await.unwrap();
        let flags = cat.backup_flags(Some("pg")).await.unwrap();
        assert_eq!(flags["b1"].verified.as_deref(), Some("failed"), "the latest drill wins");
        assert_eq!(flags["b2"].verified.as_deref(), Some("ok"));
        assert_eq!(flags["b3"].suspicious.as_deref(), Some("empty"));
        assert!(cat.backup_flags(Some("other")).await.unwrap().is_empty());
        assert_eq!(cat.drills("pg").await.unwrap().len(), 3);
        assert_eq!(cat.drill_results("pg").await.unwrap().len(), 3);
    }
}
