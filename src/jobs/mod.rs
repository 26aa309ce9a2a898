//! Job kinds: where backup bytes come from and where restored bytes go.
//!
//! Each kind is one module; the engine talks to them through the closed enums below, so adding a
//! kind means one module plus one arm per `match` (a forgotten arm does not compile).
//!
//! A backup is a *session*: `prepare` checks the source and tools, `artifacts` says what will be
//! stored (one per database, say), `open` starts one artifact's byte stream, and `finish` returns
//! the facts recorded in the manifest. A source stream comes with a completion future that says,
//! after the bytes end, whether they were complete (pg_dump's exit status, for instance): the
//! engine commits an artifact only when both the bytes and the completion are good.

pub mod postgres;

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::Result;
use crate::config::{JobConfig, JobSpec};
use crate::exec::Running;
use crate::manifest::{Artifact, Manifest};

/// One file a backup will store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactPlan {
    /// Name within the backup (database name, `globals`).
    pub name: String,
    /// Plaintext format, recorded in the manifest.
    pub format: &'static str,
    /// File extension before `.zst.age`.
    pub ext: &'static str,
    /// Expected plaintext size, for progress (may be far off).
    pub size_hint: Option<u64>,
}

/// Resolves, after the stream ended, whether the source produced a complete artifact.
pub type Completion = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// One artifact's plaintext bytes and the completion that vouches for them.
pub struct SourceStream {
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    pub completion: Completion,
}

/// A backup in progress for one job.
pub enum BackupSession {
    Postgres(postgres::BackupSession),
}

impl BackupSession {
    /// Check the source is reachable and its tools usable; gather what is needed to plan.
    pub async fn prepare(job: &JobConfig) -> Result<BackupSession> {
        Ok(match &job.spec {
            JobSpec::Postgres(pg) => {
                BackupSession::Postgres(postgres::BackupSession::prepare(&job.name, pg).await?)
            }
        })
    }

    pub fn artifacts(&self) -> Vec<ArtifactPlan> {
        match self {
            BackupSession::Postgres(s) => s.artifacts(),
        }
    }

    pub async fn open(&mut self, artifact: &ArtifactPlan) -> Result<SourceStream> {
        match self {
            BackupSession::Postgres(s) => s.open(artifact).await,
        }
    }

    /// Facts for the manifest, once every artifact is done.
    pub async fn finish(self) -> Result<serde_json::Value> {
        match self {
            BackupSession::Postgres(s) => s.finish().await,
        }
    }
}

/// Where restored bytes of one artifact go, and the process consuming them.
pub struct Sink {
    pub writer: Box<dyn AsyncWrite + Send + Unpin>,
    /// The consumer (pg_restore, psql); `None` when writing a file.
    pub process: Option<Running>,
    /// Human description of the destination.
    pub destination: String,
    /// Undo what opening the sink created (a new, now empty database) when the restore fails.
    pub on_failure: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

/// Options of `drctl restore` that reach the job kind.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// `--to`: another destination than the job's own source.
    pub to: Option<String>,
    /// `--force`: replace existing data.
    pub force: bool,
    /// `--no-owner`: do not restore object ownership (restoring into a cluster without the roles).
    pub no_owner: bool,
    /// Several databases are restored in one go: each goes to the database of its own name on
    /// the `--to` server (set by the engine).
    pub several: bool,
}

/// One planned restore step, for `--dry-run` and for the restore itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreStep {
    pub artifact: String,
    pub destination: String,
    pub action: String,
}

/// Plan the restore of `artifact` of a backup; refuses a non-empty destination without `--force`.
pub async fn plan_restore(
    job: &JobConfig,
    manifest: &Manifest,
    artifact: &Artifact,
    opts: &RestoreOptions,
) -> Result<RestoreStep> {
    match &job.spec {
        JobSpec::Postgres(pg) => {
            postgres::plan_restore(&job.name, pg, manifest, artifact, opts).await
        }
    }
}

/// Start the consumer for `artifact` (after [`plan_restore`] accepted it).
pub async fn open_sink(
    job: &JobConfig,
    manifest: &Manifest,
    artifact: &Artifact,
    opts: &RestoreOptions,
) -> Result<Sink> {
    match &job.spec {
        JobSpec::Postgres(pg) => postgres::open_sink(&job.name, pg, manifest, artifact, opts).await,
    }
}
