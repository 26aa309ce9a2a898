//! GitLab drill: restore the archive and the secrets bundle into files in the drill's scratch
//! directory (`restore --output`), then check the archive's layout (a complete tar with
//! `backup_information.yml`, the parts the manifest lists, `db` unless skipped) and that the
//! bundle holds a `gitlab-secrets.json` that parses (helm: a non-empty `secrets.yml`). GitLab itself
//! cannot run in a drill, but its database can: `db/database.sql.gz` is streamed out of the
//! restored archive, gunzipped and piped into `psql -v ON_ERROR_STOP=1` against a scratch
//! PostgreSQL (the postgres drill's ephemeral cluster, or a throwaway database on
//! `verify.scratch_url`), and the tables that came back are counted.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::drill::context::Drill;
use crate::jobs::RestoreOptions;
use crate::jobs::gitlab::inspect::TarInspector;
use crate::jobs::gitlab::{FORMAT_ARCHIVE, FORMAT_SECRETS, Facts, secrets};
use crate::jobs::postgres::drill::ScratchPg;

/// Check a restored archive's layout against the facts; returns the problems.
pub fn check_archive(path: &std::path::Path, facts: &Facts) -> Result<Vec<String>, String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut inspector = TarInspector::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        inspector.feed(&buf[..n]);
    }
    let info = inspector.finish()?;
    let mut problems = Vec::new();
    if !info.info.contains_key("gitlab_version") {
        problems.push("backup_information.yml has no `gitlab_version`".to_string());
    }
    if !facts.gitlab_version.is_empty()
        && let Some(v) = info.info.get("gitlab_version")
        && v != &facts.gitlab_version
    {
        problems.push(format!("backup_information.yml says GitLab {v}, the manifest says {}", facts.gitlab_version));
    }
    if !facts.skipped.iter().any(|s| s == "db") && !info.parts.iter().any(|p| p == "db") {
        problems.push("the archive has no `db` part (and the database was not skipped)".into());
    }
    for p in &facts.parts {
        if !info.parts.contains(p) {
            problems.push(format!("part `{p}` is listed in the manifest but missing from the archive"));
        }
    }
    for p in &info.parts {
        if !facts.parts.is_empty() && !facts.parts.contains(p) {
            problems.push(format!("part `{p}` is in the archive but not in the manifest"));
        }
    }
    Ok(problems)
}

/// The database dump's path inside a GitLab archive.
pub const DB_ENTRY: &str = "db/database.sql.gz";

/// Stream [`DB_ENTRY`] out of the archive at `archive`, gunzip it and pipe it into `psql -X -q -v
/// ON_ERROR_STOP=1` (the password, if any, in `PGPASSWORD`; psql's output in `log`). Returns the
/// bytes of SQL loaded.
///
/// # Errors
/// When the archive has no such entry, the gzip stream is damaged (psql is then stopped, so a
/// partial load never counts as a pass), or psql fails; the message says which.
pub fn load_database(
    archive: &Path,
    psql: &Path,
    url: &str,
    password: Option<&str>,
    log: &Path,
) -> Result<u64, String> {
    let f = std::fs::File::open(archive).map_err(|e| format!("cannot open the restored archive: {e}"))?;
    let mut tar = tar::Archive::new(std::io::BufReader::with_capacity(256 * 1024, f));
    let entries = tar.entries().map_err(|e| format!("cannot read the archive: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read the archive: {e}"))?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        if path.strip_prefix("./").unwrap_or(&path) != Path::new(DB_ENTRY) {
            continue;
        }
        let mut gz = flate2::read::GzDecoder::new(entry);
        let stderr = std::fs::File::create(log).map_err(|e| format!("cannot create `{}`: {e}", log.display()))?;
        let mut cmd = std::process::Command::new(psql);
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url])
            .env("PGCONNECT_TIMEOUT", "15")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(stderr);
        if let Some(p) = password {
            cmd.env("PGPASSWORD", p);
        }
        let mut child = cmd.spawn().map_err(|e| format!("cannot run `{}`: {e}", psql.display()))?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        let mut gunzip_err = None;
        loop {
            let n = match gz.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    gunzip_err = Some(e);
                    break;
                }
            };
            total += n as u64;
            // psql stopped reading (ON_ERROR_STOP): its exit status and log say why
            if std::io::Write::write_all(&mut stdin, &buf[..n]).is_err() {
                break;
            }
        }
        if let Some(e) = gunzip_err {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("`{DB_ENTRY}` is damaged: gunzip failed after {total} bytes of SQL: {e}"));
        }
        drop(stdin);
        let status = child.wait().map_err(|e| format!("waiting for psql: {e}"))?;
        if !status.success() {
            let out = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!(
                "psql failed to load `{DB_ENTRY}` ({status}): {}",
                crate::tool_output::tail(&out, 6, "no output")
            ));
        }
        return Ok(total);
    }
    Err(format!("the archive has no `{DB_ENTRY}`"))
}

/// Load the archive's database dump into a scratch PostgreSQL and count its tables.
async fn drill_database(d: &mut Drill<'_>, archive: PathBuf) {
    let verify = d.job.common.verify.clone().unwrap_or_default();
    let subject = format!("`{DB_ENTRY}`");
    let Some(pg) = ScratchPg::open(d, &verify).await else { return };
    let (psql, url, password) = (pg.psql.clone(), pg.url.to_string(), pg.password.clone());
    let log = d.scratch.join("psql.log");
    let clock = Instant::now();
    let loaded = tokio::task::spawn_blocking(move || {
        load_database(&archive, &psql, &url, password.as_ref().map(|p| p.expose()), &log)
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    d.add_restore_time(clock);
    match loaded {
        Err(e) => {
            d.error(subject, e);
            d.hint("the database dump in this backup does not load: take a new backup and drill it (`drctl run`, `drctl verify`)");
        }
        Ok(bytes) => {
            d.restored_bytes += bytes;
            d.destinations.push(format!("{DB_ENTRY} → {}", crate::redact::url_for_display(pg.url.as_str())));
            match pg.tables().await {
                Ok(t) if t.is_empty() => d.error(subject, "loaded, but holds no table"),
                Ok(t) => {
                    let rows: u64 = t.iter().map(|t| t.1).sum();
                    d.info(
                        subject,
                        format!("loaded into a scratch PostgreSQL with psql: {} tables, {rows} rows", t.len()),
                    )
                }
                Err(e) => d.error(subject, format!("loaded, but the tables cannot be counted: {e}")),
            }
        }
    }
    pg.close(d).await;
}

/// Check a restored secrets bundle; returns what it holds or the problem.
pub fn check_secrets(bundle: &[u8]) -> Result<String, String> {
    let files = secrets::unbundle(bundle)?;
    if let Some((path, data)) = files.iter().find(|(p, _)| p.ends_with("gitlab-secrets.json")) {
        let v: serde_json::Value =
            serde_json::from_slice(data).map_err(|e| format!("`{}` does not parse as JSON: {e}", path.display()))?;
        if !v.is_object() {
            return Err(format!("`{}` is not a JSON object", path.display()));
        }
        return Ok(format!("`{}` parses ({} files in the bundle)", path.display(), files.len()));
    }
    if let Some((path, data)) = files.iter().find(|(p, _)| p.ends_with("secrets.yml")) {
        if data.is_empty() {
            return Err(format!("`{}` is empty", path.display()));
        }
        return Ok(format!("`{}` present ({} files in the bundle)", path.display(), files.len()));
    }
    Err("no gitlab-secrets.json (or helm secrets.yml) in the bundle: CI/CD variables, 2FA and runner tokens would be lost".into())
}

/// Drill a gitlab backup.
pub async fn drill(d: &mut Drill<'_>) {
    let facts: Facts = serde_json::from_value(d.manifest.facts.clone()).unwrap_or_default();
    let find = |format: &str| d.manifest.artifacts.iter().find(|a| a.format == format).map(|a| a.name.clone());
    match find(FORMAT_ARCHIVE) {
        None => d.error("backup", "has no GitLab archive artifact"),
        Some(name) => {
            let file = d.scratch.join("gitlab_backup.tar");
            if d.restore(&name, RestoreOptions::default(), Some(file.clone())).await.is_some() {
                let (f, path) = (facts.clone(), file.clone());
                let checked = tokio::task::spawn_blocking(move || check_archive(&path, &f))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                let complete = checked.is_ok();
                match checked {
                    Err(e) => d.error(format!("artifact `{name}`"), format!("not a complete GitLab archive: {e}")),
                    Ok(problems) if problems.is_empty() => d.info(
                        format!("artifact `{name}`"),
                        format!("GitLab {} archive with parts: {}", facts.gitlab_version, facts.parts.join(", ")),
                    ),
                    Ok(problems) => {
                        let items = problems.into_iter().map(|p| (format!("artifact `{name}`"), p)).collect();
                        d.mismatches(crate::finding::Severity::Error, items, "archive");
                    }
                }
                if facts.skipped.iter().any(|s| s == "db") {
                    d.info(
                        format!("`{DB_ENTRY}`"),
                        "the database was skipped at backup time (SKIP=db): nothing to load",
                    );
                } else if complete {
                    drill_database(d, file).await;
                }
            }
        }
    }
    match find(FORMAT_SECRETS) {
        None => {
            d.error("backup", "has no secrets bundle: CI/CD variables, 2FA and runner tokens could not be restored");
        }
        Some(name) => {
            let file = d.scratch.join("secrets.tar");
            if d.restore(&name, RestoreOptions::default(), Some(file.clone())).await.is_some() {
                match std::fs::read(&file).map_err(|e| e.to_string()).and_then(|b| check_secrets(&b)) {
                    Ok(what) => d.info(format!("artifact `{name}`"), what),
                    Err(e) => d.error(format!("artifact `{name}`"), e),
                }
            }
        }
    }
}
