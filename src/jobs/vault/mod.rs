//! `kind = "vault"`: a Vault/OpenBao raft snapshot, `GET /v1/sys/storage/raft/snapshot`.
//!
//! Backup: one artifact, `snapshot` (format `raft-snapshot`, the gzipped tar that `bao operator raft
//! snapshot save` writes). The HTTP body streams straight into the pipeline while a tee hands
//! every chunk, through a bounded channel, to a verifier on a blocking thread ([`snapshot::verify`]:
//! gzip → tar, sha256 of `meta.json` and `state.bin` against the snapshot's own `SHA256SUMS`). The
//! completion fails on a mismatch, a missing member or a broken download, so such a snapshot is
//! never committed. Facts: raft index, term, state size and sha256, the raft peers, the server
//! version and cluster id (from `sys/health`).
//!
//! Credentials: `token` / `token_file`, or AppRole (`role_id` with `secret_id` / `secret_id_file`,
//! mount `approle_mount`, default `approle`); an AppRole login token is revoked when the run ends.
//! Before anything is read the token's rights are checked with `sys/capabilities-self` (which the
//! `default` policy grants). TLS: the system roots, or only `ca_file` when it is set.
//!
//! Restore: `POST /v1/sys/storage/raft/snapshot` with a streaming body, or `snapshot-force` with
//! `--force`. The server applies a snapshot as soon as it has read the whole tar archive, even when
//! the upload is then cut off (OpenBao 2.7 does not wait for the gzip trailer or the end of the
//! body), so the last [`HOLD_BACK`] bytes are held back until the engine's `commit` fires; a
//! dropped commit aborts the request with the archive incomplete and nothing is applied.
//! A normal restore into a cluster with other unseal keys is refused by the server (400); the error
//! explains that `--force` uses snapshot-force and that the cluster then needs the SOURCE cluster's
//! unseal keys. The restore token is `VAULT_TOKEN` (or `BAO_TOKEN`) when set, so the job's own
//! token can stay read-only; else the job's credentials, which are used only for the job's own
//! address. `--to URL` restores into another node or cluster: for a URL with another scheme, host
//! or port than `address` the token must come from `VAULT_TOKEN`/`BAO_TOKEN` and the CA from
//! `VAULT_CACERT` (or `BAO_CACERT`, else the job's `ca_file`): a job's credentials never go to
//! another server.

mod config;
pub(crate) mod drill;
mod validate;
pub use config::VaultJob;

pub mod snapshot;

use std::collections::VecDeque;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{ArtifactPlan, RestoreOptions, RestoreStep, Sink, SourceStream};
use crate::config::secrets::read_secret_file;
use crate::manifest::{Artifact, Manifest};
use crate::redact::{Secret, url_for_display};
use crate::{Error, Result};

/// Plaintext format of the one artifact.
pub const FORMAT: &str = "raft-snapshot";
const ARTIFACT: &str = "snapshot";
const SNAPSHOT_PATH: &str = "sys/storage/raft/snapshot";
const FORCE_PATH: &str = "sys/storage/raft/snapshot-force";
const TOKEN_HEADER: &str = "X-Vault-Token";
/// Bytes at the end of a snapshot upload that reach the server only after `commit`: far more than
/// the compressed tail of the archive (`SHA256SUMS`, `SHA256SUMS.sealed`, tar end blocks, gzip trailer).
pub const HOLD_BACK: usize = 64 * 1024;
/// Chunks the download may run ahead of the verifier.
const VERIFY_CHUNKS: usize = 8;
const SMALL_REQUEST: Duration = Duration::from_secs(30);

/// Facts recorded in the manifest of a vault backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Facts {
    pub server_version: String,
    pub cluster_name: String,
    pub cluster_id: String,
    /// The address the snapshot was taken from (no credentials).
    pub address: String,
    pub raft_index: u64,
    pub raft_term: u64,
    pub raft_configuration_index: u64,
    pub raft_snapshot_id: String,
    /// The raft peers in the snapshot: `node1 10.0.0.1:8201 (voter)`.
    pub raft_servers: Vec<String>,
    /// Bytes of `state.bin` (raft's Size).
    pub state_size: u64,
    pub state_sha256: String,
    /// Bytes of the gzipped archive.
    pub snapshot_size: u64,
    /// `meta.json` and `state.bin` matched the snapshot's `SHA256SUMS`.
    pub checksums_verified: bool,
}

/// An error and its causes on one line (reqwest's own text says little: "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = c.source();
    }
    out
}

// ---------------------------------------------------------------- HTTP

/// One Vault/OpenBao node to talk to.
#[derive(Clone)]
struct Server {
    base: url::Url,
    client: reqwest::Client,
}

/// `sys/health`, asked to answer 200 in every state.
#[derive(Debug, Clone, Default, Deserialize)]
struct Health {
    #[serde(default)]
    initialized: bool,
    #[serde(default)]
    sealed: bool,
    #[serde(default)]
    standby: bool,
    #[serde(default)]
    version: String,
    #[serde(default)]
    cluster_name: String,
    #[serde(default)]
    cluster_id: String,
}

/// What the failing request was for, to word the hint.
#[derive(Clone, Copy, PartialEq)]
enum Purpose {
    Backup,
    Restore { force: bool },
    Login,
}

impl Server {
    fn new(job: &str, address: &str, ca_file: Option<&Path>, read_timeout: Option<Duration>) -> Result<Server> {
        let base = url::Url::parse(address).map_err(|e| {
            Error::source_failed(
                job,
                format!("`{address}` is not a URL: {e}"),
                Some("e.g. `https://vault:8200`".into()),
            )
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(Error::source_failed(
                job,
                format!("`{}` is not an http(s) address", url_for_display(address)),
                Some("e.g. `https://vault:8200`".into()),
            ));
        }
        // reqwest is built without a default crypto provider: install ring once (an error only
        // says one is installed already)
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("drctl/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = read_timeout {
            b = b.read_timeout(t);
        }
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca).map_err(|source| Error::ReadFile { path: ca.to_path_buf(), source })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::source_failed(
                    job,
                    format!("ca_file `{}` is not a PEM certificate bundle: {}", ca.display(), chain(&e)),
                    None,
                )
            })?;
            if certs.is_empty() {
                return Err(Error::source_failed(
                    job,
                    format!("ca_file `{}` holds no certificate", ca.display()),
                    None,
                ));
            }
            b = b.tls_certs_only(certs);
        }
        let client = b
            .build()
            .map_err(|e| Error::source_failed(job, format!("cannot set up the HTTP client: {}", chain(&e)), None))?;
        Ok(Server { base, client })
    }

    fn display(&self) -> String {
        url_for_display(self.base.as_str()).trim_end_matches('/').to_string()
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.base.as_str().trim_end_matches('/'))
    }

    fn request_err(&self, job: &str, what: &str, e: &reqwest::Error) -> Error {
        let detail = chain(e);
        let lower = detail.to_ascii_lowercase();
        let hint = if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
            Some("the server's TLS certificate was not accepted: set `ca_file` to the CA that signed it".to_string())
        } else if e.is_connect() || e.is_timeout() {
            Some(format!("is Vault/OpenBao running and reachable at {}? `drctl check` tests it", self.display()))
        } else {
            None
        };
        Error::source_failed(job, format!("{what}: no answer from {}: {detail}", self.display()), hint)
    }

    /// Turn a non-success answer into an error that says what to do.
    async fn status_err(&self, job: &str, what: &str, purpose: Purpose, resp: reqwest::Response) -> Error {
        let status = resp.status();
        let location = resp.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_string);
        let body = resp.bytes().await.unwrap_or_default();
        let body = &body[..body.len().min(16 * 1024)];
        let said = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                v["errors"].as_array().map(|a| a.iter().filter_map(|e| e.as_str()).collect::<Vec<_>>().join("; "))
            })
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_string());
        let shown = self.display();
        let message = format!("{what}: {shown} answered {status}: {said}");
        let lower = said.to_ascii_lowercase();
        let hint = match status.as_u16() {
            400 if matches!(purpose, Purpose::Restore { force: false }) && lower.contains("unseal keys") => {
                return Error::source_failed(
                    job,
                    format!("{shown} refused the snapshot: it was taken on a cluster with other unseal keys ({said})"),
                    Some(
                        "restoring into a different cluster needs `--force`, which uses snapshot-force: the cluster \
                         then seals itself and opens only with the SOURCE cluster's unseal keys (or its KMS), and only \
                         the source cluster's tokens work afterwards. Have those keys at hand, then run the same \
                         restore with `--force`"
                            .into(),
                    ),
                );
            }
            400 if purpose == Purpose::Login => Some(
                "check `role_id` and `secret_id`/`secret_id_file` (a secret_id may have expired or used up its uses) \
                 and `approle_mount`"
                    .into(),
            ),
            401 | 403 => Some(match purpose {
                Purpose::Backup => {
                    "check the token (`token`/`token_file`) or the AppRole credentials; its policy must \
                    grant `read` on `sys/storage/raft/snapshot` (and keep the `default` policy)"
                        .into()
                }
                Purpose::Restore { .. } => "a restore needs a token that may `update` \
                    `sys/storage/raft/snapshot` (`snapshot-force` with --force) on the destination: set VAULT_TOKEN \
                    (or BAO_TOKEN) to one, e.g. a root or operator token, if the job's own token may only read"
                    .into(),
                Purpose::Login => "check `role_id`, `secret_id`/`secret_id_file` and `approle_mount`".into(),
            }),
            404 | 405 => Some(
                "raft snapshots need integrated storage (`storage \"raft\"`); check `address` and the server's storage"
                    .into(),
            ),
            429 | 472 | 473 => Some("this node is a standby: point the job at the active node".into()),
            301 | 302 | 303 | 307 | 308 => Some(format!(
                "the node redirected to {}: point `address` (or `--to`) at the active node",
                location.as_deref().map(url_for_display).unwrap_or_else(|| "another node".into())
            )),
            503 if lower.contains("sealed") => Some("the server is sealed: unseal it first".into()),
            500..=599 => Some("the server failed; its log says why".into()),
            _ => None,
        };
        Error::source_failed(job, message, hint)
    }

    async fn health(&self, job: &str) -> Result<Health> {
        let url = format!(
            "{}?standbyok=true&perfstandbyok=true&sealedcode=200&uninitcode=200&drsecondarycode=200&performancestandbycode=200",
            self.url("sys/health")
        );
        let resp = self
            .client
            .get(url)
            .timeout(SMALL_REQUEST)
            .send()
            .await
            .map_err(|e| self.request_err(job, "health check", &e))?;
        if !resp.status().is_success() {
            return Err(self.status_err(job, "health check", Purpose::Backup, resp).await);
        }
        let h: Health = resp.json().await.map_err(|e| {
            Error::source_failed(
                job,
                format!("{} did not answer like Vault/OpenBao: {}", self.display(), chain(&e)),
                None,
            )
        })?;
        if !h.initialized {
            return Err(Error::source_failed(
                job,
                format!("{} is not initialized", self.display()),
                Some("initialize it (`bao operator init`) first".into()),
            ));
        }
        if h.sealed {
            return Err(Error::source_failed(
                job,
                format!("{} is sealed", self.display()),
                Some(
                    "unseal it (`bao operator unseal`); after a `--force` restore it opens only with the unseal keys \
                     of the cluster the snapshot came from"
                        .into(),
                ),
            ));
        }
        Ok(h)
    }

    async fn approle_login(&self, job: &str, mount: &str, role_id: &str, secret_id: &Secret) -> Result<Secret> {
        let what = "AppRole login";
        let resp = self
            .client
            .post(self.url(&format!("auth/{}/login", mount.trim_matches('/'))))
            .timeout(SMALL_REQUEST)
            .json(&serde_json::json!({ "role_id": role_id, "secret_id": secret_id.expose() }))
            .send()
            .await
            .map_err(|e| self.request_err(job, what, &e))?;
        if !resp.status().is_success() {
            return Err(self.status_err(job, what, Purpose::Login, resp).await);
        }
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| Error::source_failed(job, format!("{what}: unreadable answer: {}", chain(&e)), None))?;
        match v["auth"]["client_token"].as_str() {
            Some(t) if !t.is_empty() => Ok(Secret::new(t)),
            _ => Err(Error::source_failed(job, format!("{what}: the answer holds no token"), None)),
        }
    }

    /// Fail unless `token` may use `path` with `needed` (`read`, `update`).
    async fn check_capabilities(
        &self,
        job: &str,
        token: &Secret,
        path: &str,
        needed: &str,
        purpose: Purpose,
    ) -> Result<()> {
        let what = "checking the token's rights";
        let resp = self
            .client
            .post(self.url("sys/capabilities-self"))
            .header(TOKEN_HEADER, token.expose())
            .timeout(SMALL_REQUEST)
            .json(&serde_json::json!({ "paths": [path] }))
            .send()
            .await
            .map_err(|e| self.request_err(job, what, &e))?;
        if resp.status().as_u16() == 403 {
            return Err(Error::source_failed(
                job,
                format!("{} refused the token (403 permission denied)", self.display()),
                Some(
                    "check `token`/`token_file` (or the AppRole credentials; for `--to` another server: VAULT_TOKEN): \
                     is it valid and not expired? drctl checks a token's rights with `sys/capabilities-self`, which \
                     the `default` policy allows"
                        .into(),
                ),
            ));
        }
        if !resp.status().is_success() {
            return Err(self.status_err(job, what, purpose, resp).await);
        }
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| Error::source_failed(job, format!("{what}: unreadable answer: {}", chain(&e)), None))?;
        let caps: Vec<String> = [&v["data"][path], &v[path], &v["data"]["capabilities"], &v["capabilities"]]
            .into_iter()
            .find_map(|c| c.as_array())
            .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let allowed = !caps.iter().any(|c| c == "deny") && caps.iter().any(|c| c == "root" || c == needed);
        if allowed {
            return Ok(());
        }
        Err(Error::source_failed(
            job,
            format!(
                "the token may not {needed} `{path}` on {} (its capabilities there: {})",
                self.display(),
                if caps.is_empty() { "none".to_string() } else { caps.join(", ") }
            ),
            Some(format!(
                "grant `{needed}` on `{path}` in the token's policy, e.g. path \"{path}\" {{ capabilities = \
                 [\"{needed}\"] }}{}",
                if matches!(purpose, Purpose::Restore { .. }) {
                    ", or set VAULT_TOKEN (or BAO_TOKEN) to a token that may (the job's own token may stay read-only)"
                } else {
                    ""
                }
            )),
        ))
    }

    /// Best effort: a login token should not outlive the run.
    async fn revoke_self(&self, token: &Secret) {
        let _ = self
            .client
            .post(self.url("auth/token/revoke-self"))
            .header(TOKEN_HEADER, token.expose())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
    }
}

/// A token from the job's configuration; `true` when it came from a login (and should be revoked).
async fn authenticate(job: &str, cfg: &VaultJob, server: &Server) -> Result<(Secret, bool)> {
    if let Some(t) = &cfg.token {
        return Ok((t.clone(), false));
    }
    if let Some(f) = &cfg.token_file {
        let t = read_secret_file(f)?;
        if t.expose().is_empty() {
            return Err(Error::source_failed(job, format!("token_file `{}` is empty", f.display()), None));
        }
        return Ok((t, false));
    }
    if let Some(role_id) = &cfg.role_id {
        let secret_id = match (&cfg.secret_id, &cfg.secret_id_file) {
            (Some(s), _) => s.clone(),
            (None, Some(f)) => read_secret_file(f)?,
            (None, None) => {
                return Err(Error::source_failed(job, "`role_id` needs `secret_id` or `secret_id_file`", None));
            }
        };
        let mount = cfg.approle_mount.as_deref().unwrap_or("approle");
        return Ok((server.approle_login(job, mount, role_id, &secret_id).await?, true));
    }
    Err(Error::source_failed(
        job,
        "no credentials configured",
        Some("set `token_file`, or `role_id` with `secret_id_file`".into()),
    ))
}

// ---------------------------------------------------------------- backup

/// A vault backup in progress.
pub struct BackupSession {
    job: String,
    server: Server,
    token: Secret,
    logged_in: bool,
    health: Health,
    verified: Arc<Mutex<Option<snapshot::SnapshotInfo>>>,
}

impl BackupSession {
    pub async fn prepare(job: &str, cfg: &VaultJob) -> Result<BackupSession> {
        // the snapshot body may pause while the server writes it; a silent server is dead after this
        let server = Server::new(job, &cfg.address, cfg.ca_file.as_deref(), Some(Duration::from_secs(300)))?;
        let health = server.health(job).await?;
        let (token, logged_in) = authenticate(job, cfg, &server).await?;
        let session =
            BackupSession { job: job.to_string(), server, token, logged_in, health, verified: Arc::default() };
        if let Err(e) =
            session.server.check_capabilities(job, &session.token, SNAPSHOT_PATH, "read", Purpose::Backup).await
        {
            session.close(false).await;
            return Err(e);
        }
        Ok(session)
    }

    pub fn artifacts(&self) -> Vec<ArtifactPlan> {
        vec![ArtifactPlan { name: ARTIFACT.into(), format: FORMAT, ext: "snap", size_hint: None }]
    }

    pub async fn open(&mut self, _artifact: &ArtifactPlan) -> Result<SourceStream> {
        let job = self.job.clone();
        let what = "raft snapshot";
        let resp = self
            .server
            .client
            .get(self.server.url(SNAPSHOT_PATH))
            .header(TOKEN_HEADER, self.token.expose())
            .send()
            .await
            .map_err(|e| self.server.request_err(&job, what, &e))?;
        if !resp.status().is_success() {
            return Err(self.server.status_err(&job, what, Purpose::Backup, resp).await);
        }

        let (vtx, vrx) = mpsc::channel::<Bytes>(VERIFY_CHUNKS);
        let verifier =
            tokio::task::spawn_blocking(move || snapshot::verify(ChannelReader { rx: vrx, cur: Bytes::new() }));
        let outcome: Arc<Mutex<Download>> = Arc::new(Mutex::new(Download::Reading));
        let tee = Tee { body: Box::pin(resp.bytes_stream()), verify: vtx, outcome: outcome.clone() };
        let reader = tokio_util::io::StreamReader::new(tee.into_stream());

        let shown = self.server.display();
        let verified = self.verified.clone();
        let completion = Box::pin(async move {
            let verdict = verifier
                .await
                .map_err(|e| Error::source_failed(&job, format!("the snapshot verifier failed: {e}"), None))?;
            let ended = outcome.lock().map(|o| o.clone()).unwrap_or(Download::Reading);
            match (ended, verdict) {
                (Download::Broke(f), _) => Err(Error::source_failed(
                    &job,
                    format!("the snapshot download from {shown} broke off: {f}"),
                    Some("nothing was committed; check the server's log and run the job again".into()),
                )),
                (Download::Finished, Ok(info)) => {
                    if let Ok(mut v) = verified.lock() {
                        *v = Some(info);
                    }
                    Ok(())
                }
                (Download::Finished | Download::Rejected, Err(e)) => Err(Error::source_failed(
                    &job,
                    format!("the snapshot from {shown} failed verification: {e}"),
                    Some(
                        "nothing was committed. A snapshot that does not match its own SHA256SUMS, or is not a \
                         complete raft snapshot, is damaged: check the server (and any proxy in between) and run \
                         the job again"
                            .into(),
                    ),
                )),
                // the pipeline stopped reading before the end: it failed and holds the reason; without
                // it having read to the end nothing is committed (and `finish` has no facts)
                (Download::Reading | Download::Rejected, _) => Ok(()),
            }
        });
        Ok(SourceStream { reader: Box::new(reader), completion })
    }

    pub async fn finish(&mut self) -> Result<serde_json::Value> {
        let info = self.verified.lock().ok().and_then(|v| v.clone()).ok_or_else(|| {
            Error::source_failed(&self.job, "no verified snapshot: the snapshot stream did not complete", None)
        })?;
        let servers = info
            .meta
            .configuration
            .as_ref()
            .and_then(|c| c.servers.as_ref())
            .map(|s| s.iter().map(|s| s.describe()).collect())
            .unwrap_or_default();
        let facts = Facts {
            server_version: self.health.version.clone(),
            cluster_name: self.health.cluster_name.clone(),
            cluster_id: self.health.cluster_id.clone(),
            address: self.server.display(),
            raft_index: info.meta.index,
            raft_term: info.meta.term,
            raft_configuration_index: info.meta.configuration_index,
            raft_snapshot_id: info.meta.id.clone(),
            raft_servers: servers,
            state_size: info.state_size,
            state_sha256: info.state_sha256.clone(),
            snapshot_size: info.archive_size,
            checksums_verified: true,
        };
        Ok(serde_json::to_value(facts).unwrap_or_default())
    }

    /// Revoke the AppRole login token, if there is one.
    pub async fn close(self, _committed: bool) {
        if self.logged_in {
            self.server.revoke_self(&self.token).await;
        }
    }

    /// One line for `drctl check`.
    pub fn describe(&self) -> String {
        format!(
            "server reachable ({} version {}, cluster `{}`, {} node, unsealed); the token may read the raft snapshot; \
             will store: {ARTIFACT}",
            self.server.display(),
            self.health.version,
            self.health.cluster_name,
            if self.health.standby { "standby" } else { "active" }
        )
    }
}

/// A blocking `Read` over the chunks the tee sends (end of input: the sender is gone).
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

type ByteStream = std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// How the snapshot download ended.
#[derive(Debug, Clone)]
enum Download {
    /// Not (yet) to its end: still running, or the pipeline stopped reading.
    Reading,
    /// The body ended normally.
    Finished,
    /// The verifier gave up on the snapshot before its end.
    Rejected,
    /// The connection broke: why.
    Broke(String),
}

/// The snapshot body, passed on to the pipeline and copied to the verifier.
struct Tee {
    body: ByteStream,
    verify: mpsc::Sender<Bytes>,
    outcome: Arc<Mutex<Download>>,
}

impl Tee {
    fn into_stream(self) -> std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>> {
        fn set(t: &Tee, d: Download) {
            if let Ok(mut o) = t.outcome.lock() {
                *o = d;
            }
        }
        Box::pin(futures::stream::unfold(Some(self), |state| async move {
            let mut t = state?;
            match t.body.next().await {
                None => {
                    set(&t, Download::Finished);
                    None // drops the verifier's sender: the end of its input
                }
                Some(Ok(chunk)) => {
                    if t.verify.send(chunk.clone()).await.is_err() {
                        // the verifier gave up on the snapshot: stop, the completion says why
                        set(&t, Download::Rejected);
                        return Some((Err(io::Error::other("the snapshot failed verification")), None));
                    }
                    Some((Ok(chunk), Some(t)))
                }
                Some(Err(e)) => {
                    let text = chain(&e);
                    set(&t, Download::Broke(text.clone()));
                    Some((Err(io::Error::other(format!("snapshot download failed: {text}"))), None))
                }
            }
        }))
    }
}

// ---------------------------------------------------------------- restore

/// The cluster a restore writes to.
struct Dest {
    server: Server,
    token: Secret,
    health: Health,
}

fn env_secret(names: &[&str]) -> Option<(String, Secret)> {
    names.iter().find_map(|n| {
        std::env::var(n)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .map(|v| (n.to_string(), Secret::new(v)))
    })
}

/// Where a restore goes and with which token: `VAULT_TOKEN` (or `BAO_TOKEN`) when set, so the
/// job's own credentials may stay read-only; else the job's credentials, but only for the job's own
/// address (same scheme, host and port), never for another server.
async fn destination(job: &str, cfg: &VaultJob, opts: &RestoreOptions) -> Result<Dest> {
    if opts.to_dir.is_some() {
        return Err(Error::source_failed(
            job,
            "--to-dir does not apply to vault snapshots",
            Some("use `--output FILE` for the snapshot file, or `--to URL` to restore into another cluster".into()),
        ));
    }
    let (address, own) = match &opts.to {
        None => (cfg.address.clone(), true),
        Some(to) => {
            let to_url = url::Url::parse(to).map_err(|e| {
                Error::source_failed(
                    job,
                    format!("--to: `{}` is not a URL: {e}", url_for_display(to)),
                    Some("e.g. `--to https://vault-dr:8200`".into()),
                )
            })?;
            let own = url::Url::parse(&cfg.address).map(|a| a.origin() == to_url.origin()).unwrap_or(false);
            (to.clone(), own)
        }
    };
    let ca: Option<PathBuf> = if own {
        cfg.ca_file.clone()
    } else {
        std::env::var_os("VAULT_CACERT")
            .or_else(|| std::env::var_os("BAO_CACERT"))
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| cfg.ca_file.clone())
    };
    let server = Server::new(job, &address, ca.as_deref(), None)?;
    let health = server.health(job).await?;
    let token = match env_secret(&["VAULT_TOKEN", "BAO_TOKEN"]) {
        Some((_, token)) => token,
        None if own => authenticate(job, cfg, &server).await?.0,
        None => {
            return Err(Error::source_failed(
                job,
                format!("--to {}: no token for that server", server.display()),
                Some(format!(
                    "set VAULT_TOKEN (or BAO_TOKEN) to a token of the destination cluster; drctl sends the job's own \
                     credentials only to the job's address ({})",
                    url_for_display(&cfg.address).trim_end_matches('/')
                )),
            ));
        }
    };
    Ok(Dest { server, token, health })
}

fn check_artifact(job: &str, artifact: &Artifact) -> Result<()> {
    if artifact.format != FORMAT {
        return Err(Error::source_failed(
            job,
            format!("artifact `{}` has format `{}`, not a {FORMAT}", artifact.name, artifact.format),
            None,
        ));
    }
    Ok(())
}

pub async fn plan_restore(
    job: &str,
    cfg: &VaultJob,
    m: &Manifest,
    artifact: &Artifact,
    opts: &RestoreOptions,
) -> Result<RestoreStep> {
    check_artifact(job, artifact)?;
    let dest = destination(job, cfg, opts).await?;
    let path = if opts.force { FORCE_PATH } else { SNAPSHOT_PATH };
    let purpose = Purpose::Restore { force: opts.force };
    dest.server.check_capabilities(job, &dest.token, path, "update", purpose).await?;
    let facts: Facts = serde_json::from_value(m.facts.clone()).unwrap_or_default();
    let mut action = format!(
        "POST /v1/{path}: replace the whole state of the cluster with the snapshot (raft index {}, term {}, taken {} \
         from cluster `{}`)",
        facts.raft_index, facts.raft_term, m.started_at, facts.cluster_name
    );
    let other_cluster = !facts.cluster_id.is_empty()
        && !dest.health.cluster_id.is_empty()
        && facts.cluster_id != dest.health.cluster_id;
    if opts.force {
        action.push_str(
            "; snapshot-force skips the unseal-key check: the cluster then seals itself and opens only with the \
             SOURCE cluster's unseal keys, and only the source cluster's tokens work",
        );
    } else if other_cluster {
        action.push_str(&format!(
            "; note: the destination is another cluster (id {}, the snapshot's is {}): unless it shares the source's \
             unseal keys the server refuses this, and `--force` (snapshot-force) is needed",
            dest.health.cluster_id, facts.cluster_id
        ));
    }
    Ok(RestoreStep { artifact: artifact.name.clone(), destination: dest.server.display(), action })
}

pub async fn open_sink(
    job: &str,
    cfg: &VaultJob,
    m: &Manifest,
    artifact: &Artifact,
    opts: &RestoreOptions,
) -> Result<Sink> {
    check_artifact(job, artifact)?;
    let dest = destination(job, cfg, opts).await?;
    let force = opts.force;
    let path = if force { FORCE_PATH } else { SNAPSHOT_PATH };
    let purpose = Purpose::Restore { force };
    dest.server.check_capabilities(job, &dest.token, path, "update", purpose).await?;

    let (writer, reader) = tokio::io::duplex(256 * 1024);
    let (commit_tx, commit_rx) = oneshot::channel::<()>();
    let aborted = Arc::new(AtomicBool::new(false));
    let body = gated_body(reader, commit_rx, aborted.clone());
    let request = dest
        .server
        .client
        .post(dest.server.url(path))
        .header(TOKEN_HEADER, dest.token.expose())
        .body(reqwest::Body::wrap_stream(body));
    let shown = dest.server.display();
    let source_cluster = serde_json::from_value::<Facts>(m.facts.clone()).map(|f| f.cluster_id).unwrap_or_default();
    let (job_name, server) = (job.to_string(), dest.server.clone());
    let destination = shown.clone();
    let task = tokio::spawn(async move {
        let job = job_name.as_str();
        let what = if force { "snapshot-force restore" } else { "snapshot restore" };
        let resp = request.send().await;
        if aborted.load(Ordering::SeqCst) {
            return Err(Error::Restore {
                job: job.to_string(),
                destination: shown,
                message: "stopped before the end of the snapshot because a check failed: nothing was applied".into(),
            });
        }
        let resp = resp.map_err(|e| server.request_err(job, what, &e))?;
        if !resp.status().is_success() {
            return Err(server.status_err(job, what, purpose, resp).await);
        }
        if force {
            tracing::warn!(
                job,
                destination = %shown,
                "snapshot-force restore done: the cluster now seals itself; unseal it with the unseal keys of the \
                 cluster the snapshot was taken from (cluster id {source_cluster}); only that cluster's tokens work"
            );
        } else {
            tracing::info!(job, destination = %shown, "snapshot restored; the server reloads its state within seconds");
        }
        Ok(())
    });
    Ok(Sink::task(writer, task, commit_tx, destination))
}

/// The upload body: what is written to the sink, less its last [`HOLD_BACK`] bytes until `commit`
/// fires. A dropped commit ends the body with an error, which aborts the request mid-archive.
fn gated_body(
    input: tokio::io::DuplexStream,
    commit: oneshot::Receiver<()>,
    aborted: Arc<AtomicBool>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    struct Gate {
        input: tokio_util::io::ReaderStream<tokio::io::DuplexStream>,
        held: VecDeque<Bytes>,
        held_len: usize,
        /// `Some` until the input ended.
        commit: Option<oneshot::Receiver<()>>,
        aborted: Arc<AtomicBool>,
    }
    let gate = Gate {
        input: tokio_util::io::ReaderStream::with_capacity(input, 64 * 1024),
        held: VecDeque::new(),
        held_len: 0,
        commit: Some(commit),
        aborted,
    };
    futures::stream::unfold(Some(gate), |state| async move {
        let mut g = state?;
        loop {
            // release what lies at least HOLD_BACK bytes before the end seen so far
            if let Some(front) = g.held.front()
                && (g.commit.is_none() || g.held_len - front.len() >= HOLD_BACK)
            {
                let c = g.held.pop_front()?;
                g.held_len -= c.len();
                return Some((Ok(c), Some(g)));
            }
            let Some(commit) = g.commit.as_mut() else {
                return None; // committed and all sent: a clean end of the body
            };
            match g.input.next().await {
                Some(Ok(c)) => {
                    g.held_len += c.len();
                    g.held.push_back(c);
                }
                Some(Err(e)) => return Some((Err(e), None)),
                None => {
                    if commit.await.is_err() {
                        g.aborted.store(true, Ordering::SeqCst);
                        return Some((Err(io::Error::other("restore aborted: not every check passed")), None));
                    }
                    g.commit = None;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests;
