//! What the suspicious check reads from a postgres backup's facts (written by its `finish`).

use serde_json::Value;

/// Empty: no table in any database.
pub(crate) fn empty(facts: &Value) -> Option<&'static str> {
    facts["databases"]
        .as_array()
        .is_some_and(|dbs| !dbs.is_empty() && dbs.iter().all(|d| d["table_count"].as_u64() == Some(0)))
        .then_some("empty: no table in any database")
}

/// The counts compared with the last good backup, always in this order: tables, and rows when
/// they were counted exactly (estimates from `pg_class.reltuples` may be 0 or -1 for unanalyzed
/// tables: no basis).
pub(crate) fn counts(facts: &Value) -> Vec<(&'static str, Option<u64>)> {
    let dbs = facts["databases"].as_array();
    let tables = dbs.map(|d| d.iter().filter_map(|d| d["table_count"].as_u64()).sum());
    let rows = dbs.filter(|d| d.iter().all(|d| d["row_counts"].as_str().is_none_or(|r| r == "exact"))).map(|d| {
        d.iter()
            .flat_map(|d| d["tables"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t["rows"].as_u64())
            .sum()
    });
    vec![("table count", tables), ("row count", rows)]
}
