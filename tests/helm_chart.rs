//! The Helm chart in deploy/helm/drctl: it lints, what it renders validates strictly (built-in
//! kinds with `kubernetes-validate --strict`, the Prometheus Operator's kinds against their CRD
//! schemas in tests/crds), and it renders the same objects as `drctl generate kubernetes` for the
//! same config (values from `drctl generate helm-values`), in CronJob and daemon mode and with
//! each kind of storage. The rendered manifests themselves are executed by tests/deploy_run.rs;
//! being the same objects, the chart's are covered by it.
//!
//! Tools: `helm` 4.1 from `$DRCTL_TOOLS_DIR/bin`, `kubernetes-validate` and Python (PyYAML,
//! jsonschema) from `$DRCTL_TOOLS_DIR/venv`, all installed by `scripts/services.sh install`.

#[path = "common/example_config.rs"]
mod example_config;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use drctl::generate::{Options, Sources, helm, kubernetes};
use example_config::{config_with, cron_opts, example, k8s_opts, read_yaml, root, tool, tool_bin};
use serde_json::Value;

fn chart() -> PathBuf {
    root().join("deploy/helm/drctl")
}

/// `helm template` of the chart with `values` (a values file's text) and `--set` pairs; the
/// output, or the error text.
fn template(values: &str, set: &[&str]) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, values).unwrap();
    let mut cmd = Command::new(tool_bin("helm"));
    cmd.args(["template", "drctl"]).arg(chart()).args(["--namespace", "drctl", "-f"]).arg(&file);
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() { Ok(String::from_utf8(out.stdout).unwrap()) } else { Err(stderr) }
}

/// Objects by (kind, namespace, name), without the labels only Helm adds.
fn objects(docs: Vec<Value>) -> BTreeMap<(String, String, String), Value> {
    docs.into_iter()
        .map(|mut d| {
            if let Some(labels) = d["metadata"]["labels"].as_object_mut() {
                for helm_only in ["app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"] {
                    labels.remove(helm_only);
                }
            }
            let key = |k: &str| d["metadata"][k].as_str().unwrap_or_default().to_string();
            ((d["kind"].as_str().unwrap().to_string(), key("namespace"), key("name")), d)
        })
        .collect()
}

fn values_text(config: &drctl::config::Config, sources: &Sources, opts: &Options) -> String {
    helm::render(config, sources, opts).unwrap().0
}

/// The chart and `generate kubernetes` render the same objects for this config and mode.
fn assert_same_objects(what: &str, config: &drctl::config::Config, sources: &Sources, opts: &Options) {
    let (generated, _) = kubernetes::documents(config, sources, opts).unwrap();
    let generated = objects(generated);
    let chart = objects(read_yaml(&template(&values_text(config, sources, opts), &[]).unwrap()));
    let only = |a: &BTreeMap<_, Value>, b: &BTreeMap<_, Value>| -> Vec<String> {
        a.keys().filter(|k| !b.contains_key(*k)).map(|k| format!("{k:?}")).collect()
    };
    assert!(
        generated.len() == chart.len() && only(&generated, &chart).is_empty(),
        "{what}: objects differ; only generate: {:?}; only chart: {:?}",
        only(&generated, &chart),
        only(&chart, &generated)
    );
    for (key, g) in &generated {
        assert_eq!(&chart[key], g, "{what}: {key:?} differs between the chart and generate kubernetes");
    }
}

/// The example config with storage on node directories, a catalog outside the state directory,
/// a CronJob time zone and a non-default API port: every branch of the volume rules.
fn host_path_variant() -> (drctl::config::Config, Sources) {
    let text = std::fs::read_to_string(root().join("deploy/drctl.example.toml")).unwrap();
    let text = text
        .replace("url = \"sqlite:///var/lib/drctl/catalog.db\"", "url = \"sqlite:///data/drctl/catalog.db\"")
        .replace("size = \"100Gi\" ", "# size = \"100Gi\" ")
        .replace("storage_class = \"nfs-client\" ", "# storage_class = \"nfs-client\" ")
        .replace("# host_path = \"/srv/drctl/local\"", "host_path = \"/srv/drctl/local\"")
        .replace("# [deploy.catalog]", "[deploy.catalog]\nhost_path = \"/srv/drctl/catalog\"");
    let text = format!("{text}\n[daemon]\ntimezone = \"Europe/Berlin\"\n\n[api]\nlisten = \"0.0.0.0:9090\"\n");
    config_with(&text)
}

/// The example config with a PostgreSQL catalog: no catalog claims, two daemon replicas.
fn postgres_catalog_variant() -> (drctl::config::Config, Sources) {
    let text = std::fs::read_to_string(root().join("deploy/drctl.example.toml")).unwrap();
    config_with(&text.replace("sqlite:///var/lib/drctl/catalog.db", "postgres://drctl@db:5432/drctl"))
}

#[test]
fn chart_renders_what_generate_kubernetes_renders() {
    for (what, (config, sources)) in [
        ("example", example()),
        ("host paths, time zone", host_path_variant()),
        ("postgres catalog", postgres_catalog_variant()),
    ] {
        assert_same_objects(&format!("{what}, CronJob mode"), &config, &sources, &cron_opts());
        assert_same_objects(&format!("{what}, daemon mode"), &config, &sources, &k8s_opts());
    }
}

#[test]
fn chart_lints_with_its_defaults_and_with_generated_values() {
    let (config, sources) = example();
    let dir = tempfile::tempdir().unwrap();
    for (name, values) in [
        ("defaults", String::new()),
        ("cronjob", values_text(&config, &sources, &cron_opts())),
        ("daemon", values_text(&config, &sources, &k8s_opts())),
    ] {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, values).unwrap();
        let out = Command::new(tool_bin("helm"))
            .args(["lint", "--strict", "--namespace", "drctl"])
            .arg(chart())
            .arg("-f")
            .arg(&file)
            .args(["--set", "serviceMonitor.enabled=false"])
            .output()
            .unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && said.contains("0 chart(s) failed"), "helm lint ({name}):\n{said}");
    }
}

/// `kubernetes-validate --strict` on the built-in kinds and the CRD schemas on the rest.
fn validate(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chart.yaml");
    std::fs::write(&file, yaml).unwrap();
    let k = Command::new(tool("kubernetes-validate")).args(["--strict", "--quiet"]).arg(&file).output().unwrap();
    let mut crds: Vec<PathBuf> = std::fs::read_dir(root().join("tests/crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    crds.sort();
    assert_eq!(crds.len(), 3, "tests/crds holds the ServiceMonitor, PodMonitor and PrometheusRule CRDs");
    let c = Command::new(tool("python"))
        .arg(root().join("tests/crds/validate_crds.py"))
        .arg(&file)
        .args(&crds)
        .output()
        .unwrap();
    let said = [&k.stdout, &k.stderr, &c.stdout, &c.stderr].map(|b| String::from_utf8_lossy(b).into_owned()).concat();
    let k_said = String::from_utf8_lossy(&k.stdout).to_lowercase();
    (k.status.success() && !k_said.contains("error") && c.status.success(), said)
}

#[test]
fn chart_output_validates_strictly_with_monitoring_on() {
    let (config, sources) = example();
    let monitoring = ["serviceMonitor.enabled=true", "podMonitor.enabled=true", "prometheusRule.enabled=true"];
    for (mode, opts, set) in
        [("cronjob", cron_opts(), &["prometheusRule.enabled=true"][..]), ("daemon", k8s_opts(), &monitoring[..])]
    {
        let yaml = template(&values_text(&config, &sources, &opts), set).unwrap();
        let kinds: Vec<String> =
            read_yaml(&yaml).iter().map(|d| d["kind"].as_str().unwrap_or_default().to_string()).collect();
        assert!(kinds.iter().any(|k| k == "PrometheusRule"), "{mode}: {kinds:?}");
        if mode == "daemon" {
            for k in ["ServiceMonitor", "PodMonitor", "Deployment", "Service"] {
                assert!(kinds.iter().any(|x| x == k), "{mode}: no {k} in {kinds:?}");
            }
        }
        let (ok, said) = validate(&yaml);
        assert!(ok, "{mode}: strict validation failed:\n{said}");
        assert!(said.contains("custom resources checked, 0 errors"), "{said}");
    }
    // the CRD check can fail: an unknown field in a ServiceMonitor endpoint is an error
    let yaml = template(&values_text(&config, &sources, &k8s_opts()), &monitoring).unwrap();
    let broken = yaml.replacen("      path: /metrics\n", "      path: /metrics\n      scrapeEvery: 30s\n", 1);
    assert_ne!(broken, yaml);
    let (ok, said) = validate(&broken);
    assert!(!ok && said.contains("scrapeEvery"), "an unknown ServiceMonitor field passed:\n{said}");
}

#[test]
fn prometheus_rule_carries_the_shipped_alerts() {
    let (config, sources) = example();
    let values = values_text(&config, &sources, &k8s_opts());
    let yaml = template(
        &values,
        &[
            "prometheusRule.enabled=true",
            "prometheusRule.runbookBaseUrl=https://git.example.com/ops/drctl/-/blob/main/",
        ],
    )
    .unwrap();
    let rule = read_yaml(&yaml).into_iter().find(|d| d["kind"] == "PrometheusRule").expect("a PrometheusRule");
    let shipped = read_yaml(&std::fs::read_to_string(root().join("dashboards/prometheus/alerts.yml")).unwrap());
    let mut expected = shipped[0]["groups"].clone();
    for group in expected.as_array_mut().unwrap() {
        for r in group["rules"].as_array_mut().unwrap() {
            if let Some(url) = r["annotations"]["runbook_url"].as_str() {
                r["annotations"]["runbook_url"] =
                    Value::String(format!("https://git.example.com/ops/drctl/-/blob/main/{url}"));
            }
        }
    }
    assert!(!expected.as_array().unwrap().is_empty());
    assert_eq!(rule["spec"]["groups"], expected, "the PrometheusRule is not dashboards/prometheus/alerts.yml");
}

#[test]
fn monitors_are_refused_in_cronjob_mode() {
    let (config, sources) = example();
    let err = template(&values_text(&config, &sources, &cron_opts()), &["serviceMonitor.enabled=true"]).unwrap_err();
    assert!(err.contains("set mode=daemon") && err.contains("Pushgateway"), "{err}");
}

#[test]
fn chart_files_alerts_is_the_dashboards_file() {
    // one copy of the rules: the chart's files/alerts.yml links to dashboards/prometheus/alerts.yml
    let link = chart().join("files/alerts.yml");
    let target = std::fs::read_link(&link).expect("deploy/helm/drctl/files/alerts.yml is a symlink");
    assert_eq!(
        link.parent().unwrap().join(target).canonicalize().unwrap(),
        Path::new(&root().join("dashboards/prometheus/alerts.yml")).canonicalize().unwrap()
    );
}

#[test]
fn helm_only_settings_reach_every_pod() {
    // what is Helm's business (not derived from drctl.toml): resources, placement, pull secrets
    let (config, sources) = host_path_variant();
    let overrides = [
        "resources.limits.memory=1Gi",
        "nodeSelector.zone=a",
        "tolerations[0].key=dedicated",
        "tolerations[0].operator=Exists",
        "imagePullSecrets[0].name=regcred",
        "image.pullPolicy=Always",
    ];
    for opts in [cron_opts(), k8s_opts()] {
        let docs = read_yaml(&template(&values_text(&config, &sources, &opts), &overrides).unwrap());
        let pods: Vec<&Value> = docs
            .iter()
            .filter_map(|d| match d["kind"].as_str() {
                Some("CronJob") => Some(&d["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
                Some("Deployment") => Some(&d["spec"]["template"]["spec"]),
                _ => None,
            })
            .collect();
        assert!(!pods.is_empty());
        for pod in pods {
            // the user's selector joins the one node directories need, it does not replace it
            assert_eq!(pod["nodeSelector"], serde_json::json!({"zone": "a", "drctl.storage": "true"}), "{pod}");
            assert_eq!(pod["tolerations"][0]["key"], "dedicated");
            assert_eq!(pod["imagePullSecrets"][0]["name"], "regcred");
            let c = &pod["containers"][0];
            assert_eq!(c["resources"]["limits"]["memory"], "1Gi");
            assert_eq!(c["resources"]["requests"]["cpu"], "100m", "defaults kept beside the override");
            assert_eq!(c["imagePullPolicy"], "Always");
        }
    }
}
