//! The example config (deploy/drctl.example.toml + jobs/*.toml) as `drctl generate` reads it, and
//! the offline deploy tools `scripts/services.sh install` puts in `$DRCTL_TOOLS_DIR` (a missing
//! tool fails the test, never skips it). Shared by tests/deploy.rs and tests/helm_chart.rs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use drctl::generate::{Options, Sources};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A config from `main`'s text and the repository's jobs/*.toml, with the sources generate reads.
pub fn config_with(main_text: &str) -> (drctl::config::Config, Sources) {
    let main = root().join("deploy/drctl.example.toml");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let jobs: Vec<(PathBuf, String)> = files.iter().map(|p| (p.clone(), std::fs::read_to_string(p).unwrap())).collect();
    let sources = Sources {
        main: main_text.to_string(),
        jobs: jobs.iter().map(|(p, t)| (p.file_name().unwrap().to_string_lossy().into_owned(), t.clone())).collect(),
    };
    let config = drctl::config::load_str(&main, main_text, jobs).unwrap_or_else(|e| panic!("{e}"));
    (config, sources)
}

/// The example config as committed.
pub fn example() -> (drctl::config::Config, Sources) {
    config_with(&std::fs::read_to_string(root().join("deploy/drctl.example.toml")).unwrap())
}

pub fn k8s_opts() -> Options {
    Options { namespace: "drctl".into(), image: "ghcr.io/drctl/drctl:0.1.0".into(), daemon: true }
}

pub fn cron_opts() -> Options {
    Options { daemon: false, ..k8s_opts() }
}

pub fn tools_dir() -> PathBuf {
    PathBuf::from(std::env::var("DRCTL_TOOLS_DIR").unwrap_or_else(|_| "/var/cache/drctl-tools".into()))
}

/// A tool from the cached venv (`kubernetes-validate`, `python` with PyYAML and jsonschema).
pub fn tool(name: &str) -> PathBuf {
    let venv = tools_dir().join("venv/bin").join(name);
    assert!(
        venv.exists(),
        "{} missing: run `scripts/services.sh install` (it installs the deploy tools)",
        venv.display()
    );
    venv
}

/// A binary from `$DRCTL_TOOLS_DIR/bin` (`helm`, `kubectl`).
pub fn tool_bin(name: &str) -> PathBuf {
    let bin = tools_dir().join("bin").join(name);
    assert!(
        bin.exists(),
        "{} missing: run `scripts/services.sh install` (it installs the deploy tools)",
        bin.display()
    );
    bin
}

/// The documents of a YAML stream, as PyYAML (a YAML consumer other than our writer) reads it.
pub fn read_yaml(yaml: &str) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stream.yaml");
    std::fs::write(&file, yaml).unwrap();
    let back = std::process::Command::new(tool("python"))
        .args(["-c", "import sys,yaml,json; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(back.status.success(), "{}", String::from_utf8_lossy(&back.stderr));
    let docs: Vec<serde_json::Value> = serde_json::from_slice(&back.stdout).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}
