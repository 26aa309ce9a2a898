//! `drctl sync [JOB]`: copy committed backups to the job's targets that miss them (a target that
//! was down during a run), target to target, without decrypting.
//!
//! Each artifact streams from a target that holds the backup to the one that misses it through a
//! verifier: if the bytes do not match the manifest's stored sha256 and size, the stream ends with
//! an error and the upload aborts, so nothing unverified is ever committed. The manifest is
//! written last, as in a run.

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

#[derive(Debug, Clone, Serialize, Default)]
pub struct SyncReport {
    pub copied: Vec<Copy>,
    pub failed: Vec<SyncFailure>,
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
        for f in &mut found {
            for to in &job.common.targets {
                if f.targets.contains(to) {
                    continue;
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

async fn copy_backup(
    src: &crate::targets::Target,
    dest: &crate::targets::Target,
    m: &crate::manifest::Manifest,
) -> Result<u64> {
    let mut total = 0;
    for a in &m.artifacts {
        let stream = src.get(&a.key, None).await?;
        let verified = Verified { inner: stream, hasher: Sha256::new(), size: 0, want: a.stored.clone(), done: false };
        total += dest.put(&a.key, Box::pin(verified)).await?;
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
