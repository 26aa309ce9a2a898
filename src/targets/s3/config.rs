//! `type = "s3"`: the target's configuration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::problems::{Problems, Section};
use crate::redact::Secret;
use crate::targets::TargetSettings;

/// `type = "s3"`: AWS S3, Hetzner Object Storage, Garage, MinIO, …
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Target {
    /// Endpoint URL, e.g. `https://fsn1.your-objectstorage.com`. Default: AWS for `region`.
    pub endpoint: Option<String>,
    /// Region name (default `us-east-1`; Hetzner: `fsn1`, `nbg1`, `hel1`; Garage: `garage`).
    #[serde(default = "default_region")]
    pub region: String,
    pub bucket: String,
    /// Key prefix inside the bucket (default: none).
    pub root: Option<String>,
    pub access_key_id: Option<Secret>,
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key: Option<Secret>,
    pub secret_access_key_file: Option<PathBuf>,
    /// Path-style addressing (`endpoint/bucket/key`), default true: what S3-compatible stores expect.
    #[serde(default = "yes")]
    pub path_style: bool,
    /// `when_required` (default) sends request checksums only where S3 requires them; many
    /// S3-compatible stores reject the SDK's default CRC32 headers on multipart uploads.
    /// `when_supported` sends them always (AWS).
    #[serde(default)]
    pub checksums: ChecksumMode,
    /// Multipart part size in MiB (default 16, at least 5). Memory per upload is about twice this.
    #[serde(default = "default_part_size")]
    pub part_size_mib: u64,
    /// Object Lock retention set on every object of a backup (artifacts and manifest) as it is
    /// uploaded, e.g. `{ mode = "compliance", days = 30 }` (default: none). The bucket must have
    /// Object Lock enabled (which also makes it versioned); an upload the store did not lock is an
    /// error. Uploads then always carry a CRC32 checksum (S3 requires one with Object Lock), and
    /// `drctl prune` never deletes a backup while any of its objects is locked.
    pub object_lock: Option<S3ObjectLock>,
    /// Storage class for new objects, passed to the store as is, e.g. `STANDARD_IA`, `GLACIER_IR`
    /// (default: the bucket's, usually `STANDARD`).
    pub storage_class: Option<String>,
    /// Server-side encryption for new objects: `AES256` (SSE-S3) or `aws:kms` (SSE-KMS) (default:
    /// the bucket's). This is the store's own encryption, on top of drctl's age encryption.
    pub sse: Option<S3Sse>,
    /// KMS key for `sse = "aws:kms"` (key id, ARN or `alias/…`; default: the account's S3 key).
    pub sse_kms_key_id: Option<String>,
}

/// `object_lock = { mode = "…", days = N }` on an S3 target.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3ObjectLock {
    /// `governance` (users with `s3:BypassGovernanceRetention` may still delete) or `compliance`
    /// (nobody can delete or shorten it, not even the root account, until it expires).
    pub mode: S3ObjectLockMode,
    /// Retention in days from the upload, at least 1 (e.g. 30).
    pub days: u32,
}

/// The two S3 Object Lock retention modes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum S3ObjectLockMode {
    Governance,
    Compliance,
}

/// `sse = "AES256" | "aws:kms"` on an S3 target.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum S3Sse {
    /// SSE-S3: keys managed by the store.
    #[serde(rename = "AES256")]
    Aes256,
    /// SSE-KMS: keys in AWS KMS (`sse_kms_key_id`, or the account's default S3 key).
    #[serde(rename = "aws:kms")]
    AwsKms,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumMode {
    #[default]
    WhenRequired,
    WhenSupported,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn yes() -> bool {
    true
}

fn default_part_size() -> u64 {
    16
}

impl S3Target {
    /// Every problem of this target's own settings, located in section `s` (its table).
    pub(crate) fn validate(&self, s: &Section, p: &mut Problems) {
        if self.access_key_id.is_some() && self.access_key_id_file.is_some() {
            p.error(s.src, &s.at("access_key_id"), "set `access_key_id` or `access_key_id_file`, not both", None);
        }
        if self.secret_access_key.is_some() && self.secret_access_key_file.is_some() {
            p.error(
                s.src,
                &s.at("secret_access_key"),
                "set `secret_access_key` or `secret_access_key_file`, not both",
                None,
            );
        }
        if !(5..=5120).contains(&self.part_size_mib) {
            p.error(
                s.src,
                &s.at("part_size_mib"),
                format!("part size {} MiB is outside S3's 5..=5120 MiB", self.part_size_mib),
                None,
            );
        }
        if let Some(ep) = &self.endpoint
            && url::Url::parse(ep).is_err()
        {
            p.error(
                s.src,
                &s.at("endpoint"),
                format!("`{ep}` is not a URL"),
                Some("e.g. `https://fsn1.your-objectstorage.com`".into()),
            );
        }
        if self.bucket.is_empty() {
            p.error(s.src, &s.at("bucket"), "bucket is empty", None);
        }
        if let Some(lock) = &self.object_lock
            && lock.days == 0
        {
            p.error(
                s.src,
                &s.nested("object_lock", "days"),
                "object lock retention must be at least 1 day",
                Some("e.g. `object_lock = { mode = \"compliance\", days = 30 }`".into()),
            );
        }
        if let Some(class) = &self.storage_class {
            if class.is_empty() || class.contains(char::is_whitespace) {
                p.error(
                    s.src,
                    &s.at("storage_class"),
                    format!("`{class}` is not a storage class"),
                    Some("e.g. `STANDARD`, `STANDARD_IA`, `GLACIER_IR`".into()),
                );
            } else if !aws_sdk_s3::types::StorageClass::values().contains(&class.as_str()) {
                p.warn(
                    s.src,
                    &s.at("storage_class"),
                    format!("`{class}` is not an AWS storage class: it is passed to the store as is"),
                    Some(format!("AWS knows {}", aws_sdk_s3::types::StorageClass::values().join(", "))),
                );
            }
        }
        if self.sse_kms_key_id.is_some() && self.sse != Some(S3Sse::AwsKms) {
            p.error(s.src, &s.at("sse_kms_key_id"), "`sse_kms_key_id` needs `sse = \"aws:kms\"`", None);
        }
    }
}

impl TargetSettings for S3Target {
    fn secret_files(&self) -> Vec<(&'static str, Option<&Path>)> {
        vec![
            ("access_key_id_file", self.access_key_id_file.as_deref()),
            ("secret_access_key_file", self.secret_access_key_file.as_deref()),
        ]
    }

    fn resolve_paths(&mut self, fix: &mut dyn FnMut(&mut PathBuf)) {
        self.access_key_id_file.iter_mut().for_each(&mut *fix);
        self.secret_access_key_file.iter_mut().for_each(fix);
    }

    fn local_path(&self) -> Option<&Path> {
        None // a remote store
    }
}
