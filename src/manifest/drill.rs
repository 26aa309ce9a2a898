//! The drill record: the on-target format of a restore drill's result (`<backup-id>.verify.json`
//! beside the backup's manifest), also what `drctl verify --json` prints and the catalog stores.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::finding::Finding;

/// `format` of every drill record.
pub const RECORD_FORMAT: &str = "drctl-drill";
/// The newest record version this drctl reads and writes.
pub const RECORD_VERSION: u32 = 1;

/// How a drill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrillStatus {
    /// Restored and every check passed (warnings allowed).
    Ok,
    /// Something failed: see the findings.
    Failed,
}

impl DrillStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillStatus::Ok => "ok",
            DrillStatus::Failed => "failed",
        }
    }
}

/// The result of one drill: what `drctl verify --json` prints, the catalog stores and the target
/// holds as `<backup-id>.verify.json` (no secrets, no data).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillRecord {
    /// Always `drctl-drill`.
    pub format: String,
    pub version: u32,
    pub job: String,
    pub kind: String,
    /// The drilled backup; `None` when no backup could be found.
    pub backup_id: Option<String>,
    pub status: DrillStatus,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// Measured restore time (RTO): fetching, checking, decrypting and loading the data until it
    /// is usable; scratch server setup excluded.
    pub restore_seconds: f64,
    /// The whole drill, scratch setup and checks included.
    pub duration_seconds: f64,
    /// Sizes from the manifest: plaintext and stored.
    pub plaintext_bytes: u64,
    pub stored_bytes: u64,
    /// Plaintext bytes actually restored.
    pub restored_bytes: u64,
    /// `artifact → destination` of each restore.
    pub destinations: Vec<String>,
    pub findings: Vec<Finding>,
    pub host: String,
    pub drctl_version: String,
}

impl DrillRecord {
    pub fn passed(&self) -> bool {
        self.status == DrillStatus::Ok
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parse a record read from a target; `None` when it is not one.
    pub fn from_json(data: &[u8]) -> Option<DrillRecord> {
        let r: DrillRecord = serde_json::from_slice(data).ok()?;
        (r.format == RECORD_FORMAT && r.version <= RECORD_VERSION).then_some(r)
    }
}
