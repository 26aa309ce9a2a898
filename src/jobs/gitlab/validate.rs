//! `kind = "gitlab"`: what a valid job of this kind looks like, reported with file:line.

use super::GitlabJob;
use crate::config::problems::{Problems, Section};

impl GitlabJob {
    /// Every problem of this job's own settings (the settings every kind has are checked by
    /// `config::validate`).
    pub(crate) fn validate(&self, s: &Section, p: &mut Problems) {
        for (i, part) in self.skip.iter().enumerate() {
            let path = s.item("skip", i);
            if part.is_empty() || part.contains([',', ' ', '\t']) {
                p.error(
                    s.src,
                    &path,
                    format!("`{part}` is not one part name"),
                    Some("one part per entry, e.self. `[\"registry\", \"artifacts\"]`".into()),
                );
            } else if part == "tar" {
                p.error(
                    s.src,
                    &path,
                    "`tar` leaves the archive uncreated: there would be nothing to back up",
                    Some("skip data parts only: db, repositories, uploads, builds, artifacts, lfs, registry, pages, packages, terraform_state, ci_secure_files …".into()),
                );
            }
        }
        if let Some(files) = &self.secrets_files {
            for (i, f) in files.iter().enumerate() {
                if !f.is_absolute() {
                    p.error(
                        s.src,
                        &s.item("secrets_files", i),
                        format!("`{}` is not an absolute path", f.display()),
                        Some("paths where `exec` runs, e.self. `/etc/gitlab/gitlab-secrets.json`".into()),
                    );
                }
            }
            if self.flavor == crate::jobs::gitlab::GitlabFlavor::Omnibus
                && !files.iter().any(|f| f.file_name().is_some_and(|n| n == "gitlab-secrets.json"))
            {
                p.warn(
                    s.src,
                    &s.at("secrets_files"),
                    "no gitlab-secrets.json among `secrets_files`: a restore of such a backup loses CI/CD variables, 2FA and runner tokens",
                    Some("add `/etc/gitlab/gitlab-secrets.json`".into()),
                );
            }
        }
        if self.command.as_deref().is_some_and(|c| c.trim().is_empty()) {
            p.error(s.src, &s.at("command"), "`command` is empty", Some("leave it out for the default".into()));
        }
        for (k, v) in [("backup_dir", &self.backup_dir), ("version_file", &self.version_file)] {
            if let Some(v) = v
                && !v.is_absolute()
            {
                p.error(s.src, &s.at(k), format!("`{}` is not an absolute path", v.display()), None);
            }
        }
    }
}
