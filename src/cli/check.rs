//! `drctl check`

use serde_json::json;

use super::Printer;
use crate::Error;
use crate::config::Severity;
use crate::engine::Engine;
use crate::engine::check::check;
use crate::finding::{Finding, Severity as FindingSeverity};

#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Also read back every stored object of every committed backup on every target and prove it
    /// intact (sizes and hashes; packs of chunked storage by their BLAKE3 id), naming the backups a
    /// damaged or missing object damages. Needs no identity; takes as long as reading everything.
    #[arg(long)]
    pub read_data: bool,
    /// A setup that has made no backup yet (`drctl init` runs the check then): a job without any
    /// backup is a warning there, not a failure.
    #[arg(skip)]
    pub fresh: bool,
}

pub async fn run(engine: &Engine, args: &Args, printer: &Printer) -> Result<i32, Error> {
    let (secret_findings, secret_errors) = secret_file_findings(engine);
    let mut findings = check(engine).await;
    if args.read_data {
        findings.extend(crate::engine::read_data::read_data(engine).await);
    }
    // the load-time warning about a missing secret file is replaced by its error below
    let missing = &engine.config.missing_secret_files;
    findings
        .retain(|f| !(f.subject == "config" && missing.iter().any(|p| f.message.contains(&format!("`{}`: ", p.path)))));
    if args.fresh {
        for f in findings.iter_mut().filter(|f| f.hint.as_deref().is_some_and(|h| h.starts_with("no backup yet"))) {
            f.severity = FindingSeverity::Warning;
        }
    }
    let at = findings.iter().position(|f| f.subject != "config").unwrap_or(findings.len());
    findings.splice(at..at, secret_findings);
    let ok = !findings.iter().any(Finding::failed);
    if printer.json {
        let findings: Vec<_> = findings.iter().map(Finding::check_json).collect();
        printer.json(&json!({ "ok": ok, "findings": findings }));
    } else {
        for f in &findings {
            println!("{:<5} {}: {}", f.check_tag(), f.subject, f.message);
            if let (Some(h), true) = (&f.hint, f.severity != FindingSeverity::Info) {
                println!("      hint: {h}");
            }
        }
    }
    Ok(if secret_errors {
        2 // a configuration error, as everywhere else
    } else if ok {
        0
    } else {
        1
    })
}

/// Findings about the secret files: missing ones and a non-private age identity are
/// configuration errors (exit 2), world-readable ones warnings. Each names the file:line and key.
fn secret_file_findings(engine: &Engine) -> (Vec<Finding>, bool) {
    let cfg = &engine.config;
    let mut errors = false;
    let findings = cfg
        .missing_secret_files
        .iter()
        .chain(&cfg.secret_file_modes)
        .map(|p| {
            let failed = p.severity == Severity::Error;
            errors |= failed;
            Finding::new(
                "config",
                if failed { FindingSeverity::Error } else { FindingSeverity::Warning },
                // the hint goes on its own line
                crate::config::Problem { hint: None, ..p.clone() }.to_string(),
                p.hint.clone(),
            )
        })
        .collect();
    (findings, errors)
}
