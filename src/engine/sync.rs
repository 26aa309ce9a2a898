//! `drctl sync [JOB]`: copy committed backups to the job's targets that miss them (a target that
//! was down during a run), target to target, without decrypting.
//!
//! Each artifact streams from a target that holds the backup to the one that misses it through a
//! verifier: if the bytes do not match the manifest's stored sha256 and size, the stream ends with
//! an error and the upload aborts, so nothing unverified is ever committed. The manifest is
//! written last, as in a run.
//!
//! Only what the destination would keep is copied: the destination's own retention plan (with the
//! same overrides as prune) is made with every backup of the job included, and a missing backup
//! that plan would delete is skipped. Otherwise a target with a shorter `keep` gets back, every
//! cycle, the backups prune just removed from it.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::Engine;
use super::rebuild::scan;
use crate::catalog::BackupStatus;
use crate::pipeline::Digest;
use crate::retention::Candidate;
use crate::targets::ByteStream;
use crate::{Result, layout};

#[derive(Debug, Clone, Serialize)]
pub struct Copy {
    pub job: String,
    pub backup_id: String,
    pub from: String,
    pub to: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncFailure {
    pub job: String,
    pub backup_id: String,
    pub to: String,
    pub error: String,
}

/// A backup not copied to a target that misses it, because that target's own retention would not
/// keep it.
#[derive(Debug, Clone, Serialize)]
pub struct SyncSkip {
    pub job: String,
    pub backup_id: String,
    pub to: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct SyncReport {
    pub copied: Vec<Copy>,
    pub failed: Vec<SyncFailure>,
    /// Missing copies left out on purpose (the target's `keep` would prune them).
    pub skipped: Vec<SyncSkip>,
}

pub async fn sync(engine: &Engine, job: Option<&str>) -> Result<SyncReport> {
    let jobs: Vec<String> = match job {
        Some(j) => vec![engine.config.job(j)?.name.clone()],
        None => engine.config.jobs.keys().cloned().collect(),
    };
    let catalog = engine.catalog().await.ok();
    let mut report = SyncReport::default();
    for job_name in jobs {
        let job = engine.config.job(&job_name)?;
        let (mut found, _) = scan(engine, Some(&job_name)).await?;
        found.sort_by(|a, b| b.manifest.newer_cmp(&a.manifest));
        let now = jiff::Timestamp::now();
        let (_, protected) = super::prune::overrides(engine, job, &found, catalog.as_deref(), now).await;
        // per target: the ids its own retention keeps when it holds every backup of the job
        let mut keeps: BTreeMap<String, std::result::Result<BTreeSet<String>, String>> = BTreeMap::new();
        for to in &job.common.targets {
            let policy = engine.config.targets.get(to).and_then(|t| t.common.keep.as_ref());
            keeps.insert(to.clone(), kept_after_sync(&found, policy, &engine.config.timezone(), &protected, now));
        }
        for f in &mut found {
            for to in &job.common.targets {
                if f.targets.contains(to) {
                    continue;
                }
                match keeps.get(to) {
                    Some(Ok(keep)) if !keep.contains(&f.manifest.backup_id) => {
                        report.skipped.push(SyncSkip {
                            job: job_name.clone(),
                            backup_id: f.manifest.backup_id.clone(),
                            to: to.clone(),
                            reason: format!("the `keep` policy of target `{to}` would prune it"),
                        });
                        continue;
                    }
                    Some(Err(e)) => {
                        report.failed.push(SyncFailure {
                            job: job_name.clone(),
                            backup_id: f.manifest.backup_id.clone(),
                            to: to.clone(),
                            error: e.clone(),
                        });
                        continue;
                    }
                    _ => {}
                }
                let fail = |error: String| SyncFailure {
                    job: job_name.clone(),
                    backup_id: f.manifest.backup_id.clone(),
                    to: to.clone(),
                    error,
                };
                let dest = match engine.target(to) {
                    Ok(t) => t,
                    Err(e) => {
                        report.failed.push(fail(e.to_string()));
                        continue;
                    }
                };
                // the first holder (in the job's target order) that delivers intact bytes
                let mut done = None;
                let mut last_err = String::from("no target holds it");
                let holders: Vec<String> =
                    job.common.targets.iter().filter(|t| f.targets.contains(t)).cloned().collect();
                for from in holders {
                    let src = match engine.target(&from) {
                        Ok(t) => t,
                        Err(e) => {
                            last_err = e.to_string();
                            continue;
                        }
                    };
                    match copy_backup(&src, &dest, &f.manifest).await {
                        Ok(bytes) => {
                            done = Some(Copy {
                                job: job_name.clone(),
                                backup_id: f.manifest.backup_id.clone(),
                                from,
                                to: to.clone(),
                                bytes,
                            });
                            break;
                        }
                        Err(e) => last_err = e.to_string(),
                    }
                }
                match done {
                    Some(c) => {
                        f.targets.push(to.clone());
                        let status = if job.common.targets.iter().all(|t| f.targets.contains(t)) {
                            BackupStatus::Ok
                        } else {
                            BackupStatus::Partial
                        };
                        if let Some(cat) = &catalog {
                            let _ = cat.record_backup(&f.manifest, status, &f.targets).await;
                        }
                        report.copied.push(c);
                    }
                    None => report.failed.push(fail(last_err)),
                }
            }
        }
    }
    Ok(report)
}

/// The ids a target keeps (its `policy` with the job's overrides `protected`, at `now`) when it
/// holds every backup in `found`: what sync may copy to it (pure).
fn kept_after_sync(
    found: &[super::rebuild::Found],
    policy: Option<&crate::targets::KeepPolicy>,
    tz: &jiff::tz::TimeZone,
    protected: &[(String, crate::retention::Reason)],
    now: jiff::Timestamp,
) -> std::result::Result<BTreeSet<String>, String> {
    let all: Vec<Candidate> =
        found.iter().map(|f| Candidate { id: f.manifest.backup_id.clone(), time: f.manifest.started_at }).collect();
    let decisions =
        crate::retention::plan_with_overrides(&all, policy, tz, protected, now, crate::retention::CLOCK_TOLERANCE)
            .map_err(|e| e.to_string())?;
    Ok(decisions.into_iter().filter(|d| d.keep).map(|d| d.id).collect())
}

async fn copy_backup(
    src: &crate::targets::Target,
    dest: &std::sync::Arc<crate::targets::Target>,
    m: &crate::manifest::Manifest,
) -> Result<u64> {
    // chunked artifacts: the chunks first (encrypted as stored), under a lock marker on the
    // destination held until its manifest is written
    let (chunks, locks) = crate::chunked::copy::copy_chunks(src, dest, m).await?;
    let copied = copy_objects(src, dest, m, &locks).await;
    crate::chunked::copy::release(locks).await;
    copied.map(|n| n + chunks)
}

/// The artifacts (recipes of chunked ones) verified on the way, then the manifest, if the lock
/// markers held in `dest`'s chunk repositories are still fresh (see `chunked::lock`).
async fn copy_objects(
    src: &crate::targets::Target,
    dest: &crate::targets::Target,
    m: &crate::manifest::Manifest,
    locks: &[crate::chunked::lock::Lock],
) -> Result<u64> {
    let mut total = 0;
    for a in &m.artifacts {
        let stream = src.get(&a.key, None).await?;
        let verified = Verified { inner: stream, hasher: Sha256::new(), size: 0, want: a.stored.clone(), done: false };
        total += dest.put(&a.key, Box::pin(verified)).await?;
    }
    for l in locks {
        l.ensure_fresh(&format!("the sync of backup {}", m.backup_id), "sync")?;
    }
    dest.put_bytes(&layout::manifest_key(&m.job, &m.backup_id), Bytes::from(m.to_json())).await?;
    Ok(total)
}

/// Passes bytes through and, at the end, turns a size or sha256 mismatch into an error (which
/// makes the receiving `put` abort instead of commit).
struct Verified {
    inner: ByteStream,
    hasher: Sha256,
    size: u64,
    want: Digest,
    done: bool,
}

impl Stream for Verified {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.hasher.update(&chunk);
                self.size += chunk.len() as u64;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                self.done = true;
                let sha = hex::encode(self.hasher.clone().finalize());
                if sha == self.want.sha256 && self.size == self.want.size {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("source copy does not match the manifest (sha256 {sha}, {} bytes)", self.size),
                    ))))
                }
            }
            other => other,
        }
    }
}
