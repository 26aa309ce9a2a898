//! Restore drills, per job kind: restore a backup into a scratch place through the same restore
//! code `drctl restore` uses, then check what came back against what the manifest says.
//!
//! Why: a backup nobody has restored is a hope. A drill proves the stored bytes are intact (the
//! restore checks the stored sha256 before anything is decrypted, and the plaintext sha256 before a
//! consumer may commit), that the identity opens them, and that the data is what the source held:
//! table row counts (postgres), keys per database (redis), every file's size and hash (volume),
//! the snapshot's own SHA256SUMS (vault), the archive's layout and the secrets (gitlab).
//!
//! How the types fit: [`crate::engine::verify`] picks the backup, creates a [`ScratchDir`] and a
//! [`Drill`], and calls the kind's `drill` function here. A kind module restores through
//! [`Drill::restore`] (which records the measured restore time and turns a failed restore into a
//! finding) and reports every mismatch as a [`Finding`]: findings are data, the caller decides the
//! exit code. A drill never writes to the job's own source: every restore goes to `--to` a scratch
//! destination or to a file in the scratch directory.

pub mod gitlab;
pub mod postgres;
pub mod redis;
pub mod vault;
pub mod volume;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::catalog::Selector;
use crate::engine::Engine;
use crate::engine::restore::{Output, RestoreReport, RestoreRequest, restore};
use crate::jobs::JobConfig;
use crate::jobs::RestoreOptions;
use crate::manifest::Manifest;

/// How bad a finding is. Any `error` fails the drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One thing a drill found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    /// What it is about: an artifact, a table, a file, a check.
    pub subject: String,
    pub message: String,
    /// The next step, when there is one worth saying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{sev}: {}: {}", self.subject, self.message)
    }
}

/// Most mismatches listed one by one for a single comparison (files, tables); the rest are counted.
pub const MAX_LISTED: usize = 50;

/// A temporary directory for one drill, removed (with everything in it) when dropped. It is
/// traversable by other users (0711) so that an ephemeral PostgreSQL cluster running as
/// `postgres` can live below it; what is inside is created private.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// A new directory under `$DRCTL_SCRATCH_DIR`, else the system temp dir.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new() -> std::io::Result<ScratchDir> {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::var_os("DRCTL_SCRATCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base)?;
        let mut tries = 0;
        loop {
            let path = base.join(format!("drctl-verify-{}-{}", std::process::id(), crate::layout::random_suffix()));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o711))?;
                    return Ok(ScratchDir { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the drill's scratch directory");
        }
    }
}

/// One drill in progress: what it is about, and what it found so far.
pub struct Drill<'a> {
    pub engine: &'a Engine,
    pub job: &'a JobConfig,
    pub manifest: &'a Manifest,
    pub scratch: &'a ScratchDir,
    pub findings: Vec<Finding>,
    /// Wall time spent restoring (and, where the kind needs it, loading) the data: the RTO.
    pub restore_seconds: f64,
    /// Plaintext bytes restored.
    pub restored_bytes: u64,
    /// Where the data went, for the report.
    pub destinations: Vec<String>,
}

impl<'a> Drill<'a> {
    pub fn new(engine: &'a Engine, job: &'a JobConfig, manifest: &'a Manifest, scratch: &'a ScratchDir) -> Self {
        Drill {
            engine,
            job,
            manifest,
            scratch,
            findings: Vec::new(),
            restore_seconds: 0.0,
            restored_bytes: 0,
            destinations: Vec::new(),
        }
    }

    pub fn push(&mut self, severity: Severity, subject: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            subject: subject.into(),
            message: crate::redact::scrub(&message.into()),
            hint: None,
        });
    }

    pub fn error(&mut self, subject: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, subject, message);
    }

    pub fn warn(&mut self, subject: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, subject, message);
    }

    pub fn info(&mut self, subject: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Info, subject, message);
    }

    /// Attach a hint to the last finding.
    pub fn hint(&mut self, hint: impl Into<String>) {
        if let Some(f) = self.findings.last_mut() {
            f.hint = Some(crate::redact::scrub(&hint.into()));
        }
    }

    /// Whether an error was found.
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// Restore `artifact` of the drilled backup through the real restore code: to `options.to`
    /// (a scratch server or directory, never the source) or into `output` (a file in the scratch
    /// directory). The stored sha256 is checked before anything is decrypted. Adds the restore's
    /// wall time to [`Drill::restore_seconds`]; a failure becomes an error finding (with the
    /// error's hint) and `None`.
    pub async fn restore(
        &mut self,
        artifact: &str,
        options: RestoreOptions,
        output: Option<PathBuf>,
    ) -> Option<RestoreReport> {
        debug_assert!(options.to.is_some() || options.to_dir.is_some() || output.is_some(), "never the source");
        if options.to.is_none() && options.to_dir.is_none() && output.is_none() {
            self.error(format!("artifact `{artifact}`"), "internal: a drill restore without a scratch destination");
            return None;
        }
        let req = RestoreRequest {
            selector: Some(Selector::Id(self.manifest.backup_id.clone())),
            output: output.map(Output::File),
            options: RestoreOptions { force: true, ..options },
            dry_run: false,
            artifact: Some(artifact.to_string()),
            target: None,
            globals: false,
        };
        let clock = Instant::now();
        let result = restore(self.engine, &self.job.name, &req).await;
        self.restore_seconds += clock.elapsed().as_secs_f64();
        match result {
            Ok(r) => {
                self.restored_bytes += r.plaintext_bytes;
                for s in &r.steps {
                    self.destinations.push(format!("{} → {}", s.artifact, s.destination));
                }
                Some(r)
            }
            Err(e) => {
                self.error(format!("artifact `{artifact}`"), format!("restore failed: {e}"));
                if let Some(h) = e.hint() {
                    self.hint(h);
                }
                None
            }
        }
    }

    /// Add the time spent making restored data usable (a server loading it) to the restore time.
    pub fn add_restore_time(&mut self, since: Instant) {
        self.restore_seconds += since.elapsed().as_secs_f64();
    }

    /// Record a list of mismatches about one comparison: the first [`MAX_LISTED`] one by one, the
    /// rest as a count.
    pub fn mismatches(&mut self, severity: Severity, items: Vec<(String, String)>, what: &str) {
        let n = items.len();
        for (subject, message) in items.into_iter().take(MAX_LISTED) {
            self.push(severity, subject, message);
        }
        if n > MAX_LISTED {
            self.push(severity, what.to_string(), format!("{} more mismatches not listed", n - MAX_LISTED));
        }
    }
}

/// Why a just-committed backup looks suspicious, if it does: it is empty (no bytes; postgres: no
/// table in any database; redis: no key; volume: no file), or, against `last_good` (the size and
/// facts of the job's newest backup that was *not* suspicious), its plaintext size or its item
/// count (postgres: tables, and rows when both counted them exactly; redis: keys; volume: files)
/// fell by more than `drop` (a fraction, 0..=1). Pure.
///
/// The baseline is the last good backup, not a median of recent ones: a median that takes in the
/// empty backups after a wipe clears the flag after a few runs, and retention then deletes every
/// backup from before the wipe. Against the last good backup the flag is sticky: it stays until the
/// source is back to its size (or `verify.suspicious_drop` is raised to accept the new size).
pub fn suspicious(
    kind: &str,
    facts: &serde_json::Value,
    size: u64,
    last_good: Option<(u64, &serde_json::Value)>,
    drop: f64,
) -> Option<String> {
    if size == 0 {
        return Some("empty: the source produced no data".into());
    }
    let empty = match kind {
        "postgres" => facts["databases"]
            .as_array()
            .is_some_and(|dbs| !dbs.is_empty() && dbs.iter().all(|d| d["table_count"].as_u64() == Some(0)))
            .then_some("empty: no table in any database"),
        "redis" => (facts["keys"].as_u64() == Some(0)).then_some("empty: no key in any database"),
        "volume" => (facts["file_count"].as_u64() == Some(0)).then_some("empty: no file"),
        _ => None,
    };
    if let Some(e) = empty {
        return Some(e.into());
    }
    let (good_size, good_facts) = last_good?;
    if drop >= 1.0 {
        return None;
    }
    let fell = |now: u64, before: u64| before > 0 && (now as f64) < before as f64 * (1.0 - drop.max(0.0));
    let percent = |now: u64, before: u64| (1.0 - now as f64 / before as f64) * 100.0;
    if fell(size, good_size) {
        return Some(format!(
            "source size fell by {:.0} %: {size} bytes, the last good backup had {good_size}",
            percent(size, good_size)
        ));
    }
    for (what, now, before) in item_counts(kind, facts, good_facts) {
        if fell(now, before) {
            return Some(format!(
                "{what} fell by {:.0} %: {now}, the last good backup had {before}",
                percent(now, before)
            ));
        }
    }
    None
}

/// The item counts a kind records in its facts, as (what, now, last good) pairs: only counts both
/// backups recorded (and for postgres rows, counted exactly in both).
fn item_counts(kind: &str, now: &serde_json::Value, before: &serde_json::Value) -> Vec<(&'static str, u64, u64)> {
    let pair = |f: &dyn Fn(&serde_json::Value) -> Option<u64>| f(now).zip(f(before));
    let mut out = Vec::new();
    match kind {
        "postgres" => {
            let dbs = |v: &serde_json::Value| v["databases"].as_array().cloned();
            let tables =
                |v: &serde_json::Value| dbs(v).map(|d| d.iter().filter_map(|d| d["table_count"].as_u64()).sum());
            let rows = |v: &serde_json::Value| {
                let d = dbs(v)?;
                // estimates (pg_class.reltuples) may be 0 or -1 for unanalyzed tables: no basis
                d.iter().all(|d| d["row_counts"].as_str().is_none_or(|r| r == "exact")).then(|| {
                    d.iter()
                        .flat_map(|d| d["tables"].as_array().cloned().unwrap_or_default())
                        .filter_map(|t| t["rows"].as_u64())
                        .sum()
                })
            };
            if let Some((a, b)) = pair(&tables) {
                out.push(("table count", a, b));
            }
            if let Some((a, b)) = pair(&rows) {
                out.push(("row count", a, b));
            }
        }
        "redis" => {
            if let Some((a, b)) = pair(&|v: &serde_json::Value| v["keys"].as_u64()) {
                out.push(("key count", a, b));
            }
        }
        "volume" => {
            if let Some((a, b)) = pair(&|v: &serde_json::Value| v["file_count"].as_u64()) {
                out.push(("file count", a, b));
            }
        }
        _ => {}
    }
    out
}

/// One backup of a job as [`suspicious_series`] sees it.
#[derive(Debug, Clone)]
pub struct SeriesItem {
    pub id: String,
    pub kind: String,
    pub facts: serde_json::Value,
    /// Plaintext bytes.
    pub size: u64,
    /// The verdict recorded when it was made (manifest or catalog), if it was flagged.
    pub flagged: Option<String>,
    /// It was judged against a baseline when it was made (and not flagged): that verdict stands,
    /// e.g. a shrink the operator accepted with `verify.suspicious_drop = 1.0` for one run.
    pub judged: bool,
}

/// The suspicious backups of a job, judged again from what the targets hold (`backups` oldest
/// first): a backup recorded as suspicious stays suspicious, one judged good against a baseline
/// when it was made stays good, and every other one (made with no catalog to compare with) is
/// judged against the newest earlier backup that was not suspicious (see [`suspicious`]). This is what lets prune
/// protect the last good backup even on a fresh catalog (a Kubernetes CronJob), whose runs had no
/// baseline to judge against. Returns id → reason. Pure.
pub fn suspicious_series(backups: &[SeriesItem], drop: f64) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut last_good: Option<&SeriesItem> = None;
    for b in backups {
        let verdict = match (&b.flagged, b.judged) {
            (Some(reason), _) => Some(reason.clone()),
            (None, true) => None,
            (None, false) => suspicious(&b.kind, &b.facts, b.size, last_good.map(|g| (g.size, &g.facts)), drop),
        };
        match verdict {
            Some(reason) => {
                out.insert(b.id.clone(), reason);
            }
            None => last_good = Some(b),
        }
    }
    out
}

/// Run `program args…` and wait; returns the exit status and the last lines of its output.
pub(crate) async fn run_tool(program: &Path, args: &[String], as_user: Option<&str>) -> Result<(bool, String), String> {
    let mut cmd = match as_user {
        Some(user) => {
            let mut c = tokio::process::Command::new("runuser");
            c.arg("-u").arg(user).arg("--").arg(program);
            c
        }
        None => tokio::process::Command::new(program),
    };
    cmd.args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = cmd.output().await.map_err(|e| format!("cannot run `{}`: {e}", program.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), tail(&text)))
}

/// The last few non-empty lines of a tool's output, ` / `-joined.
pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "no output".into();
    }
    crate::redact::scrub(&lines[lines.len().saturating_sub(6)..].join(" / "))
}

/// A free TCP port on 127.0.0.1 (free when asked: callers retry when it was taken meanwhile).
pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_dir_is_removed_on_drop() {
        let d = ScratchDir::new().unwrap();
        let p = d.path().to_path_buf();
        std::fs::write(d.join("x"), b"1").unwrap();
        assert!(p.is_dir());
        drop(d);
        assert!(!p.exists());
    }

    #[test]
    fn suspicious_table() {
        let none = serde_json::json!({});
        let mib = 1024 * 1024;
        type Case = (&'static str, serde_json::Value, u64, Option<u64>, f64, bool);
        let cases: Vec<Case> = vec![
            ("first backup", none.clone(), 100, None, 0.5, false),
            ("zero bytes", none.clone(), 0, Some(100), 0.5, true),
            ("zero bytes, first backup", none.clone(), 0, None, 0.5, true),
            ("same size", none.clone(), 100, Some(100), 0.5, false),
            ("fell by 40 %", none.clone(), 60, Some(100), 0.5, false),
            ("fell by 60 %", none.clone(), 40, Some(100), 0.5, true),
            ("fell by 40 % with drop 0.3", none.clone(), 60, Some(100), 0.3, true),
            ("drop 1 disables", none.clone(), 1, Some(100), 1.0, false),
            ("grew", none.clone(), 500, Some(100), 0.5, false),
            // a truncated but exit-0 dump
            ("97.7 KiB after 48 MiB", none.clone(), 100_045, Some(48 * mib), 0.5, true),
        ];
        for (name, facts, size, good, drop, want) in cases {
            assert_eq!(suspicious("vault", &facts, size, good.map(|g| (g, &none)), drop).is_some(), want, "{name}");
        }
        let pg = serde_json::json!({"databases": [{"table_count": 0}, {"table_count": 0}]});
        assert!(suspicious("postgres", &pg, 5000, None, 0.5).unwrap().contains("no table"));
        let pg = serde_json::json!({"databases": [{"table_count": 0}, {"table_count": 2}]});
        assert!(suspicious("postgres", &pg, 5000, None, 0.5).is_none());
        assert!(suspicious("redis", &serde_json::json!({"keys": 0}), 90, None, 0.5).is_some());
        assert!(suspicious("volume", &serde_json::json!({"file_count": 0}), 1024, None, 0.5).is_some());
        assert!(suspicious("volume", &serde_json::json!({"file_count": 3}), 1024, None, 0.5).is_none());
    }

    #[test]
    fn suspicious_item_counts() {
        let files = |n: u64| serde_json::json!({"file_count": n});
        let keys = |n: u64| serde_json::json!({"keys": n});
        let pg = |tables: u64, rows: u64, counts: &str| {
            serde_json::json!({"databases": [{"table_count": tables, "row_counts": counts,
                "tables": [{"schema": "public", "name": "t", "rows": rows}]}]})
        };
        // same size, far fewer items
        type Case = (&'static str, &'static str, serde_json::Value, serde_json::Value, bool);
        let cases: Vec<Case> = vec![
            ("volume: 3 of 1000 files", "volume", files(3), files(1000), true),
            ("volume: 900 of 1000 files", "volume", files(900), files(1000), false),
            ("redis: 10 of 5000 keys", "redis", keys(10), keys(5000), true),
            ("redis: more keys", "redis", keys(6000), keys(5000), false),
            ("postgres: rows fell", "postgres", pg(3, 10, "exact"), pg(3, 100_000, "exact"), true),
            ("postgres: estimated rows are no basis", "postgres", pg(3, 0, "estimate"), pg(3, 100_000, "exact"), false),
            ("postgres: tables fell", "postgres", pg(1, 10, "estimate"), pg(30, 10, "estimate"), true),
            ("no counts recorded", "vault", serde_json::json!({}), serde_json::json!({}), false),
        ];
        for (name, kind, now, before, want) in cases {
            let got = suspicious(kind, &now, 1000, Some((1000, &before)), 0.5);
            assert_eq!(got.is_some(), want, "{name}: {got:?}");
        }
    }

    #[test]
    fn suspicious_flag_is_sticky() {
        let item = |id: &str, size: u64, files: u64, flagged: Option<&str>| SeriesItem {
            id: id.into(),
            kind: "volume".into(),
            facts: serde_json::json!({"file_count": files}),
            size,
            flagged: flagged.map(str::to_string),
            judged: false,
        };
        let flagged = |items: &[SeriesItem]| -> Vec<String> { suspicious_series(items, 0.5).into_keys().collect() };
        // six days of an emptied volume after three good ones: every one stays flagged (a median
        // of the last seven would have cleared the flag on the fourth)
        let mut series = vec![item("1", 1000, 10, None), item("2", 1010, 10, None), item("3", 1020, 11, None)];
        series.extend((4..=9).map(|i| item(&i.to_string(), 10, 1, None)));
        assert_eq!(flagged(&series), ["4", "5", "6", "7", "8", "9"]);
        // the source recovers: no flag any more
        series.push(item("a", 1030, 11, None));
        assert_eq!(flagged(&series).len(), 6);
        assert!(!suspicious_series(&series, 0.5).contains_key("a"));
        // a recorded verdict stays, and is never the baseline
        let series = vec![item("1", 1000, 10, None), item("2", 1000, 10, Some("empty")), item("3", 400, 10, None)];
        assert_eq!(flagged(&series), ["2", "3"]);
        // truncated dumps, one after the other
        let mib = 1024 * 1024;
        let series = vec![item("1", 48 * mib, 5, None), item("2", 100_045, 5, None), item("3", 100_045, 5, None)];
        assert_eq!(flagged(&series), ["2", "3"]);
        assert!(flagged(&[]).is_empty());
        // a shrink judged good against a baseline when it was made (the operator accepted it)
        // stands, and is the new baseline
        let mut accepted = item("2", 10, 1, None);
        accepted.judged = true;
        let series = vec![item("1", 1000, 10, None), accepted, item("3", 11, 1, None)];
        assert!(flagged(&series).is_empty());
    }

    #[test]
    fn findings_render_and_tail_scrubs() {
        let f = Finding { severity: Severity::Error, subject: "table `users`".into(), message: "m".into(), hint: None };
        assert_eq!(f.to_string(), "error: table `users`: m");
        assert_eq!(tail("a\n\nb\n"), "a / b");
        assert_eq!(tail(""), "no output");
    }
}
