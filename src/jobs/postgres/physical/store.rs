//! WAL on the targets (public layout, see docs/architecture.md "On the target"):
//!
//! ```text
//! <job>/wal/<TLI>/<segment>.zst.age                       a complete segment
//! <job>/wal/<TLI>/<segment>.<offset>.partial.zst.age      the segment's first <offset> bytes (hex),
//!                                                         zero-padded to the segment size
//! <job>/wal/<TLI>.history.zst.age                         a timeline history file
//! ```
//!
//! Each object is one zstd+age stream of the file PostgreSQL expects (the age and zstd CLIs give
//! it back). Objects are small (a segment, 16 MiB by default), so one is encoded in memory and
//! then written to every target. The partial's offset is in its name so that how far the archive
//! reaches is known from a listing alone, without the identity (`drctl check`, the receiver's resume). None of these names is a backup
//! id, so the cleanup of incomplete backup uploads never matches them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::lsn::{Lsn, Segments};
use crate::pipeline::{EncodeParams, decode_blocking, encode_blocking, keys};
use crate::progress::Progress;
use crate::targets::Target;
use crate::{Error, Result};

/// The prefix of a job's WAL archive.
pub fn wal_prefix(job: &str) -> String {
    format!("{job}/wal/")
}

/// Whether `key` (under a job's prefix) belongs to the WAL archive.
pub fn is_wal_key(job: &str, key: &str) -> bool {
    key.starts_with(&wal_prefix(job))
}

pub fn segment_key(job: &str, tli: u32, name: &str) -> String {
    format!("{job}/wal/{tli:08X}/{name}.zst.age")
}

pub fn partial_key(job: &str, tli: u32, name: &str, offset: u64) -> String {
    format!("{job}/wal/{tli:08X}/{name}.{offset:08X}.partial.zst.age")
}

pub fn history_key(job: &str, name: &str) -> String {
    format!("{job}/wal/{name}.zst.age")
}

/// What one timeline's listing on one target holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// Complete segments by number.
    pub complete: std::collections::BTreeSet<u64>,
    /// Partial segments: number → offsets stored (keys by offset).
    pub partial: BTreeMap<u64, BTreeMap<u64, String>>,
}

impl Timeline {
    /// From the keys listed under `<job>/wal/<TLI>/` (pure).
    pub fn from_keys<'a>(keys: impl Iterator<Item = &'a str>, seg: Segments) -> Timeline {
        let mut t = Timeline::default();
        for key in keys {
            let file = key.rsplit('/').next().unwrap_or_default();
            let Some(stem) = file.strip_suffix(".zst.age") else { continue };
            if let Some((_, segno)) = seg.parse(stem) {
                t.complete.insert(segno);
            } else if let Some(rest) = stem.strip_suffix(".partial")
                && let Some((name, off)) = rest.split_once('.')
                && let Some((_, segno)) = seg.parse(name)
                && let Ok(off) = u64::from_str_radix(off, 16)
            {
                t.partial.entry(segno).or_default().insert(off, key.to_string());
            }
        }
        t
    }

    /// Whether WAL from `from` up to `to` is all there (complete segments, the last one possibly
    /// partial but reaching `to`).
    pub fn covers(&self, from: Lsn, to: Lsn, seg: Segments) -> bool {
        let last = seg.segno(to);
        let whole = (seg.segno(from)..last).all(|n| self.complete.contains(&n));
        let reach = self.complete.contains(&last)
            || self
                .partial
                .get(&last)
                .and_then(|p| p.keys().next_back())
                .is_some_and(|&off| seg.start(last).0 + off >= to.0);
        whole && reach
    }

    /// The newest position stored (the end of the newest complete segment, or of a newer partial),
    /// whatever lies before it: where a resumed stream must go on from.
    pub fn frontier(&self, seg: Segments) -> Option<Lsn> {
        let complete = self.complete.last().map(|n| seg.start(n + 1));
        let partial = self
            .partial
            .iter()
            .next_back()
            .and_then(|(n, offs)| offs.keys().next_back().map(|o| Lsn(seg.start(*n).0 + o)));
        complete.max(partial)
    }
}

/// List one timeline's WAL on `target`.
pub async fn list_timeline(target: &Target, job: &str, tli: u32, seg: Segments) -> Result<Timeline> {
    let listed = target.list(&format!("{job}/wal/{tli:08X}/")).await?;
    Ok(Timeline::from_keys(listed.iter().map(|o| o.key.as_str()), seg))
}

/// zstd + age of `plain`, in memory (a segment: bounded by `wal_segment_size`).
pub async fn encode(plain: Bytes, params: &EncodeParams) -> Result<Bytes> {
    let params = params.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(crate::pipeline::CHANNEL_CHUNKS);
    let encoding = tokio::task::spawn_blocking(move || {
        encode_blocking(std::io::Cursor::new(plain), &params, tx, &Progress::hidden())
    });
    let mut out = Vec::new();
    while let Some(chunk) = rx.recv().await {
        out.extend_from_slice(&chunk);
    }
    encoding.await.map_err(|e| Error::Pipeline(format!("the encoding thread failed: {e}")))??;
    Ok(Bytes::from(out))
}

/// Write `stored` under `key` to every target; the first failure, naming its target, fails it.
pub async fn put_everywhere(targets: &[Arc<Target>], key: &str, stored: Bytes) -> Result<()> {
    let puts = targets.iter().map(|t| {
        let stored = stored.clone();
        async move { t.put_bytes(key, stored).await }
    });
    for r in futures::future::join_all(puts).await {
        r?;
    }
    Ok(())
}

/// Decrypt and decompress a stored object into `dest` (written under a temporary name, synced,
/// then renamed, so PostgreSQL never sees half a file). Returns the plaintext size, or why it
/// failed (the caller names the object).
pub async fn decode_to_file(
    stored: Vec<u8>,
    identities: Arc<keys::Identities>,
    dest: &Path,
) -> std::result::Result<u64, String> {
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::result::Result<u64, String> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".drctl-wal-")
            .tempfile_in(dir)
            .map_err(|e| format!("cannot create a file in {}: {e}", dir.display()))?;
        let summary =
            decode_blocking(std::io::Cursor::new(stored), identities.as_slice(), &mut tmp, &Progress::hidden())
                .map_err(|e| e.to_string())?;
        tmp.as_file_mut().flush().and_then(|()| tmp.as_file().sync_all()).map_err(|e| format!("cannot write: {e}"))?;
        tmp.persist(&dest).map_err(|e| format!("cannot rename into {}: {}", dest.display(), e.error))?;
        Ok(summary.plaintext.size)
    })
    .await
    .map_err(|e| format!("the decoding thread failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_reads_complete_and_partial_segments() {
        let seg = Segments::DEFAULT;
        let keys = [
            "db/wal/00000001/000000010000000000000002.zst.age",
            "db/wal/00000001/000000010000000000000003.zst.age",
            "db/wal/00000001/000000010000000000000004.00010000.partial.zst.age",
            "db/wal/00000001/000000010000000000000004.00200000.partial.zst.age",
            "db/wal/00000001/.tmp-upload-xyz",
            "db/wal/00000001/000000010000000000000004.zzzz.partial.zst.age",
        ];
        let t = Timeline::from_keys(keys.iter().copied(), seg);
        assert_eq!(t.complete.iter().copied().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(t.partial[&4].keys().copied().collect::<Vec<_>>(), [0x10000, 0x200000]);
        let lsn = |s: &str| s.parse::<Lsn>().unwrap();
        assert!(t.covers(lsn("0/2000028"), lsn("0/4100000"), seg));
        assert!(t.covers(lsn("0/2000028"), lsn("0/4200000"), seg));
        assert!(!t.covers(lsn("0/2000028"), lsn("0/4200001"), seg), "beyond the newest partial");
        assert!(!t.covers(lsn("0/1000028"), lsn("0/3000000"), seg), "segment 1 is missing");
        assert_eq!(t.frontier(seg), Some(lsn("0/4200000")));
        let holed = Timeline::from_keys(
            ["db/wal/00000001/000000010000000000000002.zst.age", "db/wal/00000001/000000010000000000000005.zst.age"]
                .into_iter(),
            seg,
        );
        assert_eq!(holed.frontier(seg), Some(lsn("0/6000000")), "the newest, whatever lies before");
        assert!(!holed.covers(lsn("0/2000000"), lsn("0/5000010"), seg));
    }

    #[test]
    fn keys_are_never_backup_ids() {
        let cutoff: jiff::Timestamp = "2099-01-01T00:00:00Z".parse().unwrap();
        let keys = [
            segment_key("db", 1, "000000010000000000000002"),
            partial_key("db", 1, "000000010000000000000003", 0x1000),
            history_key("db", "00000002.history"),
        ];
        assert!(keys.iter().all(|k| is_wal_key("db", k)));
        let orphans = crate::engine::prune::orphan_keys(keys.iter().map(String::as_str), cutoff);
        assert!(orphans.is_empty(), "{orphans:?}");
    }
}
