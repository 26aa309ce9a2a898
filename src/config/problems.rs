//! The problem list with file:line: every config problem found is collected (not the first only)
//! with the file and line of the key it is about. A leaf: the loader, the shared validation and
//! each job and target kind's own validation report through it.

use std::path::PathBuf;

use serde::Serialize;

use super::locate::{self, Step};

/// A problem found in the configuration, with where it is.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when the key could be located.
    pub line: Option<usize>,
    /// Dotted path of the key, e.g. `jobs.postgres.targets[1]`.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {sev}: `{}`: {}", self.path, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// A parsed file and where its keys sit in the logical config (`jobs/pg.toml` is `jobs.pg`).
pub(crate) struct Source {
    pub file: PathBuf,
    pub text: String,
    pub prefix: Vec<Step>,
}

/// Collects problems with their location.
#[derive(Default)]
pub(crate) struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn push(
        &mut self,
        sev: Severity,
        src: &Source,
        path: &[Step],
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let in_file = path.strip_prefix(src.prefix.as_slice()).unwrap_or(path);
        let line = locate::line_of(&src.text, in_file);
        self.0.push(Problem {
            severity: sev,
            file: src.file.clone(),
            line,
            path: locate::render(path),
            message: crate::redact::scrub(&message.into()),
            hint,
        });
    }
    pub fn error(&mut self, src: &Source, path: &[Step], message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Error, src, path, message, hint)
    }
    pub fn warn(&mut self, src: &Source, path: &[Step], message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Warning, src, path, message, hint)
    }
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|p| p.severity == Severity::Error)
    }
}

pub(crate) fn key(s: &str) -> Step {
    Step::Key(s.to_string())
}

/// A config section (a job, a target) as the place its own validation reports against.
pub(crate) struct Section<'a> {
    pub src: &'a Source,
    pub path: Vec<Step>,
}

impl Section<'_> {
    /// The logical path of `field` in this section.
    pub fn at(&self, field: &str) -> Vec<Step> {
        let mut p = self.path.clone();
        p.push(key(field));
        p
    }

    /// The logical path of `field` of table `table` in this section.
    pub fn nested(&self, table: &str, field: &str) -> Vec<Step> {
        let mut p = self.at(table);
        p.push(key(field));
        p
    }

    /// The logical path of item `i` of list `field` in this section.
    pub fn item(&self, field: &str, i: usize) -> Vec<Step> {
        let mut p = self.at(field);
        p.push(Step::Index(i));
        p
    }
}
