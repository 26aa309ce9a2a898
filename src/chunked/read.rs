//! The restore side: a chunked artifact's recipe, then its chunks in order, each fetched from its
//! pack, decrypted, decompressed and checked against the recipe's unkeyed hash, written out.
//! Needs only the age identity (the recipe is an age file; the index is plaintext). Consecutive
//! blobs of one pack are fetched with one ranged read (a span); spans are fetched and opened on one
//! worker thread per core (decryption is most of a restore's CPU), a bounded number ahead of the one
//! being written, and written in order. Blocking: runs on a blocking thread and calls into the
//! runtime for each read.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

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

/// Largest single ranged read (a span: adjacent blobs of one pack).
const READ_SPAN: u64 = 8 << 20;

/// One chunk to restore: its id, its unkeyed BLAKE3, its length, where it is stored.
type Step = (ChunkId, [u8; 32], u64, Location);

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
    let spans = spans(&steps);
    let mut digest = ListDigest::default();
    let ctx = SpanContext { handle, target, scope: &recipe.scope, identities };
    in_order(
        &spans,
        |span| open_span(&ctx, &steps[span.clone()]),
        |span, chunks| {
            for ((id, _, _, _), chunk) in steps[span.clone()].iter().zip(chunks) {
                out.write_all(&chunk).map_err(DecodeError::Output)?;
                progress.inc(chunk.len() as u64);
                digest.add(id, chunk.len() as u64);
            }
            Ok(())
        },
    )?;
    out.flush().map_err(DecodeError::Output)?;
    Ok(DecodeSummary { stored, plaintext: digest.digest() })
}

/// The steps cut into spans: runs of blobs adjacent in one pack, up to [`READ_SPAN`] bytes.
fn spans(steps: &[Step]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < steps.len() {
        let (pack, start) = (&steps[i].3.pack, steps[i].3.offset);
        let mut end = start + steps[i].3.length;
        let mut j = i + 1;
        while j < steps.len() && &steps[j].3.pack == pack && steps[j].3.offset == end && end - start < READ_SPAN {
            end += steps[j].3.length;
            j += 1;
        }
        out.push(i..j);
        i = j;
    }
    out
}

struct SpanContext<'a> {
    handle: &'a tokio::runtime::Handle,
    target: &'a Target,
    scope: &'a str,
    identities: &'a keys::Identities,
}

/// Fetch one span with one ranged read and open its blobs, each checked against its hash.
fn open_span(ctx: &SpanContext<'_>, steps: &[Step]) -> Result<Vec<Vec<u8>>, DecodeError> {
    let (first, last) = (&steps[0].3, &steps[steps.len() - 1].3);
    let (pack, start, end) = (first.pack.clone(), first.offset, last.offset + last.length);
    let key = repo::pack_key(ctx.scope, &pack);
    let target = ctx.target;
    let data = ctx
        .handle
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
    let mut chunks = Vec::with_capacity(steps.len());
    for (_, hash, len, at) in steps {
        let off = (at.offset - start) as usize;
        let chunk =
            blob::open(&data[off..off + at.length as usize], ctx.identities, *len as usize).map_err(|e| match e {
                OpenError::NoKey => DecodeError::Key("none of the configured identities can decrypt the chunks".into()),
                OpenError::Damaged(m) => DecodeError::Corrupt(format!("pack `{key}` at offset {}: {m}", at.offset)),
            })?;
        if chunk.len() as u64 != *len || blake3::hash(&chunk).as_bytes() != hash {
            return Err(DecodeError::Corrupt(format!(
                "pack `{key}` at offset {}: the chunk does not match its hash in the recipe",
                at.offset
            )));
        }
        chunks.push(chunk);
    }
    Ok(chunks)
}

/// Run `work` over `items` on one thread per core (at least 2, at most 8), at most a few items
/// ahead of the one `write` takes next, and hand the results to `write` in order. Stops at the
/// first error in order (the workers stop taking items).
fn in_order<I: Sync, T: Send, E: Send>(
    items: &[I],
    work: impl Fn(&I) -> Result<T, E> + Sync,
    mut write: impl FnMut(&I, T) -> Result<(), E>,
) -> Result<(), E> {
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8);
    let ahead = workers + 1;
    // (items written, stop)
    let gate = (Mutex::new((0usize, false)), Condvar::new());
    let next = AtomicUsize::new(0);
    let set = |f: &dyn Fn(&mut (usize, bool))| {
        f(&mut gate.0.lock().unwrap_or_else(|p| p.into_inner()));
        gate.1.notify_all();
    };
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<T, E>)>();
        for _ in 0..workers {
            let (tx, gate, next, work) = (tx.clone(), &gate, &next, &work);
            scope.spawn(move || {
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    if k >= items.len() {
                        return;
                    }
                    {
                        let mut g = gate.0.lock().unwrap_or_else(|p| p.into_inner());
                        while !g.1 && k >= g.0 + ahead {
                            g = gate.1.wait(g).unwrap_or_else(|p| p.into_inner());
                        }
                        if g.1 {
                            return;
                        }
                    }
                    if tx.send((k, work(&items[k]))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut pending: BTreeMap<usize, Result<T, E>> = BTreeMap::new();
        let mut result = Ok(());
        for (k, item) in items.iter().enumerate() {
            let r = loop {
                if let Some(r) = pending.remove(&k) {
                    break Some(r);
                }
                match rx.recv() {
                    Ok((j, r)) => {
                        pending.insert(j, r);
                    }
                    // every worker is gone without item k: cannot happen unless one panicked
                    Err(_) => break None,
                }
            };
            let Some(r) = r else { break };
            if let Err(e) = r.and_then(|t| write(item, t)) {
                result = Err(e);
                break;
            }
            set(&|g| g.0 = k + 1);
        }
        set(&|g| g.1 = true);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_writes_every_result_in_order_whatever_the_workers_finish_first() {
        let items: Vec<u64> = (0..200).collect();
        let mut seen = Vec::new();
        let r: Result<(), String> = in_order(
            &items,
            |&i| {
                // later items finish first now and then
                std::thread::sleep(std::time::Duration::from_micros((200 - i) % 7 * 100));
                Ok(i * 2)
            },
            |&i, t| {
                assert_eq!(t, i * 2);
                seen.push(i);
                Ok(())
            },
        );
        assert!(r.is_ok());
        assert_eq!(seen, items);
    }

    #[test]
    fn in_order_stops_at_the_first_error_in_order_and_runs_only_a_few_ahead() {
        let items: Vec<u64> = (0..1000).collect();
        let started = AtomicUsize::new(0);
        let mut written = Vec::new();
        let r: Result<(), String> = in_order(
            &items,
            |&i| {
                started.fetch_add(1, Ordering::SeqCst);
                if i == 10 || i == 12 { Err(format!("item {i}")) } else { Ok(i) }
            },
            |&i, _| {
                written.push(i);
                Ok(())
            },
        );
        assert_eq!(r, Err("item 10".to_string()));
        assert_eq!(written, (0..10).collect::<Vec<_>>());
        // the workers stop: at most a few items past the failed one were started
        assert!(started.load(Ordering::SeqCst) <= 10 + 1 + 8 + 1 + 8, "{}", started.load(Ordering::SeqCst));
    }
}
