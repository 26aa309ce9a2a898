//! Lock markers in a chunk repository: a backup (or a `sync` into it) writes a *shared* marker
//! before it reads the indexes and removes it once its manifest is committed; garbage collection
//! takes an *exclusive* one.
//!
//! Shared markers never wait and are never refused: they only say "a writer that may refer to
//! any indexed chunk is here". Garbage collection never deletes at once (see [`super::fossil`]):
//! it marks, records the shared markers live at that moment, and deletes only once each of them
//! is gone. Exclusive markers keep two collections apart (protocol: write your own marker first,
//! then list the others; whichever wrote second sees the first and backs off, without waiting: it
//! runs again at the next prune). The store must list what was written before (S3, fs, SFTP and
//! WebDAV do). Markers are refreshed every [`REFRESH`]; one not refreshed for [`STALE_AFTER`] (its
//! holder died) is ignored. So a holder that was not refreshed for nearly that long (suspended,
//! cut off from the target) does not commit there: see [`Lock::is_fresh`].

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::repo::ROOT;
use crate::targets::Target;
use crate::{Error, Result};

pub const REFRESH: Duration = Duration::from_secs(60);
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// How much sooner than [`STALE_AFTER`] a holder stops trusting its own marker: clocks of the
/// holder and of the collecting host may disagree by this much.
pub const CLOCK_MARGIN: Duration = Duration::from_secs(5 * 60);

/// [`STALE_AFTER`], or `DRCTL_TEST_LOCK_STALE_SECS` (a test hook: 0 makes every marker stale at
/// once, so a test can show what a holder that was suspended past it does).
pub fn stale_after() -> Duration {
    std::env::var("DRCTL_TEST_LOCK_STALE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(STALE_AFTER)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    Shared,
    Exclusive,
}

impl LockKind {
    fn as_str(self) -> &'static str {
        match self {
            LockKind::Shared => "shared",
            LockKind::Exclusive => "exclusive",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockBody {
    pub kind: LockKind,
    pub host: String,
    pub pid: u32,
    /// What holds it: `backup JOB ID`, `garbage collection`.
    pub purpose: String,
    pub created: jiff::Timestamp,
    pub refreshed: jiff::Timestamp,
}

impl LockBody {
    fn live(&self, now: jiff::Timestamp) -> bool {
        let age = now.duration_since(self.refreshed);
        age < jiff::SignedDuration::try_from(stale_after()).unwrap_or_default()
    }

    fn describe(&self) -> String {
        format!(
            "{} lock of `{}` on host `{}` (pid {}), since {}",
            self.kind.as_str(),
            self.purpose,
            self.host,
            self.pid,
            self.created
        )
    }
}

pub fn locks_dir(scope: &str) -> String {
    format!("{ROOT}/{scope}/locks/")
}

/// A held marker; [`Lock::release`] removes it (a dropped one stops being refreshed and goes stale).
pub struct Lock {
    target: Arc<Target>,
    /// The marker's key (what a fossil record names among its holders).
    pub key: String,
    refresher: tokio::task::JoinHandle<()>,
    /// When the marker was last written successfully.
    written: Arc<std::sync::Mutex<std::time::Instant>>,
}

impl Lock {
    /// Whether collections still see this marker as live, with [`CLOCK_MARGIN`] to spare. A holder
    /// that was suspended, or could not refresh its marker, for longer than that may have been
    /// given up on: a collection may have deleted packs it refers to.
    pub fn is_fresh(&self) -> bool {
        let since = self.written.lock().map(|t| t.elapsed()).unwrap_or(Duration::MAX);
        let limit = stale_after();
        since < limit.saturating_sub(CLOCK_MARGIN.min(limit / 3))
    }

    /// [`Lock::is_fresh`], as the error that keeps `what` (a backup, a sync of backup X) from
    /// committing on this target when it is not.
    pub fn ensure_fresh(&self, what: &str, again: &str) -> Result<()> {
        if self.is_fresh() {
            return Ok(());
        }
        Err(Error::Pipeline(format!(
            "the lock marker of {what} on `{}` was not refreshed for nearly {}: garbage collection may have removed chunks it reuses, so it is not committed there (run {again} again)",
            self.target.name(),
            humantime::format_duration(stale_after())
        )))
    }

    pub async fn release(self) {
        self.refresher.abort();
        if let Err(e) = self.target.delete(&self.key).await {
            tracing::warn!(target = %self.target.name(), key = %self.key, error = %e, "could not remove a lock marker (it goes stale by itself)");
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// Why a lock was not taken.
pub enum Refused {
    /// Another holder (described) is live.
    Busy(String),
    Failed(Error),
}

async fn write(target: &Target, key: &str, body: &LockBody) -> Result<()> {
    let data = serde_json::to_vec(body).unwrap_or_default();
    target.put_bytes(key, data.into()).await.map(|_| ())
}

/// A marker not refreshed for this long is removed by the next collection (its holder died long
/// ago; leaving it would make every collection read it again).
pub const SWEEP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Live markers under the scope other than `own`, by key.
pub async fn live_markers(target: &Target, scope: &str, own: &str) -> Result<Vec<(String, LockBody)>> {
    let now = jiff::Timestamp::now();
    Ok(markers(target, scope, own).await?.into_iter().filter(|(_, b)| b.live(now)).collect())
}

/// Remove the markers not refreshed for [`SWEEP_AFTER`]; returns how many.
pub async fn sweep(target: &Target, scope: &str) -> Result<usize> {
    let limit = jiff::SignedDuration::try_from(SWEEP_AFTER).unwrap_or_default();
    let now = jiff::Timestamp::now();
    let mut n = 0;
    for (key, _) in
        markers(target, scope, "").await?.into_iter().filter(|(_, b)| now.duration_since(b.refreshed) > limit)
    {
        target.delete(&key).await?;
        n += 1;
    }
    Ok(n)
}

/// Every readable marker under the scope other than `own`, by key.
async fn markers(target: &Target, scope: &str, own: &str) -> Result<Vec<(String, LockBody)>> {
    let mut out = Vec::new();
    for m in target.list(&locks_dir(scope)).await? {
        if m.key == own || !m.key.ends_with(".json") {
            continue;
        }
        match target.get_bytes(&m.key).await {
            Ok(data) => match serde_json::from_slice::<LockBody>(&data) {
                Ok(b) => out.push((m.key, b)),
                Err(_) => tracing::warn!(target = %target.name(), key = %m.key, "ignoring an unreadable lock marker"),
            },
            // removed between list and get: released
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Write a shared marker on `scope` and hold it (never refused: see the module docs).
pub async fn shared(target: Arc<Target>, scope: &str, purpose: &str) -> Result<Lock> {
    place(target, scope, LockKind::Shared, purpose).await
}

/// Take the exclusive marker on `scope`: refused while another live exclusive marker exists.
pub async fn exclusive(target: Arc<Target>, scope: &str, purpose: &str) -> std::result::Result<Lock, Refused> {
    let lock = place(target.clone(), scope, LockKind::Exclusive, purpose).await.map_err(Refused::Failed)?;
    let conflicts: Vec<LockBody> = match live_markers(&target, scope, &lock.key).await {
        Ok(o) => o.into_iter().map(|(_, b)| b).filter(|b| b.kind == LockKind::Exclusive).collect(),
        Err(e) => {
            lock.release().await;
            return Err(Refused::Failed(e));
        }
    };
    if conflicts.is_empty() {
        Ok(lock)
    } else {
        lock.release().await;
        Err(Refused::Busy(conflicts.iter().map(LockBody::describe).collect::<Vec<_>>().join("; ")))
    }
}

/// Write a marker and keep it refreshed until released.
async fn place(target: Arc<Target>, scope: &str, kind: LockKind, purpose: &str) -> Result<Lock> {
    let now = jiff::Timestamp::now();
    let body = LockBody {
        kind,
        host: crate::host::name(),
        pid: std::process::id(),
        purpose: purpose.to_string(),
        created: now,
        refreshed: now,
    };
    let key = format!(
        "{}{}-{}.{}.json",
        locks_dir(scope),
        now.strftime("%Y%m%dT%H%M%SZ"),
        crate::layout::random_suffix(),
        kind.as_str()
    );
    write(&target, &key, &body).await?;
    let written = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
    let (t, k, mut b, w) = (target.clone(), key.clone(), body, written.clone());
    let refresher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(REFRESH).await;
            let at = std::time::Instant::now();
            b.refreshed = jiff::Timestamp::now();
            match write(&t, &k, &b).await {
                Ok(()) => {
                    if let Ok(mut w) = w.lock() {
                        *w = at;
                    }
                }
                Err(e) => tracing::warn!(target = %t.name(), error = %e, "could not refresh a lock marker"),
            }
        }
    });
    Ok(Lock { target, key, refresher, written })
}
