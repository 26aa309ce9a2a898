//! `drctl generate helm-values`: the values file of the Helm chart in deploy/helm/drctl, derived
//! from the config as `generate kubernetes` derives its manifests.
//!
//! The chart is a template over these values and renders the same objects `generate kubernetes`
//! renders for the same config (tests/helm_chart.rs holds them equal). What needs the config's
//! meaning stays here, in one place: which secret files a workload reads, which `fs` paths must
//! be durable (and the refusal when they are not), which jobs cannot run in a pod, which
//! namespaces a job execs into. The chart only adds what is Helm's business: existing-Secret
//! names, resources, node placement, the Prometheus Operator's ServiceMonitor / PodMonitor and
//! PrometheusRule.

use serde_json::{Value, json};

use super::kubernetes::{IDENTITY, SECRETS, default_resources};
use super::{
    DurablePaths, Options, SecretFile, Sources, all_secrets, api_port, dns_name, exec_namespaces, host_path,
    identity_path, job_secrets, kubernetes_obstacle,
};
use crate::config::{Config, DeployStorage};
use crate::jobs::JobConfig;

/// Render the values file; the second value lists jobs left out and why (as `generate
/// kubernetes` does). A configuration error (exit 2) where `generate kubernetes` refuses.
pub fn render(config: &Config, sources: &Sources, opts: &Options) -> crate::Result<(String, Vec<String>)> {
    let (values, skipped) = values(config, sources, opts)?;
    let mut header = String::from(
        "# Values for the drctl Helm chart (deploy/helm/drctl), rendered by `drctl generate helm-values`\n\
         # from drctl.toml: edit the config and render again; set what is Helm's (resources, nodeSelector,\n\
         # tolerations, serviceMonitor, prometheusRule …) in a second values file (`-f`).\n",
    );
    for s in &skipped {
        header.push_str(&format!("# Not rendered: {s}\n"));
    }
    Ok((format!("{header}{}", super::yaml::to_yaml(&values)), skipped))
}

/// The values as a JSON value, and the jobs left out.
pub fn values(config: &Config, sources: &Sources, opts: &Options) -> crate::Result<(Value, Vec<String>)> {
    if opts.daemon {
        super::check_listen(config)?;
    }
    let rendered: Vec<&JobConfig> = config.jobs.values().filter(|j| kubernetes_obstacle(j).is_none()).collect();
    let durable = DurablePaths::plan(config, rendered.iter().copied())?;
    let mut skipped: Vec<String> = config
        .jobs
        .values()
        .filter_map(|j| {
            kubernetes_obstacle(j).map(|why| format!("job `{}` is not scheduled in Kubernetes: {why}", j.name))
        })
        .collect();
    if !opts.daemon {
        // the chart has no template for it yet: say so rather than render base backups that
        // can never commit (they wait for WAL nobody archives)
        skipped.extend(rendered.iter().filter(|j| super::is_physical(j)).map(|j| {
            format!(
                "the WAL receiver of physical job `{}`: use `--daemon` (the daemon runs it) or `generate kubernetes`, \
                 which renders it as a Deployment",
                j.name
            )
        }));
    }
    let (repository, tag) = match opts.image.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
        _ => (opts.image.clone(), String::new()),
    };
    let mut jobs = serde_json::Map::new();
    let mut exec_ns: Vec<String> = Vec::new();
    for job in &rendered {
        exec_ns.extend(exec_namespaces(job, "")); // "" = the release's namespace
        let mut j = json!({
            "workload": dns_name(&job.name),
            "targets": durable_targets(&durable, job.common.targets.iter()),
            "secrets": files(&job_secrets(config, job, false)),
            "verifySecrets": files(&job_secrets(config, job, true)),
            "hostPaths": host_path(job).into_iter().collect::<Vec<_>>(),
        });
        if let Some(s) = &job.common.schedule {
            j["backup"] = json!({"schedule": s});
        }
        if let Some(s) = job.common.verify.as_ref().and_then(|v| v.schedule.as_ref()) {
            j["verify"] = json!({"schedule": s});
        }
        jobs.insert(job.name.clone(), j);
    }
    exec_ns.sort();
    exec_ns.dedup();
    let mut hosts: Vec<String> = rendered.iter().filter_map(|j| host_path(j)).collect();
    hosts.sort();
    hosts.dedup();
    let mut targets = serde_json::Map::new();
    for (name, (path, s)) in &durable.targets {
        targets.insert(name.clone(), storage(path, s));
    }
    let catalog = match &durable.catalog {
        Some((dir, s)) => storage(dir, s),
        None => Value::Null,
    };
    let config_files: serde_json::Map<String, Value> =
        sources.jobs.iter().map(|(f, t)| (f.clone(), Value::String(t.clone()))).collect();
    let postgres_catalog = config.catalog.url.as_deref().is_some_and(|u| u.starts_with("postgres"));
    let values = json!({
        "mode": if opts.daemon { "daemon" } else { "cronjob" },
        "image": {"repository": repository, "tag": tag},
        "config": {"main": sources.main, "jobs": config_files},
        "timeZone": config.daemon.timezone.clone().map(Value::String).unwrap_or(Value::Null),
        "secrets": {"existingSecret": SECRETS},
        "identity": {
            "existingSecret": IDENTITY,
            "path": identity_path(config).map(Value::String).unwrap_or(Value::Null),
        },
        "persistence": {"catalog": catalog, "targets": targets},
        "jobs": jobs,
        "execNamespaces": exec_ns,
        "daemon": {
            "port": api_port(config),
            "replicas": if postgres_catalog { 2 } else { 1 },
            "secrets": files(&all_secrets(config)),
            "hostPaths": hosts,
            "targets": durable_targets(&durable, rendered.iter().flat_map(|j| j.common.targets.iter())),
                    },
        "resources": default_resources(),
        "nodeSelector": {},
        "tolerations": [],
        "serviceMonitor": {"enabled": false, "interval": "30s", "labels": {}},
        "podMonitor": {"enabled": false, "interval": "30s", "labels": {}},
        "prometheusRule": {"enabled": false, "labels": {}, "runbookBaseUrl": ""},
    });
    Ok((values, skipped))
}

/// The `fs` targets among `names` that have durable storage, sorted and without repeats.
fn durable_targets<'a>(durable: &DurablePaths, names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = names.filter(|n| durable.targets.contains_key(*n)).cloned().collect();
    out.sort();
    out.dedup();
    out
}

fn storage(path: &str, s: &DeployStorage) -> Value {
    let mut v = json!({"mountPath": path});
    if let Some(size) = &s.size {
        v["size"] = Value::String(size.clone());
    }
    if let Some(class) = &s.storage_class {
        v["storageClass"] = Value::String(class.clone());
    }
    if let Some(hp) = &s.host_path {
        v["hostPath"] = Value::String(hp.display().to_string());
    }
    v
}

fn files(secrets: &[SecretFile]) -> Vec<Value> {
    secrets.iter().map(|s| json!({"key": s.key, "path": s.path})).collect()
}
