//! A WAL relay for drills: the drill's scratch server runs as another user (`postgres`, when
//! drctl runs as root) that cannot read drctl's config, age identity or target credentials. So
//! the drill process serves `restore_command` itself over a Unix socket only that user may open
//! (mode 0600, owned by it): `drctl wal relay SOCKET NAME PATH` asks for one file and writes it
//! where the server wants it.
//!
//! Protocol, one request per connection: the client sends `NAME\n`; the server answers
//! `ok SIZE\n` and SIZE bytes, or `missing\n`, or `failed MESSAGE\n`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use super::recover::{Fetched, fetch};
use crate::engine::Engine;
use crate::jobs::JobConfig;

/// Serve requests on `listener` until dropped (runs beside the scratch server's start and wait).
pub async fn serve(
    listener: &UnixListener,
    engine: &Engine,
    job: &JobConfig,
    spool: &Path,
) -> std::convert::Infallible {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        if tokio::io::BufReader::new(read).read_line(&mut line).await.is_err() {
            continue;
        }
        let name = line.trim().to_string();
        let answer = if name.is_empty() || name.contains('/') || name.starts_with('.') {
            Err(format!("failed not a WAL file name: `{name}`\n"))
        } else {
            let file = spool.join(&name);
            match fetch(engine, job, &name, &file).await {
                Ok(Fetched::Written { .. }) => Ok(file),
                Ok(Fetched::Missing) => Err("missing\n".to_string()),
                Err(e) => Err(format!("failed {}\n", e.0.replace('\n', " "))),
            }
        };
        let _ = match answer {
            Ok(file) => {
                let sent = async {
                    let mut f = tokio::fs::File::open(&file).await?;
                    let size = f.metadata().await?.len();
                    write.write_all(format!("ok {size}\n").as_bytes()).await?;
                    tokio::io::copy(&mut f, &mut write).await?;
                    write.shutdown().await
                }
                .await;
                let _ = tokio::fs::remove_file(&file).await;
                sent
            }
            Err(reply) => write.write_all(reply.as_bytes()).await,
        };
    }
}

/// Bind the relay's socket at `path`, openable only by `user` (or by drctl's own user).
pub fn bind(path: &Path, user: Option<&str>) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    if let Some(u) = user {
        let (uid, gid) = user_ids(u)?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(listener)
}

fn user_ids(user: &str) -> std::io::Result<(u32, u32)> {
    let name = std::ffi::CString::new(user).map_err(std::io::Error::other)?;
    // SAFETY: getpwnam reads the passwd database; the pointer is checked before use and the
    // fields copied at once (no other thread of drctl calls getpwnam).
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(std::io::Error::other(format!("no user `{user}`")));
    }
    // SAFETY: non-null result of getpwnam.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// What `drctl wal relay` exits with.
pub enum Relayed {
    Written,
    Missing,
    Failed(String),
}

/// The client: ask `socket` for `name`, write it to `dest` (temporary name, synced, renamed).
pub fn request(socket: &Path, name: &str, dest: &Path) -> Relayed {
    match request_inner(socket, name, dest) {
        Ok(r) => r,
        Err(e) => Relayed::Failed(format!("relay {}: {e}", socket.display())),
    }
}

fn request_inner(socket: &Path, name: &str, dest: &Path) -> std::io::Result<Relayed> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.write_all(format!("{name}\n").as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header)?;
    let header = header.trim_end();
    if header == "missing" {
        return Ok(Relayed::Missing);
    }
    if let Some(msg) = header.strip_prefix("failed ") {
        return Ok(Relayed::Failed(msg.to_string()));
    }
    let size: u64 = header
        .strip_prefix("ok ")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("unexpected answer `{header}`")))?;
    let dir = dest.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let mut tmp = tempfile::Builder::new().prefix(".drctl-relay-").tempfile_in(&dir)?;
    let copied = std::io::copy(&mut reader.by_ref().take(size), tmp.as_file_mut())?;
    if copied != size {
        return Ok(Relayed::Failed(format!("the relay sent {copied} of {size} bytes")));
    }
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(Relayed::Written)
}
