//! Pushing job states to a Prometheus Pushgateway.
//!
//! Each drctl job has its own group, `/metrics/job/drctl/drctl_job/<job>`, so jobs never
//! overwrite each other. A complete state replaces the group (`PUT`); an incomplete one (the
//! catalog could not be read) is merged into it (`POST`), which keeps the samples it does not
//! carry. The Pushgateway adds `push_time_seconds` and `push_failure_time_seconds` to each group.
//!
//! A failed push never fails a backup: callers report a [`PushError`] as a warning.

use std::time::Duration;

use super::{JOB_LABEL, JobState, Metrics};
use crate::redact::url_for_display;

/// The `job` label of every group drctl pushes.
pub const PUSH_JOB: &str = "drctl";

/// Why a push did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("pushgateway url `{url}` is not usable: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("metrics of job `{job}`: no answer from the Pushgateway at {url}: {detail}")]
    Unreachable { job: String, url: String, detail: String },
    #[error("metrics of job `{job}`: the Pushgateway at {url} refused the push: HTTP {status}: {body}")]
    Refused { job: String, url: String, status: u16, body: String },
}

impl PushError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        let next = "the backup itself is not affected; the next run pushes the job's whole state again";
        match self {
            PushError::BadUrl { .. } => format!("set `[pushgateway] url` to e.g. `http://pushgateway:9091`; {next}"),
            PushError::Unreachable { url, .. } => {
                format!("is the Pushgateway running and reachable (`curl {url}/-/ready`)? {next}")
            }
            PushError::Refused { .. } => format!("check the Pushgateway's log and `[pushgateway] url`; {next}"),
        }
    }
}

/// The path of a job's group below the Pushgateway's URL: `metrics/job/drctl/drctl_job/<job>`.
pub fn group_path(job: &str) -> String {
    format!("metrics/job/{PUSH_JOB}/{}", path_label(JOB_LABEL, job))
}

/// `name/value` for a grouping key, with the value in base64url (`name@base64/…`) when it is not
/// a plain path segment (empty, or other characters than `A-Za-z0-9_-`).
fn path_label(name: &str, value: &str) -> String {
    let plain = !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        format!("{name}/{value}")
    } else if value.is_empty() {
        // the Pushgateway's spelling of an empty value
        format!("{name}@base64/=")
    } else {
        format!("{name}@base64/{}", base64url(value.as_bytes()))
    }
}

/// RFC 4648 §5 base64url without padding (the Pushgateway accepts both).
fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A Pushgateway client.
pub struct Pusher {
    base: url::Url,
    client: reqwest::Client,
}

impl Pusher {
    /// A client for the Pushgateway at `url` (`http(s)://host:port`, optionally with a path
    /// prefix).
    ///
    /// # Errors
    /// [`PushError::BadUrl`] when `url` is not an http(s) URL or no HTTP client can be built.
    pub fn new(url: &str) -> Result<Pusher, PushError> {
        let bad = |reason: String| PushError::BadUrl { url: url_for_display(url), reason };
        let mut base = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(bad("not an http(s) address".into()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        // reqwest is built without a default crypto provider: install ring once (an error only
        // says one is installed already)
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("drctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        Ok(Pusher { base, client })
    }

    /// The Pushgateway's URL, for messages (password masked, no trailing slash).
    pub fn display(&self) -> String {
        url_for_display(self.base.as_str()).trim_end_matches('/').to_string()
    }

    /// The URL of `job`'s group.
    pub fn group_url(&self, job: &str) -> Result<url::Url, PushError> {
        self.base.join(&group_path(job)).map_err(|e| PushError::BadUrl { url: self.display(), reason: e.to_string() })
    }

    /// Replace the WAL receiver's group of `job` (`…/drctl_job/<job>/instance/wal`: its own, so
    /// that `drctl run` replacing the job's group leaves it alone).
    ///
    /// # Errors
    /// As [`Pusher::push`].
    pub async fn push_wal(&self, job: &str, body: String) -> Result<(), PushError> {
        let url = self
            .base
            .join(&format!("{}/instance/wal", group_path(job)))
            .map_err(|e| PushError::BadUrl { url: self.display(), reason: e.to_string() })?;
        self.send(job, url, body, true).await
    }

    /// Push `body` (Prometheus text format) as `job`'s group: replace the group (`PUT`) or merge
    /// into it (`POST`).
    ///
    /// # Errors
    /// [`PushError::Unreachable`] on a network error or timeout, [`PushError::Refused`] when the
    /// Pushgateway answers with anything but success.
    pub async fn push(&self, job: &str, body: String, replace: bool) -> Result<(), PushError> {
        let url = self.group_url(job)?;
        self.send(job, url, body, replace).await
    }

    async fn send(&self, job: &str, url: url::Url, body: String, replace: bool) -> Result<(), PushError> {
        let req = if replace { self.client.put(url) } else { self.client.post(url) };
        let resp = req
            .header(reqwest::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
            .body(body)
            .send()
            .await
            .map_err(|e| PushError::Unreachable { job: job.to_string(), url: self.display(), detail: chain(&e) })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        let mut body: String = text.trim().chars().take(300).collect();
        if body.is_empty() {
            body = status.canonical_reason().unwrap_or("no reason given").to_string();
        }
        Err(PushError::Refused {
            job: job.to_string(),
            url: self.display(),
            status: status.as_u16(),
            body: crate::redact::scrub(&body),
        })
    }

    /// Push the state of each job to its own group, all at once.
    pub async fn push_states(&self, states: &[JobState]) -> Vec<Result<(), PushError>> {
        futures::future::join_all(states.iter().map(|s| {
            let metrics = Metrics::new();
            metrics.set_job(s);
            let body = metrics.encode_state();
            async move {
                let r = self.push(&s.job, body, s.complete).await;
                if r.is_ok() {
                    tracing::info!(job = %s.job, pushgateway = %self.display(), "metrics pushed");
                }
                r
            }
        }))
        .await
    }
}

/// Push the states of the jobs that ran to the Pushgateway at `url`; returns the failures.
pub async fn push_states(url: &str, states: &[JobState]) -> Vec<PushError> {
    match Pusher::new(url) {
        Ok(p) => p.push_states(states).await.into_iter().filter_map(Result::err).collect(),
        Err(e) => vec![e],
    }
}

/// An error and its sources, `: `-joined (reqwest hides the interesting part in the sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        cur = c.source();
    }
    crate::redact::scrub(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors_without_padding() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(input.as_bytes()), want, "{input:?}");
        }
        // the two characters where base64url differs from base64 (`+/` → `-_`)
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn grouping_key_paths() {
        assert_eq!(group_path("postgres"), "metrics/job/drctl/drctl_job/postgres");
        assert_eq!(group_path("pg-main_2"), "metrics/job/drctl/drctl_job/pg-main_2");
        // not a plain segment: base64url, so `/`, `.` and `%` cannot change the path
        assert_eq!(group_path("a/b"), "metrics/job/drctl/drctl_job@base64/YS9i");
        assert_eq!(group_path(".."), "metrics/job/drctl/drctl_job@base64/Li4");
        assert_eq!(group_path(""), "metrics/job/drctl/drctl_job@base64/=");
    }

    #[test]
    fn group_urls_keep_a_path_prefix() {
        let p = Pusher::new("http://pgw:9091").unwrap();
        assert_eq!(p.group_url("pg").unwrap().as_str(), "http://pgw:9091/metrics/job/drctl/drctl_job/pg");
        let p = Pusher::new("https://mon.example/pushgateway/").unwrap();
        assert_eq!(
            p.group_url("pg").unwrap().as_str(),
            "https://mon.example/pushgateway/metrics/job/drctl/drctl_job/pg"
        );
        let p = Pusher::new("http://u:secret@pgw:9091/pgw").unwrap();
        assert_eq!(p.group_url("pg").unwrap().as_str(), "http://u:secret@pgw:9091/pgw/metrics/job/drctl/drctl_job/pg");
        assert!(!p.display().contains("secret"), "{}", p.display());
    }

    #[test]
    fn unusable_urls_are_refused() {
        for url in ["pgw:9091", "ftp://pgw", "not a url", ""] {
            assert!(matches!(Pusher::new(url), Err(PushError::BadUrl { .. })), "{url}");
        }
    }
}
