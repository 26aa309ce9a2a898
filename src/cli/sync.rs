//! `drctl sync [JOB]`

use super::Printer;
use super::output::bytes;
use crate::Error;
use crate::engine::Engine;
use crate::engine::sync::sync;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this job
    pub job: Option<String>,
}

pub async fn run(engine: &Engine, args: &Args, printer: &Printer) -> Result<i32, Error> {
    let report = sync(engine, args.job.as_deref()).await?;
    if printer.json {
        printer.json(&report);
    } else {
        for c in &report.copied {
            printer.note(&format!(
                "job `{}`: copied {} from `{}` to `{}` ({})",
                c.job,
                c.backup_id,
                c.from,
                c.to,
                bytes(c.bytes)
            ));
        }
        for f in &report.failed {
            eprintln!("error: job `{}`: {} could not be copied to `{}`: {}", f.job, f.backup_id, f.to, f.error);
        }
        for k in &report.skipped {
            printer.note(&format!("job `{}`: {} not copied to `{}`: {}", k.job, k.backup_id, k.to, k.reason));
        }
        if report.copied.is_empty() && report.failed.is_empty() && report.skipped.is_empty() {
            printer.note("every target holds every committed backup of its jobs");
        }
        if !report.failed.is_empty() {
            eprintln!(
                "hint: `drctl check` shows which targets are unreachable; run `drctl sync` again once they are back"
            );
        }
    }
    Ok(if report.failed.is_empty() { 0 } else { 1 })
}
