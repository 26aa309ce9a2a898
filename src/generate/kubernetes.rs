//! Kubernetes manifests: a ConfigMap with the config, a CronJob per backup schedule (`run JOB
//! --prune`: retention after every fully committed run, as the daemon does) and per drill
//! schedule, RBAC for pod exec; or, with `--daemon`, the daemon as a Deployment with a Service
//! *instead of* the CronJobs (both would run every job twice). Every `fs` target and the SQLite
//! catalog are mounted from durable storage (see [`super::DurablePaths`]).

use serde_json::{Value, json};

use super::{
    CONFIG_DIR, DurablePaths, Options, STATE_DIR, SecretFile, Sources, UID, all_secrets, dns_name, exec_namespaces,
    host_path, identity_path, job_secrets, kubernetes_obstacle, stream,
};
use crate::config::{Config, DeployStorage};
use crate::jobs::JobConfig;

const CONFIGMAP: &str = "drctl-config";
/// The Secret with the config's secret files (created by the user; the chart's `secrets.existingSecret`).
pub const SECRETS: &str = "drctl-secrets";
/// The Secret with the age identity, for drills and the daemon only.
pub const IDENTITY: &str = "drctl-age-identity";
const ACCOUNT: &str = "drctl";
/// A run that cannot start within this long after its slot is skipped (and the alerts notice).
const STARTING_DEADLINE: u64 = 600;
/// The longest a backup or a drill may run before Kubernetes stops it.
const ACTIVE_DEADLINE: u64 = 6 * 3600;

/// Render every manifest as a YAML stream; the second value lists jobs left out and why. A
/// configuration error (exit 2) when an `fs` target has no durable storage in `[deploy]` or the
/// daemon would listen on loopback.
pub fn render(config: &Config, sources: &Sources, opts: &Options) -> crate::Result<(String, Vec<String>)> {
    let (docs, skipped) = documents(config, sources, opts)?;
    let durable = DurablePaths::plan(config, rendered_jobs(config))?;
    Ok((stream(&header(config, opts, &skipped, &durable), &docs), skipped))
}

/// The jobs that can run in a pod.
fn rendered_jobs(config: &Config) -> impl Iterator<Item = &JobConfig> {
    config.jobs.values().filter(|j| kubernetes_obstacle(j).is_none())
}

/// Every manifest as a JSON value (what [`render`] writes as YAML), and the jobs left out.
pub fn documents(config: &Config, sources: &Sources, opts: &Options) -> crate::Result<(Vec<Value>, Vec<String>)> {
    if opts.daemon {
        super::check_listen(config)?;
    }
    let durable = DurablePaths::plan(config, rendered_jobs(config))?;
    let ns = opts.namespace.as_str();
    let mut docs = vec![configmap(sources, ns)];
    for (name, (_, storage)) in &durable.targets {
        if let Some(size) = &storage.size {
            // several jobs' backup, drill and restore pods use one target: ReadWriteMany
            docs.push(claim(&target_claim(name), ns, size, storage, "ReadWriteMany"));
        }
    }
    let mut skipped = Vec::new();
    let mut exec_ns: Vec<String> = Vec::new();
    for job in config.jobs.values() {
        if let Some(why) = kubernetes_obstacle(job) {
            skipped.push(format!("job `{}` is not scheduled in Kubernetes: {why}", job.name));
            continue;
        }
        exec_ns.extend(exec_namespaces(job, ns));
        if opts.daemon {
            continue; // the daemon schedules every job itself
        }
        if let Some(schedule) = &job.common.schedule {
            docs.extend(cronjob(config, job, opts, sources, &durable, "backup", schedule));
        }
        if let Some(schedule) = job.common.verify.as_ref().and_then(|v| v.schedule.as_ref()) {
            docs.extend(cronjob(config, job, opts, sources, &durable, "verify", schedule));
        }
        if super::is_physical(job) {
            docs.extend(wal_receiver(config, job, opts, sources, &durable));
        }
    }
    exec_ns.sort();
    exec_ns.dedup();
    docs.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": meta(ACCOUNT, ns), "automountServiceAccountToken": !exec_ns.is_empty()}));
    for target_ns in &exec_ns {
        docs.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": meta("drctl-exec", target_ns),
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
        ]}));
        docs.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": meta("drctl-exec", target_ns),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "drctl-exec"},
            "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": ns}]}));
    }
    if opts.daemon {
        docs.extend(daemon(config, opts, sources, &durable, !exec_ns.is_empty()));
    }
    Ok((docs, skipped))
}

/// The claim of `fs` target `name`.
fn target_claim(name: &str) -> String {
    format!("drctl-target-{}", dns_name(name))
}

/// A PersistentVolumeClaim.
fn claim(name: &str, ns: &str, size: &str, storage: &DeployStorage, mode: &str) -> Value {
    let mut spec = json!({"accessModes": [mode], "resources": {"requests": {"storage": size}}});
    if let Some(class) = &storage.storage_class {
        spec["storageClassName"] = Value::String(class.clone());
    }
    let mut m = meta(name, ns);
    // `kubectl delete -f` of the manifests must not take the backups with it
    m["annotations"] = json!({"helm.sh/resource-policy": "keep"});
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": m, "spec": spec})
}

fn header(config: &Config, opts: &Options, skipped: &[String], durable: &DurablePaths) -> String {
    let mut h =
        String::from("# Rendered by `drctl generate kubernetes` from drctl.toml: edit the config and render again.\n");
    h.push_str(if opts.daemon {
        "# Daemon mode: one Deployment schedules every job, prunes after each committed backup and runs the drills.\n"
    } else {
        "# CronJob mode: `drctl run JOB --prune` per backup schedule (retention after a fully committed run),\n\
         # `drctl verify JOB` per drill schedule.\n"
    });
    for (name, (path, s)) in &durable.targets {
        match &s.host_path {
            Some(hp) => h.push_str(&format!(
                "# fs target `{name}`: `{path}` is node directory `{}` (create it owned by {UID}:{UID}; pods run on nodes labelled drctl.storage=true).\n",
                hp.display()
            )),
            None => h.push_str(&format!(
                "# fs target `{name}`: `{path}` is claim `{}` (ReadWriteMany, kept on delete).\n",
                target_claim(name)
            )),
        }
    }
    match &durable.catalog {
        Some((dir, s)) => {
            let kind = match &s.host_path {
                Some(hp) => format!(
                    "a directory per workload under node directory `{}` (create each, owned by {UID}:{UID})",
                    hp.display()
                ),
                None => "its own ReadWriteOnce claim per workload".to_string(),
            };
            h.push_str(&format!(
                "# SQLite catalog `{dir}`: {kind}, so no two pods open one SQLite file. The targets are the source of\n\
                 # truth: prune and drills judge what they hold; for one shared history use a PostgreSQL [catalog] url.\n"
            ));
        }
        None => h.push_str("# Catalog: PostgreSQL, shared by every workload (safe with concurrent runs).\n"),
    }
    h.push_str(&format!("# Namespace `{}`. Create the secrets first:\n", opts.namespace));
    let files = all_secrets(config);
    if !files.is_empty() {
        h.push_str(&format!("#   kubectl -n {} create secret generic {SECRETS}", opts.namespace));
        for f in &files {
            h.push_str(&format!(" \\\n#     --from-file={}=./{}", f.key, f.key));
        }
        h.push('\n');
    }
    if identity_path(config).is_some() {
        h.push_str(&format!(
            "#   kubectl -n {} create secret generic {IDENTITY} --from-file=age.key=./age.key   # drills and the daemon only\n",
            opts.namespace
        ));
    }
    for s in skipped {
        h.push_str(&format!("# Not rendered: {s}\n"));
    }
    for n in super::physical_drill_notes(config) {
        h.push_str(&format!("# Note: {n}\n"));
    }
    h
}

fn meta(name: &str, ns: &str) -> Value {
    json!({"name": name, "namespace": ns, "labels": {"app.kubernetes.io/name": "drctl"}})
}

fn configmap(sources: &Sources, ns: &str) -> Value {
    let mut data = serde_json::Map::new();
    data.insert("drctl.toml".into(), Value::String(sources.main.clone()));
    for (file, text) in &sources.jobs {
        data.insert(format!("job-{file}"), Value::String(text.clone()));
    }
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(CONFIGMAP, ns), "data": data})
}

/// What one workload mounts besides config and secrets: the host paths it reads, the `fs`
/// targets it writes, and its catalog (claim or node directory named after the workload).
struct Mounts<'a> {
    hosts: Vec<String>,
    targets: Vec<String>,
    durable: &'a DurablePaths,
    workload: String,
}

/// Volumes and mounts of one workload: config, state, tmp, its secret files, the identity if
/// asked, durable storage; and the catalog claim it needs rendered, if any.
fn storage(
    sources: &[(String, String)],
    secrets: &[SecretFile],
    identity: Option<&str>,
    m: &Mounts,
) -> (Value, Value, Option<(String, String)>, bool) {
    let mut items = vec![json!({"key": "drctl.toml", "path": "drctl.toml"})];
    for (file, _) in sources {
        items.push(json!({"key": format!("job-{file}"), "path": format!("jobs/{file}")}));
    }
    let mut volumes = vec![
        json!({"name": "config", "configMap": {"name": CONFIGMAP, "items": items}}),
        json!({"name": "tmp", "emptyDir": {}}),
    ];
    let mut mounts = vec![
        json!({"name": "config", "mountPath": CONFIG_DIR, "readOnly": true}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
    let mut claim_doc = None;
    let mut pinned = false;
    match &m.durable.catalog {
        Some((dir, s)) => {
            match (&s.host_path, &s.size) {
                (Some(hp), _) => {
                    pinned = true;
                    let path = format!("{}/{}", hp.display(), m.workload);
                    volumes.push(json!({"name": "catalog", "hostPath": {"path": path, "type": "Directory"}}));
                }
                (None, size) => {
                    let name = format!("drctl-catalog-{}", m.workload);
                    let size = size.clone().unwrap_or_else(|| super::CATALOG_SIZE.into());
                    claim_doc = Some((name.clone(), size));
                    volumes.push(json!({"name": "catalog", "persistentVolumeClaim": {"claimName": name}}));
                }
            }
            mounts.push(json!({"name": "catalog", "mountPath": dir}));
            if dir != STATE_DIR {
                volumes.push(json!({"name": "state", "emptyDir": {}}));
                mounts.push(json!({"name": "state", "mountPath": STATE_DIR}));
            }
        }
        None => {
            volumes.push(json!({"name": "state", "emptyDir": {}}));
            mounts.push(json!({"name": "state", "mountPath": STATE_DIR}));
        }
    }
    for name in &m.targets {
        let Some((path, s)) = m.durable.targets.get(name) else { continue };
        let vol = format!("target-{}", dns_name(name));
        match &s.host_path {
            Some(hp) => {
                pinned = true;
                volumes.push(json!({"name": vol, "hostPath": {"path": hp.display().to_string(), "type": "Directory"}}));
            }
            None => volumes.push(json!({"name": vol, "persistentVolumeClaim": {"claimName": target_claim(name)}})),
        }
        mounts.push(json!({"name": vol, "mountPath": path}));
    }
    if !secrets.is_empty() {
        let items: Vec<Value> = secrets.iter().map(|s| json!({"key": s.key, "path": s.key})).collect();
        volumes
            .push(json!({"name": "secrets", "secret": {"secretName": SECRETS, "items": items, "defaultMode": 0o440}}));
        for s in secrets {
            mounts.push(json!({"name": "secrets", "mountPath": s.path, "subPath": s.key, "readOnly": true}));
        }
    }
    if let Some(path) = identity {
        volumes.push(json!({"name": "age-identity", "secret": {"secretName": IDENTITY, "defaultMode": 0o440}}));
        mounts.push(json!({"name": "age-identity", "mountPath": path, "subPath": "age.key", "readOnly": true}));
    }
    for (i, path) in m.hosts.iter().enumerate() {
        // a volume job's source: read-only (a restore into it is `drctl restore` on the host)
        let vol = if i == 0 { "source".to_string() } else { format!("source-{i}") };
        volumes.push(json!({"name": vol, "hostPath": {"path": path, "type": "Directory"}}));
        mounts.push(json!({"name": vol, "mountPath": path, "readOnly": true}));
    }
    (Value::Array(volumes), Value::Array(mounts), claim_doc, pinned)
}

fn container(opts: &Options, args: &[&str], mounts: Value) -> Value {
    let mut full = vec!["--config".to_string(), format!("{CONFIG_DIR}/drctl.toml")];
    full.extend(args.iter().map(|a| a.to_string()));
    json!({
        "name": "drctl",
        "image": opts.image,
        "args": full,
        // the default catalog is `$DRCTL_STATE_DIR/catalog.db`: without it a non-root drctl
        // keeps it under $HOME (/tmp, thrown away with the pod) instead of the durable STATE_DIR
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "DRCTL_STATE_DIR", "value": STATE_DIR}],
        "resources": default_resources(),
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    })
}

/// Requests and limits of every drctl container: streaming keeps memory bounded whatever the
/// backup's size (the chart's `resources` default).
pub fn default_resources() -> Value {
    json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}})
}

fn pod_security() -> Value {
    json!({"runAsNonRoot": true, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"}})
}

/// The pod-level settings shared by CronJobs and the daemon: a node selector where storage is a
/// node directory, and the catalog claim a workload needs.
fn place(pod: &mut Value, pinned: bool) {
    if pinned {
        pod["nodeSelector"] = json!({"drctl.storage": "true"});
    }
}

fn catalog_claim(durable: &DurablePaths, ns: &str, claim: Option<(String, String)>) -> Option<Value> {
    let storage = durable.catalog.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
    claim.map(|(name, size)| self::claim(&name, ns, &size, &storage, "ReadWriteOnce"))
}

/// The CronJob of one job's backups (`what = "backup"`) or drills (`"verify"`), and its catalog
/// claim.
fn cronjob(
    config: &Config,
    job: &JobConfig,
    opts: &Options,
    files: &Sources,
    durable: &DurablePaths,
    what: &str,
    schedule: &str,
) -> Vec<Value> {
    let args: Vec<&str> =
        if what == "verify" { vec!["verify", job.name.as_str()] } else { vec!["run", job.name.as_str(), "--prune"] };
    // backups get the recipients only (in the config); the identity is for drills
    let identity = if what == "verify" { identity_path(config) } else { None };
    let name = format!("drctl-{}-{what}", dns_name(&job.name));
    let mounts = Mounts {
        hosts: host_path(job).into_iter().collect(),
        targets: job.common.targets.clone(),
        durable,
        workload: format!("{}-{what}", dns_name(&job.name)),
    };
    let (volumes, mounts, claim, pinned) =
        storage(&files.jobs, &job_secrets(config, job, what == "verify"), identity.as_deref(), &mounts);
    let mut pod = json!({
        "serviceAccountName": ACCOUNT,
        "restartPolicy": "Never",
        "securityContext": pod_security(),
        "containers": [container(opts, &args, mounts)],
        "volumes": volumes,
    });
    place(&mut pod, pinned);
    let mut spec = json!({
        "schedule": schedule,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": STARTING_DEADLINE,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 5,
        "jobTemplate": {"spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": ACTIVE_DEADLINE,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "drctl", "drctl/job": dns_name(&job.name), "drctl/run": what}},
                "spec": pod,
            },
        }},
    });
    if let Some(tz) = &config.daemon.timezone {
        spec["timeZone"] = Value::String(tz.clone());
    }
    let mut m = meta(&name, &opts.namespace);
    m["labels"]["drctl/job"] = Value::String(dns_name(&job.name));
    let mut out: Vec<Value> = catalog_claim(durable, &opts.namespace, claim).into_iter().collect();
    out.push(json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": m, "spec": spec}));
    out
}

/// The WAL receiver of a physical PostgreSQL job (`drctl wal stream JOB`): a Deployment of one
/// replica, replaced (`Recreate`) rather than rolled (the replication slot admits one receiver),
/// with the job's backup-side secrets (the recipients, never the identity). Its state is the slot
/// and the targets (the state directory is mounted as for every workload).
fn wal_receiver(
    config: &Config,
    job: &JobConfig,
    opts: &Options,
    files: &Sources,
    durable: &DurablePaths,
) -> Vec<Value> {
    let name = format!("drctl-{}-wal", dns_name(&job.name));
    let mounts = Mounts {
        hosts: Vec::new(),
        targets: job.common.targets.clone(),
        durable,
        workload: format!("{}-wal", dns_name(&job.name)),
    };
    let (volumes, mounts, claim, pinned) = storage(&files.jobs, &job_secrets(config, job, false), None, &mounts);
    let labels = json!({"app.kubernetes.io/name": "drctl", "drctl/job": dns_name(&job.name), "drctl/run": "wal"});
    let mut pod = json!({
        "serviceAccountName": ACCOUNT,
        "automountServiceAccountToken": false,
        "securityContext": pod_security(),
        // SIGTERM: the receiver ships what it holds before exiting
        "terminationGracePeriodSeconds": 120,
        "containers": [container(opts, &["wal", "stream", job.name.as_str()], mounts)],
        "volumes": volumes,
    });
    place(&mut pod, pinned);
    let mut m = meta(&name, &opts.namespace);
    m["labels"]["drctl/job"] = Value::String(dns_name(&job.name));
    let mut out: Vec<Value> = catalog_claim(durable, &opts.namespace, claim).into_iter().collect();
    out.push(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": m,
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels.clone()},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }));
    out
}

fn daemon(config: &Config, opts: &Options, files: &Sources, durable: &DurablePaths, exec: bool) -> Vec<Value> {
    let ns = opts.namespace.as_str();
    let jobs: Vec<&JobConfig> = rendered_jobs(config).collect();
    let mut hosts: Vec<String> = jobs.iter().filter_map(|j| host_path(j)).collect();
    hosts.sort();
    hosts.dedup();
    let mut targets: Vec<String> = jobs.iter().flat_map(|j| j.common.targets.clone()).collect();
    targets.sort();
    targets.dedup();
    let mounts = Mounts { hosts, targets, durable, workload: "daemon".into() };
    let (volumes, mounts, claim, pinned) =
        storage(&files.jobs, &all_secrets(config), identity_path(config).as_deref(), &mounts);
    let port = super::api_port(config);
    let mut c = container(opts, &["daemon"], mounts);
    c["ports"] = json!([{"name": "http", "containerPort": port}]);
    c["readinessProbe"] = json!({"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 10});
    c["livenessProbe"] =
        json!({"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 20, "failureThreshold": 3});
    // one replica unless the catalog is PostgreSQL (advisory locks make replicas safe)
    let replicas = if config.catalog.url.as_deref().is_some_and(|u| u.starts_with("postgres")) { 2 } else { 1 };
    let mut pod = json!({
        "serviceAccountName": ACCOUNT,
        "automountServiceAccountToken": exec,
        "securityContext": pod_security(),
        "terminationGracePeriodSeconds": 330,
        "containers": [c],
        "volumes": volumes,
    });
    place(&mut pod, pinned);
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("drctl", ns),
        "spec": {
            "replicas": replicas,
            "strategy": {"type": if replicas == 1 { "Recreate" } else { "RollingUpdate" }},
            "selector": {"matchLabels": {"app.kubernetes.io/name": "drctl", "drctl/run": "daemon"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "drctl", "drctl/run": "daemon"}},
                "spec": pod,
            },
        },
    });
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": meta("drctl", ns),
        "spec": {"selector": {"app.kubernetes.io/name": "drctl", "drctl/run": "daemon"},
            "ports": [{"name": "http", "port": port, "targetPort": "http"}]},
    });
    let mut out: Vec<Value> = catalog_claim(durable, ns, claim).into_iter().collect();
    out.extend([deployment, service]);
    out
}
