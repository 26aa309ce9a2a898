//! The streaming stages between a source and the targets.
//!
//! Backup: `source → sha256 → zstd → age → sha256 → chunks`, restore the reverse. The stages are
//! synchronous `Read`/`Write` adapters run on one blocking thread per stream (zstd and age are
//! CPU-bound and have blocking APIs; zstd adds its own worker threads). They talk to the async
//! world through bounded channels, so memory is bounded by design:
//!
//! * zstd multithreaded: about `threads × 4 × window` (level 3: a few MiB per worker);
//! * the chunk channel: [`CHANNEL_CHUNKS`] × [`CHUNK_SIZE`];
//! * each target: its own bounded queue plus, for S3, one part being assembled and one in flight.
//!
//! Nothing here stages a backup on disk or holds it whole in memory.

pub mod decode;
pub mod encode;
mod hash;
pub mod keys;

pub use decode::{DecodeSummary, decode_blocking};
pub use encode::{EncodeParams, encode_blocking};
pub use hash::{Digest, HashingReader, HashingWriter};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

/// Size of the chunks handed from the encoder to the fan-out.
pub const CHUNK_SIZE: usize = 1 << 20;
/// Chunks the encoder may run ahead of the slowest target.
pub const CHANNEL_CHUNKS: usize = 4;

/// A `Write` that cuts the byte stream into [`CHUNK_SIZE`] chunks and sends them on a bounded
/// channel, blocking when the receiver is behind (backpressure). Must be used off the async runtime.
pub struct ChunkSender {
    tx: mpsc::Sender<Bytes>,
    buf: BytesMut,
}

impl ChunkSender {
    pub fn new(tx: mpsc::Sender<Bytes>) -> Self {
        ChunkSender {
            tx,
            buf: BytesMut::with_capacity(CHUNK_SIZE),
        }
    }

    fn send_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK_SIZE);
        self.tx.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "every target has stopped receiving",
            )
        })
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK_SIZE - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK_SIZE {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buf()
    }
}
