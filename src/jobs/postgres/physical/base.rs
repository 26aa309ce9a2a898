//! `drctl run` of a physical job: one base backup, `pg_basebackup -Ft -D - -X none`, streamed
//! through the pipeline as one tar (PostgreSQL 15 injects `backup_manifest` into it), never staged.
//!
//! `-X none`: the WAL that makes the copy consistent comes from drctl's own archive, so the run
//! commits only once every target holds the WAL from the backup's start to its end LSN (both read
//! from the stream itself: `backup_label` and the manifest's `WAL-Ranges`). The manifest records
//! those LSNs and the server's own times, which choose the base backup for `restore --to-time`:
//! never the backup host's clock.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::{Connection, Row};

use super::lsn::{Lsn, Segments};
use super::store;
use super::tartap::{Tap, Watcher};
use crate::exec::Cmd;
use crate::jobs::postgres::{Conn, PostgresJob, Tools, find_tools, server_version, tool_failure};
use crate::jobs::{ArtifactPlan, SourceStream};
use crate::targets::Target;
use crate::{Error, Result};

pub const FORMAT_BASE: &str = "pg_basebackup-tar";
pub const ARTIFACT: &str = "base";
/// `facts.method` of a physical backup's manifest.
pub const METHOD: &str = "physical";

/// Facts in the manifest of a base backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PhysicalFacts {
    /// Always `physical` (a `dump` manifest has no `method`).
    pub method: String,
    pub server_version: String,
    pub pg_basebackup_version: String,
    pub system_identifier: String,
    pub timeline: u32,
    pub wal_segment_size: u64,
    /// WAL from here ...
    pub start_lsn: Lsn,
    /// ... to here makes the copy consistent.
    pub stop_lsn: Lsn,
    /// The server's clock when the backup started (before pg_basebackup connected).
    pub start_time: jiff::Timestamp,
    /// The server's clock after the backup ended (at or after its consistent point): a restore
    /// to a time uses the newest base backup with `stop_time` at or before that time.
    pub stop_time: jiff::Timestamp,
    /// Size of the cluster's databases when the backup started.
    pub size_bytes: u64,
}

impl PhysicalFacts {
    /// The facts of a physical manifest; `None` for any other.
    pub fn of(facts: &serde_json::Value) -> Option<PhysicalFacts> {
        (facts.get("method")?.as_str()? == METHOD).then(|| serde_json::from_value(facts.clone()).ok()).flatten()
    }

    pub fn segments(&self) -> Segments {
        Segments::new(self.wal_segment_size).unwrap_or(Segments::DEFAULT)
    }
}

/// A base backup in progress.
pub struct BaseBackup {
    job: String,
    conn: Conn,
    tools: Tools,
    /// `pg_basebackup --version`, for the manifest.
    basebackup_version: String,
    server_version: String,
    system_identifier: String,
    segments: Segments,
    size_bytes: u64,
    start_time: jiff::Timestamp,
    max_delay: Duration,
    watcher: Option<Arc<Mutex<Watcher>>>,
    /// What `drctl check` should warn about (message, hint): the slot and its limits.
    warnings: Vec<(String, String)>,
}

async fn server_now(c: &mut sqlx::PgConnection, job: &str) -> Result<jiff::Timestamp> {
    let t: String =
        sqlx::query("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
            .fetch_one(&mut *c)
            .await
            .map_err(|e| Error::source_failed(job, format!("cannot read the server's clock: {e}"), None))?
            .get(0);
    t.parse().map_err(|e| Error::source_failed(job, format!("unexpected server time `{t}`: {e}"), None))
}

impl BaseBackup {
    pub async fn prepare(job: &str, pg: &PostgresJob) -> Result<BaseBackup> {
        let conn = Conn::from_job(job, pg)?;
        let mut c = conn.connect(job).await?;
        let server_version = server_version(&mut c, job).await?;
        let row = sqlx::query(
            "SELECT current_setting('wal_level'), (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), \
             (SELECT system_identifier::text FROM pg_control_system()), \
             (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), \
             (SELECT coalesce(sum(pg_database_size(oid)), 0)::bigint FROM pg_database \
              WHERE has_database_privilege(oid, 'CONNECT'))",
        )
        .fetch_one(&mut c)
        .await
        .map_err(|e| Error::source_failed(job, format!("cannot read the server's settings: {e}"), None))?;
        let wal_level: String = row.get(0);
        if wal_level == "minimal" {
            return Err(Error::source_failed(
                job,
                "the server runs with `wal_level = minimal`: no base backup or WAL archive is possible",
                Some("set `wal_level = replica` (the default) and restart the server".into()),
            ));
        }
        if !row.get::<Option<bool>, _>(3).unwrap_or(false) {
            return Err(Error::source_failed(
                job,
                format!("the role of {} lacks REPLICATION", conn.display()),
                Some("`ALTER ROLE … REPLICATION` (and allow it in pg_hba.conf as `replication`)".into()),
            ));
        }
        let segments = Segments::new(row.get::<i64, _>(1) as u64)
            .ok_or_else(|| Error::source_failed(job, "unexpected wal_segment_size", None))?;
        let system_identifier: String = row.get(2);
        let size_bytes = row.get::<i64, _>(4).max(0) as u64;
        let start_time = server_now(&mut c, job).await?;
        let warnings = slot_warnings(&mut c, job, &pg.wal_slot(job)).await;
        let _ = c.close().await;
        let tools = find_tools(job, pg.bin_dir.as_deref(), &server_version).await?;
        let basebackup_version =
            crate::jobs::postgres::tool_version(&tools.path("pg_basebackup")).await.unwrap_or_default();
        Ok(BaseBackup {
            basebackup_version,
            job: job.to_string(),
            conn,
            tools,
            server_version,
            system_identifier,
            segments,
            size_bytes,
            start_time,
            max_delay: pg.wal_max_delay(),
            watcher: None,
            warnings,
        })
    }

    pub fn artifacts(&self) -> Vec<ArtifactPlan> {
        vec![ArtifactPlan { name: ARTIFACT.into(), format: FORMAT_BASE, ext: "tar", size_hint: Some(self.size_bytes) }]
    }

    pub async fn open(&mut self, _artifact: &ArtifactPlan) -> Result<SourceStream> {
        let job = self.job.clone();
        let cmd = self.conn.apply(
            Cmd::new(self.tools.path("pg_basebackup"))
                .arg("--format=tar")
                .arg("--pgdata=-")
                .arg("--wal-method=none")
                .arg("--checkpoint=fast")
                .arg("--no-password")
                .arg(format!("--label=drctl {job}")),
        );
        tracing::info!(job = %job, "pg_basebackup: a base backup of the whole cluster (WAL from drctl's archive)");
        let mut running = cmd
            .spawn(Stdio::null(), Stdio::piped())
            .map_err(|e| Error::source_failed(&job, format!("cannot start `{}`: {e}", cmd.display()), None))?;
        let stdout = running
            .child
            .stdout
            .take()
            .ok_or_else(|| Error::source_failed(&job, "pg_basebackup has no stdout", None))?;
        let (reader, watcher) = Tap::new(stdout);
        self.watcher = Some(watcher);
        let completion = Box::pin(async move {
            let (status, stderr) = running
                .wait()
                .await
                .map_err(|e| Error::source_failed(&job, format!("waiting for pg_basebackup failed: {e}"), None))?;
            if !status.success() {
                return Err(Error::source_failed(
                    &job,
                    tool_failure("pg_basebackup", &status, &stderr, 5),
                    Some("nothing was committed; fix the cause and run the job again".into()),
                ));
            }
            Ok(())
        });
        Ok(SourceStream { reader: Box::new(reader), completion })
    }

    /// The facts, once the WAL the copy needs is on every target in `live` (waits for the
    /// receiver: up to twice `max_delay` plus a minute).
    pub async fn finish(&mut self, live: &[Arc<Target>]) -> Result<serde_json::Value> {
        let job = self.job.clone();
        let seen = self
            .watcher
            .as_ref()
            .and_then(|w| w.lock().ok().map(|w| w.seen.clone()))
            .ok_or_else(|| Error::source_failed(&job, "the base backup stream was not read", None))?;
        let label = String::from_utf8_lossy(&seen.label);
        let tail = String::from_utf8_lossy(&seen.manifest_tail);
        let (start_lsn, start_tli) = parse_label(&label).ok_or_else(|| {
            Error::source_failed(
                &job,
                "the base backup has no readable `backup_label`: not a pg_basebackup archive?",
                None,
            )
        })?;
        let (stop_lsn, timeline) = parse_wal_ranges(&tail).ok_or_else(|| {
            Error::source_failed(
                &job,
                "the base backup's `backup_manifest` has no WAL-Ranges (pg_basebackup too old, or `--no-manifest`?)",
                None,
            )
        })?;
        let mut c = self.conn.connect(&job).await?;
        let stop_time = server_now(&mut c, &job).await?;
        let _ = c.close().await;
        if start_tli != timeline {
            tracing::warn!(job = %job, "the server changed timeline during the base backup ({start_tli} → {timeline})");
        }
        self.wait_for_wal(live, timeline, start_lsn, stop_lsn).await?;
        let facts = PhysicalFacts {
            method: METHOD.into(),
            server_version: self.server_version.clone(),
            pg_basebackup_version: self.basebackup_version.clone(),
            system_identifier: self.system_identifier.clone(),
            timeline,
            wal_segment_size: self.segments.size,
            start_lsn,
            stop_lsn,
            start_time: self.start_time,
            stop_time,
            size_bytes: self.size_bytes,
        };
        serde_json::to_value(facts).map_err(|e| Error::Pipeline(e.to_string()))
    }

    async fn wait_for_wal(&self, live: &[Arc<Target>], tli: u32, from: Lsn, to: Lsn) -> Result<()> {
        let limit = self.max_delay * 2 + Duration::from_secs(60);
        let deadline = tokio::time::Instant::now() + limit;
        let seg = self.segments;
        tracing::info!(
            job = %self.job,
            "waiting for the WAL of the base backup ({from} to {to}) on every target (the receiver ships it within `wal.max_delay`)"
        );
        loop {
            let mut missing = Vec::new();
            for t in live {
                let listed = store::list_timeline(t, &self.job, tli, seg).await?;
                if !listed.covers(from, to, seg) {
                    missing.push(t.name().to_string());
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::source_failed(
                    &self.job,
                    format!(
                        "the WAL the base backup needs ({from} to {to}, segment {}) did not reach target(s) {} within {}",
                        seg.name(tli, seg.segno(to)),
                        missing.join(", "),
                        humantime::format_duration(limit)
                    ),
                    Some(format!(
                        "is the WAL receiver running (`drctl wal stream {}`, or the daemon)? nothing was committed",
                        self.job
                    )),
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    pub async fn close(self, _committed: bool) {}

    /// What `drctl check` warns about: a missing or idle replication slot, an invalidated one,
    /// and a server that lets a slot keep WAL without limit.
    pub fn warnings(&self) -> Vec<(String, String)> {
        self.warnings.clone()
    }

    pub fn describe(&self) -> String {
        format!(
            "PostgreSQL {} at {} (physical: base backups + WAL, cluster {})",
            self.server_version,
            self.conn.display(),
            crate::units::bytes(self.size_bytes)
        )
    }

    pub async fn check_tools(&self) -> Result<()> {
        let path = self.tools.path("pg_basebackup");
        match crate::jobs::postgres::tool_version(&path).await {
            Some(_) => Ok(()),
            None => Err(Error::source_failed(
                &self.job,
                format!("`{}` is missing or does not run", path.display()),
                Some("install the PostgreSQL client tools of the server's major version".into()),
            )),
        }
    }
}

async fn slot_warnings(c: &mut sqlx::PgConnection, job: &str, slot: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let limit: Option<String> = sqlx::query_scalar("SELECT current_setting('max_slot_wal_keep_size')")
        .fetch_optional(&mut *c)
        .await
        .ok()
        .flatten();
    if limit.as_deref() == Some("-1") {
        out.push((
            format!("`max_slot_wal_keep_size` is unlimited: if the WAL receiver stops, slot `{slot}` keeps WAL until the server's disk is full"),
            "set e.g. `max_slot_wal_keep_size = '20GB'` on the server (past it the slot is invalidated: a gap, alerted as WalGap, healed by a new base backup)".into(),
        ));
    }
    let row = sqlx::query(
        "SELECT active, wal_status, (pg_current_wal_lsn() - restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut *c)
    .await;
    let receiver = format!("run `drctl wal stream {job}` (or the daemon, which runs it)");
    match row {
        Ok(None) => out.push((format!("replication slot `{slot}` does not exist: no WAL is archived yet"), receiver)),
        Ok(Some(r)) => {
            let active: bool = r.get(0);
            let status: Option<String> = r.get(1);
            let held: Option<i64> = r.get(2);
            if status.as_deref() == Some("lost") {
                out.push((
                    format!("replication slot `{slot}` was invalidated by the server: the WAL archive has a gap"),
                    format!("{receiver}; then take a new base backup (`drctl run {job}`)"),
                ));
            } else if !active {
                out.push((
                    format!(
                        "no WAL receiver is streaming from slot `{slot}`; it keeps {} of WAL on the server",
                        crate::units::bytes(held.unwrap_or(0).max(0) as u64)
                    ),
                    receiver,
                ));
            }
        }
        Err(_) => {}
    }
    out
}

/// `START WAL LOCATION: 0/2000028 (file …)` and `START TIMELINE: 1` of a backup_label.
pub fn parse_label(label: &str) -> Option<(Lsn, u32)> {
    let mut lsn = None;
    let mut tli = None;
    for line in label.lines() {
        if let Some(rest) = line.strip_prefix("START WAL LOCATION: ") {
            lsn = rest.split_whitespace().next().and_then(|l| l.parse().ok());
        } else if let Some(rest) = line.strip_prefix("START TIMELINE: ") {
            tli = rest.trim().parse().ok();
        }
    }
    Some((lsn?, tli?))
}

/// The last `End-LSN` and its `Timeline` in a backup manifest's `WAL-Ranges` (read from its end).
pub fn parse_wal_ranges(tail: &str) -> Option<(Lsn, u32)> {
    let ranges = &tail[tail.rfind("\"WAL-Ranges\"")?..];
    let field = |entry: &str, name: &str| -> Option<String> {
        let at = entry.rfind(&format!("\"{name}\""))? + name.len() + 2;
        let rest = entry[at..].trim_start().strip_prefix(':')?.trim_start();
        let value: String =
            rest.trim_start_matches('"').chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '/').collect();
        Some(value)
    };
    let last = &ranges[ranges.rfind('{')?..];
    Some((field(last, "End-LSN")?.parse().ok()?, field(last, "Timeline")?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_label_and_manifest_ranges() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n\
                     BACKUP METHOD: streamed\nSTART TIME: 2026-12-05 12:06:12 UTC\nSTART TIMELINE: 1\n";
        assert_eq!(parse_label(label), Some(("0/2000028".parse().unwrap(), 1)));
        assert_eq!(parse_label("garbage"), None);
        let tail = "\"Checksum\": \"43872087\" }\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \
                    \"End-LSN\": \"0/2000100\" }\n],\n\"Manifest-Checksum\": \"5e0d\"}\n";
        assert_eq!(parse_wal_ranges(tail), Some(("0/2000100".parse().unwrap(), 1)));
        let two = "\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/3000000\" },\n\
                   { \"Timeline\": 2, \"Start-LSN\": \"0/3000000\", \"End-LSN\": \"0/3000100\" }\n]}";
        assert_eq!(parse_wal_ranges(two), Some(("0/3000100".parse().unwrap(), 2)));
        assert_eq!(parse_wal_ranges("{}"), None);
    }

    #[test]
    fn physical_facts_are_recognised() {
        let f = PhysicalFacts { method: METHOD.into(), timeline: 1, wal_segment_size: 16 << 20, ..Default::default() };
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(PhysicalFacts::of(&v), Some(f));
        assert_eq!(PhysicalFacts::of(&serde_json::json!({"server_version": "15"})), None);
    }
}
