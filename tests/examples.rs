//! Every example configuration in the repository parses and validates.

use std::path::Path;

#[test]
fn example_config_and_every_example_job_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let main = root.join("deploy/drctl.example.toml");
    let text = std::fs::read_to_string(&main).unwrap();
    let mut jobs = Vec::new();
    for entry in std::fs::read_dir(root.join("jobs")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            jobs.push((p.clone(), std::fs::read_to_string(&p).unwrap()));
        }
    }
    assert!(!jobs.is_empty());
    let names: Vec<String> = jobs.iter().map(|(p, _)| p.file_stem().unwrap().to_string_lossy().into_owned()).collect();
    let config = match drctl::config::load_str(&main, &text, jobs) {
        Ok(c) => c,
        Err(drctl::Error::Config(problems)) => {
            panic!("{}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))
        }
        Err(e) => panic!("{e}"),
    };
    for n in names {
        assert!(config.jobs.contains_key(&n), "job {n} loaded");
    }
    assert!(config.targets.contains_key("s3") && config.targets.contains_key("local"));
}
