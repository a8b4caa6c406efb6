//! [`HttpBackend`]: a read-only backend over another tarvault's HTTP server (`tarvault serve`, or
//! any registry embedding [`server::Server`](crate::server::Server)), for mirrors.
//!
//! It reads `/sha512/<hex>` and resolves npm's `shasum` and blake3 through `HEAD /sha1/<hex>` and
//! `HEAD /blake3/<hex>`, whose strong `ETag` is the blob's sha512 integrity. Like every backend
//! it is trusted for nothing: the [`Store`](crate::Store) verifies every byte read against the
//! address, and its recorded
//! digests are never used to shortcut that (the server could lie about both). Writes and deletes
//! (the store is read-only) and listings (the server has none) are requests this backend cannot
//! make whatever is stored, so they are [`Unsupported`](crate::ErrorKind::Unsupported) too, not
//! [`Rejected`](crate::ErrorKind::Rejected), which says the input was refused by a policy (a
//! migration takes a `Rejected` put for a tarball its inspection refused, and goes on). A mirror
//! is a [`Cached`](crate::backend::compose::Cached) store over it, whose puts would go to the
//! remote.
//!
//! Store URL: `http://host:port[/prefix]` or `https://…`, where `/prefix` is where the server's
//! routes are mounted (nothing for `tarvault serve`).

use std::ops::Range;

use async_trait::async_trait;
use base64::Engine;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, RANGE};
use reqwest::{Method, StatusCode};

use crate::backend::body::{first_line, message_start, MESSAGE_CHARS};
use crate::backend::{AliasRebuild, Backend, BlobKey, BlobStat, BlobWriter, GetResult, PutHint};
use crate::integrity::{Algorithm, Digests, Hash};
use crate::{Error, Result};

/// How long a read waits for the upstream's next bytes (response headers or body) before it
/// fails as a backend error.
pub const READ_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A read-only view of a remote tarvault server; see the [module documentation](self).
#[derive(Clone)]
pub struct HttpBackend {
    /// The URL requests go to, with the user and password it may hold (reqwest sends them as
    /// basic auth).
    base: String,
    /// `base` with its credentials replaced by `***`: what errors, logs and `Debug` show.
    shown: String,
    http: reqwest::Client,
}

impl HttpBackend {
    /// The server at `url` (`http://host:port[/prefix]`, or `https://`).
    pub fn open_url(url: &str) -> Result<HttpBackend> {
        HttpBackend::open_url_with_timeout(url, READ_IDLE_TIMEOUT)
    }

    /// [`open_url`](Self::open_url), failing a read once the upstream has sent nothing for
    /// `read_idle` (instead of [`READ_IDLE_TIMEOUT`]).
    pub fn open_url_with_timeout(url: &str, read_idle: std::time::Duration) -> Result<HttpBackend> {
        let base = url.trim().trim_end_matches('/');
        let shown = redact(base);
        let rest = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
            .ok_or_else(|| {
                Error::Config(format!("{shown:?}: an HTTP store is http(s)://host/…"))
            })?;
        if rest.is_empty() || rest.starts_with('/') || base.contains(['?', '#']) {
            return Err(Error::Config(format!(
                "{shown:?}: an HTTP store is http(s)://host[:port][/prefix], without a query"
            )));
        }
        // An upstream that goes silent mid-body (or before its headers) must not hold a read,
        // and every reader waiting on the same cache fill, for ever. This store only reads, so
        // a limit on each read of the socket cannot cut off an upload.
        let http =
            crate::backend::http_client_with(reqwest::Client::builder().read_timeout(read_idle))?;
        Ok(HttpBackend {
            base: base.to_string(),
            shown,
            http,
        })
    }

    fn fail(&self, message: impl Into<String>) -> Error {
        Error::backend(self.describe(), message)
    }

    fn sent(&self, e: reqwest::Error) -> Error {
        Error::Backend {
            backend: self.describe(),
            message: "request failed".into(),
            source: Some(Box::new(e)),
        }
    }

    fn read_only(&self, what: &str) -> Error {
        Error::Unsupported {
            backend: self.describe(),
            what: what.into(),
            reason: "an HTTP store is read-only".into(),
        }
    }

    /// Sends `method` to `path`; `Ok(None)` on a 404.
    async fn request(
        &self,
        method: Method,
        path: &str,
        range: Option<&Range<u64>>,
    ) -> Result<Option<reqwest::Response>> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(r) = range {
            req = req.header(RANGE, format!("bytes={}-{}", r.start, r.end - 1));
        }
        let resp = req.send().await.map_err(|e| self.sent(e))?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(resp)),
            s => {
                // The message is the body's first line: its first bytes are enough, and an
                // upstream that answers an error with an endless body is not read to its end.
                let start = message_start(resp.bytes_stream()).await;
                let line = first_line(&start, MESSAGE_CHARS);
                Err(self.fail(format!("{path}: {s} {line}")))
            }
        }
    }
}

impl std::fmt::Debug for HttpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpBackend")
            .field("base", &self.shown)
            .finish_non_exhaustive()
    }
}

/// `url` with the user and password it may carry (`http://user:pw@host/…`) replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => url.to_string(),
    }
}

/// A header as a number.
fn number(resp: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<u64> {
    resp.headers().get(name)?.to_str().ok()?.trim().parse().ok()
}

#[async_trait]
impl Backend for HttpBackend {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    async fn begin_put(&self, _hint: &PutHint) -> Result<Box<dyn BlobWriter>> {
        Err(self.read_only("store a blob"))
    }

    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<Option<GetResult>> {
        // An empty range of a blob is asked for as the whole blob (a `Range` cannot be empty).
        let asked = range.clone().filter(|r| r.end > r.start);
        let path = format!("/sha512/{}", key.to_hex());
        let Some(resp) = self.request(Method::GET, &path, asked.as_ref()).await? else {
            return Ok(None);
        };
        let size = match (&asked, resp.status()) {
            (None, StatusCode::OK) => number(&resp, CONTENT_LENGTH),
            (Some(_), StatusCode::PARTIAL_CONTENT) => resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit('/').next())
                .and_then(|total| total.parse().ok()),
            (_, s) => return Err(self.fail(format!("{path}: unexpected {s}"))),
        }
        .ok_or_else(|| self.fail(format!("{path}: no usable Content-Length/Content-Range")))?;
        let backend = self.describe();
        let stream = resp
            .bytes_stream()
            .map_err(move |e| Error::Backend {
                backend: backend.clone(),
                message: "reading the body failed".into(),
                source: Some(Box::new(e)),
            })
            .boxed();
        let stream = match range {
            Some(r) if r.start == r.end => futures::stream::empty().boxed(),
            _ => stream,
        };
        Ok(Some(GetResult {
            size,
            stream,
            digests: None,
            verified_whole: None,
        }))
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<BlobStat>> {
        let path = format!("/sha512/{}", key.to_hex());
        let Some(resp) = self.request(Method::HEAD, &path, None).await? else {
            return Ok(None);
        };
        let size = number(&resp, CONTENT_LENGTH)
            .ok_or_else(|| self.fail(format!("{path}: no Content-Length")))?;
        Ok(Some(BlobStat {
            key: *key,
            size,
            modified: None,
            digests: None,
        }))
    }

    async fn delete(&self, _key: &BlobKey) -> Result<bool> {
        Err(self.read_only("delete a blob"))
    }

    fn list(&self) -> BoxStream<'static, Result<BlobKey>> {
        let refused = Error::Unsupported {
            backend: self.describe(),
            what: "list its blobs".into(),
            reason: "a tarvault server has no listing (list the store it serves)".into(),
        };
        futures::stream::once(futures::future::ready(Err(refused))).boxed()
    }

    async fn resolve_alias(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        // The server answers sha1 (npm's `shasum`) and blake3; its ETag names the sha512 key.
        // Whatever it says, the read is verified against both the key and the hash asked by. Any
        // other lookup has no route: "not found" would claim an absence nobody checked.
        let route = match hash.algorithm() {
            Algorithm::Sha1 => "sha1",
            Algorithm::Blake3 => "blake3",
            _ => {
                return Err(Error::Unsupported {
                    backend: self.describe(),
                    what: format!("look up {hash}"),
                    reason: "a tarvault server answers lookups by sha512, sha1 (shasum) and \
                             blake3 only"
                        .into(),
                })
            }
        };
        let path = format!("/{route}/{}", hash.to_hex());
        let Some(resp) = self.request(Method::HEAD, &path, None).await? else {
            return Ok(None);
        };
        let etag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let b64 = etag
            .trim_matches('"')
            .strip_prefix("sha512-")
            .ok_or_else(|| self.fail(format!("{path}: the ETag {etag:?} is not an integrity")))?;
        let digest = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|d| <[u8; 64]>::try_from(d).ok())
            .ok_or_else(|| self.fail(format!("{path}: the ETag {etag:?} is not a sha512")))?;
        Ok(Some(BlobKey::new(digest)))
    }

    async fn rebuild_aliases(
        &self,
        _found: BoxStream<'_, Digests>,
        _options: &crate::backend::RebuildOptions,
    ) -> Result<AliasRebuild> {
        // The index is the server's own; there is nothing here to repair.
        Ok(AliasRebuild::default())
    }
}
