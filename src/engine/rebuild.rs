//! Reading backups straight from the targets: `drctl catalog rebuild`, and restore on a machine
//! whose catalog is empty. A rebuild also reads back the drill records (`<backup-id>.verify.json`,
//! written by `drctl verify` beside each backup), so a rebuilt catalog knows which backups were
//! verified: `drctl list` shows them and retention keeps the newest verified backup.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Engine;
use crate::catalog::BackupStatus;
use crate::manifest::DrillRecord;
use crate::manifest::Manifest;
use crate::{Error, Result, layout};

/// A committed backup found on the targets.
#[derive(Debug, Clone)]
pub struct Found {
    pub manifest: Manifest,
    /// Targets holding a complete copy (manifest and every artifact at its recorded size).
    pub targets: Vec<String>,
    pub status: BackupStatus,
    /// Drill records beside the backup: (target, key) of each `<backup-id>.verify.json` found.
    pub drill_records: Vec<(String, String)>,
}

/// Something that made a target or a copy unusable during the scan.
#[derive(Debug, Clone, Serialize)]
pub struct ScanProblem {
    pub target: String,
    pub message: String,
    pub kind: ProblemKind,
    /// The backup concerned (a manifest that cannot be read, an incomplete copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The object concerned (the manifest's key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// What kind of problem a [`ScanProblem`] is: it decides what prune may do (never delete what it
/// cannot see or read) and what `drctl check` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The target could not be opened or listed: what it holds is unknown.
    Unlisted,
    /// A manifest written by a newer drctl (a `version` this one does not know).
    NewerManifest,
    /// A manifest that exists but could not be read or parsed (damaged, or the read failed).
    UnreadableManifest,
    /// A readable manifest whose artifacts are missing or of the wrong size on this target.
    IncompleteCopy,
    /// A drill record that could not be read back (`catalog rebuild`).
    DrillRecord,
}

impl ScanProblem {
    fn target(target: &str, message: String) -> Self {
        ScanProblem { target: target.to_string(), message, kind: ProblemKind::Unlisted, backup_id: None, key: None }
    }

    /// A backup drctl cannot understand on this target: prune keeps it and says so.
    pub fn keeps_backup(&self) -> bool {
        match self.kind {
            ProblemKind::NewerManifest | ProblemKind::UnreadableManifest | ProblemKind::IncompleteCopy => true,
            ProblemKind::Unlisted | ProblemKind::DrillRecord => false,
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        let key = self.key.as_deref().unwrap_or_default();
        match self.kind {
            ProblemKind::Unlisted => Some(
                "check that the target is reachable (`drctl check`); prune deletes no backup of its jobs meanwhile"
                    .into(),
            ),
            ProblemKind::NewerManifest => {
                Some(format!("upgrade drctl to read `{key}`; prune keeps the backup meanwhile"))
            }
            ProblemKind::UnreadableManifest => Some(format!(
                "inspect `{key}` on target `{}` (damaged, or not readable); prune keeps the backup meanwhile",
                self.target
            )),
            ProblemKind::IncompleteCopy => Some(format!(
                "this copy cannot be restored: run `drctl sync` to copy the backup again, or inspect the files of `{}`; prune keeps it meanwhile",
                self.backup_id.as_deref().unwrap_or_default()
            )),
            ProblemKind::DrillRecord => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RebuildReport {
    pub backups: usize,
    pub copies: usize,
    /// Drill records read back from the targets into the catalog.
    pub drills: usize,
    pub problems: Vec<ScanProblem>,
    /// Where a damaged catalog file (not a database, corrupt) was moved before rebuilding.
    pub moved_aside: Option<std::path::PathBuf>,
}

/// Scan every configured target (or those of `job`) for committed backups.
///
/// # Errors
/// Only when no target could be listed at all.
pub async fn scan(engine: &Engine, job: Option<&str>) -> Result<(Vec<Found>, Vec<ScanProblem>)> {
    scan_except(engine, job, &BTreeMap::new()).await
}

/// [`scan`], without asking the targets in `known_down` (name → why): `drctl check` already
/// probed them and waited out their deadlines once; each is reported unlisted with that reason.
///
/// # Errors
/// Only when no target could be listed at all.
pub async fn scan_except(
    engine: &Engine,
    job: Option<&str>,
    known_down: &BTreeMap<String, String>,
) -> Result<(Vec<Found>, Vec<ScanProblem>)> {
    let names: Vec<String> = match job {
        Some(j) => engine.config.job(j)?.common.targets.clone(),
        None => engine.config.targets.keys().cloned().collect(),
    };
    let prefix = job.map(|j| format!("{j}/")).unwrap_or_default();
    let mut by_id: BTreeMap<String, (Manifest, Vec<String>)> = BTreeMap::new();
    // backup id → (target, key) of drill records seen in the listings
    let mut records: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut listed = 0;
    for name in &names {
        if let Some(why) = known_down.get(name) {
            problems.push(ScanProblem::target(name, why.clone()));
            continue;
        }
        let target = match engine.target(name) {
            Ok(t) => t,
            Err(e) => {
                problems.push(ScanProblem::target(name, e.to_string()));
                continue;
            }
        };
        let objects = match target.list(&prefix).await {
            Ok(o) => o,
            Err(e) => {
                problems.push(ScanProblem::target(name, e.to_string()));
                continue;
            }
        };
        listed += 1;
        let sizes: BTreeMap<&str, u64> = objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
        for obj in &objects {
            if let Some(id) = obj.key.rsplit('/').next().and_then(|f| f.strip_suffix(".verify.json")) {
                records.entry(id.to_string()).or_default().push((name.clone(), obj.key.clone()));
                continue;
            }
            let Some(id) = layout::manifest_id(&obj.key) else { continue };
            let unreadable = |kind, message: String| ScanProblem {
                target: name.clone(),
                message,
                kind,
                backup_id: Some(id.to_string()),
                key: Some(obj.key.clone()),
            };
            let bytes = match target.get_bytes(&obj.key).await {
                Ok(b) => b,
                Err(e) => {
                    problems.push(unreadable(ProblemKind::UnreadableManifest, e.to_string()));
                    continue;
                }
            };
            let m = match Manifest::from_json(&obj.key, &bytes) {
                Ok(m) => m,
                Err(e) => {
                    let kind = if crate::manifest::is_newer_version(&bytes) {
                        ProblemKind::NewerManifest
                    } else {
                        ProblemKind::UnreadableManifest
                    };
                    problems.push(unreadable(kind, e.to_string()));
                    continue;
                }
            };
            let missing: Vec<&str> = m
                .artifacts
                .iter()
                .filter(|a| sizes.get(a.key.as_str()) != Some(&a.stored.size))
                .map(|a| a.key.as_str())
                .collect();
            if !missing.is_empty() {
                problems.push(unreadable(
                    ProblemKind::IncompleteCopy,
                    format!(
                        "backup `{}` is damaged here: `{}` missing or of the wrong size",
                        m.backup_id,
                        missing.join("`, `")
                    ),
                ));
                continue;
            }
            by_id.entry(m.backup_id.clone()).or_insert_with(|| (m, Vec::new())).1.push(name.clone());
        }
    }
    if listed == 0 && !names.is_empty() {
        return Err(Error::AllTargetsFailed {
            job: job.unwrap_or("*").to_string(),
            failures: problems.iter().map(|p| format!("`{}`: {}", p.target, p.message)).collect(),
        });
    }
    let found = by_id
        .into_values()
        .map(|(manifest, mut targets)| {
            targets.sort();
            let wanted = engine.config.jobs.get(&manifest.job).map(|j| j.common.targets.len()).unwrap_or(targets.len());
            let status = if targets.len() >= wanted { BackupStatus::Ok } else { BackupStatus::Partial };
            // only a record where `drctl verify` writes it: beside this backup, under its job
            let key = layout::verify_key(&manifest.job, &manifest.backup_id);
            let drill_records = records
                .remove(&manifest.backup_id)
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, k)| *k == key)
                .collect();
            Found { manifest, targets, status, drill_records }
        })
        .collect();
    Ok((found, problems))
}

/// `drctl catalog rebuild`: replace the catalog's knowledge with what the targets hold.
pub async fn rebuild(engine: &Engine) -> Result<RebuildReport> {
    let (found, problems) = scan(engine, None).await?;
    let (catalog, moved_aside) = crate::catalog::Catalog::open_replacing_damaged(&engine.catalog_url()).await?;
    let rows: Vec<_> = found.iter().map(|f| (f.manifest.clone(), f.targets.clone(), f.status)).collect();
    catalog.rebuild_from(&rows).await?;
    // the verdicts recorded at backup time come back with the manifests
    for f in &found {
        if let Some(reason) = &f.manifest.suspicious {
            catalog.set_suspicious(&f.manifest.backup_id, &f.manifest.job, reason).await?;
        }
    }
    let mut problems = problems;
    let mut drills = 0;
    for f in &found {
        for (target, key) in &f.drill_records {
            match read_drill_record(engine, target, key, &f.manifest).await {
                Ok(record) => {
                    // the same drill on several targets is one row (job, started_at)
                    catalog.record_drill(&record).await?;
                    drills += 1;
                }
                Err(message) => problems.push(ScanProblem {
                    target: target.clone(),
                    message,
                    kind: ProblemKind::DrillRecord,
                    backup_id: Some(f.manifest.backup_id.clone()),
                    key: Some(key.clone()),
                }),
            }
        }
    }
    Ok(RebuildReport {
        backups: found.len(),
        copies: found.iter().map(|f| f.targets.len()).sum(),
        drills,
        problems,
        moved_aside,
    })
}

/// The drill record at `key` on `target`, if it is one about backup `m`.
async fn read_drill_record(
    engine: &Engine,
    target: &str,
    key: &str,
    m: &Manifest,
) -> std::result::Result<DrillRecord, String> {
    let bytes = engine.target(target).map_err(|e| e.to_string())?.get_bytes(key).await.map_err(|e| e.to_string())?;
    match DrillRecord::from_json(&bytes) {
        Some(r) if r.job == m.job && r.backup_id.as_deref() == Some(m.backup_id.as_str()) => Ok(r),
        Some(_) => Err(format!("drill record `{key}` is about another backup: ignored")),
        None => Err(format!("drill record `{key}` is not a drctl drill record: ignored")),
    }
}
