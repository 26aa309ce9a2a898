//! What a kind's drill works with: the [`Drill`] in progress (the backup it is about, already
//! resolved, and the findings so far), its [`ScratchDir`], and the small tools drills share.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::catalog::Selector;
use crate::engine::Engine;
use crate::engine::restore::{Output, RestoreReport, RestoreRequest, restore_resolved};
use crate::finding::{Finding, Severity};
use crate::jobs::JobConfig;
use crate::jobs::RestoreOptions;
use crate::manifest::Manifest;

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
    /// The drilled backup, resolved once by the drill flow.
    pub manifest: &'a Manifest,
    /// The targets holding it (where its restores read from).
    pub holders: &'a [String],
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
    pub fn new(
        engine: &'a Engine,
        job: &'a JobConfig,
        manifest: &'a Manifest,
        holders: &'a [String],
        scratch: &'a ScratchDir,
    ) -> Self {
        Drill {
            engine,
            job,
            manifest,
            holders,
            scratch,
            findings: Vec::new(),
            restore_seconds: 0.0,
            restored_bytes: 0,
            destinations: Vec::new(),
        }
    }

    pub fn push(&mut self, severity: Severity, subject: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding::new(subject, severity, message, None));
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
        let result = restore_resolved(self.engine, &self.job.name, self.manifest, self.holders, &req, clock).await;
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
    Ok((out.status.success(), crate::tool_output::tail(&text, 6, "no output")))
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
    fn findings_render_and_tail_scrubs() {
        let f = Finding::new("table `users`", Severity::Error, "m", None);
        assert_eq!(f.to_string(), "error: table `users`: m");
    }
}
