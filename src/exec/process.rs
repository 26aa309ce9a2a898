//! Running the external tools a job needs (pg_dump, pg_restore, psql …) as child processes.
//!
//! Children are killed when their handle is dropped (a cancelled run leaves no orphan pg_dump),
//! secrets go through the environment rather than argv (argv is visible in `ps`), and stderr is
//! drained concurrently into a bounded tail so that a chatty tool can neither block on a full pipe
//! nor grow memory; the tail is scrubbed of secrets before it is shown.

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// Bytes of stderr kept for error messages.
const STDERR_TAIL: usize = 16 * 1024;

/// A command to run: program, arguments, extra environment.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Extra environment; values are never printed.
    pub env: Vec<(String, String)>,
}

impl Cmd {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Cmd { program: program.into(), args: Vec::new(), env: Vec::new() }
    }
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
    /// `program arg…` for messages (arguments never hold secrets).
    pub fn display(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        crate::redact::scrub(&s)
    }

    /// Spawn with the given stdin/stdout; stderr is always captured.
    pub fn spawn(&self, stdin: Stdio, stdout: Stdio) -> std::io::Result<Running> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).stdin(stdin).stdout(stdout).stderr(Stdio::piped()).kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        // bulk data flows through these pipes: 1 MiB instead of 64 KiB means 16x fewer wake-ups
        // of the tool and of drctl (best effort: the kernel may cap it)
        if let Some(stdin) = &child.stdin {
            widen_pipe(stdin.as_raw_fd());
        }
        if let Some(stdout) = &child.stdout {
            widen_pipe(stdout.as_raw_fd());
        }
        let stderr = child.stderr.take();
        let stderr_task = tokio::spawn(stderr_tail(stderr));
        Ok(Running { child, stderr_task, display: self.display() })
    }

    /// Run to completion, returning stdout (for short outputs like `--version`).
    pub async fn output(&self) -> std::io::Result<(ExitStatus, String, String)> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).stdin(Stdio::null()).kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().await?;
        Ok((
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            crate::redact::scrub(String::from_utf8_lossy(&out.stderr).trim()),
        ))
    }
}

/// A spawned child with its stderr being collected.
pub struct Running {
    pub child: Child,
    stderr_task: JoinHandle<String>,
    display: String,
}

impl Running {
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Wait for exit; returns the status and the (scrubbed) stderr tail.
    pub async fn wait(mut self) -> std::io::Result<(ExitStatus, String)> {
        let status = self.child.wait().await?;
        let stderr = self.stderr_task.await.unwrap_or_default();
        Ok((status, stderr))
    }

    /// Kill the child (e.g. to make pg_restore roll back) and reap it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
        self.stderr_task.abort();
    }
}

/// Drain a command's stderr to its end, keeping only the last [`STDERR_TAIL`] bytes, scrubbed of
/// secrets: a chatty tool can neither block on a full pipe nor grow memory.
pub async fn stderr_tail<R: tokio::io::AsyncRead + Unpin>(reader: Option<R>) -> String {
    let mut kept = Vec::new();
    if let Some(mut r) = reader {
        let mut buf = [0u8; 8192];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * STDERR_TAIL {
                kept.drain(..kept.len() - STDERR_TAIL);
            }
        }
    }
    if kept.len() > STDERR_TAIL {
        kept.drain(..kept.len() - STDERR_TAIL);
    }
    crate::redact::scrub(String::from_utf8_lossy(&kept).trim())
}

fn widen_pipe(fd: std::os::fd::RawFd) {
    // SAFETY: F_SETPIPE_SZ only changes the capacity of a pipe this process owns; failure is harmless
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_SIZE);
    }
}

/// Capacity asked for the pipes to and from tools (the default is 64 KiB).
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Describe an exit status for messages: `exit code 1`, `killed by signal 9`.
pub fn describe_status(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown exit status".into(),
    }
}
