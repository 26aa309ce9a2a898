//! `drctl prune [JOB] [--dry-run]`: apply each target's retention policy.
//!
//! Plan first (pure: [`crate::retention::plan`] plus the overrides), then apply exactly that plan.
//! Overrides: the newest committed backup of a job, and the newest one that meets 3-2-1, are kept
//! on every target that holds them. A backup is deleted manifest first (so it stops being
//! committed before any artifact goes), then its artifacts. Incomplete uploads (artifacts whose
//! backup has no manifest on that target) older than [`ORPHAN_GRACE`] are removed too — younger
//! ones may belong to a run in progress.
//!
//! Object Lock: before a backup is deleted, each of its objects is asked for its retention
//! (`Target::locked_until`, a HEAD on S3); a backup with any object locked until later than now is
//! kept with [`Reason::Locked`], and a locked orphan is listed in `locked`, never deleted. (On a
//! versioned bucket a plain delete would "succeed" by adding a delete marker, hiding a backup that
//! still exists and is billed.)
//!
//! Unfinished S3 multipart uploads under the job's prefix that started more than [`ORPHAN_GRACE`]
//! ago (a crashed run whose abort never reached the store) are aborted, see [`stale_uploads`].

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::Serialize;

use super::Engine;
use super::rebuild::{Found, scan};
use crate::retention::{self, Candidate, Decision, Reason, rule321};
use crate::targets::{PendingUpload, Target};
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
    /// Incomplete uploads that are still under Object Lock: left alone until it ends.
    pub locked: Vec<LockedObject>,
    /// Unfinished multipart uploads older than [`ORPHAN_GRACE`], to abort.
    pub stale_uploads: Vec<PendingUpload>,
    /// What applying removed (empty on --dry-run).
    pub deleted: Vec<String>,
    /// Temporary files of uploads that never finished, older than the grace period (see
    /// [`super::leaks`]), and those of them applying removed (empty on --dry-run).
    pub temporaries: Vec<crate::targets::Temporary>,
    pub removed_temporaries: Vec<String>,
    /// Upload ids of the stale uploads applying aborted (empty on --dry-run).
    pub aborted_uploads: Vec<String>,
    pub errors: Vec<String>,
}

/// An object prune may not delete yet.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LockedObject {
    pub key: String,
    /// The end of its Object Lock retention (RFC 3339).
    pub until: String,
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
        let mut protected = protected(engine, job, &found);
        // the newest backup whose last restore drill passed is never deleted
        if let Some(cat) = &catalog
            && let Ok(drills) = cat.drill_results(&job_name).await
        {
            let all: Vec<Candidate> = found
                .iter()
                .map(|f| Candidate { id: f.manifest.backup_id.clone(), time: f.manifest.started_at })
                .collect();
            if let Some(id) = retention::newest_verified(&all, &drills) {
                protected.push((id, Reason::NewestVerified));
            }
        }
        for target_name in &job.common.targets {
            let mut plan = TargetPlan {
                job: job_name.clone(),
                target: target_name.clone(),
                decisions: vec![],
                orphans: vec![],
                locked: vec![],
                stale_uploads: vec![],
                deleted: vec![],
                temporaries: vec![],
                removed_temporaries: vec![],
                aborted_uploads: vec![],
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

            let target = match engine.target(target_name) {
                Ok(t) => t,
                Err(e) => {
                    plan.decisions = decisions;
                    plan.errors.push(e.to_string());
                    out.push(plan);
                    continue;
                }
            };
            let now = Timestamp::now();
            // Object Lock: only what the policy would delete needs asking
            let mut lock_unknown = false;
            for d in decisions.iter_mut().filter(|d| !d.keep) {
                let Some(f) = held.iter().find(|f| f.manifest.backup_id == d.id) else { continue };
                let mut keys = vec![layout::manifest_key(&job_name, &d.id)];
                keys.extend(f.manifest.artifacts.iter().map(|a| a.key.clone()));
                match latest_lock(&target, &keys, now).await {
                    Ok(Some(until)) => {
                        d.keep = true;
                        d.reasons.push(Reason::Locked { until: until.to_string() });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        plan.errors.push(e.to_string());
                        lock_unknown = true;
                    }
                }
            }
            plan.decisions = decisions;
            match orphans(&target, &job_name, &held).await {
                Ok(found) => {
                    for key in found {
                        match latest_lock(&target, std::slice::from_ref(&key), now).await {
                            Ok(Some(until)) => plan.locked.push(LockedObject { key, until: until.to_string() }),
                            Ok(None) => plan.orphans.push(key),
                            Err(e) => {
                                plan.errors.push(e.to_string());
                                lock_unknown = true;
                            }
                        }
                    }
                }
                Err(e) => plan.errors.push(e.to_string()),
            }
            match target.pending_uploads(&format!("{job_name}/")).await {
                Ok(uploads) => plan.stale_uploads = stale_uploads(uploads, now, ORPHAN_GRACE),
                Err(e) => plan.errors.push(e.to_string()),
            }
            if !dry_run {
                for up in &plan.stale_uploads {
                    match target.abort_upload(up).await {
                        Ok(()) => plan.aborted_uploads.push(up.upload_id.clone()),
                        Err(e) => plan.errors.push(e.to_string()),
                    }
                }
            }
            // a lock that could not be read might be there: delete nothing on this target
            if !dry_run && !lock_unknown {
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
            super::leaks::sweep(&target, &job_name, now, dry_run, &mut plan).await;
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

/// The latest Object Lock retention among `keys` that has not ended at `now`.
async fn latest_lock(target: &Target, keys: &[String], now: Timestamp) -> Result<Option<Timestamp>> {
    let mut latest = None;
    for key in keys {
        if let Some(until) = target.locked_until(key).await?
            && until > now
        {
            latest = latest.max(Some(until));
        }
    }
    Ok(latest)
}

/// The uploads among `uploads` that started more than `grace` before `now` (pure: the threshold
/// is a parameter so that tests can pass zero). An upload whose start the store does not report
/// is never stale: it might be a run in progress.
pub fn stale_uploads(uploads: Vec<PendingUpload>, now: Timestamp, grace: jiff::SignedDuration) -> Vec<PendingUpload> {
    let cutoff = now.checked_sub(grace).unwrap_or(Timestamp::MIN);
    let mut out: Vec<PendingUpload> =
        uploads.into_iter().filter(|u| u.initiated.is_some_and(|t| t <= cutoff)).collect();
    out.sort_by(|a, b| a.key.cmp(&b.key).then_with(|| a.upload_id.cmp(&b.upload_id)));
    out
}

/// Keys under the job's prefix on `target` that belong to no committed backup there and are
/// older than the grace period.
async fn orphans(target: &Target, job: &str, held: &[&Found]) -> Result<Vec<String>> {
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

#[cfg(test)]
mod tests {
    use jiff::{SignedDuration, Timestamp};

    use super::stale_uploads;
    use crate::targets::PendingUpload;

    fn up(key: &str, initiated: Option<&str>) -> PendingUpload {
        PendingUpload {
            key: key.into(),
            upload_id: format!("id-{key}"),
            initiated: initiated.map(|t| t.parse().unwrap()),
        }
    }

    #[test]
    fn stale_uploads_table() {
        let now: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
        let uploads = vec![
            up("a", Some("2026-03-01T11:59:59Z")), // 1 s old
            up("b", Some("2026-03-01T06:00:00Z")), // exactly 6 h
            up("c", Some("2026-03-01T05:59:59Z")), // 6 h 1 s
            up("d", Some("2010-11-10T20:48:33Z")), // ancient
            up("e", None),                         // age unknown
            up("f", Some("2026-03-01T12:00:05Z")), // clock skew: in the future
        ];
        let keys = |grace: SignedDuration| -> Vec<String> {
            stale_uploads(uploads.clone(), now, grace).into_iter().map(|u| u.key).collect()
        };
        assert_eq!(keys(SignedDuration::from_hours(6)), ["b", "c", "d"]);
        assert_eq!(keys(SignedDuration::from_hours(24 * 365 * 20)), Vec::<String>::new());
        // grace zero: everything that has started, never an upload of unknown age
        assert_eq!(keys(SignedDuration::ZERO), ["a", "b", "c", "d"]);
        assert_eq!(keys(super::ORPHAN_GRACE), keys(SignedDuration::from_hours(6)));
    }
}
