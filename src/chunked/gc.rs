//! Garbage collection of a target's chunk repositories, under an exclusive lock marker (see
//! [`super::lock`]): with every backup of every job on the target known (all manifests, not only
//! the configured jobs'), a pack none of whose chunks a manifest refers to is deleted, and so is a
//! pack no index lists (left by a backup that died before writing its index). Indexes naming a
//! deleted pack are replaced first (a new index of the surviving packs is written, then the old
//! ones are deleted), so no index ever names a pack that is gone. A pack with any live chunk stays
//! whole (repacking is a later step). Any manifest that cannot be read stops collection on that
//! target: it might refer to anything. Never needs the identity.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::key::ChunkId;
use super::lock::{self, LockKind, Refused};
use super::repo::{self, Index, PackEntry};
use crate::manifest::Manifest;
use crate::targets::Target;
use crate::{Error, Result};

/// What collection did (or would do, with `dry_run`) in one repository.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub target: String,
    pub scope: String,
    pub packs_kept: usize,
    /// Packs deleted (or to delete): no live chunk, or in no index.
    pub packs_deleted: Vec<String>,
    pub bytes_freed: u64,
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
    let mut listed: HashMap<String, bool> = HashMap::new(); // pack → has a live chunk
    for (_, idx) in &indexes {
        for p in &idx.packs {
            let alive = p.blobs.iter().any(|b| repo::parse_id(&b.0).is_some_and(|id| live.contains(&id)));
            *listed.entry(p.id.clone()).or_default() |= alive;
        }
    }
    let stored: Vec<(String, u64)> = target
        .list(&format!("{}/packs/", repo::scope_dir(scope)))
        .await?
        .into_iter()
        .filter_map(|m| repo::pack_of_key(&m.key).map(|p| (p.to_string(), m.size)))
        .collect();
    let dead: HashSet<String> =
        stored.iter().filter(|(p, _)| !listed.get(p).copied().unwrap_or(false)).map(|(p, _)| p.clone()).collect();
    report.packs_kept = stored.len() - dead.len();
    report.bytes_freed = stored.iter().filter(|(p, _)| dead.contains(p)).map(|(_, s)| s).sum();
    report.packs_deleted = dead.iter().cloned().collect();
    report.packs_deleted.sort();
    // an index naming a dead pack that is listed in an index (not a stray) is rewritten
    let stale: Vec<&(String, Index)> =
        indexes.iter().filter(|(_, idx)| idx.packs.iter().any(|p| dead.contains(&p.id))).collect();
    if dry_run || dead.is_empty() {
        return Ok(());
    }
    if !stale.is_empty() {
        let mut seen = HashSet::new();
        let survivors: Vec<PackEntry> = stale
            .iter()
            .flat_map(|(_, idx)| idx.packs.iter())
            .filter(|p| !dead.contains(&p.id) && seen.insert(p.id.clone()))
            .cloned()
            .collect();
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
    }
    for p in &report.packs_deleted {
        target
            .delete(&repo::pack_key(scope, p))
            .await
            .map_err(|e| Error::Pipeline(format!("garbage collection on `{}` stopped: {e}", target.name())))?;
    }
    Ok(())
}
