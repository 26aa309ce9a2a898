//! Is a just-committed backup suspicious (empty, or much smaller than the job's last good backup)?
//! Judged at backup time from the facts each kind records in its manifest, and again by prune from
//! what the targets hold. Each kind reads its own facts (`jobs::KIND::facts`).

use super::{Kind, postgres, redis, volume};

/// Why a just-committed backup looks suspicious, if it does: it is empty (no bytes; postgres: no
/// table in any database; redis: no key; volume: no file), or, against `last_good` (the size and
/// facts of the job's newest backup that was *not* suspicious), its plaintext size or its item
/// count (postgres: tables, and rows when both counted them exactly; redis: keys; volume: files)
/// fell by more than `drop` (a fraction, 0..=1). Pure.
///
/// The baseline is the last good backup, not a median of recent ones: a median that takes in the
/// empty backups after a wipe clears the flag after a few runs, and retention then deletes every
/// backup from before the wipe. Against the last good backup the flag is sticky: it stays until the
/// source is back to its size (or `verify.suspicious_drop` is raised to accept the new size).
pub fn suspicious(
    kind: &str,
    facts: &serde_json::Value,
    size: u64,
    last_good: Option<(u64, &serde_json::Value)>,
    drop: f64,
) -> Option<String> {
    if size == 0 {
        return Some("empty: the source produced no data".into());
    }
    let kind = Kind::parse(kind);
    let empty = match kind {
        Some(Kind::Postgres) => postgres::facts::empty(facts),
        Some(Kind::Redis) => redis::facts::empty(facts),
        Some(Kind::Volume) => volume::facts::empty(facts),
        // a snapshot and GitLab's archive record no item count: only an empty stream tells
        Some(Kind::Vault | Kind::Gitlab) | None => None,
    };
    if let Some(e) = empty {
        return Some(e.into());
    }
    let (good_size, good_facts) = last_good?;
    if drop >= 1.0 {
        return None;
    }
    let fell = |now: u64, before: u64| before > 0 && (now as f64) < before as f64 * (1.0 - drop.max(0.0));
    let percent = |now: u64, before: u64| (1.0 - now as f64 / before as f64) * 100.0;
    if fell(size, good_size) {
        return Some(format!(
            "source size fell by {:.0} %: {size} bytes, the last good backup had {good_size}",
            percent(size, good_size)
        ));
    }
    for (what, now, before) in item_counts(kind, facts, good_facts) {
        if fell(now, before) {
            return Some(format!(
                "{what} fell by {:.0} %: {now}, the last good backup had {before}",
                percent(now, before)
            ));
        }
    }
    None
}

/// The item counts a kind records in its facts, as (what, now, last good) pairs: only counts both
/// backups recorded.
fn item_counts(
    kind: Option<Kind>,
    now: &serde_json::Value,
    before: &serde_json::Value,
) -> Vec<(&'static str, u64, u64)> {
    let counts = |facts: &serde_json::Value| match kind {
        Some(Kind::Postgres) => postgres::facts::counts(facts),
        Some(Kind::Redis) => redis::facts::counts(facts),
        Some(Kind::Volume) => volume::facts::counts(facts),
        // a snapshot and GitLab's archive record no item count
        Some(Kind::Vault | Kind::Gitlab) | None => Vec::new(),
    };
    counts(now).into_iter().zip(counts(before)).filter_map(|((what, a), (_, b))| Some((what, a?, b?))).collect()
}

/// One backup of a job as [`suspicious_series`] sees it.
#[derive(Debug, Clone)]
pub struct SeriesItem {
    pub id: String,
    pub kind: String,
    pub facts: serde_json::Value,
    /// Plaintext bytes.
    pub size: u64,
    /// The verdict recorded when it was made (manifest or catalog), if it was flagged.
    pub flagged: Option<String>,
    /// It was judged against a baseline when it was made (and not flagged): that verdict stands,
    /// e.g. a shrink the operator accepted with `verify.suspicious_drop = 1.0` for one run.
    pub judged: bool,
}

/// The suspicious backups of a job, judged again from what the targets hold (`backups` oldest
/// first): a backup recorded as suspicious stays suspicious, one judged good against a baseline
/// when it was made stays good, and every other one (made with no catalog to compare with) is
/// judged against the newest earlier backup that was not suspicious (see [`suspicious`]). This is what lets prune
/// protect the last good backup even on a fresh catalog (a Kubernetes CronJob), whose runs had no
/// baseline to judge against. Returns id → reason. Pure.
pub fn suspicious_series(backups: &[SeriesItem], drop: f64) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut last_good: Option<&SeriesItem> = None;
    for b in backups {
        let verdict = match (&b.flagged, b.judged) {
            (Some(reason), _) => Some(reason.clone()),
            (None, true) => None,
            (None, false) => suspicious(&b.kind, &b.facts, b.size, last_good.map(|g| (g.size, &g.facts)), drop),
        };
        match verdict {
            Some(reason) => {
                out.insert(b.id.clone(), reason);
            }
            None => last_good = Some(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicious_table() {
        let none = serde_json::json!({});
        let mib = 1024 * 1024;
        type Case = (&'static str, serde_json::Value, u64, Option<u64>, f64, bool);
        let cases: Vec<Case> = vec![
            ("first backup", none.clone(), 100, None, 0.5, false),
            ("zero bytes", none.clone(), 0, Some(100), 0.5, true),
            ("zero bytes, first backup", none.clone(), 0, None, 0.5, true),
            ("same size", none.clone(), 100, Some(100), 0.5, false),
            ("fell by 40 %", none.clone(), 60, Some(100), 0.5, false),
            ("fell by 60 %", none.clone(), 40, Some(100), 0.5, true),
            ("fell by 40 % with drop 0.3", none.clone(), 60, Some(100), 0.3, true),
            ("drop 1 disables", none.clone(), 1, Some(100), 1.0, false),
            ("grew", none.clone(), 500, Some(100), 0.5, false),
            // a truncated but exit-0 dump
            ("97.7 KiB after 48 MiB", none.clone(), 100_045, Some(48 * mib), 0.5, true),
        ];
        for (name, facts, size, good, drop, want) in cases {
            assert_eq!(suspicious("vault", &facts, size, good.map(|g| (g, &none)), drop).is_some(), want, "{name}");
        }
        let pg = serde_json::json!({"databases": [{"table_count": 0}, {"table_count": 0}]});
        assert!(suspicious("postgres", &pg, 5000, None, 0.5).unwrap().contains("no table"));
        let pg = serde_json::json!({"databases": [{"table_count": 0}, {"table_count": 2}]});
        assert!(suspicious("postgres", &pg, 5000, None, 0.5).is_none());
        assert!(suspicious("redis", &serde_json::json!({"keys": 0}), 90, None, 0.5).is_some());
        assert!(suspicious("volume", &serde_json::json!({"file_count": 0}), 1024, None, 0.5).is_some());
        assert!(suspicious("volume", &serde_json::json!({"file_count": 3}), 1024, None, 0.5).is_none());
    }

    #[test]
    fn suspicious_item_counts() {
        let files = |n: u64| serde_json::json!({"file_count": n});
        let keys = |n: u64| serde_json::json!({"keys": n});
        let pg = |tables: u64, rows: u64, counts: &str| {
            serde_json::json!({"databases": [{"table_count": tables, "row_counts": counts,
                "tables": [{"schema": "public", "name": "t", "rows": rows}]}]})
        };
        // same size, far fewer items
        type Case = (&'static str, &'static str, serde_json::Value, serde_json::Value, bool);
        let cases: Vec<Case> = vec![
            ("volume: 3 of 1000 files", "volume", files(3), files(1000), true),
            ("volume: 900 of 1000 files", "volume", files(900), files(1000), false),
            ("redis: 10 of 5000 keys", "redis", keys(10), keys(5000), true),
            ("redis: more keys", "redis", keys(6000), keys(5000), false),
            ("postgres: rows fell", "postgres", pg(3, 10, "exact"), pg(3, 100_000, "exact"), true),
            ("postgres: estimated rows are no basis", "postgres", pg(3, 0, "estimate"), pg(3, 100_000, "exact"), false),
            ("postgres: tables fell", "postgres", pg(1, 10, "estimate"), pg(30, 10, "estimate"), true),
            ("no counts recorded", "vault", serde_json::json!({}), serde_json::json!({}), false),
        ];
        for (name, kind, now, before, want) in cases {
            let got = suspicious(kind, &now, 1000, Some((1000, &before)), 0.5);
            assert_eq!(got.is_some(), want, "{name}: {got:?}");
        }
    }

    #[test]
    fn suspicious_flag_is_sticky() {
        let item = |id: &str, size: u64, files: u64, flagged: Option<&str>| SeriesItem {
            id: id.into(),
            kind: "volume".into(),
            facts: serde_json::json!({"file_count": files}),
            size,
            flagged: flagged.map(str::to_string),
            judged: false,
        };
        let flagged = |items: &[SeriesItem]| -> Vec<String> { suspicious_series(items, 0.5).into_keys().collect() };
        // six days of an emptied volume after three good ones: every one stays flagged (a median
        // of the last seven would have cleared the flag on the fourth)
        let mut series = vec![item("1", 1000, 10, None), item("2", 1010, 10, None), item("3", 1020, 11, None)];
        series.extend((4..=9).map(|i| item(&i.to_string(), 10, 1, None)));
        assert_eq!(flagged(&series), ["4", "5", "6", "7", "8", "9"]);
        // the source recovers: no flag any more
        series.push(item("a", 1030, 11, None));
        assert_eq!(flagged(&series).len(), 6);
        assert!(!suspicious_series(&series, 0.5).contains_key("a"));
        // a recorded verdict stays, and is never the baseline
        let series = vec![item("1", 1000, 10, None), item("2", 1000, 10, Some("empty")), item("3", 400, 10, None)];
        assert_eq!(flagged(&series), ["2", "3"]);
        // truncated dumps, one after the other
        let mib = 1024 * 1024;
        let series = vec![item("1", 48 * mib, 5, None), item("2", 100_045, 5, None), item("3", 100_045, 5, None)];
        assert_eq!(flagged(&series), ["2", "3"]);
        assert!(flagged(&[]).is_empty());
        // a shrink judged good against a baseline when it was made (the operator accepted it)
        // stands, and is the new baseline
        let mut accepted = item("2", 10, 1, None);
        accepted.judged = true;
        let series = vec![item("1", 1000, 10, None), accepted, item("3", 11, 1, None)];
        assert!(flagged(&series).is_empty());
    }
}
