//! One read of the source, encoded once, written to every live target concurrently.
//!
//! The encoder runs on a blocking thread and hands chunks to a bounded channel; a distributor
//! copies each chunk (a cheap `Bytes` clone) into every target's own bounded channel. A slow target
//! therefore slows the whole backup down (backpressure) instead of making drctl buffer; a target
//! whose upload fails stops receiving and the others go on. An artifact is committed on the targets
//! only after the encoder finished *and* the source's completion (e.g. pg_dump's exit status) is
//! good; otherwise every upload is sent an error and aborts.
//!
//! An upload commits only on an explicit end: if the fan-out is dropped half-way (a cancelled or
//! killed run), each upload's stream ends with an error instead of looking complete, so no
//! truncated or empty object is ever stored under its final name.
//!
//! Stalls: backpressure is kept, but a target that accepts nothing for its `idle` deadline
//! (`timeouts.idle`; S3, which stops reading while a part is in flight: `idle + request`, see
//! `Target::accept_deadline`) is dropped from the backup and its upload aborted, so one silent
//! endpoint holds the others back for at most that long; after the end of the stream each upload gets
//! `idle + request` to finish (the last part, the rename; the manifest is written later).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream_shim::ReceiverStream;

use crate::error::FailureKind;
use crate::jobs::SourceStream;
use crate::pipeline::encode::EncodeSummary;
use crate::pipeline::{CHANNEL_CHUNKS, EncodeParams, encode_blocking};
use crate::progress::Progress;
use crate::targets::Target;
use crate::{Error, Result};

/// How often the fan-out logs its progress at `info` (`-v`).
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// What happened to one artifact.
pub struct FanoutResult {
    /// The encoder's summary, or why the source/encoder failed (then nothing was committed).
    pub summary: Result<EncodeSummary>,
    /// Per target (same order as given): bytes stored, or why that upload failed.
    pub per_target: Vec<(String, Result<u64>)>,
    /// Every target failed before the source was done, so the source was stopped (pg_dump dies
    /// of SIGPIPE, a reader sees a closed pipe): the source's failure in `summary` is then a
    /// consequence, and the targets' errors are the cause to report.
    pub targets_gave_up: bool,
}

pub async fn fanout(
    stream: SourceStream,
    params: EncodeParams,
    targets: &[Arc<Target>],
    key: &str,
    progress: Progress,
) -> FanoutResult {
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let SourceStream { reader, completion } = stream;
    let handle = tokio::runtime::Handle::current();
    let encoder = tokio::task::spawn_blocking(move || {
        let bridge = tokio_util::io::SyncIoBridge::new_with_handle(reader, handle);
        encode_blocking(bridge, &params, tx, &progress)
    });

    // set once the stream ended well: only then may an upload see the end as a commit
    let complete = Arc::new(AtomicBool::new(false));
    // per target: why the fan-out dropped it (a stall), which overrides its task's outcome
    let mut stalled: Vec<Option<Error>> = targets.iter().map(|_| None).collect();
    let mut senders = Vec::new();
    let mut puts = Vec::new();
    let mut targets_gave_up = false;
    for t in targets {
        let (ttx, trx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
        senders.push(Some(ttx));
        let (t, key) = (t.clone(), key.to_string());
        let stream = ReceiverStream::new(trx, complete.clone());
        puts.push(tokio::spawn(async move { t.put(&key, Box::pin(stream)).await }));
    }

    let (mut sent, mut last_log) = (0u64, Instant::now());
    while let Some(chunk) = rx.recv().await {
        let mut alive = 0;
        for (i, slot) in senders.iter_mut().enumerate() {
            if let Some(s) = slot {
                let idle = targets[i].accept_deadline();
                match tokio::time::timeout(idle, s.send(Ok(chunk.clone()))).await {
                    Ok(Ok(())) => alive += 1,
                    Ok(Err(_)) => *slot = None, // that upload failed; its task holds the error
                    Err(_) => {
                        // a stalled target: drop it (aborting its upload) instead of pacing the others to it
                        *slot = None;
                        puts[i].abort();
                        let message = format!(
                            "accepted no data for {} (timed out; after {sent} bytes): dropped from this backup",
                            humantime::format_duration(idle)
                        );
                        tracing::warn!(target = %targets[i].name(), key, "target stalled: {message}");
                        stalled[i] = Some(crate::targets::target_error(
                            targets[i].name(),
                            "put",
                            key,
                            FailureKind::Transient,
                            message,
                        ));
                    }
                }
            }
        }
        sent += chunk.len() as u64;
        if last_log.elapsed() >= PROGRESS_EVERY {
            last_log = Instant::now();
            let live: Vec<&str> =
                senders.iter().zip(targets).filter(|(s, _)| s.is_some()).map(|(_, t)| t.name()).collect();
            tracing::info!(key, bytes = sent, targets = %live.join(","), "uploading");
        }
        if alive == 0 {
            targets_gave_up = true;
            break;
        }
    }
    drop(rx);

    let encoded = match encoder.await {
        Ok(r) => r,
        Err(e) => Err(Error::Pipeline(format!("encoder thread failed: {e}"))),
    };
    let completed = completion.await;
    let summary = match (encoded, completed) {
        // the source's own verdict is more useful than "every target stopped receiving"
        (_, Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e),
        (Ok(s), Ok(())) => Ok(s),
    };
    match &summary {
        Ok(_) => {
            complete.store(true, Ordering::SeqCst);
            drop(senders) // end of stream: each upload commits
        }
        Err(e) => {
            for s in senders.iter().flatten() {
                let _ = s.send(Err(io::Error::other(format!("source failed: {e}")))).await;
            }
            drop(senders);
        }
    }

    let mut per_target = Vec::new();
    for ((t, mut put), stall) in targets.iter().zip(puts).zip(stalled) {
        if let Some(e) = stall {
            per_target.push((t.name().to_string(), Err(e)));
            continue;
        }
        let d = t.deadlines();
        let finish = d.idle + d.request;
        let r = match tokio::time::timeout(finish, &mut put).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(Error::Pipeline(format!("upload task for target `{}` failed: {e}", t.name()))),
            Err(_) => {
                put.abort();
                let message =
                    format!("did not finish the upload within {} (timed out)", humantime::format_duration(finish));
                tracing::warn!(target = %t.name(), key, "target stalled: {message}");
                Err(crate::targets::target_error(t.name(), "put", key, FailureKind::Transient, message))
            }
        };
        per_target.push((t.name().to_string(), r));
    }
    FanoutResult { summary, per_target, targets_gave_up }
}

/// A `Stream` over an upload's mpsc receiver that ends cleanly only when the fan-out said the
/// stream is complete: a closed channel without that (the fan-out was dropped: a cancelled run)
/// ends with an error, so the upload aborts instead of committing a truncated object.
mod tokio_stream_shim {
    use std::io;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll};

    pub struct ReceiverStream<T> {
        rx: tokio::sync::mpsc::Receiver<io::Result<T>>,
        complete: Arc<AtomicBool>,
        ended: bool,
    }

    impl<T> ReceiverStream<T> {
        pub fn new(rx: tokio::sync::mpsc::Receiver<io::Result<T>>, complete: Arc<AtomicBool>) -> Self {
            ReceiverStream { rx, complete, ended: false }
        }
    }

    impl<T> futures::Stream for ReceiverStream<T> {
        type Item = io::Result<T>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<T>>> {
            if self.ended {
                return Poll::Ready(None);
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(None) if !self.complete.load(Ordering::SeqCst) => {
                    self.ended = true;
                    Poll::Ready(Some(Err(io::Error::other("the backup stopped before its end (cancelled)"))))
                }
                other => other,
            }
        }
    }
}
