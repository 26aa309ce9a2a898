//! Where the chunk repository lives on a target, and its plaintext index (public interface: see
//! docs/architecture.md, "Deduplicated storage").
//!
//! ```text
//! chunks/<scope>/config.json                 format, chunker parameters, the writers' key ids
//! chunks/<scope>/packs/<aa>/<pack-id>.pack   blobs (each a complete age file), concatenated
//! chunks/<scope>/index/<name>.json           which blobs (chunk id, offset, padded length) each pack holds
//! chunks/<scope>/locks/<name>.<shared|exclusive>.json
//! chunks/<scope>/fossils/<name>.json          packs marked for deletion (two-phase collection)
//! ```
//!
//! One repository per target and recipient scope, shared by every job and host writing there.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::key::ChunkId;
use crate::manifest::Artifact;
use crate::targets::Target;
use crate::{Error, Result};

pub const ROOT: &str = crate::layout::CHUNKS_ROOT;
pub const INDEX_FORMAT: &str = "drctl-chunk-index";
pub const INDEX_VERSION: u32 = 1;
pub const CONFIG_FORMAT: &str = "drctl-chunk-repository";

pub fn scope_dir(scope: &str) -> String {
    format!("{ROOT}/{scope}")
}

pub fn pack_key(scope: &str, pack: &str) -> String {
    format!("{ROOT}/{scope}/packs/{}/{pack}.pack", &pack[..2.min(pack.len())])
}

pub fn index_dir(scope: &str) -> String {
    format!("{ROOT}/{scope}/index/")
}

pub fn index_key(scope: &str, name: &str) -> String {
    format!("{ROOT}/{scope}/index/{name}.json")
}

pub fn config_key(scope: &str) -> String {
    format!("{ROOT}/{scope}/config.json")
}

/// The pack id in a pack key, if it is one.
pub fn pack_of_key(key: &str) -> Option<&str> {
    key.rsplit('/').next()?.strip_suffix(".pack")
}

/// One blob in a pack: `[chunk id, offset, stored length]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry(pub String, pub u64, pub u64);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    pub id: String,
    pub size: u64,
    pub blobs: Vec<BlobEntry>,
    /// On a target with Object Lock: the pack is locked at least until then, as the writer of
    /// this index knew it (the pack's upload, or a later backup's extension: [`super::retain`]).
    /// An index is itself locked at least as long as every date it records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<jiff::Timestamp>,
}

/// An index object: the packs one backup (or one garbage collection) wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    pub format: String,
    pub version: u32,
    pub packs: Vec<PackEntry>,
}

impl Index {
    pub fn new(packs: Vec<PackEntry>) -> Index {
        Index { format: INDEX_FORMAT.into(), version: INDEX_VERSION, packs }
    }

    pub fn parse(key: &str, data: &[u8]) -> Result<Index> {
        let idx: Index = serde_json::from_slice(data)
            .map_err(|e| Error::Manifest { key: key.into(), message: format!("not a chunk index: {e}") })?;
        if idx.format != INDEX_FORMAT || idx.version > INDEX_VERSION {
            return Err(Error::Manifest {
                key: key.into(),
                message: format!("index format `{}` version {} is not one this drctl reads", idx.format, idx.version),
            });
        }
        Ok(idx)
    }
}

/// Where a chunk is stored.
#[derive(Debug, Clone)]
pub struct Location {
    pub pack: Arc<str>,
    pub offset: u64,
    pub length: u64,
}

/// Every index object of a scope on a target, by key.
///
/// # Errors
/// When listing or reading fails, or an index is unreadable (a backup must not guess what is
/// stored).
pub async fn load_indexes(target: &Target, scope: &str) -> Result<Vec<(String, Index)>> {
    // A collection may replace indexes meanwhile: it writes the new one, then deletes the old
    // ones. An index gone between the listing and its read means the listing missed its
    // replacement: list again. Should that keep happening, what is read stands (a backup then
    // stores some chunks again; nothing is lost).
    let mut tries = 0;
    loop {
        let mut out = Vec::new();
        let mut vanished = false;
        let mut keys: Vec<String> =
            target.list(&index_dir(scope)).await?.into_iter().map(|m| m.key).filter(|k| k.ends_with(".json")).collect();
        keys.sort();
        for key in keys {
            match target.get_bytes(&key).await {
                Ok(data) => out.push((key.clone(), Index::parse(&key, &data)?)),
                Err(e) if e.is_not_found() => vanished = true,
                Err(e) => return Err(e),
            }
        }
        tries += 1;
        if !vanished || tries >= 5 {
            return Ok(out);
        }
    }
}

/// Chunk id → location, over all indexes (the first location of a chunk stored twice wins).
pub fn locations(indexes: &[(String, Index)]) -> HashMap<ChunkId, Location> {
    let mut map = HashMap::new();
    for (_, idx) in indexes {
        for p in &idx.packs {
            let pack: Arc<str> = Arc::from(p.id.as_str());
            for b in &p.blobs {
                if let Some(id) = parse_id(&b.0) {
                    map.entry(id).or_insert(Location { pack: pack.clone(), offset: b.1, length: b.2 });
                }
            }
        }
    }
    map
}

/// The chunks of `scope` that `artifacts` refer to (the ids a manifest lists).
pub fn referenced<'a>(artifacts: impl IntoIterator<Item = &'a Artifact>, scope: &str) -> HashSet<ChunkId> {
    artifacts
        .into_iter()
        .filter_map(|a| a.chunked.as_ref())
        .filter(|c| c.scope == scope)
        .flat_map(|c| c.ids.iter().filter_map(|h| parse_id(h)))
        .collect()
}

/// A chunk id as hex (how manifests and indexes spell it).
pub type ChunkIdHex = String;

pub fn parse_id(hexed: &str) -> Option<ChunkId> {
    let mut id = [0u8; 32];
    hex::decode_to_slice(hexed, &mut id).ok()?;
    Some(id)
}

/// The repository's `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoConfig {
    pub format: String,
    pub version: u32,
    /// The recipients every blob here is encrypted to (public keys).
    pub recipients: Vec<String>,
    /// FastCDC parameters, bytes.
    pub chunker: ChunkerParams,
    /// Key ids (public fingerprints) of the chunk keys that wrote here.
    pub key_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub algorithm: String,
    pub min: usize,
    pub avg: usize,
    pub max: usize,
}

/// Write the scope's config if it has none yet, or add this key id to it; warns when another key
/// wrote here (its chunks will not deduplicate with this host's).
pub async fn ensure_config(target: &Target, scope: &str, recipients: &[String], key_id: &str) -> Result<()> {
    let key = config_key(scope);
    let mut cfg = match target.stat(&key).await? {
        Some(_) => {
            let data = target.get_bytes(&key).await?;
            serde_json::from_slice::<RepoConfig>(&data).map_err(|e| Error::Manifest {
                key: key.clone(),
                message: format!("not a chunk repository config: {e}"),
            })?
        }
        None => RepoConfig {
            format: CONFIG_FORMAT.into(),
            version: 1,
            recipients: recipients.to_vec(),
            chunker: ChunkerParams {
                algorithm: "fastcdc-2020-keyed".into(),
                min: super::cdc::MIN_SIZE,
                avg: super::cdc::AVG_SIZE,
                max: super::cdc::MAX_SIZE,
            },
            key_ids: vec![],
        },
    };
    if cfg.key_ids.iter().any(|k| k == key_id) {
        return Ok(());
    }
    if !cfg.key_ids.is_empty() {
        tracing::warn!(
            target = %target.name(),
            scope,
            "another chunk key also writes to this repository: backups made with different keys do not deduplicate against each other (give every host the same `encryption.chunk_key_file`)"
        );
    }
    cfg.key_ids.push(key_id.to_string());
    let mut body = serde_json::to_vec_pretty(&cfg).unwrap_or_default();
    body.push(b'\n');
    target.put_bytes(&key, body.into()).await.map(|_| ())
}
