//! `kind = "gitlab"` end to end, against the stand-ins in tests/standins/gitlab (GitLab cannot run
//! here): `gitlab-backup` writes and reads the real archive format and prints GitLab's own output
//! lines, `gitlab-ctl` and `gitlab-rake` record their calls, and the `docker` stand-in runs
//! `docker exec` here. The Helm chart's toolbox pod (`backup-utility`, `s3cmd` against a local
//! directory that plays the backup bucket) is reached through the stand-in Kubernetes API server.

mod common;
#[path = "common/kubeapi.rs"]
mod kubeapi;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::{Digest as _, Sha256};

const SECRETS_JSON: &str =
    "{\"gitlab_rails\":{\"secret_key_base\":\"abc\",\"db_key_base\":\"def\",\"otp_key_base\":\"ghi\"}}\n";
const GITLAB_RB: &str = "external_url 'https://git.example.com'\ngitlab_rails['backup_keep_time'] = 604800\n";

fn standins() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standins")
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn whoami() -> String {
    let id =
        |a: &str| String::from_utf8(Command::new("id").arg(a).output().unwrap().stdout).unwrap().trim().to_string();
    format!("{}:{}", id("-un"), id("-gn"))
}

/// A scratch GitLab: backup dir, /etc/gitlab, VERSION file, call log, and a config with job `gitlab`.
struct Lab {
    s: Scratch,
    mode: Option<&'static str>,
}

impl Lab {
    fn new(job_extra: &str) -> Lab {
        Self::with(job_extra, "[\"local\"]", "")
    }

    fn with(job_extra: &str, targets: &str, head_extra: &str) -> Lab {
        let s = Scratch::new();
        std::fs::create_dir_all(s.path("etc")).unwrap();
        std::fs::create_dir_all(s.path("backups-gitlab")).unwrap();
        std::fs::write(s.path("etc/gitlab-secrets.json"), SECRETS_JSON).unwrap();
        std::fs::write(s.path("etc/gitlab.rb"), GITLAB_RB).unwrap();
        std::fs::write(s.path("VERSION"), "16.5.1\n").unwrap();
        let config = format!(
            "{head}{head_extra}[jobs.gitlab]\nkind = \"gitlab\"\ntargets = {targets}\nbackup_dir = \"{bd}\"\n\
             secrets_files = [\"{etc}/gitlab-secrets.json\", \"{etc}/gitlab.rb\"]\nversion_file = \"{vf}\"\n\
             archive_owner = \"{owner}\"\nskip = [\"registry\", \"pages\"]\n{job_extra}\n",
            head = s.head(),
            bd = s.path("backups-gitlab").display(),
            etc = s.path("etc").display(),
            vf = s.path("VERSION").display(),
            owner = whoami(),
        );
        s.write_config(&config);
        Lab { s, mode: None }
    }

    /// drctl with the stand-ins first in PATH and configured through the environment.
    fn drctl(&self) -> Command {
        let mut c = self.s.drctl();
        let path = format!("{}:{}", standins().join("gitlab").display(), std::env::var("PATH").unwrap_or_default());
        c.env("PATH", path)
            .env("GITLAB_STANDIN_BACKUP_DIR", self.s.path("backups-gitlab"))
            .env("GITLAB_STANDIN_LOG", self.s.path("calls.log"))
            .env("GITLAB_STANDIN_SECRETS", self.s.path("etc/gitlab-secrets.json"))
            .env("GITLAB_STANDIN_VERSION", "16.5.1")
            .env("DRCTL_DOCKER", standins().join("docker"))
            .env("DRCTL_STANDIN_CONTAINERS", "gitlab")
            .env("DRCTL_STANDIN_LOG", self.s.path("docker.log"));
        if let Some(m) = self.mode {
            c.env("GITLAB_STANDIN_MODE", m);
        }
        c
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.s.path("calls.log")).unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// `(id, sha256)` of the archive the stand-in created.
    fn created(&self) -> (String, String) {
        let line = self.log().into_iter().find(|l| l.starts_with("created ")).expect("an archive was created");
        let (id, sum) = line["created ".len()..].split_once(" sha256=").unwrap();
        (id.to_string(), sum.to_string())
    }

    /// Files in GitLab's backup dir.
    fn backup_dir(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.s.path("backups-gitlab"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn manifests(&self) -> Vec<serde_json::Value> {
        self.s
            .fs_files()
            .iter()
            .filter(|f| f.ends_with(".manifest.json"))
            .map(|f| serde_json::from_slice(&std::fs::read(self.s.path("backups").join(f)).unwrap()).unwrap())
            .collect()
    }

    /// The plaintext of artifact `name` of the newest backup, restored with `--output`.
    fn restored(&self, name: &str) -> Vec<u8> {
        let out = self.s.path(&format!("restored-{name}"));
        let r = run(self.drctl().args(["restore", "gitlab", "--latest", "--artifact", name, "--output"]).arg(&out));
        assert_eq!(r.code, 0, "{r:?}");
        std::fs::read(&out).unwrap()
    }

    fn backup(&self) -> Ran {
        let r = run(self.drctl().args(["run", "gitlab"]));
        assert_eq!(r.code, 0, "{r:?}");
        r
    }
}

fn tar_entries(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut ar = tar::Archive::new(tar);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (name, data)
        })
        .collect()
}

#[test]
fn backup_records_facts_stores_archive_and_secrets_and_removes_the_local_archive() {
    let lab = Lab::new("");
    lab.backup();
    let (id, archive_sha) = lab.created();
    assert!(lab.log()[0] == "gitlab-backup create SKIP=registry,pages", "{:?}", lab.log());

    let m = &lab.manifests()[0];
    let f = &m["facts"];
    assert_eq!(f["backup_id"], id.as_str());
    assert_eq!(f["gitlab_version"], "16.5.1");
    assert_eq!(f["running_version"], "16.5.1");
    assert_eq!(f["flavor"], "omnibus");
    assert_eq!(f["archive"], format!("{id}_gitlab_backup.tar").as_str());
    assert_eq!(f["skipped"], serde_json::json!(["registry", "pages"]));
    assert_eq!(f["installation_type"], "omnibus-gitlab");
    let parts: Vec<&str> = f["parts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    for p in
        ["db", "repositories", "uploads.tar.gz", "builds.tar.gz", "artifacts.tar.gz", "lfs.tar.gz", "packages.tar.gz"]
    {
        assert!(parts.contains(&p), "{p} in {parts:?}");
    }
    assert!(
        !parts.contains(&"registry.tar.gz")
            && !parts.contains(&"pages.tar.gz")
            && !parts.contains(&"backup_information.yml")
    );
    let names: Vec<&str> = m["artifacts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["archive", "secrets"]);
    let secrets = f["secrets_files"].as_array().unwrap();
    assert_eq!(secrets.len(), 2);
    assert_eq!(secrets[0]["sha256"], sha(SECRETS_JSON.as_bytes()).as_str());
    assert!(!m.to_string().contains("secret_key_base"), "no secret content in the manifest");

    // committed: GitLab's copy is gone
    assert!(lab.backup_dir().is_empty(), "{:?}", lab.backup_dir());

    // the stored archive decrypts to exactly the tar GitLab wrote
    assert_eq!(sha(&lab.restored("archive")), archive_sha);

    // and the secrets bundle holds both files
    let entries = tar_entries(&lab.restored("secrets"));
    assert_eq!(entries.len(), 2);
    assert!(entries[0].0.ends_with("etc/gitlab-secrets.json") && entries[0].1 == SECRETS_JSON.as_bytes());
    assert!(entries[1].0.ends_with("etc/gitlab.rb") && entries[1].1 == GITLAB_RB.as_bytes());
}

#[test]
fn keep_local_keeps_the_archive() {
    let lab = Lab::new("keep_local = true");
    lab.backup();
    let (id, _) = lab.created();
    assert_eq!(lab.backup_dir(), [format!("{id}_gitlab_backup.tar")]);
}

#[test]
fn a_failed_upload_keeps_the_archive_and_commits_nothing() {
    let lab = Lab::with("", "[\"broken\"]", "");
    std::fs::write(lab.s.path("not-a-dir"), "x").unwrap();
    let cfg = std::fs::read_to_string(lab.s.config_path()).unwrap();
    let broken = format!("[targets.broken]\ntype = \"fs\"\npath = \"{}/sub\"\n\n", lab.s.path("not-a-dir").display());
    lab.s.write_config(&cfg.replace("[jobs.gitlab]", &format!("{broken}[jobs.gitlab]")));
    let r = run(lab.drctl().args(["run", "gitlab"]));
    assert_ne!(r.code, 0, "{r:?}");
    let (id, _) = lab.created();
    assert_eq!(
        lab.backup_dir(),
        [format!("{id}_gitlab_backup.tar")],
        "GitLab's archive stays when nothing was committed"
    );
}

#[test]
fn output_without_a_backup_id_fails_and_commits_nothing() {
    let mut lab = Lab::new("");
    lab.mode = Some("noid");
    let r = run(lab.drctl().args(["run", "gitlab"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("job `gitlab`") && r.stderr.contains("names no backup ID"), "{r:?}");
    assert!(r.stderr.contains("does not guess"), "{r:?}");
    assert!(lab.manifests().is_empty());
    assert!(lab.s.fs_files().is_empty(), "{:?}", lab.s.fs_files());
    // the archive it did write is left alone (drctl never guessed it was this run's)
    assert_eq!(lab.backup_dir().len(), 1);
}

#[test]
fn a_missing_gitlab_secrets_json_fails_before_gitlab_runs() {
    let lab = Lab::new("");
    std::fs::remove_file(lab.s.path("etc/gitlab-secrets.json")).unwrap();
    let r = run(lab.drctl().args(["run", "gitlab"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("gitlab-secrets.json") && r.stderr.contains("2FA"), "{r:?}");
    assert!(lab.log().is_empty(), "gitlab-backup must not have run: {:?}", lab.log());
    assert!(lab.s.fs_files().is_empty());
}

#[test]
fn command_failure_missing_command_and_missing_archive_are_clear_errors() {
    let mut lab = Lab::new("");
    lab.mode = Some("fail");
    let r = run(lab.drctl().args(["run", "gitlab"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("`gitlab-backup create SKIP=registry,pages` failed on this host (exit code 1)"), "{r:?}");
    assert!(r.stderr.contains("pg_dump: error: connection to server"), "{r:?}");

    lab.mode = Some("nofile");
    let r = run(lab.drctl().args(["run", "gitlab"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("_gitlab_backup.tar` does not exist on this host"), "{r:?}");
    assert!(r.stderr.contains("backup_dir"), "{r:?}");
    assert!(lab.manifests().is_empty());

    let lab = Lab::new("command = \"gitlab-backup-nonexistent\"");
    let r = run(lab.drctl().args(["run", "gitlab"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("`gitlab-backup-nonexistent` not found on this host"), "{r:?}");
    assert!(r.stderr.contains("command"), "{r:?}");
}

/// Back up, then change the live secrets so a restore must put the backed-up ones back.
fn backed_up_lab() -> (Lab, String, String) {
    let lab = Lab::new("");
    lab.backup();
    let (id, archive_sha) = lab.created();
    std::fs::write(lab.s.path("etc/gitlab-secrets.json"), "{\"changed\":true}\n").unwrap();
    std::fs::remove_file(lab.s.path("etc/gitlab.rb")).unwrap();
    std::fs::remove_file(lab.s.path("calls.log")).unwrap();
    (lab, id, archive_sha)
}

fn no_partials(lab: &Lab) {
    for d in ["etc", "backups-gitlab"] {
        for e in std::fs::read_dir(lab.s.path(d)).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!n.contains("drctl-partial") && !n.ends_with(".partial"), "leftover {d}/{n}");
        }
    }
}

#[test]
fn restore_dry_run_prints_the_documented_steps_and_changes_nothing() {
    let (lab, id, _) = backed_up_lab();
    let r = run(lab.drctl().args(["restore", "gitlab", "--latest", "--dry-run"]));
    assert_eq!(r.code, 0, "{r:?}");
    let all = format!("{}{}", r.stdout, r.stderr);
    for want in [
        format!("{id}_gitlab_backup.tar"),
        "1. `gitlab-ctl reconfigure`".to_string(),
        "2. `gitlab-ctl stop puma`".to_string(),
        "3. `gitlab-ctl stop sidekiq`".to_string(),
        format!("4. `GITLAB_ASSUME_YES=1 gitlab-backup restore BACKUP={id}`"),
        "5. `gitlab-ctl reconfigure`".to_string(),
        "6. `gitlab-ctl restart`".to_string(),
        "7. `gitlab-rake gitlab:check SANITIZE=true`".to_string(),
        "needs --force".to_string(),
    ] {
        assert!(all.contains(&want), "missing {want:?} in {all}");
    }
    assert!(lab.log().is_empty(), "{:?}", lab.log());
    assert!(lab.backup_dir().is_empty());
    assert_eq!(std::fs::read_to_string(lab.s.path("etc/gitlab-secrets.json")).unwrap(), "{\"changed\":true}\n");
}

#[test]
fn restore_puts_archive_and_secrets_back_then_runs_the_steps_in_order() {
    let (lab, id, archive_sha) = backed_up_lab();

    // without --force: refused, nothing changed
    let r = run(lab.drctl().args(["restore", "gitlab", "--latest"]));
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("--force"), "{r:?}");
    assert!(lab.log().is_empty() && lab.backup_dir().is_empty(), "{:?} {:?}", lab.log(), lab.backup_dir());
    assert!(!lab.s.path("etc/gitlab.rb").exists());

    let r = run(lab.drctl().args(["restore", "gitlab", "--latest", "--force"]));
    assert_eq!(r.code, 0, "{r:?}");
    let secrets = sha(SECRETS_JSON.as_bytes());
    let want = vec![
        format!("gitlab-ctl reconfigure secrets={secrets}"),
        "gitlab-ctl stop puma".to_string(),
        "gitlab-ctl stop sidekiq".to_string(),
        format!("gitlab-backup restore BACKUP={id}"),
        format!("restored {id} sha256={archive_sha} owner={}", whoami()),
        format!("gitlab-ctl reconfigure secrets={secrets}"),
        "gitlab-ctl restart".to_string(),
        "gitlab-rake gitlab:check SANITIZE=true".to_string(),
        "gitlab-rake gitlab:doctor:secrets".to_string(),
    ];
    assert_eq!(lab.log(), want);
    assert_eq!(std::fs::read_to_string(lab.s.path("etc/gitlab-secrets.json")).unwrap(), SECRETS_JSON);
    assert_eq!(std::fs::read_to_string(lab.s.path("etc/gitlab.rb")).unwrap(), GITLAB_RB);
    assert_eq!(lab.backup_dir(), [format!("{id}_gitlab_backup.tar")]);
    no_partials(&lab);
}

#[test]
fn a_version_mismatch_refuses_the_restore_and_changes_nothing() {
    let (lab, _, _) = backed_up_lab();
    std::fs::write(lab.s.path("VERSION"), "16.5.2\n").unwrap();
    let r = run(lab.drctl().args(["restore", "gitlab", "--latest", "--force"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("made by GitLab 16.5.1, but GitLab 16.5.2 runs on this host"), "{r:?}");
    assert!(r.stderr.contains("Install GitLab 16.5.1"), "{r:?}");
    assert!(lab.log().is_empty(), "{:?}", lab.log());
    assert!(lab.backup_dir().is_empty(), "{:?}", lab.backup_dir());
    assert_eq!(std::fs::read_to_string(lab.s.path("etc/gitlab-secrets.json")).unwrap(), "{\"changed\":true}\n");
    assert!(!lab.s.path("etc/gitlab.rb").exists());
    no_partials(&lab);

    // the dry run refuses as well
    let r = run(lab.drctl().args(["restore", "gitlab", "--latest", "--dry-run"]));
    assert_eq!(r.code, 1, "{r:?}");
}

#[test]
fn backup_and_restore_through_docker_exec() {
    let lab = Lab::new("exec = { docker = \"gitlab\" }");
    lab.backup();
    let (id, archive_sha) = lab.created();
    let docker = std::fs::read_to_string(lab.s.path("docker.log")).unwrap();
    assert!(
        docker.contains("docker exec --interactive=false gitlab gitlab-backup create SKIP=registry,pages"),
        "{docker}"
    );
    assert!(
        docker.contains(&format!(
            "docker exec --interactive=false gitlab cat -- {}",
            lab.s.path("backups-gitlab").join(format!("{id}_gitlab_backup.tar")).display()
        )),
        "{docker}"
    );
    assert!(docker.contains("docker exec --interactive=false gitlab rm -f -- "), "{docker}");
    assert!(lab.backup_dir().is_empty());

    std::fs::write(lab.s.path("etc/gitlab-secrets.json"), "{}").unwrap();
    let r = run(lab.drctl().args(["restore", "gitlab", "--latest", "--force"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(lab.log().contains(&format!("restored {id} sha256={archive_sha} owner={}", whoami())), "{:?}", lab.log());
    assert_eq!(std::fs::read_to_string(lab.s.path("etc/gitlab-secrets.json")).unwrap(), SECRETS_JSON);
    let docker = std::fs::read_to_string(lab.s.path("docker.log")).unwrap();
    assert!(docker.contains("docker exec --interactive=false gitlab gitlab-ctl stop puma"), "{docker}");
    assert!(docker.contains("docker exec -i gitlab sh -c"), "{docker}");
}

const RAILS_SECRETS: &str = "production:\n  secret_key_base: abc\n  db_key_base: def\n  otp_key_base: ghi\n";

/// The Helm chart's toolbox pod: `backup-utility` and `s3cmd` (tests/standins/gitlab) run through
/// the stand-in Kubernetes API server, which runs exec'd commands on this host with the "pod"
/// environment given to it (the stand-ins first on PATH, their settings).
#[test]
fn helm_backup_and_restore_through_the_toolbox_pod() {
    let s = Scratch::new();
    for d in ["bucket", "tars", "config"] {
        std::fs::create_dir_all(s.path(d)).unwrap();
    }
    std::fs::write(s.path("config/secrets.yml"), RAILS_SECRETS).unwrap();
    std::fs::write(s.path("VERSION"), "16.5.1\n").unwrap();
    let path = format!("{}:{}", standins().join("gitlab").display(), std::env::var("PATH").unwrap_or_default());
    // the "pod" environment: the stand-ins first on PATH, and their settings
    let env: Vec<(String, String)> = [
        ("PATH", path),
        ("GITLAB_STANDIN_BUCKET_DIR", s.path("bucket").display().to_string()),
        ("GITLAB_STANDIN_LOG", s.path("calls.log").display().to_string()),
        ("GITLAB_STANDIN_VERSION", "16.5.1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let api = kubeapi::KubeApi::start(
        vec![
            kubeapi::FakePod::running("gitlab", "gitlab-webservice-0", &[("app", "webservice")], &["webservice"]),
            kubeapi::FakePod::running("gitlab", "gitlab-toolbox-0", &[("app", "toolbox")], &["toolbox"]),
        ],
        kubeapi::Behaviour { env, ..Default::default() },
    );
    let kubeconfig = api.write_kubeconfig(&s.path(""), "gitlab");
    let config = |extra: &str| {
        s.write_config(&format!(
            "{head}[jobs.gitlab]\nkind = \"gitlab\"\ntargets = [\"local\"]\nflavor = \"helm\"\n\
             exec = {{ kubernetes = {{ namespace = \"gitlab\", selector = \"app=toolbox\" }} }}\n\
             backup_dir = \"{tars}\"\nsecrets_files = [\"{secrets}\"]\nversion_file = \"{vf}\"\n\
             skip = [\"registry\", \"pages\"]\n{extra}\n",
            head = s.head(),
            tars = s.path("tars").display(),
            secrets = s.path("config/secrets.yml").display(),
            vf = s.path("VERSION").display(),
        ))
    };
    let drctl = || {
        let mut c = s.drctl();
        c.env("KUBECONFIG", &kubeconfig);
        c
    };
    let log = || -> Vec<String> {
        std::fs::read_to_string(s.path("calls.log")).unwrap_or_default().lines().map(str::to_string).collect()
    };
    let ls = |d: &str| {
        let mut v: Vec<String> = std::fs::read_dir(s.path(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let created = || {
        let line = log().into_iter().rfind(|l| l.starts_with("created ")).expect("an archive was created");
        let (id, sum) = line["created ".len()..].split_once(" sha256=").unwrap();
        (id.to_string(), sum.to_string())
    };
    let manifests = || -> Vec<serde_json::Value> {
        let mut m: Vec<serde_json::Value> = s
            .fs_files()
            .iter()
            .filter(|f| f.ends_with(".manifest.json"))
            .map(|f| serde_json::from_slice(&std::fs::read(s.path("backups").join(f)).unwrap()).unwrap())
            .collect();
        m.sort_by_key(|m| m["facts"]["backup_id"].as_str().unwrap_or_default().to_string());
        m
    };

    // backup: backup-utility in the pod, the archive read back from the bucket, then removed from it
    config("");
    let r = run(drctl().args(["run", "gitlab"]));
    assert_eq!(r.code, 0, "{r:?}");
    let (id, archive_sha) = created();
    let url = format!("s3://gitlab-backups/{id}_gitlab_backup.tar");
    assert_eq!(
        log(),
        [
            "backup-utility --skip registry --skip pages".to_string(),
            format!("created {id} sha256={archive_sha}"),
            format!("s3cmd get {url} -"),
            format!("s3cmd del {url}"),
        ]
    );
    assert!(ls("bucket").is_empty(), "committed: removed from the bucket: {:?}", ls("bucket"));
    let execs = api.execs();
    assert!(execs.iter().all(|e| e.namespace == "gitlab" && e.pod == "gitlab-toolbox-0"), "{execs:?}");
    let cmds: Vec<String> = execs.iter().map(|e| e.command.join(" ")).collect();
    let at = |c: &str| cmds.iter().position(|x| x == c).unwrap_or_else(|| panic!("no exec `{c}` in {cmds:?}"));
    assert!(at("backup-utility --skip registry --skip pages") < at(&format!("s3cmd get {url} -")), "{cmds:?}");
    assert!(at(&format!("s3cmd get {url} -")) < at(&format!("s3cmd del {url}")), "{cmds:?}");

    let m = &manifests()[0];
    let f = &m["facts"];
    assert_eq!(f["flavor"], "helm");
    assert_eq!(f["backup_id"], id.as_str());
    assert_eq!(f["gitlab_version"], "16.5.1");
    assert_eq!(f["running_version"], "16.5.1");
    assert_eq!(f["archive"], format!("{id}_gitlab_backup.tar").as_str());
    assert_eq!(f["archive_location"], url.as_str());
    assert_eq!(f["installation_type"], "gitlab-helm-chart");
    assert_eq!(f["skipped"], serde_json::json!(["registry", "pages"]));
    assert_eq!(f["place"], "pod gitlab/gitlab-toolbox-0");
    let parts: Vec<&str> = f["parts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    for p in ["db", "repositories", "uploads.tar.gz", "builds.tar.gz", "artifacts.tar.gz", "lfs.tar.gz"] {
        assert!(parts.contains(&p), "{p} in {parts:?}");
    }
    assert!(!parts.contains(&"registry.tar.gz") && !parts.contains(&"pages.tar.gz"), "{parts:?}");
    assert_eq!(f["secrets_files"][0]["sha256"], sha(RAILS_SECRETS.as_bytes()).as_str());
    assert!(!m.to_string().contains("secret_key_base"), "no secret content in the manifest");

    // the stored archive is exactly what backup-utility uploaded
    let out = s.path("restored.tar");
    let r = run(drctl().args(["restore", "gitlab", "--latest", "--artifact", "archive", "--output"]).arg(&out));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(sha(&std::fs::read(&out).unwrap()), archive_sha);

    // keep_local: the object stays in the bucket
    std::fs::remove_file(s.path("calls.log")).unwrap();
    config("keep_local = true");
    std::thread::sleep(std::time::Duration::from_millis(1100)); // a new second: a new backup ID
    let r = run(drctl().args(["run", "gitlab"]));
    assert_eq!(r.code, 0, "{r:?}");
    let (id, archive_sha) = created();
    assert_eq!(ls("bucket"), [format!("{id}_gitlab_backup.tar")]);
    assert!(!log().iter().any(|l| l.starts_with("s3cmd del")), "{:?}", log());
    assert_eq!(manifests().len(), 2);
    std::fs::remove_file(s.path("calls.log")).unwrap();
    std::fs::write(s.path("config/secrets.yml"), "production: {}\n").unwrap();
    let archive = s.path("tars").join(format!("{id}_gitlab_backup.tar"));

    // --dry-run prints the steps and changes nothing
    let r = run(drctl().args(["restore", "gitlab", "--latest", "--dry-run"]));
    assert_eq!(r.code, 0, "{r:?}");
    let all = format!("{}{}", r.stdout, r.stderr);
    for want in [
        archive.display().to_string(),
        format!("1. `backup-utility --restore -f file://{}`", archive.display()),
        format!("drctl-secrets-{id}"),
        "needs --force".to_string(),
    ] {
        assert!(all.contains(&want), "missing {want:?} in {all}");
    }
    assert!(log().is_empty(), "{:?}", log());
    assert!(ls("tars").is_empty(), "{:?}", ls("tars"));

    // without --force: refused, nothing changed
    let r = run(drctl().args(["restore", "gitlab", "--latest"]));
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("--force"), "{r:?}");
    assert!(log().is_empty() && ls("tars").is_empty(), "{:?} {:?}", log(), ls("tars"));

    // restore: the archive placed in the pod, then `backup-utility --restore -f file://…`
    let before = api.execs().len();
    let r = run(drctl().args(["restore", "gitlab", "--latest", "--force"]));
    assert_eq!(r.code, 0, "{r:?}");
    let restore = format!("backup-utility --restore -f file://{}", archive.display());
    assert_eq!(log(), [restore.clone(), format!("restored {id} sha256={archive_sha}")]);
    assert_eq!(sha(&std::fs::read(&archive).unwrap()), archive_sha);
    let staged = s
        .path("tars")
        .join(format!("drctl-secrets-{id}"))
        .join(s.path("config/secrets.yml").to_string_lossy().trim_start_matches('/'));
    assert_eq!(std::fs::read_to_string(&staged).unwrap(), RAILS_SECRETS, "the rails secret is staged");
    assert_eq!(
        std::fs::read_to_string(s.path("config/secrets.yml")).unwrap(),
        "production: {}\n",
        "a Kubernetes Secret: not replaced through exec"
    );
    assert!(r.stderr.contains("rails-secret"), "the log says how to restore the rails secret: {r:?}");
    let execs = &api.execs()[before..];
    assert!(execs.iter().all(|e| e.pod == "gitlab-toolbox-0"), "{execs:?}");
    let cmds: Vec<String> = execs.iter().map(|e| e.command.join(" ")).collect();
    let placed = cmds
        .iter()
        .position(|c| c.starts_with("sh -c mv -f -- ") && c.contains(&format!("{id}_gitlab_backup.tar")))
        .unwrap_or_else(|| panic!("the archive was not renamed into place: {cmds:?}"));
    let ran = cmds.iter().position(|c| *c == restore).unwrap_or_else(|| panic!("no `{restore}` in {cmds:?}"));
    assert!(placed < ran, "the archive is in place before backup-utility restores it: {cmds:?}");
    assert!(cmds.iter().any(|c| c.starts_with("sh -c umask 077") && c.contains(".partial")), "{cmds:?}");
    assert_eq!(ls("tars"), [format!("{id}_gitlab_backup.tar"), format!("drctl-secrets-{id}")]);
    for e in walk(&s.path("tars")) {
        assert!(!e.contains("drctl-partial") && !e.ends_with(".partial"), "leftover {e}");
    }
}

/// Every path under `dir`.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p.display().to_string());
    }
    out
}

#[test]
fn chunked_storage_stores_the_archive_and_the_secrets_as_they_were() {
    let lab = Lab::new("storage = \"chunked\"");
    let config = std::fs::read_to_string(lab.s.config_path()).unwrap();
    lab.s.write_config(&lab.s.with_chunk_key(&config));
    lab.backup();
    let (_, archive_sha) = lab.created();
    let m = &lab.manifests()[0];
    assert_eq!(m["version"], 2);
    assert!(m["artifacts"].as_array().unwrap().iter().all(|a| a["chunked"]["chunk_count"].as_u64() >= Some(1)));
    assert_eq!(sha(&lab.restored("archive")), archive_sha);
    let entries = tar_entries(&lab.restored("secrets"));
    assert!(entries[0].0.ends_with("etc/gitlab-secrets.json") && entries[0].1 == SECRETS_JSON.as_bytes());
}
