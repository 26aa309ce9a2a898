//! The configuration schema: `drctl.toml` plus one job per file in `jobs/NAME.toml`.
//!
//! The structs here are inert data: strict (`deny_unknown_fields`), documented field by field, and
//! built by [`load`] in three steps: parse (syntax errors with line and column), expand `${VAR}`,
//! deserialize each table on its own so that every problem is collected, then [`validate`]
//! cross-references (a job naming an unknown target, an empty recipient list …). Every problem
//! carries the file, line and dotted key path it is about.
//!
//! Families with several kinds (targets, jobs) are closed enums tagged by `type`/`kind`; the fields
//! every kind shares live in a `…Common` struct beside them.

mod fields;
mod load;
pub(crate) mod locate;
pub(crate) mod problems;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::jobs::JobConfig;
use crate::redact::Secret;

pub use load::{load, load_str, read_job_files};

/// A problem found in the configuration, with where it is.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when the key could be located.
    pub line: Option<usize>,
    /// Dotted path of the key, e.g. `jobs.postgres.targets[1]`.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {sev}: `{}`: {}", self.path, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main config file (`drctl.toml`).
    pub path: PathBuf,
    pub catalog: CatalogConfig,
    pub encryption: EncryptionConfig,
    pub compression: CompressionConfig,
    pub pushgateway: Option<PushgatewayConfig>,
    pub api: Option<ApiConfig>,
    pub daemon: DaemonConfig,
    pub deploy: DeployConfig,
    pub targets: BTreeMap<String, TargetConfig>,
    pub jobs: BTreeMap<String, JobConfig>,
    /// Warnings found while loading (errors abort loading).
    pub warnings: Vec<Problem>,
    /// Secret `*_file`s (and key files) that do not exist, as errors with their file:line and key.
    /// Not fatal on load (a host may lack the secrets of jobs it never runs); `drctl run` refuses a
    /// job that needs one ([`Config::missing_secret_files_of`]) and `drctl check` fails on them.
    pub missing_secret_files: Vec<Problem>,
    /// Secret files others can read (warnings) and an age identity that is not private (an error),
    /// for `drctl check`.
    pub secret_file_modes: Vec<Problem>,
}

impl Config {
    /// The job called `name`, or an error listing the configured jobs.
    pub fn job(&self, name: &str) -> crate::Result<&JobConfig> {
        self.jobs.get(name).ok_or_else(|| crate::Error::UnknownJob {
            job: name.to_string(),
            known: self.jobs.keys().cloned().collect(),
        })
    }

    /// The missing secret files job `name` needs: its own and its targets'.
    pub fn missing_secret_files_of(&self, name: &str) -> Vec<Problem> {
        let Some(job) = self.jobs.get(name) else { return Vec::new() };
        let mut scopes = vec![format!("jobs.{name}.")];
        scopes.extend(job.common.targets.iter().map(|t| format!("targets.{t}.")));
        self.missing_secret_files.iter().filter(|p| scopes.iter().any(|s| p.path.starts_with(s))).cloned().collect()
    }

    /// The directory relative paths in the config are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// `[catalog]`: where drctl remembers backups. The targets' manifests are the source of truth; the
/// catalog is an index that `drctl catalog rebuild` recreates.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// `sqlite:///var/lib/drctl/catalog.db` (default: `catalog.db` in the state directory:
    /// `$DRCTL_STATE_DIR`, else `/var/lib/drctl` as root, else `~/.local/state/drctl`).
    pub url: Option<String>,
}

/// `[encryption]`: every backup is encrypted to all recipients; only restore needs an identity.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// age X25519 recipients (`age1…`). Required for backups.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// age identity file (as written by `drctl keygen` or `age-keygen`). Only restore needs it;
    /// backup hosts should not have it.
    pub identity_file: Option<PathBuf>,
}

/// `[compression]`: zstd settings for new backups (restores read them from the manifest).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// zstd level, 1..=19 (default 3: fast, and pg_dump stays the slower stage).
    #[serde(default = "default_zstd_level")]
    pub level: i32,
    /// zstd worker threads; 0 = one per CPU core (default).
    #[serde(default)]
    pub threads: u32,
}

fn default_zstd_level() -> i32 {
    3
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig { level: default_zstd_level(), threads: 0 }
    }
}

/// `[pushgateway]`: where `drctl run` and `drctl verify` push metrics (optional).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PushgatewayConfig {
    /// e.g. `http://pushgateway:9091`.
    pub url: String,
}

/// `[api]`: the daemon's HTTP server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address, default `0.0.0.0:8080`.
    pub listen: Option<String>,
    /// File holding the bearer token for POST endpoints.
    pub token_file: Option<PathBuf>,
}

/// `[daemon]`: scheduler settings (`drctl daemon`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// IANA time zone the jobs' `schedule`s are read in, e.g. `Europe/Berlin` (default UTC). DST
    /// changes are followed: `30 2 * * *` stays at 02:30 local time all year.
    pub timezone: Option<String>,
    /// Most backup and drill runs at once, across all jobs (default 2, at least 1).
    pub max_concurrent: Option<u32>,
    /// Random delay, up to this long, before each scheduled or requested run, e.g. `30s`, `5m`
    /// (default none), so that many jobs due at the same minute do not start together.
    pub jitter: Option<String>,
    /// How long `drctl daemon` waits on SIGTERM/SIGINT for running jobs before it aborts them,
    /// e.g. `30s`, `10m` (default `5m`). An aborted backup is not committed.
    pub grace: Option<String>,
}

impl DaemonConfig {
    /// `jitter` as a duration (default zero; an unreadable value was rejected by validation).
    pub fn jitter(&self) -> std::time::Duration {
        self.jitter.as_deref().and_then(|j| humantime::parse_duration(j).ok()).unwrap_or_default()
    }

    /// `grace` as a duration (default 5 minutes).
    pub fn grace(&self) -> std::time::Duration {
        self.grace
            .as_deref()
            .and_then(|g| humantime::parse_duration(g).ok())
            .unwrap_or(std::time::Duration::from_secs(300))
    }
}

/// `[deploy]`: where `drctl generate kubernetes|swarm` keeps what must outlive a pod or a
/// container: every `fs` target's `path` and the SQLite catalog. A generated workload writes only
/// to storage named here (or to scratch space that is thrown away on purpose), so a backup that is
/// reported committed is on storage that survives the pod. Nothing here changes `drctl run` or the
/// daemon on a host.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    /// Storage of each `fs` target's `path`, by target name, e.g.
    /// `[deploy.targets.local] size = "200Gi"` (a rendered PersistentVolumeClaim) or
    /// `host_path = "/srv/backups"` (a directory on the node). Required for every `fs` target a
    /// rendered job writes to: `drctl generate` refuses (exit 2) rather than writing backups into
    /// the container, where they vanish with it.
    #[serde(default)]
    pub targets: BTreeMap<String, DeployStorage>,
    /// Storage of the SQLite catalog directory (`/var/lib/drctl` or the `[catalog] url` path).
    /// Default: a rendered PersistentVolumeClaim of `1Gi` in the default storage class, one per
    /// workload (each CronJob, the daemon), so that no two pods ever open one SQLite file. Not
    /// used with a PostgreSQL catalog.
    pub catalog: Option<DeployStorage>,
}

/// Durable storage for one path of a generated workload: exactly one of `size` (a rendered
/// PersistentVolumeClaim, Swarm: a named volume) or `host_path` (a node directory: the workloads
/// are pinned to the nodes labelled `drctl.storage=true`, Swarm: a bind mount with the same
/// placement).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeployStorage {
    /// PersistentVolumeClaim size, a Kubernetes quantity such as `50Gi` or `1Ti`.
    pub size: Option<String>,
    /// Storage class of the claim (default: the cluster's default class). Target claims are
    /// `ReadWriteMany` (backup, drill and restore pods of several jobs use them), so the class
    /// must offer that (NFS, CephFS, Longhorn RWX …); otherwise use `host_path`.
    pub storage_class: Option<String>,
    /// A directory on the node instead of a claim, e.g. `/srv/drctl/local`. Absolute.
    pub host_path: Option<PathBuf>,
}

/// One `[targets.NAME]` table.
#[derive(Debug, Clone, Serialize)]
pub struct TargetConfig {
    pub common: TargetCommon,
    pub kind: TargetKind,
}

/// Fields every target kind has.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetCommon {
    /// What kind of storage this is, for 3-2-1's "two media" (e.g. `disk`, `remote-disk`,
    /// `object-storage`). Default: the target's type.
    pub medium: Option<String>,
    /// Whether the target is in another place than the data (3-2-1's "one offsite"). Default false.
    #[serde(default)]
    pub offsite: bool,
    /// GFS retention for this target (applied by `drctl prune`).
    pub keep: Option<KeepPolicy>,
    /// Deadlines for this target's network operations, e.g.
    /// `timeouts = { connect = "10s", idle = "30s", request = "60s" }` (each optional; these are
    /// the defaults). A target that misses one fails that operation (retried like any network
    /// fault); during a backup, a target that accepts no data for `idle` is dropped from it so
    /// that it never holds the others back.
    pub timeouts: Option<TargetTimeouts>,
}

/// `timeouts = { … }` on a target: how long drctl waits before it gives up on a silent target.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TargetTimeouts {
    /// Establishing a connection (TCP, TLS, the SSH handshake), e.g. `10s` (default).
    pub connect: Option<String>,
    /// Silence on an open connection: no answer byte, or (during a backup) no data accepted,
    /// e.g. `30s` (default). Also the SSH keepalive window of `sftp` targets.
    pub idle: Option<String>,
    /// One whole request that carries no streamed body (a listing page, a HEAD, a manifest
    /// upload, one S3 part), retries included, e.g. `60s` (default; an S3 part of `part_size_mib`
    /// must go up within it). Streamed uploads and downloads are bounded by `idle` instead, so a
    /// large backup on a slow line is not cut off.
    pub request: Option<String>,
}

/// The deadlines of one target, parsed (see [`TargetTimeouts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub connect: std::time::Duration,
    pub idle: std::time::Duration,
    pub request: std::time::Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            connect: std::time::Duration::from_secs(10),
            idle: std::time::Duration::from_secs(30),
            request: std::time::Duration::from_secs(60),
        }
    }
}

impl TargetTimeouts {
    /// The deadlines, each field's default where it is unset or not a duration (validation
    /// reports the latter).
    pub fn deadlines(t: Option<&TargetTimeouts>) -> Deadlines {
        let d = Deadlines::default();
        let Some(t) = t else { return d };
        let parse = |v: &Option<String>, default| {
            v.as_deref().and_then(|s| humantime::parse_duration(s).ok()).filter(|d| !d.is_zero()).unwrap_or(default)
        };
        Deadlines {
            connect: parse(&t.connect, d.connect),
            idle: parse(&t.idle, d.idle),
            request: parse(&t.request, d.request),
        }
    }
}

/// GFS retention, with the semantics of `restic forget`: a backup kept by any rule is kept.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeepPolicy {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    /// Keep everything newer than this duration (e.g. `7d`, `36h`).
    pub within: Option<String>,
}

/// The closed set of target kinds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TargetKind {
    Fs(FsTarget),
    S3(S3Target),
    Sftp(SftpTarget),
    Webdav(WebdavTarget),
}

impl TargetKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            TargetKind::Fs(_) => "fs",
            TargetKind::S3(_) => "s3",
            TargetKind::Sftp(_) => "sftp",
            TargetKind::Webdav(_) => "webdav",
        }
    }
}

/// `type = "fs"`: a local directory (or a mounted disk).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FsTarget {
    /// Root directory of the target, e.g. `/var/backups/drctl`. Created if missing.
    pub path: PathBuf,
}

/// `type = "s3"`: AWS S3, Hetzner Object Storage, Garage, MinIO, …
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Target {
    /// Endpoint URL, e.g. `https://fsn1.your-objectstorage.com`. Default: AWS for `region`.
    pub endpoint: Option<String>,
    /// Region name (default `us-east-1`; Hetzner: `fsn1`, `nbg1`, `hel1`; Garage: `garage`).
    #[serde(default = "default_region")]
    pub region: String,
    pub bucket: String,
    /// Key prefix inside the bucket (default: none).
    pub root: Option<String>,
    pub access_key_id: Option<Secret>,
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key: Option<Secret>,
    pub secret_access_key_file: Option<PathBuf>,
    /// Path-style addressing (`endpoint/bucket/key`), default true: what S3-compatible stores expect.
    #[serde(default = "yes")]
    pub path_style: bool,
    /// `when_required` (default) sends request checksums only where S3 requires them; many
    /// S3-compatible stores reject the SDK's default CRC32 headers on multipart uploads.
    /// `when_supported` sends them always (AWS).
    #[serde(default)]
    pub checksums: ChecksumMode,
    /// Multipart part size in MiB (default 16, at least 5). Memory per upload is about twice this.
    #[serde(default = "default_part_size")]
    pub part_size_mib: u64,
    /// Object Lock retention set on every object of a backup (artifacts and manifest) as it is
    /// uploaded, e.g. `{ mode = "compliance", days = 30 }` (default: none). The bucket must have
    /// Object Lock enabled (which also makes it versioned); an upload the store did not lock is an
    /// error. Uploads then always carry a CRC32 checksum (S3 requires one with Object Lock), and
    /// `drctl prune` never deletes a backup while any of its objects is locked.
    pub object_lock: Option<S3ObjectLock>,
    /// Storage class for new objects, passed to the store as is, e.g. `STANDARD_IA`, `GLACIER_IR`
    /// (default: the bucket's, usually `STANDARD`).
    pub storage_class: Option<String>,
    /// Server-side encryption for new objects: `AES256` (SSE-S3) or `aws:kms` (SSE-KMS) (default:
    /// the bucket's). This is the store's own encryption, on top of drctl's age encryption.
    pub sse: Option<S3Sse>,
    /// KMS key for `sse = "aws:kms"` (key id, ARN or `alias/…`; default: the account's S3 key).
    pub sse_kms_key_id: Option<String>,
}

/// `object_lock = { mode = "…", days = N }` on an S3 target.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3ObjectLock {
    /// `governance` (users with `s3:BypassGovernanceRetention` may still delete) or `compliance`
    /// (nobody can delete or shorten it, not even the root account, until it expires).
    pub mode: S3ObjectLockMode,
    /// Retention in days from the upload, at least 1 (e.g. 30).
    pub days: u32,
}

/// The two S3 Object Lock retention modes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum S3ObjectLockMode {
    Governance,
    Compliance,
}

/// `sse = "AES256" | "aws:kms"` on an S3 target.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum S3Sse {
    /// SSE-S3: keys managed by the store.
    #[serde(rename = "AES256")]
    Aes256,
    /// SSE-KMS: keys in AWS KMS (`sse_kms_key_id`, or the account's default S3 key).
    #[serde(rename = "aws:kms")]
    AwsKms,
}

/// `type = "sftp"`: a Hetzner Storage Box (or any OpenSSH server) over SFTP, through the system
/// `ssh` client (package openssh-client). Key authentication only; the server's host key must be
/// in `known_hosts_file` (an unknown or changed key is refused, never trusted on first use).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SftpTarget {
    /// Server name, e.g. `u123456.your-storagebox.de`.
    pub host: String,
    /// SSH port (default 23: the Storage Box port for SFTP, rsync and borg; 22 serves SFTP only).
    #[serde(default = "default_sftp_port")]
    pub port: u16,
    /// Login name, e.g. `u123456`.
    pub user: String,
    /// Private key without passphrase (OpenSSH format) whose public key is in the account's
    /// `.ssh/authorized_keys`.
    pub key_file: PathBuf,
    /// A known_hosts file with the server's host key, e.g. from `ssh-keyscan -p 23 HOST` checked
    /// against the fingerprints the provider publishes (`[HOST]:PORT TYPE KEY` for ports other
    /// than 22). Required: drctl never adds or trusts an unknown key.
    pub known_hosts_file: PathBuf,
    /// Directory for the backups, relative to the account's home (default: the home itself).
    /// Created if missing.
    pub root: Option<String>,
    /// Most SSH connections this target opens at once (default 4; a Storage Box allows about 10
    /// per account, shared by everything that logs in).
    #[serde(default = "default_sftp_connections")]
    pub max_connections: u32,
}

fn default_sftp_port() -> u16 {
    23
}
fn default_sftp_connections() -> u32 {
    4
}

/// `type = "webdav"`: a WebDAV server, e.g. a Hetzner Storage Box over HTTPS with basic auth.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebdavTarget {
    /// Server URL, e.g. `https://u123456.your-storagebox.de` (may include a path).
    #[serde(serialize_with = "crate::redact::serialize_url")]
    pub url: String,
    /// Basic-auth user, e.g. `u123456`.
    pub user: String,
    /// Basic-auth password (or use `password_file`).
    pub password: Option<Secret>,
    /// File whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// Collection for the backups below `url` (default: `url` itself). Created if missing.
    pub root: Option<String>,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn yes() -> bool {
    true
}
fn default_part_size() -> u64 {
    16
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumMode {
    #[default]
    WhenRequired,
    WhenSupported,
}

impl TargetConfig {
    /// The target as 3-2-1 sees it.
    /// This target's deadlines (`timeouts`, else the defaults).
    pub fn deadlines(&self) -> Deadlines {
        TargetTimeouts::deadlines(self.common.timeouts.as_ref())
    }

    pub fn placement(&self, name: &str) -> crate::retention::rule321::Placement {
        crate::retention::rule321::Placement {
            target: name.to_string(),
            medium: self.common.medium.clone().unwrap_or_else(|| self.kind.type_name().to_string()),
            offsite: self.common.offsite,
        }
    }
}

impl Config {
    /// The time zone schedules and retention buckets use (`[daemon] timezone`, default UTC).
    pub fn timezone(&self) -> jiff::tz::TimeZone {
        self.daemon
            .timezone
            .as_deref()
            .and_then(|tz| jiff::tz::TimeZone::get(tz).ok())
            .unwrap_or(jiff::tz::TimeZone::UTC)
    }
}

/// Read a `*_file` secret: the first line, without surrounding whitespace.
///
/// # Errors
/// [`crate::Error::ReadFile`] naming the file (never its content).
pub fn read_secret_file(path: &Path) -> crate::Result<Secret> {
    let text =
        std::fs::read_to_string(path).map_err(|source| crate::Error::ReadFile { path: path.to_path_buf(), source })?;
    Ok(Secret::new(text.lines().next().unwrap_or("").trim()))
}
