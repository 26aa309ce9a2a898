//! The daemon's scheduler: when each job's backup (and drill) runs, and what may run at once.
//!
//! One loop per schedule computes the next fire time with [`schedule::next_after`] in the
//! configured `[daemon] timezone` (fresh each time, so DST changes are seen), sleeps until then
//! and triggers a run. A run is a task in one [`JoinSet`]; it goes through the same engine
//! functions as the CLI (`engine::run::run_job`, then `engine::prune::prune` for the job after a
//! backup committed on every target) and feeds the metrics.
//!
//! Rules, in the order a run meets them:
//! 1. **No overlap of one operation**: a backup still running, or queued, when the job's next
//!    backup is due makes that one skip (`drctl_backup_skipped_overlap_total`); the same for a
//!    drill (`drctl_verify_skipped_overlap_total`). A backup and a drill of one job never skip each
//!    other: they take turns ([`JobEntry::gate`]), and when both are due at the same time the drill
//!    runs after the backup, so that it tests the newest backup.
//! 2. **Catch-up**: on start, a job whose newest complete backup is older than its `rpo` (or that
//!    has none) is backed up once at once, not once per missed slot ([`Trigger::CatchUp`]);
//!    drills wait for their next slot.
//! 3. **Jitter**: a random delay up to `[daemon] jitter` before the run starts.
//! 4. **`max_concurrent`**: a semaphore bounds the runs in progress; the others wait their turn.
//! 5. **One replica**: the run takes the job's lock in the catalog ([`Catalog::try_lock_job`]: a
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
pub use schedule::{Schedule, next_after, previous_at_or_before};

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
    /// On start, for a job whose newest complete backup is older than its `rpo`: the daemon was
    /// down across its schedule. Runs once, claiming the slot it missed (the schedule's last fire
    /// time before the start), so replicas starting together run it once; a replica that finds
    /// the job caught up skips it.
    CatchUp(Timestamp),
}

impl Trigger {
    /// How logs spell it: `scheduled`, `manual`, `catch-up`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Scheduled(_) => "scheduled",
            Trigger::Manual => "manual",
            Trigger::CatchUp(_) => "catch-up",
        }
    }

    /// The slot a scheduled or catch-up run claims.
    pub fn slot(&self) -> Option<Timestamp> {
        match self {
            Trigger::Scheduled(t) | Trigger::CatchUp(t) => Some(*t),
            Trigger::Manual => None,
        }
    }
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
    /// A backup of the job is queued or running.
    backup_running: AtomicBool,
    /// A drill of the job is queued or running.
    verify_running: AtomicBool,
    /// Held by a run of the job for its whole length: a backup and a drill of one job take turns
    /// (first come, first served; on a PostgreSQL catalog they would otherwise meet at the job's
    /// lock and one would be skipped).
    gate: Arc<tokio::sync::Mutex<()>>,
    /// The newest backup slot that was either started (holding the gate) or skipped: a drill due
    /// at the same time waits for it, so that it runs after that backup.
    backup_slot: tokio::sync::watch::Sender<Option<Timestamp>>,
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
    /// Jobs a `stale` notification went out for: once per stretch without a fresh backup.
    stale_notified: Mutex<std::collections::BTreeSet<String>>,
}

/// The scheduler; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl JobEntry {
    fn running(&self, work: Work) -> &AtomicBool {
        match work {
            Work::Backup => &self.backup_running,
            Work::Verify => &self.verify_running,
        }
    }
}

/// Resets a job's running flag for one operation when its run ends, however it ends (aborted
/// included).
struct RunningFlag(Arc<Inner>, String, Work);

impl Drop for RunningFlag {
    fn drop(&mut self) {
        if let Some(j) = self.0.jobs.get(&self.1) {
            j.running(self.2).store(false, Ordering::SeqCst);
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
                    backup_running: AtomicBool::new(false),
                    verify_running: AtomicBool::new(false),
                    gate: Arc::new(tokio::sync::Mutex::new(())),
                    backup_slot: tokio::sync::watch::Sender::new(None),
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
                stale_notified: Mutex::new(Default::default()),
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
            if work == Work::Verify
                && let Some(j) = self.inner.jobs.get(&job)
                && let Some(backup) = &j.backup
                && self.backup_due_at(backup, at)
            {
                // due together: the drill goes after this slot's backup (started, or skipped)
                let mut seen = j.backup_slot.subscribe();
                tokio::select! {
                    _ = seen.wait_for(|s| s.is_some_and(|s| s >= at)) => {}
                    _ = tokio::time::sleep(BACKUP_SLOT_WAIT) => {
                        tracing::warn!(job = %job, "the backup due with this drill did not start: the drill runs anyway");
                    }
                    _ = stopping.cancelled() => return,
                }
            }
            match self.trigger(&job, work, Trigger::Scheduled(at)) {
                Ok(()) | Err(ControlError::AlreadyRunning) => {}
                Err(ControlError::ShuttingDown | ControlError::UnknownJob) => return,
            }
        }
    }

    /// Whether `backup` fires at `at` too.
    fn backup_due_at(&self, backup: &Schedule, at: Timestamp) -> bool {
        let just_before = at.checked_sub(jiff::SignedDuration::from_millis(1)).unwrap_or(at);
        next_after(backup, &self.inner.settings.timezone, just_before) == Some(at)
    }

    /// The catch-up after downtime: once, at start, a backup of every scheduled job whose newest
    /// complete backup is older than its `rpo` or that has none (see [`overdue`]).
    pub async fn catch_up(&self) {
        for (job, entry) in &self.inner.jobs {
            let Some(backup) = &entry.backup else { continue };
            let now = Timestamp::now();
            let Some(why) = overdue(&self.inner.engine, job, now).await else { continue };
            let missed = previous_at_or_before(backup, &self.inner.settings.timezone, now).unwrap_or(now);
            tracing::info!(job = %job, reason = %why, "catch-up: backing up now instead of at the next slot");
            match self.trigger(job, Work::Backup, Trigger::CatchUp(missed)) {
                Ok(()) | Err(ControlError::AlreadyRunning) => {}
                Err(ControlError::ShuttingDown | ControlError::UnknownJob) => return,
            }
        }
    }

    async fn readiness_loop(self) {
        loop {
            let result = self.inner.catalog.ping().await.map_err(|e| format!("catalog unreachable: {e}"));
            *lock(&self.inner.ready) = result;
            // free space moves between runs too (other data on the disk): a fresh figure per scrape period
            for (name, t) in &self.inner.engine.config.targets {
                if let Some(free) = crate::targets::free_bytes(t) {
                    self.inner.metrics.set_free_bytes(name, free);
                }
            }
            self.notify_stale().await;
            tokio::select! {
                _ = tokio::time::sleep(watch_period()) => {}
                _ = self.inner.stopping.cancelled() => return,
            }
        }
    }

    /// A `stale` notification for every job whose newest complete backup is older than its `rpo`
    /// (or that has none), once until it has a fresh one again: what a CronJob that stopped
    /// running cannot report itself. Only when a channel wants `stale`.
    async fn notify_stale(&self) {
        let engine = &self.inner.engine;
        if !engine.notifier.wants(crate::notify::EventKind::Stale) {
            return;
        }
        for job in engine.config.jobs.keys() {
            let why = overdue(engine, job, Timestamp::now()).await;
            let first = {
                let mut notified = lock(&self.inner.stale_notified);
                match &why {
                    Some(_) => notified.insert(job.clone()),
                    None => {
                        notified.remove(job);
                        false
                    }
                }
            };
            if let (Some(why), true) = (why, first) {
                let mut e = crate::notify::Event::new(crate::notify::EventKind::Stale, job, "backup", "stale");
                e.error = Some(why);
                e.hint = Some(format!("is the job running? `drctl run {job}` backs it up now"));
                engine.notifier.send(&e).await;
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
        if entry.running(work).swap(true, Ordering::SeqCst) {
            if let Trigger::Scheduled(at) = trigger {
                let event = match work {
                    Work::Backup => Event::SkippedOverlap { job },
                    Work::Verify => Event::VerifySkippedOverlap { job },
                };
                event.emit(Some(&self.inner.metrics));
                if work == Work::Backup {
                    entry.backup_slot.send_replace(Some(at));
                }
            }
            return Err(ControlError::AlreadyRunning);
        }
        while runs.try_join_next().is_some() {}
        let flag = RunningFlag(self.inner.clone(), job.to_string(), work);
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

    /// Whether a run of `job` (backup or drill) is queued or in progress.
    pub fn running(&self, job: &str) -> bool {
        self.inner.jobs.get(job).is_some_and(|j| {
            j.running(Work::Backup).load(Ordering::SeqCst) || j.running(Work::Verify).load(Ordering::SeqCst)
        })
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
        let running = self.inner.jobs.keys().filter(|j| self.running(j)).count();
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
        let aborted: Vec<String> = self.inner.jobs.keys().filter(|j| self.running(j)).cloned().collect();
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
    let Some(entry) = inner.jobs.get(job) else { return };
    let _turn = tokio::select! {
        g = entry.gate.clone().lock_owned() => g,
        _ = stopping.cancelled() => return,
    };
    if let (Work::Backup, Trigger::Scheduled(at)) = (work, trigger) {
        entry.backup_slot.send_replace(Some(at));
    }
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
    if matches!(trigger, Trigger::CatchUp(_)) && overdue(&inner.engine, job, Timestamp::now()).await.is_none() {
        Event::SkippedLocked { job, reason: "another replica already caught up" }.emit(metrics);
        lock.release().await;
        return;
    }
    if let Trigger::Scheduled(slot) | Trigger::CatchUp(slot) = trigger {
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
    tracing::info!(job = %job, kind = work.as_str(), trigger = trigger.as_str(), slot = trigger.slot().map(tracing::field::display), "run started");
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
                status = r.status.as_str(),
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
    let mut states = crate::metrics::job_states(engine, &[outcome]).await;
    for state in &mut states {
        if state.verify == VerifyState::default()
            && let Some(v) = inner.jobs.get(job).and_then(|j| *lock(&j.last_verify))
        {
            state.verify = v;
        }
        inner.metrics.set_job(state);
    }
    push(engine, &states).await;
}

/// Keep the Pushgateway groups of the daemon's jobs true, when `[pushgateway]` is set: the same
/// groups `drctl run` and `drctl verify` push to (a CronJob setup before the daemon, or the CLI
/// beside it), so no series there stays frozen at an older state while the daemon runs the job. A
/// daemon that stopped leaves them as it last saw them: their timestamps age, and BackupMissing
/// and DrctlDaemonDown fire. A failed push is a warning.
pub async fn push(engine: &Engine, states: &[crate::metrics::JobState]) {
    let Some(pushgateway) = &engine.config.pushgateway else { return };
    for e in crate::metrics::push::push_states(&pushgateway.url, states).await {
        tracing::warn!(error = %e, hint = %e.hint(), "metrics push failed");
    }
}

/// How long a drill due together with a backup waits for that backup to start before it runs
/// anyway (the backup loop is late, or the backup is queued behind a long run).
const BACKUP_SLOT_WAIT: Duration = Duration::from_secs(30);

/// Why `job` needs a catch-up backup at `now`: its newest backup committed on every target is
/// older than its `rpo`, or it has none. `None`: it is fresh enough, or the catalog cannot be read
/// (then the schedule stands).
/// How often the daemon checks the catalog, free space and staleness: 10 s, or
/// `DRCTL_TEST_WATCH_MS` (tests, which cannot wait for many 10 s periods).
fn watch_period() -> Duration {
    std::env::var("DRCTL_TEST_WATCH_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(10))
}

async fn overdue(engine: &Engine, job: &str, now: Timestamp) -> Option<String> {
    let rpo = engine.config.job(job).ok()?.common.rpo();
    let catalog = engine.catalog().await.ok()?;
    let entries = catalog.list(Some(job), None).await.ok()?;
    let newest = entries
        .iter()
        .filter(|b| b.status == BackupStatus::Ok)
        .filter_map(|b| b.manifest.as_ref())
        .filter(|m| !crate::retention::future_dated(m.started_at, now, crate::retention::CLOCK_TOLERANCE))
        .map(|m| m.finished_at)
        .max();
    let show = |d: std::time::Duration| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string();
    match newest {
        None => Some(format!("no complete backup yet (rpo {})", show(rpo))),
        Some(t) => {
            let age = now.duration_since(t).unsigned_abs();
            (age > rpo).then(|| format!("the newest complete backup is {} old, rpo {}", show(age), show(rpo)))
        }
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
                for c in &p.chunks {
                    log_collection(job, c);
                }
            }
        }
        Err(e) => tracing::warn!(job = %job, error = %e, "prune failed"),
    }
}

/// What a garbage collection did in one chunk repository, when it did anything.
fn log_collection(job: &str, c: &crate::chunked::gc::GcReport) {
    if let Some(why) = &c.skipped {
        tracing::info!(job = %job, target = %c.target, scope = %c.scope, reason = %why, "chunk garbage collection skipped");
        return;
    }
    let acted = c.packs_deleted.len() + c.packs_marked.len() + c.packs_repacked.len() + c.packs_resurrected.len();
    if acted == 0 && c.packs_waiting == 0 && c.packs_locked == 0 {
        return;
    }
    tracing::info!(
        job = %job,
        target = %c.target,
        scope = %c.scope,
        deleted = c.packs_deleted.len(),
        freed = %crate::units::bytes(c.bytes_freed),
        marked = c.packs_marked.len(),
        repacked = c.packs_repacked.len(),
        resurrected = c.packs_resurrected.len(),
        waiting = c.packs_waiting,
        locked = c.packs_locked,
        kept = c.packs_kept,
        "chunk packs collected"
    );
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
            push(&inner.engine, std::slice::from_ref(&job_state)).await;
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
