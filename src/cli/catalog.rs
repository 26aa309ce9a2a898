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
                if let Some(aside) = &report.moved_aside {
                    eprintln!(
                        "warning: the catalog file was damaged (not a database): moved aside to `{}`; a new one was built from the targets",
                        aside.display()
                    );
                }
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
