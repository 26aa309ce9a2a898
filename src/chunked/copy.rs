//! `drctl sync` of a chunked backup: the chunks the destination lacks are copied from the source's
//! packs as they are stored (still encrypted: no identity, no chunk key), into new packs and an
//! index on the destination, under a shared lock marker there that is held until the caller has
//! written the manifest. Each source pack is read whole and must hash to its own id before any of
//! its blobs is used, so a damaged source copy is never spread.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use super::lock::{self, Lock};
use super::packer::Packer;
use super::repo;
use super::retain::PackLocks;
use crate::layout::Retention;
use crate::manifest::Manifest;
use crate::targets::Target;
use crate::{Error, Result};

/// Copy the chunks of `m` that `dest` lacks from `src`. Returns the bytes copied and the lock
/// markers to release once the manifest is on `dest`.
pub async fn copy_chunks(src: &Target, dest: &Arc<Target>, m: &Manifest) -> Result<(u64, Vec<Lock>)> {
    let scopes: BTreeSet<&str> =
        m.artifacts.iter().filter_map(|a| a.chunked.as_ref().map(|c| c.scope.as_str())).collect();
    let mut locks = Vec::new();
    let mut total = 0;
    for scope in scopes {
        let purpose = format!("sync {} {}", m.job, m.backup_id);
        let lock = match lock::shared(dest.clone(), scope, &purpose).await {
            Ok(l) => l,
            Err(e) => {
                release(locks).await;
                return Err(e);
            }
        };
        locks.push(lock);
        match copy_scope(src, dest, m, scope).await {
            Ok(n) => total += n,
            Err(e) => {
                release(locks).await;
                return Err(e);
            }
        }
    }
    Ok((total, locks))
}

pub async fn release(locks: Vec<Lock>) {
    for l in locks {
        l.release().await;
    }
}

async fn copy_scope(src: &Target, dest: &Target, m: &Manifest, scope: &str) -> Result<u64> {
    let config = repo::config_key(scope);
    if dest.stat(&config).await?.is_none()
        && let Some(_) = src.stat(&config).await?
    {
        dest.put_bytes(&config, src.get_bytes(&config).await?.into()).await?;
    }
    let usable = super::fossil::load_usable(dest, scope).await?;
    let have: HashSet<repo::ChunkIdHex> = repo::locations(&usable).into_keys().map(hex::encode).collect();
    // on a destination with Object Lock, the packs this backup reuses there must outlive it
    let locks = dest.retention(Retention::Backup).map(|_| PackLocks::from_indexes(&usable));
    drop(usable);
    let from = repo::locations(&super::fossil::load_for_reading(src, scope).await?);
    // what is missing, grouped by the source pack holding it
    let mut wanted: BTreeMap<Arc<str>, Vec<(String, u64, u64)>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for a in m.artifacts.iter().filter_map(|a| a.chunked.as_ref()).filter(|c| c.scope == scope) {
        for id in &a.ids {
            if have.contains(id) || !seen.insert(id.clone()) {
                continue;
            }
            let at = repo::parse_id(id).and_then(|i| from.get(&i)).ok_or_else(|| Error::Integrity {
                target: src.name().into(),
                key: repo::index_dir(scope),
                what: format!("chunk {} of backup {} is in no index here", &id[..16.min(id.len())], m.backup_id),
            })?;
            wanted.entry(at.pack.clone()).or_default().push((id.clone(), at.offset, at.length));
        }
    }
    let mut packer = Packer::default();
    let mut total = 0;
    for (pack, blobs) in wanted {
        let key = repo::pack_key(scope, &pack);
        let data = src.get_bytes(&key).await?;
        if blake3::hash(&data).to_hex().as_str() != &*pack {
            return Err(Error::Integrity {
                target: src.name().into(),
                key,
                what: "the pack does not hash to its id".into(),
            });
        }
        for (id, off, len) in blobs {
            let blob = data.get(off as usize..(off + len) as usize).ok_or_else(|| Error::Integrity {
                target: src.name().into(),
                key: key.clone(),
                what: "shorter than its index says".into(),
            })?;
            packer.add(id, blob);
            total += len;
            if packer.full() {
                packer.upload(dest, scope).await?;
            }
        }
    }
    if let Some(locks) = &locks {
        let referenced = repo::referenced(&m.artifacts, scope);
        packer.relist(super::retain::extend(dest, scope, locks, &referenced).await?);
    }
    let name = format!("{}-sync-{}", m.backup_id, crate::layout::random_suffix());
    packer.finish(dest, scope, &name).await?;
    Ok(total)
}
