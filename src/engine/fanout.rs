//! One read of the source, encoded once, written to every live target concurrently.
//!
//! The encoder runs on a blocking thread and hands chunks to a bounded channel; a distributor
//! copies each chunk (a cheap `Bytes` clone) into every target's own bounded channel. A slow target
//! therefore slows the whole backup down (backpressure) instead of making drctl buffer; a target
//! whose upload fails stops receiving and the others go on. An artifact is committed on the targets
//! only after the encoder finished *and* the source's completion (e.g. pg_dump's exit status) is
//! good; otherwise every upload is sent an error and aborts.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream_shim::ReceiverStream;

use crate::jobs::SourceStream;
use crate::pipeline::encode::EncodeSummary;
use crate::pipeline::{CHANNEL_CHUNKS, EncodeParams, encode_blocking};
use crate::progress::Progress;
use crate::targets::Target;
use crate::{Error, Result};

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

    let mut senders = Vec::new();
    let mut puts = Vec::new();
    let mut targets_gave_up = false;
    for t in targets {
        let (ttx, trx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
        senders.push(Some(ttx));
        let (t, key) = (t.clone(), key.to_string());
        puts.push(tokio::spawn(async move { t.put(&key, Box::pin(ReceiverStream::new(trx))).await }));
    }

    while let Some(chunk) = rx.recv().await {
        let mut alive = 0;
        for slot in senders.iter_mut() {
            if let Some(s) = slot {
                if s.send(Ok(chunk.clone())).await.is_ok() {
                    alive += 1;
                } else {
                    *slot = None; // that upload failed; its task holds the error
                }
            }
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
        Ok(_) => drop(senders), // end of stream: each upload commits
        Err(e) => {
            for s in senders.iter().flatten() {
                let _ = s.send(Err(io::Error::other(format!("source failed: {e}")))).await;
            }
            drop(senders);
        }
    }

    let mut per_target = Vec::new();
    for (t, put) in targets.iter().zip(puts) {
        let r = match put.await {
            Ok(r) => r,
            Err(e) => Err(Error::Pipeline(format!("upload task for target `{}` failed: {e}", t.name()))),
        };
        per_target.push((t.name().to_string(), r));
    }
    FanoutResult { summary, per_target, targets_gave_up }
}

/// A minimal `Stream` over an mpsc receiver (what tokio-stream's wrapper does, without the crate).
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

    impl<T> ReceiverStream<T> {
        pub fn new(rx: tokio::sync::mpsc::Receiver<T>) -> Self {
            ReceiverStream(rx)
        }
    }

    impl<T> futures::Stream for ReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}
