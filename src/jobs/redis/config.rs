//! `kind = "redis"`: the job's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::exec::ExecConfig;
use crate::redact::Secret;

/// `kind = "redis"`: an RDB snapshot over the replication protocol (or BGSAVE + reading dump.rdb).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisJob {
    /// `redis://[user[:password]@]host:port` (`rediss://` for TLS). Not needed with `sentinel`.
    #[serde(default, serialize_with = "crate::redact::serialize_opt_url")]
    pub url: Option<String>,
    /// ACL user (default: none, or the URL's).
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// Sentinel addresses (`host:port`): the backup is taken from a healthy replica when one
    /// exists, else the master.
    #[serde(default)]
    pub sentinel: Vec<String>,
    /// The master's name at the sentinels.
    pub master_name: Option<String>,
    pub sentinel_password: Option<Secret>,
    pub sentinel_password_file: Option<PathBuf>,
    /// CA bundle for TLS (`rediss://`).
    pub tls_ca_file: Option<PathBuf>,
    /// Use TLS without a `rediss://` URL (with `sentinel`: for the sentinels and the servers).
    #[serde(default)]
    pub tls: bool,
    /// Client certificate and key (PEM) for servers with `tls-auth-clients yes` (Redis' default
    /// when TLS is on).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// `replication` (default): fetch the RDB like a replica does, no access to the server's disk
    /// needed. `bgsave`: BGSAVE, wait for it, read `dump.rdb` through `exec`.
    #[serde(default)]
    pub mode: RedisMode,
    /// `bgsave` mode: path of dump.rdb where `exec` runs (default: from CONFIG GET dir/dbfilename).
    pub rdb_path: Option<PathBuf>,
    #[serde(default)]
    pub exec: ExecConfig,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    #[default]
    Replication,
    Bgsave,
}
