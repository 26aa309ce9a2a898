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
        ChunkSender { tx, buf: BytesMut::with_capacity(CHUNK_SIZE) }
    }

    fn send_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK_SIZE);
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "every target has stopped receiving"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Progress;

    fn params(n: usize) -> (EncodeParams, keys::Identities) {
        let ids: Vec<age::x25519::Identity> = (0..n).map(|_| age::x25519::Identity::generate()).collect();
        let recipients = ids.iter().map(|i| i.to_public()).collect();
        let boxed: keys::Identities =
            ids.into_iter().map(|i| Box::new(i) as Box<dyn age::Identity + Send + Sync>).collect();
        (EncodeParams { zstd_level: 3, zstd_threads: 2, recipients }, boxed)
    }

    /// Encode into chunks, collect them, decode: the bytes and both digests must match.
    fn round_trip(data: &[u8]) -> (Vec<u8>, encode::EncodeSummary, Vec<Bytes>) {
        let (p, ids) = params(2);
        let (tx, mut rx) = mpsc::channel(CHANNEL_CHUNKS);
        let input = data.to_vec();
        let enc = std::thread::spawn(move || encode_blocking(&input[..], &p, tx, &Progress::hidden()));
        let mut chunks = Vec::new();
        while let Some(c) = rx.blocking_recv() {
            assert!(c.len() <= CHUNK_SIZE);
            chunks.push(c);
        }
        let summary = enc.join().unwrap().unwrap();
        let stored: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut out = Vec::new();
        let d = decode_blocking(&stored[..], &ids[1..], &mut out, &Progress::hidden()).unwrap();
        assert_eq!(d.plaintext, summary.plaintext);
        assert_eq!(d.stored, summary.stored);
        (out, summary, chunks)
    }

    #[test]
    fn round_trip_small_empty_and_multi_chunk() {
        for size in [0usize, 1, 70_000, 3 * CHUNK_SIZE + 17] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let (out, summary, _) = round_trip(&data);
            assert_eq!(out, data, "size {size}");
            assert_eq!(summary.plaintext.size, size as u64);
        }
    }

    #[test]
    fn corruption_truncation_and_wrong_key_are_detected() {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let (_, _, chunks) = round_trip(&data);
        let stored: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let (_, wrong) = params(1);
        let err = decode_blocking(&stored[..], &wrong, std::io::sink(), &Progress::hidden()).unwrap_err();
        assert!(matches!(err, decode::DecodeError::Key(_)), "{err}");

        let (p, ids) = params(1);
        let (tx, mut rx) = mpsc::channel(64);
        let input = data.clone();
        let enc = std::thread::spawn(move || encode_blocking(&input[..], &p, tx, &Progress::hidden()));
        let mut stored = Vec::new();
        while let Some(c) = rx.blocking_recv() {
            stored.extend_from_slice(&c);
        }
        enc.join().unwrap().unwrap();
        let mut flipped = stored.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 1;
        let err = decode_blocking(&flipped[..], &ids, std::io::sink(), &Progress::hidden()).unwrap_err();
        assert!(matches!(err, decode::DecodeError::Corrupt(_)), "{err}");
        let err =
            decode_blocking(&stored[..stored.len() - 10], &ids, std::io::sink(), &Progress::hidden()).unwrap_err();
        assert!(matches!(err, decode::DecodeError::Corrupt(_)), "{err}");
    }

    #[test]
    fn encoder_stops_when_nobody_receives() {
        let (p, _) = params(1);
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let data = vec![0u8; 4 * CHUNK_SIZE];
        assert!(encode_blocking(&data[..], &p, tx, &Progress::hidden()).is_err());
    }
}
