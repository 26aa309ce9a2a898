//! Lock markers in a chunk repository: a backup holds a *shared* lock from before it reads the
//! indexes until its manifest is committed; garbage collection takes an *exclusive* one.
//!
//! Protocol (the store must list what was written before: S3, fs, SFTP and WebDAV do): write your
//! own marker first, then list the others. Garbage collection that finds any other live marker
//! removes its own and skips (it never waits: it runs again at the next prune). A backup that
//! finds a live exclusive marker keeps its own (so no new collection starts) and waits until the
//! exclusive one is gone. Whichever wrote second sees the first, so a collection never deletes a
//! pack a running backup may refer to. Markers are refreshed every [`REFRESH`]; one not refreshed
//! for [`STALE_AFTER`] (its holder died) is ignored. Lock-free collection is a later step.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::repo::ROOT;
use crate::targets::Target;
use crate::{Error, Result};

pub const REFRESH: Duration = Duration::from_secs(60);
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// How often a waiting backup looks again.
const POLL: Duration = Duration::from_secs(2);

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
        age < jiff::SignedDuration::try_from(STALE_AFTER).unwrap_or_default()
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
    key: String,
    refresher: tokio::task::JoinHandle<()>,
}

impl Lock {
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

/// Live markers under the scope other than `own`.
async fn others(target: &Target, scope: &str, own: &str) -> Result<Vec<LockBody>> {
    let now = jiff::Timestamp::now();
    let mut out = Vec::new();
    for m in target.list(&locks_dir(scope)).await? {
        if m.key == own || !m.key.ends_with(".json") {
            continue;
        }
        match target.get_bytes(&m.key).await {
            Ok(data) => match serde_json::from_slice::<LockBody>(&data) {
                Ok(b) if b.live(now) => out.push(b),
                Ok(_) => {}
                Err(_) => tracing::warn!(target = %target.name(), key = %m.key, "ignoring an unreadable lock marker"),
            },
            // removed between list and get: released
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Take a lock of `kind` on `scope`. A shared lock waits up to `wait` for exclusive holders.
pub async fn acquire(
    target: Arc<Target>,
    scope: &str,
    kind: LockKind,
    purpose: &str,
    wait: Duration,
) -> std::result::Result<Lock, Refused> {
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
    write(&target, &key, &body).await.map_err(Refused::Failed)?;
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        let conflicts: Vec<LockBody> = match others(&target, scope, &key).await {
            Ok(o) => o.into_iter().filter(|b| kind == LockKind::Exclusive || b.kind == LockKind::Exclusive).collect(),
            Err(e) => {
                let _ = target.delete(&key).await;
                return Err(Refused::Failed(e));
            }
        };
        if conflicts.is_empty() {
            break;
        }
        let who = conflicts.iter().map(LockBody::describe).collect::<Vec<_>>().join("; ");
        if kind == LockKind::Exclusive || started.elapsed() >= wait {
            let _ = target.delete(&key).await;
            return Err(Refused::Busy(who));
        }
        if !said {
            tracing::info!(target = %target.name(), holder = %who, "waiting for garbage collection on the target to finish");
            said = true;
        }
        tokio::time::sleep(POLL).await;
    }
    let (t, k, mut b) = (target.clone(), key.clone(), body);
    let refresher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(REFRESH).await;
            b.refreshed = jiff::Timestamp::now();
            if let Err(e) = write(&t, &k, &b).await {
                tracing::warn!(target = %t.name(), error = %e, "could not refresh a lock marker");
            }
        }
    });
    Ok(Lock { target, key, refresher })
}
