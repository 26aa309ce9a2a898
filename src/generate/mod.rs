//! `drctl generate kubernetes|swarm`: deployment manifests rendered from the same config the jobs
//! run with, so the schedule, the secrets a job reads and the namespaces it execs into are written
//! once (in drctl.toml) and cannot drift from what is deployed.
//!
//! Least privilege is derived, not hand-written: a backup workload mounts only the secret files its
//! job and targets name (`*_file` settings) and never the age identity; only drill (verify)
//! workloads and the daemon get the identity. The Kubernetes Role grants exactly `get`/`list` on
//! pods and `create` on `pods/exec`, and only in namespaces a job execs into.

pub mod kubernetes;
pub mod swarm;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::config::{Config, ExecConfig, JobConfig, JobSpec};

/// The config files as written, for the ConfigMap / swarm configs.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `drctl.toml`'s text.
    pub main: String,
    /// `jobs/NAME.toml` files: (file name, text).
    pub jobs: Vec<(String, String)>,
}

impl Sources {
    /// Read the config file and the `jobs/*.toml` beside it, as `config::load` does.
    pub fn read(path: &Path) -> crate::Result<Sources> {
        let main = std::fs::read_to_string(path)
            .map_err(|source| crate::Error::ReadFile { path: path.to_path_buf(), source })?;
        let jobs = crate::config::read_job_files(path)?
            .into_iter()
            .map(|(p, text)| (p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), text))
            .collect();
        Ok(Sources { main, jobs })
    }
}

/// Options of `drctl generate`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Kubernetes namespace drctl runs in.
    pub namespace: String,
    /// Container image.
    pub image: String,
    /// Also render the daemon (Kubernetes: a Deployment + Service; swarm always runs the daemon).
    pub daemon: bool,
}

/// Where the config is mounted in containers.
pub const CONFIG_DIR: &str = "/etc/drctl";
/// Writable state (catalog) inside containers.
pub const STATE_DIR: &str = "/var/lib/drctl";
/// The non-root user of the image (deploy/Dockerfile).
pub const UID: u32 = 65532;

/// A secret file a workload reads: where, and the key it has in the secret store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretFile {
    pub key: String,
    pub path: String,
}

/// Every `*_file` path (a file drctl itself reads) in a serialized config section. `version_file`
/// and `secrets_files` of gitlab jobs are read where `exec` runs, not by drctl: not mounted.
fn file_settings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::String(s) if k.ends_with("_file") && k != "version_file" && s.starts_with('/') => {
                        out.push(s.clone())
                    }
                    Value::Object(_) => file_settings(v, out),
                    _ => {}
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| file_settings(v, out)),
        _ => {}
    }
}

/// Secret-store keys for file paths: the file name, made unique and key-safe.
pub fn secret_keys(config: &Config) -> BTreeMap<String, String> {
    let mut paths: Vec<String> = Vec::new();
    for t in config.targets.values() {
        file_settings(&serde_json::to_value(&t.kind).unwrap_or(Value::Null), &mut paths);
    }
    for j in config.jobs.values() {
        file_settings(&serde_json::to_value(&j.spec).unwrap_or(Value::Null), &mut paths);
        file_settings(&serde_json::to_value(&j.common.verify).unwrap_or(Value::Null), &mut paths);
    }
    if let Some(api) = &config.api
        && let Some(t) = &api.token_file
    {
        paths.push(t.display().to_string());
    }
    paths.sort();
    paths.dedup();
    let mut keys = BTreeMap::new();
    let mut used = std::collections::BTreeSet::new();
    for p in paths {
        let base: String = Path::new(&p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' })
            .collect();
        let mut key = base.clone();
        let mut n = 2;
        while !used.insert(key.clone()) {
            key = format!("{base}-{n}");
            n += 1;
        }
        keys.insert(p, key);
    }
    keys
}

/// The secret files one job's workload reads: its own `*_file` settings and its targets'; for a
/// drill (`drill = true`) also its `verify` files (a scratch server's unseal keys, a read token),
/// which a backup workload never gets.
pub fn job_secrets(config: &Config, job: &JobConfig, drill: bool) -> Vec<SecretFile> {
    let keys = secret_keys(config);
    let mut paths = Vec::new();
    file_settings(&serde_json::to_value(&job.spec).unwrap_or(Value::Null), &mut paths);
    if drill {
        file_settings(&serde_json::to_value(&job.common.verify).unwrap_or(Value::Null), &mut paths);
    }
    for t in &job.common.targets {
        if let Some(t) = config.targets.get(t) {
            file_settings(&serde_json::to_value(&t.kind).unwrap_or(Value::Null), &mut paths);
        }
    }
    let mut out: Vec<SecretFile> =
        paths.into_iter().filter_map(|p| keys.get(&p).map(|k| SecretFile { key: k.clone(), path: p })).collect();
    out.sort();
    out.dedup();
    out
}

/// Every secret file any workload reads.
pub fn all_secrets(config: &Config) -> Vec<SecretFile> {
    secret_keys(config).into_iter().map(|(path, key)| SecretFile { key, path }).collect()
}

/// The age identity file, if configured.
pub fn identity_path(config: &Config) -> Option<String> {
    config.encryption.identity_file.as_ref().map(|p| p.display().to_string())
}

/// Why a job cannot run in a Kubernetes pod, if it cannot.
pub fn kubernetes_obstacle(job: &JobConfig) -> Option<String> {
    let docker = |e: &ExecConfig| matches!(e, ExecConfig::Docker(_));
    match &job.spec {
        JobSpec::Redis(r) if docker(&r.exec) => Some("it uses `docker exec`".into()),
        JobSpec::Gitlab(g) if docker(&g.exec) => Some("it uses `docker exec`".into()),
        JobSpec::Gitlab(g) if g.exec == ExecConfig::Local => {
            Some("it runs `gitlab-backup` locally (use `exec = { kubernetes = … }`)".into())
        }
        JobSpec::Volume(v) if v.docker_volume.is_some() => Some("it reads a Docker volume".into()),
        JobSpec::Postgres(_) | JobSpec::Redis(_) | JobSpec::Volume(_) | JobSpec::Vault(_) | JobSpec::Gitlab(_) => None,
    }
}

/// Whether a job needs the Docker engine socket (swarm).
pub fn needs_docker(job: &JobConfig) -> bool {
    match &job.spec {
        JobSpec::Redis(r) => matches!(r.exec, ExecConfig::Docker(_)),
        JobSpec::Gitlab(g) => matches!(g.exec, ExecConfig::Docker(_)),
        JobSpec::Volume(v) => v.docker_volume.is_some(),
        JobSpec::Postgres(_) | JobSpec::Vault(_) => false,
    }
}

/// Namespaces a job execs into (`None` namespace = drctl's own).
pub fn exec_namespaces(job: &JobConfig, own: &str) -> Vec<String> {
    let exec = match &job.spec {
        JobSpec::Redis(r) => &r.exec,
        JobSpec::Gitlab(g) => &g.exec,
        JobSpec::Volume(v) => &v.exec,
        JobSpec::Postgres(_) | JobSpec::Vault(_) => return Vec::new(),
    };
    match exec {
        ExecConfig::Kubernetes(k) => vec![k.namespace.clone().unwrap_or_else(|| own.to_string())],
        ExecConfig::Local | ExecConfig::Docker(_) => Vec::new(),
    }
}

/// The host directory a `path` volume job reads (mounted read-only into its workload).
pub fn host_path(job: &JobConfig) -> Option<String> {
    match &job.spec {
        JobSpec::Volume(v) if v.pvc_path.is_none() => v.path.as_ref().map(|p| p.display().to_string()),
        _ => None,
    }
}

/// A name usable in Kubernetes object names and swarm keys: lowercase, `-` for anything else.
pub fn dns_name(s: &str) -> String {
    let mut out: String =
        s.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    out = out.trim_matches('-').to_string();
    out.truncate(40);
    out
}

/// The daemon's HTTP port, from `[api] listen` (as the daemon reads it).
pub fn api_port(config: &Config) -> u16 {
    crate::api::listen_addr(config).rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(8080)
}

/// Documents joined as a YAML stream.
pub fn stream(header: &str, docs: &[Value]) -> String {
    let mut out = String::from(header);
    for d in docs {
        out.push_str("---\n");
        out.push_str(&yaml::to_yaml(d));
    }
    out
}
