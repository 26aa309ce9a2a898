//! `kind = "gitlab"`: GitLab's own backup archive plus the secrets it leaves out.
//!
//! Backup: `gitlab-backup create [SKIP=a,b] [extra_args]` (flavor `omnibus`: the Linux package,
//! locally or in the Docker image through `docker exec`), or `backup-utility [--skip a]…` (flavor
//! `helm`: the chart's toolbox pod through Kubernetes exec). The archive it made is found by the
//! backup ID the command printed ([`output`]); never by guessing the newest file. Two artifacts:
//!
//! - `archive`: `<backup_dir>/<ID>_gitlab_backup.tar` streamed out through `exec` (helm: read
//!   from the backup bucket `backup-utility` uploaded it to). While it streams, [`inspect`] reads
//!   its tar headers and `backup_information.yml`: the parts it holds, the GitLab version, what was
//!   skipped; an archive that is not a complete GitLab backup fails the run.
//! - `secrets`: `gitlab-secrets.json` and `gitlab.rb` (`secrets_files`) as a small tar
//!   ([`secrets`]). Every listed file must exist; this is checked before the long backup starts.
//!
//! After a committed backup the archive is removed from GitLab's backup dir (helm: the bucket)
//! unless `keep_local`; a backup that was not committed leaves it where it is.
//!
//! Restore ([`restore`]): refused unless the running GitLab (its `VERSION` file) is exactly the
//! backup's version, and only with `--force` (it replaces all of GitLab's data). The archive and
//! the secrets are written under temporary names and renamed only once every integrity check
//! passed; then the documented sequence runs (or `--dry-run` prints it).

mod config;
pub(crate) mod drill;
mod validate;
pub use config::{GitlabFlavor, GitlabJob};

pub mod inspect;
pub mod output;
pub mod restore;
pub mod secrets;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{ArtifactPlan, SourceStream};
use crate::exec::{ExecError, Place, argv};
use crate::{Error, Result};

pub use restore::{open_sink, plan_restore};

/// Plaintext format of the `archive` artifact (GitLab's uncompressed backup tar).
pub const FORMAT_ARCHIVE: &str = "gitlab-backup-tar";
/// Plaintext format of the `secrets` artifact (a tar of the secrets files).
pub const FORMAT_SECRETS: &str = "gitlab-secrets-tar";
const ARCHIVE: &str = "archive";
const SECRETS: &str = "secrets";

/// Facts recorded in the manifest of a gitlab backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Facts {
    /// `omnibus` or `helm`.
    pub flavor: String,
    /// GitLab's backup ID (`BACKUP=` of a restore).
    pub backup_id: String,
    /// The GitLab version that made the backup (`backup_information.yml`, else the ID).
    pub gitlab_version: String,
    /// `<ID>_gitlab_backup.tar`.
    pub archive: String,
    /// Where GitLab wrote it (a path where `exec` runs, or the bucket URL for helm).
    pub archive_location: String,
    pub archive_size: u64,
    /// Top-level entries of the archive: `db`, `repositories`, `uploads.tar.gz` …
    pub parts: Vec<String>,
    /// Parts left out (`SKIP=`), as the archive records them.
    pub skipped: Vec<String>,
    pub db_version: String,
    pub backup_created_at: String,
    pub installation_type: String,
    /// The version the `version_file` showed when the backup ran.
    pub running_version: String,
    /// The bundled secrets files (path, size, sha256; never their content).
    pub secrets_files: Vec<secrets::SecretFile>,
    /// Where the commands ran.
    pub place: String,
}

/// The job's settings with the flavor's defaults filled in.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub flavor: GitlabFlavor,
    pub program: String,
    pub backup_dir: PathBuf,
    pub secrets_files: Vec<PathBuf>,
    pub version_file: PathBuf,
    /// `chown` of a restored archive; None = leave it.
    pub owner: Option<String>,
}

impl Settings {
    pub fn new(cfg: &GitlabJob) -> Settings {
        let helm = cfg.flavor == GitlabFlavor::Helm;
        let or = |v: &Option<PathBuf>, omnibus: &str, chart: &str| {
            v.clone().unwrap_or_else(|| PathBuf::from(if helm { chart } else { omnibus }))
        };
        Settings {
            flavor: cfg.flavor,
            program: cfg
                .command
                .clone()
                .unwrap_or_else(|| if helm { "backup-utility" } else { "gitlab-backup" }.into()),
            backup_dir: or(&cfg.backup_dir, "/var/opt/gitlab/backups", "/srv/gitlab/tmp/backup_tars"),
            secrets_files: cfg.secrets_files.clone().unwrap_or_else(|| {
                if helm {
                    vec![PathBuf::from("/srv/gitlab/config/secrets.yml")]
                } else {
                    vec![PathBuf::from("/etc/gitlab/gitlab-secrets.json"), PathBuf::from("/etc/gitlab/gitlab.rb")]
                }
            }),
            version_file: or(
                &cfg.version_file,
                "/opt/gitlab/embedded/service/gitlab-rails/VERSION",
                "/srv/gitlab/VERSION",
            ),
            owner: match &cfg.archive_owner {
                Some(o) if o.is_empty() => None,
                Some(o) => Some(o.clone()),
                None if helm => None,
                None => Some("git:git".into()),
            },
        }
    }

    fn flavor_name(&self) -> &'static str {
        match self.flavor {
            GitlabFlavor::Omnibus => "omnibus",
            GitlabFlavor::Helm => "helm",
        }
    }

    /// The backup command line.
    fn create_argv(&self, cfg: &GitlabJob) -> Vec<String> {
        let mut a = vec![self.program.clone()];
        match self.flavor {
            GitlabFlavor::Omnibus => {
                a.push("create".into());
                if !cfg.skip.is_empty() {
                    a.push(format!("SKIP={}", cfg.skip.join(",")));
                }
            }
            GitlabFlavor::Helm => {
                for s in &cfg.skip {
                    a.push("--skip".into());
                    a.push(s.clone());
                }
            }
        }
        a.extend(cfg.extra_args.iter().cloned());
        a
    }
}

fn exec_err(job: &str, e: ExecError) -> Error {
    Error::source_failed(job, e.message, e.hint)
}

/// Read the running GitLab version (`version_file`) where `place` is.
pub(crate) async fn running_version(place: &Place, file: &Path) -> std::result::Result<String, String> {
    match place.output(&argv(&["cat", "--", &file.to_string_lossy()]), 4096).await {
        Ok((f, out)) if f.success && !out.trim().is_empty() => Ok(out.trim().to_string()),
        Ok((f, _)) => Err(format!("({}) {}", f.status, f.stderr)),
        Err(e) => Err(e.message),
    }
}

/// The secrets files that are missing (or not readable regular files) where `place` is.
async fn missing_files(job: &str, place: &Place, files: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut a = argv(&["sh", "-c", r#"for f; do [ -f "$f" ] && [ -r "$f" ] || printf '%s\n' "$f"; done"#, "sh"]);
    a.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
    let (f, out) = place.output(&a, 64 * 1024).await.map_err(|e| exec_err(job, e))?;
    f.check("checking the secrets files", place).map_err(|e| exec_err(job, e))?;
    Ok(out.lines().filter(|l| !l.is_empty()).map(PathBuf::from).collect())
}

/// `cause`: what reading said, when known.
fn missing_secrets_err(job: &str, place: &Place, missing: &[PathBuf], cause: Option<&str>) -> Error {
    let names = missing.iter().map(|p| format!("`{}`", p.display())).collect::<Vec<_>>().join(", ");
    let secrets_json = missing.iter().any(|p| p.file_name().is_some_and(|n| n == "gitlab-secrets.json"));
    let why = if secrets_json {
        ": without gitlab-secrets.json a restored GitLab cannot decrypt CI/CD variables, 2FA secrets or runner tokens"
    } else {
        ""
    };
    Error::source_failed(
        job,
        format!(
            "secrets file {names} missing or unreadable {}{}{why}",
            place.at(),
            cause.map(|c| format!(" ({c})")).unwrap_or_default()
        ),
        Some(
            "nothing was backed up. Check the path (`secrets_files`; in Docker usually /etc/gitlab inside the \
             container) and that drctl may read it"
                .into(),
        ),
    )
}

/// Where the archive of this run is.
#[derive(Debug, Clone)]
enum Location {
    /// A file where `exec` runs.
    File(PathBuf),
    /// An object in the chart's backup bucket (`s3://…`, `gs://…`).
    Url(String),
}

impl Location {
    fn display(&self) -> String {
        match self {
            Location::File(p) => p.display().to_string(),
            Location::Url(u) => u.clone(),
        }
    }
}

/// Commands that read (`get`) or delete (`del`) an object of the chart's backup bucket, with the
/// tools the toolbox image has (s3cmd, gsutil: backup-utility's defaults).
fn bucket_argv(url: &str, del: bool) -> Option<Vec<String>> {
    if url.starts_with("s3://") {
        Some(if del { argv(&["s3cmd", "del", url]) } else { argv(&["s3cmd", "get", url, "-"]) })
    } else if url.starts_with("gs://") {
        Some(if del { argv(&["gsutil", "rm", url]) } else { argv(&["gsutil", "cp", url, "-"]) })
    } else {
        None
    }
}

#[derive(Debug, Clone)]
struct Created {
    id: String,
    location: Location,
}

/// A gitlab backup in progress.
pub struct BackupSession {
    job: String,
    cfg: GitlabJob,
    s: Settings,
    place: Place,
    running_version: Option<String>,
    created: Option<Created>,
    inspector: Arc<Mutex<inspect::TarInspector>>,
    archive: Arc<Mutex<Option<inspect::ArchiveInfo>>>,
    secrets: Vec<secrets::SecretFile>,
}

impl BackupSession {
    /// Resolve where GitLab runs, check the backup command exists there and every secrets file
    /// is readable (before the long backup starts), read the running version.
    pub async fn prepare(job: &str, cfg: &GitlabJob) -> Result<BackupSession> {
        let s = Settings::new(cfg);
        let place = Place::resolve(&cfg.exec).await.map_err(|e| exec_err(job, e))?;
        let probe = argv(&["sh", "-c", r#"command -v "$1""#, "sh", &s.program]);
        let (f, _) = place.output(&probe, 4096).await.map_err(|e| exec_err(job, e))?;
        if !f.success {
            let hint = match s.flavor {
                GitlabFlavor::Omnibus => {
                    "is the GitLab Linux package installed there? For the Docker image use `exec = { docker = \
                     \"CONTAINER\" }`; set `command` for another program or path"
                }
                GitlabFlavor::Helm => {
                    "point `exec` at the chart's toolbox pod, e.g. `exec = { kubernetes = { namespace = \"gitlab\", \
                     selector = \"app=toolbox\" } }`; set `command` for another program or path"
                }
            };
            let detail = if f.stderr.is_empty() { String::new() } else { format!(": {}", f.stderr) };
            return Err(Error::source_failed(
                job,
                format!("`{}` not found {} ({}){detail}", s.program, place.at(), f.status),
                Some(hint.into()),
            ));
        }
        let missing = missing_files(job, &place, &s.secrets_files).await?;
        if !missing.is_empty() {
            return Err(missing_secrets_err(job, &place, &missing, None));
        }
        let running_version = running_version(&place, &s.version_file).await.ok();
        Ok(BackupSession {
            job: job.to_string(),
            cfg: cfg.clone(),
            s,
            place,
            running_version,
            created: None,
            inspector: Arc::new(Mutex::new(inspect::TarInspector::new())),
            archive: Arc::new(Mutex::new(None)),
            secrets: Vec::new(),
        })
    }

    pub fn artifacts(&self) -> Vec<ArtifactPlan> {
        vec![
            ArtifactPlan { name: ARCHIVE.into(), format: FORMAT_ARCHIVE, ext: "tar", size_hint: None },
            ArtifactPlan { name: SECRETS.into(), format: FORMAT_SECRETS, ext: "tar", size_hint: None },
        ]
    }

    pub async fn open(&mut self, artifact: &ArtifactPlan) -> Result<SourceStream> {
        match artifact.name.as_str() {
            ARCHIVE => self.open_archive().await,
            SECRETS => self.open_secrets().await,
            other => Err(Error::source_failed(&self.job, format!("no artifact `{other}` in a gitlab backup"), None)),
        }
    }

    /// Run the backup command, read its ID, and stream the archive it made.
    async fn open_archive(&mut self) -> Result<SourceStream> {
        let job = self.job.clone();
        let cmd = self.s.create_argv(&self.cfg);
        let shown = cmd.join(" ");
        tracing::info!(job = %job, command = %shown, place = %self.place.describe(), "running the GitLab backup");
        let mut remote = self.place.spawn(&cmd, false).await.map_err(|e| exec_err(&job, e))?;
        let stdout = std::mem::replace(&mut remote.stdout, Box::new(tokio::io::empty()));
        let mut lines = BufReader::new(stdout).lines();
        let mut marked: Vec<String> = Vec::new();
        let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    tracing::debug!(job = %job, "{}", line);
                    if (line.contains("Backup ")
                        || line.contains("backup archive: ")
                        || line.contains("can be found at "))
                        && marked.len() < 100
                    {
                        marked.push(line.clone());
                    }
                    tail.push_back(line);
                    if tail.len() > 8 {
                        tail.pop_front();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(Error::source_failed(&job, format!("reading the output of `{shown}`: {e}"), None));
                }
            }
        }
        let finished = remote.wait().await.map_err(|e| exec_err(&job, e))?;
        let tail_text = tail.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" / ");
        if !finished.success {
            let not_found = finished.status == "exit code 127";
            let said = if finished.stderr.is_empty() { tail_text.clone() } else { finished.stderr.clone() };
            return Err(Error::source_failed(
                &job,
                format!("`{shown}` failed {} ({}): {said}", self.place.at(), finished.status),
                Some(if not_found {
                    format!("`{}` was not found: check `command` and `exec`", self.s.program)
                } else {
                    "nothing was committed; the output above says why (disk space in the backup dir, the \
                     database, a `SKIP=` name …); fix it and run the job again"
                        .into()
                }),
            ));
        }
        let text = marked.join("\n") + "\n" + &finished.stderr;
        let parsed = match self.s.flavor {
            GitlabFlavor::Omnibus => output::omnibus_id(&text).map(|id| {
                let file = self.s.backup_dir.join(output::archive_name(&id));
                (id, Location::File(file))
            }),
            GitlabFlavor::Helm => output::helm_id(&text).map(|(id, url)| (id, Location::Url(url))),
        };
        let (id, location) = match parsed {
            Ok(x) => x,
            Err(output::NotFound::None) => {
                let expected = match self.s.flavor {
                    GitlabFlavor::Omnibus => {
                        "`Backup <ID> is done.` or `Creating backup archive: <ID>_gitlab_backup.tar`"
                    }
                    GitlabFlavor::Helm => "`[DONE] Backup can be found at s3://<bucket>/<ID>_gitlab_backup.tar`",
                };
                return Err(Error::source_failed(
                    &job,
                    format!(
                        "`{shown}` succeeded but its output names no backup ID (expected {expected}); its last lines: {}",
                        if tail_text.is_empty() { "none" } else { &tail_text }
                    ),
                    Some(
                        "nothing was committed. drctl does not guess the archive from the newest file in the backup \
                         dir: make the command print GitLab's own output (a `command` wrapper must pass stdout on; \
                         `SKIP=tar` makes no archive)"
                            .into(),
                    ),
                ));
            }
            Err(output::NotFound::Several(ids)) => {
                return Err(Error::source_failed(
                    &job,
                    format!("`{shown}` reported several backup IDs: {}", ids.join(", ")),
                    Some("nothing was committed; run the command by hand to see why".into()),
                ));
            }
        };
        tracing::info!(job = %job, backup_id = %id, archive = %location.display(), "GitLab backup created");
        self.created = Some(Created { id: id.clone(), location: location.clone() });

        let mut remote = match &location {
            Location::File(path) => {
                let check = argv(&["sh", "-c", r#"[ -f "$1" ]"#, "sh", &path.to_string_lossy()]);
                let (f, _) = self.place.output(&check, 1024).await.map_err(|e| exec_err(&job, e))?;
                if !f.success {
                    return Err(Error::source_failed(
                        &job,
                        format!(
                            "`{shown}` reported backup `{id}`, but its archive `{}` does not exist {}",
                            path.display(),
                            self.place.at()
                        ),
                        Some(
                            "nothing was committed. Set `backup_dir` to GitLab's `gitlab_rails['backup_path']` (default \
                             /var/opt/gitlab/backups); with remote upload and `backup_keep_time`, GitLab may have \
                             removed it already"
                                .into(),
                        ),
                    ));
                }
                self.place.read_file(path).await.map_err(|e| exec_err(&job, e))?
            }
            Location::Url(url) => {
                let Some(get) = bucket_argv(url, false) else {
                    return Err(Error::source_failed(
                        &job,
                        format!("backup-utility stored the archive at `{url}`, which drctl cannot read"),
                        Some("only s3:// (s3cmd) and gs:// (gsutil) buckets are supported".into()),
                    ));
                };
                self.place.spawn(&get, false).await.map_err(|e| exec_err(&job, e))?
            }
        };
        let stdout = std::mem::replace(&mut remote.stdout, Box::new(tokio::io::empty()));
        let reader = inspect::Inspect::new(stdout, self.inspector.clone());
        let (inspector, archive, place, shown_loc) =
            (self.inspector.clone(), self.archive.clone(), self.place.clone(), location.display());
        let completion = Box::pin(async move {
            let finished = remote.wait().await.map_err(|e| exec_err(&job, e))?;
            finished.check(&format!("reading `{shown_loc}`"), &place).map_err(|e| exec_err(&job, e))?;
            let verdict =
                inspector.lock().map_err(|_| Error::source_failed(&job, "archive inspector poisoned", None))?.finish();
            match verdict {
                Ok(info) => {
                    if let Ok(mut a) = archive.lock() {
                        *a = Some(info);
                    }
                    Ok(())
                }
                Err(why) => Err(Error::source_failed(
                    &job,
                    format!("`{shown_loc}` is not a complete GitLab backup archive: {why}"),
                    Some(
                        "nothing was committed; run the job again (is something else writing to the backup dir?)"
                            .into(),
                    ),
                )),
            }
        });
        Ok(SourceStream { reader: Box::new(reader), completion })
    }

    async fn open_secrets(&mut self) -> Result<SourceStream> {
        let mut files = Vec::new();
        for path in &self.s.secrets_files {
            match secrets::read(&self.place, path).await {
                Ok(data) => files.push((path.clone(), data)),
                Err(e) => {
                    return Err(missing_secrets_err(
                        &self.job,
                        &self.place,
                        std::slice::from_ref(&e.path),
                        Some(&e.message),
                    ));
                }
            }
        }
        let (tar, listed) = secrets::bundle(&files)
            .map_err(|e| Error::source_failed(&self.job, format!("bundling the secrets files: {e}"), None))?;
        self.secrets = listed;
        Ok(SourceStream { reader: Box::new(std::io::Cursor::new(tar)), completion: Box::pin(async { Ok(()) }) })
    }

    pub async fn finish(&mut self) -> Result<serde_json::Value> {
        let created = self
            .created
            .clone()
            .ok_or_else(|| Error::source_failed(&self.job, "no GitLab backup was created in this run", None))?;
        let info = self
            .archive
            .lock()
            .ok()
            .and_then(|a| a.clone())
            .ok_or_else(|| Error::source_failed(&self.job, "the archive stream did not complete", None))?;
        let get = |k: &str| info.info.get(k).cloned().unwrap_or_default();
        let gitlab_version = match get("gitlab_version") {
            v if !v.is_empty() => v,
            _ => output::version_from_id(&created.id).unwrap_or_default(),
        };
        let skipped = match info.info.get("skipped") {
            Some(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect(),
            None => self.cfg.skip.clone(),
        };
        let facts = Facts {
            flavor: self.s.flavor_name().into(),
            backup_id: created.id.clone(),
            gitlab_version,
            archive: output::archive_name(&created.id),
            archive_location: created.location.display(),
            archive_size: info.size,
            parts: info.parts.clone(),
            skipped,
            db_version: get("db_version"),
            backup_created_at: get("backup_created_at"),
            installation_type: get("installation_type"),
            running_version: self.running_version.clone().unwrap_or_default(),
            secrets_files: self.secrets.clone(),
            place: self.place.describe(),
        };
        Ok(serde_json::to_value(facts).unwrap_or_default())
    }

    /// Remove the archive from GitLab's backup dir (helm: the bucket) once the backup is committed,
    /// unless `keep_local`; keep it otherwise.
    pub async fn close(self, committed: bool) {
        let Some(created) = &self.created else { return };
        let shown = created.location.display();
        if !committed {
            tracing::warn!(job = %self.job, archive = %shown, "backup not committed: GitLab's archive is left in place");
            return;
        }
        if self.cfg.keep_local {
            tracing::info!(job = %self.job, archive = %shown, "keep_local: GitLab's archive is left in place");
            return;
        }
        let cmd = match &created.location {
            Location::File(p) => Some(argv(&["rm", "-f", "--", &p.to_string_lossy()])),
            Location::Url(u) => bucket_argv(u, true),
        };
        let Some(cmd) = cmd else { return };
        match self.place.run(&cmd).await {
            Ok(_) => {
                tracing::info!(job = %self.job, archive = %shown, "removed GitLab's archive (the backup is committed)")
            }
            Err(e) => {
                tracing::warn!(job = %self.job, archive = %shown, error = %e, "could not remove GitLab's archive")
            }
        }
    }

    /// One line for `drctl check`.
    pub fn describe(&self) -> String {
        format!(
            "`{}` found {} (GitLab {}); secrets files readable: {}; will store: {ARCHIVE}, {SECRETS}",
            self.s.program,
            self.place.at(),
            self.running_version.as_deref().unwrap_or("version unknown"),
            self.s.secrets_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    }
}
