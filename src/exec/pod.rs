//! Commands in a Kubernetes pod, through the API server's `pods/exec` (the kube crate).
//!
//! The exec stream multiplexes stdin, stdout, stderr and a final status over one WebSocket
//! (channel protocol v5, or v4 on old servers). stdout is handed to the pipeline as a reader with
//! a 1 MiB window (kube's default is 1 KiB: a wake-up per KiB), stderr is drained into a bounded
//! tail, and the exit status comes only from the status channel: a stream that ends without one
//! is a failure, never a success.
//!
//! Not exercised against a live cluster on CI (none can run there): the tests drive this code
//! against a stand-in API server that speaks the real HTTP upgrade and channel frames and runs the
//! command locally (tests/common/kubeapi.rs).

use k8s_openapi::api::core::v1::Pod as K8sPod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{AttachParams, ListParams};
use kube::{Api, Client};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::{ExecError, Finished, Remote};
use crate::exec::KubernetesExec;

/// Bytes of stdout/stdin kept in flight inside kube's pipes.
const WINDOW: usize = 1 << 20;

/// A pod (and container) to exec into.
#[derive(Clone)]
pub struct Pod {
    client: Client,
    namespace: String,
    name: String,
    container: Option<String>,
}

impl Pod {
    /// Connect (in-cluster service account, else `KUBECONFIG`/`~/.kube/config`) and find the pod.
    pub async fn find(cfg: &KubernetesExec) -> Result<Pod, ExecError> {
        let client = Client::try_default().await.map_err(|e| {
            ExecError::new(
                format!("cannot configure a Kubernetes client: {e}"),
                Some("in a pod, drctl uses its service account; elsewhere set KUBECONFIG".into()),
            )
        })?;
        Self::find_with(client, cfg).await
    }

    /// Find the pod with a given client: by name, or the first running pod (by name) that matches
    /// the label selector.
    pub async fn find_with(client: Client, cfg: &KubernetesExec) -> Result<Pod, ExecError> {
        let namespace = cfg.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
        let name = match (&cfg.pod, &cfg.selector) {
            (Some(pod), _) => pod.clone(),
            (None, Some(selector)) => {
                let api: Api<K8sPod> = Api::namespaced(client.clone(), &namespace);
                let list = api.list(&ListParams::default().labels(selector)).await.map_err(|e| {
                    api_error(e, &format!("cannot list pods matching `{selector}` in namespace `{namespace}`"))
                })?;
                let total = list.items.len();
                let mut running: Vec<String> = list
                    .items
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                    .filter_map(|p| p.metadata.name)
                    .collect();
                running.sort();
                match running.into_iter().next() {
                    Some(name) => name,
                    None => {
                        return Err(ExecError::new(
                            format!(
                                "no running pod in namespace `{namespace}` matches `{selector}` ({total} matched, none running)"
                            ),
                            Some(format!("kubectl -n {namespace} get pods -l {selector}")),
                        ));
                    }
                }
            }
            (None, None) => {
                return Err(ExecError::new(
                    "`exec.kubernetes` names neither `pod` nor `selector`",
                    Some("set `pod = \"name\"` or `selector = \"app=…\"`".into()),
                ));
            }
        };
        Ok(Pod { client, namespace, name, container: cfg.container.clone() })
    }

    /// `pod cache/redis-0 (container redis)`.
    pub fn describe(&self) -> String {
        let mut s = format!("pod {}/{}", self.namespace, self.name);
        if let Some(c) = &self.container {
            s.push_str(&format!(" (container {c})"));
        }
        s
    }

    pub async fn spawn(&self, argv: &[String], stdin: bool) -> Result<Remote, ExecError> {
        let api: Api<K8sPod> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut ap = AttachParams::default()
            .stdin(stdin)
            .stdout(true)
            .stderr(true)
            .max_stdout_buf_size(WINDOW)
            .max_stdin_buf_size(WINDOW);
        if let Some(c) = &self.container {
            ap = ap.container(c.clone());
        }
        let shown = crate::redact::scrub(&argv.join(" "));
        let mut process = api
            .exec(&self.name, argv.to_vec(), &ap)
            .await
            .map_err(|e| api_error(e, &format!("cannot exec `{shown}` in {}", self.describe())))?;
        let stdout = process.stdout().ok_or_else(|| ExecError::new("exec: no stdout stream", None))?;
        let stdin_w =
            if stdin { process.stdin().map(|w| Box::new(w) as Box<dyn AsyncWrite + Send + Unpin>) } else { None };
        let stderr = process.stderr();
        let status = process.take_status().ok_or_else(|| ExecError::new("exec: no status channel", None))?;
        // kube's stream task returns on a broken connection without closing the stdout/stderr
        // pipes, so their readers would wait forever: they end when the task has ended instead
        let ended = CancellationToken::new();
        let driver = {
            let ended = ended.clone();
            tokio::spawn(async move {
                let status = status.await;
                let _ = process.join().await;
                ended.cancel();
                status
            })
        };
        let stdout = UntilEnded::new(stdout, &ended);
        let stderr_task = tokio::spawn(super::process::stderr_tail(stderr.map(|e| UntilEnded::new(e, &ended))));
        let driver = AbortOnDrop(driver);
        let done = Box::pin(async move {
            let mut driver = driver;
            let status = (&mut driver.0).await.unwrap_or(None);
            let stderr = stderr_task.await.unwrap_or_default();
            Ok(finished(status, stderr))
        });
        Ok(Remote { stdin: stdin_w, stdout: Box::new(stdout) as Box<dyn AsyncRead + Send + Unpin>, done })
    }
}

/// Stops the exec stream (and so the command) when the [`Remote`] is dropped unfinished.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A pipe reader that reports end of input once the exec stream task has ended and the pipe is
/// drained, even when kube left the pipe open.
struct UntilEnded<R> {
    inner: R,
    ended: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl<R> UntilEnded<R> {
    fn new(inner: R, ended: &CancellationToken) -> Self {
        UntilEnded { inner, ended: Box::pin(ended.clone().cancelled_owned()), done: false }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for UntilEnded<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => Poll::Ready(r),
            // nothing buffered: if the stream task is gone, nothing more will come
            Poll::Pending if this.done || this.ended.as_mut().poll(cx).is_ready() => {
                this.done = true;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Read the status channel's verdict: `Success`, or a failure with the exit code when the
/// server gives one (`NonZeroExitCode` with an `ExitCode` cause).
pub(crate) fn finished(status: Option<Status>, stderr: String) -> Finished {
    let Some(status) = status else {
        return Finished {
            success: false,
            status: "the exec stream ended without an exit status (connection lost, or the pod went away)".into(),
            stderr,
        };
    };
    if status.status.as_deref() == Some("Success") {
        return Finished { success: true, status: "exit code 0".into(), stderr };
    }
    let code = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.clone());
    let text = match (code, status.message) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(m)) if !m.is_empty() => m,
        _ => status.reason.unwrap_or_else(|| "failed".into()),
    };
    Finished { success: false, status: crate::redact::scrub(&text), stderr }
}

fn api_error(e: kube::Error, what: &str) -> ExecError {
    let hint = match &e {
        kube::Error::Api(s) if s.code == 403 => Some(
            "drctl's service account needs `get`/`list` on `pods` and `create` on `pods/exec` (see deploy/kubernetes)"
                .into(),
        ),
        kube::Error::Api(s) if s.code == 404 => Some("check `namespace`, `pod`/`selector` and `container`".into()),
        _ => None,
    };
    ExecError::new(format!("{what}: {}", crate::redact::scrub(&e.to_string())), hint)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    use super::*;

    #[test]
    fn status_channel_verdicts() {
        let ok = Status { status: Some("Success".into()), ..Default::default() };
        assert!(finished(Some(ok), String::new()).success);
        let exit3 = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            message: Some("command terminated with non-zero exit code: exit code 3".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("3".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = finished(Some(exit3), "boom".into());
        assert!(!f.success);
        assert_eq!(f.status, "exit code 3");
        assert_eq!(f.stderr, "boom");
        let internal = Status {
            status: Some("Failure".into()),
            message: Some("container not found (\"redis\")".into()),
            ..Default::default()
        };
        assert_eq!(finished(Some(internal), String::new()).status, "container not found (\"redis\")");
        let lost = finished(None, String::new());
        assert!(!lost.success);
        assert!(lost.status.contains("without an exit status"));
    }
}
