//! sha256 + byte counting adapters, used on both sides of the pipeline.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Size and sha256 of a byte stream, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

#[derive(Default)]
struct Counter {
    hasher: Sha256,
    size: u64,
}

impl Counter {
    fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.size += data.len() as u64;
    }
    fn digest(&self) -> Digest {
        Digest { size: self.size, sha256: hex::encode(self.hasher.clone().finalize()) }
    }
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    counter: Counter,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, counter: Counter::default() }
    }
    pub fn digest(&self) -> Digest {
        self.counter.digest()
    }
    pub fn size(&self) -> u64 {
        self.counter.size
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    counter: Counter,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, counter: Counter::default() }
    }
    pub fn digest(&self) -> Digest {
        self.counter.digest()
    }
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.counter.update(&data[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// sha256 of a whole in-memory value.
#[cfg(test)]
pub fn digest_of(data: &[u8]) -> Digest {
    let mut c = Counter::default();
    c.update(data);
    c.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sha256() {
        let d = digest_of(b"abc");
        assert_eq!(d.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let mut r = HashingReader::new(&b"abc"[..]);
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        assert_eq!(r.digest(), d);
    }
}
