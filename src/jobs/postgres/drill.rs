//! Postgres drill: restore every database of the backup into a scratch server, compare its tables
//! and row counts with the manifest's facts, then run the job's `verify.checks`.
//!
//! The scratch server is an ephemeral cluster (initdb in the drill's scratch directory, started
//! with pg_ctl on a free loopback port, trust authentication, fsync off; as `scratch_user`, default
//! `postgres`, when drctl runs as root, since initdb refuses root) that is stopped and deleted
//! afterwards — or, with `verify.scratch_url`, a throwaway database `drctl_verify_…` created there
//! for each restored database and dropped afterwards. The restore itself is `drctl restore --to`
//! with `--no-owner` (the scratch server has none of the source's roles).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};

use crate::drill::context::{Drill, run_tool};
use crate::finding::Severity;
use crate::jobs::JobSpec;
use crate::jobs::RestoreOptions;
use crate::jobs::postgres::PostgresJob;
use crate::jobs::postgres::RowCounts;
use crate::jobs::postgres::{FORMAT_GLOBALS, Facts};

/// An ephemeral PostgreSQL cluster in a directory of the drill; stopped on [`Cluster::stop`] (or,
/// as a last resort, on drop).
pub struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    user: Option<String>,
    pub version: String,
    stopped: bool,
}

/// Where the ephemeral cluster's binaries are: `pg_bin_dir`, the job's `bin_dir`, the newest
/// `/usr/lib/postgresql/*/bin`, or `PATH`.
pub fn find_server_bin(candidates: &[Option<&Path>]) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = candidates.iter().flatten().map(|p| p.to_path_buf()).collect();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut found: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
            .collect();
        found.sort_by_key(|d| std::cmp::Reverse(d.0));
        dirs.extend(found.into_iter().map(|d| d.1));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter().find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

impl Cluster {
    /// initdb and start a cluster below `dir`.
    ///
    /// # Errors
    /// A message saying which step failed, with the tool's last output lines.
    pub async fn start(dir: &Path, bin: &Path, user: Option<&str>) -> Result<Cluster, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
        if let Some(u) = user {
            let (ok, out) = run_tool(Path::new("chown"), &[format!("{u}:"), dir.display().to_string()], None).await?;
            if !ok {
                return Err(format!("cannot give `{}` to user `{u}`: {out}", dir.display()));
            }
        }
        let data = dir.join("data");
        let (ok, out) = run_tool(
            &bin.join("initdb"),
            &[
                "-D".into(),
                data.display().to_string(),
                "-U".into(),
                "postgres".into(),
                "-A".into(),
                "trust".into(),
                "--no-sync".into(),
                "-E".into(),
                "UTF8".into(),
                "--no-locale".into(),
            ],
            user,
        )
        .await?;
        if !ok {
            return Err(format!("initdb failed: {out}"));
        }
        Cluster::launch(dir, data, bin, user, 60).await
    }

    /// Start a server on an existing data directory below `dir` (a restored one may spend a
    /// while in recovery: `pg_ctl` waits up to `wait_secs` until it accepts connections).
    ///
    /// # Errors
    /// `pg_ctl`'s output and the server log's last lines.
    pub async fn launch(
        dir: &Path,
        data: PathBuf,
        bin: &Path,
        user: Option<&str>,
        wait_secs: u32,
    ) -> Result<Cluster, String> {
        let version = std::fs::read_to_string(data.join("PG_VERSION")).unwrap_or_default().trim().to_string();
        let mut last = String::new();
        for _ in 0..3 {
            let port = crate::drill::context::free_port().map_err(|e| format!("no free port: {e}"))?;
            let opts = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                dir.display()
            );
            let (ok, out) = run_tool(
                &bin.join("pg_ctl"),
                &[
                    "-D".into(),
                    data.display().to_string(),
                    "-l".into(),
                    dir.join("postgres.log").display().to_string(),
                    "-w".into(),
                    "-t".into(),
                    wait_secs.to_string(),
                    "-s".into(),
                    "-o".into(),
                    opts,
                    "start".into(),
                ],
                user,
            )
            .await?;
            if ok {
                return Ok(Cluster {
                    bin: bin.to_path_buf(),
                    data,
                    port,
                    user: user.map(str::to_string),
                    version,
                    stopped: false,
                });
            }
            let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
            last = format!("{out} / {}", crate::tool_output::tail(&log, 6, "no output"));
            if !log.contains("already in use") {
                break;
            }
        }
        Err(format!("pg_ctl start failed: {last}"))
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        let mut u = url::Url::parse(&format!("postgres://postgres@127.0.0.1:{}/", self.port)).expect("valid url");
        u.set_path(&format!("/{db}"));
        u.to_string()
    }

    /// Fast shutdown (`pg_ctl stop -m immediate`: the data is thrown away anyway).
    pub async fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let args = [
            "-D".to_string(),
            self.data.display().to_string(),
            "-m".into(),
            "immediate".into(),
            "-s".into(),
            "stop".into(),
        ];
        match run_tool(&self.bin.join("pg_ctl"), &args, self.user.as_deref()).await {
            Ok((true, _)) => {}
            Ok((false, out)) | Err(out) => tracing::warn!(error = %out, "could not stop the drill's scratch cluster"),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", u, "--"]).arg(self.bin.join("pg_ctl"));
                c
            }
            None => std::process::Command::new(self.bin.join("pg_ctl")),
        };
        let _ = cmd.arg("-D").arg(&self.data).args(["-m", "immediate", "-s", "stop"]).output();
    }
}

/// The user the ephemeral cluster runs as: none unless drctl is root.
pub(crate) fn cluster_user(configured: Option<&str>) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    root.then(|| configured.unwrap_or("postgres").to_string())
}

/// Connect to the scratch server, giving up after `limit`: a scratch server that accepts TCP and
/// never answers fails the drill with a finding instead of hanging it.
pub(crate) async fn connect(url: &str, limit: std::time::Duration) -> Result<PgConnection, String> {
    let opts = PgConnectOptions::from_str(url).map_err(|e| e.to_string())?;
    match tokio::time::timeout(limit, PgConnection::connect_with(&opts)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} (`connect_timeout`)", humantime::format_duration(limit))),
    }
}

/// How long the drill waits for a scratch connection: the job's `connect_timeout` (postgres
/// jobs), else its default.
pub(crate) fn connect_timeout(d: &Drill<'_>) -> std::time::Duration {
    match &d.job.spec {
        JobSpec::Postgres(pg) => pg.connect_timeout(),
        // gitlab's drill loads its database dump into a scratch PostgreSQL too
        JobSpec::Gitlab(_) | JobSpec::Redis(_) | JobSpec::Volume(_) | JobSpec::Vault(_) => {
            PostgresJob::DEFAULT_CONNECT_TIMEOUT
        }
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Every ordinary table with its exact row count, as the backup counted them.
async fn table_rows(c: &mut PgConnection) -> Result<Vec<(String, u64)>, String> {
    let tables = sqlx::query(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
         ORDER BY 1, 2",
    )
    .fetch_all(&mut *c)
    .await
    .map_err(|e| format!("cannot list tables: {e}"))?;
    let mut out = Vec::new();
    for t in tables {
        let (schema, name): (String, String) = (t.get(0), t.get(1));
        let q = format!("SELECT count(*) FROM {}.{}", quote_ident(&schema), quote_ident(&name));
        // identifiers come from pg_class and are quoted
        let rows: i64 = sqlx::query(sqlx::AssertSqlSafe(q))
            .fetch_one(&mut *c)
            .await
            .map_err(|e| format!("cannot count `{schema}.{name}`: {e}"))?
            .get(0);
        out.push((format!("{schema}.{name}"), rows.max(0) as u64));
    }
    Ok(out)
}

/// Compare the restored tables of `db` with the manifest's facts.
fn compare_tables(drill: &mut Drill<'_>, db: &str, facts: &Facts, restored: &[(String, u64)]) {
    let Some(want) = facts.databases.iter().find(|d| d.name == db) else {
        drill.warn(format!("database `{db}`"), "the manifest has no facts about it: nothing to compare");
        return;
    };
    let exact = want.row_counts == RowCounts::Exact;
    let mut mismatches = Vec::new();
    for t in &want.tables {
        let name = format!("{}.{}", t.schema, t.name);
        match restored.iter().find(|(n, _)| *n == name) {
            None => mismatches.push((
                format!("table `{db}.{name}`"),
                format!("missing after the restore (the manifest says {} rows)", t.rows),
            )),
            Some((_, rows)) if exact && *rows != t.rows => mismatches
                .push((format!("table `{db}.{name}`"), format!("{rows} rows restored, the manifest says {}", t.rows))),
            Some(_) => {}
        }
    }
    for (name, rows) in restored {
        if !want.tables.iter().any(|t| format!("{}.{}", t.schema, t.name) == *name) {
            mismatches.push((
                format!("table `{db}.{name}`"),
                format!("restored ({rows} rows) but not in the manifest's facts"),
            ));
        }
    }
    let n = mismatches.len();
    drill.mismatches(Severity::Error, mismatches, &format!("database `{db}`"));
    if n == 0 {
        let rows: u64 = restored.iter().map(|t| t.1).sum();
        drill.info(
            format!("database `{db}`"),
            if exact {
                format!("{} tables, {rows} rows: as the manifest says", restored.len())
            } else {
                format!(
                    "{} tables as the manifest says ({rows} rows; the manifest has estimates only: `row_counts = \"estimate\"`)",
                    restored.len()
                )
            },
        );
    }
}

/// Run the job's checks in `c`; each must return true.
pub(crate) async fn run_checks(drill: &mut Drill<'_>, c: &mut PgConnection, db: &str, checks: &[String]) {
    for sql in checks {
        let subject = format!("check `{sql}`");
        let row = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone())).fetch_optional(&mut *c).await;
        match row {
            Err(e) => {
                drill.error(subject, format!("failed in database `{db}`: {e}"));
            }
            Ok(None) => drill.error(subject, "returned no row (it must return true)"),
            Ok(Some(r)) => match r.try_get::<Option<bool>, _>(0) {
                Ok(Some(true)) => drill.info(subject, "true"),
                Ok(Some(false)) => drill.error(subject, format!("returned false in database `{db}`")),
                Ok(None) => drill.error(subject, format!("returned NULL in database `{db}` (it must return true)")),
                Err(e) => drill.error(subject, format!("did not return a boolean: {e}")),
            },
        }
    }
}

/// Drill a postgres backup.
pub async fn drill(d: &mut Drill<'_>, pg: &PostgresJob) {
    let verify = d.job.common.verify.clone().unwrap_or_default();
    let facts: Facts = serde_json::from_value(d.manifest.facts.clone()).unwrap_or_default();
    let dbs: Vec<String> =
        d.manifest.artifacts.iter().filter(|a| a.format != FORMAT_GLOBALS).map(|a| a.name.clone()).collect();
    if d.manifest.artifacts.iter().any(|a| a.format == FORMAT_GLOBALS) {
        d.info("artifact `globals`", "roles are not replayed into the scratch server (restored with --no-owner)");
    }
    match &verify.scratch_url {
        Some(url) => drill_scratch_url(d, url, &dbs, &facts, &verify.checks).await,
        None => drill_ephemeral(d, pg, &verify, &dbs, &facts).await,
    }
}

async fn drill_ephemeral(
    d: &mut Drill<'_>,
    pg: &PostgresJob,
    verify: &crate::jobs::VerifyConfig,
    dbs: &[String],
    facts: &Facts,
) {
    let Some(bin) = find_server_bin(&[verify.pg_bin_dir.as_deref(), pg.bin_dir.as_deref()]) else {
        d.error("scratch server", "no `initdb`/`pg_ctl` found for the ephemeral cluster");
        d.hint(
            "install the PostgreSQL server package (Debian: postgresql) or set `verify.pg_bin_dir`, or restore into an \
             existing scratch server with `verify.scratch_url`",
        );
        return;
    };
    let user = cluster_user(verify.scratch_user.as_deref());
    let mut cluster = match Cluster::start(&d.scratch.join("pg"), &bin, user.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            d.error("scratch server", format!("cannot start an ephemeral cluster with `{}`: {e}", bin.display()));
            d.hint("set `verify.pg_bin_dir`, `verify.scratch_user`, or use `verify.scratch_url`");
            return;
        }
    };
    let source_major: u32 =
        facts.server_version.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0);
    let scratch_major: u32 = cluster.version.parse().unwrap_or(0);
    if scratch_major < source_major {
        d.warn(
            "scratch server",
            format!("PostgreSQL {scratch_major} is older than the source's {}", facts.server_version),
        );
        d.hint("set `verify.pg_bin_dir` to the binaries of the source's major version or newer");
    }
    for db in dbs {
        let to = cluster.url(db);
        check_one(d, db, &to, facts, dbs, &verify.checks).await;
    }
    cluster.stop().await;
}

async fn drill_scratch_url(d: &mut Drill<'_>, url: &str, dbs: &[String], facts: &Facts, checks: &[String]) {
    let admin = match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => u,
        _ => {
            d.error("verify.scratch_url", "not a postgres:// URL");
            return;
        }
    };
    let mut admin_conn = match connect(admin.as_str(), connect_timeout(d)).await {
        Ok(c) => c,
        Err(e) => {
            d.error("scratch server", format!("cannot connect to {}: {e}", crate::redact::url_for_display(url)));
            return;
        }
    };
    for db in dbs {
        let name = format!("drctl_verify_{}", crate::layout::random_suffix());
        let mut to = admin.clone();
        to.set_path(&format!("/{name}"));
        check_one(d, db, to.as_str(), facts, dbs, checks).await;
        if let Err(e) =
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(&name))))
                .execute(&mut admin_conn)
                .await
        {
            d.warn("scratch server", format!("could not drop the throwaway database `{name}`: {e}"));
        }
    }
    let _ = admin_conn.close().await;
}

/// Restore database `db` to `to`, compare, and (for the first database) run the checks.
async fn check_one(d: &mut Drill<'_>, db: &str, to: &str, facts: &Facts, dbs: &[String], checks: &[String]) {
    let opts = RestoreOptions { to: Some(to.to_string()), no_owner: true, ..Default::default() };
    if d.restore(db, opts, None).await.is_none() {
        return;
    }
    let mut c = match connect(to, connect_timeout(d)).await {
        Ok(c) => c,
        Err(e) => {
            d.error(format!("database `{db}`"), format!("cannot connect to the restored database: {e}"));
            return;
        }
    };
    match table_rows(&mut c).await {
        Ok(rows) => compare_tables(d, db, facts, &rows),
        Err(e) => d.error(format!("database `{db}`"), e),
    }
    if dbs.first().map(String::as_str) == Some(db) {
        run_checks(d, &mut c, db, checks).await;
    }
    let _ = c.close().await;
}

/// A scratch PostgreSQL database for the drills of other kinds (gitlab's `db/database.sql.gz`):
/// a fresh database in the same ephemeral cluster the postgres drill uses, or a throwaway
/// database `drctl_verify_…` on `verify.scratch_url`. [`ScratchPg::close`] stops the cluster or
/// drops the database.
pub(crate) struct ScratchPg {
    cluster: Option<Cluster>,
    admin: Option<PgConnection>,
    /// The database to load into, without a password (that is in [`ScratchPg::password`]).
    pub url: url::Url,
    /// The scratch URL's password, for `PGPASSWORD` (never argv).
    pub password: Option<crate::redact::Secret>,
    /// The database's name.
    pub name: String,
    /// `psql` (beside the cluster's binaries, else from `PATH`).
    pub psql: PathBuf,
}

impl ScratchPg {
    /// Start the ephemeral cluster (or connect to `verify.scratch_url`) and create an empty
    /// database; a problem becomes an error finding (with a hint) and `None`.
    pub(crate) async fn open(d: &mut Drill<'_>, verify: &crate::jobs::VerifyConfig) -> Option<ScratchPg> {
        let name = format!("drctl_verify_{}", crate::layout::random_suffix());
        let bin = find_server_bin(&[verify.pg_bin_dir.as_deref()]);
        let psql = bin.as_ref().map(|b| b.join("psql")).filter(|p| p.is_file()).unwrap_or_else(|| "psql".into());
        let (cluster, admin_url) = match &verify.scratch_url {
            Some(u) => match url::Url::parse(u) {
                Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => (None, u),
                _ => {
                    d.error("verify.scratch_url", "not a postgres:// URL");
                    return None;
                }
            },
            None => {
                let Some(bin) = bin else {
                    d.error("scratch server", "no `initdb`/`pg_ctl` found for the ephemeral cluster");
                    d.hint(
                        "install the PostgreSQL server package (Debian: postgresql) or set `verify.pg_bin_dir`, or \
                         load into an existing scratch server with `verify.scratch_url`",
                    );
                    return None;
                };
                let user = cluster_user(verify.scratch_user.as_deref());
                match Cluster::start(&d.scratch.join("pg"), &bin, user.as_deref()).await {
                    Ok(c) => {
                        let u = url::Url::parse(&c.url("postgres")).expect("valid url");
                        (Some(c), u)
                    }
                    Err(e) => {
                        d.error(
                            "scratch server",
                            format!("cannot start an ephemeral cluster with `{}`: {e}", bin.display()),
                        );
                        d.hint("set `verify.pg_bin_dir`, `verify.scratch_user`, or use `verify.scratch_url`");
                        return None;
                    }
                }
            }
        };
        let mut admin = match connect(admin_url.as_str(), connect_timeout(d)).await {
            Ok(c) => c,
            Err(e) => {
                d.error(
                    "scratch server",
                    format!("cannot connect to {}: {e}", crate::redact::url_for_display(admin_url.as_str())),
                );
                return None;
            }
        };
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {}", quote_ident(&name))))
            .execute(&mut admin)
            .await
        {
            d.error("scratch server", format!("cannot create the throwaway database `{name}`: {e}"));
            d.hint("the scratch role needs `CREATEDB`");
            return None;
        }
        let password = admin_url.password().map(|p| crate::redact::Secret::new(crate::redact::percent_decode(p)));
        let mut url = admin_url;
        let _ = url.set_password(None);
        url.set_path(&format!("/{name}"));
        let admin = if cluster.is_some() { None } else { Some(admin) };
        Some(ScratchPg { cluster, admin, url, password, name, psql })
    }

    /// The database's URL with the password, for a connection from drctl itself.
    pub(crate) fn connect_url(&self) -> String {
        let mut u = self.url.clone();
        if let Some(p) = &self.password {
            let _ = u.set_password(Some(p.expose()));
        }
        u.to_string()
    }

    /// Every ordinary table of the database with its row count.
    pub(crate) async fn tables(&self) -> Result<Vec<(String, u64)>, String> {
        let mut c = connect(&self.connect_url(), crate::jobs::postgres::PostgresJob::DEFAULT_CONNECT_TIMEOUT).await?;
        let rows = table_rows(&mut c).await;
        let _ = c.close().await;
        rows
    }

    /// Stop the ephemeral cluster, or drop the throwaway database.
    pub(crate) async fn close(mut self, d: &mut Drill<'_>) {
        if let Some(c) = self.cluster.as_mut() {
            c.stop().await;
        }
        if let Some(mut admin) = self.admin.take() {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(&self.name));
            if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await {
                d.warn("scratch server", format!("could not drop the throwaway database `{}`: {e}", self.name));
            }
            let _ = admin.close().await;
        }
    }
}
