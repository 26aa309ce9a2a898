//! `kind = "volume"`: a directory tree streamed as a tar archive.
//!
//! Source: `path` (a host directory or a Docker volume's mountpoint), or `docker_volume = NAME`,
//! resolved with `docker volume inspect --format '{{ .Mountpoint }}' NAME` (the Docker CLI must be
//! on PATH, and the mountpoint visible to drctl). Or `pvc_path`: a Kubernetes PVC read and
//! written through exec into a pod that mounts it ([`pvc`]): tar runs in the pod and its stream is
//! re-encoded ([`restream`]) into the very same two artifacts, so restore and drills do not care
//! where a tree came from. Hooks always run on this host.
//!
//! A backup stores two artifacts:
//! * `data` (`tar`): the tree as a POSIX pax archive (see [`archive`] for what it keeps and what
//!   happens to files that change during the backup). It is built on a blocking thread that writes
//!   into a bounded channel (4 × 256 KiB) the pipeline reads: never staged, never held whole;
//! * `files` (`file-list-json`): one line per entry with type, size, mode, owner, mtime and, for
//!   files, the sha256 computed while the file went into the archive. It is encrypted like any
//!   artifact (names and hashes are data); restore drills compare a restored tree with it. It is
//!   spooled to an unlinked temporary file (in `$TMPDIR`) while `data` streams, so memory stays
//!   bounded whatever the number of files.
//!
//! The manifest's facts (not encrypted) hold counts only: files, directories, symlinks, hard links,
//! bytes, skipped and excluded entries, plus the root and the exclude patterns.
//!
//! Hooks (`before`, `after`, `on_failure`) are every kind's now ([`crate::jobs::hooks`], run by the
//! engine after `prepare`: `drctl check` prepares every job and must never stop a container); a
//! volume's also see `DRCTL_VOLUME_PATH`. Because `before` hooks may create the source (mount a
//! snapshot), the root is only required to exist after they ran.
//!
//! Restore: into `--to PATH` (or `--to-dir`), else the job's own path (a Docker volume's mountpoint
//! resolved again). For `pvc_path` jobs `--to` and the default are paths in the pod, restored as
//! [`pvc`] describes; `--to-dir` restores onto this host. A non-empty destination needs `--force`. The archive is extracted into a
//! private staging directory beside the destination with every entry checked ([`extract`]: no
//! absolute names, no `..`, nothing through a symlink, hard links only inside), and swapped in only
//! when the engine says every integrity check passed ([`place`]); otherwise the staging directory
//! is deleted and the destination is untouched. Owners are restored as numeric ids when drctl runs
//! as root (not with `--no-owner`). The `files` artifact has nothing to restore.

mod config;
pub(crate) mod drill;
pub(crate) mod facts;
mod validate;
pub use config::VolumeJob;

mod archive;
mod exclude;
pub(crate) mod extract;
mod files_cache;
mod listing;
pub(crate) mod place;
mod pvc;
mod restream;

use std::io::{Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use archive::{FileEntry, FileList, LIST_FORMAT, LIST_VERSION, Totals};
pub use exclude::Excludes;

use super::{ArtifactPlan, Consumer, RestoreOptions, RestoreStep, Sink, SourceStream};
use crate::exec::{Cmd, describe_status};
use crate::manifest::{Artifact, Manifest};
use crate::{Error, Result};

pub const FORMAT_TAR: &str = "tar";
pub const FORMAT_FILES: &str = "file-list-json";
const DATA: &str = "data";
const FILES: &str = "files";
/// Bytes per chunk handed from the archive thread to the pipeline, and chunks in flight.
const CHUNK: usize = 256 * 1024;
const CHUNKS: usize = 4;
/// Buffer between the restore pipeline and the extraction thread.
const RESTORE_PIPE: usize = 1024 * 1024;

/// Facts recorded in the manifest of a volume backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Facts {
    /// `path`, `docker_volume` or `pvc`.
    pub source: String,
    /// The directory archived (for `pvc`, the path inside the pod).
    pub root: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_volume: Option<String>,
    /// For `pvc`: the pod (and container) the tree was read through, `pod apps/web-0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(flatten)]
    pub totals: Totals,
    /// `pax` (POSIX.1-2001).
    pub tar_format: String,
}

/// Where the tree comes from.
#[derive(Debug, Clone)]
enum Source {
    Path(PathBuf),
    Docker {
        volume: String,
        mountpoint: PathBuf,
    },
    /// A directory in a pod ([`pvc`]).
    Pvc(pvc::Pvc),
}

impl Source {
    /// The root; for a PVC, the path inside the pod.
    fn root(&self) -> &Path {
        match self {
            Source::Path(p) => p,
            Source::Docker { mountpoint, .. } => mountpoint,
            Source::Pvc(p) => &p.path,
        }
    }
}

async fn resolve_source(job: &str, cfg: &VolumeJob) -> Result<Source> {
    if let Some(p) = &cfg.path {
        if !p.is_absolute() {
            return Err(Error::source_failed(job, format!("`path` must be absolute, not `{}`", p.display()), None));
        }
        return Ok(Source::Path(p.clone()));
    }
    if let Some(volume) = &cfg.docker_volume {
        let mountpoint = docker_mountpoint(job, volume).await?;
        return Ok(Source::Docker { volume: volume.clone(), mountpoint });
    }
    if let Some(path) = &cfg.pvc_path {
        return Ok(Source::Pvc(pvc::Pvc::resolve(job, cfg, path).await?));
    }
    Err(Error::source_failed(job, "no source: set `path`, `docker_volume` or `pvc_path`", None))
}

/// `docker volume inspect --format '{{ .Mountpoint }}' NAME`.
async fn docker_mountpoint(job: &str, volume: &str) -> Result<PathBuf> {
    let cmd = Cmd::new(crate::exec::docker_program())
        .arg("volume")
        .arg("inspect")
        .arg("--format")
        .arg("{{ .Mountpoint }}")
        .arg(volume);
    let (status, out, err) = cmd.output().await.map_err(|e| {
        Error::source_failed(
            job,
            format!("cannot run `docker` to find the mountpoint of volume `{volume}`: {e}"),
            Some("install the Docker CLI (with access to the engine), or set `path` to the volume's mountpoint".into()),
        )
    })?;
    if !status.success() {
        return Err(Error::source_failed(
            job,
            format!(
                "`{}` failed ({}): {}",
                cmd.display(),
                describe_status(&status),
                crate::tool_output::tail(&err, 5, "no error output")
            ),
            Some(format!("does the volume exist on this host? `docker volume ls` lists them; `{volume}` is the name")),
        ));
    }
    let mountpoint = out.trim();
    if !mountpoint.starts_with('/') {
        return Err(Error::source_failed(
            job,
            format!("`docker volume inspect` gave no usable mountpoint for volume `{volume}`: `{mountpoint}`"),
            None,
        ));
    }
    Ok(PathBuf::from(mountpoint))
}

/// The root to archive: an existing directory (symlinks to it are followed).
fn check_root(job: &str, root: &Path) -> Result<PathBuf> {
    let resolved = std::fs::canonicalize(root).map_err(|e| {
        Error::source_failed(
            job,
            format!("cannot open the volume at `{}`: {e}", root.display()),
            Some("check `path` (or that the `before` hooks create it)".into()),
        )
    })?;
    if !resolved.is_dir() {
        return Err(Error::source_failed(job, format!("`{}` is not a directory", root.display()), None));
    }
    Ok(resolved)
}

/// [`BackupSession::estimate`]'s walk: 512 bytes of header per entry plus each regular file's size
/// rounded up to 512, the two end blocks; `None` when the root cannot be read.
fn tar_estimate(root: &Path, excludes: &Excludes) -> Option<u64> {
    fn walk(root: &Path, dir: &Path, excludes: &Excludes, total: &mut u64) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else { continue };
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap_or(&path);
            if excludes.is_excluded(rel, meta.is_dir()) {
                continue;
            }
            *total += 512;
            if meta.is_file() {
                *total += meta.len().div_ceil(512) * 512;
            } else if meta.is_dir() {
                walk(root, &path, excludes, total);
            }
        }
    }
    std::fs::read_dir(root).ok()?;
    let mut total = 1024;
    walk(root, root, excludes, &mut total);
    Some(total)
}

/// The archive thread's result, kept for the `files` artifact and the facts.
struct Walked {
    totals: Totals,
    list: std::fs::File,
}

/// A volume backup in progress.
pub struct BackupSession {
    job: String,
    cfg: VolumeJob,
    source: Source,
    excludes: Arc<Excludes>,
    /// `open` was called: the backup touched the source, `after` hooks are due.
    started: bool,
    walked: Arc<Mutex<Option<Walked>>>,
    /// The files cache a chunked walk built, saved once the backup committed.
    files_cache: Arc<Mutex<Option<files_cache::PendingCache>>>,
    totals: Option<Totals>,
    root: Option<PathBuf>,
}

impl BackupSession {
    /// `before_hooks`: the job has `before` hooks, which may be what makes the root exist (a
    /// mounted snapshot): it is then checked when the backup opens it.
    pub async fn prepare(job: &str, cfg: &VolumeJob, before_hooks: bool) -> Result<BackupSession> {
        let excludes = Excludes::new(&cfg.exclude).map_err(|(i, m)| {
            Error::source_failed(job, format!("exclude[{i}]: {m}"), Some("see jobs/volume.toml".into()))
        })?;
        let source = resolve_source(job, cfg).await?;
        // `before` hooks may be what makes the root exist (a mounted snapshot): checked after them
        if !before_hooks {
            match &source {
                Source::Pvc(p) => p.check_dir(job).await?,
                _ => {
                    check_root(job, source.root())?;
                }
            }
        }
        Ok(BackupSession {
            job: job.to_string(),
            cfg: cfg.clone(),
            source,
            excludes: Arc::new(excludes),
            started: false,
            walked: Arc::default(),
            files_cache: Arc::default(),
            totals: None,
            root: None,
        })
    }

    pub fn artifacts(&self) -> Vec<ArtifactPlan> {
        vec![
            ArtifactPlan { name: DATA.into(), format: FORMAT_TAR, ext: "tar", size_hint: None },
            ArtifactPlan { name: FILES.into(), format: FORMAT_FILES, ext: "json", size_hint: None },
        ]
    }

    pub async fn open(&mut self, artifact: &ArtifactPlan) -> Result<SourceStream> {
        match artifact.format {
            FORMAT_TAR => self.open_data().await,
            FORMAT_FILES => self.open_files(),
            other => Err(Error::source_failed(&self.job, format!("unknown artifact format `{other}`"), None)),
        }
    }

    /// Open an artifact for chunked storage. The tree of a host path or Docker volume is walked
    /// straight into the chunk writer with the files cache (see [`files_cache`]); a PVC's tree
    /// and the file list go as byte streams.
    pub async fn open_chunked(&mut self, artifact: &ArtifactPlan) -> Result<crate::jobs::ChunkSource> {
        use crate::jobs::ChunkSource;
        if artifact.format != FORMAT_TAR || matches!(self.source, Source::Pvc(_)) {
            return Ok(ChunkSource::Stream(self.open(artifact).await?));
        }
        self.started = true;
        let root = check_root(&self.job, self.source.root())?;
        self.root = Some(root.clone());
        let list = spool(&self.job)?;
        let excludes = self.excludes.clone();
        let walked = self.walked.clone();
        let cache_out = self.files_cache.clone();
        let job = self.job.clone();
        let produce: crate::jobs::ChunkProducer = Box::new(move |w: &mut crate::chunked::ChunkWriter| {
            let path = files_cache::path(&job, w.scope());
            let old = files_cache::CacheReader::open(&path);
            let new = files_cache::CacheWriter::create(&path)
                .inspect_err(|e| {
                    tracing::warn!(job = %job, path = %path.display(), error = %e, "cannot write a files cache: the next backup reads every file");
                })
                .ok();
            let list = std::io::BufWriter::new(list);
            let (totals, list, new, (reused, read)) =
                archive::write_tree_cached(&root, &excludes, w, list, old, new).map_err(|e| walk_error(&job, e))?;
            let cache = new.map(files_cache::CacheWriter::finish).transpose().unwrap_or_else(|e| {
                tracing::warn!(job = %job, path = %path.display(), error = %e, "could not write the files cache: the next backup reads every file");
                None
            });
            let list = list.into_inner().map_err(|e| walk_error(&job, archive::WalkError::List(e.into_error())))?;
            tracing::info!(job = %job, runs_reused = reused, runs_read = read, "files cache");
            if let Ok(mut slot) = walked.lock() {
                *slot = Some(Walked { totals, list });
            }
            if let Ok(mut slot) = cache_out.lock() {
                *slot = cache;
            }
            Ok(())
        });
        Ok(ChunkSource::Producer { produce, completion: Box::pin(async { Ok(()) }) })
    }

    /// The size of the `data` tar, estimated by walking the tree's metadata (a header block per
    /// entry, file contents padded to blocks): a progress bar's total. Not for a PVC (read in a
    /// pod), nor when the walk fails (the bar then shows bytes and rate only).
    pub async fn estimate(&mut self, plans: &mut [ArtifactPlan]) {
        if matches!(self.source, Source::Pvc(_)) {
            return;
        }
        let (root, excludes) = (self.source.root().to_path_buf(), self.excludes.clone());
        let walked = tokio::task::spawn_blocking(move || tar_estimate(&root, &excludes)).await;
        if let Ok(Some(total)) = walked {
            for p in plans.iter_mut().filter(|p| p.format == FORMAT_TAR) {
                p.size_hint = Some(total);
            }
        }
    }

    /// What the job's hooks see of the source ([`crate::jobs::hooks`]).
    pub fn hook_env(&self) -> Vec<(&'static str, String)> {
        vec![("DRCTL_VOLUME_PATH", self.source.root().display().to_string())]
    }

    async fn open_data(&mut self) -> Result<SourceStream> {
        self.started = true;
        if let Source::Pvc(p) = &self.source {
            let p = p.clone();
            return self.open_pvc_data(p).await;
        }
        let root = check_root(&self.job, self.source.root())?;
        self.root = Some(root.clone());
        let list = spool(&self.job)?;

        let (tx, rx) = mpsc::channel::<Bytes>(CHUNKS);
        let excludes = self.excludes.clone();
        let walk = tokio::task::spawn_blocking(move || {
            let out = ChunkWriter { tx, buf: Vec::with_capacity(CHUNK) };
            let list = std::io::BufWriter::new(list);
            let (totals, out, list) = archive::write_tree(&root, &excludes, out, list)?;
            out.close().map_err(archive::WalkError::Write)?;
            let list = list.into_inner().map_err(|e| archive::WalkError::List(e.into_error()))?;
            Ok::<_, archive::WalkError>(Walked { totals, list })
        });
        let job = self.job.clone();
        let walked = self.walked.clone();
        let completion = Box::pin(async move {
            match walk.await {
                Ok(Ok(w)) => {
                    if let Ok(mut slot) = walked.lock() {
                        *slot = Some(w);
                    }
                    Ok(())
                }
                Ok(Err(e)) => Err(walk_error(&job, e)),
                Err(e) => Err(Error::source_failed(&job, format!("the archive thread failed: {e}"), None)),
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (Ok::<Bytes, std::io::Error>(chunk), rx))
        });
        Ok(SourceStream { reader: Box::new(tokio_util::io::StreamReader::new(Box::pin(stream))), completion })
    }

    /// `tar -c` in the pod, re-emitted as the local archive on a blocking thread (see [`pvc`]).
    async fn open_pvc_data(&mut self, pvc: pvc::Pvc) -> Result<SourceStream> {
        self.root = Some(pvc.path.clone());
        let linked = pvc.linked(&self.job).await?;
        let list = spool(&self.job)?;
        let mut remote = pvc.spawn_tar(&self.job).await?;
        let stdout = std::mem::replace(&mut remote.stdout, Box::new(tokio::io::empty()));

        let (tx, rx) = mpsc::channel::<Bytes>(CHUNKS);
        let excludes = self.excludes.clone();
        let handle = tokio::runtime::Handle::current();
        let fetcher = pvc.clone();
        let job = self.job.clone();
        let walk = tokio::task::spawn_blocking(move || {
            let input = tokio_util::io::SyncIoBridge::new_with_handle(stdout, handle.clone());
            let out = ChunkWriter { tx, buf: Vec::with_capacity(CHUNK) };
            let list = std::io::BufWriter::new(list);
            let mut refetch = |rel: &Path| handle.block_on(fetcher.fetch(&job, rel));
            let (totals, out, list) = restream::restream(input, &excludes, &linked, &mut refetch, out, list)?;
            out.close().map_err(restream::RestreamError::Write)?;
            let list = list.into_inner().map_err(|e| restream::RestreamError::List(e.into_error()))?;
            Ok::<_, restream::RestreamError>(Walked { totals, list })
        });
        let job = self.job.clone();
        let walked = self.walked.clone();
        let shown = pvc.tar_shown();
        let completion = Box::pin(async move {
            let result = match walk.await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(format!("the archive thread failed: {e}")),
            };
            // after a broken stream, tar's own exit status and stderr say more, when they come
            let finished = if result.is_ok() {
                Some(remote.wait().await)
            } else {
                tokio::time::timeout(std::time::Duration::from_secs(15), remote.wait()).await.ok()
            };
            let nothing = "nothing was committed";
            match finished {
                Some(Ok(f)) if !f.success => {
                    let message = f.check(&shown, &pvc.place).err().map(|e| e.message).unwrap_or_default();
                    return Err(Error::source_failed(
                        &job,
                        message,
                        Some(format!(
                            "{nothing}; check that `pvc_path` exists in the pod and that tar there can read every file (GNU tar exits 1 when a file changed while it was read: pause the writers in `before`)"
                        )),
                    ));
                }
                Some(Err(e)) if result.is_ok() => {
                    return Err(Error::source_failed(&job, e.message, Some(nothing.into())));
                }
                _ => {}
            }
            match result {
                Ok(w) => {
                    if let Ok(mut slot) = walked.lock() {
                        *slot = Some(w);
                    }
                    Ok(())
                }
                Err(message) => Err(Error::source_failed(&job, message, Some(nothing.into()))),
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (Ok::<Bytes, std::io::Error>(chunk), rx))
        });
        Ok(SourceStream { reader: Box::new(tokio_util::io::StreamReader::new(Box::pin(stream))), completion })
    }

    fn open_files(&mut self) -> Result<SourceStream> {
        let walked = self.walked.lock().ok().and_then(|mut w| w.take());
        let Some(Walked { totals, mut list }) = walked else {
            return Err(Error::source_failed(
                &self.job,
                "the file list is only available after the `data` artifact",
                None,
            ));
        };
        self.totals = Some(totals);
        list.rewind()
            .map_err(|e| Error::source_failed(&self.job, format!("cannot read back the file list: {e}"), None))?;
        Ok(SourceStream { reader: Box::new(tokio::fs::File::from_std(list)), completion: Box::pin(async { Ok(()) }) })
    }

    pub async fn finish(&mut self) -> Result<serde_json::Value> {
        let totals =
            self.totals.clone().ok_or_else(|| Error::source_failed(&self.job, "the backup did not complete", None))?;
        let facts = Facts {
            source: match &self.source {
                Source::Path(_) => "path".into(),
                Source::Docker { .. } => "docker_volume".into(),
                Source::Pvc(_) => "pvc".into(),
            },
            root: self.root.as_deref().unwrap_or(self.source.root()).display().to_string(),
            docker_volume: match &self.source {
                Source::Docker { volume, .. } => Some(volume.clone()),
                Source::Path(_) | Source::Pvc(_) => None,
            },
            pod: match &self.source {
                Source::Pvc(p) => Some(p.place.describe()),
                Source::Path(_) | Source::Docker { .. } => None,
            },
            exclude: self.cfg.exclude.clone(),
            totals,
            tar_format: "pax".into(),
        };
        Ok(serde_json::to_value(facts).unwrap_or_default())
    }

    /// Save the files cache of a committed backup (the job's `after` hooks run in the engine).
    pub async fn close(self, committed: bool) {
        if !self.started {
            return;
        }
        let cache = self.files_cache.lock().ok().and_then(|mut c| c.take());
        if committed && let Some(cache) = cache {
            let job = self.job.clone();
            let path = cache.path().to_path_buf();
            let saved = tokio::task::spawn_blocking(move || cache.commit()).await;
            if let Ok(Err(e)) = saved {
                tracing::warn!(job = %job, path = %path.display(), error = %e, "could not save the files cache: the next backup reads every file");
            }
        }
    }

    pub fn describe(&self) -> String {
        let what = match &self.source {
            Source::Path(p) => format!("`{}`", p.display()),
            Source::Docker { volume, mountpoint } => format!("docker volume `{volume}` at `{}`", mountpoint.display()),
            Source::Pvc(p) => p.describe(),
        };
        format!("will archive {what} ({} exclude pattern(s)); will store: {DATA}, {FILES}", self.cfg.exclude.len(),)
    }
}

fn walk_error(job: &str, e: archive::WalkError) -> Error {
    let hint = match &e {
        archive::WalkError::Changed { .. } => Some(
            "nothing was committed; stop or pause what writes to the volume with `before`/`after` hooks, or `exclude` the file"
                .to_string(),
        ),
        archive::WalkError::Read { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => Some(
            "nothing was committed; run drctl as a user that can read the whole volume (root), or `exclude` the entry"
                .to_string(),
        ),
        archive::WalkError::List(_) => Some("set TMPDIR to a writable directory with some free space".to_string()),
        _ => Some("nothing was committed".to_string()),
    };
    Error::source_failed(job, e.to_string(), hint)
}

/// An unlinked temporary file for the file list.
fn spool(job: &str) -> Result<std::fs::File> {
    let dir = std::env::temp_dir();
    let path = dir.join(format!(".drctl-{job}-files-{:08x}", rand::random::<u32>()));
    let file =
        std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path).map_err(|e| {
            Error::source_failed(
                job,
                format!("cannot create a temporary file for the file list in `{}`: {e}", dir.display()),
                Some("set TMPDIR to a writable directory".into()),
            )
        })?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

/// The archive thread's output: fixed-size chunks into a bounded channel.
struct ChunkWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Bytes::from(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the pipeline stopped reading"))
    }

    /// Send what is buffered; dropping the writer then ends the stream.
    fn close(mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl archive::ArchiveSink for ChunkWriter {}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------- restore

/// For a `pvc_path` job: the path in the pod to restore into (`--to` or `pvc_path`); `None` means
/// a directory on this host (`--to-dir`, or any other job).
fn pod_path(cfg: &VolumeJob, opts: &RestoreOptions) -> Option<PathBuf> {
    let own = cfg.pvc_path.as_ref()?;
    if opts.to_dir.is_some() {
        return None;
    }
    Some(opts.to.as_deref().map(PathBuf::from).unwrap_or_else(|| own.clone()))
}

async fn destination(job: &str, cfg: &VolumeJob, opts: &RestoreOptions) -> Result<PathBuf> {
    let chosen = if cfg.pvc_path.is_some() {
        opts.to_dir.clone()
    } else {
        opts.to.as_deref().map(PathBuf::from).or_else(|| opts.to_dir.clone())
    };
    let path = match chosen {
        Some(p) => p,
        None => resolve_source(job, cfg).await?.root().to_path_buf(),
    };
    if path.is_absolute() {
        return Ok(path);
    }
    let cwd = std::env::current_dir()
        .map_err(|e| Error::source_failed(job, format!("cannot resolve `{}`: {e}", path.display()), None))?;
    Ok(cwd.join(path))
}

fn restore_err(job: &str, dest: &Path, message: impl Into<String>) -> Error {
    Error::Restore { job: job.to_string(), destination: format!("`{}`", dest.display()), message: message.into() }
}

/// Resolve and inspect the destination; refuses a non-empty one without `--force`.
async fn checked_destination(job: &str, cfg: &VolumeJob, opts: &RestoreOptions) -> Result<(PathBuf, place::State)> {
    let dest = destination(job, cfg, opts).await?;
    checked_dir(job, &dest, opts.force, "")
}

/// Resolve and inspect directory `dest`; refuses a non-empty one without `force` (`why` ends the
/// refusal's detail: what `--force` would replace).
pub(crate) fn checked_dir(job: &str, dest: &Path, force: bool, why: &str) -> Result<(PathBuf, place::State)> {
    let (dest, state) = place::inspect(dest).map_err(|e| restore_err(job, dest, e.to_string()))?;
    if let place::State::NotEmpty(n) = state
        && !force
    {
        return Err(Error::DestinationNotEmpty {
            job: job.to_string(),
            destination: format!("`{}`", dest.display()),
            detail: format!("{n} entr{} at its top level{why}", if n == 1 { "y" } else { "ies" }),
        });
    }
    Ok((dest, state))
}

fn unknown_format(job: &str, a: &Artifact) -> Error {
    Error::source_failed(
        job,
        format!("artifact `{}` has format `{}`, which this drctl cannot restore", a.name, a.format),
        Some("use `--output FILE` to get the decrypted artifact".into()),
    )
}

pub async fn plan_restore(
    job: &str,
    cfg: &VolumeJob,
    _m: &Manifest,
    a: &Artifact,
    opts: &RestoreOptions,
) -> Result<RestoreStep> {
    match a.format.as_str() {
        FORMAT_FILES => Ok(RestoreStep {
            artifact: a.name.clone(),
            destination: "(none)".into(),
            action: "nothing to write: the per-file hash list is kept for restore drills".into(),
        }),
        FORMAT_TAR if pod_path(cfg, opts).is_some() => {
            let path = pod_path(cfg, opts).unwrap_or_default();
            let dest = pvc::destination(job, cfg, &path, opts).await?;
            let action = match dest.state {
                pvc::State::Missing => {
                    "extract into a new directory in the pod (staged beside it, moved into place once every check passed)"
                        .to_string()
                }
                pvc::State::Empty => {
                    "extract into the empty directory in the pod (staged inside it, swapped in once every check passed)"
                        .to_string()
                }
                pvc::State::NotEmpty(n) => format!(
                    "replace what it holds ({n} top-level entr{}): extract into a staging directory inside it, swap it in once every check passed, then delete the old tree",
                    if n == 1 { "y" } else { "ies" }
                ),
            };
            Ok(RestoreStep { artifact: a.name.clone(), destination: dest.pvc.describe(), action })
        }
        FORMAT_TAR => {
            let (dest, state) = checked_destination(job, cfg, opts).await?;
            let action = match state {
                place::State::Missing => {
                    "extract into a new directory (staged beside it, moved into place once every check passed)"
                        .to_string()
                }
                place::State::Empty => {
                    "extract into the empty directory (staged, swapped in once every check passed)".to_string()
                }
                place::State::NotEmpty(n) => format!(
                    "replace what it holds ({n} top-level entr{}): extract beside it, swap it in once every check passed, then delete the old tree",
                    if n == 1 { "y" } else { "ies" }
                ),
            };
            Ok(RestoreStep { artifact: a.name.clone(), destination: dest.display().to_string(), action })
        }
        _ => Err(unknown_format(job, a)),
    }
}

pub async fn open_sink(job: &str, cfg: &VolumeJob, _m: &Manifest, a: &Artifact, opts: &RestoreOptions) -> Result<Sink> {
    match a.format.as_str() {
        FORMAT_FILES => Ok(Sink {
            writer: Box::new(tokio::io::sink()),
            consumer: Consumer::None,
            destination: "(none)".into(),
            on_failure: None,
        }),
        FORMAT_TAR if pod_path(cfg, opts).is_some() => {
            let path = pod_path(cfg, opts).unwrap_or_default();
            let dest = pvc::destination(job, cfg, &path, opts).await?;
            pvc::sink(job, dest, opts).await
        }
        FORMAT_TAR => {
            let (dest, _) = checked_destination(job, cfg, opts).await?;
            // SAFETY: geteuid has no preconditions and cannot fail.
            let root = unsafe { libc::geteuid() } == 0;
            let staging = place::stage(&dest)
                .map_err(|e| restore_err(job, &dest, format!("cannot create a staging directory beside it: {e}")))?;
            Ok(tar_sink(job, staging, extract::Options { owners: root && !opts.no_owner }, None))
        }
        _ => Err(unknown_format(job, a)),
    }
}

/// Run on the staging directory after a complete extraction, before the swap (a physical
/// PostgreSQL restore writes its recovery settings there); a failure rolls the restore back.
pub(crate) type BeforeSwap = Box<dyn FnOnce(&Path) -> std::io::Result<()> + Send>;

/// A sink that extracts into `staging` as bytes arrive, and swaps the result in on commit.
pub(crate) fn tar_sink(
    job: &str,
    staging: place::Staging,
    opts: extract::Options,
    before_swap: Option<BeforeSwap>,
) -> Sink {
    let (writer, reader) = tokio::io::duplex(RESTORE_PIPE);
    let (commit, committed) = oneshot::channel::<()>();
    let job = job.to_string();
    let dest = staging.dest().to_path_buf();
    let destination = dest.display().to_string();
    let task = tokio::spawn(async move {
        let handle = tokio::runtime::Handle::current();
        let dir = staging.dir().to_path_buf();
        let extracted = tokio::task::spawn_blocking(move || {
            let input = tokio_util::io::SyncIoBridge::new_with_handle(reader, handle);
            extract::extract(input, &dir, &opts)
        })
        .await;
        let failed = match extracted {
            Ok(Ok(stats)) => {
                tracing::debug!(?stats, "extracted into the staging directory");
                match before_swap {
                    Some(f) => {
                        let dir = staging.dir().to_path_buf();
                        match tokio::task::spawn_blocking(move || f(&dir)).await {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) => Some(format!("cannot finish the restored tree: {e}")),
                            Err(e) => Some(format!("the finishing thread failed: {e}")),
                        }
                    }
                    None => None,
                }
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("the extraction thread failed: {e}")),
        };
        if let Some(message) = failed {
            let _ = tokio::task::spawn_blocking(move || staging.discard()).await;
            return Err(restore_err(&job, &dest, format!("{message}; nothing was changed")));
        }
        if committed.await.is_err() {
            let _ = tokio::task::spawn_blocking(move || staging.discard()).await;
            return Err(restore_err(
                &job,
                &dest,
                "rolled back: the restore did not pass its checks; nothing was changed",
            ));
        }
        match tokio::task::spawn_blocking(move || staging.commit()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(restore_err(&job, &dest, format!("cannot move the restored tree into place: {e}"))),
            Err(e) => Err(restore_err(&job, &dest, format!("the swap thread failed: {e}"))),
        }
    });
    Sink::task(writer, task, commit, destination)
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    fn sample_tar(t: &Path) -> Vec<u8> {
        let src = t.join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/f"), b"restored").unwrap();
        archive::write_tree(&src, &Excludes::new(&[]).unwrap(), Vec::new(), Vec::new()).unwrap().1
    }

    async fn feed(sink: Sink, bytes: &[u8]) -> (Consumer, std::io::Result<()>) {
        let Sink { mut writer, consumer, .. } = sink;
        let mut r = writer.write_all(bytes).await;
        if r.is_ok() {
            r = writer.shutdown().await;
        }
        (consumer, r)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sink_changes_nothing_until_commit() {
        let t = tempfile::tempdir().unwrap();
        let tar = sample_tar(t.path());
        let dest = t.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("old"), b"old").unwrap();

        // rollback: the commit sender is dropped
        let sink = tar_sink("v", place::stage(&dest).unwrap(), extract::Options { owners: false }, None);
        let (consumer, wrote) = feed(sink, &tar).await;
        wrote.unwrap();
        let Consumer::Task { task, commit } = consumer else { panic!("a task") };
        assert_eq!(names(&dest), ["old"], "nothing visible before commit");
        drop(commit);
        let err = task.await.unwrap().unwrap_err().to_string();
        assert!(err.contains("rolled back"), "{err}");
        assert_eq!(names(&dest), ["old"]);
        assert_eq!(names(t.path()), ["dest", "src"], "the staging directory is gone");

        // commit
        let sink = tar_sink("v", place::stage(&dest).unwrap(), extract::Options { owners: false }, None);
        let (consumer, wrote) = feed(sink, &tar).await;
        wrote.unwrap();
        let Consumer::Task { task, commit } = consumer else { panic!("a task") };
        commit.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert_eq!(names(&dest), ["d"]);
        assert_eq!(std::fs::read(dest.join("d/f")).unwrap(), b"restored");
        assert_eq!(names(t.path()), ["dest", "src"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hostile_archive_stops_the_sink_and_changes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("dest");
        let mut w = archive::TarWriter::new(Vec::new());
        w.header(&archive::HeaderSpec {
            path: b"../escaped",
            kind: tar::EntryType::Regular,
            mode: 0o644,
            uid: 0,
            gid: 0,
            uname: None,
            gname: None,
            mtime: 0,
            mtime_nsec: 0,
            size: 4,
            link: None,
            device: None,
        })
        .unwrap();
        w.data().extend_from_slice(b"evil");
        w.pad(4).unwrap();
        // plenty of trailing data: the writer must see the consumer go away, not hang
        let mut tar = w.finish().unwrap();
        tar.extend(std::iter::repeat_n(0u8, 4 * RESTORE_PIPE));
        let sink = tar_sink("v", place::stage(&dest).unwrap(), extract::Options { owners: false }, None);
        let (consumer, _wrote) = feed(sink, &tar).await;
        let Consumer::Task { task, commit } = consumer else { panic!("a task") };
        let err = task.await.unwrap().unwrap_err().to_string();
        drop(commit);
        assert!(err.contains("refused") && err.contains("nothing was changed"), "{err}");
        assert!(names(t.path()).is_empty(), "no destination, no staging, nothing escaped: {:?}", names(t.path()));
    }
}
