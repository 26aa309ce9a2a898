//! The restore destination: what it holds now, the staging directory the archive is extracted into,
//! and the swap that puts the result in place.
//!
//! A restore never shows a partial tree. The archive is extracted into a private (`0700`) staging
//! directory on the destination's filesystem; only when the engine says every check passed is it
//! swapped in:
//! * normally the staging directory is a sibling, `.NAME.drctl-restore-XXXXXXXX`: the existing
//!   destination is renamed aside (`.NAME.drctl-old-XXXXXXXX`), the staging directory renamed to
//!   the destination's name, and only then the old tree deleted; a failed rename puts it back;
//! * when the destination is a mount point (its own filesystem: a PVC, a volume with driver
//!   options), renaming it is impossible, so staging happens inside it (`.drctl-restore-XXXXXXXX`)
//!   and the swap moves its top-level entries: old ones into `.drctl-old-XXXXXXXX`, new ones in,
//!   undone in reverse on failure. An empty `lost+found` the backup does not have is left alone.
//!
//! Before the swap the staging filesystem is synced (`syncfs`), after it the parent directory
//! (`fsync`): a crash leaves either the old or the new tree, complete. Rolling back deletes the
//! staging directory. A restore interrupted by a crash can leave a `.…drctl-restore-…` directory
//! behind: it is safe to delete.

use std::ffi::OsString;
use std::fs::{DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// What the destination holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Missing,
    Empty,
    /// Holds this many top-level entries.
    NotEmpty(usize),
}

/// Resolve `dest` (absolute) and look at it: symlinks to the destination are followed, so the
/// real directory is restored; a destination that exists and is not a directory is an error.
pub fn inspect(dest: &Path) -> io::Result<(PathBuf, State)> {
    let dest = resolve(dest)?;
    match std::fs::symlink_metadata(&dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((dest, State::Missing)),
        Err(e) => Err(e),
        Ok(m) if !m.is_dir() => Err(io::Error::new(io::ErrorKind::NotADirectory, "it exists and is not a directory")),
        Ok(_) => {
            let n = std::fs::read_dir(&dest)?
                .filter_map(|e| e.ok())
                .filter(|e| !(e.file_name() == "lost+found" && e.file_type().is_ok_and(|t| t.is_dir())))
                .count();
            Ok((dest, if n == 0 { State::Empty } else { State::NotEmpty(n) }))
        }
    }
}

fn resolve(dest: &Path) -> io::Result<PathBuf> {
    if !dest.is_absolute() {
        return Err(io::Error::other("the destination must be an absolute path"));
    }
    let resolved = match std::fs::canonicalize(dest) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
                return Err(io::Error::other("the destination has no name"));
            };
            match std::fs::canonicalize(parent) {
                Ok(p) => p.join(name),
                Err(e) if e.kind() == io::ErrorKind::NotFound => dest.to_path_buf(),
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    if resolved.parent().is_none() {
        return Err(io::Error::other("refusing to restore over `/`"));
    }
    Ok(resolved)
}

/// A staging directory holding the extracted tree until [`Staging::commit`] or [`Staging::discard`].
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    dest: PathBuf,
    /// The staging directory is inside the destination (a mount point).
    inside: bool,
}

fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

fn sibling(dest: &Path, tag: &str) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(dest.file_name().unwrap_or_default());
    name.push(format!(".drctl-{tag}-{}", suffix()));
    dest.with_file_name(name)
}

fn private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(0o700).create(path)
}

/// Create the staging directory for `dest` (as returned by [`inspect`]); creates missing parents.
pub fn stage(dest: &Path) -> io::Result<Staging> {
    let parent = dest.parent().ok_or_else(|| io::Error::other("the destination has no parent"))?;
    let inside = match std::fs::metadata(dest) {
        Ok(m) => std::fs::metadata(parent)?.dev() != m.dev(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(parent)?;
            false
        }
        Err(e) => return Err(e),
    };
    let dir = if inside { dest.join(format!(".drctl-restore-{}", suffix())) } else { sibling(dest, "restore") };
    private_dir(&dir)?;
    Ok(Staging { dir, dest: dest.to_path_buf(), inside })
}

impl Staging {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Put the staged tree in place of the destination (see the module docs).
    pub fn commit(self) -> io::Result<()> {
        syncfs(&self.dir)?;
        if self.inside {
            let staging_name = self.dir.file_name().map(|n| n.to_os_string());
            swap_contents(&self.dir, &self.dest, staging_name.as_deref())?;
            return fsync_dir(&self.dest);
        }
        if std::fs::symlink_metadata(&self.dest).is_err() {
            std::fs::rename(&self.dir, &self.dest)?;
            return fsync_dir(self.dest.parent().unwrap_or(Path::new("/")));
        }
        let old = sibling(&self.dest, "old");
        match std::fs::rename(&self.dest, &old) {
            Ok(()) => {}
            // a bind mount on the same filesystem: cannot be renamed, its contents can
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                swap_contents(&self.dir, &self.dest, None)?;
                return fsync_dir(&self.dest);
            }
            Err(e) => return Err(e),
        }
        if let Err(e) = std::fs::rename(&self.dir, &self.dest) {
            if let Err(back) = std::fs::rename(&old, &self.dest) {
                tracing::error!(old = %old.display(), error = %back, "could not put the previous tree back in place");
            }
            return Err(e);
        }
        fsync_dir(self.dest.parent().unwrap_or(Path::new("/")))?;
        if let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!(path = %old.display(), error = %e, "restored; could not delete the previous tree (delete it by hand)");
        }
        Ok(())
    }

    /// Roll back: delete the staging directory.
    pub fn discard(self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.dir.display(), error = %e, "could not delete the restore's staging directory");
        }
    }
}

/// Swap the top-level entries of `dest` for those of `staging` (then removed); `skip` is left in
/// `dest`. On failure every move done so far is undone.
fn swap_contents(staging: &Path, dest: &Path, skip: Option<&std::ffi::OsStr>) -> io::Result<()> {
    // the staged root's metadata, read before moving entries out changes its mtime
    let root = std::fs::symlink_metadata(staging)?;
    let old = dest.join(format!(".drctl-old-{}", suffix()));
    private_dir(&old)?;
    let old_name = old.file_name().map(|n| n.to_os_string());
    let keep_lost_found = std::fs::symlink_metadata(staging.join("lost+found")).is_err();
    let names = |dir: &Path| -> io::Result<Vec<OsString>> {
        std::fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect()
    };
    let undo = |moves: &[(PathBuf, PathBuf)]| {
        for (from, to) in moves.iter().rev() {
            if let Err(e) = std::fs::rename(to, from) {
                tracing::error!(path = %from.display(), error = %e, "could not undo a move while rolling back");
            }
        }
    };
    let mut out: Vec<(PathBuf, PathBuf)> = Vec::new();
    for name in names(dest)? {
        if Some(name.as_os_str()) == skip
            || Some(&name) == old_name.as_ref()
            || (name == "lost+found" && keep_lost_found)
        {
            continue;
        }
        let (from, to) = (dest.join(&name), old.join(&name));
        if let Err(e) = std::fs::rename(&from, &to) {
            undo(&out);
            let _ = std::fs::remove_dir(&old);
            return Err(e);
        }
        out.push((from, to));
    }
    let mut inn: Vec<(PathBuf, PathBuf)> = Vec::new();
    for name in names(staging)? {
        let (from, to) = (staging.join(&name), dest.join(&name));
        if let Err(e) = std::fs::rename(&from, &to) {
            undo(&inn);
            undo(&out);
            let _ = std::fs::remove_dir(&old);
            return Err(e);
        }
        inn.push((from, to));
    }
    std::fs::remove_dir(staging)?;
    if let Err(e) = std::fs::remove_dir_all(&old) {
        tracing::warn!(path = %old.display(), error = %e, "restored; could not delete the previous contents (delete them by hand)");
    }
    // last: removing the staging directory and the old contents changed the mtime
    let now = std::fs::symlink_metadata(dest)?;
    if (root.uid(), root.gid()) != (now.uid(), now.gid()) {
        std::os::unix::fs::lchown(dest, Some(root.uid()), Some(root.gid()))?;
    }
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(root.mode() & 0o7777))?;
    super::extract::set_mtime_of(dest, root.mtime(), root.mtime_nsec() as u32)
}

fn syncfs(dir: &Path) -> io::Result<()> {
    let f = File::open(dir)?;
    // SAFETY: `f` is an open file descriptor for the duration of the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn inspects_destinations() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        assert_eq!(inspect(&d).unwrap().1, State::Missing);
        std::fs::create_dir(&d).unwrap();
        assert_eq!(inspect(&d).unwrap().1, State::Empty);
        std::fs::create_dir(d.join("lost+found")).unwrap();
        assert_eq!(inspect(&d).unwrap().1, State::Empty, "lost+found alone is empty");
        std::fs::write(d.join("x"), b"").unwrap();
        assert_eq!(inspect(&d).unwrap().1, State::NotEmpty(1));
        std::fs::write(t.path().join("file"), b"").unwrap();
        assert!(inspect(&t.path().join("file")).is_err());
        assert!(inspect(Path::new("relative")).is_err());
        assert!(inspect(Path::new("/")).is_err());
        // a symlink to the destination: the real directory is restored
        std::os::unix::fs::symlink(&d, t.path().join("link")).unwrap();
        assert_eq!(inspect(&t.path().join("link")).unwrap().0, std::fs::canonicalize(&d).unwrap());
    }

    #[test]
    fn commit_replaces_and_discard_leaves_everything() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("old"), b"old").unwrap();

        let s = stage(&d).unwrap();
        assert!(!s.inside);
        std::fs::write(s.dir().join("new"), b"new").unwrap();
        s.discard();
        assert_eq!(entries(t.path()), ["d"]);
        assert_eq!(entries(&d), ["old"]);

        let s = stage(&d).unwrap();
        std::fs::write(s.dir().join("new"), b"new").unwrap();
        std::fs::set_permissions(s.dir(), std::fs::Permissions::from_mode(0o750)).unwrap();
        s.commit().unwrap();
        assert_eq!(entries(t.path()), ["d"], "no staging or old tree left beside it");
        assert_eq!(entries(&d), ["new"]);
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o7777, 0o750);

        let fresh = t.path().join("a/b/c");
        let s = stage(&fresh).unwrap();
        std::fs::write(s.dir().join("f"), b"").unwrap();
        s.commit().unwrap();
        assert_eq!(entries(&fresh), ["f"]);
    }

    #[test]
    fn swapping_contents_keeps_the_directory_itself() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("mnt");
        std::fs::create_dir_all(d.join("lost+found")).unwrap();
        std::fs::write(d.join("old"), b"").unwrap();
        let ino = std::fs::metadata(&d).unwrap().ino();
        let staging = d.join(".drctl-restore-test");
        private_dir(&staging).unwrap();
        std::fs::create_dir(staging.join("sub")).unwrap();
        std::fs::write(staging.join("sub/new"), b"").unwrap();
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o711)).unwrap();
        super::super::extract::set_mtime_of(&staging, 1_000_000_000, 7).unwrap();
        let s = Staging { dir: staging, dest: d.clone(), inside: true };
        s.commit().unwrap();
        assert_eq!(entries(&d), ["lost+found", "sub"]);
        let m = std::fs::metadata(&d).unwrap();
        assert_eq!(m.ino(), ino, "the mount point itself stays");
        assert_eq!((m.mode() & 0o7777, m.mtime(), m.mtime_nsec()), (0o711, 1_000_000_000, 7));
    }
}
