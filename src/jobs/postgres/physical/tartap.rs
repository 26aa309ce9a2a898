//! Watches a tar stream go by and keeps two members of a `pg_basebackup -Ft -D -` archive:
//! `backup_label` (whole: a few hundred bytes) and the end of `backup_manifest` (its `WAL-Ranges`
//! are at the end; the manifest itself grows with the number of files, so only [`TAIL`] bytes are
//! kept). Bounded memory whatever the cluster's size.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Bytes kept of the end of `backup_manifest`.
pub const TAIL: usize = 64 * 1024;
/// Most bytes kept of `backup_label` (PostgreSQL writes well under 1 KiB).
const LABEL_MAX: usize = 16 * 1024;

#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub label: Vec<u8>,
    pub manifest_tail: Vec<u8>,
    /// Members seen (a stream that ends before any is not an archive).
    pub members: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Label,
    Manifest,
    Nothing,
}

#[derive(Debug)]
enum State {
    Header,
    Body { left: u64, pad: u64, keep: Keep },
}

/// The parser, fed byte slices in order (pure: tested without I/O).
#[derive(Debug)]
pub struct Watcher {
    state: State,
    header: Vec<u8>,
    pub seen: Seen,
}

impl Default for Watcher {
    fn default() -> Self {
        Watcher { state: State::Header, header: Vec::with_capacity(512), seen: Seen::default() }
    }
}

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // base-256 (GNU) for sizes of 8 GiB and more
        return Some(field[1..].iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)));
    }
    let s = std::str::from_utf8(field).ok()?.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() { Some(0) } else { u64::from_str_radix(s, 8).ok() }
}

fn cstr(field: &[u8]) -> &[u8] {
    &field[..field.iter().position(|&b| b == 0).unwrap_or(field.len())]
}

impl Watcher {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Header => {
                    let take = (512 - self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.header.len() == 512 {
                        self.start_member();
                        self.header.clear();
                    }
                }
                State::Body { left, pad, keep } => {
                    if *left > 0 {
                        let take = (*left).min(data.len() as u64) as usize;
                        match keep {
                            Keep::Label if self.seen.label.len() < LABEL_MAX => {
                                let room = LABEL_MAX - self.seen.label.len();
                                self.seen.label.extend_from_slice(&data[..take.min(room)]);
                            }
                            Keep::Manifest => {
                                let t = &mut self.seen.manifest_tail;
                                t.extend_from_slice(&data[..take]);
                                if t.len() > TAIL {
                                    t.drain(..t.len() - TAIL);
                                }
                            }
                            _ => {}
                        }
                        *left -= take as u64;
                        data = &data[take..];
                    } else {
                        let take = (*pad).min(data.len() as u64) as usize;
                        *pad -= take as u64;
                        data = &data[take..];
                    }
                    if let State::Body { left: 0, pad: 0, .. } = self.state {
                        self.state = State::Header;
                    }
                }
            }
        }
    }

    fn start_member(&mut self) {
        let h = &self.header;
        if h.iter().all(|&b| b == 0) {
            return; // end-of-archive blocks
        }
        let mut name = Vec::new();
        let prefix = cstr(&h[345..500]);
        if &h[257..262] == b"ustar" && !prefix.is_empty() {
            name.extend_from_slice(prefix);
            name.push(b'/');
        }
        name.extend_from_slice(cstr(&h[0..100]));
        let name = name.strip_prefix(b"./").unwrap_or(&name).to_vec();
        let size = octal(&h[124..136]).unwrap_or(0);
        let keep = match (h[156], name.as_slice()) {
            (b'0' | 0, b"backup_label") => Keep::Label,
            (b'0' | 0, b"backup_manifest") => Keep::Manifest,
            _ => Keep::Nothing,
        };
        if keep == Keep::Manifest {
            self.seen.manifest_tail.clear();
        }
        self.seen.members += 1;
        let pad = (512 - size % 512) % 512;
        if size + pad > 0 {
            self.state = State::Body { left: size, pad, keep };
        }
    }
}

/// An `AsyncRead` that feeds a [`Watcher`] with everything read through it.
pub struct Tap<R> {
    inner: R,
    watcher: Arc<Mutex<Watcher>>,
}

impl<R> Tap<R> {
    pub fn new(inner: R) -> (Tap<R>, Arc<Mutex<Watcher>>) {
        let watcher = Arc::new(Mutex::new(Watcher::default()));
        (Tap { inner, watcher: watcher.clone() }, watcher)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Tap<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled
            && let Ok(mut w) = self.watcher.lock()
        {
            w.feed(&buf.filled()[before..]);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }

    #[test]
    fn keeps_label_and_manifest_tail_whatever_the_read_sizes() {
        let mut b = tar::Builder::new(Vec::new());
        member(&mut b, "PG_VERSION", b"15\n");
        member(&mut b, "backup_label", b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n");
        member(&mut b, "base/1/1259", &vec![7u8; 70_000]);
        let manifest = format!("{}\"WAL-Ranges\": [\n{{ \"Timeline\": 1 }}]}}", "x".repeat(100_000));
        member(&mut b, "backup_manifest", manifest.as_bytes());
        let bytes = b.into_inner().unwrap();
        for step in [1, 7, 511, 512, 4096, bytes.len()] {
            let mut w = Watcher::default();
            for c in bytes.chunks(step) {
                w.feed(c);
            }
            assert_eq!(w.seen.members, 4, "step {step}");
            assert!(w.seen.label.starts_with(b"START WAL LOCATION"), "step {step}");
            assert_eq!(w.seen.manifest_tail.len(), TAIL);
            assert!(w.seen.manifest_tail.ends_with(b"\"Timeline\": 1 }]}"), "step {step}");
        }
    }
}
