//! The restore drill of a physical backup: lay out the base backup in the drill's scratch
//! directory, start a throwaway server of the source's major version on it, let it replay every
//! archived WAL segment (fetched through the drill's own relay, see [`super::relay`]) until it
//! promotes itself, then run the job's `checks`. The drill reports the recovery point reached
//! (LSN and the last transaction's time, from the server's log) and the time from the first
//! stored byte to a writable server: the measured recovery time. A WAL gap or a failed replay
//! keeps the server from starting and fails the drill with the server's own words.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::base::PhysicalFacts;
use super::recover::{Recovery, RecoveryAction, RecoveryTarget};
use super::relay;
use crate::drill::context::{Drill, run_tool};
use crate::jobs::RestoreOptions;
use crate::jobs::postgres::drill::{Cluster, cluster_user, connect, connect_timeout, run_checks};
use crate::jobs::postgres::{Conn, PostgresJob, major_of, parse_tool_version};

/// The longest a drill waits for the scratch server to replay the archive and promote.
const REPLAY_LIMIT: Duration = Duration::from_secs(6 * 3600);

/// Server binaries (`initdb`, `pg_ctl`, `postgres`) of major version `major`.
async fn server_bin(major: u32, configured: &[Option<&Path>]) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = configured.iter().flatten().map(|p| p.to_path_buf()).collect();
    dirs.push(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
    for d in dirs {
        if !d.join("pg_ctl").is_file() {
            continue;
        }
        let out = tokio::process::Command::new(d.join("postgres")).arg("--version").output().await.ok()?;
        let v = parse_tool_version(&String::from_utf8_lossy(&out.stdout)).unwrap_or_default();
        if major_of(&v) == major {
            return Some(d);
        }
    }
    None
}

/// `redo done at 0/3000060 …` and `last completed transaction was at log time …` from a log.
fn recovery_point(log: &str) -> (Option<String>, Option<String>) {
    let after = |marker: &str| log.lines().rev().find_map(|l| l.split_once(marker).map(|(_, r)| r.trim().to_string()));
    let lsn = after("redo done at ").map(|r| r.split_whitespace().next().unwrap_or_default().to_string());
    (lsn, after("last completed transaction was at log time "))
}

pub async fn drill(d: &mut Drill<'_>, pg: &PostgresJob) {
    let Some(facts) = PhysicalFacts::of(&d.manifest.facts) else { return };
    let verify = d.job.common.verify.clone().unwrap_or_default();
    let major = major_of(&facts.server_version);
    let Some(bin) = server_bin(major, &[verify.pg_bin_dir.as_deref(), pg.bin_dir.as_deref()]).await else {
        d.error(
            "scratch server",
            format!("a physical backup replays only on PostgreSQL {major}, and no server binaries of that version were found"),
        );
        d.hint(format!(
            "install the PostgreSQL {major} server (Debian: postgresql-{major}) or set `verify.pg_bin_dir` to its bin directory"
        ));
        return;
    };
    let user = cluster_user(verify.scratch_user.as_deref());
    let dir = d.scratch.join("pg");
    let spool = d.scratch.join("relay");
    for p in [&dir, &spool] {
        if let Err(e) = std::fs::create_dir_all(p) {
            d.error("scratch directory", format!("cannot create `{}`: {e}", p.display()));
            return;
        }
    }
    if let Some(u) = &user
        && let Err(e) = run_tool(Path::new("chown"), &[format!("{u}:"), dir.display().to_string()], None).await
    {
        d.error("scratch directory", e);
        return;
    }
    let socket = dir.join("wal-relay.sock");
    let listener = match relay::bind(&socket, user.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            d.error("WAL relay", format!("cannot listen on `{}`: {e}", socket.display()));
            return;
        }
    };
    let data = dir.join("data");
    let config = std::fs::canonicalize(&d.engine.config.path).unwrap_or_else(|_| d.engine.config.path.clone());
    let recovery =
        Recovery { target: RecoveryTarget::Latest, action: RecoveryAction::Promote, config, relay: Some(socket) };
    let opts =
        RestoreOptions { to_dir: Some(data.clone()), no_owner: true, recovery: Some(recovery), ..Default::default() };
    if d.restore(super::base::ARTIFACT, opts, None).await.is_none() {
        return;
    }
    if let Some(u) = &user {
        match run_tool(Path::new("chown"), &["-R".into(), format!("{u}:"), data.display().to_string()], None).await {
            Ok((true, _)) => {}
            Ok((false, out)) | Err(out) => {
                d.error("scratch directory", format!("cannot give the restored data to `{u}`: {out}"));
                return;
            }
        }
    }

    let clock = Instant::now();
    let (engine, job) = (d.engine, d.job);
    let limit = connect_timeout(d);
    let replay = async {
        let cluster = Cluster::launch(&dir, data.clone(), &bin, user.as_deref(), REPLAY_LIMIT.as_secs() as u32).await?;
        let deadline = Instant::now() + REPLAY_LIMIT;
        loop {
            let mut c = connect(&cluster.url("postgres"), limit).await?;
            let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                .fetch_one(&mut c)
                .await
                .map_err(|e| format!("cannot ask the scratch server: {e}"))?;
            if !in_recovery {
                return Ok::<_, String>(cluster);
            }
            if Instant::now() > deadline {
                return Err(format!("still replaying after {}", humantime::format_duration(REPLAY_LIMIT)));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let replayed = tokio::select! {
        r = replay => r,
        never = relay::serve(&listener, engine, job, &spool) => match never {},
    };
    let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
    let mut cluster = match replayed {
        Ok(c) => c,
        Err(e) => {
            let said: Vec<&str> =
                log.lines().filter(|l| l.contains("drctl:") || l.contains("FATAL") || l.contains("PANIC")).collect();
            let said = said[said.len().saturating_sub(4)..].join(" / ");
            d.error("replay", format!("the scratch server did not recover: {e}; its log: {said}"));
            d.hint("read the WAL archive's state in the receiver's log; a GAP needs a base backup taken after it");
            return;
        }
    };
    d.add_restore_time(clock);
    let (lsn, at) = recovery_point(&log);
    d.info(
        "recovery point",
        format!(
            "replayed WAL to {} (last transaction at {}); the base backup was consistent at {}",
            lsn.as_deref().unwrap_or("?"),
            at.as_deref().unwrap_or("? (no transaction after the base backup)"),
            facts.stop_lsn
        ),
    );
    d.destinations.push(format!("scratch server PostgreSQL {major} on port {}", cluster.port));
    let db = Conn::from_job(&job.name, pg).map(|c| c.database()).unwrap_or_else(|_| "postgres".into());
    match connect(&cluster.url(&db), limit).await {
        Ok(mut c) => run_checks(d, &mut c, &db, &verify.checks).await,
        Err(e) => d.error(format!("database `{db}`"), format!("cannot connect to the recovered server: {e}")),
    }
    cluster.stop().await;
}

#[cfg(test)]
mod tests {
    use super::recovery_point;

    #[test]
    fn reads_the_recovery_point_from_the_log() {
        let log = "LOG:  redo starts at 0/2000028\nLOG:  redo done at 0/3000140 system usage: CPU: user: 0.00 s\n\
                   LOG:  last completed transaction was at log time 2026-12-05 12:40:01.123+00\nLOG:  database system is ready";
        let (lsn, at) = recovery_point(log);
        assert_eq!(lsn.as_deref(), Some("0/3000140"));
        assert_eq!(at.as_deref(), Some("2026-12-05 12:40:01.123+00"));
        assert_eq!(recovery_point("nothing"), (None, None));
    }
}
