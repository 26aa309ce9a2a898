//! `kind = "volume"`: the job's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::exec::ExecConfig;
use crate::jobs::KindSettings;
use std::path::Path;

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
    #[serde(default)]
    pub exec: ExecConfig,
}

impl KindSettings for VolumeJob {
    fn secret_files(&self) -> Vec<(&'static str, Option<&Path>)> {
        Vec::new()
    }
    // `path` may name a directory inside a container or pod: never resolved against the config
    fn resolve_paths(&mut self, _fix: &mut dyn FnMut(&mut PathBuf)) {}
    fn exec(&self) -> Option<&ExecConfig> {
        Some(&self.exec) // `pvc_path` is read through a pod
    }
    fn kubernetes_obstacle(&self) -> Option<String> {
        self.docker_volume.is_some().then(|| "it reads a Docker volume".into())
    }
    fn needs_docker(&self) -> bool {
        self.docker_volume.is_some()
    }
    fn host_path(&self) -> Option<&Path> {
        self.path.as_deref().filter(|_| self.pvc_path.is_none())
    }
}
