//! The backup side's asynchronous half: one [`ChunkedRun`] per backup run. It writes a shared lock
//! marker in each target's repository, learns which chunks each holds (their indexes, less the
//! packs marked for deletion: [`super::fossil`]), receives the
//! sealed blobs from the [`ChunkWriter`], appends each to the pack of every target that lacks it,
//! and uploads a pack when it reaches [`super::packer::PACK_SIZE`]. At the end it writes one index per target
//! for the packs it uploaded; only then may the manifest commit the backup. A target that fails is
//! dropped from the run, as in the stream fan-out; the others go on.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::key::{ChunkId, ChunkKey};
use super::lock::{self, Lock};
use super::packer::Packer;
use super::repo;
use super::retain::PackLocks;
use super::writer::{ChunkWriter, Sealed, WriterContext, Written};
use crate::layout::Retention;
use crate::progress::Progress;
use crate::targets::Target;
use crate::{Error, Result};

/// Sealed blobs the writer may run ahead of the uploads.
const CHANNEL: usize = 4;

struct TargetRepo {
    target: Arc<Target>,
    known: HashSet<ChunkId>,
    /// On a target with Object Lock: what its indexes say about the packs' locks.
    locks: Option<PackLocks>,
    packer: Packer,
    lock: Option<Lock>,
    failed: Option<Error>,
}

/// The repositories of one backup run.
pub struct ChunkedRun {
    pub scope: String,
    ctx: WriterContext,
    repos: Vec<TargetRepo>,
    sealed: HashSet<ChunkId>,
}

impl ChunkedRun {
    /// Lock and read the repository on each of `live`; returns the run and the targets that
    /// could not be opened (with why).
    pub async fn open(
        key: Arc<ChunkKey>,
        recipients: &[String],
        level: i32,
        purpose: &str,
        live: &[Arc<Target>],
    ) -> Result<(ChunkedRun, Vec<(String, Error)>)> {
        let parsed = crate::pipeline::keys::parse_recipients(recipients)?;
        let scope = super::key::scope(recipients);
        let opened = futures::future::join_all(live.iter().map(|t| {
            let (scope, key) = (scope.clone(), key.clone());
            async move {
                let lock = lock::shared(t.clone(), &scope, purpose).await?;
                let read = async {
                    repo::ensure_config(t, &scope, recipients, key.key_id()).await?;
                    super::fossil::load_usable(t, &scope).await
                };
                match read.await {
                    Ok(indexes) => {
                        let known: HashSet<ChunkId> = repo::locations(&indexes).into_keys().collect();
                        let locks = t.retention(Retention::Backup).map(|_| PackLocks::from_indexes(&indexes));
                        Ok(TargetRepo {
                            target: t.clone(),
                            known,
                            locks,
                            packer: Packer::default(),
                            lock: Some(lock),
                            failed: None,
                        })
                    }
                    Err(e) => {
                        lock.release().await;
                        Err(e)
                    }
                }
            }
        }))
        .await;
        let mut repos = Vec::new();
        let mut failed = Vec::new();
        for (t, r) in live.iter().zip(opened) {
            match r {
                Ok(repo) => repos.push(repo),
                Err(e) => failed.push((t.name().to_string(), e)),
            }
        }
        let mut everywhere: HashSet<ChunkId> = repos.first().map(|r| r.known.clone()).unwrap_or_default();
        for r in repos.iter().skip(1) {
            everywhere.retain(|id| r.known.contains(id));
        }
        let ctx = WriterContext {
            scope: scope.clone(),
            key,
            recipients: Arc::new(parsed),
            level,
            known: Arc::new(everywhere),
        };
        Ok((ChunkedRun { scope, ctx, repos, sealed: HashSet::new() }, failed))
    }

    /// Targets still in the run.
    pub fn live(&self) -> Vec<Arc<Target>> {
        self.repos.iter().filter(|r| r.failed.is_none()).map(|r| r.target.clone()).collect()
    }

    /// Targets dropped since the last call, with why (their lock markers removed).
    pub async fn take_failures(&mut self) -> Vec<(String, Error)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.repos.len() {
            if self.repos[i].failed.is_some() {
                let mut r = self.repos.remove(i);
                if let Some(l) = r.lock.take() {
                    l.release().await;
                }
                out.push((
                    r.target.name().to_string(),
                    r.failed.take().unwrap_or_else(|| Error::Pipeline("failed".into())),
                ));
            } else {
                i += 1;
            }
        }
        out
    }

    /// Drop `target` from the run (a failed write outside the packs: a recipe).
    pub fn fail(&mut self, target: &str, e: Error) {
        if let Some(r) = self.repos.iter_mut().find(|r| r.target.name() == target && r.failed.is_none()) {
            r.failed = Some(e);
        }
    }

    /// Chunk one artifact: `produce` writes its bytes into the writer on a blocking thread.
    ///
    /// # Errors
    /// When `produce` fails, or every target did.
    pub async fn store<F>(&mut self, produce: F, progress: Progress) -> Result<Written>
    where
        F: FnOnce(&mut ChunkWriter) -> Result<()> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Sealed>(CHANNEL);
        let writer = ChunkWriter::new(self.ctx.clone(), std::mem::take(&mut self.sealed), tx, progress);
        let thread = tokio::task::spawn_blocking(move || {
            let mut w = writer;
            produce(&mut w)?;
            w.finish().map_err(|e| Error::Pipeline(format!("chunking failed: {e}")))
        });
        while let Some(sealed) = rx.recv().await {
            self.add(sealed).await;
            if self.repos.iter().all(|r| r.failed.is_some()) {
                break;
            }
        }
        drop(rx);
        let joined = thread.await.map_err(|e| Error::Pipeline(format!("the chunking thread failed: {e}")))?;
        if self.repos.iter().all(|r| r.failed.is_some()) {
            let why: Vec<String> = self
                .repos
                .iter()
                .filter_map(|r| r.failed.as_ref().map(|e| format!("`{}`: {e}", r.target.name())))
                .collect();
            return Err(Error::Pipeline(format!("every target failed: {}", why.join("; "))));
        }
        let (written, sealed) = joined?;
        self.sealed = sealed;
        Ok(written)
    }

    async fn add(&mut self, s: Sealed) {
        let hex_id = hex::encode(s.id);
        for r in self.repos.iter_mut().filter(|r| r.failed.is_none()) {
            if r.known.insert(s.id) {
                r.packer.add(hex_id.clone(), &s.blob);
            }
        }
        let full: Vec<usize> =
            (0..self.repos.len()).filter(|&i| self.repos[i].failed.is_none() && self.repos[i].packer.full()).collect();
        self.flush(&full).await;
    }

    /// Upload the packs of `which` repos.
    async fn flush(&mut self, which: &[usize]) {
        let scope = self.scope.clone();
        let uploads =
            self.repos.iter_mut().enumerate().filter(|(i, r)| which.contains(i) && r.failed.is_none()).map(|(_, r)| {
                let scope = scope.clone();
                async move {
                    if let Err(e) = r.packer.upload(&r.target, &scope).await {
                        tracing::warn!(target = %r.target.name(), error = %e, "target dropped from this backup");
                        r.failed = Some(e);
                    }
                }
            });
        futures::future::join_all(uploads).await;
    }

    /// Upload what is left in the packs and write each target's index of the packs this run
    /// uploaded (named after `backup_id`); on a target with Object Lock, first extend the locks of
    /// the packs holding `referenced` chunks that would end before this backup's
    /// ([`super::retain`]), and list those packs in the index too. Targets that fail are dropped,
    /// and so are those whose lock marker may have been given up on by a collection (it could
    /// have deleted packs this backup reuses): the manifest may then be written only where the
    /// marker is fresh.
    pub async fn commit_indexes(&mut self, backup_id: &str, referenced: &HashSet<ChunkId>) {
        pause_for_tests().await;
        let scope = self.scope.clone();
        let writes = self.repos.iter_mut().filter(|r| r.failed.is_none()).map(|r| {
            let scope = scope.clone();
            async move {
                let written = async {
                    if let Some(locks) = &r.locks {
                        let extended = super::retain::extend(&r.target, &scope, locks, referenced).await?;
                        r.packer.relist(extended);
                    }
                    r.packer.finish(&r.target, &scope, backup_id).await
                };
                if let Err(e) = written.await {
                    r.failed = Some(e);
                }
            }
        });
        futures::future::join_all(writes).await;
        for r in self.repos.iter_mut().filter(|r| r.failed.is_none()) {
            if let Some(Err(e)) = r.lock.as_ref().map(|l| l.ensure_fresh("this backup", "the backup")) {
                r.failed = Some(e);
            }
        }
    }

    /// Remove the lock markers (after the manifest is committed, or the run failed).
    pub async fn release(&mut self) {
        for r in &mut self.repos {
            if let Some(l) = r.lock.take() {
                l.release().await;
            }
        }
    }
}

/// A test hook, the one place a run can be held still: with `DRCTL_TEST_PAUSE_BEFORE_INDEX` naming a
/// fifo, a backup whose packs are uploaded opens it for reading (the test's open for writing returns
/// when the backup is there) and reads to its end (it goes on when the test closes it). This lets a
/// test run garbage collection exactly in the window where packs exist that no index lists yet.
async fn pause_for_tests() {
    let Some(fifo) = std::env::var_os("DRCTL_TEST_PAUSE_BEFORE_INDEX") else { return };
    let _ = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        if let Ok(mut f) = std::fs::File::open(&fifo) {
            let _ = f.read_to_end(&mut Vec::new());
        }
    })
    .await;
}
