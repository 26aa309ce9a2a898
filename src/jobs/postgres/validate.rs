//! `kind = "postgres"`: what a valid job of this kind looks like, reported with file:line.

use super::PostgresJob;
use crate::config::problems::{Problems, Section};
use crate::redact::percent_decode;

impl PostgresJob {
    /// Every problem of this job's own settings (the settings every kind has are checked by
    /// `config::validate`).
    pub(crate) fn validate(&self, s: &Section, p: &mut Problems) {
        match url::Url::parse(&self.url) {
            // an unset ${VAR} was already reported
            _ if self.url.contains("${") => {}
            Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => {
                if let Some(pw) = u.password() {
                    crate::redact::register(pw);
                    crate::redact::register(&percent_decode(pw));
                }
            }
            _ => p.error(
                s.src,
                &s.at("url"),
                "not a PostgreSQL URL",
                Some("e.g. `postgres://backup@db:5432/app`".into()),
            ),
        }
        if self.password.is_some() && self.password_file.is_some() {
            p.error(s.src, &s.at("password"), "set `password` or `password_file`, not both", None);
        }
        if let Some(f) = &self.password_file
            && !f.exists()
        {
            p.warn(s.src, &s.at("password_file"), format!("`{}` does not exist", f.display()), None);
        }
        for (field, value) in [("connect_timeout", &self.connect_timeout), ("lock_timeout", &self.lock_timeout)] {
            match value.as_deref().map(humantime::parse_duration) {
                Some(Err(_)) => p.error(
                    s.src,
                    &s.at(field),
                    format!("`{}` is not a duration", value.as_deref().unwrap_or_default()),
                    Some("e.g. `15s`, `2m`".into()),
                ),
                Some(Ok(d)) if d < std::time::Duration::from_secs(1) => p.error(
                    s.src,
                    &s.at(field),
                    format!("{field} must be at least 1s"),
                    Some(
                        "PostgreSQL counts these timeouts in whole seconds or milliseconds; 0 would mean wait forever"
                            .into(),
                    ),
                ),
                _ => {}
            }
        }
        for (i, db) in self.databases.iter().enumerate() {
            if db.is_empty() {
                p.error(s.src, &s.item("databases", i), "empty database name", None);
            }
        }
        self.validate_physical(s, p);
    }

    fn validate_physical(&self, s: &Section, p: &mut Problems) {
        use super::config::Method;
        match (self.method, &self.wal) {
            (Method::Dump, Some(_)) => {
                p.error(s.src, &s.at("wal"), "`wal` applies only to `method = \"physical\"`", None);
            }
            (Method::Physical, wal) => {
                if !self.databases.is_empty() || self.globals {
                    p.error(
                        s.src,
                        &s.at("method"),
                        "a physical backup holds the whole cluster: `databases` and `globals` do not apply",
                        Some("remove them, or use `method = \"dump\"` for per-database dumps".into()),
                    );
                }
                let delay = wal.as_ref().and_then(|w| w.max_delay.as_deref());
                match delay.map(humantime::parse_duration) {
                    Some(Err(_)) => p.error(
                        s.src,
                        &s.nested("wal", "max_delay"),
                        format!("`{}` is not a duration", delay.unwrap_or_default()),
                        Some("e.g. `60s`".into()),
                    ),
                    Some(Ok(d)) if d < std::time::Duration::from_secs(1) => {
                        p.error(s.src, &s.nested("wal", "max_delay"), "max_delay must be at least 1s", None);
                    }
                    _ => {}
                }
                if let Some(k) = wal.as_ref().and_then(|w| w.keep.as_deref())
                    && humantime::parse_duration(k).is_err()
                {
                    p.error(
                        s.src,
                        &s.nested("wal", "keep"),
                        format!("`{k}` is not a duration"),
                        Some("e.g. `14d`".into()),
                    );
                }
                let slot = wal.as_ref().and_then(|w| w.slot.clone()).unwrap_or_else(|| "drctl_job".into());
                if slot.is_empty()
                    || slot.len() > 63
                    || !slot.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    p.error(
                        s.src,
                        &s.nested("wal", "slot"),
                        format!("`{slot}` is not a replication slot name"),
                        Some("lower-case letters, digits and `_`, at most 63".into()),
                    );
                }
            }
            (Method::Dump, None) => {}
        }
    }
}
