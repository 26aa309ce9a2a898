//! The backup side's synchronous half: bytes in, chunks cut, identified, and the ones no target
//! has yet compressed, padded and encrypted ([`super::blob`]) and handed to the uploader over a
//! bounded channel (backpressure, as in the stream pipeline). Runs on a blocking thread.

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::blob;
use super::cdc::Chunker;
use super::key::{ChunkId, ChunkKey};
use super::recipe::{ChunkRef, ListDigest};
use crate::progress::Progress;

/// A sealed blob on its way to the packs.
pub struct Sealed {
    pub id: ChunkId,
    pub blob: Vec<u8>,
}

/// What the writer needs to know of the repository.
#[derive(Clone)]
pub struct WriterContext {
    /// The repository scope (see [`super::key::scope`]).
    pub scope: String,
    pub key: Arc<ChunkKey>,
    pub recipients: Arc<Vec<age::x25519::Recipient>>,
    pub level: i32,
    /// Chunks every live target already holds (from their indexes at the start of the run).
    pub known: Arc<HashSet<ChunkId>>,
}

/// What one artifact's chunking produced.
pub struct Written {
    pub chunks: Vec<ChunkRef>,
    pub plaintext: crate::pipeline::Digest,
    /// Chunks sealed by this writer and their stored (padded, encrypted) bytes.
    pub sealed_chunks: u64,
    pub sealed_bytes: u64,
}

pub struct ChunkWriter {
    ctx: WriterContext,
    chunker: Chunker,
    /// Chunks sealed in this run (by this writer or an earlier artifact's).
    sealed: HashSet<ChunkId>,
    chunks: Vec<ChunkRef>,
    /// `chunks.len()` at the last forced cut.
    mark: usize,
    digest: ListDigest,
    tx: mpsc::Sender<Sealed>,
    sealed_chunks: u64,
    sealed_bytes: u64,
    progress: Progress,
}

impl ChunkWriter {
    pub fn new(ctx: WriterContext, sealed: HashSet<ChunkId>, tx: mpsc::Sender<Sealed>, progress: Progress) -> Self {
        ChunkWriter {
            ctx,
            chunker: Chunker::default(),
            sealed,
            chunks: Vec::new(),
            mark: 0,
            digest: ListDigest::default(),
            tx,
            sealed_chunks: 0,
            sealed_bytes: 0,
            progress,
        }
    }

    /// The repository scope the chunks go to.
    pub fn scope(&self) -> &str {
        &self.ctx.scope
    }

    /// Whether every live target has chunk `id` (or this run stored it).
    pub fn has(&self, id: &ChunkId) -> bool {
        self.ctx.known.contains(id) || self.sealed.contains(id)
    }

    /// Force a chunk boundary; returns the chunks cut since the previous forced cut.
    pub fn cut(&mut self) -> io::Result<&[ChunkRef]> {
        let Self { chunker, ctx, .. } = self;
        let key = ctx.key.clone();
        let mut pending = Vec::new();
        chunker.cut(&key, &mut |c: &[u8]| {
            pending.push(c.to_vec());
            Ok::<(), io::Error>(())
        })?;
        for c in pending {
            self.chunk(&c)?;
        }
        let from = self.mark;
        self.mark = self.chunks.len();
        Ok(&self.chunks[from..])
    }

    /// Append chunks stored earlier (an unchanged file), without reading them. The caller has
    /// checked [`ChunkWriter::has`] for each and forced a cut before.
    pub fn reuse(&mut self, refs: &[ChunkRef]) {
        debug_assert!(self.chunker.is_empty());
        for r in refs {
            self.digest.add(&r.id, r.len);
            self.progress.inc(r.len);
        }
        self.chunks.extend_from_slice(refs);
        self.mark = self.chunks.len();
    }

    /// The sealed set, to hand on to the next artifact's writer.
    pub fn finish(mut self) -> io::Result<(Written, HashSet<ChunkId>)> {
        self.cut()?;
        let written = Written {
            chunks: std::mem::take(&mut self.chunks),
            plaintext: self.digest.digest(),
            sealed_chunks: self.sealed_chunks,
            sealed_bytes: self.sealed_bytes,
        };
        Ok((written, std::mem::take(&mut self.sealed)))
    }

    fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        let id = self.ctx.key.chunk_id(data);
        let r = ChunkRef { id, hash: *blake3::hash(data).as_bytes(), len: data.len() as u64 };
        if !self.has(&id) {
            let sealed = blob::seal(data, self.ctx.level, &self.ctx.recipients)?;
            self.sealed_chunks += 1;
            self.sealed_bytes += sealed.len() as u64;
            self.tx
                .blocking_send(Sealed { id, blob: sealed })
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "every target has stopped receiving"))?;
            self.sealed.insert(id);
        }
        self.digest.add(&id, r.len);
        self.chunks.push(r);
        Ok(())
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let key = self.ctx.key.clone();
        let mut ready = Vec::new();
        self.chunker.push(&key, data, &mut |c: &[u8]| {
            ready.push(c.to_vec());
            Ok::<(), io::Error>(())
        })?;
        for c in ready {
            self.chunk(&c)?;
        }
        self.progress.inc(data.len() as u64);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
