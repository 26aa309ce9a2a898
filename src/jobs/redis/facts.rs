//! What the suspicious check reads from a redis backup's facts (written by its `finish`).

use serde_json::Value;

use crate::jobs::suspicious::count_pair;

/// Empty: no key in any database.
pub(crate) fn empty(facts: &Value) -> Option<&'static str> {
    (facts["keys"].as_u64() == Some(0)).then_some("empty: no key in any database")
}

pub(crate) fn item_counts(now: &Value, before: &Value) -> Vec<(&'static str, u64, u64)> {
    count_pair("key count", now, before, |v| v["keys"].as_u64()).into_iter().collect()
}
