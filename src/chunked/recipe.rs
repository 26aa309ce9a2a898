//! The recipe of a chunked artifact: its chunks in order. Stored encrypted (zstd + age, like a
//! stream artifact) next to the manifest, because the order and the unkeyed hashes are what
//! would let a reader of the target confirm a guessed file; the manifest only lists the keyed ids.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::key::ChunkId;
use crate::pipeline::Digest;

pub const FORMAT: &str = "drctl-chunk-recipe";
pub const VERSION: u32 = 1;

/// One chunk: `[keyed id, unkeyed BLAKE3 of the plaintext, plaintext length]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step(pub String, pub String, pub u64);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recipe {
    pub format: String,
    pub version: u32,
    pub scope: String,
    pub chunks: Vec<Step>,
}

/// A chunk as the writer knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub hash: [u8; 32],
    pub len: u64,
}

impl ChunkRef {
    pub fn step(&self) -> Step {
        Step(hex::encode(self.id), hex::encode(self.hash), self.len)
    }
}

/// The manifest's `plaintext` digest of a chunked artifact: its total length, and the SHA-256
/// of the chunk list (each keyed id followed by its length, little-endian u64). A reader without
/// the chunk key recomputes it from the recipe; one who only guesses the content cannot.
#[derive(Default)]
pub struct ListDigest {
    hasher: Sha256,
    size: u64,
}

impl ListDigest {
    pub fn add(&mut self, id: &ChunkId, len: u64) {
        self.hasher.update(id);
        self.hasher.update(len.to_le_bytes());
        self.size += len;
    }
    pub fn digest(&self) -> Digest {
        Digest { size: self.size, sha256: hex::encode(self.hasher.clone().finalize()) }
    }
}
