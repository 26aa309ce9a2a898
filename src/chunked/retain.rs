//! Object Lock on a chunk repository (an S3 target with `object_lock`).
//!
//! A backup's own objects are locked for `days` from their upload; the packs it reuses were
//! locked when they were written, or last extended, and that lock may end before the new
//! backup's. Once it ended, anyone with delete rights could remove a pack that a still-locked
//! backup needs. So a backup (or a sync) that refers to a pack whose lock ends too early extends
//! that lock before it commits, and lists the pack again in its own index with the new date.
//! Packs and indexes are locked for `days` plus a slack ([`crate::layout::Retention::Shared`]), so
//! a pack is extended about once per slack, not by every backup, and the dates come from the
//! indexes, so a backup does not ask the store about every pack.
//!
//! What holds: for every backup B and every pack P it refers to, P is locked at least as long as
//! B, and some index listing P is locked at least as long as P (an index is uploaded after every
//! date it records was set, with the same lock length as a pack).

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};

use super::key::ChunkId;
use super::repo::{self, Index, PackEntry};
use crate::layout::Retention;
use crate::targets::Target;
use crate::{Error, Result};

/// A reused pack's lock must end at least this much after a backup's lock computed at its
/// commit (the manifest is uploaded a moment later, and locked from then).
const MARGIN: SignedDuration = SignedDuration::from_hours(1);

/// Extensions in flight at once.
const CONCURRENCY: usize = 8;

/// What a target's indexes say about its packs' locks.
pub struct PackLocks {
    pack_of: HashMap<ChunkId, usize>,
    /// Every pack once, with the latest date any index records for it.
    packs: Vec<PackEntry>,
}

impl PackLocks {
    pub fn from_indexes(indexes: &[(String, Index)]) -> PackLocks {
        let mut at: HashMap<&str, usize> = HashMap::new();
        let mut packs: Vec<PackEntry> = Vec::new();
        let mut pack_of = HashMap::new();
        for (_, idx) in indexes {
            for p in &idx.packs {
                let i = *at.entry(p.id.as_str()).or_insert_with(|| {
                    packs.push(p.clone());
                    packs.len() - 1
                });
                packs[i].until = packs[i].until.max(p.until);
                for b in &p.blobs {
                    if let Some(id) = repo::parse_id(&b.0) {
                        pack_of.entry(id).or_insert(i);
                    }
                }
            }
        }
        PackLocks { pack_of, packs }
    }

    /// The packs holding any of `chunks` (those this repository has) whose recorded lock ends
    /// before `needed`.
    fn ending_before<'a>(&self, chunks: impl Iterator<Item = &'a ChunkId>, needed: Timestamp) -> Vec<&PackEntry> {
        let mut seen = HashSet::new();
        chunks
            .filter_map(|c| self.pack_of.get(c))
            .filter(|&&i| seen.insert(i))
            .map(|&i| &self.packs[i])
            .filter(|p| p.until.is_none_or(|u| u < needed))
            .collect()
    }
}

/// The latest date any index records for each pack (absent: none recorded).
pub fn latest_dates(indexes: &[(String, Index)]) -> HashMap<&str, Timestamp> {
    let mut out: HashMap<&str, Timestamp> = HashMap::new();
    for p in indexes.iter().flat_map(|(_, idx)| &idx.packs) {
        if let Some(u) = p.until {
            let e = out.entry(p.id.as_str()).or_insert(u);
            *e = (*e).max(u);
        }
    }
    out
}

/// Extend the lock of every pack on `target` that holds one of `chunks` and would be unlocked
/// before a backup committed now; returns those packs with their new dates, for the caller's
/// index. Nothing on a target without Object Lock.
///
/// # Errors
/// When an extension fails (the pack gone, the bucket without Object Lock, no permission): the
/// caller must not commit a backup on this target.
pub async fn extend(
    target: &Target,
    scope: &str,
    locks: &PackLocks,
    chunks: &HashSet<ChunkId>,
) -> Result<Vec<PackEntry>> {
    let (Some(backup), Some(until)) = (target.retention(Retention::Backup), target.retention(Retention::Shared)) else {
        return Ok(vec![]);
    };
    let stale: Vec<PackEntry> = locks.ending_before(chunks.iter(), backup + MARGIN).into_iter().cloned().collect();
    let results: Vec<Result<PackEntry>> = futures::stream::iter(stale)
        .map(|p| async move {
            let key = repo::pack_key(scope, &p.id);
            target.extend_retention(&key, until).await.map_err(|e| {
                Error::Pipeline(format!(
                    "pack `{key}` on target `{}` is locked for less time than this backup will be, and extending its Object Lock failed: {e}",
                    target.name()
                ))
            })?;
            Ok(PackEntry { until: Some(until), ..p })
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunked::repo::BlobEntry;

    fn pack(id: &str, chunks: &[u8], until: Option<&str>) -> PackEntry {
        PackEntry {
            id: id.into(),
            size: 10,
            blobs: chunks.iter().map(|c| BlobEntry(hex::encode([*c; 32]), 0, 1)).collect(),
            until: until.map(|u| u.parse().unwrap()),
        }
    }

    #[test]
    fn the_latest_date_of_a_pack_counts_and_only_packs_ending_too_early_are_named() {
        let indexes = vec![
            (
                "a".to_string(),
                Index::new(vec![pack("p1", &[1, 2], Some("2026-01-01T00:00:00Z")), pack("p2", &[3], None)]),
            ),
            // a later backup extended p1
            ("b".to_string(), Index::new(vec![pack("p1", &[1, 2], Some("2026-03-01T00:00:00Z"))])),
            ("c".to_string(), Index::new(vec![pack("p3", &[4], Some("2026-01-15T00:00:00Z"))])),
        ];
        let locks = PackLocks::from_indexes(&indexes);
        let needed: Timestamp = "2026-02-01T00:00:00Z".parse().unwrap();
        let wanted = [[1u8; 32], [3; 32], [4; 32], [9; 32]];
        let mut named: Vec<&str> = locks.ending_before(wanted.iter(), needed).iter().map(|p| p.id.as_str()).collect();
        named.sort();
        // p1 was extended past `needed`; p2 has no date (written before the lock); [9] is new
        assert_eq!(named, ["p2", "p3"]);
        let dates = latest_dates(&indexes);
        assert_eq!(dates["p1"].to_string(), "2026-03-01T00:00:00Z");
        assert!(!dates.contains_key("p2"));
    }
}
