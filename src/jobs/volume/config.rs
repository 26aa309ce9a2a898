//! `kind = "volume"`: the job's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::exec::ExecConfig;

/// `kind = "volume"`: a directory streamed as tar.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeJob {
    /// Host directory (or a Docker volume's mountpoint). One of `path`, `docker_volume`, `pvc`.
    pub path: Option<PathBuf>,
    /// A Docker volume name, resolved to its mountpoint with `docker volume inspect`.
    pub docker_volume: Option<String>,
    /// A Kubernetes PVC, read through `exec` into a pod that mounts it: the path inside the pod.
    pub pvc_path: Option<PathBuf>,
    /// Glob patterns (relative to the root) left out of the backup.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Commands (`sh -c`) run before the backup, e.g. `docker pause app` or `fsfreeze -f /data`.
    #[serde(default)]
    pub before: Vec<String>,
    /// Commands run after the backup, always, even when it failed.
    #[serde(default)]
    pub after: Vec<String>,
    #[serde(default)]
    pub exec: ExecConfig,
}
