//! A finding: one thing `drctl check` or a restore drill found (subject, severity, message, the
//! next step). Drill records store them on the targets (their JSON shape is an on-target format);
//! `drctl check` prints them, its `--json` in its own public shape ([`Finding::check_json`]).

use serde::{Deserialize, Serialize};

/// How bad a finding is. Any `error` fails the drill, or `drctl check` (exit 1). `drctl check`
/// calls them ok, warning and failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One thing a check or a drill found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    /// What it is about: an artifact, a table, a file; for `drctl check` what was checked
    /// (`config`, `target local`, `job postgres`, `3-2-1 postgres` …).
    pub subject: String,
    pub message: String,
    /// The next step, when there is one worth saying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Structured detail for automation (`drctl check`'s 3-2-1: copies, media, offsite, newest
    /// copy per target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl Finding {
    /// A finding with its message scrubbed of secrets.
    pub fn new(
        subject: impl Into<String>,
        severity: Severity,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Self {
        Finding {
            severity,
            subject: subject.into(),
            message: crate::redact::scrub(&message.into()),
            hint,
            detail: None,
        }
    }

    pub fn failed(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `drctl check --json`'s shape: `subject`, `status` (`ok`, `warning`, `failed`), `message`,
    /// `hint` (null when none), `detail` when there is one.
    pub fn check_json(&self) -> serde_json::Value {
        let status = match self.severity {
            Severity::Info => "ok",
            Severity::Warning => "warning",
            Severity::Error => "failed",
        };
        let mut v =
            serde_json::json!({"subject": self.subject, "status": status, "message": self.message, "hint": self.hint});
        if let Some(d) = &self.detail {
            v["detail"] = d.clone();
        }
        v
    }

    /// `drctl check`'s text tag.
    pub fn check_tag(&self) -> &'static str {
        match self.severity {
            Severity::Info => "ok",
            Severity::Warning => "warn",
            Severity::Error => "FAIL",
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{sev}: {}: {}", self.subject, self.message)
    }
}
