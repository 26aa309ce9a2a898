//! A physical streaming-replication client: the walsender side of what `pg_receivewal` does,
//! over the PostgreSQL wire protocol (message framing and SCRAM from `postgres-protocol`).
//!
//! Why not `pg_receivewal`: it confirms WAL to the server (and so lets the replication slot move
//! on) as soon as the bytes are on its local disk. drctl must confirm only what is committed on
//! every target, or a container restart between the two loses WAL the server has already
//! recycled. Owning the feedback is the reason this module exists; it speaks only what that needs:
//! startup and password/MD5/SCRAM authentication, simple queries (`IDENTIFY_SYSTEM`, `SHOW`,
//! `TIMELINE_HISTORY`), and `START_REPLICATION` in copy-both mode.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::{backend::Message, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::lsn::Lsn;
use crate::redact::{Secret, percent_decode};

/// Why the replication connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    #[error("cannot connect to {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("the connection to the server failed: {0}")]
    Io(#[from] std::io::Error),
    /// The server said no (`SQLSTATE` and message).
    #[error("the server refused: {message} (SQLSTATE {code})")]
    Server { code: String, message: String },
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    #[error("{0}")]
    Unsupported(String),
}

enum Incoming {
    Message(Message),
    CopyBoth,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One replication connection (`replication=true`).
pub struct Replication {
    io: Box<dyn Io>,
    buf: BytesMut,
}

/// What the server streams after `START_REPLICATION`.
#[derive(Debug)]
pub enum Streamed {
    /// WAL bytes starting at `start`; the server has written up to `server_end`.
    Wal { start: Lsn, data: Bytes, server_end: Lsn },
    /// A heartbeat: the server's WAL end, and whether it wants a status update now.
    Keepalive { server_end: Lsn, reply: bool },
    /// The timeline ended (the server was promoted, or we streamed an old timeline to its end):
    /// the next timeline and where it starts.
    TimelineEnd { next_tli: u32, next_start: Lsn },
}

/// `IDENTIFY_SYSTEM`'s answer.
#[derive(Debug, Clone)]
pub struct System {
    pub system_id: String,
    pub timeline: u32,
    pub position: Lsn,
}

/// Microseconds since 2000-01-01, PostgreSQL's clock for replication messages.
fn pg_now() -> i64 {
    const PG_EPOCH: u64 = 946_684_800;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    (now.as_micros() as i64) - (PG_EPOCH as i64) * 1_000_000
}

impl Replication {
    /// Connect to `url` (TCP, or a Unix socket directory as `host`) as a replication client and
    /// authenticate. `sslmode=require` and stricter are refused, not silently downgraded.
    pub async fn connect(url: &url::Url, password: Option<&Secret>, app: &str) -> Result<Replication, ReplError> {
        let query: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        if let Some(mode) = query.get("sslmode")
            && !matches!(mode.as_str(), "disable" | "allow" | "prefer")
        {
            return Err(ReplError::Unsupported(format!(
                "the WAL receiver does not speak TLS yet (`sslmode={mode}`): reach the server over a private network \
                 or a Unix socket, and set `sslmode=disable` in the job's url"
            )));
        }
        let user = match percent_decode(url.username()) {
            u if u.is_empty() => std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into()),
            u => u,
        };
        let port = url.port().unwrap_or(5432);
        let host = query.get("host").cloned().or_else(|| url.host_str().map(percent_decode)).unwrap_or_default();
        let io: Box<dyn Io> = if host.is_empty() || host.starts_with('/') {
            let dir = if host.is_empty() { "/var/run/postgresql".to_string() } else { host.clone() };
            let path = format!("{dir}/.s.PGSQL.{port}");
            Box::new(tokio::net::UnixStream::connect(&path).await.map_err(|e| ReplError::Connect(path, e))?)
        } else {
            let addr = format!("{host}:{port}");
            let s = tokio::net::TcpStream::connect(&addr).await.map_err(|e| ReplError::Connect(addr, e))?;
            s.set_nodelay(true)?;
            Box::new(s)
        };
        let mut c = Replication { io, buf: BytesMut::with_capacity(64 * 1024) };
        let mut out = BytesMut::new();
        frontend::startup_message(
            [("user", user.as_str()), ("replication", "true"), ("application_name", app)],
            &mut out,
        )?;
        c.send(&out).await?;
        c.authenticate(&user, password).await?;
        Ok(c)
    }

    async fn authenticate(&mut self, user: &str, password: Option<&Secret>) -> Result<(), ReplError> {
        let need = || {
            ReplError::Unsupported(
                "the server asks for a password and the job has none (`password_file`, or in the url)".into(),
            )
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            let mut out = BytesMut::new();
            match self.next().await? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password.ok_or_else(need)?.expose().as_bytes(), &mut out)?;
                }
                Message::AuthenticationMd5Password(b) => {
                    let pw = password.ok_or_else(need)?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        pw.expose().as_bytes(),
                        b.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut out)?;
                }
                Message::AuthenticationSasl(b) => {
                    let mechanisms: Vec<String> = b.mechanisms().map(|m| Ok(m.to_string())).collect()?;
                    if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(ReplError::Unsupported(format!(
                            "the server offers only {} for authentication",
                            mechanisms.join(", ")
                        )));
                    }
                    let s = ScramSha256::new(password.ok_or_else(need)?.expose().as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(b) => {
                    let s = scram.as_mut().ok_or_else(|| ReplError::Protocol("SASL continue without a start".into()))?;
                    s.update(b.data())?;
                    frontend::sasl_response(s.message(), &mut out)?;
                }
                Message::AuthenticationSaslFinal(b) => {
                    let s = scram.as_mut().ok_or_else(|| ReplError::Protocol("SASL final without a start".into()))?;
                    s.finish(b.data())?;
                }
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ParameterStatus(_) | Message::BackendKeyData(_) | Message::NoticeResponse(_) => {}
                Message::ErrorResponse(e) => return Err(server_error(&e)),
                _ => return Err(ReplError::Unsupported("the server asks for an authentication method drctl does not speak (use scram-sha-256, md5, password or trust)".into())),
            }
            if !out.is_empty() {
                self.send(&out).await?;
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ReplError> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// The next message (a CopyBothResponse is an error here: only [`Replication::start`] expects it).
    async fn next(&mut self) -> Result<Message, ReplError> {
        match self.incoming().await? {
            Incoming::Message(m) => Ok(m),
            Incoming::CopyBoth => Err(ReplError::Protocol("a copy stream started unasked".into())),
        }
    }

    /// The next message, or the CopyBothResponse that `postgres-protocol` does not parse.
    async fn incoming(&mut self) -> Result<Incoming, ReplError> {
        loop {
            if self.buf.len() >= 5 && self.buf[0] == b'W' {
                let len = (&self.buf[1..5]).get_u32() as usize;
                if self.buf.len() > len {
                    self.buf.advance(1 + len);
                    return Ok(Incoming::CopyBoth);
                }
            } else if let Some(m) = Message::parse(&mut self.buf)? {
                return Ok(Incoming::Message(m));
            }
            if self.buf.capacity() - self.buf.len() < 8192 {
                self.buf.reserve(64 * 1024);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(ReplError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
        }
    }

    /// A simple query's rows, as text (NULL = `None`).
    pub async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ReplError> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        self.send(&out).await?;
        let mut rows = Vec::new();
        let mut failed = None;
        loop {
            match self.next().await? {
                Message::DataRow(r) => {
                    let buf = r.buffer();
                    let row: Vec<Option<String>> =
                        r.ranges().map(|o| Ok(o.map(|rg| String::from_utf8_lossy(&buf[rg]).into_owned()))).collect()?;
                    rows.push(row);
                }
                Message::ErrorResponse(e) => failed = Some(server_error(&e)),
                Message::ReadyForQuery(_) => return failed.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }

    pub async fn identify_system(&mut self) -> Result<System, ReplError> {
        let rows = self.query("IDENTIFY_SYSTEM").await?;
        let row = rows.first().ok_or_else(|| ReplError::Protocol("IDENTIFY_SYSTEM returned no row".into()))?;
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok(System {
            system_id: field(0),
            timeline: field(1).parse().map_err(|_| ReplError::Protocol(format!("timeline `{}`", field(1))))?,
            position: field(2).parse().map_err(ReplError::Protocol)?,
        })
    }

    /// `TIMELINE_HISTORY tli`: the history file's name and content.
    pub async fn timeline_history(&mut self, tli: u32) -> Result<(String, Vec<u8>), ReplError> {
        let rows = self.query(&format!("TIMELINE_HISTORY {tli}")).await?;
        let row = rows.first().ok_or_else(|| ReplError::Protocol("TIMELINE_HISTORY returned no row".into()))?;
        let name = row.first().cloned().flatten().unwrap_or_default();
        let content = row.get(1).cloned().flatten().unwrap_or_default();
        Ok((name, content.into_bytes()))
    }

    /// Start streaming from `slot` at `start` on `tli`; then call [`Replication::recv`].
    pub async fn start(&mut self, slot: &str, start: Lsn, tli: u32) -> Result<(), ReplError> {
        let mut out = BytesMut::new();
        frontend::query(&format!("START_REPLICATION SLOT {slot} PHYSICAL {start} TIMELINE {tli}"), &mut out)?;
        self.send(&out).await?;
        loop {
            let m = match self.incoming().await? {
                Incoming::CopyBoth => return Ok(()),
                Incoming::Message(m) => m,
            };
            match m {
                Message::ErrorResponse(e) => {
                    let err = server_error(&e);
                    // drain to ReadyForQuery so the connection stays usable
                    while !matches!(self.next().await?, Message::ReadyForQuery(_)) {}
                    return Err(err);
                }
                Message::NoticeResponse(_) => {}
                _ => return Err(ReplError::Protocol("START_REPLICATION did not start a stream".into())),
            }
        }
    }

    /// The next thing the server streams.
    pub async fn recv(&mut self) -> Result<Streamed, ReplError> {
        loop {
            match self.next().await? {
                Message::CopyData(body) => {
                    let mut d = body.into_bytes();
                    if d.is_empty() {
                        continue;
                    }
                    match d.get_u8() {
                        b'w' if d.len() >= 24 => {
                            let start = Lsn(d.get_u64());
                            let server_end = Lsn(d.get_u64());
                            let _sent = d.get_i64();
                            return Ok(Streamed::Wal { start, data: d, server_end });
                        }
                        b'k' if d.len() >= 17 => {
                            let server_end = Lsn(d.get_u64());
                            let _sent = d.get_i64();
                            return Ok(Streamed::Keepalive { server_end, reply: d.get_u8() == 1 });
                        }
                        t => return Err(ReplError::Protocol(format!("unknown copy message `{}`", t as char))),
                    }
                }
                Message::CopyDone => {
                    // end of timeline: answer CopyDone, then a row (next tli, its start), then
                    // CommandComplete, then (after the tuple result) ReadyForQuery
                    let mut out = BytesMut::new();
                    frontend::copy_done(&mut out);
                    self.send(&out).await?;
                    let mut next = None;
                    loop {
                        match self.next().await? {
                            Message::DataRow(r) => {
                                let buf = r.buffer();
                                let row: Vec<Option<String>> = r
                                    .ranges()
                                    .map(|o| Ok(o.map(|rg| String::from_utf8_lossy(&buf[rg]).into_owned())))
                                    .collect()?;
                                let tli = row.first().cloned().flatten().and_then(|t| t.parse().ok());
                                let at = row.get(1).cloned().flatten().and_then(|l| l.parse().ok());
                                if let (Some(t), Some(l)) = (tli, at) {
                                    next = Some((t, l));
                                }
                            }
                            Message::ErrorResponse(e) => return Err(server_error(&e)),
                            Message::ReadyForQuery(_) => break,
                            _ => {}
                        }
                    }
                    let (next_tli, next_start) = next.ok_or_else(|| {
                        ReplError::Protocol("the stream ended without naming the next timeline".into())
                    })?;
                    return Ok(Streamed::TimelineEnd { next_tli, next_start });
                }
                Message::ErrorResponse(e) => return Err(server_error(&e)),
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                _ => return Err(ReplError::Protocol("unexpected message while streaming".into())),
            }
        }
    }

    /// Tell the server how far WAL was received (`write`) and made durable (`flush`): the slot
    /// keeps everything after `flush`.
    pub async fn status(&mut self, write: Lsn, flush: Lsn, reply: bool) -> Result<(), ReplError> {
        let mut msg = BytesMut::with_capacity(34);
        msg.put_u8(b'r');
        msg.put_u64(write.0);
        msg.put_u64(flush.0);
        msg.put_u64(flush.0); // applied: nothing is applied here
        msg.put_i64(pg_now());
        msg.put_u8(u8::from(reply));
        let mut out = BytesMut::new();
        frontend::CopyData::new(msg.freeze())?.write(&mut out);
        self.send(&out).await
    }
}

fn server_error(e: &postgres_protocol::message::backend::ErrorResponseBody) -> ReplError {
    let mut code = String::new();
    let mut message = String::new();
    let mut fields = e.fields();
    while let Ok(Some(f)) = fields.next() {
        match f.type_() {
            b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            _ => {}
        }
    }
    ReplError::Server { code, message }
}
