//! What `GET /api/v1/jobs` and the status page show per job: the newest run, the newest
//! successful backup and its age against the RPO, size, 3-2-1, the last restore drill, the next
//! scheduled run, and a red/amber/green verdict with its reasons.
//!
//! The numbers come from [`crate::metrics::job_state`] (the same function that feeds
//! `drctl_backup_last_success_timestamp_seconds`, `drctl_copies`, `drctl_rule_321_ok` and the
//! `drctl_verify_*` gauges, and computes 3-2-1 as `drctl check` does), so the page, the API, the
//! metrics and the alerts never disagree. The verdict mirrors the alert rules:
//!
//! - **red**: no successful backup yet; the newest run failed; the newest successful backup is
//!   older than the job's RPO (BackupMissing, BackupFailed); the last restore drill failed
//!   (VerifyFailed).
//! - **amber**: the newest run was partial; the newest committed backup does not meet 3-2-1
//!   (Rule321Broken); the newest committed backup was flagged suspicious at backup time (empty, or
//!   much smaller than the job's recent ones: BackupSuspicious); no successful drill in 8 days, or none ever while the job's oldest backup
//!   is more than 8 days old (VerifyMissing).
//! - **green**: none of these.
//!
//! Drill fields stay in the JSON (as `null`) while the catalog has no drill results.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use super::{ApiError, Control};
use crate::catalog::{BackupEntry, BackupFlags, BackupStatus, Catalog};
use crate::config::Config;
use crate::metrics::{RunOutcome, RunResult};

/// A drill counts as recent for this long (the VerifyMissing alert's 8 days).
pub const DRILL_MAX_AGE_SECONDS: i64 = 8 * 86400;

/// `GET /api/v1/jobs`.
#[derive(Debug, Clone, Serialize)]
pub struct JobsResponse {
    pub jobs: Vec<JobSummary>,
}

/// One job's state.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub name: String,
    pub kind: &'static str,
    /// Backup schedule (cron), if any.
    pub schedule: Option<String>,
    pub targets: Vec<String>,
    pub rpo_seconds: u64,
    /// A run of the job is in progress (daemon).
    pub running: bool,
    /// Next scheduled backup (daemon; `null` without a schedule).
    pub next_run: Option<Timestamp>,
    /// The newest run recorded in the catalog, whatever its status (as in `drctl list --json`).
    pub last_backup: Option<BackupEntry>,
    /// The newest backup committed on every target.
    pub last_success: Option<LastSuccess>,
    /// Size and duration of the newest committed backup (partial ones included).
    pub size: Option<Size>,
    /// Copies of the newest committed backup: 1 (the live data) + the targets holding it.
    pub copies: Option<u64>,
    /// Whether the newest committed backup meets 3-2-1 (`null`: the job's state is unknown).
    pub rule_321_ok: Option<bool>,
    /// Why the newest committed backup was flagged suspicious at backup time (`null`: it was not,
    /// or there is none).
    pub suspicious: Option<String>,
    pub drill: Drill,
    /// Physical PostgreSQL jobs: the moments a restore can reach (`null` for other jobs, or before
    /// the first base backup). (Added, issue 16.)
    pub recoverable: Option<Recoverable>,
    /// `green`, `amber` or `red`.
    pub health: Health,
    /// Why the health is not green (empty when green).
    pub reasons: Vec<String>,
}

/// The recoverable window of a physical job: from the consistent point of its oldest committed base
/// backup (the server's clock) to the moment up to which its WAL archive holds everything the server
/// wrote, as this daemon's receiver last reported (`null` when no receiver runs in this process).
#[derive(Debug, Clone, Serialize)]
pub struct Recoverable {
    pub from: Timestamp,
    pub to: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastSuccess {
    pub finished_at: Timestamp,
    pub age_seconds: i64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Size {
    /// Plaintext bytes read from the source.
    pub source_bytes: u64,
    /// Bytes stored on each target (compressed, encrypted).
    pub stored_bytes: u64,
    pub duration_seconds: f64,
}

/// The last restore drill (all `null` until the job has had one).
#[derive(Debug, Clone, Serialize)]
pub struct Drill {
    /// Drill schedule (cron), if any.
    pub schedule: Option<String>,
    /// Whether the last drill passed.
    pub last_passed: Option<bool>,
    /// When the newest passed drill ran.
    pub last_success: Option<Timestamp>,
    pub last_success_age_seconds: Option<i64>,
    /// Duration of the last drill (the measured restore time).
    pub duration_seconds: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Green,
    Amber,
    Red,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Green => "green",
            Health::Amber => "amber",
            Health::Red => "red",
        }
    }
}

/// Every configured job's summary, from one catalog read.
///
/// # Errors
/// [`ApiError::Catalog`] when the catalog cannot be read.
pub async fn summaries(
    config: &Config,
    catalog: &Catalog,
    control: &dyn Control,
    now: Timestamp,
) -> Result<Vec<JobSummary>, ApiError> {
    let mut by_job: BTreeMap<String, Vec<BackupEntry>> = BTreeMap::new();
    for e in catalog.list(None, None).await? {
        by_job.entry(e.job.clone()).or_default().push(e);
    }
    let flags = catalog.backup_flags(None).await?;
    let mut out = Vec::new();
    for name in config.jobs.keys() {
        let entries = by_job.get(name).map(Vec::as_slice).unwrap_or_default();
        let verify = crate::metrics::drill_state(catalog, name).await;
        out.push(summarize(config, name, entries, &flags, verify, control, now));
    }
    Ok(out)
}

/// One job's summary from its catalog `entries` (newest first, as [`Catalog::list`] returns them)
/// and the `flags` of its backups ([`Catalog::backup_flags`]).
pub fn summarize(
    config: &Config,
    name: &str,
    entries: &[BackupEntry],
    flags: &BTreeMap<String, BackupFlags>,
    verify: crate::metrics::VerifyState,
    control: &dyn Control,
    now: Timestamp,
) -> JobSummary {
    let job = config.jobs.get(name);
    let newest = entries.first();
    // job_state describes "the run that just ended" plus the catalog: here the newest run is that
    let last_run = match newest.map(|e| e.status) {
        Some(BackupStatus::Ok) => RunResult::Ok,
        Some(BackupStatus::Partial) => RunResult::Partial,
        _ => RunResult::Failed,
    };
    let outcome = RunOutcome { job: name.to_string(), result: last_run, report: None, finished_at: now };
    let mut state = crate::metrics::job_state(config, &outcome, Some(entries), flags);
    state.verify = verify;
    let suspicious = state.suspicious.clone().flatten();
    let age = |t: Timestamp| (now.as_second() - t.as_second()).max(0);
    let last_success = state.last_success.map(from_unix).map(|t| LastSuccess { finished_at: t, age_seconds: age(t) });
    let drill_success = state.verify.last_success.map(from_unix);
    let drill = Drill {
        schedule: job.and_then(|j| j.common.verify.as_ref()).and_then(|v| v.schedule.clone()),
        last_passed: state.verify.last_passed,
        last_success: drill_success,
        last_success_age_seconds: drill_success.map(age),
        duration_seconds: state.verify.duration_seconds,
    };
    let rpo_seconds = job.map(|j| j.common.rpo().as_secs()).unwrap_or(26 * 3600);
    let oldest_age = entries.last().and_then(|e| e.started_at.parse::<Timestamp>().ok()).map(age);

    let (health, reasons) = judge(&Facts {
        job: name,
        rpo_seconds,
        newest_status: newest.map(|e| e.status),
        newest_error: newest.and_then(|e| e.error.as_deref()),
        last_success_age: last_success.as_ref().map(|s| s.age_seconds),
        has_committed: state.newest.is_some(),
        copies: state.copies,
        rule_321_ok: state.rule_321_ok,
        suspicious: suspicious.as_deref(),
        drill_passed: drill.last_passed,
        drill_success_age: drill.last_success_age_seconds,
        oldest_age,
    });
    JobSummary {
        name: name.to_string(),
        kind: job.map(|j| j.spec.kind_name()).unwrap_or("unknown"),
        schedule: job.and_then(|j| j.common.schedule.clone()),
        targets: job.map(|j| j.common.targets.clone()).unwrap_or_default(),
        rpo_seconds,
        running: control.running(name),
        next_run: control.next_run(name),
        last_backup: newest.cloned(),
        last_success,
        size: state.newest.map(|n| Size {
            source_bytes: n.source_bytes,
            stored_bytes: n.stored_bytes,
            duration_seconds: n.duration_seconds,
        }),
        copies: state.copies,
        rule_321_ok: state.rule_321_ok,
        suspicious,
        drill,
        recoverable: recoverable(name, entries),
        health,
        reasons,
    }
}

/// See [`Recoverable`].
fn recoverable(name: &str, entries: &[BackupEntry]) -> Option<Recoverable> {
    let from = entries
        .iter()
        .filter(|e| e.status != BackupStatus::Failed)
        .filter_map(|e| e.manifest.as_ref())
        .filter_map(|m| crate::jobs::postgres::physical::PhysicalFacts::of(&m.facts))
        .map(|f| f.stop_time)
        .min()?;
    let to = crate::metrics::wal::latest(name).and_then(|s| s.last_archived).map(from_unix);
    Some(Recoverable { from, to })
}

/// What the verdict is made of (ages in seconds, at one `now`).
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    pub job: &'a str,
    pub rpo_seconds: u64,
    /// Status of the newest run (`None`: the job never ran).
    pub newest_status: Option<BackupStatus>,
    pub newest_error: Option<&'a str>,
    /// Age of the newest backup committed on every target.
    pub last_success_age: Option<i64>,
    /// Whether any backup (partial included) is committed.
    pub has_committed: bool,
    pub copies: Option<u64>,
    pub rule_321_ok: Option<bool>,
    /// Why the newest committed backup was flagged suspicious, if it was.
    pub suspicious: Option<&'a str>,
    pub drill_passed: Option<bool>,
    pub drill_success_age: Option<i64>,
    /// Age of the oldest run the catalog knows (how long the job has existed, at least).
    pub oldest_age: Option<i64>,
}

/// The red/amber/green verdict and its reasons, the red ones first (see the module doc).
pub fn judge(f: &Facts) -> (Health, Vec<String>) {
    let name = f.job;
    let mut red = Vec::new();
    let mut amber = Vec::new();
    match (f.last_success_age, f.newest_status) {
        (None, None) => red.push(format!("no backup yet: run `drctl run {name}`")),
        (None, Some(_)) => red.push("no successful backup yet (committed on every target)".to_string()),
        (Some(age), _) if age > f.rpo_seconds as i64 => red.push(format!(
            "the newest successful backup is {} old, more than the RPO of {}",
            human_duration(age),
            human_duration(f.rpo_seconds as i64)
        )),
        _ => {}
    }
    match f.newest_status {
        Some(BackupStatus::Failed) => red.push(match f.newest_error {
            Some(err) => format!("the last backup failed: {err}"),
            None => "the last backup failed".to_string(),
        }),
        Some(BackupStatus::Partial) => {
            amber.push(format!("the last backup is stored on some targets only: run `drctl sync {name}`"))
        }
        _ => {}
    }
    if f.drill_passed == Some(false) {
        red.push("the last restore drill failed".to_string());
    }
    if f.rule_321_ok != Some(true) && f.has_committed {
        let copies = f.copies.unwrap_or(1);
        amber.push(format!(
            "3-2-1 not met: {copies} cop{} (3 copies on 2 media, 1 offsite needed)",
            if copies == 1 { "y" } else { "ies" }
        ));
    }
    if let Some(reason) = f.suspicious {
        amber.push(format!(
            "the newest backup is suspicious: {reason}; compare sizes with `drctl list {name}`, check the source, run `drctl verify {name}`"
        ));
    }
    match f.drill_success_age {
        Some(a) if a > DRILL_MAX_AGE_SECONDS => {
            amber.push(format!("no successful restore drill in 8 days (the last was {} ago)", human_duration(a)))
        }
        None if f.oldest_age.is_some_and(|a| a > DRILL_MAX_AGE_SECONDS) => {
            amber.push(format!("no successful restore drill yet: run `drctl verify {name}`"))
        }
        _ => {}
    }
    let health = if !red.is_empty() {
        Health::Red
    } else if !amber.is_empty() {
        Health::Amber
    } else {
        Health::Green
    };
    red.extend(amber);
    (health, red.into_iter().map(|r| crate::redact::scrub(&r)).collect())
}

fn from_unix(seconds: f64) -> Timestamp {
    Timestamp::from_millisecond((seconds * 1000.0) as i64).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `45s`, `12m`, `5h`, `3d`.
pub fn human_duration(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86400;

    /// A healthy job: backed up an hour ago, 3-2-1 met, drilled yesterday.
    fn healthy() -> Facts<'static> {
        Facts {
            job: "pg",
            rpo_seconds: 26 * 3600,
            newest_status: Some(BackupStatus::Ok),
            newest_error: None,
            last_success_age: Some(3600),
            has_committed: true,
            copies: Some(3),
            rule_321_ok: Some(true),
            suspicious: None,
            drill_passed: Some(true),
            drill_success_age: Some(DAY),
            oldest_age: Some(30 * DAY),
        }
    }

    #[test]
    fn verdicts() {
        let cases: Vec<(&str, Facts, Health, &[&str])> = vec![
            ("healthy", healthy(), Health::Green, &[]),
            ("never ran", Facts { job: "pg", rpo_seconds: 3600, ..Facts::default() }, Health::Red, &["no backup yet"]),
            (
                "older than the RPO",
                Facts { last_success_age: Some(27 * 3600), ..healthy() },
                Health::Red,
                &["more than the RPO of 26h"],
            ),
            (
                "last run failed",
                Facts { newest_status: Some(BackupStatus::Failed), newest_error: Some("disk full"), ..healthy() },
                Health::Red,
                &["the last backup failed: disk full"],
            ),
            (
                "failed drill",
                Facts { drill_passed: Some(false), ..healthy() },
                Health::Red,
                &["the last restore drill failed"],
            ),
            (
                "partial",
                Facts { newest_status: Some(BackupStatus::Partial), ..healthy() },
                Health::Amber,
                &["drctl sync pg"],
            ),
            (
                "3-2-1 broken",
                Facts { copies: Some(2), rule_321_ok: Some(false), ..healthy() },
                Health::Amber,
                &["3-2-1 not met: 2 copies"],
            ),
            (
                "suspicious newest backup",
                Facts { suspicious: Some("the backup is empty (0 bytes read from the source)"), ..healthy() },
                Health::Amber,
                &[
                    "the newest backup is suspicious: the backup is empty (0 bytes read from the source); compare sizes with `drctl list pg`, check the source, run `drctl verify pg`",
                ],
            ),
            (
                "suspicious and failed since: red first, the suspicion stays",
                Facts {
                    newest_status: Some(BackupStatus::Failed),
                    suspicious: Some("the source shrank by 80%"),
                    ..healthy()
                },
                Health::Red,
                &["the last backup failed", "suspicious: the source shrank"],
            ),
            (
                "drill too old",
                Facts { drill_success_age: Some(9 * DAY), ..healthy() },
                Health::Amber,
                &["no successful restore drill in 8 days"],
            ),
            (
                "never drilled, job older than 8 days",
                Facts { drill_passed: None, drill_success_age: None, ..healthy() },
                Health::Amber,
                &["drctl verify pg"],
            ),
            (
                "never drilled, new job",
                Facts { drill_passed: None, drill_success_age: None, oldest_age: Some(DAY), ..healthy() },
                Health::Green,
                &[],
            ),
            (
                "red wins over amber, red reasons first",
                Facts { newest_status: Some(BackupStatus::Failed), rule_321_ok: Some(false), ..healthy() },
                Health::Red,
                &["the last backup failed", "3-2-1 not met"],
            ),
        ];
        for (what, facts, health, reasons) in cases {
            let (h, r) = judge(&facts);
            assert_eq!(h, health, "{what}: {r:?}");
            assert_eq!(r.len(), reasons.len(), "{what}: {r:?}");
            for (got, want) in r.iter().zip(reasons) {
                assert!(got.contains(want), "{what}: `{got}` lacks `{want}`");
            }
        }
    }
}
