//! Garbage collection of a target's chunk repositories, under an exclusive lock marker (see
//! [`super::lock`]): with every backup of every job on the target known (all manifests, not only
//! the configured jobs'), a pack none of whose chunks a manifest refers to is deleted, and so is a
//! pack no index lists (left by a backup that died before writing its index). Indexes naming a
//! deleted pack are replaced first (a new index of the surviving packs is written, then the old
//! ones are deleted), so no index ever names a pack that is gone. A pack whose live blobs make up
//! less than half of it is repacked: its live blobs are copied, still encrypted, into new packs
//! (the old pack is first checked against its BLAKE3 id), the new packs are indexed, then the old
//! one goes. Any manifest that cannot be read stops collection on that target: it might refer to
//! anything. Never needs the identity.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::key::ChunkId;
use super::lock::{self, LockKind, Refused};
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
    /// Packs deleted (or to delete): no live chunk, or in no index.
    pub packs_deleted: Vec<String>,
    /// Bytes freed (or to free): dead packs, and the dead part of repacked ones.
    pub bytes_freed: u64,
    /// Packs rewritten with their live blobs only (mostly dead).
    pub packs_repacked: Vec<String>,
    /// Why collection did not run here (a live lock, an unreadable manifest).
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
    let lock = match lock::acquire(
        target.clone(),
        scope,
        LockKind::Exclusive,
        "garbage collection",
        std::time::Duration::ZERO,
    )
    .await
    {
        Ok(l) => l,
        Err(Refused::Busy(who)) => {
            report.skipped = Some(format!("the repository is in use ({who}); collection runs at the next prune"));
            return Ok(report);
        }
        Err(Refused::Failed(e)) => return Err(e),
    };
    let result = collect_locked(&target, scope, dry_run, going, &mut report).await;
    lock.release().await;
    result.map(|_| report)
}

async fn collect_locked(
    target: &Target,
    scope: &str,
    dry_run: bool,
    going: &HashSet<String>,
    report: &mut GcReport,
) -> Result<()> {
    // every chunk any manifest on the target refers to
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
                return Ok(());
            }
        };
        for a in &manifest.artifacts {
            if let Some(c) = a.chunked.as_ref().filter(|c| c.scope == scope) {
                live.extend(c.ids.iter().filter_map(|h| repo::parse_id(h)));
            }
        }
    }
    let indexes = repo::load_indexes(target, scope).await?;
    // every pack an index lists, once, with its live bytes
    let mut packs: BTreeMap<String, (&PackEntry, u64)> = BTreeMap::new();
    for (_, idx) in &indexes {
        for p in &idx.packs {
            let live_bytes: u64 =
                p.blobs.iter().filter(|b| repo::parse_id(&b.0).is_some_and(|id| live.contains(&id))).map(|b| b.2).sum();
            packs.entry(p.id.clone()).or_insert((p, live_bytes));
        }
    }
    let stored: Vec<(String, u64)> = target
        .list(&format!("{}/packs/", repo::scope_dir(scope)))
        .await?
        .into_iter()
        .filter_map(|m| repo::pack_of_key(&m.key).map(|p| (p.to_string(), m.size)))
        .collect();
    let dead: HashSet<String> = stored
        .iter()
        .filter(|(p, _)| packs.get(p).is_none_or(|(_, live_bytes)| *live_bytes == 0))
        .map(|(p, _)| p.clone())
        .collect();
    // packs mostly dead are rewritten with their live blobs only (copied as stored, still encrypted)
    let sparse: Vec<&PackEntry> = packs
        .values()
        .filter(|(p, live_bytes)| *live_bytes > 0 && *live_bytes * REPACK_BELOW_LIVE.1 < p.size * REPACK_BELOW_LIVE.0)
        .filter(|(p, _)| stored.iter().any(|(s, _)| s == &p.id))
        .map(|(p, _)| *p)
        .collect();
    report.packs_kept = stored.len() - dead.len() - sparse.len();
    report.bytes_freed = stored.iter().filter(|(p, _)| dead.contains(p)).map(|(_, s)| s).sum::<u64>()
        + sparse.iter().map(|p| p.size - packs[&p.id].1).sum::<u64>();
    report.packs_deleted = dead.iter().cloned().collect();
    report.packs_deleted.sort();
    report.packs_repacked = sparse.iter().map(|p| p.id.clone()).collect();
    let gone: HashSet<&str> = dead.iter().map(String::as_str).chain(sparse.iter().map(|p| p.id.as_str())).collect();
    // an index naming a pack that goes is rewritten
    let stale: Vec<&(String, Index)> =
        indexes.iter().filter(|(_, idx)| idx.packs.iter().any(|p| gone.contains(p.id.as_str()))).collect();
    if dry_run || gone.is_empty() {
        return Ok(());
    }
    // 1. the live blobs of sparse packs into new packs (each source pack checked against its id)
    let mut held: HashSet<&str> = packs
        .values()
        .filter(|(p, _)| !gone.contains(p.id.as_str()))
        .flat_map(|(p, _)| p.blobs.iter().map(|b| b.0.as_str()))
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
            let alive = repo::parse_id(&b.0).is_some_and(|id| live.contains(&id));
            if !alive || !held.insert(b.0.as_str()) {
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
    // 2. one index of the surviving packs of the stale indexes and the new ones, 3. the stale
    // indexes deleted, 4. the packs: no index ever names a pack that is gone
    let mut seen = HashSet::new();
    let mut survivors: Vec<PackEntry> = stale
        .iter()
        .flat_map(|(_, idx)| idx.packs.iter())
        .filter(|p| !gone.contains(p.id.as_str()) && seen.insert(p.id.clone()))
        .cloned()
        .collect();
    survivors.extend(packer.into_packs());
    if !survivors.is_empty() {
        let name =
            format!("{}-gc-{}", jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ"), crate::layout::random_suffix());
        let mut body = serde_json::to_vec(&Index::new(survivors)).unwrap_or_default();
        body.push(b'\n');
        target.put_bytes(&repo::index_key(scope, &name), body.into()).await?;
    }
    for (key, _) in &stale {
        target.delete(key).await?;
    }
    for p in report.packs_deleted.iter().chain(&report.packs_repacked) {
        target
            .delete(&repo::pack_key(scope, p))
            .await
            .map_err(|e| Error::Pipeline(format!("garbage collection on `{}` stopped: {e}", target.name())))?;
    }
    Ok(())
}
