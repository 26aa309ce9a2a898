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
//! replaced only after a backup committed. Deleting it costs one full read, nothing else.
//!
//! Bounded memory: the file holds the runs (one JSON line each, about 200 bytes per entry), then
//! an index sorted by fingerprint, then a footer. Only the index is held in memory (44 bytes per
//! run, about 1.5 bytes per file at the average run of 32 entries); a run is read when the walk
//! meets its fingerprint. The next cache is written while the walk goes, runs first, the index at
//! the end, beside the old one; it replaces it only once the backup committed.

use std::fs::File;
use std::io::{BufWriter, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::listing::{FileEntry, Totals};
use crate::chunked::recipe::Step;

/// The file starts with this line (version 1 was one JSON document, loaded whole: ignored now).
const HEADER: &[u8] = b"drctl-files-cache v2\n";
/// And ends with: the index's offset, the number of runs, this.
const FOOTER_MAGIC: &[u8; 8] = b"DRCTLFC2";
const FOOTER: usize = 8 + 8 + 8;
/// One index entry: fingerprint, offset, length.
const ENTRY: usize = 32 + 8 + 4;
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

/// A run's fingerprint.
pub type Fingerprint = [u8; 32];

/// Where the cache of `job` in repository `scope` lives.
pub fn path(job: &str, scope: &str) -> PathBuf {
    crate::catalog::state_dir().join("files-cache").join(format!("{job}.{scope}.cache"))
}

/// The previous backup's cache, opened for lookups.
#[derive(Default)]
pub struct CacheReader {
    file: Option<File>,
    index: Vec<(Fingerprint, u64, u32)>,
}

impl CacheReader {
    /// The cache at `path`; empty when there is none or it is unreadable (then everything is read).
    pub fn open(path: &Path) -> CacheReader {
        match Self::try_open(path) {
            Ok(Some(r)) => r,
            Ok(None) => CacheReader::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable files cache: every file is read this time");
                CacheReader::default()
            }
        }
    }

    fn try_open(path: &Path) -> std::io::Result<Option<CacheReader>> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |what: &str| std::io::Error::other(format!("not a drctl files cache ({what})"));
        let mut header = vec![0u8; HEADER.len()];
        file.read_exact(&mut header).map_err(|_| bad("header"))?;
        if header != HEADER {
            return Err(bad("header"));
        }
        let len = file.metadata()?.len();
        if len < (HEADER.len() + FOOTER) as u64 {
            return Err(bad("too short"));
        }
        let mut footer = [0u8; FOOTER];
        file.read_exact_at(&mut footer, len - FOOTER as u64)?;
        if &footer[16..] != FOOTER_MAGIC {
            return Err(bad("footer"));
        }
        let at = u64::from_le_bytes(footer[..8].try_into().unwrap_or_default());
        let count = u64::from_le_bytes(footer[8..16].try_into().unwrap_or_default());
        if count.checked_mul(ENTRY as u64).and_then(|n| n.checked_add(at)) != Some(len - FOOTER as u64) {
            return Err(bad("index size"));
        }
        file.seek(SeekFrom::Start(at))?;
        let mut raw = vec![0u8; (count as usize) * ENTRY];
        file.read_exact(&mut raw)?;
        let index: Vec<(Fingerprint, u64, u32)> = raw
            .chunks_exact(ENTRY)
            .map(|e| {
                let mut fp = [0u8; 32];
                fp.copy_from_slice(&e[..32]);
                let off = u64::from_le_bytes(e[32..40].try_into().unwrap_or_default());
                let n = u32::from_le_bytes(e[40..44].try_into().unwrap_or_default());
                (fp, off, n)
            })
            .collect();
        if index.windows(2).any(|w| w[0].0 >= w[1].0) || index.iter().any(|e| e.1 + u64::from(e.2) > at) {
            return Err(bad("index order"));
        }
        Ok(Some(CacheReader { file: Some(file), index }))
    }

    /// The run cached under `fp`, if any (an unreadable one is a miss).
    pub fn get(&self, fp: &Fingerprint) -> Option<Run> {
        let i = self.index.binary_search_by(|e| e.0.cmp(fp)).ok()?;
        let (_, off, n) = self.index[i];
        let mut body = vec![0u8; n as usize];
        self.file.as_ref()?.read_exact_at(&mut body, off).ok()?;
        serde_json::from_slice(&body).ok()
    }
}

/// The next cache, written while the walk goes (see the module docs).
pub struct CacheWriter {
    out: Option<BufWriter<File>>,
    /// Removed on drop unless [`CacheWriter::finish`] handed it on.
    tmp: Option<PathBuf>,
    path: PathBuf,
    index: Vec<(Fingerprint, u64, u32)>,
    offset: u64,
}

impl CacheWriter {
    /// Start the cache that will replace `path`, beside it (mode 0600: it names every file).
    pub fn create(path: &Path) -> std::io::Result<CacheWriter> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        sweep_partials(path);
        let tmp = path.with_extension(format!("cache.partial-{}", crate::layout::random_suffix()));
        let f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        let mut out = BufWriter::new(f);
        out.write_all(HEADER)?;
        Ok(CacheWriter {
            out: Some(out),
            tmp: Some(tmp),
            path: path.to_path_buf(),
            index: Vec::new(),
            offset: HEADER.len() as u64,
        })
    }

    /// Add a run (the first one under a fingerprint wins).
    pub fn add(&mut self, fp: Fingerprint, run: &Run) -> std::io::Result<()> {
        let mut body = serde_json::to_vec(run).map_err(std::io::Error::other)?;
        body.push(b'\n');
        let n = u32::try_from(body.len()).map_err(|_| std::io::Error::other("a run too large to cache"))?;
        self.out.as_mut().ok_or_else(|| std::io::Error::other("finished"))?.write_all(&body)?;
        self.index.push((fp, self.offset, n));
        self.offset += u64::from(n);
        Ok(())
    }

    /// Write the index and the footer and sync: ready to replace the old cache.
    pub fn finish(mut self) -> std::io::Result<PendingCache> {
        self.index.sort_by_key(|e| e.0);
        self.index.dedup_by(|b, a| a.0 == b.0);
        let mut out = self.out.take().ok_or_else(|| std::io::Error::other("finished"))?;
        for (fp, off, n) in &self.index {
            out.write_all(fp)?;
            out.write_all(&off.to_le_bytes())?;
            out.write_all(&n.to_le_bytes())?;
        }
        out.write_all(&self.offset.to_le_bytes())?;
        out.write_all(&(self.index.len() as u64).to_le_bytes())?;
        out.write_all(FOOTER_MAGIC)?;
        let f = out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(PendingCache { tmp: self.tmp.take(), path: self.path.clone() })
    }
}

impl Drop for CacheWriter {
    fn drop(&mut self) {
        // not finished: abandoned (the walk failed)
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// A partial cache left by a backup that was killed is removed by a later one, once a day old (a
/// younger one may belong to a run still going).
const PARTIAL_SWEEP_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn sweep_partials(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return };
    let prefix = format!("{}.partial-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > PARTIAL_SWEEP_AFTER);
        if old && e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A finished cache waiting for its backup to commit: [`PendingCache::commit`] puts it in place;
/// dropped, it is removed.
pub struct PendingCache {
    tmp: Option<PathBuf>,
    path: PathBuf,
}

impl PendingCache {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replace the old cache (and remove a version 1 cache of the same job and scope).
    pub fn commit(mut self) -> std::io::Result<()> {
        let tmp = self.tmp.take().unwrap_or_default();
        let done = std::fs::rename(&tmp, &self.path);
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        let _ = std::fs::remove_file(self.path.with_extension("json"));
        done
    }
}

impl Drop for PendingCache {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn run(n: usize) -> Run {
        let entry: FileEntry = serde_json::from_value(serde_json::json!({
            "path": format!("f{n}"), "type": "file", "size": n, "mode": "0644", "uid": 0, "gid": 0,
            "mtime": 1, "mtime_nsec": 0
        }))
        .unwrap();
        Run { chunks: vec![], entries: vec![entry; n % 3 + 1], totals: Totals::default() }
    }

    fn fp(i: u8) -> Fingerprint {
        *blake3::hash(&[i]).as_bytes()
    }

    fn partials(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".partial-"))
            .collect()
    }

    #[test]
    fn a_written_cache_reads_back_run_by_run_and_replaces_the_old_one_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.scope.cache");
        std::fs::write(path.with_extension("json"), b"{}").unwrap();
        let mut w = CacheWriter::create(&path).unwrap();
        for i in (0..50u8).rev() {
            w.add(fp(i), &run(i as usize)).unwrap();
        }
        w.add(fp(7), &run(99)).unwrap(); // a second run under one fingerprint: the first wins
        let pending = w.finish().unwrap();
        assert!(CacheReader::open(&path).get(&fp(1)).is_none(), "not in place before the commit");
        pending.commit().unwrap();
        let r = CacheReader::open(&path);
        for i in 0..50u8 {
            let got = r.get(&fp(i)).unwrap();
            assert_eq!(got.entries.len(), i as usize % 3 + 1);
        }
        assert!(r.get(&fp(200)).is_none());
        assert!(!path.with_extension("json").exists(), "the version 1 cache is removed");
        assert!(partials(dir.path()).is_empty());
    }

    #[test]
    fn partial_caches_a_day_old_are_swept_younger_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.scope.cache");
        let old = dir.path().join("job.scope.cache.partial-aaaaaa");
        let young = dir.path().join("job.scope.cache.partial-bbbbbb");
        let other = dir.path().join("other.scope.cache.partial-cccccc");
        for p in [&old, &young, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        let two_days = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
        for p in [&old, &other] {
            std::fs::File::options().write(true).open(p).unwrap().set_modified(two_days).unwrap();
        }
        let w = CacheWriter::create(&path).unwrap();
        assert!(!old.exists(), "a killed run's partial cache is removed");
        assert!(young.exists(), "one that may belong to a running backup stays");
        assert!(other.exists(), "another job's is not this writer's business");
        drop(w);
    }

    #[test]
    fn an_abandoned_or_uncommitted_cache_leaves_nothing_and_a_damaged_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.scope.cache");
        let mut w = CacheWriter::create(&path).unwrap();
        w.add(fp(1), &run(1)).unwrap();
        drop(w);
        assert!(partials(dir.path()).is_empty(), "a walk that failed leaves no partial cache");
        let mut w = CacheWriter::create(&path).unwrap();
        w.add(fp(1), &run(1)).unwrap();
        drop(w.finish().unwrap());
        assert!(partials(dir.path()).is_empty() && !path.exists(), "a backup that failed saves nothing");
        // committed, then damaged: treated as empty (everything is read once), never an error
        let mut w = CacheWriter::create(&path).unwrap();
        w.add(fp(1), &run(1)).unwrap();
        w.finish().unwrap().commit().unwrap();
        let mut data = std::fs::read(&path).unwrap();
        let n = data.len();
        data.truncate(n - 3);
        std::fs::write(&path, &data).unwrap();
        assert!(CacheReader::open(&path).get(&fp(1)).is_none());
        std::fs::write(&path, b"{\"format\":\"drctl-files-cache\",\"version\":1,\"runs\":{}}").unwrap();
        assert!(CacheReader::open(&path).get(&fp(1)).is_none(), "a version 1 cache is ignored");
    }

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
