//! The writer-side chunk key and what is derived from it, and the recipient scope.
//!
//! One secret of 32 random bytes (`encryption.chunk_key_file`) keys two things: the gear table of
//! the content-defined chunker (so that where chunks are cut depends on the key, not only on the
//! data) and the chunk id, a keyed BLAKE3 MAC of the chunk's plaintext. Someone who reads a target
//! but lacks the key cannot compute the id of a chunk they guess, nor predict where a file they
//! know would be cut. Losing the key costs deduplication, never data: restore checks each chunk
//! against the unkeyed BLAKE3 hash in the (encrypted) recipe and needs only the age identity.

use std::path::Path;

use crate::{Error, Result};

/// First line of a chunk key file.
const FILE_TAG: &str = "DRCTL-CHUNK-KEY-V1";

/// A chunk id: BLAKE3 keyed with the chunk key, over the chunk's plaintext.
pub type ChunkId = [u8; 32];

/// The loaded chunk key.
pub struct ChunkKey {
    mac: [u8; 32],
    pub(super) gear: Box<[u64; 256]>,
    pub(super) gear_ls: Box<[u64; 256]>,
    id: String,
}

impl ChunkKey {
    /// Derive everything from the 32-byte secret.
    pub fn from_secret(secret: &[u8; 32]) -> ChunkKey {
        let mac = blake3::derive_key("drctl 2026 chunk id mac v1", secret);
        let gear_key = blake3::derive_key("drctl 2026 chunker gear table v1", secret);
        let mut table = [0u8; 256 * 8];
        blake3::Hasher::new_keyed(&gear_key).finalize_xof().fill(&mut table);
        let mut gear = Box::new([0u64; 256]);
        let mut gear_ls = Box::new([0u64; 256]);
        for (i, b) in table.chunks_exact(8).enumerate() {
            gear[i] = u64::from_le_bytes(b.try_into().unwrap_or_default());
            gear_ls[i] = gear[i] << 1;
        }
        let id = hex::encode(&blake3::derive_key("drctl 2026 chunk key id v1", secret)[..8]);
        ChunkKey { mac, gear, gear_ls, id }
    }

    /// Read a key file written by `drctl keygen --chunk-key`: the tag line, then 64 hex digits
    /// (`#` comments allowed). The file's content never appears in an error.
    ///
    /// # Errors
    /// When the file cannot be read or does not hold a key.
    pub fn load(path: &Path) -> Result<ChunkKey> {
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::ReadFile { path: path.to_path_buf(), source })?;
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        let bad = || {
            Error::Encryption(format!(
                "`{}` is not a drctl chunk key (expected `{FILE_TAG}` and 64 hex digits; `drctl keygen --chunk-key FILE` writes one)",
                path.display()
            ))
        };
        if lines.next() != Some(FILE_TAG) {
            return Err(bad());
        }
        let hexed = lines.next().ok_or_else(bad)?;
        let mut secret = [0u8; 32];
        hex::decode_to_slice(hexed, &mut secret).map_err(|_| bad())?;
        Ok(ChunkKey::from_secret(&secret))
    }

    /// The id of a chunk.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        *blake3::keyed_hash(&self.mac, data).as_bytes()
    }

    /// A public fingerprint of the key (recorded in the repository's config so that a writer
    /// with another key is noticed): reveals nothing about the key.
    pub fn key_id(&self) -> &str {
        &self.id
    }
}

/// Text of a new key file.
pub fn generate() -> String {
    let secret: [u8; 32] = rand::random();
    let created = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    format!(
        "# drctl chunk key, created {created}: keys chunking and chunk ids of deduplicated storage.\n\
         # Every host writing to the same targets needs the same file; restore does not need it.\n\
         {FILE_TAG}\n{}\n",
        hex::encode(secret)
    )
}

/// The dedup scope of a recipient set: chunks are only ever shared between backups encrypted to
/// exactly the same recipients (a key rotation starts a new scope, so no backup for the new
/// recipients refers to blobs the old ones encrypted).
pub fn scope(recipients: &[String]) -> String {
    let mut r: Vec<&str> = recipients.iter().map(|s| s.trim()).collect();
    r.sort_unstable();
    r.dedup();
    let mut h = blake3::Hasher::new();
    for x in r {
        h.update(x.as_bytes());
        h.update(b"\n");
    }
    hex::encode(&h.finalize().as_bytes()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_and_rejects_junk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, generate()).unwrap();
        let a = ChunkKey::load(&p).unwrap();
        let b = ChunkKey::load(&p).unwrap();
        assert_eq!(a.chunk_id(b"x"), b.chunk_id(b"x"));
        assert_eq!(a.key_id(), b.key_id());
        std::fs::write(&p, generate()).unwrap();
        let c = ChunkKey::load(&p).unwrap();
        assert_ne!(a.chunk_id(b"x"), c.chunk_id(b"x"), "another key, other ids");
        assert_ne!(a.gear[0], c.gear[0]);
        std::fs::write(&p, "AGE-SECRET-KEY-1XYZ\n").unwrap();
        let err = ChunkKey::load(&p).err().unwrap().to_string();
        assert!(err.contains("not a drctl chunk key") && !err.contains("XYZ"), "{err}");
    }

    #[test]
    fn scope_ignores_order_and_duplicates() {
        let a = scope(&["age1b".into(), "age1a".into()]);
        assert_eq!(a, scope(&["age1a".into(), "age1b".into(), "age1a".into()]));
        assert_ne!(a, scope(&["age1a".into()]));
        assert_eq!(a.len(), 16);
    }
}
