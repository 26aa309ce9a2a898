//! `kind = "redis"`: the job's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::exec::ExecConfig;
use crate::jobs::KindSettings;
use crate::redact::Secret;
use std::path::Path;

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

impl KindSettings for RedisJob {
    fn secret_files(&self) -> Vec<(&'static str, Option<&Path>)> {
        vec![
            ("password_file", self.password_file.as_deref()),
            ("sentinel_password_file", self.sentinel_password_file.as_deref()),
        ]
    }
    fn resolve_paths(&mut self, fix: &mut dyn FnMut(&mut PathBuf)) {
        self.password_file.iter_mut().for_each(&mut *fix);
        self.sentinel_password_file.iter_mut().for_each(&mut *fix);
        self.tls_ca_file.iter_mut().for_each(fix);
    }
    fn exec(&self) -> Option<&ExecConfig> {
        Some(&self.exec) // bgsave mode reads dump.rdb where `exec` runs
    }
    fn kubernetes_obstacle(&self) -> Option<String> {
        matches!(self.exec, ExecConfig::Docker(_)).then(|| "it uses `docker exec`".into())
    }
    fn needs_docker(&self) -> bool {
        matches!(self.exec, ExecConfig::Docker(_))
    }
    fn host_path(&self) -> Option<&Path> {
        None
    }
}
