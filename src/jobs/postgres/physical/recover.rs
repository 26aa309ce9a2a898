//! Point-in-time recovery: lay out a data directory from a base backup and configure PostgreSQL
//! to replay drctl's WAL archive to a chosen moment; and `drctl wal fetch`, the `restore_command`
//! that serves that archive to the recovering server.
//!
//! The data directory is extracted into a private staging directory beside `--to-dir` and swapped
//! in only after the whole base backup passed its checks (the volume restore's mechanism), with
//! `recovery.signal` and the recovery settings (appended to `postgresql.auto.conf`) written
//! before the swap. drctl never starts the server: the operator starts it, PostgreSQL replays,
//! and (with the default `recovery_target_action = 'pause'`) waits to be checked and promoted.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::base::PhysicalFacts;
use super::lsn::{Segments, parse_history_name};
use super::store;
use crate::engine::Engine;
use crate::jobs::volume::{extract, place};
use crate::jobs::{JobConfig, RestoreOptions, RestoreStep, Sink};
use crate::manifest::{Artifact, Manifest};
use crate::pipeline::keys;
use crate::targets::Target;
use crate::{Error, Result};

/// How far recovery replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Just to the base backup's consistent point (`--id`, `--before`).
    Immediate,
    /// Everything archived (`--latest`).
    Latest,
    /// Up to this moment, inclusive (`--to-time`).
    Time(jiff::Timestamp),
}

/// `--recovery-action`: what the server does at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RecoveryAction {
    /// Stay in recovery, read-only, to be checked; then `SELECT pg_wal_replay_resume()` promotes.
    #[default]
    Pause,
    /// Open for writes at once (a new timeline).
    Promote,
    /// Stop the server at the target.
    Shutdown,
}

impl RecoveryAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryAction::Pause => "pause",
            RecoveryAction::Promote => "promote",
            RecoveryAction::Shutdown => "shutdown",
        }
    }
}

/// The recovery a physical restore configures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub target: RecoveryTarget,
    pub action: RecoveryAction,
    /// The config file `restore_command` passes to `drctl wal fetch` (absolute).
    pub config: PathBuf,
    /// Drills: serve WAL through this relay socket (`drctl wal relay`) instead, for a server
    /// running as a user that cannot read the config.
    pub relay: Option<PathBuf>,
}

fn restore_err(job: &str, dest: &Path, message: impl Into<String>) -> Error {
    Error::Restore { job: job.to_string(), destination: dest.display().to_string(), message: message.into() }
}

fn need_dir(job: &str) -> Error {
    Error::source_failed(
        job,
        "a physical backup restores as a data directory: add `--to-dir DIR` (a new or stopped server's PGDATA)",
        Some("e.g. `drctl restore JOB --to-time 2026-12-04T14:04:00Z --to-dir /var/lib/postgresql/15/main`".into()),
    )
}

/// One line: what `restore` will do.
pub fn plan(job: &str, m: &Manifest, opts: &RestoreOptions) -> Result<RestoreStep> {
    let dest = opts.to_dir.clone().ok_or_else(|| need_dir(job))?;
    let (dest, state) =
        crate::jobs::volume::checked_dir(job, &dest, opts.force, " (stop the server; `--force` replaces it)")?;
    let facts = PhysicalFacts::of(&m.facts).unwrap_or_default();
    let recovery = opts.recovery.as_ref();
    let to = match recovery.map(|r| &r.target) {
        Some(RecoveryTarget::Time(t)) => format!("replay WAL to {t}"),
        Some(RecoveryTarget::Latest) => "replay all archived WAL".into(),
        Some(RecoveryTarget::Immediate) | None => {
            format!("replay WAL to the backup's consistent point ({})", facts.stop_lsn)
        }
    };
    let action = recovery.map(|r| r.action).unwrap_or_default().as_str();
    Ok(RestoreStep {
        artifact: m.artifacts.first().map(|a| a.name.clone()).unwrap_or_default(),
        destination: dest.display().to_string(),
        action: format!(
            "lay out the data directory (PostgreSQL {}, base backup {} .. {}), then on start {to}, then {action}{}",
            facts.server_version,
            facts.start_lsn,
            facts.stop_lsn,
            if matches!(state, place::State::NotEmpty(_)) { "; replaces what is there" } else { "" }
        ),
    })
}

/// Extract the base backup into staging; before the swap, write the recovery settings.
pub async fn open_sink(job: &str, m: &Manifest, _a: &Artifact, opts: &RestoreOptions) -> Result<Sink> {
    plan(job, m, opts)?;
    let dest = opts.to_dir.clone().ok_or_else(|| need_dir(job))?;
    let (dest, _) = place::inspect(&dest).map_err(|e| restore_err(job, &dest, e.to_string()))?;
    let staging = place::stage(&dest)
        .map_err(|e| restore_err(job, &dest, format!("cannot create a staging directory beside it: {e}")))?;
    let recovery = opts.recovery.clone().ok_or_else(|| {
        Error::Pipeline("a physical restore without recovery settings (the CLI always sets them)".into())
    })?;
    let settings = recovery_settings(job, &m.backup_id, &recovery)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let finish: crate::jobs::volume::BeforeSwap = Box::new(move |dir: &Path| write_recovery(dir, &settings));
    Ok(crate::jobs::volume::tar_sink(job, staging, extract::Options { owners: root && !opts.no_owner }, Some(finish)))
}

/// The lines added to `postgresql.auto.conf`.
fn recovery_settings(job: &str, backup: &str, r: &Recovery) -> Result<String> {
    let exe = std::env::current_exe().map_err(|e| Error::Pipeline(format!("cannot find drctl's own path: {e}")))?;
    let quote = |s: &str| s.replace('\'', "''");
    let shell = |p: &Path| format!("\"{}\"", p.display().to_string().replace('"', "\\\""));
    let command = match &r.relay {
        Some(socket) => format!("{} wal relay {} \"%f\" \"%p\"", shell(&exe), shell(socket)),
        None => format!("{} --config {} wal fetch {job} \"%f\" \"%p\"", shell(&exe), shell(&r.config)),
    };
    let mut out = format!(
        "\n# added by `drctl restore` (backup {backup}): recovery from drctl's WAL archive\n\
         restore_command = '{}'\n",
        quote(&command)
    );
    match &r.target {
        RecoveryTarget::Immediate => out.push_str("recovery_target = 'immediate'\n"),
        RecoveryTarget::Latest => {}
        RecoveryTarget::Time(t) => {
            out.push_str(&format!("recovery_target_time = '{}'\n", t.strftime("%Y-%m-%d %H:%M:%S%.f+00")));
        }
    }
    out.push_str("recovery_target_timeline = 'latest'\n");
    if r.target != RecoveryTarget::Latest {
        out.push_str(&format!("recovery_target_action = '{}'\n", r.action.as_str()));
    }
    Ok(out)
}

/// Append the settings, create `recovery.signal`, and give the directory to the data's owner
/// (PostgreSQL refuses a data directory it does not own, or one others can read).
fn write_recovery(dir: &Path, settings: &str) -> std::io::Result<()> {
    let owner = std::fs::metadata(dir.join("PG_VERSION"))?;
    let mut conf = std::fs::OpenOptions::new().append(true).create(true).open(dir.join("postgresql.auto.conf"))?;
    conf.write_all(settings.as_bytes())?;
    conf.sync_all()?;
    let signal = std::fs::File::create(dir.join("recovery.signal"))?;
    signal.sync_all()?;
    // a base backup taken on a standby carries its standby.signal: the restored server would stay
    // a standby of the old primary forever instead of recovering and opening
    match std::fs::remove_file(dir.join("standby.signal")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    for p in [dir.join("postgresql.auto.conf"), dir.join("recovery.signal"), dir.to_path_buf()] {
        std::os::unix::fs::chown(&p, Some(owner.uid()), Some(owner.gid()))?;
    }
    // pg_basebackup -X none leaves pg_wal empty or absent; the server needs the directory
    let wal = dir.join("pg_wal");
    if !wal.exists() {
        std::fs::create_dir(&wal)?;
        std::os::unix::fs::chown(&wal, Some(owner.uid()), Some(owner.gid()))?;
    }
    Ok(())
}

/// What `wal fetch` found.
#[derive(Debug)]
pub enum Fetched {
    /// Written to the destination (which object, from which target).
    Written { key: String, target: String },
    /// Not archived: the normal end of the archive (PostgreSQL then ends recovery).
    Missing,
}

/// Why `wal fetch` could not serve a file that recovery must not go past silently.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FetchFailed(pub String);

/// `drctl wal fetch JOB NAME DEST`: the newest archived copy of WAL file `name` (a segment, its
/// newest partial under the full name, or a timeline history file) into `dest`.
///
/// A segment that is missing while later ones exist is a gap, not the end of the archive: that
/// is an error (the server aborts recovery instead of ending it early and promoting without the
/// rest), naming the segment.
pub async fn fetch(
    engine: &Engine,
    job: &JobConfig,
    name: &str,
    dest: &Path,
) -> std::result::Result<Fetched, FetchFailed> {
    let targets: Vec<Arc<Target>> = job.common.targets.iter().filter_map(|t| engine.target(t).ok()).collect();
    if targets.is_empty() {
        return Err(FetchFailed(format!("job `{}`: no target can be opened", job.name)));
    }
    let identities = Arc::new(crate::engine::restore::load_identities(engine).map_err(|e| FetchFailed(e.to_string()))?);
    let seg = ORDERING;
    let (tli, is_history) = if let Some(tli) = parse_history_name(name) {
        (tli, true)
    } else if name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        (u32::from_str_radix(&name[..8], 16).map_err(|_| FetchFailed(format!("`{name}`")))?, false)
    } else {
        // .partial and .backup files: PostgreSQL asks for them only in corner cases; not archived
        return Ok(Fetched::Missing);
    };
    let key = if is_history { store::history_key(&job.name, name) } else { store::segment_key(&job.name, tli, name) };
    let mut problems = Vec::new();
    for t in &targets {
        match try_get(t, &key, &identities, dest).await {
            Ok(true) => return Ok(Fetched::Written { key, target: t.name().to_string() }),
            Ok(false) => {}
            Err(e) => problems.push(format!("{}: {e}", t.name())),
        }
    }
    // a complete copy that exists but cannot be read is never replaced by an older partial
    if is_history || !problems.is_empty() {
        return if problems.is_empty() { Ok(Fetched::Missing) } else { Err(FetchFailed(problems.join("; "))) };
    }
    // no complete copy: the newest partial of the segment, if any; else is it a gap?
    let mut newest: Option<(u64, Arc<Target>, String)> = None;
    let mut later = false;
    for t in &targets {
        let listed = match store::list_timeline(t, &job.name, tli, seg).await {
            Ok(l) => l,
            Err(e) => {
                problems.push(format!("{}: {e}", t.name()));
                continue;
            }
        };
        if let Some(n) = seg_of(name) {
            later |= listed.complete.range(n + 1..).next().is_some();
            if let Some((off, k)) = listed.partial.get(&n).and_then(|p| p.iter().next_back())
                && newest.as_ref().is_none_or(|(o, _, _)| off > o)
            {
                newest = Some((*off, t.clone(), k.clone()));
            }
        }
    }
    if let Some((_, t, k)) = newest {
        return match try_get(&t, &k, &identities, dest).await {
            Ok(true) => Ok(Fetched::Written { key: k, target: t.name().to_string() }),
            Ok(false) => Err(FetchFailed(format!("partial segment `{k}` vanished from target `{}`", t.name()))),
            Err(e) => Err(FetchFailed(format!("partial segment `{k}` on target `{}`: {e}", t.name()))),
        };
    }
    if later {
        return Err(FetchFailed(format!(
            "WAL segment {name} is missing from the archive of job `{}` while later segments are there: a GAP; \
             recovery cannot pass it (restore an older point, or a base backup taken after the gap)",
            job.name
        )));
    }
    if !problems.is_empty() {
        return Err(FetchFailed(problems.join("; ")));
    }
    Ok(Fetched::Missing)
}

/// `wal fetch` does not know the cluster's segment size; numbering names as 1 MiB segments (the
/// smallest, 4096 per "log") orders the names of any segment size the same way, which is all it
/// needs (is there a later segment, which partials belong to this one).
const ORDERING: Segments = Segments { size: 1 << 20 };

fn seg_of(name: &str) -> Option<u64> {
    ORDERING.parse(name).map(|(_, n)| n)
}

/// Fetch and decode `key` from `t` into `dest`; `Ok(false)` when `t` does not have it.
async fn try_get(
    t: &Target,
    key: &str,
    identities: &Arc<keys::Identities>,
    dest: &Path,
) -> std::result::Result<bool, String> {
    match t.stat(key).await {
        Ok(None) => return Ok(false),
        Ok(Some(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    let stored = t.get_bytes(key).await.map_err(|e| e.to_string())?;
    let size = store::decode_to_file(stored, identities.clone(), dest).await.map_err(|e| format!("`{key}`: {e}"))?;
    if parse_history_name(key.rsplit('/').next().unwrap_or_default().trim_end_matches(".zst.age")).is_none()
        && Segments::new(size).is_none()
    {
        let _ = std::fs::remove_file(dest);
        return Err(format!("`{key}` decodes to {size} bytes: not a WAL segment"));
    }
    Ok(true)
}
