//! `kind = "vault"`: what a valid job of this kind looks like, reported with file:line.

use super::VaultJob;
use crate::config::problems::{Problems, Section};

impl VaultJob {
    /// Every problem of this job's own settings (the settings every kind has are checked by
    /// `config::validate`).
    pub(crate) fn validate(&self, s: &Section, p: &mut Problems) {
        if url::Url::parse(&self.address).is_err() && !self.address.contains("${") {
            p.error(
                s.src,
                &s.at("address"),
                format!("`{}` is not a URL", self.address),
                Some("e.g. `https://vault:8200`".into()),
            );
        }
        let auth = [self.token.is_some() || self.token_file.is_some(), self.role_id.is_some()];
        if auth.iter().filter(|a| **a).count() != 1 {
            p.error(
                s.src,
                &s.at("token_file"),
                "set one way to log in: `token`/`token_file`, or `role_id` with `secret_id`/`secret_id_file`",
                None,
            );
        }
        if self.role_id.is_some() && self.secret_id.is_none() && self.secret_id_file.is_none() {
            p.error(s.src, &s.at("secret_id_file"), "`role_id` needs `secret_id` or `secret_id_file`", None);
        }
        if let Ok(u) = url::Url::parse(&self.address)
            && !matches!(u.scheme(), "http" | "https")
        {
            p.error(s.src, &s.at("address"), format!("`{}` is not an http(s) URL", u.scheme()), None);
        }
        if let Some(m) = &self.approle_mount {
            if self.role_id.is_none() {
                p.error(s.src, &s.at("approle_mount"), "`approle_mount` only applies with `role_id`", None);
            } else if m.trim_matches('/').is_empty() || m.contains(char::is_whitespace) {
                p.error(
                    s.src,
                    &s.at("approle_mount"),
                    format!("`{m}` is not a mount path"),
                    Some("the path the AppRole auth method is enabled at, e.g. `approle`".into()),
                );
            }
        }
    }
}
