//! A job's metric state: what the catalog knows (last success, newest committed backup, where it
//! is and whether it was flagged suspicious) plus the result of the run that just ended.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::{JobState, TargetState};
use crate::catalog::{BackupEntry, BackupFlags, BackupStatus, Catalog};
use crate::config::Config;
use crate::engine::Engine;
use crate::engine::run::RunReport;

/// How a backup run ended, as exit codes tell it: ok (0), partial (3), failed (1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunResult {
    /// Committed on every target of the job.
    Ok,
    /// Committed on some targets only.
    Partial,
    /// Nothing committed.
    Failed,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Ok => "ok",
            RunResult::Partial => "partial",
            RunResult::Failed => "failed",
        }
    }
}

/// Duration and sizes of a committed backup.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BackupSize {
    pub duration_seconds: f64,
    /// Plaintext bytes read from the source.
    pub source_bytes: u64,
    /// Bytes stored on each target (compressed, encrypted).
    pub stored_bytes: u64,
}

/// The restore-drill side of a job's state. Empty until drills record their results; `drctl verify`
/// fills it from the same catalog.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VerifyState {
    /// Whether the last drill passed.
    pub last_passed: Option<bool>,
    /// Unix time of the newest passed drill.
    pub last_success: Option<f64>,
    pub duration_seconds: Option<f64>,
}

impl VerifyState {
    /// What one drill says: passed or not, when, how long its restore took.
    pub fn from_record(rec: &crate::manifest::DrillRecord) -> VerifyState {
        let passed = rec.passed();
        VerifyState {
            last_passed: Some(passed),
            last_success: passed.then(|| unix(rec.finished_at)),
            duration_seconds: Some(rec.restore_seconds),
        }
    }

    /// From a job's drill records, newest first (as [`Catalog::drills`] returns them): whether the
    /// newest drill passed, when the newest passing one ended and its measured restore time. This is
    /// what every push and the daemon's startup report, so a backup's push (which replaces the job's
    /// Pushgateway group) keeps the drill gauges and VerifyMissing does not fire after each backup.
    pub fn from_drills(drills: &[crate::manifest::DrillRecord]) -> VerifyState {
        let newest_passed = drills.iter().find(|d| d.passed());
        VerifyState {
            last_passed: drills.first().map(|d| d.passed()),
            last_success: newest_passed.map(|d| unix(d.finished_at)),
            duration_seconds: newest_passed.or(drills.first()).map(|d| d.restore_seconds),
        }
    }
}

/// A run of one job, as `drctl run` saw it end.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub job: String,
    pub result: RunResult,
    /// The report, when something was committed.
    pub report: Option<RunReport>,
    /// When the run ended.
    pub finished_at: Timestamp,
}

impl RunOutcome {
    /// The outcome of `run_job`.
    pub fn new(job: &str, result: &crate::Result<RunReport>) -> RunOutcome {
        let (result, report) = match result {
            Ok(r) if r.status == BackupStatus::Ok => (RunResult::Ok, Some(r.clone())),
            Ok(r) => (RunResult::Partial, Some(r.clone())),
            Err(_) => (RunResult::Failed, None),
        };
        RunOutcome { job: job.to_string(), result, report, finished_at: Timestamp::now() }
    }
}

fn unix(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// The state of each job that ran, from one catalog read; see [`job_state`].
pub async fn job_states(engine: &Engine, outcomes: &[RunOutcome]) -> Vec<JobState> {
    let catalog = match engine.catalog().await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: catalog unreadable, pushing only what the runs know");
            None
        }
    };
    let mut out = Vec::new();
    for o in outcomes {
        let history = match &catalog {
            Some(c) => match read_history(c, &o.job).await {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(job = %o.job, error = %e, "metrics: catalog unreadable, pushing what the run knows");
                    None
                }
            },
            None => None,
        };
        let verify = match &catalog {
            Some(c) => drill_state(c, &o.job).await,
            None => VerifyState::default(),
        };
        let (entries, flags) = history.unzip();
        let mut s = job_state(&engine.config, o, entries.as_deref(), &flags.unwrap_or_default());
        s.verify = verify;
        out.push(s);
    }
    out
}

/// The job's drill state from the catalog (empty when it cannot be read: a warning, not a failure).
pub async fn drill_state(c: &Catalog, job: &str) -> VerifyState {
    match c.drills(job).await {
        Ok(d) => VerifyState::from_drills(&d),
        Err(e) => {
            tracing::warn!(job = %job, error = %e, "metrics: drill records unreadable");
            VerifyState::default()
        }
    }
}

/// A job's catalog entries (newest first) and the flags of its backups.
async fn read_history(c: &Catalog, job: &str) -> crate::Result<(Vec<BackupEntry>, BTreeMap<String, BackupFlags>)> {
    Ok((c.list(Some(job), None).await?, c.backup_flags(Some(job)).await?))
}

/// A job's whole state after the run `outcome`: from the catalog's `entries` for the job (and
/// `flags`, per backup id, from [`Catalog::backup_flags`]) when there are some to read, otherwise
/// (`None`: the catalog could not be read) only what the run itself knows, marked incomplete.
pub fn job_state(
    config: &Config,
    outcome: &RunOutcome,
    entries: Option<&[BackupEntry]>,
    flags: &BTreeMap<String, BackupFlags>,
) -> JobState {
    let job = config.jobs.get(&outcome.job);
    let rpo_seconds = job.map(|j| j.common.rpo().as_secs_f64()).unwrap_or(26.0 * 3600.0);
    let rule = |held_by: &[String]| {
        job.map(|j| {
            let (_, rule) = crate::engine::check::job_rule321(config, j, held_by);
            (rule.copies as u64, rule.ok)
        })
    };
    let mut s =
        JobState { job: outcome.job.clone(), rpo_seconds, last_run: Some(outcome.result), ..JobState::default() };
    s.free_bytes = job
        .map(|j| j.common.targets.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|t| config.targets.get(t).and_then(crate::targets::free_bytes).map(|f| (t.clone(), f)))
        .collect();
    match entries {
        Some(entries) => {
            s.complete = true;
            // a backup dated in the future (a host with a wrong clock) is not the newest: counted,
            // it would hold the last-success time in the future and silence BackupMissing
            let now = outcome.finished_at;
            let tolerance = crate::retention::CLOCK_TOLERANCE;
            let committed = || {
                entries
                    .iter()
                    .filter(|b| b.status != BackupStatus::Failed)
                    .filter_map(|b| b.manifest.as_ref().map(|m| (b, m)))
                    .filter(move |(_, m)| !crate::retention::future_dated(m.started_at, now, tolerance))
            };
            s.last_success = committed()
                .filter(|(b, _)| b.status == BackupStatus::Ok)
                .map(|(_, m)| m)
                .max_by(|a, b| a.newer_cmp(b))
                .map(|m| unix(m.finished_at));
            let newest = committed().max_by(|a, b| a.1.newer_cmp(b.1));
            s.suspicious = newest.map(|(b, _)| flags.get(&b.id).and_then(|f| f.suspicious.clone()));
            s.newest = newest.map(|(_, m)| BackupSize {
                duration_seconds: (unix(m.finished_at) - unix(m.started_at)).max(0.0),
                source_bytes: m.plaintext_bytes(),
                stored_bytes: m.stored_bytes(),
            });
            // no committed backup: only the live data, and 3-2-1 is not met (as `drctl check`)
            let (copies, ok) = rule(newest.map(|(b, _)| b.targets.as_slice()).unwrap_or_default()).unzip();
            (s.copies, s.rule_321_ok) = (copies, ok);
            s.targets = job
                .map(|j| j.common.targets.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|t| {
                    let held = committed().filter(|(b, _)| b.targets.contains(t)).max_by(|a, b| a.1.newer_cmp(b.1));
                    TargetState {
                        target: t.clone(),
                        last_success: held.map(|(_, m)| unix(m.finished_at)),
                        stored_bytes: held.map(|(_, m)| m.stored_bytes()),
                    }
                })
                .collect();
        }
        None => {
            // the run's own backup is the newest one; nothing is known about earlier ones
            if let Some(r) = &outcome.report {
                if outcome.result == RunResult::Ok {
                    s.last_success = Some(unix(outcome.finished_at));
                }
                s.newest = Some(BackupSize {
                    duration_seconds: r.duration_seconds,
                    source_bytes: r.plaintext_bytes,
                    stored_bytes: r.stored_bytes,
                });
                let (copies, ok) = rule(&r.committed).unzip();
                (s.copies, s.rule_321_ok) = (copies, ok);
                s.suspicious = Some(r.suspicious.clone());
                // the catalog is unreadable: what this run committed is all that is known
                s.targets = r
                    .committed
                    .iter()
                    .map(|t| TargetState {
                        target: t.clone(),
                        last_success: Some(unix(outcome.finished_at)),
                        stored_bytes: Some(r.stored_bytes),
                    })
                    .collect();
            }
        }
    }
    s
}

/// Every configured job's state as the catalog tells it, without a run in this process: what the
/// daemon exposes when it starts. The last run's result is the newest catalog entry's status; a job
/// the catalog knows nothing about has only its RPO (and, with the catalog unreadable, no job has
/// more).
pub async fn catalog_states(engine: &Engine) -> Vec<JobState> {
    let catalog = match engine.catalog().await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: catalog unreadable, job states start empty");
            None
        }
    };
    let mut out = Vec::new();
    for job in engine.config.jobs.keys() {
        let history = match &catalog {
            Some(c) => read_history(c, job).await.ok(),
            None => None,
        };
        let (entries, flags) = history.unzip();
        let newest = entries.as_ref().and_then(|e| e.first());
        let result = match newest.map(|b| b.status) {
            Some(BackupStatus::Ok) => RunResult::Ok,
            Some(BackupStatus::Partial) => RunResult::Partial,
            _ => RunResult::Failed,
        };
        let outcome = RunOutcome { job: job.clone(), result, report: None, finished_at: Timestamp::now() };
        let mut s = job_state(&engine.config, &outcome, entries.as_deref(), &flags.unwrap_or_default());
        if newest.is_none() {
            s.last_run = None;
        }
        if let Some(c) = &catalog {
            s.verify = drill_state(c, job).await;
        }
        out.push(s);
    }
    out
}

/// A job's state after drill `rec`: its `drctl_verify_*` samples and its RPO only (merged into
/// the job's group, never replacing the backup samples). The one place `drctl verify` and the
/// daemon build it.
pub fn drill_job_state(config: &Config, rec: &crate::manifest::DrillRecord) -> JobState {
    JobState {
        job: rec.job.clone(),
        complete: false,
        rpo_seconds: config.jobs.get(&rec.job).map(|j| j.common.rpo().as_secs_f64()).unwrap_or(0.0),
        verify: VerifyState::from_record(rec),
        ..JobState::default()
    }
}
