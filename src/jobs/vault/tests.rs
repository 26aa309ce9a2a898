//! The restore sink against a stand-in HTTP server: the snapshot's tail reaches the server only
//! after `commit`, and a dropped commit aborts the upload with the archive incomplete.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::jobs::Consumer;

/// What the stand-in server saw of the restore upload.
#[derive(Debug, Default, Clone)]
struct Upload {
    path: String,
    token: String,
    /// The de-chunked body bytes received.
    body: Vec<u8>,
    /// The terminating zero-length chunk arrived.
    complete: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decode as much of a chunked body as is complete; `true` when the last chunk was seen.
fn dechunk(mut raw: &[u8], out: &mut Vec<u8>) -> bool {
    loop {
        let Some(eol) = find(raw, b"\r\n") else { return false };
        let Ok(size) = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap_or("zz").trim(), 16) else {
            return false;
        };
        if size == 0 {
            return true;
        }
        let start = eol + 2;
        if raw.len() < start + size {
            out.extend_from_slice(&raw[start..]);
            return false;
        }
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
}

/// A tiny HTTP/1.1 server: health, capabilities-self, and the snapshot upload (answers 204 once
/// the body is complete). Records each upload.
async fn stand_in() -> (String, Arc<Mutex<Vec<Upload>>>) {
    stand_in_with(Vec::new()).await
}

/// [`stand_in`] that also serves `snapshot` for `GET /v1/sys/storage/raft/snapshot`.
async fn stand_in_with(snapshot: Vec<u8>) -> (String, Arc<Mutex<Vec<Upload>>>) {
    let snapshot = Arc::new(snapshot);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let uploads: Arc<Mutex<Vec<Upload>>> = Arc::default();
    let seen = uploads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            let snapshot = snapshot.clone();
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                let head_end = loop {
                    if let Some(i) = find(&raw, b"\r\n\r\n") {
                        break i + 4;
                    }
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => raw.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        l.split_once(':')
                            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                            .map(|(_, v)| v.trim().to_string())
                    })
                };
                let reply = |status: &str, body: &str| {
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let answer = if path.starts_with("/v1/sys/health") {
                    reply(
                        "200 OK",
                        r#"{"initialized":true,"sealed":false,"standby":false,"version":"2.7.2","cluster_name":"c","cluster_id":"id-1"}"#,
                    )
                } else if path == "/v1/sys/capabilities-self" {
                    reply("200 OK", r#"{"data":{"capabilities":["root"]}}"#)
                } else if path == "/v1/sys/storage/raft/snapshot" && head.starts_with("GET") {
                    let h = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        snapshot.len()
                    );
                    let _ = sock.write_all(h.as_bytes()).await;
                    for c in snapshot.chunks(16 * 1024) {
                        if sock.write_all(c).await.is_err() {
                            return;
                        }
                    }
                    String::new()
                } else if path.starts_with("/v1/sys/storage/raft/snapshot") {
                    let mut upload = Upload {
                        path: path.clone(),
                        token: header("x-vault-token").unwrap_or_default(),
                        ..Default::default()
                    };
                    let mut body_raw = raw[head_end..].to_vec();
                    loop {
                        let mut out = Vec::new();
                        if dechunk(&body_raw, &mut out) {
                            upload.body = out;
                            upload.complete = true;
                            break;
                        }
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => {
                                upload.body = out;
                                break;
                            }
                            Ok(n) => body_raw.extend_from_slice(&buf[..n]),
                        }
                    }
                    let complete = upload.complete;
                    seen.lock().unwrap().push(upload);
                    if !complete {
                        return;
                    }
                    "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_string()
                } else {
                    reply("404 Not Found", r#"{"errors":[]}"#)
                };
                let _ = sock.write_all(answer.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (addr, uploads)
}

/// The first recorded upload (the server records an aborted one once it sees the connection end).
async fn first_upload(uploads: &Arc<Mutex<Vec<Upload>>>) -> Upload {
    for _ in 0..100 {
        if let Some(u) = uploads.lock().unwrap().first() {
            return u.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no upload reached the server");
}

fn job_for(addr: &str, token: &str) -> VaultJob {
    VaultJob {
        address: addr.to_string(),
        token: Some(Secret::new(token)),
        token_file: None,
        role_id: None,
        secret_id: None,
        secret_id_file: None,
        approle_mount: None,
        ca_file: None,
    }
}

fn manifest() -> (Manifest, Artifact) {
    let m: Manifest = serde_json::from_value(serde_json::json!({
        "format": "drctl-manifest", "version": 1, "backup_id": "20260101T000000Z-abcdef", "job": "v", "kind": "vault",
        "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z", "drctl_version": "0", "host": "h",
        "pipeline": {"compression": {"algorithm": "zstd", "level": 3}, "encryption": {"algorithm": "age", "recipients": []}},
        "artifacts": [{"name": "snapshot", "format": FORMAT, "key": "k",
            "plaintext": {"size": 0, "sha256": ""}, "stored": {"size": 0, "sha256": ""}}],
        "facts": {"cluster_id": "id-0", "raft_index": 7}
    }))
    .expect("a manifest");
    let a = m.artifacts[0].clone();
    (m, a)
}

/// Bytes gzip cannot shrink (xorshift).
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 253) as u8).collect()
}

async fn write_all(sink: &mut Sink, bytes: &[u8]) {
    for c in bytes.chunks(10_000) {
        sink.writer.write_all(c).await.unwrap();
    }
}

#[tokio::test]
async fn the_tail_waits_for_commit_then_everything_arrives() {
    let (addr, uploads) = stand_in().await;
    let (m, a) = manifest();
    let bytes = data(300_000);
    let mut sink =
        open_sink("v", &job_for(&addr, "tok-commit-1234"), &m, &a, &RestoreOptions::default()).await.unwrap();
    write_all(&mut sink, &bytes).await;
    sink.writer.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(uploads.lock().unwrap().is_empty(), "the upload must not end before commit");
    let Consumer::Task { task, commit } = sink.consumer else { panic!("a task consumer") };
    commit.send(()).unwrap();
    task.await.unwrap().unwrap();
    let up = first_upload(&uploads).await;
    assert_eq!(up.path, "/v1/sys/storage/raft/snapshot");
    assert_eq!(up.token, "tok-commit-1234");
    assert!(up.complete);
    assert_eq!(up.body, bytes);
}

#[tokio::test]
async fn a_dropped_commit_aborts_with_the_tail_held_back() {
    let (addr, uploads) = stand_in().await;
    let (m, a) = manifest();
    let bytes = data(300_000);
    let sink = open_sink("v", &job_for(&addr, "tok-abort-1234"), &m, &a, &RestoreOptions::default()).await.unwrap();
    let Sink { mut writer, consumer, .. } = sink;
    for c in bytes.chunks(10_000) {
        writer.write_all(c).await.unwrap();
    }
    drop(writer);
    let Consumer::Task { task, commit } = consumer else { panic!("a task consumer") };
    drop(commit);
    let err = task.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("nothing was applied"), "{err}");
    let up = first_upload(&uploads).await;
    assert!(!up.complete, "the body must not end cleanly");
    // at least the last 64 KiB (the whole compressed tail of a real snapshot) never left
    assert!(bytes.len() - up.body.len() >= 64 * 1024, "{} of {} bytes reached the server", up.body.len(), bytes.len());
    assert_eq!(&up.body[..], &bytes[..up.body.len()]);
}

#[tokio::test]
async fn a_small_snapshot_is_not_sent_at_all_before_commit() {
    let (addr, uploads) = stand_in().await;
    let (m, a) = manifest();
    let opts = RestoreOptions { force: true, ..Default::default() };
    let sink = open_sink("v", &job_for(&addr, "tok-small-1234"), &m, &a, &opts).await.unwrap();
    let Sink { mut writer, consumer, .. } = sink;
    writer.write_all(&data(20_000)).await.unwrap();
    drop(writer);
    let Consumer::Task { task, commit } = consumer else { panic!("a task consumer") };
    drop(commit);
    assert!(task.await.unwrap().is_err());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // hyper may not even send the request head: either way not one byte of the body arrived
    for up in uploads.lock().unwrap().iter() {
        assert!(!up.complete && up.body.is_empty(), "{} bytes reached the server", up.body.len());
    }

    // committed, the same small snapshot goes to snapshot-force whole
    let mut sink = open_sink("v", &job_for(&addr, "tok-small-1234"), &m, &a, &opts).await.unwrap();
    sink.writer.write_all(&data(20_000)).await.unwrap();
    sink.writer.shutdown().await.unwrap();
    let Consumer::Task { task, commit } = sink.consumer else { panic!("a task consumer") };
    commit.send(()).unwrap();
    task.await.unwrap().unwrap();
    let up = uploads.lock().unwrap().iter().find(|u| u.complete).cloned().expect("a complete upload");
    assert_eq!(up.path, "/v1/sys/storage/raft/snapshot-force");
    assert_eq!(up.body, data(20_000));
}

#[tokio::test]
async fn dry_run_plan_names_the_endpoint_and_another_cluster() {
    let (addr, _) = stand_in().await;
    let (m, a) = manifest();
    let step = plan_restore("v", &job_for(&addr, "tok-plan-1234"), &m, &a, &RestoreOptions::default()).await.unwrap();
    assert!(step.action.starts_with("POST /v1/sys/storage/raft/snapshot:"), "{}", step.action);
    assert!(step.action.contains("another cluster") && step.action.contains("--force"), "{}", step.action);
    let opts = RestoreOptions { force: true, ..Default::default() };
    let step = plan_restore("v", &job_for(&addr, "tok-plan-1234"), &m, &a, &opts).await.unwrap();
    assert!(step.action.starts_with("POST /v1/sys/storage/raft/snapshot-force:"), "{}", step.action);
    assert!(step.action.contains("SOURCE cluster's unseal keys"), "{}", step.action);
}

#[tokio::test]
async fn another_server_needs_its_own_token() {
    let (addr, uploads) = stand_in().await;
    let (m, a) = manifest();
    // the job's address differs from --to only by its port: the job's token must not go there
    let job = job_for("http://127.0.0.1:1", "tok-job-secret-1234");
    let opts = RestoreOptions { to: Some(addr.clone()), ..Default::default() };
    let had = std::env::var_os("VAULT_TOKEN").is_some() || std::env::var_os("BAO_TOKEN").is_some();
    if !had {
        let err = plan_restore("v", &job, &m, &a, &opts).await.unwrap_err();
        assert!(err.to_string().contains("no token for that server"), "{err}");
        assert!(err.hint().unwrap_or_default().contains("VAULT_TOKEN"), "{err:?}");
    }
    assert!(uploads.lock().unwrap().is_empty());
}

/// Back up from a stand-in serving `snapshot`, reading the stream as the pipeline would; returns
/// the bytes read and the completion's verdict, and the facts when it was good.
async fn back_up(snapshot: Vec<u8>) -> (Vec<u8>, Result<serde_json::Value>) {
    let (addr, _) = stand_in_with(snapshot).await;
    let mut session = BackupSession::prepare("v", &job_for(&addr, "tok-backup-1234")).await.unwrap();
    let plan = session.artifacts().remove(0);
    assert_eq!((plan.name.as_str(), plan.format, plan.ext), ("snapshot", FORMAT, "snap"));
    let SourceStream { mut reader, completion } = session.open(&plan).await.unwrap();
    let mut read = Vec::new();
    let _ = reader.read_to_end(&mut read).await;
    drop(reader);
    let verdict = completion.await;
    let facts = match verdict {
        Ok(()) => session.finish().await,
        Err(e) => Err(e),
    };
    session.close(false).await;
    (read, facts)
}

#[tokio::test]
async fn a_good_snapshot_streams_through_whole_and_gives_facts() {
    let state = noise(3_000_000);
    let snap = snapshot::tests::good(&state);
    let (read, facts) = back_up(snap.clone()).await;
    assert_eq!(read, snap, "the pipeline gets the snapshot unchanged");
    let f: Facts = serde_json::from_value(facts.unwrap()).unwrap();
    assert_eq!((f.raft_index, f.raft_term, f.state_size), (34, 3, 3_000_000));
    assert_eq!(f.snapshot_size, snap.len() as u64);
    assert_eq!(f.raft_servers, ["node1 127.0.0.1:18201 (voter)"]);
    assert_eq!((f.server_version.as_str(), f.cluster_id.as_str()), ("2.7.2", "id-1"));
    assert!(f.checksums_verified);
}

#[tokio::test]
async fn an_early_verification_failure_stops_the_stream_and_names_the_cause() {
    // a stranger first, then megabytes: the verifier gives up long before the end
    let state = noise(4_000_000);
    let (meta, sums, sealed) = snapshot::tests::members(&state);
    let snap = snapshot::tests::archive(&[
        ("evil.sh", b"rm -rf /"),
        (snapshot::META, &meta),
        (snapshot::STATE, &state),
        (snapshot::SUMS, &sums),
        (snapshot::SEALED, &sealed),
    ]);
    let (read, facts) = back_up(snap.clone()).await;
    let err = facts.unwrap_err();
    assert!(err.to_string().contains("unexpected member `evil.sh`"), "{err}");
    assert!(err.hint().unwrap_or_default().contains("nothing was committed"), "{err:?}");
    assert!(read.len() < snap.len(), "the stream stopped early ({} of {} bytes)", read.len(), snap.len());
}

#[tokio::test]
async fn a_late_checksum_mismatch_fails_the_completion() {
    let state: Vec<u8> = (0..500_000u32).map(|i| (i % 241) as u8).collect();
    let (meta, sums, sealed) = snapshot::tests::members(&state);
    let mut bad = state.clone();
    bad[499_999] ^= 0x80;
    let snap = snapshot::tests::archive(&[
        (snapshot::META, &meta),
        (snapshot::STATE, &bad),
        (snapshot::SUMS, &sums),
        (snapshot::SEALED, &sealed),
    ]);
    let (read, facts) = back_up(snap.clone()).await;
    assert_eq!(read.len(), snap.len());
    let err = facts.unwrap_err().to_string();
    assert!(err.contains("checksum mismatch") && err.contains("`state.bin`"), "{err}");
}

#[tokio::test]
async fn a_cut_download_is_reported_as_such() {
    let snap = snapshot::tests::good(&[7u8; 200_000]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let (health_addr, _) = stand_in().await;
    // health and capabilities from the stand-in, the snapshot from a server that hangs up half way
    let mut session = BackupSession::prepare("v", &job_for(&health_addr, "tok-cut-1234")).await.unwrap();
    session.server = Server::new("v", &addr, None, None).unwrap();
    let half = snap[..snap.len() / 2].to_vec();
    let full = snap.len();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = sock.read(&mut buf).await;
        let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {full}\r\nConnection: close\r\n\r\n");
        let _ = sock.write_all(h.as_bytes()).await;
        let _ = sock.write_all(&half).await;
    });
    let plan = session.artifacts().remove(0);
    let SourceStream { mut reader, completion } = session.open(&plan).await.unwrap();
    let mut read = Vec::new();
    assert!(reader.read_to_end(&mut read).await.is_err());
    drop(reader);
    let err = completion.await.unwrap_err().to_string();
    assert!(err.contains("broke off"), "{err}");
    assert!(session.finish().await.is_err(), "no facts without a verified snapshot");
}

#[test]
fn channel_reader_reads_across_chunks_and_ends_with_the_sender() {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let t = std::thread::spawn(move || {
        let mut r = ChannelReader { rx, cur: Bytes::new() };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        out
    });
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        for part in [&b"abc"[..], b"", b"defgh"] {
            tx.send(Bytes::copy_from_slice(part)).await.unwrap();
        }
    });
    drop(tx);
    assert_eq!(t.join().unwrap(), b"abcdefgh");
}

#[test]
fn facts_round_trip_and_tolerate_old_manifests() {
    let f = Facts { raft_index: 9, raft_term: 2, cluster_id: "x".into(), ..Default::default() };
    let v = serde_json::to_value(&f).unwrap();
    assert_eq!(serde_json::from_value::<Facts>(v).unwrap(), f);
    let partial: Facts = serde_json::from_value(serde_json::json!({"raft_index": 1, "cluster_id": "y"})).unwrap();
    assert_eq!((partial.raft_index, partial.cluster_id.as_str()), (1, "y"));
}

#[test]
fn config_validation_of_vault_jobs() {
    let head = "[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n\
                [targets.local]\ntype = \"fs\"\npath = \"/tmp/x\"\n";
    let problems = |job: &str| -> Vec<String> {
        let text = format!("{head}[jobs.v]\nkind = \"vault\"\ntargets = [\"local\"]\n{job}\n");
        match crate::config::load_str(Path::new("/tmp/drctl.toml"), &text, Vec::new()) {
            Ok(_) => Vec::new(),
            Err(Error::Config(p)) => p
                .into_iter()
                .filter(|p| p.severity == crate::config::Severity::Error)
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect(),
            Err(e) => vec![e.to_string()],
        }
    };
    assert_eq!(problems("address = \"https://v:8200\"\ntoken_file = \"/t\""), Vec::<String>::new());
    let ok = "address = \"https://v:8200\"\nrole_id = \"r\"\nsecret_id_file = \"/s\"\napprole_mount = \"ops/approle\"";
    assert_eq!(problems(ok), Vec::<String>::new());
    let p = problems("address = \"ftp://v\"\ntoken_file = \"/t\"");
    assert!(p.iter().any(|p| p.contains("address") && p.contains("http(s)")), "{p:?}");
    let p = problems("address = \"https://v\"\ntoken_file = \"/t\"\napprole_mount = \"approle\"");
    assert!(p.iter().any(|p| p.contains("approle_mount") && p.contains("role_id")), "{p:?}");
    let p = problems("address = \"https://v\"\nrole_id = \"r\"\nsecret_id = \"s\"\napprole_mount = \"/\"");
    assert!(p.iter().any(|p| p.contains("not a mount path")), "{p:?}");
    let p = problems("address = \"https://v\"");
    assert!(p.iter().any(|p| p.contains("one way to log in")), "{p:?}");
}
