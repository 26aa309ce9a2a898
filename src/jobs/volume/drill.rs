//! Volume drill: extract the tree into the drill's scratch directory (`restore --to`, with every
//! entry checked as a real restore does), restore the stored file list (`files` artifact), and
//! compare: every listed entry present with its type, size and sha256 (symlinks: their target),
//! nothing extra.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::drill::context::Drill;
use crate::finding::Severity;
use crate::jobs::RestoreOptions;
use crate::jobs::volume::{FORMAT_FILES, FORMAT_TAR, FileEntry, FileList};

fn rel_path(e: &FileEntry) -> PathBuf {
    match e.path_hex.as_deref().and_then(|h| hex::decode(h).ok()) {
        Some(bytes) => PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)),
        None => PathBuf::from(&e.path),
    }
}

fn sha256_file(p: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Compare the tree at `root` with `list`; returns `(subject, message)` per mismatch. Pure apart
/// from reading the tree.
pub fn compare_tree(root: &Path, list: &FileList) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut listed: BTreeSet<PathBuf> = BTreeSet::new();
    for e in &list.entries {
        let rel = rel_path(e);
        let path = if e.path == "." { root.to_path_buf() } else { root.join(&rel) };
        listed.insert(if e.path == "." { PathBuf::new() } else { rel.clone() });
        let subject = format!("`{}`", e.path);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(_) => {
                out.push((subject, format!("missing after the restore (a {} in the file list)", e.kind)));
                continue;
            }
        };
        let ft = meta.file_type();
        match e.kind.as_str() {
            "file" | "hardlink" => {
                if !ft.is_file() {
                    out.push((subject, format!("is not a regular file (the file list says {})", e.kind)));
                    continue;
                }
                if meta.len() != e.size {
                    out.push((subject, format!("{} bytes restored, the file list says {}", meta.len(), e.size)));
                    continue;
                }
                if let Some(want) = &e.sha256 {
                    match sha256_file(&path) {
                        Ok(got) if &got == want => {}
                        Ok(got) => out.push((subject, format!("sha256 {got}, the file list says {want}"))),
                        Err(err) => out.push((subject, format!("cannot read it: {err}"))),
                    }
                }
            }
            "dir" if !ft.is_dir() => out.push((subject, "is not a directory".into())),
            "symlink" => {
                if !ft.is_symlink() {
                    out.push((subject, "is not a symlink".into()));
                } else if let Some(want) = &e.target {
                    let got = std::fs::read_link(&path).map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
                    if &got != want {
                        out.push((subject, format!("points to `{got}`, the file list says `{want}`")));
                    }
                }
            }
            _ => {}
        }
    }
    // nothing extra
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(root.join(&rel)) else { continue };
        for entry in rd.flatten() {
            let child = rel.join(entry.file_name());
            if !listed.contains(&child) {
                out.push((format!("`{}`", child.display()), "restored but not in the file list".into()));
            }
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(child);
            }
        }
    }
    out
}

/// Drill a volume backup.
pub async fn drill(d: &mut Drill<'_>) {
    let find = |format: &str| d.manifest.artifacts.iter().find(|a| a.format == format).map(|a| a.name.clone());
    let (Some(data), files) = (find(FORMAT_TAR), find(FORMAT_FILES)) else {
        d.error("backup", "has no tar artifact");
        return;
    };
    let tree = d.scratch.join("tree");
    let opts = RestoreOptions { to: Some(tree.display().to_string()), no_owner: true, ..Default::default() };
    if d.restore(&data, opts, None).await.is_none() {
        return;
    }
    let Some(files) = files else {
        d.warn("artifact `files`", "the backup has no file list: only the archive's integrity was checked");
        return;
    };
    let list_path = d.scratch.join("files.json");
    if d.restore(&files, RestoreOptions::default(), Some(list_path.clone())).await.is_none() {
        return;
    }
    let list: FileList = match std::fs::read(&list_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(l) => l,
        Err(e) => {
            d.error("artifact `files`", format!("not a readable file list: {e}"));
            return;
        }
    };
    let root = tree.clone();
    let list_for_thread = list.clone();
    let mismatches = match tokio::task::spawn_blocking(move || compare_tree(&root, &list_for_thread)).await {
        Ok(m) => m,
        Err(e) => {
            d.error("tree", format!("comparison failed: {e}"));
            return;
        }
    };
    if mismatches.is_empty() {
        let files = list.entries.iter().filter(|e| e.kind == "file" || e.kind == "hardlink").count();
        let bytes: u64 = list.entries.iter().filter(|e| e.kind == "file").map(|e| e.size).sum();
        d.info(
            "tree",
            format!("{} entries ({files} files, {bytes} bytes): sizes and sha256 as listed", list.entries.len()),
        );
    }
    d.mismatches(Severity::Error, mismatches, "tree");
}
