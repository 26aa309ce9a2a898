//! `drctl check`: is everything in place for the next backup and the next restore?
//!
//! Findings are data (subject, status, message, hint); the CLI decides how to print them and the
//! exit code (1 when anything failed).

use serde::Serialize;

use super::Engine;
use crate::config::Severity;
use crate::jobs::BackupSession;
use crate::pipeline::keys;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What was checked: `config`, `target local`, `job postgres` …
    pub subject: String,
    pub status: Status,
    pub message: String,
    pub hint: Option<String>,
}

impl Finding {
    fn new(subject: impl Into<String>, status: Status, message: impl Into<String>, hint: Option<String>) -> Self {
        Finding { subject: subject.into(), status, message: crate::redact::scrub(&message.into()), hint }
    }
}

pub async fn check(engine: &Engine) -> Vec<Finding> {
    let cfg = &engine.config;
    let mut out = vec![Finding::new(
        "config",
        Status::Ok,
        format!("{} valid: {} job(s), {} target(s)", cfg.path.display(), cfg.jobs.len(), cfg.targets.len()),
        None,
    )];
    for w in &cfg.warnings {
        let status = if w.severity == Severity::Error { Status::Failed } else { Status::Warning };
        out.push(Finding::new("config", status, w.to_string(), w.hint.clone()));
    }

    // encryption: can backups be encrypted, can this host decrypt them?
    match (&cfg.encryption.identity_file, cfg.encryption.recipients.len()) {
        (None, n) => out.push(Finding::new("encryption", Status::Ok, format!("{n} recipient(s); no identity on this host (backup-only)"), None)),
        (Some(path), n) => match keys::recipients_of_identity_file(path) {
            Ok(pubs) if pubs.iter().any(|p| cfg.encryption.recipients.contains(p)) => {
                out.push(Finding::new("encryption", Status::Ok, format!("{n} recipient(s); identity `{}` matches one of them", path.display()), None))
            }
            Ok(_) => out.push(Finding::new(
                "encryption",
                Status::Failed,
                format!("identity `{}` matches none of the {n} recipient(s): restores would fail", path.display()),
                Some("add its public key (`age-keygen -y FILE`) to `encryption.recipients`, or point `identity_file` at the right key".into()),
            )),
            Err(e) => out.push(Finding::new("encryption", Status::Failed, e.to_string(), e.hint())),
        },
    }

    match engine.catalog().await {
        Ok(_) => out.push(Finding::new("catalog", Status::Ok, format!("{} is usable", engine.catalog_url()), None)),
        Err(e) => out.push(Finding::new("catalog", Status::Failed, e.to_string(), e.hint())),
    }

    for name in cfg.targets.keys() {
        let subject = format!("target {name}");
        let probe = match engine.target(name) {
            Ok(t) => t.probe().await,
            Err(e) => Err(e),
        };
        match probe {
            Ok(()) => out.push(Finding::new(subject, Status::Ok, "reachable and writable", None)),
            Err(e) => out.push(Finding::new(subject, Status::Failed, e.to_string(), e.hint())),
        }
    }

    for job in cfg.jobs.values() {
        let subject = format!("job {}", job.name);
        match BackupSession::prepare(job).await {
            Ok(session) => {
                match session.check_tools().await {
                    Ok(()) => out.push(Finding::new(subject, Status::Ok, session.describe(), None)),
                    Err(e) => out.push(Finding::new(subject, Status::Failed, e.to_string(), e.hint())),
                }
                session.close(false).await;
            }
            Err(e) => out.push(Finding::new(subject, Status::Failed, e.to_string(), e.hint())),
        }
    }
    out
}
