//! `drctl generate`: the committed examples under deploy/ are what generate renders from the
//! example config, they validate offline (`kubernetes-validate --strict`, `docker-compose config`),
//! the YAML reads back as the documents generated, and the things schemas cannot see hold: cron
//! expressions parse, RBAC grants exactly pod exec, backup workloads never get the age identity.
//!
//! Tools: `kubernetes-validate` and PyYAML from `$DRCTL_TOOLS_DIR/venv` and `docker-compose`, both
//! installed by `scripts/services.sh install`; a missing tool fails the test.

use std::process::Command;

#[path = "common/example_config.rs"]
mod example_config;

use drctl::generate::{Options, helm, kubernetes, swarm};
use example_config::{config_with, cron_opts, example, k8s_opts, read_yaml, root, tool};
use serde_json::Value;

#[test]
fn committed_examples_are_what_generate_renders() {
    let (config, sources) = example();
    let (k8s, _) = kubernetes::render(&config, &sources, &cron_opts()).unwrap();
    let (k8s_daemon, _) = kubernetes::render(&config, &sources, &k8s_opts()).unwrap();
    let (stack, _) = swarm::render(&config, &sources, &k8s_opts()).unwrap();
    let (values, _) = helm::render(&config, &sources, &cron_opts()).unwrap();
    let (values_daemon, _) = helm::render(&config, &sources, &k8s_opts()).unwrap();
    for (path, text) in [
        ("deploy/kubernetes/drctl.yaml", &k8s),
        ("deploy/kubernetes/drctl-daemon.yaml", &k8s_daemon),
        ("deploy/swarm/drctl-stack.yml", &stack),
        ("deploy/helm/example-values.yaml", &values),
        ("deploy/helm/example-values-daemon.yaml", &values_daemon),
    ] {
        let committed = std::fs::read_to_string(root().join(path)).unwrap_or_default();
        if committed != *text {
            let out = std::env::temp_dir().join(path.replace('/', "_"));
            std::fs::write(&out, text).unwrap();
            panic!(
                "{path} is not what `drctl generate` renders now (new output in {}): run scripts/render-deploy",
                out.display()
            );
        }
    }
}

#[test]
fn kubernetes_manifests_validate_strictly_and_read_back() {
    for opts in [cron_opts(), k8s_opts()] {
        validate_and_read_back(&opts);
    }
}

fn validate_and_read_back(opts: &Options) {
    let (config, sources) = example();
    let (text, _) = kubernetes::render(&config, &sources, opts).unwrap();
    let (docs, _) = kubernetes::documents(&config, &sources, opts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drctl.yaml");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(tool("kubernetes-validate")).arg("--strict").arg(&file).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubernetes-validate --strict failed:\n{said}");
    assert!(!said.to_lowercase().contains("error"), "{said}");

    // the YAML text is exactly the documents (PyYAML reads it back)
    assert_eq!(read_yaml(&text), docs);
    // the ConfigMap carries the config byte for byte
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(cm["data"]["drctl.toml"], sources.main.as_str());
}

#[test]
fn what_schemas_cannot_see() {
    let (config, sources) = example();
    let (docs, skipped) = kubernetes::documents(&config, &sources, &cron_opts()).unwrap();
    let cronjobs: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "CronJob").collect();
    assert!(!cronjobs.is_empty());
    for cj in &cronjobs {
        let name = cj["metadata"]["name"].as_str().unwrap();
        let schedule = cj["spec"]["schedule"].as_str().unwrap();
        assert!(schedule.parse::<croner::Cron>().is_ok(), "{name}: bad cron `{schedule}`");
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Forbid", "{name}");
        let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        let c = &pod["containers"][0];
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{name}");
        assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
        let has_identity =
            pod["volumes"].as_array().unwrap().iter().any(|v| v["secret"]["secretName"] == "drctl-age-identity");
        let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        match args[2] {
            "run" => assert!(!has_identity, "{name}: a backup workload must not get the age identity"),
            "verify" => assert!(has_identity, "{name}: a drill needs the identity"),
            other => panic!("{name}: unexpected command {other}"),
        }
        // only the secret files this job needs
        let job = config.job(args[3]).unwrap();
        let wanted: Vec<String> =
            drctl::generate::job_secrets(&config, job, args[2] == "verify").into_iter().map(|s| s.key).collect();
        let mounted: Vec<String> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["secret"]["secretName"] == "drctl-secrets")
            .flat_map(|v| {
                v["secret"]["items"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap().to_string())
            })
            .collect();
        assert_eq!(mounted, wanted, "{name}");
    }
    // the vault job's drill gets the source cluster's unseal keys; its backup never does
    let mounts_of = |name: &str| -> String {
        let cj = cronjobs.iter().find(|cj| cj["metadata"]["name"] == name).unwrap_or_else(|| panic!("no {name}"));
        cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].to_string()
    };
    assert!(mounts_of("drctl-vault-verify").contains("vault_source_unseal_keys"));
    assert!(!mounts_of("drctl-vault-backup").contains("vault_source_unseal_keys"));
    // every job with a schedule is there, or said why not
    for job in config.jobs.values().filter(|j| j.common.schedule.is_some()) {
        let rendered = cronjobs.iter().any(|cj| cj["metadata"]["name"] == format!("drctl-{}-backup", job.name));
        let explained = skipped.iter().any(|s| s.contains(&format!("`{}`", job.name)));
        assert!(rendered ^ explained, "job {}: rendered {rendered}, explained {explained}", job.name);
    }
    // RBAC: exactly pod get/list and pods/exec create
    for role in docs.iter().filter(|d| d["kind"] == "Role") {
        let rules = role["rules"].as_array().unwrap();
        let mut grants: Vec<String> = Vec::new();
        for r in rules {
            assert_eq!(r["apiGroups"], serde_json::json!([""]));
            for res in r["resources"].as_array().unwrap() {
                for v in r["verbs"].as_array().unwrap() {
                    grants.push(format!("{}:{}", res.as_str().unwrap(), v.as_str().unwrap()));
                }
            }
        }
        grants.sort();
        assert_eq!(grants, ["pods/exec:create", "pods:get", "pods:list"]);
    }
    let (docs, _) = kubernetes::documents(&config, &sources, &k8s_opts()).unwrap();
    let daemon = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let probe = &daemon["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"];
    assert_eq!(probe, "/readyz");
}

#[test]
fn swarm_stack_validates_with_docker_compose() {
    let (config, sources) = example();
    let (text, _) = swarm::render(&config, &sources, &k8s_opts()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("drctl-stack.yml"), &text).unwrap();
    std::fs::write(dir.path().join("drctl.toml"), &sources.main).unwrap();
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    for (name, t) in &sources.jobs {
        std::fs::write(dir.path().join("jobs").join(name), t).unwrap();
    }
    let out = Command::new("docker-compose")
        .current_dir(dir.path())
        .args(["-f", "drctl-stack.yml", "config"])
        .output()
        .expect("docker-compose missing: run `scripts/services.sh install`");
    assert!(
        out.status.success(),
        "docker-compose config failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (stack, _, _) = swarm::document(&config, &sources, &k8s_opts()).unwrap();
    let svc = &stack["services"]["drctl"];
    assert_eq!(svc["deploy"]["replicas"], 1);
    assert!(svc["healthcheck"]["test"].to_string().contains("/healthz"));
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(root().join("deploy/systemd/drctl.service")).unwrap();
    // systemd-analyze checks that ExecStart exists: point it at the binary under test
    let unit = unit.replace("/usr/local/bin/drctl", env!("CARGO_BIN_EXE_drctl"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drctl.service");
    std::fs::write(&path, unit).unwrap();
    let out =
        Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze (package systemd)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let problems: Vec<&str> = said.lines().filter(|l| l.contains("drctl.service")).collect();
    assert!(problems.is_empty(), "systemd-analyze verify:\n{said}");
    assert!(out.status.success(), "{said}");
}

/// What can be checked of the Dockerfile without an engine (none runs here).
#[test]
fn dockerfile_lint() {
    let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let instructions: Vec<&str> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('&')).collect();
    let froms: Vec<&&str> = instructions.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    for f in &froms {
        assert!(!f.contains(":latest") && f.contains(':'), "pinned base image: {f}");
    }
    let last_user = instructions.iter().rev().find(|l| l.starts_with("USER ")).expect("a USER instruction");
    assert!(!last_user.contains("root") && !last_user.ends_with(" 0") && !last_user.contains(" 0:"), "{last_user}");
    assert!(text.contains("cargo build --release --locked"), "reproducible build");
    for tool in ["postgresql-client", "redis-tools", "tar", "ca-certificates", "openssh-client", "curl"] {
        assert!(text.contains(tool), "runtime lacks {tool}");
    }
    assert!(instructions.iter().any(|l| l.starts_with("HEALTHCHECK")));
    // nothing secret is copied in
    for l in instructions.iter().filter(|l| l.starts_with("COPY") || l.starts_with("ADD")) {
        for bad in ["age", ".key", "secret", "drctl.toml", ".env"] {
            assert!(!l.to_lowercase().contains(bad), "{l}");
        }
    }
    assert!(!instructions.iter().any(|l| l.starts_with("ADD ")), "ADD fetches and unpacks implicitly: use COPY");
    // every RUN that installs with apt cleans its lists in the same layer
    for l in text.split("\nRUN ").skip(1) {
        let run = l.split("\n\n").next().unwrap_or(l);
        if run.contains("apt-get install") {
            assert!(run.contains("rm -rf /var/lib/apt/lists/*"), "apt lists left in a layer:\n{run}");
            assert!(run.contains("--no-install-recommends"), "{run}");
        }
    }
}

/// Mount of `path` in a pod spec: the volume it comes from and whether it is read-only.
fn mount_at<'a>(pod: &'a Value, path: &str) -> Option<(&'a Value, bool)> {
    let c = &pod["containers"][0];
    let m = c["volumeMounts"].as_array()?.iter().find(|m| m["mountPath"] == path)?;
    let v = pod["volumes"].as_array()?.iter().find(|v| v["name"] == m["name"])?;
    Some((v, m["readOnly"] == true))
}

/// Every CronJob: its name, its pod spec and its container's args (`--config FILE VERB JOB …`).
fn cronjobs(docs: &[Value]) -> Vec<(&str, &Value, Vec<&str>)> {
    docs.iter()
        .filter(|d| d["kind"] == "CronJob")
        .map(|cj| {
            let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
            let args = pod["containers"][0]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
            (cj["metadata"]["name"].as_str().unwrap(), pod, args)
        })
        .collect()
}

fn durable(v: &Value) -> bool {
    v["persistentVolumeClaim"].is_object() || v["hostPath"].is_object()
}

/// Issue 12: every fs target path and the SQLite catalog come from a claim or a node directory in
/// every workload; no two workloads share a catalog claim; volume sources are mounted read-only
/// in backups, drills and the daemon; backups prune; `--daemon` renders no CronJob.
#[test]
fn every_persistent_path_is_durable() {
    let (config, sources) = example();
    let (docs, _) = kubernetes::documents(&config, &sources, &cron_opts()).unwrap();
    let claims: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "PersistentVolumeClaim")
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    let mut catalog_claims = Vec::new();
    let mut checked_volume = false;
    for (name, pod, args) in cronjobs(&docs) {
        let job = config.job(args[3]).unwrap();
        if args[2] == "run" {
            assert_eq!(args.last(), Some(&"--prune"), "{name}: a scheduled backup prunes after it commits");
        }
        for t in &job.common.targets {
            if let drctl::targets::TargetKind::Fs(fs) = &config.targets[t].kind {
                let path = fs.path.display().to_string();
                let (v, ro) = mount_at(pod, &path).unwrap_or_else(|| panic!("{name}: fs target `{t}` not mounted"));
                assert!(durable(v) && !ro, "{name}: `{path}` from {v}");
                if let Some(c) = v["persistentVolumeClaim"]["claimName"].as_str() {
                    assert!(claims.contains(&c), "{name}: claim {c} not rendered");
                }
            }
        }
        let (v, _) = mount_at(pod, "/var/lib/drctl").unwrap_or_else(|| panic!("{name}: catalog not mounted"));
        assert!(durable(v), "{name}: catalog from {v}");
        let claim = v["persistentVolumeClaim"]["claimName"].as_str().unwrap();
        assert!(claims.contains(&claim), "{name}: claim {claim} not rendered");
        catalog_claims.push(claim.to_string());
        if let Some(src) = drctl::generate::host_path(job) {
            let (v, ro) = mount_at(pod, &src).unwrap_or_else(|| panic!("{name}: source `{src}` not mounted"));
            assert!(v["hostPath"].is_object() && ro, "{name}: source {v} read-only {ro}");
            checked_volume = true;
        }
    }
    assert!(checked_volume, "the example has a volume job with a host path");
    let n = catalog_claims.len();
    catalog_claims.sort();
    catalog_claims.dedup();
    assert_eq!(catalog_claims.len(), n, "two CronJobs share one SQLite catalog");

    // daemon mode: the Deployment instead of the CronJobs, with every path
    let (docs, _) = kubernetes::documents(&config, &sources, &k8s_opts()).unwrap();
    assert!(!docs.iter().any(|d| d["kind"] == "CronJob"), "--daemon renders CronJobs too: every job would run twice");
    let d = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &d["spec"]["template"]["spec"];
    assert!(durable(mount_at(pod, "/var/lib/drctl").unwrap().0));
    assert!(durable(mount_at(pod, "/var/backups/drctl").unwrap().0));
    for job in config.jobs.values().filter(|j| drctl::generate::kubernetes_obstacle(j).is_none()) {
        if let Some(src) = drctl::generate::host_path(job) {
            let (v, ro) = mount_at(pod, &src).unwrap_or_else(|| panic!("daemon: source `{src}` not mounted"));
            assert!(v["hostPath"].is_object() && ro);
        }
    }

    // swarm: the fs target and the catalog are volumes, never tmpfs, and the task is pinned
    let (stack, _, _) = swarm::document(&config, &sources, &k8s_opts()).unwrap();
    let svc = &stack["services"]["drctl"];
    for path in ["/var/backups/drctl", "/var/lib/drctl"] {
        let v = svc["volumes"].as_array().unwrap().iter().find(|v| v["target"] == path).unwrap();
        assert!(v["type"] == "volume" || v["type"] == "bind", "{path}: {v}");
    }
    assert!(svc["deploy"]["placement"]["constraints"].to_string().contains("node.labels.drctl.storage == true"));
}

fn generate_with(extra: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let recipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
    let text = format!(
        "[encryption]\nrecipients = [\"{recipient}\"]\n{extra}\n\
         [targets.local]\ntype = \"fs\"\npath = \"/var/backups/drctl\"\n\n\
         [jobs.files]\nkind = \"volume\"\npath = \"/srv/data\"\nschedule = \"0 3 * * *\"\ntargets = [\"local\"]\n"
    );
    std::fs::write(dir.path().join("drctl.toml"), text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_drctl"))
        .arg("--config")
        .arg(dir.path().join("drctl.toml"))
        .arg("generate")
        .args(args)
        .output()
        .unwrap()
}

/// Issue 12: an fs target without deploy storage is refused (exit 2) with the target, its path
/// and the option to set; the same for a daemon listening on loopback.
#[test]
fn generate_refuses_what_would_lose_data() {
    for args in
        [&["kubernetes"][..], &["kubernetes", "--daemon"], &["swarm"], &["helm-values"], &["helm-values", "--daemon"]]
    {
        let out = generate_with("", args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for want in ["`local`", "/var/backups/drctl", "deploy.targets.local", "size", "host_path"] {
            assert!(err.contains(want), "{args:?}: `{want}` not in:\n{err}");
        }
        assert!(out.stdout.is_empty(), "nothing rendered");
    }
    let storage = "[deploy.targets.local]\nsize = \"10Gi\"\n";
    assert_eq!(generate_with(storage, &["kubernetes"]).status.code(), Some(0));
    let loopback = format!("{storage}\n[api]\nlisten = \"127.0.0.1:8080\"\n");
    for args in [&["kubernetes", "--daemon"][..], &["swarm"], &["helm-values", "--daemon"]] {
        let out = generate_with(&loopback, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("127.0.0.1:8080") && err.contains("0.0.0.0:8080") && err.contains("api.listen"), "{err}");
    }
    // CronJobs serve no HTTP: loopback is fine there
    assert_eq!(generate_with(&loopback, &["kubernetes"]).status.code(), Some(0));
    assert_eq!(generate_with(&loopback, &["helm-values"]).status.code(), Some(0));
    // a host path instead of a claim pins the pods to the labelled nodes
    let out = generate_with("[deploy.targets.local]\nhost_path = \"/srv/drctl/local\"\n", &["kubernetes"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("path: \"/srv/drctl/local\"") && text.contains("drctl.storage"), "{text}");
    // bad deploy settings are config errors with the key
    let out = generate_with("[deploy.targets.local]\nsize = \"lots\"\nhost_path = \"rel\"\n", &["kubernetes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("both `size` and `host_path`") && err.contains("`lots`") && err.contains("not absolute"),
        "{err}"
    );
    let out = generate_with(
        "[deploy.targets.local]\nsize = \"1Gi\"\n[deploy.targets.nope]\nsize = \"1Gi\"\n",
        &["kubernetes"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("deploy.targets.nope") && err.contains("unknown target `nope`"), "{err}");
}

/// A physical PostgreSQL job in CronJob mode gets its WAL receiver as a one-replica Deployment
/// (`Recreate`: the slot admits one receiver) that runs `drctl wal stream JOB` without the identity.
#[test]
fn a_physical_job_gets_a_wal_receiver_deployment() {
    let pg = "[deploy.targets.local]\nsize = \"10Gi\"\n\n[jobs.db]\nkind = \"postgres\"\nmethod = \"physical\"\n\
              url = \"postgres://replicator@db:5432/postgres\"\nschedule = \"0 2 * * *\"\ntargets = [\"local\"]\n\
              verify = { schedule = \"0 5 * * *\" }\n";
    let out = generate_with(pg, &["kubernetes"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<Value> = read_yaml(&text);
    let wal = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "drctl-db-wal")
        .unwrap_or_else(|| panic!("no WAL receiver Deployment in:\n{text}"));
    assert_eq!(wal["spec"]["replicas"], 1);
    assert_eq!(wal["spec"]["strategy"]["type"], "Recreate");
    let c = &wal["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.ends_with(&["wal", "stream", "db"]), "{c}");
    // every claim a pod names is rendered
    for v in wal["spec"]["template"]["spec"]["volumes"].as_array().unwrap() {
        if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
            assert!(
                docs.iter().any(|d| d["kind"] == "PersistentVolumeClaim" && d["metadata"]["name"] == claim),
                "claim `{claim}` is not rendered:\n{text}"
            );
        }
    }
    assert!(!wal.to_string().contains("identity"), "no identity for the receiver: {wal}");
    // the drill's image needs a server of the source's major version: the header says so
    assert!(text.contains("the drill of physical job `db` replays WAL in a PostgreSQL server"), "{text}");
    // the daemon runs receivers itself: no extra Deployment there
    let daemon = generate_with(&format!("{pg}\n[api]\nlisten = \"0.0.0.0:8080\"\n"), &["kubernetes", "--daemon"]);
    assert_eq!(daemon.status.code(), Some(0), "{}", String::from_utf8_lossy(&daemon.stderr));
    assert!(!String::from_utf8_lossy(&daemon.stdout).contains("drctl-db-wal"));
}

/// Issue 18 and 17 in what `generate` renders: every CronJob mounts the files of the notification
/// channels that report on its job (a channel limited to `postgres` only there), and a chunked
/// backup mounts the chunk key, which drills (restores) never get.
#[test]
fn chunked_backups_and_notification_channels_get_their_files_mounted() {
    let base = std::fs::read_to_string(root().join("deploy/drctl.example.toml")).unwrap();
    let text = base.replacen("[encryption]\n", "[encryption]\nchunk_key_file = \"/secrets/chunk.key\"\n", 1)
        + "\n[notify.ops]\ntype = \"webhook\"\nurl_file = \"/secrets/ops-url\"\n\n\
           [notify.pg]\ntype = \"healthchecks\"\nurl_file = \"/secrets/hc-pg\"\ntoken_file = \"/secrets/hc-token\"\njobs = [\"postgres\"]\n";
    let (config, sources) = config_with(&text);
    let (docs, _) = kubernetes::documents(&config, &sources, &cron_opts()).unwrap();
    let mut chunked_backups = 0;
    for (name, pod, args) in cronjobs(&docs) {
        let job = config.job(args[3]).unwrap();
        let mounted = |path: &str| mount_at(pod, path).is_some();
        assert!(mounted("/secrets/ops-url"), "{name}: the channel every job reports to");
        let pg = job.name == "postgres";
        assert_eq!(mounted("/secrets/hc-pg") && mounted("/secrets/hc-token"), pg, "{name}: only postgres's channel");
        let chunked_backup = args[2] == "run" && job.common.storage() == drctl::jobs::Storage::Chunked;
        assert_eq!(mounted("/secrets/chunk.key"), chunked_backup, "{name} ({}): the chunk key", args[2]);
        chunked_backups += usize::from(chunked_backup);
    }
    assert!(chunked_backups > 0, "the example has chunked jobs once the key is set");
    // the Secret the header tells the user to create lists them
    let (rendered, _) = kubernetes::render(&config, &sources, &cron_opts()).unwrap();
    for f in ["chunk.key", "ops-url", "hc-pg", "hc-token"] {
        assert!(rendered.contains(&format!("--from-file={f}=")), "{f} in the Secret's command:\n{rendered}");
    }
}
