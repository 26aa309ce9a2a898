//! `drctl restore JOB (--latest | --id ID | --before TIME) [--to URL] [--output FILE|-] …`

use std::path::PathBuf;

use jiff::Timestamp;

use super::Printer;
use super::output::bytes;
use crate::Error;
use crate::catalog::Selector;
use crate::engine::Engine;
use crate::engine::restore::{Output, RestoreRequest, restore};
use crate::jobs::postgres::physical::{Recovery, RecoveryAction, RecoveryTarget};
use crate::jobs::{JobSpec, RestoreOptions};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["latest", "id", "before", "to_time"])))]
pub struct Args {
    /// The job whose backup to restore
    pub job: String,
    /// The newest committed backup
    #[arg(long)]
    pub latest: bool,
    /// A backup id (see `drctl list`), or a unique end of one
    #[arg(long)]
    pub id: Option<String>,
    /// The newest backup started at or before TIME: RFC 3339 (`2026-11-20T03:00:00Z`), a local
    /// time `YYYY-MM-DD HH:MM[:SS]` or a date (`2026-11-20`, midnight) in `[daemon] timezone`
    /// (default UTC), or an age (`36h`, `2days`)
    #[arg(long, value_name = "TIME")]
    pub before: Option<String>,
    /// Point-in-time recovery (postgres `method = "physical"`, with `--to-dir`): the newest base
    /// backup consistent before TIME, replaying WAL up to TIME (formats as `--before`)
    #[arg(long, value_name = "TIME")]
    pub to_time: Option<String>,
    /// Physical restores: what the server does once it reached `--to-time` (or the backup's
    /// consistent point with `--id`/`--before`): `pause` to be checked, then promoted with
    /// `SELECT pg_wal_replay_resume()`; `promote`; `shutdown`
    #[arg(long, value_enum, default_value_t = RecoveryAction::Pause)]
    pub recovery_action: RecoveryAction,
    /// Restore into this server/database instead of the job's own (`postgres://user@host/db`)
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// Place the artifact as files in DIR instead of loading it (redis: `dump.rdb` for an
    /// offline restart)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["to", "output"])]
    pub to_dir: Option<PathBuf>,
    /// Write the decrypted artifact to FILE (or `-` for stdout) instead of restoring it
    #[arg(long, value_name = "FILE|-", conflicts_with = "to")]
    pub output: Option<String>,
    /// Replace existing data in the destination
    #[arg(long)]
    pub force: bool,
    /// Print what would happen, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Only this artifact of the backup (a database name, or `globals`)
    #[arg(long)]
    pub artifact: Option<String>,
    /// Read from this target first
    #[arg(long)]
    pub target: Option<String>,
    /// Also replay roles and tablespaces (postgres `globals = true` backups) before the databases
    #[arg(long)]
    pub globals: bool,
    /// Do not restore object ownership and grants (postgres: into a cluster without the roles)
    #[arg(long)]
    pub no_owner: bool,
    /// Parallel streams (postgres: COPY connections into a new database swapped in by rename;
    /// default: the number of cores; 1 restores in one transaction in place)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
}

/// What `--before` accepts, said in every error about it.
const BEFORE_FORMATS: &str = "use RFC 3339 (`2026-11-20T03:00:00Z`, `2026-11-20T03:00:00+01:00`), a local time \
`YYYY-MM-DD HH:MM[:SS]` or a date `YYYY-MM-DD` (midnight) in `[daemon] timezone`, or an age (`36h`, `2days`, `90m ago`)";

fn before_error(value: &str, message: impl Into<String>) -> Error {
    Error::Usage { flag: "--before".into(), value: value.into(), message: message.into(), hint: BEFORE_FORMATS.into() }
}

/// `--before TIME` as an instant. Pure: the zone (the configured `[daemon] timezone`) and the
/// present are arguments, so the table of cases below pins every format.
///
/// Accepted, tried in this order:
/// 1. RFC 3339 with an offset or `Z` (`2026-11-20T03:00:00Z`; a space instead of `T` is fine);
/// 2. a civil date and time without an offset, `YYYY-MM-DD HH:MM[:SS]` (or with `T`), in `tz`;
/// 3. a date `YYYY-MM-DD`: midnight at its start in `tz`;
/// 4. an age before `now`: a humantime duration (`36h`, `2days`, `1h 30m`), optionally followed
///    by `ago`.
///
/// A date with a time is never read as a bare date (that dropped the time of day before).
///
/// # Errors
/// [`Error::Usage`] (exit 2) naming the value and the accepted formats.
pub fn parse_before(s: &str, tz: &jiff::tz::TimeZone, now: Timestamp) -> Result<Timestamp, Error> {
    let t = s.trim();
    if t.is_empty() {
        return Err(before_error(s, "empty time"));
    }
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(ts);
    }
    let starts_with_date = t.len() >= 10 && t.as_bytes()[4] == b'-' && t.as_bytes()[7] == b'-';
    if starts_with_date {
        if t.len() == 10 {
            let d: jiff::civil::Date = t.parse().map_err(|e| before_error(s, format!("not a date: {e}")))?;
            return d.to_zoned(tz.clone()).map(|z| z.timestamp()).map_err(|e| before_error(s, e.to_string()));
        }
        let dt: jiff::civil::DateTime = t.parse().map_err(|e| before_error(s, format!("not a date and time: {e}")))?;
        // a time in a DST gap moves forward, one in an overlap takes the earlier instant
        return tz
            .to_ambiguous_zoned(dt)
            .compatible()
            .map(|z| z.timestamp())
            .map_err(|e| before_error(s, e.to_string()));
    }
    let age = t.strip_suffix("ago").map(str::trim_end).unwrap_or(t);
    match humantime::parse_duration(age) {
        Ok(d) => {
            let span = jiff::SignedDuration::try_from(d).map_err(|e| before_error(s, e.to_string()))?;
            now.checked_sub(span).map_err(|e| before_error(s, format!("too far in the past: {e}")))
        }
        Err(_) => Err(before_error(s, "cannot read this as a time")),
    }
}

pub async fn run(engine: &Engine, args: &Args, printer: &Printer) -> Result<i32, Error> {
    let job = engine.config.job(&args.job)?;
    let physical = matches!(&job.spec, JobSpec::Postgres(pg) if pg.method == crate::jobs::postgres::Method::Physical);
    let tz = engine.config.timezone();
    let to_time = match &args.to_time {
        Some(_) if !physical => {
            return Err(Error::Usage {
                flag: "--to-time".into(),
                value: args.to_time.clone().unwrap_or_default(),
                message: format!("job `{}` is not a physical PostgreSQL job", args.job),
                hint: "point-in-time recovery needs `method = \"physical\"` (base backups + WAL); use --before".into(),
            });
        }
        Some(t) => Some(parse_before(t, &tz, Timestamp::now()).map_err(|e| match e {
            Error::Usage { value, message, hint, .. } => {
                Error::Usage { flag: "--to-time".into(), value, message, hint }
            }
            other => other,
        })?),
        None => None,
    };
    let selector = match (&args.id, &args.before, to_time) {
        (Some(id), _, _) => Selector::Id(id.clone()),
        (None, Some(t), _) => Selector::Before(parse_before(t, &tz, Timestamp::now())?),
        (None, None, Some(t)) => Selector::ConsistentBefore(t),
        (None, None, None) => Selector::Latest,
    };
    let recovery = if physical {
        let config = std::fs::canonicalize(&engine.config.path).unwrap_or_else(|_| engine.config.path.clone());
        let target = match (&selector, to_time) {
            (_, Some(t)) => RecoveryTarget::Time(t),
            (Selector::Latest, None) => RecoveryTarget::Latest,
            _ => RecoveryTarget::Immediate,
        };
        Some(Recovery { target, action: args.recovery_action, config, relay: None })
    } else {
        None
    };
    let output = args.output.as_ref().map(|o| if o == "-" { Output::Stdout } else { Output::File(PathBuf::from(o)) });
    let to_stdout = matches!(output, Some(Output::Stdout));
    let req = RestoreRequest {
        selector: Some(selector),
        output,
        options: RestoreOptions {
            to: args.to.clone(),
            force: args.force,
            no_owner: args.no_owner,
            jobs: args.jobs.map(usize::from),
            several: false,
            to_dir: args.to_dir.clone(),
            recovery,
        },
        dry_run: args.dry_run,
        artifact: args.artifact.clone(),
        target: args.target.clone(),
        globals: args.globals,
    };
    let report = restore(engine, &args.job, &req).await?;
    if printer.json && !to_stdout {
        printer.json(&report);
        return Ok(0);
    }
    for s in &report.skipped {
        eprintln!("warning: skipped {s}");
    }
    if report.dry_run {
        // the plan is what a dry run produces: stdout, like `prune --dry-run`; but with
        // `--output -` stdout is reserved for the data (a pipe into pg_restore must never
        // receive a plan), so it goes to stderr there
        let mut plan = vec![format!(
            "dry run: would restore backup {} of job `{}` from target `{}`:",
            report.backup_id, report.job, report.target
        )];
        plan.extend(report.steps.iter().map(|s| format!("  {} -> {}: {}", s.artifact, s.destination, s.action)));
        for line in plan {
            let line = crate::redact::scrub(&line);
            if to_stdout {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
    } else {
        for s in &report.steps {
            printer.note(&format!("restored {} -> {}", s.artifact, s.destination));
        }
        printer.note(&format!(
            "job `{}`: backup {} restored from target `{}` ({} in {:.1}s)",
            report.job,
            report.backup_id,
            report.target,
            bytes(report.plaintext_bytes),
            report.duration_seconds
        ));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use jiff::tz::TimeZone;

    use super::parse_before;

    #[test]
    fn before_formats() {
        let now: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let utc = TimeZone::UTC;
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // (input, zone, expected instant)
        let cases: &[(&str, &TimeZone, &str)] = &[
            ("2026-11-20T03:00:00Z", &utc, "2026-11-20T03:00:00Z"),
            ("2026-11-20T03:00:00Z", &berlin, "2026-11-20T03:00:00Z"),
            ("2026-11-20T03:00:00+01:00", &utc, "2026-11-20T02:00:00Z"),
            ("2026-11-20 03:00:00Z", &utc, "2026-11-20T03:00:00Z"),
            ("2026-11-20T03:00:00.5Z", &utc, "2026-11-20T03:00:00.5Z"),
            // the time of day is kept (it was dropped: midnight)
            ("2026-11-20 03:00", &utc, "2026-11-20T03:00:00Z"),
            ("2026-11-20 03:00:30", &utc, "2026-11-20T03:00:30Z"),
            ("2026-11-20T03:00", &utc, "2026-11-20T03:00:00Z"),
            // local times are in the configured zone (CET = UTC+1 in November, CEST in July)
            ("2026-11-20 03:00", &berlin, "2026-11-20T02:00:00Z"),
            ("2026-07-20 03:00", &berlin, "2026-07-20T01:00:00Z"),
            // dates: midnight at their start, in the zone
            ("2026-11-20", &utc, "2026-11-20T00:00:00Z"),
            ("2026-11-20", &berlin, "2026-11-19T23:00:00Z"),
            // DST gap (02:30 does not exist on 2026-03-29 in Berlin): moves forward
            ("2026-03-29 02:30", &berlin, "2026-03-29T01:30:00Z"),
            // ages, before `now`
            ("36h", &utc, "2026-11-20T00:00:00Z"),
            ("2days", &utc, "2026-11-19T12:00:00Z"),
            ("90m ago", &utc, "2026-11-21T10:30:00Z"),
            ("1h 30m", &berlin, "2026-11-21T10:30:00Z"),
            (" 36h ", &utc, "2026-11-20T00:00:00Z"),
        ];
        for (input, tz, want) in cases {
            let got = parse_before(input, tz, now).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got.to_string(), *want, "{input:?} in {tz:?}");
        }
    }

    #[test]
    fn bad_before_values_are_usage_errors_naming_the_formats() {
        let now = Timestamp::now();
        for bad in ["yesterday-ish", "", "2026-13-40", "2026-11-20 25:00", "2026-11-20 3pm", "36 parsecs", "-5h"] {
            let e = parse_before(bad, &jiff::tz::TimeZone::UTC, now).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
            assert!(e.to_string().starts_with("--before `"), "{bad:?}: {e}");
            let hint = e.hint().unwrap();
            assert!(hint.contains("RFC 3339") && hint.contains("YYYY-MM-DD HH:MM") && hint.contains("36h"), "{hint}");
        }
    }
}
