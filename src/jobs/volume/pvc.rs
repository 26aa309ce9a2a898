//! `pvc_path`: a Kubernetes PVC, read and written through `exec` into a pod that mounts it.
//!
//! drctl never mounts the volume: it runs `tar` in the pod (`exec = { kubernetes = … }`, see
//! [`crate::exec`]) and handles the stream here, so that a PVC backup is byte for byte the same
//! kind of artifact as a local one ([`super::restream`]).
//!
//! Backup, in the pod:
//! 1. `find . -type f -links +1 -print0` in the root lists the files with several names (their
//!    sha256 is kept for the hard-link entries of the `files` list);
//! 2. `tar -C ROOT -cf - --numeric-owner .`, from a small `sh -c` script that adds
//!    `--format=posix --pax-option=delete=atime,delete=ctime --sort=name` when the pod's tar is GNU
//!    tar (`tar --version` says so; `--sort` only when `tar --help` lists it): pax headers keep
//!    nanosecond mtimes, long names and large ids, and the entries come in the same byte order a
//!    local backup uses. Any other tar (busybox) gets the plain command, which every tar accepts:
//!    ustar headers, so whole-second mtimes (and GNU long-name entries, which drctl reads).
//!    `--numeric-owner` because the pod's user names mean nothing here; ids are what is restored.
//!    ACLs and xattrs are not kept (nor are they by a local backup).
//!
//! The output is parsed as it arrives and re-emitted; `exclude` is applied by drctl with the local
//! rules (so excluded data still crosses the exec stream). The backup fails, and nothing is
//! committed, when tar exits non-zero (its stderr tail is in the error: an unreadable entry, or a
//! file that changed while it was read, which GNU tar reports with exit code 1), when the stream
//! is cut (no exit status from the API server) or when the pod cannot be reached. `before` and
//! `after` hooks run on drctl's host, not in the pod (`kubectl exec` in a hook reaches the pod).
//!
//! Restore, in the pod: into `pvc_path` (or `--to PATH`, a path in the same pod; `--to-dir DIR`
//! restores onto drctl's host instead). The destination is inspected with one short exec (exists?
//! a directory? how many top-level entries besides `lost+found`? is the pod user root?); a
//! non-empty one needs `--force`. The archive is checked entry by entry in drctl
//! ([`super::restream::forward`]) and fed to `tar -xpf - --numeric-owner -C STAGE` (plus
//! `--no-same-owner` with `--no-owner`), where STAGE is a private directory on the destination's
//! filesystem: `DEST/.drctl-restore-XXXXXXXX` when the destination exists (it may be the mount
//! point, which cannot be renamed), else `.NAME.drctl-restore-XXXXXXXX` beside it. Only at commit
//! does one `sh -c` script swap it in: the old top-level entries move into `DEST/.drctl-old-…`,
//! the new ones in (undone on failure), then the old ones are deleted and the destination gets the
//! archive root's mode, owner and mtime. On rollback the staging directory is deleted.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::Seek;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::RESTORE_PIPE;
use super::restream::{self, ForwardOptions, Forwarded};
use crate::exec::{Place, Remote, argv, sh_quote};
use crate::jobs::volume::VolumeJob;
use crate::jobs::{Consumer, RestoreOptions, Sink};
use crate::{Error, Result};

/// How long a failed stream waits for the command's exit status (for its stderr).
const STATUS_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// A directory in a pod.
#[derive(Clone, Debug)]
pub struct Pvc {
    pub place: Place,
    /// Absolute, inside the pod.
    pub path: PathBuf,
}

impl Pvc {
    /// Find the pod of `cfg.exec` (connects to the API server for a label selector).
    pub async fn resolve(job: &str, cfg: &VolumeJob, path: &Path) -> Result<Pvc> {
        if !path.is_absolute() {
            return Err(Error::source_failed(
                job,
                format!("the path in the pod must be absolute, not `{}`", path.display()),
                None,
            ));
        }
        let place = Place::resolve(&cfg.exec).await.map_err(|e| e.for_job(job))?;
        if !matches!(place, Place::Kubernetes(_)) {
            return Err(Error::source_failed(job, "`pvc_path` needs `exec = { kubernetes = { … } }`", None));
        }
        Ok(Pvc { place, path: normalise(path) })
    }

    /// `` `/data` in pod apps/web-0 ``.
    pub fn describe(&self) -> String {
        format!("`{}` in {}", self.path.display(), self.place.describe())
    }

    fn quoted(&self) -> String {
        sh_quote(&self.path.to_string_lossy())
    }

    /// The root must be a directory in the pod.
    pub async fn check_dir(&self, job: &str) -> Result<()> {
        let script = format!("test -d {}", self.quoted());
        let (finished, _) = self.place.output(&argv(&["sh", "-c", &script]), 1024).await.map_err(|e| e.for_job(job))?;
        if finished.success {
            return Ok(());
        }
        Err(Error::source_failed(
            job,
            format!("{} is not a directory ({})", self.describe(), finished.status),
            Some("check `pvc_path` and that the pod mounts the PVC there (`kubectl describe pod`)".into()),
        ))
    }

    /// Relative names of the files with more than one name (`find -links +1`). Best effort: a
    /// name missing here is read again when its hard link comes.
    pub async fn linked(&self, job: &str) -> Result<HashSet<PathBuf>> {
        let script =
            format!("cd {} 2>/dev/null || exit 0; find . -type f -links +1 -print0 2>/dev/null; exit 0", self.quoted());
        let mut remote = self.place.spawn(&argv(&["sh", "-c", &script]), false).await.map_err(|e| e.for_job(job))?;
        let mut out = Vec::new();
        let read = remote.stdout.read_to_end(&mut out).await;
        let finished = remote.wait().await.map_err(|e| e.for_job(job))?;
        if let Err(e) = read {
            return Err(Error::source_failed(
                job,
                format!("reading the hard-link scan from {}: {e}", self.place.describe()),
                None,
            ));
        }
        finished.check("find . -type f -links +1", &self.place).map_err(|e| e.for_job(job))?;
        Ok(out.split(|b| *b == 0).filter_map(|name| super::extract::safe_path(name).ok().flatten()).collect())
    }

    /// The backup command, as shown in messages.
    pub fn tar_shown(&self) -> String {
        format!("tar -C {} -cf - --numeric-owner .", self.quoted())
    }

    /// Start tar in the pod (see the module docs for the options).
    pub async fn spawn_tar(&self, job: &str) -> Result<Remote> {
        let script = format!(
            "if tar --version 2>/dev/null | head -n 1 | grep -q 'GNU tar'; then\n\
             \x20 set -- --format=posix --pax-option=delete=atime,delete=ctime\n\
             \x20 if tar --help 2>/dev/null | grep -q -e --sort=; then set -- \"$@\" --sort=name; fi\n\
             else\n\
             \x20 set --\n\
             fi\n\
             exec tar -C {} -cf - --numeric-owner \"$@\" .",
            self.quoted()
        );
        self.place.spawn(&argv(&["sh", "-c", &script]), false).await.map_err(|e| e.for_job(job))
    }

    /// Read `rel` (below the root) again, into an unlinked temporary file.
    pub async fn fetch(&self, job: &str, rel: &Path) -> std::io::Result<std::fs::File> {
        let path = self.path.join(rel);
        let mut remote = self.place.read_file(&path).await.map_err(|e| std::io::Error::other(e.message))?;
        let spool = super::spool(job).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut file = tokio::fs::File::from_std(spool.try_clone()?);
        let copied = tokio::io::copy(&mut remote.stdout, &mut file).await;
        file.flush().await?;
        let finished = remote.wait().await.map_err(|e| std::io::Error::other(e.message))?;
        copied?;
        finished
            .check(&format!("cat -- {}", path.display()), &self.place)
            .map_err(|e| std::io::Error::other(e.message))?;
        let mut spool = spool;
        spool.rewind()?;
        Ok(spool)
    }
}

/// `/data/` → `/data`; `.` components dropped.
fn normalise(path: &Path) -> PathBuf {
    path.components().collect()
}

// ---------------------------------------------------------------- restore

/// What a destination in a pod holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Missing,
    Empty,
    NotEmpty(usize),
}

/// A checked restore destination in a pod.
#[derive(Debug, Clone)]
pub struct Destination {
    pub pvc: Pvc,
    pub state: State,
    /// The pod's user is root (owners and device nodes can be restored).
    pub root: bool,
}

pub fn restore_err(job: &str, pvc: &Pvc, message: impl Into<String>) -> Error {
    Error::Restore { job: job.to_string(), destination: pvc.describe(), message: message.into() }
}

/// Look at the destination in the pod; refuses a non-empty one without `--force`.
pub async fn destination(job: &str, cfg: &VolumeJob, path: &Path, opts: &RestoreOptions) -> Result<Destination> {
    let pvc = Pvc::resolve(job, cfg, path).await?;
    if pvc.path.parent().is_none() {
        return Err(restore_err(job, &pvc, "refusing to restore over `/`"));
    }
    let p = pvc.quoted();
    let script = format!(
        "id -u\n\
         if [ -d {p} ]; then find {p}/. -mindepth 1 -maxdepth 1 ! \\( -name lost+found -type d \\) -print | wc -l\n\
         elif [ -e {p} ] || [ -L {p} ]; then echo notdir\n\
         else echo missing; fi"
    );
    let out = pvc.place.run(&argv(&["sh", "-c", &script])).await.map_err(|e| restore_err(job, &pvc, e.message))?;
    let mut lines = out.lines().map(str::trim);
    let root = lines.next() == Some("0");
    let state = match lines.next() {
        Some("missing") => State::Missing,
        Some("notdir") => return Err(restore_err(job, &pvc, "it exists and is not a directory")),
        Some(n) => match n.parse::<usize>() {
            Ok(0) => State::Empty,
            Ok(n) => State::NotEmpty(n),
            Err(_) => return Err(restore_err(job, &pvc, format!("cannot inspect it: unexpected output `{n}`"))),
        },
        None => return Err(restore_err(job, &pvc, "cannot inspect it: no output")),
    };
    if let State::NotEmpty(n) = state
        && !opts.force
    {
        return Err(Error::DestinationNotEmpty {
            job: job.to_string(),
            destination: pvc.describe(),
            detail: format!("{n} entr{} at its top level", if n == 1 { "y" } else { "ies" }),
        });
    }
    Ok(Destination { pvc, state, root })
}

fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Create the staging directory, start `tar -x` into it and return the sink that feeds it.
pub async fn sink(job: &str, dest: Destination, opts: &RestoreOptions) -> Result<Sink> {
    let Destination { pvc, state, root } = dest;
    let id = suffix();
    let (stage, mkdir) = match state {
        State::Missing => {
            let parent = pvc.path.parent().unwrap_or(Path::new("/"));
            let name = pvc.path.file_name().unwrap_or(OsStr::new("restore")).as_bytes();
            let mut staged = b".".to_vec();
            staged.extend_from_slice(name);
            staged.extend_from_slice(format!(".drctl-restore-{id}").as_bytes());
            let stage = parent.join(OsStr::from_bytes(&staged));
            let cmd = format!(
                "mkdir -p {} && mkdir -m 700 {}",
                sh_quote(&parent.to_string_lossy()),
                sh_quote(&stage.to_string_lossy())
            );
            (stage, cmd)
        }
        State::Empty | State::NotEmpty(_) => {
            let stage = pvc.path.join(format!(".drctl-restore-{id}"));
            let cmd = format!("mkdir -m 700 {}", sh_quote(&stage.to_string_lossy()));
            (stage, cmd)
        }
    };
    pvc.place
        .run(&argv(&["sh", "-c", &mkdir]))
        .await
        .map_err(|e| restore_err(job, &pvc, format!("cannot create a staging directory: {}", e.message)))?;
    let owners = root && !opts.no_owner;
    let stage_s = stage.to_string_lossy().into_owned();
    let mut cmd = argv(&["tar", "-xpf", "-", "--numeric-owner"]);
    if opts.no_owner {
        cmd.push("--no-same-owner".into());
    }
    cmd.extend(["-C".to_string(), stage_s.clone()]);
    let remote = match pvc.place.spawn(&cmd, true).await {
        Ok(r) => r,
        Err(e) => {
            discard(&pvc, &stage).await;
            return Err(restore_err(job, &pvc, format!("cannot start `tar -x`: {}", e.message)));
        }
    };

    let (writer, reader) = tokio::io::duplex(RESTORE_PIPE);
    let (commit, committed) = oneshot::channel::<()>();
    let job = job.to_string();
    let destination = pvc.describe();
    let shown = cmd.join(" ");
    let task = tokio::spawn(async move {
        let mut remote = remote;
        let Some(stdin) = remote.stdin.take() else {
            discard(&pvc, &stage).await;
            return Err(restore_err(&job, &pvc, "the exec stream has no stdin"));
        };
        let mut stdout = std::mem::replace(&mut remote.stdout, Box::new(tokio::io::empty()));
        let drain = tokio::spawn(async move { tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await });
        let handle = tokio::runtime::Handle::current();
        let fwd_opts = ForwardOptions { devices: root };
        let forwarded = tokio::task::spawn_blocking(move || {
            let input = tokio_util::io::SyncIoBridge::new_with_handle(reader, handle.clone());
            let bridge = tokio_util::io::SyncIoBridge::new_with_handle(stdin, handle);
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, bridge);
            let result = restream::forward(input, &mut out, fwd_opts);
            // end of input for tar in every case: after a refusal it stops on a cut archive
            let closed = out.into_inner().map_err(|e| e.into_error()).and_then(|mut b| b.shutdown());
            match (result, closed) {
                (Ok(done), Ok(())) => Ok(done),
                (Ok(_), Err(e)) => Err(super::extract::ExtractError::Forward(e)),
                (Err(e), _) => Err(e),
            }
        })
        .await;
        let forwarded: std::result::Result<Forwarded, String> = match forwarded {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the checking thread failed: {e}")),
        };
        let finished = match &forwarded {
            Ok(_) => remote.wait().await.map_err(|e| e.message),
            Err(_) => match tokio::time::timeout(STATUS_GRACE, remote.wait()).await {
                Ok(r) => r.map_err(|e| e.message),
                Err(_) => Err("no exit status".into()),
            },
        };
        let _ = drain.await;
        let failed = match (forwarded, finished) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(e),
            (Ok(done), Ok(f)) => match f.check(&shown, &pvc.place) {
                Ok(()) => Ok(done),
                Err(e) => Err(e.message),
            },
        };
        let done = match failed {
            Ok(done) => done,
            Err(message) => {
                discard(&pvc, &stage).await;
                return Err(restore_err(&job, &pvc, format!("{message}; nothing was changed")));
            }
        };
        tracing::debug!(
            entries = done.entries,
            devices_skipped = done.skipped_devices,
            "extracted into the staging directory in the pod"
        );
        if committed.await.is_err() {
            discard(&pvc, &stage).await;
            return Err(restore_err(
                &job,
                &pvc,
                "rolled back: the restore did not pass its checks; nothing was changed",
            ));
        }
        let script = swap_script(&pvc.path, &stage, state, done.root, owners, &suffix());
        match pvc.place.output(&argv(&["sh", "-c", &script]), 64 * 1024).await {
            Ok((f, _)) if f.success => {
                if !f.stderr.is_empty() {
                    tracing::warn!(job = %job, destination = %pvc.describe(), message = %f.stderr, "restored, with warnings");
                }
                Ok(())
            }
            Ok((f, _)) => {
                discard(&pvc, &stage).await;
                Err(restore_err(
                    &job,
                    &pvc,
                    format!(
                        "cannot move the restored tree into place ({}): {}; the previous contents were put back",
                        f.status, f.stderr
                    ),
                ))
            }
            Err(e) => Err(restore_err(
                &job,
                &pvc,
                format!(
                    "cannot move the restored tree into place: {}; look for `.drctl-restore-*`/`.drctl-old-*` in the pod",
                    e.message
                ),
            )),
        }
    });
    Ok(Sink { writer: Box::new(writer), consumer: Consumer::Task { task, commit }, destination, on_failure: None })
}

/// Delete the staging directory (rollback); a failure is a warning.
async fn discard(pvc: &Pvc, stage: &Path) {
    let script = format!("rm -rf {}", sh_quote(&stage.to_string_lossy()));
    if let Err(e) = pvc.place.run(&argv(&["sh", "-c", &script])).await {
        tracing::warn!(path = %stage.display(), pod = %pvc.place.describe(), error = %e.message, "could not delete the restore's staging directory");
    }
}

/// The commit: one `sh -c` script that puts the staged tree in place (see the module docs).
fn swap_script(
    dest: &Path,
    stage: &Path,
    state: State,
    root: Option<restream::Meta>,
    owners: bool,
    id: &str,
) -> String {
    let p = sh_quote(&dest.to_string_lossy());
    let s = sh_quote(&stage.to_string_lossy());
    let old = sh_quote(&dest.join(format!(".drctl-old-{id}")).to_string_lossy());
    let mut script = format!("set -u\nP={p}\nS={s}\nO={old}\n");
    match state {
        State::Missing => script.push_str(
            "if [ -e \"$P\" ] || [ -L \"$P\" ]; then echo \"$P appeared while the restore ran\" >&2; exit 1; fi\n\
             mv \"$S\" \"$P\" || exit 1\n",
        ),
        State::Empty | State::NotEmpty(_) => script.push_str(concat!(
            "keep_lf=0\n",
            "if [ -d \"$P/lost+found\" ] && [ ! -e \"$S/lost+found\" ]; then keep_lf=1; fi\n",
            "chmod u+rwx \"$S\" || exit 1\n",
            "mkdir -m 700 \"$O\" || exit 1\n",
            "skip() { [ \"$1\" = \"$S\" ] || [ \"$1\" = \"$O\" ] || { [ \"$1\" = \"$P/lost+found\" ] && [ \"$keep_lf\" = 1 ]; }; }\n",
            "old_back() {\n",
            "  for e in \"$O\"/* \"$O\"/.[!.]* \"$O\"/..?*; do\n",
            "    if [ -e \"$e\" ] || [ -L \"$e\" ]; then mv -f \"$e\" \"$P\"/ || echo \"could not move $e back\" >&2; fi\n",
            "  done\n",
            "  rmdir \"$O\"\n",
            "}\n",
            "for e in \"$P\"/* \"$P\"/.[!.]* \"$P\"/..?*; do\n",
            "  [ -e \"$e\" ] || [ -L \"$e\" ] || continue\n",
            "  skip \"$e\" && continue\n",
            "  mv \"$e\" \"$O\"/ || { old_back; exit 1; }\n",
            "done\n",
            "for e in \"$S\"/* \"$S\"/.[!.]* \"$S\"/..?*; do\n",
            "  [ -e \"$e\" ] || [ -L \"$e\" ] || continue\n",
            "  if ! mv \"$e\" \"$P\"/; then\n",
            "    for n in \"$P\"/* \"$P\"/.[!.]* \"$P\"/..?*; do\n",
            "      [ -e \"$n\" ] || [ -L \"$n\" ] || continue\n",
            "      skip \"$n\" && continue\n",
            "      mv -f \"$n\" \"$S\"/ || echo \"could not move $n back\" >&2\n",
            "    done\n",
            "    old_back; exit 1\n",
            "  fi\n",
            "done\n",
            "rmdir \"$S\" || echo \"could not remove the staging directory $S\" >&2\n",
            "rm -rf \"$O\" || echo \"restored; could not delete the previous contents in $O: delete them by hand\" >&2\n",
        )),
    }
    if let Some(m) = root {
        if owners {
            script.push_str(&format!("chown -h {}:{} \"$P\" || exit 1\n", m.uid, m.gid));
        }
        script.push_str(&format!("chmod {:04o} \"$P\" || exit 1\n", m.mode & 0o7777));
        let at = super::archive::format_pax_time(m.mtime, m.mtime_nsec);
        script.push_str(&format!(
            "touch -d @{at} \"$P\" 2>/dev/null || touch -d @{} \"$P\" 2>/dev/null || echo \"could not set the mtime of $P\" >&2\n",
            m.mtime
        ));
    }
    script
}
