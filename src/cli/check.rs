//! `drctl check`
//!
//! Bounded: every target operation has its own deadlines (`timeouts` on the target, and each
//! probe is bounded, see `Target::probe`), and the whole check has an overall deadline on top
//! ([`overall_deadline`]), so `check` always returns, with a finding naming what did not answer.

use std::time::Duration;

use serde_json::json;

use super::Printer;
use crate::Error;
use crate::engine::Engine;
use crate::engine::check::{Finding, Status, check};

/// A minute for the sources and the catalog, plus twice each target's probe deadline (the probe,
/// then the listing for 3-2-1).
fn overall_deadline(engine: &Engine) -> Duration {
    let targets: Duration = engine
        .config
        .targets
        .values()
        .map(|t| {
            let d = t.deadlines();
            (d.connect + d.request.min(d.idle.saturating_mul(2))).saturating_mul(2)
        })
        .sum();
    Duration::from_secs(60) + targets
}

pub async fn run(engine: &Engine, printer: &Printer) -> Result<i32, Error> {
    let limit = overall_deadline(engine);
    let findings = match tokio::time::timeout(limit, check(engine)).await {
        Ok(f) => f,
        Err(_) => {
            let names: Vec<String> = engine.config.targets.keys().map(|t| format!("`{t}`")).collect();
            vec![Finding {
                subject: "check".into(),
                status: Status::Failed,
                message: format!(
                    "did not finish within {} (a target or source stopped answering; targets: {})",
                    humantime::format_duration(limit),
                    names.join(", ")
                ),
                hint: Some(
                    "run `drctl -v check` to see which operation waits; `timeouts` on a target bounds it".into(),
                ),
                detail: None,
            }]
        }
    };
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
    Ok(if ok { 0 } else { 1 })
}
