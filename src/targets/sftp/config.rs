//! `type = "sftp"`: the target's configuration.

use std::path::{Path, PathBuf};

use crate::config::problems::{Problems, Section};
use crate::targets::TargetSettings;
use crate::targets::config::check_root;
use serde::{Deserialize, Serialize};

/// `type = "sftp"`: a Hetzner Storage Box (or any OpenSSH server) over SFTP, through the system
/// `ssh` client (package openssh-client). Key authentication only; the server's host key must be
/// in `known_hosts_file` (an unknown or changed key is refused, never trusted on first use).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SftpTarget {
    /// Server name, e.g. `u123456.your-storagebox.de`.
    pub host: String,
    /// SSH port (default 23: the Storage Box port for SFTP, rsync and borg; 22 serves SFTP only).
    #[serde(default = "default_sftp_port")]
    pub port: u16,
    /// Login name, e.g. `u123456`.
    pub user: String,
    /// Private key without passphrase (OpenSSH format) whose public key is in the account's
    /// `.ssh/authorized_keys`.
    pub key_file: PathBuf,
    /// A known_hosts file with the server's host key, e.g. from `ssh-keyscan -p 23 HOST` checked
    /// against the fingerprints the provider publishes (`[HOST]:PORT TYPE KEY` for ports other
    /// than 22). Required: drctl never adds or trusts an unknown key.
    pub known_hosts_file: PathBuf,
    /// Directory for the backups, relative to the account's home (default: the home itself).
    /// Created if missing.
    pub root: Option<String>,
    /// Most SSH connections this target opens at once (default 4; a Storage Box allows about 10
    /// per account, shared by everything that logs in).
    #[serde(default = "default_sftp_connections")]
    pub max_connections: u32,
}

fn default_sftp_port() -> u16 {
    23
}

fn default_sftp_connections() -> u32 {
    4
}

impl SftpTarget {
    /// Every problem of this target's own settings, located in section `s` (its table).
    pub(crate) fn validate(&self, s: &Section, p: &mut Problems) {
        if self.host.is_empty() || self.host.starts_with('-') || self.host.contains(char::is_whitespace) {
            p.error(s.src, &s.at("host"), format!("`{}` is not a host name", self.host), None);
        }
        if self.user.is_empty() || self.user.starts_with('-') || self.user.contains(char::is_whitespace) {
            p.error(s.src, &s.at("user"), format!("`{}` is not a user name", self.user), None);
        }
        if self.port == 0 {
            p.error(s.src, &s.at("port"), "port 0", Some("a Storage Box listens on 23 (and 22)".into()));
        }
        if self.max_connections == 0 {
            p.error(s.src, &s.at("max_connections"), "max_connections must be at least 1", None);
        } else if self.max_connections > 10 {
            p.warn(
                s.src,
                &s.at("max_connections"),
                format!("{} connections: a Storage Box allows about 10 per account", self.max_connections),
                Some("4 (the default) is plenty: each connection streams at full speed".into()),
            );
        }
        for (field, file) in [("key_file", &self.key_file), ("known_hosts_file", &self.known_hosts_file)] {
            if !file.exists() {
                p.warn(
                    s.src,
                    &s.at(field),
                    format!("`{}` does not exist: this target is unusable on this host", file.display()),
                    Some(if field == "key_file" {
                        "create a key with `ssh-keygen -t ed25519 -N '' -f FILE` and install its .pub on the server".into()
                    } else {
                        "get the host key with `ssh-keyscan -p PORT HOST > FILE` and check its fingerprint against the provider's".into()
                    }),
                );
            }
        }
        check_root(p, s.src, &s.at("root"), self.root.as_deref());
    }
}

impl TargetSettings for SftpTarget {
    fn secret_files(&self) -> Vec<(&'static str, Option<&Path>)> {
        vec![("key_file", Some(self.key_file.as_path())), ("known_hosts_file", Some(self.known_hosts_file.as_path()))]
    }

    fn resolve_paths(&mut self, fix: &mut dyn FnMut(&mut PathBuf)) {
        fix(&mut self.key_file);
        fix(&mut self.known_hosts_file);
    }

    fn local_path(&self) -> Option<&Path> {
        None // a remote store
    }
}
