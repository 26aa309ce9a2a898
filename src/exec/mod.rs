//! Where a job's commands run: on this host, in a Docker container, or in a Kubernetes pod.
//!
//! A job reaches its workload in one of three ways ([`crate::exec::ExecConfig`]): `local` (a
//! child process), `docker` (`docker exec -i CONTAINER …`, as on a Swarm node with the engine
//! socket mounted) or `kubernetes` (pod exec through the API server with the kube crate). All three
//! look the same to a job kind: a [`Remote`] with a streamed stdout, an optional streamed stdin,
//! and a completion that says how the command ended and what it wrote to stderr. Nothing is
//! buffered whole: stdout is read by the pipeline as it comes, stderr keeps only a bounded tail.

mod config;
pub use config::{ExecConfig, KubernetesExec};

pub mod pod;
pub mod process;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

pub use process::{Cmd, Running, describe_status};

/// Program used for `exec = { docker = … }`; `DRCTL_DOCKER` overrides it (tests point it at a
/// stand-in, since no Docker engine runs on CI machines).
pub fn docker_program() -> String {
    std::env::var("DRCTL_DOCKER").unwrap_or_else(|_| "docker".into())
}

/// Why a command could not be run or did not succeed where it ran.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExecError {
    pub message: String,
    pub hint: Option<String>,
}

impl ExecError {
    pub fn new(message: impl Into<String>, hint: Option<String>) -> Self {
        ExecError { message: message.into(), hint }
    }
    /// Into the crate error for `job`.
    pub fn for_job(self, job: &str) -> crate::Error {
        crate::Error::source_failed(job, self.message, self.hint)
    }
}

/// How a command ended.
#[derive(Debug, Clone)]
pub struct Finished {
    pub success: bool,
    /// `exit code 3`, `killed by signal 9`, or the API server's reason.
    pub status: String,
    /// The scrubbed tail of stderr.
    pub stderr: String,
}

impl Finished {
    /// `Ok(())` on success, else an error naming the command, where it ran, the status and stderr.
    pub fn check(&self, what: &str, place: &Place) -> Result<(), ExecError> {
        if self.success {
            return Ok(());
        }
        let mut message = format!("`{what}` failed {} ({})", place.at(), self.status);
        if !self.stderr.is_empty() {
            message.push_str(": ");
            message.push_str(&self.stderr);
        }
        Err(ExecError::new(message, None))
    }
}

type Done = Pin<Box<dyn Future<Output = Result<Finished, ExecError>> + Send>>;

/// A command running somewhere. Dropping it stops the command (kills the child, closes the exec
/// stream).
pub struct Remote {
    /// Present when spawned with stdin; drop or shut it down to send end of input.
    pub stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    done: Done,
}

impl Remote {
    /// Wait for the command to end (after stdout was read to its end).
    pub async fn wait(self) -> Result<Finished, ExecError> {
        self.done.await
    }
}

/// A place where commands run, resolved from a job's `exec`.
#[derive(Clone)]
pub enum Place {
    Local,
    Docker { container: String },
    Kubernetes(pod::Pod),
}

impl std::fmt::Debug for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Place {
    /// Resolve `exec`: for Kubernetes, connect to the API server and find the pod.
    pub async fn resolve(cfg: &ExecConfig) -> Result<Place, ExecError> {
        Ok(match cfg {
            ExecConfig::Local => Place::Local,
            ExecConfig::Docker(container) => Place::Docker { container: container.clone() },
            ExecConfig::Kubernetes(k) => Place::Kubernetes(pod::Pod::find(k).await?),
        })
    }

    /// `this host`, `docker container redis`, `pod cache/redis-0 (container redis)`.
    pub fn describe(&self) -> String {
        match self {
            Place::Local => "this host".into(),
            Place::Docker { container } => format!("docker container `{container}`"),
            Place::Kubernetes(p) => p.describe(),
        }
    }

    /// `on this host`, `in docker container `redis``, `in pod …`: for messages.
    pub fn at(&self) -> String {
        match self {
            Place::Local => "on this host".into(),
            _ => format!("in {}", self.describe()),
        }
    }

    /// Start `argv` (no shell unless argv says so). With `stdin`, [`Remote::stdin`] is the
    /// command's standard input; otherwise it reads nothing.
    pub async fn spawn(&self, argv: &[String], stdin: bool) -> Result<Remote, ExecError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(ExecError::new("empty command", None));
        };
        let cmd = match self {
            Place::Local => args.iter().fold(Cmd::new(program), |c, a| c.arg(a)),
            Place::Docker { container } => {
                let c = Cmd::new(docker_program()).arg("exec").arg(if stdin { "-i" } else { "--interactive=false" });
                argv.iter().fold(c.arg(container), |c, a| c.arg(a))
            }
            Place::Kubernetes(p) => return p.spawn(argv, stdin).await,
        };
        let shown = cmd.display();
        let stdin_cfg = if stdin { Stdio::piped() } else { Stdio::null() };
        let mut running = cmd.spawn(stdin_cfg, Stdio::piped()).map_err(|e| {
            let hint = match (self, e.kind()) {
                (Place::Docker { .. }, std::io::ErrorKind::NotFound) => Some(
                    "install the docker CLI (package docker-ce-cli or docker.io) and mount the engine socket".into(),
                ),
                _ => None,
            };
            ExecError::new(format!("cannot start `{shown}`: {e}"), hint)
        })?;
        let stdout = running.child.stdout.take().ok_or_else(|| ExecError::new("no stdout pipe", None))?;
        let stdin_w = running.child.stdin.take().map(|w| Box::new(w) as Box<dyn AsyncWrite + Send + Unpin>);
        // `docker exec` exits 125/126/127 for its own failures (no such container, not executable,
        // not found) and stderr says which: both reach the message unchanged
        let done: Done = Box::pin(async move {
            let (status, stderr) =
                running.wait().await.map_err(|e| ExecError::new(format!("waiting for `{shown}`: {e}"), None))?;
            Ok(Finished { success: status.success(), status: describe_status(&status), stderr })
        });
        Ok(Remote { stdin: stdin_w, stdout: Box::new(stdout), done })
    }

    /// Run a short command to completion and return its stdout (at most `limit` bytes kept).
    pub async fn output(&self, argv: &[String], limit: usize) -> Result<(Finished, String), ExecError> {
        let mut remote = self.spawn(argv, false).await?;
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = remote
                .stdout
                .read(&mut buf)
                .await
                .map_err(|e| ExecError::new(format!("reading the output of `{}`: {e}", argv.join(" ")), None))?;
            if n == 0 {
                break;
            }
            if out.len() < limit {
                out.extend_from_slice(&buf[..n.min(limit - out.len())]);
            }
        }
        let finished = remote.wait().await?;
        Ok((finished, String::from_utf8_lossy(&out).into_owned()))
    }

    /// Run a short command that must succeed; returns its stdout.
    pub async fn run(&self, argv: &[String]) -> Result<String, ExecError> {
        let (finished, out) = self.output(argv, 1 << 20).await?;
        finished.check(&argv.join(" "), self)?;
        Ok(out)
    }

    /// Stream a file's bytes out (`cat -- PATH` where the place is).
    pub async fn read_file(&self, path: &Path) -> Result<Remote, ExecError> {
        match self {
            // read directly: no child process for a local file
            Place::Local => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| ExecError::new(format!("cannot open `{}` on this host: {e}", path.display()), None))?;
                Ok(Remote { stdin: None, stdout: Box::new(file), done: Box::pin(async { Ok(ok_local()) }) })
            }
            _ => self.spawn(&argv(&["cat", "--", &path.to_string_lossy()]), false).await,
        }
    }
}

fn ok_local() -> Finished {
    Finished { success: true, status: "exit code 0".into(), stderr: String::new() }
}

/// `["a", "b"]` as owned strings.
pub fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// Quote one word for `sh -c` (single quotes; `'` as `'\''`).
pub fn sh_quote(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+%".contains(&b)) {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_quote_plain_and_tricky() {
        assert_eq!(sh_quote("/var/opt/gitlab/backups"), "/var/opt/gitlab/backups");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[tokio::test]
    async fn local_spawn_streams_and_reports_failure() {
        let place = Place::Local;
        let out = place.run(&argv(&["sh", "-c", "printf hello"])).await.unwrap();
        assert_eq!(out, "hello");
        let (f, _) = place.output(&argv(&["sh", "-c", "echo oops >&2; exit 3"]), 100).await.unwrap();
        assert!(!f.success);
        assert_eq!(f.status, "exit code 3");
        assert_eq!(f.stderr, "oops");
        let err = f.check("thing", &place).unwrap_err();
        assert!(err.message.contains("`thing` failed on this host (exit code 3): oops"), "{}", err.message);
    }

    #[tokio::test]
    async fn local_stdin_roundtrip() {
        use tokio::io::AsyncWriteExt;
        let mut r = Place::Local.spawn(&argv(&["cat"]), true).await.unwrap();
        let mut w = r.stdin.take().unwrap();
        let writer = tokio::spawn(async move {
            w.write_all(&vec![7u8; 3 << 20]).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        r.stdout.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), 3 << 20);
        assert!(r.wait().await.unwrap().success);
    }
}
