//! Issue 12: run the rendered manifests, not just validate them. The CronJobs `drctl generate
//! kubernetes` renders are executed the way a kubelet would run their pods on this machine: the
//! host's drctl binary (no image runs here) with the container's args and env, each volume as the
//! cluster would provide it (emptyDir: a fresh empty directory per pod; PersistentVolumeClaim and
//! hostPath: a directory kept across pods; ConfigMap and Secret: files), `readOnlyRootFilesystem`
//! as a read-only root in bubblewrap with only the declared mounts writable, `runAsUser` /
//! `runAsGroup` as the real user (setpriv inside the sandbox, so file permissions apply as in a
//! pod) and `fsGroup` as the kubelet applies it (claims and emptyDirs group-owned by it, setgid
//! and group-writable; Secret files group-owned with their `defaultMode`). Then: several scheduled backups in a row (each prunes), a
//! drill, and a restore from a fresh pod, which must find every backup that was reported committed.
//!
//! Tools: `bwrap` (package bubblewrap) and PyYAML from `$DRCTL_TOOLS_DIR/venv` (to read the
//! manifests as written), both installed by `scripts/services.sh install`; a missing tool fails.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

impl Cluster {
    /// The documents of `manifest`, with the identity Secret the user creates first.
    fn with_identity(manifest: &Path, identity: &age::x25519::Identity) -> Cluster {
        let mut c = Cluster {
            root: tempfile::tempdir().unwrap(),
            docs: read_yaml(manifest),
            secrets: BTreeMap::new(),
            pods: 0,
        };
        c.secrets.insert(
            ("drctl-age-identity".into(), "age.key".into()),
            age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).as_bytes().to_vec(),
        );
        c
    }
}

/// The args of `pod`'s container for `drctl restore JOB --latest --to /tmp/restored` (its emptyDir).
fn restore_args(pod: &Value, job: &str) -> Vec<String> {
    let mut args: Vec<String> =
        pod["containers"][0]["args"].as_array().unwrap()[..2].iter().map(|a| a.as_str().unwrap().into()).collect();
    args.extend(["restore", job, "--latest", "--to", "/tmp/restored"].map(String::from));
    args
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
        let spec = self.pod_spec(pod, args);
        self.run(spec)
    }

    /// The container of a Kubernetes pod spec as a [`Spec`].
    fn pod_spec(&self, pod: &Value, args: Option<Vec<String>>) -> Spec {
        let c = &pod["containers"][0];
        let volumes: BTreeMap<String, Value> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap().to_string(), v.clone()))
            .collect();
        let mut mounts = Vec::new();
        for m in c["volumeMounts"].as_array().unwrap() {
            let name = m["name"].as_str().unwrap();
            let v = &volumes[name];
            let sub = m["subPath"].as_str().map(String::from);
            let source = if v["emptyDir"].is_object() {
                Source::Fresh(name.to_string())
            } else if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
                self.object("PersistentVolumeClaim", claim);
                Source::Kept(claim.to_string())
            } else if let Some(p) = v["hostPath"]["path"].as_str() {
                Source::Host(PathBuf::from(p))
            } else if let Some(cm) = v["configMap"]["name"].as_str() {
                let data = &self.object("ConfigMap", cm)["data"];
                let files = v["configMap"]["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| {
                        let text = data[i["key"].as_str().unwrap()].as_str().unwrap();
                        (i["path"].as_str().unwrap().to_string(), text.as_bytes().to_vec())
                    })
                    .collect();
                Source::Files(files, None)
            } else if let Some(secret) = v["secret"]["secretName"].as_str() {
                let files = self
                    .secrets
                    .iter()
                    .filter(|((s, _), _)| s == secret)
                    .map(|((_, k), b)| (k.clone(), b.clone()))
                    .collect();
                // the kubelet: a Secret's files get its defaultMode, group fsGroup
                let mode = v["secret"]["defaultMode"].as_u64().map(|m| m as u32).unwrap_or(0o644);
                let gid = pod["securityContext"]["fsGroup"].as_u64().map(|g| g as u32);
                Source::Files(files, Some(FileAttrs { mode, uid: None, gid }))
            } else {
                panic!("volume kind not simulated: {v}");
            };
            mounts.push(Mount {
                source,
                sub,
                path: m["mountPath"].as_str().unwrap().into(),
                read_only: m["readOnly"] == true,
            });
        }
        let sc = &pod["securityContext"];
        Spec {
            args: args.unwrap_or_else(|| {
                c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
            }),
            env: c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap().to_string()))
                .collect(),
            mounts,
            user: sc["runAsUser"].as_u64().map(|u| (u, sc["runAsGroup"].as_u64().unwrap_or(u))),
            fs_group: sc["fsGroup"].as_u64().map(|g| g as u32),
            read_only_root: c["securityContext"]["readOnlyRootFilesystem"] == true,
        }
    }

    /// The bubblewrap command of one container start: fresh directories for `Fresh` volumes,
    /// kept ones for `Kept`, files written for `Files`.
    fn command(&mut self, spec: &Spec) -> (Command, BTreeMap<String, PathBuf>) {
        self.pods += 1;
        let pod_dir = self.root.path().join(format!("pod-{}", self.pods));
        let mut empty_dirs = BTreeMap::new();
        let mut binds: Vec<(PathBuf, String, bool)> = Vec::new();
        for (i, m) in spec.mounts.iter().enumerate() {
            let mut src = match &m.source {
                Source::Fresh(name) => {
                    // a name may be a mount path (swarm tmpfs): never join an absolute path
                    let d = pod_dir.join("empty").join(name.trim_matches('/').replace('/', "_"));
                    std::fs::create_dir_all(&d).unwrap();
                    // the kubelet makes an emptyDir 0777 (Docker a tmpfs 1777)
                    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
                    empty_dirs.insert(name.clone(), d.clone());
                    apply_fs_group(&d, spec.fs_group);
                    d
                }
                Source::Kept(name) => {
                    let d = self.claim_dir(name);
                    apply_fs_group(&d, spec.fs_group);
                    d
                }
                Source::Host(p) => {
                    assert!(p.is_dir(), "host path `{}` (type Directory) does not exist", p.display());
                    p.clone()
                }
                Source::Files(files, attrs) => {
                    let d = pod_dir.join("files").join(i.to_string());
                    std::fs::create_dir_all(&d).unwrap();
                    for (rel, bytes) in files {
                        let f = d.join(rel);
                        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
                        std::fs::write(&f, bytes).unwrap();
                        if let Some(a) = attrs {
                            std::os::unix::fs::chown(&f, a.uid, a.gid).unwrap();
                            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(a.mode)).unwrap();
                        }
                    }
                    d
                }
            };
            if let Some(sub) = &m.sub {
                src = src.join(sub);
                assert!(src.exists(), "subPath `{sub}` of the mount at {} does not exist", m.path);
            }
            binds.push((src, m.path.clone(), m.read_only));
        }
        // parents before children, as container runtimes order mounts (runc sorts by destination)
        binds.sort_by_key(|(_, path, _)| Path::new(path).components().count());
        let mut cmd = Command::new("bwrap");
        // its own PID namespace, as a container has: when the pod (bwrap) is killed, everything in
        // it dies too (a dropped user id loses the parent-death signal)
        cmd.args(["--die-with-parent", "--unshare-pid", "--tmpfs", "/"]);
        let needed: Vec<&str> = binds.iter().map(|(_, p, _)| p.as_str()).collect();
        ro_tree(Path::new("/"), &needed, &mut cmd);
        cmd.args(["--dev", "/dev", "--proc", "/proc"]);
        let dests: Vec<PathBuf> = binds.iter().map(|(_, p, _)| PathBuf::from(p)).collect();
        for (src, path, ro) in &binds {
            // a mount point inside another mount or new in the root is created 0755, as container
            // runtimes do (bwrap alone would make it 0700, unreadable for a non-root user)
            let mut ancestors: Vec<&Path> = Path::new(path).ancestors().skip(1).collect();
            ancestors.reverse();
            for a in ancestors {
                if a != Path::new("/") && (!a.exists() || dests.iter().any(|d| a.starts_with(d) && a != d)) {
                    cmd.args(["--perms", "0755", "--dir"]).arg(a);
                }
            }
            cmd.arg(if *ro { "--ro-bind" } else { "--bind" }).arg(src).arg(path);
        }
        // the binary, where the image has it: the host path may be under a directory a pod mount
        // hides (a checkout under /tmp, behind the pod's /tmp emptyDir)
        cmd.args(["--perms", "0755", "--dir", "/drctl-image"]);
        cmd.arg("--ro-bind").arg(env!("CARGO_BIN_EXE_drctl")).arg(IMAGE_BINARY);
        if spec.read_only_root {
            cmd.args(["--remount-ro", "/"]);
        }
        match spec.user {
            Some((uid, gid)) if uid != 0 => {
                // the real user, so that permissions apply as in the pod: setpriv drops root
                // inside the sandbox (all capabilities go with the uid change)
                let groups = spec.fs_group.map(|g| g as u64).unwrap_or(gid);
                cmd.args(["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--", "setpriv"]);
                cmd.arg(format!("--reuid={uid}")).arg(format!("--regid={gid}")).arg(format!("--groups={groups}"));
            }
            // root (swarm's `user: "0:0"`): a user namespace, with root's capabilities in it
            Some((uid, gid)) => {
                cmd.args(["--unshare-user", "--uid", &uid.to_string(), "--gid", &gid.to_string()]);
            }
            None => {}
        }
        cmd.arg("--").arg(IMAGE_BINARY).args(&spec.args);
        cmd.env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin");
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        (cmd, empty_dirs)
    }

    /// Run a container to completion.
    fn run(&mut self, spec: Spec) -> Ran {
        let (mut cmd, empty_dirs) = self.command(&spec);
        let out = cmd.output().expect("bwrap missing: run `scripts/services.sh install` (package bubblewrap)");
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            empty_dirs,
        }
    }
}

/// Where a mount's content comes from.
#[derive(Clone)]
enum Source {
    /// emptyDir / tmpfs: a new empty directory per container start.
    Fresh(String),
    /// A claim or named volume: one directory kept across starts.
    Kept(String),
    /// hostPath / bind mount: the host's directory.
    Host(PathBuf),
    /// ConfigMap / Secret / swarm config or secret: these files (relative path, bytes), with
    /// the mode and owner the platform gives them (`None`: 0644, root).
    Files(Vec<(String, Vec<u8>)>, Option<FileAttrs>),
}

#[derive(Clone, Copy)]
struct FileAttrs {
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
}

#[derive(Clone)]
struct Mount {
    source: Source,
    sub: Option<String>,
    path: String,
    read_only: bool,
}

/// One container start, whatever rendered it.
#[derive(Clone)]
struct Spec {
    args: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<Mount>,
    user: Option<(u64, u64)>,
    /// The pod's `fsGroup` (Kubernetes only).
    fs_group: Option<u32>,
    read_only_root: bool,
}

/// Where the pods find drctl (the host's binary, bound read-only).
const IMAGE_BINARY: &str = "/drctl-image/drctl";

/// The image's user (deploy/Dockerfile).
const UID: u32 = 65532;
/// Directories deploy/Dockerfile creates owned by [`UID`]: a named volume mounted there starts
/// writable for drctl.
const IMAGE_DIRS: [&str; 2] = ["/var/lib/drctl", "/var/backups/drctl"];

/// What the kubelet does to a claim or emptyDir of a pod with an `fsGroup`: everything in it
/// group-owned by that group and group-writable, directories setgid (so new files inherit it).
fn apply_fs_group(dir: &Path, fs_group: Option<u32>) {
    let Some(gid) = fs_group else { return };
    fn walk(p: &Path, gid: u32) {
        let meta = std::fs::symlink_metadata(p).unwrap();
        if meta.file_type().is_symlink() {
            return;
        }
        std::os::unix::fs::lchown(p, None, Some(gid)).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        let mode = if meta.is_dir() { mode | 0o2070 } else { mode | 0o060 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        if meta.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), gid);
            }
        }
    }
    walk(dir, gid);
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

/// `drctl --config CONFIG generate ARGS --output OUT`, which must succeed.
fn generate(config: &Path, args: &[&str], out: &Path) {
    let (code, _, err) = run(Command::new(env!("CARGO_BIN_EXE_drctl"))
        .env_remove("DRCTL_CONFIG")
        .arg("--config")
        .arg(config)
        .arg("generate")
        .args(args)
        .arg("--output")
        .arg(out));
    assert_eq!(code, 0, "generate: {err}");
}

/// Under `host`: a source tree (`source`, generation 1) and a config (`config/drctl.toml` plus
/// `config/jobs/files.toml`: a volume job `files` to the fs target `local`, `keep = { last = 2 }`,
/// on a claim) with `head` added before the targets and `job_extra` to the job, as a user would
/// write it for a pod (the catalog is the default one). Returns the config file, the source and
/// the identity its recipient belongs to.
fn pod_setup(host: &Path, head: &str, job_extra: &str) -> (PathBuf, PathBuf, age::x25519::Identity) {
    let source = host.join("source");
    write_source(&source, 1);
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let config_dir = host.join("config");
    std::fs::create_dir_all(config_dir.join("jobs")).unwrap();
    std::fs::write(
        config_dir.join("drctl.toml"),
        format!(
            "[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"/secrets/age.key\"\n\n{head}\
             [deploy.targets.local]\nsize = \"1Gi\"\n\n\
             [targets.local]\ntype = \"fs\"\npath = \"/var/backups/drctl\"\nkeep = {{ last = 2 }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        config_dir.join("jobs/files.toml"),
        format!(
            "kind = \"volume\"\npath = \"{}\"\nschedule = \"0 3 * * *\"\ntargets = [\"local\"]\n{job_extra}",
            source.display()
        ),
    )
    .unwrap();
    (config_dir.join("drctl.toml"), source, identity)
}

#[test]
fn rendered_cronjobs_keep_prune_drill_and_restore() {
    let host = tempfile::tempdir().unwrap();
    // the catalog is the default one (`$DRCTL_STATE_DIR/catalog.db`), as a user leaves it
    let (config, source, identity) = pod_setup(host.path(), "", "verify = { schedule = \"0 5 * * 0\" }\n");
    let manifest = host.path().join("drctl.yaml");
    generate(&config, &["kubernetes"], &manifest);
    let mut cluster = Cluster::with_identity(&manifest, &identity);

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
    let r = cluster.run_pod(&drill, Some(restore_args(&drill, "files")));
    assert_eq!(r.code, 0, "restore: {}{}", r.stdout, r.stderr);
    let restored = r.empty_dirs["tmp"].join("restored");
    assert_eq!(std::fs::read_to_string(restored.join("a.txt")).unwrap(), "generation 3\n");
    assert_eq!(std::fs::read(restored.join("sub/b.bin")).unwrap(), vec![3u8; 4096]);
}

/// The rendered CronJobs of a chunked job (issue 17): the backup pod gets the chunk key from the
/// Secret and deduplicates across pods (the repository is on the target, the files cache in the
/// pod's state); the drill and a restore, which never get the key, read it all back.
#[test]
fn rendered_cronjobs_of_a_chunked_job_back_up_dedup_and_restore() {
    let host = tempfile::tempdir().unwrap();
    let key = host.path().join("chunk.key");
    let (code, _, err) = run(Command::new(env!("CARGO_BIN_EXE_drctl"))
        .env_remove("DRCTL_CONFIG")
        .args(["keygen", "--chunk-key"])
        .arg(&key));
    assert_eq!(code, 0, "{err}");
    let (config, source, identity) = pod_setup(
        host.path(),
        "chunk_key_file = \"/secrets/chunk.key\"\n\n",
        "storage = \"chunked\"\nverify = { schedule = \"0 5 * * 0\" }\n",
    );
    let manifest = host.path().join("drctl.yaml");
    generate(&config, &["kubernetes"], &manifest);
    let mut cluster = Cluster::with_identity(&manifest, &identity);
    cluster.secrets.insert(("drctl-secrets".into(), "chunk.key".into()), std::fs::read(&key).unwrap());

    let backup = cluster.cronjob_pod("drctl-files-backup");
    write_source(&source, 1);
    std::fs::write(source.join("big.bin"), vec![7u8; 3 << 20]).unwrap();
    let r = cluster.run_pod(&backup, None);
    assert_eq!(r.code, 0, "first backup: {}{}", r.stdout, r.stderr);
    let packs = |c: &Cluster| {
        fn count(dir: &Path) -> usize {
            std::fs::read_dir(dir).map_or(0, |rd| {
                rd.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            count(&e.path())
                        } else {
                            usize::from(e.path().extension().is_some_and(|x| x == "pack"))
                        }
                    })
                    .sum()
            })
        }
        count(&c.claim_dir("drctl-target-local"))
    };
    let first = packs(&cluster);
    assert!(first > 0, "the backup wrote packs to the target's claim");
    // a new pod, an unchanged big file: nothing of it is stored again
    write_source(&source, 2);
    let r = cluster.run_pod(&backup, None);
    assert_eq!(r.code, 0, "second backup: {}{}", r.stdout, r.stderr);
    assert!(packs(&cluster) <= first + 1, "the second pod deduplicated against the first one's packs");

    let drill = cluster.cronjob_pod("drctl-files-verify");
    assert!(!drill.to_string().contains("chunk.key"), "a drill never gets the chunk key");
    let r = cluster.run_pod(&drill, None);
    assert_eq!(r.code, 0, "drill: {}{}", r.stdout, r.stderr);
    let r = cluster.run_pod(&drill, Some(restore_args(&drill, "files")));
    assert_eq!(r.code, 0, "restore: {}{}", r.stdout, r.stderr);
    let restored = r.empty_dirs["tmp"].join("restored");
    assert_eq!(std::fs::read_to_string(restored.join("a.txt")).unwrap(), "generation 2\n");
    assert_eq!(std::fs::read(restored.join("big.bin")).unwrap(), vec![7u8; 3 << 20]);
}

// ---- the daemon: the Kubernetes Deployment (`--daemon`) and the Swarm service

const TOKEN: &str = "deploy-run-token";

/// A config for a daemon on `port`, its source directory, and the identity.
fn daemon_setup(host: &Path, port: u16) -> (PathBuf, PathBuf, age::x25519::Identity) {
    let api = format!("[api]\nlisten = \"0.0.0.0:{port}\"\ntoken_file = \"/secrets/api-token\"\n\n");
    pod_setup(host, &api, "")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A plain HTTP/1.0 request; (0, "") while nothing answers.
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    if s.read_to_string(&mut text).is_err() {
        return (0, String::new());
    }
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn ok_runs(port: u16) -> f64 {
    let text = http(port, "GET", "/metrics").1;
    let sample = "drctl_backup_runs_total{drctl_job=\"files\",result=\"ok\"} ";
    text.lines().find_map(|l| l.strip_prefix(sample)).map(|v| v.trim().parse().unwrap()).unwrap_or(0.0)
}

/// A running container, killed (SIGKILL) when dropped, also when an assertion fails.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the daemon container, have it back up three times (through its API), kill the pod
/// (SIGKILL, a node failure), then from fresh containers with the same storage: the two backups
/// `keep.last = 2` leaves are listed, and the newest restores.
fn daemon_keeps_backups(cluster: &mut Cluster, daemon: Spec, port: u16, source: &Path) {
    let (mut cmd, _) = cluster.command(&daemon);
    let log = cluster.root.path().join(format!("daemon-{}.log", cluster.pods));
    let mut child = Running(
        cmd.stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(log.with_extension("err")).unwrap()))
            .spawn()
            .expect("bwrap missing: run `scripts/services.sh install` (package bubblewrap)"),
    );
    let logs = || std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
    let ready = Instant::now();
    while http(port, "GET", "/readyz").0 != 200 {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("the daemon pod exited ({status}):\n{}", logs());
        }
        assert!(ready.elapsed() < Duration::from_secs(30), "daemon not ready:\n{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    // a fresh daemon with no backup yet backs the job up at once (catch-up): let it finish
    let started = Instant::now();
    while ok_runs(port) < 1.0 {
        assert!(started.elapsed() < Duration::from_secs(30), "no catch-up backup:\n{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(logs().contains("catch-up"), "{}", logs());
    for generation in 1..=3 {
        write_source(source, generation);
        // the previous run's metric counts before its running flag is released: a 409
        // `already_running` in between is the API's answer to that, so ask again
        let asked = Instant::now();
        let (code, body) = loop {
            let (code, body) = http(port, "POST", "/api/v1/jobs/files/run");
            if code != 409 || asked.elapsed() > Duration::from_secs(10) {
                break (code, body);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(code, 202, "{body}\n{}", logs());
        let started = Instant::now();
        while ok_runs(port) < generation as f64 + 1.0 {
            assert!(started.elapsed() < Duration::from_secs(30), "run {generation} not committed:\n{}", logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    drop(child); // the pod is killed (SIGKILL): a node failure, not a graceful stop

    let cli = |args: &[&str]| {
        let mut spec = daemon.clone();
        spec.args.truncate(2); // --config FILE
        spec.args.extend(args.iter().map(|a| a.to_string()));
        spec
    };
    let r = cluster.run(cli(&["list", "files", "--json"]));
    assert_eq!(r.code, 0, "list: {}{}", r.stdout, r.stderr);
    let listed: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        listed.len(),
        2,
        "four committed (the catch-up and three asked for), `last = 2` kept (prune after each run):\n{}\n{}",
        r.stdout,
        logs()
    );
    let r = cluster.run(cli(&["restore", "files", "--latest", "--to", "/tmp/restored"]));
    assert_eq!(r.code, 0, "restore: {}{}", r.stdout, r.stderr);
    let restored = r.empty_dirs.values().map(|d| d.join("restored")).find(|d| d.exists()).expect("restored tree");
    assert_eq!(std::fs::read_to_string(restored.join("a.txt")).unwrap(), "generation 3\n");
}

#[test]
fn rendered_daemon_deployment_keeps_backups_across_pods() {
    let host = tempfile::tempdir().unwrap();
    let port = free_port();
    let (config, source, identity) = daemon_setup(host.path(), port);
    let manifest = host.path().join("drctl.yaml");
    generate(&config, &["kubernetes", "--daemon"], &manifest);
    let mut cluster = Cluster::with_identity(&manifest, &identity);
    assert!(!cluster.docs.iter().any(|d| d["kind"] == "CronJob"), "the daemon and CronJobs would both run the job");
    cluster.secrets.insert(("drctl-secrets".into(), "api-token".into()), TOKEN.as_bytes().to_vec());
    let pod = cluster.object("Deployment", "drctl")["spec"]["template"]["spec"].clone();
    let spec = cluster.pod_spec(&pod, None);
    daemon_keeps_backups(&mut cluster, spec, port, &source);
}

#[test]
fn rendered_swarm_service_keeps_backups_across_tasks() {
    let host = tempfile::tempdir().unwrap();
    let port = free_port();
    let (config, source, identity) = daemon_setup(host.path(), port);
    let stack_file = host.path().join("config/drctl-stack.yml");
    generate(&config, &["swarm"], &stack_file);
    let stack = read_yaml(&stack_file).remove(0);
    let svc = &stack["services"]["drctl"];
    // the swarm secrets, as `docker secret create` would hold them
    let by_target: BTreeMap<&str, Vec<u8>> = BTreeMap::from([
        ("/secrets/age.key", age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).as_bytes().to_vec()),
        ("/secrets/api-token", TOKEN.as_bytes().to_vec()),
    ]);
    // configs and secrets as swarm mounts them: their `mode`, owned by their `uid`/`gid` (root
    // unless set)
    let file = |bytes: Vec<u8>, spec: &Value| {
        let id = |k: &str| Some(spec[k].as_str().map(|v| v.parse().unwrap()).unwrap_or(0));
        let mode = spec["mode"].as_u64().unwrap_or(0o444) as u32;
        Mount {
            source: Source::Files(vec![("f".into(), bytes)], Some(FileAttrs { mode, uid: id("uid"), gid: id("gid") })),
            sub: Some("f".into()),
            path: spec["target"].as_str().unwrap().into(),
            read_only: true,
        }
    };
    let mut mounts = Vec::new();
    for c in svc["configs"].as_array().unwrap() {
        let rel = stack["configs"][c["source"].as_str().unwrap()]["file"].as_str().unwrap();
        mounts.push(file(std::fs::read(host.path().join("config").join(rel)).unwrap(), c));
    }
    for sec in svc["secrets"].as_array().unwrap() {
        let target = sec["target"].as_str().unwrap();
        mounts.push(file(by_target.get(target).unwrap_or_else(|| panic!("secret {target}")).clone(), sec));
    }
    let mut cluster = Cluster { root: tempfile::tempdir().unwrap(), docs: vec![], secrets: BTreeMap::new(), pods: 0 };
    for v in svc["volumes"].as_array().unwrap() {
        let target = v["target"].as_str().unwrap().to_string();
        let source = match v["type"].as_str().unwrap() {
            "volume" => {
                // a new named volume starts as a copy of the image's directory there (Docker's
                // copy-up): owned by drctl where deploy/Dockerfile creates it, else by root
                let name = v["source"].as_str().unwrap();
                let dir = cluster.claim_dir(name);
                if IMAGE_DIRS.contains(&target.as_str()) {
                    std::os::unix::fs::chown(&dir, Some(UID), Some(UID)).unwrap();
                }
                Source::Kept(name.into())
            }
            "bind" => Source::Host(v["source"].as_str().unwrap().into()),
            "tmpfs" => Source::Fresh(target.clone()),
            other => panic!("volume type {other}"),
        };
        mounts.push(Mount { source, sub: None, path: target, read_only: v["read_only"] == true });
    }
    for t in svc["tmpfs"].as_array().into_iter().flatten() {
        let t = t.as_str().unwrap();
        mounts.push(Mount { source: Source::Fresh(t.into()), sub: None, path: t.into(), read_only: false });
    }
    let user = svc["user"].as_str().unwrap().split_once(':').map(|(u, g)| (u.parse().unwrap(), g.parse().unwrap()));
    let spec = Spec {
        args: svc["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect(),
        env: svc["environment"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect(),
        mounts,
        user,
        fs_group: None,
        read_only_root: svc["read_only"] == true,
    };
    daemon_keeps_backups(&mut cluster, spec, port, &source);
}

// ---- `drctl run JOB --prune`, the backup CronJob's command, on its own

fn manifests_in(dir: &Path) -> usize {
    fn walk(d: &Path, n: &mut usize) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, n);
            } else if p.to_string_lossy().ends_with(".manifest.json") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(dir, &mut n);
    n
}

/// `--prune` applies retention only after a run committed on every target: a partial run (one
/// target down) prunes nothing, the next complete one prunes by policy.
#[test]
fn run_prune_prunes_only_after_a_fully_committed_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let source = d.join("source");
    write_source(&source, 1);
    let other = d.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    std::fs::write(
        d.join("drctl.toml"),
        format!(
            "[catalog]\nurl = \"sqlite://{d}/catalog.db\"\n\n[encryption]\nrecipients = [\"{recipient}\"]\n\n\
             [targets.local]\ntype = \"fs\"\npath = \"{d}/local\"\nkeep = {{ last = 1 }}\n\n\
             [targets.other]\ntype = \"fs\"\npath = \"{d}/other/store\"\nkeep = {{ last = 1 }}\n\n\
             [jobs.files]\nkind = \"volume\"\npath = \"{s}\"\ntargets = [\"local\", \"other\"]\n",
            d = d.display(),
            s = source.display()
        ),
    )
    .unwrap();
    let run_prune = || {
        run(Command::new(env!("CARGO_BIN_EXE_drctl"))
            .env_remove("DRCTL_CONFIG")
            .arg("--config")
            .arg(d.join("drctl.toml"))
            .args(["run", "files", "--prune"]))
    };
    let (code, _, err) = run_prune();
    assert_eq!(code, 0, "{err}");
    // target `other` down: its directory is a file now
    std::fs::rename(&other, d.join("other.away")).unwrap();
    std::fs::write(&other, "not a directory").unwrap();
    for n in 2..=3 {
        let (code, _, err) = run_prune();
        assert_eq!(code, 3, "partial: {err}");
        assert_eq!(manifests_in(&d.join("local")), n, "a partial run pruned: {err}");
    }
    std::fs::remove_file(&other).unwrap();
    std::fs::rename(d.join("other.away"), &other).unwrap();
    let (code, _, err) = run_prune();
    assert_eq!(code, 0, "{err}");
    assert_eq!(manifests_in(&d.join("local")), 1, "`last = 1` after a complete run: {err}");
    assert_eq!(manifests_in(&other.join("store")), 1, "{err}");
}
