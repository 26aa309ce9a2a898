//! `drctl prune [JOB] [--dry-run]`: apply each target's retention policy.
//!
//! Plan first (pure: [`crate::retention::plan_with_overrides`] and [`crate::retention::protected`]),
//! then apply exactly that plan. Overrides, kept on every target that holds them: the newest
//! committed backup of a job, the newest one that meets 3-2-1, the newest verified one, the newest
//! one not flagged suspicious, and every backup dated in the future (a wrong clock: it never counts
//! as newest). A backup is deleted manifest first (so it stops being committed before any artifact
//! goes), then its artifacts. Incomplete uploads (artifacts whose backup has no manifest at all on
//! that target) older than [`ORPHAN_GRACE`](super::grace::ORPHAN_GRACE) are removed too — younger ones may belong to a run in
//! progress.
//!
//! Never delete what drctl does not understand or cannot see: a backup whose manifest cannot be
//! read (a newer drctl, damaged) is kept and reported as a warning; when one of the job's targets
//! cannot be listed, no backup of the job is deleted on any target (3-2-1 cannot be judged, and the
//! catalog's record of that target may be stale); and nothing is deleted on a target whose clock
//! differs from this host's by more than [`crate::retention::CLOCK_TOLERANCE`] (this host's clock
//! ages the incomplete uploads).
//!
//! Object Lock: before a backup is deleted, each of its objects is asked for its retention
//! (`Target::locked_until`, a HEAD on S3); a backup with any object locked until later than now is
//! kept with [`Reason::Locked`], and a locked orphan is listed in `locked`, never deleted. (On a
//! versioned bucket a plain delete would "succeed" by adding a delete marker, hiding a backup that
//! still exists and is billed.)
//!
//! Unfinished S3 multipart uploads under the job's prefix that started more than [`ORPHAN_GRACE`](super::grace::ORPHAN_GRACE)
//! ago (a crashed run whose abort never reached the store) are aborted, see [`stale_uploads`].

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::Serialize;

use super::Engine;
use super::grace::{ORPHAN_GRACE, clock_refusal, past_grace};
use super::rebuild::{Found, ProblemKind, scan};
use crate::retention::{self, Candidate, Decision, Reason, rule321};
use crate::targets::{PendingUpload, Target};
use crate::{Error, Result, layout};

#[derive(Debug, Clone, Serialize)]
pub struct TargetPlan {
    pub job: String,
    pub target: String,
    pub decisions: Vec<Decision>,
    /// Incomplete uploads (no manifest) to remove.
    pub orphans: Vec<String>,
    /// Incomplete uploads that are still under Object Lock: left alone until it ends.
    pub locked: Vec<LockedObject>,
    /// Unfinished multipart uploads older than [`ORPHAN_GRACE`](super::grace::ORPHAN_GRACE), to abort.
    pub stale_uploads: Vec<PendingUpload>,
    /// What applying removed (empty on --dry-run).
    pub deleted: Vec<String>,
    /// Temporary files of uploads that never finished, older than the grace period (see
    /// [`super::leaks`]), and those of them applying removed (empty on --dry-run).
    pub temporaries: Vec<crate::targets::Temporary>,
    pub removed_temporaries: Vec<String>,
    /// Upload ids of the stale uploads applying aborted (empty on --dry-run).
    pub aborted_uploads: Vec<String>,
    /// Why prune could not do its work here (exit 1): a target that could not be listed, a
    /// clock that disagrees with the target's, a failed delete.
    pub errors: Vec<String>,
    /// What the user must know but prune handled safely (exit 0): backups kept because drctl
    /// cannot read their manifest, nothing deleted while another target is down.
    pub warnings: Vec<String>,
    /// Backups held here that look suspicious (the newest one that does not is never deleted).
    pub suspicious: Vec<SuspiciousBackup>,
    /// Physical PostgreSQL jobs: archived WAL past `wal.keep` that no kept base backup needs
    /// (see `jobs::postgres::physical::retention`), deleted unless --dry-run. (Added, issue 16.)
    pub wal: Vec<String>,
    /// Garbage collection of the target's chunk repositories (`storage = "chunked"`), on the
    /// first plan of each target only. (Added, issue 17.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<crate::chunked::gc::GcReport>,
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
        let now = Timestamp::now();
        let (suspicious, protected) = overrides(engine, job, &found, catalog.as_deref(), now).await;
        // 3-2-1 needs every target's state: a target that could not be listed may hold (or lack)
        // any copy, and the catalog's record of it may be stale
        let unlisted: Vec<String> = job
            .common
            .targets
            .iter()
            .filter(|t| problems.iter().any(|p| &p.target == *t && p.kind == ProblemKind::Unlisted))
            .cloned()
            .collect();
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
                warnings: vec![],
                suspicious: vec![],
                wal: vec![],
                chunks: vec![],
            };
            if let Some(p) = problems.iter().find(|p| &p.target == target_name && p.kind == ProblemKind::Unlisted) {
                plan.errors.push(format!("{}: nothing of job `{job_name}` is deleted on any target", p.message));
                out.push(plan);
                continue;
            }
            let Some(tcfg) = engine.config.targets.get(target_name) else { continue };
            let held: Vec<&Found> = found.iter().filter(|f| f.targets.contains(target_name)).collect();
            plan.suspicious = held
                .iter()
                .filter_map(|f| {
                    suspicious.get(&f.manifest.backup_id).map(|r| (f.manifest.backup_id.clone(), r.clone()))
                })
                .map(|(backup_id, reason)| SuspiciousBackup { backup_id, reason })
                .collect();
            let candidates: Vec<Candidate> = held
                .iter()
                .map(|f| Candidate { id: f.manifest.backup_id.clone(), time: f.manifest.started_at })
                .collect();
            let mut decisions = match retention::plan_with_overrides(
                &candidates,
                tcfg.common.keep.as_ref(),
                &tz,
                &protected,
                now,
                retention::CLOCK_TOLERANCE,
            ) {
                Ok(d) => d,
                Err(e) => {
                    plan.errors.push(e.to_string());
                    out.push(plan);
                    continue;
                }
            };
            // what drctl cannot read here is kept, and said so (it is not an incomplete upload)
            for p in problems.iter().filter(|p| &p.target == target_name && p.keeps_backup()) {
                let Some(id) = &p.backup_id else { continue };
                let reason = Reason::Unreadable { key: p.key.clone().unwrap_or_default(), error: p.message.clone() };
                match decisions.iter_mut().find(|d| &d.id == id) {
                    Some(d) => {
                        d.keep = true;
                        d.reasons.push(reason);
                    }
                    None => decisions.push(Decision { id: id.clone(), keep: true, reasons: vec![reason] }),
                }
                plan.warnings.push(format!("backup `{id}` kept: {} (`drctl check` reports it)", p.message));
            }
            if !unlisted.is_empty() {
                retention::keep_all(&mut decisions, &Reason::TargetUnavailable { targets: unlisted.clone() });
                plan.warnings.push(format!(
                    "no backup of job `{job_name}` is deleted here: target `{}` could not be listed, so 3-2-1 cannot be judged",
                    unlisted.join("`, `")
                ));
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
            match orphans(&target, &job_name, now).await {
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
            if let Some(keep) = wal_keep(job) {
                let kept: Vec<crate::jobs::postgres::physical::PhysicalFacts> = plan
                    .decisions
                    .iter()
                    .filter(|d| d.keep)
                    .filter_map(|d| held.iter().find(|f| f.manifest.backup_id == d.id))
                    .filter_map(|f| crate::jobs::postgres::physical::PhysicalFacts::of(&f.manifest.facts))
                    .collect();
                match target.list(&crate::jobs::postgres::physical::store::wal_prefix(&job_name)).await {
                    Ok(listed) => {
                        let keys: Vec<String> = listed.into_iter().map(|o| o.key).collect();
                        plan.wal = crate::jobs::postgres::physical::retention::deletable(&keys, &kept, keep, now);
                    }
                    Err(e) => plan.errors.push(e.to_string()),
                }
            }
            match target.pending_uploads(&format!("{job_name}/")).await {
                Ok(uploads) => plan.stale_uploads = stale_uploads(uploads, now, ORPHAN_GRACE),
                Err(e) => plan.errors.push(e.to_string()),
            }
            // this host's clock ages incomplete uploads and dates what is "newest": before
            // deleting anything, it must agree with the target's
            let deletes = plan.decisions.iter().any(|d| !d.keep)
                || !plan.orphans.is_empty()
                || !plan.stale_uploads.is_empty()
                || !plan.wal.is_empty();
            if deletes && let Some(message) = clock_refusal(&target, now).await {
                retention::keep_all(&mut plan.decisions, &Reason::ClockSkew { message: message.clone() });
                plan.errors
                    .push(format!("{message}: nothing is deleted on this target; fix the clock (NTP) and prune again"));
                plan.orphans.clear();
                plan.stale_uploads.clear();
                plan.wal.clear();
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
                for key in plan.wal.clone() {
                    match target.delete(&key).await {
                        Ok(()) => plan.deleted.push(key),
                        Err(e) => plan.errors.push(e.to_string()),
                    }
                }
                for key in plan.orphans.clone() {
                    match target.delete(&key).await {
                        Ok(()) => plan.deleted.push(key),
                        Err(e) => plan.errors.push(e.to_string()),
                    }
                }
            }
            let swept = super::leaks::sweep(&target, &job_name, now, !dry_run && plan.errors.is_empty()).await;
            plan.temporaries = swept.found;
            plan.removed_temporaries = swept.removed;
            plan.errors.extend(swept.errors);
            out.push(plan);
        }
    }
    collect_chunks(engine, &mut out, dry_run).await;
    Ok(out)
}

/// Garbage collection of the chunk repositories (`storage = "chunked"`) on every target pruned,
/// once per target, after its backups were pruned; the report goes on that target's first plan.
/// Runs without the identity; see [`crate::chunked::gc`].
async fn collect_chunks(engine: &Engine, plans: &mut [TargetPlan], dry_run: bool) {
    let mut done: BTreeSet<String> = BTreeSet::new();
    for i in 0..plans.len() {
        let name = plans[i].target.clone();
        if !done.insert(name.clone()) {
            continue;
        }
        // a target prune could not work on is left alone here too
        if plans.iter().any(|p| p.target == name && !p.errors.is_empty()) {
            continue;
        }
        let Ok(target) = engine.target(&name) else { continue };
        let going: std::collections::HashSet<String> = plans
            .iter()
            .filter(|p| p.target == name)
            .flat_map(|p| p.decisions.iter().filter(|d| !d.keep).map(|d| d.id.clone()))
            .collect();
        match crate::chunked::gc::collect(target, dry_run, &going).await {
            Ok(reports) => {
                for r in &reports {
                    if let Some(why) = &r.skipped {
                        plans[i]
                            .warnings
                            .push(format!("chunk repository `{}`: garbage collection skipped: {why}", r.scope));
                    }
                }
                plans[i].chunks = reports;
            }
            Err(e) => plans[i].errors.push(format!("garbage collection of the chunk repositories failed: {e}")),
        }
    }
}

/// `wal.keep` of a physical PostgreSQL job; `None` for every other job.
fn wal_keep(job: &crate::jobs::JobConfig) -> Option<std::time::Duration> {
    match &job.spec {
        crate::jobs::JobSpec::Postgres(pg) if pg.method == crate::jobs::postgres::Method::Physical => {
            Some(pg.wal_keep())
        }
        _ => None,
    }
}

/// The job-wide inputs of every target's plan at `now`: the suspicious backups (id → reason) and
/// the overrides (see [`retention::protected`]). `drctl sync` plans with the same ones, so it
/// never copies what prune would delete.
pub(crate) async fn overrides(
    engine: &Engine,
    job: &crate::jobs::JobConfig,
    found: &[Found],
    catalog: Option<&crate::catalog::Catalog>,
    now: Timestamp,
) -> (BTreeMap<String, String>, Vec<(String, Reason)>) {
    let drills = match catalog {
        Some(cat) => cat.drill_results(&job.name).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let flags = match catalog {
        Some(cat) => cat.backup_flags(Some(&job.name)).await.unwrap_or_default(),
        None => BTreeMap::new(),
    };
    let suspicious = judge_suspicious(job, found, &flags, now);
    let protected = job_protected(engine, job, found, &suspicious, &drills, now);
    (suspicious, protected)
}

/// A backup that looks suspicious (empty, or much smaller than the last good one).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SuspiciousBackup {
    pub backup_id: String,
    pub reason: String,
}

/// The suspicious backups of a job (id → reason): the verdict recorded at backup time (manifest,
/// catalog), and the series on the targets judged again against the last good backup (so that a
/// CronJob's fresh catalog, whose runs had nothing to compare with, still protects the backup
/// from before a wipe). Future-dated backups are left out of the series: they are not in order.
fn judge_suspicious(
    job: &crate::jobs::JobConfig,
    found: &[Found],
    flags: &BTreeMap<String, crate::catalog::BackupFlags>,
    now: Timestamp,
) -> BTreeMap<String, String> {
    let drop = job.common.verify.as_ref().map(|v| v.suspicious_drop()).unwrap_or(0.5);
    let mut oldest_first: Vec<&Found> = found
        .iter()
        .filter(|f| !retention::future_dated(f.manifest.started_at, now, retention::CLOCK_TOLERANCE))
        .collect();
    oldest_first.sort_by(|a, b| a.manifest.newer_cmp(&b.manifest));
    let series: Vec<crate::jobs::suspicious::SeriesItem> = oldest_first
        .iter()
        .map(|f| crate::jobs::suspicious::SeriesItem {
            id: f.manifest.backup_id.clone(),
            kind: f.manifest.kind.clone(),
            facts: f.manifest.facts.clone(),
            size: f.manifest.plaintext_bytes(),
            flagged: f
                .manifest
                .suspicious
                .clone()
                .or_else(|| flags.get(&f.manifest.backup_id).and_then(|fl| fl.suspicious.clone())),
            judged: f.manifest.judged_against.is_some(),
        })
        .collect();
    crate::jobs::suspicious::suspicious_series(&series, drop)
}

/// Backups of the job no policy may delete (see [`retention::protected`]).
fn job_protected(
    engine: &Engine,
    job: &crate::jobs::JobConfig,
    found: &[Found],
    suspicious: &BTreeMap<String, String>,
    drills: &[retention::DrillResult],
    now: Timestamp,
) -> Vec<(String, Reason)> {
    let placements: Vec<rule321::Placement> =
        job.common.targets.iter().filter_map(|t| engine.config.targets.get(t).map(|c| c.placement(t))).collect();
    let backups: Vec<retention::JobBackup> = found
        .iter()
        .map(|f| retention::JobBackup {
            id: f.manifest.backup_id.clone(),
            time: f.manifest.started_at,
            holders: f.targets.clone(),
            suspicious: suspicious.contains_key(&f.manifest.backup_id),
        })
        .collect();
    retention::protected(&backups, &placements, drills, now, retention::CLOCK_TOLERANCE)
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
    let mut out = past_grace(uploads, |u| u.initiated, now, grace);
    out.sort_by(|a, b| a.key.cmp(&b.key).then_with(|| a.upload_id.cmp(&b.upload_id)));
    out
}

/// Keys under the job's prefix on `target` whose backup has no manifest there at all (an
/// incomplete upload) and that are older than the grace period at `now`. A backup whose manifest
/// is there but cannot be read (a newer drctl, damaged) is not incomplete: its keys never are.
async fn orphans(target: &Target, job: &str, now: Timestamp) -> Result<Vec<String>> {
    let cutoff = now.checked_sub(ORPHAN_GRACE).map_err(|e| Error::Pipeline(e.to_string()))?;
    let listed = target.list(&format!("{job}/")).await?;
    Ok(orphan_keys(listed.iter().map(|o| o.key.as_str()), cutoff))
}

/// The keys among `keys` whose backup id has no manifest among `keys` and whose id says they
/// started before `cutoff` (pure).
pub fn orphan_keys<'a>(keys: impl Iterator<Item = &'a str> + Clone, cutoff: Timestamp) -> Vec<String> {
    let id_of = |key: &'a str| key.rsplit('/').next().unwrap_or_default().split('.').next().unwrap_or_default();
    let committed: BTreeSet<&str> = keys.clone().filter_map(layout::manifest_id).collect();
    let mut out: Vec<String> = keys
        .filter(|k| {
            let id = id_of(k);
            !committed.contains(id) && layout::id_time(id).is_some_and(|t| t < cutoff)
        })
        .map(str::to_string)
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use jiff::{SignedDuration, Timestamp};

    use super::super::grace::clock_skew;
    use super::{orphan_keys, stale_uploads};
    use crate::retention::CLOCK_TOLERANCE;
    use crate::targets::PendingUpload;

    #[test]
    fn clock_skew_table() {
        let ours: Timestamp = "2026-12-04T12:00:00Z".parse().unwrap();
        let cases = [
            ("2026-12-04T12:00:00Z", None),
            ("2026-12-04T11:55:00Z", None),
            ("2026-12-04T12:05:00Z", None),
            ("2026-12-04T11:54:59Z", Some("5m 1s ahead of")),
            ("2026-12-04T12:05:01Z", Some("5m 1s behind")),
            ("2022-01-01T00:00:00Z", Some("ahead of")),
        ];
        for (theirs, want) in cases {
            let got = clock_skew(ours, theirs.parse().unwrap(), CLOCK_TOLERANCE);
            match (want, &got) {
                (None, None) => {}
                (Some(w), Some(g)) => assert!(g.contains(w), "{theirs}: {g}"),
                _ => panic!("{theirs}: {got:?}"),
            }
        }
    }

    #[test]
    fn orphan_keys_table() {
        let cutoff: Timestamp = "2026-12-04T06:00:00Z".parse().unwrap();
        let keys = [
            // committed: manifest and artifact
            "pg/2026/12/01/20261201T020000Z-aaaaaa.manifest.json",
            "pg/2026/12/01/20261201T020000Z-aaaaaa.app.dump.zst.age",
            // a manifest drctl cannot read is still a manifest: never an orphan
            "pg/2026/12/02/20261202T020000Z-bbbbbb.manifest.json",
            "pg/2026/12/02/20261202T020000Z-bbbbbb.app.dump.zst.age",
            // no manifest, old: an incomplete upload
            "pg/2026/12/03/20261203T020000Z-cccccc.app.dump.zst.age",
            // no manifest, within the grace period: a run in progress
            "pg/2026/12/04/20261204T110000Z-dddddd.app.dump.zst.age",
            // a drill record of a pruned backup
            "pg/2026/11/01/20261101T020000Z-eeeeee.verify.json",
            // not drctl's
            "pg/README",
        ];
        assert_eq!(
            orphan_keys(keys.iter().copied(), cutoff),
            [
                "pg/2026/11/01/20261101T020000Z-eeeeee.verify.json",
                "pg/2026/12/03/20261203T020000Z-cccccc.app.dump.zst.age"
            ]
        );
    }

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
        assert_eq!(keys(super::super::grace::ORPHAN_GRACE), keys(SignedDuration::from_hours(6)));
    }
}
