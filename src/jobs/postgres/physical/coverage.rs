//! The WAL side of `drctl check` for a physical job: a copy of a base backup is a good copy for
//! point-in-time recovery only with the WAL after it. Per target: the archive from the newest
//! base backup's start must have no gap, and must reach as far as the best target's (one that
//! lags holds an older recovery point than the others).

use super::base::PhysicalFacts;
use super::lsn::Lsn;
use super::store::Timeline;

/// One target's finding: `Err` a problem (with the message), `Ok` how far it reaches.
pub fn judge(target: &str, listed: &Timeline, base: &PhysicalFacts, best: Lsn) -> Result<String, String> {
    let seg = base.segments();
    let from = seg.segno(base.start_lsn);
    let Some(frontier) = listed.frontier(seg) else {
        return Err(format!(
            "target `{target}` holds no WAL of timeline {}: its base backups cannot be recovered",
            base.timeline
        ));
    };
    let missing: Vec<String> = (from..seg.segno(frontier))
        .filter(|n| !listed.complete.contains(n))
        .map(|n| seg.name(base.timeline, n))
        .take(5)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "target `{target}` misses WAL segment(s) {} after the newest base backup: recovery stops before them",
            missing.join(", ")
        ));
    }
    if frontier < best {
        return Err(format!(
            "target `{target}` holds WAL up to {frontier}, other targets up to {best}: a restore from it loses what lies between"
        ));
    }
    Ok(format!("target `{target}`: WAL continuous from the newest base backup ({}) to {frontier}", base.start_lsn))
}
