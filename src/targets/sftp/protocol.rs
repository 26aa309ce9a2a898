//! A small SFTP version 3 client (draft-ietf-secsh-filexfer-02, what OpenSSH and a Storage Box
//! speak) over the system `ssh` binary: `ssh … -s HOST sftp`, packets on its stdin and stdout.
//!
//! One [`Session`] is one ssh process. Requests are multiplexed on it: a reader task hands each
//! reply to the request with the same id, so writes and reads are pipelined (many requests in
//! flight) and several operations can share one connection.
//!
//! ssh runs with `-F none` and every option on the command line, so neither `~/.ssh/config` nor
//! `/etc/ssh/ssh_config` changes how it authenticates: public key only (`key_file`), host key
//! checked strictly against `known_hosts_file` and never added to it, no agent, no control master,
//! no state on disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;

use crate::error::FailureKind;

const FXP_INIT: u8 = 1;
const FXP_VERSION: u8 = 2;
const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_READ: u8 = 5;
const FXP_WRITE: u8 = 6;
const FXP_FSTAT: u8 = 8;
const FXP_OPENDIR: u8 = 11;
const FXP_READDIR: u8 = 12;
const FXP_REMOVE: u8 = 13;
const FXP_MKDIR: u8 = 14;
const FXP_RMDIR: u8 = 15;
const FXP_STAT: u8 = 17;
const FXP_RENAME: u8 = 18;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXP_DATA: u8 = 103;
const FXP_NAME: u8 = 104;
const FXP_ATTRS: u8 = 105;
const FXP_EXTENDED: u8 = 200;
const FXP_EXTENDED_REPLY: u8 = 201;

pub(super) const FX_OK: u32 = 0;
pub(super) const FX_EOF: u32 = 1;
pub(super) const FX_NO_SUCH_FILE: u32 = 2;
pub(super) const FX_PERMISSION_DENIED: u32 = 3;
pub(super) const FX_FAILURE: u32 = 4;
const FX_NO_CONNECTION: u32 = 6;
const FX_CONNECTION_LOST: u32 = 7;
pub(super) const FX_OP_UNSUPPORTED: u32 = 8;

pub(super) const OPEN_READ: u32 = 0x01;
pub(super) const OPEN_WRITE: u32 = 0x02;
pub(super) const OPEN_CREAT: u32 = 0x08;
pub(super) const OPEN_TRUNC: u32 = 0x10;

const ATTR_SIZE: u32 = 0x1;
const ATTR_UIDGID: u32 = 0x2;
const ATTR_PERMISSIONS: u32 = 0x4;
const ATTR_ACMODTIME: u32 = 0x8;
const ATTR_EXTENDED: u32 = 0x8000_0000;

/// Read and write size when the server does not say (`limits@openssh.com`): every server takes it.
const DEFAULT_IO: u32 = 32 * 1024;
/// Never more per request, whatever the server allows.
const MAX_IO: u32 = 255 * 1024;
/// Longest reply accepted (OpenSSH's own limit is 256 KiB).
const MAX_PACKET: usize = 4 << 20;

/// What went wrong with one request.
#[derive(Debug, Clone)]
pub(super) enum SftpError {
    /// The server answered with a failure status (`SSH_FX_*`).
    Status { code: u32, message: String },
    /// The connection could not be made or broke down; `kind` says whether trying again helps.
    Connection { kind: FailureKind, message: String },
}

impl SftpError {
    pub(super) fn kind(&self) -> FailureKind {
        match self {
            SftpError::Status { code, .. } => match *code {
                FX_NO_SUCH_FILE => FailureKind::NotFound,
                FX_NO_CONNECTION | FX_CONNECTION_LOST => FailureKind::Transient,
                // permission denied, failure (disk full, quota, a directory in the way), bad
                // message, unsupported: the same request fails the same way again
                _ => FailureKind::Permanent,
            },
            SftpError::Connection { kind, .. } => *kind,
        }
    }

    pub(super) fn is_status(&self, code: u32) -> bool {
        matches!(self, SftpError::Status { code: c, .. } if *c == code)
    }

    fn lost(message: impl Into<String>) -> SftpError {
        SftpError::Connection { kind: FailureKind::Transient, message: message.into() }
    }

    fn malformed(what: &str) -> SftpError {
        SftpError::lost(format!("malformed SFTP reply ({what})"))
    }
}

impl std::fmt::Display for SftpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SftpError::Status { code, message } => {
                let name = match *code {
                    FX_EOF => "end of file",
                    FX_NO_SUCH_FILE => "no such file",
                    FX_PERMISSION_DENIED => "permission denied",
                    FX_FAILURE => "failure",
                    5 => "bad message",
                    FX_NO_CONNECTION => "no connection",
                    FX_CONNECTION_LOST => "connection lost",
                    FX_OP_UNSUPPORTED => "operation unsupported",
                    _ => "error",
                };
                if message.is_empty() || message.eq_ignore_ascii_case(name) {
                    write!(f, "SFTP server: {name} (status {code})")
                } else {
                    write!(f, "SFTP server: {name} (status {code}): {message}")
                }
            }
            SftpError::Connection { message, .. } => f.write_str(message),
        }
    }
}

impl super::super::retry::Classified for SftpError {
    fn kind(&self) -> FailureKind {
        SftpError::kind(self)
    }
}

/// How to reach the server.
#[derive(Debug, Clone)]
pub(super) struct SshParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub key_file: PathBuf,
    pub known_hosts_file: PathBuf,
    /// Connect (and handshake) deadline; `idle`: no answer to a request (or no keepalive reply)
    /// for that long kills the connection.
    pub deadlines: crate::targets::Deadlines,
}

impl SshParams {
    pub(super) fn destination(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// `[host]:port` as it appears in a known_hosts file.
    fn known_hosts_name(&self) -> String {
        if self.port == 22 { self.host.clone() } else { format!("[{}]:{}", self.host, self.port) }
    }

    fn command(&self) -> Result<Command, SftpError> {
        // ssh expands `%` tokens (and a leading `~`) in both file options; `"` would end the quoting
        let escape = |p: &Path| -> Result<String, SftpError> {
            let s = p.to_str().filter(|s| !s.contains('"')).ok_or_else(|| SftpError::Connection {
                kind: FailureKind::Permanent,
                message: format!("`{}`: ssh cannot take this path (use a plain UTF-8 path without `\"`)", p.display()),
            })?;
            Ok(s.replace('%', "%%"))
        };
        let mut c = Command::new("ssh");
        c.arg("-F").arg("none");
        for o in [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "GlobalKnownHostsFile=none",
            "UpdateHostKeys=no",
            "CheckHostIP=no",
            "IdentitiesOnly=yes",
            "IdentityAgent=none",
            "PreferredAuthentications=publickey",
            "PasswordAuthentication=no",
            "KbdInteractiveAuthentication=no",
            "ControlMaster=no",
            "ControlPath=none",
            "ForwardAgent=no",
            "ForwardX11=no",
            "ClearAllForwardings=yes",
            "RequestTTY=no",
            "LogLevel=ERROR",
        ] {
            c.arg("-o").arg(o);
        }
        // ssh gives up on the TCP connect and the SSH handshake after ConnectTimeout, and on a
        // server that stops answering keepalives after ServerAliveInterval × ServerAliveCountMax
        let d = self.deadlines;
        c.arg("-o").arg(format!("ConnectTimeout={}", d.connect.as_secs().max(1)));
        c.arg("-o").arg(format!("ServerAliveInterval={}", (d.idle.as_secs() / 3).max(1)));
        c.arg("-o").arg("ServerAliveCountMax=3");
        c.arg("-o").arg(format!("UserKnownHostsFile=\"{}\"", escape(&self.known_hosts_file)?));
        c.arg("-i").arg(escape(&self.key_file)?);
        c.arg("-l").arg(&self.user).arg("-p").arg(self.port.to_string());
        c.arg("-s").arg("--").arg(&self.host).arg("sftp");
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        // messages are matched below to classify failures
        c.env("LC_ALL", "C");
        Ok(c)
    }

    /// Turn what ssh printed before it gave up into an error that says what to fix.
    fn classify(&self, stderr: &str, exit: Option<std::process::ExitStatus>) -> SftpError {
        // without the `@@@…` banner lines of a changed host key
        let detail = stderr
            .split(['\r', '\n'])
            .map(|l| l.trim().trim_matches('@').trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let detail = if detail.is_empty() {
            match exit {
                Some(s) => format!("ssh exited ({s}) without a message"),
                None => "ssh ended the connection without a message".into(),
            }
        } else {
            format!("ssh: {detail}")
        };
        let low = stderr.to_ascii_lowercase();
        let has = |s: &str| low.contains(s);
        let (kind, advice) = if has("host key verification failed")
            || has("host key is known for")
            || has("remote host identification has changed")
            || has("host key for")
        {
            (
                FailureKind::Permanent,
                format!(
                    "the server's host key is not in known_hosts_file `{kh}` (or differs from it); drctl never trusts an \
                     unknown key. Get it with `ssh-keyscan -p {port} {host}`, compare its fingerprint (`ssh-keygen -lf`) \
                     with the one your provider publishes, and add the line for `{name}` to `{kh}`",
                    kh = self.known_hosts_file.display(),
                    port = self.port,
                    host = self.host,
                    name = self.known_hosts_name(),
                ),
            )
        } else if has("unprotected private key file") || has("bad permissions") {
            (
                FailureKind::Permanent,
                format!("key_file `{}` is readable by others: `chmod 600` it", self.key_file.display()),
            )
        } else if has("load key") || has("invalid format") || has("incorrect passphrase") || has("no such identity") {
            (
                FailureKind::Permanent,
                format!(
                    "key_file `{}` cannot be used: it must be an OpenSSH private key without a passphrase",
                    self.key_file.display()
                ),
            )
        } else if has("permission denied") || has("too many authentication failures") {
            (
                FailureKind::Permanent,
                format!(
                    "the server refused key_file `{key}` for user `{user}`: put `{key}.pub` into the account's \
                     .ssh/authorized_keys (Storage Box: `ssh-copy-id -p {port} -s {user}@{host}`), and check `user`",
                    key = self.key_file.display(),
                    user = self.user,
                    port = self.port,
                    host = self.host,
                ),
            )
        } else if has("could not resolve hostname") && !has("temporary failure") {
            (FailureKind::Permanent, format!("check `host` (`{}`)", self.host))
        } else if has("subsystem request failed") {
            (FailureKind::Permanent, format!("{} does not offer the SFTP subsystem", self.destination()))
        } else {
            // refused, timed out, reset, closed by the server (also when it has too many connections)
            (FailureKind::Transient, format!("is the server reachable at {}?", self.destination()))
        };
        SftpError::Connection { kind, message: format!("{detail} — {advice}") }
    }
}

/// What the server told us in its VERSION packet (and `limits@openssh.com`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Extensions {
    /// `posix-rename@openssh.com`: rename over an existing file, atomically.
    pub posix_rename: bool,
    /// `fsync@openssh.com`: flush a file to disk before it is closed.
    pub fsync: bool,
    /// Bytes per READ / WRITE request.
    pub read_len: u32,
    pub write_len: u32,
}

/// An open file or directory on the server.
#[derive(Debug, Clone)]
pub(super) struct Handle(Bytes);

/// The attributes drctl uses.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Attrs {
    pub size: Option<u64>,
    pub permissions: Option<u32>,
    /// Modification time, seconds since the epoch (the server's clock for a new file).
    pub mtime: Option<u32>,
}

impl Attrs {
    const S_IFMT: u32 = 0o170000;

    pub(super) fn is_dir(&self) -> bool {
        self.permissions.is_some_and(|p| p & Self::S_IFMT == 0o040000)
    }

    pub(super) fn is_file(&self) -> bool {
        self.permissions.is_some_and(|p| p & Self::S_IFMT == 0o100000)
    }
}

/// A reply, after its type and request id.
pub(super) struct Reply {
    typ: u8,
    body: Bytes,
}

/// A request on its way: await [`Session::wait`] with it.
pub(super) type Pending = oneshot::Receiver<Reply>;

#[derive(Default)]
struct State {
    pending: HashMap<u32, oneshot::Sender<Reply>>,
    /// Set once when the connection is gone; every later request fails with it.
    dead: Option<SftpError>,
}

struct Shared {
    state: Mutex<State>,
    /// The tail of ssh's stderr.
    stderr: Mutex<String>,
}

impl Shared {
    fn dead_error(&self) -> SftpError {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.dead.clone().unwrap_or_else(|| SftpError::lost("the SFTP connection closed"))
    }

    /// Mark the connection dead (the first reason wins) and fail every request in flight.
    fn kill(&self, reason: SftpError) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.dead.is_none() {
            st.dead = Some(reason);
        }
        st.pending.clear(); // dropping the senders wakes every waiter
    }
}

/// One ssh process speaking SFTP.
pub(super) struct Session {
    writer: tokio::sync::Mutex<Option<BufWriter<ChildStdin>>>,
    shared: Arc<Shared>,
    next_id: AtomicU32,
    pub ext: Extensions,
    /// Operations using this session now (the pool spreads work by it).
    pub active: AtomicUsize,
    /// Owns the ssh process: aborting it kills ssh (kill_on_drop).
    reader: tokio::task::JoinHandle<()>,
    /// How long a request may go unanswered (the target's `idle` deadline).
    idle: Duration,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Marks the session dead when a packet was only partly written (the future was cancelled):
/// the byte stream is out of step and nothing more can be sent on it.
struct WriteGuard<'a> {
    shared: &'a Shared,
    done: bool,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.kill(SftpError::lost("a request was cancelled half-written; the connection was dropped"));
        }
    }
}

impl Session {
    /// Start ssh, authenticate, and agree on SFTP version 3.
    pub(super) async fn connect(p: &SshParams) -> Result<Session, SftpError> {
        for (field, file) in [("key_file", &p.key_file), ("known_hosts_file", &p.known_hosts_file)] {
            if let Err(e) = std::fs::File::open(file) {
                return Err(SftpError::Connection {
                    kind: FailureKind::Permanent,
                    message: format!("{field} `{}` cannot be read: {e}", file.display()),
                });
            }
        }
        let mut child = p.command()?.spawn().map_err(|e| SftpError::Connection {
            kind: FailureKind::Permanent,
            message: format!("cannot start `ssh` ({e}): install the OpenSSH client (Debian: openssh-client)"),
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SftpError::lost("ssh started without pipes"));
        };
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), stderr: Mutex::new(String::new()) });
        let stderr_task = tokio::spawn(drain_stderr(stderr, shared.clone()));
        let mut writer = BufWriter::with_capacity(64 * 1024, stdin);
        let mut reader = BufReader::with_capacity(256 * 1024, stdout);

        let hello = async {
            let mut init = BytesMut::new();
            init.put_u32(5);
            init.put_u8(FXP_INIT);
            init.put_u32(3);
            writer.write_all(&init).await?;
            writer.flush().await?;
            read_packet(&mut reader).await
        };
        let handshake = p.deadlines.connect + p.deadlines.idle;
        let version = match tokio::time::timeout(handshake, hello).await {
            Ok(Ok(packet)) => packet,
            Ok(Err(_)) => return Err(finish(child, stderr_task, &shared, p).await),
            Err(_) => {
                let _ = child.start_kill();
                let e = finish(child, stderr_task, &shared, p).await;
                return Err(SftpError::Connection {
                    kind: FailureKind::Transient,
                    message: format!("no SFTP session after {}s: timed out ({e})", handshake.as_secs()),
                });
            }
        };
        let mut ext = Extensions { posix_rename: false, fsync: false, read_len: DEFAULT_IO, write_len: DEFAULT_IO };
        let mut limits = false;
        {
            let mut c = version;
            if c.first() != Some(&FXP_VERSION) {
                return Err(SftpError::malformed("expected VERSION"));
            }
            c.advance(1);
            let v = get_u32(&mut c)?;
            if v != 3 {
                return Err(SftpError::Connection {
                    kind: FailureKind::Permanent,
                    message: format!("the server speaks SFTP version {v}, drctl speaks 3"),
                });
            }
            while c.has_remaining() {
                let name = get_string(&mut c)?;
                let _data = get_string(&mut c)?;
                match &name[..] {
                    b"posix-rename@openssh.com" => ext.posix_rename = true,
                    b"fsync@openssh.com" => ext.fsync = true,
                    b"limits@openssh.com" => limits = true,
                    _ => {}
                }
            }
        }
        let session = Session {
            writer: tokio::sync::Mutex::new(Some(writer)),
            shared: shared.clone(),
            next_id: AtomicU32::new(1),
            ext,
            active: AtomicUsize::new(0),
            idle: p.deadlines.idle,
            reader: tokio::spawn(read_loop(reader, child, stderr_task, shared, p.clone())),
        };
        let session = if limits { session.fetch_limits().await? } else { session };
        let e = session.ext;
        tracing::debug!(destination = %p.destination(), posix_rename = e.posix_rename, fsync = e.fsync,
            read_len = e.read_len, write_len = e.write_len, "SFTP session open");
        Ok(session)
    }

    /// The connection still works (as far as we know).
    pub(super) fn alive(&self) -> bool {
        self.shared.state.lock().map(|s| s.dead.is_none()).unwrap_or(false)
    }

    async fn fetch_limits(mut self) -> Result<Session, SftpError> {
        let r = self.request(FXP_EXTENDED, &[&string(b"limits@openssh.com")]).await?;
        if r.typ == FXP_EXTENDED_REPLY {
            let mut c = r.body;
            let (_packet, read, write) = (get_u64(&mut c)?, get_u64(&mut c)?, get_u64(&mut c)?);
            let fit = |n: u64| if n == 0 { DEFAULT_IO } else { n.min(u64::from(MAX_IO)) as u32 };
            self.ext.read_len = fit(read);
            self.ext.write_len = fit(write);
        }
        Ok(self)
    }

    /// Send one request; its reply comes through [`Session::wait`].
    pub(super) async fn send(&self, typ: u8, parts: &[&[u8]]) -> Result<Pending, SftpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = &st.dead {
                return Err(e.clone());
            }
            st.pending.insert(id, tx);
        }
        let len = 5 + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut head = [0u8; 9];
        head[..4].copy_from_slice(&(len as u32).to_be_bytes());
        head[4] = typ;
        head[5..].copy_from_slice(&id.to_be_bytes());
        let mut w = self.writer.lock().await;
        let Some(out) = w.as_mut() else {
            return Err(self.shared.dead_error());
        };
        let mut guard = WriteGuard { shared: &self.shared, done: false };
        let idle = self.idle;
        let written = tokio::time::timeout(idle, async {
            out.write_all(&head).await?;
            for p in parts {
                out.write_all(p).await?;
            }
            out.flush().await
        })
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the server accepted nothing for {}s (timed out)", idle.as_secs()),
            ))
        });
        guard.done = true;
        if let Err(e) = written {
            *w = None; // close ssh's stdin: it exits, and the reader task records why
            self.shared.kill(SftpError::lost(format!("writing to ssh failed: {e}")));
            return Err(self.shared.dead_error());
        }
        Ok(rx)
    }

    /// The reply to a request; no answer within the `idle` deadline kills the connection (a
    /// stalled server must not hold an operation for ever) and fails every request on it.
    pub(super) async fn wait(&self, pending: Pending) -> Result<Reply, SftpError> {
        match tokio::time::timeout(self.idle, pending).await {
            Ok(r) => r.map_err(|_| self.shared.dead_error()),
            Err(_) => {
                self.shared.kill(SftpError::lost(format!(
                    "no answer within {}s (timed out): the connection was dropped",
                    self.idle.as_secs()
                )));
                self.reader.abort(); // ends ssh (kill_on_drop)
                Err(self.shared.dead_error())
            }
        }
    }

    async fn request(&self, typ: u8, parts: &[&[u8]]) -> Result<Reply, SftpError> {
        let p = self.send(typ, parts).await?;
        self.wait(p).await
    }

    async fn status_request(&self, typ: u8, parts: &[&[u8]]) -> Result<(), SftpError> {
        expect_ok(self.request(typ, parts).await?)
    }

    pub(super) async fn open(&self, path: &str, flags: u32) -> Result<Handle, SftpError> {
        let mut attrs = BytesMut::new();
        attrs.put_u32(flags);
        if flags & OPEN_CREAT != 0 {
            attrs.put_u32(ATTR_PERMISSIONS);
            attrs.put_u32(0o600);
        } else {
            attrs.put_u32(0);
        }
        handle_reply(self.request(FXP_OPEN, &[&string(path.as_bytes()), &attrs]).await?)
    }

    pub(super) async fn close(&self, h: &Handle) -> Result<(), SftpError> {
        self.status_request(FXP_CLOSE, &[&string(&h.0)]).await
    }

    /// Start a READ; [`read_reply`] turns its reply into data (`None` at end of file).
    pub(super) async fn send_read(&self, h: &Handle, offset: u64, len: u32) -> Result<Pending, SftpError> {
        let mut args = BytesMut::with_capacity(12);
        args.put_u64(offset);
        args.put_u32(len);
        self.send(FXP_READ, &[&string(&h.0), &args]).await
    }

    /// Start a WRITE; [`expect_ok`] checks its reply.
    pub(super) async fn send_write(&self, h: &Handle, offset: u64, data: &[u8]) -> Result<Pending, SftpError> {
        let mut args = BytesMut::with_capacity(12);
        args.put_u64(offset);
        args.put_u32(data.len() as u32);
        self.send(FXP_WRITE, &[&string(&h.0), &args, data]).await
    }

    pub(super) async fn fstat(&self, h: &Handle) -> Result<Attrs, SftpError> {
        attrs_reply(self.request(FXP_FSTAT, &[&string(&h.0)]).await?)
    }

    /// Attributes of `path`, following symbolic links.
    pub(super) async fn stat(&self, path: &str) -> Result<Attrs, SftpError> {
        attrs_reply(self.request(FXP_STAT, &[&string(path.as_bytes())]).await?)
    }

    pub(super) async fn opendir(&self, path: &str) -> Result<Handle, SftpError> {
        handle_reply(self.request(FXP_OPENDIR, &[&string(path.as_bytes())]).await?)
    }

    /// The next batch of entries (`None` once the directory is exhausted).
    pub(super) async fn readdir(&self, h: &Handle) -> Result<Option<Vec<(String, Attrs)>>, SftpError> {
        let r = self.request(FXP_READDIR, &[&string(&h.0)]).await?;
        match r.typ {
            FXP_NAME => {
                let mut c = r.body;
                let n = get_u32(&mut c)?;
                let mut out = Vec::with_capacity(n.min(1024) as usize);
                for _ in 0..n {
                    let name = get_string(&mut c)?;
                    let _long = get_string(&mut c)?;
                    let attrs = get_attrs(&mut c)?;
                    out.push((String::from_utf8_lossy(&name).into_owned(), attrs));
                }
                Ok(Some(out))
            }
            _ => match expect_ok(r) {
                Err(e) if e.is_status(FX_EOF) => Ok(None),
                Err(e) => Err(e),
                Ok(()) => Err(SftpError::malformed("READDIR answered OK")),
            },
        }
    }

    pub(super) async fn remove(&self, path: &str) -> Result<(), SftpError> {
        self.status_request(FXP_REMOVE, &[&string(path.as_bytes())]).await
    }

    pub(super) async fn mkdir(&self, path: &str) -> Result<(), SftpError> {
        let mut attrs = BytesMut::new();
        attrs.put_u32(ATTR_PERMISSIONS);
        attrs.put_u32(0o755);
        self.status_request(FXP_MKDIR, &[&string(path.as_bytes()), &attrs]).await
    }

    pub(super) async fn rmdir(&self, path: &str) -> Result<(), SftpError> {
        self.status_request(FXP_RMDIR, &[&string(path.as_bytes())]).await
    }

    /// Plain SFTP rename: fails when `to` exists (OpenSSH).
    pub(super) async fn rename(&self, from: &str, to: &str) -> Result<(), SftpError> {
        self.status_request(FXP_RENAME, &[&string(from.as_bytes()), &string(to.as_bytes())]).await
    }

    /// `posix-rename@openssh.com`: replaces `to` atomically.
    pub(super) async fn posix_rename(&self, from: &str, to: &str) -> Result<(), SftpError> {
        self.status_request(
            FXP_EXTENDED,
            &[&string(b"posix-rename@openssh.com"), &string(from.as_bytes()), &string(to.as_bytes())],
        )
        .await
    }

    /// `fsync@openssh.com`: the file's data is on the server's disk.
    pub(super) async fn fsync(&self, h: &Handle) -> Result<(), SftpError> {
        self.status_request(FXP_EXTENDED, &[&string(b"fsync@openssh.com"), &string(&h.0)]).await
    }
}

/// DATA of a READ, or `None` at end of file.
pub(super) fn read_reply(r: Reply) -> Result<Option<Bytes>, SftpError> {
    match r.typ {
        FXP_DATA => {
            let mut c = r.body;
            Ok(Some(get_string(&mut c)?))
        }
        _ => match expect_ok(r) {
            Err(e) if e.is_status(FX_EOF) => Ok(None),
            Err(e) => Err(e),
            Ok(()) => Err(SftpError::malformed("READ answered OK")),
        },
    }
}

/// A STATUS reply that must be OK.
pub(super) fn expect_ok(r: Reply) -> Result<(), SftpError> {
    if r.typ != FXP_STATUS {
        return Err(SftpError::malformed("expected STATUS"));
    }
    let mut c = r.body;
    let code = get_u32(&mut c)?;
    if code == FX_OK {
        return Ok(());
    }
    // message and language tag are optional in practice
    let message = get_string(&mut c).map(|m| String::from_utf8_lossy(&m).into_owned()).unwrap_or_default();
    Err(SftpError::Status { code, message })
}

fn handle_reply(r: Reply) -> Result<Handle, SftpError> {
    if r.typ == FXP_HANDLE {
        let mut c = r.body;
        return Ok(Handle(get_string(&mut c)?));
    }
    expect_ok(r)?;
    Err(SftpError::malformed("expected HANDLE"))
}

fn attrs_reply(r: Reply) -> Result<Attrs, SftpError> {
    if r.typ == FXP_ATTRS {
        let mut c = r.body;
        return get_attrs(&mut c);
    }
    expect_ok(r)?;
    Err(SftpError::malformed("expected ATTRS"))
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + s.len());
    v.extend_from_slice(&(s.len() as u32).to_be_bytes());
    v.extend_from_slice(s);
    v
}

fn get_u32(c: &mut Bytes) -> Result<u32, SftpError> {
    if c.remaining() < 4 {
        return Err(SftpError::malformed("short u32"));
    }
    Ok(c.get_u32())
}

fn get_u64(c: &mut Bytes) -> Result<u64, SftpError> {
    if c.remaining() < 8 {
        return Err(SftpError::malformed("short u64"));
    }
    Ok(c.get_u64())
}

fn get_string(c: &mut Bytes) -> Result<Bytes, SftpError> {
    let n = get_u32(c)? as usize;
    if c.remaining() < n {
        return Err(SftpError::malformed("short string"));
    }
    Ok(c.split_to(n))
}

fn get_attrs(c: &mut Bytes) -> Result<Attrs, SftpError> {
    let flags = get_u32(c)?;
    let mut a = Attrs::default();
    if flags & ATTR_SIZE != 0 {
        a.size = Some(get_u64(c)?);
    }
    if flags & ATTR_UIDGID != 0 {
        get_u64(c)?;
    }
    if flags & ATTR_PERMISSIONS != 0 {
        a.permissions = Some(get_u32(c)?);
    }
    if flags & ATTR_ACMODTIME != 0 {
        let _atime = get_u32(c)?;
        a.mtime = Some(get_u32(c)?);
    }
    if flags & ATTR_EXTENDED != 0 {
        for _ in 0..get_u32(c)? {
            get_string(c)?;
            get_string(c)?;
        }
    }
    Ok(a)
}

/// One packet without its length: type, then the rest.
async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Bytes> {
    let len = r.read_u32().await? as usize;
    if !(5..=MAX_PACKET).contains(&len) {
        return Err(std::io::Error::other(format!("SFTP packet of {len} bytes")));
    }
    let mut buf = BytesMut::zeroed(len);
    r.read_exact(&mut buf).await?;
    Ok(buf.freeze())
}

/// Keep the last few KiB of ssh's stderr (ssh must never block on a full pipe).
async fn drain_stderr(mut stderr: tokio::process::ChildStderr, shared: Arc<Shared>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let mut s = shared.stderr.lock().unwrap_or_else(|e| e.into_inner());
        s.push_str(&String::from_utf8_lossy(&buf[..n]));
        if s.len() > 16 * 1024 {
            let cut = s.len() - 8 * 1024;
            let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
            s.drain(..cut);
        }
    }
}

/// ssh is gone (or going): reap it, and say why from its stderr.
async fn finish(
    mut child: Child,
    stderr_task: tokio::task::JoinHandle<()>,
    shared: &Shared,
    p: &SshParams,
) -> SftpError {
    let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(s)) => Some(s),
        _ => {
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
    let text = shared.stderr.lock().map(|s| s.clone()).unwrap_or_default();
    p.classify(&text, status)
}

/// Hand every reply to its request until the connection ends; then record why and fail the rest.
async fn read_loop(
    mut reader: BufReader<ChildStdout>,
    child: Child,
    stderr_task: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
    p: SshParams,
) {
    loop {
        let mut packet = match read_packet(&mut reader).await {
            Ok(p) => p,
            Err(_) => break,
        };
        let typ = packet.get_u8();
        let Ok(id) = get_u32(&mut packet) else { break };
        let waiter = shared.state.lock().unwrap_or_else(|e| e.into_inner()).pending.remove(&id);
        if let Some(tx) = waiter {
            let _ = tx.send(Reply { typ, body: packet });
        }
    }
    drop(reader);
    let reason = finish(child, stderr_task, &shared, &p).await;
    let reason = match reason {
        // once connected, a closed connection is worth another try whatever ssh said
        SftpError::Connection { message, .. } => SftpError::Connection { kind: FailureKind::Transient, message },
        other => other,
    };
    shared.kill(reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SshParams {
        SshParams {
            host: "u1.example.de".into(),
            port: 23,
            user: "u1".into(),
            key_file: "/s/key".into(),
            known_hosts_file: "/s/known_hosts".into(),
            deadlines: crate::targets::Deadlines::default(),
        }
    }

    #[test]
    fn ssh_failures_are_classified_with_the_field_to_fix() {
        let p = params();
        let cases = [
            (
                "No ED25519 host key is known for [u1.example.de]:23 and you have requested strict checking.\r\nHost key verification failed.\r\n",
                FailureKind::Permanent,
                "known_hosts_file `/s/known_hosts`",
            ),
            ("u1@u1.example.de: Permission denied (publickey).\r\n", FailureKind::Permanent, "key_file `/s/key`"),
            ("Load key \"/s/key\": invalid format\r\n", FailureKind::Permanent, "key_file `/s/key`"),
            ("ssh: connect to host u1.example.de port 23: Connection refused\r\n", FailureKind::Transient, "reachable"),
            ("kex_exchange_identification: read: Connection reset by peer\r\n", FailureKind::Transient, "reachable"),
            (
                "ssh: Could not resolve hostname nope.example: Name or service not known\r\n",
                FailureKind::Permanent,
                "check `host`",
            ),
        ];
        for (stderr, kind, needle) in cases {
            let e = p.classify(stderr, None);
            assert_eq!(e.kind(), kind, "{stderr}");
            assert!(e.to_string().contains(needle), "{e}");
        }
        assert!(p.classify("", None).to_string().contains("without a message"));
    }

    #[test]
    fn status_kinds() {
        let s = |code| SftpError::Status { code, message: String::new() };
        assert_eq!(s(FX_NO_SUCH_FILE).kind(), FailureKind::NotFound);
        assert_eq!(s(FX_PERMISSION_DENIED).kind(), FailureKind::Permanent);
        assert_eq!(s(FX_FAILURE).kind(), FailureKind::Permanent);
        assert_eq!(s(FX_CONNECTION_LOST).kind(), FailureKind::Transient);
    }

    #[test]
    fn attrs_parse() {
        let mut b = BytesMut::new();
        b.put_u32(ATTR_SIZE | ATTR_UIDGID | ATTR_PERMISSIONS | ATTR_ACMODTIME | ATTR_EXTENDED);
        b.put_u64(1234);
        b.put_u64(0);
        b.put_u32(0o100644);
        b.put_u64(0);
        b.put_u32(1);
        b.put_slice(&string(b"k"));
        b.put_slice(&string(b"v"));
        b.put_u8(9); // what follows
        let mut c = b.freeze();
        let a = get_attrs(&mut c).unwrap();
        assert_eq!(a.size, Some(1234));
        assert!(a.is_file() && !a.is_dir());
        assert_eq!(c.as_ref(), &[9]);
    }
}
