//! Safe extraction of a tar stream into a fresh, private directory (the restore's staging area).
//!
//! Nothing in the archive may write outside that directory:
//! * names must be relative and free of `..` (`./`, empty and `.` components are dropped); an
//!   absolute name is refused, never silently made relative;
//! * every directory on the way to an entry must be a real directory created by this extraction:
//!   an entry below a symlink (`link -> /etc` then `link/passwd`) is refused;
//! * a file is created with `O_CREAT | O_EXCL | O_NOFOLLOW` after removing whatever non-directory
//!   stood at its name (a symlink planted earlier is replaced, never written through);
//! * a hard link must name an earlier, non-directory entry inside the destination, under the same
//!   rules (no `..`, no absolute name, no symlinked directory on the way).
//!
//! Symlinks themselves are created as stored, whatever they point to: their targets are data (an
//! absolute symlink inside a volume is legitimate) and nothing here ever follows one.
//!
//! Metadata: mode bits exactly (setuid/setgid/sticky too), mtime to the nanosecond (pax `mtime`),
//! numeric owners when `owners` is set (root, without `--no-owner`): ids, not names, because a
//! volume's files belong to the ids of the container that uses it. Directories are created `0700`
//! while entries are written and get their own mode, owner and mtime at the end, deepest first.
//! Device nodes need root; without it they are skipped with a warning.
//!
//! Sparse files stay sparse: every aligned 4 KiB block of zeros in a file's data becomes a hole
//! (a seek instead of a write, and `set_len` at the end), so a 10 GiB disk image with 1 GiB of
//! data takes about 1 GiB again after a restore. This is done here, on extraction, rather than
//! with GNU sparse entries in the stored tar: the archive stays a plain pax stream that any
//! `tar -x` reads (GNU sparse formats differ between versions and other tars expand them
//! wrongly), existing backups restore sparse too, and the zeros cost little on backup (zstd turns
//! them into almost nothing). A file that was dense and full of zeros comes back sparse as well;
//! its content is the same.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::EntryType;

use super::archive::parse_pax_time;

/// How to extract.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Restore numeric owners (needs root).
    pub owners: bool,
}

/// What was extracted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub special: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub enum ExtractError {
    /// The archive tries to write outside the destination, or through a link.
    Unsafe { path: String, reason: String },
    /// The archive is not one this extractor accepts.
    Format { path: String, reason: String },
    /// Reading the archive failed (truncated, damaged, or the input broke off).
    Read(io::Error),
    /// Writing at the destination failed.
    Write { path: PathBuf, source: io::Error },
    /// Handing the checked archive on to `tar -x` (in a pod) failed.
    Forward(io::Error),
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtractError::Unsafe { path, reason } => write!(f, "refused archive entry `{path}`: {reason}"),
            ExtractError::Format { path, reason } => write!(f, "archive entry `{path}`: {reason}"),
            ExtractError::Read(e) => write!(f, "cannot read the archive: {e}"),
            ExtractError::Write { path, source } => write!(f, "cannot write `{}`: {source}", path.display()),
            ExtractError::Forward(e) => write!(f, "cannot send the archive to `tar` in the pod: {e}"),
        }
    }
}

/// Owner, mode and time of one entry.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: u32,
}

/// Extract `input` into `dest`, an existing, empty directory only this process uses. Reads the
/// input to its end (so that whoever writes it is never left blocked).
pub fn extract<R: Read>(input: R, dest: &Path, opts: &Options) -> Result<Extracted, ExtractError> {
    let mut ar = tar::Archive::new(input);
    let mut stats = Extracted::default();
    let mut dirs: BTreeMap<PathBuf, Meta> = BTreeMap::new();
    let mut root: Option<Meta> = None;
    // the last parent directory proven to be a real directory of ours (entries come grouped by
    // directory; a verified directory stays one: nothing here replaces a directory)
    let mut proven: Option<PathBuf> = None;
    let mut buf = vec![0u8; 256 * 1024];

    for entry in ar.entries().map_err(ExtractError::Read)? {
        let mut entry = entry.map_err(ExtractError::Read)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let unsafe_entry = |reason: &str| ExtractError::Unsafe { path: shown.clone(), reason: reason.to_string() };
        let format = |reason: String| ExtractError::Format { path: shown.clone(), reason };
        let meta = meta_of(&mut entry).map_err(|e| format(format!("unreadable header: {e}")))?;
        let rel = safe_path(&raw).map_err(|r| unsafe_entry(&r))?;
        stats.entries += 1;
        let Some(rel) = rel else {
            if kind != EntryType::Directory {
                return Err(unsafe_entry("the archive's root must be a directory"));
            }
            root = Some(meta);
            stats.dirs += 1;
            continue;
        };
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if proven.as_ref() != Some(&parent) {
            make_parents(dest, &parent).map_err(|e| match e {
                Refusal::Unsafe(r) => unsafe_entry(&r),
                Refusal::Io(path, source) => ExtractError::Write { path, source },
            })?;
            proven = Some(parent);
        }
        let target = dest.join(&rel);
        let werr = |source: io::Error| ExtractError::Write { path: target.clone(), source };
        match kind {
            EntryType::Directory => {
                match std::fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        std::fs::remove_file(&target).map_err(werr)?;
                        mkdir(&target).map_err(werr)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => mkdir(&target).map_err(werr)?,
                    Err(e) => return Err(werr(e)),
                }
                dirs.insert(rel, meta);
                stats.dirs += 1;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                clear(&target).map_err(|e| refusal(e, &shown, &target))?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&target)
                    .map_err(werr)?;
                let expected = entry.size();
                let mut written = 0u64;
                let mut out = SparseWriter::new(&mut file);
                loop {
                    // whole buffers: their offsets stay block-aligned, so every zero block is seen whole
                    let n = fill(&mut entry, &mut buf).map_err(ExtractError::Read)?;
                    if n == 0 {
                        break;
                    }
                    out.write(&buf[..n]).map_err(werr)?;
                    written += n as u64;
                }
                out.finish().map_err(werr)?;
                if written != expected && kind != EntryType::GNUSparse {
                    return Err(ExtractError::Read(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("`{shown}` is cut short: {written} of {expected} bytes"),
                    )));
                }
                stats.bytes += written;
                if opts.owners {
                    std::os::unix::fs::fchown(&file, Some(meta.uid), Some(meta.gid)).map_err(werr)?;
                }
                // after chown, which clears setuid/setgid
                file.set_permissions(Permissions::from_mode(meta.mode & 0o7777)).map_err(werr)?;
                drop(file);
                set_mtime(&target, meta).map_err(werr)?;
                stats.files += 1;
            }
            EntryType::Symlink => {
                let link = entry.link_name_bytes().ok_or_else(|| format("symlink without a target".into()))?;
                clear(&target).map_err(|e| refusal(e, &shown, &target))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target).map_err(werr)?;
                if opts.owners {
                    std::os::unix::fs::lchown(&target, Some(meta.uid), Some(meta.gid)).map_err(werr)?;
                }
                set_mtime(&target, meta).map_err(werr)?;
                stats.symlinks += 1;
            }
            EntryType::Link => {
                let link = entry.link_name_bytes().ok_or_else(|| format("hard link without a target".into()))?;
                let source = match safe_path(&link) {
                    Ok(Some(s)) => s,
                    Ok(None) => return Err(unsafe_entry("hard link to the root directory")),
                    Err(r) => return Err(unsafe_entry(&format!("hard link target {r}"))),
                };
                check_existing(dest, &source).map_err(|e| match e {
                    Refusal::Unsafe(r) => unsafe_entry(&format!("hard link target {r}")),
                    Refusal::Io(path, source) => ExtractError::Write { path, source },
                })?;
                clear(&target).map_err(|e| refusal(e, &shown, &target))?;
                // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself
                std::fs::hard_link(dest.join(&source), &target).map_err(werr)?;
                stats.hardlinks += 1;
            }
            EntryType::Fifo | EntryType::Char | EntryType::Block => {
                clear(&target).map_err(|e| refusal(e, &shown, &target))?;
                let (fmt_bits, dev) = match kind {
                    EntryType::Fifo => (libc::S_IFIFO, 0),
                    EntryType::Char => (libc::S_IFCHR, device(&entry).map_err(&format)?),
                    _ => (libc::S_IFBLK, device(&entry).map_err(&format)?),
                };
                match mknod(&target, fmt_bits | 0o600, dev) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) && kind != EntryType::Fifo => {
                        tracing::warn!(path = %shown, "skipped a device node: creating one needs root");
                        continue;
                    }
                    Err(e) => return Err(werr(e)),
                }
                if opts.owners {
                    std::os::unix::fs::lchown(&target, Some(meta.uid), Some(meta.gid)).map_err(werr)?;
                }
                std::fs::set_permissions(&target, Permissions::from_mode(meta.mode & 0o7777)).map_err(werr)?;
                set_mtime(&target, meta).map_err(werr)?;
                stats.special += 1;
            }
            other => return Err(format(format!("unsupported entry type {other:?}"))),
        }
    }
    if stats.entries == 0 {
        return Err(ExtractError::Format { path: String::new(), reason: "the archive holds no entries".into() });
    }
    // whatever follows the end-of-archive marker (record padding) is read and dropped
    let mut rest = ar.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(ExtractError::Read)?;

    // directories last, deepest first (their mtimes change while entries are added below them)
    for (rel, meta) in dirs.iter().rev() {
        let path = dest.join(rel);
        apply_dir(&path, *meta, opts).map_err(|source| ExtractError::Write { path, source })?;
    }
    if let Some(meta) = root {
        apply_dir(dest, meta, opts).map_err(|source| ExtractError::Write { path: dest.to_path_buf(), source })?;
    }
    Ok(stats)
}

/// A stored name as a safe relative path; `None` for the root itself (`.`, `./`).
pub fn safe_path(raw: &[u8]) -> Result<Option<PathBuf>, String> {
    if raw.is_empty() {
        return Err("has an empty name".into());
    }
    if raw[0] == b'/' {
        return Err("is an absolute path".into());
    }
    if raw.contains(&0) {
        return Err("has a NUL byte in its name".into());
    }
    let mut out = PathBuf::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("has a `..` component".into()),
            p => out.push(OsStr::from_bytes(p)),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

enum Refusal {
    Unsafe(String),
    Io(PathBuf, io::Error),
}

/// Read until `buf` is full or the input ends; returns how many bytes were read.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The block size holes are made of: a file system's allocation unit on the usual ones (ext4,
/// xfs, btrfs, tmpfs); a hole smaller than the block would be allocated anyway.
const HOLE_BLOCK: u64 = 4096;

/// Writes a fresh file's bytes in order, turning each aligned [`HOLE_BLOCK`] of zeros into a hole:
/// runs of data are written with one call each, runs of zeros are skipped with one seek, and
/// [`SparseWriter::finish`] sets the length (a file ending in zeros ends in a hole).
struct SparseWriter<'a> {
    file: &'a mut std::fs::File,
    /// Bytes accepted so far: the file's length once finished.
    pos: u64,
    /// Zeros accepted but not yet skipped over.
    skip: u64,
}

impl<'a> SparseWriter<'a> {
    fn new(file: &'a mut std::fs::File) -> Self {
        SparseWriter { file, pos: 0, skip: 0 }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let mut i = 0;
        // start of the data run not yet written
        let mut run = 0;
        while i < data.len() {
            let offset = self.pos + i as u64;
            let n = ((HOLE_BLOCK - offset % HOLE_BLOCK) as usize).min(data.len() - i);
            if n as u64 == HOLE_BLOCK && data[i..i + n].iter().all(|&b| b == 0) {
                self.write_run(&data[run..i])?;
                self.skip += n as u64;
                run = i + n;
            }
            i += n;
        }
        self.write_run(&data[run..])?;
        self.pos += data.len() as u64;
        Ok(())
    }

    fn write_run(&mut self, run: &[u8]) -> io::Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        if self.skip > 0 {
            use std::io::Seek;
            let skip = i64::try_from(self.skip).map_err(io::Error::other)?;
            self.file.seek(io::SeekFrom::Current(skip))?;
            self.skip = 0;
        }
        self.file.write_all(run)
    }

    fn finish(self) -> io::Result<()> {
        if self.skip > 0 {
            self.file.set_len(self.pos)?;
        }
        Ok(())
    }
}

fn refusal(e: Refusal, shown: &str, target: &Path) -> ExtractError {
    match e {
        Refusal::Unsafe(reason) => ExtractError::Unsafe { path: shown.to_string(), reason },
        Refusal::Io(_, source) => ExtractError::Write { path: target.to_path_buf(), source },
    }
}

/// Create (0700) or verify every directory of `parent` below `dest`: each must be a real directory.
fn make_parents(dest: &Path, parent: &Path) -> Result<(), Refusal> {
    let mut cur = dest.to_path_buf();
    for c in parent.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Refusal::Unsafe(format!(
                    "it would be written through the symbolic link `{}`",
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                )));
            }
            Ok(_) => {
                return Err(Refusal::Unsafe(format!(
                    "`{}` is not a directory",
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => mkdir(&cur).map_err(|e| Refusal::Io(cur.clone(), e))?,
            Err(e) => return Err(Refusal::Io(cur, e)),
        }
    }
    Ok(())
}

/// A hard link's source: an existing non-directory reached through real directories only.
fn check_existing(dest: &Path, rel: &Path) -> Result<(), Refusal> {
    let mut cur = dest.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        cur.push(c);
        let last = i + 1 == parts.len();
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if last && m.is_dir() => return Err(Refusal::Unsafe("is a directory".into())),
            Ok(_) if last => {}
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => return Err(Refusal::Unsafe("passes through a symbolic link or a file".into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Refusal::Unsafe("does not name an earlier entry of the archive".into()));
            }
            Err(e) => return Err(Refusal::Io(cur, e)),
        }
    }
    Ok(())
}

/// Remove a non-directory at `target` (without following it); refuse to replace a directory.
fn clear(target: &Path) -> Result<(), Refusal> {
    match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Refusal::Io(target.to_path_buf(), e)),
        Ok(m) if m.is_dir() => Err(Refusal::Unsafe("a directory of the same name is already in the archive".into())),
        Ok(_) => std::fs::remove_file(target).map_err(|e| Refusal::Io(target.to_path_buf(), e)),
    }
}

fn mkdir(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(0o700).create(path)
}

fn meta_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let h = entry.header();
    let (mode, uid, gid, header_mtime) = (h.mode()?, h.uid()?, h.gid()?, h.mtime()?);
    let id = |v: u64| u32::try_from(v).map_err(|_| io::Error::other(format!("owner id {v} out of range")));
    let mut meta = Meta {
        mode,
        uid: id(uid)?,
        gid: id(gid)?,
        mtime: i64::try_from(header_mtime).unwrap_or(i64::MAX),
        mtime_nsec: 0,
    };
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax.flatten() {
            if ext.key() == Ok("mtime")
                && let Some((s, n)) = ext.value().ok().and_then(parse_pax_time)
            {
                (meta.mtime, meta.mtime_nsec) = (s, n);
            }
        }
    }
    Ok(meta)
}

fn device<R: Read>(entry: &tar::Entry<'_, R>) -> Result<libc::dev_t, String> {
    let h = entry.header();
    let major = h.device_major().map_err(|e| e.to_string())?.unwrap_or(0);
    let minor = h.device_minor().map_err(|e| e.to_string())?.unwrap_or(0);
    Ok(libc::makedev(major, minor))
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("path has a NUL byte"))
}

fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::mknod(c.as_ptr(), mode, dev) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Set the mtime of `path` itself (a symlink is not followed); the atime is left alone.
pub fn set_mtime_of(path: &Path, sec: i64, nsec: u32) -> io::Result<()> {
    let c = cpath(path)?;
    let times = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: sec as libc::time_t, tv_nsec: i64::from(nsec) as _ },
    ];
    // SAFETY: `c` is a valid path and `times` two initialised timespecs, as utimensat requires.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn set_mtime(path: &Path, meta: Meta) -> io::Result<()> {
    set_mtime_of(path, meta.mtime, meta.mtime_nsec)
}

fn apply_dir(path: &Path, meta: Meta, opts: &Options) -> io::Result<()> {
    if opts.owners {
        std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))?;
    }
    std::fs::set_permissions(path, Permissions::from_mode(meta.mode & 0o7777))?;
    set_mtime(path, meta)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::super::archive::{HeaderSpec, TarWriter, write_tree};
    use super::super::exclude::Excludes;
    use super::*;

    /// A crafted entry: (stored name, type, link target, data, pax mtime).
    struct E<'a> {
        path: &'a [u8],
        kind: EntryType,
        link: Option<&'a [u8]>,
        data: &'a [u8],
    }

    fn e<'a>(path: &'a [u8], kind: EntryType) -> E<'a> {
        E { path, kind, link: None, data: b"" }
    }

    fn craft(entries: &[E<'_>]) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new());
        for x in entries {
            w.header(&HeaderSpec {
                path: x.path,
                kind: x.kind,
                mode: if x.kind == EntryType::Directory { 0o755 } else { 0o644 },
                uid: 0,
                gid: 0,
                uname: None,
                gname: None,
                mtime: 1_000_000_000,
                mtime_nsec: 0,
                size: x.data.len() as u64,
                link: x.link,
                device: None,
            })
            .unwrap();
            w.data().write_all(x.data).unwrap();
            w.pad(x.data.len() as u64).unwrap();
        }
        w.finish().unwrap()
    }

    struct Arena {
        _t: tempfile::TempDir,
        dest: PathBuf,
        outside: PathBuf,
    }

    fn arena() -> Arena {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("dest");
        let outside = t.path().join("outside");
        std::fs::create_dir(&dest).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("victim"), b"precious").unwrap();
        Arena { _t: t, dest, outside }
    }

    impl Arena {
        fn run(&self, tar: &[u8]) -> Result<Extracted, ExtractError> {
            extract(tar, &self.dest, &Options { owners: false })
        }
        /// Nothing outside the destination was created or changed.
        fn outside_untouched(&self) {
            let names: Vec<_> = std::fs::read_dir(&self.outside).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names, ["victim"], "outside the destination: {names:?}");
            assert_eq!(std::fs::read(self.outside.join("victim")).unwrap(), b"precious");
            let parent = self.dest.parent().unwrap();
            let mut around: Vec<_> = std::fs::read_dir(parent).unwrap().map(|e| e.unwrap().file_name()).collect();
            around.sort();
            assert_eq!(around, ["dest", "outside"], "beside the destination");
        }
    }

    fn refused(r: Result<Extracted, ExtractError>, needle: &str) {
        match r {
            Err(ExtractError::Unsafe { reason, path }) => {
                assert!(reason.contains(needle) || path.contains(needle), "{path}: {reason} (wanted {needle})")
            }
            other => panic!("expected a refusal mentioning {needle}, got {other:?}"),
        }
    }

    #[test]
    fn dot_dot_is_refused() {
        let a = arena();
        refused(a.run(&craft(&[E { data: b"evil", ..e(b"../outside/victim", EntryType::Regular) }])), "..");
        refused(a.run(&craft(&[E { data: b"evil", ..e(b"sub/../../outside/x", EntryType::Regular) }])), "..");
        refused(a.run(&craft(&[e(b"..", EntryType::Directory)])), "..");
        a.outside_untouched();
    }

    #[test]
    fn absolute_names_are_refused_not_rewritten() {
        let a = arena();
        let abs = a.outside.join("victim");
        let abs = abs.as_os_str().as_bytes();
        refused(a.run(&craft(&[E { data: b"evil", ..e(abs, EntryType::Regular) }])), "absolute");
        a.outside_untouched();
        assert!(!a.dest.join(abs.strip_prefix(b"/").map(OsStr::from_bytes).unwrap()).exists());
    }

    #[test]
    fn writing_through_a_symlinked_directory_is_refused() {
        let a = arena();
        let out = a.outside.as_os_str().as_bytes();
        let tar = craft(&[
            E { link: Some(out), ..e(b"link", EntryType::Symlink) },
            E { data: b"evil", ..e(b"link/victim", EntryType::Regular) },
        ]);
        refused(a.run(&tar), "symbolic link");
        a.outside_untouched();

        let b = arena();
        let tar = craft(&[
            E { link: Some(b".."), ..e(b"up", EntryType::Symlink) },
            E { data: b"evil", ..e(b"up/outside/victim", EntryType::Regular) },
        ]);
        refused(b.run(&tar), "symbolic link");
        b.outside_untouched();

        // a symlinked directory deeper down, reached after real directories
        let c = arena();
        let tar = craft(&[
            e(b"d/", EntryType::Directory),
            E { link: Some(out), ..e(b"d/l", EntryType::Symlink) },
            e(b"d/l/new/", EntryType::Directory),
        ]);
        refused(c.run(&tar), "symbolic link");
        c.outside_untouched();
    }

    #[test]
    fn a_file_replaces_a_planted_symlink_instead_of_writing_through_it() {
        let a = arena();
        let victim = a.outside.join("victim");
        let tar = craft(&[
            E { link: Some(victim.as_os_str().as_bytes()), ..e(b"f", EntryType::Symlink) },
            E { data: b"mine", ..e(b"f", EntryType::Regular) },
        ]);
        a.run(&tar).unwrap();
        a.outside_untouched();
        let m = std::fs::symlink_metadata(a.dest.join("f")).unwrap();
        assert!(m.is_file());
        assert_eq!(std::fs::read(a.dest.join("f")).unwrap(), b"mine");

        // the same for a directory entry over a planted symlink
        let b = arena();
        let tar = craft(&[
            E { link: Some(b.outside.as_os_str().as_bytes()), ..e(b"d", EntryType::Symlink) },
            e(b"d/", EntryType::Directory),
            E { data: b"x", ..e(b"d/new", EntryType::Regular) },
        ]);
        b.run(&tar).unwrap();
        b.outside_untouched();
        assert!(std::fs::symlink_metadata(b.dest.join("d")).unwrap().is_dir());
    }

    #[test]
    fn hard_links_must_stay_inside() {
        let a = arena();
        refused(a.run(&craft(&[E { link: Some(b"../outside/victim"), ..e(b"h", EntryType::Link) }])), "..");
        let abs = a.outside.join("victim");
        refused(a.run(&craft(&[E { link: Some(abs.as_os_str().as_bytes()), ..e(b"h", EntryType::Link) }])), "absolute");
        refused(a.run(&craft(&[E { link: Some(b"/etc/passwd"), ..e(b"h", EntryType::Link) }])), "absolute");
        // through a symlinked directory
        let tar = craft(&[
            E { link: Some(a.outside.as_os_str().as_bytes()), ..e(b"l", EntryType::Symlink) },
            E { link: Some(b"l/victim"), ..e(b"h", EntryType::Link) },
        ]);
        refused(a.run(&tar), "symbolic link");
        a.outside_untouched();
        let b = arena();
        refused(b.run(&craft(&[E { link: Some(b"nothing"), ..e(b"h", EntryType::Link) }])), "earlier entry");
        refused(
            b.run(&craft(&[e(b"d/", EntryType::Directory), E { link: Some(b"d"), ..e(b"h", EntryType::Link) }])),
            "directory",
        );
        b.outside_untouched();
    }

    #[test]
    fn a_pax_path_is_checked_like_any_name() {
        // a harmless ustar name, overridden by a pax `path` record that climbs out
        let long = format!("{}/../../outside/victim", "a".repeat(120));
        let a = arena();
        refused(a.run(&craft(&[E { data: b"evil", ..e(long.as_bytes(), EntryType::Regular) }])), "..");
        a.outside_untouched();
    }

    #[test]
    fn damaged_archives_fail() {
        let a = arena();
        let tar = craft(&[E { data: &[1u8; 5000], ..e(b"f", EntryType::Regular) }]);
        assert!(matches!(a.run(&tar[..2048]), Err(ExtractError::Read(_))));
        let mut bad = tar.clone();
        bad[100] ^= 0xff; // header checksum no longer matches
        let b = arena();
        assert!(b.run(&bad).is_err());
        let c = arena();
        assert!(matches!(c.run(&[0u8; 1024]), Err(ExtractError::Format { .. })), "an empty archive is not a volume");
    }

    #[test]
    fn round_trip_keeps_metadata() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("d/empty")).unwrap();
        std::fs::write(src.join("d/f"), b"content").unwrap();
        std::fs::set_permissions(src.join("d/f"), Permissions::from_mode(0o4750)).unwrap();
        std::fs::set_permissions(src.join("d"), Permissions::from_mode(0o2775)).unwrap();
        std::fs::hard_link(src.join("d/f"), src.join("hl")).unwrap();
        std::os::unix::fs::symlink("d/f", src.join("sl")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/abs", src.join("abs")).unwrap();
        let nonutf8 = OsStr::from_bytes(b"caf\xe9");
        std::fs::write(src.join(nonutf8), b"x").unwrap();
        let long = "l".repeat(200);
        std::fs::write(src.join(&long), b"long").unwrap();
        set_mtime_of(&src.join("d/f"), 1_234_567_890, 987_654_321).unwrap();
        set_mtime_of(&src.join("sl"), 1_000_000_001, 5).unwrap();
        set_mtime_of(&src.join("d/empty"), -86_400, 250_000_000).unwrap();
        set_mtime_of(&src.join("d"), 1_111_111_111, 0).unwrap();
        std::fs::set_permissions(&src, Permissions::from_mode(0o751)).unwrap();

        let (_, tar, _) = write_tree(&src, &Excludes::new(&[]).unwrap(), Vec::new(), Vec::new()).unwrap();
        let dest = t.path().join("dest");
        mkdir(&dest).unwrap();
        let stats = extract(&tar[..], &dest, &Options { owners: false }).unwrap();
        assert_eq!((stats.files, stats.hardlinks, stats.symlinks, stats.dirs), (3, 1, 2, 3));

        for rel in ["", "d", "d/f", "d/empty", "hl", "sl", "abs", "caf\u{fffd}", &long] {
            let rel = if rel == "caf\u{fffd}" { Path::new(nonutf8) } else { Path::new(rel) };
            let (a, b) =
                (std::fs::symlink_metadata(src.join(rel)).unwrap(), std::fs::symlink_metadata(dest.join(rel)).unwrap());
            assert_eq!(a.mode(), b.mode(), "mode of {rel:?}");
            assert_eq!((a.mtime(), a.mtime_nsec()), (b.mtime(), b.mtime_nsec()), "mtime of {rel:?}");
            assert_eq!(a.size(), b.size(), "size of {rel:?}");
        }
        assert_eq!(std::fs::read_link(dest.join("abs")).unwrap(), Path::new("/nonexistent/abs"));
        let (f, h) = (std::fs::metadata(dest.join("d/f")).unwrap(), std::fs::metadata(dest.join("hl")).unwrap());
        assert_eq!(f.ino(), h.ino(), "hard link restored as a link");
        assert_eq!(f.nlink(), 2);
    }

    #[test]
    fn zero_blocks_become_holes_and_the_content_stays() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // 1 MiB data, 8 MiB zeros, a few unaligned bytes, 8 MiB zeros (a trailing hole)
        let mut content = vec![7u8; 1 << 20];
        content.extend(vec![0u8; 8 << 20]);
        content.extend(b"tail bytes");
        content.extend(vec![0u8; 8 << 20]);
        // aligned pieces (as extraction writes them), and odd-sized ones: a block that straddles
        // two writes is written as data, the content is the same either way
        for (piece_size, max_allocated) in [(256 * 1024, (1 << 20) + 8192), (100_003, 2 << 20)] {
            let mut file = std::fs::File::create(&path).unwrap();
            let mut w = super::SparseWriter::new(&mut file);
            for piece in content.chunks(piece_size) {
                w.write(piece).unwrap();
            }
            w.finish().unwrap();
            drop(file);
            assert_eq!(std::fs::read(&path).unwrap(), content);
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(meta.len(), content.len() as u64);
            let allocated = meta.blocks() * 512;
            assert!(allocated <= max_allocated, "pieces of {piece_size}: allocated {allocated} bytes");
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn safe_paths() {
        assert_eq!(safe_path(b"./").unwrap(), None);
        assert_eq!(safe_path(b".").unwrap(), None);
        assert_eq!(safe_path(b"./a//b/./c/").unwrap(), Some(PathBuf::from("a/b/c")));
        assert!(safe_path(b"").is_err());
        assert!(safe_path(b"/x").is_err());
        assert!(safe_path(b"a/..").is_err());
        assert!(safe_path(b"a\0b").is_err());
        assert_eq!(
            safe_path(b"..a/b..").unwrap(),
            Some(PathBuf::from("..a/b..")),
            "only a whole `..` component climbs"
        );
    }
}
