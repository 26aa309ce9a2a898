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
pub mod secrets;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::jobs::JobConfig;
use crate::targets::TargetConfig;

pub use load::{load, load_str, read_job_files};
pub use problems::{Problem, Severity};

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
    /// `[notify.NAME]` channels (webhook, ntfy, healthchecks pings).
    pub notify: BTreeMap<String, crate::notify::ChannelConfig>,
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
    /// The chunk key of deduplicated storage (`storage = "chunked"` jobs), written by `drctl
    /// keygen --chunk-key FILE`. Every host writing to the same targets needs the same file;
    /// restore does not. Losing it costs deduplication, not data.
    pub chunk_key_file: Option<PathBuf>,
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
