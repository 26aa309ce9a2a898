//! The backup side's synchronous half: bytes in, chunks cut, identified, and the ones no target
//! has yet compressed, padded and encrypted ([`super::blob`]) and handed to the uploader over a
//! bounded channel (backpressure, as in the stream pipeline). Runs on a blocking thread; sealing
//! (zstd + age, the costly part) runs on a few worker threads of its own, one per core, fed through
//! a bounded queue: the order of blobs in a pack does not matter, the recipe's order is fixed when
//! a chunk is cut.

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as sync_mpsc};

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
    sealers: Sealers,
    progress: Progress,
}

/// The sealing workers: chunks in through a bounded queue, blobs out to the uploader.
struct Sealers {
    jobs: Option<sync_mpsc::SyncSender<(ChunkId, Vec<u8>)>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    /// The first failure of a worker (then the queue is closed and the writer stops).
    failed: Arc<Mutex<Option<io::Error>>>,
    chunks: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Sealers {
    fn start(ctx: &WriterContext, tx: mpsc::Sender<Sealed>) -> Sealers {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
        let (jobs, queue) = sync_mpsc::sync_channel::<(ChunkId, Vec<u8>)>(n);
        let queue = Arc::new(Mutex::new(queue));
        let failed: Arc<Mutex<Option<io::Error>>> = Arc::default();
        let (chunks, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let workers = (0..n)
            .map(|_| {
                let (queue, tx, failed) = (queue.clone(), tx.clone(), failed.clone());
                let (chunks, bytes) = (chunks.clone(), bytes.clone());
                let (recipients, level) = (ctx.recipients.clone(), ctx.level);
                std::thread::spawn(move || {
                    loop {
                        let job = queue.lock().map_err(|_| ()).and_then(|q| q.recv().map_err(|_| ()));
                        let Ok((id, data)) = job else { return };
                        let sent = blob::seal(&data, level, &recipients).and_then(|sealed| {
                            bytes.fetch_add(sealed.len() as u64, Ordering::Relaxed);
                            chunks.fetch_add(1, Ordering::Relaxed);
                            tx.blocking_send(Sealed { id, blob: sealed }).map_err(|_| {
                                io::Error::new(io::ErrorKind::BrokenPipe, "every target has stopped receiving")
                            })
                        });
                        if let Err(e) = sent {
                            if let Ok(mut f) = failed.lock() {
                                f.get_or_insert(e);
                            }
                            return; // the queue closes when every worker has returned
                        }
                    }
                })
            })
            .collect();
        Sealers { jobs: Some(jobs), workers, failed, chunks, bytes }
    }

    fn failure(&self) -> io::Error {
        match self.failed.lock().ok().and_then(|mut f| f.take()) {
            Some(e) => e,
            None => io::Error::new(io::ErrorKind::BrokenPipe, "the sealing workers stopped"),
        }
    }

    fn seal(&self, id: ChunkId, data: Vec<u8>) -> io::Result<()> {
        match &self.jobs {
            Some(j) => j.send((id, data)).map_err(|_| self.failure()),
            None => Err(self.failure()),
        }
    }

    /// Wait until every queued chunk is sealed and handed on.
    fn finish(&mut self) -> io::Result<()> {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        match self.failed.lock().ok().and_then(|mut f| f.take()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Sealers {
    fn drop(&mut self) {
        // a writer dropped mid-way: close the queue; the workers end by themselves
        self.jobs = None;
    }
}

impl ChunkWriter {
    pub fn new(ctx: WriterContext, sealed: HashSet<ChunkId>, tx: mpsc::Sender<Sealed>, progress: Progress) -> Self {
        ChunkWriter {
            sealers: Sealers::start(&ctx, tx),
            ctx,
            chunker: Chunker::default(),
            sealed,
            chunks: Vec::new(),
            mark: 0,
            digest: ListDigest::default(),
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
        self.sealers.finish()?;
        let written = Written {
            chunks: std::mem::take(&mut self.chunks),
            plaintext: self.digest.digest(),
            sealed_chunks: self.sealers.chunks.load(Ordering::Relaxed),
            sealed_bytes: self.sealers.bytes.load(Ordering::Relaxed),
        };
        Ok((written, std::mem::take(&mut self.sealed)))
    }

    fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        let id = self.ctx.key.chunk_id(data);
        let r = ChunkRef { id, hash: *blake3::hash(data).as_bytes(), len: data.len() as u64 };
        if !self.has(&id) {
            self.sealers.seal(id, data.to_vec())?;
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
