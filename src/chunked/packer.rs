//! Building packs for one target: blobs appended, uploaded at [`PACK_SIZE`], and the index of what
//! was uploaded written at the end. Used by backups (blobs just sealed) and by `sync` (blobs copied
//! from another target's packs, still encrypted).

use bytes::Bytes;

use super::repo::{self, BlobEntry, PackEntry};
use crate::Result;
use crate::layout::Retention;
use crate::targets::Target;

/// A pack is uploaded once it holds this much (a few MiB: few requests, little memory).
pub const PACK_SIZE: usize = 4 << 20;

#[derive(Default)]
pub struct Packer {
    pack: Vec<u8>,
    blobs: Vec<BlobEntry>,
    /// Packs uploaded so far, for the index.
    packs: Vec<PackEntry>,
}

impl Packer {
    /// Append one blob (the chunk id in hex).
    pub fn add(&mut self, id: String, blob: &[u8]) {
        self.blobs.push(BlobEntry(id, self.pack.len() as u64, blob.len() as u64));
        self.pack.extend_from_slice(blob);
    }

    pub fn full(&self) -> bool {
        self.pack.len() >= PACK_SIZE
    }

    /// Upload the pack being built, if any (its id: the BLAKE3 of its bytes).
    pub async fn upload(&mut self, target: &Target, scope: &str) -> Result<()> {
        if self.pack.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.pack);
        let id = blake3::hash(&data).to_hex().to_string();
        let size = data.len() as u64;
        let blobs = std::mem::take(&mut self.blobs);
        // taken before the upload, which locks it (if at all) from a later moment
        let until = target.retention(Retention::Shared);
        target.put_bytes(&repo::pack_key(scope, &id), Bytes::from(data)).await?;
        self.packs.push(PackEntry { id, size, blobs, until });
        Ok(())
    }

    /// List `packs` (stored already, their Object Lock just extended) in the index this packer
    /// writes.
    pub fn relist(&mut self, packs: Vec<PackEntry>) {
        self.packs.extend(packs);
    }

    /// The packs uploaded, for an index the caller writes.
    pub fn into_packs(self) -> Vec<PackEntry> {
        self.packs
    }

    /// Upload what is left and write the index `name` of every pack uploaded (nothing when none).
    pub async fn finish(&mut self, target: &Target, scope: &str, name: &str) -> Result<()> {
        self.upload(target, scope).await?;
        if self.packs.is_empty() {
            return Ok(());
        }
        let mut body = serde_json::to_vec(&repo::Index::new(std::mem::take(&mut self.packs))).unwrap_or_default();
        body.push(b'\n');
        target.put_bytes(&repo::index_key(scope, name), body.into()).await.map(|_| ())
    }
}
