//! WAL positions and segment file names, as PostgreSQL writes them.
//!
//! An LSN is a byte position in the WAL (`16/B374D848`). WAL is cut into segments of
//! `wal_segment_size` bytes (16 MiB unless initdb was told otherwise); a segment's file name is
//! its timeline and number as 24 hex digits, `TTTTTTTTXXXXXXXXYYYYYYYY`, with the number split in
//! "log" (`segno / segments per 4 GiB`) and "seg" (`segno % segments per 4 GiB`).

use std::fmt;
use std::str::FromStr;

/// A WAL position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Lsn, String> {
        let (hi, lo) = s.trim().split_once('/').ok_or_else(|| format!("`{s}` is not an LSN (`16/B374D848`)"))?;
        let part = |p: &str| u32::from_str_radix(p, 16).map_err(|_| format!("`{s}` is not an LSN (`16/B374D848`)"));
        Ok(Lsn((u64::from(part(hi)?) << 32) | u64::from(part(lo)?)))
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The segment geometry of one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    /// `wal_segment_size` in bytes: a power of two from 1 MiB to 1 GiB.
    pub size: u64,
}

impl Segments {
    pub const DEFAULT: Segments = Segments { size: 16 << 20 };

    /// Geometry for a `wal_segment_size` in bytes; `None` for a size PostgreSQL cannot have.
    pub fn new(size: u64) -> Option<Segments> {
        (size.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&size)).then_some(Segments { size })
    }

    fn per_log(self) -> u64 {
        0x1_0000_0000 / self.size
    }

    /// The number of the segment holding `lsn`.
    pub fn segno(self, lsn: Lsn) -> u64 {
        lsn.0 / self.size
    }

    /// Where segment `segno` starts.
    pub fn start(self, segno: u64) -> Lsn {
        Lsn(segno * self.size)
    }

    /// The file name of segment `segno` on timeline `tli`.
    pub fn name(self, tli: u32, segno: u64) -> String {
        format!("{tli:08X}{:08X}{:08X}", segno / self.per_log(), segno % self.per_log())
    }

    /// Timeline and segment number of a segment file name; `None` for anything else.
    pub fn parse(self, name: &str) -> Option<(u32, u64)> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let tli = u32::from_str_radix(&name[0..8], 16).ok()?;
        let log = u64::from_str_radix(&name[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
        (seg < self.per_log()).then_some((tli, log * self.per_log() + seg))
    }
}

/// A timeline's history file name (`00000002.history`).
pub fn history_name(tli: u32) -> String {
    format!("{tli:08X}.history")
}

/// The timeline of a history file name.
pub fn parse_history_name(name: &str) -> Option<u32> {
    let hex = name.strip_suffix(".history")?;
    (hex.len() == 8).then(|| u32::from_str_radix(hex, 16).ok()).flatten()
}

/// Parse a size as `SHOW wal_segment_size` prints it (`16MB`, `1GB`, `1024kB`).
pub fn parse_size_setting(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split].parse().ok()?;
    let unit = match &s[split..] {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_in_postgres_notation() {
        for s in ["0/0", "0/2000028", "16/B374D848", "FFFFFFFF/FFFFFFFF"] {
            let l: Lsn = s.parse().unwrap();
            assert_eq!(l.to_string(), s);
        }
        assert_eq!("1/0".parse::<Lsn>().unwrap(), Lsn(1 << 32));
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
        assert!(Lsn(5) < Lsn(6));
    }

    #[test]
    fn segment_names_match_postgres() {
        let s = Segments::DEFAULT;
        // from a real backup_label: START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
        let lsn: Lsn = "0/2000028".parse().unwrap();
        assert_eq!(s.name(1, s.segno(lsn)), "000000010000000000000002");
        // 16 MiB segments: 256 per 4 GiB "log"
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(s.name(1, s.segno(lsn)), "0000000100000016000000B3");
        assert_eq!(s.parse("0000000100000016000000B3"), Some((1, s.segno(lsn))));
        assert_eq!(s.start(s.segno(lsn)), "16/B3000000".parse().unwrap());
        assert_eq!(s.parse("000000010000001600000100"), None, "seg beyond 0xFF with 16 MiB");
        assert_eq!(s.parse("00000001000000160000000"), None);
        assert_eq!(s.parse("00000002.history"), None);
        let big = Segments::new(1 << 30).unwrap();
        assert_eq!(big.name(3, 9), "000000030000000200000001");
        assert_eq!(Segments::new(3 << 20), None);
    }

    #[test]
    fn history_and_size_settings() {
        assert_eq!(history_name(2), "00000002.history");
        assert_eq!(parse_history_name("0000000A.history"), Some(10));
        assert_eq!(parse_history_name("000000010000000000000002"), None);
        assert_eq!(parse_size_setting("16MB"), Some(16 << 20));
        assert_eq!(parse_size_setting("1GB"), Some(1 << 30));
        assert_eq!(parse_size_setting("1024kB"), Some(1 << 20));
        assert_eq!(parse_size_setting("16 fathoms"), None);
    }
}
