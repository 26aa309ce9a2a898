//! What the suspicious check reads from a volume backup's facts (written by its `finish`).

use serde_json::Value;

/// Empty: no file.
pub(crate) fn empty(facts: &Value) -> Option<&'static str> {
    (facts["file_count"].as_u64() == Some(0)).then_some("empty: no file")
}

/// The counts compared with the last good backup.
pub(crate) fn counts(facts: &Value) -> Vec<(&'static str, Option<u64>)> {
    vec![("file count", facts["file_count"].as_u64())]
}
