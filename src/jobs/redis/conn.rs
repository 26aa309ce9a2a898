//! A minimal Redis client: TCP or TLS, `AUTH` (password or ACL user), commands with a timeout,
//! replies parsed by [`super::resp`]. Errors are [`Failure`]s that the job maps to messages with
//! hints; no secret ever enters one (AUTH arguments are never echoed by Redis).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::info::Info;
use super::resp::{self, Value};
use crate::redact::Secret;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Any duplex byte stream (plain TCP or TLS over it).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// `host:port` of a server or sentinel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `host:port`, `[v6]:port`, or `host` (port `default_port`).
    pub fn parse(s: &str, default_port: u16) -> Option<Endpoint> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => default_port,
                None => return None,
            };
            return Some(Endpoint { host: host.to_string(), port });
        }
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => Some(Endpoint { host: h.to_string(), port: p.parse().ok()? }),
            Some(_) => None,
            None if !s.is_empty() => Some(Endpoint { host: s.to_string(), port: default_port }),
            None => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Credentials for `AUTH`.
#[derive(Clone, Default)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// TLS settings; `None` in [`Dial::tls`] means plain TCP.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// How to reach servers: TLS or not, with which files.
#[derive(Clone, Default)]
pub struct Dial {
    pub tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
}

impl Dial {
    pub fn plain() -> Dial {
        Dial { tls: None }
    }

    pub fn with_tls(files: &TlsFiles) -> Result<Dial, Failure> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let mut roots = rustls::RootCertStore::empty();
        match &files.ca_file {
            Some(ca) => {
                let certs = CertificateDer::pem_file_iter(ca)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| Failure::Tls(format!("cannot read CA bundle `{}`: {e}", ca.display())))?;
                if certs.is_empty() {
                    return Err(Failure::Tls(format!("`{}` holds no PEM certificate", ca.display())));
                }
                for c in certs {
                    roots.add(c).map_err(|e| Failure::Tls(format!("bad certificate in `{}`: {e}", ca.display())))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Failure::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&files.cert_file, &files.key_file) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| Failure::Tls(format!("cannot read client certificate `{}`: {e}", cert.display())))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| Failure::Tls(format!("cannot read client key `{}`: {e}", key.display())))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| Failure::Tls(e.to_string()))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(Failure::Tls("set both `tls_cert_file` and `tls_key_file`, or neither".into())),
        };
        Ok(Dial { tls: Some(Arc::new(config)) })
    }

    /// Connect and authenticate.
    pub async fn connect(&self, to: &Endpoint, auth: &Auth) -> Result<Conn, Failure> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((to.host.as_str(), to.port)))
            .await
            .map_err(|_| Failure::Connect(io::Error::new(io::ErrorKind::TimedOut, "connection timed out")))?
            .map_err(Failure::Connect)?;
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().map_err(Failure::Connect)?;
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(to.host.clone())
                    .map_err(|e| Failure::Tls(format!("`{}` is not a valid TLS server name: {e}", to.host)))?;
                let tls = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp),
                )
                .await
                .map_err(|_| Failure::Tls("TLS handshake timed out".into()))?
                .map_err(|e| Failure::Tls(format!("TLS handshake failed: {e}")))?;
                Box::new(tls)
            }
        };
        let mut conn = Conn { io, buf: BytesMut::with_capacity(16 * 1024), local };
        conn.auth(auth).await?;
        Ok(conn)
    }
}

/// Why talking to a server failed.
#[derive(Debug)]
pub enum Failure {
    /// The TCP connection could not be opened.
    Connect(io::Error),
    Tls(String),
    /// `AUTH` was refused, or the server wants one (`NOAUTH`).
    Auth(String),
    /// The ACL user may not run a command.
    NoPerm(String),
    /// Any other error reply.
    Server(String),
    Io(io::Error),
    Closed,
    Timeout(String),
    Protocol(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "{e}"),
            Failure::Tls(m) => write!(f, "TLS: {m}"),
            Failure::Auth(m) => write!(f, "authentication failed: {m}"),
            Failure::NoPerm(m) => write!(f, "permission denied: {m}"),
            Failure::Server(m) => write!(f, "server error: {m}"),
            Failure::Io(e) => write!(f, "connection error: {e}"),
            Failure::Closed => f.write_str("the server closed the connection"),
            Failure::Timeout(what) => write!(f, "timed out {what}"),
            Failure::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

impl Failure {
    /// Classify an error reply.
    pub fn from_reply(msg: String) -> Failure {
        let code = msg.split_whitespace().next().unwrap_or("");
        match code {
            "WRONGPASS" | "NOAUTH" => Failure::Auth(msg),
            "NOPERM" => Failure::NoPerm(msg),
            "ERR" if msg.contains("AUTH") && msg.contains("without any password configured") => Failure::Auth(msg),
            _ => Failure::Server(msg),
        }
    }

    /// The next step for the user.
    pub fn hint(&self, at: &str) -> Option<String> {
        Some(match self {
            Failure::Connect(_) | Failure::Closed | Failure::Timeout(_) => {
                format!("is Redis running and reachable at {at}? `drctl check` tests it")
            }
            Failure::Tls(_) => "check `tls_ca_file` (and `tls_cert_file`/`tls_key_file` if the server wants client certificates)".into(),
            Failure::Auth(m) if m.contains("without any password configured") => {
                "the server has no password: remove `password`/`password_file` (or the URL's password)".into()
            }
            Failure::Auth(_) => "check the password (`password_file`, `password` or the URL) and `username` for ACL users".into(),
            Failure::NoPerm(_) => "give the ACL user the commands drctl runs, e.g. `ACL SETUSER backup +ping +info +replconf +sync +psync` (bgsave mode: `+bgsave +config|get`; restore: `+replicaof +config|get +config|set +bgsave`)".into(),
            _ => return None,
        })
    }
}

/// An I/O error; TLS alerts and certificate problems are told apart (they need other fixes).
pub fn io_failure(e: io::Error) -> Failure {
    use tokio_rustls::rustls;
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired)) => {
            Failure::Tls("the server wants a client certificate".into())
        }
        Some(t) => Failure::Tls(t.to_string()),
        None => Failure::Io(e),
    }
}

impl From<resp::ProtocolError> for Failure {
    fn from(e: resp::ProtocolError) -> Failure {
        Failure::Protocol(e.0)
    }
}

/// One authenticated connection.
pub struct Conn {
    io: Box<dyn Io>,
    /// Bytes read but not consumed yet.
    buf: BytesMut,
    local: SocketAddr,
}

impl Conn {
    /// Our side's address (the interface that reaches this server).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    async fn auth(&mut self, auth: &Auth) -> Result<(), Failure> {
        let reply = match (&auth.username, &auth.password) {
            (Some(u), Some(p)) => self.call(&[b"AUTH", u.as_bytes(), p.expose().as_bytes()]).await?,
            (Some(u), None) => self.call(&[b"AUTH", u.as_bytes(), b""]).await?, // a `nopass` ACL user
            (None, Some(p)) => self.call(&[b"AUTH", p.expose().as_bytes()]).await?,
            (None, None) => return Ok(()),
        };
        match reply {
            Value::Error(e) => Err(Failure::from_reply(e)),
            _ => Ok(()),
        }
    }

    pub async fn send(&mut self, args: &[&[u8]]) -> Result<(), Failure> {
        let out = resp::encode_command(args);
        tokio::time::timeout(COMMAND_TIMEOUT, async {
            self.io.write_all(&out).await?;
            self.io.flush().await
        })
        .await
        .map_err(|_| Failure::Timeout("sending a command".into()))?
        .map_err(io_failure)
    }

    /// Read more bytes into the buffer; `Closed` on end of stream.
    pub async fn fill(&mut self, timeout: Duration, what: &str) -> Result<usize, Failure> {
        if self.buf.capacity() - self.buf.len() < 8 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        let n = tokio::time::timeout(timeout, self.io.read_buf(&mut self.buf))
            .await
            .map_err(|_| Failure::Timeout(what.to_string()))?
            .map_err(io_failure)?;
        if n == 0 {
            return Err(Failure::Closed);
        }
        Ok(n)
    }

    pub async fn read_value(&mut self) -> Result<Value, Failure> {
        loop {
            if let Some((v, used)) = resp::parse(&self.buf)? {
                let _ = self.buf.split_to(used);
                return Ok(v);
            }
            self.fill(COMMAND_TIMEOUT, "waiting for a reply").await?;
        }
    }

    /// Send a command and read its reply (an error reply is a value here).
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Value, Failure> {
        self.send(args).await?;
        self.read_value().await
    }

    /// Send a command; an error reply becomes a [`Failure`].
    pub async fn cmd(&mut self, args: &[&str]) -> Result<Value, Failure> {
        let raw: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        match self.call(&raw).await? {
            Value::Error(e) => Err(Failure::from_reply(e)),
            v => Ok(v),
        }
    }

    pub async fn info(&mut self) -> Result<Info, Failure> {
        let v = self.cmd(&["INFO"]).await?;
        let text = v.text().ok_or_else(|| Failure::Protocol(format!("INFO returned {v:?}")))?;
        Ok(Info::parse(&text))
    }

    /// `CONFIG GET name` → its value, `None` when the server does not know it.
    pub async fn config_get(&mut self, name: &str) -> Result<Option<String>, Failure> {
        let v = self.cmd(&["CONFIG", "GET", name]).await?;
        Ok(v.pairs().into_iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
    }

    /// The buffered bytes not consumed yet, and the stream: for reading a payload by hand.
    pub fn into_parts(self) -> (BytesMut, Box<dyn Io>) {
        (self.buf, self.io)
    }

    /// Access to the buffer for protocol steps that parse by hand (the SYNC preamble).
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(Endpoint::parse("redis:6379", 1), Some(Endpoint { host: "redis".into(), port: 6379 }));
        assert_eq!(Endpoint::parse("redis", 26379), Some(Endpoint { host: "redis".into(), port: 26379 }));
        assert_eq!(Endpoint::parse("[::1]:7000", 1), Some(Endpoint { host: "::1".into(), port: 7000 }));
        assert_eq!(Endpoint::parse("::1", 1), None);
        assert_eq!(Endpoint::parse("h:notaport", 1), None);
        assert_eq!(Endpoint { host: "::1".into(), port: 7 }.to_string(), "[::1]:7");
    }

    #[test]
    fn classifies_error_replies() {
        assert!(matches!(
            Failure::from_reply("WRONGPASS invalid username-password pair or user is disabled.".into()),
            Failure::Auth(_)
        ));
        assert!(matches!(Failure::from_reply("NOAUTH Authentication required.".into()), Failure::Auth(_)));
        assert!(matches!(
            Failure::from_reply("NOPERM this user has no permissions to run the 'sync' command".into()),
            Failure::NoPerm(_)
        ));
        let no_pw = Failure::from_reply(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into(),
        );
        assert!(no_pw.hint("x").unwrap().contains("has no password"));
        assert!(matches!(Failure::from_reply("ERR unknown command".into()), Failure::Server(_)));
    }
}
