//! The Manta HTTP client: signing every request, bounded retries with backoff on 503
//! (`ServiceUnavailable`, `ThrottledError`) and connection errors, and muskie's error bodies turned
//! into [`MantaApiError`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use rand::Rng as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};

use super::auth::Signer;
use super::config::MantaConfig;
use crate::backend::body::{message_start, read_within, NotWhole};
use crate::{Error, Result};

/// Characters escaped in a path segment (everything but unreserved and sub-delims that Manta
/// names commonly use).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// An error answer from Manta: the HTTP status and muskie's `{"code","message"}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{method} {path}: {status} {code}: {message}")]
pub struct MantaApiError {
    /// The request method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The HTTP status.
    pub status: u16,
    /// Muskie's error code (`DirectoryDoesNotExist`, `ThrottledError`, …), empty if the body had none.
    pub code: String,
    /// The human message.
    pub message: String,
}

/// In a backend error's source chain (around the [`MantaApiError`]): the answer came to a request
/// sent again after an attempt whose answer was lost (the connection failed or timed out once the
/// request was on its way), so that earlier attempt may have taken effect. A DELETE's 404 or a
/// create-only PUT's 412 may then be this call's own work rather than someone else's.
#[derive(Debug, thiserror::Error)]
#[error("answer to a request sent again: an earlier attempt's answer was lost")]
pub(crate) struct Replayed(#[source] pub(crate) MantaApiError);

/// Whether `e` is a Manta error answering a replayed request (see [`Replayed`]).
pub(crate) fn replayed(e: &Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<Replayed>().is_some() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A response, and whether an earlier attempt of the same request may have taken effect (its
/// answer was lost after the request was sent).
pub(crate) struct Sent {
    pub(crate) resp: reqwest::Response,
    pub(crate) replayed: bool,
}

/// How a request body is (re)produced for each attempt.
#[derive(Debug, Clone)]
pub enum RequestBody {
    /// No body (`Content-Length: 0` on PUT).
    Empty,
    /// No body and no `Content-Length` at all: a metadata update, which Manta refuses with
    /// `InvalidUpdate` when the header is there, even as 0.
    Omitted,
    /// Bytes in memory.
    Bytes(Bytes),
    /// A local file of known length (a spooled upload), reopened for each attempt.
    File(Arc<PathBuf>, u64),
}

impl RequestBody {
    pub(crate) fn len(&self) -> u64 {
        match self {
            RequestBody::Empty | RequestBody::Omitted => 0,
            RequestBody::Bytes(b) => b.len() as u64,
            RequestBody::File(_, n) => *n,
        }
    }

    async fn to_reqwest(&self) -> std::io::Result<reqwest::Body> {
        Ok(match self {
            RequestBody::Empty | RequestBody::Omitted => reqwest::Body::from(Bytes::new()),
            RequestBody::Bytes(b) => reqwest::Body::from(b.clone()),
            RequestBody::File(path, _) => {
                let file = tokio::fs::File::open(path.as_ref()).await?;
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
                    file,
                    256 * 1024,
                ))
            }
        })
    }
}

/// A signed, retrying Manta client for one account.
#[derive(Debug, Clone)]
pub struct MantaClient {
    http: reqwest::Client,
    signer: Arc<Signer>,
    config: Arc<MantaConfig>,
}

impl MantaClient {
    /// Builds the client (loads the key).
    pub fn new(config: MantaConfig) -> Result<Self> {
        let signer = config.signer()?;
        let http = crate::backend::http_client()?;
        Ok(MantaClient {
            http,
            signer: Arc::new(signer),
            config: Arc::new(config),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MantaConfig {
        &self.config
    }

    /// The signer (its keyId and algorithm).
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    pub(super) fn describe(&self) -> String {
        format!("manta:{}{}", self.config.url, self.config.root)
    }

    /// The full URL of an absolute Manta path, each segment percent-encoded.
    pub fn url_of(&self, path: &str) -> String {
        let mut out = self.config.url.clone();
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            out.push('/');
            out.extend(utf8_percent_encode(seg, SEGMENT));
        }
        out
    }

    /// Sends one request, retrying 503s and connection failures with exponential backoff and
    /// jitter, up to the configured number of attempts. Other statuses are returned as they are;
    /// the caller decides what a 404 means.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        headers: HeaderMap,
        body: RequestBody,
    ) -> Result<reqwest::Response> {
        Ok(self
            .send_tracked(method, path, query, headers, body)
            .await?
            .resp)
    }

    /// [`MantaClient::send`], also saying whether an earlier attempt may have taken effect: one
    /// that failed after the request went out (a dropped connection, no answer in time). A 503
    /// is Manta refusing the request, and a failed connect never sent it, so neither counts.
    pub(crate) async fn send_tracked(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        headers: HeaderMap,
        body: RequestBody,
    ) -> Result<Sent> {
        let url = self.url_of(path);
        let attempts = self.config.max_attempts.max(1);
        let mut last: Option<Error> = None;
        let mut replayed = false;
        for attempt in 0..attempts {
            if attempt > 0 {
                let delay = self.backoff(attempt);
                tracing::debug!(%method, path, attempt, ?delay, "retrying Manta request");
                tokio::time::sleep(delay).await;
            }
            let mut req = self.signed(method.clone(), &url, headers.clone());
            if !query.is_empty() {
                req = req.query(query);
            }
            let has_body = !matches!(body, RequestBody::Omitted);
            if has_body && (method == Method::PUT || method == Method::POST) {
                let len = body.len();
                let b = body.to_reqwest().await.map_err(|e| Error::Backend {
                    backend: self.describe(),
                    message: format!("reopening upload body for {path}"),
                    source: Some(Box::new(e)),
                })?;
                req = req.header("content-length", len).body(b);
            }
            let wait = self.response_wait(&method, &body);
            let sent = match tokio::time::timeout(wait, req.send()).await {
                Ok(sent) => sent,
                Err(_) => {
                    tracing::debug!(%method, path, ?wait, "Manta request timed out");
                    replayed = true;
                    last = Some(Error::backend(
                        self.describe(),
                        format!("{method} {path}: no response within {wait:?}"),
                    ));
                    continue;
                }
            };
            match sent {
                Ok(resp) if resp.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    let err = self.api_error(&method, path, resp).await;
                    tracing::debug!(error = %err.report(), "Manta answered 503");
                    last = Some(err);
                }
                Ok(resp) => return Ok(Sent { resp, replayed }),
                Err(e) if e.is_builder() => {
                    return Err(self.transport_error(&method, path, e));
                }
                Err(e) => {
                    tracing::debug!(error = %crate::ErrorReport::new(&e), "Manta request failed");
                    replayed |= !e.is_connect();
                    last = Some(self.transport_error(&method, path, e));
                }
            }
        }
        let last = last.unwrap_or_else(|| Error::backend(self.describe(), "no attempt made"));
        Err(Error::Backend {
            backend: self.describe(),
            message: format!("{method} {path}: gave up after {attempts} attempts"),
            source: Some(Box::new(last)),
        })
    }

    /// A request to `url` with `headers`, signed now (and carrying the configured role).
    fn signed(&self, method: Method, url: &str, headers: HeaderMap) -> reqwest::RequestBuilder {
        let (date, auth) = self.signer.sign_now();
        let req = self
            .http
            .request(method, url)
            .headers(headers)
            .header("date", date)
            .header("authorization", auth);
        match &self.config.role {
            Some(role) => req.header("role", role),
            None => req,
        }
    }

    /// `PUT path` with a body streamed as it is produced (`Transfer-Encoding: chunked`), sent
    /// once: a body that is not kept cannot be sent again, so a failure is the caller's to handle
    /// (see `staging`). No timeout bounds the whole request, since the body takes as long as its
    /// producer; the producer bounds each piece it hands over, and the answer once the body ends.
    pub(crate) async fn put_streamed(
        &self,
        path: &str,
        mut headers: HeaderMap,
        body: reqwest::Body,
    ) -> Result<HeaderMap> {
        headers.insert("accept", HeaderValue::from_static("application/json"));
        let url = self.url_of(path);
        let resp = self
            .signed(Method::PUT, &url, headers)
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(&Method::PUT, path, e))?;
        if resp.status().is_success() {
            Ok(resp.headers().clone())
        } else {
            Err(self.api_error(&Method::PUT, path, resp).await)
        }
    }

    /// How long one attempt may wait for its response head: the configured timeout, plus the
    /// time an upload's body takes at 1 MiB/s.
    fn response_wait(&self, method: &Method, body: &RequestBody) -> Duration {
        let upload = if *method == Method::PUT || *method == Method::POST {
            Duration::from_secs_f64(body.len() as f64 / (1024.0 * 1024.0))
        } else {
            Duration::ZERO
        };
        self.config.response_timeout.saturating_add(upload)
    }

    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self.config.base_backoff.as_millis() as u64;
        let cap = self.config.max_backoff.as_millis() as u64;
        let exp = base.saturating_mul(1u64 << attempt.min(16)).min(cap).max(1);
        // Full jitter between half and the whole delay, so retrying clients spread out.
        Duration::from_millis(rand::thread_rng().gen_range(exp / 2..=exp))
    }

    /// Reads a response's body of at most `max` bytes, allowing it the configured response
    /// timeout: the timeout in [`MantaClient::send`] ends once the head arrives, and a server that
    /// stalls mid-body (or a connection that goes silent without closing) would otherwise hold the
    /// read forever. [`NotWhole::Over`] as soon as it says or turns out to be longer than `max`
    /// (the rest is not read): every body read whole (markers, segments, listing pages) has a
    /// limit of its own, so that a server cannot make the process hold more (see
    /// [`read_within`]). A blob's stream is bounded per chunk instead (`MantaBackend::stream_of`).
    pub(crate) async fn read_body_max(
        &self,
        method: &Method,
        path: &str,
        resp: reqwest::Response,
        max: u64,
    ) -> std::result::Result<Bytes, NotWhole<Error>> {
        let claimed = resp.content_length();
        let read = read_within(resp.bytes_stream(), claimed, max);
        match tokio::time::timeout(self.config.response_timeout, read).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(NotWhole::Over(size))) => Err(NotWhole::Over(size)),
            Ok(Err(NotWhole::Failed(e))) => {
                Err(NotWhole::Failed(self.body_failed(method, path, Some(e))))
            }
            Err(_) => Err(NotWhole::Failed(self.body_failed(method, path, None))),
        }
    }

    /// The first [`MESSAGE_MAX`](crate::backend::body::MESSAGE_MAX) bytes of an error answer's
    /// body, within the response timeout: all a message needs; the rest is not waited for.
    async fn read_message(&self, resp: reqwest::Response) -> Bytes {
        let read = message_start(resp.bytes_stream());
        tokio::time::timeout(self.config.response_timeout, read)
            .await
            .unwrap_or_default()
    }

    /// A body that could not be read (`error`) or stalled past the response timeout (`None`), as
    /// a typed error.
    fn body_failed(&self, method: &Method, path: &str, error: Option<reqwest::Error>) -> Error {
        match error {
            Some(e) => Error::Backend {
                backend: self.describe(),
                message: format!("{method} {path}: reading the body"),
                source: Some(Box::new(e)),
            },
            None => Error::backend(
                self.describe(),
                format!(
                    "{method} {path}: the body stalled (not complete within {:?})",
                    self.config.response_timeout
                ),
            ),
        }
    }

    /// Turns a non-success response into a typed error (reading the start of muskie's JSON body,
    /// within the response timeout: a body that stalls leaves the message empty, and one longer
    /// than 4 KiB gives its first 4 KiB).
    pub async fn api_error(&self, method: &Method, path: &str, resp: reqwest::Response) -> Error {
        self.answer_error(
            method,
            path,
            Sent {
                resp,
                replayed: false,
            },
        )
        .await
    }

    /// [`MantaClient::api_error`] of a tracked answer: one to a replayed request carries
    /// [`Replayed`] in its source chain.
    pub(crate) async fn answer_error(&self, method: &Method, path: &str, sent: Sent) -> Error {
        let Sent { resp, replayed } = sent;
        let status = resp.status().as_u16();
        let body = self.read_message(resp).await;
        #[derive(serde::Deserialize)]
        struct Body {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let (code, message) = match serde_json::from_slice::<Body>(&body) {
            Ok(b) => (b.code, b.message),
            Err(_) => (String::new(), String::from_utf8_lossy(&body).into_owned()),
        };
        let api = MantaApiError {
            method: method.to_string(),
            path: path.to_string(),
            status,
            code,
            message,
        };
        // What went wrong is the source's text (method, path, status, muskie's code and message);
        // this says only what to do about it.
        let mut message = String::from("Manta answered an error");
        if refused_credentials(&api) {
            // Say what to change: the account, the sub-user, the key, or the key file it was read
            // from.
            message.push_str(
                " (the credentials were refused: check MANTA_USER (or ?user=), MANTA_SUBUSER (or \
                 ?subuser=), MANTA_KEY_ID and the private key in MANTA_KEY_MATERIAL (or ?key=); \
                 the key must be one of the account's or the sub-user's keys)",
            );
        }
        // A replayed request's answer says so in its source, which `replayed` looks for.
        let source: Box<dyn std::error::Error + Send + Sync> = if replayed {
            Box::new(Replayed(api))
        } else {
            Box::new(api)
        };
        Error::Backend {
            backend: self.describe(),
            message,
            source: Some(source),
        }
    }

    fn transport_error(&self, method: &Method, path: &str, e: reqwest::Error) -> Error {
        Error::Backend {
            backend: self.describe(),
            message: format!("{method} {path}"),
            source: Some(Box::new(e)),
        }
    }

    /// `HEAD path`: `Ok(None)` on 404.
    pub async fn head(&self, path: &str) -> Result<Option<HeaderMap>> {
        let resp = self
            .send(
                Method::HEAD,
                path,
                &[],
                HeaderMap::new(),
                RequestBody::Empty,
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(Some(resp.headers().clone())),
            StatusCode::NOT_FOUND => Ok(None),
            status => {
                // HEAD errors have no body; like node-manta, GET the same path for the error code.
                let again = self
                    .send(Method::GET, path, &[], HeaderMap::new(), RequestBody::Empty)
                    .await?;
                if again.status() == status {
                    Err(self.api_error(&Method::HEAD, path, again).await)
                } else {
                    Err(self.api_error(&Method::HEAD, path, resp).await)
                }
            }
        }
    }

    /// `PUT path` as an object with `headers` (content type, MD5, metadata). A `Content-MD5`
    /// header makes Manta refuse bytes that differ from what was hashed here.
    pub async fn put_object(
        &self,
        path: &str,
        mut headers: HeaderMap,
        body: RequestBody,
    ) -> Result<HeaderMap> {
        if !headers.contains_key("content-type") {
            headers.insert(
                "content-type",
                HeaderValue::from_static("application/octet-stream"),
            );
        }
        headers.insert("accept", HeaderValue::from_static("application/json"));
        let sent = self
            .send_tracked(Method::PUT, path, &[], headers, body)
            .await?;
        if sent.resp.status().is_success() {
            Ok(sent.resp.headers().clone())
        } else {
            // A create-only PUT's 412 after a lost answer may be its own first attempt: the
            // error says so ([`replayed`]) for the caller to check.
            Err(self.answer_error(&Method::PUT, path, sent).await)
        }
    }

    /// `PUT path?metadata=true`: replaces an object's metadata (content type, `m-*`), not its
    /// bytes.
    pub(crate) async fn put_metadata(&self, path: &str, mut headers: HeaderMap) -> Result<()> {
        headers.insert("accept", HeaderValue::from_static("application/json"));
        let query = [("metadata", "true".to_string())];
        let resp = self
            .send(Method::PUT, path, &query, headers, RequestBody::Omitted)
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.api_error(&Method::PUT, path, resp).await)
        }
    }

    /// Creates one directory (idempotent). Its parent must exist.
    pub async fn put_directory(&self, path: &str) -> Result<()> {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/json; type=directory"),
        );
        headers.insert("accept", HeaderValue::from_static("application/json"));
        let resp = self
            .send(Method::PUT, path, &[], headers, RequestBody::Empty)
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.api_error(&Method::PUT, path, resp).await)
        }
    }

    /// `DELETE path`: `Ok(false)` on 404, unless the 404 answers a DELETE sent again after an
    /// attempt whose answer was lost: that attempt may well have deleted the object, and a
    /// caller told "it was not there" would miscount what it removed, so it is `Ok(true)`. (Had
    /// the object been absent all along, the lost answer was a 404 too; the two cannot be told
    /// apart, and the object is gone either way.)
    pub async fn delete(&self, path: &str) -> Result<bool> {
        let sent = self
            .send_tracked(
                Method::DELETE,
                path,
                &[],
                HeaderMap::new(),
                RequestBody::Empty,
            )
            .await?;
        match sent.resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(sent.replayed),
            _ => Err(self.answer_error(&Method::DELETE, path, sent).await),
        }
    }

    /// `GET path` with optional extra headers (a `Range`); the response is returned for any
    /// status so the caller can handle 404/206/416.
    pub async fn get(&self, path: &str, headers: HeaderMap) -> Result<reqwest::Response> {
        self.send(Method::GET, path, &[], headers, RequestBody::Empty)
            .await
    }
}

/// Builds a header map from name/value pairs, refusing values HTTP cannot carry.
pub fn headers_of(pairs: &[(&str, String)]) -> Result<HeaderMap> {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| Error::InvalidInput(format!("header {k}: {e}")))?;
        let value = HeaderValue::from_str(v)
            .map_err(|e| Error::InvalidInput(format!("header {k}: {e}")))?;
        h.insert(name, value);
    }
    Ok(h)
}

/// Whether Manta refused who signed the request (not what it asked for): its authentication
/// error codes, or a bare 401.
fn refused_credentials(api: &MantaApiError) -> bool {
    const CODES: [&str; 7] = [
        "InvalidCredentials",
        "KeyDoesNotExist",
        "InvalidSignature",
        "InvalidKeyId",
        "AccountDoesNotExist",
        "UserDoesNotExist",
        "AuthorizationFailed",
    ];
    api.status == 401 || (api.status == 403 && CODES.contains(&api.code.as_str()))
}
