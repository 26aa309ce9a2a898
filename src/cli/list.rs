//! `drctl list [JOB] [--target T]`

use super::Printer;
use super::output::bytes;
use crate::Error;
use crate::engine::Engine;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this job
    pub job: Option<String>,
    /// Only backups held by this target
    #[arg(long)]
    pub target: Option<String>,
}

pub async fn run(engine: &Engine, args: &Args, printer: &Printer) -> Result<i32, Error> {
    if let Some(j) = &args.job {
        engine.config.job(j)?;
    }
    let catalog = engine.catalog().await?;
    let entries = catalog.list(args.job.as_deref(), args.target.as_deref()).await?;
    if printer.json {
        printer.json(&entries);
        return Ok(0);
    }
    if entries.is_empty() {
        printer.note("no backups in the catalog (on a fresh machine: `drctl catalog rebuild`)");
        return Ok(0);
    }
    println!(
        "{:<24} {:<14} {:<8} {:<21} {:>10} {:>10}  TARGETS",
        "BACKUP ID", "JOB", "STATUS", "STARTED", "SIZE", "STORED"
    );
    for e in entries {
        let status =
            serde_json::to_value(e.status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let started = e.started_at.get(..19).unwrap_or(&e.started_at).replace('T', " ");
        println!(
            "{:<24} {:<14} {:<8} {:<21} {:>10} {:>10}  {}",
            e.id,
            e.job,
            status,
            started,
            e.plaintext_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            e.stored_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            if e.targets.is_empty() {
                e.error.map(|m| format!("(failed: {m})")).unwrap_or_default()
            } else {
                e.targets.join(",")
            }
        );
    }
    Ok(0)
}
