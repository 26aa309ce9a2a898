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

mod config;
pub mod gitlab;
pub mod hooks;
pub mod postgres;
pub mod redis;
pub mod suspicious;
pub mod vault;
pub mod volume;

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::Result;
use crate::exec::Running;
use crate::manifest::{Artifact, Manifest};
pub use config::{JobCommon, JobConfig, JobSpec, Kind, KindSettings, Storage, VerifyConfig};

/// One file a backup will store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactPlan {
    /// Name within the backup (database name, `globals`).
    pub name: String,
    /// Plaintext format, recorded in the manifest.
    pub format: &'static str,
    /// File extension before `.zst.age`.
    pub ext: &'static str,
    /// The plaintext size when it is known closely enough to be a progress bar's total (a base
    /// backup's data directory); `None` shows bytes, rate and elapsed time without a total. A
    /// database's size is not one: a dump leaves out indexes and free space (a bar with it stopped
    /// at about 64 %).
    pub size_hint: Option<u64>,
}

/// Resolves, after the stream ended, whether the source produced a complete artifact.
pub type Completion = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// One artifact's plaintext bytes and the completion that vouches for them.
pub struct SourceStream {
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    pub completion: Completion,
}

/// What a chunked artifact is made from (`storage = "chunked"`).
pub enum ChunkSource {
    /// The same byte stream a stream artifact is made from.
    Stream(SourceStream),
    /// A producer that writes into the chunk writer itself, on a blocking thread: a volume tree
    /// forces chunk boundaries around files and reuses the chunks of unchanged ones.
    Producer { produce: ChunkProducer, completion: Completion },
}

/// See [`ChunkSource::Producer`].
pub type ChunkProducer = Box<dyn FnOnce(&mut crate::chunked::ChunkWriter) -> Result<()> + Send>;

/// A backup in progress for one job.
// one value per run: the size difference between kinds costs nothing worth boxing for
#[allow(clippy::large_enum_variant)]
pub enum BackupSession {
    Postgres(postgres::BackupSession),
    /// `method = "physical"`: a base backup.
    PostgresPhysical(postgres::physical::BaseBackup),
    Redis(redis::BackupSession),
    Volume(volume::BackupSession),
    Vault(vault::BackupSession),
    Gitlab(gitlab::BackupSession),
}

/// Dispatch one expression over every kind's session.
macro_rules! each_session {
    ($session:expr, $s:ident => $body:expr) => {
        match $session {
            BackupSession::Postgres($s) => $body,
            BackupSession::PostgresPhysical($s) => $body,
            BackupSession::Redis($s) => $body,
            BackupSession::Volume($s) => $body,
            BackupSession::Vault($s) => $body,
            BackupSession::Gitlab($s) => $body,
        }
    };
}

impl BackupSession {
    /// Check the source is reachable and its tools usable; gather what is needed to plan.
    pub async fn prepare(job: &JobConfig) -> Result<BackupSession> {
        let name = job.name.as_str();
        Ok(match &job.spec {
            JobSpec::Postgres(c) if c.method == postgres::Method::Physical => {
                BackupSession::PostgresPhysical(postgres::physical::BaseBackup::prepare(name, c).await?)
            }
            JobSpec::Postgres(c) => BackupSession::Postgres(postgres::BackupSession::prepare(name, c).await?),
            JobSpec::Redis(c) => BackupSession::Redis(redis::BackupSession::prepare(name, c).await?),
            JobSpec::Volume(c) => {
                BackupSession::Volume(volume::BackupSession::prepare(name, c, !job.common.before.is_empty()).await?)
            }
            JobSpec::Vault(c) => BackupSession::Vault(vault::BackupSession::prepare(name, c).await?),
            JobSpec::Gitlab(c) => BackupSession::Gitlab(gitlab::BackupSession::prepare(name, c).await?),
        })
    }

    pub fn artifacts(&self) -> Vec<ArtifactPlan> {
        each_session!(self, s => s.artifacts())
    }

    pub async fn open(&mut self, artifact: &ArtifactPlan) -> Result<SourceStream> {
        each_session!(self, s => s.open(artifact).await)
    }

    /// Open an artifact for chunked storage.
    pub async fn open_chunked(&mut self, artifact: &ArtifactPlan) -> Result<ChunkSource> {
        match self {
            BackupSession::Volume(s) => s.open_chunked(artifact).await,
            BackupSession::Postgres(_)
            | BackupSession::PostgresPhysical(_)
            | BackupSession::Redis(_)
            | BackupSession::Vault(_)
            | BackupSession::Gitlab(_) => Ok(ChunkSource::Stream(self.open(artifact).await?)),
        }
    }

    /// Facts for the manifest, once every artifact is done and stored on `live` (a base backup
    /// also waits there for the WAL it needs).
    pub async fn finish(&mut self, live: &[std::sync::Arc<crate::targets::Target>]) -> Result<serde_json::Value> {
        match self {
            BackupSession::PostgresPhysical(s) => s.finish(live).await,
            BackupSession::Postgres(s) => s.finish().await,
            BackupSession::Redis(s) => s.finish().await,
            BackupSession::Volume(s) => s.finish().await,
            BackupSession::Vault(s) => s.finish().await,
            BackupSession::Gitlab(s) => s.finish().await,
        }
    }

    /// The run is over (`committed` or not): run after-hooks, clean up local leftovers. Always
    /// called once a session was prepared, whatever happened after.
    pub async fn close(self, committed: bool) {
        each_session!(self, s => s.close(committed).await)
    }

    /// Fill in `size_hint`s the source can count cheaply, for a progress bar's total (a volume:
    /// a metadata-only walk of the tree). Only when progress is shown: it costs a walk.
    pub async fn estimate(&mut self, plans: &mut [ArtifactPlan]) {
        match self {
            BackupSession::Volume(s) => s.estimate(plans).await,
            BackupSession::Postgres(_)
            | BackupSession::PostgresPhysical(_)
            | BackupSession::Redis(_)
            | BackupSession::Vault(_)
            | BackupSession::Gitlab(_) => {}
        }
    }

    /// What the job's hooks see of the source beyond the job and backup id (a volume's path).
    pub fn hook_env(&self) -> Vec<(&'static str, String)> {
        match self {
            BackupSession::Volume(s) => s.hook_env(),
            BackupSession::Postgres(_)
            | BackupSession::PostgresPhysical(_)
            | BackupSession::Redis(_)
            | BackupSession::Vault(_)
            | BackupSession::Gitlab(_) => Vec::new(),
        }
    }

    /// One line for `drctl check` about the source.
    pub fn describe(&self) -> String {
        each_session!(self, s => s.describe())
    }

    /// What `drctl check` should warn about the source (message, hint).
    pub fn warnings(&self) -> Vec<(String, String)> {
        match self {
            BackupSession::PostgresPhysical(s) => s.warnings(),
            BackupSession::Postgres(_)
            | BackupSession::Redis(_)
            | BackupSession::Volume(_)
            | BackupSession::Vault(_)
            | BackupSession::Gitlab(_) => Vec::new(),
        }
    }

    /// The other tools a backup or restore needs, checked for `drctl check`.
    pub async fn check_tools(&self) -> Result<()> {
        match self {
            BackupSession::Postgres(s) => s.check_companion_tools().await.map(|_| ()),
            BackupSession::PostgresPhysical(s) => s.check_tools().await,
            BackupSession::Redis(_) | BackupSession::Volume(_) | BackupSession::Vault(_) | BackupSession::Gitlab(_) => {
                Ok(())
            }
        }
    }
}

/// Where restored bytes of one artifact go, and the process consuming them.
pub struct Sink {
    pub writer: Box<dyn AsyncWrite + Send + Unpin>,
    /// What reads from `writer` and applies the data.
    pub consumer: Consumer,
    /// Human description of the destination.
    pub destination: String,
    /// Undo what opening the sink created (a new, now empty database) when the restore fails.
    pub on_failure: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Sink {
    /// A sink whose bytes an in-process task applies once `commit` fires (see [`Consumer::Task`]).
    pub fn task(
        writer: impl AsyncWrite + Send + Unpin + 'static,
        task: tokio::task::JoinHandle<Result<()>>,
        commit: tokio::sync::oneshot::Sender<()>,
        destination: String,
    ) -> Sink {
        Sink { writer: Box::new(writer), consumer: Consumer::Task { task, commit }, destination, on_failure: None }
    }
}

/// The consumer of restored bytes. Every kind MUST apply the data only once the engine says every
/// check passed: a process is killed otherwise (pg_restore's single transaction rolls back), a task
/// is told through its `commit` channel (dropped = roll back).
// one value per restored artifact: not worth boxing
#[allow(clippy::large_enum_variant)]
pub enum Consumer {
    /// A file or stdout: nothing to wait for.
    None,
    /// A child process (pg_restore, psql).
    Process(Running),
    /// An in-process task (tar extraction, an HTTP upload, a replication stream). After reading
    /// end of input it waits for `commit`; if the sender is dropped it must roll back and return.
    Task { task: tokio::task::JoinHandle<Result<()>>, commit: tokio::sync::oneshot::Sender<()> },
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
    /// `--to-dir`: place the artifact as files in this directory (redis: `dump.rdb` for an
    /// offline restart) instead of loading it into a server.
    pub to_dir: Option<std::path::PathBuf>,
    /// Several databases are restored in one go: each goes to the database of its own name on
    /// the `--to` server (set by the engine).
    pub several: bool,
    /// `--jobs`: parallel streams (postgres); `None` = one per core.
    pub jobs: Option<usize>,
    /// Physical postgres backups: how far the restored server replays WAL, and what it does then.
    pub recovery: Option<postgres::physical::Recovery>,
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
    let name = job.name.as_str();
    match &job.spec {
        JobSpec::Postgres(c) => postgres::plan_restore(name, c, manifest, artifact, opts).await,
        JobSpec::Redis(c) => redis::plan_restore(name, c, manifest, artifact, opts).await,
        JobSpec::Volume(c) => volume::plan_restore(name, c, manifest, artifact, opts).await,
        JobSpec::Vault(c) => vault::plan_restore(name, c, manifest, artifact, opts).await,
        JobSpec::Gitlab(c) => gitlab::plan_restore(name, c, manifest, artifact, opts).await,
    }
}

/// Start the consumer for `artifact` (after [`plan_restore`] accepted it).
pub async fn open_sink(
    job: &JobConfig,
    manifest: &Manifest,
    artifact: &Artifact,
    opts: &RestoreOptions,
) -> Result<Sink> {
    let name = job.name.as_str();
    match &job.spec {
        JobSpec::Postgres(c) => postgres::open_sink(name, c, manifest, artifact, opts).await,
        JobSpec::Redis(c) => redis::open_sink(name, c, manifest, artifact, opts).await,
        JobSpec::Volume(c) => volume::open_sink(name, c, manifest, artifact, opts).await,
        JobSpec::Vault(c) => vault::open_sink(name, c, manifest, artifact, opts).await,
        JobSpec::Gitlab(c) => gitlab::open_sink(name, c, manifest, artifact, opts).await,
    }
}
