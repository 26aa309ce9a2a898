//! Error policy for the whole library.
//!
//! * Every error names what it is about (job, target, object key, file) and, where a user can do
//!   something about it, carries a hint with the next step (`hint()`).
//! * Errors say whether retrying can help ([`Error::is_transient`]): network faults and 5xx answers
//!   are transient, bad credentials, missing objects and corrupt data are not.
//! * No catch-all `Message(String)`: a new failure mode gets its own variant, and code that must
//!   tell failures apart matches on a variant or a kind ([`FailureKind`], [`SourceFailure`]), never
//!   on message text. A job kind reports a failure at its source through one constructor,
//!   [`Error::source_failed`].
//! * Secrets never enter an error: URLs are stripped of passwords with [`crate::redact`] before they
//!   are put in a message, and child-process output is passed through [`crate::redact::scrub`].
//! * The CLI maps errors to exit codes with [`Error::exit_code`]: 2 for usage/configuration, 1 for a
//!   failed operation. Partial success (exit 3) is not an error but an outcome, and an interrupt
//!   (Ctrl-C, SIGINT) ends a command with 130: the operation is dropped where it stands and nothing
//!   of it is committed (a backup is committed by its manifest, written last); neither is an
//!   [`Error`]. The daemon handles SIGINT/SIGTERM itself and drains its runs first.

use std::path::PathBuf;

use crate::config::problems::{Problem, Severity};

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How an object-store failure should be treated by callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The object or bucket does not exist.
    NotFound,
    /// A retry may succeed: connection reset, timeout, 5xx, throttling.
    Transient,
    /// A retry will not help: bad credentials, permission denied, invalid request.
    Permanent,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration is invalid: {}", problems_summary(.0))]
    Config(Vec<Problem>),

    #[error("cannot read `{path}`: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write `{path}`: {source}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("unknown job `{job}`")]
    UnknownJob { job: String, known: Vec<String> },

    #[error("target `{target}`: {op} `{key}` failed ({kind:?}): {message}")]
    Target {
        target: String,
        op: &'static str,
        key: String,
        kind: FailureKind,
        message: String,
        /// The next step, from what the target said (decided where the failure is understood).
        hint: String,
    },

    #[error("job `{job}`: {message}")]
    Source { job: String, kind: SourceFailure, message: String, hint: Option<String> },

    #[error("job `{job}`: `{tool}` version {tool_version} is older than the server's {server_version}")]
    ToolTooOld { job: String, tool: String, tool_version: String, server_version: String },

    #[error("pipeline: {0}")]
    Pipeline(String),

    #[error("integrity check failed for `{key}` on target `{target}`: {what}")]
    Integrity { target: String, key: String, what: String },

    #[error("cannot decrypt backup `{backup}`: {message}")]
    Decrypt { backup: String, message: String },

    #[error("encryption: {0}")]
    Encryption(String),

    #[error("catalog `{url}`: {source}")]
    Catalog {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    #[error("catalog migration: {0}")]
    Migration(String),

    #[error("manifest `{key}`: {message}")]
    Manifest { key: String, message: String },

    #[error("job `{job}`: no backup matches {selector}")]
    NoBackup { job: String, selector: String },

    #[error("job `{job}`: destination {destination} is not empty ({detail})")]
    DestinationNotEmpty { job: String, destination: String, detail: String },

    #[error("job `{job}`: restore into {destination} failed: {message}")]
    Restore { job: String, destination: String, message: String },

    #[error("job `{job}`: no target accepted the backup: {}", .failures.join("; "))]
    AllTargetsFailed { job: String, failures: Vec<String> },

    /// A command-line value drctl cannot read (`--before yesterday-ish`): a usage error (exit 2),
    /// not a problem in the configuration.
    #[error("{flag} `{value}`: {message}")]
    Usage { flag: String, value: String, message: String, hint: String },

    /// `--id` matched the end of several backup ids: the user has to say which one.
    #[error("job `{job}`: `--id {id}` matches {} backups: {}", .candidates.len(), .candidates.join(", "))]
    AmbiguousId { job: String, id: String, candidates: Vec<String> },
}

fn problems_summary(problems: &[Problem]) -> String {
    let errors = problems.iter().filter(|p| p.severity == Severity::Error).count();
    let warnings = problems.len() - errors;
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    match warnings {
        0 => plural(errors, "error"),
        w => format!("{} (and {})", plural(errors, "error"), plural(w, "warning")),
    }
}

/// What went wrong at a job's source, for code that must tell cases apart: it matches on this,
/// never on the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFailure {
    /// Anything the caller has no different path for: the message says what.
    Failed,
    /// The database named does not exist (PostgreSQL `3D000`): a restore creates it.
    NoSuchDatabase,
}

impl Error {
    /// A target's answer that the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Target { kind: FailureKind::NotFound, .. })
    }

    /// A failure at job `job`'s source (its server, its tools, its files); the message is
    /// scrubbed of secrets. The one way a job kind reports one.
    pub fn source_failed(job: &str, message: impl Into<String>, hint: Option<String>) -> Error {
        Error::source_failed_as(job, SourceFailure::Failed, message, hint)
    }

    /// [`Error::source_failed`] of a kind the caller can match on.
    pub fn source_failed_as(job: &str, kind: SourceFailure, message: impl Into<String>, hint: Option<String>) -> Error {
        Error::Source { job: job.to_string(), kind, message: crate::redact::scrub(&message.into()), hint }
    }

    /// Exit code documented in the CLI contract: 2 for configuration/usage, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::UnknownJob { .. } | Error::Usage { .. } | Error::AmbiguousId { .. } => 2,
            _ => 1,
        }
    }

    /// Whether repeating the same operation may succeed without a change by the user.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Target { kind: FailureKind::Transient, .. })
    }

    /// The next step for the user, when there is one worth saying.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Config(_) => Some("fix the problems above; `drctl check` validates the config".into()),
            Error::UnknownJob { known, .. } => Some(if known.is_empty() {
                "no jobs are configured: add a [jobs.NAME] table or a jobs/NAME.toml file".into()
            } else {
                format!("configured jobs: {}", known.join(", "))
            }),
            Error::Target { hint, .. } => Some(hint.clone()),
            Error::Source { hint, .. } => hint.clone(),
            Error::ToolTooOld { tool, server_version, .. } => Some(format!(
                "install a `{tool}` of major version {} or newer (for Debian: postgresql-client-{}), or set `bin_dir` on the job",
                major(server_version),
                major(server_version)
            )),
            Error::Integrity { .. } => Some(
                "the stored copy is damaged: restore from another target with `--target`, and run `drctl sync` to replace it".into(),
            ),
            Error::Decrypt { .. } => Some(
                "check that `encryption.identity_file` holds the age identity matching one of the backup's recipients".into(),
            ),
            Error::NoBackup { job, .. } => Some(format!(
                "`drctl list {job}` shows known backups; on a fresh machine run `drctl catalog rebuild` first"
            )),
            Error::DestinationNotEmpty { .. } => Some(
                "pass `--force` to replace the existing data, or restore elsewhere with `--to`".into(),
            ),
            Error::AllTargetsFailed { failures, .. } => Some(if failures.iter().any(|f| is_disk_full(f)) {
                "a target's disk is full (ENOSPC): free space there or keep fewer backups (`keep`, `drctl prune`), then run the job again".into()
            } else {
                "run `drctl check` to see which targets are reachable".into()
            }),
            Error::Catalog { source, .. } if catalog_file_damaged(source) => Some(
                "the catalog file is damaged: `drctl catalog rebuild` moves it aside and rebuilds it from the manifests on the targets".into(),
            ),
            Error::Catalog { .. } => Some("check `[catalog] url`; the catalog can be rebuilt with `drctl catalog rebuild`".into()),
            Error::Usage { hint, .. } => Some(hint.clone()),
            Error::AmbiguousId { job, .. } => {
                Some(format!("give more of the id (`drctl list {job}` shows them); a unique end of an id is enough"))
            }
            _ => None,
        }
    }
}

/// Whether a target failure's text says the disk is full (`ENOSPC`, `EDQUOT`).
fn is_disk_full(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("no space left on device") || m.contains("disk quota exceeded")
}

/// A SQLite catalog file that is not a database (garbage, truncated) or is corrupt: sqlite's
/// `SQLITE_NOTADB` (26) and `SQLITE_CORRUPT` (11), also in their extended forms.
pub fn catalog_file_damaged(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0);
            matches!(code & 0xff, 11 | 26)
        }
        _ => false,
    }
}

fn major(version: &str) -> String {
    version.split(['.', ' ']).next().unwrap_or(version).to_string()
}
