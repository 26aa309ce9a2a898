//! Kubernetes manifests: a ConfigMap with the config, a CronJob per backup schedule and per drill
//! schedule, RBAC for pod exec, and optionally the daemon as a Deployment with a Service.

use serde_json::{Value, json};

use super::{
    CONFIG_DIR, Options, STATE_DIR, SecretFile, Sources, UID, all_secrets, dns_name, exec_namespaces, host_path,
    identity_path, job_secrets, kubernetes_obstacle, stream,
};
use crate::config::{Config, JobConfig};

const CONFIGMAP: &str = "drctl-config";
const SECRETS: &str = "drctl-secrets";
const IDENTITY: &str = "drctl-age-identity";
const ACCOUNT: &str = "drctl";
/// A run that cannot start within this long after its slot is skipped (and the alerts notice).
const STARTING_DEADLINE: u64 = 600;
/// The longest a backup or a drill may run before Kubernetes stops it.
const ACTIVE_DEADLINE: u64 = 6 * 3600;

/// Render every manifest as a YAML stream; the second value lists jobs left out and why.
pub fn render(config: &Config, sources: &Sources, opts: &Options) -> (String, Vec<String>) {
    let (docs, skipped) = documents(config, sources, opts);
    (stream(&header(config, opts, &skipped), &docs), skipped)
}

/// Every manifest as a JSON value (what [`render`] writes as YAML), and the jobs left out.
pub fn documents(config: &Config, sources: &Sources, opts: &Options) -> (Vec<Value>, Vec<String>) {
    let ns = opts.namespace.as_str();
    let mut docs = vec![configmap(sources, ns)];
    let mut skipped = Vec::new();
    let mut exec_ns: Vec<String> = Vec::new();
    for job in config.jobs.values() {
        if let Some(why) = kubernetes_obstacle(job) {
            skipped.push(format!("job `{}` is not scheduled in Kubernetes: {why}", job.name));
            continue;
        }
        exec_ns.extend(exec_namespaces(job, ns));
        if let Some(schedule) = &job.common.schedule {
            docs.push(cronjob(config, job, opts, sources, "backup", schedule));
        }
        if let Some(schedule) = job.common.verify.as_ref().and_then(|v| v.schedule.as_ref()) {
            docs.push(cronjob(config, job, opts, sources, "verify", schedule));
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
        docs.extend(daemon(config, opts, sources, !exec_ns.is_empty()));
    }
    (docs, skipped)
}

fn header(config: &Config, opts: &Options, skipped: &[String]) -> String {
    let mut h =
        String::from("# Rendered by `drctl generate kubernetes` from drctl.toml: edit the config and render again.\n");
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

/// Volumes and mounts of one workload: config, state, tmp, its secret files, the identity if asked.
fn storage(
    sources: &[(String, String)],
    secrets: &[SecretFile],
    identity: Option<&str>,
    host: Option<&str>,
) -> (Value, Value) {
    let mut items = vec![json!({"key": "drctl.toml", "path": "drctl.toml"})];
    for (file, _) in sources {
        items.push(json!({"key": format!("job-{file}"), "path": format!("jobs/{file}")}));
    }
    let mut volumes = vec![
        json!({"name": "config", "configMap": {"name": CONFIGMAP, "items": items}}),
        json!({"name": "state", "emptyDir": {}}),
        json!({"name": "tmp", "emptyDir": {}}),
    ];
    let mut mounts = vec![
        json!({"name": "config", "mountPath": CONFIG_DIR, "readOnly": true}),
        json!({"name": "state", "mountPath": STATE_DIR}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
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
    if let Some(path) = host {
        volumes.push(json!({"name": "source", "hostPath": {"path": path, "type": "Directory"}}));
        mounts.push(json!({"name": "source", "mountPath": path, "readOnly": true}));
    }
    (Value::Array(volumes), Value::Array(mounts))
}

fn container(opts: &Options, args: &[&str], mounts: Value) -> Value {
    let mut full = vec!["--config".to_string(), format!("{CONFIG_DIR}/drctl.toml")];
    full.extend(args.iter().map(|a| a.to_string()));
    json!({
        "name": "drctl",
        "image": opts.image,
        "args": full,
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    })
}

fn pod_security() -> Value {
    json!({"runAsNonRoot": true, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"}})
}

fn cronjob(config: &Config, job: &JobConfig, opts: &Options, files: &Sources, what: &str, schedule: &str) -> Value {
    let verb = if what == "verify" { "verify" } else { "run" };
    let args = [verb, job.name.as_str()];
    // backups get the recipients only (in the config); the identity is for drills
    let identity = if what == "verify" { identity_path(config) } else { None };
    let host = if what == "backup" { host_path(job) } else { None };
    let (volumes, mounts) =
        storage(&files.jobs, &job_secrets(config, job, what == "verify"), identity.as_deref(), host.as_deref());
    let name = format!("drctl-{}-{what}", dns_name(&job.name));
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
                "spec": {
                    "serviceAccountName": ACCOUNT,
                    "restartPolicy": "Never",
                    "securityContext": pod_security(),
                    "containers": [container(opts, &args, mounts)],
                    "volumes": volumes,
                },
            },
        }},
    });
    if let Some(tz) = &config.daemon.timezone {
        spec["timeZone"] = Value::String(tz.clone());
    }
    let mut m = meta(&name, &opts.namespace);
    m["labels"]["drctl/job"] = Value::String(dns_name(&job.name));
    json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": m, "spec": spec})
}

fn daemon(config: &Config, opts: &Options, files: &Sources, exec: bool) -> Vec<Value> {
    let ns = opts.namespace.as_str();
    let (volumes, mounts) = storage(&files.jobs, &all_secrets(config), identity_path(config).as_deref(), None);
    let port = super::api_port(config);
    let mut c = container(opts, &["daemon"], mounts);
    c["ports"] = json!([{"name": "http", "containerPort": port}]);
    c["readinessProbe"] = json!({"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 10});
    c["livenessProbe"] =
        json!({"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 20, "failureThreshold": 3});
    // one replica unless the catalog is PostgreSQL (advisory locks make replicas safe)
    let replicas = if config.catalog.url.as_deref().is_some_and(|u| u.starts_with("postgres")) { 2 } else { 1 };
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("drctl", ns),
        "spec": {
            "replicas": replicas,
            "strategy": {"type": if replicas == 1 { "Recreate" } else { "RollingUpdate" }},
            "selector": {"matchLabels": {"app.kubernetes.io/name": "drctl", "drctl/run": "daemon"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "drctl", "drctl/run": "daemon"}},
                "spec": {
                    "serviceAccountName": ACCOUNT,
                    "automountServiceAccountToken": exec,
                    "securityContext": pod_security(),
                    "terminationGracePeriodSeconds": 330,
                    "containers": [c],
                    "volumes": volumes,
                },
            },
        },
    });
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": meta("drctl", ns),
        "spec": {"selector": {"app.kubernetes.io/name": "drctl", "drctl/run": "daemon"},
            "ports": [{"name": "http", "port": port, "targetPort": "http"}]},
    });
    vec![deployment, service]
}
