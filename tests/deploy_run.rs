//! Issue 12: run the rendered manifests, not just validate them. The CronJobs `drctl generate
//! kubernetes` renders are executed the way a kubelet would run their pods on this machine: the
//! host's drctl binary (no image runs here) with the container's args and env, each volume as the
//! cluster would provide it (emptyDir: a fresh empty directory per pod; PersistentVolumeClaim and
//! hostPath: a directory kept across pods; ConfigMap and Secret: files), `readOnlyRootFilesystem`
//! as a read-only root in bubblewrap with only the declared mounts writable, and `runAsUser` /
//! `runAsGroup` as a user namespace. Then: several scheduled backups in a row (each prunes), a
//! drill, and a restore from a fresh pod, which must find every backup that was reported committed.
//!
//! Tools: `bwrap` (package bubblewrap) and PyYAML from `$DRCTL_TOOLS_DIR/venv` (to read the
//! manifests as written), both installed by `scripts/services.sh install`; a missing tool fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn tools_python() -> PathBuf {
    let dir = PathBuf::from(std::env::var("DRCTL_TOOLS_DIR").unwrap_or_else(|_| "/var/cache/drctl-tools".into()));
    let py = dir.join("venv/bin/python");
    assert!(py.exists(), "{} missing: run `scripts/services.sh install`", py.display());
    py
}

/// The YAML stream as JSON documents, read by PyYAML (no YAML crate in the build).
fn read_yaml(file: &Path) -> Vec<Value> {
    let out = Command::new(tools_python())
        .args(["-c", "import sys,yaml,json; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// A one-node "cluster": the claims' and host directories that outlive pods, the Secrets'
/// contents, and the rendered objects.
struct Cluster {
    root: tempfile::TempDir,
    docs: Vec<Value>,
    secrets: BTreeMap<(String, String), Vec<u8>>,
    pods: usize,
}

/// What one pod run printed.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
    /// The pod's emptyDir volumes by name (kept for inspection; a new pod gets new ones).
    empty_dirs: BTreeMap<String, PathBuf>,
}

impl Cluster {
    fn claim_dir(&self, claim: &str) -> PathBuf {
        let d = self.root.path().join("pv").join(claim);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn object(&self, kind: &str, name: &str) -> &Value {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} `{name}` rendered"))
    }

    /// The pod template of CronJob `name`.
    fn cronjob_pod(&self, name: &str) -> Value {
        self.object("CronJob", name)["spec"]["jobTemplate"]["spec"]["template"]["spec"].clone()
    }

    /// Run a pod spec's first container to completion, as a kubelet would; `args` replaces the
    /// container's args when given (`kubectl create job --from=cronjob/… -- ARGS`).
    fn run_pod(&mut self, pod: &Value, args: Option<Vec<String>>) -> Ran {
        self.pods += 1;
        let pod_dir = self.root.path().join(format!("pod-{}", self.pods));
        std::fs::create_dir_all(&pod_dir).unwrap();
        let c = &pod["containers"][0];
        let volumes: BTreeMap<String, Value> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap().to_string(), v.clone()))
            .collect();
        let mut binds: Vec<(PathBuf, String, bool)> = Vec::new(); // (host source, mount path, read-only)
        let mut empty_dirs = BTreeMap::new();
        let mut sources: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (name, v) in &volumes {
            let dir = if v["emptyDir"].is_object() {
                let d = pod_dir.join("empty").join(name);
                std::fs::create_dir_all(&d).unwrap();
                empty_dirs.insert(name.clone(), d.clone());
                d
            } else if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
                self.object("PersistentVolumeClaim", claim);
                self.claim_dir(claim)
            } else if let Some(p) = v["hostPath"]["path"].as_str() {
                let p = PathBuf::from(p);
                assert!(p.is_dir(), "hostPath `{}` (type Directory) does not exist", p.display());
                p
            } else if let Some(cm) = v["configMap"]["name"].as_str() {
                let data = self.object("ConfigMap", cm)["data"].clone();
                let d = pod_dir.join("cm").join(name);
                for item in v["configMap"]["items"].as_array().unwrap() {
                    let f = d.join(item["path"].as_str().unwrap());
                    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
                    std::fs::write(&f, data[item["key"].as_str().unwrap()].as_str().unwrap()).unwrap();
                }
                d
            } else if let Some(secret) = v["secret"]["secretName"].as_str() {
                let d = pod_dir.join("secret").join(name);
                std::fs::create_dir_all(&d).unwrap();
                for ((s, key), bytes) in &self.secrets {
                    if s == secret {
                        std::fs::write(d.join(key), bytes).unwrap();
                    }
                }
                d
            } else {
                panic!("volume kind not simulated: {v}");
            };
            sources.insert(name.clone(), dir);
        }
        for m in c["volumeMounts"].as_array().unwrap() {
            let mut src = sources[m["name"].as_str().unwrap()].clone();
            if let Some(sub) = m["subPath"].as_str() {
                src = src.join(sub);
                assert!(src.exists(), "subPath `{sub}` of volume {} does not exist", m["name"]);
            }
            binds.push((src, m["mountPath"].as_str().unwrap().to_string(), m["readOnly"] == true));
        }

        let mut cmd = Command::new("bwrap");
        let read_only_root = c["securityContext"]["readOnlyRootFilesystem"] == true;
        cmd.args(["--die-with-parent", "--tmpfs", "/"]);
        let needed: Vec<&str> = binds.iter().map(|(_, p, _)| p.as_str()).collect();
        ro_tree(Path::new("/"), &needed, &mut cmd);
        cmd.args(["--dev", "/dev", "--proc", "/proc"]);
        for (src, path, ro) in &binds {
            cmd.arg(if *ro { "--ro-bind" } else { "--bind" }).arg(src).arg(path);
        }
        if read_only_root {
            cmd.args(["--remount-ro", "/"]);
        }
        let sc = &pod["securityContext"];
        if let Some(uid) = sc["runAsUser"].as_u64() {
            let gid = sc["runAsGroup"].as_u64().unwrap_or(uid);
            cmd.args(["--unshare-user", "--uid", &uid.to_string(), "--gid", &gid.to_string()]);
        }
        cmd.arg("--").arg(env!("CARGO_BIN_EXE_drctl"));
        let args = args
            .unwrap_or_else(|| c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect());
        cmd.args(&args);
        cmd.env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin");
        for e in c["env"].as_array().into_iter().flatten() {
            cmd.env(e["name"].as_str().unwrap(), e["value"].as_str().unwrap());
        }
        let out = cmd.output().expect("bwrap missing: run `scripts/services.sh install` (package bubblewrap)");
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            empty_dirs,
        }
    }
}

/// Bind the host tree read-only into a tmpfs root, leaving out (as tmpfs directories, to hold
/// mount points) the ancestors of mount paths that do not exist on the host.
fn ro_tree(dir: &Path, needed: &[&str], cmd: &mut Command) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if dir == Path::new("/") && ["proc", "dev", "sys"].contains(&name.as_ref()) {
            continue;
        }
        let ancestor = needed.iter().any(|n| Path::new(n).starts_with(&path) && Path::new(n) != path);
        let missing_below = needed.iter().any(|n| Path::new(n).starts_with(&path) && !Path::new(n).exists());
        if ancestor && missing_below && path.is_dir() && !path.is_symlink() {
            cmd.arg("--dir").arg(&path);
            ro_tree(&path, needed, cmd);
        } else {
            cmd.arg("--ro-bind").arg(&path).arg(&path);
        }
    }
    if dir == Path::new("/") {
        cmd.args(["--ro-bind", "/sys", "/sys"]);
    }
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tree of files whose contents change with `generation`.
fn write_source(dir: &Path, generation: u32) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.txt"), format!("generation {generation}\n")).unwrap();
    std::fs::write(dir.join("sub/b.bin"), vec![generation as u8; 4096]).unwrap();
}

#[test]
fn rendered_cronjobs_keep_prune_drill_and_restore() {
    let host = tempfile::tempdir().unwrap();
    let source = host.path().join("source");
    write_source(&source, 1);
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let config_dir = host.path().join("config");
    std::fs::create_dir_all(config_dir.join("jobs")).unwrap();
    // the catalog is the default one (`$DRCTL_STATE_DIR/catalog.db`), as a user leaves it
    std::fs::write(
        config_dir.join("drctl.toml"),
        format!(
            "[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"/secrets/age.key\"\n\n\
             [deploy.targets.local]\nsize = \"1Gi\"\n\n\
             [targets.local]\ntype = \"fs\"\npath = \"/var/backups/drctl\"\nkeep = {{ last = 2 }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        config_dir.join("jobs/files.toml"),
        format!(
            "kind = \"volume\"\npath = \"{}\"\nschedule = \"0 3 * * *\"\ntargets = [\"local\"]\n\
             verify = {{ schedule = \"0 5 * * 0\" }}\n",
            source.display()
        ),
    )
    .unwrap();
    let manifest = host.path().join("drctl.yaml");
    let (code, _, err) = run(Command::new(env!("CARGO_BIN_EXE_drctl"))
        .env_remove("DRCTL_CONFIG")
        .arg("--config")
        .arg(config_dir.join("drctl.toml"))
        .args(["generate", "kubernetes", "--output"])
        .arg(&manifest));
    assert_eq!(code, 0, "generate: {err}");
    let mut cluster =
        Cluster { root: tempfile::tempdir().unwrap(), docs: read_yaml(&manifest), secrets: BTreeMap::new(), pods: 0 };
    cluster.secrets.insert(
        ("drctl-age-identity".into(), "age.key".into()),
        age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).as_bytes().to_vec(),
    );

    // three scheduled backups, each a new pod; the source changes in between
    let backup = cluster.cronjob_pod("drctl-files-backup");
    let mut ids = Vec::new();
    for generation in 1..=3 {
        write_source(&source, generation);
        let r = cluster.run_pod(&backup, None);
        assert_eq!(r.code, 0, "backup {generation}: {}{}", r.stdout, r.stderr);
        ids.push(r.stdout.trim().to_string());
    }

    // a fresh pod sees the catalog of the earlier ones and the target holds what prune kept:
    // keep.last = 2 after the third run
    let mut list_args: Vec<String> =
        backup["containers"][0]["args"].as_array().unwrap()[..2].iter().map(|a| a.as_str().unwrap().into()).collect();
    list_args.extend(["list".into(), "files".into(), "--json".into()]);
    let r = cluster.run_pod(&backup, Some(list_args));
    assert_eq!(r.code, 0, "list: {}{}", r.stdout, r.stderr);
    for id in &ids[1..] {
        assert!(r.stdout.contains(id.as_str()), "backup {id} lost after its pod:\n{}", r.stdout);
    }
    assert!(!r.stdout.contains(ids[0].as_str()), "prune did not run in CronJob mode:\n{}", r.stdout);

    // the catalog outlived the pods, on the backup CronJob's own claim (no other pod opens it)
    let catalog = cluster.claim_dir("drctl-catalog-files-backup").join("catalog.db");
    assert!(catalog.is_file(), "the catalog is not on the claim: every run starts from an empty one");

    // the drill CronJob restores the latest backup and checks it
    let drill = cluster.cronjob_pod("drctl-files-verify");
    let r = cluster.run_pod(&drill, None);
    assert_eq!(r.code, 0, "drill: {}{}", r.stdout, r.stderr);
    assert!(cluster.claim_dir("drctl-catalog-files-verify").join("catalog.db").is_file(), "drill records lost");

    // restore from a fresh pod (the drill's template: it has the identity) into its scratch space
    let mut restore_args: Vec<String> =
        drill["containers"][0]["args"].as_array().unwrap()[..2].iter().map(|a| a.as_str().unwrap().into()).collect();
    restore_args.extend(["restore", "files", "--latest", "--to", "/tmp/restored"].map(String::from));
    let r = cluster.run_pod(&drill, Some(restore_args));
    assert_eq!(r.code, 0, "restore: {}{}", r.stdout, r.stderr);
    let restored = r.empty_dirs["tmp"].join("restored");
    assert_eq!(std::fs::read_to_string(restored.join("a.txt")).unwrap(), "generation 3\n");
    assert_eq!(std::fs::read(restored.join("sub/b.bin")).unwrap(), vec![3u8; 4096]);
}
