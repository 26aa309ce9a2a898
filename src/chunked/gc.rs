//! Garbage collection of a target's chunk repositories, in two phases ([`super::fossil`]) under an
//! exclusive marker that keeps collections apart (backups never wait for it). With every backup of
//! every job on the target known (all manifests, not only the configured jobs'):
//!
//! * packs marked by an earlier collection whose holders are all gone are deleted, unless a
//!   manifest refers to a chunk only they hold (then they are kept: resurrected); the indexes
//!   naming them are rewritten first (a new index of the surviving packs is written, then the old
//!   ones are deleted), so no index ever names a pack that is gone;
//! * packs none of whose chunks a manifest refers to, and packs no index lists (a backup died
//!   before writing its index, or is still running), are marked;
//! * a pack whose live blobs make up less than half of it is repacked: its live blobs are copied,
//!   still encrypted, into new packs (the old pack is first checked against its BLAKE3 id), the new
//!   packs are indexed, and the old one is marked.
//!
//! On a target with Object Lock, a marked pack is deleted only once the lock its indexes record
//! has ended (deleting it earlier would free nothing). A locked pack is still repacked when mostly
//! unused: once marked, no backup reuses it, so its lock is no longer extended and ends.
//!
//! Any manifest that cannot be read stops collection on that target: it might refer to anything.
//! Never needs the identity.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::fossil::{self, Fossils};
use super::key::ChunkId;
use super::lock::{self, Refused};
use super::packer::Packer;
use super::repo::{self, Index, PackEntry};
use crate::manifest::Manifest;
use crate::targets::Target;
use crate::{Error, Result};

/// A pack whose live bytes are under this fraction (numerator, denominator) of its size is repacked.
const REPACK_BELOW_LIVE: (u64, u64) = (1, 2);

/// What collection did (or would do, with `dry_run`) in one repository.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub target: String,
    pub scope: String,
    pub packs_kept: usize,
    /// Packs deleted now (or to delete): marked by an earlier collection, every holder gone, and
    /// no chunk in them that a backup needs.
    pub packs_deleted: Vec<String>,
    /// Bytes freed now (or to free): the packs deleted.
    pub bytes_freed: u64,
    /// Packs marked now (no live chunk, or in no index); deleted by a later collection.
    pub packs_marked: Vec<String>,
    /// Packs whose live blobs were copied into new packs now, and marked (mostly dead).
    pub packs_repacked: Vec<String>,
    /// Bytes the packs marked now will free.
    pub bytes_marked: u64,
    /// Marked packs kept after all: a backup that ran across the mark refers to them.
    pub packs_resurrected: Vec<String>,
    /// Marked packs still waiting for a backup or sync that started before their mark.
    pub packs_waiting: usize,
    /// Marked packs kept until their Object Lock ends (deleting them earlier would free nothing).
    pub packs_locked: usize,
    /// Why collection did not run here (another collection, an unreadable manifest).
    pub skipped: Option<String>,
}

/// The scopes present on a target.
pub async fn scopes(target: &Target) -> Result<Vec<String>> {
    let mut out: Vec<String> = target
        .list(&format!("{}/", repo::ROOT))
        .await?
        .into_iter()
        .filter_map(|m| {
            m.key.strip_prefix(&format!("{}/", repo::ROOT)).and_then(|r| r.split('/').next()).map(String::from)
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Collect every scope on `target`. With `dry_run`, nothing changes and the backups in `going`
/// (what the same prune would delete) count as gone.
pub async fn collect(target: Arc<Target>, dry_run: bool, going: &HashSet<String>) -> Result<Vec<GcReport>> {
    let mut out = Vec::new();
    for scope in scopes(&target).await? {
        out.push(collect_scope(target.clone(), &scope, dry_run, going).await?);
    }
    Ok(out)
}

async fn collect_scope(target: Arc<Target>, scope: &str, dry_run: bool, going: &HashSet<String>) -> Result<GcReport> {
    let mut report = GcReport { target: target.name().into(), scope: scope.into(), ..Default::default() };
    let lock = match lock::exclusive(target.clone(), scope, "garbage collection").await {
        Ok(l) => l,
        Err(Refused::Busy(who)) => {
            report.skipped = Some(format!("another collection runs ({who}); this one runs at the next prune"));
            return Ok(report);
        }
        Err(Refused::Failed(e)) => return Err(e),
    };
    let result = collect_locked(&target, scope, dry_run, going, &lock.key, &mut report).await;
    lock.release().await;
    result.map(|_| report)
}

/// Every chunk any manifest on the target refers to, or `None` (with `report.skipped` set) when
/// a manifest cannot be read.
async fn live_chunks(
    target: &Target,
    scope: &str,
    dry_run: bool,
    going: &HashSet<String>,
    report: &mut GcReport,
) -> Result<Option<HashSet<ChunkId>>> {
    let mut live: HashSet<ChunkId> = HashSet::new();
    for m in target.list("").await? {
        match crate::layout::manifest_id(&m.key) {
            None => continue,
            Some(id) if dry_run && going.contains(id) => continue,
            Some(_) => {}
        }
        let data = target.get_bytes(&m.key).await?;
        let manifest = match Manifest::from_json(&m.key, &data) {
            Ok(x) => x,
            Err(e) => {
                report.skipped = Some(format!(
                    "cannot read manifest `{}` ({e}): it may refer to any chunk, so nothing is collected",
                    m.key
                ));
                return Ok(None);
            }
        };
        live.extend(repo::referenced(&manifest.artifacts, scope));
    }
    Ok(Some(live))
}

fn is_live(live: &HashSet<ChunkId>, id: &str) -> bool {
    repo::parse_id(id).is_some_and(|id| live.contains(&id))
}

async fn collect_locked(
    target: &Target,
    scope: &str,
    dry_run: bool,
    going: &HashSet<String>,
    own_marker: &str,
    report: &mut GcReport,
) -> Result<()> {
    let Some(live) = live_chunks(target, scope, dry_run, going, report).await? else { return Ok(()) };
    let records = fossil::load(target, scope).await?;
    let indexes = repo::load_indexes(target, scope).await?;
    let stored: BTreeMap<String, u64> = target
        .list(&format!("{}/packs/", repo::scope_dir(scope)))
        .await?
        .into_iter()
        .filter_map(|m| repo::pack_of_key(&m.key).map(|p| (p.to_string(), m.size)))
        .collect();
    let markers: HashSet<String> =
        lock::live_markers(target, scope, own_marker).await?.into_iter().map(|(k, _)| k).collect();
    // every pack an index lists, once
    let mut indexed: BTreeMap<&str, &PackEntry> = BTreeMap::new();
    for (_, idx) in &indexes {
        for p in &idx.packs {
            indexed.entry(p.id.as_str()).or_insert(p);
        }
    }
    let marked = fossil::marked(&records);
    // Object Lock: a pack is not deleted or repacked before its lock ends
    let dates = super::retain::latest_dates(&indexes);
    let now = jiff::Timestamp::now();
    let locked = |p: &str| dates.get(p).is_some_and(|u| *u > now);
    // blobs held by a pack that stays whatever happens here
    let held_unmarked: HashSet<&str> = indexed
        .values()
        .filter(|p| !marked.contains(&p.id) && stored.contains_key(&p.id))
        .flat_map(|p| p.blobs.iter().map(|b| b.0.as_str()))
        .collect();

    // phase 2: the marks of earlier collections
    let mut delete: Vec<String> = Vec::new();
    let mut finished: Vec<&str> = Vec::new();
    // records kept with only their packs still under Object Lock
    let mut narrowed: Vec<(&str, Fossils)> = Vec::new();
    let mut waiting: HashSet<&str> = HashSet::new();
    // marked, not needed, and already gone (a collection stopped between packs and records)
    let mut vanished: Vec<&str> = Vec::new();
    for (key, rec) in &records {
        match &rec.holders {
            // its collection died before listing the holders: the mark never took
            None => {
                report.packs_resurrected.extend(rec.packs.iter().cloned());
                finished.push(key);
            }
            Some(holders) if holders.iter().any(|h| markers.contains(h)) => {
                report.packs_waiting += rec.packs.len();
                waiting.extend(rec.packs.iter().map(String::as_str));
            }
            Some(_) => {
                let mut still_locked = Vec::new();
                for p in &rec.packs {
                    let needed = indexed.get(p.as_str()).is_some_and(|e| {
                        e.blobs.iter().any(|b| is_live(&live, &b.0) && !held_unmarked.contains(b.0.as_str()))
                    });
                    if needed {
                        report.packs_resurrected.push(p.clone());
                    } else if !stored.contains_key(p) {
                        vanished.push(p.as_str());
                    } else if locked(p) {
                        still_locked.push(p.clone());
                    } else {
                        delete.push(p.clone());
                    }
                }
                if still_locked.is_empty() {
                    finished.push(key);
                } else {
                    report.packs_locked += still_locked.len();
                    narrowed.push((key, Fossils { packs: still_locked, ..rec.clone() }));
                }
            }
        }
    }
    delete.sort();
    delete.dedup();
    // a pack named by a waiting record too stays until that one is ready
    delete.retain(|p| !waiting.contains(p.as_str()));
    report.packs_deleted = delete.clone();
    report.bytes_freed = delete.iter().filter_map(|p| stored.get(p)).sum();

    // phase 1: new marks, among the packs no record names
    let deleting: HashSet<&str> = delete.iter().map(String::as_str).collect();
    let mut dead: Vec<String> = Vec::new();
    let mut sparse: Vec<&PackEntry> = Vec::new();
    for p in stored.keys().filter(|p| !marked.contains(*p)) {
        match indexed.get(p.as_str()) {
            None => dead.push(p.clone()),
            Some(e) => {
                let live_bytes: u64 = e.blobs.iter().filter(|b| is_live(&live, &b.0)).map(|b| b.2).sum();
                if live_bytes == 0 {
                    dead.push(p.clone());
                } else if live_bytes * REPACK_BELOW_LIVE.1 < e.size * REPACK_BELOW_LIVE.0 {
                    sparse.push(e);
                }
            }
        }
    }
    report.packs_marked = dead.clone();
    report.packs_repacked = sparse.iter().map(|p| p.id.clone()).collect();
    report.bytes_marked = dead.iter().chain(&report.packs_repacked).filter_map(|p| stored.get(p)).sum();
    report.packs_kept = stored.len() - delete.len() - dead.len() - sparse.len();
    if dry_run {
        return Ok(());
    }

    // markers whose holders died long ago
    lock::sweep(target, scope).await?;
    // phase 2, carried out: indexes naming a deleted pack rewritten, then the packs, then the records
    let unlisted: HashSet<&str> =
        deleting.iter().copied().chain(vanished.iter().copied().filter(|p| !waiting.contains(p))).collect();
    rewrite_indexes(target, scope, &indexes, &unlisted, &dates).await?;
    for p in &delete {
        target
            .delete(&repo::pack_key(scope, p))
            .await
            .map_err(|e| Error::Pipeline(format!("garbage collection on `{}` stopped: {e}", target.name())))?;
    }
    for key in finished {
        target.delete(key).await?;
    }
    for (key, record) in &narrowed {
        record.write(target, key).await?;
    }

    // phase 1, carried out: live blobs of sparse packs copied (each source pack checked against
    // its id) and indexed, then the record, then its holders
    if dead.is_empty() && sparse.is_empty() {
        return Ok(());
    }
    let going_now: HashSet<&str> = dead
        .iter()
        .map(String::as_str)
        .chain(sparse.iter().map(|p| p.id.as_str()))
        .chain(deleting.iter().copied())
        .collect();
    let mut held: HashSet<&str> = indexed
        .values()
        .filter(|p| !going_now.contains(p.id.as_str()) && !marked.contains(&p.id))
        .flat_map(|p| p.blobs.iter().map(|b| b.0.as_str()))
        .collect();
    let mut packer = Packer::default();
    for p in &sparse {
        let key = repo::pack_key(scope, &p.id);
        let data = target.get_bytes(&key).await?;
        if blake3::hash(&data).to_hex().as_str() != p.id {
            return Err(Error::Integrity {
                target: target.name().into(),
                key,
                what: "the pack does not hash to its id: not repacked (run `drctl check --read-data`)".into(),
            });
        }
        for b in &p.blobs {
            if !is_live(&live, &b.0) || !held.insert(b.0.as_str()) {
                continue;
            }
            let blob = data.get(b.1 as usize..(b.1 + b.2) as usize).ok_or_else(|| Error::Integrity {
                target: target.name().into(),
                key: key.clone(),
                what: "shorter than its index says".into(),
            })?;
            packer.add(b.0.clone(), blob);
            if packer.full() {
                packer.upload(target, scope).await?;
            }
        }
    }
    packer.upload(target, scope).await?;
    write_index(target, scope, packer.into_packs()).await?;
    let name = format!("{}-{}", jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ"), crate::layout::random_suffix());
    let key = fossil::key(scope, &name);
    let mut record = Fossils::new(dead.into_iter().chain(report.packs_repacked.iter().cloned()).collect());
    record.write(target, &key).await?;
    let holders = lock::live_markers(target, scope, own_marker).await?.into_iter().map(|(k, _)| k).collect();
    record.holders = Some(holders);
    record.write(target, &key).await
}

/// Replace every index naming a pack in `gone` by one index of its other packs: the new index is
/// written before the old ones are deleted. Each pack keeps the latest lock date any index
/// records for it (`dates`).
async fn rewrite_indexes(
    target: &Target,
    scope: &str,
    indexes: &[(String, Index)],
    gone: &HashSet<&str>,
    dates: &HashMap<&str, jiff::Timestamp>,
) -> Result<()> {
    let stale: Vec<&(String, Index)> =
        indexes.iter().filter(|(_, idx)| idx.packs.iter().any(|p| gone.contains(p.id.as_str()))).collect();
    let mut seen = HashSet::new();
    let survivors: Vec<PackEntry> = stale
        .iter()
        .flat_map(|(_, idx)| idx.packs.iter())
        .filter(|p| !gone.contains(p.id.as_str()) && seen.insert(p.id.clone()))
        .map(|p| PackEntry { until: dates.get(p.id.as_str()).copied(), ..p.clone() })
        .collect();
    write_index(target, scope, survivors).await?;
    for (key, _) in &stale {
        target.delete(key).await?;
    }
    Ok(())
}

/// A new index of `packs` (nothing when empty), named as a collection's.
async fn write_index(target: &Target, scope: &str, packs: Vec<PackEntry>) -> Result<()> {
    if packs.is_empty() {
        return Ok(());
    }
    let name = format!("{}-gc-{}", jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ"), crate::layout::random_suffix());
    let mut body = serde_json::to_vec(&Index::new(packs)).unwrap_or_default();
    body.push(b'\n');
    target.put_bytes(&repo::index_key(scope, &name), body.into()).await.map(|_| ())
}
