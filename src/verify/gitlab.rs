//! GitLab drill: restore the archive and the secrets bundle into files in the drill's scratch
//! directory (`restore --output`), then check the archive's layout (a complete tar with
//! `backup_information.yml`, the parts the manifest lists, `db` unless skipped) and that the
//! bundle holds a `gitlab-secrets.json` that parses (helm: a non-empty `secrets.yml`). GitLab itself
//! cannot run in a drill; restoring `db/database.sql.gz` into a scratch PostgreSQL is not done yet.

use std::io::Read;

use super::Drill;
use crate::jobs::RestoreOptions;
use crate::jobs::gitlab::inspect::TarInspector;
use crate::jobs::gitlab::{FORMAT_ARCHIVE, FORMAT_SECRETS, Facts, secrets};

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
                let f = facts.clone();
                let checked = tokio::task::spawn_blocking(move || check_archive(&file, &f))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                match checked {
                    Err(e) => d.error(format!("artifact `{name}`"), format!("not a complete GitLab archive: {e}")),
                    Ok(problems) if problems.is_empty() => d.info(
                        format!("artifact `{name}`"),
                        format!("GitLab {} archive with parts: {}", facts.gitlab_version, facts.parts.join(", ")),
                    ),
                    Ok(problems) => {
                        let items = problems.into_iter().map(|p| (format!("artifact `{name}`"), p)).collect();
                        d.mismatches(super::Severity::Error, items, "archive");
                    }
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
