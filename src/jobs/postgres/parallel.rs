//! Parallel restore of one database: several `COPY` streams from one stored dump, into a new
//! database that is swapped in by rename only when everything succeeded.
//!
//! Why this data path. `pg_restore -j` needs a seekable archive file, and drctl never stages a
//! whole dump on disk. Splitting the backup into per-table artifacts would not help the common
//! case either: one large table. Instead drctl reads the stored archive as it streams
//! ([`super::archive`]) and
//! 1. writes its header and table of contents (the schema, no data: a few KiB to a few MiB, the
//!    only spool) to a private temporary file, and runs `pg_restore --section=pre-data` from it;
//! 2. splits each table's `COPY` rows, in batches of [`BATCH`] cut at row ends, over `jobs`
//!    connections, each running `COPY … FROM STDIN` with the archive's own statement, so even a
//!    single table loads on every core (the server's parsing and inserting is most of a restore);
//! 3. once the data is verified (the engine's commit), runs `pg_restore -j N` from the same file
//!    for what follows the data (sequence values, indexes, constraints, triggers, ACLs), in
//!    parallel as pg_restore does it.
//!
//! Memory stays bounded: at most `2 × jobs` batches wait in the queue.
//!
//! "Nothing half-restored" comes from the rename: every step works on a new database
//! (`<name>_drctl_<random>`); when all succeeded, sessions on the old database are ended, it is
//! renamed aside, the new one takes its name, its database-level settings (owner, `ALTER
//! DATABASE … SET`, per-role settings, connection limit, grants, comment) are applied again, and
//! the old one is dropped. Any failure before the swap drops the new database and leaves the old
//! one as it was. A restore replaces the whole database: objects that are not in the backup do
//! not survive it (unlike `pg_restore --clean`, which drops only what the dump holds).
//!
//! It needs a role that may create databases (and own the one it replaces) and room for both
//! copies; otherwise, with `--jobs 1`, or for an archive this reader does not handle (large
//! objects, `--inserts` data, another archive version) the restore runs as a single
//! `pg_restore --single-transaction`, saying why. Rows are loaded in another physical order than
//! the source's (a `CLUSTER`ed table is no longer clustered).

use std::collections::HashMap;
use std::io::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::archive::{self, ArchiveError, FeedError, Header, TocEntry, Visitor};
use super::{Conn, RestoreOptions, Tools, quote_ident};
use crate::exec::Cmd;
use crate::jobs::Sink;
use crate::{Error, Result};

/// Rows are handed to the `COPY` connections in batches of about this size.
pub const BATCH: usize = 1024 * 1024;

/// The number of `COPY` streams when `--jobs` is not given: one per core.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The database to connect to for `CREATE`/`ALTER`/`DROP DATABASE` of `db`.
fn admin(dest: &Conn, db: &str) -> Conn {
    dest.with_database(if db == "postgres" { "template1" } else { "postgres" })
}

/// Why the parallel path cannot be used for `dest`, or `None` when it can.
pub async fn why_not(job: &str, dest: &Conn, exists: bool, jobs: usize) -> Result<Option<String>> {
    if jobs <= 1 {
        return Ok(Some("--jobs 1".into()));
    }
    let db = dest.database();
    let mut c = match admin(dest, &db).connect(job).await {
        Ok(c) => c,
        Err(e) => return Ok(Some(format!("no maintenance database to connect to ({e})"))),
    };
    let row = sqlx::query(
        "SELECT r.rolsuper OR r.rolcreatedb,
                r.rolsuper OR COALESCE((SELECT d.datdba = r.oid FROM pg_database d WHERE d.datname = $1), true)
         FROM pg_roles r WHERE r.rolname = current_user",
    )
    .bind(&db)
    .fetch_one(&mut c)
    .await
    .map_err(|e| Error::source_failed(job, format!("cannot read the privileges of the restoring role: {e}"), None))?;
    let _ = c.close().await;
    let (create, owns): (bool, bool) = (row.get(0), row.get(1));
    Ok(if !create {
        Some("the role may not create databases (CREATEDB)".into())
    } else if exists && !owns {
        Some(format!("the role does not own database `{db}`, so it cannot replace it by rename"))
    } else {
        None
    })
}

/// What `drctl restore --dry-run` says the parallel path does.
pub fn describe(jobs: usize, relations: Option<i64>) -> String {
    let base = format!(
        "parallel restore ({jobs} COPY streams, then pg_restore -j {jobs} for indexes and constraints) into a new database, swapped in by rename"
    );
    match relations {
        Some(n) => format!("{base}; replaces the whole database ({n} relations now; its sessions are ended)"),
        None => base,
    }
}

/// Open the sink of a parallel restore of one database into `dest` (which may exist: it is
/// replaced once everything succeeded).
pub async fn open(
    job: &str,
    dest: Conn,
    tools: Tools,
    exists: bool,
    opts: &RestoreOptions,
    jobs: usize,
) -> Result<Sink> {
    let db = dest.database();
    let stem: String = db.chars().take(40).collect();
    let temp = format!("{stem}_drctl_{}", crate::layout::random_suffix());
    create_like(job, &dest, &db, &temp, exists).await?;
    tracing::info!(
        job,
        database = %db,
        "parallel restore: {jobs} COPY streams into new database `{temp}`, swapped in by rename when everything succeeded"
    );
    let into = dest.with_database(&temp);
    let (writer, reader) = tokio::io::duplex(256 * 1024);
    let (commit_tx, commit_rx) = oneshot::channel();
    let run = Run {
        job: job.to_string(),
        dest: dest.clone(),
        into,
        temp: temp.clone(),
        tools,
        jobs,
        no_owner: opts.no_owner,
        exists,
    };
    let task = tokio::spawn(run.run(reader, commit_rx));
    let mut sink = Sink::task(writer, task, commit_tx, dest.display());
    let (job, dest) = (job.to_string(), dest.clone());
    sink.on_failure = Some(Box::pin(async move { drop_database(&job, &dest, &temp).await }));
    Ok(sink)
}

/// `CREATE DATABASE temp`, with the encoding and locale of `db` when it exists.
async fn create_like(job: &str, dest: &Conn, db: &str, temp: &str, exists: bool) -> Result<()> {
    let mut c = admin(dest, db).connect(job).await?;
    let mut sql = format!("CREATE DATABASE {}", quote_ident(temp));
    if exists {
        let row = sqlx::query(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = $1",
        )
        .bind(db)
        .fetch_one(&mut c)
        .await
        .map_err(|e| Error::source_failed(job, format!("cannot read the settings of database `{db}`: {e}"), None))?;
        let (enc, collate, ctype): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        sql.push_str(&format!(
            " TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            literal(&enc),
            literal(&collate),
            literal(&ctype)
        ));
    }
    let created = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
    let _ = c.close().await;
    created.map_err(|e| {
        Error::source_failed(job, format!("cannot create database `{temp}` on {}: {e}", dest.display()), None)
    })?;
    Ok(())
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Drop database `name` on `dest`'s server (what a failed restore created), warning if it cannot.
pub(super) async fn drop_database(job: &str, dest: &Conn, name: &str) {
    let Ok(mut c) = admin(dest, &dest.database()).connect(job).await else { return };
    if let Err(e) =
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name))))
            .execute(&mut c)
            .await
    {
        tracing::warn!(job, database = %name, error = %e, "could not remove the database of the failed restore");
    }
    let _ = c.close().await;
}

/// One batch of rows of one table.
struct Batch {
    dump_id: i64,
    rows: Bytes,
}

/// What the reader found, collected for the async side to act on after each piece.
#[derive(Default)]
struct Collect {
    toc: Option<(Vec<TocEntry>, Vec<u8>)>,
    /// Why the parallel path cannot load this archive (then nothing is collected).
    unsupported: Option<String>,
    /// The `COPY` tables: dump id → statement.
    copy: HashMap<i64, String>,
    current: Option<i64>,
    pending: BytesMut,
    ready: Vec<Batch>,
}

impl Collect {
    fn cut(&mut self, all: bool) {
        let Some(id) = self.current else { return };
        let end = if all { self.pending.len() } else { memchr::memrchr(b'\n', &self.pending).map_or(0, |p| p + 1) };
        if end > 0 {
            let rows = self.pending.split_to(end).freeze();
            self.ready.push(Batch { dump_id: id, rows });
        }
    }
}

impl Visitor for Collect {
    type Error = String;

    fn toc(&mut self, _h: &Header, entries: &[TocEntry], head: Option<Vec<u8>>) -> std::result::Result<(), String> {
        self.unsupported = unsupported(entries);
        if self.unsupported.is_none() {
            self.copy = entries
                .iter()
                .filter(|e| e.is_copy_data())
                .filter_map(|e| Some((e.dump_id, e.copy_stmt.clone()?.trim_end().trim_end_matches(';').to_string())))
                .collect();
        }
        self.toc = Some((entries.to_vec(), head.unwrap_or_default()));
        Ok(())
    }

    fn begin(&mut self, dump_id: i64, blobs: bool) -> std::result::Result<(), String> {
        if self.unsupported.is_some() {
            return Ok(());
        }
        if blobs || !self.copy.contains_key(&dump_id) {
            return Err(format!("data block {dump_id} is not a table's COPY data"));
        }
        self.current = Some(dump_id);
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> std::result::Result<(), String> {
        if self.current.is_none() {
            return Ok(());
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= BATCH {
            self.cut(false);
        }
        Ok(())
    }

    fn end(&mut self) -> std::result::Result<(), String> {
        self.cut(true);
        self.current = None;
        Ok(())
    }
}

/// Whether the archive holds only what the parallel path handles; else why not.
fn unsupported(entries: &[TocEntry]) -> Option<String> {
    entries
        .iter()
        .filter(|e| e.has_data)
        .find(|e| !e.is_copy_data())
        .map(|e| format!("the archive holds {} data (`{}`), which only pg_restore loads", e.desc, e.tag))
}

/// `SET` statements a `COPY` connection needs to read the archive's data as pg_restore would.
fn session_sql(entries: &[TocEntry]) -> String {
    let mut sql = String::new();
    for e in entries.iter().filter(|e| matches!(e.desc.as_str(), "ENCODING" | "STDSTRINGS")) {
        if let Some(d) = &e.defn {
            sql.push_str(d);
            sql.push('\n');
        }
    }
    sql.push_str("SET row_security = off;\nSET synchronous_commit = off;\n");
    sql
}

/// The dump ids `pg_restore` restores after the data: everything in the data and post-data
/// sections (by position, as pg_restore assigns section-less entries such as ACLs) except the
/// `COPY` data loaded here.
fn after_data(entries: &[TocEntry]) -> Vec<i64> {
    let mut section = archive::SECTION_PRE_DATA;
    let mut out = Vec::new();
    for e in entries {
        if e.section != archive::SECTION_NONE {
            section = e.section;
        }
        if section != archive::SECTION_PRE_DATA && !e.is_copy_data() {
            out.push(e.dump_id);
        }
    }
    out
}

struct Run {
    job: String,
    dest: Conn,
    into: Conn,
    temp: String,
    tools: Tools,
    jobs: usize,
    no_owner: bool,
    exists: bool,
}

impl Run {
    fn fail(&self, message: String) -> Error {
        Error::Restore { job: self.job.clone(), destination: self.dest.display(), message }
    }

    async fn run(self, mut input: DuplexStream, commit: oneshot::Receiver<()>) -> Result<()> {
        let mut reader = archive::Reader::new(true);
        let mut collect = Collect::default();
        let mut buf = vec![0u8; 256 * 1024];
        // everything read until the table of contents is complete, for the single-stream fallback
        let mut prefix: Vec<u8> = Vec::new();
        let mut files: Option<(tempfile::TempDir, std::path::PathBuf)> = None;
        let mut workers: Option<Workers> = None;
        loop {
            let n = input.read(&mut buf).await.map_err(|e| self.fail(format!("reading the restored data: {e}")))?;
            if n == 0 {
                break;
            }
            if !reader.past_toc() {
                prefix.extend_from_slice(&buf[..n]);
            }
            match reader.feed(&buf[..n], &mut collect) {
                Ok(()) => {}
                Err(FeedError::Archive(ArchiveError::Unsupported(why))) if workers.is_none() => {
                    return self.single_stream(why, prefix, input, commit).await;
                }
                Err(FeedError::Archive(e)) => return Err(self.fail(format!("the dump is not readable: {e}"))),
                Err(FeedError::Visitor(e)) => return Err(self.fail(e)),
            }
            if let Some((entries, head)) = collect.toc.take() {
                if let Some(why) = collect.unsupported.take() {
                    // `prefix` holds every byte read so far
                    return self.single_stream(why, prefix, input, commit).await;
                }
                prefix = Vec::new();
                let (dir, toc) = self.write_toc(&head)?;
                self.pre_data(&toc).await?;
                files = Some((dir, toc));
                workers = Some(Workers::start(&self, &collect.copy, session_sql(&entries)));
            }
            if let Some(w) = &mut workers {
                for b in collect.ready.drain(..) {
                    w.send(b).await.map_err(|e| self.fail(e))?;
                }
            }
        }
        reader.finish().map_err(|e| self.fail(format!("the dump is not readable: {e}")))?;
        let (Some(w), Some((_dir, toc))) = (workers, files) else {
            return Err(self.fail("the dump ended before its table of contents".into()));
        };
        let rows = w.finish().await.map_err(|e| self.fail(e))?;
        if commit.await.is_err() {
            return Err(self.fail("not committed: the data did not pass its checks".into()));
        }
        tracing::info!(job = %self.job, database = %self.dest.database(), "parallel restore: {rows} rows loaded; now indexes, constraints and the rest (pg_restore -j {})", self.jobs);
        self.post_data(&toc, &after_data(reader.entries())).await?;
        swap(&self.job, &self.dest, &self.temp, self.exists).await
    }

    /// The archive is not one the parallel path handles: restore it with one
    /// `pg_restore --single-transaction` into the new database, then swap as usual.
    async fn single_stream(
        &self,
        why: String,
        prefix: Vec<u8>,
        mut input: DuplexStream,
        commit: oneshot::Receiver<()>,
    ) -> Result<()> {
        tracing::info!(job = %self.job, "parallel restore not possible ({why}): one pg_restore stream into the new database instead");
        let cmd = self.restore_cmd().arg("--single-transaction");
        let mut running = cmd
            .spawn(Stdio::piped(), Stdio::null())
            .map_err(|e| self.fail(format!("cannot start `{}`: {e}", cmd.display())))?;
        let mut stdin = running.child.stdin.take().ok_or_else(|| self.fail("pg_restore has no stdin".into()))?;
        let copied = async {
            stdin.write_all(&prefix).await?;
            tokio::io::copy(&mut input, &mut stdin).await?;
            stdin.shutdown().await
        }
        .await;
        drop(stdin);
        if copied.is_err() || commit.await.is_err() {
            running.kill().await;
            return Err(self.fail("not committed: the restore did not complete".into()));
        }
        let (status, stderr) = running.wait().await.map_err(|e| self.fail(e.to_string()))?;
        if !status.success() {
            return Err(self.fail(super::tool_failure("pg_restore", &status, &stderr, 6)));
        }
        swap(&self.job, &self.dest, &self.temp, self.exists).await
    }

    fn restore_cmd(&self) -> Cmd {
        let mut cmd = Cmd::new(self.tools.path("pg_restore")).arg("--no-password").arg("--exit-on-error");
        if self.no_owner {
            cmd = cmd.arg("--no-owner").arg("--no-acl");
        }
        self.into.apply(cmd)
    }

    /// The header and table of contents into a private file: pg_restore reads the schema from it.
    fn write_toc(&self, head: &[u8]) -> Result<(tempfile::TempDir, std::path::PathBuf)> {
        let io = |e: std::io::Error| self.fail(format!("cannot write the table of contents to a temporary file: {e}"));
        let dir = tempfile::Builder::new().prefix("drctl-restore-").tempdir().map_err(io)?;
        let path = dir.path().join("toc.dump");
        let mut f = std::fs::File::create(&path).map_err(io)?;
        f.write_all(head).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok((dir, path))
    }

    async fn pg_restore(&self, cmd: Cmd, what: &str) -> Result<()> {
        let (status, _out, stderr) =
            cmd.output().await.map_err(|e| self.fail(format!("cannot start pg_restore for {what}: {e}")))?;
        if !status.success() {
            return Err(self.fail(super::tool_failure(&format!("pg_restore ({what})"), &status, &stderr, 6)));
        }
        Ok(())
    }

    async fn pre_data(&self, toc: &std::path::Path) -> Result<()> {
        let cmd = self.restore_cmd().arg("--section=pre-data").arg("--single-transaction").arg(toc.as_os_str());
        self.pg_restore(cmd, "the schema").await
    }

    async fn post_data(&self, toc: &std::path::Path, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let list = toc.with_file_name("after-data.list");
        let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
        std::fs::write(&list, text).map_err(|e| self.fail(format!("cannot write the restore list: {e}")))?;
        let cmd = self
            .restore_cmd()
            .arg(format!("--jobs={}", self.jobs))
            .arg(format!("--use-list={}", list.display()))
            .arg(toc.as_os_str());
        self.pg_restore(cmd, "indexes, constraints and the rest").await
    }
}

/// The `COPY` connections.
struct Workers {
    tx: mpsc::Sender<Batch>,
    handles: Vec<tokio::task::JoinHandle<std::result::Result<u64, String>>>,
}

impl Workers {
    fn start(run: &Run, copy: &HashMap<i64, String>, session: String) -> Workers {
        let (tx, rx) = mpsc::channel::<Batch>(2 * run.jobs);
        let rx = Arc::new(Mutex::new(rx));
        let stmts = Arc::new(copy.clone());
        let handles = (0..run.jobs)
            .map(|_| {
                let (rx, stmts, session) = (rx.clone(), stmts.clone(), session.clone());
                let (into, job) = (run.into.clone(), run.job.clone());
                tokio::spawn(async move {
                    let mut c = into.connect(&job).await.map_err(|e| e.to_string())?;
                    let loaded = copy_loop(&mut c, &rx, &stmts, &session).await;
                    let _ = c.close().await;
                    loaded
                })
            })
            .collect();
        Workers { tx, handles }
    }

    async fn send(&mut self, b: Batch) -> std::result::Result<(), String> {
        if self.tx.send(b).await.is_ok() {
            return Ok(());
        }
        // every worker is gone: one of them failed, say why
        for h in self.handles.drain(..) {
            if let Ok(Err(e)) = h.await {
                return Err(e);
            }
        }
        Err("the COPY connections stopped".into())
    }

    async fn finish(self) -> std::result::Result<u64, String> {
        drop(self.tx);
        let mut rows = 0;
        for h in self.handles {
            rows += h.await.map_err(|e| format!("a COPY task failed: {e}"))??;
        }
        Ok(rows)
    }
}

/// Take batches until the queue closes; one `COPY` per run of batches of the same table.
async fn copy_loop(
    c: &mut PgConnection,
    rx: &Mutex<mpsc::Receiver<Batch>>,
    stmts: &HashMap<i64, String>,
    session: &str,
) -> std::result::Result<u64, String> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(session.to_string()))
        .execute(&mut *c)
        .await
        .map_err(|e| format!("cannot set up a COPY session: {e}"))?;
    let next = || async { rx.lock().await.recv().await };
    let mut carry = next().await;
    let mut rows = 0;
    while let Some(first) = carry.take() {
        let stmt = stmts.get(&first.dump_id).ok_or_else(|| format!("no COPY statement for {}", first.dump_id))?;
        let mut copy = c.copy_in_raw(stmt).await.map_err(|e| format!("`{stmt}`: {e}"))?;
        copy.send(first.rows).await.map_err(|e| format!("`{stmt}`: {e}"))?;
        loop {
            match next().await {
                Some(b) if b.dump_id == first.dump_id => {
                    copy.send(b.rows).await.map_err(|e| format!("`{stmt}`: {e}"))?;
                }
                other => {
                    carry = other;
                    break;
                }
            }
        }
        rows += copy.finish().await.map_err(|e| format!("`{stmt}`: {e}"))?;
    }
    Ok(rows)
}

/// The new database takes the name of `dest`; the old one (if any) is renamed aside and dropped,
/// its database-level settings applied to the new one.
async fn swap(job: &str, dest: &Conn, temp: &str, existed: bool) -> Result<()> {
    let db = dest.database();
    let fail = |message: String| Error::Restore { job: job.to_string(), destination: dest.display(), message };
    let mut c = admin(dest, &db).connect(job).await?;
    let rename = |from: &str, to: &str| format!("ALTER DATABASE {} RENAME TO {}", quote_ident(from), quote_ident(to));
    if !existed {
        let renamed = sqlx::raw_sql(sqlx::AssertSqlSafe(rename(temp, &db))).execute(&mut c).await;
        let _ = c.close().await;
        return renamed
            .map(|_| ())
            .map_err(|e| fail(format!("cannot rename the restored database `{temp}` to `{db}`: {e}")));
    }
    let settings =
        Settings::read(&mut c, &db).await.map_err(|e| fail(format!("cannot read the settings of `{db}`: {e}")))?;
    let aside = format!("{}_drctl_old_{}", db.chars().take(36).collect::<String>(), crate::layout::random_suffix());
    let mut tries = 0;
    loop {
        tries += 1;
        let ended = sqlx::query(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&db)
        .fetch_one(&mut c)
        .await
        .map(|r| r.get::<i64, _>(0))
        .unwrap_or(0);
        if ended > 0 {
            tracing::info!(job, database = %db, "ended {ended} session(s) on `{db}` to replace it");
        }
        match sqlx::raw_sql(sqlx::AssertSqlSafe(rename(&db, &aside))).execute(&mut c).await {
            Ok(_) => break,
            // 55006 object_in_use: a session (re)connected in between
            Err(e) if tries < 20 && e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "55006") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                let _ = c.close().await;
                return Err(fail(format!("cannot rename `{db}` aside to replace it: {e}")));
            }
        }
    }
    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(rename(temp, &db))).execute(&mut c).await {
        let back = sqlx::raw_sql(sqlx::AssertSqlSafe(rename(&aside, &db))).execute(&mut c).await;
        let _ = c.close().await;
        return Err(fail(match back {
            Ok(_) => format!("cannot rename the restored database to `{db}`: {e}; `{db}` is unchanged"),
            Err(b) => format!(
                "cannot rename the restored database to `{db}`: {e}; and renaming the old one back failed too ({b}): it is `{aside}`"
            ),
        }));
    }
    for problem in settings.apply(&mut c, &db).await {
        tracing::warn!(job, database = %db, "restored, but a database-level setting was not applied again: {problem}");
    }
    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {} WITH (FORCE)", quote_ident(&aside))))
        .execute(&mut c)
        .await
    {
        tracing::warn!(job, database = %aside, error = %e, "restored; the replaced database could not be dropped: drop it by hand");
    }
    let _ = c.close().await;
    Ok(())
}

/// Database-level settings that live outside the dump (pg_dump writes them only with `--create`).
struct Settings {
    owner: String,
    conn_limit: i32,
    /// (role or empty for all, `name=value`).
    config: Vec<(String, String)>,
    /// `None`: default privileges.
    grants: Option<Vec<(String, String, bool)>>,
    comment: Option<String>,
}

impl Settings {
    async fn read(c: &mut PgConnection, db: &str) -> std::result::Result<Settings, sqlx::Error> {
        let row = sqlx::query(
            "SELECT pg_get_userbyid(datdba), datconnlimit, datacl IS NULL, shobj_description(oid, 'pg_database')
             FROM pg_database WHERE datname = $1",
        )
        .bind(db)
        .fetch_one(&mut *c)
        .await?;
        let (owner, conn_limit, default_acl, comment): (String, i32, bool, Option<String>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let config = sqlx::query(
            "SELECT COALESCE(pg_get_userbyid(NULLIF(s.setrole, 0)), ''), unnest(s.setconfig)
             FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = $1",
        )
        .bind(db)
        .fetch_all(&mut *c)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        let grants = if default_acl {
            None
        } else {
            Some(
                sqlx::query(
                    "SELECT CASE WHEN a.grantee = 0 THEN '' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, a.is_grantable
                     FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = $1",
                )
                .bind(db)
                .fetch_all(&mut *c)
                .await?
                .into_iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
            )
        };
        Ok(Settings { owner, conn_limit, config, grants, comment })
    }

    /// Apply to `db`; returns what failed.
    async fn apply(&self, c: &mut PgConnection, db: &str) -> Vec<String> {
        let d = quote_ident(db);
        let mut sql = vec![format!("ALTER DATABASE {d} OWNER TO {}", quote_ident(&self.owner))];
        if self.conn_limit != -1 {
            sql.push(format!("ALTER DATABASE {d} CONNECTION LIMIT {}", self.conn_limit));
        }
        for (role, setting) in &self.config {
            let Some((name, value)) = setting.split_once('=') else { continue };
            let set = format!("SET {} TO {}", quote_ident(name), literal(value));
            sql.push(if role.is_empty() {
                format!("ALTER DATABASE {d} {set}")
            } else {
                format!("ALTER ROLE {} IN DATABASE {d} {set}", quote_ident(role))
            });
        }
        if let Some(grants) = &self.grants {
            sql.push(format!("REVOKE ALL ON DATABASE {d} FROM PUBLIC"));
            for (grantee, privilege, grantable) in grants {
                let to = if grantee.is_empty() { "PUBLIC".to_string() } else { quote_ident(grantee) };
                let with = if *grantable { " WITH GRANT OPTION" } else { "" };
                sql.push(format!("GRANT {privilege} ON DATABASE {d} TO {to}{with}"));
            }
        }
        if let Some(comment) = &self.comment {
            sql.push(format!("COMMENT ON DATABASE {d} IS {}", literal(comment)));
        }
        let mut problems = Vec::new();
        for s in sql {
            if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(s.clone())).execute(&mut *c).await {
                problems.push(format!("`{s}`: {e}"));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTION_DATA: i64 = 3;
    const SECTION_POST_DATA: i64 = 4;

    fn entry(id: i64, desc: &str, section: i64) -> TocEntry {
        TocEntry {
            dump_id: id,
            has_data: desc == "TABLE DATA" || desc == "BLOBS",
            tag: format!("t{id}"),
            desc: desc.into(),
            section,
            copy_stmt: (desc == "TABLE DATA").then(|| format!("COPY public.t{id} (a) FROM stdin;\n")),
            namespace: Some("public".into()),
            defn: None,
        }
    }

    #[test]
    fn after_the_data_comes_everything_but_the_schema_and_the_copies() {
        let entries = [
            entry(1, "ENCODING", archive::SECTION_PRE_DATA),
            entry(2, "TABLE", archive::SECTION_PRE_DATA),
            entry(3, "TABLE DATA", SECTION_DATA),
            entry(4, "SEQUENCE SET", SECTION_DATA),
            entry(5, "INDEX", SECTION_POST_DATA),
            entry(6, "ACL", archive::SECTION_NONE),
        ];
        assert_eq!(after_data(&entries), [4, 5, 6]);
        assert_eq!(unsupported(&entries), None);
        let with_blobs = [entry(2, "TABLE", archive::SECTION_PRE_DATA), entry(7, "BLOBS", SECTION_DATA)];
        assert!(unsupported(&with_blobs).unwrap().contains("BLOBS"));
    }

    #[test]
    fn batches_end_at_row_ends() {
        let mut c =
            Collect { copy: [(1, "COPY t FROM stdin".to_string())].into_iter().collect(), ..Default::default() };
        c.begin(1, false).unwrap();
        let row = b"0123456789abcdef\n";
        let mut sent = 0;
        while sent < 3 * BATCH {
            c.data(row).unwrap();
            sent += row.len();
        }
        c.data(b"partial").unwrap();
        c.data(b" row\n").unwrap();
        c.end().unwrap();
        assert!(c.ready.len() >= 3);
        let all: Vec<u8> = c.ready.iter().flat_map(|b| b.rows.iter().copied()).collect();
        assert_eq!(all.len(), sent + 12);
        for b in &c.ready {
            assert_eq!(b.rows.last(), Some(&b'\n'), "every batch ends with a whole row");
        }
        assert!(c.begin(2, false).is_err(), "data of an unknown entry is refused");
    }
}
