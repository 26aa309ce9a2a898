//! `drctl restore`: fetch a backup from the first healthy target and stream it through age and
//! zstd into the job's restorer (or a file, or stdout), reading each stored object once.
//!
//! Integrity without a second read: before anything is touched, the object must be there with
//! the manifest's size and the identity must open its header. Then one streaming pass decrypts;
//! age authenticates every 64 KiB chunk and the end of the stream, and the sha256 of the stored
//! and of the decrypted bytes are compared with the manifest before the consumer is allowed to
//! apply anything: a PostgreSQL restore works in a new database (or one transaction) that is
//! dropped (rolled back) unless every check passed, a volume extracts into a staging directory, a
//! file is written under a temporary name. A copy found damaged on the way is rolled back and the
//! next target tried. Only stdout and the `globals` replay (which cannot be taken back) get a
//! verifying pass of their own first. Nothing is staged on disk; memory stays bounded.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::Engine;
use crate::catalog::Selector;
use crate::jobs::{self, Consumer, RestoreOptions, RestoreStep, Sink};
use crate::manifest::{Artifact, Manifest};
use crate::pipeline::decode::{DecodeError, InputFault};
use crate::pipeline::{decode_blocking, keys};
use crate::progress::Progress;
use crate::targets::Target;
use crate::{Error, Result};

/// Where decrypted bytes go instead of the job's restorer.
#[derive(Debug, Clone)]
pub enum Output {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    pub selector: Option<Selector>,
    pub output: Option<Output>,
    pub options: RestoreOptions,
    pub dry_run: bool,
    /// Restore only this artifact (a database name, `globals`).
    pub artifact: Option<String>,
    /// Read from this target first.
    pub target: Option<String>,
    /// Also replay roles (`globals`), before the databases.
    pub globals: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub job: String,
    pub backup_id: String,
    pub target: String,
    pub steps: Vec<RestoreStep>,
    pub plaintext_bytes: u64,
    pub duration_seconds: f64,
    pub dry_run: bool,
    /// Targets skipped because their copy was missing or damaged.
    pub skipped: Vec<String>,
}

/// Find the backup to restore: the catalog first, the targets themselves when the catalog does
/// not know it (a fresh machine).
///
/// `--id` takes a full backup id or a unique end of one (`…3f9a`): an exact id wins; a suffix
/// shared by several backups is an [`Error::AmbiguousId`] listing them (exit 2).
pub async fn resolve(engine: &Engine, job: &str, selector: &Selector) -> Result<(Manifest, Vec<String>)> {
    if let Ok(cat) = engine.catalog().await {
        // newest first; failed runs have no manifest
        let known: Vec<(Manifest, Vec<String>)> = cat
            .list(Some(job), None)
            .await?
            .into_iter()
            .filter(|b| b.status != crate::catalog::BackupStatus::Failed)
            .filter_map(|b| b.manifest.map(|m| (m, b.targets)))
            .collect();
        if let Some(found) = pick(job, known, selector, jiff::Timestamp::now())? {
            return Ok(found);
        }
    }
    let (found, _) = super::rebuild::scan(engine, Some(job)).await?;
    let mut found: Vec<(Manifest, Vec<String>)> = found.into_iter().map(|f| (f.manifest, f.targets)).collect();
    found.sort_by(|a, b| b.0.newer_cmp(&a.0));
    pick(job, found, selector, jiff::Timestamp::now())?
        .ok_or_else(|| Error::NoBackup { job: job.to_string(), selector: selector.to_string() })
}

/// The backup `selector` picks from `backups` (newest first). Pure.
///
/// `--latest` never picks a backup dated more than [`crate::retention::CLOCK_TOLERANCE`] after
/// `now` (a host with a wrong clock wrote it; retention and `check` do not count it as the newest
/// either) while a correctly dated one exists: the restore says so, and `--id` still picks it.
fn pick<T>(
    job: &str,
    backups: Vec<(Manifest, T)>,
    selector: &Selector,
    now: jiff::Timestamp,
) -> Result<Option<(Manifest, T)>> {
    if let Selector::ConsistentBefore(_) = selector {
        // the database server's clock orders base backups, never the backup host's
        let stop = |m: &Manifest| crate::jobs::postgres::physical::PhysicalFacts::of(&m.facts).map(|f| f.stop_time);
        return Ok(backups.into_iter().filter(|(m, _)| selector.matches(m)).max_by_key(|(m, _)| stop(m)));
    }
    let Selector::Id(id) = selector else {
        let future =
            |m: &Manifest| crate::retention::future_dated(m.started_at, now, crate::retention::CLOCK_TOLERANCE);
        let (ahead, dated): (Vec<_>, Vec<_>) = backups.into_iter().partition(|(m, _)| future(m));
        let ahead_ids: Vec<String> = ahead.iter().map(|(m, _)| m.backup_id.clone()).collect();
        let picked = dated.into_iter().find(|(m, _)| selector.matches(m));
        if let Some((m, _)) = &picked
            && !ahead_ids.is_empty()
            && matches!(selector, Selector::Latest)
        {
            tracing::warn!(
                job,
                backup = %m.backup_id,
                future = %ahead_ids.join(", "),
                "--latest skips backups dated in the future (a host with a wrong clock); restore one with --id"
            );
        }
        return Ok(picked.or_else(|| ahead.into_iter().find(|(m, _)| selector.matches(m))));
    };
    if id.is_empty() {
        return Ok(None);
    }
    let mut matching: Vec<(Manifest, T)> =
        backups.into_iter().filter(|(m, _)| m.backup_id.ends_with(id.as_str())).collect();
    if let Some(i) = matching.iter().position(|(m, _)| &m.backup_id == id) {
        return Ok(Some(matching.swap_remove(i)));
    }
    match matching.len() {
        0 | 1 => Ok(matching.pop()),
        _ => Err(Error::AmbiguousId {
            job: job.to_string(),
            id: id.clone(),
            candidates: matching.into_iter().map(|(m, _)| m.backup_id).collect(),
        }),
    }
}

pub async fn restore(engine: &Engine, job_name: &str, req: &RestoreRequest) -> Result<RestoreReport> {
    let clock = Instant::now();
    let selector = req.selector.clone().unwrap_or(Selector::Latest);
    let (manifest, holders) = resolve(engine, job_name, &selector).await?;
    restore_resolved(engine, job_name, &manifest, &holders, req, clock).await
}

/// [`restore`] of a backup already resolved (its manifest and the targets holding it), as a
/// drill does: the backup is looked up once, not again for each artifact restored. `clock`
/// started when the restore was asked for.
pub async fn restore_resolved(
    engine: &Engine,
    job_name: &str,
    manifest: &Manifest,
    holders: &[String],
    req: &RestoreRequest,
    clock: Instant,
) -> Result<RestoreReport> {
    let job = engine.config.job(job_name)?;

    let artifacts = select_artifacts(manifest, req)?;
    let mut options = req.options.clone();
    options.several = artifacts.iter().filter(|a| a.format != jobs::postgres::FORMAT_GLOBALS).count() > 1;
    let req = &RestoreRequest { options, ..req.clone() };
    let identities = Arc::new(load_identities(engine)?);

    // plan every step before touching anything: a refusal must come before the first write
    let mut steps = Vec::new();
    for a in &artifacts {
        steps.push(match &req.output {
            Some(Output::Stdout) => RestoreStep {
                artifact: a.name.clone(),
                destination: "stdout".into(),
                action: "write the decrypted artifact".into(),
            },
            Some(Output::File(p)) => {
                if p.exists() && !req.options.force {
                    return Err(Error::DestinationNotEmpty {
                        job: job_name.into(),
                        destination: format!("`{}`", p.display()),
                        detail: "the file exists".into(),
                    });
                }
                RestoreStep {
                    artifact: a.name.clone(),
                    destination: p.display().to_string(),
                    action: "write the decrypted artifact".into(),
                }
            }
            None => jobs::plan_restore(job, manifest, a, &req.options).await?,
        });
    }

    let order = target_order(holders, &job.common.targets, req.target.as_deref());
    let mut skipped = Vec::new();
    let mut report = RestoreReport {
        job: job_name.into(),
        backup_id: manifest.backup_id.clone(),
        target: String::new(),
        steps,
        plaintext_bytes: 0,
        duration_seconds: 0.0,
        dry_run: req.dry_run,
        skipped: Vec::new(),
    };

    // Each stored object is read once: the restore verifies as it goes (age authenticates every
    // 64 KiB, the sha256 of the stored and the decrypted bytes are compared at the end) and the
    // consumer applies nothing until every check passed (a new database swapped in, a
    // transaction, a staging directory, a `.partial` file). A copy found damaged on the way is
    // rolled back and the next target tried. Only what cannot be taken back (stdout, the
    // `globals` replay) is verified in a separate pass first.
    let mut remaining: Vec<Artifact> = artifacts.clone();
    for name in order {
        let target = match engine.target(&name) {
            Ok(t) => t,
            Err(e) => {
                skipped.push(format!("`{name}`: {e}"));
                continue;
            }
        };
        if req.dry_run {
            match present(&target, &remaining).await {
                Ok(()) => {
                    report.target = target.name().into();
                    remaining.clear();
                    break;
                }
                Err(e) => skipped.push(e.to_string()),
            }
            continue;
        }
        let mut usable = Ok(());
        for a in &remaining {
            let full = needs_full_pass(a, req);
            usable = check_stored(&target, manifest, a, &identities, full, engine.progress).await;
            if usable.is_err() {
                break;
            }
        }
        if let Err(e) = usable {
            if matches!(e, Error::Decrypt { .. }) {
                return Err(e); // the key is wrong, not the copy: another target will not help
            }
            tracing::warn!(target = %name, error = %e, "copy unusable, trying the next target");
            skipped.push(e.to_string());
            continue;
        }
        while let Some(a) = remaining.first().cloned() {
            let sink = match &req.output {
                Some(Output::Stdout) => Sink {
                    writer: Box::new(tokio::io::stdout()),
                    consumer: Consumer::None,
                    destination: "stdout".into(),
                    on_failure: None,
                },
                Some(Output::File(p)) => file_sink(p).await?,
                None => jobs::open_sink(job, manifest, &a, &req.options).await?,
            };
            match restore_artifact(&target, manifest, &a, sink, identities.clone(), req, engine.progress).await {
                Ok(n) => {
                    report.plaintext_bytes += n;
                    report.target = target.name().into();
                    remaining.remove(0);
                }
                // the copy, not the destination: rolled back, try the next target
                Err(e @ (Error::Integrity { .. } | Error::Target { .. })) => {
                    tracing::warn!(target = %name, error = %e, "copy unusable, nothing applied; trying the next target");
                    skipped.push(e.to_string());
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if remaining.is_empty() {
            break;
        }
    }
    report.skipped = skipped;
    if !remaining.is_empty() {
        return Err(match report.skipped.len() {
            0 => Error::NoBackup {
                job: job_name.into(),
                selector: format!("{} on any reachable target", Selector::Id(manifest.backup_id.clone())),
            },
            _ => Error::AllTargetsFailed { job: job_name.into(), failures: report.skipped },
        });
    }
    report.duration_seconds = clock.elapsed().as_secs_f64();
    Ok(report)
}

pub(crate) fn load_identities(engine: &Engine) -> Result<keys::Identities> {
    let path = engine.config.encryption.identity_file.as_ref().ok_or_else(|| Error::Decrypt {
        backup: String::new(),
        message: "no `encryption.identity_file` configured: restore needs the age identity".into(),
    })?;
    keys::load_identities(path)
}

fn select_artifacts(m: &Manifest, req: &RestoreRequest) -> Result<Vec<Artifact>> {
    let names = || m.artifacts.iter().map(|a| a.name.clone()).collect::<Vec<_>>().join(", ");
    if let Some(want) = &req.artifact {
        return m.artifacts.iter().find(|a| &a.name == want).cloned().map(|a| vec![a]).ok_or_else(|| Error::NoBackup {
            job: m.job.clone(),
            selector: format!("artifact `{want}` in backup `{}` (it has: {})", m.backup_id, names()),
        });
    }
    let is_globals = |a: &Artifact| a.format == jobs::postgres::FORMAT_GLOBALS;
    let mut out: Vec<Artifact> = Vec::new();
    if req.globals || req.output.is_some() {
        out.extend(m.artifacts.iter().filter(|a| is_globals(a)).cloned());
    }
    out.extend(m.artifacts.iter().filter(|a| !is_globals(a)).cloned());
    if req.output.is_some() && out.len() > 1 {
        return Err(Error::NoBackup {
            job: m.job.clone(),
            selector: format!(
                "a single artifact for --output: backup `{}` has {}; choose one with --artifact",
                m.backup_id,
                names()
            ),
        });
    }
    Ok(out)
}

fn target_order(holders: &[String], job_targets: &[String], first: Option<&str>) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    if let Some(f) = first {
        order.push(f.to_string());
    }
    for t in job_targets.iter().chain(holders.iter()) {
        if holders.contains(t) && !order.contains(t) {
            order.push(t.clone());
        }
    }
    order
}

async fn present(target: &Target, artifacts: &[Artifact]) -> Result<()> {
    for a in artifacts {
        match target.stat(&a.key).await? {
            Some(meta) if meta.size == a.stored.size => {}
            Some(meta) => {
                return Err(Error::Integrity {
                    target: target.name().into(),
                    key: a.key.clone(),
                    what: format!("size is {} bytes, the manifest says {}", meta.size, a.stored.size),
                });
            }
            None => {
                return Err(Error::Integrity {
                    target: target.name().into(),
                    key: a.key.clone(),
                    what: "the object is missing".into(),
                });
            }
        }
    }
    Ok(())
}

/// Whether `a` must be proven intact in a pass of its own before it is restored: only where
/// what was written cannot be taken back.
fn needs_full_pass(a: &Artifact, req: &RestoreRequest) -> bool {
    matches!(req.output, Some(Output::Stdout)) || (req.output.is_none() && a.format == jobs::postgres::FORMAT_GLOBALS)
}

/// Before anything at the destination is touched: the object is there with the manifest's size
/// and the identity opens its header; with `full`, also a pass comparing its sha256.
async fn check_stored(
    target: &Arc<Target>,
    m: &Manifest,
    a: &Artifact,
    ids: &Arc<keys::Identities>,
    full: bool,
    show: bool,
) -> Result<()> {
    present(target, std::slice::from_ref(a)).await?;
    // the identity must open the header before anything at the destination is touched
    let head = target.get(&a.key, Some(0..a.stored.size.min(64 * 1024))).await?;
    let head: Vec<u8> = head
        .try_fold(Vec::new(), |mut acc, chunk| async move {
            acc.extend_from_slice(&chunk);
            Ok(acc)
        })
        .await
        .map_err(|e| {
            crate::targets::target_error(target.name(), "get", &a.key, crate::error::FailureKind::Transient, e)
        })?;
    match age::Decryptor::new_buffered(&head[..])
        .map(|d| d.decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity)))
    {
        Ok(Ok(_)) => {}
        Ok(Err(age::DecryptError::NoMatchingKeys)) => {
            return Err(Error::Decrypt {
                backup: m.backup_id.clone(),
                message: format!(
                    "none of the configured identities can decrypt it (it is encrypted to {})",
                    m.pipeline.encryption.recipients.join(", ")
                ),
            });
        }
        Ok(Err(e)) | Err(e) => {
            return Err(Error::Integrity {
                target: target.name().into(),
                key: a.key.clone(),
                what: format!("not a readable age file: {e}"),
            });
        }
    }
    if !full {
        return Ok(());
    }
    if a.chunked.is_some() {
        // every chunk read, decrypted and checked against the recipe, nothing written
        let progress = Progress::bytes(&format!("verifying {}", a.name), Some(a.plaintext.size), show);
        let joined = decode_into(target, a, ids.clone(), tokio::io::sink(), &progress).await;
        progress.finish();
        let (decoded, _) = joined.map_err(|e| Error::Pipeline(format!("decoder thread failed: {e}")))?;
        return match decoded {
            Ok(s) if s.stored == a.stored && s.plaintext == a.plaintext => Ok(()),
            Ok(_) => Err(Error::Integrity {
                target: target.name().into(),
                key: a.key.clone(),
                what: "the chunks do not add up to what the manifest says".into(),
            }),
            Err(DecodeError::Key(message)) => Err(Error::Decrypt { backup: m.backup_id.clone(), message }),
            Err(e) => Err(Error::Integrity { target: target.name().into(), key: a.key.clone(), what: e.to_string() }),
        };
    }
    let progress = Progress::bytes(&format!("verifying {}", a.name), Some(a.stored.size), show);
    let mut stream = target.get(&a.key, None).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            crate::targets::target_error(target.name(), "get", &a.key, crate::error::FailureKind::Transient, e)
        })?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        progress.inc(chunk.len() as u64);
    }
    progress.finish();
    let sha = hex::encode(hasher.finalize());
    if size != a.stored.size || sha != a.stored.sha256 {
        return Err(Error::Integrity {
            target: target.name().into(),
            key: a.key.clone(),
            what: format!(
                "sha256 {sha} ({size} bytes) does not match the manifest's {} ({} bytes)",
                a.stored.sha256, a.stored.size
            ),
        });
    }
    Ok(())
}

async fn file_sink(path: &Path) -> Result<Sink> {
    let tmp = partial_path(path);
    let file = tokio::fs::File::create(&tmp).await.map_err(|source| Error::WriteFile { path: tmp.clone(), source })?;
    Ok(Sink {
        writer: Box::new(file),
        consumer: Consumer::None,
        destination: path.display().to_string(),
        on_failure: None,
    })
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

/// Decrypt and decompress `a` from `target` into `writer` on a blocking thread (a stream
/// artifact through age and zstd, a chunked one chunk by chunk); returns the decoder's verdict
/// and the writer.
pub(crate) async fn decode_into<W: tokio::io::AsyncWrite + Unpin + Send + 'static>(
    target: &Arc<Target>,
    a: &Artifact,
    identities: Arc<keys::Identities>,
    writer: W,
    progress: &Progress,
) -> std::result::Result<(std::result::Result<crate::pipeline::DecodeSummary, DecodeError>, W), tokio::task::JoinError>
{
    let handle = tokio::runtime::Handle::current();
    let p = progress.clone();
    if a.chunked.is_some() {
        let (target, a) = (target.clone(), a.clone());
        return tokio::task::spawn_blocking(move || {
            let mut out = tokio_util::io::SyncIoBridge::new_with_handle(writer, handle.clone());
            let res = crate::chunked::read::decode(&handle, &target, &a, &identities, &mut out, &p);
            (res, out.into_inner())
        })
        .await;
    }
    let stream = match target.get(&a.key, None).await {
        Ok(s) => s.map_err(|e| io::Error::new(e.kind(), InputFault(e.to_string()))),
        Err(e) => return Ok((Err(DecodeError::Input(io::Error::other(e.to_string()))), writer)),
    };
    let reader = tokio_util::io::StreamReader::new(stream);
    tokio::task::spawn_blocking(move || {
        let input = tokio_util::io::SyncIoBridge::new_with_handle(reader, handle.clone());
        let mut out = tokio_util::io::SyncIoBridge::new_with_handle(writer, handle);
        let res = decode_blocking(input, &identities, &mut out, &p);
        (res, out.into_inner())
    })
    .await
}

/// Second pass: decrypt and decompress into the sink; let the consumer finish only if every
/// check passed. Returns the plaintext size.
async fn restore_artifact(
    target: &Arc<Target>,
    m: &Manifest,
    a: &Artifact,
    sink: Sink,
    identities: Arc<keys::Identities>,
    req: &RestoreRequest,
    show: bool,
) -> Result<u64> {
    let Sink { writer, consumer, destination, on_failure } = sink;
    let progress = Progress::bytes(&format!("restoring {}", a.name), Some(a.plaintext.size), show);
    let joined = decode_into(target, a, identities, writer, &progress).await;
    progress.finish();
    let (decoded, mut writer) = joined.map_err(|e| Error::Pipeline(format!("decoder thread failed: {e}")))?;

    let fail = |message: String| Error::Restore { job: m.job.clone(), destination: destination.clone(), message };
    let consumer_died = matches!(decoded, Err(DecodeError::Output(_)));
    let verdict: Result<u64> = match decoded {
        Ok(s) if s.stored != a.stored => Err(Error::Integrity {
            target: target.name().into(),
            key: a.key.clone(),
            what: "the object changed while it was being restored".into(),
        }),
        Ok(s) if s.plaintext != a.plaintext => Err(Error::Integrity {
            target: target.name().into(),
            key: a.key.clone(),
            what: format!(
                "decrypted data has sha256 {} but the manifest says {}",
                s.plaintext.sha256, a.plaintext.sha256
            ),
        }),
        Ok(s) => Ok(s.plaintext.size),
        Err(DecodeError::Key(msg)) => Err(Error::Decrypt { backup: m.backup_id.clone(), message: msg }),
        Err(DecodeError::Corrupt(msg)) => {
            Err(Error::Integrity { target: target.name().into(), key: a.key.clone(), what: msg })
        }
        Err(DecodeError::Input(e)) => {
            Err(crate::targets::target_error(target.name(), "get", &a.key, crate::error::FailureKind::Transient, e))
        }
        Err(DecodeError::Output(e)) => Err(fail(format!("the consumer stopped reading: {e}"))),
    };

    match verdict {
        Ok(size) => {
            let _ = writer.shutdown().await;
            drop(writer);
            let applied = match consumer {
                Consumer::None => Ok(()),
                Consumer::Process(p) => {
                    // every byte is in: the tool may still work for long (pg_restore's post-data:
                    // indexes, constraints, foreign keys); say so rather than sit at 100 %
                    let step = Progress::step(
                        &format!("restoring {}: `{}` is finishing (indexes, constraints …)", a.name, p.display()),
                        show,
                    );
                    let waited = p.wait().await;
                    step.finish();
                    let (status, stderr) = waited.map_err(|e| fail(e.to_string()))?;
                    if status.success() {
                        Ok(())
                    } else {
                        Err(fail(format!(
                            "restore tool failed ({}): {}",
                            crate::exec::describe_status(&status),
                            last_lines(&stderr)
                        )))
                    }
                }
                Consumer::Task { task, commit } => {
                    let _ = commit.send(());
                    let step = Progress::step(
                        &format!(
                            "restoring {}: the data is in, finishing (indexes and constraints, or placing files)",
                            a.name
                        ),
                        show,
                    );
                    let done = task.await;
                    step.finish();
                    match done {
                        Ok(r) => r,
                        Err(e) => Err(fail(format!("restore task failed: {e}"))),
                    }
                }
            };
            if let Err(e) = applied {
                if let Some(undo) = on_failure {
                    undo.await;
                }
                return Err(e);
            }
            if let Some(Output::File(path)) = &req.output {
                let tmp = partial_path(path);
                tokio::fs::rename(&tmp, path)
                    .await
                    .map_err(|source| Error::WriteFile { path: path.clone(), source })?;
            }
            Ok(size)
        }
        Err(e) => {
            // never let a consumer commit what we could not vouch for
            drop(writer);
            let mut err = e;
            match consumer {
                Consumer::None => {}
                Consumer::Process(p) => {
                    if consumer_died {
                        // the consumer exited on its own: its error output says why
                        if let Ok((status, stderr)) = p.wait().await {
                            err = fail(format!(
                                "restore tool failed ({}): {}",
                                crate::exec::describe_status(&status),
                                last_lines(&stderr)
                            ));
                        }
                    } else {
                        p.kill().await;
                    }
                }
                Consumer::Task { task, commit } => {
                    drop(commit); // roll back
                    if let Ok(Err(own)) = task.await
                        && consumer_died
                    {
                        err = own;
                    }
                }
            }
            if let Some(undo) = on_failure {
                undo.await;
            }
            if let Some(Output::File(path)) = &req.output {
                let _ = tokio::fs::remove_file(partial_path(path)).await;
            }
            Err(err)
        }
    }
}

fn last_lines(s: &str) -> String {
    let tail = crate::tool_output::tail(s, 6, "");
    if tail.is_empty() {
        "no error output".into()
    } else if s.contains("lock timeout") || s.contains("canceling statement due to user request") {
        // pg_restore/psql under `lock_timeout` (drctl cancels a statement that waits longer for a
        // lock, with a warning naming it): say so, and that nothing changed
        format!(
            "its statement was cancelled: another session holds a lock on a table being replaced and \
             `lock_timeout` ran out (see the warning above); the restore transaction was rolled back, nothing \
             was changed (retry once the lock is released, or raise `lock_timeout` on the job): {tail}"
        )
    } else {
        tail
    }
}

#[cfg(test)]
mod pick_tests {
    use super::pick;
    use crate::Error;
    use crate::catalog::Selector;

    fn backups(ids: &[&str]) -> Vec<(crate::manifest::Manifest, ())> {
        ids.iter()
            .map(|id| {
                let mut m = crate::manifest::sample();
                m.backup_id = id.to_string();
                (m, ())
            })
            .collect()
    }

    #[test]
    fn id_suffixes() {
        let all = backups(&["20261120T030000Z-a3f9", "20261119T030000Z-b3f9", "20261118T030000Z-77aa"]);
        let id = |s: &str| pick("pg", all.clone(), &Selector::Id(s.into()), jiff::Timestamp::now());
        // exact, unique suffix
        assert_eq!(id("20261119T030000Z-b3f9").unwrap().unwrap().0.backup_id, "20261119T030000Z-b3f9");
        assert_eq!(id("77aa").unwrap().unwrap().0.backup_id, "20261118T030000Z-77aa");
        assert_eq!(id("7aa").unwrap().unwrap().0.backup_id, "20261118T030000Z-77aa");
        // none: not found (the caller's NoBackup), an empty id matches nothing
        assert!(id("zz").unwrap().is_none());
        assert!(id("").unwrap().is_none());
        // ambiguous: exit 2, every candidate named
        assert_eq!(id("a3f9").unwrap().unwrap().0.backup_id, "20261120T030000Z-a3f9");
        let e = id("3f9").map(|_| ()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let Error::AmbiguousId { candidates, .. } = &e else { panic!("{e}") };
        assert!(candidates.len() == 2, "{e}");
        let text = e.to_string();
        assert!(text.contains("20261120T030000Z-a3f9") && text.contains("20261119T030000Z-b3f9"), "{text}");
        // an exact id wins over being the suffix of another
        let nested = backups(&["x-ab", "ab"]);
        assert_eq!(
            pick("pg", nested, &Selector::Id("ab".into()), jiff::Timestamp::now()).unwrap().unwrap().0.backup_id,
            "ab"
        );
    }

    fn dated(items: &[(&str, &str)]) -> Vec<(crate::manifest::Manifest, ())> {
        items
            .iter()
            .map(|(id, at)| {
                let mut m = crate::manifest::sample();
                m.backup_id = id.to_string();
                m.started_at = at.parse().unwrap();
                (m, ())
            })
            .collect()
    }

    #[test]
    fn latest_skips_future_dated_backups() {
        let now: jiff::Timestamp = "2026-12-04T12:00:00Z".parse().unwrap();
        let picked = |items: &[(&str, &str)], sel: Selector| {
            pick("pg", dated(items), &sel, now).unwrap().map(|(m, _)| m.backup_id)
        };
        // newest first, as the callers sort them: a 2030 backup never counts as the latest
        let series =
            [("future", "2030-01-01T00:00:00Z"), ("real", "2026-12-04T11:59:00Z"), ("old", "2026-12-03T12:00:00Z")];
        assert_eq!(picked(&series, Selector::Latest).as_deref(), Some("real"));
        // within the tolerance (5 min) it is not in the future
        let close = [("close", "2026-12-04T12:04:00Z"), ("real", "2026-12-04T11:59:00Z")];
        assert_eq!(picked(&close, Selector::Latest).as_deref(), Some("close"));
        // only future-dated backups: the newest of them, rather than nothing
        let only = [("future", "2030-01-01T00:00:00Z")];
        assert_eq!(picked(&only, Selector::Latest).as_deref(), Some("future"));
        // --id still reaches it
        assert_eq!(picked(&series, Selector::Id("future".into())).as_deref(), Some("future"));
        // --before a time in the past never sees it
        let before = Selector::Before("2026-12-04T00:00:00Z".parse().unwrap());
        assert_eq!(picked(&series, before).as_deref(), Some("old"));
    }

    #[test]
    fn to_time_picks_by_the_servers_clock() {
        let now: jiff::Timestamp = "2026-12-04T12:00:00Z".parse().unwrap();
        let physical = |id: &str, host: &str, stop: &str| {
            let mut m = crate::manifest::sample();
            m.backup_id = id.into();
            m.started_at = host.parse().unwrap();
            m.facts = serde_json::to_value(crate::jobs::postgres::physical::PhysicalFacts {
                method: "physical".into(),
                stop_time: stop.parse().unwrap(),
                ..Default::default()
            })
            .unwrap();
            (m, ())
        };
        // the host that took "b" had its clock an hour behind: by the server, "b" is the newer
        let backups = vec![
            physical("a", "2026-12-04T10:30:00Z", "2026-12-04T10:31:00Z"),
            physical("b", "2026-12-04T10:00:00Z", "2026-12-04T11:01:00Z"),
            physical("c", "2026-12-04T09:00:00Z", "2026-12-04T11:59:00Z"),
        ];
        let at = |t: &str| {
            pick("pg", backups.clone(), &Selector::ConsistentBefore(t.parse().unwrap()), now)
                .unwrap()
                .map(|(m, _)| m.backup_id)
        };
        assert_eq!(at("2026-12-04T11:30:00Z").as_deref(), Some("b"));
        assert_eq!(at("2026-12-04T10:45:00Z").as_deref(), Some("a"));
        assert_eq!(at("2026-12-04T10:00:00Z"), None, "no base backup was consistent yet");
    }
}
