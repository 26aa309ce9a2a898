//! Prometheus metrics: the metric families (a `prometheus-client` registry), the per-job state
//! they describe, and the push of that state to a Pushgateway.
//!
//! Metric names are a public interface: the alert rules in `dashboards/prometheus/alerts.yml` and
//! the Grafana dashboard use them, and `tests/dashboards.rs` checks both against [`METRIC_NAMES`].
//! Names only ever grow.
//!
//! Every per-job sample carries the label `drctl_job` (never `job`: Prometheus owns that one, and
//! the Pushgateway's grouping key uses it). Label sets stay small: `drctl_job`, `stage`, `result`,
//! `version`.
//!
//! Two kinds of families:
//! - **state** gauges, one set per job ([`JobState`]): last success, last status, duration, sizes,
//!   RPO, 3-2-1. `drctl run` rebuilds a job's whole state from the catalog after each run and
//!   replaces the job's Pushgateway group with it ([`push`]), so a failed run keeps the earlier
//!   last-success time and a job that never succeeded has no last-success sample.
//! - **event** counters ([`Event`]): backup runs and drills by result, runs skipped because the
//!   previous one was still going, runs skipped because another daemon replica had the job. They count what one long-lived process saw, so only the daemon's `/metrics`
//!   exposes them; they are never pushed (a `drctl run` process would push `1` every time, which
//!   no `rate()` can read).
//!
//! Status semantics: `drctl_backup_last_status` is 1 only when the last run committed the backup
//! on every target of the job (exit 0); a failed run (exit 1) and a partial one (exit 3) are 0, and
//! `drctl_backup_partial` says which of the two it was. The last-success time is the newest
//! backup committed on every target. `drctl_copies` and `drctl_rule_321_ok` describe the newest
//! committed backup (partial ones included), computed as `drctl check` does.
//! `drctl_backup_suspicious` is 1 when that backup was flagged suspicious at backup time (empty,
//! or its source much smaller than the job's recent backups: see `verify.suspicious_drop`).

pub mod push;
mod state;
pub mod wal;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use state::{
    BackupSize, RunOutcome, RunResult, VerifyState, catalog_states, drill_job_state, drill_state, job_state, job_states,
};

/// `drctl_build_info{version}`: always 1.
pub const BUILD_INFO: &str = "drctl_build_info";
/// Unix time the newest backup committed on every target finished.
pub const BACKUP_LAST_SUCCESS: &str = "drctl_backup_last_success_timestamp_seconds";
/// 1 when the last run committed on every target, else 0.
pub const BACKUP_LAST_STATUS: &str = "drctl_backup_last_status";
/// 1 when the last run was partial (committed on some targets only).
pub const BACKUP_PARTIAL: &str = "drctl_backup_partial";
/// Wall time of the newest committed backup.
pub const BACKUP_DURATION: &str = "drctl_backup_duration_seconds";
/// `{stage="source|stored"}`: sizes of the newest committed backup.
pub const BACKUP_BYTES: &str = "drctl_backup_bytes";
/// 1 when the newest committed backup was flagged suspicious at backup time, else 0.
pub const BACKUP_SUSPICIOUS: &str = "drctl_backup_suspicious";
/// The job's RPO (`rpo`, default 26 h).
pub const BACKUP_RPO: &str = "drctl_backup_rpo_seconds";
/// Unix time of the newest successful restore drill.
pub const VERIFY_LAST_SUCCESS: &str = "drctl_verify_last_success_timestamp_seconds";
/// 1 when the last drill passed, else 0.
pub const VERIFY_LAST_STATUS: &str = "drctl_verify_last_status";
/// Duration of the last drill (the measured restore time, RTO).
pub const VERIFY_DURATION: &str = "drctl_verify_duration_seconds";
/// 1 (the live data) + the targets holding the newest committed backup.
pub const COPIES: &str = "drctl_copies";
/// 1 when the newest committed backup meets 3-2-1.
pub const RULE_321_OK: &str = "drctl_rule_321_ok";
/// `{result="ok|partial|failed"}`: backup runs (daemon only).
pub const BACKUP_RUNS: &str = "drctl_backup_runs_total";
/// Scheduled runs skipped because the previous run of the job was still going (daemon only).
pub const BACKUP_SKIPPED_OVERLAP: &str = "drctl_backup_skipped_overlap_total";
/// Runs this daemon skipped because another replica holds the job's lock or already ran the
/// scheduled slot (daemon only; PostgreSQL catalog with several replicas).
pub const BACKUP_SKIPPED_LOCKED: &str = "drctl_backup_skipped_locked_total";
/// `{result="ok|failed"}`: restore drills the daemon ran (daemon only).
pub const VERIFY_RUNS: &str = "drctl_verify_runs_total";
/// Scheduled drills skipped because the job's previous drill was still going (daemon only).
pub const VERIFY_SKIPPED_OVERLAP: &str = "drctl_verify_skipped_overlap_total";
/// `{drctl_job,target}`: Unix time the newest backup of the job that the target holds finished
/// (0: the target holds none).
pub const TARGET_LAST_SUCCESS: &str = "drctl_target_last_success_timestamp_seconds";
/// `{drctl_job,target}`: stored size of that backup on the target.
pub const TARGET_BYTES: &str = "drctl_target_bytes";
/// Unix time this daemon started (daemon only, never pushed): the series DrctlDaemonDown looks
/// for.
pub const DAEMON_START: &str = "drctl_daemon_start_time_seconds";
/// `{channel}`: notifications (`[notify.NAME]`) not delivered since this daemon started (daemon
/// only).
pub const NOTIFY_FAILURES: &str = "drctl_notify_failures_total";
/// `{target}`: free space where the target can tell (fs: the filesystem's available bytes); no
/// sample for object stores, SFTP and WebDAV.
pub const TARGET_FREE_BYTES: &str = "drctl_target_free_bytes";

/// Every metric name drctl exposes, as written in queries.
pub const METRIC_NAMES: &[&str] = &[
    BUILD_INFO,
    BACKUP_LAST_SUCCESS,
    BACKUP_LAST_STATUS,
    BACKUP_PARTIAL,
    BACKUP_DURATION,
    BACKUP_BYTES,
    BACKUP_SUSPICIOUS,
    BACKUP_RPO,
    VERIFY_LAST_SUCCESS,
    VERIFY_LAST_STATUS,
    VERIFY_DURATION,
    COPIES,
    RULE_321_OK,
    BACKUP_RUNS,
    BACKUP_SKIPPED_OVERLAP,
    BACKUP_SKIPPED_LOCKED,
    VERIFY_RUNS,
    VERIFY_SKIPPED_OVERLAP,
    TARGET_LAST_SUCCESS,
    TARGET_BYTES,
    TARGET_FREE_BYTES,
    DAEMON_START,
    NOTIFY_FAILURES,
    wal::WAL_LAST_ARCHIVED,
    wal::WAL_DELAY_SECONDS,
    wal::WAL_DELAY_BYTES,
    wal::WAL_MAX_DELAY,
    wal::WAL_GAP,
    wal::WAL_SLOT_RETAINED,
];

/// Metrics the Pushgateway adds to every group it holds (the alert rules use them).
pub const PUSHGATEWAY_METRIC_NAMES: &[&str] = &["push_time_seconds", "push_failure_time_seconds"];

/// The label naming the drctl job on every per-job sample (and in the Pushgateway grouping key).
pub const JOB_LABEL: &str = "drctl_job";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    drctl_job: String,
}

/// `stage` of `drctl_backup_bytes`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Stage {
    /// Plaintext read from the source.
    Source,
    /// Compressed and encrypted, as each target holds it.
    Stored,
}

impl EncodeLabelValue for Stage {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            Stage::Source => "source",
            Stage::Stored => "stored",
        })
    }
}

impl EncodeLabelValue for RunResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write as _;
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    drctl_job: String,
    stage: Stage,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    drctl_job: String,
    result: RunResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    drctl_job: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// What a job's metrics describe, built from the catalog and the run that just ended.
///
/// `None` means "no sample": a job that never succeeded has no last-success time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobState {
    pub job: String,
    /// Built from the catalog, so it is the job's whole state and may replace what was pushed
    /// before. When false (the catalog could not be read) it holds only what the run itself
    /// knows and is merged into the pushed group, so earlier values (last success) survive.
    pub complete: bool,
    pub rpo_seconds: f64,
    /// Result of the job's last run.
    pub last_run: Option<RunResult>,
    /// Unix time the newest backup committed on every target finished.
    pub last_success: Option<f64>,
    /// The newest committed backup (partial ones included).
    pub newest: Option<BackupSize>,
    /// 3-2-1 of the newest committed backup: copies (live data included) and the verdict.
    pub copies: Option<u64>,
    pub rule_321_ok: Option<bool>,
    /// Whether the newest committed backup was flagged suspicious at backup time, and why:
    /// `Some(Some(reason))` flagged, `Some(None)` not flagged, `None` unknown (no committed backup,
    /// or the catalog could not be read and no run said).
    pub suspicious: Option<Option<String>>,
    pub verify: VerifyState,
    /// Per target of the job: its newest backup there (`None` in the state: the target holds
    /// none; an empty list: not known, e.g. the catalog was unreadable).
    pub targets: Vec<TargetState>,
    /// Free space of the job's targets that can tell, by target name.
    pub free_bytes: Vec<(String, u64)>,
}

/// One target's view of a job: the newest backup it holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TargetState {
    pub target: String,
    /// Unix time that backup finished; `None`: the target holds no backup of the job.
    pub last_success: Option<f64>,
    /// Its stored size.
    pub stored_bytes: Option<u64>,
}

/// Something notable that happened: logged, and counted by the metrics that observe it.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A backup run of `job` ended.
    BackupFinished {
        job: &'a str,
        result: RunResult,
    },
    /// A scheduled run of `job` was skipped: its previous run was still going.
    SkippedOverlap {
        job: &'a str,
    },
    VerifySkippedOverlap {
        job: &'a str,
    },
    /// A run of `job` was skipped: another replica holds its lock or already ran the slot.
    SkippedLocked {
        job: &'a str,
        reason: &'a str,
    },
    /// A restore drill of `job` ended (daemon).
    VerifyFinished {
        job: &'a str,
        result: RunResult,
    },
    /// A notification to `channel` was not delivered (the notifier logged why).
    NotifyFailed {
        channel: &'a str,
    },
}

impl Event<'_> {
    /// Log the event and count it in `metrics` (when there is a registry to count in).
    pub fn emit(&self, metrics: Option<&Metrics>) {
        match self {
            Event::BackupFinished { job, result } => {
                tracing::info!(job = %job, result = result.as_str(), "backup run finished")
            }
            Event::SkippedOverlap { job } => {
                tracing::warn!(job = %job, "scheduled run skipped: the previous run is still going")
            }
            Event::VerifySkippedOverlap { job } => {
                tracing::warn!(job = %job, "scheduled drill skipped: the previous drill is still going")
            }
            Event::SkippedLocked { job, reason } => {
                tracing::info!(job = %job, reason = %reason, "run skipped: another replica has it")
            }
            Event::VerifyFinished { job, result } => {
                tracing::info!(job = %job, result = result.as_str(), "verify run finished")
            }
            Event::NotifyFailed { .. } => {} // logged by the notifier, with why
        }
        if let Some(m) = metrics {
            m.observe(self);
        }
    }
}

/// The registry and its families.
///
/// The state families live in one registry and the event counters in another, so the state alone
/// can be encoded for a push ([`Metrics::encode_state`]) and both for a scrape
/// ([`Metrics::encode`]).
#[derive(Debug)]
pub struct Metrics {
    state: Registry,
    events: Registry,
    backup_last_success: Family<JobLabels, FloatGauge>,
    backup_last_status: Family<JobLabels, Gauge>,
    backup_partial: Family<JobLabels, Gauge>,
    backup_duration: Family<JobLabels, FloatGauge>,
    backup_bytes: Family<BytesLabels, Gauge>,
    backup_suspicious: Family<JobLabels, Gauge>,
    backup_rpo: Family<JobLabels, FloatGauge>,
    verify_last_success: Family<JobLabels, FloatGauge>,
    verify_last_status: Family<JobLabels, Gauge>,
    verify_duration: Family<JobLabels, FloatGauge>,
    copies: Family<JobLabels, Gauge>,
    rule_321_ok: Family<JobLabels, Gauge>,
    runs: Family<RunLabels, Counter>,
    skipped_overlap: Family<JobLabels, Counter>,
    verify_skipped_overlap: Family<JobLabels, Counter>,
    target_last_success: Family<TargetLabels, FloatGauge>,
    target_bytes: Family<TargetLabels, Gauge>,
    target_free: Family<StoreLabels, Gauge>,
    daemon_start: FloatGauge,
    skipped_locked: Family<JobLabels, Counter>,
    verify_runs: Family<RunLabels, Counter>,
    notify_failures: Family<ChannelLabels, Counter>,
    /// The WAL receivers' gauges (physical PostgreSQL jobs).
    pub wal: wal::WalMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family, and `drctl_build_info` set.
    pub fn new() -> Metrics {
        let mut m = Metrics {
            state: Registry::default(),
            events: Registry::default(),
            backup_last_success: Family::default(),
            backup_last_status: Family::default(),
            backup_partial: Family::default(),
            backup_duration: Family::default(),
            backup_bytes: Family::default(),
            backup_suspicious: Family::default(),
            backup_rpo: Family::default(),
            verify_last_success: Family::default(),
            verify_last_status: Family::default(),
            verify_duration: Family::default(),
            copies: Family::default(),
            rule_321_ok: Family::default(),
            runs: Family::default(),
            skipped_overlap: Family::default(),
            verify_skipped_overlap: Family::default(),
            target_last_success: Family::default(),
            target_bytes: Family::default(),
            target_free: Family::default(),
            daemon_start: FloatGauge::default(),
            skipped_locked: Family::default(),
            verify_runs: Family::default(),
            notify_failures: Family::default(),
            wal: wal::WalMetrics::default(),
        };
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").to_string() }).set(1);
        let r = &mut m.state;
        r.register(BUILD_INFO, "drctl version (always 1)", build_info);
        r.register(
            BACKUP_LAST_SUCCESS,
            "Unix time the job's newest backup committed on every target finished",
            m.backup_last_success.clone(),
        );
        r.register(
            BACKUP_LAST_STATUS,
            "1 when the job's last backup run committed on every target, 0 when it failed or was partial",
            m.backup_last_status.clone(),
        );
        r.register(
            BACKUP_PARTIAL,
            "1 when the job's last backup run committed on some targets only (exit 3: `drctl sync` repairs it)",
            m.backup_partial.clone(),
        );
        r.register(BACKUP_DURATION, "Wall time of the job's newest committed backup", m.backup_duration.clone());
        r.register(
            BACKUP_BYTES,
            "Size of the job's newest committed backup: read from the source, or stored on each target",
            m.backup_bytes.clone(),
        );
        r.register(
            BACKUP_SUSPICIOUS,
            "1 when the job's newest committed backup was flagged suspicious at backup time (empty, or much smaller than the job's recent backups)",
            m.backup_suspicious.clone(),
        );
        r.register(
            BACKUP_RPO,
            "The job's recovery point objective: the oldest its newest backup may be",
            m.backup_rpo.clone(),
        );
        r.register(
            VERIFY_LAST_SUCCESS,
            "Unix time of the job's newest successful restore drill",
            m.verify_last_success.clone(),
        );
        r.register(
            VERIFY_LAST_STATUS,
            "1 when the job's last restore drill passed, 0 when it failed",
            m.verify_last_status.clone(),
        );
        r.register(
            VERIFY_DURATION,
            "Duration of the job's last restore drill (the measured restore time)",
            m.verify_duration.clone(),
        );
        r.register(
            COPIES,
            "Copies of the job's newest committed backup: 1 (the live data) + the targets holding it",
            m.copies.clone(),
        );
        r.register(
            RULE_321_OK,
            "1 when the job's newest committed backup meets 3-2-1 (3 copies, 2 media, 1 offsite)",
            m.rule_321_ok.clone(),
        );
        r.register(
            TARGET_LAST_SUCCESS,
            "Unix time the newest backup of the job held by this target finished (0: it holds none)",
            m.target_last_success.clone(),
        );
        r.register(
            TARGET_BYTES,
            "Stored size of the newest backup of the job held by this target",
            m.target_bytes.clone(),
        );
        r.register(
            TARGET_FREE_BYTES,
            "Free space on the target, where it can tell (fs targets; absent for s3, sftp and webdav)",
            m.target_free.clone(),
        );
        let e = &mut m.events;
        e.register(DAEMON_START, "Unix time this drctl daemon started", m.daemon_start.clone());
        e.register(
            counter_name(BACKUP_RUNS),
            "Backup runs by result (ok, partial, failed) since this process started",
            m.runs.clone(),
        );
        e.register(
            counter_name(BACKUP_SKIPPED_OVERLAP),
            "Scheduled backup runs skipped because the job's previous run was still going",
            m.skipped_overlap.clone(),
        );
        e.register(
            counter_name(BACKUP_SKIPPED_LOCKED),
            "Backup runs skipped because another daemon replica holds the job's lock or already ran the scheduled slot",
            m.skipped_locked.clone(),
        );
        e.register(
            counter_name(VERIFY_RUNS),
            "Restore drills by result (ok, failed) since this process started",
            m.verify_runs.clone(),
        );
        e.register(
            counter_name(NOTIFY_FAILURES),
            "Notifications ([notify.NAME] channels) not delivered since this process started",
            m.notify_failures.clone(),
        );
        e.register(
            counter_name(VERIFY_SKIPPED_OVERLAP),
            "Scheduled restore drills skipped because the job's previous drill was still going",
            m.verify_skipped_overlap.clone(),
        );
        m
    }

    /// Set a job's state gauges. A value that is `None` removes the sample when the state is
    /// complete, and leaves it alone otherwise.
    pub fn set_job(&self, s: &JobState) {
        let l = JobLabels { drctl_job: s.job.clone() };
        let clear = s.complete;
        self.backup_rpo.get_or_create(&l).set(s.rpo_seconds);
        set_or(&self.backup_last_status, &l, s.last_run.map(|r| i64::from(r == RunResult::Ok)), clear);
        set_or(&self.backup_partial, &l, s.last_run.map(|r| i64::from(r == RunResult::Partial)), clear);
        set_or(&self.backup_last_success, &l, s.last_success, clear);
        set_or(&self.backup_duration, &l, s.newest.map(|n| n.duration_seconds), clear);
        for (stage, v) in
            [(Stage::Source, s.newest.map(|n| n.source_bytes)), (Stage::Stored, s.newest.map(|n| n.stored_bytes))]
        {
            let bl = BytesLabels { drctl_job: s.job.clone(), stage };
            set_or(&self.backup_bytes, &bl, v.map(saturating_i64), clear);
        }
        set_or(&self.backup_suspicious, &l, s.suspicious.as_ref().map(|r| i64::from(r.is_some())), clear);
        set_or(&self.copies, &l, s.copies.map(saturating_i64), clear);
        set_or(&self.rule_321_ok, &l, s.rule_321_ok.map(i64::from), clear);
        set_or(&self.verify_last_status, &l, s.verify.last_passed.map(i64::from), clear);
        set_or(&self.verify_last_success, &l, s.verify.last_success, clear);
        set_or(&self.verify_duration, &l, s.verify.duration_seconds, clear);
        for t in &s.targets {
            let tl = TargetLabels { drctl_job: s.job.clone(), target: t.target.clone() };
            self.target_last_success.get_or_create(&tl).set(t.last_success.unwrap_or(0.0));
            set_or(&self.target_bytes, &tl, t.stored_bytes.map(saturating_i64), true);
        }
        for (target, free) in &s.free_bytes {
            self.set_free_bytes(target, *free);
        }
    }

    /// This process is the daemon, started at `unix` seconds (see [`DAEMON_START`]).
    pub fn daemon_started(&self, unix: f64) {
        self.daemon_start.set(unix);
    }

    /// A target's free space (see [`TARGET_FREE_BYTES`]).
    pub fn set_free_bytes(&self, target: &str, free: u64) {
        self.target_free.get_or_create(&StoreLabels { target: target.to_string() }).set(saturating_i64(free));
    }

    /// Count an event.
    pub fn observe(&self, event: &Event) {
        match event {
            Event::BackupFinished { job, result } => {
                self.runs.get_or_create(&RunLabels { drctl_job: job.to_string(), result: *result }).inc();
            }
            Event::VerifySkippedOverlap { job } => {
                self.verify_skipped_overlap.get_or_create(&JobLabels { drctl_job: job.to_string() }).inc();
            }
            Event::SkippedOverlap { job } => {
                self.skipped_overlap.get_or_create(&JobLabels { drctl_job: job.to_string() }).inc();
            }
            Event::SkippedLocked { job, .. } => {
                self.skipped_locked.get_or_create(&JobLabels { drctl_job: job.to_string() }).inc();
            }
            Event::VerifyFinished { job, result } => {
                self.verify_runs.get_or_create(&RunLabels { drctl_job: job.to_string(), result: *result }).inc();
            }
            Event::NotifyFailed { channel } => {
                self.notify_failures.get_or_create(&ChannelLabels { channel: channel.to_string() }).inc();
            }
        }
    }

    /// The state families in the Prometheus text format (version 0.0.4: gauges only, every line
    /// ends with a newline), the body of a push.
    pub fn encode_state(&self) -> String {
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.state);
        out
    }

    /// Every family in the OpenMetrics text format (ends with `# EOF`), for a scrape.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.state);
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.events);
        out.push_str(&self.wal.encode());
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }
}

/// prometheus-client appends `_total` to counters itself.
fn counter_name(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Set a gauge, or remove its sample (when `clear`) if there is no value.
fn set_or<L, N, A>(family: &Family<L, Gauge<N, A>>, labels: &L, value: Option<N>, clear: bool)
where
    L: Clone + std::hash::Hash + Eq,
    A: prometheus_client::metrics::gauge::Atomic<N> + Default,
{
    match value {
        Some(v) => {
            family.get_or_create(labels).set(v);
        }
        None if clear => {
            family.remove(labels);
        }
        None => {}
    }
}

#[cfg(test)]
mod tests;
