//! The overall deadline of `drctl check`: every target operation has its own deadlines
//! (`timeouts` on the target; each probe is bounded as a whole, see `Target::probe`), and the
//! whole check has one on top ([`overall`]), so `check` always returns, with a finding that says
//! what did not answer.

use std::time::Duration;

use serde_json::json;

use super::Printer;
use crate::Error;
use crate::engine::Engine;
use crate::finding::{Finding, Severity};

/// A minute for the sources and the catalog, plus twice each target's probe deadline (the probe,
/// then the listing for 3-2-1).
fn overall(engine: &Engine) -> Duration {
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

/// `drctl check` ([`super::check::run`]) within [`overall`]; past it, one failed finding.
pub async fn run(engine: &Engine, args: &super::check::Args, printer: &Printer) -> Result<i32, Error> {
    if args.read_data {
        // reading every stored byte takes as long as it takes; each operation keeps its deadlines
        return super::check::run(engine, args, printer).await;
    }
    let limit = overall(engine);
    match tokio::time::timeout(limit, super::check::run(engine, args, printer)).await {
        Ok(r) => r,
        Err(_) => {
            let names: Vec<String> = engine.config.targets.keys().map(|t| format!("`{t}`")).collect();
            let f = Finding::new(
                "check",
                Severity::Error,
                format!(
                    "did not finish within {} (a target or source stopped answering; targets: {})",
                    humantime::format_duration(limit),
                    names.join(", ")
                ),
                Some("run `drctl -v check` to see which operation waits; `timeouts` on a target bounds it".into()),
            );
            if printer.json {
                printer.json(&json!({ "ok": false, "findings": [f.check_json()] }));
            } else {
                println!("FAIL  {}: {}", f.subject, f.message);
                if let Some(h) = &f.hint {
                    println!("      hint: {h}");
                }
            }
            Ok(1)
        }
    }
}
