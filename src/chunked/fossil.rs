//! Two-phase deletion in a chunk repository (after Duplicacy's fossil collection): garbage
//! collection never deletes a pack it has just found unused, because a backup running elsewhere
//! may have read the indexes before and be about to refer to a chunk in it.
//!
//! 1. *Mark*: the packs to delete are written into a fossil record `fossils/<name>.json` first,
//!    then the live shared markers (running backups and syncs: [`super::lock`]) are listed and
//!    recorded in it as its holders. From then on a backup that starts treats the marked packs as
//!    absent (it stores those chunks again), and one that started before is a holder.
//! 2. *Delete*, at a later collection, once every holder's marker is gone (committed or failed;
//!    a marker not refreshed for [`super::lock::STALE_AFTER`] counts as gone): with the manifests
//!    read again, a marked pack holding a chunk some manifest refers to and no unmarked pack
//!    holds is kept (resurrected: a holder used it); the others are deleted, after the indexes
//!    naming them are rewritten.
//!
//! Why the order of mark (record, then list markers) matters: a backup writes its marker, then
//! reads the records. If it did not see the record, it read before the record was written, so
//! its marker was written before the collection listed the markers: it is a holder. A record
//! whose holders were never written (its collection died in between) marks nothing: the next
//! collection removes it and the packs are as before. Collections exclude each other (an
//! exclusive marker), so only a dead one leaves such a record.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::repo::{self, Index, PackEntry, ROOT};
use crate::targets::Target;
use crate::{Error, Result};

pub const FORMAT: &str = "drctl-chunk-fossils";
pub const VERSION: u32 = 1;

pub fn dir(scope: &str) -> String {
    format!("{ROOT}/{scope}/fossils/")
}

pub fn key(scope: &str, name: &str) -> String {
    format!("{ROOT}/{scope}/fossils/{name}.json")
}

/// One collection's marks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fossils {
    pub format: String,
    pub version: u32,
    /// When the packs were marked, and by which host.
    pub marked: jiff::Timestamp,
    pub host: String,
    /// Pack ids marked for deletion.
    pub packs: Vec<String>,
    /// Keys of the lock markers live right after marking; `None` until they were listed.
    pub holders: Option<Vec<String>>,
}

impl Fossils {
    pub fn new(packs: Vec<String>) -> Fossils {
        Fossils {
            format: FORMAT.into(),
            version: VERSION,
            marked: jiff::Timestamp::now(),
            host: crate::host::name(),
            packs,
            holders: None,
        }
    }

    fn parse(key: &str, data: &[u8]) -> Result<Fossils> {
        let f: Fossils = serde_json::from_slice(data)
            .map_err(|e| Error::Manifest { key: key.into(), message: format!("not a fossil record: {e}") })?;
        if f.format != FORMAT || f.version > VERSION {
            return Err(Error::Manifest {
                key: key.into(),
                message: format!(
                    "fossil record format `{}` version {} is not one this drctl reads",
                    f.format, f.version
                ),
            });
        }
        Ok(f)
    }

    pub async fn write(&self, target: &Target, key: &str) -> Result<()> {
        let mut body = serde_json::to_vec_pretty(self).unwrap_or_default();
        body.push(b'\n');
        target.put_bytes(key, body.into()).await.map(|_| ())
    }
}

/// Every fossil record of `scope` on `target`, by key.
///
/// # Errors
/// When listing or reading fails, or a record is unreadable: a backup must not guess which packs
/// are about to go.
pub async fn load(target: &Target, scope: &str) -> Result<Vec<(String, Fossils)>> {
    let mut keys: Vec<String> =
        target.list(&dir(scope)).await?.into_iter().map(|m| m.key).filter(|k| k.ends_with(".json")).collect();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        match target.get_bytes(&key).await {
            Ok(data) => out.push((key.clone(), Fossils::parse(&key, &data)?)),
            // deleted between list and get: its collection finished
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The packs every record marks.
pub fn marked(records: &[(String, Fossils)]) -> HashSet<String> {
    records.iter().flat_map(|(_, f)| f.packs.iter().cloned()).collect()
}

/// The indexes of `scope` without the packs marked for deletion (the marks): what a
/// backup or a sync may deduplicate against. Records are read first: see the fossil protocol.
///
/// # Errors
/// As [`repo::load_indexes`] and [`load`].
pub async fn load_usable(target: &Target, scope: &str) -> Result<Vec<(String, Index)>> {
    let marked = marked(&load(target, scope).await?);
    let mut indexes = repo::load_indexes(target, scope).await?;
    for (_, idx) in &mut indexes {
        idx.packs.retain(|p| !marked.contains(&p.id));
    }
    Ok(indexes)
}

/// Every index of `scope`, with the packs marked for deletion moved to the end, so that
/// [`repo::locations`] names an unmarked copy of a chunk when there is one (a marked pack may go while
/// it is read). Reading the marks is best effort here: without them, every index as it is.
///
/// # Errors
/// As [`repo::load_indexes`].
pub async fn load_for_reading(target: &Target, scope: &str) -> Result<Vec<(String, Index)>> {
    let mut indexes = repo::load_indexes(target, scope).await?;
    let marked = match load(target, scope).await {
        Ok(records) => marked(&records),
        Err(e) => {
            tracing::debug!(target = %target.name(), error = %e, "fossil records unreadable: reading every pack alike");
            return Ok(indexes);
        }
    };
    let mut last = Vec::new();
    for (_, idx) in &mut indexes {
        let (keep, moved): (Vec<PackEntry>, Vec<PackEntry>) =
            std::mem::take(&mut idx.packs).into_iter().partition(|p| !marked.contains(&p.id));
        idx.packs = keep;
        last.extend(moved);
    }
    indexes.push((String::new(), Index::new(last)));
    Ok(indexes)
}
