//! The `secrets` artifact: the files GitLab's own archive leaves out (gitlab-secrets.json,
//! gitlab.rb), read through `exec` and bundled as a small tar.
//!
//! Entry names are the files' absolute paths without the leading `/`
//! (`etc/gitlab/gitlab-secrets.json`), so a restore knows where each one goes. The files are
//! small (KiBs); each is read whole (at most [`MAX_FILE`]) so that its size is known for the tar
//! header and the bundle is a consistent snapshot.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

use crate::exec::Place;

/// Largest secrets file accepted.
pub const MAX_FILE: u64 = 16 * 1024 * 1024;

/// One bundled file, for the manifest (no content).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Why a file could not be bundled.
#[derive(Debug)]
pub struct ReadError {
    pub path: PathBuf,
    pub message: String,
}

/// Read one file where `place` is.
pub async fn read(place: &Place, path: &Path) -> Result<Vec<u8>, ReadError> {
    let err = |message: String| ReadError { path: path.to_path_buf(), message };
    let mut remote = place.read_file(path).await.map_err(|e| err(e.message))?;
    let mut data = Vec::new();
    (&mut remote.stdout)
        .take(MAX_FILE + 1)
        .read_to_end(&mut data)
        .await
        .map_err(|e| err(format!("reading it failed: {e}")))?;
    if data.len() as u64 > MAX_FILE {
        return Err(err(format!("it is larger than {} MiB: not a secrets file", MAX_FILE >> 20)));
    }
    let finished = remote.wait().await.map_err(|e| err(e.message))?;
    if !finished.success {
        return Err(err(format!("cannot read it {} ({}): {}", place.at(), finished.status, finished.stderr)));
    }
    Ok(data)
}

/// The tar entry name of an absolute path.
pub fn entry_name(path: &Path) -> String {
    path.to_string_lossy().trim_start_matches('/').to_string()
}

/// Bundle `files` (path, content) as a tar; returns it and what the manifest records.
pub fn bundle(files: &[(PathBuf, Vec<u8>)]) -> std::io::Result<(Vec<u8>, Vec<SecretFile>)> {
    let mut b = tar::Builder::new(Vec::new());
    let mut listed = Vec::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(now);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, entry_name(path), &data[..])?;
        listed.push(SecretFile {
            path: path.display().to_string(),
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
        });
    }
    Ok((b.into_inner()?, listed))
}

/// The files in a bundle, each with the absolute path it goes back to. Names that are not plain
/// relative paths (`..`, absolute) are refused.
pub fn unbundle(tar_bytes: &[u8]) -> Result<Vec<(PathBuf, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(tar_bytes);
    for entry in ar.entries().map_err(|e| format!("not a tar: {e}"))? {
        let mut entry = entry.map_err(|e| format!("unreadable entry: {e}"))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let rel = entry.path().map_err(|e| format!("unreadable name: {e}"))?.into_owned();
        if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(format!("entry `{}` is not a plain relative path", rel.display()));
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).map_err(|e| format!("reading `{}`: {e}", rel.display()))?;
        out.push((Path::new("/").join(rel), data));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_round_trip() {
        let files = vec![
            (PathBuf::from("/etc/gitlab/gitlab-secrets.json"), b"{\"gitlab_rails\":{}}".to_vec()),
            (PathBuf::from("/etc/gitlab/gitlab.rb"), b"external_url 'https://git'\n".to_vec()),
        ];
        let (tar, listed) = bundle(&files).unwrap();
        assert_eq!(listed[0].path, "/etc/gitlab/gitlab-secrets.json");
        assert_eq!(listed[1].size, 27);
        assert_eq!(unbundle(&tar).unwrap(), files);
    }

    #[test]
    fn unbundle_refuses_escapes() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        // write the name raw: the builder itself refuses `..`
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../etc/passwd");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        assert!(unbundle(&tar).unwrap_err().contains("not a plain relative path"));
    }
}
