//! What the suspicious check reads from a volume backup's facts (written by its `finish`).

use serde_json::Value;

use crate::jobs::suspicious::count_pair;

/// Empty: no file.
pub(crate) fn empty(facts: &Value) -> Option<&'static str> {
    (facts["file_count"].as_u64() == Some(0)).then_some("empty: no file")
}

pub(crate) fn item_counts(now: &Value, before: &Value) -> Vec<(&'static str, u64, u64)> {
    count_pair("file count", now, before, |v| v["file_count"].as_u64()).into_iter().collect()
}
