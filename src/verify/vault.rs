//! Vault drill: restore the raft snapshot into a file in the drill's scratch directory (`restore
//! --output`), check the snapshot's own `SHA256SUMS` over `meta.json` and `state.bin` (the same
//! checker the backup runs on the fly), and compare the raft index, term and `state.bin` hash
//! with the manifest's facts. With `verify.scratch_address`, also restore it into that throwaway
//! server (snapshot-force): never into the job's own `address`.

use super::Drill;
use crate::config::JobSpec;
use crate::jobs::RestoreOptions;
use crate::jobs::vault::snapshot;
use crate::jobs::vault::{FORMAT, Facts};

/// Drill a vault backup.
pub async fn drill(d: &mut Drill<'_>) {
    let JobSpec::Vault(cfg) = &d.job.spec else { return };
    let facts: Facts = serde_json::from_value(d.manifest.facts.clone()).unwrap_or_default();
    let Some(artifact) = d.manifest.artifacts.iter().find(|a| a.format == FORMAT).map(|a| a.name.clone()) else {
        d.error("backup", "has no raft snapshot artifact");
        return;
    };
    let file = d.scratch.join("raft.snap");
    if d.restore(&artifact, RestoreOptions::default(), Some(file.clone())).await.is_none() {
        return;
    }
    let path = file.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        snapshot::verify(std::io::BufReader::new(f)).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match checked {
        Err(e) => d.error(format!("artifact `{artifact}`"), format!("the snapshot fails its own checks: {e}")),
        Ok(info) => {
            let mut ok = true;
            if facts.raft_index != 0 && info.meta.index != facts.raft_index {
                ok = false;
                d.error(
                    "raft index",
                    format!("{} in the snapshot, the manifest says {}", info.meta.index, facts.raft_index),
                );
            }
            if facts.raft_term != 0 && info.meta.term != facts.raft_term {
                ok = false;
                d.error(
                    "raft term",
                    format!("{} in the snapshot, the manifest says {}", info.meta.term, facts.raft_term),
                );
            }
            if !facts.state_sha256.is_empty() && info.state_sha256 != facts.state_sha256 {
                ok = false;
                d.error(
                    "state.bin",
                    format!("sha256 {} in the snapshot, the manifest says {}", info.state_sha256, facts.state_sha256),
                );
            }
            if ok {
                d.info(
                    "snapshot",
                    format!(
                        "SHA256SUMS match; raft index {}, term {}, state.bin {} bytes",
                        info.meta.index, info.meta.term, info.state_size
                    ),
                );
            }
        }
    }

    let Some(scratch) = d.job.common.verify.as_ref().and_then(|v| v.scratch_address.clone()) else {
        d.info("scratch server", "none configured (`verify.scratch_address`): the snapshot was not loaded");
        return;
    };
    let same = match (url::Url::parse(&scratch), url::Url::parse(&cfg.address)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => scratch.trim_end_matches('/') == cfg.address.trim_end_matches('/'),
    };
    if same {
        d.error("verify.scratch_address", "is the job's own `address`: a drill never restores into the source");
        return;
    }
    let opts = RestoreOptions { to: Some(scratch), ..Default::default() };
    d.restore(&artifact, opts, None).await;
}
