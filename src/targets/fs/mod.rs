//! `type = "fs"`: a directory on a local or mounted disk.
//!
//! Atomicity: data goes to a hidden temporary file in the final directory (`.NAME.partial-XXXX`),
//! is fsynced, renamed into place, and the directory is fsynced; readers never see the temporary
//! name (`list` skips it).

mod config;
pub use config::FsTarget;

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{ByteStream, ObjectMeta, target_error};
use crate::error::FailureKind;
use crate::targets::Deadlines;
use crate::{Error, Result};

const PARTIAL: &str = ".partial-";

pub struct FsStore {
    name: String,
    root: PathBuf,
    pub(super) deadlines: Deadlines,
}

/// The key names no object: it, or a directory above it, is missing, or a "directory" above it
/// is an object (ENOTDIR).
fn is_missing(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

fn kind_of(e: &io::Error) -> FailureKind {
    match e.kind() {
        io::ErrorKind::NotFound => FailureKind::NotFound,
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::StorageFull => {
            FailureKind::Permanent
        }
        _ => FailureKind::Transient,
    }
}

impl FsStore {
    pub fn new(name: &str, config: &FsTarget, deadlines: Deadlines) -> Self {
        FsStore { name: name.to_string(), root: config.path.clone(), deadlines }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn err(&self, op: &'static str, key: &str, e: io::Error) -> Error {
        target_error(&self.name, op, key, kind_of(&e), format!("{e} (under `{}`)", self.root.display()))
    }

    pub async fn put(&self, key: &str, mut data: ByteStream) -> Result<u64> {
        let dest = self.path(key);
        let dir = dest.parent().map(Path::to_path_buf).unwrap_or_else(|| self.root.clone());
        let file_name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}{PARTIAL}{}", crate::layout::random_suffix()));
        let result = async {
            let mut file = self.create_in(&dir, &tmp).await.map_err(|e| self.err("put", key, e))?;
            let mut written = 0u64;
            while let Some(chunk) = data.next().await {
                let chunk = chunk.map_err(|e| {
                    target_error(&self.name, "put", key, FailureKind::Transient, format!("upload aborted: {e}"))
                })?;
                file.write_all(&chunk).await.map_err(|e| self.err("put", key, e))?;
                written += chunk.len() as u64;
            }
            file.flush().await.map_err(|e| self.err("put", key, e))?;
            file.sync_all().await.map_err(|e| self.err("put", key, e))?;
            drop(file);
            tokio::fs::rename(&tmp, &dest).await.map_err(|e| self.err("put", key, e))?;
            sync_dir(&dir).await.map_err(|e| self.err("put", key, e))?;
            Ok(written)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Create `tmp` in `dir`, making `dir` first. Another process deleting the last file of `dir`
    /// removes the emptied directory (see `delete`), possibly between the two steps: then again.
    async fn create_in(&self, dir: &Path, tmp: &Path) -> io::Result<tokio::fs::File> {
        let mut tries = 0;
        loop {
            tokio::fs::create_dir_all(dir).await?;
            match tokio::fs::File::create(tmp).await {
                Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 10 => tries += 1,
                r => return r,
            }
        }
    }

    pub async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let missing = |e: io::Error| {
            target_error(
                &self.name,
                "get",
                key,
                FailureKind::NotFound,
                format!("{e} (under `{}`)", self.root.display()),
            )
        };
        let mut file = tokio::fs::File::open(self.path(key))
            .await
            .map_err(|e| if is_missing(&e) { missing(e) } else { self.err("get", key, e) })?;
        // a directory opens fine on Unix, but it is only the prefix of other keys, not an object
        if !file.metadata().await.map_err(|e| self.err("get", key, e))?.is_file() {
            return Err(missing(io::Error::new(io::ErrorKind::NotFound, "a directory, not an object")));
        }
        let reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = match range {
            Some(r) => {
                file.seek(io::SeekFrom::Start(r.start)).await.map_err(|e| self.err("get", key, e))?;
                Box::new(file.take(r.end.saturating_sub(r.start)))
            }
            None => Box::new(file),
        };
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024)))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let found = self.walk(prefix, |name| !name.contains(PARTIAL)).await?;
        Ok(found.into_iter().map(|(key, m)| ObjectMeta { key, size: m.len() }).collect())
    }

    /// See [`super::Target::temporaries`].
    pub async fn temporaries(&self, prefix: &str) -> Result<Vec<super::Temporary>> {
        let found = self.walk(prefix, super::is_temporary_name).await?;
        Ok(found
            .into_iter()
            .map(|(key, m)| super::Temporary {
                key,
                size: m.len(),
                modified: m.modified().ok().and_then(|t| jiff::Timestamp::try_from(t).ok()),
            })
            .collect())
    }

    /// Every file whose key starts with `prefix` and whose file name `want`s, with its metadata.
    async fn walk(&self, prefix: &str, want: fn(&str) -> bool) -> Result<Vec<(String, std::fs::Metadata)>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            // start at the deepest directory the prefix names, to avoid walking the whole tree
            let start_rel = match prefix.rfind('/') {
                Some(i) => &prefix[..i],
                None => "",
            };
            // `..`, `.` or absolute: no valid key starts so, and the walk must not leave the root
            if Path::new(start_rel).components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                return Ok(out);
            }
            let start = root.join(start_rel);
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if is_missing(&e) => continue,
                    Err(e) => return Err(target_error(&name, "list", &prefix, kind_of(&e), e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| target_error(&name, "list", &prefix, kind_of(&e), e))?;
                    let path = entry.path();
                    let ft = entry.file_type().map_err(|e| target_error(&name, "list", &prefix, kind_of(&e), e))?;
                    if ft.is_dir() {
                        stack.push(path);
                        continue;
                    }
                    let file_name = entry.file_name().to_string_lossy().into_owned();
                    if !want(&file_name) {
                        continue;
                    }
                    let Ok(rel) = path.strip_prefix(&root) else {
                        continue;
                    };
                    let key = rel.to_string_lossy().replace('\\', "/");
                    if key.starts_with(&prefix)
                        && let Ok(m) = entry.metadata()
                    {
                        out.push((key, m));
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| target_error(&self.name, "list", "", FailureKind::Transient, e))?
    }

    pub async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        match tokio::fs::metadata(self.path(key)).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta { key: key.to_string(), size: m.len() })),
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(self.err("stat", key, e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            // missing, or a directory (only the prefix of other keys): no object to delete
            Err(e) if is_missing(&e) || e.kind() == io::ErrorKind::IsADirectory => return Ok(()),
            Err(e) => return Err(self.err("delete", key, e)),
        }
        // tidy empty date directories, never the root itself
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) || tokio::fs::remove_dir(&d).await.is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }
}

impl FsStore {
    /// See [`super::Target::clock`]: the modification time the file system gives a new file.
    pub async fn clock(&self) -> Result<jiff::Timestamp> {
        let key = format!("{}-{}", super::CLOCK_PROBE, crate::layout::random_suffix());
        let (root, path) = (self.root.clone(), self.path(&key));
        let res = tokio::task::spawn_blocking(move || -> io::Result<std::time::SystemTime> {
            std::fs::create_dir_all(&root)?;
            std::fs::write(&path, b"drctl clock probe\n")?;
            let mtime = file_mtime(&path);
            std::fs::remove_file(&path)?;
            mtime
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r)
        .map_err(|e| self.err("read the clock", &key, e))?;
        jiff::Timestamp::try_from(res)
            .map_err(|e| target_error(&self.name, "read the clock", &key, FailureKind::Permanent, e))
    }
}

/// The modification time of `path` as the kernel reports it: a plain `stat(2)` system call, so that
/// nothing in this process that shifts its own idea of time (libfaketime) shifts the answer.
fn file_mtime(path: &Path) -> io::Result<std::time::SystemTime> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a properly sized, writable stat buffer
    let rc = unsafe { libc::syscall(libc::SYS_newfstatat, libc::AT_FDCWD, c.as_ptr(), &mut st as *mut libc::stat, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let secs = u64::try_from(st.st_mtime).map_err(io::Error::other)?;
    Ok(std::time::UNIX_EPOCH + std::time::Duration::new(secs, st.st_mtime_nsec.clamp(0, 999_999_999) as u32))
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all()).await.map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two writers share a directory; each deletes its file right after writing it, and a delete
    /// that empties the directory removes it. Every put must land whatever the interleaving (it
    /// failed with "No such file or directory" when the directory went between making it and
    /// creating the file in it).
    #[test]
    fn puts_survive_a_concurrent_delete_removing_their_directory() {
        let root = tempfile::tempdir().unwrap();
        let store =
            std::sync::Arc::new(FsStore::new("t", &FsTarget { path: root.path().to_path_buf() }, Deadlines::default()));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let writers: Vec<_> = ["x", "y"]
                .into_iter()
                .map(|name| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        for i in 0..400 {
                            let key = format!("a/b/{name}{i}");
                            let data: ByteStream =
                                Box::pin(futures::stream::once(async { Ok(bytes::Bytes::from_static(b"marker")) }));
                            store.put(&key, data).await.unwrap_or_else(|e| panic!("put {key}: {e}"));
                            store.delete(&key).await.unwrap();
                        }
                    })
                })
                .collect();
            for w in writers {
                w.await.unwrap();
            }
        });
    }
}
