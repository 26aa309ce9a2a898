//! `kind = "redis"`: what a valid job of this kind looks like, reported with file:line.

use super::RedisJob;
use crate::config::problems::{Problems, Section};
use crate::redact::percent_decode;

impl RedisJob {
    /// Every problem of this job's own settings (the settings every kind has are checked by
    /// `config::validate`).
    pub(crate) fn validate(&self, s: &Section, p: &mut Problems) {
        if self.url.is_none() && self.sentinel.is_empty() {
            p.error(
                s.src,
                &s.at("url"),
                "set `url` (or `sentinel` and `master_name`)",
                Some("e.g. `redis://redis:6379`".into()),
            );
        }
        if !self.sentinel.is_empty() && self.master_name.is_none() {
            p.error(s.src, &s.at("master_name"), "`sentinel` needs `master_name`", None);
        }
        if let Some(u) = &self.url {
            match url::Url::parse(u) {
                _ if u.contains("${") => {}
                Ok(parsed) if matches!(parsed.scheme(), "redis" | "rediss") => {
                    if let Some(pw) = parsed.password() {
                        crate::redact::register(pw);
                        crate::redact::register(&percent_decode(pw));
                    }
                }
                _ => p.error(s.src, &s.at("url"), "not a redis:// or rediss:// URL", None),
            }
        }
        if self.password.is_some() && self.password_file.is_some() {
            p.error(s.src, &s.at("password"), "set `password` or `password_file`, not both", None);
        }
    }
}
