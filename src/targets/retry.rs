//! Retries for the network target kinds (`sftp`, `webdav`): transient failures are retried with
//! exponential backoff and full jitter, permanent ones and "not found" are returned at once.
//!
//! Only operations that can be repeated safely go through here: connecting, `stat`, `list`,
//! `delete`, opening a read, creating directories, the final rename of an upload, and the whole
//! upload of a small in-memory object (`Target::put_bytes`: manifests, records). The streamed
//! body of an artifact's `put` is never replayed (the stream is consumed once, and is never
//! staged whole): a failure there fails that target's upload, which the run reports as partial
//! (`drctl sync` repairs it), while the other targets' copies commit.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::error::FailureKind;

/// Attempts in all (the first try plus three retries).
pub(crate) const ATTEMPTS: u32 = 4;
const BASE: Duration = Duration::from_millis(250);
const CAP: Duration = Duration::from_secs(4);

/// The pause before retry number `attempt` (1-based): a random point in the upper half of
/// `min(CAP, BASE * 2^(attempt-1))`, so that clients that failed together do not retry together.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let exp = BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(CAP);
    let ms = exp.as_millis() as u64;
    Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms.max(1)))
}

/// An error that knows whether it is worth retrying.
pub(crate) trait Classified {
    fn kind(&self) -> FailureKind;
}

/// A whole target operation (e.g. a small `put`) retried as one.
impl Classified for crate::Error {
    fn kind(&self) -> FailureKind {
        match self {
            crate::Error::Target { kind, .. } => *kind,
            _ => FailureKind::Permanent,
        }
    }
}

/// Run `op` up to [`ATTEMPTS`] times while it fails with a transient error. `op` gets the attempt
/// number (0 for the first try), e.g. to tell a repeated rename from a first one.
pub(crate) async fn retry<T, E, F, Fut>(op: F) -> Result<T, E>
where
    E: Classified + std::fmt::Display,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_in("", "", "", op).await
}

/// [`retry`], logging each retry at `info` (`-v`) with the target, operation, key and attempt.
pub(crate) async fn retry_in<T, E, F, Fut>(target: &str, what: &str, key: &str, mut op: F) -> Result<T, E>
where
    E: Classified + std::fmt::Display,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        match op(attempt).await {
            Err(e) if e.kind() == FailureKind::Transient && attempt + 1 < ATTEMPTS => {
                attempt += 1;
                let pause = backoff(attempt);
                tracing::info!(target = %target, op = what, key = %key, error = %e, attempt, ?pause, "transient target error, retrying");
                tokio::time::sleep(pause).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        for attempt in 1..20 {
            let d = backoff(attempt);
            let exp = BASE.saturating_mul(1 << (attempt - 1).min(16)).min(CAP);
            assert!(d <= exp && d >= exp / 2, "attempt {attempt}: {d:?} vs {exp:?}");
        }
        assert!(backoff(30) <= CAP);
    }

    struct E(FailureKind);
    impl Classified for E {
        fn kind(&self) -> FailureKind {
            self.0
        }
    }
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }

    #[tokio::test]
    async fn retries_only_transient_errors() {
        for (kind, calls) in
            [(FailureKind::Transient, ATTEMPTS), (FailureKind::Permanent, 1), (FailureKind::NotFound, 1)]
        {
            let mut n = 0;
            let r: Result<(), E> = retry(|_| {
                n += 1;
                async move { Err(E(kind)) }
            })
            .await;
            assert!(r.is_err());
            assert_eq!(n, calls, "{kind:?}");
        }
        let mut n = 0;
        let r: Result<u32, E> = retry(|attempt| {
            n += 1;
            async move { if attempt < 2 { Err(E(FailureKind::Transient)) } else { Ok(attempt) } }
        })
        .await;
        assert_eq!(r.ok(), Some(2));
        assert_eq!(n, 3);
    }
}
