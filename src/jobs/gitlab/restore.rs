//! Restoring a gitlab backup into the job's own GitLab, following GitLab's documented procedure.
//!
//! Omnibus (Linux package, also in Docker) — "Restore for Linux package installations":
//!
//! 1. artifact `archive`: written to `<backup_dir>/.drctl-<ID>_gitlab_backup.tar.partial`,
//!    renamed to `<ID>_gitlab_backup.tar` and `chown git:git` once every check passed;
//! 2. artifact `secrets`: each file written beside its destination under a temporary name, renamed
//!    over gitlab-secrets.json / gitlab.rb once every check passed; then
//! 3. `gitlab-ctl reconfigure` (the docs: reconfigure after copying the secrets file back),
//!    `gitlab-ctl stop puma`, `gitlab-ctl stop sidekiq`,
//!    `GITLAB_ASSUME_YES=1 gitlab-backup restore BACKUP=<ID>`, `gitlab-ctl reconfigure`,
//!    `gitlab-ctl restart` (starts puma and sidekiq again; in Docker the equivalent of restarting the
//!    container), `gitlab-rake gitlab:check SANITIZE=true`, `gitlab-rake gitlab:doctor:secrets`.
//!
//! Helm: the archive is placed in the toolbox pod (`backup_dir`, default
//! `/srv/gitlab/tmp/backup_tars`) and restored with `backup-utility --restore -f file://<path>`:
//! `-t <ID>` would fetch it from the backup bucket, which drctl does not write to. The rails
//! secret is a Kubernetes Secret that pod exec cannot replace: the bundled `secrets.yml` is staged
//! in `<backup_dir>/drctl-secrets-<ID>/` and the log says which kubectl commands restore it.
//!
//! Nothing is applied before the engine's commit: a dropped commit removes the temporary files.
//! Refused up front (nothing changed): a running GitLab of another version than the backup's,
//! `--to`/`--to-dir`, and without `--force`.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::{FORMAT_ARCHIVE, FORMAT_SECRETS, Facts, Settings, output, running_version, secrets};
use crate::exec::{Place, argv, sh_quote};
use crate::jobs::gitlab::GitlabFlavor;
use crate::jobs::gitlab::GitlabJob;
use crate::jobs::{RestoreOptions, RestoreStep, Sink};
use crate::manifest::{Artifact, Manifest};
use crate::{Error, Result};

/// Largest secrets bundle accepted on restore.
const MAX_BUNDLE: u64 = 64 * 1024 * 1024;

/// Everything a restore step needs, checked before anything is touched.
struct Ctx {
    s: Settings,
    place: Place,
    id: String,
    version: String,
}

impl Ctx {
    fn archive_path(&self) -> PathBuf {
        self.s.backup_dir.join(output::archive_name(&self.id))
    }

    fn archive_tmp(&self) -> PathBuf {
        self.s.backup_dir.join(format!(".drctl-{}.partial", output::archive_name(&self.id)))
    }

    /// Where a restored secrets file goes: its own path (omnibus) or a staging dir (helm).
    fn secrets_dest(&self, path: &Path) -> PathBuf {
        match self.s.flavor {
            GitlabFlavor::Omnibus => path.to_path_buf(),
            GitlabFlavor::Helm => {
                self.s.backup_dir.join(format!("drctl-secrets-{}", self.id)).join(secrets::entry_name(path))
            }
        }
    }

    /// The commands run after the secrets are back, in order.
    fn steps(&self) -> Vec<Vec<String>> {
        match self.s.flavor {
            GitlabFlavor::Omnibus => vec![
                argv(&["gitlab-ctl", "reconfigure"]),
                argv(&["gitlab-ctl", "stop", "puma"]),
                argv(&["gitlab-ctl", "stop", "sidekiq"]),
                argv(&["env", "GITLAB_ASSUME_YES=1", &self.s.program, "restore", &format!("BACKUP={}", self.id)]),
                argv(&["gitlab-ctl", "reconfigure"]),
                argv(&["gitlab-ctl", "restart"]),
                argv(&["gitlab-rake", "gitlab:check", "SANITIZE=true"]),
                argv(&["gitlab-rake", "gitlab:doctor:secrets"]),
            ],
            GitlabFlavor::Helm => {
                vec![argv(&[&self.s.program, "--restore", "-f", &format!("file://{}", self.archive_path().display())])]
            }
        }
    }

    fn destination(&self) -> String {
        format!("GitLab {}", self.place.at())
    }
}

/// `env A=1 prog …` shown as `A=1 prog …`.
fn show(cmd: &[String]) -> String {
    let c = if cmd.first().is_some_and(|p| p == "env") { &cmd[1..] } else { cmd };
    c.join(" ")
}

fn restore_err(job: &str, destination: &str, message: impl Into<String>) -> Error {
    Error::Restore { job: job.to_string(), destination: destination.to_string(), message: message.into() }
}

async fn context(job: &str, cfg: &GitlabJob, m: &Manifest, a: &Artifact, opts: &RestoreOptions) -> Result<Ctx> {
    if a.format != FORMAT_ARCHIVE && a.format != FORMAT_SECRETS {
        return Err(Error::source_failed(
            job,
            format!("artifact `{}` has format `{}`, not a gitlab one", a.name, a.format),
            None,
        ));
    }
    if opts.to.is_some() || opts.to_dir.is_some() {
        return Err(Error::source_failed(
            job,
            "--to and --to-dir do not apply to gitlab backups: they restore into the job's own GitLab (`exec`)",
            Some(
                "for the plain files use `--artifact archive --output FILE.tar` and `--artifact secrets --output \
                 secrets.tar`; to restore elsewhere, point a job's `exec` at that GitLab"
                    .into(),
            ),
        ));
    }
    let facts: Facts = serde_json::from_value(m.facts.clone()).unwrap_or_default();
    if !output::valid_id(&facts.backup_id) {
        return Err(Error::source_failed(job, format!("backup `{}` records no GitLab backup ID", m.backup_id), None));
    }
    let s = Settings::new(cfg);
    let place = Place::resolve(&cfg.exec).await.map_err(|e| Error::source_failed(job, e.message, e.hint))?;
    let version = match facts.gitlab_version.as_str() {
        "" => output::version_from_id(&facts.backup_id).unwrap_or_default(),
        v => v.to_string(),
    };
    let running = running_version(&place, &s.version_file).await.map_err(|why| {
        Error::source_failed(
            job,
            format!("cannot read the running GitLab version from `{}` {}: {why}", s.version_file.display(), place.at()),
            Some(
                "a GitLab backup restores only into the exact same version: set `version_file` to the file that \
                 holds it (omnibus: /opt/gitlab/embedded/service/gitlab-rails/VERSION). Nothing was changed"
                    .into(),
            ),
        )
    })?;
    if version.is_empty() || running != version {
        let made_by = if version.is_empty() { "an unknown version".to_string() } else { format!("GitLab {version}") };
        return Err(Error::source_failed(
            job,
            format!(
                "backup `{}` (GitLab backup `{}`) was made by {made_by}, but GitLab {running} runs {}: GitLab restores \
                 only into the exact same version and edition",
                m.backup_id,
                facts.backup_id,
                place.at()
            ),
            Some(format!(
                "nothing was changed. Install GitLab {version} (same CE/EE edition) there, or restore into a scratch \
                 instance of that version, then run the restore again"
            )),
        ));
    }
    Ok(Ctx { s, place, id: facts.backup_id, version })
}

pub async fn plan_restore(
    job: &str,
    cfg: &GitlabJob,
    m: &Manifest,
    a: &Artifact,
    opts: &RestoreOptions,
) -> Result<RestoreStep> {
    let ctx = context(job, cfg, m, a, opts).await?;
    let force = if opts.force { "" } else { " (needs --force: it replaces all of GitLab's data)" };
    let (destination, action) = if a.format == FORMAT_ARCHIVE {
        let owner = ctx.s.owner.as_deref().map(|o| format!(", `chown {o}`")).unwrap_or_default();
        (
            format!("{} {}", ctx.archive_path().display(), ctx.place.at()),
            format!(
                "place GitLab {} backup `{}` as `{}` (written as `{}`, renamed once every check passed{owner}){force}",
                ctx.version,
                ctx.id,
                ctx.archive_path().display(),
                ctx.archive_tmp().display()
            ),
        )
    } else {
        let facts: Facts = serde_json::from_value(m.facts.clone()).unwrap_or_default();
        let dests: Vec<String> =
            facts.secrets_files.iter().map(|f| ctx.secrets_dest(Path::new(&f.path)).display().to_string()).collect();
        let steps: Vec<String> =
            ctx.steps().iter().enumerate().map(|(i, c)| format!("{}. `{}`", i + 1, show(c))).collect();
        let put = match ctx.s.flavor {
            GitlabFlavor::Omnibus => {
                format!("put back {} (temporary names, renamed once every check passed)", dests.join(", "))
            }
            GitlabFlavor::Helm => format!(
                "stage {} (restore the rails secret from it with kubectl, see runbooks/gitlab.md)",
                dests.join(", ")
            ),
        };
        (ctx.destination(), format!("{put}; then run {}{force}", steps.join(" ")))
    };
    Ok(RestoreStep { artifact: a.name.clone(), destination, action })
}

pub async fn open_sink(job: &str, cfg: &GitlabJob, m: &Manifest, a: &Artifact, opts: &RestoreOptions) -> Result<Sink> {
    let ctx = context(job, cfg, m, a, opts).await?;
    if !opts.force {
        return Err(Error::DestinationNotEmpty {
            job: job.to_string(),
            destination: ctx.destination(),
            detail: "a restore replaces all of GitLab's data (database, repositories, uploads …); see the steps with \
                     --dry-run"
                .into(),
        });
    }
    if a.format == FORMAT_ARCHIVE { archive_sink(job, ctx).await } else { secrets_sink(job, m, ctx).await }
}

/// Run `sh -c script` where `place` is; the error names `what`.
async fn sh(place: &Place, what: &str, script: &str) -> std::result::Result<(), String> {
    match place.output(&argv(&["sh", "-c", script]), 64 * 1024).await {
        Ok((f, _)) => f.check(what, place).map_err(|e| e.message),
        Err(e) => Err(e.message),
    }
}

/// Start `cat > tmp` (umask 077, parent created) where `place` is.
async fn write_tmp(place: &Place, tmp: &Path) -> std::result::Result<crate::exec::Remote, String> {
    let dir = tmp.parent().unwrap_or(Path::new("/"));
    let script = format!(
        "umask 077 && mkdir -p -- {} && exec cat > {}",
        sh_quote(&dir.to_string_lossy()),
        sh_quote(&tmp.to_string_lossy())
    );
    place.spawn(&argv(&["sh", "-c", &script]), true).await.map_err(|e| e.message)
}

async fn archive_sink(job: &str, ctx: Ctx) -> Result<Sink> {
    let (tmp, dest) = (ctx.archive_tmp(), ctx.archive_path());
    let destination = format!("{} {}", dest.display(), ctx.place.at());
    let mut remote = write_tmp(&ctx.place, &tmp).await.map_err(|e| restore_err(job, &destination, e))?;
    let writer =
        remote.stdin.take().ok_or_else(|| restore_err(job, &destination, "no stdin to write the archive to"))?;
    let (commit_tx, commit_rx) = oneshot::channel::<()>();
    let (job, shown) = (job.to_string(), destination.clone());
    let task = tokio::spawn(async move {
        let written = match remote.wait().await {
            Ok(f) => f.check(&format!("writing `{}`", tmp.display()), &ctx.place).map_err(|e| e.message),
            Err(e) => Err(e.message),
        };
        let tmp_q = sh_quote(&tmp.to_string_lossy());
        if commit_rx.await.is_err() || written.is_err() {
            let _ = sh(&ctx.place, "removing the partial archive", &format!("rm -f -- {tmp_q}")).await;
            return Err(restore_err(
                &job,
                &shown,
                written.err().unwrap_or_else(|| "stopped because a check failed: nothing was placed".into()),
            ));
        }
        let dest_q = sh_quote(&dest.to_string_lossy());
        let mut script = format!("mv -f -- {tmp_q} {dest_q}");
        if let Some(owner) = &ctx.s.owner {
            script.push_str(&format!(" && chown {} {dest_q}", sh_quote(owner)));
        }
        if let Err(e) = sh(&ctx.place, "placing the archive", &script).await {
            let _ = sh(&ctx.place, "removing the partial archive", &format!("rm -f -- {tmp_q}")).await;
            return Err(restore_err(&job, &shown, e));
        }
        tracing::info!(job = %job, archive = %dest.display(), "archive placed in GitLab's backup dir");
        Ok(())
    });
    Ok(Sink::task(writer, task, commit_tx, destination))
}

async fn secrets_sink(job: &str, m: &Manifest, ctx: Ctx) -> Result<Sink> {
    let (writer, mut reader) = tokio::io::duplex(64 * 1024);
    let (commit_tx, commit_rx) = oneshot::channel::<()>();
    let destination = ctx.destination();
    let (job, shown, backup) = (job.to_string(), destination.clone(), m.backup_id.clone());
    let task = tokio::spawn(async move {
        let fail = |msg: String| restore_err(&job, &shown, msg);
        let mut data = Vec::new();
        (&mut reader).take(MAX_BUNDLE + 1).read_to_end(&mut data).await.map_err(|e| fail(e.to_string()))?;
        // stage every file under a temporary name beside its destination
        let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
        let staging = async {
            if data.len() as u64 > MAX_BUNDLE {
                return Err("the secrets bundle is too large".to_string());
            }
            for (path, content) in secrets::unbundle(&data)? {
                let dest = ctx.secrets_dest(&path);
                let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let tmp = dest.with_file_name(format!(".{name}.drctl-partial"));
                let mut remote = write_tmp(&ctx.place, &tmp).await?;
                staged.push((tmp.clone(), dest));
                let mut w = remote.stdin.take().ok_or("no stdin")?;
                w.write_all(&content).await.map_err(|e| e.to_string())?;
                w.shutdown().await.map_err(|e| e.to_string())?;
                drop(w);
                let f = remote.wait().await.map_err(|e| e.message)?;
                f.check(&format!("writing `{}`", tmp.display()), &ctx.place).map_err(|e| e.message)?;
            }
            Ok(())
        }
        .await;
        let remove_staged = |staged: &[(PathBuf, PathBuf)]| {
            let list: Vec<String> = staged.iter().map(|(t, _)| sh_quote(&t.to_string_lossy())).collect();
            format!("rm -f -- {}", list.join(" "))
        };
        let committed = commit_rx.await.is_ok();
        if let Err(e) = staging {
            let _ = sh(&ctx.place, "removing staged files", &remove_staged(&staged)).await;
            return Err(fail(e));
        }
        if !committed {
            let _ = sh(&ctx.place, "removing staged files", &remove_staged(&staged)).await;
            return Err(fail("stopped because a check failed: nothing was changed".into()));
        }
        let archive = ctx.archive_path();
        if sh(&ctx.place, "looking for the archive", &format!("[ -f {} ]", sh_quote(&archive.to_string_lossy())))
            .await
            .is_err()
        {
            let _ = sh(&ctx.place, "removing staged files", &remove_staged(&staged)).await;
            return Err(fail(format!(
                "the archive `{}` is not in place, so GitLab cannot restore it; nothing was changed. Restore both \
                 artifacts (`drctl restore {job} --id {backup} --force`), or the `archive` artifact first",
                archive.display()
            )));
        }
        for (tmp, dest) in &staged {
            let script = format!("mv -f -- {} {}", sh_quote(&tmp.to_string_lossy()), sh_quote(&dest.to_string_lossy()));
            sh(&ctx.place, "putting a secrets file back", &script).await.map_err(&fail)?;
            tracing::info!(job = %job, file = %dest.display(), "secrets file restored");
        }
        let steps = ctx.steps();
        for (i, cmd) in steps.iter().enumerate() {
            let shown_cmd = show(cmd);
            tracing::info!(job = %job, step = i + 1, command = %shown_cmd, "restore step");
            let result = ctx.place.output(cmd, 64 * 1024).await;
            let failed = match &result {
                Ok((f, _)) if f.success => None,
                Ok((f, out)) => {
                    let said =
                        if f.stderr.is_empty() { crate::tool_output::tail(out, 5, "") } else { f.stderr.clone() };
                    Some(format!("{}: {said}", f.status))
                }
                Err(e) => Some(e.message.clone()),
            };
            if let Some(why) = failed {
                return Err(fail(format!(
                    "step {}/{} `{shown_cmd}` failed {} ({why}); the steps before it ran. Fix the cause, then go on by \
                     hand from this step (runbooks/gitlab.md)",
                    i + 1,
                    steps.len(),
                    ctx.place.at()
                )));
            }
        }
        if ctx.s.flavor == GitlabFlavor::Helm {
            tracing::warn!(
                job = %job,
                staged = %ctx.s.backup_dir.join(format!("drctl-secrets-{}", ctx.id)).display(),
                "the rails secret is a Kubernetes Secret: replace `<release>-rails-secret` with the staged secrets.yml \
                 (kubectl create secret generic <release>-rails-secret --from-file=secrets.yml=… --dry-run=client -o \
                 yaml | kubectl apply -f -), then restart the webservice, sidekiq and toolbox pods"
            );
        }
        Ok(())
    });
    Ok(Sink::task(writer, task, commit_tx, destination))
}
