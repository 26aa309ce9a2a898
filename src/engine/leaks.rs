//! Leaked temporaries: what a killed run or a cut connection leaves behind on fs, SFTP and
//! WebDAV (`.NAME.partial-XXXXXX` next to the key an upload was for). A finishing upload removes
//! its own temporary, and a failed one tries to; a `kill -9`, a crash or a connection that never
//! came back leaves it, invisible to `list` and never restored, but holding space. `drctl prune`
//! removes those older than the grace period ([`grace`]) — younger ones may belong to a run in
//! progress — and nothing else: only names that are exactly drctl's temporary names
//! ([`crate::targets::is_temporary_name`]), only under the job's prefix.
//!
//! (Artifacts under their final name without a manifest — a run aborted between artifact and
//! manifest — are prune's "incomplete uploads"; S3's unfinished multipart uploads are aborted by
//! prune too. A cancelled fan-out no longer commits a truncated object: see `engine::fanout`.)

use jiff::{SignedDuration, Timestamp};

use super::grace::{ORPHAN_GRACE, clock_refusal, past_grace};
use crate::targets::{Target, Temporary};

/// Hidden knob for tests: the grace period for temporaries as a duration (`DRCTL_TEMP_GRACE=2s`).
/// Not documented for users: a short grace deletes the temporaries of running uploads.
pub const GRACE_ENV: &str = "DRCTL_TEMP_GRACE";

/// How old a temporary must be before prune removes it: [`ORPHAN_GRACE`] (6 h), or
/// `$DRCTL_TEMP_GRACE` when set to a duration.
pub fn grace() -> SignedDuration {
    std::env::var(GRACE_ENV)
        .ok()
        .and_then(|v| humantime::parse_duration(v.trim()).ok())
        .and_then(|d| SignedDuration::try_from(d).ok())
        .unwrap_or(ORPHAN_GRACE)
}

/// The temporaries last modified more than `grace` before `now` (pure). One whose time the store
/// does not report is never stale: it might be an upload in progress.
pub fn stale(temps: Vec<Temporary>, now: Timestamp, grace: SignedDuration) -> Vec<Temporary> {
    let mut out = past_grace(temps, |t| t.modified, now, grace);
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// What [`sweep`] found and did on one target.
#[derive(Debug, Default)]
pub struct Swept {
    /// The stale temporaries.
    pub found: Vec<Temporary>,
    /// Those removed.
    pub removed: Vec<String>,
    /// Why some could not be listed or removed.
    pub errors: Vec<String>,
}

/// Find the stale temporaries of `job` on `target` and, when `remove` (not a dry run, and prune
/// met no error on this target so far: a lock it could not read, a failed delete, a clock that
/// disagrees with the target's), remove them. Called last for a target. Their age is judged by
/// this host's clock against the target's modification times, so the clocks must agree first.
pub async fn sweep(target: &Target, job: &str, now: Timestamp, remove: bool) -> Swept {
    let mut out = Swept::default();
    let found = match target.temporaries(&format!("{job}/")).await {
        Ok(t) => stale(t, now, grace()),
        Err(e) => {
            out.errors.push(e.to_string());
            return out;
        }
    };
    // prune checked the clock only if it had other things to delete
    let remove = remove
        && (found.is_empty()
            || match clock_refusal(target, now).await {
                None => true,
                Some(message) => {
                    out.errors.push(format!(
                        "{message}: no temporary file is removed on this target; fix the clock (NTP) and prune again"
                    ));
                    false
                }
            });
    for t in found {
        if remove {
            match target.delete(&t.key).await {
                Ok(()) => {
                    tracing::info!(target = %target.name(), key = %t.key, bytes = t.size, "removed a leaked temporary file");
                    out.removed.push(t.key.clone());
                }
                Err(e) => out.errors.push(e.to_string()),
            }
        }
        out.found.push(t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(key: &str, modified: Option<&str>) -> Temporary {
        Temporary { key: key.into(), size: 1, modified: modified.map(|m| m.parse().unwrap()) }
    }

    #[test]
    fn stale_table() {
        let now: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
        let temps = vec![
            t("a", Some("2026-03-01T11:59:59Z")), // 1 s old
            t("b", Some("2026-03-01T06:00:00Z")), // exactly 6 h
            t("c", Some("2026-03-01T05:59:59Z")), // 6 h 1 s
            t("d", None),                         // age unknown
            t("e", Some("2026-03-01T12:00:05Z")), // in the future
        ];
        let keys =
            |g: SignedDuration| -> Vec<String> { stale(temps.clone(), now, g).into_iter().map(|t| t.key).collect() };
        assert_eq!(keys(ORPHAN_GRACE), ["b", "c"]);
        assert_eq!(keys(SignedDuration::ZERO), ["a", "b", "c"]);
    }

    #[test]
    fn grace_defaults_to_the_orphan_grace() {
        // the variable is not set in unit tests
        if std::env::var(GRACE_ENV).is_err() {
            assert_eq!(grace(), ORPHAN_GRACE);
        }
    }
}
