//! How old is old enough, and by whose clock: the grace period before prune removes what a run
//! may still be writing (incomplete uploads, stale multipart uploads, leaked temporaries), and the
//! check that this host's clock agrees with a target's before it judges ages there.

use jiff::Timestamp;

use crate::retention;
use crate::targets::Target;

/// Artifacts without a manifest younger than this are left alone (a run may be writing them).
pub const ORPHAN_GRACE: jiff::SignedDuration = jiff::SignedDuration::from_hours(6);

/// The `items` whose time (`time_of`) is at least `grace` before `now` (pure). An item whose time
/// the store does not report is never past the grace: it might belong to a run in progress.
/// Shared by stale multipart uploads and leaked temporaries.
pub fn past_grace<T>(
    items: Vec<T>,
    time_of: impl Fn(&T) -> Option<Timestamp>,
    now: Timestamp,
    grace: jiff::SignedDuration,
) -> Vec<T> {
    let cutoff = now.checked_sub(grace).unwrap_or(Timestamp::MIN);
    items.into_iter().filter(|i| time_of(i).is_some_and(|t| t <= cutoff)).collect()
}

/// Why prune must not delete on `target` at `now` (this host's clock): the target's clock differs
/// by more than [`retention::CLOCK_TOLERANCE`], or cannot be read. `None` when they agree.
pub async fn clock_refusal(target: &Target, now: Timestamp) -> Option<String> {
    match target.clock().await {
        Ok(theirs) => clock_skew(now, theirs, retention::CLOCK_TOLERANCE),
        Err(e) => Some(format!("the clock of target `{}` could not be read ({e})", target.name())),
    }
}

/// Whether this host's clock (`ours`) and a target's (`theirs`, to the second) are too far apart;
/// the message says by how much (pure).
pub fn clock_skew(ours: Timestamp, theirs: Timestamp, tolerance: jiff::SignedDuration) -> Option<String> {
    let skew = ours.duration_since(theirs);
    if skew.abs() <= tolerance {
        return None;
    }
    let span = humantime::format_duration(std::time::Duration::from_secs(skew.as_secs().unsigned_abs()));
    let direction = if skew.is_positive() { "ahead of" } else { "behind" };
    Some(format!("this host's clock ({ours:.0}) is {span} {direction} the target's ({theirs:.0})"))
}
