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

use std::collections::BTreeSet;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::targets::KeepPolicy;

/// How far a time may lie ahead of this host's clock before it is wrong: a backup started more
/// than this in the future is future-dated, and prune deletes nothing on a target whose clock
/// differs from this host's by more than this.
pub const CLOCK_TOLERANCE: SignedDuration = SignedDuration::from_mins(5);

/// Whether `t` lies in the future beyond `tolerance` as seen at `now` (pure).
pub fn future_dated(t: Timestamp, now: Timestamp, tolerance: SignedDuration) -> bool {
    now.checked_add(tolerance).is_ok_and(|limit| t > limit)
}

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
    /// Override: the backup's manifest on this target cannot be read (written by a newer drctl,
    /// or damaged), or its copy here is incomplete. drctl does not delete what it does not
    /// understand (it is not an incomplete upload: those have no manifest at all).
    Unreadable {
        key: String,
        error: String,
    },
    /// Override: the backup is dated in the future beyond [`CLOCK_TOLERANCE`] (a host with a
    /// wrong clock made it): it never counts as the newest and is never deleted automatically.
    FutureDated {
        started_at: String,
    },
    /// Override: one of the job's targets could not be listed, so 3-2-1 cannot be judged (the
    /// catalog's record of its copies may be stale): no backup of the job is deleted anywhere.
    TargetUnavailable {
        targets: Vec<String>,
    },
    /// Override: this host's clock and the target's differ by more than [`CLOCK_TOLERANCE`] (or the
    /// target's clock could not be read): nothing is deleted on this target.
    ClockSkew {
        message: String,
    },
    /// Override: the newest backup of the job that was not flagged suspicious (a wiped or
    /// truncated source makes small backups; the one from before must survive them).
    NewestNotSuspicious,
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
            Reason::Unreadable { error, .. } => write!(f, "not understood here, kept: {error}"),
            Reason::FutureDated { started_at } => {
                write!(f, "dated in the future ({started_at}): a clock was wrong; never deleted automatically")
            }
            Reason::TargetUnavailable { targets } => write!(
                f,
                "target `{}` could not be listed: 3-2-1 cannot be judged, nothing of this job is deleted",
                targets.join("`, `")
            ),
            Reason::ClockSkew { .. } => {
                f.write_str("this host's clock disagrees with the target's (see the error): nothing is deleted here")
            }
            Reason::NewestNotSuspicious => f.write_str("newest backup of the job not flagged suspicious"),
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

/// A backup of a job as the job-wide overrides see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobBackup {
    pub id: String,
    pub time: Timestamp,
    /// Targets holding a complete copy.
    pub holders: Vec<String>,
    /// Flagged suspicious (at backup time, or judged again from the series).
    pub suspicious: bool,
}

/// The backups of a job no policy may delete, and why (pure). At `now`:
/// - a backup dated in the future beyond `tolerance` is [`Reason::FutureDated`] and does not count
///   for any "newest" below;
/// - the newest backup is [`Reason::NewestGood`];
/// - the newest one whose holders meet 3-2-1 (`placements`: the job's targets) is [`Reason::Needed321`];
/// - the newest one whose latest drill passed is [`Reason::NewestVerified`];
/// - the newest one not flagged suspicious is [`Reason::NewestNotSuspicious`] (named when the
///   newest backup is suspicious; otherwise it is the newest good one anyway).
///
/// Ids may repeat with different reasons.
pub fn protected(
    backups: &[JobBackup],
    placements: &[rule321::Placement],
    drills: &[DrillResult],
    now: Timestamp,
    tolerance: SignedDuration,
) -> Vec<(String, Reason)> {
    let mut out = Vec::new();
    let mut newest_first: Vec<&JobBackup> = Vec::new();
    for b in backups {
        if future_dated(b.time, now, tolerance) {
            out.push((b.id.clone(), Reason::FutureDated { started_at: format!("{:.0}", b.time) }));
        } else {
            newest_first.push(b);
        }
    }
    newest_first.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    if let Some(b) = newest_first.first() {
        out.push((b.id.clone(), Reason::NewestGood));
    }
    let meets_321 = |b: &&&JobBackup| {
        let holders: Vec<&rule321::Placement> = placements.iter().filter(|p| b.holders.contains(&p.target)).collect();
        rule321::evaluate(&holders).ok
    };
    if let Some(b) = newest_first.iter().find(meets_321) {
        out.push((b.id.clone(), Reason::Needed321));
    }
    let candidates: Vec<Candidate> =
        newest_first.iter().map(|b| Candidate { id: b.id.clone(), time: b.time }).collect();
    if let Some(id) = newest_verified(&candidates, drills) {
        out.push((id, Reason::NewestVerified));
    }
    // named only when it matters: when the newest backup is itself suspicious
    if newest_first.first().is_some_and(|b| b.suspicious)
        && let Some(b) = newest_first.iter().find(|b| !b.suspicious)
    {
        out.push((b.id.clone(), Reason::NewestNotSuspicious));
    }
    out
}

/// A target's plan with the job-wide overrides applied (pure): future-dated backups (at `now`)
/// are left out of the policy (they would count as the newest) and kept; then every override in
/// `protected` is applied. One decision per backup in `held`, newest first.
///
/// # Errors
/// When the policy cannot be applied ([`PolicyError`]).
pub fn plan_with_overrides(
    held: &[Candidate],
    policy: Option<&KeepPolicy>,
    tz: &TimeZone,
    protected: &[(String, Reason)],
    now: Timestamp,
    tolerance: SignedDuration,
) -> Result<Vec<Decision>, PolicyError> {
    let (future, present): (Vec<Candidate>, Vec<Candidate>) =
        held.iter().cloned().partition(|c| future_dated(c.time, now, tolerance));
    let mut future = future;
    future.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let mut decisions: Vec<Decision> = future
        .iter()
        .map(|c| Decision {
            id: c.id.clone(),
            keep: true,
            reasons: vec![Reason::FutureDated { started_at: format!("{:.0}", c.time) }],
        })
        .collect();
    decisions.extend(plan(&present, policy, tz)?);
    for (id, reason) in protected {
        force_keep(&mut decisions, id, reason.clone());
    }
    Ok(decisions)
}

/// Keep every decision for `reason` (a target that cannot be judged safely).
pub fn keep_all(decisions: &mut [Decision], reason: &Reason) {
    let ids: BTreeSet<String> = decisions.iter().map(|d| d.id.clone()).collect();
    for id in ids {
        force_keep(decisions, &id, reason.clone());
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
    fn future_dated_table() {
        let now: Timestamp = "2026-12-04T12:00:00Z".parse().unwrap();
        let cases = [
            ("2026-12-04T12:00:00Z", false),
            ("2026-12-04T11:00:00Z", false),
            ("2026-12-04T12:04:59Z", false),
            ("2026-12-04T12:05:00Z", false),
            ("2026-12-04T12:05:01Z", true),
            ("2030-01-01T00:00:00Z", true),
            ("2010-01-01T00:00:00Z", false),
        ];
        for (t, want) in cases {
            assert_eq!(future_dated(t.parse().unwrap(), now, CLOCK_TOLERANCE), want, "{t}");
        }
        assert!(!future_dated(Timestamp::MAX, Timestamp::MAX, CLOCK_TOLERANCE), "no overflow");
    }

    fn jb(id: &str, holders: &[&str], suspicious: bool) -> JobBackup {
        JobBackup {
            id: id.into(),
            time: id.parse().unwrap(),
            holders: holders.iter().map(|h| h.to_string()).collect(),
            suspicious,
        }
    }

    #[test]
    fn protected_table() {
        let now: Timestamp = "2026-12-04T12:00:00Z".parse().unwrap();
        let place =
            |t: &str, m: &str, off: bool| rule321::Placement { target: t.into(), medium: m.into(), offsite: off };
        let placements = vec![place("local", "disk", false), place("s3", "object", true)];
        let (d1, d2, d3, fut) =
            ("2026-12-01T02:00:00Z", "2026-12-02T02:00:00Z", "2026-12-03T02:00:00Z", "2030-01-01T00:00:00Z");
        let both = ["local", "s3"];
        let dr = |id: &str| DrillResult { backup_id: id.into(), at: now, passed: true };
        type Case<'a> = (&'a str, Vec<JobBackup>, Vec<DrillResult>, Vec<(&'a str, Reason)>);
        let cases: Vec<Case> = vec![
            ("nothing", vec![], vec![], vec![]),
            (
                "one good backup on both",
                vec![jb(d1, &both, false)],
                vec![],
                vec![(d1, Reason::NewestGood), (d1, Reason::Needed321)],
            ),
            (
                "a future-dated backup never counts as newest",
                vec![jb(d1, &both, false), jb(d2, &both, false), jb(fut, &both, false)],
                vec![dr(fut)],
                vec![
                    (fut, Reason::FutureDated { started_at: "2030-01-01T00:00:00Z".into() }),
                    (d2, Reason::NewestGood),
                    (d2, Reason::Needed321),
                ],
            ),
            (
                "a wiped source: the newest good one survives the suspicious ones",
                vec![jb(d1, &both, false), jb(d2, &both, true), jb(d3, &both, true)],
                vec![dr(d1)],
                vec![
                    (d3, Reason::NewestGood),
                    (d3, Reason::Needed321),
                    (d1, Reason::NewestVerified),
                    (d1, Reason::NewestNotSuspicious),
                ],
            ),
            (
                "3-2-1 from holders",
                vec![jb(d1, &both, false), jb(d2, &["local"], false)],
                vec![],
                vec![(d2, Reason::NewestGood), (d1, Reason::Needed321)],
            ),
            (
                "a suspicious newest one on a good older one",
                vec![jb(d1, &both, false), jb(d2, &both, false), jb(d3, &["local"], true)],
                vec![],
                vec![(d3, Reason::NewestGood), (d2, Reason::Needed321), (d2, Reason::NewestNotSuspicious)],
            ),
            (
                "every backup suspicious: no NewestNotSuspicious",
                vec![jb(d1, &["local"], true)],
                vec![],
                vec![(d1, Reason::NewestGood)],
            ),
        ];
        for (name, backups, drills, want) in cases {
            let got = protected(&backups, &placements, &drills, now, CLOCK_TOLERANCE);
            let want: Vec<(String, Reason)> = want.into_iter().map(|(i, r)| (i.to_string(), r)).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn plan_with_overrides_table() {
        let now: Timestamp = "2026-12-04T12:00:00Z".parse().unwrap();
        let held = vec![
            at("2026-12-01T02:00:00Z"),
            at("2026-12-02T02:00:00Z"),
            at("2026-12-04T11:59:00Z"),
            at("2030-01-01T00:00:00Z"),
        ];
        let last1 = policy(|p| p.last = Some(1));
        // keep last=1: the real newest is kept, the future-dated one is kept on its own reason
        let d = plan_with_overrides(&held, Some(&last1), &utc(), &[], now, CLOCK_TOLERANCE).unwrap();
        assert_eq!(kept(&d), ["2030-01-01T00:00:00Z", "2026-12-04T11:59:00Z"]);
        assert_eq!(d[0].reasons, [Reason::FutureDated { started_at: "2030-01-01T00:00:00Z".into() }]);
        assert_eq!(d[1].reasons, [Reason::Last { n: 1 }]);
        assert_eq!(d.len(), 4);
        // `within` is measured from the newest present backup, not from 2030
        let within = policy(|p| p.within = Some("3days".into()));
        let d = plan_with_overrides(&held, Some(&within), &utc(), &[], now, CLOCK_TOLERANCE).unwrap();
        assert_eq!(kept(&d), ["2030-01-01T00:00:00Z", "2026-12-04T11:59:00Z", "2026-12-02T02:00:00Z"]);
        // overrides
        let prot = vec![("2026-12-01T02:00:00Z".to_string(), Reason::NewestNotSuspicious)];
        let d = plan_with_overrides(&held, Some(&last1), &utc(), &prot, now, CLOCK_TOLERANCE).unwrap();
        assert_eq!(kept(&d), ["2030-01-01T00:00:00Z", "2026-12-04T11:59:00Z", "2026-12-01T02:00:00Z"]);
        // an unjudgeable target keeps everything
        let mut d = plan_with_overrides(&held, Some(&last1), &utc(), &[], now, CLOCK_TOLERANCE).unwrap();
        keep_all(&mut d, &Reason::TargetUnavailable { targets: vec!["s3".into()] });
        assert_eq!(kept(&d).len(), 4);
        assert!(d[3].reasons.contains(&Reason::TargetUnavailable { targets: vec!["s3".into()] }));
    }

    #[test]
    fn new_reasons_serialize_with_their_rule() {
        let cases = [
            (Reason::NewestNotSuspicious, r#"{"rule":"newest_not_suspicious"}"#),
            (
                Reason::FutureDated { started_at: "2030-01-01T00:00:00Z".into() },
                r#"{"rule":"future_dated","started_at":"2030-01-01T00:00:00Z"}"#,
            ),
            (
                Reason::TargetUnavailable { targets: vec!["s3".into()] },
                r#"{"rule":"target_unavailable","targets":["s3"]}"#,
            ),
            (
                Reason::Unreadable { key: "k".into(), error: "e".into() },
                r#"{"rule":"unreadable","key":"k","error":"e"}"#,
            ),
            (Reason::ClockSkew { message: "m".into() }, r#"{"rule":"clock_skew","message":"m"}"#),
        ];
        for (r, want) in cases {
            assert_eq!(serde_json::to_string(&r).unwrap(), want);
            assert!(!r.to_string().is_empty());
        }
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
