//! The manifest: a small JSON document that commits a backup and describes it completely.
//!
//! It is written to each target after all of the backup's artifacts are durably stored there, so
//! its presence is the commit point; an artifact without a manifest is an incomplete upload. It
//! holds everything a restore needs without the catalog (which is why `drctl catalog rebuild` can
//! recreate the catalog from targets alone) and nothing secret: no credentials, no data.
//!
//! Versioning: `version` is bumped only for changes an older drctl cannot read; fields are only
//! ever added. A reader refuses a manifest whose version is newer than it knows.

mod drill;
pub use drill::{DrillRecord, DrillStatus, RECORD_FORMAT, RECORD_VERSION};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::pipeline::Digest;
use crate::{Error, Result};

pub const FORMAT: &str = "drctl-manifest";
/// The newest version this drctl reads. A manifest is written as version 1 unless it has a
/// chunked artifact (version 2): an older drctl must refuse those, not restore the recipe.
pub const VERSION: u32 = 2;

/// The version to write for a manifest with these artifacts.
pub fn version_for(artifacts: &[Artifact]) -> u32 {
    if artifacts.iter().any(|a| a.chunked.is_some()) { 2 } else { 1 }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Always `drctl-manifest`.
    pub format: String,
    pub version: u32,
    pub backup_id: String,
    pub job: String,
    /// Job kind (`postgres`, …): selects the restorer.
    pub kind: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub drctl_version: String,
    /// The host that made the backup.
    pub host: String,
    pub pipeline: PipelineInfo,
    pub artifacts: Vec<Artifact>,
    /// Kind-specific facts about the source (server version, sizes, row counts …).
    pub facts: serde_json::Value,
    /// Why the backup looked suspicious when it was made (empty, or much smaller than the job's
    /// last good backup), judged before the commit; absent when it looked right or there was
    /// nothing to compare with. Kept on the target so that prune protects the last good backup
    /// even with an empty catalog. (Added in version 1: older readers ignore it.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspicious: Option<String>,
    /// The id of the backup this one was judged against (the job's last good backup, from the
    /// catalog), when there was one: a verdict made with a baseline is final, one made without
    /// (an empty catalog) is judged again by prune from the backups on the targets. (Added in
    /// version 1: older readers ignore it.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged_against: Option<String>,
}

/// How artifacts were encoded, in order from plaintext to stored bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PipelineInfo {
    pub compression: Compression,
    pub encryption: Encryption,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Compression {
    /// `zstd`
    pub algorithm: String,
    pub level: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Encryption {
    /// `age` (X25519 recipients)
    pub algorithm: String,
    pub recipients: Vec<String>,
}

/// One stored file of a backup (one database dump, the globals, …).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Artifact {
    /// Name within the backup, e.g. the database name, or `globals`.
    pub name: String,
    /// What the plaintext is: `pg_dump-custom`, `sql`, …
    pub format: String,
    /// Object key, relative to the target root.
    pub key: String,
    /// The decrypted, decompressed bytes.
    pub plaintext: Digest,
    /// The bytes on the target (of a chunked artifact: its recipe object).
    pub stored: Digest,
    /// Deduplicated storage: `key` is the encrypted recipe, `plaintext.sha256` the SHA-256 of the
    /// chunk list (see `chunked::recipe::ListDigest`). (Added in version 2.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunked: Option<Chunked>,
}

/// The plaintext side of a chunked artifact: what prune and check need without the identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Chunked {
    /// The repository (`chunks/<scope>/` on each target) holding the chunks.
    pub scope: String,
    /// Chunks in the artifact (with repeats).
    pub chunk_count: u64,
    /// Stored bytes this backup added: blobs no target held before (padded, encrypted).
    pub added_bytes: u64,
    pub added_chunks: u64,
    /// Every chunk id the artifact refers to, each once, sorted (hex).
    pub ids: Vec<String>,
}

impl Manifest {
    pub fn plaintext_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.plaintext.size).sum()
    }
    /// Bytes this backup added to its targets: a stream artifact's object, a chunked artifact's
    /// recipe and the blobs it was the first to store.
    pub fn stored_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.stored.size + a.chunked.as_ref().map_or(0, |c| c.added_bytes)).sum()
    }

    /// Order by start time (sub-second), then id: two backups started in the same second share
    /// their id's time part, so the id alone does not say which is newer.
    pub fn newer_cmp(&self, other: &Manifest) -> std::cmp::Ordering {
        self.started_at.cmp(&other.started_at).then_with(|| self.backup_id.cmp(&other.backup_id))
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parse and check a manifest read from `key`.
    ///
    /// # Errors
    /// [`Error::Manifest`] when it is not JSON, not a drctl manifest, or from a newer drctl.
    pub fn from_json(key: &str, data: &[u8]) -> Result<Manifest> {
        #[derive(Deserialize)]
        struct Head {
            format: String,
            version: u32,
        }
        let err = |message: String| Error::Manifest { key: key.to_string(), message };
        let head: Head = serde_json::from_slice(data).map_err(|e| err(format!("not a drctl manifest: {e}")))?;
        if head.format != FORMAT {
            return Err(err(format!("format is `{}`, expected `{FORMAT}`", head.format)));
        }
        if head.version > VERSION {
            return Err(err(format!(
                "manifest version {} was written by a newer drctl (this one reads up to {VERSION}): upgrade drctl",
                head.version
            )));
        }
        serde_json::from_slice(data).map_err(|e| err(format!("invalid manifest: {e}")))
    }
}

/// Whether `data` is a drctl manifest of a version newer than this drctl reads (as opposed to
/// damaged or foreign JSON): the hint differs (upgrade drctl vs inspect the file).
pub fn is_newer_version(data: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Head {
        format: String,
        version: u32,
    }
    serde_json::from_slice::<Head>(data).is_ok_and(|h| h.format == FORMAT && h.version > VERSION)
}

#[cfg(test)]
pub(crate) fn sample() -> Manifest {
    Manifest {
        format: FORMAT.into(),
        version: VERSION,
        backup_id: "20261123T020000Z-abcdef".into(),
        job: "pg".into(),
        kind: "postgres".into(),
        started_at: "2026-11-23T02:00:00Z".parse().unwrap(),
        finished_at: "2026-11-23T02:01:00Z".parse().unwrap(),
        drctl_version: "0.1.0".into(),
        host: "h".into(),
        pipeline: PipelineInfo {
            compression: Compression { algorithm: "zstd".into(), level: 3 },
            encryption: Encryption { algorithm: "age".into(), recipients: vec!["age1x".into()] },
        },
        artifacts: vec![Artifact {
            name: "app".into(),
            format: "pg_dump-custom".into(),
            key: "pg/2026/11/23/20261123T020000Z-abcdef.app.dump.zst.age".into(),
            plaintext: Digest { size: 10, sha256: "aa".into() },
            stored: Digest { size: 20, sha256: "bb".into() },
            chunked: None,
        }],
        facts: serde_json::json!({"server_version": "15.4"}),
        suspicious: None,
        judged_against: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::from_json("k", &m.to_json()).unwrap(), m);
    }

    #[test]
    fn refuses_newer_versions_and_foreign_json() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        v["version"] = serde_json::json!(VERSION + 1);
        let e = Manifest::from_json("k", v.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().contains("newer drctl"), "{e}");
        assert!(is_newer_version(v.to_string().as_bytes()));
        assert!(!is_newer_version(&sample().to_json()));
        assert!(!is_newer_version(b"{\"format\":\"x\",\"version\":9}"));
        assert!(!is_newer_version(b"{\"format\":\"drctl-manifest\",\"vers"));
        assert!(Manifest::from_json("k", b"{\"format\":\"x\",\"version\":1}").is_err());
        assert!(Manifest::from_json("k", b"garbage").is_err());
    }

    #[test]
    fn suspicious_is_an_optional_added_field() {
        let m = sample();
        assert!(!String::from_utf8(m.to_json()).unwrap().contains("suspicious"), "absent when not flagged");
        let mut flagged = sample();
        flagged.suspicious = Some("empty: no file".into());
        assert_eq!(Manifest::from_json("k", &flagged.to_json()).unwrap(), flagged);
        assert_eq!(flagged.version, VERSION, "an added field does not bump the version");
    }
}
