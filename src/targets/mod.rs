//! Where backups are stored. One module per kind, one closed enum [`Target`] over them.
//!
//! # Contract (every kind, checked by `tests/target_conformance.rs`)
//!
//! * `put` MUST be atomic: no reader (`get`, `list`, `stat`) ever sees a partial object. The data
//!   stream ends either with `None` (commit) or with an `Err` item (abort); an aborted or failed
//!   `put` leaves nothing visible behind (temporary files removed, multipart uploads aborted).
//! * `put` MUST apply backpressure: it consumes the stream no faster than it stores it, and holds
//!   at most a bounded amount (one S3 part plus one in flight) in memory.
//! * `put` MUST NOT return `Ok` before the object is durable (fsync + rename + directory fsync;
//!   multipart complete).
//! * `get` with a range returns exactly those bytes; `get`/`stat` of a missing key is
//!   [`FailureKind::NotFound`] / `None`.
//! * `list(prefix)` returns every committed object whose key starts with `prefix`, in no order.
//! * `delete` of a missing key succeeds (idempotent).
//! * Errors are classified (not found, transient, permanent) so callers know if a retry can help.
//! * Every network operation is bounded by the target's deadlines (`timeouts`: connect, idle,
//!   request; see [`crate::targets::TargetTimeouts`]): a target that accepts TCP and never
//!   answers fails the operation (transient) instead of hanging; [`Target::probe`] is bounded as
//!   a whole. A streamed `put` that accepts nothing for `idle` is dropped by the fan-out.
//! * `temporaries(prefix)` lists what unfinished uploads left (fs, SFTP, WebDAV: only names that
//!   are exactly drctl's `.NAME.partial-XXXXXX`), with their modification time, for prune.
//!
//! Keys are `/`-separated relative paths; `..` and absolute keys are rejected.

pub(crate) mod config;
pub use config::{Deadlines, KeepPolicy, TargetCommon, TargetConfig, TargetKind, TargetSettings, TargetTimeouts};

pub mod fs;
mod hints;
mod retry;
pub mod s3;
pub mod sftp;
pub mod webdav;

use std::io;
use std::ops::Range;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

use crate::error::FailureKind;
use crate::{Error, Result};

pub use fs::FsStore;
pub use hints::{cause_hint, hint};
pub use s3::S3Store;
pub use sftp::SftpStore;
pub use webdav::WebdavStore;

/// A stream of bytes; an `Err` item ends it with a failure.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What `list` and `stat` return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// An unfinished upload (S3 multipart) that holds storage but is not an object yet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PendingUpload {
    /// The key the upload would create, relative to the target's root.
    pub key: String,
    pub upload_id: String,
    /// When the store says the upload started (`None` if it does not say).
    pub initiated: Option<jiff::Timestamp>,
}

/// A temporary object of an upload that never finished (`.NAME.partial-XXXXXX` next to the key
/// it was for): what a killed run or a cut connection leaves on fs, SFTP and WebDAV.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Temporary {
    /// Its own key (with the temporary name), relative to the target's root.
    pub key: String,
    pub size: u64,
    /// Its modification time as the store reports it (`None` if it does not say).
    pub modified: Option<jiff::Timestamp>,
}

/// Whether `name` (a file name, no `/`) is exactly a temporary name drctl's uploads use:
/// `.` + the final file name + `.partial-` + six lowercase hex digits. Nothing else under the
/// root ever is (`notes.partial.txt`, `.partial`, `.x.partial-tmp` are not).
pub fn is_temporary_name(name: &str) -> bool {
    let Some((head, suffix)) = name.rsplit_once(".partial-") else { return false };
    head.len() > 1
        && head.starts_with('.')
        && !name.contains('/')
        && suffix.len() == 6
        && suffix.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A configured target, connected.
pub enum Target {
    Fs(FsStore),
    S3(S3Store),
    Sftp(SftpStore),
    Webdav(WebdavStore),
}

impl Target {
    /// Build the client for a configured target (no network I/O yet).
    ///
    /// # Errors
    /// When a credential file cannot be read.
    pub fn open(name: &str, config: &TargetConfig) -> Result<Target> {
        Ok(match &config.kind {
            TargetKind::Fs(c) => Target::Fs(FsStore::new(name, c, config.deadlines())),
            TargetKind::S3(c) => Target::S3(S3Store::new(name, c, config.deadlines())?),
            TargetKind::Sftp(c) => Target::Sftp(SftpStore::new(name, c, config.deadlines())),
            TargetKind::Webdav(c) => Target::Webdav(WebdavStore::new(name, c, config.deadlines())?),
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Target::Fs(t) => t.name(),
            Target::S3(t) => t.name(),
            Target::Sftp(t) => t.name(),
            Target::Webdav(t) => t.name(),
        }
    }

    /// The target's deadlines (`timeouts` in its config): the fan-out drops a target that
    /// accepts no data for `idle`.
    pub fn deadlines(&self) -> Deadlines {
        match self {
            Target::Fs(t) => t.deadlines,
            Target::S3(t) => t.deadlines,
            Target::Sftp(t) => t.deadlines(),
            Target::Webdav(t) => t.deadlines(),
        }
    }

    /// Store `data` under `key` atomically; returns the number of bytes stored.
    pub async fn put(&self, key: &str, data: ByteStream) -> Result<u64> {
        check_key(self.name(), key)?;
        match self {
            Target::Fs(t) => t.put(key, data).await,
            Target::S3(t) => t.put(key, data).await,
            Target::Sftp(t) => t.put(key, data).await,
            Target::Webdav(t) => t.put(key, data).await,
        }
    }

    /// Store a small in-memory object (manifests, records). Unlike a streamed `put`, its body can
    /// be sent again: on SFTP a transient failure of the whole upload (the WRITEs themselves, not
    /// only the rename) is retried, each try with a fresh temporary name. (WebDAV does the same
    /// for any small body in `put`; S3's client retries its requests itself; fs has nothing to
    /// retry.)
    pub async fn put_bytes(&self, key: &str, data: Bytes) -> Result<u64> {
        let once = |data: Bytes| self.put(key, Box::pin(futures::stream::iter([Ok(data)])));
        match self {
            // WebDAV retries small bodies in `put` itself
            Target::Fs(_) | Target::S3(_) | Target::Webdav(_) => once(data).await,
            Target::Sftp(_) => retry::retry_in(self.name(), "put", key, |_| once(data.clone())).await,
        }
    }

    /// Read an object, or the byte `range` of it.
    pub async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        check_key(self.name(), key)?;
        match self {
            Target::Fs(t) => t.get(key, range).await,
            Target::S3(t) => t.get(key, range).await,
            Target::Sftp(t) => t.get(key, range).await,
            Target::Webdav(t) => t.get(key, range).await,
        }
    }

    /// Read a whole small object into memory (manifests only: they are a few KiB).
    pub async fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        use futures::TryStreamExt;
        let mut s = self.get(key, None).await?;
        let mut out = Vec::new();
        while let Some(chunk) = s.try_next().await.map_err(|e| self.error("get", key, FailureKind::Transient, e))? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        match self {
            Target::Fs(t) => t.list(prefix).await,
            Target::S3(t) => t.list(prefix).await,
            Target::Sftp(t) => t.list(prefix).await,
            Target::Webdav(t) => t.list(prefix).await,
        }
    }

    pub async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        check_key(self.name(), key)?;
        match self {
            Target::Fs(t) => t.stat(key).await,
            Target::S3(t) => t.stat(key).await,
            Target::Sftp(t) => t.stat(key).await,
            Target::Webdav(t) => t.stat(key).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        check_key(self.name(), key)?;
        match self {
            Target::Fs(t) => t.delete(key).await,
            Target::S3(t) => t.delete(key).await,
            Target::Sftp(t) => t.delete(key).await,
            Target::Webdav(t) => t.delete(key).await,
        }
    }

    /// Until when `key` is under a retention lock (S3 Object Lock) that forbids deleting it, as the
    /// store reports it (possibly in the past). `None` when it has no lock or the kind has none
    /// (fs, sftp, webdav). A missing key has no lock.
    pub async fn locked_until(&self, key: &str) -> Result<Option<jiff::Timestamp>> {
        check_key(self.name(), key)?;
        match self {
            Target::Fs(_) => Ok(None),
            Target::S3(t) => t.locked_until(key).await,
            Target::Sftp(_) => Ok(None),
            Target::Webdav(_) => Ok(None),
        }
    }

    /// Until when an upload of the retention `class` made now would be locked (S3 Object Lock;
    /// [`crate::layout::retention_of`] gives a key's class); `None` when it would not be.
    pub fn retention(&self, class: crate::layout::Retention) -> Option<jiff::Timestamp> {
        match self {
            Target::Fs(_) | Target::Sftp(_) | Target::Webdav(_) => None,
            Target::S3(t) => t.retention(class),
        }
    }

    /// Extend the retention lock of the stored `key` to `until` (nothing on a target without
    /// Object Lock). A chunk repository extends the packs a new backup reuses.
    pub async fn extend_retention(&self, key: &str, until: jiff::Timestamp) -> Result<()> {
        check_key(self.name(), key)?;
        match self {
            Target::Fs(_) | Target::Sftp(_) | Target::Webdav(_) => Ok(()),
            Target::S3(t) => t.extend_retention(key, until).await,
        }
    }

    /// Unfinished uploads whose key starts with `prefix` (S3 multipart uploads; the other kinds
    /// have none that outlive a `put`: they clean up their temporary files themselves).
    pub async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        match self {
            Target::Fs(_) => Ok(vec![]),
            Target::S3(t) => t.pending_uploads(prefix).await,
            Target::Sftp(_) => Ok(vec![]),
            Target::Webdav(_) => Ok(vec![]),
        }
    }

    /// The temporaries of unfinished uploads whose key starts with `prefix` (see [`Temporary`];
    /// `list` never shows them). S3 has none: its unfinished uploads are
    /// [`Target::pending_uploads`]. Remove one with [`Target::delete`] of its key.
    pub async fn temporaries(&self, prefix: &str) -> Result<Vec<Temporary>> {
        match self {
            Target::Fs(t) => t.temporaries(prefix).await,
            Target::S3(_) => Ok(vec![]),
            Target::Sftp(t) => t.temporaries(prefix).await,
            Target::Webdav(t) => t.temporaries(prefix).await,
        }
    }

    /// Abort an unfinished upload found by [`Target::pending_uploads`], freeing its storage.
    /// Aborting one that is already gone succeeds.
    pub async fn abort_upload(&self, upload: &PendingUpload) -> Result<()> {
        match self {
            Target::Fs(_) => Ok(()),
            Target::S3(t) => t.abort_upload(upload).await,
            Target::Sftp(_) => Ok(()),
            Target::Webdav(_) => Ok(()),
        }
    }

    /// Prove the target is reachable and writable: write, read back and delete a probe object.
    /// Bounded: a target that does not finish within [`Target::probe_deadline`] fails the probe
    /// (a stalled endpoint must not keep `drctl check` waiting).
    pub async fn probe(&self) -> Result<()> {
        let limit = self.probe_deadline();
        match tokio::time::timeout(limit, self.probe_unbounded()).await {
            Ok(r) => r,
            Err(_) => Err(self.error(
                "probe",
                ".drctl-probe/",
                FailureKind::Transient,
                format!(
                    "no answer within {} (the target accepts connections but does not answer)",
                    humantime::format_duration(limit)
                ),
            )),
        }
    }

    /// How long a `put` may accept nothing before the fan-out drops it as stalled: `idle`; for
    /// S3 `idle + request`, because it stops reading while a whole part is in flight (a part
    /// on a slow but working line may take longer than `idle`; a stalled part fails by itself
    /// within `request`).
    pub fn accept_deadline(&self) -> std::time::Duration {
        let d = self.deadlines();
        match self {
            Target::S3(_) => d.idle + d.request,
            Target::Fs(_) | Target::Sftp(_) | Target::Webdav(_) => d.idle,
        }
    }

    /// How long [`Target::probe`] may take: connecting, plus `idle` twice for its three tiny
    /// requests (a healthy target answers each well within `idle`), at most `request` in all.
    pub fn probe_deadline(&self) -> std::time::Duration {
        let d = self.deadlines();
        d.connect + d.request.min(d.idle.saturating_mul(2))
    }

    async fn probe_unbounded(&self) -> Result<()> {
        let key = format!(".drctl-probe/{}", crate::layout::random_suffix());
        let body = Bytes::from_static(b"drctl write probe\n");
        self.put_bytes(&key, body.clone()).await?;
        let back = self.get_bytes(&key).await;
        let deleted = self.delete(&key).await;
        if back? != body {
            return Err(self.error("probe", &key, FailureKind::Permanent, "read back different bytes than written"));
        }
        deleted
    }

    /// The target's own clock, now, to the second: the `Date` header of an answer (S3, WebDAV), or
    /// the modification time of a probe object written under the root and removed again (fs,
    /// SFTP; the file system or server sets it). Prune compares it with this host's clock before
    /// it deletes anything, because it ages incomplete uploads by this host's clock.
    pub async fn clock(&self) -> Result<jiff::Timestamp> {
        match self {
            Target::Fs(t) => t.clock().await,
            Target::S3(t) => t.clock().await,
            Target::Sftp(t) => t.clock().await,
            Target::Webdav(t) => t.clock().await,
        }
    }

    fn error(&self, op: &'static str, key: &str, kind: FailureKind, message: impl std::fmt::Display) -> Error {
        target_error(self.name(), op, key, kind, message)
    }
}

/// Key prefix of the probe objects [`Target::clock`] writes (and removes) on fs and SFTP.
pub(crate) const CLOCK_PROBE: &str = ".drctl-clock-probe";

/// An HTTP `Date` header (RFC 9110 IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`).
pub(crate) fn parse_http_date(value: &str) -> Option<jiff::Timestamp> {
    let dt = jiff::civil::DateTime::strptime("%a, %d %b %Y %H:%M:%S GMT", value.trim()).ok()?;
    dt.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
}

pub(crate) fn target_error(
    target: &str,
    op: &'static str,
    key: &str,
    kind: FailureKind,
    message: impl std::fmt::Display,
) -> Error {
    let message = crate::redact::scrub(&message.to_string());
    Error::Target {
        target: target.to_string(),
        op,
        key: key.to_string(),
        kind,
        hint: hint(target, kind, &message),
        message,
    }
}

fn check_key(target: &str, key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        || key.contains('\\')
        || key.contains('\0');
    if bad {
        return Err(target_error(
            target,
            "validate key",
            key,
            FailureKind::Permanent,
            "keys are relative `/`-separated paths without `.`/`..`",
        ));
    }
    Ok(())
}

/// Runs a cleanup (deleting an upload's temporary object) when an upload's future is dropped before
/// it finished, e.g. a cancelled run: dropped futures cannot await, so the cleanup goes to a task of
/// its own. [`CleanupOnDrop::disarm`] once the upload has cleaned up (or committed) by itself.
pub(crate) struct CleanupOnDrop(Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>);

impl CleanupOnDrop {
    pub(crate) fn new(cleanup: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        CleanupOnDrop(Some(Box::pin(cleanup)))
    }

    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CleanupOnDrop {
    fn drop(&mut self) {
        if let (Some(cleanup), Ok(handle)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            handle.spawn(cleanup);
        }
    }
}

/// Where a listing of `prefix` starts: the deepest directory the prefix names (`a/b/c` → `a/b`,
/// `abc` → the root). `None` for a prefix that would escape the root (`..`, `.`, absolute, `//`):
/// such a listing finds nothing.
pub(crate) fn walk_start(prefix: &str) -> Option<&str> {
    let start = prefix.rfind('/').map_or("", |i| &prefix[..i]);
    let escapes = start.split('/').any(|c| c == ".." || c == ".") || start.starts_with('/') || start.contains("//");
    (!escapes).then_some(start)
}

/// Free space where `config`'s target can tell: the available bytes of the filesystem under a
/// local path (statvfs, as `df` shows them to an unprivileged user); `None` for remote stores and
/// when the path cannot be examined.
pub fn free_bytes(config: &TargetConfig) -> Option<u64> {
    let path = config.kind.settings().local_path()?;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a zeroed struct the call fills
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    #[test]
    fn walk_start_table() {
        for (prefix, start) in [
            ("", Some("")),
            ("pg", Some("")),
            ("pg/", Some("pg")),
            ("pg/2026/11/2", Some("pg/2026/11")),
            ("../x/", None),
            ("pg/./", None),
            ("/abs/", None),
            ("pg//x/", None),
        ] {
            assert_eq!(super::walk_start(prefix), start, "{prefix}");
        }
    }

    #[test]
    fn temporary_names_are_exactly_drctls() {
        let tmp = format!(".20261205T001002Z-3bf6b9.data.tar.zst.age.partial-{}", crate::layout::random_suffix());
        assert!(super::is_temporary_name(&tmp), "{tmp}");
        assert!(super::is_temporary_name(".m.manifest.json.partial-0a9f3c"));
        for foreign in [
            "notes.partial.txt",
            ".partial",
            ".partial-abcdef",
            "x.partial-abcdef",
            ".x.partial-abcde",
            ".x.partial-abcdefa",
            ".x.partial-ABCDEF",
            ".x.partial-tmp123",
            ".x.partial-abcdef.bak",
            "20261205T001002Z-3bf6b9.data.tar.zst.age",
        ] {
            assert!(!super::is_temporary_name(foreign), "{foreign}");
        }
    }

    #[test]
    fn rejects_escaping_keys() {
        for k in ["", "/abs", "a/../b", "a//b", "..", "a/./b"] {
            assert!(super::check_key("t", k).is_err(), "{k}");
        }
        assert!(super::check_key("t", "pg/2026/11/23/x.manifest.json").is_ok());
    }

    #[test]
    fn http_dates() {
        let t = super::parse_http_date("Fri, 04 Dec 2026 23:33:34 GMT").unwrap();
        assert_eq!(t.to_string(), "2026-12-04T23:33:34Z");
        assert!(super::parse_http_date("yesterday").is_none());
        assert!(super::parse_http_date("").is_none());
    }
}
