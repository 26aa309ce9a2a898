//! `kind = "postgres"`: `pg_dump --format=custom` per database, `pg_dumpall --globals-only`.
//!
//! Consistency: for each database drctl opens a `REPEATABLE READ` transaction, exports its snapshot
//! and hands it to `pg_dump --snapshot`, then counts rows *in that same snapshot* while the dump
//! runs. The row counts in the manifest are therefore exactly what the dump contains, which is
//! what restore drills compare against.
//!
//! pg_dump compression is off (`--compress=0`): the pipeline compresses. The password travels in
//! `PGPASSWORD` (child environment), never in argv.
//!
//! Bounded waits, each with a word: every connection (drctl's own, and the tools' through
//! `PGCONNECT_TIMEOUT`) gives up after the job's `connect_timeout`, so a server that accepts TCP
//! and never answers fails the run and `drctl check` instead of hanging them. Table locks held by
//! other sessions are waited for at most `lock_timeout`: pg_dump's `--lock-wait-timeout` and the
//! row counts' `lock_timeout` on backup; on restore a watcher enforces it on pg_restore (which sets
//! `lock_timeout = 0` itself), logging what it waits for and cancelling the statement after the
//! timeout, so the single restore transaction rolls back.

pub(crate) mod archive;
mod config;
pub(crate) mod drill;
pub(crate) mod facts;
mod parallel;
pub mod physical;
mod rows;
mod validate;
pub use config::{Method, PostgresJob, RowCounts, WalConfig};

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};

use super::{ArtifactPlan, RestoreOptions, RestoreStep, Sink, SourceStream};
use crate::config::secrets::read_secret_file;
use crate::error::SourceFailure;
use crate::exec::{Cmd, describe_status};
use crate::manifest::{Artifact, Manifest};
use crate::redact::percent_decode;
use crate::redact::{Secret, url_for_display};
use crate::{Error, Result};

pub const FORMAT_DUMP: &str = "pg_dump-custom";
pub const FORMAT_GLOBALS: &str = "sql";
const GLOBALS: &str = "globals";

/// Facts recorded in the manifest of a postgres backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Facts {
    pub server_version: String,
    pub pg_dump_version: String,
    pub databases: Vec<DatabaseFacts>,
    pub globals: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DatabaseFacts {
    pub name: String,
    /// How `rows` were obtained: `exact` (counted in the dump's snapshot) or `estimate`.
    #[serde(default)]
    pub row_counts: RowCounts,
    pub size_bytes: u64,
    pub table_count: u64,
    pub tables: Vec<TableFacts>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TableFacts {
    pub schema: String,
    pub name: String,
    pub rows: u64,
}

/// A server to talk to: URL without password, plus the password, and how long to wait for it.
#[derive(Clone)]
struct Conn {
    url: url::Url,
    password: Option<Secret>,
    /// For a connection to be answered (`connect_timeout`): a stalled server fails, it does not hang.
    connect_timeout: Duration,
    /// For a table lock held by another session (`lock_timeout`).
    lock_timeout: Duration,
}

impl Conn {
    fn from_job(job: &str, pg: &PostgresJob) -> Result<Conn> {
        let mut url =
            url::Url::parse(&pg.url).map_err(|e| Error::source_failed(job, format!("invalid url: {e}"), None))?;
        let mut password = url.password().map(|p| Secret::new(percent_decode(p)));
        if let Some(p) = &pg.password {
            password = Some(p.clone());
        }
        if let Some(f) = &pg.password_file {
            password = Some(read_secret_file(f)?);
        }
        let _ = url.set_password(None);
        Ok(Conn { url, password, connect_timeout: pg.connect_timeout(), lock_timeout: pg.lock_timeout() })
    }

    fn database(&self) -> String {
        percent_decode(self.url.path().trim_start_matches('/'))
    }

    fn with_database(&self, db: &str) -> Conn {
        let mut c = self.clone();
        c.url.set_path(&format!("/{}", utf8_percent_encode(db)));
        c
    }

    fn display(&self) -> String {
        url_for_display(self.url.as_str())
    }

    fn host_port(&self) -> (String, u16) {
        (self.url.host_str().unwrap_or("localhost").to_string(), self.url.port().unwrap_or(5432))
    }

    async fn connect(&self, job: &str) -> Result<PgConnection> {
        let mut opts = PgConnectOptions::from_str(self.url.as_str())
            .map_err(|e| Error::source_failed(job, format!("invalid url `{}`: {e}", self.display()), None))?;
        if let Some(p) = &self.password {
            opts = opts.password(p.expose());
        }
        let limit = self.connect_timeout;
        tracing::info!(
            job,
            "connecting to {} (gives up after {}: `connect_timeout`)",
            self.display(),
            humantime::format_duration(limit)
        );
        match tokio::time::timeout(limit, PgConnection::connect_with(&opts)).await {
            Ok(r) => r.map_err(|e| connect_err(job, &self.display(), e)),
            Err(_) => Err(Error::source_failed(
                job,
                format!(
                    "cannot connect to {}: no answer within {} (`connect_timeout`)",
                    self.display(),
                    humantime::format_duration(limit)
                ),
                Some(format!(
                    "the server accepts connections but does not answer: is PostgreSQL at {} stalled or overloaded? \
                     `drctl check` tests it; raise `connect_timeout` on the job if it is only slow",
                    self.display()
                )),
            )),
        }
    }

    /// Apply to a tool invocation: connection string in argv (no password), password in env, and
    /// the connect timeout as `PGCONNECT_TIMEOUT` (whole seconds; libpq uses at least 2).
    fn apply(&self, cmd: Cmd) -> Cmd {
        let secs = self.connect_timeout.as_secs_f64().ceil().max(2.0) as u64;
        let cmd = cmd.arg(format!("--dbname={}", self.url.as_str())).env("PGCONNECT_TIMEOUT", &secs.to_string());
        match &self.password {
            Some(p) => cmd.env("PGPASSWORD", p.expose()),
            None => cmd,
        }
    }

    /// `lock_timeout` in milliseconds, as PostgreSQL settings take it.
    fn lock_timeout_ms(&self) -> u128 {
        self.lock_timeout.as_millis().max(1)
    }

    /// Apply to a restore tool (`pg_restore`, `psql`): its session gives up on a table lock held
    /// by another session after `lock_timeout` (`PGOPTIONS=-c lock_timeout=…`), so the single
    /// restore transaction fails and rolls back instead of waiting without a word.
    fn apply_restore(&self, cmd: Cmd) -> Cmd {
        self.apply(cmd).env("PGOPTIONS", &format!("-c lock_timeout={}", self.lock_timeout_ms()))
    }
}

fn utf8_percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn connect_err(job: &str, shown: &str, e: sqlx::Error) -> Error {
    let text = e.to_string();
    // SQLSTATE 3D000 invalid_catalog_name: the database does not exist
    let no_database = e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "3D000");
    let hint = if text.contains("password authentication failed") || text.contains("no password") {
        Some("check the password (`password_file` or the url) and the role's pg_hba.conf entry".to_string())
    } else if matches!(e, sqlx::Error::Io(_)) || text.contains("Connection refused") || text.contains("timed out") {
        Some(format!("is PostgreSQL running and reachable at {shown}? `drctl check` tests it"))
    } else if no_database {
        Some("check the database name in the url or `databases`".to_string())
    } else {
        None
    };
    let kind = if no_database { SourceFailure::NoSuchDatabase } else { SourceFailure::Failed };
    Error::source_failed_as(job, kind, format!("cannot connect to {shown}: {text}"), hint)
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The PostgreSQL client tools of one major version.
#[derive(Debug, Clone)]
pub struct Tools {
    pub bin_dir: Option<PathBuf>,
    pub version: String,
}

impl Tools {
    fn path(&self, tool: &str) -> PathBuf {
        match &self.bin_dir {
            Some(d) => d.join(tool),
            None => PathBuf::from(tool),
        }
    }
}

/// `WHAT failed (exit status): the last `lines` lines of its stderr`: how every PostgreSQL tool's
/// failure is told (pg_dump, pg_dumpall, pg_basebackup, pg_restore).
pub(crate) fn tool_failure(what: &str, status: &std::process::ExitStatus, stderr: &str, lines: usize) -> String {
    format!(
        "{what} failed ({}): {}",
        describe_status(status),
        crate::tool_output::tail(stderr, lines, "no error output")
    )
}

/// `pg_dump (PostgreSQL) 15.18 (Debian …)` → `15.18`.
pub fn parse_tool_version(out: &str) -> Option<String> {
    let v = out.split_whitespace().nth(2)?;
    v.chars().next()?.is_ascii_digit().then(|| v.to_string())
}

pub(crate) fn major_of(v: &str) -> u32 {
    v.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0)
}

async fn tool_version(path: &Path) -> Option<String> {
    let (status, out, _) = Cmd::new(path).arg("--version").output().await.ok()?;
    if !status.success() {
        return None;
    }
    parse_tool_version(&out)
}

/// Find client tools whose major version is at least `server_major`: `bin_dir` if configured,
/// else `PATH`, else the newest `/usr/lib/postgresql/*/bin`.
pub async fn find_tools(job: &str, bin_dir: Option<&Path>, server_version: &str) -> Result<Tools> {
    let server_major = major_of(server_version);
    let mut candidates: Vec<Option<PathBuf>> = Vec::new();
    if let Some(d) = bin_dir {
        candidates.push(Some(d.to_path_buf()));
    } else {
        candidates.push(None);
        if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
            let mut dirs: Vec<(u32, PathBuf)> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
                .collect();
            dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
            candidates.extend(dirs.into_iter().map(|d| Some(d.1)));
        }
    }
    let mut best: Option<String> = None;
    for dir in candidates {
        let tools = Tools { bin_dir: dir, version: String::new() };
        let Some(v) = tool_version(&tools.path("pg_dump")).await else {
            continue;
        };
        if major_of(&v) >= server_major {
            return Ok(Tools { version: v, ..tools });
        }
        if best.as_ref().is_none_or(|b| major_of(b) < major_of(&v)) {
            best = Some(v);
        }
    }
    match best {
        Some(v) => Err(Error::ToolTooOld {
            job: job.to_string(),
            tool: "pg_dump".into(),
            tool_version: v,
            server_version: server_version.to_string(),
        }),
        None => Err(Error::source_failed(
            job,
            "pg_dump not found",
            Some(match bin_dir {
                Some(d) => format!("no working pg_dump in `{}` (bin_dir)", d.display()),
                None => "install the PostgreSQL client (Debian: postgresql-client) or set `bin_dir` on the job".into(),
            }),
        )),
    }
}

async fn server_version(conn: &mut PgConnection, job: &str) -> Result<String> {
    let row = sqlx::query("SHOW server_version")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| Error::source_failed(job, format!("cannot read server version: {e}"), None))?;
    let v: String = row.get(0);
    Ok(v.split_whitespace().next().unwrap_or("").to_string())
}

/// A postgres backup in progress.
pub struct BackupSession {
    job: String,
    conn: Conn,
    databases: Vec<String>,
    globals: bool,
    tools: Tools,
    server_version: String,
    facts: Arc<Mutex<Vec<DatabaseFacts>>>,
    sizes: Vec<(String, u64)>,
    row_counts: RowCounts,
}

impl BackupSession {
    pub async fn prepare(job: &str, pg: &PostgresJob) -> Result<BackupSession> {
        let conn = Conn::from_job(job, pg)?;
        let databases = if pg.databases.is_empty() { vec![conn.database()] } else { pg.databases.clone() };
        let mut c = conn.connect(job).await?;
        let server_version = server_version(&mut c, job).await?;
        let mut sizes = Vec::new();
        for db in &databases {
            let size: Option<i64> = sqlx::query("SELECT pg_database_size(datname) FROM pg_database WHERE datname = $1")
                .bind(db)
                .fetch_optional(&mut c)
                .await
                .map_err(|e| Error::source_failed(job, format!("cannot query pg_database: {e}"), None))?
                .map(|r| r.get(0));
            match size {
                Some(s) => sizes.push((db.clone(), s.max(0) as u64)),
                None => {
                    return Err(Error::source_failed(
                        job,
                        format!("database `{db}` does not exist on {}", conn.display()),
                        Some("check `databases` (or the url's database)".into()),
                    ));
                }
            }
        }
        let _ = c.close().await;
        let tools = find_tools(job, pg.bin_dir.as_deref(), &server_version).await?;
        Ok(BackupSession {
            job: job.to_string(),
            conn,
            databases,
            globals: pg.globals,
            tools,
            server_version,
            facts: Arc::default(),
            sizes,
            row_counts: pg.row_counts,
        })
    }

    pub fn artifacts(&self) -> Vec<ArtifactPlan> {
        let mut v: Vec<ArtifactPlan> = self
            .databases
            .iter()
            .map(|db| ArtifactPlan {
                name: db.clone(),
                format: FORMAT_DUMP,
                ext: "dump",
                size_hint: None, // the database's size is no estimate of its dump: see ArtifactPlan
            })
            .collect();
        if self.globals {
            v.push(ArtifactPlan { name: GLOBALS.into(), format: FORMAT_GLOBALS, ext: "sql", size_hint: None });
        }
        v
    }

    pub async fn open(&mut self, artifact: &ArtifactPlan) -> Result<SourceStream> {
        if artifact.format == FORMAT_GLOBALS {
            return self.open_globals().await;
        }
        let job = self.job.clone();
        let db = artifact.name.clone();
        let conn = self.conn.with_database(&db);
        let mut c = conn.connect(&job).await?;
        sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut c).await.map_err(|e| {
            Error::source_failed(&job, format!("database `{db}`: cannot start snapshot transaction: {e}"), None)
        })?;
        // the row counts take ACCESS SHARE locks like pg_dump: the same bound on waiting
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET LOCAL lock_timeout = {}", conn.lock_timeout_ms())))
            .execute(&mut c)
            .await
            .map_err(|e| Error::source_failed(&job, format!("database `{db}`: cannot set lock_timeout: {e}"), None))?;
        let snapshot: String = sqlx::query("SELECT pg_export_snapshot()")
            .fetch_one(&mut c)
            .await
            .map_err(|e| Error::source_failed(&job, format!("database `{db}`: cannot export snapshot: {e}"), None))?
            .get(0);

        let cmd = conn.apply(
            Cmd::new(self.tools.path("pg_dump"))
                .arg("--format=custom")
                .arg("--compress=0")
                .arg("--no-password")
                .arg(format!("--lock-wait-timeout={}", conn.lock_timeout_ms()))
                .arg(format!("--snapshot={snapshot}")),
        );
        tracing::info!(
            job = %job,
            database = %db,
            "pg_dump: locking the tables to dump (ACCESS SHARE); waits up to {} for a session holding an ACCESS EXCLUSIVE lock (`lock_timeout`)",
            humantime::format_duration(conn.lock_timeout)
        );
        let mut running = cmd
            .spawn(Stdio::null(), Stdio::piped())
            .map_err(|e| Error::source_failed(&job, format!("cannot start `{}`: {e}", cmd.display()), None))?;
        let stdout =
            running.child.stdout.take().ok_or_else(|| Error::source_failed(&job, "pg_dump has no stdout", None))?;
        let exact = self.row_counts == RowCounts::Exact;
        let (reader, seen) = rows::DumpTap::new(stdout, exact);

        // list the tables in the exported snapshot while pg_dump runs (catalog reads only: the
        // rows are counted from the dump stream); the transaction stays open (and the snapshot
        // valid) until pg_dump has exited, for the SQL fallback
        let list_job = job.clone();
        let list_db = db.clone();
        let listing = tokio::spawn(async move {
            let listed = rows::list_tables(&mut c, &list_job, &list_db).await;
            (c, listed)
        });
        let facts_out = self.facts.clone();
        let lock_timeout = conn.lock_timeout;
        let completion = Box::pin(async move {
            let (status, stderr) = running.wait().await.map_err(|e| {
                Error::source_failed(&job, format!("database `{db}`: waiting for pg_dump failed: {e}"), None)
            })?;
            let (mut c, listed) = listing
                .await
                .map_err(|e| Error::source_failed(&job, format!("table listing task failed: {e}"), None))?;
            let finish = |c: PgConnection| async move {
                let mut c = c;
                let _ = sqlx::raw_sql("COMMIT").execute(&mut c).await;
                let _ = c.close().await;
            };
            if !status.success() && is_lock_timeout(&stderr) {
                finish(c).await;
                return Err(lock_timeout_err(&job, &db, "pg_dump", lock_timeout, &stderr));
            }
            if !status.success() {
                finish(c).await;
                return Err(Error::source_failed(
                    &job,
                    tool_failure(&format!("pg_dump of database `{db}`"), &status, &stderr, 5),
                    Some("nothing was committed; fix the cause and run the job again".into()),
                ));
            }
            let (head, counted) = match seen.lock() {
                Ok(s) => (s.head.clone(), s.counts()),
                Err(_) => (Vec::new(), Err(archive::ArchiveError::Malformed("tap poisoned".into()))),
            };
            if head.is_empty() {
                finish(c).await;
                return Err(Error::source_failed(
                    &job,
                    format!("pg_dump of database `{db}` produced an empty dump"),
                    None,
                ));
            }
            if !head.starts_with(b"PGDMP") {
                finish(c).await;
                return Err(Error::source_failed(
                    &job,
                    format!("pg_dump of database `{db}` did not produce a custom-format archive"),
                    None,
                ));
            }
            let listed = match listed {
                Ok(l) => l,
                Err(e) => {
                    finish(c).await;
                    return Err(e);
                }
            };
            let facts = if !exact {
                Ok(rows::estimates(&db, &listed))
            } else {
                match counted {
                    Ok(own) => Ok(rows::from_stream(&db, &listed, &own)),
                    Err(why) => {
                        tracing::info!(
                            job = %job,
                            database = %db,
                            "row counts: cannot read them from the dump stream ({why}); counting with SQL in the dump's snapshot instead"
                        );
                        rows::count_with_sql(&mut c, &job, &db, &listed).await
                    }
                }
            };
            finish(c).await;
            let facts = facts?;
            if let Ok(mut f) = facts_out.lock() {
                f.push(facts);
            }
            Ok(())
        });
        Ok(SourceStream { reader: Box::new(reader), completion })
    }

    async fn open_globals(&mut self) -> Result<SourceStream> {
        let job = self.job.clone();
        let cmd = self.conn.apply(Cmd::new(self.tools.path("pg_dumpall")).arg("--globals-only").arg("--no-password"));
        let mut running = cmd
            .spawn(Stdio::null(), Stdio::piped())
            .map_err(|e| Error::source_failed(&job, format!("cannot start `{}`: {e}", cmd.display()), None))?;
        let stdout =
            running.child.stdout.take().ok_or_else(|| Error::source_failed(&job, "pg_dumpall has no stdout", None))?;
        let (reader, seen) = rows::DumpTap::new(stdout, false);
        let completion = Box::pin(async move {
            let (status, stderr) = running
                .wait()
                .await
                .map_err(|e| Error::source_failed(&job, format!("waiting for pg_dumpall failed: {e}"), None))?;
            if !status.success() {
                return Err(Error::source_failed(
                    &job,
                    tool_failure("pg_dumpall --globals-only", &status, &stderr, 5),
                    None,
                ));
            }
            if seen.lock().map(|s| s.head.is_empty()).unwrap_or(true) {
                return Err(Error::source_failed(&job, "pg_dumpall --globals-only produced no output", None));
            }
            Ok(())
        });
        Ok(SourceStream { reader: Box::new(reader), completion })
    }

    pub async fn finish(&mut self) -> Result<serde_json::Value> {
        let mut databases = self.facts.lock().map(|f| f.clone()).unwrap_or_default();
        for d in databases.iter_mut() {
            if let Some(s) = self.sizes.iter().find(|s| s.0 == d.name) {
                d.size_bytes = s.1;
            }
        }
        let facts = Facts {
            server_version: self.server_version.clone(),
            pg_dump_version: self.tools.version.clone(),
            databases,
            globals: self.globals,
        };
        Ok(serde_json::to_value(facts).unwrap_or_default())
    }

    /// Nothing to undo: snapshot transactions end with their pg_dump.
    pub async fn close(self, _committed: bool) {}

    pub fn describe(&self) -> String {
        let names: Vec<String> = self.artifacts().into_iter().map(|a| a.name).collect();
        format!(
            "source reachable (server {}, pg_dump {}); will store: {}",
            self.server_version,
            self.tools.version,
            names.join(", ")
        )
    }
}

/// A PostgreSQL tool gave up waiting for a lock: `lock_timeout`, or pg_dump's
/// `--lock-wait-timeout` (a statement timeout on its `LOCK TABLE`).
fn is_lock_timeout(stderr: &str) -> bool {
    stderr.contains("lock timeout")
        || stderr.contains("could not obtain lock")
        || (stderr.contains("statement timeout") && stderr.contains("LOCK TABLE"))
}

/// The error for a tool that gave up on a lock another session holds: names the lock and the
/// timeout, and how to find the holder.
fn lock_timeout_err(job: &str, db: &str, tool: &str, limit: Duration, stderr: &str) -> Error {
    Error::source_failed(
        job,
        format!(
            "{tool} on database `{db}` gave up after {} (`lock_timeout`): another session holds a conflicting lock \
             on a table (an ACCESS EXCLUSIVE lock: ALTER TABLE, TRUNCATE, VACUUM FULL, LOCK TABLE …): {}",
            humantime::format_duration(limit),
            crate::tool_output::tail(stderr, 5, "no error output")
        ),
        Some(format!(
            "nothing was changed or committed; find the holder with `SELECT pid, mode, relation::regclass, query FROM pg_locks \
             JOIN pg_stat_activity USING (pid) WHERE database = (SELECT oid FROM pg_database WHERE datname = '{db}')`, \
             retry once it is released, or raise `lock_timeout` on the job"
        )),
    )
}

// ---------------------------------------------------------------- restore

/// Where one artifact is restored to.
fn destination(job: &str, pg: &PostgresJob, artifact: &Artifact, opts: &RestoreOptions) -> Result<Conn> {
    let source = Conn::from_job(job, pg)?;
    let Some(to) = &opts.to else {
        return Ok(if artifact.format == FORMAT_GLOBALS { source } else { source.with_database(&artifact.name) });
    };
    let mut url = url::Url::parse(to).map_err(|e| {
        Error::source_failed(
            job,
            format!("--to: not a URL: {e}"),
            Some("e.g. `--to postgres://user@host:5432/dbname`".into()),
        )
    })?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(Error::source_failed(job, "--to must be a postgres:// URL", None));
    }
    let mut password = url.password().map(|p| Secret::new(percent_decode(p)));
    let _ = url.set_password(None);
    let dest = Conn { url, password: None, connect_timeout: source.connect_timeout, lock_timeout: source.lock_timeout };
    // reuse the job's password only for the job's own server, never send it elsewhere
    if password.is_none() && dest.host_port() == source.host_port() {
        password = source.password.clone();
    }
    let dest = Conn { password, ..dest };
    // one database: into the URL's database if it names one; several: each into its own name
    Ok(if artifact.format == FORMAT_GLOBALS || (!dest.database().is_empty() && !opts.several) {
        dest
    } else {
        dest.with_database(&artifact.name)
    })
}

/// What the destination holds now.
struct DestState {
    exists: bool,
    relations: i64,
}

async fn inspect(job: &str, dest: &Conn) -> Result<DestState> {
    match dest.connect(job).await {
        Ok(mut c) => {
            let n: i64 = sqlx::query(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r','p','v','m','S','f') AND n.nspname NOT IN ('pg_catalog','information_schema')
                   AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'",
            )
            .fetch_one(&mut c)
            .await
            .map_err(|e| Error::source_failed(job, format!("cannot inspect {}: {e}", dest.display()), None))?
            .get(0);
            let _ = c.close().await;
            Ok(DestState { exists: true, relations: n })
        }
        Err(Error::Source { kind: SourceFailure::NoSuchDatabase, .. }) => Ok(DestState { exists: false, relations: 0 }),
        Err(e) => Err(e),
    }
}

pub async fn plan_restore(
    job: &str,
    pg: &PostgresJob,
    _m: &Manifest,
    artifact: &Artifact,
    opts: &RestoreOptions,
) -> Result<RestoreStep> {
    if artifact.format == physical::FORMAT_BASE {
        return physical::recover::plan(job, _m, opts);
    }
    let dest = destination(job, pg, artifact, opts)?;
    if artifact.format == FORMAT_GLOBALS {
        return Ok(RestoreStep {
            artifact: artifact.name.clone(),
            destination: dest.display(),
            action: "psql: replay roles and tablespaces (existing roles are reported and kept)".into(),
        });
    }
    let state = inspect(job, &dest).await?;
    if state.exists && state.relations > 0 && !opts.force {
        return Err(Error::DestinationNotEmpty {
            job: job.to_string(),
            destination: dest.display(),
            detail: format!("{} relations", state.relations),
        });
    }
    let jobs = opts.jobs.unwrap_or_else(parallel::default_jobs);
    let single = match parallel::why_not(job, &dest, state.exists, jobs).await? {
        None => {
            let replaces = (state.exists && state.relations > 0).then_some(state.relations);
            let action = parallel::describe(jobs, replaces);
            return Ok(RestoreStep { artifact: artifact.name.clone(), destination: dest.display(), action });
        }
        Some(why) if jobs > 1 => format!(" (not in parallel: {why})"),
        Some(_) => String::new(),
    };
    let action = if !state.exists {
        "create the database, then pg_restore --single-transaction".to_string()
    } else if state.relations == 0 {
        "pg_restore --single-transaction into the empty database".to_string()
    } else if opts.force {
        format!("pg_restore --single-transaction --clean --if-exists (replaces {} existing relations)", state.relations)
    } else {
        unreachable!("refused above")
    };
    Ok(RestoreStep { artifact: artifact.name.clone(), destination: dest.display(), action: action + &single })
}

pub async fn open_sink(
    job: &str,
    pg: &PostgresJob,
    m: &Manifest,
    artifact: &Artifact,
    opts: &RestoreOptions,
) -> Result<Sink> {
    if artifact.format == physical::FORMAT_BASE {
        return physical::recover::open_sink(job, m, artifact, opts).await;
    }
    let dest = destination(job, pg, artifact, opts)?;
    let facts: Facts = serde_json::from_value(m.facts.clone()).unwrap_or_default();
    let server = {
        let admin = dest.with_database("postgres");
        match admin.connect(job).await {
            Ok(mut c) => {
                let v = server_version(&mut c, job).await.unwrap_or_default();
                let _ = c.close().await;
                v
            }
            Err(_) => facts.server_version.clone(),
        }
    };
    // pg_restore must be at least as new as the dump's pg_dump
    let need =
        if major_of(&facts.pg_dump_version) > major_of(&server) { facts.pg_dump_version.clone() } else { server };
    let tools = find_tools(job, pg.bin_dir.as_deref(), &need).await?;

    let mut on_failure: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> = None;
    let cmd = if artifact.format == FORMAT_GLOBALS {
        dest.apply_restore(
            Cmd::new(tools.path("psql")).arg("-X").arg("-q").arg("--no-password").arg("-v").arg("ON_ERROR_STOP=0"),
        )
    } else {
        let state = inspect(job, &dest).await?;
        if state.relations > 0 && !opts.force {
            return Err(Error::DestinationNotEmpty {
                job: job.to_string(),
                destination: dest.display(),
                detail: format!("{} relations", state.relations),
            });
        }
        let jobs = opts.jobs.unwrap_or_else(parallel::default_jobs);
        match parallel::why_not(job, &dest, state.exists, jobs).await? {
            None => return parallel::open(job, dest, tools, state.exists, opts, jobs).await,
            Some(why) if jobs > 1 => {
                tracing::info!(job, destination = %dest.display(), "restoring in one transaction, not in parallel: {why}")
            }
            Some(_) => {}
        }
        if !state.exists {
            create_database(job, &dest).await?;
            // a failed restore must not leave a new, empty database behind
            let (job, dest) = (job.to_string(), dest.clone());
            on_failure = Some(Box::pin(async move { drop_database(&job, &dest).await }));
        } else if state.relations > 0 && !opts.force {
            return Err(Error::DestinationNotEmpty {
                job: job.to_string(),
                destination: dest.display(),
                detail: format!("{} relations", state.relations),
            });
        }
        let mut cmd =
            Cmd::new(tools.path("pg_restore")).arg("--no-password").arg("--exit-on-error").arg("--single-transaction");
        if state.relations > 0 {
            cmd = cmd.arg("--clean").arg("--if-exists");
        }
        if opts.no_owner {
            cmd = cmd.arg("--no-owner").arg("--no-acl");
        }
        if state.relations > 0 {
            tracing::info!(
                job,
                destination = %dest.display(),
                "pg_restore: replacing {} relations in one transaction; waits up to {} for locks other sessions hold on them (`lock_timeout`)",
                state.relations,
                humantime::format_duration(dest.lock_timeout)
            );
        }
        dest.apply_restore(cmd)
    };
    // pg_restore starts its session with `SET lock_timeout = 0` (whatever PGOPTIONS says): a
    // watcher enforces `lock_timeout` on it from outside, by its application name
    let app = format!("drctl-restore-{}", crate::layout::random_suffix());
    let cmd = cmd.env("PGAPPNAME", &app);
    watch_restore_locks(job.to_string(), dest.clone(), app);
    let mut running = cmd
        .spawn(Stdio::piped(), Stdio::null())
        .map_err(|e| Error::source_failed(job, format!("cannot start `{}`: {e}", cmd.display()), None))?;
    let stdin =
        running.child.stdin.take().ok_or_else(|| Error::source_failed(job, "restore tool has no stdin", None))?;
    Ok(Sink {
        writer: Box::new(stdin),
        consumer: super::Consumer::Process(running),
        destination: dest.display(),
        on_failure,
    })
}

/// Enforce `lock_timeout` on a restore session (found by its `application_name`) from a second
/// connection: say at `-v` what it waits for (which table, which sessions hold it), and when it has
/// waited longer than `lock_timeout` cancel the waiting statement (`pg_cancel_backend`) with a
/// warning naming the lock, so the restore's single transaction fails and rolls back instead of
/// waiting without a word. Ends when the session is gone (or never showed up).
fn watch_restore_locks(job: String, dest: Conn, app: String) {
    tokio::spawn(async move {
        let Ok(mut c) = dest.connect(&job).await else { return };
        let limit = dest.lock_timeout;
        let appear_by = std::time::Instant::now() + dest.connect_timeout + Duration::from_secs(5);
        let mut seen = false;
        let mut told: Option<String> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let row = sqlx::query(
                "SELECT a.pid, COALESCE(a.wait_event_type = 'Lock', false),
                        COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - a.query_start), 0)::float8,
                        COALESCE((SELECT string_agg(DISTINCT l.relation::regclass::text, ', ') FROM pg_locks l
                                  WHERE l.pid = a.pid AND NOT l.granted AND l.relation IS NOT NULL), ''),
                        array_to_string(pg_blocking_pids(a.pid), ', ')
                 FROM pg_stat_activity a WHERE a.application_name = $1 LIMIT 1",
            )
            .bind(&app)
            .fetch_optional(&mut c)
            .await;
            let row = match row {
                Ok(Some(r)) => r,
                Ok(None) if !seen && std::time::Instant::now() < appear_by => continue,
                _ => break,
            };
            seen = true;
            let (pid, waiting, waited, relation, holders): (i32, bool, f64, String, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            if !waiting {
                continue;
            }
            let what = if relation.is_empty() { "a lock".to_string() } else { format!("a lock on `{relation}`") };
            if told.as_deref() != Some(what.as_str()) {
                tracing::info!(
                    job = %job,
                    "pg_restore waits for {what}, held by session(s) {holders}; gives up after {} (`lock_timeout`)",
                    humantime::format_duration(limit)
                );
                told = Some(what.clone());
            }
            if waited >= limit.as_secs_f64() {
                tracing::warn!(
                    job = %job,
                    "pg_restore waited {} for {what}, held by session(s) {holders}: cancelling it (`lock_timeout`); its transaction rolls back",
                    humantime::format_duration(limit)
                );
                let _ = sqlx::query("SELECT pg_cancel_backend($1)").bind(pid).execute(&mut c).await;
                break;
            }
        }
        let _ = c.close().await;
    });
}

/// Drop the database a failed restore created (`dest`'s own).
async fn drop_database(job: &str, dest: &Conn) {
    parallel::drop_database(job, dest, &dest.database()).await
}

async fn create_database(job: &str, dest: &Conn) -> Result<()> {
    let db = dest.database();
    let mut c = dest.with_database("postgres").connect(job).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {}", quote_ident(&db)))).execute(&mut c).await.map_err(
        |e| Error::source_failed(job, format!("cannot create database `{db}` on {}: {e}", dest.display()), None),
    )?;
    let _ = c.close().await;
    Ok(())
}

impl BackupSession {
    pub fn server_version(&self) -> &str {
        &self.server_version
    }
    pub fn tool_version(&self) -> &str {
        &self.tools.version
    }

    /// The other tools a backup or restore of this job runs, each with its version; a missing one
    /// is an error naming it.
    pub async fn check_companion_tools(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for tool in ["pg_dumpall", "pg_restore", "psql"] {
            let path = self.tools.path(tool);
            match tool_version(&path).await {
                Some(v) => out.push((tool.to_string(), v)),
                None => {
                    return Err(Error::source_failed(
                        &self.job,
                        format!("`{}` is missing or does not run", path.display()),
                        Some("install the PostgreSQL client tools of the same version as pg_dump".into()),
                    ));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tool_versions() {
        assert_eq!(
            parse_tool_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n").as_deref(),
            Some("15.18")
        );
        assert_eq!(parse_tool_version("pg_dump (PostgreSQL) 17beta2").as_deref(), Some("17beta2"));
        assert_eq!(major_of("17beta2"), 17);
        assert_eq!(parse_tool_version("garbage"), None);
    }

    #[test]
    fn quoting_and_encoding() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(percent_decode(&utf8_percent_encode("a b/é")), "a b/é");
    }
}
