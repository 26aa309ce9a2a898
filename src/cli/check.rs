//! `drctl check`

use serde_json::json;

use super::Printer;
use crate::Error;
use crate::engine::Engine;
use crate::engine::check::{Status, check};

pub async fn run(engine: &Engine, printer: &Printer) -> Result<i32, Error> {
    let findings = check(engine).await;
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
