//! Rendering: human text on stderr/stdout or JSON on stdout, and error reporting.

use serde::Serialize;

use crate::Error;

pub struct Printer {
    pub json: bool,
    pub quiet: bool,
}

impl Printer {
    /// Print a value as pretty JSON on stdout.
    pub fn json<T: Serialize>(&self, value: &T) {
        match serde_json::to_string_pretty(value) {
            Ok(s) => println!("{}", crate::redact::scrub(&s)),
            Err(e) => eprintln!("drctl: cannot render JSON: {e}"),
        }
    }

    /// A human status line on stderr (suppressed by `-q`).
    pub fn note(&self, line: &str) {
        if !self.quiet {
            eprintln!("{}", crate::redact::scrub(line));
        }
    }

    /// Report an error once, with its hint; returns the exit code.
    pub fn error(&self, e: &Error) -> i32 {
        let code = e.exit_code();
        if let Error::Config(problems) = e {
            for p in problems {
                eprintln!("{}", crate::redact::scrub(&p.to_string()));
            }
        }
        eprintln!("drctl: {}", crate::redact::scrub(&e.to_string()));
        if let Some(h) = e.hint() {
            eprintln!("hint: {}", crate::redact::scrub(&h));
        }
        if self.json {
            let problems = match e {
                Error::Config(p) => serde_json::to_value(p).unwrap_or_default(),
                _ => serde_json::Value::Null,
            };
            self.json(&serde_json::json!({
                "error": {
                    "message": e.to_string(),
                    "hint": e.hint(),
                    "exit_code": code,
                    "transient": e.is_transient(),
                    "problems": problems,
                }
            }));
        }
        code
    }
}

pub use crate::units::bytes;
