//! Tar streams that come from, or go to, a `tar` running somewhere else (a pod, for `pvc_path`).
//!
//! Blocking code, run on its own thread like [`super::archive`]. Both directions parse the
//! stream with the `tar` crate and write it out again with drctl's own [`TarWriter`], never
//! forwarding a byte they did not understand:
//!
//! * backup ([`restream`]): the pod's `tar -c` output becomes exactly the archive a local backup
//!   writes: names normalised (`./` for the root, no leading `./`, directories ending in `/`),
//!   the same pax records, no user or group names (the ids are what matters; the names would be
//!   this host's, not the pod's), `exclude` applied with the same rules, and the same `files`
//!   list with each file's sha256 computed on the way. Restore and drills never need to know
//!   where a tree came from;
//! * restore ([`forward`]): every entry of the stored archive is checked with the rules of the
//!   local extractor ([`super::extract`]: relative names without `..`, nothing below a symlink,
//!   hard links only to names inside) *before* it is written to the pod's `tar -x`; the first bad
//!   entry stops the stream, so nothing past it ever reaches the pod.
//!
//! Hard links in a backup: `tar` stores a later name of a file as a link to the first name it
//! archived. The sha256 of that first name is kept for the files the link scan listed (files with
//! more than one name, see [`super::pvc`]); a link to a name that is not kept (the file got a second
//! name after the scan) or that `exclude` left out is resolved by reading the file again through
//! `refetch`: an excluded first name makes the next name a regular file, as in a local backup.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tar::EntryType;

use super::archive::parse_pax_time;
use super::archive::{CopyError, FileEntry, HeaderSpec, ListWriter, TarWriter, Totals, copy_data, display_bytes};
use super::exclude::Excludes;
use super::extract::{ExtractError, safe_path};

const BUF: usize = 256 * 1024;

/// Mode, owner and mtime of one entry, from its header and pax records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
}

fn entry_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let h = entry.header();
    let (mode, uid, gid, mtime) = (h.mode()?, h.uid()?, h.gid()?, h.mtime()?);
    let id = |v: u64| u32::try_from(v).map_err(|_| io::Error::other(format!("owner id {v} out of range")));
    let mut meta =
        Meta { mode, uid: id(uid)?, gid: id(gid)?, mtime: i64::try_from(mtime).unwrap_or(i64::MAX), mtime_nsec: 0 };
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax.flatten() {
            let (Ok(key), Ok(value)) = (ext.key(), ext.value()) else { continue };
            match key {
                "mtime" => {
                    if let Some((s, n)) = parse_pax_time(value) {
                        (meta.mtime, meta.mtime_nsec) = (s, n);
                    }
                }
                "uid" => meta.uid = value.parse().map_err(|_| io::Error::other(format!("bad pax uid `{value}`")))?,
                "gid" => meta.gid = value.parse().map_err(|_| io::Error::other(format!("bad pax gid `{value}`")))?,
                _ => {}
            }
        }
    }
    Ok(meta)
}

fn device<R: Read>(entry: &tar::Entry<'_, R>) -> io::Result<(u32, u32)> {
    let h = entry.header();
    Ok((h.device_major()?.unwrap_or(0), h.device_minor()?.unwrap_or(0)))
}

fn spec<'a>(path: &'a [u8], kind: EntryType, m: &Meta, size: u64, link: Option<&'a [u8]>) -> HeaderSpec<'a> {
    HeaderSpec {
        path,
        kind,
        mode: m.mode,
        uid: m.uid,
        gid: m.gid,
        uname: None,
        gname: None,
        mtime: m.mtime,
        mtime_nsec: m.mtime_nsec,
        size,
        link,
        device: None,
    }
}

// ---------------------------------------------------------------- backup

/// Why re-emitting a pod's tar stream stopped.
#[derive(Debug)]
pub enum RestreamError {
    /// The stream could not be read (cut off, damaged).
    Read(io::Error),
    /// An entry drctl does not store.
    Format { path: String, reason: String },
    /// The archive could not be written (the pipeline stopped reading).
    Write(io::Error),
    /// The file list could not be written.
    List(io::Error),
    /// A hard-linked file could not be read again.
    Refetch { path: String, source: io::Error },
}

impl fmt::Display for RestreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestreamError::Read(e) => write!(f, "reading tar's output from the pod failed: {e}"),
            RestreamError::Format { path, reason } => write!(f, "entry `{path}` from the pod's tar: {reason}"),
            RestreamError::Write(e) => write!(f, "writing the archive failed: {e}"),
            RestreamError::List(e) => write!(f, "writing the file list failed: {e}"),
            RestreamError::Refetch { path, source } => {
                write!(f, "cannot read `{path}` again (a hard link to it needs its content): {source}")
            }
        }
    }
}

/// Reads a file of the tree again: its whole content in an unlinked temporary file, at offset 0.
pub type Refetch<'a> = dyn FnMut(&Path) -> io::Result<std::fs::File> + 'a;

/// Re-emit the tar stream `input` (a `tar -c` of the root, names relative to it) as a drctl
/// archive into `out`, listing every entry into `list`. `linked` holds the relative names of files
/// with several names. Returns the totals and both writers, finished.
pub fn restream<R: Read, W: Write, L: Write>(
    input: R,
    excludes: &Excludes,
    linked: &HashSet<PathBuf>,
    refetch: &mut Refetch<'_>,
    out: W,
    list: L,
) -> Result<(Totals, W, L), RestreamError> {
    let mut tar = TarWriter::new(out);
    let mut list = ListWriter::new(list).map_err(RestreamError::List)?;
    let mut totals = Totals::default();
    let mut buf = vec![0u8; BUF];
    let mut root_seen = false;
    let mut excluded_dirs: HashSet<PathBuf> = HashSet::new();
    // first stored name of a multi-name file → (its sha256, size)
    let mut shas: HashMap<PathBuf, (String, u64)> = HashMap::new();
    // an excluded first name → the name stored in its place
    let mut moved: HashMap<PathBuf, PathBuf> = HashMap::new();

    let mut ar = tar::Archive::new(input);
    for entry in ar.entries().map_err(RestreamError::Read)? {
        let mut entry = entry.map_err(RestreamError::Read)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let format = |reason: String| RestreamError::Format { path: shown.clone(), reason };
        let meta = entry_meta(&mut entry).map_err(|e| format(format!("unreadable header: {e}")))?;
        let rel = safe_path(&raw).map_err(&format)?;
        let Some(rel) = rel else {
            if kind != EntryType::Directory || root_seen {
                return Err(format("the root must come first, once, as a directory".into()));
            }
            root_seen = true;
            tar.header(&spec(b"./", EntryType::Directory, &meta, 0, None)).map_err(RestreamError::Write)?;
            list.push(&list_entry(Path::new("."), "dir", &meta, 0, None, None)).map_err(RestreamError::List)?;
            totals.dir_count += 1;
            continue;
        };
        if !root_seen {
            return Err(format("the stream does not start with the root directory".into()));
        }
        if rel.ancestors().skip(1).any(|a| excluded_dirs.contains(a)) {
            continue;
        }
        let is_dir = kind == EntryType::Directory;
        if excludes.is_excluded(&rel, is_dir) {
            totals.excluded += 1;
            if is_dir {
                excluded_dirs.insert(rel);
            }
            continue;
        }
        let name = rel.as_os_str().as_bytes();
        match kind {
            EntryType::Directory => {
                let mut stored = name.to_vec();
                stored.push(b'/');
                tar.header(&spec(&stored, kind, &meta, 0, None)).map_err(RestreamError::Write)?;
                list.push(&list_entry(&rel, "dir", &meta, 0, None, None)).map_err(RestreamError::List)?;
                totals.dir_count += 1;
            }
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                tar.header(&spec(name, EntryType::Regular, &meta, size, None)).map_err(RestreamError::Write)?;
                let sha = copy(&mut entry, size, tar.data(), &mut buf)?;
                tar.pad(size).map_err(RestreamError::Write)?;
                if linked.contains(&rel) {
                    shas.insert(rel.clone(), (sha.clone(), size));
                }
                list.push(&list_entry(&rel, "file", &meta, size, Some(sha), None)).map_err(RestreamError::List)?;
                totals.file_count += 1;
                totals.total_bytes += size;
            }
            EntryType::Symlink => {
                let link = entry.link_name_bytes().ok_or_else(|| format("symlink without a target".into()))?;
                tar.header(&spec(name, kind, &meta, 0, Some(&link))).map_err(RestreamError::Write)?;
                list.push(&list_entry(&rel, "symlink", &meta, 0, None, Some(&link))).map_err(RestreamError::List)?;
                totals.symlink_count += 1;
            }
            EntryType::Link => {
                let link = entry.link_name_bytes().ok_or_else(|| format("hard link without a target".into()))?;
                let Ok(Some(target)) = safe_path(&link) else {
                    return Err(format(format!("hard link to `{}`", String::from_utf8_lossy(&link))));
                };
                let target = moved.get(&target).cloned().unwrap_or(target);
                let target_excluded = excludes.is_excluded(&target, false)
                    || target.ancestors().skip(1).any(|a| excluded_dirs.contains(a));
                if target_excluded {
                    // its first name is not in the archive: this name carries the content
                    let mut file = refetch(&target).map_err(|source| RestreamError::Refetch {
                        path: target.to_string_lossy().into_owned(),
                        source,
                    })?;
                    let size = file.metadata().map_err(RestreamError::Read)?.len();
                    tar.header(&spec(name, EntryType::Regular, &meta, size, None)).map_err(RestreamError::Write)?;
                    let sha = copy(&mut file, size, tar.data(), &mut buf)?;
                    tar.pad(size).map_err(RestreamError::Write)?;
                    shas.insert(rel.clone(), (sha.clone(), size));
                    moved.insert(target, rel.clone());
                    list.push(&list_entry(&rel, "file", &meta, size, Some(sha), None)).map_err(RestreamError::List)?;
                    totals.file_count += 1;
                    totals.total_bytes += size;
                    continue;
                }
                let (sha, size) = match shas.get(&target) {
                    Some(known) => known.clone(),
                    None => {
                        // the file got its second name after the link scan
                        let mut file = refetch(&target).map_err(|source| RestreamError::Refetch {
                            path: target.to_string_lossy().into_owned(),
                            source,
                        })?;
                        file.rewind().map_err(RestreamError::Read)?;
                        let size = file.metadata().map_err(RestreamError::Read)?.len();
                        let sha = copy(&mut file, size, &mut io::sink(), &mut buf)?;
                        shas.insert(target.clone(), (sha.clone(), size));
                        (sha, size)
                    }
                };
                let first = target.as_os_str().as_bytes();
                tar.header(&spec(name, kind, &meta, 0, Some(first))).map_err(RestreamError::Write)?;
                list.push(&list_entry(&rel, "hardlink", &meta, size, Some(sha), Some(first)))
                    .map_err(RestreamError::List)?;
                totals.file_count += 1;
                totals.hardlink_count += 1;
            }
            EntryType::Fifo | EntryType::Char | EntryType::Block => {
                let (label, dev) = match kind {
                    EntryType::Fifo => ("fifo", None),
                    EntryType::Char => ("char", Some(device(&entry).map_err(|e| format(e.to_string()))?)),
                    _ => ("block", Some(device(&entry).map_err(|e| format(e.to_string()))?)),
                };
                let mut h = spec(name, kind, &meta, 0, None);
                h.device = dev;
                tar.header(&h).map_err(RestreamError::Write)?;
                list.push(&list_entry(&rel, label, &meta, 0, None, None)).map_err(RestreamError::List)?;
                totals.special_count += 1;
            }
            other => return Err(format(format!("unsupported entry type {other:?}"))),
        }
    }
    if !root_seen {
        return Err(RestreamError::Format { path: String::new(), reason: "the stream holds no entries".into() });
    }
    // tar pads its output to a whole record: read it, so that it is never left blocked
    let mut rest = ar.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(RestreamError::Read)?;
    let out = tar.finish().map_err(RestreamError::Write)?;
    let list = list.finish().map_err(RestreamError::List)?;
    Ok((totals, out, list))
}

fn copy<R: Read, W: Write>(src: &mut R, size: u64, out: &mut W, buf: &mut [u8]) -> Result<String, RestreamError> {
    copy_data(src, size, out, buf).map_err(|e| match e {
        CopyError::Read(e) => RestreamError::Read(e),
        CopyError::Write(e) => RestreamError::Write(e),
        CopyError::Shrank { read } => RestreamError::Read(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("an entry is cut short: {read} of {size} bytes"),
        )),
    })
}

fn list_entry(rel: &Path, kind: &str, m: &Meta, size: u64, sha256: Option<String>, target: Option<&[u8]>) -> FileEntry {
    let (path, path_hex) = display_bytes(rel.as_os_str().as_bytes());
    FileEntry {
        path,
        path_hex,
        kind: kind.to_string(),
        size,
        mode: format!("{:04o}", m.mode & 0o7777),
        uid: m.uid,
        gid: m.gid,
        mtime: m.mtime,
        mtime_nsec: m.mtime_nsec,
        sha256,
        target: target.map(|t| display_bytes(t).0),
    }
}

// ---------------------------------------------------------------- restore

/// How to forward an archive to `tar -x`.
#[derive(Debug, Clone, Copy)]
pub struct ForwardOptions {
    /// Forward device nodes (only root can create them; otherwise skipped with a warning).
    pub devices: bool,
}

/// What was forwarded.
#[derive(Debug, Clone, Default)]
pub struct Forwarded {
    pub entries: u64,
    /// The archive root's metadata, for the destination directory itself.
    pub root: Option<Meta>,
    pub skipped_devices: u64,
}

/// Check every entry of `input` and write it, re-encoded, to `out` (the pod's `tar -x`). Refuses
/// absolute names, `..`, entries below (or replacing) a symlink stored earlier, and hard links that
/// leave the tree or pass through a symlink. Reads the input to its end.
pub fn forward<R: Read, W: Write>(input: R, out: &mut W, opts: ForwardOptions) -> Result<Forwarded, ExtractError> {
    let mut ar = tar::Archive::new(input);
    let mut tar = TarWriter::new(out);
    let mut done = Forwarded::default();
    let mut symlinks: HashSet<PathBuf> = HashSet::new();
    let mut buf = vec![0u8; BUF];
    let send = |e: io::Error| ExtractError::Forward(e);
    for entry in ar.entries().map_err(ExtractError::Read)? {
        let mut entry = entry.map_err(ExtractError::Read)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let refuse = |reason: String| ExtractError::Unsafe { path: shown.clone(), reason };
        let format = |reason: String| ExtractError::Format { path: shown.clone(), reason };
        let meta = entry_meta(&mut entry).map_err(|e| format(format!("unreadable header: {e}")))?;
        let rel = safe_path(&raw).map_err(&refuse)?;
        done.entries += 1;
        let Some(rel) = rel else {
            if kind != EntryType::Directory {
                return Err(refuse("the archive's root must be a directory".into()));
            }
            done.root = Some(meta);
            tar.header(&spec(b"./", kind, &meta, 0, None)).map_err(send)?;
            continue;
        };
        if let Some(via) = rel.ancestors().skip(1).find(|a| symlinks.contains(*a)) {
            return Err(refuse(format!("it would be written through the symbolic link `{}`", via.display())));
        }
        if symlinks.contains(&rel) {
            return Err(refuse("it would replace a symbolic link stored earlier under the same name".into()));
        }
        let name = rel.as_os_str().as_bytes();
        match kind {
            EntryType::Directory => {
                let mut stored = name.to_vec();
                stored.push(b'/');
                tar.header(&spec(&stored, kind, &meta, 0, None)).map_err(send)?;
            }
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                tar.header(&spec(name, EntryType::Regular, &meta, size, None)).map_err(send)?;
                copy_data(&mut entry, size, tar.data(), &mut buf).map_err(|e| match e {
                    CopyError::Read(e) => ExtractError::Read(e),
                    CopyError::Write(e) => ExtractError::Forward(e),
                    CopyError::Shrank { read } => ExtractError::Read(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("`{shown}` is cut short: {read} of {size} bytes"),
                    )),
                })?;
                tar.pad(size).map_err(send)?;
            }
            EntryType::Symlink => {
                let link = entry.link_name_bytes().ok_or_else(|| format("symlink without a target".into()))?;
                tar.header(&spec(name, kind, &meta, 0, Some(&link))).map_err(send)?;
                symlinks.insert(rel);
            }
            EntryType::Link => {
                let link = entry.link_name_bytes().ok_or_else(|| format("hard link without a target".into()))?;
                let target = match safe_path(&link) {
                    Ok(Some(t)) => t,
                    Ok(None) => return Err(refuse("hard link to the root directory".into())),
                    Err(r) => return Err(refuse(format!("hard link target {r}"))),
                };
                if target.ancestors().skip(1).any(|a| symlinks.contains(a)) {
                    return Err(refuse("hard link target passes through a symbolic link".into()));
                }
                tar.header(&spec(name, kind, &meta, 0, Some(target.as_os_str().as_bytes()))).map_err(send)?;
                // a second name of a symlink is a symlink too
                if symlinks.contains(&target) {
                    symlinks.insert(rel);
                }
            }
            EntryType::Fifo | EntryType::Char | EntryType::Block => {
                if kind != EntryType::Fifo && !opts.devices {
                    tracing::warn!(path = %shown, "skipped a device node: creating one needs root in the pod");
                    done.skipped_devices += 1;
                    continue;
                }
                let mut h = spec(name, kind, &meta, 0, None);
                if kind != EntryType::Fifo {
                    h.device = Some(device(&entry).map_err(|e| format(e.to_string()))?);
                }
                tar.header(&h).map_err(send)?;
            }
            other => return Err(format(format!("unsupported entry type {other:?}"))),
        }
    }
    if done.entries == 0 {
        return Err(ExtractError::Format { path: String::new(), reason: "the archive holds no entries".into() });
    }
    let mut rest = ar.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(ExtractError::Read)?;
    tar.finish().map_err(send)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::super::archive::{FileList, write_tree};
    use super::*;

    fn no_refetch(p: &Path) -> io::Result<std::fs::File> {
        Err(io::Error::other(format!("unexpected refetch of {}", p.display())))
    }

    fn gnu_tar(root: &Path) -> Vec<u8> {
        let out = std::process::Command::new("tar")
            .arg("-C")
            .arg(root)
            .args(["-cf", "-", "--numeric-owner", "--format=posix", "--pax-option=delete=atime,delete=ctime"])
            .args(["--sort=name", "."])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
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
        std::fs::write(r.join("a").join("n".repeat(150)), b"long name").unwrap();
        t
    }

    #[test]
    fn a_gnu_tar_stream_becomes_the_local_archive() {
        let t = tree();
        let ex = Excludes::new(&["*.tmp".to_string(), "cache/".to_string()]).unwrap();
        let linked: HashSet<PathBuf> = ["a/one.txt", "two.txt"].iter().map(PathBuf::from).collect();
        let (totals, tar, list) =
            restream(&gnu_tar(t.path())[..], &ex, &linked, &mut no_refetch, Vec::new(), Vec::new()).unwrap();
        let (local_totals, local_tar, local_list) = write_tree(t.path(), &ex, Vec::new(), Vec::new()).unwrap();
        assert_eq!(totals, local_totals);
        let strip = |l: &[u8]| {
            let v: FileList = serde_json::from_slice(l).unwrap();
            v.entries
        };
        assert_eq!(strip(&list), strip(&local_list), "the same file list");
        // the same archive, but for user and group names (not stored from a pod)
        let names = |tar: &[u8]| {
            let mut ar = tar::Archive::new(tar);
            ar.entries()
                .unwrap()
                .map(|e| {
                    let mut e = e.unwrap();
                    let mut data = Vec::new();
                    e.read_to_end(&mut data).unwrap();
                    let h = e.header();
                    (e.path_bytes().into_owned(), h.entry_type(), h.mode().unwrap(), h.mtime().unwrap(), data)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&tar), names(&local_tar));
    }

    #[test]
    fn an_excluded_first_name_makes_the_next_one_a_file() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.tmp"), b"shared").unwrap();
        std::fs::hard_link(t.path().join("a.tmp"), t.path().join("b")).unwrap();
        std::fs::hard_link(t.path().join("a.tmp"), t.path().join("c")).unwrap();
        let ex = Excludes::new(&["*.tmp".to_string()]).unwrap();
        let root = t.path().to_path_buf();
        let mut fetched = Vec::new();
        let mut refetch = |p: &Path| {
            fetched.push(p.to_path_buf());
            std::fs::File::open(root.join(p))
        };
        let (totals, tar, _) =
            restream(&gnu_tar(t.path())[..], &ex, &HashSet::new(), &mut refetch, Vec::new(), Vec::new()).unwrap();
        assert_eq!(fetched, [PathBuf::from("a.tmp")], "read once, for the name that takes its place");
        let (local_totals, local_tar, _) = write_tree(t.path(), &ex, Vec::new(), Vec::new()).unwrap();
        assert_eq!(totals, local_totals);
        assert_eq!(tar.len(), local_tar.len());
        let mut ar = tar::Archive::new(&tar[..]);
        let kinds: Vec<_> = ar.entries().unwrap().map(|e| e.unwrap().header().entry_type()).collect();
        assert_eq!(kinds, [EntryType::Directory, EntryType::Regular, EntryType::Link]);
    }

    #[test]
    fn a_cut_stream_or_a_foreign_name_fails() {
        let t = tree();
        let ex = Excludes::new(&[]).unwrap();
        let full = gnu_tar(t.path());
        let cut = &full[..full.len() / 2 + 100];
        let r = restream(cut, &ex, &HashSet::new(), &mut no_refetch, Vec::new(), Vec::new());
        assert!(matches!(r, Err(RestreamError::Read(_))), "{:?}", r.err());
        let r = restream(&[][..], &ex, &HashSet::new(), &mut no_refetch, Vec::new(), Vec::new());
        assert!(matches!(r, Err(RestreamError::Format { .. })), "{:?}", r.err());
    }

    /// (name, type, link target)
    type Crafted<'a> = (&'a [u8], EntryType, Option<&'a [u8]>);

    fn hostile(entries: &[Crafted<'_>]) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new());
        let m = Meta { mode: 0o755, uid: 0, gid: 0, mtime: 1, mtime_nsec: 0 };
        for (path, kind, link) in entries {
            w.header(&spec(path, *kind, &m, 0, *link)).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn forward_refuses_escapes_before_writing_them() {
        let opts = ForwardOptions { devices: false };
        for (case, needle) in [
            (hostile(&[(b"./", EntryType::Directory, None), (b"../x", EntryType::Regular, None)]), ".."),
            (hostile(&[(b"/etc/x", EntryType::Regular, None)]), "absolute"),
            (
                hostile(&[(b"l", EntryType::Symlink, Some(b"/etc")), (b"l/passwd", EntryType::Regular, None)]),
                "symbolic link",
            ),
            (
                hostile(&[(b"l", EntryType::Symlink, Some(b"/etc")), (b"l/", EntryType::Directory, None)]),
                "symbolic link",
            ),
            (hostile(&[(b"h", EntryType::Link, Some(b"../../etc/passwd"))]), ".."),
            (
                hostile(&[
                    (b"l", EntryType::Symlink, Some(b"/etc")),
                    (b"h", EntryType::Link, Some(b"l")),
                    (b"h/x", EntryType::Regular, None),
                ]),
                "symbolic link",
            ),
        ] {
            let mut out = Vec::new();
            let err = forward(&case[..], &mut out, opts).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
            let mut ar = tar::Archive::new(&out[..]);
            for e in ar.entries().unwrap() {
                let e = e.unwrap();
                let p = e.path_bytes().into_owned();
                assert!(!p.starts_with(b"/") && !p.windows(2).any(|w| w == b".."), "forwarded {p:?}");
                assert!(p != b"l/passwd" && p != b"h/x", "forwarded {p:?}");
            }
        }
    }

    #[test]
    fn forward_keeps_a_good_archive_whole() {
        let t = tree();
        let (_, tar, _) = write_tree(t.path(), &Excludes::new(&[]).unwrap(), Vec::new(), Vec::new()).unwrap();
        let mut out = Vec::new();
        let done = forward(&tar[..], &mut out, ForwardOptions { devices: true }).unwrap();
        assert!(done.root.is_some());
        assert_eq!(out.len(), tar.len());
        let dest = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("tar")
            .arg("-xf")
            .arg("-")
            .arg("-C")
            .arg(dest.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(&out)?;
                c.wait()
            })
            .unwrap();
        assert!(st.success());
        assert_eq!(std::fs::read(dest.path().join("two.txt")).unwrap(), b"one");
    }
}
