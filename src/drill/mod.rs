//! Restore drills (`drctl verify`, the daemon's drill schedules): the one home of the concept.
//!
//! Why: a backup nobody has restored is a hope. A drill proves the stored bytes are intact (the
//! restore checks the stored sha256 before anything is decrypted, and the plaintext sha256 before a
//! consumer may commit), that the identity opens them, and that the data is what the source held.
//!
//! The flow, here: pick the backup (the newest, or `--id`) once, check that every target said to
//! hold it still has its manifest (a copy without one is not committed, and a rebuilt catalog
//! would not know it), create a [`ScratchDir`] and a [`Drill`] holding the resolved manifest and
//! the targets that hold it, and call the kind's own drill (`jobs::KIND::drill`), which restores
//! through [`Drill::restore`] into a scratch place (never the job's own source) and reports every
//! mismatch as a [`Finding`]. The result is a [`DrillRecord`] (an on-target format, beside the
//! manifest in [`crate::manifest`]): returned to the caller (CLI, daemon), stored in the catalog,
//! and written beside the backup on each target that holds it (`<backup-id>.verify.json`, see
//! [`crate::layout::verify_key`]) so a rebuilt catalog can know it too. Nothing here prints.
//!
//! This module sits above the engine (it uses restore and the catalog); the engine never uses it.

pub mod context;
pub use context::{Drill, ScratchDir};

use std::time::Instant;

use bytes::Bytes;
use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::Selector;
use crate::engine::Engine;
use crate::finding::{Finding, Severity};
use crate::jobs::JobSpec;
use crate::manifest::Manifest;
use crate::manifest::{DrillRecord, DrillStatus, RECORD_FORMAT, RECORD_VERSION};
use crate::{Result, layout};

/// A drill's record plus what happened while storing it.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    #[serde(flatten)]
    pub record: DrillRecord,
    /// Targets the record was written to.
    pub recorded_on: Vec<String>,
    /// Where the record could not be stored (catalog, a target): the drill's verdict stands.
    pub record_warnings: Vec<String>,
}

/// Drill `job_name`'s backup picked by `selector` (default: the newest).
///
/// # Errors
/// Only for an unknown job: every other failure is a failed drill with findings.
pub async fn verify_job(engine: &Engine, job_name: &str, selector: Option<Selector>) -> Result<DrillReport> {
    let result = drill(engine, job_name, selector).await;
    let failed = match &result {
        Ok(r) if r.record.passed() => None,
        Ok(r) => Some((
            r.record.backup_id.clone(),
            r.record.findings.iter().find(|f| f.severity == Severity::Error).map(|f| f.to_string()),
        )),
        Err(e) => Some((None, Some(e.to_string()))),
    };
    if let Some((backup_id, error)) = failed {
        let mut e = crate::notify::Event::new(crate::notify::EventKind::DrillFailed, job_name, "drill", "failed");
        e.backup_id = backup_id;
        e.error = error;
        e.hint = Some("the backup may not restore: run `drctl verify` for the findings".into());
        engine.notifier.send(&e).await;
    }
    result
}

async fn drill(engine: &Engine, job_name: &str, selector: Option<Selector>) -> Result<DrillReport> {
    let job = engine.config.job(job_name)?;
    let started = Timestamp::now();
    let clock = Instant::now();
    let selector = selector.unwrap_or(Selector::Latest);
    let mut record = DrillRecord {
        format: RECORD_FORMAT.into(),
        version: RECORD_VERSION,
        job: job.name.clone(),
        kind: job.spec.kind_name().into(),
        backup_id: None,
        status: DrillStatus::Failed,
        started_at: started,
        finished_at: started,
        restore_seconds: 0.0,
        duration_seconds: 0.0,
        plaintext_bytes: 0,
        stored_bytes: 0,
        restored_bytes: 0,
        destinations: Vec::new(),
        findings: Vec::new(),
        host: crate::host::name(),
        drctl_version: env!("CARGO_PKG_VERSION").into(),
    };
    let mut holders = Vec::new();
    match crate::engine::restore::resolve(engine, job_name, &selector).await {
        Err(e) => record.findings.push(Finding::new("backup", Severity::Error, e.to_string(), e.hint())),
        Ok((manifest, targets)) => {
            holders = targets;
            record.backup_id = Some(manifest.backup_id.clone());
            record.plaintext_bytes = manifest.plaintext_bytes();
            record.stored_bytes = manifest.stored_bytes();
            record.findings.extend(check_manifests(engine, &manifest, &holders).await);
            match ScratchDir::new() {
                Err(e) => record.findings.push(Finding::new(
                    "scratch directory",
                    Severity::Error,
                    format!("cannot create it: {e}"),
                    Some("set DRCTL_SCRATCH_DIR to a writable directory with room for the restore".into()),
                )),
                Ok(scratch) => {
                    let mut drill = Drill::new(engine, job, &manifest, &holders, &scratch);
                    match &job.spec {
                        // a base backup is drilled by replaying WAL, whatever the job says now
                        JobSpec::Postgres(c)
                            if crate::jobs::postgres::physical::PhysicalFacts::of(&manifest.facts).is_some() =>
                        {
                            crate::jobs::postgres::physical::drill::drill(&mut drill, c).await
                        }
                        JobSpec::Postgres(c) => crate::jobs::postgres::drill::drill(&mut drill, c).await,
                        JobSpec::Redis(_) => crate::jobs::redis::drill::drill(&mut drill).await,
                        JobSpec::Volume(_) => crate::jobs::volume::drill::drill(&mut drill).await,
                        JobSpec::Vault(c) => crate::jobs::vault::drill::drill(&mut drill, c).await,
                        JobSpec::Gitlab(_) => crate::jobs::gitlab::drill::drill(&mut drill).await,
                    }
                    record.restore_seconds = drill.restore_seconds;
                    record.restored_bytes = drill.restored_bytes;
                    record.destinations = std::mem::take(&mut drill.destinations);
                    record.findings.extend(drill.findings);
                }
            }
        }
    }
    record.status = if record.findings.iter().any(|f| f.severity == Severity::Error) {
        DrillStatus::Failed
    } else {
        DrillStatus::Ok
    };
    record.finished_at = Timestamp::now();
    record.duration_seconds = clock.elapsed().as_secs_f64();
    if record.passed() {
        tracing::info!(job = %record.job, backup = record.backup_id.as_deref(), restore_seconds = record.restore_seconds, "restore drill passed");
    } else {
        let first = record.findings.iter().find(|f| f.severity == Severity::Error).map(|f| f.to_string());
        tracing::warn!(job = %record.job, backup = record.backup_id.as_deref(), error = first.as_deref(), "restore drill failed");
    }

    let mut report = DrillReport { record, recorded_on: Vec::new(), record_warnings: Vec::new() };
    store(engine, &mut report, &holders).await;
    Ok(report)
}

/// Every holder must still have the backup's manifest, and it must be the one restored from.
async fn check_manifests(engine: &Engine, m: &Manifest, holders: &[String]) -> Vec<Finding> {
    let key = layout::manifest_key(&m.job, &m.backup_id);
    let mut out = Vec::new();
    for name in holders {
        let problem = match engine.target(name) {
            Err(e) => Some((Severity::Warning, format!("cannot open the target: {e}"))),
            Ok(t) => match t.stat(&key).await {
                Ok(None) => Some((
                    Severity::Error,
                    format!(
                        "manifest `{key}` is missing: this copy is not committed (a rebuilt catalog would not know it)"
                    ),
                )),
                Err(e) => Some((Severity::Warning, format!("cannot check manifest `{key}`: {e}"))),
                Ok(Some(_)) => match t.get_bytes(&key).await.map(|b| Manifest::from_json(&key, &b)) {
                    Ok(Ok(found)) if found == *m => None,
                    Ok(Ok(_)) => Some((Severity::Error, format!("manifest `{key}` differs from the catalog's copy"))),
                    Ok(Err(e)) => Some((Severity::Error, e.to_string())),
                    Err(e) => Some((Severity::Warning, format!("cannot read manifest `{key}`: {e}"))),
                },
            },
        };
        if let Some((severity, message)) = problem {
            let hint = (severity == Severity::Error).then(|| {
                format!(
                    "run `drctl catalog rebuild` to forget the copy, then `drctl sync {}` to copy the backup there again",
                    m.job
                )
            });
            out.push(Finding::new(format!("target `{name}`"), severity, message, hint));
        }
    }
    out
}

/// Store the record: in the catalog, and beside the backup on each target holding it.
async fn store(engine: &Engine, report: &mut DrillReport, holders: &[String]) {
    match engine.catalog().await {
        Ok(cat) => {
            if let Err(e) = cat.record_drill(&report.record).await {
                report.record_warnings.push(format!("catalog: {e}"));
            }
        }
        Err(e) => report.record_warnings.push(format!("catalog: {e}")),
    }
    let Some(id) = report.record.backup_id.clone() else { return };
    let key = layout::verify_key(&report.record.job, &id);
    let body = Bytes::from(report.record.to_json());
    for name in holders {
        let result = match engine.target(name) {
            Ok(t) => t.put_bytes(&key, body.clone()).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => report.recorded_on.push(name.clone()),
            Err(e) => report.record_warnings.push(format!("target `{name}`: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_foreign_json() {
        let t: Timestamp = "2026-11-24T06:00:00Z".parse().unwrap();
        let r = DrillRecord {
            format: RECORD_FORMAT.into(),
            version: RECORD_VERSION,
            job: "pg".into(),
            kind: "postgres".into(),
            backup_id: Some("20261124T020000Z-abcdef".into()),
            status: DrillStatus::Ok,
            started_at: t,
            finished_at: t,
            restore_seconds: 1.5,
            duration_seconds: 3.0,
            plaintext_bytes: 10,
            stored_bytes: 5,
            restored_bytes: 10,
            destinations: vec![],
            findings: vec![],
            host: "h".into(),
            drctl_version: "0.1.0".into(),
        };
        let back = DrillRecord::from_json(&r.to_json()).unwrap();
        assert_eq!(back.backup_id, r.backup_id);
        assert!(back.passed());
        assert!(DrillRecord::from_json(b"{\"format\":\"x\"}").is_none());
    }
}
