//! `drctl run JOB... | --all`

use serde::Serialize;

use super::Printer;
use super::output::bytes;
use crate::Error;
use crate::catalog::BackupStatus;
use crate::engine::Engine;
use crate::engine::run::{RunReport, run_job};
use crate::metrics::{Event, RunOutcome, job_states, push};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Jobs to back up
    #[arg(required_unless_present = "all")]
    pub jobs: Vec<String>,
    /// Every configured job
    #[arg(long, conflicts_with = "jobs")]
    pub all: bool,
    /// After a run committed on every target, apply retention for that job (as `drctl prune JOB`
    /// and as the daemon does after each backup): what a scheduled CronJob runs. A partial or
    /// failed run prunes nothing; a failed prune is a warning and does not change the exit code
    #[arg(long)]
    pub prune: bool,
}

/// One element of `run --json`: every object has `job` (once) and `status` (`ok`, `partial` or
/// `failed`); a committed run adds the report's fields, a failed one `error` and `hint`.
#[derive(Serialize)]
struct JobOutcome {
    #[serde(flatten)]
    report: Option<RunReport>,
    #[serde(flatten)]
    failure: Option<Failure>,
    error: Option<String>,
    hint: Option<String>,
}

/// What a failed run has in place of a report.
#[derive(Serialize)]
struct Failure {
    job: String,
    status: BackupStatus,
}

pub async fn run(engine: &Engine, args: &Args, printer: &Printer) -> Result<i32, Error> {
    let jobs: Vec<String> = if args.all { engine.config.jobs.keys().cloned().collect() } else { args.jobs.clone() };
    for j in &jobs {
        engine.config.job(j)?; // unknown job: usage error before anything runs
    }
    // a secret file the jobs need is missing: a configuration error (exit 2, file:line and key),
    // before anything runs, not a failed or partial backup with a hint about the network
    let mut missing: Vec<crate::config::Problem> = Vec::new();
    for p in jobs.iter().flat_map(|j| engine.config.missing_secret_files_of(j)) {
        if !missing.contains(&p) {
            missing.push(p);
        }
    }
    if !missing.is_empty() {
        return Err(Error::Config(missing));
    }
    let (mut failed, mut partial) = (false, false);
    let mut outcomes = Vec::new();
    let mut ran = Vec::new();
    for job in &jobs {
        let result = run_job(engine, job).await;
        let outcome = RunOutcome::new(job, &result);
        Event::BackupFinished { job, result: outcome.result }.emit(None);
        if args.prune && matches!(&result, Ok(r) if r.status == BackupStatus::Ok) {
            crate::scheduler::prune_after_backup(engine, job).await;
        }
        ran.push(outcome);
        match result {
            Ok(r) => {
                partial |= r.status == BackupStatus::Partial;
                if !printer.json {
                    println!("{}", r.backup_id);
                    printer.note(&format!(
                        "job `{}`: backup {} committed to {} ({} read, {} stored, {:.1}s)",
                        r.job,
                        r.backup_id,
                        r.committed.join(", "),
                        bytes(r.plaintext_bytes),
                        bytes(r.stored_bytes),
                        r.duration_seconds
                    ));
                    for f in &r.failed {
                        eprintln!("warning: job `{}`: target `{}` has no copy: {}", r.job, f.target, f.error);
                        if let Some(h) = crate::targets::cause_hint(&f.target, &f.error) {
                            eprintln!("hint: {h}");
                        }
                    }
                    // the general hint only where no cause-specific one was given
                    if r.failed.iter().any(|f| crate::targets::cause_hint(&f.target, &f.error).is_none()) {
                        eprintln!(
                            "hint: the backup is incomplete (exit 3); once the target is back, run `drctl sync {}` to copy it there",
                            r.job
                        );
                    }
                    if let Some(reason) = &r.suspicious {
                        eprintln!(
                            "warning: job `{}`: backup {} is committed but suspicious: {reason}",
                            r.job, r.backup_id
                        );
                        eprintln!(
                            "hint: compare its size with the earlier ones (`drctl list {job}`), check the source, and run `drctl verify {job}`; see runbooks/alerts.md#backupsuspicious",
                            job = r.job
                        );
                    }
                    if let Some(w) = &r.catalog_warning {
                        eprintln!(
                            "warning: the catalog was not updated ({w}); the backup is committed on its targets: run `drctl catalog rebuild`"
                        );
                    }
                }
                outcomes.push(JobOutcome { report: Some(r), failure: None, error: None, hint: None });
            }
            Err(e) => {
                failed = true;
                if !printer.json {
                    eprintln!("drctl: {e}");
                    if let Some(h) = e.hint() {
                        eprintln!("hint: {h}");
                    }
                }
                outcomes.push(JobOutcome {
                    report: None,
                    failure: Some(Failure { job: job.clone(), status: BackupStatus::Failed }),
                    error: Some(e.to_string()),
                    hint: e.hint(),
                });
            }
        }
    }
    push_metrics(engine, &ran).await;
    if printer.json {
        printer.json(&outcomes);
    }
    Ok(if failed {
        1
    } else if partial {
        3
    } else {
        0
    })
}

/// Push the state of the jobs that ran to `[pushgateway] url`, when configured. A failed push is a
/// warning: it never fails a backup or changes the exit code.
async fn push_metrics(engine: &Engine, ran: &[RunOutcome]) {
    let Some(pushgateway) = &engine.config.pushgateway else {
        return;
    };
    if ran.is_empty() {
        return;
    }
    let states = job_states(engine, ran).await;
    let failures = push::push_states(&pushgateway.url, &states).await;
    for e in &failures {
        eprintln!("{}", crate::redact::scrub(&format!("warning: {e}")));
    }
    if let Some(e) = failures.first() {
        eprintln!("{}", crate::redact::scrub(&format!("hint: {}", e.hint())));
    }
}
