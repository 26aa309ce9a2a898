//! What the suspicious check reads from a postgres backup's facts (written by its `finish`).

use serde_json::Value;

use crate::jobs::suspicious::count_pair;

/// Empty: no table in any database.
pub(crate) fn empty(facts: &Value) -> Option<&'static str> {
    facts["databases"]
        .as_array()
        .is_some_and(|dbs| !dbs.is_empty() && dbs.iter().all(|d| d["table_count"].as_u64() == Some(0)))
        .then_some("empty: no table in any database")
}

/// Tables, and rows when both backups counted them exactly (estimates from `pg_class.reltuples`
/// may be 0 or -1 for unanalyzed tables: no basis).
pub(crate) fn item_counts(now: &Value, before: &Value) -> Vec<(&'static str, u64, u64)> {
    let dbs = |v: &Value| v["databases"].as_array().cloned();
    let tables = |v: &Value| dbs(v).map(|d| d.iter().filter_map(|d| d["table_count"].as_u64()).sum());
    let rows = |v: &Value| {
        let d = dbs(v)?;
        d.iter().all(|d| d["row_counts"].as_str().is_none_or(|r| r == "exact")).then(|| {
            d.iter()
                .flat_map(|d| d["tables"].as_array().cloned().unwrap_or_default())
                .filter_map(|t| t["rows"].as_u64())
                .sum()
        })
    };
    [count_pair("table count", now, before, tables), count_pair("row count", now, before, rows)]
        .into_iter()
        .flatten()
        .collect()
}
