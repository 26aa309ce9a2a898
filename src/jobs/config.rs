//! A job's configuration: the fields every kind has, the drill settings, and the closed set of
//! kinds ([`JobSpec`]), each kind's own struct living in its folder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::gitlab::GitlabJob;
use super::postgres::PostgresJob;
use super::redis::RedisJob;
use super::vault::VaultJob;
use super::volume::VolumeJob;
use crate::config::problems::{Problems, Section};
use crate::exec::ExecConfig;

/// What code outside a kind needs to know of its settings. Every kind implements all of it (there
/// are no defaults): a new kind does not compile until it says which files it reads and what a
/// deployment must give it.
pub trait KindSettings {
    /// Host-side secret files the settings name, by key (`password_file` …): checked by `drctl
    /// check` and before a run.
    fn secret_files(&self) -> Vec<(&'static str, Option<&Path>)>;
    /// Resolve host-side relative paths against the config's directory; paths inside a container
    /// or pod are left as written.
    fn resolve_paths(&mut self, fix: &mut dyn FnMut(&mut PathBuf));
    /// Where the kind's commands run (`None`: it only talks to its server over the network).
    fn exec(&self) -> Option<&ExecConfig>;
    /// Why the job cannot run in a Kubernetes pod, if it cannot.
    fn kubernetes_obstacle(&self) -> Option<String>;
    /// Whether the job needs the Docker engine socket.
    fn needs_docker(&self) -> bool;
    /// A host directory the job reads (mounted read-only into its workload).
    fn host_path(&self) -> Option<&Path>;
}

/// A job kind by name, as a manifest (`kind`) or a drill record records it: the closed set that
/// code reading stored facts matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Postgres,
    Redis,
    Volume,
    Vault,
    Gitlab,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Redis => "redis",
            Kind::Volume => "volume",
            Kind::Vault => "vault",
            Kind::Gitlab => "gitlab",
        }
    }

    /// Whether a job of this kind that does not say `storage` is `chunked` when a chunk key is
    /// configured: trees and GitLab archives repeat most of their bytes from one day to the next;
    /// a database dump or snapshot changes more, and stays `stream` unless asked.
    pub fn chunked_by_default(self) -> bool {
        match self {
            Kind::Volume | Kind::Gitlab => true,
            Kind::Postgres | Kind::Redis | Kind::Vault => false,
        }
    }

    /// The kind a stored `kind` names; `None` for one this drctl does not know (a newer drctl's).
    /// Through serde, so a new variant parses without a second list to keep in step.
    pub fn parse(name: &str) -> Option<Kind> {
        use serde::de::IntoDeserializer;
        Kind::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(name)).ok()
    }
}

#[cfg(test)]
mod kind_tests {
    use super::Kind;

    #[test]
    fn names_round_trip_and_unknown_is_none() {
        for k in [Kind::Postgres, Kind::Redis, Kind::Volume, Kind::Vault, Kind::Gitlab] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("mysql"), None);
    }
}

/// The closed set of job kinds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobSpec {
    Postgres(PostgresJob),
    Redis(RedisJob),
    Volume(VolumeJob),
    Vault(VaultJob),
    Gitlab(GitlabJob),
}

impl JobSpec {
    /// The kind's own settings, behind what every kind answers.
    pub fn settings(&self) -> &dyn KindSettings {
        match self {
            JobSpec::Postgres(c) => c,
            JobSpec::Redis(c) => c,
            JobSpec::Volume(c) => c,
            JobSpec::Vault(c) => c,
            JobSpec::Gitlab(c) => c,
        }
    }

    /// [`JobSpec::settings`], to change.
    pub fn settings_mut(&mut self) -> &mut dyn KindSettings {
        match self {
            JobSpec::Postgres(c) => c,
            JobSpec::Redis(c) => c,
            JobSpec::Volume(c) => c,
            JobSpec::Vault(c) => c,
            JobSpec::Gitlab(c) => c,
        }
    }
    /// Every problem of the kind's own settings, located in section `s` (the job's table).
    pub(crate) fn validate(&self, s: &Section, p: &mut Problems) {
        match self {
            JobSpec::Postgres(c) => c.validate(s, p),
            JobSpec::Redis(c) => c.validate(s, p),
            JobSpec::Volume(c) => c.validate(s, p),
            JobSpec::Vault(c) => c.validate(s, p),
            JobSpec::Gitlab(c) => c.validate(s, p),
        }
    }

    /// The kind, as manifests and drill records name it.
    pub fn kind(&self) -> Kind {
        match self {
            JobSpec::Postgres(_) => Kind::Postgres,
            JobSpec::Redis(_) => Kind::Redis,
            JobSpec::Volume(_) => Kind::Volume,
            JobSpec::Vault(_) => Kind::Vault,
            JobSpec::Gitlab(_) => Kind::Gitlab,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        self.kind().as_str()
    }
}

/// One job: `[jobs.NAME]` in drctl.toml or the whole of `jobs/NAME.toml`.
#[derive(Debug, Clone, Serialize)]
pub struct JobConfig {
    pub name: String,
    pub common: JobCommon,
    pub spec: JobSpec,
}

/// Fields every job kind has.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobCommon {
    /// 5-field cron expression or `@daily`-style alias, for `drctl daemon`.
    pub schedule: Option<String>,
    /// Names of `[targets.*]` this job writes to; every backup goes to all of them.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Restore drill settings.
    pub verify: Option<VerifyConfig>,
    /// Recovery point objective: a target whose newest copy is older than this is stale
    /// (`drctl check` fails, alerts fire). Default `26h` (a daily job with slack).
    pub rpo: Option<String>,
    /// How backups are stored: `stream` (one zstd+age object per artifact) or `chunked`
    /// (deduplicated packs, see docs/architecture.md). Left out: `chunked` for volume and gitlab
    /// jobs when `encryption.chunk_key_file` is set (filled in when the config is loaded),
    /// `stream` otherwise.
    pub storage: Option<Storage>,
    /// Commands (`sh -c`, on this host) run in order before the backup reads its source, e.g.
    /// `docker pause app`; the first failure fails the backup (see [`super::hooks`]).
    #[serde(default)]
    pub before: Vec<String>,
    /// Commands run after every backup whose `before` hooks started, whatever happened, with
    /// `DRCTL_BACKUP_STATUS` = `committed` or `failed`, e.g. `docker unpause app`.
    #[serde(default)]
    pub after: Vec<String>,
    /// Commands run after a backup that failed (after the `after` hooks), with `DRCTL_ERROR`.
    #[serde(default)]
    pub on_failure: Vec<String>,
    /// How long one hook command may run before it is killed, e.g. `"2m"` (default 10m).
    pub hook_timeout: Option<String>,
}

/// `storage` of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    Stream,
    Chunked,
}

impl JobCommon {
    /// The job's storage (`stream` when unset; see `storage` for how a loaded config fills it in).
    pub fn storage(&self) -> Storage {
        self.storage.unwrap_or(Storage::Stream)
    }

    /// `hook_timeout` as a duration (default [`super::hooks::DEFAULT_TIMEOUT`]; an unreadable
    /// value was rejected by validation).
    pub fn hook_timeout(&self) -> std::time::Duration {
        self.hook_timeout
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
            .unwrap_or(super::hooks::DEFAULT_TIMEOUT)
    }

    /// The RPO as a duration (default 26 h; an unreadable value was rejected by validation).
    pub fn rpo(&self) -> std::time::Duration {
        self.rpo
            .as_deref()
            .and_then(|r| humantime::parse_duration(r).ok())
            .unwrap_or(std::time::Duration::from_secs(26 * 3600))
    }
}

/// `verify = { … }` on a job.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// When the drill runs (daemon).
    pub schedule: Option<String>,
    /// Queries that must return true after the restore, e.g. `SELECT count(*) > 0 FROM users`.
    #[serde(default)]
    pub checks: Vec<String>,
    /// postgres (and gitlab's database): a scratch server to restore into instead of an ephemeral
    /// cluster, e.g. `postgres://drill@scratch-db:5432/postgres`. A throwaway database
    /// (`drctl_verify_…`) is created there for each drill and dropped afterwards; the role needs
    /// `CREATEDB`. Default: none (an initdb'd cluster in a temporary directory on a free loopback
    /// port, removed after the drill).
    #[serde(default, serialize_with = "crate::redact::serialize_opt_url")]
    pub scratch_url: Option<String>,
    /// vault: a throwaway Vault/OpenBao server to also restore the snapshot into (with
    /// snapshot-force), e.g. `http://127.0.0.1:18201`. It must be able to open with the source
    /// cluster's unseal keys; its token comes from `VAULT_TOKEN`/`BAO_TOKEN`. Default: none (the
    /// drill checks the snapshot's own SHA256SUMS only). Never the job's own `address`.
    pub scratch_address: Option<String>,
    /// vault, with `scratch_address`: API paths read back from the scratch server after the
    /// restore; each must exist, e.g. `["secret/data/app/db", "sys/policies/acl/app"]` (kv-v2:
    /// `<mount>/data/<path>`). The values are never shown. Default: none.
    #[serde(default)]
    pub read_paths: Vec<String>,
    /// vault, with `scratch_address`: a file with the SOURCE cluster's unseal keys, one per line
    /// (after snapshot-force the scratch server seals itself and opens only with them), e.g.
    /// `/secrets/vault-unseal-keys`. Default: none (the scratch server must unseal itself, e.g.
    /// with the source's auto-unseal KMS; the drill waits up to a minute).
    pub unseal_keys_file: Option<PathBuf>,
    /// vault, with `read_paths`: a file holding a token of the SOURCE cluster that may read
    /// `read_paths` (after the restore the scratch server has the source's tokens), e.g.
    /// `/secrets/vault-drill-token`. Default: the job's own `token`/`token_file`, which then need
    /// `read` on those paths.
    pub read_token_file: Option<PathBuf>,
    /// postgres: directory holding `initdb`, `pg_ctl` and `postgres` for the ephemeral cluster
    /// (default: the job's `bin_dir`, else the newest `/usr/lib/postgresql/*/bin`, else `PATH`).
    pub pg_bin_dir: Option<PathBuf>,
    /// The user the ephemeral PostgreSQL cluster runs as when drctl runs as root (initdb refuses
    /// root); default `postgres`.
    pub scratch_user: Option<String>,
    /// A backup whose source size fell by more than this fraction against the median of the job's
    /// recent backups (up to 7) is committed but flagged `suspicious`, e.g. `0.3` (default 0.5: it
    /// lost more than half; `1` disables the size check). An empty backup is always flagged.
    pub suspicious_drop: Option<f64>,
}

impl VerifyConfig {
    /// `suspicious_drop`, within 0..=1 (default 0.5).
    pub fn suspicious_drop(&self) -> f64 {
        self.suspicious_drop.filter(|f| f.is_finite()).map(|f| f.clamp(0.0, 1.0)).unwrap_or(0.5)
    }
}
