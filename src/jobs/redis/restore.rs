//! Restore of a redis backup: into a server by replication (see [`super::master`]), or as
//! `dump.rdb` in a directory for an offline restart (`--to-dir`).

use std::path::{Path, PathBuf};

use rand::Rng;
use tokio::io::AsyncWriteExt;

use super::conn::{Auth, Conn, Dial, Endpoint, Failure, TlsFiles};
use super::info::{Info, max_rdb_version};
use super::{FORMAT_RDB, Facts, Settings, display_url, failed, parse_url};
use crate::jobs::redis::RedisJob;
use crate::jobs::{RestoreOptions, RestoreStep, Sink};
use crate::manifest::{Artifact, Manifest};
use crate::{Error, Result};

const DUMP: &str = "dump.rdb";

/// A server to restore into.
struct ServerDest {
    endpoint: Endpoint,
    auth: Auth,
    dial: Dial,
    shown: String,
}

enum Dest {
    Dir(PathBuf),
    Server(ServerDest),
}

fn destination(job: &str, cfg: &RedisJob, opts: &RestoreOptions) -> Result<Dest> {
    if let Some(dir) = &opts.to_dir {
        return Ok(Dest::Dir(dir.clone()));
    }
    // with `--to`, the job's own settings only matter for reusing its credentials on its own
    // server: a fresh machine without the job's password file can still restore elsewhere
    let own = Settings::from_job(job, cfg);
    let Some(to) = &opts.to else {
        let own = own?;
        if own.sentinel.is_some() {
            return Err(Error::source_failed(
                job,
                "this job's servers are managed by Redis Sentinel: restoring by replication would make the master a replica for a while, and the sentinels may fail over to a replica with the old data",
                Some("restore into a standalone server with `--to redis://host:port`, or write the file with `--to-dir DIR` and restart the master from it with the sentinels told (`SENTINEL REMOVE`/`MONITOR`)".into()),
            ));
        }
        let endpoint =
            own.endpoint.clone().ok_or_else(|| Error::source_failed(job, "no `url` configured: pass `--to`", None))?;
        let shown = own.display(&endpoint);
        return Ok(Dest::Server(ServerDest { endpoint, auth: own.auth, dial: own.dial, shown }));
    };
    let parsed = parse_url(to).map_err(|e| {
        Error::source_failed(
            job,
            format!("--to: {e}"),
            Some("e.g. `--to redis://host:6379`, or `--to-dir DIR` for a dump.rdb".into()),
        )
    })?;
    let dial = if parsed.tls {
        Dial::with_tls(&TlsFiles {
            ca_file: cfg.tls_ca_file.clone(),
            cert_file: cfg.tls_cert_file.clone(),
            key_file: cfg.tls_key_file.clone(),
        })
        .map_err(|f| failed(job, "TLS settings", "cannot use the", f))?
    } else {
        Dial::plain()
    };
    // reuse the job's credentials only for the job's own server, never send them elsewhere
    let auth = match own {
        Ok(own)
            if parsed.password.is_none()
                && parsed.username.is_none()
                && own.endpoint.as_ref() == Some(&parsed.endpoint) =>
        {
            own.auth
        }
        _ => Auth { username: parsed.username, password: parsed.password },
    };
    let shown = display_url(parsed.tls, &parsed.endpoint);
    Ok(Dest::Server(ServerDest { endpoint: parsed.endpoint, auth, dial, shown }))
}

fn check_artifact(job: &str, a: &Artifact) -> Result<()> {
    if a.format != FORMAT_RDB {
        return Err(Error::source_failed(
            job,
            format!("artifact `{}` has format `{}`, not an RDB", a.name, a.format),
            None,
        ));
    }
    Ok(())
}

fn dir_state(job: &str, dir: &Path, opts: &RestoreOptions) -> Result<String> {
    let target = dir.join(DUMP);
    let exists = target.exists();
    if exists && !opts.force {
        return Err(Error::DestinationNotEmpty {
            job: job.to_string(),
            destination: format!("`{}`", target.display()),
            detail: "the file exists".into(),
        });
    }
    let mut action = format!(
        "write {}{}; then, with Redis stopped (a running server overwrites it when it saves), start Redis with `dir {}` and `dbfilename {DUMP}`",
        target.display(),
        if exists { " (replacing the existing file)" } else { "" },
        dir.display()
    );
    let aof = ["appendonlydir", "appendonly.aof"].iter().any(|n| dir.join(n).exists());
    if aof {
        action.push_str("; this directory holds an AOF, which Redis loads instead of dump.rdb while `appendonly yes`: move it aside");
    }
    Ok(action)
}

/// Connect to the destination and read its state.
async fn inspect(job: &str, d: &ServerDest) -> Result<(Conn, Info)> {
    let mut conn =
        d.dial.connect(&d.endpoint, &d.auth).await.map_err(|f| failed(job, &d.shown, "cannot connect to", f))?;
    let info = conn.info().await.map_err(|f| failed(job, &d.shown, "INFO failed on", f))?;
    Ok((conn, info))
}

/// Refuse what cannot or must not be restored into; else say what will happen.
fn judge(job: &str, d: &ServerDest, info: &Info, facts: &Facts, opts: &RestoreOptions) -> Result<String> {
    if info.is_replica() {
        return Err(Error::source_failed(
            job,
            format!(
                "{} is a replica (of {}): it would lose the restored data to its master",
                d.shown,
                info.master().unwrap_or_else(|| "an unknown master".into())
            ),
            Some("restore into the master, or make this server a master first (`REPLICAOF NO ONE`)".into()),
        ));
    }
    if info.loading() {
        return Err(Error::source_failed(
            job,
            format!("{} is still loading its data", d.shown),
            Some("retry when it is done".into()),
        ));
    }
    if let Some(max) = max_rdb_version(&info.version())
        && facts.rdb_version > max
    {
        return Err(Error::source_failed(
            job,
            format!(
                "{} runs redis {}, which reads RDB format up to version {max}; the backup is version {} (redis {})",
                d.shown,
                info.version(),
                facts.rdb_version,
                facts.redis_version
            ),
            Some(format!("restore into a server of version {} or newer", facts.redis_version)),
        ));
    }
    let keys = info.total_keys();
    if keys > 0 && !opts.force {
        let dbs = info.keyspace.iter().filter(|d| d.keys > 0).count();
        return Err(Error::DestinationNotEmpty {
            job: job.to_string(),
            destination: d.shown.clone(),
            detail: format!("{keys} keys in {dbs} {}", if dbs == 1 { "database" } else { "databases" }),
        });
    }
    let replacing = if keys > 0 { format!(", replacing all {keys} keys") } else { String::new() };
    Ok(format!(
        "drctl serves the RDB as a master and the server replicates it (REPLICAOF, full sync{replacing}), then is promoted back (REPLICAOF NO ONE)"
    ))
}

fn facts_of(m: &Manifest) -> Facts {
    serde_json::from_value(m.facts.clone()).unwrap_or_default()
}

pub async fn plan_restore(
    job: &str,
    cfg: &RedisJob,
    m: &Manifest,
    artifact: &Artifact,
    opts: &RestoreOptions,
) -> Result<RestoreStep> {
    check_artifact(job, artifact)?;
    match destination(job, cfg, opts)? {
        Dest::Dir(dir) => Ok(RestoreStep {
            artifact: artifact.name.clone(),
            destination: dir.join(DUMP).display().to_string(),
            action: dir_state(job, &dir, opts)?,
        }),
        Dest::Server(d) => {
            let (_, info) = inspect(job, &d).await?;
            let action = judge(job, &d, &info, &facts_of(m), opts)?;
            Ok(RestoreStep { artifact: artifact.name.clone(), destination: d.shown, action })
        }
    }
}

pub async fn open_sink(
    job: &str,
    cfg: &RedisJob,
    m: &Manifest,
    artifact: &Artifact,
    opts: &RestoreOptions,
) -> Result<Sink> {
    check_artifact(job, artifact)?;
    let size = artifact.plaintext.size;
    match destination(job, cfg, opts)? {
        Dest::Dir(dir) => dir_sink(job, &dir, size, opts).await,
        Dest::Server(d) => {
            let facts = facts_of(m);
            let (mut conn, info) = inspect(job, &d).await?;
            judge(job, &d, &info, &facts, opts)?;
            // the destination connects back to drctl in plain TCP: a TLS-only replication link
            // cannot be served
            match conn.config_get("tls-replication").await {
                Ok(Some(v)) if v == "yes" => {
                    return Err(Error::source_failed(
                        job,
                        format!("{} replicates over TLS only (`tls-replication yes`): drctl cannot serve it", d.shown),
                        Some("restore with `--to-dir DIR` and restart the server from that dump.rdb".into()),
                    ));
                }
                Ok(_) | Err(Failure::NoPerm(_)) | Err(Failure::Server(_)) => {}
                Err(f) => return Err(failed(job, &d.shown, "CONFIG GET failed on", f)),
            }
            // listen where the destination can reach us: the address of our side of this
            // connection (loopback for a local server)
            let ip = conn.local_addr().ip();
            let listener = tokio::net::TcpListener::bind((ip, 0)).await.map_err(|e| Error::Restore {
                job: job.to_string(),
                destination: d.shown.clone(),
                message: format!("cannot listen on {ip} for the destination to replicate from: {e}"),
            })?;
            let feed = super::master::Feed {
                job: job.to_string(),
                shown: d.shown.clone(),
                control: conn,
                listener,
                size,
                expected_keys: facts.keys,
            };
            let (writer, task, commit) = feed.start();
            Ok(Sink::task(writer, task, commit, d.shown))
        }
    }
}

/// `--to-dir`: the RDB goes to a temporary file in DIR, renamed to `dump.rdb` only after the
/// engine's checks passed (and removed otherwise).
async fn dir_sink(job: &str, dir: &Path, size: u64, opts: &RestoreOptions) -> Result<Sink> {
    dir_state(job, dir, opts)?;
    tokio::fs::create_dir_all(dir).await.map_err(|source| Error::WriteFile { path: dir.to_path_buf(), source })?;
    let target = dir.join(DUMP);
    let tmp = dir.join(format!(".{DUMP}.partial-{:06x}", rand::thread_rng().r#gen::<u32>() & 0xff_ffff));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .await
        .map_err(|source| Error::WriteFile { path: tmp.clone(), source })?;
    let (writer, mut reader) = tokio::io::duplex(256 * 1024);
    let (commit_tx, commit_rx) = tokio::sync::oneshot::channel::<()>();
    let (job, dir) = (job.to_string(), dir.to_path_buf());
    let destination = target.display().to_string();
    let task = tokio::spawn(async move {
        let fail =
            |message: String| Error::Restore { job: job.clone(), destination: target.display().to_string(), message };
        let written = async {
            let n = tokio::io::copy(&mut reader, &mut file)
                .await
                .map_err(|e| fail(format!("writing `{}`: {e}", tmp.display())))?;
            file.flush().await.map_err(|e| fail(e.to_string()))?;
            Ok::<u64, Error>(n)
        }
        .await;
        let n = match written {
            Ok(n) => n,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        if commit_rx.await.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(fail("not every check passed: nothing was written".into()));
        }
        if n != size {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(fail(format!("received {n} bytes, the manifest says {size}")));
        }
        let done = async {
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&tmp, &target).await?;
            tokio::fs::File::open(&dir).await?.sync_all().await
        }
        .await;
        if let Err(e) = done {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(fail(format!("cannot put `{}` in place: {e}", target.display())));
        }
        Ok(())
    });
    Ok(Sink::task(writer, task, commit_tx, destination))
}
