//! A stand-in Kubernetes API server for the exec path: just enough of `GET pods` (label
//! selectors) and `pods/{name}/exec` to drive drctl's kube client for real.
//!
//! No API server can run on CI machines, so this speaks the real wire protocol instead: the HTTP/1.1
//! upgrade with `Sec-WebSocket-Accept` and the `v5.channel.k8s.io` / `v4.channel.k8s.io` subprotocol,
//! then binary frames whose first byte is the channel (0 stdin, 1 stdout, 2 stderr, 3 status as a
//! `metav1.Status` JSON, 255 = close a channel in v5). The command runs as a local process, so a
//! "pod" here is this machine: tests point it at real Redis servers and real directories.
//!
//! Included with `#[path = "common/kubeapi.rs"] mod kubeapi;` by the tests that need it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// A pod the stand-in knows.
#[derive(Debug, Clone)]
pub struct FakePod {
    pub namespace: String,
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub phase: String,
    pub containers: Vec<String>,
}

impl FakePod {
    pub fn running(namespace: &str, name: &str, labels: &[(&str, &str)], containers: &[&str]) -> FakePod {
        FakePod {
            namespace: namespace.into(),
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            phase: "Running".into(),
            containers: containers.iter().map(|c| c.to_string()).collect(),
        }
    }
}

/// One exec the stand-in served.
#[derive(Debug, Clone)]
pub struct ExecRecord {
    pub namespace: String,
    pub pod: String,
    pub container: Option<String>,
    pub command: Vec<String>,
    pub stdin: bool,
}

/// How the stand-in behaves.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Answer exec with 403 Forbidden (no RBAC for pods/exec).
    pub forbid_exec: bool,
    /// Offer only v4 (no stdin close signal).
    pub v4_only: bool,
    /// Drop the connection after this many stdout bytes, before any status.
    pub cut_stdout_after: Option<usize>,
    /// The "container's" environment: set on every exec'd command (on top of the test process's).
    pub env: Vec<(String, String)>,
}

#[derive(Clone)]
struct State {
    pods: Vec<FakePod>,
    behaviour: Behaviour,
    log: Arc<Mutex<Vec<ExecRecord>>>,
}

/// A running stand-in; stops with the test process.
pub struct KubeApi {
    pub url: String,
    log: Arc<Mutex<Vec<ExecRecord>>>,
}

impl KubeApi {
    pub fn start(pods: Vec<FakePod>, behaviour: Behaviour) -> KubeApi {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", std_listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = State { pods, behaviour, log: log.clone() };
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                loop {
                    let Ok((conn, _)) = listener.accept().await else { continue };
                    let state = state.clone();
                    tokio::spawn(async move {
                        let _ = serve(conn, state).await;
                    });
                }
            });
        });
        KubeApi { url, log }
    }

    /// A kubeconfig pointing at the stand-in (no auth), written to `dir/kubeconfig`.
    pub fn write_kubeconfig(&self, dir: &Path, namespace: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        let mut f = std::fs::File::create(&path).unwrap();
        write!(
            f,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\n\
             contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\n    namespace: {namespace}\n\
             current-context: standin\nusers:\n- name: standin\n  user: {{}}\n",
            self.url
        )
        .unwrap();
        path
    }

    pub fn execs(&self) -> Vec<ExecRecord> {
        self.log.lock().unwrap().clone()
    }
}

struct Head {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: HashMap<String, String>,
}

async fn read_head(conn: &mut TcpStream) -> std::io::Result<Option<Head>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    // byte by byte: nothing after the head may be consumed (the WebSocket starts right after it)
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Some(Head { method, path: path.to_string(), query, headers }))
}

async fn respond_json(conn: &mut TcpStream, code: u16, body: serde_json::Value) -> std::io::Result<()> {
    let body = body.to_string();
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Error",
    };
    let head =
        format!("HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await
}

fn status_error(code: u16, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code})
}

fn pod_json(p: &FakePod) -> serde_json::Value {
    let labels: serde_json::Map<String, serde_json::Value> =
        p.labels.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
    serde_json::json!({
        "metadata": {"name": p.name, "namespace": p.namespace, "labels": labels},
        "spec": {"containers": p.containers.iter().map(|c| serde_json::json!({"name": c})).collect::<Vec<_>>()},
        "status": {"phase": p.phase},
    })
}

fn matches(p: &FakePod, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| match term.split_once('=') {
        Some((k, v)) => p.labels.iter().any(|(lk, lv)| lk == k.trim() && lv == v.trim()),
        None => p.labels.iter().any(|(lk, _)| lk == term.trim()),
    })
}

async fn serve(mut conn: TcpStream, state: State) -> std::io::Result<()> {
    loop {
        let Some(head) = read_head(&mut conn).await? else { return Ok(()) };
        let parts: Vec<&str> = head.path.trim_start_matches('/').split('/').collect();
        // api/v1/namespaces/{ns}/pods[/{name}/exec]
        match parts.as_slice() {
            ["api", "v1", "namespaces", ns, "pods"] if head.method == "GET" => {
                let selector = head.query.iter().find(|(k, _)| k == "labelSelector").map(|(_, v)| v.as_str());
                let items: Vec<_> = state
                    .pods
                    .iter()
                    .filter(|p| p.namespace == *ns && selector.is_none_or(|s| matches(p, s)))
                    .map(pod_json)
                    .collect();
                let list = serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items});
                respond_json(&mut conn, 200, list).await?;
            }
            ["api", "v1", "namespaces", ns, "pods", name, "exec"] => {
                let ns = ns.to_string();
                let name = name.to_string();
                return exec(conn, head, &ns, &name, state).await;
            }
            _ => {
                respond_json(
                    &mut conn,
                    404,
                    status_error(404, "NotFound", "the server could not find the requested resource"),
                )
                .await?
            }
        }
    }
}

async fn exec(mut conn: TcpStream, head: Head, ns: &str, name: &str, state: State) -> std::io::Result<()> {
    let Some(pod) = state.pods.iter().find(|p| p.namespace == ns && p.name == name) else {
        return respond_json(&mut conn, 404, status_error(404, "NotFound", &format!("pods \"{name}\" not found")))
            .await;
    };
    if state.behaviour.forbid_exec {
        let msg = format!(
            "pods \"{name}\" is forbidden: User \"system:serviceaccount:{ns}:drctl\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"{ns}\""
        );
        return respond_json(&mut conn, 403, status_error(403, "Forbidden", &msg)).await;
    }
    let q = |k: &str| head.query.iter().filter(|(qk, _)| qk == k).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    let container = q("container").into_iter().next();
    if let Some(c) = &container
        && !pod.containers.contains(c)
    {
        let msg = format!("container {c} is not valid for pod {name}");
        return respond_json(&mut conn, 400, status_error(400, "BadRequest", &msg)).await;
    }
    let command = q("command");
    let stdin = q("stdin").first().is_some_and(|v| v == "true");
    state.log.lock().unwrap().push(ExecRecord {
        namespace: ns.into(),
        pod: name.into(),
        container: container.clone(),
        command: command.clone(),
        stdin,
    });
    let offered = head.headers.get("sec-websocket-protocol").cloned().unwrap_or_default();
    let protocol = if offered.contains("v5.channel.k8s.io") && !state.behaviour.v4_only {
        "v5.channel.k8s.io"
    } else {
        "v4.channel.k8s.io"
    };
    let key = head.headers.get("sec-websocket-key").cloned().unwrap_or_default();
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    conn.write_all(resp.as_bytes()).await?;
    let ws = WebSocketStream::from_raw_socket(conn, Role::Server, None).await;
    let (mut tx, mut rx) = ws.split();
    // as the kubelet does: one empty frame per output channel first
    for ch in [1u8, 2, 3] {
        let _ = tx.send(Message::binary(vec![ch])).await;
    }
    let mut child = match tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .envs(state.behaviour.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(if stdin { std::process::Stdio::piped() } else { std::process::Stdio::null() })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let st = serde_json::json!({"metadata": {}, "status": "Failure",
                "message": format!("failed to exec in container: starting container process caused: exec: \"{}\": {e}", command[0]),
                "reason": "InternalError"});
            let mut frame = vec![3u8];
            frame.extend_from_slice(st.to_string().as_bytes());
            let _ = tx.send(Message::binary(frame)).await;
            let _ = tx.close().await;
            return Ok(());
        }
    };
    let (frames_tx, mut frames_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let mut pumps = Vec::new();
    for (ch, reader) in [
        (1u8, child.stdout.take().map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Send + Unpin>)),
        (2u8, child.stderr.take().map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Send + Unpin>)),
    ] {
        let frames_tx = frames_tx.clone();
        let cut = if ch == 1 { state.behaviour.cut_stdout_after } else { None };
        pumps.push(tokio::spawn(async move {
            let Some(mut r) = reader else { return };
            let mut buf = vec![0u8; 32 * 1024];
            let mut sent = 0usize;
            loop {
                let n = match r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut frame = Vec::with_capacity(n + 1);
                frame.push(ch);
                frame.extend_from_slice(&buf[..n]);
                if frames_tx.send(frame).await.is_err() {
                    return;
                }
                sent += n;
                if cut.is_some_and(|c| sent >= c) {
                    // an empty frame tells the writer to drop the connection
                    let _ = frames_tx.send(Vec::new()).await;
                    return;
                }
            }
        }));
    }
    drop(frames_tx);
    let mut child_stdin = child.stdin.take();
    let v5 = protocol.starts_with("v5");
    let mut frames_open = true;
    loop {
        tokio::select! {
            frame = frames_rx.recv(), if frames_open => match frame {
                Some(f) if f.is_empty() => return Ok(()), // cut: no status, connection gone
                Some(f) => {
                    if tx.send(Message::binary(f)).await.is_err() {
                        return Ok(());
                    }
                }
                None => frames_open = false,
            },
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => match b[0] {
                    0 => {
                        if let Some(w) = child_stdin.as_mut() {
                            let _ = w.write_all(&b[1..]).await;
                        }
                    }
                    255 if v5 && b.get(1) == Some(&0) => {
                        if let Some(mut w) = child_stdin.take() {
                            let _ = w.shutdown().await;
                        }
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // v4 clients close the socket to end stdin: the command's output is lost
                    child_stdin.take();
                    if !frames_open {
                        break;
                    }
                    let _ = child.kill().await;
                    return Ok(());
                }
                Some(Ok(_)) => {}
            },
            else => break,
        }
        if !frames_open {
            break;
        }
    }
    for p in pumps {
        let _ = p.await;
    }
    let status = child.wait().await?;
    let st = match status.code() {
        Some(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        code => {
            let code = code.unwrap_or(137);
            serde_json::json!({"metadata": {}, "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
        }
    };
    let mut frame = vec![3u8];
    frame.extend_from_slice(st.to_string().as_bytes());
    let _ = tx.send(Message::binary(frame)).await;
    let _ = tx.close().await;
    Ok(())
}
