//! A target's configuration: the fields every kind has (retention, medium, timeouts) and the
//! closed set of kinds ([`TargetKind`]), each kind's own struct living in its file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::locate::Step;
use crate::config::problems::{Problems, Section, Source};

use super::fs::FsTarget;
use super::s3::S3Target;
use super::sftp::SftpTarget;
use super::webdav::WebdavTarget;

/// One `[targets.NAME]` table.
#[derive(Debug, Clone, Serialize)]
pub struct TargetConfig {
    pub common: TargetCommon,
    pub kind: TargetKind,
}

/// Fields every target kind has.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetCommon {
    /// What kind of storage this is, for 3-2-1's "two media" (e.g. `disk`, `remote-disk`,
    /// `object-storage`). Default: the target's type.
    pub medium: Option<String>,
    /// Whether the target is in another place than the data (3-2-1's "one offsite"). Default false.
    #[serde(default)]
    pub offsite: bool,
    /// GFS retention for this target (applied by `drctl prune`).
    pub keep: Option<KeepPolicy>,
    /// Deadlines for this target's network operations, e.g.
    /// `timeouts = { connect = "10s", idle = "30s", request = "60s" }` (each optional; these are
    /// the defaults). A target that misses one fails that operation (retried like any network
    /// fault); during a backup, a target that accepts no data for `idle` is dropped from it so
    /// that it never holds the others back.
    pub timeouts: Option<TargetTimeouts>,
}

/// `timeouts = { … }` on a target: how long drctl waits before it gives up on a silent target.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TargetTimeouts {
    /// Establishing a connection (TCP, TLS, the SSH handshake), e.g. `10s` (default).
    pub connect: Option<String>,
    /// Silence on an open connection: no answer byte, or (during a backup) no data accepted,
    /// e.g. `30s` (default). Also the SSH keepalive window of `sftp` targets.
    pub idle: Option<String>,
    /// One whole request that carries no streamed body (a listing page, a HEAD, a manifest
    /// upload, one S3 part), retries included, e.g. `60s` (default; an S3 part of `part_size_mib`
    /// must go up within it). Streamed uploads and downloads are bounded by `idle` instead, so a
    /// large backup on a slow line is not cut off.
    pub request: Option<String>,
}

/// The deadlines of one target, parsed (see [`TargetTimeouts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub connect: std::time::Duration,
    pub idle: std::time::Duration,
    pub request: std::time::Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            connect: std::time::Duration::from_secs(10),
            idle: std::time::Duration::from_secs(30),
            request: std::time::Duration::from_secs(60),
        }
    }
}

impl TargetTimeouts {
    /// The deadlines, each field's default where it is unset or not a duration (validation
    /// reports the latter).
    pub fn deadlines(t: Option<&TargetTimeouts>) -> Deadlines {
        let d = Deadlines::default();
        let Some(t) = t else { return d };
        let parse = |v: &Option<String>, default| {
            v.as_deref().and_then(|s| humantime::parse_duration(s).ok()).filter(|d| !d.is_zero()).unwrap_or(default)
        };
        Deadlines {
            connect: parse(&t.connect, d.connect),
            idle: parse(&t.idle, d.idle),
            request: parse(&t.request, d.request),
        }
    }
}

/// GFS retention, with the semantics of `restic forget`: a backup kept by any rule is kept.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeepPolicy {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    /// Keep everything newer than this duration (e.g. `7d`, `36h`).
    pub within: Option<String>,
}

/// What code outside a target kind needs to know of its settings. Every kind implements all of
/// it (there are no defaults): a new kind does not compile until it says which files it reads.
pub trait TargetSettings {
    /// Host-side secret files the settings name, by key: checked by `drctl check` and before a run.
    fn secret_files(&self) -> Vec<(&'static str, Option<&Path>)>;
    /// Resolve relative paths against the config's directory.
    fn resolve_paths(&mut self, fix: &mut dyn FnMut(&mut PathBuf));
    /// The directory on this machine the target writes to, if it is one: in a container it must
    /// be durable storage (`drctl generate` mounts it, or refuses to render).
    fn local_path(&self) -> Option<&Path>;
}

/// The closed set of target kinds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TargetKind {
    Fs(FsTarget),
    S3(S3Target),
    Sftp(SftpTarget),
    Webdav(WebdavTarget),
}

impl TargetKind {
    /// Every problem of the kind's own settings, located in section `s` (the target's table).
    pub(crate) fn validate(&self, s: &Section, p: &mut Problems) {
        match self {
            TargetKind::Fs(c) => c.validate(s, p),
            TargetKind::S3(c) => c.validate(s, p),
            TargetKind::Sftp(c) => c.validate(s, p),
            TargetKind::Webdav(c) => c.validate(s, p),
        }
    }

    /// The kind's own settings, behind what every kind answers.
    pub fn settings(&self) -> &dyn TargetSettings {
        match self {
            TargetKind::Fs(c) => c,
            TargetKind::S3(c) => c,
            TargetKind::Sftp(c) => c,
            TargetKind::Webdav(c) => c,
        }
    }

    /// [`TargetKind::settings`], to change.
    pub fn settings_mut(&mut self) -> &mut dyn TargetSettings {
        match self {
            TargetKind::Fs(c) => c,
            TargetKind::S3(c) => c,
            TargetKind::Sftp(c) => c,
            TargetKind::Webdav(c) => c,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            TargetKind::Fs(_) => "fs",
            TargetKind::S3(_) => "s3",
            TargetKind::Sftp(_) => "sftp",
            TargetKind::Webdav(_) => "webdav",
        }
    }
}

impl TargetConfig {
    /// This target's deadlines (`timeouts`, else the defaults).
    pub fn deadlines(&self) -> Deadlines {
        TargetTimeouts::deadlines(self.common.timeouts.as_ref())
    }

    /// The target as 3-2-1 sees it.
    pub fn placement(&self, name: &str) -> crate::retention::rule321::Placement {
        crate::retention::rule321::Placement {
            target: name.to_string(),
            medium: self.common.medium.clone().unwrap_or_else(|| self.kind.type_name().to_string()),
            offsite: self.common.offsite,
        }
    }
}

/// A target's `root` is a relative directory below the account's home (or the WebDAV URL).
pub(crate) fn check_root(p: &mut Problems, src: &Source, path: &[Step], root: Option<&str>) {
    if let Some(r) = root
        && r.split('/').any(|c| c == ".." || c == ".")
    {
        p.error(
            src,
            path,
            format!("root `{r}` may not contain `.` or `..`"),
            Some("e.g. `drctl` or `backups/drctl`".into()),
        );
    }
}
