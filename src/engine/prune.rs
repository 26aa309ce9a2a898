//! `drctl prune [JOB] [--dry-run]`: apply each target's retention policy.
//!
//! Plan first (pure: [`crate::retention::plan`] plus the overrides), then apply exactly that plan.
//! Overrides: the newest committed backup of a job, and the newest one that meets 3-2-1, are kept
//! on every target that holds them. A backup is deleted manifest first (so it stops being
//! committed before any artifact goes), then its artifacts. Incomplete uploads (artifacts whose
//! backup has no manifest on that target) older than [`ORPHAN_GRACE`] are removed too — younger
//! ones may belong to a run in progress.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::Serialize;

use super::Engine;
use super::rebuild::{Found, scan};
use crate::retention::{self, Candidate, Decision, Reason, rule321};
use crate::{Error, Result, layout};

/// Artifacts without a manifest younger than this are left alone (a run may be writing them).
pub const ORPHAN_GRACE: jiff::SignedDuration = jiff::SignedDuration::from_hours(6);

#[derive(Debug, Clone, Serialize)]
pub struct TargetPlan {
    pub job: String,
    pub target: String,
    pub decisions: Vec<Decision>,
    /// Incomplete uploads (no manifest) to remove.
    pub orphans: Vec<String>,
    /// What applying removed (empty on --dry-run).
    pub deleted: Vec<String>,
    pub errors: Vec<String>,
}

/// Plan (and unless `dry_run`, apply) retention for `job` or every job.
pub async fn prune(engine: &Engine, job: Option<&str>, dry_run: bool) -> Result<Vec<TargetPlan>> {
    let jobs: Vec<String> = match job {
        Some(j) => vec![engine.config.job(j)?.name.clone()],
        None => engine.config.jobs.keys().cloned().collect(),
    };
    let tz = engine.config.timezone();
    let catalog = engine.catalog().await.ok();
    let mut out = Vec::new();
    for job_name in jobs {
        let job = engine.config.job(&job_name)?;
        let (found, problems) = scan(engine, Some(&job_name)).await?;
        let protected = protected(engine, job, &found);
        for target_name in &job.common.targets {
            let mut plan = TargetPlan {
                job: job_name.clone(),
                target: target_name.clone(),
                decisions: vec![],
                orphans: vec![],
                deleted: vec![],
                errors: vec![],
            };
            if let Some(p) = problems.iter().find(|p| &p.target == target_name) {
                plan.errors.push(p.message.clone());
            }
            let Some(tcfg) = engine.config.targets.get(target_name) else { continue };
            let held: Vec<&Found> = found.iter().filter(|f| f.targets.contains(target_name)).collect();
            let candidates: Vec<Candidate> = held
                .iter()
                .map(|f| Candidate { id: f.manifest.backup_id.clone(), time: f.manifest.started_at })
                .collect();
            let mut decisions = match retention::plan(&candidates, tcfg.common.keep.as_ref(), &tz) {
                Ok(d) => d,
                Err(e) => {
                    plan.errors.push(e.to_string());
                    out.push(plan);
                    continue;
                }
            };
            for (id, reason) in &protected {
                retention::force_keep(&mut decisions, id, reason.clone());
            }
            plan.decisions = decisions;

            let target = match engine.target(target_name) {
                Ok(t) => t,
                Err(e) => {
                    plan.errors.push(e.to_string());
                    out.push(plan);
                    continue;
                }
            };
            plan.orphans = match orphans(&target, &job_name, &held).await {
                Ok(o) => o,
                Err(e) => {
                    plan.errors.push(e.to_string());
                    vec![]
                }
            };
            if !dry_run {
                for d in plan.decisions.iter().filter(|d| !d.keep) {
                    let Some(f) = held.iter().find(|f| f.manifest.backup_id == d.id) else { continue };
                    // uncommit first: a half-deleted backup must never look committed
                    let mut keys = vec![layout::manifest_key(&job_name, &d.id)];
                    keys.extend(f.manifest.artifacts.iter().map(|a| a.key.clone()));
                    let mut ok = true;
                    for key in keys {
                        match target.delete(&key).await {
                            Ok(()) => plan.deleted.push(key),
                            Err(e) => {
                                plan.errors.push(e.to_string());
                                ok = false;
                                break;
                            }
                        }
                    }
                    if ok && let Some(cat) = &catalog {
                        let _ = cat.remove_copy(&d.id, target_name).await;
                    }
                }
                for key in plan.orphans.clone() {
                    match target.delete(&key).await {
                        Ok(()) => plan.deleted.push(key),
                        Err(e) => plan.errors.push(e.to_string()),
                    }
                }
            }
            out.push(plan);
        }
    }
    Ok(out)
}

/// Backups no policy may delete: the newest committed one, and the newest one meeting 3-2-1.
fn protected(engine: &Engine, job: &crate::config::JobConfig, found: &[Found]) -> Vec<(String, Reason)> {
    let mut newest_first: Vec<&Found> = found.iter().collect();
    newest_first.sort_by(|a, b| b.manifest.newer_cmp(&a.manifest));
    let mut out = Vec::new();
    if let Some(newest) = newest_first.first() {
        out.push((newest.manifest.backup_id.clone(), Reason::NewestGood));
    }
    let placements: BTreeMap<&str, rule321::Placement> = job
        .common
        .targets
        .iter()
        .filter_map(|t| engine.config.targets.get(t).map(|c| (t.as_str(), c.placement(t))))
        .collect();
    for f in newest_first {
        let holders: Vec<&rule321::Placement> = f.targets.iter().filter_map(|t| placements.get(t.as_str())).collect();
        if rule321::evaluate(&holders).ok {
            out.push((f.manifest.backup_id.clone(), Reason::Needed321));
            break;
        }
    }
    out
}

/// Keys under the job's prefix on `target` that belong to no committed backup there and are
/// older than the grace period.
async fn orphans(target: &crate::targets::Target, job: &str, held: &[&Found]) -> Result<Vec<String>> {
    let committed: BTreeSet<&str> = held.iter().map(|f| f.manifest.backup_id.as_str()).collect();
    let cutoff = Timestamp::now().checked_sub(ORPHAN_GRACE).map_err(|e| Error::Pipeline(e.to_string()))?;
    let mut out = Vec::new();
    for obj in target.list(&format!("{job}/")).await? {
        let file = obj.key.rsplit('/').next().unwrap_or_default();
        let id = file.split('.').next().unwrap_or_default();
        let Some(t) = layout::id_time(id) else { continue };
        if !committed.contains(id) && t < cutoff {
            out.push(obj.key);
        }
    }
    out.sort();
    Ok(out)
}
