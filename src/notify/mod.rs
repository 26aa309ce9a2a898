//! Notifications without Prometheus (`[notify.NAME]` channels): a generic webhook (a JSON body),
//! an ntfy topic, or healthchecks-style ping URLs, each subscribed to the events it wants.
//!
//! Events come from backups (`start`, `success`, `failure`, `partial`, `suspicious`) and drills
//! (`drill_failed`), from `drctl run`, `drctl verify` and the daemon alike; `stale` (no complete
//! backup within the job's `rpo`) only from the daemon, which looks every 10 s. A delivery is tried
//! twice with a 10 s deadline each; a failure is logged as a warning and never fails the backup
//! (committed before the outcome is sent); a silent receiver delays the end of a run by at most
//! 20 s. URLs and tokens are secrets: read from `*_file` or written
//! inline, registered for scrubbing, never shown in logs, errors or API responses.
//!
//! What cannot be sent from a run: a CronJob that never ran cannot report itself. "No backup
//! lately" comes from the daemon (`stale`), its metrics and alerts (BackupMissing), or a ping
//! receiver's own grace period (healthchecks.io alerts when a `success` ping is late).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::redact::Secret;

/// Deadline of one delivery attempt.
const DEADLINE: Duration = Duration::from_secs(10);
/// Attempts per delivery.
const ATTEMPTS: usize = 2;

/// `[notify.NAME]`: one channel.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// `webhook` (POST of a JSON body), `ntfy` (POST of a text message to a topic URL) or
    /// `healthchecks` (pings: `URL/start`, `URL`, `URL/fail`).
    #[serde(rename = "type")]
    pub kind: ChannelKind,
    /// The URL (it may carry a token: treated as a secret). One of `url`, `url_file`.
    #[serde(default, serialize_with = "crate::redact::serialize_opt_url")]
    pub url: Option<String>,
    /// A file holding the URL (first line).
    pub url_file: Option<PathBuf>,
    /// A file holding a bearer token sent as `Authorization: Bearer …` (ntfy access tokens,
    /// webhook receivers that want one).
    pub token_file: Option<PathBuf>,
    /// The events this channel gets. Default: webhook and ntfy `failure`, `partial`,
    /// `suspicious`, `drill_failed`; healthchecks `start`, `success`, `failure`, `partial`.
    pub events: Option<Vec<EventKind>>,
    /// Only events of these jobs (default: every job).
    #[serde(default)]
    pub jobs: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Webhook,
    Ntfy,
    Healthchecks,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A backup started.
    Start,
    /// A backup committed on every target.
    Success,
    /// A backup failed: nothing committed.
    Failure,
    /// A backup committed on some targets only.
    Partial,
    /// A backup committed but flagged suspicious (much smaller than the last good one …).
    Suspicious,
    /// A restore drill failed.
    DrillFailed,
    /// No complete backup within the job's `rpo` (sent by the daemon, once per stretch).
    Stale,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::Success => "success",
            EventKind::Failure => "failure",
            EventKind::Partial => "partial",
            EventKind::Suspicious => "suspicious",
            EventKind::DrillFailed => "drill_failed",
            EventKind::Stale => "stale",
        }
    }

    /// Whether it is bad news (ntfy priority, healthchecks `/fail`).
    fn is_problem(self) -> bool {
        match self {
            EventKind::Failure
            | EventKind::Partial
            | EventKind::Suspicious
            | EventKind::DrillFailed
            | EventKind::Stale => true,
            EventKind::Start | EventKind::Success => false,
        }
    }
}

impl ChannelKind {
    fn default_events(self) -> &'static [EventKind] {
        use EventKind::*;
        match self {
            ChannelKind::Webhook | ChannelKind::Ntfy => &[Failure, Partial, Suspicious, DrillFailed, Stale],
            ChannelKind::Healthchecks => &[Start, Success, Failure, Partial],
        }
    }
}

/// One event, as every channel renders it (the webhook's JSON body, public interface).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: EventKind,
    pub job: String,
    /// `backup` or `drill`.
    pub operation: &'static str,
    /// `started`, `ok`, `partial`, `failed`, `suspicious`.
    pub outcome: &'static str,
    pub backup_id: Option<String>,
    /// Targets that hold the backup (committed ones), if any.
    pub targets: Vec<String>,
    pub error: Option<String>,
    pub hint: Option<String>,
    pub host: String,
    pub at: jiff::Timestamp,
    pub drctl_version: &'static str,
}

impl Event {
    pub fn new(event: EventKind, job: &str, operation: &'static str, outcome: &'static str) -> Event {
        Event {
            event,
            job: job.to_string(),
            operation,
            outcome,
            backup_id: None,
            targets: Vec::new(),
            error: None,
            hint: None,
            host: crate::host::name(),
            at: jiff::Timestamp::now(),
            drctl_version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// The event with its free text (error, hint) scrubbed of registered secrets.
    pub fn scrubbed(&self) -> Event {
        Event {
            error: self.error.as_deref().map(crate::redact::scrub),
            hint: self.hint.as_deref().map(crate::redact::scrub),
            ..self.clone()
        }
    }

    /// One line for people (ntfy's message, a ping's body).
    pub fn text(&self) -> String {
        let mut out = format!("{} {} of `{}`: {}", self.host, self.operation, self.job, self.outcome);
        if let Some(id) = &self.backup_id {
            out.push_str(&format!(" (backup {id})"));
        }
        if let Some(e) = &self.error {
            out.push_str(&format!("\n{e}"));
        }
        if let Some(h) = &self.hint {
            out.push_str(&format!("\nhint: {h}"));
        }
        out
    }
}

/// A channel ready to send: its secrets read.
struct Channel {
    name: String,
    kind: ChannelKind,
    url: Secret,
    token: Option<Secret>,
    events: Vec<EventKind>,
    jobs: Vec<String>,
}

/// Called with a channel's name when a delivery to it failed (the daemon counts them).
pub type FailureHook = Box<dyn Fn(&str) + Send + Sync>;

/// Every configured channel.
pub struct Notifier {
    channels: Vec<Channel>,
    client: Option<reqwest::Client>,
    on_failure: std::sync::OnceLock<FailureHook>,
}

impl Notifier {
    /// The channels of `config`. A channel whose secret file cannot be read is left out with a
    /// warning (the configuration check reports it too): notifications never stop a backup.
    pub fn new(config: &BTreeMap<String, ChannelConfig>) -> Notifier {
        let mut channels = Vec::new();
        for (name, c) in config {
            let read = |f: &PathBuf| {
                crate::config::secrets::read_secret_file(f)
                    .inspect_err(|e| tracing::warn!(channel = %name, error = %e, "notification channel left out"))
            };
            let url = match (&c.url, &c.url_file) {
                (Some(u), _) => Ok(Secret::new(u.clone())),
                (None, Some(f)) => read(f),
                (None, None) => continue, // validation refuses it
            };
            let (Ok(url), Ok(token)) = (url, c.token_file.as_ref().map(read).transpose()) else { continue };
            channels.push(Channel {
                name: name.clone(),
                kind: c.kind,
                url,
                token,
                events: c.events.clone().unwrap_or_else(|| c.kind.default_events().to_vec()),
                jobs: c.jobs.clone(),
            });
        }
        let client = (!channels.is_empty()).then(client).flatten();
        Notifier { channels, client, on_failure: std::sync::OnceLock::new() }
    }

    /// Whether any channel wants `kind` events.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.client.is_some() && self.channels.iter().any(|c| c.events.contains(&kind))
    }

    /// Call `hook` for every failed delivery from now on (once; later calls are ignored).
    pub fn on_failure(&self, hook: FailureHook) {
        let _ = self.on_failure.set(hook);
    }

    /// Send `event` to every channel that wants it; waits for the deliveries (each bounded).
    /// Its error and hint are scrubbed of every registered secret first: a receiver is an output
    /// like a log.
    pub async fn send(&self, event: &Event) {
        let Some(client) = &self.client else { return };
        let event = &event.scrubbed();
        let wanted = self
            .channels
            .iter()
            .filter(|c| c.events.contains(&event.event) && (c.jobs.is_empty() || c.jobs.contains(&event.job)));
        futures::future::join_all(wanted.map(|c| async move {
            if let Err(e) = deliver(client, c, event).await {
                if let Some(hook) = self.on_failure.get() {
                    hook(&c.name);
                }
                tracing::warn!(
                    channel = %c.name,
                    job = %event.job,
                    event = event.event.as_str(),
                    error = %crate::redact::scrub(&e),
                    "notification not delivered (the backup is not affected)"
                );
            }
        }))
        .await;
    }
}

fn client() -> Option<reqwest::Client> {
    // reqwest is built without a default crypto provider: install ring once (an error only says
    // one is installed already)
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(DEADLINE)
        .user_agent(concat!("drctl/", env!("CARGO_PKG_VERSION")))
        .build()
        .inspect_err(|e| tracing::warn!(error = %e, "notifications are off: no HTTP client"))
        .ok()
}

/// One delivery, tried [`ATTEMPTS`] times; the error says why the last attempt failed (it may
/// quote the URL: the caller scrubs it).
async fn deliver(client: &reqwest::Client, c: &Channel, event: &Event) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let req = request(client, c, event);
        match req.send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = without_url(&e),
        }
    }
    Err(last)
}

fn request(client: &reqwest::Client, c: &Channel, event: &Event) -> reqwest::RequestBuilder {
    let base = c.url.expose().trim_end_matches('/');
    let req = match c.kind {
        ChannelKind::Webhook => client.post(base).json(event),
        ChannelKind::Ntfy => {
            let priority = if event.event.is_problem() { "high" } else { "default" };
            let tags = if event.event.is_problem() { "warning" } else { "white_check_mark" };
            client
                .post(base)
                .header("Title", format!("drctl: {} {} {}", event.job, event.operation, event.outcome))
                .header("Priority", priority)
                .header("Tags", tags)
                .body(event.text())
        }
        ChannelKind::Healthchecks => {
            let url = match event.event {
                EventKind::Start => format!("{base}/start"),
                EventKind::Success => base.to_string(),
                EventKind::Failure
                | EventKind::Partial
                | EventKind::Suspicious
                | EventKind::DrillFailed
                | EventKind::Stale => format!("{base}/fail"),
            };
            client.post(url).body(event.text())
        }
    };
    match &c.token {
        Some(t) => req.bearer_auth(t.expose()),
        None => req,
    }
}

/// A reqwest error without the URL it names (the URL may hold a token).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() { kind.to_string() } else { format!("{kind}: {cause}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_events_and_text() {
        assert!(ChannelKind::Healthchecks.default_events().contains(&EventKind::Start));
        assert!(!ChannelKind::Ntfy.default_events().contains(&EventKind::Success));
        let mut e = Event::new(EventKind::Failure, "pg", "backup", "failed");
        e.error = Some("pg_dump: connection refused".into());
        let t = e.text();
        assert!(t.contains("backup of `pg`: failed") && t.contains("connection refused"), "{t}");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!((json["event"].as_str(), json["operation"].as_str()), (Some("failure"), Some("backup")));
    }

    #[test]
    fn secrets_in_an_error_never_reach_a_receiver() {
        let token = Secret::new("s3cr3t-notify-test-token");
        let mut e = Event::new(EventKind::Failure, "pg", "backup", "failed");
        e.error = Some(format!("server said: bad token {}", token.expose()));
        e.hint = Some(format!("rotate {}", token.expose()));
        let s = e.scrubbed();
        assert!(!s.text().contains(token.expose()), "{}", s.text());
        assert!(!serde_json::to_string(&s).unwrap().contains(token.expose()));
    }
}
