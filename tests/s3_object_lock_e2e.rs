//! S3 Object Lock, storage class, server-side encryption and stale multipart uploads, end to end
//! with the real binary.
//!
//! The Object Lock tests (`moto_…`) are EMULATOR-BACKED: they run against moto_server
//! (`scripts/services.sh`, service `moto`), the only local S3 here with versioning and Object
//! Lock. moto is an emulator, not a store: it shows that drctl sends the right requests and
//! honours the answers, not how AWS or Hetzner behave. Known moto quirks these tests rely on or
//! work around: it ignores lock headers on CreateMultipartUpload (drctl then sets the retention
//! with PutObjectRetention), it answers GetObjectRetention with a 500 (drctl reads HEAD), and its
//! ListMultipartUploads reports every upload as initiated on 2010-11-10 (so any upload is "old").
//! The `moto_chunked_…` tests cover chunked storage there: packs a backup or sync reuses get their
//! locks extended past its own, and prune keeps an unused pack until its lock ends.
//!
//! The `garage_…` tests run against Garage, a real S3 store without Object Lock: a fresh multipart
//! upload must survive prune, and a target asking for Object Lock must fail loudly there.
//! `config_…` tests need no service.

mod common;

use std::path::Path;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream as Body;
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode};
use common::*;

/// A raw client on `endpoint`, built like drctl's (plus request checksums: lock PUTs need them).
fn client(endpoint: &str, region: &str, ak: &str, sk: &str) -> Client {
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
        .region(Region::new(region.to_string()))
        .force_path_style(true)
        .credentials_provider(Credentials::new(ak, sk, None, None, "object-lock-test"))
        .http_client(http)
        .request_checksum_calculation(RequestChecksumCalculation::WhenSupported)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .endpoint_url(endpoint)
        .build();
    Client::from_conf(conf)
}

fn moto() -> Client {
    client(
        &endpoint("DRCTL_TEST_MOTO_ENDPOINT"),
        &endpoint("DRCTL_TEST_MOTO_REGION"),
        &endpoint("DRCTL_TEST_MOTO_ACCESS_KEY"),
        &endpoint("DRCTL_TEST_MOTO_SECRET_KEY"),
    )
}

fn garage() -> Client {
    client(
        &endpoint("DRCTL_TEST_S3_ENDPOINT"),
        &endpoint("DRCTL_TEST_S3_REGION"),
        &endpoint("DRCTL_TEST_S3_ACCESS_KEY"),
        &endpoint("DRCTL_TEST_S3_SECRET_KEY"),
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A new moto bucket with Object Lock enabled (which also turns versioning on).
fn moto_lock_bucket(rt: &tokio::runtime::Runtime, c: &Client) -> String {
    let bucket = unique("lock").replace('_', "-");
    rt.block_on(c.create_bucket().bucket(&bucket).object_lock_enabled_for_bucket(true).send()).unwrap();
    bucket
}

/// A new moto bucket with Object Lock, a unique root in it, a scratch config and an empty
/// source directory `data`.
struct Moto {
    rt: tokio::runtime::Runtime,
    c: Client,
    bucket: String,
    root: String,
    s: Scratch,
    data: std::path::PathBuf,
}

impl Moto {
    fn new() -> Moto {
        let rt = rt();
        let c = moto();
        let bucket = moto_lock_bucket(&rt, &c);
        let s = Scratch::new();
        let data = s.path("data");
        std::fs::create_dir_all(&data).unwrap();
        Moto { rt, c, bucket, root: unique("r"), s, data }
    }
}

/// An S3 target on moto; `extra` are more TOML lines (object_lock, keep, …).
fn moto_target(name: &str, bucket: &str, root: &str, extra: &str) -> String {
    format!(
        "[targets.{name}]\ntype = \"s3\"\nendpoint = \"{ep}\"\nregion = \"{region}\"\nbucket = \"{bucket}\"\nroot = \"{root}\"\n\
         access_key_id = \"{ak}\"\nsecret_access_key = \"{sk}\"\npart_size_mib = 5\nmedium = \"object-storage\"\noffsite = true\n\
         {extra}\n\n",
        ep = endpoint("DRCTL_TEST_MOTO_ENDPOINT"),
        region = endpoint("DRCTL_TEST_MOTO_REGION"),
        ak = endpoint("DRCTL_TEST_MOTO_ACCESS_KEY"),
        sk = endpoint("DRCTL_TEST_MOTO_SECRET_KEY"),
    )
}

/// A volume job over `dir` writing to `targets`.
fn volume_job(dir: &Path, targets: &str) -> String {
    format!("[jobs.vol]\nkind = \"volume\"\ntargets = [{targets}]\npath = \"{}\"\n", dir.display())
}

/// Deterministic incompressible bytes (xorshift), so that zstd cannot shrink them below a part.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn backup(s: &Scratch) -> String {
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout.trim().to_string()
}

/// Every current object key under `prefix` in `bucket`.
fn keys(rt: &tokio::runtime::Runtime, c: &Client, bucket: &str, prefix: &str) -> Vec<String> {
    let out = rt.block_on(c.list_objects_v2().bucket(bucket).prefix(prefix).send()).unwrap();
    let mut keys: Vec<String> = out.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect();
    keys.sort();
    keys
}

/// Upload ids of the unfinished multipart uploads under `prefix`.
fn uploads(rt: &tokio::runtime::Runtime, c: &Client, bucket: &str, prefix: &str) -> Vec<String> {
    let out = rt.block_on(c.list_multipart_uploads().bucket(bucket).prefix(prefix).send()).unwrap();
    out.uploads().iter().filter_map(|u| u.upload_id().map(str::to_string)).collect()
}

fn prune_json(s: &Scratch, dry_run: bool) -> (Ran, serde_json::Value) {
    let mut cmd = s.drctl();
    cmd.args(["--json", "prune"]);
    if dry_run {
        cmd.arg("--dry-run");
    }
    let r = run(&mut cmd);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|_| panic!("{r:?}"));
    (r, v)
}

fn plan_of(plans: &serde_json::Value, target: &str) -> serde_json::Value {
    plans.as_array().unwrap().iter().find(|p| p["target"] == target).unwrap().clone()
}

#[test]
fn moto_object_lock_retains_every_object_and_prune_deletes_none() {
    let Moto { rt, c, bucket, root, s, data } = Moto::new();
    // 6 MiB that zstd cannot shrink: the artifact goes up as a multipart upload (5 MiB parts)
    std::fs::write(data.join("big.bin"), noise(6 << 20, 7)).unwrap();
    let head = s.head();
    s.write_config(&format!(
        "{head}{}{}",
        moto_target(
            "vault",
            &bucket,
            &root,
            "keep = { last = 1 }\nobject_lock = { mode = \"compliance\", days = 2 }\n\
             storage_class = \"STANDARD_IA\"\nsse = \"AES256\""
        ),
        volume_job(&data, "\"local\", \"vault\"")
    ));
    let b1 = backup(&s);
    // the source keeps its size: a much smaller b2 would be suspicious, and prune would keep b1 as
    // the newest non-suspicious backup before asking for its lock
    std::fs::write(data.join("small.txt"), "small").unwrap();
    let b2 = backup(&s);

    // every object of both backups is locked ~2 days ahead, in compliance mode, with the storage
    // class and encryption asked for
    let objects = keys(&rt, &c, &bucket, &format!("{root}/"));
    assert!(objects.iter().any(|k| k.contains(&b1) && k.ends_with(".manifest.json")), "{objects:?}");
    assert!(objects.iter().any(|k| k.contains(&b2) && k.ends_with(".manifest.json")), "{objects:?}");
    let now = jiff::Timestamp::now().as_second();
    let mut saw_multipart = false;
    for k in &objects {
        let h = rt.block_on(c.head_object().bucket(&bucket).key(k).send()).unwrap();
        assert_eq!(h.object_lock_mode(), Some(&ObjectLockMode::Compliance), "{k}");
        let until = h.object_lock_retain_until_date().unwrap_or_else(|| panic!("{k} has no retention")).secs();
        assert!((until - now - 2 * 86_400).abs() < 600, "{k}: retained until {until}, now {now}");
        assert_eq!(h.storage_class().map(|c| c.as_str()), Some("STANDARD_IA"), "{k}");
        assert_eq!(h.server_side_encryption().map(|e| e.as_str()), Some("AES256"), "{k}");
        saw_multipart |= h.content_length().unwrap_or(0) > 5 << 20;
    }
    assert!(saw_multipart, "the big artifact went up in parts: {objects:?}");

    // a locked incomplete upload from long ago (an orphan) and a stale multipart upload
    let orphan = format!("{root}/vol/2020/01/01/20200101T000000Z-abcdef.x.tar.zst.age");
    let until = aws_sdk_s3::primitives::DateTime::from_secs(now + 86_400);
    rt.block_on(
        c.put_object()
            .bucket(&bucket)
            .key(&orphan)
            .body(Body::from_static(b"partial"))
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(until)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send(),
    )
    .unwrap();
    let stale_key = format!("{root}/vol/2020/01/01/20200101T000000Z-fedcba.x.tar.zst.age");
    let stale =
        rt.block_on(c.create_multipart_upload().bucket(&bucket).key(&stale_key).send()).unwrap().upload_id.unwrap();

    // the plan: `last = 1` would delete b1 on `vault`, the lock keeps it
    let (r, plans) = prune_json(&s, true);
    assert_eq!(r.code, 0, "{r:?}");
    let p = plan_of(&plans, "vault");
    let d1 = p["decisions"].as_array().unwrap().iter().find(|d| d["id"] == b1.as_str()).unwrap().clone();
    assert_eq!(d1["keep"], true, "{p}");
    let rules: Vec<&str> = d1["reasons"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["locked"], "{p}");
    assert!(
        d1["reasons"][0]["until"]
            .as_str()
            .unwrap()
            .starts_with(&jiff::Timestamp::from_second(now + 2 * 86_400).unwrap().to_string()[..10]),
        "{p}"
    );
    assert_eq!(p["orphans"], serde_json::json!([]), "{p}");
    assert_eq!(p["locked"][0]["key"], orphan.trim_start_matches(&format!("{root}/")), "{p}");
    assert_eq!(p["stale_uploads"][0]["upload_id"], stale.as_str(), "{p}");
    assert_eq!(p["aborted_uploads"], serde_json::json!([]), "a dry run aborts nothing: {p}");

    // apply: nothing locked is deleted, the stale upload is aborted
    let (r, plans) = prune_json(&s, false);
    assert_eq!(r.code, 0, "{r:?}");
    let p = plan_of(&plans, "vault");
    assert_eq!(p["deleted"], serde_json::json!([]), "{p}");
    assert_eq!(p["aborted_uploads"], serde_json::json!([stale]), "{p}");
    assert!(p["errors"].as_array().unwrap().is_empty(), "{p}");
    let mut after = keys(&rt, &c, &bucket, &format!("{root}/"));
    after.retain(|k| *k != orphan);
    assert_eq!(after, objects, "prune deleted nothing locked");
    assert!(keys(&rt, &c, &bucket, &orphan).contains(&orphan));
    assert!(uploads(&rt, &c, &bucket, &format!("{root}/")).is_empty(), "the stale upload is gone");
    let human = run(s.drctl().args(["prune", "--dry-run"]));
    assert!(human.stdout.contains(&format!("keep    {b1}  (object lock until ")), "{human:?}");
    assert!(human.stdout.contains("(incomplete upload, object lock until "), "{human:?}");

    // and the store itself refuses to delete a locked version
    let manifest = objects.iter().find(|k| k.contains(&b1) && k.ends_with(".manifest.json")).unwrap();
    let version = rt.block_on(c.head_object().bucket(&bucket).key(manifest).send()).unwrap().version_id.unwrap();
    let err = rt.block_on(c.delete_object().bucket(&bucket).key(manifest).version_id(&version).send()).unwrap_err();
    assert!(format!("{}", aws_sdk_s3::error::DisplayErrorContext(&err)).contains("AccessDenied"), "{err:?}");

    // the locked backup still restores
    let dest = s.path("restored");
    let r = run(s.drctl().args(["restore", "vol", "--id", &b1, "--target", "vault", "--to"]).arg(&dest));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read(dest.join("big.bin")).unwrap(), noise(6 << 20, 7));
}

#[test]
fn moto_sse_kms_key_and_governance_mode_reach_the_server() {
    let Moto { rt, c, bucket, root, s, data } = Moto::new();
    std::fs::write(data.join("a.txt"), "a").unwrap();
    let head = s.head();
    s.write_config(&format!(
        "{head}{}{}",
        moto_target(
            "kms",
            &bucket,
            &root,
            "object_lock = { mode = \"governance\", days = 1 }\nsse = \"aws:kms\"\nsse_kms_key_id = \"alias/drctl-test\""
        ),
        volume_job(&data, "\"local\", \"kms\"")
    ));
    backup(&s);
    let objects = keys(&rt, &c, &bucket, &format!("{root}/"));
    assert!(!objects.is_empty());
    for k in &objects {
        let h = rt.block_on(c.head_object().bucket(&bucket).key(k).send()).unwrap();
        assert_eq!(h.object_lock_mode(), Some(&ObjectLockMode::Governance), "{k}");
        assert_eq!(h.server_side_encryption().map(|e| e.as_str()), Some("aws:kms"), "{k}");
        assert_eq!(h.ssekms_key_id(), Some("alias/drctl-test"), "{k}");
    }
    // `drctl check` writes a probe object and deletes it: it must not stay behind as a locked version
    let r = run(s.drctl().args(["check"]));
    assert!(!r.stderr.contains("probe"), "{r:?}");
    let probes = format!("{root}/.drctl-probe/");
    let versions = rt.block_on(c.list_object_versions().bucket(&bucket).prefix(&probes).send()).unwrap();
    assert!(!versions.versions().is_empty(), "check probed the target");
    for v in versions.versions() {
        let h = rt
            .block_on(c.head_object().bucket(&bucket).key(v.key().unwrap()).version_id(v.version_id().unwrap()).send())
            .unwrap();
        assert_eq!(h.object_lock_retain_until_date(), None, "probe {:?} is locked", v.key());
    }
}

#[test]
fn garage_fresh_multipart_upload_survives_prune_and_goes_with_zero_grace() {
    let rt = rt();
    let c = garage();
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "a").unwrap();
    let head = s.head();
    let target = s.s3_target("s3", None);
    let root = target.lines().find_map(|l| l.strip_prefix("root = ")).unwrap().trim_matches('"').to_string();
    s.write_config(&format!("{head}{target}{}", volume_job(&data, "\"local\", \"s3\"")));
    backup(&s);
    let bucket = endpoint("DRCTL_TEST_S3_BUCKET");
    let key = format!("{root}/vol/2026/01/01/20260101T000000Z-abcdef.x.tar.zst.age");
    let id = rt.block_on(c.create_multipart_upload().bucket(&bucket).key(&key).send()).unwrap().upload_id.unwrap();

    // younger than the 6 h grace: a run may be writing it
    let (r, plans) = prune_json(&s, false);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(plan_of(&plans, "s3")["stale_uploads"], serde_json::json!([]), "{plans}");
    assert!(uploads(&rt, &c, &bucket, &format!("{root}/")).contains(&id), "a fresh upload is left alone");

    // the same decision with no grace at all finds and aborts it
    let found = rt.block_on(async {
        let config = drctl::config::load(&s.config_path()).unwrap();
        let t = drctl::targets::Target::open("s3", &config.targets["s3"]).unwrap();
        let pending = t.pending_uploads("vol/").await.unwrap();
        let stale = drctl::engine::prune::stale_uploads(pending, jiff::Timestamp::now(), jiff::SignedDuration::ZERO);
        for u in &stale {
            t.abort_upload(u).await.unwrap();
        }
        stale
    });
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, key.trim_start_matches(&format!("{root}/")));
    assert_eq!(found[0].upload_id, id);
    assert!(found[0].initiated.is_some(), "Garage reports when the upload started");
    assert!(!uploads(&rt, &c, &bucket, &format!("{root}/")).contains(&id), "aborted");
}

#[test]
fn garage_object_lock_without_lock_support_fails_the_upload() {
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "a").unwrap();
    let head = s.head();
    let target = s
        .s3_target("s3", None)
        .replace("offsite = true\n", "offsite = true\nobject_lock = { mode = \"compliance\", days = 1 }\n");
    s.write_config(&format!("{head}{target}{}", volume_job(&data, "\"local\", \"s3\"")));
    let r = run(s.drctl().args(["run", "vol"]));
    assert_ne!(r.code, 0, "Garage ignores lock headers: the run must not pretend it locked anything: {r:?}");
    assert_eq!(r.code, 3, "the local copy is committed, the S3 one is not: {r:?}");
    assert!(r.stderr.contains("without the Object Lock retention"), "{r:?}");
}

#[test]
fn config_object_lock_sse_and_storage_class_are_checked() {
    let s = Scratch::new();
    let text = format!(
        "{}[targets.a]\ntype = \"s3\"\nbucket = \"b\"\nobject_lock = {{ mode = \"compliance\", days = 0 }}\n\
         sse_kms_key_id = \"k\"\nstorage_class = \"ODD_CLASS\"\n\n\
         [targets.b]\ntype = \"s3\"\nbucket = \"b\"\nobject_lock = {{ mode = \"forever\", days = 3 }}\n\n\
         [targets.c]\ntype = \"s3\"\nbucket = \"b\"\nsse = \"aes\"\n",
        s.head()
    );
    s.write_config(&text);
    let r = run(s.drctl().args(["check"]));
    assert_eq!(r.code, 2, "{r:?}");
    let cfg = s.config_path().display().to_string();
    let line = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for e in [
        format!(
            "{cfg}:{}: error: `targets.a.object_lock.days`: object lock retention must be at least 1 day",
            line("days = 0")
        ),
        format!(
            "{cfg}:{}: error: `targets.a.sse_kms_key_id`: `sse_kms_key_id` needs `sse = \"aws:kms\"`",
            line("sse_kms_key_id")
        ),
        format!(
            "{cfg}:{}: warning: `targets.a.storage_class`: `ODD_CLASS` is not an AWS storage class",
            line("ODD_CLASS")
        ),
        // a value outside a closed set is a deserialization error: it points at the target's table
        format!(
            "{cfg}:{}: error: `targets.b`: unknown variant `forever`, expected `governance` or `compliance`",
            line("[targets.b]")
        ),
        format!(
            "{cfg}:{}: error: `targets.c`: unknown variant `aes`, expected `AES256` or `aws:kms`",
            line("[targets.c]")
        ),
    ] {
        assert!(r.stderr.contains(&e), "missing `{e}` in {r:?}");
    }
}

/// A chunked volume job (the default storage with a chunk key) on a moto Object Lock target
/// locked for `days` in governance mode.
fn chunked_on_moto(s: &Scratch, bucket: &str, root: &str, data: &Path, days: u32) {
    s.write_config(&format!(
        "{}{}{}",
        s.with_chunk_key(&s.head()),
        moto_target("vault", bucket, root, &format!("object_lock = {{ mode = \"governance\", days = {days} }}")),
        volume_job(data, "\"vault\"")
    ));
}

/// The retain-until date of `key`, in seconds (panics when it has none).
fn retained(rt: &tokio::runtime::Runtime, c: &Client, bucket: &str, key: &str) -> i64 {
    let h = rt.block_on(c.head_object().bucket(bucket).key(key).send()).unwrap();
    h.object_lock_retain_until_date().unwrap_or_else(|| panic!("{key} has no retention")).secs()
}

fn ending(all: &[String], suffix: &str) -> Vec<String> {
    all.iter().filter(|k| k.ends_with(suffix)).cloned().collect()
}

#[test]
fn moto_chunked_backups_extend_the_locks_of_the_packs_they_reuse() {
    let Moto { rt, c, bucket, root, s, data } = Moto::new();
    std::fs::write(data.join("a.bin"), noise(3 << 20, 1)).unwrap();
    std::fs::write(data.join("b.bin"), noise(3 << 20, 2)).unwrap();
    std::fs::write(data.join("c.txt"), "small").unwrap();
    chunked_on_moto(&s, &bucket, &root, &data, 1);
    let b1 = backup(&s);
    let now = jiff::Timestamp::now().as_second();
    let all = keys(&rt, &c, &bucket, &format!("{root}/"));
    let packs = ending(&all, ".pack");
    assert!(!packs.is_empty(), "{all:?}");
    // packs and indexes: the lock plus a day of slack; the backup's own objects: the lock
    for k in
        packs.iter().chain(&ending(&all, ".json").into_iter().filter(|k| k.contains("/index/")).collect::<Vec<_>>())
    {
        let until = retained(&rt, &c, &bucket, k);
        assert!((until - now - 2 * 86_400).abs() < 600, "{k}: retained until {until}, now {now}");
    }
    let m1 = all.iter().find(|k| k.contains(&b1) && k.ends_with(".manifest.json")).unwrap();
    assert!((retained(&rt, &c, &bucket, m1) - now - 86_400).abs() < 600);
    assert!(all.iter().all(|k| !k.contains("/locks/")), "the lock marker is gone: {all:?}");

    // the lock raised to 5 days: the next backup of the unchanged tree reuses every pack, which
    // would be unlocked 3 days before it; it extends them first
    chunked_on_moto(&s, &bucket, &root, &data, 5);
    let b2 = backup(&s);
    let all = keys(&rt, &c, &bucket, &format!("{root}/"));
    assert_eq!(ending(&all, ".pack"), packs, "an unchanged tree stores no new pack");
    let m2 = all.iter().find(|k| k.contains(&b2) && k.ends_with(".manifest.json")).unwrap();
    let m2_until = retained(&rt, &c, &bucket, m2);
    assert!((m2_until - now - 5 * 86_400).abs() < 600, "{m2}: {m2_until}");
    for p in &packs {
        let until = retained(&rt, &c, &bucket, p);
        assert!(until >= m2_until, "{p} is locked until {until}, before the backup using it ({m2_until})");
    }
    // b2's index lists the packs it extended, with their new date (the next backups read it there)
    let index2 = all.iter().find(|k| k.contains("/index/") && k.contains(&b2)).expect("b2 wrote an index");
    let body = rt.block_on(c.get_object().bucket(&bucket).key(index2).send()).unwrap();
    let body = rt.block_on(body.body.collect()).unwrap().into_bytes();
    let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let listed = index["packs"].as_array().unwrap();
    assert_eq!(listed.len(), packs.len(), "{index}");
    for p in listed {
        let until: jiff::Timestamp = p["until"].as_str().unwrap().parse().unwrap();
        assert!(until.as_second() >= m2_until, "{p}");
    }
    assert!(retained(&rt, &c, &bucket, index2) >= m2_until, "the index outlives the dates it records");

    // the next backup finds the dates in the indexes: nothing to extend, no index written
    let indexes = all.iter().filter(|k| k.contains("/index/")).count();
    backup(&s);
    let all = keys(&rt, &c, &bucket, &format!("{root}/"));
    assert_eq!(all.iter().filter(|k| k.contains("/index/")).count(), indexes, "{all:?}");

    // b2 restores from the locked target
    let dest = s.path("restored");
    let r = run(s.drctl().args(["restore", "vol", "--id", &b2, "--target", "vault", "--to"]).arg(&dest));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read(dest.join("b.bin")).unwrap(), noise(3 << 20, 2));
}

#[test]
fn moto_chunked_prune_marks_unused_packs_and_deletes_none_before_its_lock_ends() {
    let Moto { rt, c, bucket, root, s, data } = Moto::new();
    std::fs::write(data.join("a.bin"), noise(3 << 20, 1)).unwrap();
    chunked_on_moto(&s, &bucket, &root, &data, 1);
    let b1 = backup(&s);
    let first_packs = ending(&keys(&rt, &c, &bucket, &format!("{root}/")), ".pack");
    std::fs::write(data.join("a.bin"), noise(3 << 20, 3)).unwrap();
    backup(&s);
    // b1 gone (as a prune does once its lock has ended; a delete marker here): its packs are unused
    let m1 = keys(&rt, &c, &bucket, &format!("{root}/"))
        .into_iter()
        .find(|k| k.contains(&b1) && k.ends_with(".manifest.json"))
        .unwrap();
    rt.block_on(c.delete_object().bucket(&bucket).key(&m1).send()).unwrap();

    let gc = |plans: &serde_json::Value| plan_of(plans, "vault")["chunks"][0].clone();
    let (r, plans) = prune_json(&s, false);
    assert_eq!(r.code, 0, "{r:?}");
    // (unused, or mostly unused and repacked: a few chunks, the end of the tar, are b2's too)
    let g = gc(&plans);
    let marked: Vec<String> = ["packs_marked", "packs_repacked"]
        .iter()
        .flat_map(|f| g[f].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()))
        .collect();
    assert!(!marked.is_empty(), "{g}");
    assert!(first_packs.iter().all(|k| marked.iter().any(|p| k.contains(p))), "{g}");
    // the fossil record is a coordination object: not locked (it is rewritten and deleted)
    let all = keys(&rt, &c, &bucket, &format!("{root}/"));
    let record = all.iter().find(|k| k.contains("/fossils/")).expect("a fossil record");
    let h = rt.block_on(c.head_object().bucket(&bucket).key(record).send()).unwrap();
    assert_eq!(h.object_lock_retain_until_date(), None, "{record}");

    // the next prune would delete them, but their lock runs for two more days
    let (r, plans) = prune_json(&s, false);
    assert_eq!(r.code, 0, "{r:?}");
    let g = gc(&plans);
    assert_eq!(g["packs_deleted"], serde_json::json!([]), "{g}");
    assert_eq!(g["packs_locked"], marked.len(), "{g}");
    let packs_now = ending(&keys(&rt, &c, &bucket, &format!("{root}/")), ".pack");
    assert!(first_packs.iter().all(|p| packs_now.contains(p)), "a locked pack was deleted: {packs_now:?}");
    let human = run(s.drctl().args(["prune", "--dry-run"]));
    assert!(human.stdout.contains("wait for their Object Lock to end"), "{human:?}");
    // the record stays, for the prune after the lock ends
    assert!(keys(&rt, &c, &bucket, &format!("{root}/")).iter().any(|k| k.contains("/fossils/")));
}

#[test]
fn moto_chunked_sync_extends_the_locks_of_the_packs_it_reuses_on_the_destination() {
    let Moto { rt, c, bucket, root, s, data } = Moto::new();
    std::fs::write(data.join("a.bin"), noise(3 << 20, 4)).unwrap();
    // backups on `local` only; `sync` copies them to `vault` (locked for `days`) once it is listed
    let config = |targets: &str, days: u32| {
        s.write_config(&format!(
            "{}{}{}",
            s.with_chunk_key(&s.head()),
            moto_target("vault", &bucket, &root, &format!("object_lock = {{ mode = \"governance\", days = {days} }}")),
            volume_job(&data, targets)
        ))
    };
    let sync = || {
        let r = run(s.drctl().args(["--json", "sync"]));
        assert_eq!(r.code, 0, "{r:?}");
        serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()
    };
    config("\"local\"", 1);
    backup(&s);
    config("\"local\", \"vault\"", 1);
    assert_eq!(sync()["copied"].as_array().unwrap().len(), 1);
    let packs = ending(&keys(&rt, &c, &bucket, &format!("{root}/")), ".pack");
    assert!(!packs.is_empty());

    // an unchanged second backup, synced under a 5-day lock: its chunks are all on `vault`
    // already, in packs locked for 2 days; the sync extends them before writing the manifest
    config("\"local\"", 1);
    let b2 = backup(&s);
    config("\"local\", \"vault\"", 5);
    assert_eq!(sync()["copied"].as_array().unwrap().len(), 1);
    let all = keys(&rt, &c, &bucket, &format!("{root}/"));
    assert_eq!(ending(&all, ".pack"), packs, "nothing new to copy");
    let m2 = all.iter().find(|k| k.contains(&b2) && k.ends_with(".manifest.json")).unwrap();
    let m2_until = retained(&rt, &c, &bucket, m2);
    for p in &packs {
        assert!(retained(&rt, &c, &bucket, p) >= m2_until, "{p} ends before {m2}");
    }
}
