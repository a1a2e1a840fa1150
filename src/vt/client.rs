//! The HTTP client: one method per v3 endpoint a triage tool uses, each gated by the quota and
//! retried only where a retry cannot do harm.
//!
//! Every API call awaits [`Gate::acquire`] first, once per attempt (a retry is another request
//! that counts). POSTs to a single-use upload URL and downloads from a signed storage URL are
//! not API calls and are not gated. The API key is attached only to requests for the API's own
//! origin, and redirects never carry it elsewhere.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{ACCEPT, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use url::{Origin, Url};

use super::model::parse_data_string;
use super::{Analysis, AnalysisRef, Collection, Error, Object, Page, url_id};
use crate::config::ApiKey;
use crate::indicator::FileHash;
use crate::quota::{Gate, Grant};

/// VirusTotal accepts at most 32 MB in one `POST /files` payload. Files up to this size go
/// there directly; larger ones through an upload URL. The margin below 32 MB leaves room for
/// the multipart framing, as vt-go does.
pub const DIRECT_UPLOAD_LIMIT: u64 = 30 * 1024 * 1024;

/// The largest API reply read (a file object with its full engine results is well under a
/// megabyte; relationship pages a few): anything larger is refused unread.
pub const MAX_REPLY_BYTES: usize = 32 * 1024 * 1024;

/// The largest file VirusTotal accepts through an upload URL (650 MB).
pub const MAX_UPLOAD_SIZE: u64 = 650 * 1024 * 1024;

/// Uploads get the request timeout plus one second per this many bytes, so that a large file
/// on a slow link is not cut off while a stalled small request still is.
const UPLOAD_BYTES_PER_SEC: u64 = 256 * 1024;

/// How failed requests are retried: exponential backoff with jitter between `min_delay` and
/// `max_delay`, at most `max_retries` times after the first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: never retry).
    pub max_retries: u32,
    /// The first delay.
    pub min_delay: Duration,
    /// The longest delay (before jitter).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay.max(self.min_delay))
            .with_max_times(self.max_retries as usize)
            .with_jitter()
    }
}

/// Whether repeating a request can do harm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// A read: repeating it changes nothing.
    Idempotent,
    /// Creates something (an upload, a submission, a comment, a vote): repeating a request
    /// that reached the server could create it twice.
    Creates,
}

/// A failed attempt, with what the retry decision needs beyond the error.
#[derive(Debug)]
pub(crate) struct Failure {
    error: Error,
    /// The connection was never established, so the server cannot have acted on it.
    nothing_sent: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            error,
            nothing_sent: false,
        }
    }
}

/// The retry decision, in one place. Reads are retried on transient errors; requests that
/// create something only when the server certainly did not act (a 429, or a connection that
/// never opened), since a second upload is exactly what must never happen. Quota errors are
/// retried after the gate was paused; authentication and every other error never are.
pub(crate) fn should_retry(effect: Effect, failure: &Failure) -> bool {
    match failure.error {
        Error::Quota { .. } => true,
        Error::Transient { .. } => effect == Effect::Idempotent || failure.nothing_sent,
        _ => false,
    }
}

/// What a submission (an upload, a URL) does once its request may go, its quota granted, and
/// before anything is sent: record the intent to submit. A crash from then on is taken for an
/// interrupted submission (the object may have reached VirusTotal); a stop while the request
/// still waited for quota leaves no such mark. `false` calls the submission off unsent
/// ([`Error::CalledOff`]).
pub type BeforeSending<'a> =
    &'a (dyn Fn() -> futures_util::future::BoxFuture<'a, bool> + Send + Sync);

/// A file to upload, open: what is sent is what was opened (and hashed), whatever happens to
/// its path meanwhile (replaced by a symlink to a secret, or by other content).
#[derive(Debug)]
pub struct UploadFile {
    /// Where it was opened, for its name on VirusTotal and for messages.
    pub path: PathBuf,
    file: std::fs::File,
    /// The bytes sent: those hashed, or its size when opened.
    pub size: u64,
    /// The SHA-256 the bytes sent must have: if the file is written to while it is sent, the
    /// upload is cut off before its end, so VirusTotal never receives other content under the
    /// job's hash ([`Error::Changed`]).
    pub sha256: Option<String>,
    /// Its modification time when hashed: a file written since is not sent at all.
    modified: Option<std::time::SystemTime>,
}

impl UploadFile {
    /// `file`, opened at `path` and hashed: `size` bytes of SHA-256 `sha256`.
    pub fn hashed(path: &Path, file: std::fs::File, sha256: String, size: u64) -> Self {
        let modified = file.metadata().and_then(|m| m.modified()).ok();
        UploadFile {
            path: path.to_owned(),
            file,
            size,
            sha256: Some(sha256),
            modified,
        }
    }

    /// Opens the file at `path`, to send whatever it holds.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
        let meta = file.metadata().map_err(|e| io_error(path, e))?;
        Ok(UploadFile {
            path: path.to_owned(),
            file,
            size: meta.len(),
            sha256: None,
            modified: meta.modified().ok(),
        })
    }

    /// Whether the file still looks as it did when hashed (its length and modification time):
    /// one written to during the quota wait is not sent at all. (Only a hashed file is checked.)
    fn unchanged(&self) -> bool {
        self.sha256.is_none()
            || self
                .file
                .metadata()
                .is_ok_and(|m| m.len() == self.size && m.modified().ok() == self.modified)
    }

    /// The file, read from its start.
    fn rewound(&self) -> std::io::Result<tokio::fs::File> {
        use std::io::Seek;
        let mut file = self.file.try_clone()?;
        file.rewind()?;
        Ok(tokio::fs::File::from_std(file))
    }
}

/// `chunks`, hashed as they go: when they end with another SHA-256 than `sha256`, a last error
/// instead of their end cuts the request off (and `changed` says why).
fn checked_against(
    sha256: String,
    changed: Arc<AtomicBool>,
    chunks: impl Stream<Item = std::io::Result<Bytes>> + Unpin,
) -> impl Stream<Item = std::io::Result<Bytes>> {
    futures_util::stream::unfold(Some((chunks, Sha256::new())), move |state| {
        let (sha256, changed) = (sha256.clone(), changed.clone());
        async move {
            let (mut chunks, mut hasher) = state?;
            match chunks.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    Some((Ok(chunk), Some((chunks, hasher))))
                }
                Some(Err(e)) => Some((Err(e), None)),
                None if crate::hashing::hex(&hasher.finalize()) == sha256 => None,
                None => {
                    changed.store(true, Ordering::Relaxed);
                    let cut = std::io::Error::other("the file changed while it was sent");
                    Some((Err(cut), None))
                }
            }
        }
    })
}

/// The URL [`Client::get_upload_url`] gave.
fn parse_upload_url(upload_url: &str) -> Result<Url, Error> {
    Url::parse(upload_url).map_err(|e| Error::Invalid(format!("the upload URL is not a URL: {e}")))
}

/// A VirusTotal v3 API client. Cheap to clone: clones share the connection pool and the gate.
#[derive(Clone)]
pub struct Client {
    /// Connection pool; no global timeout, so that downloads may take as long as they stream.
    http: reqwest::Client,
    /// The API base, e.g. `https://www.virustotal.com/api/v3`.
    base: Url,
    /// The key, kept wrapped so that it never reaches a log or an error by `Debug`.
    key: ApiKey,
    /// The `x-apikey` header value, built once and marked sensitive.
    key_header: HeaderValue,
    /// Admission control: every API request passes it.
    gate: Arc<dyn Gate>,
    /// How failed requests are retried.
    retry: RetryPolicy,
    /// Timeout of one API request.
    timeout: Duration,
    /// Files up to this size are uploaded with `POST /files`, larger ones via an upload URL.
    direct_upload_limit: u64,
    /// When set, at most this many API calls are under way at once, however many workers ask.
    in_flight: Option<Arc<tokio::sync::Semaphore>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("key", &self.key)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("direct_upload_limit", &self.direct_upload_limit)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the API at `base_url` (e.g. `https://www.virustotal.com/api/v3`, or the
    /// simulator's address), with `timeout` per API request.
    pub fn new(
        base_url: &str,
        key: ApiKey,
        gate: Arc<dyn Gate>,
        timeout: Duration,
    ) -> Result<Client, Error> {
        let mut base = Url::parse(base_url).map_err(|e| {
            Error::Invalid(format!("the API base URL {base_url:?} is not a URL: {e}"))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::Invalid(format!(
                "the API base URL {base_url:?} is not an http(s) URL"
            )));
        }
        base.set_query(None);
        base.set_fragment(None);
        let mut key_header = HeaderValue::from_str(key.expose()).map_err(|_| {
            Error::Invalid("the API key contains characters no HTTP header may carry".into())
        })?;
        key_header.set_sensitive(true);

        let api_origin = base.origin();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            // reqwest strips `Authorization` on a cross-host redirect but not `x-apikey`.
            let keyed = attempt
                .previous()
                .first()
                .is_some_and(|u| u.origin() == api_origin);
            if attempt.previous().len() >= 10 {
                attempt.error("too many redirects")
            } else if keyed && attempt.url().origin() != api_origin {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .user_agent(concat!("vtriage/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout)
            .redirect(redirects)
            .build()
            .map_err(|e| Error::Invalid(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        Ok(Client {
            http,
            base,
            key,
            key_header,
            gate,
            retry: RetryPolicy::default(),
            timeout,
            direct_upload_limit: DIRECT_UPLOAD_LIMIT,
            in_flight: None,
        })
    }

    /// Makes at most `n` API calls at once (0: no limit of its own). Each call takes its turn
    /// before it asks the quota gate: a grant is recorded when the request leaves.
    pub fn with_requests_in_flight(mut self, n: usize) -> Client {
        self.in_flight = (n > 0).then(|| Arc::new(tokio::sync::Semaphore::new(n)));
        self
    }

    /// Waits for a turn to call the API (see [`Client::with_requests_in_flight`]).
    async fn turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        match &self.in_flight {
            // The semaphore is never closed.
            Some(s) => s.acquire().await.ok(),
            None => None,
        }
    }

    /// Saves the requests the quota gate counted and has not recorded yet: call it once no more
    /// requests will be made (an unlimited key counts in the background, see
    /// [`crate::quota::Unlimited`]).
    pub async fn save_quota_counts(&self) {
        self.gate.save_counts().await;
    }

    /// Uses another retry policy.
    pub fn with_retry(mut self, p: RetryPolicy) -> Client {
        self.retry = p;
        self
    }

    /// Uploads files larger than `bytes` through an upload URL (default
    /// [`DIRECT_UPLOAD_LIMIT`]; tests lower it to avoid writing 30 MB).
    pub fn with_direct_upload_limit(mut self, bytes: u64) -> Client {
        self.direct_upload_limit = bytes;
        self
    }

    /// `GET /{collection}/{id}`.
    pub async fn get_object(&self, c: Collection, id: &str) -> Result<Object, Error> {
        let url = self.endpoint(&[c.as_str(), id])?;
        self.api(Method::GET, url, Effect::Idempotent, |r| r, Object::parse)
            .await
    }

    /// `GET /files/{hash}` for an MD5, SHA-1 or SHA-256; the reply's id is the SHA-256.
    pub async fn get_file(&self, hash: &str) -> Result<Object, Error> {
        let hash = FileHash::parse(hash.trim())
            .ok_or_else(|| Error::Invalid(format!("not an MD5, SHA-1 or SHA-256: {hash:?}")))?;
        self.get_object(Collection::Files, hash.as_str()).await
    }

    /// `GET /urls/{id}` with the id computed from the URL as given ([`url_id`]).
    pub async fn get_url(&self, url: &str) -> Result<Object, Error> {
        self.get_object(Collection::Urls, &url_id(url)).await
    }

    /// `GET /domains/{domain}`.
    pub async fn get_domain(&self, d: &str) -> Result<Object, Error> {
        self.get_object(Collection::Domains, d).await
    }

    /// `GET /ip_addresses/{ip}`.
    pub async fn get_ip(&self, ip: &str) -> Result<Object, Error> {
        self.get_object(Collection::IpAddresses, ip).await
    }

    /// Uploads a file from disk, streaming it. Files up to the direct limit go to
    /// `POST /files`; larger ones to a fresh upload URL. Files larger than `max_size` are
    /// refused locally with [`Error::TooLarge`]. Never repeated once the server may have
    /// received it.
    pub async fn upload_file(&self, path: &Path, max_size: u64) -> Result<AnalysisRef, Error> {
        self.upload_file_with(&UploadFile::open(path)?, max_size, None)
            .await
    }

    /// [`Client::upload_file`] of a file already open, calling `before_sending` right before
    /// the upload is sent.
    pub async fn upload_file_with(
        &self,
        file: &UploadFile,
        max_size: u64,
        before_sending: Option<BeforeSending<'_>>,
    ) -> Result<AnalysisRef, Error> {
        let size = file.size;
        if size > max_size {
            return Err(Error::TooLarge {
                size: Some(size),
                limit: Some(max_size),
            });
        }
        if size <= self.direct_upload_limit {
            let url = self.endpoint(&["files"])?;
            self.upload(url, true, file, before_sending).await
        } else {
            let url = parse_upload_url(&self.get_upload_url().await?)?;
            self.upload(url, false, file, before_sending).await
        }
    }

    /// `GET /files/upload_url`: a single-use absolute URL for files over 32 MB.
    pub async fn get_upload_url(&self) -> Result<String, Error> {
        let url = self.endpoint(&["files", "upload_url"])?;
        self.api(
            Method::GET,
            url,
            Effect::Idempotent,
            |r| r,
            parse_data_string,
        )
        .await
    }

    /// Uploads a file to an upload URL from [`Client::get_upload_url`]. Not gated: VirusTotal
    /// does not count it as an API request.
    pub async fn upload_file_to(
        &self,
        upload_url: &str,
        path: &Path,
    ) -> Result<AnalysisRef, Error> {
        let file = UploadFile::open(path)?;
        self.upload(parse_upload_url(upload_url)?, false, &file, None)
            .await
    }

    /// `POST /{collection}/{id}/analyse`: asks for a fresh analysis of a known item.
    pub async fn analyse(&self, c: Collection, id: &str) -> Result<AnalysisRef, Error> {
        let url = self.endpoint(&[c.as_str(), id, "analyse"])?;
        self.api(
            Method::POST,
            url,
            Effect::Creates,
            |r| r,
            AnalysisRef::parse,
        )
        .await
    }

    /// `POST /urls` with the form field `url`: submits a URL for analysis.
    pub async fn submit_url(&self, url: &str) -> Result<AnalysisRef, Error> {
        self.submit_url_with(url, None).await
    }

    /// [`Client::submit_url`], calling `before_sending` right before the URL is sent.
    pub async fn submit_url_with(
        &self,
        url: &str,
        before_sending: Option<BeforeSending<'_>>,
    ) -> Result<AnalysisRef, Error> {
        let endpoint = self.endpoint(&["urls"])?;
        self.api_with(
            Method::POST,
            endpoint,
            Effect::Creates,
            |r| r.form(&[("url", url)]),
            AnalysisRef::parse,
            before_sending,
        )
        .await
    }

    /// `GET /analyses/{id}` (the opaque id is escaped in the path). Each poll costs quota.
    pub async fn get_analysis(&self, id: &str) -> Result<Analysis, Error> {
        let url = self.endpoint(&["analyses", id])?;
        self.api(Method::GET, url, Effect::Idempotent, |r| r, Analysis::parse)
            .await
    }

    /// `GET /{collection}/{id}/comments`, one page.
    pub async fn get_comments(
        &self,
        c: Collection,
        id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page, Error> {
        self.get_relationship(c, id, "comments", limit, cursor)
            .await
    }

    /// `POST /{collection}/{id}/comments`: the created comment as VirusTotal returns it.
    pub async fn add_comment(
        &self,
        c: Collection,
        id: &str,
        text: &str,
    ) -> Result<serde_json::Value, Error> {
        let body = serde_json::json!({"data": {"type": "comment", "attributes": {"text": text}}});
        let url = self.endpoint(&[c.as_str(), id, "comments"])?;
        self.api(
            Method::POST,
            url,
            Effect::Creates,
            |r| r.json(&body),
            parse_value,
        )
        .await
    }

    /// `GET /{collection}/{id}/votes`, one page.
    pub async fn get_votes(
        &self,
        c: Collection,
        id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page, Error> {
        self.get_relationship(c, id, "votes", limit, cursor).await
    }

    /// `POST /{collection}/{id}/votes` with `verdict` `harmless` or `malicious` (checked here,
    /// before any quota is spent). A second vote is [`Error::AlreadyExists`].
    pub async fn add_vote(
        &self,
        c: Collection,
        id: &str,
        verdict: &str,
    ) -> Result<serde_json::Value, Error> {
        if !matches!(verdict, "harmless" | "malicious") {
            return Err(Error::Invalid(format!(
                "a vote is harmless or malicious, not {verdict:?}"
            )));
        }
        let body =
            serde_json::json!({"data": {"type": "vote", "attributes": {"verdict": verdict}}});
        let url = self.endpoint(&[c.as_str(), id, "votes"])?;
        self.api(
            Method::POST,
            url,
            Effect::Creates,
            |r| r.json(&body),
            parse_value,
        )
        .await
    }

    /// `GET /{collection}/{id}/{relationship}`, one page of `limit` items from `cursor`.
    pub async fn get_relationship(
        &self,
        c: Collection,
        id: &str,
        rel: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page, Error> {
        let mut url = self.endpoint(&[c.as_str(), id, rel])?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &limit.to_string());
            if let Some(cursor) = cursor.filter(|c| !c.is_empty()) {
                query.append_pair("cursor", cursor);
            }
        }
        self.api(Method::GET, url, Effect::Idempotent, |r| r, Page::parse)
            .await
    }

    /// `GET /urls/{id}/network_location`: the domain or IP address object the URL points to.
    pub async fn get_url_network_location(&self, url_id: &str) -> Result<Object, Error> {
        let url = self.endpoint(&["urls", url_id, "network_location"])?;
        self.api(Method::GET, url, Effect::Idempotent, |r| r, Object::parse)
            .await
    }

    /// `GET /files/{hash}/download_url`: a signed, short-lived URL (premium keys only).
    pub async fn get_download_url(&self, hash: &str) -> Result<String, Error> {
        let url = self.endpoint(&["files", hash, "download_url"])?;
        self.api(
            Method::GET,
            url,
            Effect::Idempotent,
            |r| r,
            parse_data_string,
        )
        .await
    }

    /// Downloads a file to `dest`, streaming, and returns the bytes written. The data goes to
    /// `dest.part` first and is renamed into place when complete, so a failed download never
    /// leaves a truncated sample at `dest`.
    pub async fn download_file(&self, hash: &str, dest: &Path) -> Result<u64, Error> {
        let signed = self.get_download_url(hash).await?;
        let url = Url::parse(&signed)
            .map_err(|e| Error::Invalid(format!("the download URL is not a URL: {e}")))?;
        let part = {
            let mut name = dest.as_os_str().to_owned();
            name.push(".part");
            std::path::PathBuf::from(name)
        };
        let attempt = || self.download_once(url.clone(), &part);
        let written = self.retrying(Effect::Idempotent, attempt).await;
        match written {
            Ok(n) => {
                tokio::fs::rename(&part, dest)
                    .await
                    .map_err(|e| io_error(dest, e))?;
                Ok(n)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                Err(e)
            }
        }
    }

    /// One download attempt: not gated (the storage URL is not the API), each chunk bounded by
    /// the request timeout rather than the whole transfer.
    async fn download_once(&self, url: Url, part: &Path) -> Result<u64, Failure> {
        let label = format!("GET {}", url.host_str().unwrap_or("download URL"));
        let request = self.request(Method::GET, url);
        let mut response = request
            .send()
            .await
            .map_err(|e| self.transport_failure(&label, e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(self.status_failure(status, &body).into());
        }
        let mut file = tokio::fs::File::create(part)
            .await
            .map_err(|e| io_error(part, e))?;
        let mut written = 0u64;
        loop {
            let chunk = tokio::time::timeout(self.timeout, response.chunk())
                .await
                .map_err(|_| Error::Transient {
                    status: Some(status.as_u16()),
                    detail: format!("{label}: no data for {:?}", self.timeout),
                })?
                .map_err(|e| self.transport_failure(&label, e))?;
            let Some(chunk) = chunk else { break };
            file.write_all(&chunk)
                .await
                .map_err(|e| io_error(part, e))?;
            written += chunk.len() as u64;
        }
        file.flush().await.map_err(|e| io_error(part, e))?;
        file.sync_all().await.map_err(|e| io_error(part, e))?;
        Ok(written)
    }

    /// Uploads `upload` as the multipart part `file` to `url`; `gated` for `POST /files` (an
    /// API call), not for an upload URL.
    async fn upload(
        &self,
        url: Url,
        gated: bool,
        upload: &UploadFile,
        before_sending: Option<BeforeSending<'_>>,
    ) -> Result<AnalysisRef, Error> {
        let (path, size) = (upload.path.as_path(), upload.size);
        let file_name = upload_file_name(path);
        let label = format!("POST {}", url.path());
        let attempt = || {
            let (url, file_name, label) = (url.clone(), file_name.clone(), label.clone());
            async move {
                let _turn = self.turn().await;
                let grant = if gated {
                    Some(self.gate.acquire().await.map_err(Error::from)?)
                } else {
                    None
                };
                // Read afresh per attempt: a retried attempt (nothing was sent) needs a fresh
                // stream. `take` pins the length announced in the multipart framing, even if the
                // file grows while it streams.
                let file = upload.rewound().map_err(|e| io_error(path, e))?;
                let chunks =
                    tokio_util::io::ReaderStream::new(tokio::io::AsyncReadExt::take(file, size));
                let changed = Arc::new(AtomicBool::new(false));
                let body = match &upload.sha256 {
                    Some(sha256) => reqwest::Body::wrap_stream(checked_against(
                        sha256.clone(),
                        changed.clone(),
                        chunks,
                    )),
                    None => reqwest::Body::wrap_stream(chunks),
                };
                let part = reqwest::multipart::Part::stream_with_length(body, size)
                    .file_name(file_name)
                    .mime_str("application/octet-stream")
                    .map_err(|e| Error::Invalid(chain(&e)))?;
                let form = reqwest::multipart::Form::new().part("file", part);
                let timeout = self.timeout + Duration::from_secs(size / UPLOAD_BYTES_PER_SEC);
                let request = self
                    .request(Method::POST, url)
                    .multipart(form)
                    .timeout(timeout);
                let refused = if upload.unchanged() {
                    Self::call_off(before_sending).await
                } else {
                    Some(Failure {
                        error: Error::Changed(path.to_owned()),
                        nothing_sent: true,
                    })
                };
                if let Some(refused) = refused {
                    if let Some(grant) = grant {
                        self.gate.unsent(grant).await;
                    }
                    return Err(refused);
                }
                let reply = self.exchange(&label, request).await;
                if let Some(grant) = grant {
                    self.hand_back(grant, &reply).await;
                }
                if changed.load(Ordering::Relaxed) {
                    return Err(Failure {
                        error: Error::Changed(path.to_owned()),
                        nothing_sent: false,
                    });
                }
                AnalysisRef::parse(&reply?).map_err(|e| Failure::from(with_status(e, 200)))
            }
        };
        self.retrying(Effect::Creates, attempt).await
    }

    /// One API call with retries: gate, send, map the reply, parse a 2xx body.
    async fn api<T>(
        &self,
        method: Method,
        url: Url,
        effect: Effect,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
        parse: impl Fn(&[u8]) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.api_with(method, url, effect, build, parse, None).await
    }

    /// [`Client::api`], calling `before_sending` once the quota is granted.
    async fn api_with<T>(
        &self,
        method: Method,
        url: Url,
        effect: Effect,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
        parse: impl Fn(&[u8]) -> Result<T, Error>,
        before_sending: Option<BeforeSending<'_>>,
    ) -> Result<T, Error> {
        let label = format!("{method} {}", url.path());
        let (label, parse) = (&label, &parse);
        let attempt = || {
            let request = build(
                self.request(method.clone(), url.clone())
                    .timeout(self.timeout),
            );
            async move {
                let asked = Instant::now();
                let _turn = self.turn().await;
                let turned = Instant::now();
                let grant = self.gate.acquire().await.map_err(Error::from)?;
                let granted = Instant::now();
                if let Some(called_off) = Self::call_off(before_sending).await {
                    self.gate.unsent(grant).await;
                    return Err(called_off);
                }
                let reply = self.exchange(label, request).await;
                self.hand_back(grant, &reply).await;
                // Where a request's time went (`RUST_LOG=vtriage::vt=trace`; BENCHMARKS.md).
                tracing::trace!(
                    request = %label,
                    turn_us = (turned - asked).as_micros() as u64,
                    grant_us = (granted - turned).as_micros() as u64,
                    exchange_us = granted.elapsed().as_micros() as u64,
                    "request timings"
                );
                parse(&reply?).map_err(|e| Failure::from(with_status(e, 200)))
            }
        };
        self.retrying(effect, attempt).await
    }

    /// Runs `before_sending`, if any: the failure that calls the request off, if it does.
    async fn call_off(before_sending: Option<BeforeSending<'_>>) -> Option<Failure> {
        match before_sending {
            Some(intent) if !intent().await => Some(Failure {
                error: Error::CalledOff,
                nothing_sent: true,
            }),
            _ => None,
        }
    }

    /// Hands `grant` back to the gate once its request is over: answered, or never sent.
    async fn hand_back<T>(&self, grant: Grant, reply: &Result<T, Failure>) {
        match reply {
            Err(failure) if failure.nothing_sent => self.gate.unsent(grant).await,
            _ => self.gate.answered(grant).await,
        }
    }

    /// Runs `attempt` under the retry policy and [`should_retry`].
    async fn retrying<T, F, Fut>(&self, effect: Effect, attempt: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        attempt
            .retry(self.retry.backoff())
            .sleep(tokio::time::sleep)
            .when(|f| should_retry(effect, f))
            .notify(|f, delay| tracing::debug!(error = %f.error, ?delay, "VirusTotal request failed; retrying"))
            .await
            .map_err(|f| f.error)
    }

    /// Sends a request and returns the body of a 2xx reply; anything else becomes a failure.
    async fn exchange(&self, label: &str, request: RequestBuilder) -> Result<Bytes, Failure> {
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_failure(label, e))?;
        let status = response.status();
        if status.is_success() {
            self.read_capped(label, response).await
        } else {
            // The body only helps to classify: one that cannot be read (a 429 mislabelled as
            // gzip, a connection cut) is classified on the status alone.
            let body = response.bytes().await.unwrap_or_default();
            Err(self.status_failure(status, &body).into())
        }
    }

    /// Reads a reply body of at most [`MAX_REPLY_BYTES`], so that a broken server or proxy
    /// cannot make a worker hold an unbounded body in memory.
    async fn read_capped(&self, label: &str, mut response: Response) -> Result<Bytes, Failure> {
        let status = response.status().as_u16();
        let too_big = || Error::Transient {
            status: Some(status),
            detail: format!("{label}: the reply is larger than {MAX_REPLY_BYTES} bytes; not read"),
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_REPLY_BYTES as u64)
        {
            return Err(too_big().into());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_failure(label, e))?
        {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(too_big().into());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    }

    fn status_failure(&self, status: StatusCode, body: &[u8]) -> Error {
        if status == StatusCode::TOO_MANY_REQUESTS {
            tracing::warn!("VirusTotal answered 429: pausing requests for this key");
            self.gate.pause();
        }
        let error = Error::from_response_scrubbed(status.as_u16(), body, Some(self.key.expose()));
        if let Error::Quota { .. } = error
            && status != StatusCode::TOO_MANY_REQUESTS
        {
            self.gate.pause();
        }
        error
    }

    fn transport_failure(&self, label: &str, e: reqwest::Error) -> Failure {
        let nothing_sent = e.is_connect();
        let what = if e.is_timeout() {
            "timed out"
        } else if nothing_sent {
            "cannot connect"
        } else {
            "connection failed"
        };
        let detail = super::error::scrub(
            format!("{label}: {what}: {}", chain(&e.without_url())),
            Some(self.key.expose()),
        );
        Failure {
            error: Error::Transient {
                status: None,
                detail,
            },
            nothing_sent,
        }
    }

    /// A request with the key attached only if it goes to the API's own origin.
    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let keyed = url.origin() == self.api_origin();
        let mut request = self
            .http
            .request(method, url)
            .header(ACCEPT, "application/json");
        if keyed {
            request = request.header("x-apikey", self.key_header.clone());
        }
        request
    }

    fn api_origin(&self) -> Origin {
        self.base.origin()
    }

    /// The base URL with path segments appended, each escaped.
    fn endpoint(&self, segments: &[&str]) -> Result<Url, Error> {
        if let Some(bad) = segments
            .iter()
            .find(|s| matches!(s.trim(), "" | "." | ".."))
        {
            return Err(Error::Invalid(format!("{bad:?} is not a VirusTotal id")));
        }
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| Error::Invalid("the API base URL cannot take a path".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }
}

/// The body of a reply that is returned whole (a created comment or vote).
fn parse_value(body: &[u8]) -> Result<serde_json::Value, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Transient {
        status: None,
        detail: format!("the reply is not valid JSON ({e}; {} bytes)", body.len()),
    })
}

/// Fills in the HTTP status of a parse error on a 2xx reply.
fn with_status(e: Error, status: u16) -> Error {
    match e {
        Error::Transient {
            status: None,
            detail,
        } => Error::Transient {
            status: Some(status),
            detail,
        },
        other => other,
    }
}

/// The file name sent in the multipart header: the base name, with the characters that would
/// need escaping in a quoted header parameter replaced (VirusTotal's front end takes a plain
/// `filename="..."`, not RFC 5987 `filename*=`).
fn upload_file_name(path: &Path) -> String {
    let name: String = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_control() || c == '"' || c == '\\' {
                '_'
            } else {
                c
            }
        })
        .collect();
    if name.is_empty() { "file".into() } else { name }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An error and its causes on one line: reqwest's own message ("error sending request") says
/// little without them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(error: Error, nothing_sent: bool) -> Failure {
        Failure {
            error,
            nothing_sent,
        }
    }

    fn transient() -> Error {
        Error::Transient {
            status: Some(503),
            detail: String::new(),
        }
    }

    #[test]
    fn reads_are_retried_on_transient_errors() {
        assert!(should_retry(
            Effect::Idempotent,
            &failure(transient(), false)
        ));
    }

    #[test]
    fn creations_are_not_retried_once_the_request_may_have_arrived() {
        assert!(!should_retry(Effect::Creates, &failure(transient(), false)));
        let timeout = Error::Transient {
            status: None,
            detail: "timed out".into(),
        };
        assert!(!should_retry(Effect::Creates, &failure(timeout, false)));
    }

    #[test]
    fn creations_are_retried_when_nothing_was_sent_or_on_quota() {
        let refused = Error::Transient {
            status: None,
            detail: "cannot connect".into(),
        };
        assert!(should_retry(Effect::Creates, &failure(refused, true)));
        assert!(should_retry(
            Effect::Creates,
            &failure(
                Error::Quota {
                    code: String::new()
                },
                false
            )
        ));
    }

    #[test]
    fn auth_and_permanent_errors_are_never_retried() {
        for effect in [Effect::Idempotent, Effect::Creates] {
            let auth = Error::Auth {
                code: "WrongCredentialsError".into(),
                message: String::new(),
            };
            assert!(!should_retry(effect, &failure(auth, true)));
            assert!(!should_retry(effect, &failure(Error::NotFound, false)));
            let denied = Error::Denied(crate::quota::Denied::ShuttingDown);
            assert!(!should_retry(effect, &failure(denied, false)));
        }
    }

    #[test]
    fn upload_names_are_plain_and_quotable() {
        assert_eq!(
            upload_file_name(Path::new("/tmp/a \"b\"\n.exe")),
            "a _b__.exe"
        );
        assert_eq!(upload_file_name(Path::new("/")), "file");
    }
}
