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

use std::ops::Range;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::{ByteStream, ObjectMeta, target_error};
use crate::config::{ChecksumMode, S3Target};
use crate::error::FailureKind;
use crate::redact::Secret;
use crate::{Error, Result};

/// S3 allows at most this many parts per upload.
const MAX_PARTS: i32 = 10_000;

pub struct S3Store {
    name: String,
    client: Client,
    bucket: String,
    root: String,
    part_size: usize,
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
        return crate::config::read_secret_file(f);
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
    pub fn new(name: &str, c: &S3Target) -> Result<Self> {
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
        let checksums = match c.checksums {
            ChecksumMode::WhenRequired => {
                (RequestChecksumCalculation::WhenRequired, ResponseChecksumValidation::WhenRequired)
            }
            ChecksumMode::WhenSupported => {
                (RequestChecksumCalculation::WhenSupported, ResponseChecksumValidation::WhenSupported)
            }
        };
        let mut builder = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(c.region.clone()))
            .force_path_style(c.path_style)
            .credentials_provider(Credentials::new(ak.expose(), sk.expose(), None, None, "drctl-config"))
            .http_client(http)
            .request_checksum_calculation(checksums.0)
            .response_checksum_validation(checksums.1)
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(ep) = &c.endpoint {
            builder = builder.endpoint_url(ep);
        }
        let root = c.root.as_deref().unwrap_or("").trim_matches('/').to_string();
        Ok(S3Store {
            name: name.to_string(),
            client: Client::from_conf(builder.build()),
            bucket: c.bucket.clone(),
            root,
            part_size: (c.part_size_mib as usize) << 20,
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
        target_error(&self.name, op, key, kind, format!("bucket `{}`: {}", self.bucket, DisplayErrorContext(&e)))
    }

    pub async fn put(&self, key: &str, mut data: ByteStream) -> Result<u64> {
        let full = self.full_key(key);
        let mut buf = BytesMut::new();
        let mut total = 0u64;
        let mut upload: Option<Multipart> = None;
        let outcome: Result<()> = async {
            while let Some(chunk) = data.next().await {
                let chunk = chunk.map_err(|e| {
                    target_error(&self.name, "put", key, FailureKind::Transient, format!("upload aborted: {e}"))
                })?;
                total += chunk.len() as u64;
                buf.extend_from_slice(&chunk);
                while buf.len() >= self.part_size {
                    let part = buf.split_to(self.part_size).freeze();
                    if upload.is_none() {
                        upload = Some(self.create_multipart(key, &full).await?);
                    }
                    if let Some(up) = upload.as_mut() {
                        up.send_part(self, key, part).await?;
                    }
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
                    .body(Body::from(buf.freeze()))
                    .send()
                    .await
                    .map_err(|e| self.err("put", key, e))?;
                Ok(total)
            }
            (Ok(()), Some(mut up)) => {
                let finished = async {
                    if !buf.is_empty() {
                        up.send_part(self, key, buf.freeze()).await?;
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

    async fn create_multipart(&self, key: &str, full: &str) -> Result<Multipart> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
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

    async fn send_part(&mut self, store: &S3Store, key: &str, data: Bytes) -> Result<()> {
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
        let (target, key) = (store.name.clone(), key.to_string());
        self.in_flight = Some(tokio::spawn(async move {
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
                    target_error(&target, "put (upload part)", &key, kind, DisplayErrorContext(&e))
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
                tracing::warn!(target = %store.name, key = %self.guard.key, error = %DisplayErrorContext(&e), "could not abort multipart upload; prune will clean it up");
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
