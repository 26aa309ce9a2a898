//! Restore by replication, with drctl as the master.
//!
//! drctl listens on an ephemeral port (on the address its control connection to the destination
//! uses, so a local server is fed over loopback), tells the destination `REPLICAOF ip port`, and
//! answers the replica's handshake (`PING`, `AUTH`, `REPLCONF …`, `PSYNC`) with
//! `+FULLRESYNC <replid> 0` and `$<size>` followed by the RDB as the restore decrypts it.
//!
//! The final chunk is held back until the engine's `commit` fires, i.e. until the plaintext's
//! size and sha256 matched the manifest: a replica only replaces its data once the whole payload
//! arrived, so a backup that fails a check never loads (disk-based loading keeps the old data;
//! `swapdb` restores it; `on-empty-db` only applies to an empty server). Without the commit the
//! connection is dropped and the destination promoted back, keeping its data.
//!
//! Only the destination may fetch the payload: when the server allows it, its `masterauth` is set
//! to a one-time token for the duration (and put back afterwards), and a connection that does not
//! `AUTH` with it is refused.
//!
//! Limitation: the destination must be able to open a TCP connection to drctl's host at that
//! address (no NAT or port-forward in between), and the replication link is plain TCP.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::conn::{Conn, Failure};
use super::resp;
use crate::redact::Secret;
use crate::{Error, Result};

/// How long the destination has to connect back after `REPLICAOF`.
const CONNECT_BACK: Duration = Duration::from_secs(30);
/// Longest pause in the replica's handshake.
const HANDSHAKE_STEP: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
const PIPE: usize = 256 * 1024;

/// The replication feed for one restore.
pub struct Feed {
    pub job: String,
    /// The destination, for messages.
    pub shown: String,
    /// Authenticated connection to the destination.
    pub control: Conn,
    pub listener: TcpListener,
    /// Plaintext size from the manifest: the `$<size>` of the payload.
    pub size: u64,
    /// Keys the backup's source had (facts), to report a difference after loading.
    pub expected_keys: u64,
}

/// A replica that finished its handshake and asked for a full sync.
struct Replica {
    sock: TcpStream,
    psync: bool,
}

impl Feed {
    /// Start the feed: returns the writer the restore decrypts into, the task, its commit.
    pub fn start(self) -> (DuplexStream, JoinHandle<Result<()>>, oneshot::Sender<()>) {
        let (writer, reader) = tokio::io::duplex(PIPE);
        let (commit_tx, commit_rx) = oneshot::channel();
        let task = tokio::spawn(self.run(reader, commit_rx));
        (writer, task, commit_tx)
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Restore {
            job: self.job.clone(),
            destination: self.shown.clone(),
            message: crate::redact::scrub(&message.into()),
        }
    }

    async fn run(mut self, input: DuplexStream, commit: oneshot::Receiver<()>) -> Result<()> {
        let addr = self.listener.local_addr().map_err(|e| self.err(format!("listener: {e}")))?;
        let token = hex::encode(rand::thread_rng().r#gen::<[u8; 16]>());
        let saved_auth = self.lock_masterauth(&token).await;
        let use_token = saved_auth.is_some();

        if let Err(f) = self.control.cmd(&["REPLICAOF", &addr.ip().to_string(), &addr.port().to_string()]).await {
            self.put_back_masterauth(saved_auth).await;
            let hint = f.hint(&self.shown).map(|h| format!(" ({h})")).unwrap_or_default();
            return Err(self.err(format!("REPLICAOF refused: {f}{hint}")));
        }
        tracing::debug!(job = %self.job, destination = %self.shown, feed = %addr, "destination told to replicate from drctl");

        let outcome = self.transfer(input, commit, use_token.then_some(token.as_str()), addr).await;
        // promote back in every case: after a load this keeps the data, after a failure it
        // stops the destination from retrying to reach a master that is gone
        let promoted = self.control.cmd(&["REPLICAOF", "NO", "ONE"]).await;
        let sock = match outcome {
            Ok(sock) => sock,
            Err(e) => {
                self.put_back_masterauth(saved_auth).await;
                if let Err(f) = promoted {
                    tracing::warn!(job = %self.job, destination = %self.shown, error = %f, "could not promote the destination back to master: run REPLICAOF NO ONE on it");
                }
                return Err(e);
            }
        };
        drop(sock);
        self.put_back_masterauth(saved_auth).await;
        promoted
            .map_err(|f| self.err(format!("the data is loaded, but REPLICAOF NO ONE failed: {f}; run it by hand")))?;
        self.report_and_persist().await;
        Ok(())
    }

    /// Set a one-time `masterauth`; returns the previous value when that worked.
    async fn lock_masterauth(&mut self, token: &str) -> Option<Secret> {
        let before = match self.control.config_get("masterauth").await {
            Ok(Some(v)) => Secret::new(v),
            Ok(None) | Err(_) => return None,
        };
        match self.control.cmd(&["CONFIG", "SET", "masterauth", token]).await {
            Ok(_) => Some(before),
            Err(f) => {
                tracing::info!(job = %self.job, destination = %self.shown, error = %f, "cannot set a one-time masterauth: any local client could fetch the RDB while the restore runs");
                None
            }
        }
    }

    async fn put_back_masterauth(&mut self, saved: Option<Secret>) {
        if let Some(before) = saved
            && let Err(f) = self.control.cmd(&["CONFIG", "SET", "masterauth", before.expose()]).await
        {
            tracing::warn!(job = %self.job, destination = %self.shown, error = %f, "could not restore the destination's masterauth setting");
        }
    }

    /// Serve the payload; on success returns the replica's socket once the destination loaded it.
    async fn transfer(
        &mut self,
        mut input: DuplexStream,
        commit: oneshot::Receiver<()>,
        token: Option<&str>,
        addr: std::net::SocketAddr,
    ) -> Result<TcpStream> {
        let mut replica = self.accept(token, addr).await?;
        let mut head = Vec::new();
        if replica.psync {
            let replid = hex::encode(rand::thread_rng().r#gen::<[u8; 20]>());
            head.extend_from_slice(format!("+FULLRESYNC {replid} 0\r\n").as_bytes());
        }
        head.extend_from_slice(format!("${}\r\n", self.size).as_bytes());
        let sent = |e: std::io::Error| format!("the destination dropped the replication link: {e}");
        replica.sock.write_all(&head).await.map_err(|e| self.err(sent(e)))?;

        // everything but the last chunk goes out as it comes
        let mut held: Option<Bytes> = None;
        let mut total = 0u64;
        loop {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            let n = input.read_buf(&mut buf).await.map_err(|e| self.err(format!("reading the restore stream: {e}")))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > self.size {
                return Err(self.err(format!("the restore stream is longer than the manifest's {} bytes", self.size)));
            }
            if let Some(prev) = held.replace(buf.freeze()) {
                replica.sock.write_all(&prev).await.map_err(|e| self.err(sent(e)))?;
            }
        }
        drop(input);
        if commit.await.is_err() {
            return Err(self.err("not every check passed: the transfer was cut short, the destination keeps its data"));
        }
        if total != self.size {
            return Err(self.err(format!("received {total} bytes, the manifest says {}", self.size)));
        }
        if let Some(last) = held {
            replica.sock.write_all(&last).await.map_err(|e| self.err(sent(e)))?;
        }
        replica.sock.flush().await.map_err(|e| self.err(sent(e)))?;
        self.wait_loaded(&mut replica.sock).await?;
        Ok(replica.sock)
    }

    /// Accept the destination's connection and run its handshake up to `PSYNC`.
    async fn accept(&mut self, token: Option<&str>, addr: std::net::SocketAddr) -> Result<Replica> {
        let deadline = Instant::now() + CONNECT_BACK;
        loop {
            let accepted = tokio::time::timeout_at(deadline, self.listener.accept()).await;
            let (sock, peer) = match accepted {
                Err(_) => {
                    return Err(self.err(format!(
                        "the destination did not connect back to drctl at {addr} within {}s: it must be able to reach this host (firewall, NAT, container network?); restore with `--to-dir` or `--output` instead",
                        CONNECT_BACK.as_secs()
                    )));
                }
                Ok(Err(e)) => return Err(self.err(format!("accepting the replication connection: {e}"))),
                Ok(Ok(x)) => x,
            };
            let _ = sock.set_nodelay(true);
            match handshake(sock, token).await {
                Ok(r) => {
                    tracing::debug!(job = %self.job, %peer, "destination connected for the full sync");
                    return Ok(r);
                }
                Err(why) => {
                    tracing::warn!(job = %self.job, %peer, why = %why, "refused a replication connection");
                }
            }
        }
    }

    /// Wait until the destination reports the link up (the RDB is loaded). A replica that cannot
    /// load the payload drops the link: that is a failure.
    async fn wait_loaded(&mut self, sock: &mut TcpStream) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600) + Duration::from_secs(self.size / 5_000_000);
        let mut scratch = [0u8; 1024];
        loop {
            tokio::select! {
                r = sock.read(&mut scratch) => match r {
                    // REPLCONF ACKs once the link is up
                    Ok(n) if n > 0 => {}
                    _ => {
                        return Err(self.err(
                            "the destination dropped the replication link after the transfer: it could not load the RDB (see its log)",
                        ));
                    }
                },
                _ = tokio::time::sleep(POLL) => {
                    let info = self.control.info().await.map_err(|f| self.err(format!("INFO while loading: {f}")))?;
                    if info.replica_in_sync() && !info.loading() {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        return Err(self.err("the destination did not finish loading the RDB in time"));
                    }
                }
            }
        }
    }

    /// Log what was loaded; make it durable where the server persists with RDB snapshots only (a
    /// replica's full sync does not count as a change, so the next restart would load the old
    /// dump.rdb otherwise).
    async fn report_and_persist(&mut self) {
        let Ok(info) = self.control.info().await else {
            return;
        };
        let keys = info.total_keys();
        if keys != self.expected_keys {
            tracing::info!(job = %self.job, destination = %self.shown, keys, backup_keys = self.expected_keys, "key count differs from the backup's facts (keys that expired since, or writes while the backup ran)");
        } else {
            tracing::info!(job = %self.job, destination = %self.shown, keys, "restored");
        }
        let save = self.control.config_get("save").await.ok().flatten().unwrap_or_default();
        let aof = self.control.config_get("appendonly").await.ok().flatten().unwrap_or_default();
        if save.trim().is_empty() || aof == "yes" {
            return; // no snapshots, or the AOF is rewritten after the sync
        }
        let before = info.save_marker();
        match self.control.cmd(&["BGSAVE", "SCHEDULE"]).await {
            Ok(_) | Err(Failure::Server(_)) => {}
            Err(f) => {
                tracing::warn!(job = %self.job, destination = %self.shown, error = %f, "could not BGSAVE after the restore: save it yourself");
                return;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok(i) = self.control.info().await else { return };
            let now = i.save_marker();
            let newer = match (before.0, now.0) {
                (Some(b), Some(n)) => n > b,
                _ => now.1 != before.1,
            };
            if newer && !i.bgsave_in_progress() {
                if !i.last_bgsave_ok() {
                    tracing::warn!(job = %self.job, destination = %self.shown, "BGSAVE after the restore failed: see the server's log");
                }
                return;
            }
        }
    }
}

/// The replica side of the handshake: answer until it asks for the data.
async fn handshake(mut sock: TcpStream, token: Option<&str>) -> std::result::Result<Replica, String> {
    let mut buf = BytesMut::with_capacity(1024);
    let mut authed = token.is_none();
    loop {
        let parsed = resp::parse_command(&buf).map_err(|e| e.to_string())?;
        let Some((args, used)) = parsed else {
            if buf.len() > 64 * 1024 {
                return Err("handshake too long".into());
            }
            let n = tokio::time::timeout(HANDSHAKE_STEP, sock.read_buf(&mut buf))
                .await
                .map_err(|_| "handshake timed out".to_string())?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed during the handshake".into());
            }
            continue;
        };
        let _ = buf.split_to(used);
        let name = args.first().map(|a| String::from_utf8_lossy(a).to_ascii_uppercase()).unwrap_or_default();
        let reply: &[u8] = match name.as_str() {
            "PING" => b"+PONG\r\n",
            "AUTH" => {
                if token.is_some_and(|t| args.last().is_some_and(|a| a == t.as_bytes())) {
                    authed = true;
                    b"+OK\r\n"
                } else if token.is_none() {
                    b"+OK\r\n"
                } else {
                    let _ = sock.write_all(b"-WRONGPASS invalid username-password pair\r\n").await;
                    return Err("wrong AUTH".into());
                }
            }
            "REPLCONF" => b"+OK\r\n",
            "PSYNC" | "SYNC" => {
                if !authed {
                    let _ = sock.write_all(b"-NOAUTH Authentication required.\r\n").await;
                    return Err("asked for the data without AUTH".into());
                }
                return Ok(Replica { sock, psync: name == "PSYNC" });
            }
            "" => continue,
            _ => b"-ERR drctl restore feed: unknown command\r\n",
        };
        sock.write_all(reply).await.map_err(|e| e.to_string())?;
    }
}
