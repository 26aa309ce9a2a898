//! `drctl check --read-data`: read back every stored object of every committed backup on every
//! target and prove it intact, without the identity (a backup host can run it).
//!
//! A stream artifact (and a chunked artifact's recipe) must have the manifest's stored size and
//! sha256. A pack must hash (BLAKE3) to its own id and have its index's size, and every chunk a
//! manifest refers to must be in some index. A damaged or missing object is named with the backups it
//! damages (exit 1). What age would say of a blob's ciphertext needs the identity: a drill checks that.

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt;
use sha2::{Digest as _, Sha256};

use super::Engine;
use crate::chunked::repo;
use crate::error::FailureKind;
use crate::finding::{Finding, Severity};
use crate::manifest::Manifest;
use crate::targets::Target;
use crate::{Result, layout};

pub async fn read_data(engine: &Engine) -> Vec<Finding> {
    let mut out = Vec::new();
    for name in engine.config.targets.keys() {
        let subject = format!("data {name}");
        let found = match engine.target(name) {
            Ok(t) => read_target(&t, &subject).await,
            Err(e) => Err(e),
        };
        match found {
            Ok(f) => out.extend(f),
            Err(e) => out.push(Finding::new(subject, Severity::Error, e.to_string(), e.hint())),
        }
    }
    out
}

enum Hasher {
    Sha256(Sha256),
    Blake3(Box<blake3::Hasher>),
}

/// Size and hex digest of a whole object, streamed.
async fn digest(target: &Target, key: &str, mut h: Hasher) -> Result<(u64, String)> {
    let mut s = target.get(key, None).await?;
    let mut size = 0u64;
    while let Some(c) = s
        .try_next()
        .await
        .map_err(|e| crate::targets::target_error(target.name(), "get", key, FailureKind::Transient, e))?
    {
        size += c.len() as u64;
        match &mut h {
            Hasher::Sha256(x) => x.update(&c),
            Hasher::Blake3(x) => {
                x.update(&c);
            }
        }
    }
    Ok((
        size,
        match h {
            Hasher::Sha256(x) => hex::encode(x.finalize()),
            Hasher::Blake3(x) => x.finalize().to_hex().to_string(),
        },
    ))
}

/// `job backup` names of the manifests for which `hit` holds.
fn backups_where(manifests: &[Manifest], hit: impl Fn(&Manifest) -> bool) -> String {
    let names: Vec<String> =
        manifests.iter().filter(|m| hit(m)).map(|m| format!("`{}` {}", m.job, m.backup_id)).collect();
    if names.is_empty() { "no committed backup".into() } else { names.join(", ") }
}

async fn read_target(target: &Target, subject: &str) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    let mut manifests = Vec::new();
    for m in target.list("").await? {
        if layout::manifest_id(&m.key).is_none() {
            continue;
        }
        let data = target.get_bytes(&m.key).await?;
        match Manifest::from_json(&m.key, &data) {
            Ok(x) => manifests.push(x),
            Err(e) => out.push(Finding::new(subject, Severity::Warning, e.to_string(), e.hint())),
        }
    }
    let (mut objects, mut bytes) = (0u64, 0u64);
    let damaged_hint = || {
        Some("restore from another target (`--target`) and run the job again to store a fresh copy here".to_string())
    };
    for m in &manifests {
        for a in &m.artifacts {
            let what = match digest(target, &a.key, Hasher::Sha256(Sha256::new())).await {
                Ok((size, sha)) => {
                    objects += 1;
                    bytes += size;
                    if size == a.stored.size && sha == a.stored.sha256 {
                        continue;
                    }
                    format!(
                        "has sha256 {sha} ({size} bytes), the manifest says {} ({} bytes)",
                        a.stored.sha256, a.stored.size
                    )
                }
                Err(e) if e.is_not_found() => "is missing".to_string(),
                Err(e) => return Err(e),
            };
            out.push(Finding::new(
                subject,
                Severity::Error,
                format!("`{}` {what}: backup {} of job `{}` is damaged", a.key, m.backup_id, m.job),
                damaged_hint(),
            ));
        }
    }
    let scopes: BTreeSet<&str> = manifests
        .iter()
        .flat_map(|m| m.artifacts.iter().filter_map(|a| a.chunked.as_ref().map(|c| c.scope.as_str())))
        .collect();
    for scope in scopes {
        let indexes = repo::load_indexes(target, scope).await?;
        let mut packs: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
        for (_, idx) in &indexes {
            for p in &idx.packs {
                let e = packs.entry(p.id.clone()).or_insert((p.size, Vec::new()));
                e.1.extend(p.blobs.iter().map(|b| b.0.clone()));
            }
        }
        for (id, (size, chunks)) in &packs {
            let key = repo::pack_key(scope, id);
            let what = match digest(target, &key, Hasher::Blake3(Box::default())).await {
                Ok((got, hash)) => {
                    objects += 1;
                    bytes += got;
                    if got == *size && &hash == id {
                        continue;
                    }
                    format!("pack `{key}` is damaged (BLAKE3 {hash}, {got} bytes; its index says {size} bytes)")
                }
                Err(e) if e.is_not_found() => format!("pack `{key}` is missing"),
                Err(e) => return Err(e),
            };
            let hit = |m: &Manifest| {
                m.artifacts
                    .iter()
                    .filter_map(|a| a.chunked.as_ref())
                    .any(|c| c.scope == scope && c.ids.iter().any(|i| chunks.contains(i)))
            };
            out.push(Finding::new(
                subject,
                Severity::Error,
                format!("{what}: it damages {}", backups_where(&manifests, hit)),
                damaged_hint(),
            ));
        }
        let indexed: BTreeSet<&String> = packs.values().flat_map(|(_, c)| c.iter()).collect();
        let missing = |m: &Manifest| {
            m.artifacts
                .iter()
                .filter_map(|a| a.chunked.as_ref())
                .any(|c| c.scope == scope && c.ids.iter().any(|i| !indexed.contains(i)))
        };
        if manifests.iter().any(missing) {
            out.push(Finding::new(
                subject,
                Severity::Error,
                format!(
                    "chunk repository `{scope}` lacks chunks (in no index) that {} refer to",
                    backups_where(&manifests, missing)
                ),
                damaged_hint(),
            ));
        }
    }
    if !out.iter().any(|f| f.severity == Severity::Error) {
        out.push(Finding::new(
            subject,
            Severity::Info,
            format!(
                "read {objects} object(s), {} of {} committed backup(s): intact",
                crate::units::bytes(bytes),
                manifests.len()
            ),
            None,
        ));
    }
    Ok(out)
}
