//! `type = "webdav"`: a WebDAV server, e.g. a Hetzner Storage Box over HTTPS with basic auth.
//!
//! Plain HTTP with reqwest (the crate the rest of drctl already uses): `PUT`, `GET` with
//! `Range`, `PROPFIND`, `MKCOL`, `MOVE`, `DELETE`.
//!
//! * **Atomic put.** The body streams (chunked, never buffered whole) into
//!   `.NAME.partial-XXXXXX` in the final collection, which `MOVE` (with `Overwrite: T`) then
//!   puts in place. A failed or aborted upload deletes its temporary resource; if the future is
//!   dropped mid-way a guard deletes it in the background. `list` never shows `.partial-` names.
//! * **Retries.** `PROPFIND`, `MKCOL` (each on its own), opening a `GET`, `DELETE` and the final
//!   `MOVE` are retried on transient errors (connection failures, timeouts, 408/429/5xx) with
//!   backoff and jitter ([`super::retry`]). A `PUT` of an object up to [`REPLAYABLE`] bytes
//!   (manifests, records, small artifacts) is held in memory and retried whole under a fresh
//!   temporary name; a longer streamed body is not (it can be read only once, and is never
//!   staged whole): its failure fails this target's copy of the backup (partial, `drctl sync`).
//! * **Collections.** `delete` never deletes a collection (a WebDAV `DELETE` of a collection is
//!   recursive) and, unlike fs and sftp, does not remove emptied collections: WebDAV has no
//!   "remove if empty", and checking first would race with a concurrent upload into it.
//! * **Listing** walks collections with `PROPFIND Depth: 1` (servers such as Apache refuse
//!   `Depth: infinity`), a few at a time.

mod config;
pub use config::WebdavTarget;

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_TYPE, HeaderValue, RANGE};
use reqwest::{Method, StatusCode};

use super::retry::{self, Classified};
use super::{ByteStream, ObjectMeta, target_error};
use crate::error::FailureKind;
use crate::redact::Secret;
use crate::redact::percent_decode;
use crate::targets::Deadlines;
use crate::{Error, Result};

const PARTIAL: &str = ".partial-";
/// Objects up to this size are held in memory for their upload and retried whole.
const REPLAYABLE: usize = 8 << 20;
/// Collections read at once by `list`.
const LIST_PARALLEL: usize = 4;
const PROPFIND_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getcontentlength/><D:getlastmodified/></D:prop></D:propfind>"#;

pub struct WebdavStore {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    deadlines: Deadlines,
    client: reqwest::Client,
    /// The configured URL, without credentials, ending in `/`.
    url: String,
    /// The percent-encoded segments of `root`.
    root_segments: Vec<String>,
    /// `url` + `root`, ending in `/`: every key is below it.
    base: String,
    /// The percent-decoded path of `base` (to turn the hrefs of PROPFIND answers into keys).
    base_path: String,
    user: String,
    password: Secret,
}

/// What went wrong with one request.
#[derive(Debug, Clone)]
struct DavError {
    kind: FailureKind,
    message: String,
}

impl DavError {
    fn new(kind: FailureKind, message: impl Into<String>) -> DavError {
        DavError { kind, message: message.into() }
    }
}

impl Classified for DavError {
    fn kind(&self) -> FailureKind {
        self.kind
    }
}

impl std::fmt::Display for DavError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl WebdavStore {
    /// See [`super::Target::clock`]: the `Date` header of the server's answer to a PROPFIND of the
    /// root (any answer has one, an error status too).
    pub async fn clock(&self) -> Result<jiff::Timestamp> {
        let inner = &self.inner;
        let url = inner.base.clone();
        inner
            .run("read the clock", "", |_| {
                let url = url.clone();
                async move {
                    let r = inner
                        .request(method("PROPFIND"), &url)
                        .header("Depth", "0")
                        .header(CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"))
                        .body(PROPFIND_BODY)
                        .send()
                        .await
                        .map_err(|e| inner.request_error("PROPFIND", &url, &e))?;
                    let date = r.headers().get("date").and_then(|v| v.to_str().ok()).and_then(super::parse_http_date);
                    date.ok_or_else(|| DavError::new(FailureKind::Permanent, "the answer has no `Date` header"))
                }
            })
            .await
    }
}

/// What PROPFIND says about one resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DavEntry {
    href: String,
    collection: bool,
    size: Option<u64>,
    /// `getlastmodified` (an HTTP date), when the server sends it.
    modified: Option<String>,
}

fn method(name: &'static str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("a valid HTTP method token")
}

impl WebdavStore {
    /// # Errors
    /// When `password_file` cannot be read, no password is set, or `url` is not an http(s) URL.
    pub fn new(name: &str, c: &WebdavTarget, deadlines: Deadlines) -> Result<Self> {
        let configure = |message: String| target_error(name, "configure", "", FailureKind::Permanent, message);
        let password = match (&c.password, &c.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => crate::config::secrets::read_secret_file(f)?,
            (None, None) => return Err(configure("no `password` or `password_file`".into())),
        };
        let mut url = url::Url::parse(&c.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| configure(format!("`{}` is not an http(s) URL", crate::redact::url_for_display(&c.url))))?;
        let _ = url.set_password(None);
        let _ = url.set_username("");
        url.set_query(None);
        url.set_fragment(None);
        let mut url = url.to_string();
        if !url.ends_with('/') {
            url.push('/');
        }
        let root_segments: Vec<String> =
            c.root.as_deref().unwrap_or("").split('/').filter(|s| !s.is_empty()).map(encode_segment).collect();
        let base = format!("{url}{}", root_segments.iter().map(|s| format!("{s}/")).collect::<String>());
        let base_path = url::Url::parse(&base).map(|u| percent_decode(u.path())).unwrap_or_else(|_| "/".into());

        // reqwest is built without a default crypto provider: install ring once (an error only
        // says one is installed already)
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            // connect; no byte of an answer for `idle` (also while a body streams in); requests
            // without a streamed body get `request` each (see `Inner::request`)
            .connect_timeout(deadlines.connect)
            .read_timeout(deadlines.idle)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("drctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| configure(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        Ok(WebdavStore {
            inner: Arc::new(Inner {
                name: name.to_string(),
                deadlines,
                client,
                url,
                root_segments,
                base,
                base_path,
                user: c.user.clone(),
                password,
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn deadlines(&self) -> Deadlines {
        self.inner.deadlines
    }

    /// Up to [`REPLAYABLE`] bytes are read before the upload starts: an object that ends within
    /// them (a manifest, a record, a small artifact) is sent from memory, so a failed PUT is
    /// retried whole (a fresh temporary name each try). A longer stream is sent once (it is never
    /// staged whole): a failure fails this target's copy, and the run reports it as partial.
    pub async fn put(&self, key: &str, mut data: ByteStream) -> Result<u64> {
        let mut head: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        while len < REPLAYABLE {
            match data.next().await {
                Some(Ok(b)) => {
                    len += b.len();
                    head.push(b);
                }
                Some(Err(e)) => {
                    return Err(target_error(
                        &self.inner.name,
                        "put",
                        key,
                        FailureKind::Transient,
                        format!("upload aborted: {e}"),
                    ));
                }
                None => {
                    let head = &head;
                    return retry::retry_in(&self.inner.name, "put", key, |_| {
                        self.put_once(key, Box::pin(futures::stream::iter(head.clone().into_iter().map(Ok))))
                    })
                    .await;
                }
            }
        }
        self.put_once(key, Box::pin(futures::stream::iter(head.into_iter().map(Ok)).chain(data))).await
    }

    async fn put_once(&self, key: &str, data: ByteStream) -> Result<u64> {
        let inner = &self.inner;
        let (dir, file) = match key.rsplit_once('/') {
            Some((d, f)) => (d, f),
            None => ("", key),
        };
        // retried request by request inside (a dozen MKCOLs must not all succeed in one go)
        inner.ensure_collection(dir).await.map_err(|e| inner.err("put", key, e))?;

        let in_dir = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let tmp = format!("{in_dir}.{file}{PARTIAL}{}", crate::layout::random_suffix());
        let tmp_url = inner.url_of(&tmp);
        let mut guard = super::CleanupOnDrop::new({
            let (inner, tmp_url) = (inner.clone(), tmp_url.clone());
            async move { inner.remove_tmp(&tmp_url).await }
        });
        let sent = Arc::new(AtomicU64::new(0));
        let source_failed: Arc<Mutex<Option<String>>> = Arc::default();
        let body = {
            let (sent, source_failed) = (sent.clone(), source_failed.clone());
            data.inspect(move |item| match item {
                Ok(b) => {
                    sent.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    *source_failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                }
            })
        };
        let response = inner
            .streaming(Method::PUT, &tmp_url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await;
        let source_failed = source_failed.lock().unwrap_or_else(|p| p.into_inner()).take();
        let uploaded = match (response, source_failed) {
            (_, Some(e)) => Err(DavError::new(FailureKind::Transient, format!("upload aborted: {e}"))),
            (Ok(r), None) if r.status().is_success() => Ok(()),
            (Ok(r), None) => Err(inner.status_error("PUT", &tmp_url, r).await),
            (Err(e), None) => Err(inner.request_error("PUT", &tmp_url, &e)),
        };
        let written = sent.load(Ordering::Relaxed);
        let committed = match uploaded {
            Ok(()) => {
                let (tmp_url, final_url) = (&tmp_url, &inner.url_of(key));
                inner
                    .run("put (move into place)", key, move |attempt| async move {
                        match inner.move_to(tmp_url, final_url).await {
                            // a repeated MOVE whose first try went through before the answer was lost
                            Err(e) if attempt > 0 && e.kind == FailureKind::NotFound => {
                                match inner.props(final_url).await {
                                    Ok(Some(p)) if !p.collection && p.size == Some(written) => Ok(()),
                                    _ => Err(e),
                                }
                            }
                            r => r,
                        }
                    })
                    .await
            }
            Err(e) => Err(inner.err("put", key, e)),
        };
        if committed.is_err() {
            inner.remove_tmp(&tmp_url).await;
        }
        guard.disarm();
        committed.map(|()| written)
    }

    pub async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let inner = &self.inner;
        let url = &inner.url_of(key);
        let size = inner
            .run("get", key, move |_| async move {
                match inner.props(url).await? {
                    Some(p) if !p.collection => Ok(p.size),
                    // missing, or a collection (only the prefix of other keys)
                    _ => Err(DavError::new(FailureKind::NotFound, format!("no such object at {url}"))),
                }
            })
            .await?
            .unwrap_or(u64::MAX);
        let (start, end) = match range {
            Some(r) => (r.start, r.end.min(size)),
            None => (0, size),
        };
        if start >= end {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let whole = start == 0 && end == size;
        let response = inner
            .run("get", key, move |_| async move {
                let mut rb = inner.streaming(Method::GET, url);
                if !whole {
                    rb = rb.header(RANGE, format!("bytes={start}-{}", end - 1));
                }
                let r = rb.send().await.map_err(|e| inner.request_error("GET", url, &e))?;
                match r.status() {
                    StatusCode::PARTIAL_CONTENT if !whole => Ok((r, false)),
                    // the server ignored the range: cut it out of the whole body
                    StatusCode::OK => Ok((r, !whole)),
                    _ => Err(inner.status_error("GET", url, r).await),
                }
            })
            .await?;
        let context = format!("target `{}`: get `{key}`", inner.name);
        let body = response.0.bytes_stream().map_err(move |e| {
            io::Error::other(crate::redact::scrub(&format!("{context}: reading the body failed: {}", chain(&e))))
        });
        if !response.1 {
            return Ok(Box::pin(body));
        }
        Ok(Box::pin(slice_stream(body, start, end - start)))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let Some(start) = super::walk_start(prefix) else { return Ok(Vec::new()) };
        let inner = &self.inner;
        let found = inner
            .run("list", prefix, move |_| async move { inner.walk(start, prefix, |n| !n.contains(PARTIAL)).await })
            .await?;
        Ok(found.into_iter().map(|(key, e)| ObjectMeta { key, size: e.size.unwrap_or(0) }).collect())
    }

    /// See [`super::Target::temporaries`].
    pub async fn temporaries(&self, prefix: &str) -> Result<Vec<super::Temporary>> {
        let Some(start) = super::walk_start(prefix) else { return Ok(Vec::new()) };
        let inner = &self.inner;
        let found = inner
            .run("list temporaries", prefix, move |_| async move {
                inner.walk(start, prefix, super::is_temporary_name).await
            })
            .await?;
        Ok(found
            .into_iter()
            .map(|(key, e)| super::Temporary {
                key,
                size: e.size.unwrap_or(0),
                modified: e.modified.as_deref().and_then(http_date),
            })
            .collect())
    }

    pub async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let inner = &self.inner;
        let url = &inner.url_of(key);
        inner
            .run("stat", key, move |_| async move {
                Ok(match inner.props(url).await? {
                    Some(p) if !p.collection => Some(ObjectMeta { key: key.to_string(), size: p.size.unwrap_or(0) }),
                    _ => None,
                })
            })
            .await
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let inner = &self.inner;
        let url = &inner.url_of(key);
        inner
            .run("delete", key, move |_| async move {
                match inner.props(url).await? {
                    // missing, or a collection: DELETE would remove everything below it
                    None | Some(DavEntry { collection: true, .. }) => Ok(()),
                    Some(_) => inner.delete_url(url).await,
                }
            })
            .await
    }
}

impl Inner {
    /// The URL of a key (or of a collection, given with a trailing `/`).
    fn url_of(&self, rel: &str) -> String {
        let mut out = self.base.clone();
        let mut first = true;
        for seg in rel.split('/') {
            if !first {
                out.push('/');
            }
            first = false;
            out.push_str(&encode_segment(seg));
        }
        out
    }

    /// The URL of the collection `rel` (relative to the base; empty for the base).
    fn collection_url(&self, rel: &str) -> String {
        if rel.is_empty() { self.base.clone() } else { format!("{}/", self.url_of(rel)) }
    }

    fn display(&self) -> String {
        crate::redact::url_for_display(&self.base)
    }

    /// A request without a streamed body: it must be done within the `request` deadline.
    fn request(&self, m: Method, url: &str) -> reqwest::RequestBuilder {
        self.streaming(m, url).timeout(self.deadlines.request)
    }

    /// A request whose body streams (a GET's answer, an artifact's PUT): no overall deadline,
    /// only the `idle` one (reqwest's read timeout; the fan-out drops an upload that accepts
    /// nothing for `idle`).
    fn streaming(&self, m: Method, url: &str) -> reqwest::RequestBuilder {
        self.client.request(m, url).basic_auth(&self.user, Some(self.password.expose()))
    }

    fn err(&self, op: &'static str, key: &str, e: DavError) -> Error {
        target_error(&self.name, op, key, e.kind, format!("{e} (below {})", self.display()))
    }

    async fn run<T, F, Fut>(&self, what: &'static str, key: &str, op: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, DavError>>,
    {
        retry::retry_in(&self.name, what, key, op).await.map_err(|e| self.err(what, key, e))
    }

    fn request_error(&self, m: &str, url: &str, e: &reqwest::Error) -> DavError {
        let detail = chain(e);
        let low = detail.to_ascii_lowercase();
        let url = crate::redact::url_for_display(url);
        if low.contains("certificate") || low.contains("unknownissuer") || low.contains("invalid peer") {
            return DavError::new(
                FailureKind::Permanent,
                format!(
                    "{m} {url}: the server's TLS certificate was not accepted ({detail}): check `url` (a Storage Box \
                     has a certificate for u123456.your-storagebox.de)"
                ),
            );
        }
        let kind = if e.is_builder() { FailureKind::Permanent } else { FailureKind::Transient };
        DavError::new(kind, format!("{m} {url}: no answer: {detail}"))
    }

    /// An error for a non-success answer, with a short excerpt of its body.
    async fn status_error(&self, m: &str, url: &str, r: reqwest::Response) -> DavError {
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        let excerpt: String = body.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect();
        let url = crate::redact::url_for_display(url);
        let kind = status_kind(status);
        let advice = match status.as_u16() {
            401 => format!(": the server refused user `{}` with this password: check `user` and `password` / `password_file`", self.user),
            403 => ": forbidden: check that the account may write there (Storage Box: enable WebDAV for the account or sub-account)".into(),
            507 => ": the server is out of space (or over quota)".into(),
            _ if excerpt.is_empty() => String::new(),
            _ => format!(": {excerpt}"),
        };
        DavError::new(kind, crate::redact::scrub(&format!("{m} {url}: {status}{advice}")))
    }

    /// PROPFIND; `None` when the resource does not exist.
    async fn propfind(&self, url: &str, depth: &'static str) -> Result<Option<Vec<DavEntry>>, DavError> {
        let r = self
            .request(method("PROPFIND"), url)
            .header("Depth", depth)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"))
            .body(PROPFIND_BODY)
            .send()
            .await
            .map_err(|e| self.request_error("PROPFIND", url, &e))?;
        match r.status().as_u16() {
            207 => {
                let text = r.text().await.map_err(|e| self.request_error("PROPFIND", url, &e))?;
                Ok(Some(parse_multistatus(&text)))
            }
            // 409: a "directory" above it is an object
            404 | 409 | 410 => Ok(None),
            _ => Err(self.status_error("PROPFIND", url, r).await),
        }
    }

    /// The properties of one resource, `None` when it does not exist.
    async fn props(&self, url: &str) -> Result<Option<DavEntry>, DavError> {
        Ok(self.propfind(url, "0").await?.and_then(|v| v.into_iter().next()))
    }

    /// Make the collection `dir` (relative to the base, and the root's collections) exist.
    async fn ensure_collection(&self, dir: &str) -> Result<(), DavError> {
        let top = &self.collection_url(dir);
        match retry::retry_in(&self.name, "PROPFIND", dir, |_| self.props(top)).await? {
            Some(p) if p.collection => return Ok(()),
            Some(_) => {
                return Err(DavError::new(
                    FailureKind::Permanent,
                    format!("{} is an object, not a collection", self.collection_url(dir)),
                ));
            }
            None => {}
        }
        let mut url = self.url.clone();
        let dir_segments = dir.split('/').filter(|s| !s.is_empty()).map(encode_segment);
        for seg in self.root_segments.iter().cloned().chain(dir_segments) {
            url.push_str(&seg);
            url.push('/');
            let url = &url;
            retry::retry_in(&self.name, "MKCOL", dir, |_| async move {
                let r = self
                    .request(method("MKCOL"), url)
                    .send()
                    .await
                    .map_err(|e| self.request_error("MKCOL", url, &e))?;
                match r.status().as_u16() {
                    // 405: it exists already
                    200..=299 | 405 => Ok(()),
                    _ => Err(self.status_error("MKCOL", url, r).await),
                }
            })
            .await?;
        }
        Ok(())
    }

    async fn move_to(&self, from: &str, to: &str) -> Result<(), DavError> {
        let r = self
            .request(method("MOVE"), from)
            .header("Destination", to)
            .header("Overwrite", "T")
            .send()
            .await
            .map_err(|e| self.request_error("MOVE", from, &e))?;
        if r.status().is_success() { Ok(()) } else { Err(self.status_error("MOVE", from, r).await) }
    }

    /// DELETE one resource; a missing one is fine.
    async fn delete_url(&self, url: &str) -> Result<(), DavError> {
        let r = self.request(Method::DELETE, url).send().await.map_err(|e| self.request_error("DELETE", url, &e))?;
        match r.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(self.status_error("DELETE", url, r).await),
        }
    }

    /// Delete the temporary resource of an upload that did not commit, and make sure it is gone
    /// (a server may still be finishing the aborted PUT when the first DELETE arrives).
    async fn remove_tmp(&self, url: &str) {
        let mut last = None;
        for attempt in 0..retry::ATTEMPTS + 2 {
            if attempt > 0 {
                tokio::time::sleep(retry::backoff(attempt)).await;
            }
            match self.delete_url(url).await {
                Ok(()) => match self.props(url).await {
                    Ok(None) => return,
                    Ok(Some(_)) => last = Some("still there after DELETE".to_string()),
                    Err(e) => last = Some(e.to_string()),
                },
                Err(e) if e.kind == FailureKind::Permanent => {
                    last = Some(e.to_string());
                    break;
                }
                Err(e) => last = Some(e.to_string()),
            }
        }
        tracing::warn!(target = %self.name, url = %crate::redact::url_for_display(url), error = last.as_deref(),
            "could not delete the temporary file of a failed upload (it is never listed or restored); delete it by hand");
    }

    /// The key of an href from a PROPFIND answer (relative to the base, no trailing `/`).
    fn key_of(&self, href: &str) -> Option<String> {
        let path = if href.starts_with("http://") || href.starts_with("https://") {
            url::Url::parse(href).ok()?.path().to_string()
        } else {
            href.to_string()
        };
        let path = percent_decode(&path);
        match path.strip_prefix(self.base_path.as_str()) {
            Some(rel) => Some(rel.trim_end_matches('/').to_string()),
            // the base itself, without its trailing `/`
            None if format!("{path}/") == self.base_path => Some(String::new()),
            None => None,
        }
    }

    /// Every object below collection `start` whose key starts with `prefix`.
    async fn walk(
        &self,
        start: &str,
        prefix: &str,
        want: fn(&str) -> bool,
    ) -> Result<Vec<(String, DavEntry)>, DavError> {
        let mut out = Vec::new();
        let mut queue = vec![start.to_string()];
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < LIST_PARALLEL
                && let Some(rel) = queue.pop()
            {
                running.push(async move {
                    let entries = self.propfind(&self.collection_url(&rel), "1").await;
                    (rel, entries)
                });
            }
            let Some((rel, entries)) = running.next().await else { break };
            for e in entries?.unwrap_or_default() {
                let Some(child) = self.key_of(&e.href) else { continue };
                let Some(name) = child.strip_prefix(&if rel.is_empty() { String::new() } else { format!("{rel}/") })
                else {
                    continue;
                };
                // the collection itself, or something that is not a direct child
                if child == rel || name.is_empty() || name.contains('/') {
                    continue;
                }
                if e.collection {
                    let as_dir = format!("{child}/");
                    if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                        queue.push(child);
                    }
                } else if want(name) && child.starts_with(prefix) {
                    out.push((child, e));
                }
            }
        }
        Ok(out)
    }
}

fn status_kind(s: StatusCode) -> FailureKind {
    match s.as_u16() {
        404 | 410 => FailureKind::NotFound,
        408 | 423 | 425 | 429 => FailureKind::Transient,
        507 => FailureKind::Permanent,
        500..=599 => FailureKind::Transient,
        _ => FailureKind::Permanent,
    }
}

/// An HTTP date (`getlastmodified`, RFC 9110 IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(value: &str) -> Option<jiff::Timestamp> {
    let dt = jiff::civil::DateTime::strptime("%a, %d %b %Y %H:%M:%S GMT", value.trim()).ok()?;
    dt.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// `s` and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

/// Percent-encode one path segment (everything but RFC 3986 unreserved characters).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Bytes `skip..skip+take` of a stream.
fn slice_stream(
    body: impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static,
    skip: u64,
    take: u64,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static {
    body.scan((skip, take), |(skip, take), item| {
        let out = match item {
            Err(e) => Some(Err(e)),
            Ok(_) if *take == 0 => None,
            Ok(mut b) => {
                let drop_n = (*skip).min(b.len() as u64) as usize;
                *skip -= drop_n as u64;
                let mut b = b.split_off(drop_n);
                let keep = (*take).min(b.len() as u64) as usize;
                b.truncate(keep);
                *take -= keep as u64;
                Some(Ok(b))
            }
        };
        futures::future::ready(out)
    })
    .try_filter(|b| futures::future::ready(!b.is_empty()))
}

/// Parse a 207 Multi-Status body: one entry per `<response>` (namespace prefixes ignored).
fn parse_multistatus(xml: &str) -> Vec<DavEntry> {
    let mut out = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut cur: Option<DavEntry> = None;
    let mut text = String::new();
    let mut rest = xml;
    while let Some(lt) = rest.find('<') {
        text.push_str(&rest[..lt]);
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<!--") {
            rest = r.find("-->").map_or("", |i| &r[i + 3..]);
            continue;
        }
        if let Some(r) = rest.strip_prefix("<![CDATA[") {
            let end = r.find("]]>").unwrap_or(r.len());
            // CDATA is literal: escape it so that entity decoding leaves it alone
            text.push_str(&r[..end].replace('&', "&amp;"));
            rest = r.get(end + 3..).unwrap_or("");
            continue;
        }
        let Some(gt) = rest.find('>') else { break };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        let local = |t: &str| -> String {
            let name = t.split(|c: char| c.is_whitespace() || c == '/').next().unwrap_or("");
            name.rsplit(':').next().unwrap_or(name).to_ascii_lowercase()
        };
        if let Some(end) = tag.strip_prefix('/') {
            let name = local(end);
            let value = decode_entities(text.trim());
            match name.as_str() {
                "href" if stack.iter().rev().nth(1).is_some_and(|p| p == "response") => {
                    if let Some(c) = cur.as_mut() {
                        c.href = value;
                    }
                }
                "getlastmodified" => {
                    if let Some(c) = cur.as_mut() {
                        c.modified = Some(value);
                    }
                }
                "getcontentlength" => {
                    if let (Some(c), Ok(n)) = (cur.as_mut(), value.parse::<u64>()) {
                        c.size = Some(n);
                    }
                }
                "response" => out.extend(cur.take()),
                _ => {}
            }
            if let Some(i) = stack.iter().rposition(|s| *s == name) {
                stack.truncate(i);
            }
            text.clear();
            continue;
        }
        let self_closing = tag.ends_with('/');
        let name = local(tag);
        text.clear();
        match name.as_str() {
            "response" => cur = Some(DavEntry::default()),
            "collection" if stack.last().is_some_and(|p| p == "resourcetype") => {
                if let Some(c) = cur.as_mut() {
                    c.collection = true;
                }
            }
            _ => {}
        }
        if !self_closing {
            stack.push(name);
        }
    }
    out
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(semi) = rest.find(';') else { break };
        let ent = &rest[1..semi];
        let ch = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => ent
                .strip_prefix("#x")
                .or_else(|| ent.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistatus_with_any_prefix() {
        let apache = r#"<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="DAV:" xmlns:ns0="DAV:">
<D:response xmlns:lp1="DAV:"><D:href>/drctl/pg/</D:href><D:propstat><D:prop>
<lp1:resourcetype><D:collection/></lp1:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
<D:propstat><D:prop><D:getcontentlength/></D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat></D:response>
<D:response><D:href>https://u1.example.de/drctl/pg/a%20b&amp;c.bin</D:href><D:propstat><D:prop>
<lp1:resourcetype/><lp1:getcontentlength>1234</lp1:getcontentlength>
<lp1:getlastmodified>Sat, 05 Dec 2026 00:10:02 GMT</lp1:getlastmodified></D:prop></D:propstat></D:response>
</D:multistatus>"#;
        let v = parse_multistatus(apache);
        assert_eq!(
            v,
            vec![
                DavEntry { href: "/drctl/pg/".into(), collection: true, size: None, modified: None },
                DavEntry {
                    href: "https://u1.example.de/drctl/pg/a%20b&c.bin".into(),
                    collection: false,
                    size: Some(1234),
                    modified: Some("Sat, 05 Dec 2026 00:10:02 GMT".into()),
                },
            ]
        );
        let plain = r#"<multistatus xmlns="DAV:"><response><href>/x</href><propstat><prop><resourcetype><collection /></resourcetype></prop></propstat></response></multistatus>"#;
        assert_eq!(
            parse_multistatus(plain),
            vec![DavEntry { href: "/x".into(), collection: true, size: None, modified: None }]
        );
    }

    #[test]
    fn keys_from_hrefs() {
        let c = WebdavTarget {
            url: "https://user:pw@u1.example.de/sub dir".into(),
            user: "u1".into(),
            password: Some(Secret::new("pw-1234")),
            password_file: None,
            root: Some("drctl/".into()),
        };
        let s = WebdavStore::new("dav", &c, Deadlines::default()).unwrap();
        assert_eq!(s.inner.base, "https://u1.example.de/sub%20dir/drctl/");
        assert_eq!(s.inner.url_of("pg/a b.bin"), "https://u1.example.de/sub%20dir/drctl/pg/a%20b.bin");
        assert_eq!(s.inner.key_of("/sub%20dir/drctl/pg/a%20b.bin").as_deref(), Some("pg/a b.bin"));
        assert_eq!(s.inner.key_of("https://u1.example.de/sub%20dir/drctl/pg/").as_deref(), Some("pg"));
        assert_eq!(s.inner.key_of("/sub%20dir/drctl/").as_deref(), Some(""));
        assert_eq!(s.inner.key_of("/sub%20dir/drctl").as_deref(), Some(""));
        assert_eq!(s.inner.key_of("/elsewhere/x"), None);
    }

    #[test]
    fn entities_and_statuses() {
        assert_eq!(decode_entities("a&amp;b&#x41;&#66;&bogus;"), "a&bAB&bogus;");
        assert_eq!(
            http_date("Sat, 05 Dec 2026 00:10:02 GMT").map(|t| t.to_string()).as_deref(),
            Some("2026-12-05T00:10:02Z")
        );
        assert_eq!(http_date("yesterday"), None);
        assert_eq!(status_kind(StatusCode::UNAUTHORIZED), FailureKind::Permanent);
        assert_eq!(status_kind(StatusCode::NOT_FOUND), FailureKind::NotFound);
        assert_eq!(status_kind(StatusCode::SERVICE_UNAVAILABLE), FailureKind::Transient);
        assert_eq!(status_kind(StatusCode::INSUFFICIENT_STORAGE), FailureKind::Permanent);
    }

    #[tokio::test]
    async fn slicing_a_stream() {
        let chunks =
            vec![Ok(Bytes::from_static(b"0123")), Ok(Bytes::from_static(b"4567")), Ok(Bytes::from_static(b"89"))];
        let got: Vec<Bytes> = slice_stream(futures::stream::iter(chunks), 3, 5).try_collect().await.unwrap();
        assert_eq!(got.concat(), b"34567");
    }
}
