//! Retention: which backups a target keeps, as a pure function of the backups, the policy, the
//! time zone and the overrides. Nothing here touches a target; `prune` applies the plan.
//!
//! GFS rules follow `restic forget`: backups are considered newest first; each rule (`last`,
//! `hourly`, `daily`, `weekly`, `monthly`, `yearly`) keeps the newest backup of each of its
//! calendar buckets until it has kept N; `within` keeps everything younger than the duration,
//! measured from the newest backup (not from now, so a stalled job never loses its history); a
//! backup kept by any rule is kept. Buckets are civil periods in the configured time zone (weeks
//! are ISO weeks), so DST changes and month ends fall where a person expects. A target without a
//! policy keeps everything.
//!
//! Overrides come after the policy and always win: the newest good backup of a job is never
//! deleted, a deletion that would leave the job failing 3-2-1 is refused, and an object under
//! Object Lock is reported as retained, never deleted.

pub mod rule321;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::config::KeepPolicy;

/// A backup as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub time: Timestamp,
}

/// Why a backup is kept (or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum Reason {
    Last {
        n: u32,
    },
    Hourly {
        bucket: String,
    },
    Daily {
        bucket: String,
    },
    Weekly {
        bucket: String,
    },
    Monthly {
        bucket: String,
    },
    Yearly {
        bucket: String,
    },
    Within {
        duration: String,
    },
    /// The target has no `keep` policy.
    NoPolicy,
    /// Override: the newest good backup of the job.
    NewestGood,
    /// Override: the newest backup of the job whose latest restore drill passed.
    NewestVerified,
    /// Override: deleting it would leave the job failing 3-2-1.
    Needed321,
    /// Override: the object is under Object Lock until this time.
    Locked {
        until: String,
    },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Last { n } => write!(f, "last {n}"),
            Reason::Hourly { bucket } => write!(f, "hourly {bucket}"),
            Reason::Daily { bucket } => write!(f, "daily {bucket}"),
            Reason::Weekly { bucket } => write!(f, "weekly {bucket}"),
            Reason::Monthly { bucket } => write!(f, "monthly {bucket}"),
            Reason::Yearly { bucket } => write!(f, "yearly {bucket}"),
            Reason::Within { duration } => write!(f, "within {duration}"),
            Reason::NoPolicy => f.write_str("no keep policy on this target"),
            Reason::NewestGood => f.write_str("newest good backup of the job"),
            Reason::NewestVerified => f.write_str("newest verified backup of the job (its last drill passed)"),
            Reason::Needed321 => f.write_str("needed for 3-2-1"),
            Reason::Locked { until } => write!(f, "object lock until {until}"),
        }
    }
}

/// The verdict for one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub keep: bool,
    /// Every rule that keeps it; empty when it is deleted.
    pub reasons: Vec<Reason>,
}

/// The policy could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("`within = \"{0}\"` is not a duration (e.g. `7d`, `36h`, `2weeks`)")]
    Within(String),
}

#[derive(Clone, Copy)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

fn bucket(t: Timestamp, tz: &TimeZone, p: Period) -> String {
    let z = t.to_zoned(tz.clone());
    match p {
        Period::Hour => format!("{:04}-{:02}-{:02}T{:02}", z.year(), z.month(), z.day(), z.hour()),
        Period::Day => format!("{:04}-{:02}-{:02}", z.year(), z.month(), z.day()),
        Period::Week => {
            let w = z.date().iso_week_date();
            format!("{:04}-W{:02}", w.year(), w.week())
        }
        Period::Month => format!("{:04}-{:02}", z.year(), z.month()),
        Period::Year => format!("{:04}", z.year()),
    }
}

/// Apply `policy` to `backups` (any order). Returns one decision per backup, newest first.
///
/// # Errors
/// When `within` is not a duration.
pub fn plan(backups: &[Candidate], policy: Option<&KeepPolicy>, tz: &TimeZone) -> Result<Vec<Decision>, PolicyError> {
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let mut out: Vec<Decision> =
        sorted.iter().map(|c| Decision { id: c.id.clone(), keep: false, reasons: Vec::new() }).collect();
    let Some(policy) = policy.filter(|p| **p != KeepPolicy::default()) else {
        for d in &mut out {
            d.keep = true;
            d.reasons.push(Reason::NoPolicy);
        }
        return Ok(out);
    };

    if let Some(n) = policy.last {
        for d in out.iter_mut().take(n as usize) {
            d.reasons.push(Reason::Last { n });
        }
    }
    let rules: [(Option<u32>, Period); 5] = [
        (policy.hourly, Period::Hour),
        (policy.daily, Period::Day),
        (policy.weekly, Period::Week),
        (policy.monthly, Period::Month),
        (policy.yearly, Period::Year),
    ];
    for (n, period) in rules {
        let Some(n) = n else { continue };
        let mut left = n;
        let mut last_bucket: Option<String> = None;
        for (c, d) in sorted.iter().zip(out.iter_mut()) {
            if left == 0 {
                break;
            }
            let b = bucket(c.time, tz, period);
            if last_bucket.as_ref() != Some(&b) {
                last_bucket = Some(b.clone());
                left -= 1;
                d.reasons.push(match period {
                    Period::Hour => Reason::Hourly { bucket: b },
                    Period::Day => Reason::Daily { bucket: b },
                    Period::Week => Reason::Weekly { bucket: b },
                    Period::Month => Reason::Monthly { bucket: b },
                    Period::Year => Reason::Yearly { bucket: b },
                });
            }
        }
    }
    if let Some(within) = &policy.within {
        let span = humantime::parse_duration(within).map_err(|_| PolicyError::Within(within.clone()))?;
        let span = jiff::SignedDuration::try_from(span).map_err(|_| PolicyError::Within(within.clone()))?;
        if let Some(newest) = sorted.first() {
            let cutoff = newest.time.checked_sub(span).unwrap_or(Timestamp::MIN);
            for (c, d) in sorted.iter().zip(out.iter_mut()) {
                if c.time >= cutoff {
                    d.reasons.push(Reason::Within { duration: within.clone() });
                }
            }
        }
    }
    for d in &mut out {
        d.keep = !d.reasons.is_empty();
    }
    Ok(out)
}

/// Apply an override: keep `id` for `reason` whatever the policy said.
pub fn force_keep(decisions: &mut [Decision], id: &str, reason: Reason) {
    if let Some(d) = decisions.iter_mut().find(|d| d.id == id) {
        d.keep = true;
        if !d.reasons.contains(&reason) {
            d.reasons.push(reason);
        }
    }
}

/// A restore drill of one backup, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillResult {
    pub backup_id: String,
    /// When the drill ran.
    pub at: Timestamp,
    pub passed: bool,
}

/// The newest of `candidates` (by backup time) whose most recent drill passed: the backup retention
/// never deletes ([`Reason::NewestVerified`]). A backup whose last drill failed is not verified,
/// whatever earlier drills said.
pub fn newest_verified(candidates: &[Candidate], drills: &[DrillResult]) -> Option<String> {
    let mut newest_first: Vec<&Candidate> = candidates.iter().collect();
    newest_first.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    newest_first
        .into_iter()
        .find(|c| {
            drills.iter().filter(|d| d.backup_id == c.id).max_by(|a, b| a.at.cmp(&b.at)).is_some_and(|d| d.passed)
        })
        .map(|c| c.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Candidate {
        Candidate { id: s.to_string(), time: s.parse().unwrap() }
    }

    fn kept(decisions: &[Decision]) -> Vec<&str> {
        decisions.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect()
    }

    fn policy(f: impl FnOnce(&mut KeepPolicy)) -> KeepPolicy {
        let mut p = KeepPolicy::default();
        f(&mut p);
        p
    }

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    /// Four backups a day (00, 06, 12, 18 UTC) for 60 days ending 2026-03-01.
    fn series() -> Vec<Candidate> {
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        (0..60 * 4)
            .map(|i| {
                let t = start.checked_add(jiff::SignedDuration::from_hours(6 * i)).unwrap();
                Candidate { id: t.to_string(), time: t }
            })
            .collect()
    }

    #[test]
    fn no_policy_keeps_everything() {
        let b = series();
        let d = plan(&b, None, &utc()).unwrap();
        assert!(d.iter().all(|d| d.keep && d.reasons == vec![Reason::NoPolicy]));
        let d = plan(&b, Some(&KeepPolicy::default()), &utc()).unwrap();
        assert_eq!(kept(&d).len(), b.len());
    }

    #[test]
    fn table_of_policies() {
        let b = series();
        let cases: Vec<(KeepPolicy, Vec<&str>)> = vec![
            (
                policy(|p| p.last = Some(3)),
                vec!["2026-03-01T18:00:00Z", "2026-03-01T12:00:00Z", "2026-03-01T06:00:00Z"],
            ),
            // newest of each of the last 3 days
            (
                policy(|p| p.daily = Some(3)),
                vec!["2026-03-01T18:00:00Z", "2026-02-28T18:00:00Z", "2026-02-27T18:00:00Z"],
            ),
            // ISO weeks: 2026-03-01 is a Sunday (W09), the newest of W08 is Sunday 2026-02-22
            (policy(|p| p.weekly = Some(2)), vec!["2026-03-01T18:00:00Z", "2026-02-22T18:00:00Z"]),
            // month ends: the newest backup of January is 2026-01-31T18:00
            (
                policy(|p| p.monthly = Some(5)),
                vec!["2026-03-01T18:00:00Z", "2026-02-28T18:00:00Z", "2026-01-31T18:00:00Z"],
            ),
            (policy(|p| p.yearly = Some(10)), vec!["2026-03-01T18:00:00Z"]),
            (policy(|p| p.hourly = Some(2)), vec!["2026-03-01T18:00:00Z", "2026-03-01T12:00:00Z"]),
            // rules overlap: a backup kept by several rules is kept once
            (
                policy(|p| {
                    p.last = Some(1);
                    p.daily = Some(2);
                }),
                vec!["2026-03-01T18:00:00Z", "2026-02-28T18:00:00Z"],
            ),
            // within is measured from the newest backup, inclusive
            (
                policy(|p| p.within = Some("12h".into())),
                vec!["2026-03-01T18:00:00Z", "2026-03-01T12:00:00Z", "2026-03-01T06:00:00Z"],
            ),
            (policy(|p| p.daily = Some(0)), vec![]),
        ];
        for (p, want) in cases {
            let d = plan(&b, Some(&p), &utc()).unwrap();
            assert_eq!(kept(&d), want, "policy {p:?}");
            assert_eq!(d.len(), b.len(), "one decision per backup");
        }
    }

    #[test]
    fn more_rules_than_backups_keep_all() {
        let b = vec![at("2026-01-01T00:00:00Z"), at("2026-01-02T00:00:00Z")];
        let d = plan(&b, Some(&policy(|p| p.daily = Some(30))), &utc()).unwrap();
        assert_eq!(kept(&d).len(), 2);
    }

    #[test]
    fn buckets_follow_the_time_zone() {
        // 23:30 UTC on Jan 1 is already Jan 2 in Berlin: in UTC these are two days, in Berlin one
        let b = vec![at("2026-01-01T23:30:00Z"), at("2026-01-02T12:00:00Z")];
        let p = policy(|p| p.daily = Some(5));
        assert_eq!(kept(&plan(&b, Some(&p), &utc()).unwrap()).len(), 2);
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(kept(&plan(&b, Some(&p), &berlin).unwrap()), vec!["2026-01-02T12:00:00Z"]);
    }

    #[test]
    fn dst_changes() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // fall back on 2026-10-25: 00:30Z is 02:30 CEST and 01:30Z is 02:30 CET: the same civil
        // hour, one hourly bucket; 02:30Z is 03:30 CET, the next one
        let b = vec![at("2026-10-25T00:30:00Z"), at("2026-10-25T01:30:00Z"), at("2026-10-25T02:30:00Z")];
        let d = plan(&b, Some(&policy(|p| p.hourly = Some(10))), &berlin).unwrap();
        assert_eq!(kept(&d), vec!["2026-10-25T02:30:00Z", "2026-10-25T01:30:00Z"]);
        // spring forward on 2026-03-29: 23:30Z on the 28th and 22:30Z on the 29th are both local
        // 00:30 of consecutive days although only 23 hours apart
        let b = vec![at("2026-03-28T23:30:00Z"), at("2026-03-29T22:30:00Z")];
        let d = plan(&b, Some(&policy(|p| p.daily = Some(10))), &berlin).unwrap();
        assert_eq!(kept(&d).len(), 2);
    }

    #[test]
    fn iso_weeks_cross_years() {
        // 2026-12-31 (Thursday) and 2027-01-03 (Sunday) are both in ISO week 2026-W53
        let b = vec![at("2026-12-31T12:00:00Z"), at("2027-01-03T12:00:00Z"), at("2027-01-04T12:00:00Z")];
        let d = plan(&b, Some(&policy(|p| p.weekly = Some(5))), &utc()).unwrap();
        assert_eq!(kept(&d), vec!["2027-01-04T12:00:00Z", "2027-01-03T12:00:00Z"]);
        assert_eq!(d[1].reasons, vec![Reason::Weekly { bucket: "2026-W53".into() }]);
    }

    #[test]
    fn overrides_win_and_bad_durations_are_errors() {
        let b = series();
        let mut d = plan(&b, Some(&policy(|p| p.last = Some(1))), &utc()).unwrap();
        let oldest = b[0].id.clone();
        assert!(!d.iter().find(|x| x.id == oldest).unwrap().keep);
        force_keep(&mut d, &oldest, Reason::Needed321);
        let o = d.iter().find(|x| x.id == oldest).unwrap();
        assert!(o.keep);
        assert_eq!(o.reasons, vec![Reason::Needed321]);
        assert_eq!(
            plan(&b, Some(&policy(|p| p.within = Some("soon".into()))), &utc()).unwrap_err(),
            PolicyError::Within("soon".into())
        );
    }

    #[test]
    fn newest_verified_table() {
        let b = vec![at("2026-11-20T02:00:00Z"), at("2026-11-21T02:00:00Z"), at("2026-11-22T02:00:00Z")];
        let dr = |id: &str, when: &str, passed| DrillResult { backup_id: id.into(), at: when.parse().unwrap(), passed };
        let (old, mid, new) = ("2026-11-20T02:00:00Z", "2026-11-21T02:00:00Z", "2026-11-22T02:00:00Z");
        let cases: Vec<(&str, Vec<DrillResult>, Option<&str>)> = vec![
            ("no drills", vec![], None),
            ("one passed", vec![dr(old, "2026-11-20T06:00:00Z", true)], Some(old)),
            (
                "the newest passed wins over older passes",
                vec![dr(old, "2026-11-20T06:00:00Z", true), dr(mid, "2026-11-21T06:00:00Z", true)],
                Some(mid),
            ),
            (
                "a failed newest drill does not count",
                vec![dr(mid, "2026-11-21T06:00:00Z", true), dr(new, "2026-11-22T06:00:00Z", false)],
                Some(mid),
            ),
            (
                "the latest drill of a backup decides",
                vec![dr(mid, "2026-11-21T06:00:00Z", true), dr(mid, "2026-11-23T06:00:00Z", false)],
                None,
            ),
            (
                "a re-drill that passed again counts",
                vec![dr(new, "2026-11-22T06:00:00Z", false), dr(new, "2026-11-23T06:00:00Z", true)],
                Some(new),
            ),
            ("drills of pruned backups are ignored", vec![dr("gone", "2026-11-23T06:00:00Z", true)], None),
        ];
        for (name, drills, want) in cases {
            assert_eq!(newest_verified(&b, &drills).as_deref(), want, "{name}");
        }
        // as an override it keeps a backup the policy would delete
        let mut d = plan(&b, Some(&policy(|p| p.last = Some(1))), &utc()).unwrap();
        force_keep(&mut d, mid, Reason::NewestVerified);
        assert_eq!(kept(&d), vec![new, mid]);
        assert_eq!(d.iter().find(|x| x.id == mid).unwrap().reasons, vec![Reason::NewestVerified]);
    }
}
