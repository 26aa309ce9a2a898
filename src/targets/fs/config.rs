//! `type = "fs"`: the target's configuration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::problems::{Problems, Section};
use crate::targets::TargetSettings;

/// `type = "fs"`: a local directory (or a mounted disk).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FsTarget {
    /// Root directory of the target, e.g. `/var/backups/drctl`. Created if missing.
    pub path: PathBuf,
}

impl FsTarget {
    /// Nothing to check in the settings themselves: whether the directory exists and is writable
    /// is `drctl check`'s probe.
    pub(crate) fn validate(&self, _s: &Section, _p: &mut Problems) {}
}

impl TargetSettings for FsTarget {
    fn secret_files(&self) -> Vec<(&'static str, Option<&Path>)> {
        Vec::new()
    }

    fn resolve_paths(&mut self, fix: &mut dyn FnMut(&mut PathBuf)) {
        fix(&mut self.path);
    }

    fn local_path(&self) -> Option<&Path> {
        Some(&self.path)
    }
}
