//! Hooks on every job kind: `before`, `after` and `on_failure` commands (`sh -c`, on the host drctl
//! runs on) around a backup.
//!
//! * `before` hooks run in order once the source is prepared (reachable, its tools found), right
//!   before the backup reads it; the first failure fails the backup (nothing is committed).
//! * `after` hooks run once the `before` hooks started, whatever happened next (a failed `before`
//!   hook, a failed upload, an aborted run): what `before` paused, `after` resumes.
//!   `DRCTL_BACKUP_STATUS` says `committed` or `failed`.
//! * `on_failure` hooks run after a backup that failed at any point (also when the source could
//!   not be prepared), after the `after` hooks, with the error in `DRCTL_ERROR`.
//!
//! Every hook sees `DRCTL_JOB`, `DRCTL_KIND`, `DRCTL_BACKUP_ID` and what its kind adds (a volume
//! job: `DRCTL_VOLUME_PATH`). Its output (stdout and stderr, the last [`OUTPUT_LINES`] lines,
//! secrets scrubbed) is logged at info. A hook running longer than `hook_timeout` (default
//! [`DEFAULT_TIMEOUT`]) is killed with its whole process group and counts as failed. A failing
//! `after` or `on_failure` hook is a warning: the backup's outcome stands.

use std::time::Duration;

use crate::exec::describe_status;
use crate::jobs::JobConfig;
use crate::{Error, Result};

/// How long one hook command may run unless `hook_timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Lines of a hook's output kept for the log.
const OUTPUT_LINES: usize = 20;

/// The hooks of one backup run.
#[derive(Debug, Clone)]
pub struct Hooks {
    job: String,
    before: Vec<String>,
    after: Vec<String>,
    on_failure: Vec<String>,
    timeout: Duration,
    env: Vec<(String, String)>,
    /// `before` hooks were started: `after` hooks are due.
    started: bool,
}

impl Hooks {
    /// The hooks of `job` for backup `backup_id`.
    pub fn new(job: &JobConfig, backup_id: &str) -> Hooks {
        let c = &job.common;
        Hooks {
            job: job.name.clone(),
            before: c.before.clone(),
            after: c.after.clone(),
            on_failure: c.on_failure.clone(),
            timeout: c.hook_timeout(),
            env: vec![
                ("DRCTL_JOB".into(), job.name.clone()),
                ("DRCTL_KIND".into(), job.spec.kind_name().into()),
                ("DRCTL_BACKUP_ID".into(), backup_id.into()),
            ],
            started: false,
        }
    }

    /// Add what the kind tells its hooks (`DRCTL_VOLUME_PATH` …).
    pub fn with_env(mut self, extra: Vec<(&'static str, String)>) -> Hooks {
        self.env.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
        self
    }

    /// Run the `before` hooks; the first failure is the backup's error.
    ///
    /// # Errors
    /// A hook that failed, timed out or could not start.
    pub async fn before(&mut self) -> Result<()> {
        self.started = true;
        for (i, cmd) in self.before.iter().enumerate() {
            if let Err(e) = run(&self.job, "before", cmd, &self.env, self.timeout).await {
                return Err(Error::source_failed(
                    &self.job,
                    format!("before hook {} of {} {e}", i + 1, self.before.len()),
                    Some("nothing was committed and the `after` hooks ran; fix the hook and run the job again".into()),
                ));
            }
        }
        Ok(())
    }

    /// The run is over: `after` hooks (when `before` started), then `on_failure` hooks (when it
    /// failed, with `error`). Never fails: a failing hook is a warning.
    pub async fn finish(self, error: Option<&str>) {
        let status = if error.is_some() { "failed" } else { "committed" };
        if self.started {
            let mut env = self.env.clone();
            env.push(("DRCTL_BACKUP_STATUS".into(), status.into()));
            for cmd in &self.after {
                if let Err(e) = run(&self.job, "after", cmd, &env, self.timeout).await {
                    tracing::warn!(job = %self.job, "after hook {e}");
                }
            }
        }
        if let Some(error) = error {
            let mut env = self.env.clone();
            env.push(("DRCTL_BACKUP_STATUS".into(), status.into()));
            env.push(("DRCTL_ERROR".into(), crate::redact::scrub(error)));
            for cmd in &self.on_failure {
                if let Err(e) = run(&self.job, "on_failure", cmd, &env, self.timeout).await {
                    tracing::warn!(job = %self.job, "on_failure hook {e}");
                }
            }
        }
    }
}

/// Run one hook; `Err` says why it failed (for "… hook {e}").
async fn run(
    job: &str,
    which: &str,
    cmd: &str,
    env: &[(String, String)],
    timeout: Duration,
) -> std::result::Result<(), String> {
    use std::process::Stdio;
    let shown = crate::redact::scrub(cmd);
    tracing::info!(job = %job, hook = %shown, "running {which} hook");
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c").arg(cmd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // its own process group, so that a timeout kills what it started too
    c.process_group(0).kill_on_drop(true);
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c.spawn().map_err(|e| format!("cannot run `sh -c {shown}`: {e}"))?;
    let pgid = child.id();
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out.map_err(|e| format!("`{shown}` could not be waited for: {e}"))?,
        Err(_) => {
            if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) on a process group this process created; no memory is involved
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            return Err(format!(
                "`{shown}` did not finish within {} (`hook_timeout`): killed",
                humantime::format_duration(timeout)
            ));
        }
    };
    let text = crate::redact::scrub(
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)).trim(),
    );
    if !text.is_empty() {
        tracing::info!(job = %job, hook = %shown, output = %last_lines(&text, OUTPUT_LINES), "{which} hook output");
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{shown}` failed ({}): {}",
            describe_status(&out.status),
            crate::tool_output::tail(&text, 5, "no output")
        ))
    }
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> &str {
    match text.char_indices().rev().filter(|(_, c)| *c == '\n').nth(n.saturating_sub(1)) {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(last_lines("a\nb\nc", 5), "a\nb\nc");
        assert_eq!(last_lines("one", 1), "one");
    }
}
