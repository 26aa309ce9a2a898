//! Restore drills, per job kind: restore a backup into a scratch place through the same restore
//! code `drctl restore` uses, then check what came back against what the manifest says.
//!
//! Why: a backup nobody has restored is a hope. A drill proves the stored bytes are intact (the
//! restore checks the stored sha256 before anything is decrypted, and the plaintext sha256 before a
//! consumer may commit), that the identity opens them, and that the data is what the source held:
//! table row counts (postgres), keys per database (redis), every file's size and hash (volume),
//! the snapshot's own SHA256SUMS (vault), the archive's layout and the secrets (gitlab).
//!
//! How the types fit: [`crate::engine::verify`] picks the backup, creates a [`ScratchDir`] and a
//! [`Drill`], and calls the kind's `drill` function here. A kind module restores through
//! [`Drill::restore`] (which records the measured restore time and turns a failed restore into a
//! finding) and reports every mismatch as a [`Finding`]: findings are data, the caller decides the
//! exit code. A drill never writes to the job's own source: every restore goes to `--to` a scratch
//! destination or to a file in the scratch directory.

pub mod gitlab;
pub mod postgres;
pub mod redis;
pub mod vault;
pub mod volume;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::catalog::Selector;
use crate::config::JobConfig;
use crate::engine::Engine;
use crate::engine::restore::{Output, RestoreReport, RestoreRequest, restore};
use crate::jobs::RestoreOptions;
use crate::manifest::Manifest;

/// How bad a finding is. Any `error` fails the drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One thing a drill found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    /// What it is about: an artifact, a table, a file, a check.
    pub subject: String,
    pub message: String,
    /// The next step, when there is one worth saying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
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

/// Most mismatches listed one by one for a single comparison (files, tables); the rest are counted.
pub const MAX_LISTED: usize = 50;

/// A temporary directory for one drill, removed (with everything in it) when dropped. It is
/// traversable by other users (0711) so that an ephemeral PostgreSQL cluster running as
/// `postgres` can live below it; what is inside is created private.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// A new directory under `$DRCTL_SCRATCH_DIR`, else the system temp dir.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new() -> std::io::Result<ScratchDir> {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::var_os("DRCTL_SCRATCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base)?;
        let mut tries = 0;
        loop {
            let path = base.join(format!("drctl-verify-{}-{}", std::process::id(), crate::layout::random_suffix()));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o711))?;
                    return Ok(ScratchDir { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the drill's scratch directory");
        }
    }
}

/// One drill in progress: what it is about, and what it found so far.
pub struct Drill<'a> {
    pub engine: &'a Engine,
    pub job: &'a JobConfig,
    pub manifest: &'a Manifest,
    pub scratch: &'a ScratchDir,
    pub findings: Vec<Finding>,
    /// Wall time spent restoring (and, where the kind needs it, loading) the data: the RTO.
    pub restore_seconds: f64,
    /// Plaintext bytes restored.
    pub restored_bytes: u64,
    /// Where the data went, for the report.
    pub destinations: Vec<String>,
}

impl<'a> Drill<'a> {
    pub fn new(engine: &'a Engine, job: &'a JobConfig, manifest: &'a Manifest, scratch: &'a ScratchDir) -> Self {
        Drill {
            engine,
            job,
            manifest,
            scratch,
            findings: Vec::new(),
            restore_seconds: 0.0,
            restored_bytes: 0,
            destinations: Vec::new(),
        }
    }

    pub fn push(&mut self, severity: Severity, subject: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            subject: subject.into(),
            message: crate::redact::scrub(&message.into()),
            hint: None,
        });
    }

    pub fn error(&mut self, subject: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, subject, message);
    }

    pub fn warn(&mut self, subject: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, subject, message);
    }

    pub fn info(&mut self, subject: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Info, subject, message);
    }

    /// Attach a hint to the last finding.
    pub fn hint(&mut self, hint: impl Into<String>) {
        if let Some(f) = self.findings.last_mut() {
            f.hint = Some(crate::redact::scrub(&hint.into()));
        }
    }

    /// Whether an error was found.
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// Restore `artifact` of the drilled backup through the real restore code: to `options.to`
    /// (a scratch server or directory, never the source) or into `output` (a file in the scratch
    /// directory). The stored sha256 is checked before anything is decrypted. Adds the restore's
    /// wall time to [`Drill::restore_seconds`]; a failure becomes an error finding (with the
    /// error's hint) and `None`.
    pub async fn restore(
        &mut self,
        artifact: &str,
        options: RestoreOptions,
        output: Option<PathBuf>,
    ) -> Option<RestoreReport> {
        debug_assert!(options.to.is_some() || options.to_dir.is_some() || output.is_some(), "never the source");
        if options.to.is_none() && options.to_dir.is_none() && output.is_none() {
            self.error(format!("artifact `{artifact}`"), "internal: a drill restore without a scratch destination");
            return None;
        }
        let req = RestoreRequest {
            selector: Some(Selector::Id(self.manifest.backup_id.clone())),
            output: output.map(Output::File),
            options: RestoreOptions { force: true, ..options },
            dry_run: false,
            artifact: Some(artifact.to_string()),
            target: None,
            globals: false,
        };
        let clock = Instant::now();
        let result = restore(self.engine, &self.job.name, &req).await;
        self.restore_seconds += clock.elapsed().as_secs_f64();
        match result {
            Ok(r) => {
                self.restored_bytes += r.plaintext_bytes;
                for s in &r.steps {
                    self.destinations.push(format!("{} → {}", s.artifact, s.destination));
                }
                Some(r)
            }
            Err(e) => {
                self.error(format!("artifact `{artifact}`"), format!("restore failed: {e}"));
                if let Some(h) = e.hint() {
                    self.hint(h);
                }
                None
            }
        }
    }

    /// Add the time spent making restored data usable (a server loading it) to the restore time.
    pub fn add_restore_time(&mut self, since: Instant) {
        self.restore_seconds += since.elapsed().as_secs_f64();
    }

    /// Record a list of mismatches about one comparison: the first [`MAX_LISTED`] one by one, the
    /// rest as a count.
    pub fn mismatches(&mut self, severity: Severity, items: Vec<(String, String)>, what: &str) {
        let n = items.len();
        for (subject, message) in items.into_iter().take(MAX_LISTED) {
            self.push(severity, subject, message);
        }
        if n > MAX_LISTED {
            self.push(severity, what.to_string(), format!("{} more mismatches not listed", n - MAX_LISTED));
        }
    }
}

/// Why a just-committed backup looks suspicious, if it does: it is empty (no bytes; postgres: no
/// table in any database; redis: no key; volume: no file), or its plaintext size fell by more than
/// `drop` (a fraction, 0..=1) against the median of `recent` (the job's previous committed
/// backups' sizes). Pure.
pub fn suspicious(kind: &str, facts: &serde_json::Value, size: u64, recent: &[u64], drop: f64) -> Option<String> {
    if size == 0 {
        return Some("empty: the source produced no data".into());
    }
    let empty = match kind {
        "postgres" => facts["databases"]
            .as_array()
            .is_some_and(|dbs| !dbs.is_empty() && dbs.iter().all(|d| d["table_count"].as_u64() == Some(0)))
            .then_some("empty: no table in any database"),
        "redis" => (facts["keys"].as_u64() == Some(0)).then_some("empty: no key in any database"),
        "volume" => (facts["file_count"].as_u64() == Some(0)).then_some("empty: no file"),
        _ => None,
    };
    if let Some(e) = empty {
        return Some(e.into());
    }
    if recent.is_empty() || drop >= 1.0 {
        return None;
    }
    let mut sorted = recent.to_vec();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let floor = median as f64 * (1.0 - drop.max(0.0));
    (median > 0 && (size as f64) < floor).then(|| {
        format!(
            "source size fell by {:.0} %: {size} bytes, the median of the last {} backups is {median}",
            (1.0 - size as f64 / median as f64) * 100.0,
            recent.len()
        )
    })
}

/// Run `program args…` and wait; returns the exit status and the last lines of its output.
pub(crate) async fn run_tool(program: &Path, args: &[String], as_user: Option<&str>) -> Result<(bool, String), String> {
    let mut cmd = match as_user {
        Some(user) => {
            let mut c = tokio::process::Command::new("runuser");
            c.arg("-u").arg(user).arg("--").arg(program);
            c
        }
        None => tokio::process::Command::new(program),
    };
    cmd.args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = cmd.output().await.map_err(|e| format!("cannot run `{}`: {e}", program.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), tail(&text)))
}

/// The last few non-empty lines of a tool's output, ` / `-joined.
pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "no output".into();
    }
    crate::redact::scrub(&lines[lines.len().saturating_sub(6)..].join(" / "))
}

/// A free TCP port on 127.0.0.1 (free when asked: callers retry when it was taken meanwhile).
pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_dir_is_removed_on_drop() {
        let d = ScratchDir::new().unwrap();
        let p = d.path().to_path_buf();
        std::fs::write(d.join("x"), b"1").unwrap();
        assert!(p.is_dir());
        drop(d);
        assert!(!p.exists());
    }

    #[test]
    fn suspicious_table() {
        let none = serde_json::json!({});
        type Case = (&'static str, serde_json::Value, u64, Vec<u64>, f64, bool);
        let cases: Vec<Case> = vec![
            ("first backup", none.clone(), 100, vec![], 0.5, false),
            ("zero bytes", none.clone(), 0, vec![100], 0.5, true),
            ("same size", none.clone(), 100, vec![100, 90, 110], 0.5, false),
            ("fell by 40 %", none.clone(), 60, vec![100, 100, 100], 0.5, false),
            ("fell by 60 %", none.clone(), 40, vec![100, 100, 100], 0.5, true),
            ("fell by 40 % with drop 0.3", none.clone(), 60, vec![100], 0.3, true),
            ("median ignores one outlier", none.clone(), 60, vec![100, 1000, 100], 0.5, false),
            ("drop 1 disables", none.clone(), 1, vec![100], 1.0, false),
            ("grew", none.clone(), 500, vec![100], 0.5, false),
        ];
        for (name, facts, size, recent, drop, want) in cases {
            assert_eq!(suspicious("vault", &facts, size, &recent, drop).is_some(), want, "{name}");
        }
        let pg = serde_json::json!({"databases": [{"table_count": 0}, {"table_count": 0}]});
        assert!(suspicious("postgres", &pg, 5000, &[], 0.5).unwrap().contains("no table"));
        let pg = serde_json::json!({"databases": [{"table_count": 0}, {"table_count": 2}]});
        assert!(suspicious("postgres", &pg, 5000, &[], 0.5).is_none());
        assert!(suspicious("redis", &serde_json::json!({"keys": 0}), 90, &[], 0.5).is_some());
        assert!(suspicious("volume", &serde_json::json!({"file_count": 0}), 1024, &[], 0.5).is_some());
        assert!(suspicious("volume", &serde_json::json!({"file_count": 3}), 1024, &[], 0.5).is_none());
    }

    #[test]
    fn findings_render_and_tail_scrubs() {
        let f = Finding { severity: Severity::Error, subject: "table `users`".into(), message: "m".into(), hint: None };
        assert_eq!(f.to_string(), "error: table `users`: m");
        assert_eq!(tail("a\n\nb\n"), "a / b");
        assert_eq!(tail(""), "no output");
    }
}
