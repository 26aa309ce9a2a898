//! Restore direction: stored bytes → sha256 → age → zstd → sha256 → output.

use std::io::{BufReader, Read, Write};

use super::{Digest, HashingReader, HashingWriter};
use crate::progress::Progress;

/// What came out of the decoder.
#[derive(Debug, Clone)]
pub struct DecodeSummary {
    pub stored: Digest,
    pub plaintext: Digest,
}

/// Why decoding stopped.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// No identity matches any recipient, or the header is not age.
    #[error("{0}")]
    Key(String),
    /// Authentication, decompression or framing failed: the data is damaged or truncated.
    #[error("{0}")]
    Corrupt(String),
    /// Reading the stored bytes failed (network, disk).
    #[error("reading the stored object failed: {0}")]
    Input(std::io::Error),
    /// The consumer stopped accepting data (e.g. pg_restore exited).
    #[error("writing the restored data failed: {0}")]
    Output(std::io::Error),
}

/// Marks an `io::Error` as coming from the stored-object reader, so it is not mistaken for
/// corruption detected by age or zstd.
#[derive(Debug)]
pub struct InputFault(pub String);
impl std::fmt::Display for InputFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for InputFault {}

fn classify(e: std::io::Error) -> DecodeError {
    if e.get_ref().is_some_and(|inner| inner.is::<InputFault>()) {
        return DecodeError::Input(e);
    }
    DecodeError::Corrupt(format!("the data is damaged or truncated: {e}"))
}

/// Decrypt and decompress `input` into `out`. Blocking: run it on a blocking thread.
///
/// # Errors
/// See [`DecodeError`].
pub fn decode_blocking(
    input: impl Read,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    out: impl Write,
    progress: &Progress,
) -> Result<DecodeSummary, DecodeError> {
    let mut stored = HashingReader::new(input);
    let mut out = HashingWriter::new(out);
    {
        let decryptor =
            age::Decryptor::new_buffered(BufReader::with_capacity(64 * 1024, &mut stored)).map_err(|e| match e {
                age::DecryptError::Io(io) => classify(io),
                other => DecodeError::Key(format!("not a readable age file: {other}")),
            })?;
        let reader =
            decryptor.decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity)).map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => DecodeError::Key(
                    "none of the configured identities can decrypt it (it was encrypted to other recipients)".into(),
                ),
                age::DecryptError::Io(io) => classify(io),
                other => DecodeError::Key(other.to_string()),
            })?;
        let mut zstd = zstd::stream::read::Decoder::new(reader).map_err(classify)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match zstd.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(classify(e)),
            };
            out.write_all(&buf[..n]).map_err(DecodeError::Output)?;
            progress.inc(n as u64);
        }
    }
    out.flush().map_err(DecodeError::Output)?;
    // anything after the end of the age stream is not ours: count it so the size check catches it
    std::io::copy(&mut stored, &mut std::io::sink()).map_err(classify)?;
    Ok(DecodeSummary { stored: stored.digest(), plaintext: out.digest() })
}
