//! The files cache of chunked volume backups: what lets a second backup of an unchanged tree
//! touch only metadata.
//!
//! The walk groups entries into *runs* (a large file alone; otherwise up to [`RUN_ENTRIES`]
//! entries or [`RUN_BYTES`] of content, ended early after an entry whose path hashes to a
//! boundary, so that an inserted file shifts only its own run). A run's fingerprint hashes, for
//! every entry, everything its tar header holds plus the file's identity (device, inode, size,
//! mtime, ctime), as `lstat` reports it *before* anything is read. The chunk writer is cut at
//! every run boundary, so a run maps to whole chunks: when the previous backup cached the same
//! fingerprint and every target still holds its chunks, those chunks are reused and the run's
//! files are not opened. A run is cached only when it was read cleanly: nothing vanished,
//! nothing changed between `lstat` and reading, and no ctime is within [`RACY`] of the start of
//! the walk (a file written in the same clock tick as its `lstat` could change unseen).
//!
//! Kept on the backup host, one file per job and repository scope under the state directory,
//! replaced only after a backup committed. Deleting it costs one full read, nothing else. It
//! is loaded whole (about 200 bytes per file); bounding it is a later step.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::listing::{FileEntry, Totals};
use crate::chunked::recipe::Step;

pub const FORMAT: &str = "drctl-files-cache";
pub const VERSION: u32 = 1;
/// A regular file at least this large is a run of its own.
pub const BIG_FILE: u64 = 1 << 20;
/// Entries in a run at most.
pub const RUN_ENTRIES: usize = 1000;
/// Content bytes in a run at most (before the boundary).
pub const RUN_BYTES: u64 = 4 << 20;
/// One path in this many ends a run (content-defined run boundaries). A changed small file
/// re-stores its run, but every run is a chunk in every recipe: measured on 488 MiB / 41 010 files
/// (bench/chunked.sh), 32 gives +261 KB for an unchanged tree and +43 MB for 1 % of the small files
/// changed, 8 gives +851 KB and +14 MB (and a slower restore: more, smaller blobs).
pub const RUN_BOUNDARY: u8 = 32;
/// How close to the start of the walk a ctime keeps a run out of the cache (file systems stamp
/// times from a coarse clock: a write in the same tick as the `lstat` leaves them unchanged).
/// `DRCTL_FILES_CACHE_RACY_MS` overrides it (tests, which make their trees just before).
pub const RACY: std::time::Duration = std::time::Duration::from_secs(1);

/// [`RACY`], or its override.
pub fn racy_window() -> std::time::Duration {
    std::env::var("DRCTL_FILES_CACHE_RACY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_millis)
        .unwrap_or(RACY)
}

/// Whether a ctime is too close to (or after) the start of the walk to trust.
pub fn is_racy(ctime: std::time::SystemTime, walk_started: std::time::SystemTime, window: std::time::Duration) -> bool {
    ctime + window >= walk_started
}

/// One cached run: its chunks and what the walk recorded for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub chunks: Vec<Step>,
    pub entries: Vec<FileEntry>,
    pub totals: Totals,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FilesCache {
    pub format: String,
    pub version: u32,
    /// Fingerprint (hex) → run.
    pub runs: HashMap<String, Run>,
}

impl FilesCache {
    pub fn empty() -> FilesCache {
        FilesCache { format: FORMAT.into(), version: VERSION, runs: HashMap::new() }
    }
}

/// Where the cache of `job` in repository `scope` lives.
pub fn path(job: &str, scope: &str) -> PathBuf {
    crate::catalog::state_dir().join("files-cache").join(format!("{job}.{scope}.json"))
}

/// The cache at `path`; empty when there is none or it is unreadable (then everything is read).
pub fn load(path: &Path) -> FilesCache {
    let Ok(data) = std::fs::read(path) else { return FilesCache::empty() };
    match serde_json::from_slice::<FilesCache>(&data) {
        Ok(c) if c.format == FORMAT && c.version == VERSION => c,
        _ => {
            tracing::warn!(path = %path.display(), "ignoring an unreadable files cache: every file is read this time");
            FilesCache::empty()
        }
    }
}

/// Replace the cache at `path` (written aside, synced, renamed).
pub fn save(path: &Path, cache: &FilesCache) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("json.partial-{}", crate::layout::random_suffix()));
    let result = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        // it names every file of the volume: readable by drctl's user only
        let f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        let mut f = std::io::BufWriter::new(f);
        serde_json::to_writer(&mut f, cache).map_err(std::io::Error::other)?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    #[test]
    fn recent_ctimes_are_racy() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let w = Duration::from_secs(1);
        assert!(super::is_racy(start, start, w));
        assert!(super::is_racy(start - Duration::from_millis(999), start, w));
        assert!(super::is_racy(start + Duration::from_secs(5), start, w), "a ctime after the start");
        assert!(!super::is_racy(start - Duration::from_millis(1001), start, w));
        assert!(super::is_racy(start, start, Duration::ZERO), "the same instant is never trusted");
        assert!(!super::is_racy(start - Duration::from_nanos(1), start, Duration::ZERO));
    }
}
