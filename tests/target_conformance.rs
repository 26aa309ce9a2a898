//! Target conformance suite: every target kind runs the same cases (restic / OpenDAL
//! behaviour-test style) against the contract in the doc comment of `src/targets/mod.rs`.
//!
//! A case is an `async fn(&Fixture)`: the opened [`Target`] plus the few kind-specific probes a
//! case needs (where the leftovers of an unfinished upload would be, how to plant an object just
//! outside the target's root). `conformance!` instantiates every case for every kind as a test of
//! its own: `fs_put_get`, `s3_put_get`, …
//!
//! `fs` runs in a tempdir; `s3` runs against the real Garage server started by
//! `scripts/services.sh` (endpoints from the environment or endpoints.env), each test under a
//! unique `root` prefix, with 5 MiB parts so that a few MiB already make a multipart upload.
//! `sftp` runs against the real OpenSSH server (sshd with internal-sftp, whose home directory is
//! `DRCTL_TEST_SFTP_ROOT` on this machine, so the fixture inspects it directly) and `webdav`
//! against the real rclone WebDAV server (inspected over HTTP), each under a unique `root`.

mod common;

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use drctl::error::FailureKind;
use drctl::redact::Secret;
use drctl::targets::TargetCommon;
use drctl::targets::TargetConfig;
use drctl::targets::TargetKind;
use drctl::targets::fs::FsTarget;
use drctl::targets::s3::ChecksumMode;
use drctl::targets::s3::S3Target;
use drctl::targets::sftp::SftpTarget;
use drctl::targets::webdav::WebdavTarget;
use drctl::targets::{ByteStream, ObjectMeta, Target};
use futures::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;
const PART_MIB: u64 = 5;

// ------------------------------------------------------------------------------------ fixtures

enum Kind {
    /// The target's root is `dir/target`, so that `dir` is "just outside" it.
    Fs { dir: tempfile::TempDir },
    /// A raw client on the real endpoint, for what the `Target` API cannot show (multipart uploads).
    S3 { client: aws_sdk_s3::Client, bucket: String, root: String },
    /// `data` is the SFTP account's home on this machine; the target's root is `data/root`.
    Sftp { data: PathBuf, root: String },
    /// A raw HTTP client on the server; the target's root is `url/root/`.
    Webdav { client: reqwest::Client, url: String, root: String },
}

struct Fixture {
    target: Target,
    kind: Kind,
}

fn s3_config(endpoint: &str, root: &str) -> TargetConfig {
    TargetConfig {
        common: TargetCommon::default(),
        kind: TargetKind::S3(S3Target {
            endpoint: Some(endpoint.to_string()),
            region: common::endpoint("DRCTL_TEST_S3_REGION"),
            bucket: common::endpoint("DRCTL_TEST_S3_BUCKET"),
            root: Some(root.to_string()),
            access_key_id: Some(Secret::new(common::endpoint("DRCTL_TEST_S3_ACCESS_KEY"))),
            access_key_id_file: None,
            secret_access_key: Some(Secret::new(common::endpoint("DRCTL_TEST_S3_SECRET_KEY"))),
            secret_access_key_file: None,
            path_style: true,
            checksums: ChecksumMode::default(),
            part_size_mib: PART_MIB,
            object_lock: None,
            storage_class: None,
            sse: None,
            sse_kms_key_id: None,
        }),
    }
}

/// A client built the way `src/targets/s3.rs` builds its own.
fn raw_s3_client() -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{
        BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    };
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(common::endpoint("DRCTL_TEST_S3_REGION")))
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            common::endpoint("DRCTL_TEST_S3_ACCESS_KEY"),
            common::endpoint("DRCTL_TEST_S3_SECRET_KEY"),
            None,
            None,
            "conformance-test",
        ))
        .http_client(http)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .endpoint_url(common::endpoint("DRCTL_TEST_S3_ENDPOINT"))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn sftp_config(root: &str) -> SftpTarget {
    SftpTarget {
        host: common::endpoint("DRCTL_TEST_SFTP_HOST"),
        port: common::endpoint("DRCTL_TEST_SFTP_PORT").parse().unwrap(),
        user: common::endpoint("DRCTL_TEST_SFTP_USER"),
        key_file: common::endpoint("DRCTL_TEST_SFTP_KEY").into(),
        known_hosts_file: common::endpoint("DRCTL_TEST_SFTP_KNOWN_HOSTS").into(),
        root: Some(root.to_string()),
        max_connections: 4,
    }
}

fn webdav_config(root: &str) -> WebdavTarget {
    WebdavTarget {
        url: common::endpoint("DRCTL_TEST_WEBDAV_URL"),
        user: common::endpoint("DRCTL_TEST_WEBDAV_USER"),
        password: Some(Secret::new(common::endpoint("DRCTL_TEST_WEBDAV_PASS"))),
        password_file: None,
        root: Some(root.to_string()),
    }
}

fn open(name: &str, kind: TargetKind) -> Target {
    Target::open(name, &TargetConfig { common: TargetCommon::default(), kind }).unwrap()
}

fn raw_webdav_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().unwrap()
}

/// A raw WebDAV request with the test credentials.
fn dav(client: &reqwest::Client, method: &str, url: &str) -> reqwest::RequestBuilder {
    client
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
        .basic_auth(common::endpoint("DRCTL_TEST_WEBDAV_USER"), Some(common::endpoint("DRCTL_TEST_WEBDAV_PASS")))
}

/// Every href below `url` (PROPFIND `Depth: infinity`, which rclone allows), percent-decoded.
async fn dav_hrefs(client: &reqwest::Client, url: &str) -> Vec<String> {
    let r = dav(client, "PROPFIND", url).header("Depth", "infinity").send().await.unwrap();
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return vec![];
    }
    assert_eq!(r.status().as_u16(), 207, "PROPFIND {url}");
    let body = r.text().await.unwrap();
    body.split("href>")
        .skip(1)
        .step_by(2)
        .filter_map(|s| s.split('<').next())
        .map(|h| {
            let (bytes, mut out, mut i) = (h.as_bytes(), Vec::new(), 0);
            while i < bytes.len() {
                match h.get(i + 1..i + 3).filter(|_| bytes[i] == b'%').and_then(|x| u8::from_str_radix(x, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(bytes[i]);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        })
        .collect()
}

impl Fixture {
    fn sftp() -> Fixture {
        let root = format!("conformance/{}", common::unique("t"));
        Fixture {
            target: open("conformance-sftp", TargetKind::Sftp(sftp_config(&root))),
            kind: Kind::Sftp { data: common::endpoint("DRCTL_TEST_SFTP_ROOT").into(), root },
        }
    }

    fn webdav() -> Fixture {
        let root = format!("conformance/{}", common::unique("t"));
        let url = common::endpoint("DRCTL_TEST_WEBDAV_URL").trim_end_matches('/').to_string();
        Fixture {
            target: open("conformance-webdav", TargetKind::Webdav(webdav_config(&root))),
            kind: Kind::Webdav { client: raw_webdav_client(), url, root },
        }
    }

    fn fs() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let config = TargetConfig {
            common: TargetCommon::default(),
            kind: TargetKind::Fs(FsTarget { path: dir.path().join("target") }),
        };
        Fixture { target: Target::open("conformance-fs", &config).unwrap(), kind: Kind::Fs { dir } }
    }

    fn s3() -> Fixture {
        let root = format!("conformance/{}", common::unique("t"));
        let config = s3_config(&common::endpoint("DRCTL_TEST_S3_ENDPOINT"), &root);
        Fixture {
            target: Target::open("conformance-s3", &config).unwrap(),
            kind: Kind::S3 { client: raw_s3_client(), bucket: common::endpoint("DRCTL_TEST_S3_BUCKET"), root },
        }
    }

    /// What an unfinished or aborted upload may leave behind: `.partial-` files (fs), multipart
    /// uploads (s3). Must be empty whenever no `put` is running.
    async fn leftovers(&self) -> Vec<String> {
        match &self.kind {
            Kind::Fs { dir } => walk(dir.path()).into_iter().filter(|p| p.contains(".partial-")).collect(),
            Kind::S3 { client, bucket, root } => {
                let out =
                    client.list_multipart_uploads().bucket(bucket).prefix(format!("{root}/")).send().await.unwrap();
                out.uploads()
                    .iter()
                    .map(|u| format!("{} (upload {})", u.key().unwrap_or("?"), u.upload_id().unwrap_or("?")))
                    .collect()
            }
            Kind::Sftp { data, root } => {
                walk(&data.join(root)).into_iter().filter(|p| p.contains(".partial-")).collect()
            }
            Kind::Webdav { client, url, root } => dav_hrefs(client, &format!("{url}/{root}/"))
                .await
                .into_iter()
                .filter(|h| h.contains(".partial-"))
                .collect(),
        }
    }

    /// Store an object just outside the target's root, by other means than the target; returns
    /// the key that would reach it from inside (`../…`).
    async fn plant_outside(&self, name: &str, data: &'static [u8]) -> String {
        match &self.kind {
            Kind::Fs { dir } => {
                std::fs::write(dir.path().join(name), data).unwrap();
                format!("../{name}")
            }
            Kind::S3 { client, bucket, root } => {
                let (parent, last) = root.rsplit_once('/').unwrap();
                let key = format!("{parent}/{last}.outside/{name}");
                client
                    .put_object()
                    .bucket(bucket)
                    .key(&key)
                    .body(Bytes::from_static(data).into())
                    .send()
                    .await
                    .unwrap();
                format!("../{last}.outside/{name}")
            }
            Kind::Sftp { data: home, root } => {
                let (parent, last) = root.rsplit_once('/').unwrap();
                let dir = home.join(parent).join(format!("{last}.outside"));
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(name), data).unwrap();
                format!("../{last}.outside/{name}")
            }
            Kind::Webdav { client, url, root } => {
                let (parent, last) = root.rsplit_once('/').unwrap();
                for dir in [format!("{url}/{parent}/"), format!("{url}/{parent}/{last}.outside/")] {
                    let r = dav(client, "MKCOL", &dir).send().await.unwrap();
                    assert!(r.status().is_success() || r.status().as_u16() == 405, "MKCOL {dir}: {}", r.status());
                }
                let r = dav(client, "PUT", &format!("{url}/{parent}/{last}.outside/{name}"))
                    .body(Bytes::from_static(data))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "PUT outside: {}", r.status());
                format!("../{last}.outside/{name}")
            }
        }
    }

    fn s3_root(&self) -> &str {
        match &self.kind {
            Kind::S3 { root, .. } => root,
            _ => panic!("not an s3 fixture"),
        }
    }

    /// Best effort: remove what the test stored on the shared servers (the tempdir removes itself).
    async fn cleanup(self) {
        match &self.kind {
            Kind::Sftp { data, root } => {
                let (parent, last) = root.rsplit_once('/').unwrap();
                let _ = std::fs::remove_dir_all(data.join(root));
                let _ = std::fs::remove_dir_all(data.join(parent).join(format!("{last}.outside")));
                return;
            }
            Kind::Webdav { client, url, root } => {
                let (parent, last) = root.rsplit_once('/').unwrap();
                for dir in [format!("{url}/{root}/"), format!("{url}/{parent}/{last}.outside/")] {
                    let _ = dav(client, "DELETE", &dir).send().await;
                }
                return;
            }
            _ => {}
        }
        let Kind::S3 { client, bucket, root } = &self.kind else {
            return;
        };
        let (parent, last) = root.rsplit_once('/').unwrap();
        for prefix in [format!("{root}/"), format!("{parent}/{last}.outside/")] {
            let mut pages = client.list_objects_v2().bucket(bucket).prefix(&prefix).into_paginator().send();
            while let Some(Ok(page)) = pages.next().await {
                for obj in page.contents() {
                    let _ = client.delete_object().bucket(bucket).key(obj.key().unwrap_or_default()).send().await;
                }
            }
            if let Ok(out) = client.list_multipart_uploads().bucket(bucket).prefix(&prefix).send().await {
                for u in out.uploads() {
                    let _ = client
                        .abort_multipart_upload()
                        .bucket(bucket)
                        .key(u.key().unwrap_or_default())
                        .upload_id(u.upload_id().unwrap_or_default())
                        .send()
                        .await;
                }
            }
        }
    }
}

/// Every file under `dir`, as paths relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------- helpers

/// `len` pseudo-random bytes, chunk `index` of the sequence `seed` (xorshift64).
fn chunk(seed: u64, index: u64, len: usize) -> Bytes {
    let mut x = (seed ^ (index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// `total` bytes of sequence `seed` in chunks of `chunk_len`, generated lazily.
fn generated(seed: u64, total: usize, chunk_len: usize) -> impl Iterator<Item = Bytes> + Send + 'static {
    (0..total.div_ceil(chunk_len)).map(move |i| chunk(seed, i as u64, chunk_len.min(total - i * chunk_len)))
}

fn stream_of(chunks: impl Iterator<Item = Bytes> + Send + 'static) -> ByteStream {
    Box::pin(futures::stream::iter(chunks.map(Ok)))
}

/// `chunks`, then a failure of the data source.
fn failing_after(chunks: impl Iterator<Item = Bytes> + Send + 'static) -> ByteStream {
    let fail = std::iter::once(Err(io::Error::other("the data source died")));
    Box::pin(futures::stream::iter(chunks.map(Ok).chain(fail)))
}

fn sha256_of(chunks: impl Iterator<Item = Bytes>) -> (u64, Vec<u8>) {
    let (mut h, mut n) = (Sha256::new(), 0u64);
    for c in chunks {
        n += c.len() as u64;
        h.update(&c);
    }
    (n, h.finalize().to_vec())
}

async fn read(t: &Target, key: &str, range: Option<Range<u64>>) -> Vec<u8> {
    let mut s = t.get(key, range.clone()).await.unwrap_or_else(|e| panic!("get {key} {range:?}: {e:?}"));
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap_or_else(|e| panic!("reading {key} {range:?}: {e}")));
    }
    out
}

/// Read an object back without holding it: (size, sha256).
async fn read_sha256(t: &Target, key: &str) -> (u64, Vec<u8>) {
    let mut s = t.get(key, None).await.unwrap();
    let (mut h, mut n) = (Sha256::new(), 0u64);
    while let Some(c) = s.next().await {
        let c = c.unwrap();
        n += c.len() as u64;
        h.update(&c);
    }
    (n, h.finalize().to_vec())
}

/// The kind of a target error; panics on success or on any other error.
fn failure<T>(what: &str, r: drctl::Result<T>) -> FailureKind {
    match r {
        Err(drctl::Error::Target { kind, .. }) => kind,
        Err(e) => panic!("{what}: expected a target error, got {e:?}"),
        Ok(_) => panic!("{what}: expected an error, got Ok"),
    }
}

/// (key, size) of a listing, sorted.
async fn listed(t: &Target, prefix: &str) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = t.list(prefix).await.unwrap().into_iter().map(|m| (m.key, m.size)).collect();
    v.sort();
    v
}

fn owned(v: &[(&str, u64)]) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = v.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    v.sort();
    v
}

// --------------------------------------------------------------------------------------- cases

async fn put_get(f: &Fixture) {
    let t = &f.target;
    let data = chunk(1, 0, 100_000);
    assert_eq!(t.put_bytes("pg/one.bin", data.clone()).await.unwrap(), 100_000);
    assert_eq!(read(t, "pg/one.bin", None).await, data);
    assert_eq!(t.get_bytes("pg/one.bin").await.unwrap(), data);

    // a stream of odd chunk sizes, an empty chunk among them, in a deeper directory
    let parts = vec![chunk(2, 0, 1), chunk(2, 1, 4095), Bytes::new(), chunk(2, 2, 70_001), chunk(2, 3, 3)];
    let expected: Vec<u8> = parts.concat();
    assert_eq!(t.put("pg/a/b/c/two.bin", stream_of(parts.into_iter())).await.unwrap(), expected.len() as u64);
    assert_eq!(read(t, "pg/a/b/c/two.bin", None).await, expected);

    // overwriting replaces the whole object
    assert_eq!(t.put_bytes("pg/one.bin", Bytes::from_static(b"second")).await.unwrap(), 6);
    assert_eq!(read(t, "pg/one.bin", None).await, b"second");
    assert_eq!(t.stat("pg/one.bin").await.unwrap().map(|m| m.size), Some(6));
    assert!(f.leftovers().await.is_empty());
}

async fn range_get(f: &Fixture) {
    let t = &f.target;
    let n = 300_000usize;
    let data = chunk(3, 0, n);
    t.put_bytes("rg/obj", data.clone()).await.unwrap();
    let n64 = n as u64;
    let ranges = [
        0..1,
        0..10,
        1000..2000,
        262_000..262_300, // across fs's 256 KiB read buffer
        n64 - 10..n64,
        n64 - 1..n64,
        0..n64,
        5..5,
        0..0,
        n64..n64,
    ];
    for r in ranges {
        let got = read(t, "rg/obj", Some(r.clone())).await;
        assert_eq!(got.len(), (r.end - r.start) as usize, "length of range {r:?}");
        assert!(got[..] == data[r.start as usize..r.end as usize], "bytes of range {r:?}");
    }
}

async fn list_prefix(f: &Fixture) {
    let t = &f.target;
    assert_eq!(listed(t, "").await, vec![], "a fresh target is empty");
    for (k, n) in [("l/a/1", 1usize), ("l/a/2", 2), ("l/ab", 3), ("l/b/1", 4), ("other", 5)] {
        t.put_bytes(k, chunk(4, 0, n)).await.unwrap();
    }
    // an aborted put is never listed
    assert!(t.put("l/a/aborted", failing_after(generated(4, 1000, 100))).await.is_err());

    assert_eq!(listed(t, "l/a/").await, owned(&[("l/a/1", 1), ("l/a/2", 2)]));
    assert_eq!(listed(t, "l/a").await, owned(&[("l/a/1", 1), ("l/a/2", 2), ("l/ab", 3)]));
    assert_eq!(listed(t, "l/").await, owned(&[("l/a/1", 1), ("l/a/2", 2), ("l/ab", 3), ("l/b/1", 4)]));
    assert_eq!(listed(t, "l/a/1").await, owned(&[("l/a/1", 1)]));
    assert_eq!(listed(t, "").await, owned(&[("l/a/1", 1), ("l/a/2", 2), ("l/ab", 3), ("l/b/1", 4), ("other", 5)]));
    assert_eq!(listed(t, "nope/").await, vec![]);
    assert_eq!(listed(t, "l/c").await, vec![]);
    assert_eq!(listed(t, "l/a/1/").await, vec![], "a prefix below an object");
}

async fn stat(f: &Fixture) {
    let t = &f.target;
    t.put_bytes("st/x", chunk(5, 0, 1234)).await.unwrap();
    assert_eq!(t.stat("st/x").await.unwrap(), Some(ObjectMeta { key: "st/x".into(), size: 1234 }));
    assert_eq!(t.stat("st/y").await.unwrap(), None);
    assert_eq!(t.stat("st/missing/dir/y").await.unwrap(), None);
    assert_eq!(t.stat("st/x/below-an-object").await.unwrap(), None, "a key below an object is missing");
}

async fn delete(f: &Fixture) {
    let t = &f.target;
    t.put_bytes("del/a/x", Bytes::from_static(b"x")).await.unwrap();
    t.put_bytes("del/a/y", Bytes::from_static(b"yy")).await.unwrap();
    t.delete("del/a/x").await.unwrap();
    assert_eq!(t.stat("del/a/x").await.unwrap(), None);
    assert_eq!(failure("get after delete", t.get("del/a/x", None).await), FailureKind::NotFound);
    assert_eq!(listed(t, "del/").await, owned(&[("del/a/y", 2)]), "the sibling stays");
    assert_eq!(read(t, "del/a/y", None).await, b"yy");
    // idempotent
    t.delete("del/a/x").await.unwrap();
    t.delete("del/never/existed").await.unwrap();
    t.delete("del/a/y").await.unwrap();
    assert_eq!(listed(t, "").await, vec![]);
    // the key can be written again
    t.put_bytes("del/a/x", Bytes::from_static(b"again")).await.unwrap();
    assert_eq!(read(t, "del/a/x", None).await, b"again");
}

async fn get_missing_not_found(f: &Fixture) {
    let t = &f.target;
    assert_eq!(failure("get missing", t.get("nf/missing", None).await), FailureKind::NotFound);
    assert_eq!(failure("get missing dir", t.get("nf/no/such/dir/x", None).await), FailureKind::NotFound);
    assert_eq!(failure("get missing range", t.get("nf/missing", Some(0..10)).await), FailureKind::NotFound);
    assert_eq!(failure("get missing empty range", t.get("nf/missing", Some(3..3)).await), FailureKind::NotFound);
    assert_eq!(failure("get_bytes missing", t.get_bytes("nf/missing").await), FailureKind::NotFound);

    // a key that is only the prefix of other keys is not an object
    t.put_bytes("nf/dir/obj", Bytes::from_static(b"o")).await.unwrap();
    assert_eq!(failure("get of a prefix", t.get("nf/dir", None).await), FailureKind::NotFound);
    assert_eq!(failure("get below an object", t.get("nf/dir/obj/below", None).await), FailureKind::NotFound);
    t.delete("nf/dir/obj/below").await.unwrap();
    assert_eq!(t.stat("nf/dir").await.unwrap(), None);
    t.delete("nf/dir").await.unwrap();
    assert_eq!(read(t, "nf/dir/obj", None).await, b"o", "deleting a prefix leaves the objects under it");
}

async fn large_streamed(f: &Fixture) {
    let t = &f.target;
    let (total, seed) = (23 * MIB, 6);
    let written = t.put("big/obj.bin", stream_of(generated(seed, total, MIB))).await.unwrap();
    assert_eq!(written, total as u64);
    assert_eq!(t.stat("big/obj.bin").await.unwrap().map(|m| m.size), Some(total as u64));
    assert_eq!(listed(t, "big/").await, owned(&[("big/obj.bin", total as u64)]));
    assert_eq!(read_sha256(t, "big/obj.bin").await, sha256_of(generated(seed, total, MIB)));

    // ranges across the S3 part boundary at 5 MiB, and the tail (last, short part)
    let boundary = (PART_MIB as usize) * MIB;
    let around: Vec<u8> = [chunk(seed, 4, MIB), chunk(seed, 5, MIB)].concat();
    let got = read(t, "big/obj.bin", Some((boundary - 16) as u64..(boundary + 16) as u64)).await;
    assert!(got[..] == around[MIB - 16..MIB + 16], "range across the part boundary");
    let got = read(t, "big/obj.bin", Some((total - 100) as u64..total as u64)).await;
    assert!(got[..] == chunk(seed, 22, MIB)[MIB - 100..], "tail range");
    assert!(f.leftovers().await.is_empty());
}

async fn interrupted_put(f: &Fixture) {
    let t = &f.target;
    // 11 MiB (two full S3 parts: a multipart upload exists) and then the source fails
    let r = t.put("ip/obj", failing_after(generated(8, 11 * MIB, MIB))).await;
    assert!(r.is_err(), "a put whose stream ends with an error must fail");
    assert_eq!(t.stat("ip/obj").await.unwrap(), None);
    assert_eq!(failure("get of an aborted put", t.get("ip/obj", None).await), FailureKind::NotFound);
    assert_eq!(listed(t, "").await, vec![]);
    assert_eq!(f.leftovers().await, Vec::<String>::new(), "an aborted put leaves nothing behind");

    // a failure before the first byte, and an aborted overwrite that must keep the old object
    assert!(t.put("ip/obj", failing_after(std::iter::empty())).await.is_err());
    t.put_bytes("ip/kept", Bytes::from_static(b"old")).await.unwrap();
    assert!(t.put("ip/kept", failing_after(generated(9, 6 * MIB, MIB))).await.is_err());
    assert_eq!(read(t, "ip/kept", None).await, b"old");
    assert_eq!(listed(t, "").await, owned(&[("ip/kept", 3)]));
    assert_eq!(f.leftovers().await, Vec::<String>::new());
}

/// While a put is running (its stream not finished yet), readers see nothing of it; its
/// temporary state exists; an abort removes it, a commit makes the whole object visible.
/// `temporaries` lists the temporary object of an unfinished put (fs, SFTP, WebDAV; S3 has
/// multipart uploads instead) under its exact temporary name with a recent modification time,
/// and nothing once the put ended; `list` never does.
async fn temporaries_listed(f: &Fixture) {
    let t = &f.target;
    let (mut tx, rx) = futures::channel::mpsc::channel::<io::Result<Bytes>>(0);
    let put = t.put("tl/dir/obj", Box::pin(rx));
    let driver = async move {
        for c in generated(12, 11 * MIB, MIB) {
            tx.send(Ok(c)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let temps = t.temporaries("tl/").await.unwrap();
        if matches!(f.kind, Kind::S3 { .. }) {
            assert_eq!(temps, vec![], "S3 has no temporary objects");
        } else {
            assert_eq!(temps.len(), 1, "{temps:?}");
            let (dir, name) = temps[0].key.rsplit_once('/').unwrap();
            assert_eq!(dir, "tl/dir");
            assert!(drctl::targets::is_temporary_name(name) && name.starts_with(".obj.partial-"), "{name}");
            let age = jiff::Timestamp::now().duration_since(temps[0].modified.expect("a modification time"));
            assert!(age.abs() < jiff::SignedDuration::from_secs(120), "modified {age:?} ago");
            assert_eq!(t.temporaries("other/").await.unwrap(), vec![], "only under the prefix");
        }
        assert_eq!(listed(t, "tl/").await, vec![], "list never shows temporaries");
        tx.send(Err(io::Error::other("cancelled"))).await.unwrap();
    };
    let (result, ()) = futures::join!(put, driver);
    assert!(result.is_err());
    assert_eq!(t.temporaries("tl/").await.unwrap(), vec![], "an aborted put removed its temporary");
}

async fn uncommitted_invisible(f: &Fixture) {
    let t = &f.target;
    for commit in [false, true] {
        let key = if commit { "unc/committed" } else { "unc/aborted" };
        let (mut tx, rx) = futures::channel::mpsc::channel::<io::Result<Bytes>>(0);
        let put = t.put(key, Box::pin(rx));
        let driver = async move {
            // with a rendezvous channel, the 11th send returns once the put took the 10th chunk:
            // two S3 parts assembled, so the multipart upload exists
            for c in generated(10, 11 * MIB, MIB) {
                tx.send(Ok(c)).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(t.stat(key).await.unwrap(), None, "stat sees an unfinished put");
            assert_eq!(failure("get of an unfinished put", t.get(key, None).await), FailureKind::NotFound);
            assert_eq!(listed(t, "").await, vec![], "list sees an unfinished put");
            assert!(
                !f.leftovers().await.is_empty(),
                "an unfinished put has temporary state (this test checks that it goes away)"
            );
            if !commit {
                tx.send(Err(io::Error::other("cancelled"))).await.unwrap();
            }
            drop(tx);
        };
        let (result, ()) = futures::join!(put, driver);
        if commit {
            assert_eq!(result.unwrap(), 11 * MIB as u64);
            assert_eq!(read_sha256(t, key).await, sha256_of(generated(10, 11 * MIB, MIB)));
        } else {
            assert!(result.is_err());
            assert_eq!(t.stat(key).await.unwrap(), None);
        }
        assert_eq!(f.leftovers().await, Vec::<String>::new(), "leftovers after the put ended (commit: {commit})");
    }
    assert_eq!(listed(t, "").await, owned(&[("unc/committed", 11 * MIB as u64)]));
}

async fn escaping_keys(f: &Fixture) {
    let t = &f.target;
    let outside = f.plant_outside("outside.txt", b"secret").await;
    t.put_bytes("inside/x", Bytes::from_static(b"in")).await.unwrap(); // the root exists
    for key in ["../x", "/abs", "/", "a/../../x", "..", "a/..", "a/./b", ".", "a//b", "", outside.as_str()] {
        assert_eq!(
            failure(&format!("put {key:?}"), t.put_bytes(key, Bytes::from_static(b"x")).await),
            FailureKind::Permanent
        );
        assert_eq!(failure(&format!("get {key:?}"), t.get(key, None).await), FailureKind::Permanent);
        assert_eq!(failure(&format!("stat {key:?}"), t.stat(key).await), FailureKind::Permanent);
        assert_eq!(failure(&format!("delete {key:?}"), t.delete(key).await), FailureKind::Permanent);
    }
    // listing cannot reach outside the root either: an escaping prefix finds nothing (or fails)
    for prefix in ["../", "..", "/", "a/../../"] {
        if let Ok(v) = t.list(prefix).await {
            assert!(v.is_empty(), "list({prefix:?}) reached outside the root: {v:?}");
        }
    }
    assert_eq!(listed(t, "").await, owned(&[("inside/x", 2)]), "nothing else was stored");
    if let Kind::Fs { dir } = &f.kind {
        let mut files = walk(dir.path());
        files.sort();
        assert_eq!(
            files,
            vec!["outside.txt".to_string(), "target/inside/x".to_string()],
            "nothing was written outside the root"
        );
    }
    if let Kind::Sftp { data, root } = &f.kind {
        let (parent, last) = root.rsplit_once('/').unwrap();
        assert_eq!(walk(&data.join(root)), vec!["inside/x".to_string()], "only the object inside the root");
        assert_eq!(
            walk(&data.join(parent).join(format!("{last}.outside"))),
            vec!["outside.txt".to_string()],
            "nothing was written outside the root"
        );
    }
}

async fn empty_object(f: &Fixture) {
    let t = &f.target;
    assert_eq!(t.put_bytes("e/bytes", Bytes::new()).await.unwrap(), 0);
    assert_eq!(t.put("e/no-chunks", stream_of(std::iter::empty())).await.unwrap(), 0);
    assert_eq!(t.put("e/empty-chunks", stream_of([Bytes::new(), Bytes::new()].into_iter())).await.unwrap(), 0);
    for key in ["e/bytes", "e/no-chunks", "e/empty-chunks"] {
        assert_eq!(read(t, key, None).await, b"", "{key}");
        assert_eq!(read(t, key, Some(0..0)).await, b"", "{key}");
        assert_eq!(t.stat(key).await.unwrap(), Some(ObjectMeta { key: key.into(), size: 0 }));
    }
    assert_eq!(listed(t, "e/").await, owned(&[("e/bytes", 0), ("e/no-chunks", 0), ("e/empty-chunks", 0)]));
}

async fn probe(f: &Fixture) {
    let t = &f.target;
    t.probe().await.unwrap();
    t.probe().await.unwrap();
    assert_eq!(listed(t, "").await, vec![], "probe leaves nothing behind");
    assert!(f.leftovers().await.is_empty());
}

// ----------------------------------------------------------------------------------- instances

macro_rules! conformance {
    ($($case:ident => $fs:ident, $s3:ident, $sftp:ident, $webdav:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $fs() {
            let f = Fixture::fs();
            $case(&f).await;
            f.cleanup().await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn $s3() {
            let f = Fixture::s3();
            $case(&f).await;
            f.cleanup().await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn $sftp() {
            let f = Fixture::sftp();
            $case(&f).await;
            f.cleanup().await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn $webdav() {
            let f = Fixture::webdav();
            $case(&f).await;
            f.cleanup().await;
        }
    )*};
}

conformance! {
    put_get => fs_put_get, s3_put_get, sftp_put_get, webdav_put_get;
    range_get => fs_range_get, s3_range_get, sftp_range_get, webdav_range_get;
    list_prefix => fs_list_prefix, s3_list_prefix, sftp_list_prefix, webdav_list_prefix;
    stat => fs_stat, s3_stat, sftp_stat, webdav_stat;
    delete => fs_delete, s3_delete, sftp_delete, webdav_delete;
    get_missing_not_found => fs_get_missing_not_found, s3_get_missing_not_found, sftp_get_missing_not_found, webdav_get_missing_not_found;
    large_streamed => fs_large_streamed, s3_large_streamed, sftp_large_streamed, webdav_large_streamed;
    interrupted_put => fs_interrupted_put, s3_interrupted_put, sftp_interrupted_put, webdav_interrupted_put;
    uncommitted_invisible => fs_uncommitted_invisible, s3_uncommitted_invisible, sftp_uncommitted_invisible, webdav_uncommitted_invisible;
    temporaries_listed => fs_temporaries_listed, s3_temporaries_listed, sftp_temporaries_listed, webdav_temporaries_listed;
    escaping_keys => fs_escaping_keys, s3_escaping_keys, sftp_escaping_keys, webdav_escaping_keys;
    empty_object => fs_empty_object, s3_empty_object, sftp_empty_object, webdav_empty_object;
    probe => fs_probe, s3_probe, sftp_probe, webdav_probe;
}

// ------------------------------------------------------------------------------------- s3 only

/// The network dies in the middle of a multipart upload (a proxy passes ~8 MiB, then cuts every
/// connection and refuses new ones): `put` fails as Transient — never Ok — and nothing is visible.
#[tokio::test(flavor = "multi_thread")]
async fn s3_network_fault_mid_upload() {
    let f = Fixture::s3();
    let proxy = common::CuttingProxy::start(&common::endpoint("DRCTL_TEST_S3_ENDPOINT"), 8 * MIB as u64);
    let cut = Target::open("conformance-s3-cut", &s3_config(&proxy.url(), f.s3_root())).unwrap();
    let put = cut.put("fault/big.bin", stream_of(generated(11, 23 * MIB, MIB)));
    let result = tokio::time::timeout(Duration::from_secs(300), put).await.expect("put must fail, not hang");
    assert_eq!(failure("put through a cut connection", result), FailureKind::Transient);

    // seen through the real endpoint
    let t = &f.target;
    assert_eq!(t.stat("fault/big.bin").await.unwrap(), None);
    assert_eq!(failure("get after a failed put", t.get("fault/big.bin", None).await), FailureKind::NotFound);
    assert_eq!(listed(t, "").await, vec![]);
    // The abort went through the proxy as well, which refuses every connection once its budget
    // is spent, so it cannot reach the server and the multipart upload normally stays behind.
    // Such an upload is invisible to get/list/stat (it was never completed); cleaning stale
    // multipart uploads is left to `drctl prune` (s3.rs's warning says so) — not implemented
    // yet at the time of writing. So only invisibility is asserted; `cleanup` aborts it here.
    let left = f.leftovers().await;
    eprintln!("multipart uploads left after the cut: {left:?}");
    f.cleanup().await;
}

// ------------------------------------------------------------------------------ sftp and webdav

/// An sftp target under a fresh root, with `change` applied to its settings.
fn sftp_target(name: &str, root: &str, change: impl FnOnce(&mut SftpTarget)) -> Target {
    let mut c = sftp_config(root);
    change(&mut c);
    open(name, TargetKind::Sftp(c))
}

/// The error of a target operation: (kind, message); panics on success or another error.
fn target_err<T>(what: &str, r: drctl::Result<T>) -> (FailureKind, String) {
    match r {
        Err(drctl::Error::Target { kind, message, .. }) => (kind, message),
        Err(e) => panic!("{what}: expected a target error, got {e:?}"),
        Ok(_) => panic!("{what}: expected an error, got Ok"),
    }
}

/// Every operation of `t` fails with `kind`, and its message contains every one of `needles`.
async fn every_op_fails(t: &Target, kind: FailureKind, needles: &[&str]) {
    let results = [
        ("put", target_err("put", t.put_bytes("x/y", Bytes::from_static(b"data")).await)),
        ("get", target_err("get", t.get("x/y", None).await)),
        ("stat", target_err("stat", t.stat("x/y").await)),
        ("list", target_err("list", t.list("").await)),
        ("delete", target_err("delete", t.delete("x/y").await)),
    ];
    for (op, (k, message)) in results {
        assert_eq!(k, kind, "{op}: {message}");
        for n in needles {
            assert!(message.contains(n), "{op}: `{n}` not in: {message}");
        }
    }
}

fn keygen(path: &Path) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "conformance", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    public.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// `ssh` processes started by this test process (zombies not counted).
fn ssh_children() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let Some((head, tail)) = stat.rsplit_once(") ") else { return false };
            let fields: Vec<&str> = tail.split_whitespace().collect();
            head.ends_with("(ssh") && fields.first() != Some(&"Z") && fields.get(1) == Some(&me.as_str())
        })
        .count()
}

/// The server's host key is not in `known_hosts_file` (another key under its name, or an empty
/// file): every operation is refused as Permanent with a message naming the file, the file is
/// never written (no trust on first use) and nothing reaches the server.
#[tokio::test(flavor = "multi_thread")]
async fn sftp_unknown_host_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other_key = keygen(&dir.path().join("other_host_key"));
    let host = format!("[{}]:{}", common::endpoint("DRCTL_TEST_SFTP_HOST"), common::endpoint("DRCTL_TEST_SFTP_PORT"));
    let wrong = dir.path().join("known_hosts_wrong");
    std::fs::write(&wrong, format!("{host} {other_key}\n")).unwrap();
    let empty = dir.path().join("known_hosts_empty");
    std::fs::write(&empty, "").unwrap();
    let data = PathBuf::from(common::endpoint("DRCTL_TEST_SFTP_ROOT"));
    for kh in [wrong, empty] {
        let root = format!("conformance/{}", common::unique("hostkey"));
        let before = std::fs::read(&kh).unwrap();
        let t = sftp_target("conformance-sftp-hostkey", &root, |c| c.known_hosts_file = kh.clone());
        let kh_text = kh.display().to_string();
        every_op_fails(&t, FailureKind::Permanent, &["known_hosts_file", &kh_text]).await;
        assert_eq!(std::fs::read(&kh).unwrap(), before, "the known_hosts file is never written");
        assert!(!data.join(&root).exists(), "nothing reached the server");
    }
}

/// A key the server does not accept: Permanent, naming `key_file`.
#[tokio::test(flavor = "multi_thread")]
async fn sftp_wrong_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("not_authorized");
    keygen(&key);
    let t = sftp_target("conformance-sftp-key", "conformance/wrong-key", |c| c.key_file = key.clone());
    every_op_fails(&t, FailureKind::Permanent, &["key_file", &key.display().to_string()]).await;
    // a key file that does not exist
    let t = sftp_target("conformance-sftp-key", "conformance/wrong-key", |c| c.key_file = dir.path().join("missing"));
    every_op_fails(&t, FailureKind::Permanent, &["key_file"]).await;
}

/// Nothing listens on the port: Transient (after a few retries with backoff), promptly.
#[tokio::test(flavor = "multi_thread")]
async fn sftp_unreachable_server_is_transient() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let t = sftp_target("conformance-sftp-down", "conformance/down", |c| c.port = port);
    let started = std::time::Instant::now();
    let (kind, message) = target_err("stat", t.stat("x").await);
    assert_eq!(kind, FailureKind::Transient, "{message}");
    assert!(message.contains("Connection refused"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    let (kind, _) = target_err("put", t.put_bytes("x", Bytes::from_static(b"x")).await);
    assert_eq!(kind, FailureKind::Transient);
}

/// At most `max_connections` ssh processes however many operations run at once (they share
/// connections), and none left once the target is dropped.
#[tokio::test(flavor = "multi_thread")]
async fn sftp_connections_are_bounded_and_closed() {
    let f = Fixture::sftp();
    let Kind::Sftp { root, .. } = &f.kind else { unreachable!() };
    let t = std::sync::Arc::new(sftp_target("conformance-sftp-pool", root, |c| c.max_connections = 2));
    assert_eq!(ssh_children(), 0);
    let mut senders = Vec::new();
    let mut puts = Vec::new();
    for i in 0..6 {
        let (tx, rx) = futures::channel::mpsc::channel::<io::Result<Bytes>>(0);
        senders.push(tx);
        let t = t.clone();
        puts.push(tokio::spawn(async move { t.put(&format!("conn/{i}"), Box::pin(rx)).await }));
    }
    for tx in &mut senders {
        tx.send(Ok(chunk(12, 0, 100_000))).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let running = ssh_children();
    assert!((1..=2).contains(&running), "{running} ssh processes for 6 concurrent puts with max_connections = 2");
    drop(senders);
    for p in puts {
        assert_eq!(p.await.unwrap().unwrap(), 100_000);
    }
    assert_eq!(listed(&t, "conn/").await.len(), 6);
    drop(t);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ssh_children() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ssh_children(), 0, "ssh processes outlive the target");
    f.cleanup().await;
}

/// A put whose future is dropped mid-stream (a cancelled run) leaves nothing behind: a guard
/// deletes the temporary file in the background.
async fn cancelled_put(f: &Fixture) {
    let t = &f.target;
    let (mut tx, rx) = futures::channel::mpsc::channel::<io::Result<Bytes>>(0);
    let put = t.put("cancel/obj", Box::pin(rx));
    let driver = async {
        for c in generated(13, 3 * MIB, MIB) {
            tx.send(Ok(c)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::select! {
        _ = put => panic!("the put cannot finish: its stream is still open"),
        () = driver => {}
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f.leftovers().await.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(f.leftovers().await, Vec::<String>::new(), "a cancelled put left its temporary file");
    assert_eq!(t.stat("cancel/obj").await.unwrap(), None);
    assert_eq!(listed(t, "").await, vec![]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sftp_cancelled_put() {
    let f = Fixture::sftp();
    cancelled_put(&f).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webdav_cancelled_put() {
    let f = Fixture::webdav();
    cancelled_put(&f).await;
    f.cleanup().await;
}

/// The network dies in the middle of an upload (a proxy passes ~8 MiB, then cuts every
/// connection and refuses new ones): `put` fails as Transient, never Ok, and nothing is visible
/// through the real endpoint. The temporary file cannot be deleted through the dead proxy; it is
/// invisible (never listed) and `cleanup` removes it here.
async fn network_fault_mid_upload(f: &Fixture, cut: Target) {
    let put = cut.put("fault/big.bin", stream_of(generated(11, 23 * MIB, MIB)));
    let result = tokio::time::timeout(Duration::from_secs(300), put).await.expect("put must fail, not hang");
    assert_eq!(failure("put through a cut connection", result), FailureKind::Transient);
    let t = &f.target;
    assert_eq!(t.stat("fault/big.bin").await.unwrap(), None);
    assert_eq!(failure("get after a failed put", t.get("fault/big.bin", None).await), FailureKind::NotFound);
    assert_eq!(listed(t, "").await, vec![]);
    eprintln!("temporary files left after the cut: {:?}", f.leftovers().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn sftp_network_fault_mid_upload() {
    let f = Fixture::sftp();
    let Kind::Sftp { root, .. } = &f.kind else { unreachable!() };
    let upstream = format!("{}:{}", common::endpoint("DRCTL_TEST_SFTP_HOST"), common::endpoint("DRCTL_TEST_SFTP_PORT"));
    let proxy = common::CuttingProxy::start(&upstream, 8 * MIB as u64);
    // the same host key, known under the proxy's port
    let dir = tempfile::tempdir().unwrap();
    let known = std::fs::read_to_string(common::endpoint("DRCTL_TEST_SFTP_KNOWN_HOSTS")).unwrap();
    let key = known.lines().next().unwrap().split_once(' ').unwrap().1;
    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, format!("[127.0.0.1]:{} {key}\n", proxy.addr.port())).unwrap();
    let cut = sftp_target("conformance-sftp-cut", root, |c| {
        c.host = "127.0.0.1".into();
        c.port = proxy.addr.port();
        c.known_hosts_file = kh.clone();
    });
    network_fault_mid_upload(&f, cut).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webdav_network_fault_mid_upload() {
    let f = Fixture::webdav();
    let Kind::Webdav { root, .. } = &f.kind else { unreachable!() };
    let proxy = common::CuttingProxy::start(&common::endpoint("DRCTL_TEST_WEBDAV_URL"), 8 * MIB as u64);
    let mut c = webdav_config(root);
    c.url = proxy.url();
    network_fault_mid_upload(&f, open("conformance-webdav-cut", TargetKind::Webdav(c))).await;
    f.cleanup().await;
}

/// A wrong password: Permanent, saying which settings to check.
#[tokio::test(flavor = "multi_thread")]
async fn webdav_wrong_password_is_permanent() {
    let mut c = webdav_config("conformance/wrong-password");
    c.password = Some(Secret::new("not-the-password"));
    let t = open("conformance-webdav-auth", TargetKind::Webdav(c));
    every_op_fails(&t, FailureKind::Permanent, &["401", "password"]).await;
}

/// Nothing listens: Transient (after retries), promptly.
#[tokio::test(flavor = "multi_thread")]
async fn webdav_unreachable_server_is_transient() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut c = webdav_config("conformance/down");
    c.url = format!("http://127.0.0.1:{port}");
    let t = open("conformance-webdav-down", TargetKind::Webdav(c));
    let started = std::time::Instant::now();
    every_op_fails(&t, FailureKind::Transient, &[]).await;
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
}
