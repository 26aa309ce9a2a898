//! `type = "sftp"`: a Hetzner Storage Box (or any OpenSSH server) over SFTP.
//!
//! The transport is the system `ssh` client (see [`protocol`]): key authentication only, the host
//! key checked against the configured `known_hosts_file` (an unknown or changed key is a
//! permanent error naming that file, never trust-on-first-use), no ssh config files read.
//! Paths are relative to the account's home (`root` below it).
//!
//! * **Connections.** At most `max_connections` ssh processes per opened target (a Storage Box
//!   allows about 10 per account). Requests are multiplexed, so operations share connections; a
//!   new one is opened only when every open one is busy. They close when the target is dropped.
//! * **Atomic put.** Data streams into `.NAME.partial-XXXXXX` in the final directory (pipelined
//!   WRITEs, at most [`IN_FLIGHT`] bytes unacknowledged), is flushed to disk (`fsync@openssh.com`
//!   where offered), closed, and renamed over the final name with `posix-rename@openssh.com`
//!   (atomic replace). Servers without that extension get remove-then-rename (a short window in
//!   which an overwritten key is missing; OpenSSH and Storage Boxes have the extension). A failed
//!   or aborted upload deletes its temporary file; if the future is dropped mid-way a guard
//!   deletes it in the background. `list` never shows `.partial-` names.
//! * **Retries.** Connecting, opening, `stat`, `list`, `delete` and the final rename are retried
//!   on transient errors with backoff and jitter ([`super::retry`]); the streamed body is not
//!   (it can be read only once): a connection lost mid-upload fails the put (transient).
//! * **Durability.** `put` returns after the fsync and the rename; SFTP has no directory fsync.

mod config;
pub use config::SftpTarget;

mod protocol;

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::ops::{Deref, Range};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};

use self::protocol::{
    Attrs, FX_NO_SUCH_FILE, FX_OP_UNSUPPORTED, Handle, OPEN_CREAT, OPEN_READ, OPEN_TRUNC, OPEN_WRITE, Pending, Session,
    SftpError, SshParams, expect_ok, read_reply,
};
use super::retry;
use super::{ByteStream, ObjectMeta, target_error};
use crate::error::FailureKind;
use crate::targets::Deadlines;
use crate::{Error, Result};

const PARTIAL: &str = ".partial-";
/// Unacknowledged bytes per transfer (WRITEs of a put, READs of a get).
const IN_FLIGHT: usize = 2 << 20;
/// Directories read at once by `list`.
const LIST_PARALLEL: usize = 8;

pub struct SftpStore {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    params: SshParams,
    /// Below the home; empty for the home itself. No trailing `/`.
    root: String,
    max_connections: usize,
    pool: tokio::sync::Mutex<Vec<Arc<Session>>>,
}

/// A session in use by one operation.
struct Lease(Arc<Session>);

impl Lease {
    fn new(s: Arc<Session>) -> Lease {
        s.active.fetch_add(1, Ordering::SeqCst);
        Lease(s)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Deref for Lease {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.0
    }
}

fn no_such_file(message: &str) -> SftpError {
    SftpError::Status { code: FX_NO_SUCH_FILE, message: message.into() }
}

impl SftpStore {
    pub fn new(name: &str, c: &SftpTarget, deadlines: Deadlines) -> Self {
        let root = c.root.as_deref().unwrap_or("").trim_end_matches('/');
        let root = if root == "." { "" } else { root };
        SftpStore {
            inner: Arc::new(Inner {
                name: name.to_string(),
                params: SshParams {
                    host: c.host.clone(),
                    port: c.port,
                    user: c.user.clone(),
                    key_file: c.key_file.clone(),
                    known_hosts_file: c.known_hosts_file.clone(),
                    deadlines,
                },
                root: root.to_string(),
                max_connections: c.max_connections.max(1) as usize,
                pool: tokio::sync::Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn deadlines(&self) -> Deadlines {
        self.inner.params.deadlines
    }

    pub async fn put(&self, key: &str, mut data: ByteStream) -> Result<u64> {
        let inner = &self.inner;
        let path = inner.remote(key);
        let (dir, file) = match path.rsplit_once('/') {
            Some((d, f)) => (Some(d.to_string()), f.to_string()),
            None => (None, path.clone()),
        };
        let in_dir = dir.as_ref().map(|d| format!("{d}/")).unwrap_or_default();
        let tmp = format!("{in_dir}.{file}{PARTIAL}{}", crate::layout::random_suffix());
        // nothing of the stream is consumed yet: opening (and creating directories) may be retried
        let (tmp_ref, dir_ref, path_ref) = (&tmp, &dir, &path);
        let (session, handle) = inner
            .run("put", key, move |s, _| async move {
                let flags = OPEN_WRITE | OPEN_CREAT | OPEN_TRUNC;
                // the directory may be missing, or removed again by another host's delete that
                // emptied it (see `tidy`) between making it and opening the file: make it again
                let mut tries = 0;
                let h = loop {
                    match s.open(tmp_ref, flags).await {
                        Err(e) if e.is_status(FX_NO_SUCH_FILE) && dir_ref.is_some() && tries < 10 => {
                            tries += 1;
                            mkdirs(&s, dir_ref.as_deref().unwrap_or("")).await?;
                        }
                        other => break other?,
                    }
                };
                Ok((s, h))
            })
            .await?;
        let mut guard = super::CleanupOnDrop::new({
            let (inner, tmp) = (inner.clone(), tmp.clone());
            async move { inner.remove_tmp(&tmp).await }
        });

        let written = match self.upload(&session, &handle, key, &mut data).await {
            Ok(n) => n,
            Err(e) => {
                let _ = tokio::time::timeout(Duration::from_secs(10), session.close(&handle)).await;
                drop(session);
                inner.remove_tmp(&tmp).await;
                guard.disarm();
                return Err(e);
            }
        };
        drop(session);
        let committed = inner
            .run("put (rename into place)", key, move |s, attempt| {
                let (tmp, path) = (tmp_ref, path_ref);
                async move {
                    let r =
                        if s.ext.posix_rename { s.posix_rename(tmp, path).await } else { replace(&s, tmp, path).await };
                    match r {
                        // a repeated rename whose first try went through before the connection broke
                        Err(e) if attempt > 0 && e.is_status(FX_NO_SUCH_FILE) => match s.stat(path).await {
                            Ok(a) if a.size == Some(written) => Ok(()),
                            _ => Err(e),
                        },
                        r => r,
                    }
                }
            })
            .await;
        if committed.is_err() {
            inner.remove_tmp(&tmp).await;
        }
        guard.disarm();
        committed.map(|()| written)
    }

    /// Stream `data` into the open temporary file, then flush and close it.
    async fn upload(&self, s: &Session, h: &Handle, key: &str, data: &mut ByteStream) -> Result<u64> {
        let inner = &self.inner;
        let err = |e: SftpError| inner.err("put", key, e);
        let piece_len = s.ext.write_len as usize;
        let mut offset = 0u64;
        let mut in_flight: VecDeque<(usize, Pending)> = VecDeque::new();
        let mut in_flight_bytes = 0usize;
        while let Some(chunk) = data.next().await {
            let mut rest = chunk.map_err(|e| {
                target_error(&inner.name, "put", key, FailureKind::Transient, format!("upload aborted: {e}"))
            })?;
            while !rest.is_empty() {
                let piece = rest.split_to(piece_len.min(rest.len()));
                in_flight.push_back((piece.len(), s.send_write(h, offset, &piece).await.map_err(err)?));
                offset += piece.len() as u64;
                in_flight_bytes += piece.len();
                while in_flight_bytes > IN_FLIGHT {
                    let Some((n, p)) = in_flight.pop_front() else { break };
                    expect_ok(s.wait(p).await.map_err(err)?).map_err(err)?;
                    in_flight_bytes -= n;
                }
            }
        }
        for (_, p) in in_flight {
            expect_ok(s.wait(p).await.map_err(err)?).map_err(err)?;
        }
        if s.ext.fsync {
            match s.fsync(h).await {
                Err(e) if e.is_status(FX_OP_UNSUPPORTED) => {}
                r => r.map_err(err)?,
            }
        }
        s.close(h).await.map_err(err)?;
        Ok(offset)
    }

    pub async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let path = self.inner.remote(key);
        let path = &path;
        let (session, handle, size) = self
            .inner
            .run("get", key, move |s, _| async move {
                let h = s.open(path, OPEN_READ).await?;
                match s.fstat(&h).await {
                    // a directory opens on Unix, but it is only the prefix of other keys
                    Ok(a) if a.is_dir() => {
                        let _ = s.close(&h).await;
                        Err(no_such_file("a directory, not an object"))
                    }
                    Ok(a) => Ok((s, h, a.size)),
                    Err(e) => {
                        let _ = s.close(&h).await;
                        Err(e)
                    }
                }
            })
            .await?;
        let size = size.unwrap_or(u64::MAX);
        let (start, end) = match range {
            Some(r) => (r.start, r.end.min(size)),
            None => (0, size),
        };
        let (tx, rx) = futures::channel::mpsc::channel::<io::Result<Bytes>>(4);
        let context = format!("target `{}`: get `{key}`", self.inner.name);
        tokio::spawn(read_into(session, handle, start, end, tx, context));
        Ok(Box::pin(rx))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let Some(start) = super::walk_start(prefix) else { return Ok(Vec::new()) };
        let inner = &self.inner;
        let found =
            inner
                .run("list", prefix, move |s, _| async move {
                    inner.walk(&s, start, prefix, |n| !n.contains(PARTIAL)).await
                })
                .await?;
        Ok(found.into_iter().map(|(key, a)| ObjectMeta { key, size: a.size.unwrap_or(0) }).collect())
    }

    /// See [`super::Target::temporaries`].
    pub async fn temporaries(&self, prefix: &str) -> Result<Vec<super::Temporary>> {
        let Some(start) = super::walk_start(prefix) else { return Ok(Vec::new()) };
        let inner = &self.inner;
        let found = inner
            .run("list temporaries", prefix, move |s, _| async move {
                inner.walk(&s, start, prefix, super::is_temporary_name).await
            })
            .await?;
        Ok(found
            .into_iter()
            .map(|(key, a)| super::Temporary {
                key,
                size: a.size.unwrap_or(0),
                modified: a.mtime.and_then(|t| jiff::Timestamp::from_second(i64::from(t)).ok()),
            })
            .collect())
    }

    pub async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = &self.inner.remote(key);
        self.inner
            .run("stat", key, move |s, _| async move {
                match s.stat(path).await {
                    Ok(a) if a.is_dir() => Ok(None),
                    Ok(a) => Ok(Some(ObjectMeta { key: key.to_string(), size: a.size.unwrap_or(0) })),
                    Err(e) if e.is_status(FX_NO_SUCH_FILE) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let inner = &self.inner;
        let path = &inner.remote(key);
        inner
            .run("delete", key, move |s, _| async move {
                match s.remove(path).await {
                    Ok(()) => {
                        inner.tidy(&s, key).await;
                        Ok(())
                    }
                    Err(e) if e.is_status(FX_NO_SUCH_FILE) => Ok(()),
                    // a directory (only the prefix of other keys): no object to delete
                    Err(e @ SftpError::Status { .. }) => match s.stat(path).await {
                        Ok(a) if a.is_dir() => Ok(()),
                        _ => Err(e),
                    },
                    Err(e) => Err(e),
                }
            })
            .await
    }
}

impl SftpStore {
    /// See [`super::Target::clock`]: the modification time the server gives a new probe file.
    pub async fn clock(&self) -> Result<jiff::Timestamp> {
        let key = format!("{}-{}", super::CLOCK_PROBE, crate::layout::random_suffix());
        self.put(&key, Box::pin(futures::stream::iter([Ok(bytes::Bytes::from_static(b"drctl clock probe\n"))])))
            .await?;
        let path = &self.inner.remote(&key);
        let attrs = self.inner.run("read the clock", &key, move |s, _| async move { s.stat(path).await }).await;
        let deleted = self.delete(&key).await;
        let mtime = attrs?.mtime.ok_or_else(|| {
            target_error(
                &self.inner.name,
                "read the clock",
                &key,
                FailureKind::Permanent,
                "the server reports no modification time",
            )
        })?;
        deleted?;
        Ok(jiff::Timestamp::from_second(i64::from(mtime)).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
    }
}

impl Inner {
    fn remote(&self, key: &str) -> String {
        if self.root.is_empty() { key.to_string() } else { format!("{}/{key}", self.root) }
    }

    /// The directory `rel` (relative to the root; empty for the root itself).
    fn remote_dir(&self, rel: &str) -> String {
        match (self.root.is_empty(), rel.is_empty()) {
            (true, true) => ".".into(),
            (true, false) => rel.into(),
            (false, true) => self.root.clone(),
            (false, false) => format!("{}/{rel}", self.root),
        }
    }

    fn err(&self, op: &'static str, key: &str, e: SftpError) -> Error {
        let root = if self.root.is_empty() { "the home directory".to_string() } else { format!("`{}`", self.root) };
        target_error(&self.name, op, key, e.kind(), format!("{e} ({}, under {root})", self.params.destination()))
    }

    /// A session: an idle one, else a new one while under `max_connections`, else the least busy.
    async fn lease(&self) -> Result<Lease, SftpError> {
        let mut pool = self.pool.lock().await;
        pool.retain(|s| s.alive());
        let best = pool.iter().min_by_key(|s| s.active.load(Ordering::SeqCst)).cloned();
        if let Some(s) = &best
            && (s.active.load(Ordering::SeqCst) == 0 || pool.len() >= self.max_connections)
        {
            return Ok(Lease::new(s.clone()));
        }
        match Session::connect(&self.params).await {
            Ok(s) => {
                let s = Arc::new(s);
                pool.push(s.clone());
                Ok(Lease::new(s))
            }
            // e.g. the account's connection limit is reached: share a working connection
            Err(e) => match best {
                Some(s) if e.kind() == FailureKind::Transient => {
                    tracing::debug!(target = %self.name, error = %e, "no extra SFTP connection; sharing one");
                    Ok(Lease::new(s))
                }
                _ => Err(e),
            },
        }
    }

    /// Run `op` on a leased session, retrying transient failures (each try leases again, so a
    /// broken connection is replaced).
    async fn run<T, F, Fut>(&self, what: &'static str, key: &str, op: F) -> Result<T>
    where
        F: Fn(Lease, u32) -> Fut,
        Fut: Future<Output = Result<T, SftpError>>,
    {
        let op = &op;
        retry::retry_in(&self.name, what, key, |attempt| async move {
            let s = self.lease().await?;
            op(s, attempt).await
        })
        .await
        .map_err(|e| self.err(what, key, e))
    }

    /// Delete a temporary file of an upload that did not commit.
    async fn remove_tmp(&self, tmp: &str) {
        let r = retry::retry(|_| async move {
            let s = self.lease().await?;
            match s.remove(tmp).await {
                Err(e) if e.is_status(FX_NO_SUCH_FILE) => Ok(()),
                r => r,
            }
        })
        .await;
        if let Err(e) = r {
            tracing::warn!(target = %self.name, file = %tmp, error = %e,
                "could not delete the temporary file of a failed upload (it is never listed or restored); delete it by hand");
        }
    }

    /// Remove the now empty directories above a deleted key, never the root. RMDIR only removes
    /// empty directories, so a concurrent upload into one of them is safe (it recreates it).
    async fn tidy(&self, s: &Session, key: &str) {
        let mut rel = key;
        while let Some((parent, _)) = rel.rsplit_once('/') {
            if s.rmdir(&self.remote_dir(parent)).await.is_err() {
                break;
            }
            rel = parent;
        }
    }

    /// Every file below directory `start` (relative) whose key starts with `prefix` and whose
    /// name `want`s, with its attributes.
    async fn walk(
        &self,
        s: &Session,
        start: &str,
        prefix: &str,
        want: fn(&str) -> bool,
    ) -> Result<Vec<(String, Attrs)>, SftpError> {
        let mut out = Vec::new();
        let mut queue = vec![start.to_string()];
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < LIST_PARALLEL
                && let Some(rel) = queue.pop()
            {
                running.push(async move {
                    let entries = self.read_dir(s, &self.remote_dir(&rel)).await;
                    (rel, entries)
                });
            }
            let Some((rel, entries)) = running.next().await else { break };
            for (name, attrs) in entries?.unwrap_or_default() {
                if name == "." || name == ".." || name.contains('/') {
                    continue;
                }
                let child = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
                let attrs = match attrs.permissions {
                    Some(_) => attrs,
                    None => s.stat(&self.remote_dir(&child)).await.unwrap_or_default(),
                };
                if attrs.is_dir() {
                    // only directories that can hold keys with this prefix
                    let as_dir = format!("{child}/");
                    if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                        queue.push(child);
                    }
                } else if attrs.is_file() && want(&name) && child.starts_with(prefix) {
                    out.push((child, attrs));
                }
            }
        }
        Ok(out)
    }

    /// The entries of a directory; `None` when it does not exist (or is not a directory).
    async fn read_dir(&self, s: &Session, path: &str) -> Result<Option<Vec<(String, Attrs)>>, SftpError> {
        let h = match s.opendir(path).await {
            Ok(h) => h,
            Err(e) if e.is_status(FX_NO_SUCH_FILE) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        let result = async {
            while let Some(batch) = s.readdir(&h).await? {
                out.extend(batch);
            }
            Ok(())
        }
        .await;
        let _ = s.close(&h).await;
        result.map(|()| Some(out))
    }
}

/// `mkdir -p dir` (relative to the home, or absolute).
async fn mkdirs(s: &Session, dir: &str) -> Result<(), SftpError> {
    let mut path = String::new();
    for (i, part) in dir.split('/').enumerate() {
        if i > 0 {
            path.push('/');
        }
        path.push_str(part);
        if part.is_empty() {
            continue; // the leading `/` of an absolute root
        }
        if let Err(e) = s.mkdir(&path).await {
            // it exists already (maybe made by a concurrent upload): fine if it is a directory
            match s.stat(&path).await {
                Ok(a) if a.is_dir() => {}
                _ => return Err(e),
            }
        }
    }
    Ok(())
}

/// Replace `to` by `from` on a server without `posix-rename@openssh.com`, whose RENAME refuses
/// an existing target: remove it first (not atomic: `to` is missing for a moment).
async fn replace(s: &Session, from: &str, to: &str) -> Result<(), SftpError> {
    match s.rename(from, to).await {
        Err(e @ SftpError::Status { .. }) if !e.is_status(FX_NO_SUCH_FILE) => match s.stat(to).await {
            Ok(a) if !a.is_dir() => {
                s.remove(to).await?;
                s.rename(from, to).await
            }
            _ => Err(e),
        },
        r => r,
    }
}

/// Read `start..end` of an open file into `tx`, with up to [`IN_FLIGHT`] bytes of READs
/// pipelined; closes the file at the end (or when the reader goes away).
async fn read_into(
    s: Lease,
    h: Handle,
    start: u64,
    end: u64,
    mut tx: futures::channel::mpsc::Sender<io::Result<Bytes>>,
    context: String,
) {
    let len = u64::from(s.ext.read_len);
    let result: Result<(), SftpError> = async {
        let mut next = start;
        let mut queue: VecDeque<(u64, u32, Pending)> = VecDeque::new();
        let mut queued = 0u64;
        loop {
            while next < end && queued < IN_FLIGHT as u64 {
                let n = (end - next).min(len) as u32;
                queue.push_back((next, n, s.send_read(&h, next, n).await?));
                next += u64::from(n);
                queued += u64::from(n);
            }
            let Some((offset, n, p)) = queue.pop_front() else { break };
            queued -= u64::from(n);
            let Some(data) = read_reply(s.wait(p).await?)? else {
                break; // end of file: the object is shorter than its size said (or the size was unknown)
            };
            let got = data.len() as u32;
            if got == 0 || got > n {
                return Err(SftpError::Connection {
                    kind: FailureKind::Transient,
                    message: format!("the server answered a READ of {n} bytes with {got}"),
                });
            }
            if got < n {
                // a short read: ask for the rest before anything queued after it
                let rest = n - got;
                queue.push_front((
                    offset + u64::from(got),
                    rest,
                    s.send_read(&h, offset + u64::from(got), rest).await?,
                ));
                queued += u64::from(rest);
            }
            if tx.send(Ok(data)).await.is_err() {
                break; // the reader is gone
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let message = crate::redact::scrub(&format!("{context}: {e}"));
        let _ = tx.send(Err(io::Error::other(message))).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), s.close(&h)).await;
}
