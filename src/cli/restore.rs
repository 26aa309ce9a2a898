//! `drctl restore JOB (--latest | --id ID | --before TIME) [--to URL] [--output FILE|-] …`

use std::path::PathBuf;

use jiff::Timestamp;

use super::Printer;
use super::output::bytes;
use crate::catalog::Selector;
use crate::config::Problem;
use crate::engine::Engine;
use crate::engine::restore::{Output, RestoreRequest, restore};
use crate::jobs::RestoreOptions;
use crate::{Error, config};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["latest", "id", "before"])))]
pub struct Args {
    /// The job whose backup to restore
    pub job: String,
    /// The newest committed backup
    #[arg(long)]
    pub latest: bool,
    /// A backup id (see `drctl list`)
    #[arg(long)]
    pub id: Option<String>,
    /// The newest backup started at or before TIME: RFC 3339 (`2026-11-20T03:00:00Z`), a date
    /// (`2026-11-20`, midnight UTC) or an age (`36h`, `2days`)
    #[arg(long, value_name = "TIME")]
    pub before: Option<String>,
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
}

fn usage(message: String) -> Error {
    Error::Config(vec![Problem {
        severity: config::Severity::Error,
        file: PathBuf::from("<command line>"),
        line: None,
        path: "--before".into(),
        message,
        hint: Some("use RFC 3339 (`2026-11-20T03:00:00Z`), a date (`2026-11-20`) or an age (`36h`)".into()),
    }])
}

pub fn parse_before(s: &str) -> Result<Timestamp, Error> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        return d.to_zoned(jiff::tz::TimeZone::UTC).map(|z| z.timestamp()).map_err(|e| usage(format!("`{s}`: {e}")));
    }
    if let Ok(d) = humantime::parse_duration(s.trim_end_matches(" ago")) {
        let span = jiff::SignedDuration::try_from(d).map_err(|e| usage(format!("`{s}`: {e}")))?;
        return Timestamp::now().checked_sub(span).map_err(|e| usage(format!("`{s}`: {e}")));
    }
    Err(usage(format!("cannot read `{s}` as a time")))
}

pub async fn run(engine: &Engine, args: &Args, printer: &Printer) -> Result<i32, Error> {
    engine.config.job(&args.job)?;
    let selector = match (&args.id, &args.before) {
        (Some(id), _) => Selector::Id(id.clone()),
        (None, Some(t)) => Selector::Before(parse_before(t)?),
        (None, None) => Selector::Latest,
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
            several: false,
            to_dir: args.to_dir.clone(),
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
        printer.note(&format!(
            "dry run: would restore backup {} of job `{}` from target `{}`:",
            report.backup_id, report.job, report.target
        ));
        for s in &report.steps {
            printer.note(&format!("  {} -> {}: {}", s.artifact, s.destination, s.action));
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
    #[test]
    fn before_formats() {
        assert_eq!(super::parse_before("2026-11-20T03:00:00Z").unwrap().to_string(), "2026-11-20T03:00:00Z");
        assert_eq!(super::parse_before("2026-11-20").unwrap().to_string(), "2026-11-20T00:00:00Z");
        assert!(super::parse_before("36h").unwrap() < jiff::Timestamp::now());
        assert!(super::parse_before("yesterday-ish").is_err());
    }
}
