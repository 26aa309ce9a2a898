//! `kind = "vault"`: the job's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::redact::Secret;

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
