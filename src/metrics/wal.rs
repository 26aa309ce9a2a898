//! The WAL receiver's gauges (physical PostgreSQL jobs): how far the archive is behind the
//! server, since when, and what the replication slot holds back. Set by `drctl wal stream` (and
//! pushed to its own Pushgateway group, `…/drctl_job/<job>/instance/wal`, so that a `drctl run`
//! replacing the job's group does not wipe them) and by the daemon's receivers (its /metrics).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Unix time the archive last held everything the server had written (the receiver caught up).
pub const WAL_LAST_ARCHIVED: &str = "drctl_wal_last_archived_timestamp_seconds";
/// Seconds since the archive was last caught up (0 while it is).
pub const WAL_DELAY_SECONDS: &str = "drctl_wal_archive_delay_seconds";
/// Bytes of WAL the server has written that are not on every target yet.
pub const WAL_DELAY_BYTES: &str = "drctl_wal_archive_delay_bytes";
/// The job's `wal.max_delay`, for the alert rules.
pub const WAL_MAX_DELAY: &str = "drctl_wal_max_delay_seconds";
/// Unix time the receiver last found a gap in the archive (absent: none since it started).
pub const WAL_GAP: &str = "drctl_wal_gap_detected_timestamp_seconds";
/// Bytes of WAL the replication slot keeps on the server (not yet confirmed as archived).
pub const WAL_SLOT_RETAINED: &str = "drctl_wal_slot_retained_bytes";

pub const WAL_METRIC_NAMES: &[&str] =
    &[WAL_LAST_ARCHIVED, WAL_DELAY_SECONDS, WAL_DELAY_BYTES, WAL_MAX_DELAY, WAL_GAP, WAL_SLOT_RETAINED];

/// What one receiver reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WalStatus {
    pub job: String,
    pub max_delay_seconds: f64,
    pub last_archived: Option<f64>,
    pub delay_seconds: f64,
    pub delay_bytes: u64,
    pub gap_detected: Option<f64>,
    pub slot_retained_bytes: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    drctl_job: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The WAL families in a registry of their own.
#[derive(Debug)]
pub struct WalMetrics {
    registry: Registry,
    last_archived: Family<Labels, FloatGauge>,
    delay_seconds: Family<Labels, FloatGauge>,
    delay_bytes: Family<Labels, Gauge>,
    max_delay: Family<Labels, FloatGauge>,
    gap: Family<Labels, FloatGauge>,
    slot_retained: Family<Labels, Gauge>,
}

impl Default for WalMetrics {
    fn default() -> Self {
        let m = WalMetrics {
            registry: Registry::default(),
            last_archived: Family::default(),
            delay_seconds: Family::default(),
            delay_bytes: Family::default(),
            max_delay: Family::default(),
            gap: Family::default(),
            slot_retained: Family::default(),
        };
        let mut m = m;
        let r = &mut m.registry;
        r.register(
            WAL_LAST_ARCHIVED,
            "Unix time the job's WAL archive last held everything the server had written",
            m.last_archived.clone(),
        );
        r.register(
            WAL_DELAY_SECONDS,
            "Seconds since the job's WAL archive was last caught up",
            m.delay_seconds.clone(),
        );
        r.register(
            WAL_DELAY_BYTES,
            "WAL bytes written by the server and not yet on every target",
            m.delay_bytes.clone(),
        );
        r.register(WAL_MAX_DELAY, "The job's wal.max_delay", m.max_delay.clone());
        r.register(WAL_GAP, "Unix time the WAL receiver last found a gap in the archive", m.gap.clone());
        r.register(
            WAL_SLOT_RETAINED,
            "WAL bytes the job's replication slot keeps on the server",
            m.slot_retained.clone(),
        );
        m
    }
}

/// The newest status of each receiver running in this process (the daemon's), for its status page.
static LATEST: std::sync::Mutex<std::collections::BTreeMap<String, WalStatus>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The newest status the receiver of `job` reported in this process, if one runs here.
pub fn latest(job: &str) -> Option<WalStatus> {
    LATEST.lock().ok().and_then(|m| m.get(job).cloned())
}

impl WalMetrics {
    pub fn set(&self, s: &WalStatus) {
        if let Ok(mut m) = LATEST.lock() {
            m.insert(s.job.clone(), s.clone());
        }
        let l = Labels { drctl_job: s.job.clone() };
        match s.last_archived {
            Some(t) => {
                self.last_archived.get_or_create(&l).set(t);
            }
            None => {
                self.last_archived.remove(&l);
            }
        }
        self.delay_seconds.get_or_create(&l).set(s.delay_seconds);
        self.delay_bytes.get_or_create(&l).set(i64::try_from(s.delay_bytes).unwrap_or(i64::MAX));
        self.max_delay.get_or_create(&l).set(s.max_delay_seconds);
        if let Some(t) = s.gap_detected {
            self.gap.get_or_create(&l).set(t);
        }
        self.slot_retained.get_or_create(&l).set(i64::try_from(s.slot_retained_bytes).unwrap_or(i64::MAX));
    }

    /// The families in the text format, without `# EOF` (for a push, or inside a scrape).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_family_with_the_job_label() {
        let m = WalMetrics::default();
        m.set(&WalStatus {
            job: "db".into(),
            max_delay_seconds: 60.0,
            last_archived: Some(1.5e9),
            delay_seconds: 0.0,
            delay_bytes: 42,
            gap_detected: Some(1.6e9),
            slot_retained_bytes: 7,
        });
        let text = m.encode();
        for name in WAL_METRIC_NAMES {
            assert!(text.contains(&format!("{name}{{drctl_job=\"db\"}}")), "{name} in\n{text}");
        }
    }
}
