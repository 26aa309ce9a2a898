//! Deduplicated, write-only chunk storage (`storage = "chunked"` on a job).
//!
//! An artifact's byte stream is cut into content-defined chunks ([`cdc`], keyed by the chunk key
//! [`key`]); a chunk no target holds yet is compressed, padded and age-encrypted on its own
//! ([`blob`]) and appended to a pack of a few MiB on every target that lacks it ([`backup`]);
//! each target's plaintext index says which blob is where ([`repo`]). The artifact itself becomes
//! a recipe (the chunks in order, encrypted: [`recipe`]) stored where a stream artifact would be,
//! and the manifest lists the chunk ids it refers to, so that prune's garbage collection ([`gc`],
//! in two phases: [`fossil`], [`lock`]) runs without the identity and never makes a backup wait. Restore ([`read`]) needs only the
//! identity.
//!
//! Threat model (what read access to a target reveals): the number of backups and artifacts, when
//! they were made, the set of chunk ids each refers to (so which backups share data), and every
//! blob's padded length. Not: file or table names, the order of chunks, their plaintext, or their
//! exact lengths. Chunk ids are keyed MACs and chunk boundaries depend on the key, so someone who
//! holds a known file but not the chunk key cannot compute its ids or its chunk lengths; blob
//! lengths are padded (Padmé) so that lengths alone do not fingerprint content (eprint 2025/558).
//! Someone who can write to the target can delete or damage data (as with stream storage); restore
//! detects every change.

pub mod backup;
pub mod blob;
pub mod cdc;
pub mod copy;
pub mod fossil;
pub mod gc;
pub mod key;
pub mod lock;
pub mod packer;
pub mod read;
pub mod recipe;
pub mod repo;
pub mod retain;
pub mod writer;

pub use backup::ChunkedRun;
pub use key::ChunkKey;
pub use writer::ChunkWriter;
