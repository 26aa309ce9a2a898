//! A directory tree written as a POSIX.1-2001 (pax) tar stream, hashing each regular file on the way.
//!
//! Blocking code, run on its own thread: the caller hands in the writer the archive goes to (a
//! bounded pipe into the pipeline) and the writer the file list goes to.
//!
//! What the archive keeps: every entry's mode (with setuid/setgid/sticky), numeric uid and gid plus
//! the user and group names, mtime to the nanosecond (pax `mtime` record), symlinks as links (never
//! followed; only the root given in the config is resolved), hard links (a later name of an inode
//! already stored becomes a link entry to the first name), empty directories, fifos and device
//! nodes. Names are stored byte for byte (not necessarily UTF-8); a long name or link target goes
//! into a pax `path`/`linkpath` record. Sockets cannot be archived: they are skipped with a warning
//! (the program owning one recreates it). Entries are written in byte order of their names, parents
//! before children, so the same tree gives the same archive.
//!
//! A tree that changes while it is read:
//! * an entry that vanishes between listing its directory and reading it is skipped with a warning
//!   and counted in `skipped` (a temp file deleted mid-walk is ordinary);
//! * a regular file whose size or mtime changes while it is read fails the backup: its copy would be
//!   torn. Stop or pause the writer with `before`/`after` hooks, or exclude the file;
//! * an entry that cannot be read (permission denied, I/O error) fails the backup: silently leaving
//!   data out of a backup is worse than a loud failure.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use super::exclude::Excludes;
use super::files_cache::{self, CacheReader, CacheWriter, Fingerprint};
pub use super::listing::{FileEntry, Totals};

const BLOCK: u64 = 512;
const READ_BUF: usize = 256 * 1024;
/// Largest value of a 12-byte octal header field (size, mtime).
const OCTAL_11: u64 = 0o77_777_777_777;
/// Largest value of an 8-byte octal header field (uid, gid).
const OCTAL_7: u64 = 0o7_777_777;

/// `format` of the file-list document.
pub const LIST_FORMAT: &str = "drctl-volume-files";
pub const LIST_VERSION: u32 = 1;

/// The whole file-list document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileList {
    pub format: String,
    pub version: u32,
    pub entries: Vec<FileEntry>,
}

/// Why a walk stopped.
#[derive(Debug)]
pub enum WalkError {
    /// Reading the source failed.
    Read { path: PathBuf, source: io::Error },
    /// A file changed while it was being read.
    Changed { path: PathBuf, what: String },
    /// The archive could not be written (the pipeline stopped reading).
    Write(io::Error),
    /// The file list could not be written.
    List(io::Error),
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::Read { path, source } => write!(f, "cannot read `{}`: {source}", path.display()),
            WalkError::Changed { path, what } => write!(f, "`{}` {what}", path.display()),
            WalkError::Write(e) => write!(f, "writing the archive failed: {e}"),
            WalkError::List(e) => write!(f, "writing the file list failed: {e}"),
        }
    }
}

// ---------------------------------------------------------------- tar writing

/// What goes into one header.
pub struct HeaderSpec<'a> {
    /// As stored; directories end with `/`.
    pub path: &'a [u8],
    pub kind: EntryType,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub uname: Option<&'a str>,
    pub gname: Option<&'a str>,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub size: u64,
    pub link: Option<&'a [u8]>,
    pub device: Option<(u32, u32)>,
}

/// Writes ustar headers, preceded by a pax extended header when a value does not fit.
pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    pub fn header(&mut self, e: &HeaderSpec<'_>) -> io::Result<()> {
        let mut pax = Vec::new();
        let mut h = Header::new_ustar();
        if !fit(&mut h.as_old_mut().name, e.path) {
            pax_record(&mut pax, "path", e.path);
        }
        h.set_mode(e.mode & 0o7777);
        h.set_uid(u64::from(e.uid));
        h.set_gid(u64::from(e.gid));
        if u64::from(e.uid) > OCTAL_7 {
            pax_record(&mut pax, "uid", e.uid.to_string().as_bytes());
        }
        if u64::from(e.gid) > OCTAL_7 {
            pax_record(&mut pax, "gid", e.gid.to_string().as_bytes());
        }
        h.set_size(e.size);
        if e.size > OCTAL_11 {
            pax_record(&mut pax, "size", e.size.to_string().as_bytes());
        }
        let in_range = (0..=OCTAL_11 as i64).contains(&e.mtime);
        h.set_mtime(if in_range { e.mtime as u64 } else { 0 });
        if e.mtime_nsec != 0 || !in_range {
            pax_record(&mut pax, "mtime", format_pax_time(e.mtime, e.mtime_nsec).as_bytes());
        }
        if let Some(u) = e.uname
            && h.set_username(u).is_err()
        {
            pax_record(&mut pax, "uname", u.as_bytes());
        }
        if let Some(g) = e.gname
            && h.set_groupname(g).is_err()
        {
            pax_record(&mut pax, "gname", g.as_bytes());
        }
        h.set_entry_type(e.kind);
        if let Some(l) = e.link
            && !fit(&mut h.as_old_mut().linkname, l)
        {
            pax_record(&mut pax, "linkpath", l);
        }
        if let Some((major, minor)) = e.device {
            h.set_device_major(major)?;
            h.set_device_minor(minor)?;
        }
        if !pax.is_empty() {
            let mut x = Header::new_ustar();
            fit(&mut x.as_old_mut().name, b"././@PaxHeader");
            x.set_mode(0o644);
            x.set_uid(0);
            x.set_gid(0);
            x.set_mtime(0);
            x.set_size(pax.len() as u64);
            x.set_entry_type(EntryType::XHeader);
            x.set_cksum();
            self.out.write_all(x.as_bytes())?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes())
    }

    /// Zeros up to the next block after `len` bytes of data.
    pub fn pad(&mut self, len: u64) -> io::Result<()> {
        let rest = (BLOCK - len % BLOCK) % BLOCK;
        self.out.write_all(&[0u8; BLOCK as usize][..rest as usize])
    }

    pub fn data(&mut self) -> &mut W {
        &mut self.out
    }

    /// The end-of-archive marker (two zero blocks); returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK as usize])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Copy `value` into a fixed header field; `false` (and a truncated copy) when it does not fit.
fn fit(slot: &mut [u8], value: &[u8]) -> bool {
    let n = value.len().min(slot.len());
    slot.fill(0);
    slot[..n].copy_from_slice(&value[..n]);
    value.len() <= slot.len()
}

/// One `"%d %s=%s\n"` pax record; the length counts itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// `sec.nsec` as a pax time (`-1.5` is half a second before `-1`… i.e. 1.5 s before the epoch).
pub fn format_pax_time(sec: i64, nsec: u32) -> String {
    let total = i128::from(sec) * 1_000_000_000 + i128::from(nsec);
    let sign = if total < 0 { "-" } else { "" };
    let abs = total.abs();
    let (whole, frac) = (abs / 1_000_000_000, abs % 1_000_000_000);
    if frac == 0 { format!("{sign}{whole}") } else { format!("{sign}{whole}.{frac:09}") }
}

/// The inverse of [`format_pax_time`]; digits beyond nanoseconds are ignored.
pub fn parse_pax_time(s: &str) -> Option<(i64, u32)> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i128 = whole.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let frac: i128 = digits.parse().ok()?;
    let mut total = whole.checked_mul(1_000_000_000)?.checked_add(frac)?;
    if neg {
        total = -total;
    }
    let sec = i64::try_from(total.div_euclid(1_000_000_000)).ok()?;
    Some((sec, total.rem_euclid(1_000_000_000) as u32))
}

// ---------------------------------------------------------------- file list

/// Streams the file-list document: header, one entry per line, trailer.
pub struct ListWriter<L: Write> {
    out: L,
    first: bool,
}

impl<L: Write> ListWriter<L> {
    pub fn new(mut out: L) -> io::Result<Self> {
        write!(out, "{{\"format\":\"{LIST_FORMAT}\",\"version\":{LIST_VERSION},\"entries\":[")?;
        Ok(ListWriter { out, first: true })
    }

    pub fn push(&mut self, e: &FileEntry) -> io::Result<()> {
        self.out.write_all(if self.first { b"\n" } else { b",\n" })?;
        self.first = false;
        serde_json::to_writer(&mut self.out, e).map_err(io::Error::other)
    }

    pub fn finish(mut self) -> io::Result<L> {
        self.out.write_all(b"\n]}\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

pub(super) fn display_bytes(b: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(b) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (String::from_utf8_lossy(b).into_owned(), Some(hex::encode(b))),
    }
}

// ---------------------------------------------------------------- the walk

/// Where the archive goes, as the walk sees it: a plain byte sink (stream storage), or the
/// chunk writer of chunked storage, which can be cut at a run boundary and can take the chunks
/// of an unchanged run instead of its bytes (see [`super::files_cache`]).
pub trait ArchiveSink: Write {
    /// The chunk writer, when the archive is chunked.
    fn chunks(&mut self) -> Option<&mut crate::chunked::ChunkWriter> {
        None
    }
}

impl ArchiveSink for Vec<u8> {}

impl ArchiveSink for &mut crate::chunked::ChunkWriter {
    fn chunks(&mut self) -> Option<&mut crate::chunked::ChunkWriter> {
        Some(self)
    }
}

/// Archive the tree at `root` (a directory; resolved by the caller) into `out`, list every entry
/// into `list`. Returns the totals and both writers, finished.
pub fn write_tree<W: ArchiveSink, L: Write>(
    root: &Path,
    excludes: &Excludes,
    out: W,
    list: L,
) -> Result<(Totals, W, L), WalkError> {
    let (totals, out, list, _) = walk(root, excludes, out, list, None)?;
    Ok((totals, out, list))
}

/// What a cached walk returns: totals, the file list, the next files cache, (runs reused, runs read).
pub type CachedWalk<L> = (Totals, L, Option<CacheWriter>, (u64, u64));

/// [`write_tree`] into chunked storage with a files cache: runs whose fingerprint is in `old`
/// (and whose chunks every target holds) are not read; every run read cleanly or reused goes into
/// `new` (none when it could not be created, or failed on the way: then the next backup reads
/// everything once). Returns `new` and how many runs were reused and read.
pub fn write_tree_cached<L: Write>(
    root: &Path,
    excludes: &Excludes,
    out: &mut crate::chunked::ChunkWriter,
    list: L,
    old: CacheReader,
    new: Option<CacheWriter>,
) -> Result<CachedWalk<L>, WalkError> {
    let state = CacheState { old, new, started: std::time::SystemTime::now(), hits: 0, misses: 0 };
    let (totals, _, list, cache) = walk(root, excludes, out, list, Some(state))?;
    let (new, counts) = cache.map(|c| (c.new, (c.hits, c.misses))).unwrap_or_default();
    Ok((totals, list, new, counts))
}

fn walk<W: ArchiveSink, L: Write>(
    root: &Path,
    excludes: &Excludes,
    out: W,
    list: L,
    cache: Option<CacheState>,
) -> Result<(Totals, W, L, Option<CacheState>), WalkError> {
    let list = ListWriter::new(list).map_err(WalkError::List)?;
    let mut w = Walker {
        root,
        tar: TarWriter::new(out),
        list,
        totals: Totals::default(),
        links: HashMap::new(),
        names: NameCache::default(),
        buf: vec![0u8; READ_BUF],
        run: Vec::new(),
        run_bytes: 0,
        cache,
        recording: None,
        clean: true,
    };
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WalkError::Read { path, source }
    };
    let meta = std::fs::metadata(root).map_err(read_err(root))?;
    let children = list_dir(root).map_err(read_err(root))?;
    w.push(Pending::dir(PathBuf::from("."), b"./".to_vec(), meta))?;

    let mut stack: Vec<(PathBuf, std::vec::IntoIter<OsString>)> = vec![(PathBuf::new(), children.into_iter())];
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.1.next() else {
            stack.pop();
            continue;
        };
        let rel = top.0.join(&name);
        let abs = root.join(&rel);
        let meta = match std::fs::symlink_metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                w.vanished(&rel);
                continue;
            }
            Err(e) => return Err(WalkError::Read { path: abs, source: e }),
        };
        let ft = meta.file_type();
        if excludes.is_excluded(&rel, ft.is_dir()) {
            w.totals.excluded += 1;
            continue;
        }
        let bytes = rel.as_os_str().as_bytes().to_vec();
        if ft.is_dir() {
            let children = match list_dir(&abs) {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    w.vanished(&rel);
                    continue;
                }
                Err(e) => return Err(WalkError::Read { path: abs, source: e }),
            };
            let mut stored = bytes;
            stored.push(b'/');
            w.push(Pending::dir(rel.clone(), stored, meta))?;
            stack.push((rel, children.into_iter()));
        } else if ft.is_file() {
            w.push(Pending::File { rel, abs, meta })?;
        } else if ft.is_symlink() {
            let target = match std::fs::read_link(&abs) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    w.vanished(&rel);
                    continue;
                }
                Err(e) => return Err(WalkError::Read { path: abs, source: e }),
            };
            let link = Some(target.as_os_str().as_bytes().to_vec());
            w.push(Pending::Entry {
                rel,
                stored: bytes,
                kind: EntryType::Symlink,
                meta,
                link,
                device: None,
                label: "symlink",
            })?;
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let (kind, label) = if ft.is_fifo() {
                (EntryType::Fifo, "fifo")
            } else if ft.is_char_device() {
                (EntryType::Char, "char")
            } else {
                (EntryType::Block, "block")
            };
            let device = (!ft.is_fifo()).then(|| split_dev(meta.rdev()));
            w.push(Pending::Entry { rel, stored: bytes, kind, meta, link: None, device, label })?;
        } else {
            tracing::warn!(path = %abs.display(), "skipping a socket: sockets cannot be archived");
            w.totals.skipped += 1;
        }
    }
    w.flush_run()?;
    let Walker { tar, list, totals, cache, .. } = w;
    let out = tar.finish().map_err(WalkError::Write)?;
    let list = list.finish().map_err(WalkError::List)?;
    Ok((totals, out, list, cache))
}

/// An entry listed but not written yet (chunked storage gathers a run before deciding whether
/// to read it; stream storage writes each at once).
enum Pending {
    Entry {
        rel: PathBuf,
        stored: Vec<u8>,
        kind: EntryType,
        meta: Metadata,
        link: Option<Vec<u8>>,
        device: Option<(u32, u32)>,
        label: &'static str,
    },
    File {
        rel: PathBuf,
        abs: PathBuf,
        /// As `lstat` saw it when listed.
        meta: Metadata,
    },
}

impl Pending {
    fn dir(rel: PathBuf, stored: Vec<u8>, meta: Metadata) -> Pending {
        Pending::Entry { rel, stored, kind: EntryType::Directory, meta, link: None, device: None, label: "dir" }
    }

    fn meta(&self) -> &Metadata {
        match self {
            Pending::Entry { meta, .. } | Pending::File { meta, .. } => meta,
        }
    }

    fn stored(&self) -> &[u8] {
        match self {
            Pending::Entry { stored, .. } => stored,
            Pending::File { rel, .. } => rel.as_os_str().as_bytes(),
        }
    }
}

/// The files cache during a chunked walk.
pub struct CacheState {
    old: CacheReader,
    new: Option<CacheWriter>,
    started: std::time::SystemTime,
    hits: u64,
    misses: u64,
}

impl CacheState {
    /// Add a run to the next cache; a write error drops the next cache (a warning, not a failure).
    fn keep(&mut self, fp: Fingerprint, run: &files_cache::Run) {
        if let Some(w) = self.new.as_mut()
            && let Err(e) = w.add(fp, run)
        {
            tracing::warn!(error = %e, "could not write the files cache: the next backup reads every file");
            self.new = None;
        }
    }
}

/// Names of a directory's entries, in byte order.
fn list_dir(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir)? {
        names.push(e?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn split_dev(rdev: u64) -> (u32, u32) {
    (libc::major(rdev), libc::minor(rdev))
}

struct Walker<'a, W: ArchiveSink, L: Write> {
    root: &'a Path,
    tar: TarWriter<W>,
    list: ListWriter<L>,
    totals: Totals,
    /// (dev, ino) of files with several names → first stored name and its sha256.
    links: HashMap<(u64, u64), (Vec<u8>, String)>,
    names: NameCache,
    buf: Vec<u8>,
    /// The run being gathered (chunked storage only).
    run: Vec<Pending>,
    run_bytes: u64,
    cache: Option<CacheState>,
    /// File-list entries written while a run is read, for the cache.
    recording: Option<Vec<FileEntry>>,
    /// Whether the run being read matches what was listed (nothing vanished or changed).
    clean: bool,
}

impl<W: ArchiveSink, L: Write> Walker<'_, W, L> {
    fn vanished(&mut self, rel: &Path) {
        tracing::warn!(path = %self.root.join(rel).display(), "skipped: it vanished while the backup ran");
        self.totals.skipped += 1;
        self.clean = false;
    }

    /// Write an entry now (stream storage), or add it to the run (chunked storage).
    fn push(&mut self, p: Pending) -> Result<(), WalkError> {
        if self.cache.is_none() {
            return self.write_pending(p);
        }
        let size = if p.meta().file_type().is_file() { p.meta().size() } else { 0 };
        if size >= files_cache::BIG_FILE {
            self.flush_run()?;
            self.run.push(p);
            return self.flush_run();
        }
        let boundary = blake3::hash(p.stored()).as_bytes()[0].is_multiple_of(files_cache::RUN_BOUNDARY);
        self.run_bytes += size + BLOCK;
        self.run.push(p);
        if boundary || self.run.len() >= files_cache::RUN_ENTRIES || self.run_bytes >= files_cache::RUN_BYTES {
            self.flush_run()?;
        }
        Ok(())
    }

    fn write_pending(&mut self, p: Pending) -> Result<(), WalkError> {
        match p {
            Pending::Entry { rel, stored, kind, meta, link, device, label } => {
                self.entry(&rel, &stored, kind, &meta, 0, link.as_deref(), device, label, None)?;
                match kind {
                    EntryType::Directory => self.totals.dir_count += 1,
                    EntryType::Symlink => self.totals.symlink_count += 1,
                    _ => self.totals.special_count += 1,
                }
                Ok(())
            }
            Pending::File { rel, abs, meta } => self.file(&rel, &abs, Some(&meta)),
        }
    }

    /// The run's fingerprint: everything its tar headers hold and its files' identities.
    fn fingerprint(&mut self) -> Fingerprint {
        let mut h = blake3::Hasher::new();
        h.update(b"drctl files cache run v1");
        let run = std::mem::take(&mut self.run);
        for p in &run {
            let m = p.meta();
            let stored = p.stored();
            h.update(&(stored.len() as u64).to_le_bytes());
            h.update(stored);
            for v in [
                u64::from(m.mode()),
                u64::from(m.uid()),
                u64::from(m.gid()),
                m.mtime() as u64,
                m.mtime_nsec() as u64,
                m.ctime() as u64,
                m.ctime_nsec() as u64,
                m.size(),
                m.dev(),
                m.ino(),
                m.nlink().min(2),
                m.rdev(),
            ] {
                h.update(&v.to_le_bytes());
            }
            let names = (self.names.user(m.uid()), self.names.group(m.gid()));
            h.update(format!("{names:?}").as_bytes());
            if let Pending::Entry { link: Some(l), .. } = p {
                h.update(&(l.len() as u64).to_le_bytes());
                h.update(l);
            }
            if m.nlink() > 1
                && let Some((first, _)) = self.links.get(&(m.dev(), m.ino()))
            {
                h.update(b"link:");
                h.update(first);
            }
        }
        self.run = run;
        *h.finalize().as_bytes()
    }

    /// Chunked storage: reuse the run's chunks if the cache knows it and every target holds
    /// them, else read it and cache it if it was read cleanly.
    fn flush_run(&mut self) -> Result<(), WalkError> {
        if self.run.is_empty() || self.cache.is_none() {
            return Ok(());
        }
        let fp = self.fingerprint();
        let run = std::mem::take(&mut self.run);
        self.run_bytes = 0;
        let cached = self.cache.as_ref().and_then(|c| c.old.get(&fp));
        if let Some(hit) = cached
            && hit.entries.len() == run.len()
            && let Some(refs) = hit.chunks.iter().map(step_ref).collect::<Option<Vec<_>>>()
            && let Some(chunks) = self.tar.data().chunks()
            && refs.iter().all(|r| chunks.has(&r.id))
        {
            chunks.cut().map_err(WalkError::Write)?;
            chunks.reuse(&refs);
            for (p, e) in run.iter().zip(&hit.entries) {
                let m = p.meta();
                if m.file_type().is_file() && m.nlink() > 1 && e.kind == "file" {
                    let sha = e.sha256.clone().unwrap_or_default();
                    self.links.entry((m.dev(), m.ino())).or_insert_with(|| (p.stored().to_vec(), sha));
                }
                self.list.push(e).map_err(WalkError::List)?;
            }
            self.totals.add(&hit.totals);
            if let Some(c) = self.cache.as_mut() {
                c.hits += 1;
                c.keep(fp, &hit);
            }
            return Ok(());
        }
        let before = self.totals.clone();
        let started = self.cache.as_ref().map(|c| c.started).unwrap_or_else(std::time::SystemTime::now);
        let window = files_cache::racy_window();
        let racy = run.iter().any(|p| {
            let m = p.meta();
            let ctime = std::time::UNIX_EPOCH
                + std::time::Duration::new(m.ctime().max(0) as u64, m.ctime_nsec().clamp(0, 999_999_999) as u32);
            files_cache::is_racy(ctime, started, window)
        });
        let n = run.len();
        self.recording = Some(Vec::with_capacity(n));
        self.clean = true;
        for p in run {
            self.write_pending(p)?;
        }
        let entries = self.recording.take().unwrap_or_default();
        let chunks = match self.tar.data().chunks() {
            Some(c) => c.cut().map_err(WalkError::Write)?.iter().map(|r| r.step()).collect(),
            None => Vec::new(),
        };
        let clean = self.clean && !racy && entries.len() == n;
        if let Some(c) = self.cache.as_mut() {
            c.misses += 1;
            if clean {
                c.keep(fp, &files_cache::Run { chunks, entries, totals: self.totals.since(&before) });
            }
        }
        Ok(())
    }

    /// Write a file-list line (and record it for the files cache).
    fn list_entry(&mut self, e: &FileEntry) -> Result<(), WalkError> {
        if let Some(r) = self.recording.as_mut() {
            r.push(e.clone());
        }
        self.list.push(e).map_err(WalkError::List)
    }

    /// Write a header (no data) and its file-list line.
    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        rel: &Path,
        stored: &[u8],
        kind: EntryType,
        meta: &Metadata,
        size: u64,
        link: Option<&[u8]>,
        device: Option<(u32, u32)>,
        label: &str,
        sha256: Option<String>,
    ) -> Result<(), WalkError> {
        let uname = self.names.user(meta.uid());
        let gname = self.names.group(meta.gid());
        let header_size = if kind == EntryType::Regular { size } else { 0 };
        self.tar
            .header(&HeaderSpec {
                path: stored,
                kind,
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                uname: uname.as_deref(),
                gname: gname.as_deref(),
                mtime: meta.mtime(),
                mtime_nsec: meta.mtime_nsec() as u32,
                size: header_size,
                link,
                device,
            })
            .map_err(WalkError::Write)?;
        self.list_entry(&file_entry(rel.as_os_str().as_bytes(), label, size, meta, sha256, link))
    }

    /// A regular file; `listed` is what `lstat` said when the walk listed it (the run's
    /// fingerprint): a file that differs when opened keeps its run out of the files cache.
    fn file(&mut self, rel: &Path, abs: &Path, listed: Option<&Metadata>) -> Result<(), WalkError> {
        let read_err = |source| WalkError::Read { path: abs.to_path_buf(), source };
        // O_NOFOLLOW: a file swapped for a symlink is never followed; O_NONBLOCK: nor does a file
        // swapped for a fifo block the walk (no effect on regular files)
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(abs)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP) => {
                self.vanished(rel);
                return Ok(());
            }
            Err(e) => return Err(read_err(e)),
        };
        let meta = file.metadata().map_err(read_err)?;
        if !meta.file_type().is_file() {
            return Err(WalkError::Changed {
                path: abs.to_path_buf(),
                what: "was replaced by something other than a regular file while the backup ran".into(),
            });
        }
        if let Some(l) = listed
            && (l.ino(), l.dev(), l.size(), l.mtime(), l.mtime_nsec(), l.ctime(), l.ctime_nsec())
                != (
                    meta.ino(),
                    meta.dev(),
                    meta.size(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                    meta.ctime(),
                    meta.ctime_nsec(),
                )
        {
            self.clean = false;
        }
        let stored = rel.as_os_str().as_bytes();
        let key = (meta.dev(), meta.ino());
        if meta.nlink() > 1
            && let Some((first, sha)) = self.links.get(&key).cloned()
        {
            self.entry(rel, stored, EntryType::Link, &meta, meta.size(), Some(&first), None, "hardlink", Some(sha))?;
            self.totals.file_count += 1;
            self.totals.hardlink_count += 1;
            return Ok(());
        }
        let size = meta.size();
        let uname = self.names.user(meta.uid());
        let gname = self.names.group(meta.gid());
        self.tar
            .header(&HeaderSpec {
                path: stored,
                kind: EntryType::Regular,
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                uname: uname.as_deref(),
                gname: gname.as_deref(),
                mtime: meta.mtime(),
                mtime_nsec: meta.mtime_nsec() as u32,
                size,
                link: None,
                device: None,
            })
            .map_err(WalkError::Write)?;
        let sha = match copy_data(&mut file, size, self.tar.data(), &mut self.buf) {
            Ok(sha) => sha,
            Err(CopyError::Read(e)) => return Err(read_err(e)),
            Err(CopyError::Write(e)) => return Err(WalkError::Write(e)),
            Err(CopyError::Shrank { read }) => {
                return Err(WalkError::Changed {
                    path: abs.to_path_buf(),
                    what: format!("shrank from {size} to {read} bytes while it was read"),
                });
            }
        };
        self.tar.pad(size).map_err(WalkError::Write)?;
        let after = file.metadata().map_err(read_err)?;
        if let Some(what) = changed(Stat::of(&meta), Stat::of(&after)) {
            return Err(WalkError::Changed { path: abs.to_path_buf(), what });
        }
        if meta.nlink() > 1 {
            self.links.insert(key, (stored.to_vec(), sha.clone()));
        }
        self.list_entry(&file_entry(stored, "file", size, &meta, Some(sha), None))?;
        self.totals.file_count += 1;
        self.totals.total_bytes += size;
        Ok(())
    }
}

#[derive(Debug)]
pub(super) enum CopyError {
    Read(io::Error),
    Write(io::Error),
    /// End of file came before `size` bytes.
    Shrank {
        read: u64,
    },
}

/// Copy exactly `size` bytes of `src` into `out`, returning their sha256.
pub(super) fn copy_data<R: Read, W: Write>(
    src: &mut R,
    size: u64,
    out: &mut W,
    buf: &mut [u8],
) -> Result<String, CopyError> {
    let mut hasher = Sha256::new();
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => return Err(CopyError::Shrank { read: size - left }),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
        left -= n as u64;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The parts of a file's status that change when it is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stat {
    fn of(m: &Metadata) -> Stat {
        Stat { size: m.size(), mtime: m.mtime(), mtime_nsec: m.mtime_nsec() }
    }
}

/// Why a file read between `before` and `after` is not a faithful copy, if it is not.
fn changed(before: Stat, after: Stat) -> Option<String> {
    if before.size != after.size {
        Some(format!("changed size from {} to {} bytes while it was read", before.size, after.size))
    } else if (before.mtime, before.mtime_nsec) != (after.mtime, after.mtime_nsec) {
        Some("was modified while it was read".into())
    } else {
        None
    }
}

/// uid/gid → name, looked up once each.
#[derive(Default)]
struct NameCache {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl NameCache {
    fn user(&mut self, uid: u32) -> Option<String> {
        self.users.entry(uid).or_insert_with(|| lookup(uid, true)).clone()
    }
    fn group(&mut self, gid: u32) -> Option<String> {
        self.groups.entry(gid).or_insert_with(|| lookup(gid, false)).clone()
    }
}

/// The name of a user (or group) id from the system's databases; `None` when it has none.
fn lookup(id: u32, user: bool) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    let name = if user {
        // SAFETY: getpwuid_r writes into `pwd` and `buf` (whose length we pass) only; `result` is
        // null or points at `pwd`, whose strings live in `buf`, which outlives their use here.
        unsafe {
            let mut pwd: libc::passwd = std::mem::zeroed();
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwuid_r(id, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result);
            if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
                return None;
            }
            std::ffi::CStr::from_ptr(pwd.pw_name).to_str().ok()?.to_string()
        }
    } else {
        // SAFETY: as above, for getgrgid_r.
        unsafe {
            let mut grp: libc::group = std::mem::zeroed();
            let mut result: *mut libc::group = std::ptr::null_mut();
            let rc = libc::getgrgid_r(id, &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut result);
            if rc != 0 || result.is_null() || grp.gr_name.is_null() {
                return None;
            }
            std::ffi::CStr::from_ptr(grp.gr_name).to_str().ok()?.to_string()
        }
    };
    Some(name)
}

/// The file-list line of an entry stored as `stored` (relative name bytes).
fn file_entry(
    stored: &[u8],
    label: &str,
    size: u64,
    meta: &Metadata,
    sha256: Option<String>,
    link: Option<&[u8]>,
) -> FileEntry {
    let (path, path_hex) = display_bytes(stored);
    FileEntry {
        path,
        path_hex,
        kind: label.to_string(),
        size,
        mode: format!("{:04o}", meta.mode() & 0o7777),
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec() as u32,
        sha256,
        target: link.map(|l| display_bytes(l).0),
    }
}

/// A cached chunk as the writer takes it.
fn step_ref(s: &crate::chunked::recipe::Step) -> Option<crate::chunked::recipe::ChunkRef> {
    let id = crate::chunked::repo::parse_id(&s.0)?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&s.1, &mut hash).ok()?;
    Some(crate::chunked::recipe::ChunkRef { id, hash, len: s.2 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn pax_records_count_their_own_length() {
        for (k, v) in
            [("path", "x".repeat(3)), ("path", "y".repeat(90)), ("mtime", "1.5".into()), ("k", "v".repeat(994))]
        {
            let mut out = Vec::new();
            pax_record(&mut out, k, v.as_bytes());
            let text = String::from_utf8(out.clone()).unwrap();
            let len: usize = text.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "{text:?}");
            assert!(text.ends_with(&format!("{k}={v}\n")));
        }
    }

    #[test]
    fn pax_times_round_trip() {
        for (s, n, text) in [
            (0, 0, "0"),
            (1_600_000_000, 5, "1600000000.000000005"),
            (-2, 500_000_000, "-1.500000000"),
            (-1, 0, "-1"),
            (i64::from(u32::MAX) * 4, 999_999_999, "17179869180.999999999"),
        ] {
            assert_eq!(format_pax_time(s, n), text);
            assert_eq!(parse_pax_time(text), Some((s, n)), "{text}");
        }
        assert_eq!(parse_pax_time("12.3"), Some((12, 300_000_000)));
        assert_eq!(parse_pax_time("12.1234567891"), Some((12, 123_456_789)));
        assert_eq!(parse_pax_time("x"), None);
        assert_eq!(parse_pax_time("-"), None);
    }

    #[test]
    fn copy_data_notices_a_file_that_shrank() {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 4];
        let err = copy_data(&mut &b"abc"[..], 5, &mut out, &mut buf).unwrap_err();
        assert!(matches!(err, CopyError::Shrank { read: 3 }), "{err:?}");
        let sha = copy_data(&mut &b"abcdef"[..], 3, &mut Vec::new(), &mut buf).unwrap();
        assert_eq!(sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "only `size` bytes");
    }

    #[test]
    fn changes_while_reading_are_detected() {
        let s = Stat { size: 10, mtime: 5, mtime_nsec: 1 };
        assert_eq!(changed(s, s), None);
        assert!(changed(s, Stat { size: 11, ..s }).unwrap().contains("from 10 to 11"));
        assert!(changed(s, Stat { mtime_nsec: 2, ..s }).unwrap().contains("modified"));
    }

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("a/empty")).unwrap();
        std::fs::create_dir_all(r.join("cache/x")).unwrap();
        std::fs::write(r.join("a/one.txt"), b"one").unwrap();
        std::fs::write(r.join("a/skip.tmp"), b"tmp").unwrap();
        std::fs::write(r.join("cache/x/big"), vec![7u8; 100_000]).unwrap();
        std::fs::hard_link(r.join("a/one.txt"), r.join("two.txt")).unwrap();
        symlink("a/one.txt", r.join("rel-link")).unwrap();
        symlink("/etc/hostname", r.join("abs-link")).unwrap();
        let long = "n".repeat(150);
        std::fs::write(r.join("a").join(&long), b"long name").unwrap();
        std::fs::set_permissions(r.join("a/one.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
        t
    }

    fn archive(root: &Path, excludes: &[&str]) -> (Totals, Vec<u8>, FileList) {
        let ex = Excludes::new(&excludes.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let (totals, tar, list) = write_tree(root, &ex, Vec::new(), Vec::new()).unwrap();
        (totals, tar, serde_json::from_slice(&list).unwrap())
    }

    #[test]
    fn writes_a_tree_the_tar_crate_reads_back() {
        let t = tree();
        let (totals, tar, list) = archive(t.path(), &["*.tmp", "cache/"]);
        assert_eq!(tar.len() % 512, 0);
        let mut seen = Vec::new();
        let mut ar = tar::Archive::new(&tar[..]);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let kind = e.header().entry_type();
            let link = e.link_name_bytes().map(|l| String::from_utf8(l.into_owned()).unwrap());
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            seen.push((path, kind, link, data));
        }
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        let long = format!("a/{}", "n".repeat(150));
        assert_eq!(
            names,
            ["./", "a/", "a/empty/", &long, "a/one.txt", "abs-link", "rel-link", "two.txt"],
            "sorted, parents first, excludes honoured"
        );
        let get = |n: &str| seen.iter().find(|s| s.0 == n).unwrap();
        assert_eq!(get("a/one.txt").3, b"one");
        assert_eq!(get(&long).3, b"long name");
        assert_eq!(get("two.txt").1, EntryType::Link);
        assert_eq!(get("two.txt").2.as_deref(), Some("a/one.txt"));
        assert_eq!(get("abs-link").2.as_deref(), Some("/etc/hostname"));
        assert_eq!(get("rel-link").1, EntryType::Symlink);

        assert_eq!(totals.file_count, 3);
        assert_eq!(totals.hardlink_count, 1);
        assert_eq!(totals.dir_count, 3);
        assert_eq!(totals.symlink_count, 2);
        assert_eq!(totals.total_bytes, 3 + 9);
        assert_eq!(totals.excluded, 2);

        assert_eq!(list.format, LIST_FORMAT);
        let e = list.entries.iter().find(|e| e.path == "a/one.txt").unwrap();
        assert_eq!(e.mode, "0600");
        assert_eq!(e.sha256.as_deref(), Some(hex::encode(Sha256::digest(b"one")).as_str()));
        let h = list.entries.iter().find(|e| e.path == "two.txt").unwrap();
        assert_eq!((h.kind.as_str(), h.sha256.as_ref()), ("hardlink", e.sha256.as_ref()));
        assert_eq!(list.entries[0].path, ".");
    }

    #[test]
    fn the_same_tree_gives_the_same_archive() {
        let t = tree();
        assert_eq!(archive(t.path(), &[]).1, archive(t.path(), &[]).1);
    }

    #[test]
    fn non_utf8_names_and_sub_second_mtimes_survive() {
        let t = tempfile::tempdir().unwrap();
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9");
        let p = t.path().join(name);
        std::fs::write(&p, b"x").unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        let when = std::time::UNIX_EPOCH + std::time::Duration::new(1_500_000_000, 123_456_789);
        f.set_times(std::fs::FileTimes::new().set_modified(when)).unwrap();
        let (_, tar, list) = archive(t.path(), &[]);
        let e = list.entries.iter().find(|e| e.path_hex.is_some()).unwrap();
        assert_eq!(e.path_hex.as_deref(), Some("636166e9"));
        assert_eq!((e.mtime, e.mtime_nsec), (1_500_000_000, 123_456_789));
        let mut ar = tar::Archive::new(&tar[..]);
        let mut found = false;
        for entry in ar.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path_bytes().as_ref() == b"caf\xe9" {
                let pax = entry.pax_extensions().unwrap().unwrap();
                let mtime = pax.flatten().find(|x| x.key() == Ok("mtime")).unwrap();
                assert_eq!(mtime.value(), Ok("1500000000.123456789"));
                found = true;
            }
        }
        assert!(found);
    }
}
