//! The daemon's scheduler: when each job's backup (and drill) runs, and what may run at once.
//!
//! One loop per schedule computes the next fire time with [`schedule::next_after`] in the
//! configured `[daemon] timezone` (fresh each time, so DST changes are seen), sleeps until then
//! and triggers a run. A run is a task in one [`JoinSet`]; it goes through the same engine
//! functions as the CLI (`engine::run::run_job`, then `engine::prune::prune` for the job after a
//! backup committed on every target) and feeds the metrics.
//!
//! Rules, in the order a run meets them:
//! 1. **No overlap**: a job (backup or drill) that is still running, or queued, when it is due
//!    again is skipped, and `drctl_backup_skipped_overlap_total` counts it.
//! 2. **Jitter**: a random delay up to `[daemon] jitter` before the run starts.
//! 3. **`max_concurrent`**: a semaphore bounds the runs in progress; the others wait their turn.
//! 4. **One replica**: the run takes the job's lock in the catalog ([`Catalog::try_lock_job`]: a
//!    PostgreSQL advisory lock held on its own connection for the whole run; a no-op on SQLite,
//!    where only one daemon may run). A replica that does not get it skips the run. A scheduled
//!    run then claims its slot (job, kind, fire time) in the catalog; a slot another replica
//!    already ran is skipped too (a fast run may have ended, and released the lock, before a
//!    replica whose clock is a little late gets there). Both skips count in
//!    `drctl_backup_skipped_locked_total`.
//!
//! Shutdown ([`Scheduler::shutdown`]): no new runs (the loops stop, a queued run that has not
//! started gives up, the API is told "shutting down"), then up to `grace` for running ones, then
//! they are aborted: their futures are dropped. Nothing is half committed by that: a backup is
//! committed by its manifest, which the engine writes last, so an aborted run leaves at most
//! artifacts without a manifest (ignored by restore, removed by `drctl prune`); the job's lock
//! goes with its connection.

mod control;
pub mod schedule;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::ControlError;
use crate::catalog::{BackupStatus, Catalog};
use crate::engine::Engine;
use crate::metrics::{Event, Metrics, RunOutcome, RunResult, VerifyState};
pub use schedule::{Schedule, next_after};

/// Default `[daemon] max_concurrent`.
pub const DEFAULT_MAX_CONCURRENT: u32 = 2;

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// `drctl run JOB`, then prune.
    Backup,
    /// `drctl verify JOB` (restore drill).
    Verify,
}

impl Work {
    pub fn as_str(self) -> &'static str {
        match self {
            Work::Backup => "backup",
            Work::Verify => "verify",
        }
    }
}

/// Why a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The schedule's fire time (the slot replicas agree on).
    Scheduled(Timestamp),
    /// Asked for through the API.
    Manual,
}

/// How [`Scheduler::shutdown`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// Runs that were still going after the grace period and were aborted (0: a clean drain).
    pub aborted: usize,
}

/// Settings the scheduler takes from `[daemon]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub timezone: TimeZone,
    pub max_concurrent: u32,
    pub jitter: Duration,
}

impl Settings {
    pub fn from_config(config: &crate::config::Config) -> Settings {
        Settings {
            timezone: config.timezone(),
            max_concurrent: config.daemon.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT).max(1),
            jitter: config.daemon.jitter(),
        }
    }
}

struct JobEntry {
    backup: Option<Schedule>,
    verify: Option<Schedule>,
    /// A backup or drill of the job is queued or running.
    running: AtomicBool,
    /// The next scheduled backup.
    next_backup: Mutex<Option<Timestamp>>,
    /// The last drill this daemon ran, so that a backup's metrics (rebuilt from the catalog) keep it.
    last_verify: Mutex<Option<VerifyState>>,
}

struct Inner {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    catalog: Arc<Catalog>,
    settings: Settings,
    jobs: BTreeMap<String, JobEntry>,
    permits: Arc<Semaphore>,
    /// Cancelled when the daemon stops taking runs.
    stopping: CancellationToken,
    /// Runs in progress. Spawning and [`Scheduler::shutdown`] hold the lock, so no run slips in
    /// after the drain started.
    runs: Mutex<JoinSet<()>>,
    /// Who this replica is, for slot claims and logs.
    replica: String,
    /// The last catalog check (`/readyz`).
    ready: Mutex<Result<(), String>>,
}

/// The scheduler; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

/// Resets a job's running flag when its run ends, however it ends (aborted included).
struct RunningFlag(Arc<Inner>, String);

impl Drop for RunningFlag {
    fn drop(&mut self) {
        if let Some(j) = self.0.jobs.get(&self.1) {
            j.running.store(false, Ordering::SeqCst);
        }
    }
}

impl Scheduler {
    /// A scheduler for every job of `engine`'s config. Schedules were validated when the config
    /// was loaded; one that does not parse here is logged and left out.
    pub fn new(engine: Arc<Engine>, metrics: Arc<Metrics>, catalog: Arc<Catalog>, settings: Settings) -> Scheduler {
        let parse = |job: &str, what: &str, expr: Option<&String>| {
            expr.and_then(|e| match Schedule::parse(e) {
                Ok(s) => Some(s),
                Err(err) => {
                    tracing::error!(job = %job, schedule = %e, error = %err, "{what} schedule ignored");
                    None
                }
            })
        };
        let jobs = engine
            .config
            .jobs
            .iter()
            .map(|(name, j)| {
                let entry = JobEntry {
                    backup: parse(name, "backup", j.common.schedule.as_ref()),
                    verify: parse(name, "verify", j.common.verify.as_ref().and_then(|v| v.schedule.as_ref())),
                    running: AtomicBool::new(false),
                    next_backup: Mutex::new(None),
                    last_verify: Mutex::new(None),
                };
                (name.clone(), entry)
            })
            .collect();
        let permits = Arc::new(Semaphore::new(settings.max_concurrent as usize));
        let replica = format!("{}:{}", crate::host::name(), std::process::id());
        Scheduler {
            inner: Arc::new(Inner {
                engine,
                metrics,
                catalog,
                settings,
                jobs,
                permits,
                stopping: CancellationToken::new(),
                runs: Mutex::new(JoinSet::new()),
                replica,
                ready: Mutex::new(Ok(())),
            }),
        }
    }

    /// Start one loop per schedule, and the readiness check. They end when the scheduler stops.
    pub fn start(&self) {
        for (name, entry) in &self.inner.jobs {
            for (work, schedule) in [(Work::Backup, &entry.backup), (Work::Verify, &entry.verify)] {
                let Some(schedule) = schedule.clone() else { continue };
                let (this, name) = (self.clone(), name.clone());
                tracing::info!(job = %name, kind = work.as_str(), schedule = %schedule.expr, "scheduled");
                tokio::spawn(async move { this.schedule_loop(name, work, schedule).await });
            }
        }
        let this = self.clone();
        tokio::spawn(async move { this.readiness_loop().await });
    }

    async fn schedule_loop(self, job: String, work: Work, schedule: Schedule) {
        let stopping = self.inner.stopping.clone();
        loop {
            let Some(at) = next_after(&schedule, &self.inner.settings.timezone, Timestamp::now()) else {
                tracing::warn!(job = %job, kind = work.as_str(), schedule = %schedule.expr, "the schedule never fires again");
                return;
            };
            if work == Work::Backup
                && let Some(j) = self.inner.jobs.get(&job)
            {
                *lock(&j.next_backup) = Some(at);
            }
            tracing::debug!(job = %job, kind = work.as_str(), at = %at, "next run");
            tokio::select! {
                _ = sleep_until(at) => {}
                _ = stopping.cancelled() => return,
            }
            match self.trigger(&job, work, Trigger::Scheduled(at)) {
                Ok(()) | Err(ControlError::AlreadyRunning) => {}
                Err(ControlError::ShuttingDown | ControlError::UnknownJob) => return,
            }
        }
    }

    async fn readiness_loop(self) {
        loop {
            let result = self.inner.catalog.ping().await.map_err(|e| format!("catalog unreachable: {e}"));
            *lock(&self.inner.ready) = result;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                _ = self.inner.stopping.cancelled() => return,
            }
        }
    }

    /// Start a run of `job` now (it may still wait for jitter and a free slot). A scheduled run
    /// that finds the job busy is counted as skipped.
    ///
    /// # Errors
    /// [`ControlError`]: unknown job, a run of the job is queued or running, or the daemon is stopping.
    pub fn trigger(&self, job: &str, work: Work, trigger: Trigger) -> Result<(), ControlError> {
        let entry = self.inner.jobs.get(job).ok_or(ControlError::UnknownJob)?;
        let mut runs = lock(&self.inner.runs);
        if self.inner.stopping.is_cancelled() {
            return Err(ControlError::ShuttingDown);
        }
        if entry.running.swap(true, Ordering::SeqCst) {
            if matches!(trigger, Trigger::Scheduled(_)) {
                Event::SkippedOverlap { job }.emit(Some(&self.inner.metrics));
            }
            return Err(ControlError::AlreadyRunning);
        }
        while runs.try_join_next().is_some() {}
        let flag = RunningFlag(self.inner.clone(), job.to_string());
        let inner = self.inner.clone();
        let job = job.to_string();
        runs.spawn(async move {
            let _flag = flag;
            execute(&inner, &job, work, trigger).await;
        });
        Ok(())
    }

    /// The next scheduled backup of `job`.
    pub fn next_run(&self, job: &str) -> Option<Timestamp> {
        self.inner.jobs.get(job).and_then(|j| *lock(&j.next_backup))
    }

    /// Whether a run of `job` is queued or in progress.
    pub fn running(&self, job: &str) -> bool {
        self.inner.jobs.get(job).is_some_and(|j| j.running.load(Ordering::SeqCst))
    }

    /// The last catalog check.
    pub fn ready(&self) -> Result<(), String> {
        if self.inner.stopping.is_cancelled() {
            return Err("shutting down".into());
        }
        lock(&self.inner.ready).clone()
    }

    /// Stop taking runs, wait up to `grace` (or until `hurry` completes: a second signal) for the
    /// running ones, then abort what is left.
    pub async fn shutdown(&self, grace: Duration, hurry: impl std::future::Future<Output = ()>) -> Drain {
        let mut runs = {
            let mut guard = lock(&self.inner.runs);
            self.inner.stopping.cancel();
            std::mem::take(&mut *guard)
        };
        let deadline = tokio::time::Instant::now() + grace;
        let running = self.inner.jobs.iter().filter(|(_, j)| j.running.load(Ordering::SeqCst)).count();
        if running > 0 {
            tracing::info!(runs = running, grace = %humantime::format_duration(grace), "waiting for running jobs");
        }
        let mut hurry = std::pin::pin!(hurry);
        loop {
            tokio::select! {
                r = tokio::time::timeout_at(deadline, runs.join_next()) => match r {
                    Ok(None) => return Drain { aborted: 0 },
                    Ok(Some(_)) => {}
                    Err(_) => break,
                },
                _ = &mut hurry => break,
            }
        }
        let aborted: Vec<String> =
            self.inner.jobs.iter().filter(|(_, j)| j.running.load(Ordering::SeqCst)).map(|(n, _)| n.clone()).collect();
        tracing::warn!(
            jobs = %aborted.join(","),
            "grace period over: aborting the running jobs (nothing they wrote is committed)"
        );
        let n = runs.len();
        runs.abort_all();
        while runs.join_next().await.is_some() {}
        Drain { aborted: n }
    }
}

/// One run, from the queue to the metrics.
async fn execute(inner: &Inner, job: &str, work: Work, trigger: Trigger) {
    let stopping = &inner.stopping;
    let jitter = inner.settings.jitter;
    if !jitter.is_zero() {
        let delay = {
            use rand::Rng as _;
            Duration::from_millis(rand::thread_rng().gen_range(0..=jitter.as_millis() as u64))
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopping.cancelled() => return,
        }
    }
    let _permit = tokio::select! {
        p = inner.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        _ = stopping.cancelled() => return,
    };
    let metrics = Some(&*inner.metrics);
    let lock = match inner.catalog.try_lock_job(job).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            Event::SkippedLocked { job, reason: "another replica is running the job" }.emit(metrics);
            return;
        }
        Err(e) => {
            tracing::error!(job = %job, kind = work.as_str(), error = %e, "cannot take the job's lock: run not started");
            finished(inner, job, work, RunResult::Failed);
            return;
        }
    };
    if let Trigger::Scheduled(slot) = trigger {
        match inner.catalog.claim_slot(job, work.as_str(), slot, &inner.replica).await {
            Ok(true) => {}
            Ok(false) => {
                Event::SkippedLocked { job, reason: "another replica already ran this slot" }.emit(metrics);
                lock.release().await;
                return;
            }
            // the job's lock is held: running is safe, only the record of the slot is missing
            Err(e) => tracing::warn!(job = %job, error = %e, "could not record the run's slot; running anyway"),
        }
    }
    tracing::info!(job = %job, kind = work.as_str(), trigger = ?trigger, "run started");
    match work {
        Work::Backup => backup(inner, job).await,
        Work::Verify => verify(inner, job).await,
    }
    lock.release().await;
}

async fn backup(inner: &Inner, job: &str) {
    let engine = &*inner.engine;
    let result = crate::engine::run::run_job(engine, job).await;
    let outcome = RunOutcome::new(job, &result);
    match &result {
        Ok(r) => {
            tracing::info!(
                job = %job,
                backup_id = %r.backup_id,
                status = ?r.status,
                targets = %r.committed.join(","),
                stored_bytes = r.stored_bytes,
                duration_seconds = r.duration_seconds,
                "backup committed"
            );
            for f in &r.failed {
                tracing::warn!(job = %job, target = %f.target, error = %f.error, "target has no copy of the backup");
            }
            if let Some(w) = &r.catalog_warning {
                tracing::warn!(job = %job, error = %w, "the catalog was not updated: run `drctl catalog rebuild`");
            }
        }
        Err(e) => tracing::error!(job = %job, error = %e, hint = e.hint().unwrap_or_default(), "backup failed"),
    }
    finished(inner, job, Work::Backup, outcome.result);
    if matches!(&result, Ok(r) if r.status == BackupStatus::Ok) {
        prune_after_backup(engine, job).await;
    }
    for mut state in crate::metrics::job_states(engine, &[outcome]).await {
        if state.verify == VerifyState::default()
            && let Some(v) = inner.jobs.get(job).and_then(|j| *lock(&j.last_verify))
        {
            state.verify = v;
        }
        inner.metrics.set_job(&state);
    }
}

/// Retention for `job` after a backup committed on every target (as `drctl prune JOB`); problems
/// are logged as warnings. Also `drctl run JOB --prune`, the CronJob's step.
pub async fn prune_after_backup(engine: &Engine, job: &str) {
    match crate::engine::prune::prune(engine, Some(job), false).await {
        Ok(plans) => {
            for p in plans {
                if !p.deleted.is_empty() {
                    tracing::info!(job = %job, target = %p.target, deleted = %p.deleted.join(","), "pruned");
                }
                for e in &p.errors {
                    tracing::warn!(job = %job, target = %p.target, error = %e, "prune failed");
                }
            }
        }
        Err(e) => tracing::warn!(job = %job, error = %e, "prune failed"),
    }
}

fn finished(inner: &Inner, job: &str, work: Work, result: RunResult) {
    let metrics = Some(&*inner.metrics);
    match work {
        Work::Backup => Event::BackupFinished { job, result }.emit(metrics),
        Work::Verify => Event::VerifyFinished { job, result }.emit(metrics),
    }
}

/// The restore drill of the newest backup of `job` (as `drctl verify JOB`), then its metrics.
async fn verify(inner: &Inner, job: &str) {
    let result = match crate::drill::verify_job(&inner.engine, job, None).await {
        Ok(report) => {
            let rec = &report.record;
            let passed = rec.passed();
            let job_state = crate::metrics::drill_job_state(&inner.engine.config, rec);
            let state = job_state.verify;
            if passed {
                tracing::info!(
                    job = %job,
                    backup_id = rec.backup_id.as_deref().unwrap_or_default(),
                    restore_seconds = rec.restore_seconds,
                    "drill passed"
                );
            } else {
                for f in &rec.findings {
                    tracing::warn!(job = %job, finding = %f, "drill finding");
                }
                tracing::error!(job = %job, backup_id = rec.backup_id.as_deref().unwrap_or_default(), "drill failed");
            }
            for w in &report.record_warnings {
                tracing::warn!(job = %job, error = %w, "the drill's record was not stored");
            }
            if let Some(j) = inner.jobs.get(job) {
                let mut last = lock(&j.last_verify);
                // a failed drill keeps the time of the last one that passed
                let last_success = state.last_success.or(last.and_then(|l| l.last_success));
                *last = Some(VerifyState { last_success, ..state });
            }
            inner.metrics.set_job(&job_state);
            if passed { RunResult::Ok } else { RunResult::Failed }
        }
        Err(e) => {
            tracing::error!(job = %job, error = %e, hint = e.hint().unwrap_or_default(), "drill failed");
            RunResult::Failed
        }
    };
    finished(inner, job, Work::Verify, result);
}

/// Sleep until wall-clock time `at`, in steps of at most a minute so that a clock step (NTP) is
/// noticed.
async fn sleep_until(at: Timestamp) {
    loop {
        let left = at.duration_since(Timestamp::now());
        if left.is_zero() || left.is_negative() {
            return;
        }
        let step = left.unsigned_abs().min(Duration::from_secs(60));
        tokio::time::sleep(step).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
