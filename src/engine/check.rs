//! `drctl check`: is everything in place for the next backup and the next restore?
//!
//! Findings are data (subject, status, message, hint); the CLI decides how to print them and the
//! exit code (1 when anything failed).

use serde::Serialize;

use super::Engine;
use super::rebuild::ProblemKind;
use crate::config::Severity as ProblemSeverity;
use crate::finding::{Finding, Severity};
use crate::jobs::BackupSession;
use crate::pipeline::keys;

pub async fn check(engine: &Engine) -> Vec<Finding> {
    let cfg = &engine.config;
    let mut out = vec![Finding::new(
        "config",
        Severity::Info,
        format!("{} valid: {} job(s), {} target(s)", cfg.path.display(), cfg.jobs.len(), cfg.targets.len()),
        None,
    )];
    for w in &cfg.warnings {
        let status = if w.severity == ProblemSeverity::Error { Severity::Error } else { Severity::Warning };
        out.push(Finding::new("config", status, w.to_string(), w.hint.clone()));
    }

    // encryption: can backups be encrypted, can this host decrypt them?
    match (&cfg.encryption.identity_file, cfg.encryption.recipients.len()) {
        (None, n) => out.push(Finding::new("encryption", Severity::Info, format!("{n} recipient(s); no identity on this host (backup-only)"), None)),
        (Some(path), n) => match keys::recipients_of_identity_file(path) {
            Ok(pubs) if pubs.iter().any(|p| cfg.encryption.recipients.contains(p)) => {
                out.push(Finding::new("encryption", Severity::Info, format!("{n} recipient(s); identity `{}` matches one of them", path.display()), None))
            }
            Ok(_) => out.push(Finding::new(
                "encryption",
                Severity::Error,
                format!("identity `{}` matches none of the {n} recipient(s): restores would fail", path.display()),
                Some("add its public key (`age-keygen -y FILE`) to `encryption.recipients`, or point `identity_file` at the right key".into()),
            )),
            Err(e) => out.push(Finding::new("encryption", Severity::Error, e.to_string(), e.hint())),
        },
    }

    match engine.catalog().await {
        Ok(_) => out.push(Finding::new("catalog", Severity::Info, format!("{} is usable", engine.catalog_url()), None)),
        Err(e) => out.push(Finding::new("catalog", Severity::Error, e.to_string(), e.hint())),
    }

    // targets that failed their probe: the 3-2-1 listing does not wait out their deadlines again
    let mut down: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for name in cfg.targets.keys() {
        let subject = format!("target {name}");
        let target = match engine.target(name) {
            Ok(t) => t,
            Err(e) => {
                out.push(Finding::new(subject, Severity::Error, e.to_string(), e.hint()));
                down.insert(name.clone(), format!("not listed: {e}"));
                continue;
            }
        };
        match target.probe().await {
            Ok(()) => out.push(Finding::new(subject.clone(), Severity::Info, "reachable and writable", None)),
            Err(e) => {
                down.insert(name.clone(), format!("not listed (its probe failed): {e}"));
                out.push(Finding::new(subject, Severity::Error, e.to_string(), e.hint()));
                continue;
            }
        }
        // prune refuses to delete on a target whose clock disagrees with this host's: say so now
        if let Ok(theirs) = target.clock().await
            && let Some(skew) =
                crate::engine::grace::clock_skew(jiff::Timestamp::now(), theirs, crate::retention::CLOCK_TOLERANCE)
        {
            out.push(Finding::new(
                subject,
                Severity::Warning,
                skew,
                Some("fix the clock (NTP) of this host or of the target: `drctl prune` deletes nothing there until they agree".into()),
            ));
        }
    }

    for job in cfg.jobs.values() {
        let subject = format!("job {}", job.name);
        match BackupSession::prepare(job).await {
            Ok(session) => {
                for (message, hint) in session.warnings() {
                    out.push(Finding::new(subject.clone(), Severity::Warning, message, Some(hint)));
                }
                match session.check_tools().await {
                    Ok(()) => out.push(Finding::new(subject, Severity::Info, session.describe(), None)),
                    Err(e) => out.push(Finding::new(subject, Severity::Error, e.to_string(), e.hint())),
                }
                session.close(false).await;
            }
            Err(e) => out.push(Finding::new(subject, Severity::Error, e.to_string(), e.hint())),
        }
    }
    for job in cfg.jobs.values() {
        out.extend(rule321_findings(engine, job, &down).await);
    }
    out
}

/// Per target: the age of its newest copy of the job.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCopy {
    pub target: String,
    pub newest: Option<String>,
    pub age_seconds: Option<i64>,
    pub stale: bool,
}

/// 3-2-1 of a job's newest committed backup held by the targets `held_by` (empty when the job has
/// none): the holders among the job's targets, and the verdict. `drctl check` and the metrics
/// (`drctl_copies`, `drctl_rule_321_ok`) both use it, so they always agree.
pub fn job_rule321(
    config: &crate::config::Config,
    job: &crate::jobs::JobConfig,
    held_by: &[String],
) -> (Vec<crate::retention::rule321::Placement>, crate::retention::rule321::Rule321) {
    let holders: Vec<_> = job
        .common
        .targets
        .iter()
        .filter(|t| held_by.contains(t))
        .filter_map(|t| config.targets.get(t).map(|c| c.placement(t)))
        .collect();
    let rule = crate::retention::rule321::evaluate(&holders.iter().collect::<Vec<_>>());
    (holders, rule)
}

/// 3-2-1 for the job's newest committed backup, and staleness of each target against the RPO;
/// then what the scan could not understand: manifests drctl cannot read, incomplete copies, and
/// backups dated in the future (a host with a wrong clock), which never count as the newest.
async fn rule321_findings(
    engine: &Engine,
    job: &crate::jobs::JobConfig,
    down: &std::collections::BTreeMap<String, String>,
) -> Vec<Finding> {
    let subject = format!("3-2-1 {}", job.name);
    let (found, problems) = match crate::engine::rebuild::scan_except(engine, Some(&job.name), down).await {
        Ok(r) => r,
        Err(e) => return vec![Finding::new(subject, Severity::Error, e.to_string(), e.hint())],
    };
    let now = jiff::Timestamp::now();
    let mut extra = Vec::new();
    for p in problems.iter().filter(|p| p.keeps_backup()) {
        let status = match p.kind {
            ProblemKind::UnreadableManifest => Severity::Error,
            _ => Severity::Warning,
        };
        let id = p.backup_id.as_deref().unwrap_or_default();
        extra.push(Finding::new(
            format!("backup {}", job.name),
            status,
            format!("target `{}`: backup `{id}`: {}", p.target, p.message),
            p.hint(),
        ));
    }
    let (future, found): (Vec<_>, Vec<_>) = found
        .into_iter()
        .partition(|f| crate::retention::future_dated(f.manifest.started_at, now, crate::retention::CLOCK_TOLERANCE));
    for f in &future {
        let ahead = f.manifest.started_at.as_second() - now.as_second();
        extra.push(Finding::new(
            format!("backup {}", job.name),
            Severity::Warning,
            format!(
                "backup `{}` is dated in the future: started {:.0} ({}), made on host `{}`",
                f.manifest.backup_id,
                f.manifest.started_at,
                age_text(-ahead),
                f.manifest.host
            ),
            Some(format!(
                "the clock of host `{}` (or of this one) is wrong: fix it (NTP); the backup never counts as the newest and prune keeps it — remove it by hand once the clocks agree if it is not needed",
                f.manifest.host
            )),
        ));
    }
    // a physical job's copy without the WAL after its base backup is no copy for point-in-time recovery
    let (wal, no_wal) = wal_findings(engine, job, &found, down).await;
    let mut out = vec![rule321_finding(engine, job, subject, &found, &problems, now, &no_wal)];
    out.extend(extra);
    out.extend(wal);
    out
}

/// Physical PostgreSQL jobs: each target's WAL after the newest base backup (see
/// `jobs::postgres::physical::coverage`), and the targets whose WAL is not good enough for their
/// copy to count in 3-2-1.
async fn wal_findings(
    engine: &Engine,
    job: &crate::jobs::JobConfig,
    found: &[crate::engine::rebuild::Found],
    down: &std::collections::BTreeMap<String, String>,
) -> (Vec<Finding>, std::collections::BTreeSet<String>) {
    use crate::jobs::postgres::physical::{PhysicalFacts, coverage, store};
    let Some((newest, base)) = found
        .iter()
        .filter_map(|f| PhysicalFacts::of(&f.manifest.facts).map(|p| (f, p)))
        .max_by(|a, b| a.0.manifest.newer_cmp(&b.0.manifest))
    else {
        return (Vec::new(), Default::default());
    };
    let subject = format!("WAL {}", job.name);
    let mut listed = Vec::new();
    for name in newest.targets.iter().filter(|t| !down.contains_key(*t)) {
        let listing = match engine.target(name) {
            Ok(t) => store::list_timeline(&t, &job.name, base.timeline, base.segments()).await,
            Err(e) => Err(e),
        };
        match listing {
            Ok(l) => listed.push((name.clone(), l)),
            Err(e) => {
                return (vec![Finding::new(subject, Severity::Error, e.to_string(), e.hint())], Default::default());
            }
        }
    }
    let best = listed.iter().filter_map(|(_, l)| l.frontier(base.segments())).max().unwrap_or_default();
    let mut short = std::collections::BTreeSet::new();
    let findings = listed
        .iter()
        .map(|(name, l)| match coverage::judge(name, l, &base, best) {
            Ok(m) => Finding::new(subject.clone(), Severity::Info, m, None),
            Err(m) => {
                short.insert(name.clone());
                Finding::new(
                subject.clone(),
                Severity::Warning,
                m,
                Some(format!(
                    "is the WAL receiver storing on every target (its log)? a gap needs a new base backup (`drctl run {}`); \
                     until then this target's copy does not count in 3-2-1",
                    job.name
                )),
            )
            }
        })
        .collect();
    (findings, short)
}

fn rule321_finding(
    engine: &Engine,
    job: &crate::jobs::JobConfig,
    subject: String,
    found: &[crate::engine::rebuild::Found],
    problems: &[crate::engine::rebuild::ScanProblem],
    now: jiff::Timestamp,
    no_wal: &std::collections::BTreeSet<String>,
) -> Finding {
    let rpo = job.common.rpo().as_secs() as i64;
    let newest = found.iter().max_by(|a, b| a.manifest.newer_cmp(&b.manifest));
    let counted: Vec<String> =
        newest.map(|n| n.targets.iter().filter(|t| !no_wal.contains(*t)).cloned().collect()).unwrap_or_default();
    let (holders, rule) = job_rule321(&engine.config, job, &counted);
    let copies: Vec<TargetCopy> = job
        .common
        .targets
        .iter()
        .map(|t| {
            let latest =
                found.iter().filter(|f| f.targets.contains(t)).max_by(|a, b| a.manifest.newer_cmp(&b.manifest));
            // never clamped: a negative age (a clock behind, within the tolerance) says "in the future"
            let age = latest.map(|f| now.as_second() - f.manifest.finished_at.as_second());
            TargetCopy {
                target: t.clone(),
                newest: latest.map(|f| f.manifest.backup_id.clone()),
                age_seconds: age,
                stale: age.is_none_or(|a| a > rpo),
            }
        })
        .collect();
    let describe = |c: &TargetCopy| match c.age_seconds {
        Some(a) => format!("{} {}{}", c.target, age_text(a), if c.stale { " (stale)" } else { "" }),
        None => format!("{} none", c.target),
    };
    let mut message = format!(
        "copies {} (live + {}), media {}, offsite {}; newest copy per target: {}",
        rule.copies,
        holders.iter().map(|p| p.target.as_str()).collect::<Vec<_>>().join(", "),
        rule.media,
        if rule.offsite { "yes" } else { "no" },
        copies.iter().map(describe).collect::<Vec<_>>().join(", ")
    );
    for p in problems.iter().filter(|p| p.kind == ProblemKind::Unlisted) {
        message.push_str(&format!("; target `{}` unreadable: {}", p.target, p.message));
    }
    let stale: Vec<&str> = copies.iter().filter(|c| c.stale).map(|c| c.target.as_str()).collect();
    let ok = rule.ok && stale.is_empty();
    let hint = if newest.is_none() {
        Some(format!("no backup yet: run `drctl run {}`", job.name))
    } else if !ok {
        let mut h = Vec::new();
        if !rule.missing.is_empty() {
            h.push(format!("3-2-1: {}", rule.missing.join("; ")));
        }
        if !stale.is_empty() {
            h.push(format!(
                "stale or missing copies on {}: run `drctl sync {}` (or `drctl run {}`)",
                stale.join(", "),
                job.name,
                job.name
            ));
        }
        Some(h.join("; "))
    } else {
        None
    };
    let mut f = Finding::new(subject, if ok { Severity::Info } else { Severity::Error }, message, hint);
    f.detail = Some(serde_json::json!({
        "copies": rule.copies,
        "media": rule.media,
        "offsite": rule.offsite,
        "ok": ok,
        "rule_321_ok": rule.ok,
        "missing": rule.missing,
        "newest_backup": newest.map(|n| n.manifest.backup_id.clone()),
        "targets": copies,
        "rpo_seconds": rpo,
    }));
    f
}

/// An age in words; a negative age (a time ahead of this host's clock) is "in the future", never 0.
fn age_text(seconds: i64) -> String {
    let span = |s: i64| match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    };
    if seconds < 0 { format!("{} in the future", span(-seconds)) } else { format!("{} ago", span(seconds)) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_in_words() {
        let cases = [
            (0, "0s ago"),
            (59, "59s ago"),
            (3600, "60m ago"),
            (200_000, "2d ago"),
            (-30, "30s in the future"),
            (-157_766_400, "1826d in the future"),
        ];
        for (s, want) in cases {
            assert_eq!(super::age_text(s), want, "{s}");
        }
    }
}
