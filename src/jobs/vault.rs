//! `kind = "vault"`: not implemented yet (the typed-jobs issue builds it). Every entry point
//! fails with a clear error naming the job, so a config that already lists such a job validates
//! and the other jobs keep working.

use super::{ArtifactPlan, RestoreOptions, RestoreStep, Sink, SourceStream};
use crate::config::VaultJob;
use crate::manifest::{Artifact, Manifest};
use crate::{Error, Result};

fn not_yet(job: &str) -> Error {
    Error::Source {
        job: job.to_string(),
        message: "jobs of kind `vault` are not implemented in this version".into(),
        hint: Some("upgrade drctl".into()),
    }
}

/// A vault backup in progress.
pub struct BackupSession {
    job: String,
}

impl BackupSession {
    pub async fn prepare(job: &str, _cfg: &VaultJob) -> Result<BackupSession> {
        Err(not_yet(job))
    }

    pub fn artifacts(&self) -> Vec<ArtifactPlan> {
        Vec::new()
    }

    pub async fn open(&mut self, _artifact: &ArtifactPlan) -> Result<SourceStream> {
        Err(not_yet(&self.job))
    }

    pub async fn finish(&mut self) -> Result<serde_json::Value> {
        Err(not_yet(&self.job))
    }

    /// Called once the run is over, committed or not (hooks, local cleanup).
    pub async fn close(self, _committed: bool) {}

    /// One line for `drctl check`.
    pub fn describe(&self) -> String {
        String::new()
    }
}

pub async fn plan_restore(
    job: &str,
    _cfg: &VaultJob,
    _m: &Manifest,
    _a: &Artifact,
    _opts: &RestoreOptions,
) -> Result<RestoreStep> {
    Err(not_yet(job))
}

pub async fn open_sink(
    job: &str,
    _cfg: &VaultJob,
    _m: &Manifest,
    _a: &Artifact,
    _opts: &RestoreOptions,
) -> Result<Sink> {
    Err(not_yet(job))
}
