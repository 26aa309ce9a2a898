//! OpenBao servers for the tests: [`Bao`] talks to one over HTTP(S) (the shared server from
//! `scripts/services.sh`, or one of the test's own), [`OwnBao`] starts a server of the test alone
//! (own temp dir, free ports, init with one key share, unseal, kv-v2 at `secret/`, optionally TLS):
//! restores rewind a whole cluster, so every test that restores into one needs its own.
//! Included with `#[path]` by tests/vault_e2e.rs and tests/verify_e2e.rs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{endpoint, unique};

// ---------------------------------------------------------------- HTTP to OpenBao

/// One HTTP request; returns the status and the raw body.
pub fn http_raw(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
    ca: Option<&Path>,
) -> (u16, Vec<u8>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(60));
        if let Some(ca) = ca {
            b = b.tls_certs_only(reqwest::Certificate::from_pem_bundle(&std::fs::read(ca).unwrap()).unwrap());
        }
        let client = b.build().unwrap();
        let mut req = client.request(method.parse().unwrap(), url);
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
            }
            Err(_) => (0, Vec::new()),
        }
    })
}

/// A Vault/OpenBao server to talk to in a test.
#[derive(Clone)]
pub struct Bao {
    pub addr: String,
    pub token: String,
    pub ca: Option<PathBuf>,
}

impl Bao {
    pub fn shared() -> Bao {
        Bao { addr: endpoint("DRCTL_TEST_VAULT_ADDR"), token: endpoint("DRCTL_TEST_VAULT_TOKEN"), ca: None }
    }

    pub fn call_as(&self, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, raw) =
            http_raw(method, &format!("{}/v1/{path}", self.addr), token, body.as_ref(), self.ca.as_deref());
        (status, serde_json::from_slice(&raw).unwrap_or(Value::Null))
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(Some(&self.token), method, path, body)
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body);
        assert!((200..300).contains(&status), "{method} {path}: {status} {v}");
        v
    }

    pub fn put_secret(&self, path: &str, data: Value) {
        self.ok("POST", &format!("secret/data/{path}"), Some(json!({ "data": data })));
    }

    /// The secret's current data, or None when it does not exist (or cannot be read now).
    pub fn secret(&self, path: &str) -> Option<Value> {
        let (status, v) = self.call("GET", &format!("secret/data/{path}"), None);
        (status == 200).then(|| v["data"]["data"].clone())
    }

    pub fn delete_secret(&self, path: &str) {
        self.ok("DELETE", &format!("secret/metadata/{path}"), None);
    }

    pub fn seal_status(&self) -> Value {
        self.call_as(None, "GET", "sys/seal-status", None).1
    }

    pub fn snapshot(&self) -> Vec<u8> {
        let (status, raw) = http_raw(
            "GET",
            &format!("{}/v1/sys/storage/raft/snapshot", self.addr),
            Some(&self.token),
            None,
            self.ca.as_deref(),
        );
        assert_eq!(status, 200);
        raw
    }

    /// Wait until `f` holds (OpenBao reloads its state a few seconds after a restore).
    pub fn eventually(&self, what: &str, f: impl Fn() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn wait_active(&self) {
        self.eventually("an active, unsealed node", || self.call_as(None, "GET", "sys/health", None).0 == 200);
    }
}

// ---------------------------------------------------------------- own OpenBao servers

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An OpenBao server of this test alone (as scripts/services.sh start_openbao does it): raft
/// storage in a temp dir, free ports, initialised with one key share, unsealed, kv-v2 at `secret/`.
pub struct OwnBao {
    pub bao: Bao,
    pub unseal_key: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for OwnBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl CLI.
pub fn make_tls(dir: &Path) -> PathBuf {
    let sh = |script: &str| {
        let out = Command::new("bash").arg("-ec").arg(script).current_dir(dir).output().expect("bash runs");
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem \
        -days 2 -subj /CN=drctl-test-ca 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr \
        -subj /CN=127.0.0.1 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nkeyUsage=digitalSignature\\nextendedKeyUsage=serverAuth\\n' > ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext 2>/dev/null");
    dir.join("ca.pem")
}

impl OwnBao {
    pub fn start(tls: bool) -> OwnBao {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("raft")).unwrap();
        let (port, cluster_port) = (free_port(), free_port());
        let ca = tls.then(|| make_tls(d));
        let scheme = if tls { "https" } else { "http" };
        let tls_lines = if tls {
            format!(
                "tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"",
                d.join("server.pem").display(),
                d.join("server.key").display()
            )
        } else {
            "tls_disable = true".to_string()
        };
        let node = unique("node");
        std::fs::write(
            d.join("config.hcl"),
            format!(
                "storage \"raft\" {{\n  path = \"{raft}\"\n  node_id = \"{node}\"\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster_port}\"\n  {tls_lines}\n}}\n\
                 api_addr = \"{scheme}://127.0.0.1:{port}\"\ncluster_addr = \"https://127.0.0.1:{cluster_port}\"\ndisable_mlock = true\n",
                raft = d.join("raft").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("bao.log")).unwrap();
        let child = Command::new(endpoint("DRCTL_TEST_BAO_BIN"))
            .arg("server")
            .arg(format!("-config={}", d.join("config.hcl").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("bao server starts");
        let mut bao = Bao { addr: format!("{scheme}://127.0.0.1:{port}"), token: String::new(), ca };
        let mut own = OwnBao { bao: bao.clone(), unseal_key: String::new(), child, _dir: dir };
        let log_tail = |d: &Path| std::fs::read_to_string(d.join("bao.log")).unwrap_or_default();
        bao.eventually("the listener", || bao.call_as(None, "GET", "sys/health", None).0 != 0);
        let (status, init) =
            bao.call_as(None, "PUT", "sys/init", Some(json!({ "secret_shares": 1, "secret_threshold": 1 })));
        assert_eq!(status, 200, "init: {init} {}", log_tail(own._dir.path()));
        bao.token = init["root_token"].as_str().unwrap().to_string();
        let key = init["keys_base64"][0].as_str().unwrap().to_string();
        let (status, v) = bao.call_as(None, "PUT", "sys/unseal", Some(json!({ "key": key })));
        assert_eq!(status, 200, "unseal: {v}");
        bao.wait_active();
        bao.ok("POST", "sys/mounts/secret", Some(json!({ "type": "kv", "options": { "version": "2" } })));
        // kv-v2 upgrades its storage in the background right after mounting
        bao.eventually("kv-v2 ready", || {
            bao.call("POST", "secret/data/ready", Some(json!({ "data": { "ok": 1 } }))).0 == 200
        });
        own.bao = bao;
        own.unseal_key = key;
        own
    }
}
