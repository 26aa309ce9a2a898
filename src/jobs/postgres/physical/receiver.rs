//! `drctl wal stream JOB`: the WAL receiver of a physical job.
//!
//! It streams WAL from the job's replication slot and ships it to every target of the job: each
//! complete segment as soon as it is complete, the segment being filled as a `.partial` at least
//! every `wal.max_delay` (so the data a lost server takes with it is bounded by that delay, not by
//! 16 MiB of WAL). The slot's flush position is confirmed to the server only for segments stored
//! on every target, so a receiver killed at any moment resumes from the slot without a gap: the
//! server keeps everything not yet confirmed. A slot the server invalidated
//! (`max_slot_wal_keep_size`) is a gap: logged as an error, counted, and the slot is created
//! again; only a new base backup is restorable past it.
//!
//! Shipping runs on its own task, one object at a time and in order (a partial never lands after
//! its complete segment), at most [`QUEUE`] objects behind the stream; a target that fails is
//! retried with backoff, holding the slot (and so the server's WAL) until it is back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sqlx::Row;
use tokio::sync::{mpsc, watch};

use super::lsn::{Lsn, Segments, history_name, parse_size_setting};
use super::replication::{ReplError, Replication, Streamed};
use super::store;
use crate::engine::Engine;
use crate::jobs::JobConfig;
use crate::jobs::postgres::{Conn, PostgresJob};
use crate::metrics::wal::WalStatus;
use crate::pipeline::EncodeParams;
use crate::targets::Target;
use crate::{Error, Result};

/// PostgreSQL's `object_in_use`, as the slot of another connected receiver answers.
const SLOT_IN_USE: &str = "SQLSTATE 55006";
/// How often a receiver standing by (the slot in use elsewhere) tries to take over.
const STANDBY_RETRY: Duration = Duration::from_secs(5);

/// Objects waiting to be shipped before the stream waits for the targets.
const QUEUE: usize = 2;
/// How often the receiver tells the server where it is even when nothing changed (well inside
/// the server's `wal_sender_timeout`, 60 s by default).
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Called with the receiver's state every few seconds (metrics).
pub type Reporter = Arc<dyn Fn(WalStatus) + Send + Sync>;

/// Positions and times behind the WAL metrics, shared by the stream and the shipping task.
#[derive(Debug, Default)]
struct Tracker {
    received: Lsn,
    server_end: Lsn,
    /// Stored on every target up to here (complete segments and partials).
    archived: Lsn,
    /// Confirmed to the slot (complete segments).
    flushed: Lsn,
    /// Unix time up to which everything the server had written is archived.
    archived_as_of: Option<f64>,
    gap_at: Option<f64>,
}

fn unix_now() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
}

impl Tracker {
    fn status(&mut self, job: &str, max_delay: Duration) -> WalStatus {
        let now = unix_now();
        // nothing pending: the archive is as new as the server
        if self.archived >= self.received && self.received >= self.server_end && self.received.0 > 0 {
            self.archived_as_of = Some(now);
        }
        WalStatus {
            job: job.to_string(),
            max_delay_seconds: max_delay.as_secs_f64(),
            last_archived: self.archived_as_of,
            delay_seconds: self.archived_as_of.map(|t| (now - t).max(0.0)).unwrap_or(0.0),
            delay_bytes: self.server_end.0.saturating_sub(self.archived.0),
            gap_detected: self.gap_at,
            slot_retained_bytes: self.server_end.0.saturating_sub(self.flushed.0),
        }
    }
}

type Shared = Arc<std::sync::Mutex<Tracker>>;

fn track(t: &Shared, f: impl FnOnce(&mut Tracker)) {
    if let Ok(mut g) = t.lock() {
        f(&mut g);
    }
}

/// One object for the targets.
struct Ship {
    key: String,
    plain: Bytes,
    /// A complete segment: once stored, the slot may move to here.
    completes: Option<Lsn>,
    /// Superseded partials of the same segment, deleted once this is stored.
    supersedes: Vec<String>,
    what: String,
    /// Once stored, the archive reaches this position, which was received at `cut_at`.
    reaches: Lsn,
    cut_at: f64,
}

/// Run the receiver until `stop` turns true: reconnects after any failure (server restart,
/// network cut) with backoff from 1 s to 30 s, resuming from the slot.
pub async fn run(
    engine: &Engine,
    job: &JobConfig,
    pg: &PostgresJob,
    mut stop: watch::Receiver<bool>,
    report: Reporter,
) -> Result<()> {
    let targets = open_targets(engine, job)?;
    let params = engine.encode_params()?;
    let tracker: Shared = Arc::default();
    let mut backoff = Duration::from_secs(1);
    let mut standing_by = false;
    loop {
        let began = Instant::now();
        match session(&job.name, pg, &targets, &params, stop.clone(), &tracker, &report).await {
            Ok(()) => return Ok(()),
            // another receiver (a second daemon replica) streams from the slot: wait to take over,
            // quietly, and report nothing (the active one's metrics are the true ones)
            Err(e) if e.to_string().contains(SLOT_IN_USE) => {
                if !standing_by {
                    tracing::info!(
                        job = %job.name,
                        "replication slot `{}` is in use by another WAL receiver (another daemon replica?): standing by, \
                         taking over when it goes away",
                        pg.wal_slot(&job.name)
                    );
                }
                standing_by = true;
                tokio::select! {
                    () = tokio::time::sleep(STANDBY_RETRY) => continue,
                    _ = stop.changed() => return Ok(()),
                }
            }
            Err(e) => {
                standing_by = false;
                tracing::warn!(job = %job.name, "WAL receiver: {e}; reconnecting in {}", humantime::format_duration(backoff))
            }
        }
        if began.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        if let Ok(mut t) = tracker.lock() {
            report(t.status(&job.name, pg.wal_max_delay()));
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

fn open_targets(engine: &Engine, job: &JobConfig) -> Result<Vec<Arc<Target>>> {
    job.common.targets.iter().map(|t| engine.target(t)).collect()
}

fn source_err(job: &str, message: impl Into<String>) -> Error {
    Error::source_failed(job, message.into(), None)
}

fn repl_err(job: &str, e: ReplError) -> Error {
    Error::source_failed(job, format!("replication connection: {e}"), None)
}

/// The slot's restart position, creating the slot if missing; a slot the server invalidated is
/// recreated and reported as a gap.
async fn prepare_slot(job: &str, conn: &Conn, slot: &str) -> Result<(Lsn, bool)> {
    let mut c = conn.connect(job).await?;
    let read = "SELECT restart_lsn::text, wal_status FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'physical'";
    let mut gap = false;
    for _ in 0..2 {
        let row = sqlx::query(read)
            .bind(slot)
            .fetch_optional(&mut c)
            .await
            .map_err(|e| source_err(job, format!("cannot read replication slot `{slot}`: {e}")))?;
        match row {
            Some(r) if r.get::<Option<String>, _>(1).as_deref() == Some("lost") => {
                tracing::error!(
                    job,
                    slot,
                    "the server invalidated replication slot `{slot}` (max_slot_wal_keep_size): WAL was removed before it \
                     was archived, a GAP; recreating the slot; take a new base backup (`drctl run {job}`) to be able to \
                     recover past this point"
                );
                gap = true;
                sqlx::query("SELECT pg_drop_replication_slot($1)")
                    .bind(slot)
                    .execute(&mut c)
                    .await
                    .map_err(|e| source_err(job, format!("cannot drop invalidated slot `{slot}`: {e}")))?;
            }
            Some(r) => {
                let lsn: Option<String> = r.get(0);
                if let Some(lsn) = lsn.and_then(|l| l.parse().ok()) {
                    return Ok((lsn, gap));
                }
                return Err(source_err(
                    job,
                    format!("replication slot `{slot}` reserves no WAL (restart_lsn is NULL)"),
                ));
            }
            None => {}
        }
        tracing::info!(
            job,
            slot,
            "creating physical replication slot `{slot}` (keeps the server's WAL until archived)"
        );
        sqlx::query("SELECT pg_create_physical_replication_slot($1, true)")
            .bind(slot)
            .execute(&mut c)
            .await
            .map_err(|e| {
                source_err(
                    job,
                    format!("cannot create replication slot `{slot}`: {e} (the role needs REPLICATION; `max_replication_slots` must have room)"),
                )
            })?;
    }
    Err(source_err(job, format!("replication slot `{slot}` could not be prepared")))
}

async fn session(
    job: &str,
    pg: &PostgresJob,
    targets: &[Arc<Target>],
    params: &EncodeParams,
    mut stop: watch::Receiver<bool>,
    tracker: &Shared,
    report: &Reporter,
) -> Result<()> {
    let conn = Conn::from_job(job, pg)?;
    let slot = pg.wal_slot(job);
    let (restart, slot_gap) = prepare_slot(job, &conn, &slot).await?;
    let mut repl =
        tokio::time::timeout(conn.connect_timeout, Replication::connect(&conn.url, conn.password.as_ref(), &slot))
            .await
            .map_err(|_| {
                source_err(job, format!("cannot connect to {}: no answer (`connect_timeout`)", conn.display()))
            })?
            .map_err(|e| repl_err(job, e))?;
    let system = repl.identify_system().await.map_err(|e| repl_err(job, e))?;
    let size = repl.query("SHOW wal_segment_size").await.map_err(|e| repl_err(job, e))?;
    let size = size.first().and_then(|r| r.first().cloned().flatten()).unwrap_or_default();
    let seg = parse_size_setting(&size)
        .and_then(Segments::new)
        .ok_or_else(|| source_err(job, format!("unexpected wal_segment_size `{size}`")))?;
    let tli = system.timeline;
    if tli > 1 {
        let (name, content) = repl.timeline_history(tli).await.map_err(|e| repl_err(job, e))?;
        let name = if name.is_empty() { history_name(tli) } else { name };
        let stored = store::encode(Bytes::from(content), params).await?;
        store::put_everywhere(targets, &store::history_key(job, &name), stored).await?;
    }

    // resume at the start of the slot's segment; what each target already holds tells gaps
    let first = seg.segno(restart);
    let mut partials: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut gaps = u64::from(slot_gap);
    for t in targets {
        let listed = store::list_timeline(t, job, tli, seg).await?;
        if let Some(reach) = listed.frontier(seg)
            && reach < seg.start(first)
        {
            gaps += 1;
            tracing::error!(
                job,
                target = t.name(),
                "WAL GAP on target `{}`: archived up to {reach}, the server keeps WAL only from {} (segment {}); \
                 recovery cannot pass this point: take a new base backup (`drctl run {job}`)",
                t.name(),
                seg.start(first),
                seg.name(tli, first)
            );
        }
        for (n, keys) in listed.partial.range(first..) {
            partials.entry(*n).or_default().extend(keys.values().cloned());
        }
    }

    if gaps > 0 {
        track(tracker, |t| t.gap_at = Some(unix_now()));
        tracing::error!(
            job,
            gaps,
            "the WAL archive has a gap: point-in-time recovery stops before it until a new base backup"
        );
    }
    let start = seg.start(first);
    track(tracker, |t| {
        t.received = start;
        t.flushed = restart;
        t.archived = t.archived.max(start);
    });
    repl.start(&slot, start, tli).await.map_err(|e| repl_err(job, e))?;
    tracing::info!(job, slot, timeline = tli, "WAL receiver streaming from {start} (segment {})", seg.name(tli, first));

    let (ship_tx, ship_rx) = mpsc::channel::<Ship>(QUEUE);
    let (done_tx, mut done_rx) = watch::channel(restart);
    let shipper = tokio::spawn(ship_loop(
        job.to_string(),
        targets.to_vec(),
        params.clone(),
        ship_rx,
        done_tx,
        stop.clone(),
        tracker.clone(),
    ));

    let max_delay = pg.wal_max_delay();
    let mut buf = BytesMut::with_capacity(seg.size as usize);
    let mut segno = first;
    let mut pos = start;
    let mut shipped_offset = 0u64;
    let mut partial_tick = tokio::time::interval_at(tokio::time::Instant::now() + max_delay, max_delay);
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    let result: Result<()> = async {
        loop {
            tokio::select! {
                m = repl.recv() => match m.map_err(|e| repl_err(job, e))? {
                    Streamed::Wal { start, mut data, server_end } => {
                        track(tracker, |t| t.server_end = t.server_end.max(server_end));
                        if start != pos {
                            return Err(source_err(job, format!("the server sent WAL from {start}, expected {pos}")));
                        }
                        while !data.is_empty() {
                            let take = (seg.size as usize - buf.len()).min(data.len());
                            buf.extend_from_slice(&data.split_to(take));
                            pos = Lsn(pos.0 + take as u64);
                            if buf.len() as u64 == seg.size {
                                let name = seg.name(tli, segno);
                                let ship = Ship {
                                    key: store::segment_key(job, tli, &name),
                                    plain: buf.split().freeze(),
                                    completes: Some(pos),
                                    supersedes: partials.remove(&segno).unwrap_or_default(),
                                    what: format!("segment {name}"),
                                    reaches: pos,
                                    cut_at: unix_now(),
                                };
                                send(&ship_tx, ship).await?;
                                buf.reserve(seg.size as usize);
                                segno += 1;
                                shipped_offset = 0;
                            }
                        }
                        track(tracker, |t| t.received = pos);
                    }
                    Streamed::Keepalive { server_end, reply } => {
                        track(tracker, |t| t.server_end = t.server_end.max(server_end));
                        if reply {
                            let flushed = *done_rx.borrow();
                            repl.status(pos, flushed, false).await.map_err(|e| repl_err(job, e))?;
                        }
                    }
                    Streamed::TimelineEnd { next_tli, next_start } => {
                        ship_partial(job, tli, seg, segno, &buf, &mut shipped_offset, &mut partials, &ship_tx).await?;
                        return Err(source_err(job, format!("timeline {tli} ended at {next_start}; following timeline {next_tli}")));
                    }
                },
                _ = partial_tick.tick() => {
                    ship_partial(job, tli, seg, segno, &buf, &mut shipped_offset, &mut partials, &ship_tx).await?;
                }
                _ = status_tick.tick() => {
                    let flushed = *done_rx.borrow();
                    repl.status(pos, flushed, false).await.map_err(|e| repl_err(job, e))?;
                    if let Ok(mut t) = tracker.lock() {
                        report(t.status(job, max_delay));
                    }
                }
                Ok(()) = done_rx.changed() => {
                    let flushed = *done_rx.borrow_and_update();
                    repl.status(pos, flushed, false).await.map_err(|e| repl_err(job, e))?;
                }
                _ = stop.changed() => {
                    ship_partial(job, tli, seg, segno, &buf, &mut shipped_offset, &mut partials, &ship_tx).await?;
                    return Ok(());
                }
            }
        }
    }
    .await;
    // let the shipper finish what was handed to it (on stop too: nothing received is dropped
    // unshipped unless the targets keep failing and the stop is repeated)
    drop(ship_tx);
    let shipped = shipper.await.map_err(|e| Error::Pipeline(format!("the WAL shipping task failed: {e}")))?;
    let flushed = *done_rx.borrow();
    let _ = repl.status(pos, flushed, false).await;
    shipped?;
    result
}

async fn send(tx: &mpsc::Sender<Ship>, ship: Ship) -> Result<()> {
    tx.send(ship).await.map_err(|_| Error::Pipeline("the WAL shipping task stopped".into()))
}

/// Ship what the current segment holds, if more than last time, as a zero-padded partial.
#[allow(clippy::too_many_arguments)]
async fn ship_partial(
    job: &str,
    tli: u32,
    seg: Segments,
    segno: u64,
    buf: &BytesMut,
    shipped_offset: &mut u64,
    partials: &mut BTreeMap<u64, Vec<String>>,
    tx: &mpsc::Sender<Ship>,
) -> Result<()> {
    let offset = buf.len() as u64;
    if offset <= *shipped_offset {
        return Ok(());
    }
    let mut padded = Vec::with_capacity(seg.size as usize);
    padded.extend_from_slice(buf);
    padded.resize(seg.size as usize, 0);
    let name = seg.name(tli, segno);
    let key = store::partial_key(job, tli, &name, offset);
    let supersedes = std::mem::replace(partials.entry(segno).or_default(), vec![key.clone()]);
    let ship = Ship {
        key,
        plain: Bytes::from(padded),
        completes: None,
        supersedes,
        what: format!("partial segment {name} ({offset} bytes)"),
        reaches: Lsn(seg.start(segno).0 + offset),
        cut_at: unix_now(),
    };
    send(tx, ship).await?;
    *shipped_offset = offset;
    Ok(())
}

/// Store each object on every target, in order, retrying failures; report complete segments.
async fn ship_loop(
    job: String,
    targets: Vec<Arc<Target>>,
    params: EncodeParams,
    mut rx: mpsc::Receiver<Ship>,
    done: watch::Sender<Lsn>,
    mut stop: watch::Receiver<bool>,
    tracker: Shared,
) -> Result<()> {
    while let Some(ship) = rx.recv().await {
        let stored = store::encode(ship.plain.clone(), &params).await?;
        let mut backoff = Duration::from_secs(1);
        loop {
            match store::put_everywhere(&targets, &ship.key, stored.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(
                        job,
                        "WAL archive: storing {} failed: {e}; retrying in {}",
                        ship.what,
                        humantime::format_duration(backoff)
                    );
                }
            }
            if *stop.borrow() {
                return Err(Error::Pipeline(format!("stopped before {} was stored", ship.what)));
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        for key in &ship.supersedes {
            for t in &targets {
                if let Err(e) = t.delete(key).await {
                    tracing::warn!(job, target = t.name(), "WAL archive: cannot delete superseded {key}: {e}");
                }
            }
        }
        tracing::info!(job, "WAL archive: stored {} on {} target(s)", ship.what, targets.len());
        track(&tracker, |t| {
            if ship.reaches >= t.archived {
                t.archived = ship.reaches;
                t.archived_as_of = Some(t.archived_as_of.map_or(ship.cut_at, |a| a.max(ship.cut_at)));
            }
            if let Some(end) = ship.completes {
                t.flushed = t.flushed.max(end);
            }
        });
        if let Some(end) = ship.completes {
            let _ = done.send(end);
        }
    }
    Ok(())
}
