//! `kind = "gitlab"`: the job's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::exec::ExecConfig;
use crate::jobs::KindSettings;
use std::path::Path;

/// `kind = "gitlab"`: `gitlab-backup create` (Omnibus, also in Docker) or `backup-utility` (Helm
/// chart's toolbox pod), plus the secrets the archive leaves out (see `jobs/gitlab.toml`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabJob {
    /// Where GitLab's commands run: `"local"` (default), `{ docker = "gitlab" }` or
    /// `{ kubernetes = { namespace = "gitlab", selector = "app=toolbox" } }` (helm).
    #[serde(default)]
    pub exec: ExecConfig,
    /// `omnibus` (default: `gitlab-backup create`, Linux package or Docker image) or `helm`
    /// (`backup-utility` in the chart's toolbox pod).
    #[serde(default)]
    pub flavor: GitlabFlavor,
    /// The backup program (default `gitlab-backup`; helm `backup-utility`), e.g. a wrapper at
    /// `/usr/local/bin/gitlab-backup-wrapper`. The restore runs the same program.
    pub command: Option<String>,
    /// Parts to leave out, e.g. `["registry", "artifacts"]`: `SKIP=registry,artifacts` (omnibus) or
    /// `--skip registry --skip artifacts` (helm). Default: none.
    #[serde(default)]
    pub skip: Vec<String>,
    /// Extra arguments for the backup command, e.g. `["GZIP_RSYNCABLE=yes"]` or
    /// `["STRATEGY=copy"]` (default: none).
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// GitLab's backup directory, `gitlab_rails['backup_path']` (default `/var/opt/gitlab/backups`).
    /// helm: where a restore places the archive in the toolbox pod (default
    /// `/srv/gitlab/tmp/backup_tars`).
    pub backup_dir: Option<PathBuf>,
    /// Files bundled into the backup as the artifact `secrets`, absolute paths where `exec` runs
    /// (default `/etc/gitlab/gitlab-secrets.json` and `/etc/gitlab/gitlab.rb`; helm
    /// `/srv/gitlab/config/secrets.yml`). Every listed file must exist: a backup without
    /// gitlab-secrets.json loses CI/CD variables, 2FA and runner tokens.
    pub secrets_files: Option<Vec<PathBuf>>,
    /// Keep the archive in GitLab's backup dir (helm: in its backup bucket) after a committed
    /// upload (default false: it is removed once the backup is committed; it is always kept when
    /// the backup was not committed).
    #[serde(default)]
    pub keep_local: bool,
    /// File holding the running GitLab version, compared with the backup's before a restore (default
    /// `/opt/gitlab/embedded/service/gitlab-rails/VERSION`; helm `/srv/gitlab/VERSION`).
    pub version_file: Option<PathBuf>,
    /// Owner (`chown`) of an archive a restore places in `backup_dir` (default `git:git`, as GitLab's
    /// restore runs as `git`; `""` leaves the owner as is).
    pub archive_owner: Option<String>,
}

/// How GitLab is installed.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GitlabFlavor {
    /// Linux package (Omnibus) or the Docker image: `gitlab-backup`, `gitlab-ctl`, `gitlab-rake`.
    #[default]
    Omnibus,
    /// The GitLab Helm chart: `backup-utility` in the toolbox pod.
    Helm,
}

impl KindSettings for GitlabJob {
    // `secrets_files`, `backup_dir` and `version_file` are paths where `exec` runs, not here
    fn secret_files(&self) -> Vec<(&'static str, Option<&Path>)> {
        Vec::new()
    }
    fn resolve_paths(&mut self, _fix: &mut dyn FnMut(&mut PathBuf)) {}
    fn exec(&self) -> Option<&ExecConfig> {
        Some(&self.exec)
    }
    fn kubernetes_obstacle(&self) -> Option<String> {
        match self.exec {
            ExecConfig::Docker(_) => Some("it uses `docker exec`".into()),
            ExecConfig::Local => Some("it runs `gitlab-backup` locally (use `exec = { kubernetes = … }`)".into()),
            ExecConfig::Kubernetes(_) => None,
        }
    }
    fn needs_docker(&self) -> bool {
        matches!(self.exec, ExecConfig::Docker(_))
    }
    fn host_path(&self) -> Option<&Path> {
        None
    }
}
