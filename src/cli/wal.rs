//! `drctl wal stream JOB` and `drctl wal fetch JOB NAME PATH` (physical PostgreSQL jobs).

use std::path::PathBuf;

use super::Printer;
use crate::Error;
use crate::engine::Engine;
use crate::jobs::postgres::physical::{receiver, recover};
use crate::jobs::postgres::{Method, PostgresJob};
use crate::jobs::{JobConfig, JobSpec};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Stream WAL from a physical job's replication slot to its targets, until SIGTERM/SIGINT
    /// (what the daemon runs for each physical job)
    Stream {
        /// A postgres job with `method = "physical"`
        job: String,
    },
    /// Copy archived WAL file NAME to PATH: PostgreSQL's `restore_command` (written by `restore
    /// --to-dir`). Exit 1: not archived (the end of the archive); 126: it cannot be served (a
    /// gap, damaged copies, no target), which stops recovery instead of ending it early
    Fetch {
        job: String,
        /// `%f`: a segment (`000000010000000000000002`) or a history file (`00000002.history`)
        name: String,
        /// `%p`: where the server wants it
        path: PathBuf,
    },
    /// `wal fetch` through a drill's relay socket (the drill's scratch server runs as a user that
    /// cannot read the config): reads no config. Exit codes as `wal fetch`
    #[command(hide = true)]
    Relay { socket: PathBuf, name: String, path: PathBuf },
}

/// `wal relay`: needs no config (see [`Command::Relay`]).
pub fn relay(socket: &std::path::Path, name: &str, path: &std::path::Path) -> i32 {
    match crate::jobs::postgres::physical::relay::request(socket, name, path) {
        crate::jobs::postgres::physical::relay::Relayed::Written => 0,
        crate::jobs::postgres::physical::relay::Relayed::Missing => 1,
        crate::jobs::postgres::physical::relay::Relayed::Failed(e) => {
            eprintln!("drctl: cannot serve WAL file {name}: {e}");
            FETCH_FAILED
        }
    }
}

/// Exit code for a WAL file that cannot be served: PostgreSQL aborts recovery on 126 and above
/// (as for "command not executable") instead of taking it for the end of the archive.
pub const FETCH_FAILED: i32 = 126;

fn physical<'a>(engine: &'a Engine, name: &str) -> Result<(&'a JobConfig, &'a PostgresJob), Error> {
    let job = engine.config.job(name)?;
    match &job.spec {
        JobSpec::Postgres(pg) if pg.method == Method::Physical => Ok((job, pg)),
        _ => Err(Error::Usage {
            flag: "JOB".into(),
            value: name.into(),
            message: "not a physical PostgreSQL job".into(),
            hint: "WAL archiving needs `kind = \"postgres\"` with `method = \"physical\"`".into(),
        }),
    }
}

/// Metrics of a standalone receiver: pushed (with `[pushgateway]`) to the job's WAL group on
/// every report, a failed push logged and never fatal.
fn pushing_reporter(engine: &Engine) -> receiver::Reporter {
    let pusher = engine.config.pushgateway.as_ref().and_then(|p| match crate::metrics::push::Pusher::new(&p.url) {
        Ok(p) => Some(std::sync::Arc::new(p)),
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    });
    std::sync::Arc::new(move |status: crate::metrics::wal::WalStatus| {
        let Some(pusher) = pusher.clone() else { return };
        let m = crate::metrics::wal::WalMetrics::default();
        m.set(&status);
        let body = m.encode();
        tokio::spawn(async move {
            if let Err(e) = pusher.push_wal(&status.job, body).await {
                tracing::warn!("{e}");
            }
        });
    })
}

pub async fn run(engine: &Engine, command: &Command, printer: &Printer) -> Result<i32, Error> {
    match command {
        Command::Stream { job } => {
            let (job, pg) = physical(engine, job)?;
            let (stop_tx, stop) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                tracing::info!("stopping: shipping what was received, then exiting");
                let _ = stop_tx.send(true);
            });
            receiver::run(engine, job, pg, stop, pushing_reporter(engine)).await?;
            Ok(0)
        }
        Command::Relay { socket, name, path } => Ok(relay(socket, name, path)),
        Command::Fetch { job, name, path } => {
            let (job, _) = physical(engine, job)?;
            match recover::fetch(engine, job, name, path).await {
                Ok(recover::Fetched::Written { key, target }) => {
                    tracing::info!(job = %job.name, "restored WAL {name} from `{key}` on target `{target}`");
                    Ok(0)
                }
                Ok(recover::Fetched::Missing) => {
                    if !printer.quiet {
                        eprintln!(
                            "drctl: job `{}`: WAL file {name} is not archived (the end of the archive)",
                            job.name
                        );
                    }
                    Ok(1)
                }
                Err(e) => {
                    eprintln!("drctl: job `{}`: cannot serve WAL file {name}: {e}", job.name);
                    Ok(FETCH_FAILED)
                }
            }
        }
    }
}
