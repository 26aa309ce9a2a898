//! `drctl verify [JOB... | --all] [--id ID]`: restore drills; exit 1 when any drill failed.

use super::Printer;
use super::output::bytes;
use crate::Error;
use crate::catalog::Selector;
use crate::drill::{DrillReport, verify_job};
use crate::engine::Engine;
use crate::finding::Severity;
use crate::metrics::{JobState, drill_job_state, push};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Jobs to drill (default with --all: every job)
    #[arg(required_unless_present = "all")]
    pub jobs: Vec<String>,
    /// Every configured job
    #[arg(long, conflicts_with = "jobs")]
    pub all: bool,
    /// Drill this backup instead of the newest (one job only)
    #[arg(long)]
    pub id: Option<String>,
}

pub async fn run(engine: &Engine, args: &Args, printer: &Printer) -> Result<i32, Error> {
    let jobs: Vec<String> = if args.all { engine.config.jobs.keys().cloned().collect() } else { args.jobs.clone() };
    for j in &jobs {
        engine.config.job(j)?; // unknown job: usage error before anything runs
    }
    if args.id.is_some() && jobs.len() != 1 {
        eprintln!("drctl: `--id` needs exactly one job");
        return Ok(2);
    }
    let mut reports: Vec<DrillReport> = Vec::new();
    for job in &jobs {
        let report = verify_job(engine, job, args.id.clone().map(Selector::Id)).await?;
        if !printer.json {
            print_human(&report, printer);
        }
        reports.push(report);
    }
    push_metrics(engine, &reports).await;
    if printer.json {
        printer.json(&reports);
    }
    Ok(if reports.iter().all(|r| r.record.passed()) { 0 } else { 1 })
}

fn print_human(report: &DrillReport, printer: &Printer) {
    let r = &report.record;
    let id = r.backup_id.as_deref().unwrap_or("(none)");
    if r.passed() {
        println!("{} {id} ok", r.job);
        printer.note(&format!(
            "job `{}`: drill of backup {id} passed: restored {} in {:.1}s (drill {:.1}s)",
            r.job,
            bytes(r.restored_bytes),
            r.restore_seconds,
            r.duration_seconds
        ));
    } else {
        println!("{} {id} FAILED", r.job);
        eprintln!("drctl: job `{}`: drill of backup {id} failed", r.job);
    }
    for f in &r.findings {
        let show = match f.severity {
            Severity::Error => true,
            Severity::Warning | Severity::Info => !printer.quiet,
        };
        if show {
            eprintln!("  {}", crate::redact::scrub(&f.to_string()));
            if let Some(h) = &f.hint {
                eprintln!("    hint: {}", crate::redact::scrub(h));
            }
        }
    }
    for w in &report.record_warnings {
        eprintln!("warning: job `{}`: the drill's record was not stored: {}", r.job, crate::redact::scrub(w));
    }
    if !r.passed() {
        eprintln!("hint: see runbooks/drill-failed.md; `drctl verify {} --json` lists every finding", r.job);
    }
}

/// Merge each drilled job's `drctl_verify_*` samples into its Pushgateway group (never replacing
/// the backup samples `drctl run` pushed). A failed push is a warning.
async fn push_metrics(engine: &Engine, reports: &[DrillReport]) {
    let Some(pushgateway) = &engine.config.pushgateway else {
        return;
    };
    let states: Vec<JobState> = reports.iter().map(|r| drill_job_state(&engine.config, &r.record)).collect();
    let failures = push::push_states(&pushgateway.url, &states).await;
    for e in &failures {
        eprintln!("{}", crate::redact::scrub(&format!("warning: {e}")));
    }
}
