//! `drctl run JOB`: back a job up to all of its targets.
//!
//! Commit protocol: every artifact is streamed to every live target; a target that fails is
//! dropped and the others go on. When all artifacts are stored, the manifest is written to each
//! remaining target — its presence commits the backup there. Only then is the run reported as a
//! success (every target) or partial (some targets: exit 3). Artifacts left on a target that did
//! not get the manifest are deleted right away (and would be ignored by restore anyway); when the
//! manifest write failed, a manifest that may have landed is removed first (see `uncommit`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use jiff::Timestamp;
use serde::Serialize;

use super::Engine;
use super::fanout::fanout;
use crate::catalog::BackupStatus;
use crate::chunked::ChunkedRun;
use crate::jobs::hooks::Hooks;
use crate::jobs::{BackupSession, SourceStream};
use crate::manifest::{self, Artifact, Manifest, PipelineInfo};
use crate::notify::{Event, EventKind};
use crate::pipeline::EncodeParams;
use crate::progress::Progress;
use crate::targets::Target;
use crate::{Error, Result, layout};

/// Why one target has no copy of the backup.
#[derive(Debug, Clone, Serialize)]
pub struct TargetFailure {
    pub target: String,
    pub error: String,
}

/// Outcome of a run that committed at least one copy.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub job: String,
    pub backup_id: String,
    pub status: BackupStatus,
    /// Targets holding the committed backup.
    pub committed: Vec<String>,
    /// Targets that do not, and why.
    pub failed: Vec<TargetFailure>,
    pub artifacts: Vec<String>,
    pub plaintext_bytes: u64,
    pub stored_bytes: u64,
    pub duration_seconds: f64,
    /// The catalog could not be updated (the backup is committed on the targets regardless).
    pub catalog_warning: Option<String>,
    /// Why the backup looks suspicious (empty, or much smaller than the job's recent backups): it
    /// is committed, but flagged in the catalog, the metrics (`drctl_backup_suspicious`) and the
    /// status page. `None` when it looks right (or the catalog could not be read to compare).
    pub suspicious: Option<String>,
}

/// Back up `job_name` now.
///
/// # Errors
/// When nothing could be committed: the source failed, or every target did. The failure is
/// recorded in the catalog.
pub async fn run_job(engine: &Engine, job_name: &str) -> Result<RunReport> {
    let job = engine.config.job(job_name)?.clone();
    let started = Timestamp::now();
    let backup_id = layout::new_backup_id(started);
    let mut start = Event::new(EventKind::Start, &job.name, "backup", "started");
    start.backup_id = Some(backup_id.clone());
    engine.notifier.send(&start).await;
    let result = run_and_record(engine, &job, &backup_id, started).await;
    engine.notifier.send(&outcome_event(&job.name, &backup_id, &result)).await;
    result
}

/// The notification a finished backup sends.
fn outcome_event(job: &str, backup_id: &str, result: &Result<RunReport>) -> Event {
    let mut e = match result {
        Ok(r) if r.suspicious.is_some() => {
            let mut e = Event::new(EventKind::Suspicious, job, "backup", "suspicious");
            e.error = r.suspicious.clone();
            e.hint = Some("compare it with the previous backup (`drctl list`) before relying on it".into());
            e
        }
        Ok(r) if r.status == BackupStatus::Partial => {
            let mut e = Event::new(EventKind::Partial, job, "backup", "partial");
            e.error =
                Some(r.failed.iter().map(|f| format!("{}: {}", f.target, f.error)).collect::<Vec<_>>().join("; "));
            e.hint = Some("`drctl sync` copies the backup to the targets that missed it".into());
            e
        }
        Ok(_) => Event::new(EventKind::Success, job, "backup", "ok"),
        Err(err) => {
            let mut e = Event::new(EventKind::Failure, job, "backup", "failed");
            e.error = Some(err.to_string());
            e.hint = err.hint();
            e
        }
    };
    e.backup_id = Some(backup_id.to_string());
    if let Ok(r) = result {
        e.targets = r.committed.clone();
    }
    e
}

async fn run_and_record(
    engine: &Engine,
    job: &crate::jobs::JobConfig,
    backup_id: &str,
    started: Timestamp,
) -> Result<RunReport> {
    let job = job.clone();
    let backup_id = backup_id.to_string();
    let clock = Instant::now();
    let catalog = engine.catalog().await;

    let result = run_inner(engine, &job, &backup_id, started, clock).await;
    match (&result, &catalog) {
        (Err(e), Ok(cat)) => {
            let _ = cat.record_failure(&backup_id, &job.name, job.spec.kind_name(), started, &e.to_string()).await;
        }
        (Ok((m, report)), Ok(cat)) => {
            if let Err(e) = cat.record_backup(m, report.status, &report.committed).await {
                let mut r = report.clone();
                r.catalog_warning = Some(e.to_string());
                return Ok(r);
            }
            if let Some(reason) = flag_suspicious(cat, &job, m).await {
                let mut r = report.clone();
                r.suspicious = Some(reason);
                return Ok(r);
            }
        }
        (Ok((_, report)), Err(e)) => {
            let mut r = report.clone();
            r.catalog_warning = Some(e.to_string());
            return Ok(r);
        }
        (Err(_), Err(_)) => {}
    }
    result.map(|(_, r)| r)
}

/// [`run_hooked`], then the job's `after` and `on_failure` hooks if the session did not run them
/// (it failed before its source was prepared).
async fn run_inner(
    engine: &Engine,
    job: &crate::jobs::JobConfig,
    backup_id: &str,
    started: Timestamp,
    clock: Instant,
) -> Result<(Manifest, RunReport)> {
    let mut hooks = Some(Hooks::new(job, backup_id));
    let result = run_hooked(engine, job, backup_id, started, clock, &mut hooks).await;
    if let Some(h) = hooks {
        h.finish(result.as_ref().err().map(|e| e.to_string()).as_deref()).await;
    }
    result
}

async fn run_hooked(
    engine: &Engine,
    job: &crate::jobs::JobConfig,
    backup_id: &str,
    started: Timestamp,
    clock: Instant,
    hooks: &mut Option<Hooks>,
) -> Result<(Manifest, RunReport)> {
    let params = engine.encode_params()?;

    let mut failed: Vec<TargetFailure> = Vec::new();
    let mut live: Vec<Arc<Target>> = Vec::new();
    for name in &job.common.targets {
        match engine.target(name) {
            Ok(t) => live.push(t),
            Err(e) => failed.push(TargetFailure { target: name.clone(), error: e.to_string() }),
        }
    }
    if live.is_empty() {
        return Err(all_failed(&job.name, &failed));
    }

    // chunked storage: lock and read each target's repository before the source is touched
    let mut chunked = None;
    if job.common.storage() == crate::jobs::Storage::Chunked {
        let (run, lost) = open_chunked(engine, job, backup_id, &live).await?;
        for (target, e) in lost {
            failed.push(TargetFailure { target, error: e.to_string() });
        }
        live = run.live();
        chunked = Some(run);
        if live.is_empty() {
            if let Some(mut c) = chunked {
                c.release().await;
            }
            return Err(all_failed(&job.name, &failed));
        }
    }

    let session = match BackupSession::prepare(job).await {
        Ok(s) => s,
        Err(e) => {
            if let Some(mut c) = chunked {
                c.release().await;
            }
            return Err(e);
        }
    };
    // from here on the session is closed and the hooks finished however the run ends: after-hooks
    // (`docker unpause`, `fsfreeze -u`) must run even when the run future is dropped (the
    // daemon's abort after its grace period, a cancelled CLI run)
    let h = hooks.take().map(|h| h.with_env(session.hook_env()));
    let mut guard = CloseOnDrop { session: Some(session), hooks: h };
    let result = match (guard.session.as_mut(), guard.hooks.as_mut()) {
        (Some(session), Some(hooks)) => match hooks.before().await {
            Ok(()) => {
                store(engine, job, backup_id, started, clock, &params, live, failed, session, chunked.as_mut()).await
            }
            Err(e) => Err(e),
        },
        _ => unreachable!("the session and hooks are only taken below"),
    };
    // the manifest is committed (or the run failed): garbage collection may run again
    if let Some(mut c) = chunked {
        c.release().await;
    }
    if let Some(session) = guard.session.take() {
        session.close(result.is_ok()).await;
    }
    if let Some(h) = guard.hooks.take() {
        h.finish(result.as_ref().err().map(|e| e.to_string()).as_deref()).await;
    }
    result
}

/// Closes (uncommitted) a session whose run was dropped mid-way and runs its `after` and
/// `on_failure` hooks, on a task of its own; the daemon waits for these with
/// [`wait_for_abandoned_sessions`] before it exits.
struct CloseOnDrop {
    session: Option<BackupSession>,
    hooks: Option<Hooks>,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let (Some(session), hooks) = (self.session.take(), self.hooks.take()) else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let task = handle.spawn(async move {
                    tracing::warn!("run aborted: closing its source uncommitted (after-hooks run)");
                    session.close(false).await;
                    if let Some(h) = hooks {
                        h.finish(Some("the run was aborted (nothing was committed)")).await;
                    }
                });
                if let Ok(mut pending) = ABANDONED.lock() {
                    pending.retain(|t| !t.is_finished());
                    pending.push(task);
                }
            }
            Err(_) => tracing::error!("run aborted outside a runtime: its after-hooks did not run"),
        }
    }
}

static ABANDONED: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>> = std::sync::Mutex::new(Vec::new());

/// Wait (up to `limit`) until the sessions of aborted runs are closed; returns how many were
/// still open at the limit.
pub async fn wait_for_abandoned_sessions(limit: std::time::Duration) -> usize {
    let tasks: Vec<_> = ABANDONED.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
    let n = tasks.len();
    match tokio::time::timeout(limit, futures::future::join_all(tasks)).await {
        Ok(_) => 0,
        Err(_) => n,
    }
}

/// Stream every artifact to the live targets and commit the manifest (see the module docs).
#[allow(clippy::too_many_arguments)]
async fn store(
    engine: &Engine,
    job: &crate::jobs::JobConfig,
    backup_id: &str,
    started: Timestamp,
    clock: Instant,
    params: &EncodeParams,
    mut live: Vec<Arc<Target>>,
    mut failed: Vec<TargetFailure>,
    session: &mut BackupSession,
    mut chunked: Option<&mut ChunkedRun>,
) -> Result<(Manifest, RunReport)> {
    let config = &engine.config;
    let mut written: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut artifacts: Vec<Artifact> = Vec::new();

    let mut plans = session.artifacts();
    if engine.progress {
        // on a terminal: a total for the bar where the source can count it cheaply (a tree)
        session.estimate(&mut plans).await;
    }
    for plan in plans {
        if let Some(run) = chunked.as_deref_mut() {
            let key = layout::recipe_key(&job.name, backup_id, &plan.name, plan.ext);
            let progress = Progress::bytes(&format!("{} {}", job.name, plan.name), plan.size_hint, engine.progress);
            let stored = store_chunked(engine, run, session, &plan, &key, progress.clone()).await;
            progress.finish();
            for (target, e) in run.take_failures().await {
                tracing::warn!(job = %job.name, target = %target, error = %e, "target dropped from this backup");
                failed.push(TargetFailure { target, error: e.to_string() });
            }
            let (artifact, holders) = match stored {
                Ok(x) => x,
                Err(e) => {
                    cleanup(&live, &written).await;
                    return Err(e);
                }
            };
            narrow(&mut live, holders, &written).await;
            for t in &live {
                written.entry(t.name().to_string()).or_default().push(key.clone());
            }
            if live.is_empty() {
                return Err(all_failed(&job.name, &failed));
            }
            artifacts.push(artifact);
            continue;
        }
        let key = layout::artifact_key(&job.name, backup_id, &plan.name, plan.ext);
        let stream = match session.open(&plan).await {
            Ok(s) => s,
            Err(e) => {
                cleanup(&live, &written).await;
                return Err(e);
            }
        };
        let progress = Progress::bytes(&format!("{} {}", job.name, plan.name), plan.size_hint, engine.progress);
        let result = fanout(stream, params.clone(), &live, &key, progress.clone()).await;
        progress.finish();
        let summary = match result.summary {
            Ok(s) => s,
            Err(e) if result.targets_gave_up => {
                // every target failed first (a full disk, a cut connection): the source was
                // stopped because nobody was left to take its bytes, so its error (pg_dump
                // "killed by signal 13") is a consequence; lead with the targets' errors
                cleanup(&live, &written).await;
                tracing::info!(job = %job.name, error = %e, "source stopped: no target left to write to");
                for (name, r) in result.per_target {
                    if let Err(te) = r {
                        failed.push(TargetFailure { target: name, error: te.to_string() });
                    }
                }
                let mut err = all_failed(&job.name, &failed);
                if let Error::AllTargetsFailed { failures, .. } = &mut err {
                    failures.push(format!("so the source was stopped: {e}"));
                }
                return Err(err);
            }
            Err(e) => {
                cleanup(&live, &written).await;
                // uploads were aborted; a target that had already failed keeps its own error
                return Err(e);
            }
        };
        let mut still_live = Vec::new();
        for (t, (name, r)) in live.iter().zip(result.per_target) {
            match r {
                Ok(size) if size == summary.stored.size => {
                    written.entry(name).or_default().push(key.clone());
                    still_live.push(t.clone());
                }
                Ok(size) => failed.push(TargetFailure {
                    target: name,
                    error: format!("stored {size} bytes of `{key}`, expected {}", summary.stored.size),
                }),
                Err(e) => {
                    tracing::warn!(job = %job.name, target = %name, error = %e, "target dropped from this backup");
                    failed.push(TargetFailure { target: name, error: e.to_string() });
                }
            }
        }
        // a target that failed now must not keep the artifacts it already had
        narrow(&mut live, still_live, &written).await;
        if live.is_empty() {
            return Err(all_failed(&job.name, &failed));
        }
        artifacts.push(Artifact {
            name: plan.name.clone(),
            format: plan.format.to_string(),
            key,
            plaintext: summary.plaintext,
            stored: summary.stored,
            chunked: None,
        });
    }

    let facts = match session.finish(&live).await {
        Ok(f) => f,
        Err(e) => {
            cleanup(&live, &written).await;
            return Err(e);
        }
    };
    if let Some(run) = chunked {
        // every pack is stored and indexed before the manifest may refer to its chunks
        let referenced = crate::chunked::repo::referenced(&artifacts, &run.scope);
        run.commit_indexes(backup_id, &referenced).await;
        for (target, e) in run.take_failures().await {
            failed.push(TargetFailure { target, error: e.to_string() });
        }
        narrow(&mut live, run.live(), &written).await;
        if live.is_empty() {
            return Err(all_failed(&job.name, &failed));
        }
    }
    let mut manifest = Manifest {
        format: manifest::FORMAT.into(),
        version: manifest::version_for(&artifacts),
        backup_id: backup_id.to_string(),
        job: job.name.clone(),
        kind: job.spec.kind_name().into(),
        started_at: started,
        finished_at: Timestamp::now(),
        drctl_version: env!("CARGO_PKG_VERSION").into(),
        host: crate::host::name(),
        pipeline: PipelineInfo {
            compression: manifest::Compression { algorithm: "zstd".into(), level: params.zstd_level },
            encryption: manifest::Encryption {
                algorithm: "age".into(),
                recipients: config.encryption.recipients.clone(),
            },
        },
        artifacts,
        facts,
        suspicious: None,
        judged_against: None,
    };
    // judged before the commit, so that the verdict is on the targets too
    (manifest.suspicious, manifest.judged_against) = judge_suspicious(engine, job, &manifest).await;

    // commit: the manifest, written last, on every target that holds all artifacts
    let body = Bytes::from(manifest.to_json());
    let mkey = layout::manifest_key(&job.name, backup_id);
    let commits = futures::future::join_all(live.iter().map(|t| {
        let (body, mkey) = (body.clone(), mkey.clone());
        async move { t.put_bytes(&mkey, body).await }
    }))
    .await;
    let mut committed = Vec::new();
    let mut lost = Vec::new();
    for (t, r) in live.iter().zip(commits) {
        match r {
            Ok(_) => committed.push(t.name().to_string()),
            Err(e) => {
                failed.push(TargetFailure { target: t.name().to_string(), error: e.to_string() });
                lost.push(t.clone());
            }
        }
    }
    uncommit(&lost, &mkey, &written).await;
    if committed.is_empty() {
        return Err(all_failed(&job.name, &failed));
    }
    let status = if failed.is_empty() { BackupStatus::Ok } else { BackupStatus::Partial };
    let report = RunReport {
        job: job.name.clone(),
        backup_id: backup_id.to_string(),
        status,
        committed,
        failed,
        artifacts: manifest.artifacts.iter().map(|a| a.name.clone()).collect(),
        plaintext_bytes: manifest.plaintext_bytes(),
        stored_bytes: manifest.stored_bytes(),
        duration_seconds: clock.elapsed().as_secs_f64(),
        catalog_warning: None,
        suspicious: None,
    };
    Ok((manifest, report))
}

/// Lock and read each live target's chunk repository for a `storage = "chunked"` run.
async fn open_chunked(
    engine: &Engine,
    job: &crate::jobs::JobConfig,
    backup_id: &str,
    live: &[Arc<Target>],
) -> Result<(ChunkedRun, Vec<(String, Error)>)> {
    let enc = &engine.config.encryption;
    let path = enc.chunk_key_file.as_ref().ok_or_else(|| {
        Error::source_failed(
            &job.name,
            "`storage = \"chunked\"` needs `encryption.chunk_key_file`",
            Some("run `drctl keygen --chunk-key chunk.key` and set `chunk_key_file` under [encryption]".into()),
        )
    })?;
    let key = Arc::new(crate::chunked::ChunkKey::load(path)?);
    let purpose = format!("backup {} {backup_id}", job.name);
    ChunkedRun::open(key, &enc.recipients, engine.config.compression.level, &purpose, live).await
}

/// Chunk one artifact into the run's repositories and store its recipe on every target still
/// in the run. Returns the manifest entry and the targets that hold all of it.
async fn store_chunked(
    engine: &Engine,
    run: &mut ChunkedRun,
    session: &mut BackupSession,
    plan: &crate::jobs::ArtifactPlan,
    key: &str,
    progress: Progress,
) -> Result<(Artifact, Vec<Arc<Target>>)> {
    use crate::jobs::ChunkSource;
    let source = session.open_chunked(plan).await?;
    let (produce, completion): (crate::jobs::ChunkProducer, crate::jobs::Completion) = match source {
        ChunkSource::Producer { produce, completion } => (produce, completion),
        ChunkSource::Stream(SourceStream { reader, completion }) => {
            let handle = tokio::runtime::Handle::current();
            let produce: crate::jobs::ChunkProducer = Box::new(move |w| {
                let mut r = tokio_util::io::SyncIoBridge::new_with_handle(reader, handle);
                std::io::copy(&mut r, w)
                    .map(|_| ())
                    .map_err(|e| Error::Pipeline(format!("reading the source failed: {e}")))
            });
            (produce, completion)
        }
    };
    let written = run.store(produce, progress).await;
    // the source's own verdict (pg_dump's exit status, the walk's result) comes first
    completion.await?;
    let written = written?;
    let recipe = crate::chunked::recipe::Recipe {
        format: crate::chunked::recipe::FORMAT.into(),
        version: crate::chunked::recipe::VERSION,
        scope: run.scope.clone(),
        chunks: written.chunks.iter().map(|c| c.step()).collect(),
    };
    let body = crate::chunked::blob::seal_document(
        &serde_json::to_vec(&recipe).unwrap_or_default(),
        engine.config.compression.level,
        &engine.encode_params()?.recipients,
    )
    .map_err(|e| Error::Pipeline(format!("sealing the recipe failed: {e}")))?;
    let stored = crate::pipeline::Digest {
        size: body.len() as u64,
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body)),
    };
    let body = Bytes::from(body);
    let live = run.live();
    let puts = futures::future::join_all(live.iter().map(|t| {
        let body = body.clone();
        async move { t.put_bytes(key, body).await }
    }))
    .await;
    let mut holders = Vec::new();
    for (t, r) in live.iter().zip(puts) {
        match r {
            Ok(_) => holders.push(t.clone()),
            Err(e) => run.fail(t.name(), e),
        }
    }
    let mut ids: Vec<String> = written.chunks.iter().map(|c| hex::encode(c.id)).collect();
    ids.sort_unstable();
    ids.dedup();
    let artifact = Artifact {
        name: plan.name.clone(),
        format: plan.format.to_string(),
        key: key.to_string(),
        plaintext: written.plaintext,
        stored,
        chunked: Some(manifest::Chunked {
            scope: run.scope.clone(),
            chunk_count: written.chunks.len() as u64,
            added_bytes: written.sealed_bytes,
            added_chunks: written.sealed_chunks,
            ids,
        }),
    };
    Ok((artifact, holders))
}

/// Does the backup about to be committed look right? An empty backup, or one whose source size
/// (or item count: rows, keys, files) fell by more than `verify.suspicious_drop` against the job's
/// last backup that was *not* suspicious, is suspicious (see [`crate::jobs::suspicious::suspicious`]: the
/// baseline is the last good backup, so the flag stays until the source is back). The verdict goes
/// into the manifest with the id of the backup it was judged against; with no catalog to compare
/// with, only emptiness is judged here (prune judges such backups again from the targets).
async fn judge_suspicious(
    engine: &Engine,
    job: &crate::jobs::JobConfig,
    m: &Manifest,
) -> (Option<String>, Option<String>) {
    let drop = job.common.verify.as_ref().map(|v| v.suspicious_drop()).unwrap_or(0.5);
    let last_good = match engine.catalog().await {
        Ok(cat) => last_good_backup(&cat, &job.name, &m.backup_id).await,
        Err(_) => None,
    };
    let verdict = crate::jobs::suspicious::suspicious(
        &m.kind,
        &m.facts,
        m.plaintext_bytes(),
        last_good.as_ref().map(|(_, s, f)| (*s, f)),
        drop,
    );
    (verdict, last_good.map(|(id, _, _)| id))
}

/// Id, size and facts of the job's newest committed backup (other than `except`) that was not flagged
/// suspicious, from the catalog.
async fn last_good_backup(
    cat: &crate::catalog::Catalog,
    job: &str,
    except: &str,
) -> Option<(String, u64, serde_json::Value)> {
    let entries = cat.list(Some(job), None).await.ok()?;
    let flags = cat.backup_flags(Some(job)).await.unwrap_or_default();
    entries
        .into_iter()
        .filter(|b| b.id != except && b.status != BackupStatus::Failed)
        .filter(|b| flags.get(&b.id).is_none_or(|f| f.suspicious.is_none()))
        .filter(|b| b.manifest.as_ref().is_none_or(|m| m.suspicious.is_none()))
        .find_map(|b| {
            let size = b.plaintext_bytes?;
            Some((b.id, size, b.manifest.map(|m| m.facts).unwrap_or_default()))
        })
}

/// Committed, but does it look right? The verdict judged before the commit (in the manifest) is
/// recorded in the catalog (`drctl list`, the metrics, the status page) and logged as a warning;
/// the backup stays committed. Returns the reason when it is suspicious.
async fn flag_suspicious(cat: &crate::catalog::Catalog, job: &crate::jobs::JobConfig, m: &Manifest) -> Option<String> {
    let reason = m.suspicious.clone()?;
    tracing::warn!(job = %job.name, backup = %m.backup_id, reason = %reason, "backup committed but suspicious");
    if let Err(e) = cat.set_suspicious(&m.backup_id, &job.name, &reason).await {
        tracing::warn!(job = %job.name, error = %e, "could not flag the backup as suspicious in the catalog");
    }
    Some(reason)
}

fn all_failed(job: &str, failed: &[TargetFailure]) -> Error {
    Error::AllTargetsFailed {
        job: job.to_string(),
        failures: failed.iter().map(|f| format!("`{}`: {}", f.target, f.error)).collect(),
    }
}

/// Go on with `keep` only: the targets of `live` not in it lose what they got of this backup.
async fn narrow(live: &mut Vec<Arc<Target>>, keep: Vec<Arc<Target>>, written: &BTreeMap<String, Vec<String>>) {
    let dropped: Vec<Arc<Target>> = live.iter().filter(|t| !keep.iter().any(|k| Arc::ptr_eq(k, t))).cloned().collect();
    cleanup(&dropped, written).await;
    *live = keep;
}

/// Delete the artifacts written to `targets` (best effort: an orphan artifact is harmless, it has
/// no manifest and is removed by prune).
/// The manifest write failed on `targets`; but a write whose answer was lost may still have landed,
/// and a manifest left behind over deleted artifacts would be a committed backup that cannot be
/// restored. So the manifest goes first, and the artifacts only once it is gone: when it cannot be
/// removed they stay, the backup there complete if its manifest landed (prune removes them once
/// older than the orphan grace if it did not).
async fn uncommit(targets: &[Arc<Target>], manifest: &str, written: &BTreeMap<String, Vec<String>>) {
    let mut gone = Vec::new();
    for t in targets {
        match t.delete(manifest).await {
            Err(e) if !e.is_not_found() => tracing::warn!(
                target = %t.name(),
                key = %manifest,
                error = %e,
                "the manifest write failed and removing a manifest that may have landed failed too: \
                 the artifacts are kept so that the backup there is complete if it did"
            ),
            _ => gone.push(t.clone()),
        }
    }
    cleanup(&gone, written).await;
}

async fn cleanup(targets: &[Arc<Target>], written: &BTreeMap<String, Vec<String>>) {
    for t in targets {
        for key in written.get(t.name()).into_iter().flatten() {
            if let Err(e) = t.delete(key).await {
                tracing::warn!(target = %t.name(), key = %key, error = %e, "could not remove an uncommitted artifact");
            }
        }
    }
}
