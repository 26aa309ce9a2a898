//! `mode = "bgsave"`: ask the server for a fresh snapshot on its own disk, wait for it, read it.
//!
//! `BGSAVE SCHEDULE` (so an AOF rewrite in progress only delays it), then INFO is polled until no
//! save runs and a save newer than the one before is recorded (`rdb_saves` grew, or on servers
//! without that counter `rdb_last_save_time` changed) with `rdb_last_bgsave_status:ok`. The file is
//! then read where `exec` runs: on this host, in a Docker container or in a pod.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};

use super::conn::{Conn, Failure};
use super::info::Info;
use super::rdb::RdbCheck;
use super::{Facts, failed};
use crate::Error;
use crate::Result;
use crate::exec::{Place, Remote};
use crate::jobs::SourceStream;
use crate::jobs::redis::RedisJob;

const POLL: Duration = Duration::from_millis(200);
/// Longest a snapshot may take (a very large dataset on a slow disk).
const SAVE_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

async fn info(job: &str, conn: &mut Conn, at: &str) -> Result<Info> {
    conn.info().await.map_err(|f| failed(job, at, "INFO failed on", f))
}

/// Wait until no RDB save runs; returns the INFO that said so.
async fn wait_idle(job: &str, conn: &mut Conn, at: &str, deadline: Instant) -> Result<Info> {
    loop {
        let i = info(job, conn, at).await?;
        if !i.bgsave_in_progress() {
            return Ok(i);
        }
        if Instant::now() > deadline {
            return Err(Error::source_failed(
                job,
                format!("a save on {at} is still running after {SAVE_TIMEOUT:?}"),
                None,
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn open(
    job: &str,
    mut conn: Conn,
    at: &str,
    cfg: &RedisJob,
    place: &Place,
    facts: Arc<Mutex<Facts>>,
) -> Result<SourceStream> {
    let deadline = Instant::now() + SAVE_TIMEOUT;
    // a save already running started before we were asked: wait for it, then take our own
    let before = wait_idle(job, &mut conn, at, deadline).await?.save_marker();
    let mut attempts = 0;
    loop {
        match conn.cmd(&["BGSAVE", "SCHEDULE"]).await {
            Ok(_) => break,
            Err(Failure::Server(m)) if m.contains("already in progress") && attempts < 20 => {
                attempts += 1;
                wait_idle(job, &mut conn, at, deadline).await?;
            }
            // before 3.2.2 there is no SCHEDULE
            Err(Failure::Server(m)) if m.contains("syntax") && attempts == 0 => {
                if let Err(f) = conn.cmd(&["BGSAVE"]).await {
                    return Err(failed(job, at, "BGSAVE failed on", f));
                }
                break;
            }
            Err(f) => return Err(failed(job, at, "BGSAVE failed on", f)),
        }
    }
    loop {
        let i = info(job, &mut conn, at).await?;
        let now = i.save_marker();
        let newer = match (before.0, now.0) {
            (Some(b), Some(n)) => n > b,
            _ => now.1 != before.1,
        };
        if !i.bgsave_in_progress() && newer {
            if !i.last_bgsave_ok() {
                return Err(Error::source_failed(
                    job,
                    format!("BGSAVE failed on {at} (rdb_last_bgsave_status:err)"),
                    Some("see the server's log: is its `dir` writable, is the disk full, may it fork?".into()),
                ));
            }
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::source_failed(
                job,
                format!("BGSAVE on {at} did not finish within {SAVE_TIMEOUT:?}"),
                None,
            ));
        }
        tokio::time::sleep(POLL).await;
    }

    let path = match &cfg.rdb_path {
        Some(p) => p.clone(),
        None => {
            let dir = conn.config_get("dir").await.map_err(|f| failed(job, at, "CONFIG GET dir failed on", f))?;
            let name = conn
                .config_get("dbfilename")
                .await
                .map_err(|f| failed(job, at, "CONFIG GET dbfilename failed on", f))?;
            match (dir, name) {
                (Some(d), Some(n)) => PathBuf::from(d).join(n),
                _ => {
                    return Err(Error::source_failed(
                        job,
                        format!("{at} did not say where it saves (CONFIG GET dir/dbfilename)"),
                        Some("set `rdb_path` on the job".into()),
                    ));
                }
            }
        }
    };
    drop(conn);
    // a later save renames a new file over this one: what is opened is this save's or a newer one
    let (reader, size, remote): (Box<dyn AsyncRead + Send + Unpin>, Option<u64>, Option<Remote>) = match place {
        Place::Local => {
            let file = tokio::fs::File::open(&path).await.map_err(|e| {
                Error::source_failed(
                    job,
                    format!("cannot open the snapshot `{}`: {e}", path.display()),
                    Some(
                        "drctl must run on the Redis host with read access to its dump file (or set `rdb_path`, or `exec`)"
                            .into(),
                    ),
                )
            })?;
            let size = file.metadata().await.map(|m| m.len()).ok();
            (Box::new(file), size, None)
        }
        _ => {
            let mut remote = place.read_file(&path).await.map_err(|e| e.for_job(job))?;
            let out = std::mem::replace(&mut remote.stdout, Box::new(tokio::io::empty()));
            (out, None, Some(remote))
        }
    };
    let check = Arc::new(Mutex::new(RdbCheck::new()));
    let reader = CheckingReader { inner: reader, check: check.clone() };
    let job = job.to_string();
    let place = place.clone();
    let completion = Box::pin(async move {
        if let Some(remote) = remote {
            let finished = remote.wait().await.map_err(|e| e.for_job(&job))?;
            finished.check(&format!("cat {}", path.display()), &place).map_err(|e| e.for_job(&job))?;
        }
        let summary =
            check.lock().map(|c| (c.size(), c.finish())).map_err(|_| Error::source_failed(&job, "poisoned", None))?;
        let (read, summary) = summary;
        if let Some(size) = size
            && read != size
        {
            return Err(Error::source_failed(
                &job,
                format!("read {read} bytes of `{}`, which had {size} when opened", path.display()),
                None,
            ));
        }
        let summary = summary.map_err(|p| Error::source_failed(&job, format!("`{}`: {p}", path.display()), None))?;
        if let Ok(mut f) = facts.lock() {
            f.rdb_version = summary.version;
            f.rdb_checksum = summary.checksummed;
            f.transfer = match place {
                Place::Local => "file".into(),
                Place::Docker { .. } => "docker exec".into(),
                Place::Kubernetes(_) => "kubernetes exec".into(),
            };
        }
        Ok(())
    });
    Ok(SourceStream { reader: Box::new(reader), completion })
}

/// Passes bytes through, feeding them to an [`RdbCheck`].
struct CheckingReader<R> {
    inner: R,
    check: Arc<Mutex<RdbCheck>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for CheckingReader<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res
            && let Ok(mut c) = self.check.lock()
        {
            c.update(&buf.filled()[before..]);
        }
        res
    }
}
