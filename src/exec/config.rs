//! `exec = …` on a job: where its commands run.

use serde::{Deserialize, Serialize};

/// Where a job's commands run: `exec = "local"` (default), `exec = { docker = "container" }`
/// (`docker exec -i`, as on a Swarm node with the engine socket mounted) or
/// `exec = { kubernetes = { namespace = "…", pod = "…" | selector = "app=…", container = "…" } }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ExecConfig {
    #[default]
    Local,
    Docker(String),
    Kubernetes(KubernetesExec),
}

/// A pod to exec into.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesExec {
    /// Namespace (default `default`).
    pub namespace: Option<String>,
    /// Pod name; or
    pub pod: Option<String>,
    /// a label selector (`app=toolbox`): the first running pod that matches.
    pub selector: Option<String>,
    /// Container (default: the pod's first).
    pub container: Option<String>,
}
