//! `drctl generate kubernetes|swarm`: deployment manifests rendered from the same config the jobs
//! run with, so the schedule, the secrets a job reads and the namespaces it execs into are written
//! once (in drctl.toml) and cannot drift from what is deployed.
//!
//! Least privilege is derived, not hand-written: a backup workload mounts only the secret files its
//! job and targets name (`*_file` settings) and never the age identity; only drill (verify)
//! workloads and the daemon get the identity. The Kubernetes Role grants exactly `get`/`list` on
//! pods and `create` on `pods/exec`, and only in namespaces a job execs into.
//!
//! Durability is derived too, and refused when it cannot be: every `fs` target's `path` and the
//! SQLite catalog are mounted from the storage `[deploy]` names ([`DurablePaths`]); a target with
//! none configured stops the render (exit 2) instead of rendering a workload whose committed backups
//! would vanish with its container. With SQLite each workload (each CronJob, the daemon) gets its
//! own catalog, so no two pods ever open one SQLite file (a `ReadWriteOnce` claim shared by
//! CronJobs with `concurrencyPolicy: Forbid` each still lets two different jobs overlap, and
//! SQLite's locks do not hold over network filesystems). The targets stay the source of truth:
//! prune and drills judge what the targets hold, so a fresh catalog loses no backup; for one
//! shared history (suspicious baselines, drill records seen by prune) use a PostgreSQL catalog.

pub mod helm;
pub mod kubernetes;
pub mod swarm;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::config::{Config, DeployStorage, Problem, Severity};
use crate::exec::ExecConfig;
use crate::jobs::JobConfig;

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

/// Where durable data of a generated workload lives, from `[deploy]` and `[catalog]`: checked
/// once, before anything is rendered.
#[derive(Debug, Clone)]
pub struct DurablePaths {
    /// `fs` target name -> (its `path` in the container, its storage).
    pub targets: BTreeMap<String, (String, DeployStorage)>,
    /// The SQLite catalog's directory in the container and its storage; `None` with PostgreSQL.
    pub catalog: Option<(String, DeployStorage)>,
}

/// The default catalog claim: small, the default storage class.
pub const CATALOG_SIZE: &str = "1Gi";

impl DurablePaths {
    /// The storage of every `fs` target `jobs` write to and of the catalog, or a configuration
    /// error (exit 2) per target without storage, naming the target, its path and the option.
    pub fn plan<'a>(config: &Config, jobs: impl IntoIterator<Item = &'a JobConfig>) -> crate::Result<DurablePaths> {
        let mut targets = BTreeMap::new();
        let mut problems = Vec::new();
        let mut refused = std::collections::BTreeSet::new();
        for job in jobs {
            for name in &job.common.targets {
                let Some(t) = config.targets.get(name) else { continue };
                let Some(local) = t.kind.settings().local_path() else { continue };
                let path = local.display().to_string();
                match config.deploy.targets.get(name) {
                    Some(s) if s.size.is_some() || s.host_path.is_some() => {
                        targets.insert(name.clone(), (path, s.clone()));
                    }
                    _ if !refused.insert(name.clone()) => {}
                    _ => problems.push(Problem {
                        severity: Severity::Error,
                        file: config.path.clone(),
                        line: None,
                        path: format!("deploy.targets.{name}"),
                        message: format!(
                            "fs target `{name}` writes to `{path}`, which would be inside the container: its backups would vanish with the pod"
                        ),
                        hint: Some(format!(
                            "say where `{path}` is kept: `[deploy.targets.{name}]` with `size = \"50Gi\"` (a PersistentVolumeClaim, add `storage_class = \"…\"` for a ReadWriteMany class) or `host_path = \"/srv/drctl/{name}\"` (a node directory)"
                        )),
                    }),
                }
            }
        }
        if !problems.is_empty() {
            return Err(crate::Error::Config(problems));
        }
        let catalog = catalog_dir(config).map(|dir| {
            let storage = config.deploy.catalog.clone().unwrap_or_default();
            let storage = if storage.size.is_none() && storage.host_path.is_none() {
                DeployStorage { size: Some(CATALOG_SIZE.into()), ..storage }
            } else {
                storage
            };
            (dir, storage)
        });
        Ok(DurablePaths { targets, catalog })
    }

    /// Whether some storage is a node directory (the workloads must be pinned to its node).
    pub fn host_local(&self) -> bool {
        self.targets
            .values()
            .map(|(_, s)| s)
            .chain(self.catalog.as_ref().map(|(_, s)| s))
            .any(|s| s.host_path.is_some())
    }
}

/// The directory of the SQLite catalog in a container (`None`: a PostgreSQL catalog).
pub fn catalog_dir(config: &Config) -> Option<String> {
    match config.catalog.url.as_deref() {
        None => Some(STATE_DIR.to_string()),
        Some(u) if u.starts_with("postgres:") || u.starts_with("postgresql:") => None,
        Some(u) => {
            let file = u.trim_start_matches("sqlite:").trim_start_matches("//");
            let file = file.split('?').next().unwrap_or(file);
            Some(
                Path::new(file)
                    .parent()
                    .map(|p| p.display().to_string())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| STATE_DIR.into()),
            )
        }
    }
}

/// Refuse a loopback `[api] listen` for a rendered daemon: the kubelet's probes, the Service and
/// Swarm's published port reach the pod's own address, never its loopback, so the daemon would
/// be restarted forever by its liveness probe and unreachable from the Service.
pub fn check_listen(config: &Config) -> crate::Result<()> {
    let listen = crate::api::listen_addr(config);
    let host = listen.rsplit_once(':').map(|(h, _)| h).unwrap_or(&listen).trim_matches(['[', ']']);
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Ok(());
    }
    Err(crate::Error::Config(vec![Problem {
        severity: Severity::Error,
        file: config.path.clone(),
        line: None,
        path: "api.listen".into(),
        message: format!(
            "`{listen}` is a loopback address: in a pod or a Swarm task the health probes, the Service and the published port cannot reach it"
        ),
        hint: Some(format!(
            "set `listen = \"0.0.0.0:{}\"` in `[api]` (the container network is the boundary; POST endpoints need the `token_file` token), or render without the daemon",
            api_port(config)
        )),
    }]))
}

/// Options of `drctl generate`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Kubernetes namespace drctl runs in.
    pub namespace: String,
    /// Container image.
    pub image: String,
    /// Render the daemon (Kubernetes: a Deployment + Service *instead of* the CronJobs, so that no
    /// job runs twice; swarm always runs the daemon).
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
    paths.extend(config.encryption.chunk_key_file.iter().map(|p| p.display().to_string()));
    for c in config.notify.values() {
        paths.extend(notify_files(c));
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

/// The files of a `[notify.NAME]` channel (its URL and token).
fn notify_files(c: &crate::notify::ChannelConfig) -> impl Iterator<Item = String> + '_ {
    c.url_file.iter().chain(c.token_file.iter()).map(|p| p.display().to_string())
}

/// The secret files one job's workload reads: its own `*_file` settings and its targets', the
/// files of the notification channels that report on it, and for a chunked backup the chunk key;
/// for a drill (`drill = true`) also its `verify` files (a scratch server's unseal keys, a read
/// token), which a backup workload never gets (nor the chunk key: restores do not need it).
pub fn job_secrets(config: &Config, job: &JobConfig, drill: bool) -> Vec<SecretFile> {
    let keys = secret_keys(config);
    let mut paths = Vec::new();
    file_settings(&serde_json::to_value(&job.spec).unwrap_or(Value::Null), &mut paths);
    if drill {
        file_settings(&serde_json::to_value(&job.common.verify).unwrap_or(Value::Null), &mut paths);
    } else if job.common.storage() == crate::jobs::Storage::Chunked {
        paths.extend(config.encryption.chunk_key_file.iter().map(|p| p.display().to_string()));
    }
    for c in config.notify.values().filter(|c| c.jobs.is_empty() || c.jobs.contains(&job.name)) {
        paths.extend(notify_files(c));
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
    job.spec.settings().kubernetes_obstacle()
}

/// Whether a job needs the Docker engine socket (swarm).
pub fn needs_docker(job: &JobConfig) -> bool {
    job.spec.settings().needs_docker()
}

/// Namespaces a job execs into (`own`: drctl's own, for a pod exec without a namespace).
pub fn exec_namespaces(job: &JobConfig, own: &str) -> Vec<String> {
    match job.spec.settings().exec() {
        Some(ExecConfig::Kubernetes(k)) => vec![k.namespace.clone().unwrap_or_else(|| own.to_string())],
        Some(ExecConfig::Local | ExecConfig::Docker(_)) | None => Vec::new(),
    }
}

/// The host directory a `path` volume job reads (mounted read-only into its workload).
pub fn host_path(job: &JobConfig) -> Option<String> {
    job.spec.settings().host_path().map(|p| p.display().to_string())
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

/// Whether `job` is a physical PostgreSQL job (it needs a WAL receiver running beside its base
/// backups: the daemon runs one itself, CronJob mode renders a Deployment for it).
pub(crate) fn is_physical(job: &crate::jobs::JobConfig) -> bool {
    matches!(&job.spec, crate::jobs::JobSpec::Postgres(pg) if pg.method == crate::jobs::postgres::Method::Physical)
}

/// What the drills of physical PostgreSQL jobs need from the image, one note per such job with a
/// drill: a server of the source's major version (the image ships client tools only).
pub(crate) fn physical_drill_notes(config: &Config) -> Vec<String> {
    config
        .jobs
        .values()
        .filter(|j| is_physical(j) && j.common.verify.is_some())
        .map(|j| {
            format!(
                "the drill of physical job `{}` replays WAL in a PostgreSQL server of the source's major version: build \
                 the image with it (e.g. `FROM <this image>` + `apt-get install postgresql-<major>`, from PGDG) and set \
                 `verify.pg_bin_dir` to its bin directory, or the drill fails saying which version is missing",
                j.name
            )
        })
        .collect()
}
