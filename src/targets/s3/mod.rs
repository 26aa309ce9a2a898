//! `type = "s3"`: AWS S3 and S3-compatible stores (Hetzner Object Storage, Garage, MinIO).
//!
//! Uploads are streaming multipart uploads written by hand on aws-sdk-s3: one part is assembled
//! while the previous one is in flight, so memory is about two parts whatever the object size.
//! Objects smaller than one part go up with a single PutObject. A failed upload is aborted
//! (`AbortMultipartUpload`), so nothing partial is ever visible; if the upload future is dropped
//! mid-way (cancellation) a guard still sends the abort.
//!
//! Request checksums are sent only "when required" by default: several S3-compatible stores
//! reject the SDK's default CRC32 headers on multipart uploads.
//!
//! With `object_lock`, every upload (PutObject, or CreateMultipartUpload) carries the retention
//! mode and date, and a CRC32 checksum (S3 refuses lock PUTs without Content-MD5 or a checksum).
//! The upload is then checked with HEAD: a store that accepted the headers but did not lock the
//! object gets a PutObjectRetention, and if that fails too the upload is an error — a target
//! configured for immutability never silently stores unlocked backups. Write probes
//! (`.drctl-probe/`) are not locked: they are deleted at once. How long other keys are locked
//! depends on what they are ([`crate::layout::retention_of`]: a chunk repository's packs and
//! indexes longer, its lock markers and fossil records not at all). Storage class and server-side
//! encryption are passed through on every upload.

mod config;
pub use config::{ChecksumMode, S3ObjectLock, S3ObjectLockMode, S3Sse, S3Target};

use std::ops::Range;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    RuntimeComponents, StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::put_object_retention::PutObjectRetentionError;
use aws_sdk_s3::primitives::ByteStream as Body;
use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockMode, ObjectLockRetention,
    ObjectLockRetentionMode, ServerSideEncryption, StorageClass,
};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::{ByteStream, ObjectMeta, PendingUpload, target_error};
use crate::error::FailureKind;
use crate::layout::Retention;
use crate::redact::Secret;
use crate::targets::Deadlines;
use crate::{Error, Result};

/// S3 allows at most this many parts per upload.
const MAX_PARTS: i32 = 10_000;

/// Memory every multipart upload of the process together may hold in part buffers (the part being
/// filled and the part in flight, per upload): a budget rather than `part_size × uploads`, so a
/// job with several S3 targets, or `part_size_mib = 64`, stays bounded. An upload that finds the
/// budget spent waits for another's part to finish; one part larger than the budget takes all of
/// it (parts then go one at a time). With the default 16 MiB parts two S3 targets still overlap a
/// part's upload with filling the next.
const MULTIPART_BUDGET_MIB: u32 = 64;

static MULTIPART_BUDGET: std::sync::LazyLock<std::sync::Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(tokio::sync::Semaphore::new(MULTIPART_BUDGET_MIB as usize)));

/// Reserve the budget for one part buffer of `part_size` bytes.
async fn reserve_part(part_size: usize) -> tokio::sync::OwnedSemaphorePermit {
    let mib = ((part_size >> 20).max(1) as u32).min(MULTIPART_BUDGET_MIB);
    MULTIPART_BUDGET.clone().acquire_many_owned(mib).await.expect("the budget is never closed")
}

pub struct S3Store {
    name: String,
    pub(super) deadlines: Deadlines,
    client: Client,
    bucket: String,
    root: String,
    part_size: usize,
    object_lock: Option<S3ObjectLock>,
    storage_class: Option<StorageClass>,
    sse: Option<ServerSideEncryption>,
    sse_kms_key_id: Option<String>,
}

/// Keys written by [`super::Target::probe`]: never locked, they are deleted right away.
const PROBE_PREFIX: &str = ".drctl-probe/";

/// The lock headers one upload carries.
#[derive(Clone, Copy)]
struct Lock {
    mode: S3ObjectLockMode,
    until: DateTime,
}

impl Lock {
    fn sdk_mode(&self) -> ObjectLockMode {
        match self.mode {
            S3ObjectLockMode::Governance => ObjectLockMode::Governance,
            S3ObjectLockMode::Compliance => ObjectLockMode::Compliance,
        }
    }

    fn retention_mode(&self) -> ObjectLockRetentionMode {
        match self.mode {
            S3ObjectLockMode::Governance => ObjectLockRetentionMode::Governance,
            S3ObjectLockMode::Compliance => ObjectLockRetentionMode::Compliance,
        }
    }
}

fn to_timestamp(t: &DateTime) -> Option<jiff::Timestamp> {
    jiff::Timestamp::new(t.secs(), t.subsec_nanos() as i32).ok()
}

fn read_secret(
    inline: &Option<Secret>,
    file: &Option<std::path::PathBuf>,
    env: &str,
    target: &str,
    field: &str,
) -> Result<Secret> {
    if let Some(s) = inline {
        return Ok(s.clone());
    }
    if let Some(f) = file {
        return crate::config::secrets::read_secret_file(f);
    }
    match std::env::var(env) {
        Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
        _ => Err(target_error(
            target,
            "configure",
            "",
            FailureKind::Permanent,
            format!("no `{field}`: set it (or `{field}_file`) on the target, or export {env}"),
        )),
    }
}

impl S3Store {
    /// # Errors
    /// When credentials are missing or a credential file cannot be read.
    pub fn new(name: &str, c: &S3Target, deadlines: Deadlines) -> Result<Self> {
        let ak = read_secret(&c.access_key_id, &c.access_key_id_file, "AWS_ACCESS_KEY_ID", name, "access_key_id")?;
        let sk = read_secret(
            &c.secret_access_key,
            &c.secret_access_key_file,
            "AWS_SECRET_ACCESS_KEY",
            name,
            "secret_access_key",
        )?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut checksums = match c.checksums {
            ChecksumMode::WhenRequired => {
                (RequestChecksumCalculation::WhenRequired, ResponseChecksumValidation::WhenRequired)
            }
            ChecksumMode::WhenSupported => {
                (RequestChecksumCalculation::WhenSupported, ResponseChecksumValidation::WhenSupported)
            }
        };
        if c.object_lock.is_some() {
            // S3 refuses uploads with Object Lock headers that carry neither Content-MD5 nor a checksum
            checksums.0 = RequestChecksumCalculation::WhenSupported;
        }
        let mut builder = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(c.region.clone()))
            .force_path_style(c.path_style)
            .credentials_provider(Credentials::new(ak.expose(), sk.expose(), None, None, "drctl-config"))
            .http_client(http)
            .request_checksum_calculation(checksums.0)
            .response_checksum_validation(checksums.1)
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            // connect; first answer byte within `idle`; one attempt, and the whole operation
            // (retries included), within `request`. Streamed bodies (GET) are not under the
            // request deadlines, only under stalled-stream protection (no byte for `idle`).
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(deadlines.connect)
                    .read_timeout(deadlines.idle)
                    .operation_attempt_timeout(deadlines.request)
                    .operation_timeout(deadlines.request)
                    .build(),
            )
            .stalled_stream_protection(StalledStreamProtectionConfig::enabled().grace_period(deadlines.idle).build())
            .interceptor(RetryLog { target: name.to_string() });
        if let Some(ep) = &c.endpoint {
            builder = builder.endpoint_url(ep);
        }
        let root = c.root.as_deref().unwrap_or("").trim_matches('/').to_string();
        Ok(S3Store {
            name: name.to_string(),
            deadlines,
            client: Client::from_conf(builder.build()),
            bucket: c.bucket.clone(),
            root,
            part_size: (c.part_size_mib as usize) << 20,
            object_lock: c.object_lock,
            storage_class: c.storage_class.as_deref().map(StorageClass::from),
            sse: c.sse.map(|s| match s {
                S3Sse::Aes256 => ServerSideEncryption::Aes256,
                S3Sse::AwsKms => ServerSideEncryption::AwsKms,
            }),
            sse_kms_key_id: c.sse_kms_key_id.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn full_key(&self, key: &str) -> String {
        if self.root.is_empty() { key.to_string() } else { format!("{}/{key}", self.root) }
    }

    fn err<E>(&self, op: &'static str, key: &str, e: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let kind = classify(&e);
        target_error(&self.name, op, key, kind, format!("bucket `{}`: {}", self.bucket, describe(&e)))
    }

    /// The lock a new upload of `key` gets: retained `days` from now, more for the shared objects
    /// of a chunk repository, none for probes and coordination objects
    /// ([`crate::layout::retention_of`]).
    fn lock_for(&self, key: &str) -> Option<Lock> {
        if key.starts_with(PROBE_PREFIX) {
            return None;
        }
        self.lock_of(crate::layout::retention_of(key))
    }

    fn lock_of(&self, class: Retention) -> Option<Lock> {
        let lock = self.object_lock?;
        let days = match class {
            Retention::Unlocked => return None,
            Retention::Backup => lock.days,
            Retention::Shared => lock.days.saturating_add(crate::layout::shared_slack_days(lock.days)),
        };
        let until = jiff::Timestamp::now().as_second().saturating_add(i64::from(days) * 86_400);
        Some(Lock { mode: lock.mode, until: DateTime::from_secs(until) })
    }

    /// Until when an upload of `class` made now would be locked (`None`: not locked).
    pub fn retention(&self, class: Retention) -> Option<jiff::Timestamp> {
        self.lock_of(class).and_then(|l| to_timestamp(&l.until))
    }

    /// Lock `key` until `until` (PutObjectRetention: extending a lock is allowed in both modes).
    pub async fn extend_retention(&self, key: &str, until: jiff::Timestamp) -> Result<()> {
        let Some(lock) = self.object_lock else { return Ok(()) };
        let lock = Lock { mode: lock.mode, until: DateTime::from_secs(until.as_second()) };
        match self.put_retention(key, lock).await {
            Ok(()) => Ok(()),
            // a lock that already ends later (another backup extended it further) cannot be
            // shortened, and needs no extension
            Err(e) => match self.locked_until(key).await {
                Ok(Some(held)) if held >= until => Ok(()),
                _ => Err(self.err("extend object lock", key, e)),
            },
        }
    }

    async fn put_retention(
        &self,
        key: &str,
        lock: Lock,
    ) -> std::result::Result<(), SdkError<PutObjectRetentionError, HttpResponse>> {
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .retention(ObjectLockRetention::builder().mode(lock.retention_mode()).retain_until_date(lock.until).build())
            .send()
            .await
            .map(|_| ())
    }

    pub async fn put(&self, key: &str, data: ByteStream) -> Result<u64> {
        let lock = self.lock_for(key);
        let total = self.upload(key, data, lock).await?;
        if let Some(lock) = lock {
            self.ensure_locked(key, lock).await?;
        }
        Ok(total)
    }

    /// After a locked upload: make sure the store applied the lock (some S3-compatible stores,
    /// and moto for multipart uploads, accept the headers and ignore them).
    async fn ensure_locked(&self, key: &str, lock: Lock) -> Result<()> {
        if self.locked_until(key).await?.is_some() {
            return Ok(());
        }
        self.put_retention(key, lock).await.map_err(|e| {
            target_error(
                &self.name,
                "put (object lock)",
                key,
                FailureKind::Permanent,
                format!(
                    "bucket `{}` stored the object without the Object Lock retention `object_lock` asks for, \
                         and setting it afterwards failed: is Object Lock enabled on the bucket? ({})",
                    self.bucket,
                    describe(&e)
                ),
            )
        })?;
        Ok(())
    }

    async fn upload(&self, key: &str, mut data: ByteStream, lock: Option<Lock>) -> Result<u64> {
        let full = self.full_key(key);
        // one part's worth, allocated once per part: growing a buffer by doubling held up to twice
        // a part while it filled (memory is one part filling plus one in flight)
        let mut permit = Some(reserve_part(self.part_size).await);
        let mut buf = BytesMut::with_capacity(self.part_size);
        let mut total = 0u64;
        let mut upload: Option<Multipart> = None;
        let outcome: Result<()> = async {
            while let Some(chunk) = data.next().await {
                let chunk = chunk.map_err(|e| {
                    target_error(&self.name, "put", key, FailureKind::Transient, format!("upload aborted: {e}"))
                })?;
                total += chunk.len() as u64;
                let mut chunk = &chunk[..];
                while !chunk.is_empty() {
                    let take = (self.part_size - buf.len()).min(chunk.len());
                    buf.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if buf.len() < self.part_size {
                        break;
                    }
                    let part = std::mem::take(&mut buf).freeze();
                    let held = permit.take().expect("a part is filled under its reservation");
                    if upload.is_none() {
                        upload = Some(self.create_multipart(key, &full, lock).await?);
                    }
                    if let Some(up) = upload.as_mut() {
                        up.send_part(self, key, part, held).await?;
                    }
                    permit = Some(reserve_part(self.part_size).await);
                    buf = BytesMut::with_capacity(self.part_size);
                }
            }
            Ok(())
        }
        .await;

        match (outcome, upload) {
            (Err(e), Some(up)) => {
                up.abort(self).await;
                Err(e)
            }
            (Err(e), None) => Err(e),
            (Ok(()), None) => {
                self.client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&full)
                    .content_length(buf.len() as i64)
                    .set_storage_class(self.storage_class.clone())
                    .set_server_side_encryption(self.sse.clone())
                    .set_ssekms_key_id(self.sse_kms_key_id.clone())
                    .set_object_lock_mode(lock.map(|l| l.sdk_mode()))
                    .set_object_lock_retain_until_date(lock.map(|l| l.until))
                    .set_checksum_algorithm(self.object_lock.map(|_| ChecksumAlgorithm::Crc32))
                    .body(Body::from(buf.freeze()))
                    .send()
                    .await
                    .map_err(|e| self.err("put", key, e))?;
                Ok(total)
            }
            (Ok(()), Some(mut up)) => {
                let finished = async {
                    if !buf.is_empty() {
                        let held = permit.take().expect("a part is filled under its reservation");
                        up.send_part(self, key, buf.freeze(), held).await?;
                    }
                    up.complete(self, key).await
                }
                .await;
                match finished {
                    Ok(()) => Ok(total),
                    Err(e) => {
                        up.abort(self).await;
                        Err(e)
                    }
                }
            }
        }
    }

    async fn create_multipart(&self, key: &str, full: &str, lock: Option<Lock>) -> Result<Multipart> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .set_storage_class(self.storage_class.clone())
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.sse_kms_key_id.clone())
            .set_object_lock_mode(lock.map(|l| l.sdk_mode()))
            .set_object_lock_retain_until_date(lock.map(|l| l.until))
            .send()
            .await
            .map_err(|e| self.err("put (create multipart upload)", key, e))?;
        let upload_id = out.upload_id().unwrap_or_default().to_string();
        Ok(Multipart {
            guard: AbortGuard {
                client: Some(self.client.clone()),
                bucket: self.bucket.clone(),
                key: full.to_string(),
                upload_id,
            },
            parts: Vec::new(),
            in_flight: None,
            next: 1,
        })
    }

    pub async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(self.full_key(key));
        if let Some(r) = &range {
            if r.start >= r.end {
                // S3 has no empty range: ask HEAD, so that a missing key is still NotFound
                return match self.stat(key).await? {
                    Some(_) => Ok(Box::pin(futures::stream::empty())),
                    None => Err(target_error(
                        &self.name,
                        "get",
                        key,
                        FailureKind::NotFound,
                        format!("bucket `{}`: no such key", self.bucket),
                    )),
                };
            }
            req = req.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        let out = req.send().await.map_err(|e| self.err("get", key, e))?;
        let reader = out.body.into_async_read();
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024)))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let full_prefix = self.full_key(prefix);
        let strip = if self.root.is_empty() { 0 } else { self.root.len() + 1 };
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(&full_prefix).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("list", prefix, e))?;
            for obj in page.contents() {
                let Some(k) = obj.key() else { continue };
                let Some(rel) = k.get(strip..) else { continue };
                out.push(ObjectMeta { key: rel.to_string(), size: obj.size().unwrap_or(0).max(0) as u64 });
            }
        }
        Ok(out)
    }

    pub async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        match self.client.head_object().bucket(&self.bucket).key(self.full_key(key)).send().await {
            Ok(out) => {
                Ok(Some(ObjectMeta { key: key.to_string(), size: out.content_length().unwrap_or(0).max(0) as u64 }))
            }
            Err(e) if classify(&e) == FailureKind::NotFound => Ok(None),
            Err(e) => Err(self.err("stat", key, e)),
        }
    }

    pub async fn locked_until(&self, key: &str) -> Result<Option<jiff::Timestamp>> {
        // HEAD, not GetObjectRetention: it needs no extra permission, and emulators (moto)
        // answer GetObjectRetention with an error
        match self.client.head_object().bucket(&self.bucket).key(self.full_key(key)).send().await {
            Ok(out) => Ok(out.object_lock_retain_until_date().and_then(to_timestamp)),
            Err(e) if classify(&e) == FailureKind::NotFound => Ok(None),
            Err(e) => Err(self.err("stat (object lock)", key, e)),
        }
    }

    pub async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        let full_prefix = self.full_key(prefix);
        let strip = if self.root.is_empty() { 0 } else { self.root.len() + 1 };
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.err("list multipart uploads", prefix, e))?;
            for u in page.uploads() {
                let (Some(k), Some(id)) = (u.key(), u.upload_id()) else { continue };
                let Some(rel) = k.get(strip..) else { continue };
                out.push(PendingUpload {
                    key: rel.to_string(),
                    upload_id: id.to_string(),
                    initiated: u.initiated().and_then(to_timestamp),
                });
            }
            if page.is_truncated() != Some(true) || page.next_key_marker().is_none() {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
        }
        Ok(out)
    }

    pub async fn abort_upload(&self, upload: &PendingUpload) -> Result<()> {
        let res = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(&upload.key))
            .upload_id(&upload.upload_id)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if classify(&e) == FailureKind::NotFound => Ok(()),
            Err(e) => Err(self.err("abort multipart upload", &upload.key, e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.err("delete", key, e))?;
        Ok(())
    }
}

impl S3Store {
    /// See [`super::Target::clock`]: the `Date` header of the store's answer to a one-key list
    /// (any answer has one, an error too: a request signed with a skewed clock is refused with
    /// `RequestTimeTooSkewed`, and still says what time the store has).
    pub async fn clock(&self) -> Result<jiff::Timestamp> {
        let seen: std::sync::Arc<std::sync::Mutex<Option<jiff::Timestamp>>> = Default::default();
        let capture = seen.clone();
        let res = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(super::CLOCK_PROBE))
            .max_keys(1)
            .customize()
            .interceptor(DateCapture(capture))
            .send()
            .await;
        let seen = *seen.lock().unwrap_or_else(|e| e.into_inner());
        match (seen, res) {
            (Some(t), _) => Ok(t),
            (None, Err(e)) => Err(self.err("read the clock", "", e)),
            (None, Ok(_)) => Err(target_error(
                &self.name,
                "read the clock",
                "",
                FailureKind::Permanent,
                "the answer has no `Date` header",
            )),
        }
    }
}

/// Keeps the `Date` header of the answers of one request.
#[derive(Debug)]
struct DateCapture(std::sync::Arc<std::sync::Mutex<Option<jiff::Timestamp>>>);

impl aws_sdk_s3::config::Intercept for DateCapture {
    fn name(&self) -> &'static str {
        "DateCapture"
    }

    fn read_before_deserialization(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef<'_>,
        _: &aws_sdk_s3::config::RuntimeComponents,
        _: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(t) = context.response().headers().get("date").and_then(super::parse_http_date)
            && let Ok(mut slot) = self.0.lock()
        {
            *slot = Some(t);
        }
        Ok(())
    }
}

/// One multipart upload in progress: completed parts, and at most one part in flight.
struct Multipart {
    guard: AbortGuard,
    parts: Vec<CompletedPart>,
    in_flight: Option<JoinHandle<Result<CompletedPart>>>,
    next: i32,
}

impl Multipart {
    async fn wait_in_flight(&mut self) -> Result<()> {
        if let Some(h) = self.in_flight.take() {
            let part = h.await.map_err(|e| Error::Pipeline(format!("part upload task failed: {e}")))??;
            self.parts.push(part);
        }
        Ok(())
    }

    /// Upload `data` as the next part (after the one in flight finished); `budget` is released
    /// when this part's upload ends.
    async fn send_part(
        &mut self,
        store: &S3Store,
        key: &str,
        data: Bytes,
        budget: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<()> {
        self.wait_in_flight().await?;
        if self.next > MAX_PARTS {
            return Err(target_error(
                &store.name,
                "put",
                key,
                FailureKind::Permanent,
                format!(
                    "the object needs more than {MAX_PARTS} parts: raise `part_size_mib` (now {} MiB)",
                    store.part_size >> 20
                ),
            ));
        }
        let number = self.next;
        self.next += 1;
        let client = store.client.clone();
        let (bucket, full, upload_id) = (store.bucket.clone(), self.guard.key.clone(), self.guard.upload_id.clone());
        let bucket_name = bucket.clone();
        let (target, key) = (store.name.clone(), key.to_string());
        self.in_flight = Some(tokio::spawn(async move {
            let _budget = budget;
            let len = data.len() as i64;
            let out = client
                .upload_part()
                .bucket(bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len)
                .body(Body::from(data))
                .send()
                .await
                .map_err(|e| {
                    let kind = classify(&e);
                    target_error(
                        &target,
                        "put (upload part)",
                        &key,
                        kind,
                        format!("bucket `{bucket_name}`: {}", describe(&e)),
                    )
                })?;
            Ok(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(str::to_string)).build())
        }));
        Ok(())
    }

    async fn complete(&mut self, store: &S3Store, key: &str) -> Result<()> {
        self.wait_in_flight().await?;
        let parts = std::mem::take(&mut self.parts);
        store
            .client
            .complete_multipart_upload()
            .bucket(&store.bucket)
            .key(&self.guard.key)
            .upload_id(&self.guard.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| store.err("put (complete multipart upload)", key, e))?;
        self.guard.client = None; // committed: nothing to abort
        Ok(())
    }

    async fn abort(mut self, store: &S3Store) {
        if let Some(h) = self.in_flight.take() {
            h.abort();
            let _ = h.await;
        }
        if let Some(client) = self.guard.client.take() {
            let res = client
                .abort_multipart_upload()
                .bucket(&store.bucket)
                .key(&self.guard.key)
                .upload_id(&self.guard.upload_id)
                .send()
                .await;
            if let Err(e) = res {
                tracing::warn!(target = %store.name, key = %self.guard.key, error = %describe(&e), "could not abort multipart upload; prune will clean it up");
            }
        }
    }
}

/// Aborts the multipart upload if it is dropped before completing (e.g. the run was cancelled).
struct AbortGuard {
    client: Option<Client>,
    bucket: String,
    key: String,
    upload_id: String,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (bucket, key, upload_id) = (self.bucket.clone(), self.key.clone(), self.upload_id.clone());
        handle.spawn(async move {
            let _ = client.abort_multipart_upload().bucket(bucket).key(key).upload_id(upload_id).send().await;
        });
    }
}

fn classify<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> FailureKind {
    match e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            match (status, se.err().code()) {
                (_, Some("NoSuchBucket" | "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch")) => {
                    FailureKind::Permanent
                }
                (404, _) | (_, Some("NoSuchKey" | "NotFound")) => FailureKind::NotFound,
                (408 | 429, _) | (500..=599, _) => FailureKind::Transient,
                (_, Some("SlowDown" | "RequestTimeout" | "InternalError")) => FailureKind::Transient,
                _ => FailureKind::Permanent,
            }
        }
        SdkError::ConstructionFailure(_) => FailureKind::Permanent,
        _ => FailureKind::Transient,
    }
}

/// One line for an SDK error: `HTTP 403 `InvalidAccessKeyId`: The access key … does not exist`,
/// `no answer within the deadline (timed out)`, `connection failed: …`. Never the SDK's debug
/// structures (kilobytes of request ids and headers).
fn describe<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut cur = e.source();
        while let Some(s) = cur {
            let t = s.to_string();
            if !out.contains(&t) {
                out.push_str(": ");
                out.push_str(&t);
            }
            cur = s.source();
        }
        let mut out: String = out.split_whitespace().collect::<Vec<_>>().join(" ");
        if out.len() > 300 {
            let mut end = 300;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
            out.push('…');
        }
        out
    }
    match e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().map(|c| format!(" `{c}`")).unwrap_or_default();
            let message = se.err().message().map(|m| format!(": {}", m.trim())).unwrap_or_default();
            format!("HTTP {status}{code}{message}")
        }
        SdkError::TimeoutError(_) => "no answer within the deadline (timed out; see `timeouts` on the target)".into(),
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            "no answer within the deadline (timed out; see `timeouts` on the target)".into()
        }
        SdkError::DispatchFailure(d) => match d.as_connector_error() {
            Some(c) => format!("connection failed: {}", chain(c)),
            None => "connection failed".into(),
        },
        SdkError::ResponseError(r) => {
            format!("unreadable answer (HTTP {}): {}", r.raw().status().as_u16(), chain(e as &dyn std::error::Error))
        }
        SdkError::ConstructionFailure(_) => format!("invalid request: {}", chain(e as &dyn std::error::Error)),
        _ => chain(e as &dyn std::error::Error),
    }
}

/// Logs every failed attempt of an S3 request at `info` (`-v`), with the attempt number: the SDK
/// retries by itself, and a stalled or flaky store must not be silent.
#[derive(Debug)]
struct RetryLog {
    target: String,
}

/// The path (`/bucket/key`) of the current request, for the log.
#[derive(Debug, Clone)]
struct RequestPath(String);

impl aws_smithy_types::config_bag::Storable for RequestPath {
    type Storer = aws_smithy_types::config_bag::StoreReplace<RequestPath>;
}

/// Attempts of the current operation so far (kept in the operation's config bag).
#[derive(Debug, Clone, Copy)]
struct Attempts(u32);

impl aws_smithy_types::config_bag::Storable for Attempts {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Attempts>;
}

impl Intercept for RetryLog {
    fn name(&self) -> &'static str {
        "drctl::RetryLog"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let path = context.request().uri().split('?').next().unwrap_or_default();
        // the path part of the URL: bucket and key (never the query with its signature)
        let path = path.find("://").and_then(|i| path[i + 3..].find('/').map(|j| &path[i + 3 + j..])).unwrap_or(path);
        cfg.interceptor_state().store_put(RequestPath(path.to_string()));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let attempt = cfg.load::<Attempts>().map_or(1, |a| a.0 + 1);
        cfg.interceptor_state().store_put(Attempts(attempt));
        let path = cfg.load::<RequestPath>().map(|p| p.0.clone());
        let status = context.response().map(|r| r.status().as_u16());
        let failed = match (status, context.output_or_error()) {
            (Some(s), _) if s >= 500 || s == 429 || s == 408 => true,
            (_, Some(Err(_))) if status.is_none() => true,
            _ => false,
        };
        if failed {
            let error = context.output_or_error().and_then(|r| r.err()).map(|e| e.to_string());
            tracing::info!(target = %self.target, key = path.as_deref().unwrap_or(""), attempt, status, error = error.as_deref().unwrap_or(""),
                "S3 request attempt failed (the client retries transient failures)");
        } else {
            tracing::debug!(target = %self.target, key = path.as_deref().unwrap_or(""), attempt, status, "S3 request attempt done");
        }
        Ok(())
    }
}
