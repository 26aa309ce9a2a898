//! What the suspicious check reads from a redis backup's facts (written by its `finish`).

use serde_json::Value;

/// Empty: no key in any database.
pub(crate) fn empty(facts: &Value) -> Option<&'static str> {
    (facts["keys"].as_u64() == Some(0)).then_some("empty: no key in any database")
}

/// The counts compared with the last good backup.
pub(crate) fn counts(facts: &Value) -> Vec<(&'static str, Option<u64>)> {
    vec![("key count", facts["keys"].as_u64())]
}
