//! `kind = "vault"`: the job's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::exec::ExecConfig;
use crate::jobs::KindSettings;
use crate::redact::Secret;
use std::path::Path;

/// `kind = "vault"`: a Vault/OpenBao raft snapshot.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VaultJob {
    /// e.g. `https://vault:8200`.
    pub address: String,
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    /// AppRole login instead of a token.
    pub role_id: Option<String>,
    pub secret_id: Option<Secret>,
    pub secret_id_file: Option<PathBuf>,
    /// Where the AppRole auth method is mounted (default `approle`).
    pub approle_mount: Option<String>,
    /// CA bundle for the server's TLS certificate.
    pub ca_file: Option<PathBuf>,
}

impl KindSettings for VaultJob {
    fn secret_files(&self) -> Vec<(&'static str, Option<&Path>)> {
        vec![("token_file", self.token_file.as_deref()), ("secret_id_file", self.secret_id_file.as_deref())]
    }
    fn resolve_paths(&mut self, fix: &mut dyn FnMut(&mut PathBuf)) {
        self.token_file.iter_mut().for_each(&mut *fix);
        self.secret_id_file.iter_mut().for_each(&mut *fix);
        self.ca_file.iter_mut().for_each(fix);
    }
    fn exec(&self) -> Option<&ExecConfig> {
        None // the HTTP API
    }
    fn kubernetes_obstacle(&self) -> Option<String> {
        None
    }
    fn needs_docker(&self) -> bool {
        false
    }
    fn host_path(&self) -> Option<&Path> {
        None
    }
}
