//! `drctl check`

use serde_json::json;

use super::Printer;
use crate::Error;
use crate::config::Severity;
use crate::engine::Engine;
use crate::engine::check::{Finding, Status, check};

pub async fn run(engine: &Engine, printer: &Printer) -> Result<i32, Error> {
    let (secret_findings, secret_errors) = secret_file_findings(engine);
    let mut findings = check(engine).await;
    // the load-time warning about a missing secret file is replaced by its error below
    let missing = &engine.config.missing_secret_files;
    findings
        .retain(|f| !(f.subject == "config" && missing.iter().any(|p| f.message.contains(&format!("`{}`: ", p.path)))));
    let at = findings.iter().position(|f| f.subject != "config").unwrap_or(findings.len());
    findings.splice(at..at, secret_findings);
    let ok = findings.iter().all(|f| f.status != Status::Failed);
    if printer.json {
        printer.json(&json!({ "ok": ok, "findings": findings }));
    } else {
        for f in &findings {
            let tag = match f.status {
                Status::Ok => "ok",
                Status::Warning => "warn",
                Status::Failed => "FAIL",
            };
            println!("{tag:<5} {}: {}", f.subject, f.message);
            if let (Some(h), true) = (&f.hint, f.status != Status::Ok) {
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
            Finding {
                subject: "config".into(),
                status: if failed { Status::Failed } else { Status::Warning },
                // the hint goes on its own line
                message: crate::redact::scrub(&crate::config::Problem { hint: None, ..p.clone() }.to_string()),
                hint: p.hint.clone(),
                detail: None,
            }
        })
        .collect();
    (findings, errors)
}
