//! The backup read over the replication protocol: `REPLCONF capa eof`, `REPLCONF rdb-only 1`,
//! `SYNC`, then the RDB payload streamed into the pipeline through a small bounded channel (a few
//! 64 KiB chunks: never the whole RDB).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::SinkExt;
use tokio::io::AsyncReadExt;

use super::conn::{Conn, Failure, Io};
use super::rdb::RdbCheck;
use super::resp::{self, Framer, SyncError, SyncHeader};
use super::{Facts, failed};
use crate::Error;
use crate::Result;
use crate::jobs::SourceStream;

/// Longest silence accepted from the server, while it prepares the RDB (it sends a newline every
/// second meanwhile) and during the transfer.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const READ_CHUNK: usize = 64 * 1024;
/// Chunks in flight between the connection and the pipeline.
const CHANNEL_CHUNKS: usize = 4;

/// How the transfer ended, when it did not end well.
#[derive(Debug)]
enum PumpError {
    Failure(Failure),
    /// The connection closed before the payload was complete.
    Incomplete {
        received: u64,
        expected: Option<u64>,
    },
    /// The pipeline stopped reading (it failed on its own: its error is reported instead).
    Stopped,
}

pub async fn open_sync(job: &str, mut conn: Conn, at: &str, facts: Arc<Mutex<Facts>>) -> Result<SourceStream> {
    // capa eof lets the server stream diskless; rdb-only (7.0+) says we want no replication
    // stream afterwards. Older servers do not know rdb-only: then the payload is followed by the
    // command stream, which is simply not read.
    for (opt, val) in [("capa", "eof"), ("rdb-only", "1")] {
        match conn.cmd(&["REPLCONF", opt, val]).await {
            Ok(_) => {}
            Err(Failure::Server(m)) if m.contains("Unrecognized REPLCONF option") => {}
            Err(f) => return Err(failed(job, at, "REPLCONF failed on", f)),
        }
    }
    conn.send(&[b"SYNC"]).await.map_err(|f| failed(job, at, "cannot send SYNC to", f))?;
    let header = loop {
        match resp::parse_sync_preamble(conn.buffer()) {
            Ok(Some((h, used))) => {
                let _ = conn.buffer().split_to(used);
                break h;
            }
            Ok(None) => {}
            Err(SyncError::Server(m)) => {
                let f = Failure::from_reply(m);
                let hint = match &f {
                    Failure::Server(m) if m.starts_with("NOMASTERLINK") => Some(
                        "this replica lost its master: back up the master, or wait until the replica is in sync".into(),
                    ),
                    other => other.hint(at),
                };
                return Err(Error::source_failed(job, format!("SYNC refused by {at}: {f}"), hint));
            }
            Err(SyncError::Protocol(m)) => return Err(Error::source_failed(job, format!("SYNC on {at}: {m}"), None)),
        }
        conn.fill(IDLE_TIMEOUT, "waiting for the server to start sending the RDB")
            .await
            .map_err(|f| failed(job, at, "SYNC failed on", f))?;
    };
    let transfer = match header {
        SyncHeader::Length(_) => "disk",
        SyncHeader::Mark(_) => "diskless",
    };
    tracing::debug!(job, server = at, transfer, "RDB transfer started");

    let (leftover, io) = conn.into_parts();
    let (tx, rx) = futures::channel::mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    let check = Arc::new(Mutex::new(RdbCheck::new()));
    let pump = tokio::spawn(pump(io, leftover, Framer::new(&header), tx, check.clone()));
    let reader = tokio_util::io::StreamReader::new(rx);

    let (job, at) = (job.to_string(), at.to_string());
    let completion = Box::pin(async move {
        let outcome =
            pump.await.map_err(|e| Error::source_failed(&job, format!("RDB transfer task failed: {e}"), None))?;
        match outcome {
            Ok(()) => {}
            Err(PumpError::Stopped) => {
                return Err(Error::source_failed(&job, "the pipeline stopped reading the RDB", None));
            }
            Err(PumpError::Incomplete { received, expected }) => {
                let of = expected.map(|e| format!(" of {e}")).unwrap_or_default();
                return Err(Error::source_failed(
                    &job,
                    format!("{at} closed the connection after {received}{of} bytes of the RDB: the transfer is incomplete"),
                    Some("nothing was committed; see the server's log (client-output-buffer-limit? a killed fork?) and run the job again".into()),
                ));
            }
            Err(PumpError::Failure(f)) => return Err(failed(&job, &at, "the RDB transfer failed from", f)),
        }
        let summary =
            check.lock().map(|c| c.finish()).map_err(|_| Error::source_failed(&job, "RDB check poisoned", None))?;
        let summary = summary.map_err(|p| {
            Error::source_failed(
                &job,
                format!("the RDB received from {at} is not usable: {p}"),
                Some("nothing was committed".into()),
            )
        })?;
        if let Ok(mut f) = facts.lock() {
            f.rdb_version = summary.version;
            f.rdb_checksum = summary.checksummed;
            f.transfer = transfer.into();
        }
        Ok(())
    });
    Ok(SourceStream { reader: Box::new(reader), completion })
}

/// Read the payload off the connection and hand it on; the receiver is the pipeline's reader.
async fn pump(
    mut io: Box<dyn Io>,
    mut buf: BytesMut,
    mut framer: Framer,
    mut tx: futures::channel::mpsc::Sender<io::Result<Bytes>>,
    check: Arc<Mutex<RdbCheck>>,
) -> std::result::Result<(), PumpError> {
    let outcome = async {
        loop {
            if !buf.is_empty() {
                let mut out = Vec::with_capacity(buf.len());
                framer.feed(&buf, &mut out);
                buf.clear();
                if !out.is_empty() {
                    if let Ok(mut c) = check.lock() {
                        c.update(&out);
                    }
                    tx.send(Ok(Bytes::from(out))).await.map_err(|_| PumpError::Stopped)?;
                }
            }
            if framer.is_done() {
                return Ok(());
            }
            buf.reserve(READ_CHUNK);
            let n = match tokio::time::timeout(IDLE_TIMEOUT, io.read_buf(&mut buf)).await {
                Err(_) => return Err(PumpError::Failure(Failure::Timeout("waiting for more of the RDB".into()))),
                Ok(Err(e)) => return Err(PumpError::Failure(super::conn::io_failure(e))),
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                let expected = framer.remaining().map(|r| r + framer.emitted());
                return Err(PumpError::Incomplete { received: framer.emitted(), expected });
            }
        }
    }
    .await;
    if let Err(e) = &outcome
        && !matches!(e, PumpError::Stopped)
    {
        // make the pipeline's reader fail too (the completion says why)
        let _ = tx.send(Err(io::Error::other("the RDB transfer failed"))).await;
    }
    outcome
}
