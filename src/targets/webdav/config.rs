//! `type = "webdav"`: the target's configuration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::problems::{Problems, Section};
use crate::redact::Secret;
use crate::targets::TargetSettings;
use crate::targets::config::check_root;

/// `type = "webdav"`: a WebDAV server, e.g. a Hetzner Storage Box over HTTPS with basic auth.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebdavTarget {
    /// Server URL, e.g. `https://u123456.your-storagebox.de` (may include a path).
    #[serde(serialize_with = "crate::redact::serialize_url")]
    pub url: String,
    /// Basic-auth user, e.g. `u123456`.
    pub user: String,
    /// Basic-auth password (or use `password_file`).
    pub password: Option<Secret>,
    /// File whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// Collection for the backups below `url` (default: `url` itself). Created if missing.
    pub root: Option<String>,
}

impl WebdavTarget {
    /// Every problem of this target's own settings, located in section `s` (its table).
    pub(crate) fn validate(&self, s: &Section, p: &mut Problems) {
        match url::Url::parse(&self.url) {
            _ if self.url.contains("${") => {}
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                if let Some(pw) = u.password() {
                    crate::redact::register(pw);
                }
                let loopback = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
                if u.scheme() == "http" && !loopback {
                    p.warn(
                        s.src,
                        &s.at("url"),
                        "plain http: the password travels unencrypted",
                        Some("use https (a Storage Box serves WebDAV over https)".into()),
                    );
                }
            }
            _ => p.error(
                s.src,
                &s.at("url"),
                format!("`{}` is not an http(s) URL", crate::redact::url_for_display(&self.url)),
                Some("e.g. `https://u123456.your-storagebox.de`".into()),
            ),
        }
        if self.user.is_empty() {
            p.error(s.src, &s.at("user"), "user is empty", None);
        }
        match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => {
                p.error(s.src, &s.at("password"), "set `password` or `password_file`, not both", None)
            }
            (None, None) => p.error(
                s.src,
                &s.path,
                "no `password` or `password_file`",
                Some("a Storage Box's WebDAV needs the account (or sub-account) password".into()),
            ),
            (None, Some(f)) if !f.exists() => {
                p.warn(s.src, &s.at("password_file"), format!("`{}` does not exist", f.display()), None)
            }
            _ => {}
        }
        check_root(p, s.src, &s.at("root"), self.root.as_deref());
    }
}

impl TargetSettings for WebdavTarget {
    fn secret_files(&self) -> Vec<(&'static str, Option<&Path>)> {
        vec![("password_file", self.password_file.as_deref())]
    }

    fn resolve_paths(&mut self, fix: &mut dyn FnMut(&mut PathBuf)) {
        self.password_file.iter_mut().for_each(fix);
    }

    fn local_path(&self) -> Option<&Path> {
        None // a remote store
    }
}
