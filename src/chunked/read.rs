//! The restore side: a chunked artifact's recipe, then its chunks in order, each fetched from its
//! pack, decrypted, decompressed and checked against the recipe's unkeyed hash, written out.
//! Needs only the age identity (the recipe is an age file; the index is plaintext). Consecutive
//! blobs of one pack are fetched with one ranged read. Blocking: runs on a blocking thread and
//! calls into the runtime for each read.

use std::collections::HashMap;
use std::io::Write;

use sha2::{Digest as _, Sha256};

use super::blob::{self, OpenError};
use super::key::ChunkId;
use super::recipe::{ListDigest, Recipe};
use super::repo::{self, Location};
use crate::manifest::Artifact;
use crate::pipeline::decode::{DecodeError, DecodeSummary};
use crate::pipeline::{Digest, decode_blocking, keys};
use crate::progress::Progress;
use crate::targets::Target;

/// Largest single ranged read.
const READ_SPAN: u64 = 16 << 20;

/// Read and decrypt the recipe object of `a`; returns it with the digest of its stored bytes.
pub fn recipe(
    handle: &tokio::runtime::Handle,
    target: &Target,
    a: &Artifact,
    identities: &keys::Identities,
) -> Result<(Recipe, Digest), DecodeError> {
    let stored = handle
        .block_on(target.get_bytes(&a.key))
        .map_err(|e| DecodeError::Input(std::io::Error::other(e.to_string())))?;
    let digest = Digest { size: stored.len() as u64, sha256: hex::encode(Sha256::digest(&stored)) };
    let mut plain = Vec::new();
    decode_blocking(&stored[..], identities, &mut plain, &Progress::hidden())?;
    let r: Recipe = serde_json::from_slice(&plain)
        .map_err(|e| DecodeError::Corrupt(format!("the chunk recipe `{}` is not readable: {e}", a.key)))?;
    if r.format != super::recipe::FORMAT || r.version > super::recipe::VERSION {
        return Err(DecodeError::Corrupt(format!("`{}` is not a chunk recipe this drctl reads", a.key)));
    }
    Ok((r, digest))
}

/// Restore `a` from `target` into `out`.
pub fn decode(
    handle: &tokio::runtime::Handle,
    target: &Target,
    a: &Artifact,
    identities: &keys::Identities,
    mut out: impl Write,
    progress: &Progress,
) -> Result<DecodeSummary, DecodeError> {
    let (recipe, stored) = recipe(handle, target, a, identities)?;
    let indexes = handle
        .block_on(super::fossil::load_for_reading(target, &recipe.scope))
        .map_err(|e| DecodeError::Input(std::io::Error::other(e.to_string())))?;
    let places: HashMap<ChunkId, Location> = repo::locations(&indexes);
    drop(indexes);
    let mut steps = Vec::with_capacity(recipe.chunks.len());
    for s in &recipe.chunks {
        let id = repo::parse_id(&s.0).ok_or_else(|| DecodeError::Corrupt(format!("bad chunk id in `{}`", a.key)))?;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&s.1, &mut hash)
            .map_err(|_| DecodeError::Corrupt(format!("bad chunk hash in `{}`", a.key)))?;
        let at = places.get(&id).cloned().ok_or_else(|| {
            DecodeError::Corrupt(format!(
                "chunk {} of `{}` is in no pack of repository `{}` on this target: the repository lost it",
                &s.0[..16],
                a.name,
                recipe.scope
            ))
        })?;
        steps.push((id, hash, s.2, at));
    }
    drop(places);
    let mut digest = ListDigest::default();
    let mut i = 0;
    while i < steps.len() {
        // one read for a run of adjacent blobs in one pack
        let (pack, start) = (steps[i].3.pack.clone(), steps[i].3.offset);
        let mut end = start + steps[i].3.length;
        let mut j = i + 1;
        while j < steps.len() && steps[j].3.pack == pack && steps[j].3.offset == end && end - start < READ_SPAN {
            end += steps[j].3.length;
            j += 1;
        }
        let key = repo::pack_key(&recipe.scope, &pack);
        let data = handle
            .block_on(async {
                use futures::TryStreamExt;
                let s = target.get(&key, Some(start..end)).await?;
                s.try_fold(Vec::with_capacity((end - start) as usize), |mut acc, c| async move {
                    acc.extend_from_slice(&c);
                    Ok(acc)
                })
                .await
                .map_err(|e| {
                    crate::targets::target_error(target.name(), "get", &key, crate::error::FailureKind::Transient, e)
                })
            })
            .map_err(|e| DecodeError::Input(std::io::Error::other(e.to_string())))?;
        if data.len() as u64 != end - start {
            return Err(DecodeError::Corrupt(format!("pack `{key}` is shorter than its index says")));
        }
        for (id, hash, len, at) in &steps[i..j] {
            let off = (at.offset - start) as usize;
            let chunk =
                blob::open(&data[off..off + at.length as usize], identities, *len as usize).map_err(|e| match e {
                    OpenError::NoKey => {
                        DecodeError::Key("none of the configured identities can decrypt the chunks".into())
                    }
                    OpenError::Damaged(m) => DecodeError::Corrupt(format!("pack `{key}` at offset {}: {m}", at.offset)),
                })?;
            if chunk.len() as u64 != *len || blake3::hash(&chunk).as_bytes() != hash {
                return Err(DecodeError::Corrupt(format!(
                    "pack `{key}` at offset {}: the chunk does not match its hash in the recipe",
                    at.offset
                )));
            }
            out.write_all(&chunk).map_err(DecodeError::Output)?;
            progress.inc(chunk.len() as u64);
            digest.add(id, *len);
        }
        i = j;
    }
    out.flush().map_err(DecodeError::Output)?;
    Ok(DecodeSummary { stored, plaintext: digest.digest() })
}
