//! Content-defined chunking (FastCDC 2020, `fastcdc::v2020::cut_gear`) with a keyed gear table,
//! fed incrementally, with cuts forced where the caller knows a boundary (a file's start and end:
//! what lets an unchanged file map to the same chunks whatever came before it).

use fastcdc::v2020::{MASKS, cut_gear};

use super::key::ChunkKey;

/// Chunks are never smaller than this except at a forced cut or the end.
pub const MIN_SIZE: usize = 256 * 1024;
/// Average chunk size: 1 MiB (restic's and borg's order of magnitude; a pack holds a few).
pub const AVG_SIZE: usize = 1024 * 1024;
/// Largest chunk.
pub const MAX_SIZE: usize = 4 * 1024 * 1024;
/// FastCDC normalisation level 1 (as the fastcdc crate's default).
const NORMALIZATION: usize = 1;

/// Cuts a byte stream into chunks.
pub struct Chunker {
    buf: Vec<u8>,
    masks: (u64, u64),
}

impl Default for Chunker {
    fn default() -> Self {
        let bits = AVG_SIZE.trailing_zeros() as usize;
        Chunker { buf: Vec::with_capacity(MAX_SIZE), masks: (MASKS[bits + NORMALIZATION], MASKS[bits - NORMALIZATION]) }
    }
}

impl Chunker {
    /// Append `data`; `emit` is called with every chunk that is complete.
    pub fn push<E>(
        &mut self,
        key: &ChunkKey,
        mut data: &[u8],
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        while !data.is_empty() {
            let room = MAX_SIZE - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == MAX_SIZE {
                self.drain(key, false, emit)?;
            }
        }
        Ok(())
    }

    /// Force a boundary here: everything pushed so far is emitted.
    pub fn cut<E>(&mut self, key: &ChunkKey, emit: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        self.drain(key, true, emit)
    }

    /// Whether nothing is pending since the last cut.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn drain<E>(&mut self, key: &ChunkKey, all: bool, emit: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let (mask_s, mask_l) = self.masks;
        let mut start = 0;
        while start < self.buf.len() && (all || self.buf.len() - start >= MAX_SIZE) {
            let rest = &self.buf[start..];
            let (_, n) = cut_gear(
                rest,
                MIN_SIZE,
                AVG_SIZE,
                MAX_SIZE,
                mask_s,
                mask_l,
                mask_s << 1,
                mask_l << 1,
                &key.gear,
                &key.gear_ls,
            );
            let n = n.max(1).min(rest.len());
            emit(&rest[..n])?;
            start += n;
        }
        self.buf.drain(..start);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(key: &ChunkKey, parts: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut c = Chunker::default();
        let mut out = Vec::new();
        let mut emit = |b: &[u8]| {
            out.push(b.to_vec());
            Ok::<(), ()>(())
        };
        for p in parts {
            c.push(key, p, &mut emit).unwrap();
        }
        c.cut(key, &mut emit).unwrap();
        out
    }

    fn noise(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn boundaries_follow_content_not_offsets_and_depend_on_the_key() {
        let key = ChunkKey::from_secret(&[7; 32]);
        let data = noise(12 << 20, 1);
        let a = chunks(&key, &[&data]);
        assert_eq!(a.concat(), data);
        assert!(a.len() >= 6, "{} chunks", a.len());
        assert!(a.iter().all(|c| c.len() <= MAX_SIZE));
        // fed in odd pieces: the same chunks
        let pieces: Vec<&[u8]> = data.chunks(77_777).collect();
        assert_eq!(chunks(&key, &pieces), a);
        // 1000 bytes inserted near the start: all but the first chunk or two come back
        let mut shifted = noise(1000, 9);
        shifted.extend_from_slice(&data);
        let b = chunks(&key, &[&shifted]);
        let same = b.iter().filter(|c| a.contains(c)).count();
        assert!(same + 2 >= a.len(), "{same} of {}", a.len());
        // another key cuts elsewhere
        let other = chunks(&ChunkKey::from_secret(&[8; 32]), &[&data]);
        assert!(other.iter().filter(|c| a.contains(c)).count() <= 1);
    }

    #[test]
    fn a_forced_cut_emits_what_is_pending() {
        let key = ChunkKey::from_secret(&[1; 32]);
        let mut c = Chunker::default();
        let mut out = Vec::new();
        let mut emit = |b: &[u8]| {
            out.push(b.len());
            Ok::<(), ()>(())
        };
        c.push(&key, b"header", &mut emit).unwrap();
        c.cut(&key, &mut emit).unwrap();
        assert!(c.is_empty());
        c.cut(&key, &mut emit).unwrap();
        assert_eq!(out, [6]);
    }
}
