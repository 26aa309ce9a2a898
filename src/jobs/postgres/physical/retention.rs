//! Which archived WAL prune may delete (pure: the listing, the kept base backups and the
//! present are arguments).
//!
//! GFS keeps base backups as for any job; WAL follows them:
//! * continuous from the start of the newest kept base backup that was consistent before
//!   `now - wal.keep` (or, when none is that old, the oldest kept one): every moment of the last
//!   `wal.keep` stays recoverable;
//! * for each older kept base backup, only its own start..stop range, so it stays restorable to
//!   its consistent point;
//! * everything else before that is deleted: complete and partial segments of every timeline.
//!   History files (a few bytes each) are kept. With no kept base backup nothing is deleted.

use std::time::Duration;

use super::base::PhysicalFacts;
use super::lsn::Segments;

/// The keys among `listed` (everything under `<job>/wal/`) that retention deletes.
pub fn deletable(listed: &[String], kept: &[PhysicalFacts], keep: Duration, now: jiff::Timestamp) -> Vec<String> {
    let Some(seg) = kept.first().map(PhysicalFacts::segments) else { return Vec::new() };
    let cutoff = jiff::SignedDuration::try_from(keep).ok().and_then(|k| now.checked_sub(k).ok()).unwrap_or(now);
    let mut by_start: Vec<&PhysicalFacts> = kept.iter().collect();
    by_start.sort_by_key(|f| f.start_lsn);
    let anchor = by_start.iter().rev().find(|f| f.stop_time <= cutoff).or(by_start.first()).copied();
    let Some(anchor) = anchor else { return Vec::new() };
    let from = seg.segno(anchor.start_lsn);
    let ranges: Vec<(u64, u64)> = by_start
        .iter()
        .filter(|f| f.start_lsn < anchor.start_lsn)
        .map(|f| (seg.segno(f.start_lsn), seg.segno(f.stop_lsn)))
        .collect();
    let mut out: Vec<String> = listed
        .iter()
        .filter(|key| {
            let Some(n) = segno_of(key, seg) else { return false };
            n < from && !ranges.iter().any(|(a, b)| (*a..=*b).contains(&n))
        })
        .cloned()
        .collect();
    out.sort();
    out
}

/// The segment number of a complete or partial segment key; `None` for anything else.
fn segno_of(key: &str, seg: Segments) -> Option<u64> {
    let file = key.rsplit('/').next()?.strip_suffix(".zst.age")?;
    let name = file.split('.').next()?;
    seg.parse(name).map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(start: &str, stop: &str, stop_time: &str) -> PhysicalFacts {
        PhysicalFacts {
            method: "physical".into(),
            wal_segment_size: 16 << 20,
            timeline: 1,
            start_lsn: start.parse().unwrap(),
            stop_lsn: stop.parse().unwrap(),
            stop_time: stop_time.parse().unwrap(),
            ..Default::default()
        }
    }

    fn seg_key(n: u64) -> String {
        format!("db/wal/00000001/{}.zst.age", Segments::DEFAULT.name(1, n))
    }

    #[test]
    fn keeps_the_window_and_the_ranges_of_older_bases() {
        let listed: Vec<String> = (1..=20)
            .map(seg_key)
            .chain([
                format!("db/wal/00000001/{}.00001000.partial.zst.age", Segments::DEFAULT.name(1, 3)),
                "db/wal/00000002.history.zst.age".to_string(),
            ])
            .collect();
        let now: jiff::Timestamp = "2026-12-20T00:00:00Z".parse().unwrap();
        let week = Duration::from_secs(7 * 86400);
        // an old monthly base (segments 2..3), a base 10 days ago (8..9), one yesterday (15..15)
        let kept = [
            base("0/2000028", "0/3000100", "2026-11-20T02:00:00Z"),
            base("0/8000028", "0/9000100", "2026-12-10T02:00:00Z"),
            base("0/F000028", "0/F000100", "2026-12-19T02:00:00Z"),
        ];
        // the window reaches back to the base of 10 days ago (segment 8); the monthly keeps 2..3
        // (its partial too); 1 and 4..7 go; history files stay
        let gone = deletable(&listed, &kept, week, now);
        assert_eq!(gone, [1u64, 4, 5, 6, 7].iter().map(|&n| seg_key(n)).collect::<Vec<_>>());
        // with no kept base backup, nothing goes
        assert!(deletable(&listed, &[], week, now).is_empty());
        // when every base is younger than the window, WAL from the oldest one stays
        let young = [base("0/8000028", "0/9000100", "2026-12-19T02:00:00Z")];
        let mut want: Vec<String> = (1..=7).map(seg_key).collect();
        want.push(format!("db/wal/00000001/{}.00001000.partial.zst.age", Segments::DEFAULT.name(1, 3)));
        want.sort();
        assert_eq!(deletable(&listed, &young, week, now), want);
    }
}
