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
    let rows = catalog.list_flagged(args.job.as_deref(), args.target.as_deref()).await?;
    if printer.json {
        printer.json(&rows);
        return Ok(0);
    }
    if rows.is_empty() {
        printer.note("no backups in the catalog (on a fresh machine: `drctl catalog rebuild`)");
        return Ok(0);
    }
    println!(
        "{:<24} {:<14} {:<11} {:<21} {:>10} {:>10} {:<8}  TARGETS",
        "BACKUP ID", "JOB", "STATUS", "STARTED", "SIZE", "STORED", "VERIFIED"
    );
    for row in &rows {
        let (e, f) = (&row.entry, &row.flags);
        let status =
            serde_json::to_value(e.status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let started = e.started_at.get(..19).unwrap_or(&e.started_at).replace('T', " ");
        // a suspicious backup is committed but flagged: `ok!`, `partial!`
        let status = if f.suspicious.is_some() { format!("{status}!") } else { status };
        println!(
            "{:<24} {:<14} {:<11} {:<21} {:>10} {:>10} {:<8}  {}",
            e.id,
            e.job,
            status,
            started,
            e.plaintext_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            e.stored_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            f.verified.as_deref().unwrap_or("-"),
            if e.targets.is_empty() {
                e.error.as_ref().map(|m| format!("(failed: {m})")).unwrap_or_default()
            } else {
                e.targets.join(",")
            }
        );
    }
    for row in rows.iter().filter(|r| r.flags.suspicious.is_some()) {
        let reason = row.flags.suspicious.as_deref().unwrap_or_default();
        eprintln!("warning: backup {} is suspicious (`!`): {reason}", row.entry.id);
    }
    Ok(0)
}
