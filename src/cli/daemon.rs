//! `drctl daemon`: the scheduler plus the HTTP API, in one straight, logged line.
//!
//! Start: open (and migrate) the catalog, seed the job metrics from it, start the scheduler's
//! loops, serve the API on `[api] listen`. Stop, on SIGTERM or SIGINT: take no new runs, wait up
//! to `[daemon] grace` (default 5m) for the running ones, abort what is left (an aborted backup is
//! not committed: the manifest is written last), stop the API, exit. A second signal cuts the
//! grace period short.
//!
//! Exit codes: 0 after a clean drain; 1 when runs had to be aborted or the API could not serve;
//! 2 for configuration errors.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::scheduler::{Scheduler, Settings};
use crate::{Error, api};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Test-only extension: allow 6-field cron expressions whose first field is seconds (e.g.
    /// `*/2 * * * * *`) in job schedules. Not for real configurations: the end-to-end tests use
    /// it so that they need not wait for minute boundaries.
    #[arg(long, hide = true)]
    pub seconds_schedules: bool,
}

pub async fn run(engine: Engine) -> Result<i32, Error> {
    let engine = Arc::new(engine);
    let config = &engine.config;
    let grace = config.daemon.grace();
    let settings = Settings::from_config(config);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.path.display(),
        jobs = config.jobs.len(),
        timezone = settings.timezone.iana_name().unwrap_or("UTC"),
        max_concurrent = settings.max_concurrent,
        "daemon starting"
    );
    let catalog = engine.catalog().await?;
    if catalog.is_postgres() {
        tracing::info!(catalog = %catalog.url(), "catalog on PostgreSQL: replicas share it, one runs each job (advisory locks)");
    } else {
        tracing::info!(catalog = %catalog.url(), "catalog on SQLite: run only one daemon against it");
    }

    let metrics = Arc::new(Metrics::new());
    engine.notifier.on_failure({
        let metrics = metrics.clone();
        Box::new(move |channel| crate::metrics::Event::NotifyFailed { channel }.emit(Some(&metrics)))
    });
    metrics.daemon_started(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
    let states = crate::metrics::catalog_states(&engine).await;
    for state in &states {
        metrics.set_job(state);
    }
    // the Pushgateway's groups for these jobs now say what the catalog says, not what a run
    // before the daemon last pushed (in the background: a slow Pushgateway never delays the start)
    tokio::spawn({
        let engine = engine.clone();
        async move { crate::scheduler::push(&engine, &states).await }
    });
    let scheduler = Scheduler::new(engine.clone(), metrics.clone(), catalog.clone(), settings);

    let encode = metrics.clone();
    let state = api::ApiState::new(
        Arc::new(config.clone()),
        catalog.clone(),
        Arc::new(move || encode.encode()),
        Arc::new(scheduler.clone()),
    )?;
    let listener = api::bind(&api::listen_addr(config), config).await?;
    let api_stop = CancellationToken::new();
    let mut api_task = tokio::spawn({
        let stop = api_stop.clone();
        async move { api::serve_on(listener, state, stop).await }
    });
    scheduler.start();
    let (wal_stop, receivers) = start_wal_receivers(&engine, &metrics);
    tokio::spawn({
        let scheduler = scheduler.clone();
        async move { scheduler.catch_up().await }
    });
    tracing::info!("daemon started");

    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot watch SIGTERM/SIGINT; stopping");
            scheduler.shutdown(std::time::Duration::ZERO, std::future::pending()).await;
            return Ok(1);
        }
    };
    let mut api_failed = false;
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", grace = %humantime::format_duration(grace), "stopping: no new runs"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", grace = %humantime::format_duration(grace), "stopping: no new runs"),
        r = &mut api_task => {
            api_failed = true;
            match r {
                Ok(Err(e)) => tracing::error!(error = %e, "api: cannot serve; stopping"),
                Ok(Ok(())) => tracing::error!("api: stopped unexpectedly; stopping"),
                Err(e) => tracing::error!(error = %e, "api: task failed; stopping"),
            }
        }
    }

    let second_signal = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: aborting the running jobs now");
    };
    let drain = scheduler.shutdown(grace, second_signal).await;
    stop_wal_receivers(wal_stop, receivers, grace).await;
    // aborted backups close their sources (after-hooks) on tasks of their own: let them finish
    let open = crate::engine::run::wait_for_abandoned_sessions(std::time::Duration::from_secs(60)).await;
    if open > 0 {
        tracing::error!(sessions = open, "after-hooks of aborted runs did not finish within 60s: check the sources");
    }
    api_stop.cancel();
    if !api_failed {
        let _ = api_task.await;
    }
    if drain.aborted > 0 {
        tracing::warn!(aborted = drain.aborted, "daemon stopped; aborted runs committed nothing");
    } else {
        tracing::info!("daemon stopped");
    }
    Ok(if drain.aborted > 0 || api_failed { 1 } else { 0 })
}

/// One WAL receiver per physical PostgreSQL job (what `drctl wal stream JOB` runs), for as long as
/// the daemon runs. Several daemon replicas each start one: the slot admits one at a time, the
/// others stand by quietly (retrying every few seconds) and take over when it goes away.
fn start_wal_receivers(
    engine: &Arc<Engine>,
    metrics: &Arc<Metrics>,
) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinSet<()>) {
    use crate::jobs::JobSpec;
    use crate::jobs::postgres::Method;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut set = tokio::task::JoinSet::new();
    for job in engine.config.jobs.values() {
        let JobSpec::Postgres(pg) = &job.spec else { continue };
        if pg.method != Method::Physical {
            continue;
        }
        let (engine, job, pg, stop) = (engine.clone(), job.clone(), pg.clone(), stop.clone());
        let metrics = metrics.clone();
        let report: crate::jobs::postgres::physical::receiver::Reporter = Arc::new(move |s| metrics.wal.set(&s));
        tracing::info!(job = %job.name, "starting the WAL receiver");
        set.spawn(async move {
            if let Err(e) = crate::jobs::postgres::physical::receiver::run(&engine, &job, &pg, stop, report).await {
                tracing::error!(job = %job.name, error = %e, "the WAL receiver stopped");
            }
        });
    }
    (stop_tx, set)
}

/// Tell the receivers to ship what they hold and stop; wait for them up to `grace`.
async fn stop_wal_receivers(
    stop: tokio::sync::watch::Sender<bool>,
    mut set: tokio::task::JoinSet<()>,
    grace: std::time::Duration,
) {
    if set.is_empty() {
        return;
    }
    let _ = stop.send(true);
    let drained = tokio::time::timeout(grace, async { while set.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            "WAL receivers did not finish shipping within the grace period; the slot keeps what they did not confirm"
        );
        set.abort_all();
    }
}
