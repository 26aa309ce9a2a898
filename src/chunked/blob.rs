//! One stored chunk: `age(zstd(chunk) ‖ zstd skippable frame of padding)`.
//!
//! Each blob is a complete age file, so `age -d` opens it alone and `zstd -d` turns what comes out
//! into the chunk (zstd decoders skip skippable frames). The padding rounds the encrypted length
//! up with Padmé (Nikitin et al., PETS 2019): at most 12 % overhead, and a stored length leaks
//! only O(log log n) bits of the compressed length, so sizes do not fingerprint content.

use std::io::Write;

/// Smallest padded plaintext: tiny chunks (a run's tail) all look alike.
const MIN_PADDED: u64 = 4096;
/// Magic number of the zstd skippable frame used for padding.
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5D;
const SKIPPABLE_HEADER: usize = 8;

/// Padmé: `len` rounded up so that only the top bits of its binary exponent's length vary.
pub fn padme(len: u64) -> u64 {
    if len < 2 {
        return len;
    }
    let e = 63 - u64::from(len.leading_zeros()); // floor(log2 len)
    let s = 64 - u64::from(e.leading_zeros()); // floor(log2 e) + 1
    let last_bits = e - s;
    let mask = (1u64 << last_bits) - 1;
    (len + mask) & !mask
}

/// How long the padded plaintext of a blob whose compressed chunk is `compressed` bytes is.
fn padded_len(compressed: usize) -> usize {
    let min = (compressed + SKIPPABLE_HEADER) as u64;
    padme(min.max(MIN_PADDED)) as usize
}

/// Compress, pad and encrypt one chunk.
///
/// # Errors
/// When compression or encryption fails (out of memory; never for valid input).
pub fn seal(chunk: &[u8], level: i32, recipients: &[age::x25519::Recipient]) -> std::io::Result<Vec<u8>> {
    let compressed = zstd::bulk::compress(chunk, level)?;
    let total = padded_len(compressed.len());
    let pad = total - compressed.len() - SKIPPABLE_HEADER;
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(total + 256);
    let mut w = encryptor.wrap_output(&mut out)?;
    w.write_all(&compressed)?;
    w.write_all(&SKIPPABLE_MAGIC.to_le_bytes())?;
    w.write_all(&(pad as u32).to_le_bytes())?;
    w.write_all(&vec![0u8; pad])?;
    w.finish()?;
    Ok(out)
}

/// Compress and encrypt a small document (a recipe) as one age file, unpadded: `age -d | zstd -d`
/// opens it like any stream artifact.
///
/// # Errors
/// As [`seal`].
pub fn seal_document(doc: &[u8], level: i32, recipients: &[age::x25519::Recipient]) -> std::io::Result<Vec<u8>> {
    let compressed = zstd::bulk::compress(doc, level)?;
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(compressed.len() + 256);
    let mut w = encryptor.wrap_output(&mut out)?;
    w.write_all(&compressed)?;
    w.finish()?;
    Ok(out)
}

/// Why a blob did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("none of the identities can decrypt it")]
    NoKey,
    #[error("{0}")]
    Damaged(String),
}

/// Decrypt and decompress one blob, at most `limit` bytes of chunk.
///
/// # Errors
/// [`OpenError::NoKey`] when no identity matches; [`OpenError::Damaged`] for anything else.
pub fn open(
    blob: &[u8],
    identities: &[Box<dyn age::Identity + Send + Sync>],
    limit: usize,
) -> Result<Vec<u8>, OpenError> {
    use std::io::Read;
    let dec = age::Decryptor::new_buffered(blob).map_err(|e| OpenError::Damaged(format!("not an age file: {e}")))?;
    let reader = match dec.decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity)) {
        Ok(r) => r,
        Err(age::DecryptError::NoMatchingKeys) => return Err(OpenError::NoKey),
        Err(e) => return Err(OpenError::Damaged(e.to_string())),
    };
    let mut z = zstd::stream::read::Decoder::new(reader).map_err(|e| OpenError::Damaged(e.to_string()))?;
    let mut out = Vec::new();
    (&mut z)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| OpenError::Damaged(format!("cannot decrypt or decompress: {e}")))?;
    if out.len() > limit {
        return Err(OpenError::Damaged(format!("holds more than the {limit} bytes the recipe says")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padme_rounds_up_by_at_most_12_percent() {
        assert_eq!(padme(0), 0);
        assert_eq!(padme(1), 1);
        for len in [2u64, 7, 100, 1000, 4096, 4097, 65_537, 1_000_003, 8 << 20] {
            let p = padme(len);
            assert!(p >= len && (p - len) as f64 <= len as f64 * 0.12 + 1.0, "{len} -> {p}");
        }
        // many lengths share one padded size: what hides them
        let distinct: std::collections::BTreeSet<u64> = (1_000_000..1_100_000).map(padme).collect();
        assert!(distinct.len() < 16, "{}", distinct.len());
    }

    #[test]
    fn seal_and_open_round_trip_and_hide_the_length() {
        let id = age::x25519::Identity::generate();
        let ids: Vec<Box<dyn age::Identity + Send + Sync>> = vec![Box::new(id.clone())];
        let r = vec![id.to_public()];
        // incompressible, so that the compressed lengths are 1000 bytes apart too
        let mut x = 0x9E37_79B9u32;
        let a: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect();
        let b = &a[..299_000];
        let (sa, sb) = (seal(&a, 3, &r).unwrap(), seal(b, 3, &r).unwrap());
        assert_eq!(open(&sa, &ids, a.len()).unwrap(), a);
        assert_eq!(open(&sb, &ids, b.len()).unwrap(), b);
        // the padded plaintexts are equal; the age header varies by a few random bytes (grease)
        let raw = |c: &[u8]| padded_len(zstd::bulk::compress(c, 3).unwrap().len());
        assert_eq!(raw(&a), raw(b), "lengths 1000 bytes apart look alike when stored");
        assert!(sa.len().abs_diff(sb.len()) < 300, "{} vs {}", sa.len(), sb.len());
        assert!(matches!(open(&sa, &ids, 10), Err(OpenError::Damaged(_))));
        let other: Vec<Box<dyn age::Identity + Send + Sync>> = vec![Box::new(age::x25519::Identity::generate())];
        assert!(matches!(open(&sa, &other, a.len()), Err(OpenError::NoKey)));
        let mut flipped = sa.clone();
        let n = flipped.len();
        flipped[n / 2] ^= 1;
        assert!(matches!(open(&flipped, &ids, a.len()), Err(OpenError::Damaged(_))));
        let tiny = seal(b"x", 3, &r).unwrap();
        assert_eq!(open(&tiny, &ids, 1).unwrap(), b"x");
        assert!(tiny.len() >= MIN_PADDED as usize);
    }
}
