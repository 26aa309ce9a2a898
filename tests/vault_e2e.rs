//! End to end: `drctl run` / `restore` of `kind = "vault"` jobs against real OpenBao servers (raft
//! storage), including the failure cases.
//!
//! Restores rewind a whole cluster, so every test that restores starts its OWN OpenBao server
//! ([`OwnBao`]: own temp dir, free ports, init, unseal, kv-v2 at `secret/`, optionally TLS). Tests
//! that only back up use the shared server from `scripts/services.sh` under unique paths.

mod common;
#[path = "common/openbao.rs"]
mod openbao;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;

use common::*;
use openbao::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------- drctl config

fn write_token(s: &Scratch, name: &str, token: &str) -> PathBuf {
    let p = s.path(name);
    std::fs::write(&p, format!("{token}\n")).unwrap();
    p
}

/// `[jobs.vault]` with the fs target `local`; `auth` holds the credential lines.
fn vault_job(bao: &Bao, auth: &str) -> String {
    let ca = bao.ca.as_ref().map(|c| format!("ca_file = \"{}\"\n", c.display())).unwrap_or_default();
    format!("[jobs.vault]\nkind = \"vault\"\ntargets = [\"local\"]\naddress = \"{}\"\n{ca}{auth}\n", bao.addr)
}

fn token_job(s: &Scratch, bao: &Bao) -> String {
    let f = write_token(s, "vault_token", &bao.token);
    vault_job(bao, &format!("token_file = \"{}\"", f.display()))
}

fn backup_id(r: &Ran) -> String {
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout.trim().to_string()
}

fn manifest(s: &Scratch) -> Value {
    let files = s.fs_files();
    let m = files.iter().find(|f| f.ends_with(".manifest.json")).expect("a manifest");
    serde_json::from_slice(&std::fs::read(s.path("backups").join(m)).unwrap()).unwrap()
}

fn list_json(s: &Scratch) -> Value {
    let r = run(s.drctl().args(["--json", "list", "vault"]));
    assert_eq!(r.code, 0, "{r:?}");
    serde_json::from_str(&r.stdout).unwrap()
}

// ---------------------------------------------------------------- tests

#[test]
fn backup_change_restore_reads_the_old_secrets_back_over_tls() {
    let own = OwnBao::start(true);
    let bao = &own.bao;
    bao.put_secret("app/db", json!({ "password": "old-password-1", "user": "app" }));
    bao.put_secret("app/api", json!({ "key": "api-key-1" }));
    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), token_job(&s, bao)));

    let id = backup_id(&run(s.drctl().args(["run", "vault"])));
    let files = s.fs_files();
    assert!(files.iter().any(|f| f.ends_with(&format!("{id}.snapshot.snap.zst.age"))), "{files:?}");
    let m = manifest(&s);
    assert_eq!(m["kind"], "vault");
    assert_eq!(m["artifacts"][0]["format"], "raft-snapshot");
    let f = &m["facts"];
    assert!(f["raft_index"].as_u64().unwrap() > 0, "{f}");
    assert!(f["raft_term"].as_u64().unwrap() >= 1, "{f}");
    assert!(f["state_size"].as_u64().unwrap() > 0, "{f}");
    assert_eq!(f["checksums_verified"], true);
    assert!(f["server_version"].as_str().unwrap().starts_with('2'), "{f}");
    assert_eq!(f["raft_servers"].as_array().unwrap().len(), 1, "{f}");
    let text = std::fs::read_to_string(s.path("backups").join(files.iter().find(|f| f.ends_with(".json")).unwrap()));
    assert!(!text.unwrap().contains(&bao.token), "no token in the manifest");

    // change, delete and add after the backup
    bao.put_secret("app/db", json!({ "password": "new-password-2", "user": "app" }));
    bao.delete_secret("app/api");
    bao.put_secret("app/later", json!({ "x": "added after the backup" }));

    let dry = run(s.drctl().args(["restore", "vault", "--latest", "--dry-run"]).env_remove("VAULT_TOKEN"));
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("POST /v1/sys/storage/raft/snapshot:"), "{dry:?}");
    assert_eq!(bao.secret("app/db").unwrap()["password"], "new-password-2", "a dry run changes nothing");

    let r = run(s.drctl().args(["restore", "vault", "--latest"]).env_remove("VAULT_TOKEN").env_remove("BAO_TOKEN"));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!format!("{}{}", r.stdout, r.stderr).contains(&bao.token), "{r:?}");
    bao.eventually("the old password", || bao.secret("app/db").is_some_and(|d| d["password"] == "old-password-1"));
    assert_eq!(bao.secret("app/api").expect("the deleted secret is back")["key"], "api-key-1");
    bao.eventually("the later secret to be gone", || bao.secret("app/later").is_none());
    assert_eq!(bao.seal_status()["sealed"], false, "a restore into the same cluster keeps it unsealed");

    // without the CA the server's certificate is refused, with a hint
    let s2 = Scratch::new();
    let no_ca = Bao { ca: None, ..bao.clone() };
    s2.write_config(&format!("{}{}", s2.head(), token_job(&s2, &no_ca)));
    let r = run(s2.drctl().args(["run", "vault"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("ca_file"), "{r:?}");
    assert!(s2.fs_files().is_empty());
}

#[test]
fn approle_login_backs_up() {
    let bao = Bao::shared();
    let mount = unique("approle").replace('_', "-");
    let policy = unique("drctl-snapshot");
    // removed again however the test ends
    struct Cleanup(Bao, String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            self.0.call("DELETE", &format!("sys/auth/{}", self.1), None);
            self.0.call("DELETE", &format!("sys/policies/acl/{}", self.2), None);
        }
    }
    let _cleanup = Cleanup(bao.clone(), mount.clone(), policy.clone());
    bao.ok("POST", &format!("sys/auth/{mount}"), Some(json!({ "type": "approle" })));
    bao.ok(
        "PUT",
        &format!("sys/policies/acl/{policy}"),
        Some(json!({ "policy": "path \"sys/storage/raft/snapshot\" { capabilities = [\"read\"] }" })),
    );
    bao.ok(
        "POST",
        &format!("auth/{mount}/role/backup"),
        Some(json!({ "token_policies": [policy], "token_ttl": "10m" })),
    );
    let role_id = bao.ok("GET", &format!("auth/{mount}/role/backup/role-id"), None)["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = bao.ok("POST", &format!("auth/{mount}/role/backup/secret-id"), None)["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();

    let s = Scratch::new();
    let sid = write_token(&s, "secret_id", &secret_id);
    let auth = format!("role_id = \"{role_id}\"\nsecret_id_file = \"{}\"\napprole_mount = \"{mount}\"", sid.display());
    s.write_config(&format!("{}{}", s.head(), vault_job(&bao, &auth)));
    let r = run(s.drctl().args(["run", "vault"]));
    let id = backup_id(&r);
    assert!(!format!("{}{}", r.stdout, r.stderr).contains(&secret_id), "{r:?}");
    assert!(s.fs_files().iter().any(|f| f.ends_with(&format!("{id}.manifest.json"))));
    assert!(manifest(&s)["facts"]["raft_index"].as_u64().unwrap() > 0);
    // the login token did not outlive the run
    let accessors = bao.ok("LIST", "auth/token/accessors", None)["data"]["keys"].clone();
    let from_this_role = accessors
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            let (status, v) = bao.call("POST", "auth/token/lookup-accessor", Some(json!({ "accessor": a })));
            status == 200 && v["data"]["path"].as_str().is_some_and(|p| p.starts_with(&format!("auth/{mount}/")))
        })
        .count();
    assert_eq!(from_this_role, 0, "the AppRole login token is revoked after the run");

    // (the exit code of `check` also depends on 3-2-1, which one fs target does not meet)
    let r = run(s.drctl().args(["check"]));
    assert!(r.stdout.contains("may read the raft snapshot"), "{r:?}");

    // a wrong secret_id: a clear error, nothing committed
    let s2 = Scratch::new();
    let bad = write_token(&s2, "secret_id", "00000000-0000-0000-0000-000000000000");
    let auth = format!("role_id = \"{role_id}\"\nsecret_id_file = \"{}\"\napprole_mount = \"{mount}\"", bad.display());
    s2.write_config(&format!("{}{}", s2.head(), vault_job(&bao, &auth)));
    let r = run(s2.drctl().args(["run", "vault"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("AppRole login") && r.stderr.contains("secret_id"), "{r:?}");
    assert!(s2.fs_files().is_empty());
}

#[test]
fn a_wrong_token_fails_and_commits_nothing() {
    let bao = Bao::shared();
    let s = Scratch::new();
    let wrong = "s.wrongTokenDrctlTest0123456789";
    let f = write_token(&s, "vault_token", wrong);
    s.write_config(&format!("{}{}", s.head(), vault_job(&bao, &format!("token_file = \"{}\"", f.display()))));
    let r = run(s.drctl().args(["run", "vault"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("job `vault`") && r.stderr.contains("refused the token"), "{r:?}");
    assert!(r.stderr.contains("hint:"), "{r:?}");
    assert!(!r.stderr.contains(wrong), "the token is never shown: {r:?}");
    assert!(s.fs_files().is_empty(), "nothing committed: {:?}", s.fs_files());
    assert_eq!(list_json(&s)[0]["status"], "failed");

    // a valid token whose policy does not allow snapshots
    let v = bao.ok("POST", "auth/token/create", Some(json!({ "policies": ["default"], "ttl": "5m" })));
    let weak = v["auth"]["client_token"].as_str().unwrap().to_string();
    write_token(&s, "vault_token", &weak);
    let r = run(s.drctl().args(["run", "vault"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("may not read `sys/storage/raft/snapshot`"), "{r:?}");
    assert!(!r.stderr.contains(&weak), "{r:?}");
    assert!(s.fs_files().is_empty());
}

#[test]
fn an_unreachable_server_fails_with_a_hint() {
    let s = Scratch::new();
    let f = write_token(&s, "vault_token", "s.unreachableTokenValue42");
    let down = Bao { addr: format!("http://127.0.0.1:{}", free_port()), token: String::new(), ca: None };
    s.write_config(&format!("{}{}", s.head(), vault_job(&down, &format!("token_file = \"{}\"", f.display()))));
    let r = run(s.drctl().args(["run", "vault"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("job `vault`") && r.stderr.contains("no answer from"), "{r:?}");
    assert!(r.stderr.contains("is Vault/OpenBao running"), "{r:?}");
    assert!(s.fs_files().is_empty());
    let r = run(s.drctl().args(["check"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("FAIL  job vault"), "{r:?}");
}

/// Serves `snapshot` (all of it, or `cut` bytes of it and then hangs up) as the raft snapshot of
/// a pretend OpenBao server; answers health and capabilities like a real one.
fn serve_snapshot(snapshot: Vec<u8>, cut: Option<usize>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let head_end = loop {
                if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break 0,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
            };
            if head_end == 0 {
                continue;
            }
            let head = String::from_utf8_lossy(&raw[..head_end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while raw.len() < head_end + len {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
            }
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let json = |body: &str| {
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    .into_bytes()
            };
            let reply = if path.starts_with("/v1/sys/health") {
                json(
                    r#"{"initialized":true,"sealed":false,"standby":false,"version":"2.7.2","cluster_name":"fake","cluster_id":"fake-id"}"#,
                )
            } else if path == "/v1/sys/capabilities-self" {
                json(r#"{"data":{"capabilities":["root"]}}"#)
            } else if path == "/v1/sys/storage/raft/snapshot" {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    snapshot.len()
                )
                .into_bytes();
                r.extend_from_slice(&snapshot[..cut.unwrap_or(snapshot.len())]);
                r
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            };
            let _ = conn.write_all(&reply);
            let _ = conn.flush();
        }
    });
    addr
}

/// `snapshot` with one byte of `state.bin` flipped, re-tarred and re-gzipped (SHA256SUMS kept).
fn flip_state_byte(snapshot: &[u8]) -> Vec<u8> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(snapshot));
    let mut out = tar::Builder::new(Vec::new());
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if name == "state.bin" {
            let mid = data.len() / 2;
            data[mid] ^= 0x01;
        }
        let mut h = entry.header().clone();
        out.append_data(&mut h, &name, &data[..]).unwrap();
        names.push(name);
    }
    assert_eq!(names, ["meta.json", "state.bin", "SHA256SUMS", "SHA256SUMS.sealed"]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&out.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

#[test]
fn a_tampered_or_cut_snapshot_fails_the_backup_and_commits_nothing() {
    let real = Bao::shared().snapshot();
    let tampered = flip_state_byte(&real);
    let s = Scratch::new();
    let fake = Bao { addr: serve_snapshot(tampered, None), token: "s.fakeServerToken1234".into(), ca: None };
    s.write_config(&format!("{}{}", s.head(), token_job(&s, &fake)));
    let r = run(s.drctl().args(["run", "vault"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("failed verification") && r.stderr.contains("checksum mismatch"), "{r:?}");
    assert!(r.stderr.contains("SHA256SUMS") && r.stderr.contains("`state.bin`"), "{r:?}");
    assert!(r.stderr.contains("nothing was committed"), "{r:?}");
    assert!(s.fs_files().is_empty(), "nothing committed: {:?}", s.fs_files());
    assert_eq!(list_json(&s)[0]["status"], "failed");

    // the untouched snapshot from the same stand-in is accepted: the check above is not spurious
    let s = Scratch::new();
    let fake = Bao { addr: serve_snapshot(real.clone(), None), token: "s.fakeServerToken1234".into(), ca: None };
    s.write_config(&format!("{}{}", s.head(), token_job(&s, &fake)));
    backup_id(&run(s.drctl().args(["run", "vault"])));

    // a download that breaks off half way
    let s = Scratch::new();
    let fake = Bao {
        addr: serve_snapshot(real.clone(), Some(real.len() / 2)),
        token: "s.fakeServerToken1234".into(),
        ca: None,
    };
    s.write_config(&format!("{}{}", s.head(), token_job(&s, &fake)));
    let r = run(s.drctl().args(["run", "vault"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("broke off"), "{r:?}");
    assert!(s.fs_files().is_empty(), "nothing committed: {:?}", s.fs_files());
}

#[test]
fn output_file_is_a_plain_snapshot() {
    let bao = Bao::shared();
    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), token_job(&s, &bao)));
    backup_id(&run(s.drctl().args(["run", "vault"])));
    let out = s.path("vault.snap");
    let r = run(s.drctl().args(["restore", "vault", "--latest", "--output"]).arg(&out));
    assert_eq!(r.code, 0, "{r:?}");
    let listed = Command::new("tar").arg("-tzf").arg(&out).output().unwrap();
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let names: Vec<String> = String::from_utf8_lossy(&listed.stdout).lines().map(str::to_string).collect();
    assert_eq!(names, ["meta.json", "state.bin", "SHA256SUMS", "SHA256SUMS.sealed"]);
    // the same bytes as the manifest's plaintext digest
    let m = manifest(&s);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), m["artifacts"][0]["plaintext"]["size"].as_u64().unwrap());
    assert_eq!(std::fs::metadata(&out).unwrap().len(), m["facts"]["snapshot_size"].as_u64().unwrap());
}

#[test]
fn a_different_cluster_needs_force_and_then_the_source_unseal_keys() {
    let (a, b) = (OwnBao::start(false), OwnBao::start(false));
    a.bao.put_secret("dr/app", json!({ "v": "from-a" }));
    b.bao.put_secret("dr/app", json!({ "v": "from-b" }));
    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), token_job(&s, &a.bao)));
    backup_id(&run(s.drctl().args(["run", "vault"])));
    let restore = |extra: &[&str], token: Option<&str>| {
        let mut c = s.drctl();
        c.args(["restore", "vault", "--latest", "--to", &b.bao.addr]).args(extra);
        c.env_remove("VAULT_TOKEN").env_remove("BAO_TOKEN");
        if let Some(t) = token {
            c.env("VAULT_TOKEN", t);
        }
        run(&mut c)
    };

    // the job's token is never sent to another server
    let r = restore(&[], None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no token for that server") && r.stderr.contains("VAULT_TOKEN"), "{r:?}");

    let dry = restore(&["--dry-run"], Some(&b.bao.token));
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("another cluster"), "{dry:?}");

    // the normal restore is refused by the server, with the way out
    let r = restore(&[], Some(&b.bao.token));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("refused the snapshot") && r.stderr.contains("other unseal keys"), "{r:?}");
    assert!(r.stderr.contains("--force") && r.stderr.contains("SOURCE cluster's unseal keys"), "{r:?}");
    assert!(!r.stderr.contains(&b.bao.token) && !r.stderr.contains(&a.bao.token), "{r:?}");
    assert_eq!(b.bao.secret("dr/app").unwrap()["v"], "from-b", "the refused restore changed nothing");

    let dry = restore(&["--force", "--dry-run"], Some(&b.bao.token));
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("POST /v1/sys/storage/raft/snapshot-force"), "{dry:?}");

    let r = restore(&["--force"], Some(&b.bao.token));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("seals itself"), "{r:?}");
    b.bao.eventually("the forced cluster to seal itself", || b.bao.seal_status()["sealed"] == true);

    // sealed: a backup of it says so
    let s2 = Scratch::new();
    s2.write_config(&format!("{}{}", s2.head(), token_job(&s2, &b.bao)));
    let r = run(s2.drctl().args(["run", "vault"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is sealed"), "{r:?}");

    // B's own key no longer opens it; A's does, and A's token reads A's secrets there
    let (_, v) = b.bao.call_as(None, "PUT", "sys/unseal", Some(json!({ "key": b.unseal_key })));
    assert_ne!(v["sealed"], false, "B's own key must not unseal the restored cluster: {v}");
    let (_, v) = b.bao.call_as(None, "PUT", "sys/unseal", Some(json!({ "reset": true })));
    assert_eq!(v["sealed"], true, "{v}");
    let (status, v) = b.bao.call_as(None, "PUT", "sys/unseal", Some(json!({ "key": a.unseal_key })));
    assert_eq!(status, 200, "{v}");
    b.bao.wait_active();
    let as_a = Bao { token: a.bao.token.clone(), ..b.bao.clone() };
    as_a.eventually("A's secret on B", || as_a.secret("dr/app").is_some_and(|d| d["v"] == "from-a"));
}
