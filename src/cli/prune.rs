//! `drctl prune [JOB] [--dry-run]`

use super::Printer;
use crate::Error;
use crate::engine::Engine;
use crate::engine::prune::prune;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this job
    pub job: Option<String>,
    /// Print the plan (what is kept and why, what would be deleted) and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// Exit 1 when prune could not do its work somewhere (a target down, a clock that disagrees with a
/// target's, a failed delete); warnings alone (a backup kept because its manifest cannot be read)
/// are exit 0: keeping it is the right outcome, and `drctl check` reports it too.
pub async fn run(engine: &Engine, args: &Args, printer: &Printer) -> Result<i32, Error> {
    let plans = prune(engine, args.job.as_deref(), args.dry_run).await?;
    let failed = plans.iter().any(|p| !p.errors.is_empty());
    if printer.json {
        printer.json(&plans);
    } else {
        for p in &plans {
            println!("job `{}` target `{}`{}:", p.job, p.target, if args.dry_run { " (dry run)" } else { "" });
            for d in &p.decisions {
                if d.keep {
                    let why: Vec<String> = d.reasons.iter().map(|r| r.to_string()).collect();
                    println!("  keep    {}  ({})", d.id, why.join(", "));
                } else {
                    println!("  {}  {}", if args.dry_run { "delete " } else { "deleted" }, d.id);
                }
            }
            for o in &p.orphans {
                println!("  {}  {o}  (incomplete upload)", if args.dry_run { "delete " } else { "deleted" });
            }
            if let (Some(first), Some(last)) = (p.wal.first(), p.wal.last()) {
                println!(
                    "  {}  {} WAL object(s) past `wal.keep` that no kept base backup needs ({first} .. {last})",
                    if args.dry_run { "delete " } else { "deleted" },
                    p.wal.len()
                );
            }
            for l in &p.locked {
                println!("  keep    {}  (incomplete upload, object lock until {})", l.key, l.until);
            }
            for t in &p.temporaries {
                let done = args.dry_run || p.removed_temporaries.contains(&t.key);
                let verb = match (args.dry_run, done) {
                    (true, _) => "delete ",
                    (false, true) => "deleted",
                    (false, false) => "failed ",
                };
                let since = t.modified.map(|m| format!(", last written {m}")).unwrap_or_default();
                println!("  {verb}  {}  (temporary file of an unfinished upload, {} bytes{since})", t.key, t.size);
            }
            for u in &p.stale_uploads {
                let since = u.initiated.map(|t| format!(", started {t}")).unwrap_or_default();
                println!(
                    "  {}  {}  (unfinished multipart upload{since})",
                    match (args.dry_run, p.aborted_uploads.contains(&u.upload_id)) {
                        (true, _) => "abort  ",
                        (false, true) => "aborted",
                        (false, false) => "failed ",
                    },
                    u.key
                );
            }
            for c in &p.chunks {
                if c.skipped.is_none() {
                    println!("  {}", chunk_line(c, args.dry_run));
                }
            }
            for b in &p.suspicious {
                println!("  note     {}  looks suspicious: {}", b.backup_id, b.reason);
            }
            for w in &p.warnings {
                eprintln!("warning: job `{}` target `{}`: {w}", p.job, p.target);
            }
            for e in &p.errors {
                eprintln!("error: job `{}` target `{}`: {e}", p.job, p.target);
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// One line about a chunk repository's collection: what went now, and what was marked to go at
/// a later prune (two-phase: see `chunked::fossil`).
fn chunk_line(c: &crate::chunked::gc::GcReport, dry_run: bool) -> String {
    let (delete, mark, repack) =
        if dry_run { ("delete ", "to mark", "to repack") } else { ("deleted", "marked", "repacked") };
    let mut line = format!(
        "{delete}  {} marked pack(s) of chunk repository `{}` ({} freed); {} unused pack(s) {mark} and {} mostly unused pack(s) {repack}, to go at a later prune ({}); {} pack(s) kept",
        c.packs_deleted.len(),
        c.scope,
        crate::units::bytes(c.bytes_freed),
        c.packs_marked.len(),
        c.packs_repacked.len(),
        crate::units::bytes(c.bytes_marked),
        c.packs_kept
    );
    if c.packs_waiting > 0 {
        line.push_str(&format!(
            "; {} marked pack(s) wait for a backup that started before their mark",
            c.packs_waiting
        ));
    }
    if c.packs_locked > 0 {
        line.push_str(&format!("; {} marked pack(s) wait for their Object Lock to end", c.packs_locked));
    }
    if !c.packs_resurrected.is_empty() {
        line.push_str(&format!("; {} marked pack(s) kept: a backup uses them", c.packs_resurrected.len()));
    }
    line
}
