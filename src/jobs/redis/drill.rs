//! Redis drill: restore the RDB as `dump.rdb` into the drill's scratch directory (`restore
//! --to-dir`, the same code an offline restore uses), start a throwaway `redis-server` on a free
//! loopback port that loads it, and compare the keys per database with the manifest's facts.
//!
//! The measured restore time includes the server loading the file: that is when the data is
//! usable. Keys with a TTL that expired since the backup are dropped on load; a shortfall no larger
//! than the database's keys-with-TTL is a warning, anything else an error.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::drill::context::Drill;
use crate::jobs::RestoreOptions;
use crate::jobs::redis::{DbKeys, FORMAT_RDB, Facts};

/// How long a throwaway server may take to load the RDB.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// One RESP reply, as much as a drill needs.
#[derive(Debug)]
enum Reply {
    Status(String),
    Error(String),
    Bulk(Vec<u8>),
    Other,
}

async fn command(s: &mut BufReader<TcpStream>, args: &[&str]) -> std::io::Result<Reply> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.get_mut().write_all(req.as_bytes()).await?;
    let mut line = String::new();
    s.read_line(&mut line).await?;
    let line = line.trim_end();
    Ok(match line.split_at_checked(1) {
        Some(("+", rest)) => Reply::Status(rest.to_string()),
        Some(("-", rest)) => Reply::Error(rest.to_string()),
        Some(("$", n)) => {
            let n: i64 = n.parse().unwrap_or(-1);
            if n < 0 {
                Reply::Bulk(Vec::new())
            } else {
                let mut buf = vec![0u8; n as usize + 2];
                s.read_exact(&mut buf).await?;
                buf.truncate(n as usize);
                Reply::Bulk(buf)
            }
        }
        _ => Reply::Other,
    })
}

/// `db0:keys=3,expires=1,avg_ttl=0` lines → per-database counts.
/// The keyspace section of `INFO`, sorted by database (the job's own INFO parser).
fn parse_keyspace(text: &str) -> Vec<DbKeys> {
    let mut out = crate::jobs::redis::parse_info(text).keyspace;
    out.sort_by_key(|d| d.db);
    out
}

/// A redis-server of the drill, killed on drop.
struct Server {
    /// Killed when the server is dropped (`kill_on_drop`).
    _child: tokio::process::Child,
    port: u16,
}

impl Server {
    async fn start(dir: &Path) -> Result<Server, String> {
        let mut last = String::new();
        for _ in 0..3 {
            let port = crate::drill::context::free_port().map_err(|e| format!("no free port: {e}"))?;
            let log = dir.join(format!("redis-{port}.log"));
            let mut child = tokio::process::Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--daemonize", "no"])
                .args(["--appendonly", "no", "--save", "", "--dbfilename", "dump.rdb", "--protected-mode", "yes"])
                .arg("--dir")
                .arg(dir)
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start `redis-server` (install redis-server): {e}"))?;
            let deadline = Instant::now() + LOAD_TIMEOUT;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!(
                        "redis-server exited ({status}): {}",
                        crate::tool_output::tail(&std::fs::read_to_string(&log).unwrap_or_default(), 6, "no output")
                    );
                    break;
                }
                if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await {
                    let mut s = BufReader::new(stream);
                    match command(&mut s, &["PING"]).await {
                        Ok(Reply::Status(p)) if p == "PONG" => return Ok(Server { _child: child, port }),
                        Ok(Reply::Error(e)) if e.starts_with("LOADING") => {}
                        Ok(other) => last = format!("unexpected answer to PING: {other:?}"),
                        Err(e) => last = e.to_string(),
                    }
                }
                if Instant::now() > deadline {
                    let _ = child.kill().await;
                    return Err(format!("redis-server did not get ready within {LOAD_TIMEOUT:?}: {last}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !last.contains("Address already in use") {
                break;
            }
        }
        Err(last)
    }

    async fn keyspace(&self) -> Result<Vec<DbKeys>, String> {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).await.map_err(|e| e.to_string())?;
        let mut s = BufReader::new(stream);
        match command(&mut s, &["INFO", "keyspace"]).await.map_err(|e| e.to_string())? {
            Reply::Bulk(b) => Ok(parse_keyspace(&String::from_utf8_lossy(&b))),
            other => Err(format!("unexpected answer to INFO: {other:?}")),
        }
    }
}

/// `(subject, message)` pairs.
pub type Mismatches = Vec<(String, String)>;

/// Compare restored keys per database with the facts; returns (errors, warnings) as messages.
pub fn compare_keys(want: &[DbKeys], got: &[DbKeys]) -> (Mismatches, Mismatches) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let dbs: std::collections::BTreeSet<u32> = want.iter().chain(got).map(|d| d.db).collect();
    for db in dbs {
        let w = want.iter().find(|d| d.db == db).cloned().unwrap_or(DbKeys { db, ..Default::default() });
        let g = got.iter().find(|d| d.db == db).cloned().unwrap_or(DbKeys { db, ..Default::default() });
        let subject = format!("db{db}");
        if g.keys == w.keys {
            continue;
        }
        if g.keys < w.keys && w.keys - g.keys <= w.expires {
            warnings.push((
                subject,
                format!(
                    "{} keys loaded, the manifest says {} ({} had a TTL: they may have expired since the backup)",
                    g.keys, w.keys, w.expires
                ),
            ));
        } else {
            errors.push((subject, format!("{} keys loaded, the manifest says {}", g.keys, w.keys)));
        }
    }
    (errors, warnings)
}

/// Drill a redis backup.
pub async fn drill(d: &mut Drill<'_>) {
    let facts: Facts = serde_json::from_value(d.manifest.facts.clone()).unwrap_or_default();
    let Some(artifact) = d.manifest.artifacts.iter().find(|a| a.format == FORMAT_RDB).map(|a| a.name.clone()) else {
        d.error("backup", "has no RDB artifact");
        return;
    };
    let dir = d.scratch.join("redis");
    let opts = RestoreOptions { to_dir: Some(dir.clone()), ..Default::default() };
    if d.restore(&artifact, opts, None).await.is_none() {
        return;
    }
    let started = Instant::now();
    let server = match Server::start(&dir).await {
        Ok(s) => s,
        Err(e) => {
            d.error("scratch server", format!("the RDB did not load into a throwaway redis-server: {e}"));
            return;
        }
    };
    d.add_restore_time(started);
    d.destinations.push(format!("{artifact} → redis://127.0.0.1:{} (throwaway)", server.port));
    match server.keyspace().await {
        Ok(got) => {
            let (errors, warnings) = compare_keys(&facts.databases, &got);
            let ok = errors.is_empty();
            d.mismatches(crate::finding::Severity::Error, errors, "keys");
            d.mismatches(crate::finding::Severity::Warning, warnings, "keys");
            if ok {
                let total: u64 = got.iter().map(|k| k.keys).sum();
                d.info("keys", format!("{total} keys in {} databases: as the manifest says", got.len()));
            }
        }
        Err(e) => d.error("scratch server", format!("cannot read INFO keyspace: {e}")),
    }
    drop(server);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_comparison() {
        let k = |db, keys, expires| DbKeys { db, keys, expires };
        let got = parse_keyspace("# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=0\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n");
        assert_eq!(got, vec![k(0, 10, 2), k(3, 1, 0)]);
        assert_eq!(compare_keys(&[k(0, 10, 2), k(3, 1, 0)], &got), (vec![], vec![]));
        // two keys with a TTL gone: a warning
        let (e, w) = compare_keys(&[k(0, 12, 2), k(3, 1, 0)], &got);
        assert!(e.is_empty() && w.len() == 1, "{e:?} {w:?}");
        // a database missing, more keys than the facts: errors
        let (e, _) = compare_keys(&[k(0, 10, 2), k(5, 4, 0)], &got);
        assert_eq!(e.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), ["db3", "db5"]);
    }
}
