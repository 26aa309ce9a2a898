//! Reading a GitLab backup archive while it streams past: the top-level entries (its parts:
//! `db`, `repositories`, `uploads.tar.gz` …) and `backup_information.yml`.
//!
//! The archive is an uncompressed tar. [`TarInspector`] parses only the 512-byte headers and
//! skips the data (keeping `backup_information.yml` and pax/long-name records, each bounded), so
//! nothing is buffered and the pipeline sees every byte unchanged. A header with a bad checksum,
//! a missing end-of-archive marker or a missing `backup_information.yml` makes the backup fail:
//! such a file is not a complete GitLab backup.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// The metadata file GitLab writes first into every archive.
pub const INFO_FILE: &str = "backup_information.yml";
const BLOCK: usize = 512;
/// Most bytes kept of `backup_information.yml` or of one pax / long-name record.
const KEEP: usize = 256 * 1024;

/// What was learnt about a complete archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// Top-level entries other than `backup_information.yml`, sorted.
    pub parts: Vec<String>,
    /// `backup_information.yml`, key → value.
    pub info: BTreeMap<String, String>,
    pub size: u64,
}

enum Keep {
    Nothing,
    Pax(Vec<u8>),
    LongName(Vec<u8>),
    Info(Vec<u8>),
}

/// A tar header parser fed with the archive's bytes in order.
pub struct TarInspector {
    header: Vec<u8>,
    /// Bytes of the current entry's data (with padding) still to come.
    remaining: u64,
    /// Of those, bytes of real data (without padding).
    data_left: u64,
    keep: Keep,
    next_path: Option<String>,
    zero_blocks: u32,
    parts: BTreeSet<String>,
    info: Option<String>,
    error: Option<String>,
    offset: u64,
}

impl Default for TarInspector {
    fn default() -> Self {
        Self::new()
    }
}

impl TarInspector {
    pub fn new() -> Self {
        TarInspector {
            header: Vec::with_capacity(BLOCK),
            remaining: 0,
            data_left: 0,
            keep: Keep::Nothing,
            next_path: None,
            zero_blocks: 0,
            parts: BTreeSet::new(),
            info: None,
            error: None,
            offset: 0,
        }
    }

    /// Take the next bytes of the archive.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.error.is_none() {
            if self.zero_blocks >= 2 {
                // after the end marker tar pads with zeros to its record size: nothing to read
                self.offset += data.len() as u64;
                return;
            }
            if self.remaining > 0 {
                let n = (self.remaining.min(data.len() as u64)) as usize;
                let m = (self.data_left.min(n as u64)) as usize;
                match &mut self.keep {
                    Keep::Pax(b) | Keep::LongName(b) | Keep::Info(b) if b.len() < KEEP => {
                        b.extend_from_slice(&data[..m.min(KEEP - b.len())]);
                    }
                    _ => {}
                }
                self.data_left -= m as u64;
                self.remaining -= n as u64;
                self.offset += n as u64;
                data = &data[n..];
                if self.remaining == 0 {
                    self.end_entry();
                }
                continue;
            }
            let n = (BLOCK - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..n]);
            self.offset += n as u64;
            data = &data[n..];
            if self.header.len() == BLOCK {
                let block = std::mem::take(&mut self.header);
                self.header_block(&block);
                self.header = block;
                self.header.clear();
            }
        }
    }

    fn header_block(&mut self, h: &[u8]) {
        if h.iter().all(|b| *b == 0) {
            self.zero_blocks += 1;
            return;
        }
        let at = self.offset - BLOCK as u64;
        if self.zero_blocks > 0 {
            self.error = Some(format!("data after the end-of-archive marker at byte {at}"));
            return;
        }
        let stored = octal(&h[148..156]);
        let sum: u64 = h.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { *b as u64 }).sum();
        if stored != Some(sum) {
            self.error = Some(format!("not a tar archive: bad header checksum at byte {at}"));
            return;
        }
        let Some(size) = number(&h[124..136]) else {
            self.error = Some(format!("unreadable entry size in the header at byte {at}"));
            return;
        };
        let kind = h[156];
        let path = match self.next_path.take() {
            Some(p) => p,
            None => {
                let name = cstr(&h[0..100]);
                let prefix = if &h[257..262] == b"ustar" { cstr(&h[345..500]) } else { String::new() };
                if prefix.is_empty() { name } else { format!("{prefix}/{name}") }
            }
        };
        self.keep = match kind {
            b'x' => Keep::Pax(Vec::new()),
            b'L' => Keep::LongName(Vec::new()),
            b'g' => Keep::Nothing,
            _ => {
                let rel = path.trim_start_matches('/');
                let rel = rel.strip_prefix("./").unwrap_or(rel);
                let top = rel.split('/').next().unwrap_or("");
                if !top.is_empty() && top != "." {
                    self.parts.insert(top.to_string());
                }
                if rel == INFO_FILE { Keep::Info(Vec::new()) } else { Keep::Nothing }
            }
        };
        // a regular file's size is data; links and directories carry none (pax says otherwise only
        // for regular files, which is all GitLab archives hold besides directories)
        let size = if matches!(kind, b'1' | b'2' | b'3' | b'4' | b'5' | b'6') { 0 } else { size };
        self.data_left = size;
        self.remaining = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        if self.remaining == 0 {
            self.end_entry();
        }
    }

    fn end_entry(&mut self) {
        match std::mem::replace(&mut self.keep, Keep::Nothing) {
            Keep::Pax(b) => self.next_path = pax_path(&b),
            Keep::LongName(b) => self.next_path = Some(cstr(&b)),
            Keep::Info(b) => self.info = Some(String::from_utf8_lossy(&b).into_owned()),
            Keep::Nothing => {}
        }
    }

    /// The archive ended: what it holds, or why it is not a complete GitLab backup.
    pub fn finish(&self) -> Result<ArchiveInfo, String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.remaining > 0 || !self.header.is_empty() || self.zero_blocks == 0 {
            return Err(format!(
                "the archive ends early (after {} bytes, without tar's end-of-archive marker)",
                self.offset
            ));
        }
        let Some(info) = &self.info else {
            return Err(format!("it holds no `{INFO_FILE}`: not a GitLab backup archive"));
        };
        Ok(ArchiveInfo {
            parts: self.parts.iter().filter(|p| *p != INFO_FILE).cloned().collect(),
            info: parse_info(info),
            size: self.offset,
        })
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn octal(b: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(b).ok()?.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// Octal, or GNU base-256 for large sizes.
fn number(b: &[u8]) -> Option<u64> {
    if b[0] & 0x80 != 0 {
        let mut v: u64 = (b[0] & 0x7f) as u64;
        for x in &b[1..] {
            v = v.checked_mul(256)?.checked_add(*x as u64)?;
        }
        return Some(v);
    }
    octal(b)
}

/// `path` from pax records (`LEN key=value\n`).
fn pax_path(b: &[u8]) -> Option<String> {
    let mut rest = b;
    let mut path = None;
    while !rest.is_empty() {
        let sp = rest.iter().position(|c| *c == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        if len <= sp || len > rest.len() {
            return path;
        }
        let rec = &rest[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(v) = rec.strip_prefix(b"path=") {
            path = Some(String::from_utf8_lossy(v).into_owned());
        }
        rest = &rest[len..];
    }
    path
}

/// `backup_information.yml`: `:key: value` lines (Ruby symbols as YAML keys; plain `key: value`
/// is read too). Quotes around a value are removed.
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with([' ', '-', '#']) {
            continue;
        }
        let l = line.strip_prefix(':').unwrap_or(line);
        let (key, value) = match l.split_once(": ") {
            Some((k, v)) => (k, v.trim()),
            None => match l.strip_suffix(':') {
                Some(k) => (k, ""),
                None => continue,
            },
        };
        if key.is_empty() || key.contains(' ') {
            continue;
        }
        let value = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .unwrap_or(value);
        out.insert(key.to_string(), value.to_string());
    }
    out
}

/// A reader that shows every byte it passes on to a [`TarInspector`].
pub struct Inspect<R> {
    inner: R,
    inspector: Arc<Mutex<TarInspector>>,
}

impl<R> Inspect<R> {
    pub fn new(inner: R, inspector: Arc<Mutex<TarInspector>>) -> Self {
        Inspect { inner, inspector }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Inspect<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Ok(mut i) = this.inspector.lock() {
                    i.feed(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(info: Option<&str>, prefix: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, format!("{prefix}{path}"), data).unwrap();
        };
        if let Some(i) = info {
            add(INFO_FILE, i.as_bytes());
        }
        add("db/database.sql.gz", &[7u8; 3000]);
        let long = format!("repositories/@hashed/6b/86/{}.bundle", "6b86b273".repeat(20));
        add(&long, b"# v2 git bundle\n");
        add("uploads.tar.gz", &[1u8; 10]);
        add("artifacts.tar.gz", &[]);
        b.into_inner().unwrap()
    }

    const INFO: &str = ":db_version: '20231023163508'\n:backup_created_at: 2023-11-14 16:00:00.000000000 +00:00\n\
        :gitlab_version: 16.5.1\n:tar_version: tar (GNU tar) 1.34\n:installation_type: omnibus-gitlab\n\
        :skipped: registry,pages\n:repositories_storages: ''\n";

    #[test]
    fn reads_parts_and_information_in_small_pieces() {
        for prefix in ["", "./"] {
            let tar = archive(Some(INFO), prefix);
            let mut i = TarInspector::new();
            for chunk in tar.chunks(7) {
                i.feed(chunk);
            }
            let got = i.finish().unwrap();
            assert_eq!(got.parts, ["artifacts.tar.gz", "db", "repositories", "uploads.tar.gz"]);
            assert_eq!(got.info["gitlab_version"], "16.5.1");
            assert_eq!(got.info["skipped"], "registry,pages");
            assert_eq!(got.info["db_version"], "20231023163508");
            assert_eq!(got.info["repositories_storages"], "");
            assert_eq!(got.size, tar.len() as u64);
        }
    }

    #[test]
    fn refuses_incomplete_or_foreign_archives() {
        let tar = archive(Some(INFO), "");
        let mut i = TarInspector::new();
        i.feed(&tar[..tar.len() - 1024 - 512]);
        assert!(i.finish().unwrap_err().contains("ends early"));

        let mut i = TarInspector::new();
        i.feed(&archive(None, ""));
        assert!(i.finish().unwrap_err().contains("backup_information.yml"));

        let mut i = TarInspector::new();
        i.feed(&[b'x'; 2048]);
        assert!(i.finish().unwrap_err().contains("checksum"));
    }

    #[test]
    fn information_variants() {
        let m = parse_info("gitlab_version: \"17.0.0-ee\"\n:skipped:\n# c\n");
        assert_eq!(m["gitlab_version"], "17.0.0-ee");
        assert_eq!(m["skipped"], "");
    }
}
