//! What a walk records: one line of the file list per entry, and the totals (the manifest's
//! facts). Apart from the walk itself so that the files cache can hold them too.

use serde::{Deserialize, Serialize};

/// One entry of the file list (the `files` artifact): what drills compare a restored tree with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative to the root, `/`-separated; `.` is the root itself. Lossy when the name is not
    /// UTF-8: then `path_hex` holds the exact bytes.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// `file`, `hardlink`, `dir`, `symlink`, `fifo`, `char` or `block`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Content size (files and hard links), 0 otherwise.
    pub size: u64,
    /// Permission bits in octal, with setuid/setgid/sticky: `0644`, `2775`.
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch, and the nanoseconds within that second.
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Content sha256 (files and hard links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlink target, or the first name of a hard-linked file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What a walk stored (the manifest's facts).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    /// Regular files, each hard-linked name counted.
    pub file_count: u64,
    /// Directories, the root included.
    pub dir_count: u64,
    pub symlink_count: u64,
    /// Names stored as a link to an earlier name of the same file.
    pub hardlink_count: u64,
    /// Fifos and device nodes.
    pub special_count: u64,
    /// File content stored, each hard-linked file once.
    pub total_bytes: u64,
    /// Entries that vanished during the walk, and sockets.
    pub skipped: u64,
    /// Entries left out by `exclude` (a directory counts once, whatever it held).
    pub excluded: u64,
}

impl Totals {
    /// What was counted since `before`.
    pub fn since(&self, before: &Totals) -> Totals {
        Totals {
            file_count: self.file_count - before.file_count,
            dir_count: self.dir_count - before.dir_count,
            symlink_count: self.symlink_count - before.symlink_count,
            hardlink_count: self.hardlink_count - before.hardlink_count,
            special_count: self.special_count - before.special_count,
            total_bytes: self.total_bytes - before.total_bytes,
            skipped: self.skipped - before.skipped,
            excluded: self.excluded - before.excluded,
        }
    }

    pub fn add(&mut self, d: &Totals) {
        self.file_count += d.file_count;
        self.dir_count += d.dir_count;
        self.symlink_count += d.symlink_count;
        self.hardlink_count += d.hardlink_count;
        self.special_count += d.special_count;
        self.total_bytes += d.total_bytes;
        self.skipped += d.skipped;
        self.excluded += d.excluded;
    }
}
