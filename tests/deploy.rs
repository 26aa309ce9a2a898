//! `drctl generate`: the committed examples under deploy/ are what generate renders from the
//! example config, they validate offline (`kubernetes-validate --strict`, `docker-compose config`),
//! the YAML reads back as the documents generated, and the things schemas cannot see hold: cron
//! expressions parse, RBAC grants exactly pod exec, backup workloads never get the age identity.
//!
//! Tools: `kubernetes-validate` and PyYAML from `$DRCTL_TOOLS_DIR/venv` and `docker-compose`, both
//! installed by `scripts/services.sh install`; a missing tool fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use drctl::generate::{Options, Sources, kubernetes, swarm};
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn example() -> (drctl::config::Config, Sources) {
    let main = root().join("deploy/drctl.example.toml");
    let text = std::fs::read_to_string(&main).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let jobs: Vec<(PathBuf, String)> = files.iter().map(|p| (p.clone(), std::fs::read_to_string(p).unwrap())).collect();
    let sources = Sources {
        main: text.clone(),
        jobs: jobs.iter().map(|(p, t)| (p.file_name().unwrap().to_string_lossy().into_owned(), t.clone())).collect(),
    };
    let config = drctl::config::load_str(&main, &text, jobs).unwrap_or_else(|e| panic!("{e}"));
    (config, sources)
}

fn k8s_opts() -> Options {
    Options { namespace: "drctl".into(), image: "ghcr.io/drctl/drctl:0.1.0".into(), daemon: true }
}

fn tools_dir() -> PathBuf {
    PathBuf::from(std::env::var("DRCTL_TOOLS_DIR").unwrap_or_else(|_| "/var/cache/drctl-tools".into()))
}

fn tool(name: &str) -> PathBuf {
    let venv = tools_dir().join("venv/bin").join(name);
    assert!(
        venv.exists(),
        "{} missing: run `scripts/services.sh install` (it installs the deploy tools)",
        venv.display()
    );
    venv
}

#[test]
fn committed_examples_are_what_generate_renders() {
    let (config, sources) = example();
    let (k8s, _) = kubernetes::render(&config, &sources, &k8s_opts());
    let (stack, _) = swarm::render(&config, &sources, &k8s_opts());
    for (path, text) in [("deploy/kubernetes/drctl.yaml", &k8s), ("deploy/swarm/drctl-stack.yml", &stack)] {
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
    let (config, sources) = example();
    let (text, _) = kubernetes::render(&config, &sources, &k8s_opts());
    let (docs, _) = kubernetes::documents(&config, &sources, &k8s_opts());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drctl.yaml");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(tool("kubernetes-validate")).arg("--strict").arg(&file).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubernetes-validate --strict failed:\n{said}");
    assert!(!said.to_lowercase().contains("error"), "{said}");

    // the YAML text is exactly the documents (PyYAML reads it back)
    let back = Command::new(tool("python"))
        .args(["-c", "import sys,yaml,json; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(back.status.success(), "{}", String::from_utf8_lossy(&back.stderr));
    let parsed: Vec<Value> = serde_json::from_slice(&back.stdout).unwrap();
    let parsed: Vec<Value> = parsed.into_iter().filter(|d| !d.is_null()).collect();
    assert_eq!(parsed, docs);
    // the ConfigMap carries the config byte for byte
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(cm["data"]["drctl.toml"], sources.main.as_str());
}

#[test]
fn what_schemas_cannot_see() {
    let (config, sources) = example();
    let (docs, skipped) = kubernetes::documents(&config, &sources, &k8s_opts());
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
    let daemon = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let probe = &daemon["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"];
    assert_eq!(probe, "/readyz");
}

#[test]
fn swarm_stack_validates_with_docker_compose() {
    let (config, sources) = example();
    let (text, _) = swarm::render(&config, &sources, &k8s_opts());
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
    let (stack, _, _) = swarm::document(&config, &sources, &k8s_opts());
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
