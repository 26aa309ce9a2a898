//! Vault drill: restore the raft snapshot into a file in the drill's scratch directory (`restore
//! --output`), check the snapshot's own `SHA256SUMS` over `meta.json` and `state.bin` (the same
//! checker the backup runs on the fly), and compare the raft index, term and `state.bin` hash
//! with the manifest's facts. With `verify.scratch_address`, also restore it into that throwaway
//! server (snapshot-force): never into the job's own `address`. Then, with `verify.read_paths`
//! (or `verify.unseal_keys_file`), wait for the server to seal itself with the restored state,
//! unseal it with the SOURCE cluster's keys (`verify.unseal_keys_file`; a server with the source's
//! auto-unseal opens by itself), and read every configured path back with a token of the source
//! cluster (`verify.read_token_file`, else the job's own token): each must exist. A token is sent
//! only once the scratch server answers with the snapshot's cluster id, i.e. holds the restored
//! copy of the source. Values are never shown.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::secrets::read_secret_file;
use crate::drill::context::Drill;
use crate::jobs::RestoreOptions;
use crate::jobs::VerifyConfig;
use crate::jobs::vault::VaultJob;
use crate::jobs::vault::snapshot;
use crate::jobs::vault::{FORMAT, Facts};
use crate::redact::{Secret, url_for_display};

/// Drill a vault backup.
pub async fn drill(d: &mut Drill<'_>, cfg: &VaultJob) {
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
    let opts = RestoreOptions { to: Some(scratch.clone()), ..Default::default() };
    if d.restore(&artifact, opts, None).await.is_none() {
        return;
    }
    let verify = d.job.common.verify.clone().unwrap_or_default();
    if verify.read_paths.is_empty() && verify.unseal_keys_file.is_none() {
        d.info(
            "scratch server",
            "snapshot restored (snapshot-force); nothing read back (set `verify.read_paths` and `verify.unseal_keys_file`)",
        );
        return;
    }
    read_back(d, cfg, &verify, &scratch, &facts).await;
}

/// How long the scratch server may take to seal itself, unseal and become active.
const SETTLE: Duration = Duration::from_secs(60);
/// How long a path that does not read back is retried (the server may still be loading its state).
const READ_RETRY: Duration = Duration::from_secs(5);

struct Scratch {
    base: url::Url,
    client: reqwest::Client,
}

impl Scratch {
    fn new(address: &str, ca: Option<PathBuf>) -> Result<Scratch, String> {
        let base = url::Url::parse(address).map_err(|e| format!("not a URL: {e}"))?;
        // reqwest is built without a default crypto provider (an error only says one is installed)
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = ca {
            let pem = std::fs::read(&ca).map_err(|e| format!("cannot read the CA `{}`: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("`{}` is not a PEM certificate bundle: {e}", ca.display()))?;
            b = b.tls_certs_only(certs);
        }
        Ok(Scratch { base, client: b.build().map_err(|e| format!("cannot set up the HTTP client: {e}"))? })
    }

    /// One request; the status and the JSON body (null when there is none).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), String> {
        let url = format!("{}/v1/{}", self.base.as_str().trim_end_matches('/'), path.trim_start_matches('/'));
        let mut req = self.client.request(method, url);
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t.expose());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| format!("reading the answer failed: {e}"))?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)))
    }

    async fn seal_status(&self) -> Result<serde_json::Value, String> {
        match self.call(reqwest::Method::GET, "sys/seal-status", None, None).await? {
            (200, v) => Ok(v),
            (status, v) => Err(format!("sys/seal-status answered {status}: {v}")),
        }
    }
}

/// After the forced restore: unseal the scratch server with the source's keys, then read
/// `verify.read_paths` back.
async fn read_back(d: &mut Drill<'_>, cfg: &VaultJob, verify: &VerifyConfig, address: &str, facts: &Facts) {
    let subject = "scratch server";
    let shown = url_for_display(address);
    let ca = std::env::var_os("VAULT_CACERT")
        .or_else(|| std::env::var_os("BAO_CACERT"))
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| cfg.ca_file.clone());
    let server = match Scratch::new(address, ca) {
        Ok(s) => s,
        Err(e) => return d.error("verify.scratch_address", e),
    };
    let clock = Instant::now();
    // the restored state takes over: the server seals itself (or, with auto-unseal, comes back
    // unsealed as the source cluster)
    let restored = |v: &serde_json::Value| {
        v["sealed"] == true || (!facts.cluster_id.is_empty() && v["cluster_id"] == facts.cluster_id.as_str())
    };
    let mut status = serde_json::Value::Null;
    while clock.elapsed() < SETTLE {
        match server.seal_status().await {
            Ok(v) if restored(&v) => {
                status = v;
                break;
            }
            Ok(v) => status = v,
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !restored(&status) {
        d.error(
            subject,
            format!(
                "{shown} did not take over the restored state within {}s (seal status: {status})",
                SETTLE.as_secs()
            ),
        );
        return;
    }
    if status["sealed"] == true {
        let Some(file) = &verify.unseal_keys_file else {
            d.error(
                subject,
                format!("{shown} sealed itself after the snapshot-force restore: it opens only with the SOURCE cluster's unseal keys"),
            );
            d.hint("set `verify.unseal_keys_file` to a file with the source cluster's unseal keys, one per line");
            return;
        };
        let keys: Vec<Secret> = match std::fs::read_to_string(file) {
            Ok(text) => text.lines().map(str::trim).filter(|l| !l.is_empty()).map(Secret::new).collect(),
            Err(e) => return d.error("verify.unseal_keys_file", format!("cannot read `{}`: {e}", file.display())),
        };
        let mut progress = serde_json::Value::Null;
        for key in &keys {
            let body = serde_json::json!({ "key": key.expose() });
            match server.call(reqwest::Method::PUT, "sys/unseal", None, Some(body)).await {
                Ok((200, v)) => {
                    let open = v["sealed"] == false;
                    progress = v;
                    if open {
                        break;
                    }
                }
                Ok((code, v)) => {
                    progress = serde_json::json!({ "status": code, "errors": v["errors"] });
                    break;
                }
                Err(e) => return d.error(subject, format!("unseal of {shown} failed: {e}")),
            }
        }
        if progress["sealed"] != false {
            let _ =
                server.call(reqwest::Method::PUT, "sys/unseal", None, Some(serde_json::json!({ "reset": true }))).await;
            d.error(
                subject,
                format!(
                    "the {} key(s) in `{}` did not unseal {shown} (progress {}/{}{}): the restored state opens only                      with the SOURCE cluster's unseal keys",
                    keys.len(),
                    file.display(),
                    progress["progress"],
                    progress["t"],
                    progress.get("errors").map(|e| format!(", {e}")).unwrap_or_default(),
                ),
            );
            d.hint("put the unseal keys of the cluster the backup was taken from into `verify.unseal_keys_file`");
            return;
        }
    }
    // active and answering with the restored cluster's id before a token is sent to it
    let mut health = serde_json::Value::Null;
    while clock.elapsed() < SETTLE * 2 {
        if let Ok((200, v)) = server.call(reqwest::Method::GET, "sys/health", None, None).await {
            health = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if health.is_null() {
        return d.error(subject, format!("{shown} did not become active after the unseal"));
    }
    if !facts.cluster_id.is_empty() && health["cluster_id"] != facts.cluster_id.as_str() {
        d.error(
            subject,
            format!(
                "{shown} answers as cluster {}, the snapshot is of cluster {}: it does not hold the restored state,                  so no token is sent to it",
                health["cluster_id"], facts.cluster_id
            ),
        );
        return;
    }
    d.add_restore_time(clock);
    d.info(subject, format!("snapshot restored into {shown} (snapshot-force), unsealed and active"));
    if verify.read_paths.is_empty() {
        return;
    }
    let token = match (&verify.read_token_file, &cfg.token, &cfg.token_file) {
        (Some(f), _, _) | (None, None, Some(f)) => match read_secret_file(f) {
            Ok(t) if !t.expose().is_empty() => t,
            Ok(_) => return d.error("verify.read_token_file", format!("`{}` is empty", f.display())),
            Err(e) => return d.error("verify.read_token_file", e.to_string()),
        },
        (None, Some(t), _) => t.clone(),
        (None, None, None) => {
            d.error("verify.read_paths", "no token to read them with");
            d.hint("set `verify.read_token_file` to a token of the source cluster that may read those paths");
            return;
        }
    };
    let mut pending: Vec<String> = verify.read_paths.clone();
    let mut last: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + READ_RETRY;
    loop {
        last.clear();
        let mut still = Vec::new();
        for path in pending {
            match server.call(reqwest::Method::GET, &path, Some(&token), None).await {
                Ok((200, _)) => d.info(format!("path `{path}`"), "read back from the restored server"),
                Ok((404, _)) => {
                    last.push((path.clone(), "missing on the restored server (404)".into()));
                    still.push(path);
                }
                Ok((403, _)) => {
                    last.push((path.clone(), "the token may not read it (403 permission denied)".into()));
                    still.push(path);
                }
                Ok((code, v)) => {
                    last.push((path.clone(), format!("reading it answered {code}: {}", v["errors"])));
                    still.push(path);
                }
                Err(e) => {
                    last.push((path.clone(), e));
                    still.push(path);
                }
            }
        }
        pending = still;
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (path, message) in last {
        let forbidden = message.contains("403");
        d.error(format!("path `{path}`"), message);
        if forbidden {
            d.hint("use `verify.read_token_file` with a source-cluster token whose policy may `read` the path");
        } else {
            d.hint("the backup does not hold this path: check `verify.read_paths`, then the source cluster");
        }
    }
}
