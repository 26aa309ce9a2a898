//! `kind = "volume"`: what a valid job of this kind looks like, reported with file:line.

use super::VolumeJob;
use crate::config::problems::{Problems, Section};

impl VolumeJob {
    /// Every problem of this job's own settings (the settings every kind has are checked by
    /// `config::validate`).
    pub(crate) fn validate(&self, s: &Section, p: &mut Problems) {
        let sources = [self.path.is_some(), self.docker_volume.is_some(), self.pvc_path.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            p.error(s.src, &s.path, "set exactly one of `path`, `docker_volume`, `pvc_path`", None);
        }
        if self.pvc_path.is_some() && !matches!(self.exec, crate::exec::ExecConfig::Kubernetes(_)) {
            p.error(
                s.src,
                &s.at("pvc_path"),
                "`pvc_path` is read through a pod: set `exec = { kubernetes = { … } }`",
                None,
            );
        }
        if self.pvc_path.is_none() && self.exec != crate::exec::ExecConfig::Local {
            p.error(
                s.src,
                &s.at("exec"),
                "`exec` is only used with `pvc_path`: `path` and `docker_volume` are read on this host",
                None,
            );
        }
        if let Some(path) = &self.path
            && !path.is_absolute()
            && !path.to_string_lossy().contains("${")
        {
            p.error(s.src, &s.at("path"), format!("`{}` is not an absolute path", path.display()), None);
        }
        if let Some(path) = &self.pvc_path
            && !path.is_absolute()
            && !path.to_string_lossy().contains("${")
        {
            p.error(
                s.src,
                &s.at("pvc_path"),
                format!("`{}` is not an absolute path", path.display()),
                Some("the path where the pod mounts the PVC, e.g. `/data`".into()),
            );
        }
        if let Err((i, message)) = crate::jobs::volume::Excludes::new(&self.exclude) {
            p.error(
                s.src,
                &s.item("exclude", i),
                message,
                Some("e.g. `*.tmp` (a name, any depth), `cache/**` (from the root), `tmp/` (directories)".into()),
            );
        }
    }
}
