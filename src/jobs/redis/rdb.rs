//! Checks on an RDB file as it streams past, without holding it: the `REDIS` magic and format
//! version at the start, the EOF opcode and the CRC64 checksum Redis writes at the end (zero when
//! the server runs with `rdbchecksum no`).

use std::fmt;

/// The 9-byte header: `REDIS` and a 4-digit format version.
const HEADER: usize = 9;
/// The opcode before the checksum.
const OPCODE_EOF: u8 = 0xFF;

/// CRC-64/Jones as Redis computes it (reflected, init 0, no final xor).
pub mod crc64 {
    const POLY: u64 = 0x95ac_9329_ac4b_c9b5; // 0xad93d23594c935a9 reflected

    const fn tables() -> [[u64; 256]; 8] {
        let mut t = [[0u64; 256]; 8];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u64;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 { (c >> 1) ^ POLY } else { c >> 1 };
                k += 1;
            }
            t[0][i] = c;
            i += 1;
        }
        let mut i = 0;
        while i < 256 {
            let mut k = 1;
            while k < 8 {
                t[k][i] = (t[k - 1][i] >> 8) ^ t[0][(t[k - 1][i] & 0xff) as usize];
                k += 1;
            }
            i += 1;
        }
        t
    }

    static T: [[u64; 256]; 8] = tables();

    /// Continue `crc` over `data` (slicing by 8).
    pub fn update(mut crc: u64, data: &[u8]) -> u64 {
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let v = crc ^ u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            crc = T[7][(v & 0xff) as usize]
                ^ T[6][((v >> 8) & 0xff) as usize]
                ^ T[5][((v >> 16) & 0xff) as usize]
                ^ T[4][((v >> 24) & 0xff) as usize]
                ^ T[3][((v >> 32) & 0xff) as usize]
                ^ T[2][((v >> 40) & 0xff) as usize]
                ^ T[1][((v >> 48) & 0xff) as usize]
                ^ T[0][(v >> 56) as usize];
        }
        for &b in chunks.remainder() {
            crc = T[0][((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
        }
        crc
    }

    #[cfg(test)]
    pub fn bytewise(mut crc: u64, data: &[u8]) -> u64 {
        for &b in data {
            crc = T[0][((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
        }
        crc
    }
}

/// Why a stream is not a complete RDB file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RdbProblem {
    Empty,
    NotRdb(String),
    Truncated,
    Checksum { stored: u64, computed: u64 },
}

impl fmt::Display for RdbProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RdbProblem::Empty => f.write_str("the RDB is empty"),
            RdbProblem::NotRdb(start) => write!(f, "this is not an RDB file (it starts with {start:?}, not `REDIS`)"),
            RdbProblem::Truncated => f.write_str("the RDB is truncated (no EOF opcode before the checksum)"),
            RdbProblem::Checksum { stored, computed } => {
                write!(f, "RDB checksum mismatch: the file says {stored:016x}, its content hashes to {computed:016x}")
            }
        }
    }
}

/// What a complete RDB stream was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdbSummary {
    pub version: u32,
    pub size: u64,
    /// Whether the file carried a checksum (and it matched).
    pub checksummed: bool,
}

/// Feed it every byte of the stream, in order, then ask [`RdbCheck::finish`].
#[derive(Debug, Default, Clone)]
pub struct RdbCheck {
    head: Vec<u8>,
    /// The last (up to) 8 bytes seen: the checksum once the stream ends.
    tail: Vec<u8>,
    /// CRC of every byte before `tail`.
    crc: u64,
    /// The byte just before `tail`.
    before_tail: Option<u8>,
    size: u64,
}

impl RdbCheck {
    pub fn new() -> RdbCheck {
        RdbCheck::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn update(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.size += data.len() as u64;
        if self.head.len() < HEADER {
            let take = (HEADER - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
        }
        if data.len() >= 8 {
            // everything in the old tail and all but the last 8 new bytes are now final
            let tail = std::mem::take(&mut self.tail);
            self.crc = crc64::update(self.crc, &tail);
            let (body, last) = data.split_at(data.len() - 8);
            self.crc = crc64::update(self.crc, body);
            self.before_tail = body.last().copied().or(tail.last().copied()).or(self.before_tail);
            self.tail = last.to_vec();
        } else {
            self.tail.extend_from_slice(data);
            if self.tail.len() > 8 {
                let spill = self.tail.len() - 8;
                self.crc = crc64::update(self.crc, &self.tail[..spill]);
                self.before_tail = Some(self.tail[spill - 1]);
                self.tail.drain(..spill);
            }
        }
    }

    /// The format version from the header, once 9 bytes were seen.
    pub fn version(&self) -> Option<u32> {
        if self.head.len() < HEADER || &self.head[..5] != b"REDIS" {
            return None;
        }
        std::str::from_utf8(&self.head[5..HEADER]).ok()?.parse().ok()
    }

    pub fn finish(&self) -> Result<RdbSummary, RdbProblem> {
        if self.size == 0 {
            return Err(RdbProblem::Empty);
        }
        let Some(version) = self.version() else {
            return Err(RdbProblem::NotRdb(String::from_utf8_lossy(&self.head).into_owned()));
        };
        // REDIS0001..4 files end with the EOF opcode and no checksum
        if version < 5 {
            let last = self.tail.last().copied();
            return if last == Some(OPCODE_EOF) {
                Ok(RdbSummary { version, size: self.size, checksummed: false })
            } else {
                Err(RdbProblem::Truncated)
            };
        }
        if self.size < (HEADER + 1 + 8) as u64 || self.tail.len() != 8 || self.before_tail != Some(OPCODE_EOF) {
            return Err(RdbProblem::Truncated);
        }
        let stored = u64::from_le_bytes(self.tail[..].try_into().unwrap_or([0; 8]));
        if stored == 0 {
            return Ok(RdbSummary { version, size: self.size, checksummed: false });
        }
        if stored != self.crc {
            return Err(RdbProblem::Checksum { stored, computed: self.crc });
        }
        Ok(RdbSummary { version, size: self.size, checksummed: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_jones_check_value() {
        // the check value Redis' own crc64 test uses
        assert_eq!(crc64::update(0, b"123456789"), 0xe9c6d914c4b8d9ca);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for cut in [0, 1, 7, 8, 9, 4095, 9999] {
            let split = crc64::update(crc64::update(0, &data[..cut]), &data[cut..]);
            assert_eq!(split, crc64::bytewise(0, &data), "cut {cut}");
        }
    }

    /// A minimal valid RDB: header, an aux field, one string key, EOF, checksum.
    fn sample(version: &str, checksum: bool) -> Vec<u8> {
        let mut f = format!("REDIS{version}").into_bytes();
        f.extend_from_slice(&[0xFA, 9]);
        f.extend_from_slice(b"redis-ver");
        f.extend_from_slice(&[6]);
        f.extend_from_slice(b"7.0.15");
        f.extend_from_slice(&[0xFE, 0, 0xFB, 1, 0, 0, 3]);
        f.extend_from_slice(b"key");
        f.extend_from_slice(&[5]);
        f.extend_from_slice(b"value");
        f.push(OPCODE_EOF);
        let crc = if checksum { crc64::update(0, &f) } else { 0 };
        f.extend_from_slice(&crc.to_le_bytes());
        f
    }

    fn check(data: &[u8], step: usize) -> Result<RdbSummary, RdbProblem> {
        let mut c = RdbCheck::new();
        for chunk in data.chunks(step) {
            c.update(chunk);
        }
        c.finish()
    }

    #[test]
    fn accepts_a_complete_rdb_in_any_chunking() {
        let f = sample("0010", true);
        for step in [1, 2, 3, 7, 8, 9, 16, 1000] {
            let s = check(&f, step).unwrap();
            assert_eq!(s, RdbSummary { version: 10, size: f.len() as u64, checksummed: true }, "step {step}");
        }
        let unchecked = sample("0009", false);
        assert!(!check(&unchecked, 5).unwrap().checksummed);
    }

    #[test]
    fn refuses_damaged_streams() {
        let f = sample("0010", true);
        assert_eq!(check(&[], 1), Err(RdbProblem::Empty));
        assert!(matches!(check(b"PGDMP-not-redis-at-all", 4), Err(RdbProblem::NotRdb(_))));
        assert_eq!(check(&f[..f.len() - 1], 3), Err(RdbProblem::Truncated));
        assert_eq!(check(&f[..f.len() / 2], 3), Err(RdbProblem::Truncated));
        let mut flipped = f.clone();
        flipped[20] ^= 1;
        assert!(matches!(check(&flipped, 4), Err(RdbProblem::Checksum { .. })));
    }
}
