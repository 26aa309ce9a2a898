//! `drctl catalog rebuild`

use super::Printer;
use crate::Error;
use crate::engine::Engine;
use crate::engine::rebuild::rebuild;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Rebuild the catalog from the manifests on the targets
    Rebuild,
}

pub async fn run(engine: &Engine, command: &Command, printer: &Printer) -> Result<i32, Error> {
    match command {
        Command::Rebuild => {
            let report = rebuild(engine).await?;
            if printer.json {
                printer.json(&report);
            } else {
                for p in &report.problems {
                    eprintln!("warning: target `{}`: {}", p.target, p.message);
                }
                printer.note(&format!(
                    "catalog {} rebuilt: {} backup(s), {} copies, {} drill record(s)",
                    crate::redact::url_for_display(&engine.catalog_url()),
                    report.backups,
                    report.copies,
                    report.drills
                ));
            }
            Ok(0)
        }
    }
}
