//! Cron schedules in a time zone: parsing (5-field cron and `@daily`-style aliases) and the pure
//! [`next_after`] that the daemon calls before every sleep.
//!
//! Why not tokio-cron-scheduler: it turns the time zone into a fixed UTC offset when a job is
//! created, so every local-time schedule drifts by an hour after the next DST change. Here the
//! next fire time is computed afresh each time, from the wall clock of the configured zone
//! (jiff's tz database), with croner matching the cron fields on civil (local) date-times.
//!
//! DST rules, as Vixie cron has them:
//! - A *fixed-time* job (neither the minute nor the hour field is a wildcard, e.g. `30 2 * * *`)
//!   runs once per matching local time. When that time is skipped (spring forward) it runs at the
//!   same distance after the change (02:30 → 03:30 in Europe/Berlin); when it happens twice (fall
//!   back) it runs at the first one only.
//! - A *wildcard* job (`0 * * * *`, `*/15 * * * *`, …) runs at every matching instant: local times
//!   that do not exist are skipped and repeated ones run twice (an hourly job fires 23 times on the
//!   spring-forward day and 25 times on the fall-back day).

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeZone as _, Timelike, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

/// The aliases accepted besides 5-field expressions, and what they stand for.
pub const ALIASES: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// The longest stretch of local time a DST change (or any offset change) can repeat or skip that
/// [`next_after`] looks around for. Real changes are 30 min to 2 h.
const FOLD_WINDOW: SignedDuration = SignedDuration::from_hours(3);

/// Test-only extension: 6-field expressions with a leading seconds field. Off unless the hidden
/// `drctl daemon --seconds-schedules` flag turns it on for the whole process (the end-to-end
/// tests use it so that they need not wait for minute boundaries). Never documented as a feature
/// of real configurations.
static SECONDS_ALLOWED: AtomicBool = AtomicBool::new(false);

/// Allow 6-field (seconds-first) expressions in this process; see [`SECONDS_ALLOWED`].
pub fn allow_seconds(yes: bool) {
    SECONDS_ALLOWED.store(yes, Ordering::SeqCst);
}

/// Whether 6-field expressions are allowed in this process.
pub fn seconds_allowed() -> bool {
    SECONDS_ALLOWED.load(Ordering::SeqCst)
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// As written in the config.
    pub expr: String,
    cron: Cron,
    /// Fixed-time job (see the module docs) rather than a wildcard one.
    fixed: bool,
}

/// Why an expression is not a schedule (the text is a whole sentence for a config problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScheduleError {
    pub message: String,
    pub hint: &'static str,
}

const HINT: &str = "5 fields `minute hour day-of-month month day-of-week`, e.g. `0 2 * * *` (02:00 daily), or one of @hourly, @daily, @weekly, @monthly, @yearly";

impl Schedule {
    /// Parse a 5-field cron expression or an alias (6 fields only when [`allow_seconds`] is on).
    ///
    /// # Errors
    /// [`ScheduleError`] naming what is wrong, with a hint showing the accepted forms.
    pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
        Schedule::parse_with(expr, seconds_allowed())
    }

    /// [`Schedule::parse`], with 6-field expressions allowed or not.
    fn parse_with(expr: &str, allow_seconds: bool) -> Result<Schedule, ScheduleError> {
        let bad = |message: String| ScheduleError { message, hint: HINT };
        let trimmed = expr.trim();
        let fields: String = if trimmed.starts_with('@') {
            match ALIASES.iter().find(|(a, _)| a.eq_ignore_ascii_case(trimmed)) {
                Some((_, five)) => five.to_string(),
                None => return Err(bad(format!("unknown schedule alias `{trimmed}`"))),
            }
        } else {
            trimmed.to_string()
        };
        let parts: Vec<&str> = fields.split_whitespace().collect();
        let seconds = allow_seconds && parts.len() == 6;
        if parts.len() != 5 && !seconds {
            return Err(bad(format!("`{trimmed}` has {} fields, a cron expression has 5", parts.len())));
        }
        let parser =
            CronParser::builder().seconds(if seconds { Seconds::Required } else { Seconds::Disallowed }).build();
        let cron = parser.parse(&fields).map_err(|e| bad(format!("`{trimmed}` is not a cron expression: {e}")))?;
        let (minute, hour) = if seconds { (parts[1], parts[2]) } else { (parts[0], parts[1]) };
        let fixed = !minute.contains('*') && !hour.contains('*');
        let schedule = Schedule { expr: expr.to_string(), cron, fixed };
        // an expression that parses but never matches (`0 0 30 2 *`) is a mistake too
        if next_after(&schedule, &TimeZone::UTC, Timestamp::now()).is_none() {
            return Err(bad(format!("`{trimmed}` never fires (no date matches it)")));
        }
        Ok(schedule)
    }

    /// The first civil date-time strictly after `after` whose fields match.
    fn next_civil(&self, after: DateTime) -> Option<DateTime> {
        let start = Utc.from_utc_datetime(&to_naive(after));
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        from_naive(next.naive_utc())
    }

    /// The last civil date-time at or before `at` whose fields match.
    fn previous_civil(&self, at: DateTime) -> Option<DateTime> {
        let start = Utc.from_utc_datetime(&to_naive(at));
        let prev = self.cron.find_previous_occurrence(&start, true).ok()?;
        from_naive(prev.naive_utc())
    }

    /// The instants a matching civil time stands for in `tz` (0, 1 or 2 of them; see the module docs).
    fn instants(&self, tz: &TimeZone, civil: DateTime) -> Vec<Timestamp> {
        let ambiguous = tz.to_ambiguous_timestamp(civil);
        match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(civil).ok().into_iter().collect(),
            AmbiguousOffset::Gap { .. } if self.fixed => ambiguous.compatible().ok().into_iter().collect(),
            AmbiguousOffset::Gap { .. } => vec![],
            AmbiguousOffset::Fold { before, after } => {
                let first = before.to_timestamp(civil).ok();
                let second = if self.fixed { None } else { after.to_timestamp(civil).ok() };
                first.into_iter().chain(second).collect()
            }
        }
    }
}

/// The next time `schedule` fires in time zone `tz`, strictly after `after`; `None` when it never
/// fires again (within croner's search limit, the year 5000).
///
/// Pure: the daemon calls it with the current time before each sleep, so a DST change between two
/// runs is always seen.
pub fn next_after(schedule: &Schedule, tz: &TimeZone, after: Timestamp) -> Option<Timestamp> {
    let civil_after = tz.to_datetime(after).with().subsec_nanosecond(0).build().ok()?;
    // Near an offset change the civil → instant mapping is not monotonic: a civil time before
    // `civil_after` may fire again after `after` (the repeated hour), and a later civil time may
    // fire earlier. Then every candidate within the window is examined; elsewhere the first match
    // is the answer.
    let near_change =
        tz.to_offset(after.saturating_sub(FOLD_WINDOW).ok()?) != tz.to_offset(after.saturating_add(FOLD_WINDOW).ok()?);
    let mut cursor = if near_change { civil_after.checked_sub(FOLD_WINDOW).ok()? } else { civil_after };
    let mut best: Option<Timestamp> = None;
    // bounded: a schedule may match only in gaps for a while (e.g. `30 2 * * *` never, were it a
    // wildcard job, on a zone that skips 02:xx every day — no such zone, but stay finite)
    for _ in 0..100_000 {
        let civil = schedule.next_civil(cursor)?;
        if let Some(b) = best {
            let limit = tz.to_datetime(b).checked_add(FOLD_WINDOW).ok()?;
            if !near_change || civil > limit {
                return Some(b);
            }
        }
        for t in schedule.instants(tz, civil) {
            if t > after && best.is_none_or(|b| t < b) {
                best = Some(t);
            }
        }
        cursor = civil;
    }
    best
}

/// The last time `schedule` fired in `tz` at or before `at` (the slot a daemon that was down
/// missed). Near an offset change it may name a neighbouring slot; it is only the key replicas
/// agree on for a catch-up run, never when anything runs.
pub fn previous_at_or_before(schedule: &Schedule, tz: &TimeZone, at: Timestamp) -> Option<Timestamp> {
    let civil = tz.to_datetime(at).with().subsec_nanosecond(0).build().ok()?;
    let mut cursor = civil;
    for _ in 0..1000 {
        let c = schedule.previous_civil(cursor)?;
        if let Some(t) = schedule.instants(tz, c).into_iter().filter(|t| *t <= at).max() {
            return Some(t);
        }
        cursor = c.checked_sub(jiff::SignedDuration::from_secs(1)).ok()?;
    }
    None
}

fn to_naive(dt: DateTime) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(i32::from(dt.year()), dt.month() as u32, dt.day() as u32)
        .and_then(|d| d.and_hms_opt(dt.hour() as u32, dt.minute() as u32, dt.second() as u32))
        .unwrap_or_default()
}

fn from_naive(n: NaiveDateTime) -> Option<DateTime> {
    DateTime::new(
        i16::try_from(n.year()).ok()?,
        n.month() as i8,
        n.day() as i8,
        n.hour() as i8,
        n.minute() as i8,
        n.second() as i8,
        0,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Every fire time in [from, to).
    fn fires(expr: &str, tz: &TimeZone, from: Timestamp, to: Timestamp) -> Vec<Timestamp> {
        let s = Schedule::parse(expr).unwrap();
        let mut out = vec![];
        // `from` itself counts: start just before it
        let mut t = from - SignedDuration::from_nanos(1);
        while let Some(n) = next_after(&s, tz, t) {
            assert!(n > t, "{expr}: time went backwards at {t}: {n}");
            if n >= to {
                break;
            }
            out.push(n);
            t = n;
        }
        out
    }

    /// The local day `date` in `tz`, as [start, end).
    fn local_day(tz: &TimeZone, date: &str) -> (Timestamp, Timestamp) {
        let d: jiff::civil::Date = date.parse().unwrap();
        let start = d.to_zoned(tz.clone()).unwrap().timestamp();
        let end = d.tomorrow().unwrap().to_zoned(tz.clone()).unwrap().timestamp();
        (start, end)
    }

    #[test]
    fn hourly_fires_23_times_on_spring_forward_and_25_on_fall_back() {
        let tz = berlin();
        for (day, expected) in [("2026-03-28", 24), ("2026-03-29", 23), ("2026-10-25", 25), ("2026-10-26", 24)] {
            let (a, b) = local_day(&tz, day);
            assert_eq!(fires("0 * * * *", &tz, a, b).len(), expected, "{day}");
            assert_eq!(fires("@hourly", &tz, a, b).len(), expected, "{day}");
        }
        // the repeated hour: 02:00 CEST (00:00Z) and 02:00 CET (01:00Z) both fire, in order
        let (a, b) = local_day(&tz, "2026-10-25");
        let f = fires("0 * * * *", &tz, a, b);
        assert_eq!(f[2], ts("2026-10-25T00:00:00Z"));
        assert_eq!(f[3], ts("2026-10-25T01:00:00Z"));
        assert_eq!(f[4], ts("2026-10-25T02:00:00Z"));
        // the skipped hour: 01:00 CET (00:00Z) then 03:00 CEST (01:00Z)
        let (a, b) = local_day(&tz, "2026-03-29");
        let f = fires("0 * * * *", &tz, a, b);
        assert_eq!(&f[1..3], &[ts("2026-03-29T00:00:00Z"), ts("2026-03-29T01:00:00Z")]);
    }

    #[test]
    fn a_daily_job_in_the_changed_hour_runs_once_each_day() {
        let tz = berlin();
        // spring forward: 02:30 does not exist on the 29th; it runs at 03:30 CEST instead
        let f = fires("30 2 * * *", &tz, ts("2026-03-27T00:00:00Z"), ts("2026-03-31T00:00:00Z"));
        assert_eq!(
            f,
            [
                ts("2026-03-27T01:30:00Z"), // 02:30 CET
                ts("2026-03-28T01:30:00Z"),
                ts("2026-03-29T01:30:00Z"), // 03:30 CEST
                ts("2026-03-30T00:30:00Z"), // 02:30 CEST
            ]
        );
        // fall back: 02:30 happens twice on the 25th; it runs at the first one only
        let f = fires("30 2 * * *", &tz, ts("2026-10-23T00:00:00Z"), ts("2026-10-27T00:00:00Z"));
        assert_eq!(
            f,
            [
                ts("2026-10-23T00:30:00Z"), // 02:30 CEST
                ts("2026-10-24T00:30:00Z"),
                ts("2026-10-25T00:30:00Z"), // the first 02:30 (CEST)
                ts("2026-10-26T01:30:00Z"), // 02:30 CET
            ]
        );
    }

    #[test]
    fn starting_inside_the_repeated_hour() {
        let tz = berlin();
        let hourly = Schedule::parse("0 * * * *").unwrap();
        let half = Schedule::parse("*/30 * * * *").unwrap();
        let daily = Schedule::parse("30 2 * * *").unwrap();
        // 02:50 CEST (first pass): the next hour starts at 02:00 CET
        assert_eq!(next_after(&hourly, &tz, ts("2026-10-25T00:50:00Z")), Some(ts("2026-10-25T01:00:00Z")));
        // 02:10 CET (second pass): 02:30 CET, never the earlier 02:30 CEST
        assert_eq!(next_after(&half, &tz, ts("2026-10-25T01:10:00Z")), Some(ts("2026-10-25T01:30:00Z")));
        // the daily job already ran at the first 02:30: nothing more that day
        assert_eq!(next_after(&daily, &tz, ts("2026-10-25T00:30:00Z")), Some(ts("2026-10-26T01:30:00Z")));
        assert_eq!(next_after(&daily, &tz, ts("2026-10-25T01:10:00Z")), Some(ts("2026-10-26T01:30:00Z")));
    }

    #[test]
    fn the_zone_decides_wall_clock_times() {
        let s = Schedule::parse("0 2 * * *").unwrap();
        let after = ts("2026-07-01T12:00:00Z");
        assert_eq!(next_after(&s, &TimeZone::UTC, after), Some(ts("2026-07-02T02:00:00Z")));
        assert_eq!(next_after(&s, &berlin(), after), Some(ts("2026-07-02T00:00:00Z")));
        // winter: a fixed offset taken in summer would say 00:00Z
        assert_eq!(next_after(&s, &berlin(), ts("2026-12-01T12:00:00Z")), Some(ts("2026-12-02T01:00:00Z")));
        // strictly after
        assert_eq!(next_after(&s, &TimeZone::UTC, ts("2026-07-02T02:00:00Z")), Some(ts("2026-07-03T02:00:00Z")));
        assert_eq!(next_after(&s, &TimeZone::UTC, ts("2026-07-02T01:59:59.999Z")), Some(ts("2026-07-02T02:00:00Z")));
    }

    #[test]
    fn aliases_and_fields() {
        let after = ts("2026-07-01T12:34:00Z");
        let utc = TimeZone::UTC;
        let next = |e: &str| next_after(&Schedule::parse(e).unwrap(), &utc, after).unwrap();
        assert_eq!(next("@hourly"), ts("2026-07-01T13:00:00Z"));
        assert_eq!(next("@daily"), ts("2026-07-02T00:00:00Z"));
        assert_eq!(next("@weekly"), ts("2026-07-05T00:00:00Z")); // a Sunday
        assert_eq!(next("@monthly"), ts("2026-08-01T00:00:00Z"));
        assert_eq!(next("@yearly"), ts("2027-01-01T00:00:00Z"));
        assert_eq!(next("@DAILY"), ts("2026-07-02T00:00:00Z"));
        assert_eq!(next("*/5 * * * *"), ts("2026-07-01T12:35:00Z"));
        assert_eq!(next("0 6 * * MON-FRI"), ts("2026-07-02T06:00:00Z"));
        assert_eq!(next("0 0 29 2 *"), ts("2028-02-29T00:00:00Z"));
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (expr, needle) in [
            ("", "0 fields"),
            ("0 2 * *", "4 fields"),
            ("0 0 2 * * *", "6 fields"),
            ("@reboot", "unknown schedule alias"),
            ("61 * * * *", "not a cron expression"),
            ("0 25 * * *", "not a cron expression"),
            ("0 0 30 2 *", "never fires"),
            ("every day", "2 fields"),
        ] {
            let e = Schedule::parse(expr).unwrap_err();
            assert!(e.message.contains(needle), "{expr}: {}", e.message);
        }
    }

    #[test]
    fn seconds_only_as_the_test_extension() {
        let s = Schedule::parse_with("*/2 * * * * *", true).unwrap();
        let n = next_after(&s, &TimeZone::UTC, ts("2026-07-01T12:00:01Z")).unwrap();
        assert_eq!(n, ts("2026-07-01T12:00:02Z"));
        assert!(Schedule::parse_with("*/2 * * * * *", false).is_err());
        // 5 fields still mean minutes when seconds are allowed
        let s = Schedule::parse_with("* * * * *", true).unwrap();
        assert_eq!(next_after(&s, &TimeZone::UTC, ts("2026-07-01T12:00:01Z")), Some(ts("2026-07-01T12:01:00Z")));
    }

    #[test]
    fn previous_slot_is_the_last_fire_time_at_or_before() {
        let every_hour = Schedule::parse("0 * * * *").unwrap();
        let utc = TimeZone::UTC;
        assert_eq!(
            previous_at_or_before(&every_hour, &utc, ts("2026-03-10T10:20:00Z")),
            Some(ts("2026-03-10T10:00:00Z"))
        );
        assert_eq!(
            previous_at_or_before(&every_hour, &utc, ts("2026-03-10T10:00:00Z")),
            Some(ts("2026-03-10T10:00:00Z"))
        );
        let nightly = Schedule::parse("30 2 * * *").unwrap();
        assert_eq!(
            previous_at_or_before(&nightly, &berlin(), ts("2026-03-10T00:00:00Z")),
            Some(ts("2026-03-09T01:30:00Z"))
        );
    }
}
