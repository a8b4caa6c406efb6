//! The blob handler: path → address → response, never reading a blob it does not have to (a
//! revalidation or a HEAD only stats it, and by an alias confirms it as a read would) and never
//! finishing a body whose bytes did not verify.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::extract::State;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use hyper::body::Frame;

use super::http::{self as h, RangeAsk};
use super::routes::{self, Miss, Route, Target};
use super::Server;
use crate::backend::budget;
use crate::backend::BlobKey;
use crate::integrity::{Hash, Integrity};
use crate::{BlobStream, Error, ErrorKind};

/// The router's fallback: every path that is not `/-/…`.
pub(crate) async fn blob(State(server): State<Server>, request: Request) -> Response {
    let started = Instant::now();
    // The request itself rather than `HeaderMap`/`Uri` extractors, which would clone them.
    let (parts, _) = request.into_parts();
    let (route, response) = answer(&server, &parts.method, parts.uri.path(), &parts.headers).await;
    server
        .metrics()
        .response(route, response.status(), started.elapsed());
    response
}

/// The blob a request resolved to.
struct Located {
    key: BlobKey,
    /// What the store is asked for: the alias itself on `/sha1/` or `/blake3/`, so that the store
    /// checks the bytes against it and a wrong alias cannot serve other bytes.
    address: Integrity,
    etag: HeaderValue,
    /// The hash the key was resolved from (`/sha1/`, `/blake3/`), so the read need not resolve it
    /// again.
    resolved_from: Option<Hash>,
}

async fn answer(
    server: &Server,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> (Route, Response) {
    let target = match routes::parse(path) {
        Ok(t) => t,
        Err(Miss::Unknown) => return (Route::Other, plain(StatusCode::NOT_FOUND, "not found\n")),
        Err(Miss::Malformed(route, why)) => {
            return (route, plain(StatusCode::BAD_REQUEST, &format!("{why}\n")))
        }
    };
    let route = target.route();
    let head_only = if method == Method::GET {
        false
    } else if method == Method::HEAD {
        true
    } else {
        return (route, method_not_allowed());
    };
    let located = match locate(server, target).await {
        Ok(Some(l)) => l,
        Ok(None) => return (route, plain(StatusCode::NOT_FOUND, "not found\n")),
        Err(e) => return (route, failure(server, &e, path)),
    };
    (
        route,
        respond(server, located, head_only, headers, path).await,
    )
}

async fn locate(server: &Server, target: Target<'_>) -> crate::Result<Option<Located>> {
    Ok(Some(match target {
        Target::Sha512(key) => Located {
            key,
            address: Integrity::from(key.hash()),
            etag: h::etag(&key),
            resolved_from: None,
        },
        Target::Alias(hash) => {
            let Some(key) = server.store().backend().resolve_alias(&hash).await? else {
                return Ok(None);
            };
            Located {
                key,
                address: Integrity::from(hash.clone()),
                etag: h::etag(&key),
                resolved_from: Some(hash),
            }
        }
        Target::Tarball { name, file } => {
            let Some(named) = server.names().get(&name, &file).await? else {
                return Ok(None);
            };
            Located {
                key: named.key,
                address: named.address.clone(),
                etag: named.etag.clone(),
                resolved_from: None,
            }
        }
    }))
}

async fn respond(
    server: &Server,
    at: Located,
    head_only: bool,
    headers: &HeaderMap,
    path: &str,
) -> Response {
    let backend = server.store().backend();
    // Preconditions, revalidation and HEAD need only to know the blob is there (and, for a HEAD
    // or a range, its size): a stat, no read. A missing blob is a 404 whatever the preconditions
    // (RFC 9110 §13.2.1).
    let conditional = h::has_if_match(headers) || h::has_none_match(headers);
    let needs_size = head_only
        || headers.contains_key(header::RANGE)
        // Found by sha1: confirmed below, as the GET's read would confirm it.
        || (conditional && at.resolved_from.is_some());
    // `Some` once the blob is known to be there, with its size if the response names one.
    let found = if needs_size {
        let stat = if let Some(asked) = &at.resolved_from {
            // Found by sha1: the blob the index names is confirmed to have that sha1 first, as
            // the GET's read would, so that a wrong entry does not get a 200 with another size.
            server.store().size_resolved(&at.key, asked).await
        } else if let Some(now) = backend.size_now(&at.key) {
            now
        } else {
            backend.head(&at.key).await.map(|st| st.map(|st| st.size))
        };
        match stat {
            Ok(Some(size)) => Some(Some(size)),
            Ok(None) => return plain(StatusCode::NOT_FOUND, "not found\n"),
            Err(e) => return failure(server, &e, path),
        }
    } else if conditional {
        // A GET's revalidation: its 304 names no size, so existence is all it needs.
        let there = match backend.exists_now(&at.key) {
            Some(now) => now,
            None => backend.head(&at.key).await.map(|st| st.is_some()),
        };
        match there {
            Ok(true) => Some(None),
            Ok(false) => return plain(StatusCode::NOT_FOUND, "not found\n"),
            Err(e) => return failure(server, &e, path),
        }
    } else {
        None
    };
    let size = found.flatten();
    // RFC 9110 §13.2.2: `If-Match` first, then `If-None-Match`, then `Range` with `If-Range`.
    // `If-Unmodified-Since` and `If-Modified-Since` are ignored: a blob has no modification date.
    if found.is_some() && h::if_match_fails(headers, &at.etag) {
        return plain(StatusCode::PRECONDITION_FAILED, "precondition failed\n");
    }
    if found.is_some() && h::none_match(headers, &at.etag) {
        return not_modified(at.etag, size.filter(|_| head_only));
    }
    if let (true, Some(size)) = (head_only, size) {
        return blob_head(StatusCode::OK, size, at.etag, Body::empty());
    }
    let ask = match size {
        Some(size) => h::range(headers, size, &at.etag),
        None => RangeAsk::Full,
    };
    let store = server.store();
    let checked_by = at.resolved_from.clone();
    let read = match (&ask, at.resolved_from) {
        // Found by sha1 already: read the key it named, checked against the sha1 too.
        (RangeAsk::Full, Some(asked)) => store.read_resolved(at.key, asked, None).await,
        (&RangeAsk::Part(start, end), Some(asked)) => {
            store.read_resolved(at.key, asked, Some(start..end)).await
        }
        (RangeAsk::Full, None) => store.get(&at.address).await,
        (&RangeAsk::Part(start, end), None) => store.get_range(&at.address, start..end).await,
        (RangeAsk::Unsatisfiable, resolved_from) => {
            let size = size.unwrap_or(0);
            if let Err(e) = past_the_end(server, &at.key, &at.address, resolved_from, size).await {
                return failure(server, &e, path);
            }
            let mut r = plain(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let mut blob = match read {
        Ok(b) => b,
        Err(e) => return failure(server, &e, path),
    };
    let len = blob.len();
    let total = blob.blob_size();
    // Wait for the first verified chunk before sending the head: a blob up to the backend's chunk
    // size (most tarballs) is then verified whole, and a corrupt one gets a plain 500 rather than a
    // 200 cut short.
    let first = match blob.next().await {
        Some(Ok(chunk)) => Some(chunk),
        Some(Err(e)) => return failure(server, &e, path),
        None => None,
    };
    // A longer one is read and verified whole first, up to VERIFIED_BEFORE_HEAD: its body then
    // only ever carries bytes checked already. Only where the blob is read locally (the backend
    // answers with a local stat: the fs); from S3, Manta or an HTTP upstream that would be a
    // second download of the blob or a long wait for the head. Not where the backend's read
    // verified the whole blob already (a cache tier's or a replica's copy).
    let rest = len - first.as_ref().map_or(0, |c| c.len() as u64);
    let held = if rest > 0
        && total <= server.verified_before_head()
        && backend.verifies_reads_whole().is_none()
        && backend.exists_now(&at.key).is_some()
    {
        // A whole blob is kept as it is read, while the process's held budget has room for it,
        // and sent from memory: one read and one hash. A range, or a blob past the budget, is
        // read and verified apart, then read again to be sent (the stream checks it again).
        let charge = match ask {
            RangeAsk::Full => usize::try_from(rest)
                .ok()
                .and_then(|n| budget::held().charge(n)),
            _ => None,
        };
        match charge {
            Some(charge) => match read_rest(&mut blob).await {
                Ok(chunks) => Some((chunks, charge)),
                Err(e) => return failure(server, &e, path),
            },
            None => match verify_whole(server, &at.key, &at.address, checked_by).await {
                Ok(()) => None,
                Err(e) => return failure(server, &e, path),
            },
        }
    } else {
        None
    };
    let rest: BoxStream<'static, crate::Result<Bytes>> = match held {
        // The charge goes back once the body is done with (sent, or dropped with its connection).
        Some((chunks, charge)) => stream::unfold(
            (chunks.into_iter(), charge),
            |(mut chunks, charge)| async move { Some((Ok(chunks.next()?), (chunks, charge))) },
        )
        .boxed(),
        None => blob.boxed(),
    };
    let metrics = server.metrics_arc();
    let label = path.to_string();
    let body = stream::iter(first.map(Ok))
        .chain(rest)
        .map(move |item: crate::Result<Bytes>| {
            match &item {
                Ok(chunk) => metrics.bytes(chunk.len() as u64),
                Err(e) => {
                    if e.kind() == ErrorKind::Corrupt {
                        metrics.integrity_failure();
                    }
                    // Returning the error makes hyper drop the connection before the declared
                    // Content-Length: no client or cache can mistake the body for complete.
                    tracing::error!(path = %label, error = %e.report(), "aborting response body");
                }
            }
            item
        });
    let body = Body::from_stream(body.fuse());
    match ask {
        RangeAsk::Part(start, end) => {
            let mut r = blob_head(StatusCode::PARTIAL_CONTENT, len, at.etag, body);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{total}", end - 1)) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            r
        }
        _ => blob_head(StatusCode::OK, len, at.etag, body),
    }
}

/// A blob response head (200 or 206) with every caching header.
fn blob_head(status: StatusCode, len: u64, etag: HeaderValue, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let hm = r.headers_mut();
    hm.insert(header::CONTENT_TYPE, h::OCTET_STREAM);
    hm.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    hm.insert(header::ETAG, etag);
    hm.insert(header::CACHE_CONTROL, h::CACHE_CONTROL);
    hm.insert(header::ACCEPT_RANGES, h::BYTES);
    r
}

/// A 304. To a HEAD, with the `Content-Length` its 200 would have had (`head_size`); to a GET,
/// with none ([`NoContent`]). A 0 must not go out (RFC 9110 §8.6 forbids a length other than the
/// 200's): a cache merging the 304's headers into its stored response could record the blob as
/// empty.
fn not_modified(etag: HeaderValue, head_size: Option<u64>) -> Response {
    let mut r = Response::new(Body::new(NoContent));
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    let hm = r.headers_mut();
    hm.insert(header::ETAG, etag);
    hm.insert(header::CACHE_CONTROL, h::CACHE_CONTROL);
    if let Some(size) = head_size {
        hm.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    r
}

/// The body of a 304: none, and no length either. An empty [`Body`] says its size is exactly 0,
/// which axum writes as `Content-Length: 0` into every response it routes that has none; hyper
/// leaves that out of an HTTP/1.1 304 but sends it over HTTP/2.
struct NoContent;

impl HttpBody for NoContent {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(None)
    }

    /// Ended from the start, so an HTTP/2 304 is its header frame alone.
    fn is_end_stream(&self) -> bool {
        true
    }
}

/// The answer to a method other than `GET` and `HEAD`, on every route.
pub(crate) fn method_not_allowed() -> Response {
    let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
    r.headers_mut().insert(header::ALLOW, h::ALLOW);
    r
}

/// A short text response that no cache keeps.
pub(crate) fn plain(status: StatusCode, text: &str) -> Response {
    let mut r = Response::new(Body::from(text.to_string()));
    *r.status_mut() = status;
    let hm = r.headers_mut();
    hm.insert(header::CONTENT_TYPE, h::TEXT_PLAIN);
    hm.insert(header::CACHE_CONTROL, h::NO_STORE);
    r
}

/// Blobs up to this size, on a store read locally (the fs), are read and verified whole before a
/// response's head is sent, when the first chunk does not hold them (on the fs a blob up to 8 MiB
/// is one chunk while the read budget has room): a cache or CDN that passes a body on as it
/// arrives (a streaming miss, collapsed requests) or keeps an incomplete one (RFC 9111 §3.3) then
/// never gets an unchecked byte. A whole blob is kept in memory as it is read, while the process's
/// held budget ([`HELD_IN_MEMORY`](crate::backend::compose::verify::HELD_IN_MEMORY)) has room, and
/// sent from there; a range, or a blob past that budget, costs a second read and hash (on the fs
/// from the page cache, blake3 at several GB/s: about 20 ms for 64 MiB). Nothing changes for the
/// tarballs that most requests are for. A larger blob streams verified as it goes, and one found
/// corrupt has its body cut short before its `Content-Length`. The default of
/// [`Server::verify_before_head`].
pub const VERIFIED_BEFORE_HEAD: u64 = 64 << 20;

/// The rest of a verified read, kept: the error it meets, if any, which is the whole blob's check.
async fn read_rest(blob: &mut BlobStream) -> crate::Result<Vec<Bytes>> {
    let mut chunks = Vec::new();
    while let Some(chunk) = blob.next().await {
        chunks.push(chunk?);
    }
    Ok(chunks)
}

/// Reads the blob `key` whole through the store's verified read (against the sha1 it was found
/// by, if it was), keeping none of it: the error it meets, if any.
async fn verify_whole(
    server: &Server,
    key: &BlobKey,
    address: &Integrity,
    resolved_from: Option<Hash>,
) -> crate::Result<()> {
    let store = server.store();
    let mut read = match resolved_from {
        Some(asked) => store.read_resolved(*key, asked, None).await?,
        None => store.get(address).await?,
    };
    while let Some(chunk) = read.next().await {
        chunk?;
    }
    Ok(())
}

/// Whether a read just past the blob's `size` (as a `stat` or `HEAD` said) is refused as the
/// caller's bad range, as it should be (`Ok`), before a 416 names that size: a blob whose record
/// disagrees with its size is read and verified whole first, so that a copy cut short is answered
/// as corrupt (the error), not advertised as a shorter blob.
async fn past_the_end(
    server: &Server,
    key: &BlobKey,
    address: &Integrity,
    resolved_from: Option<Hash>,
    size: u64,
) -> crate::Result<()> {
    let store = server.store();
    let past = size..size.saturating_add(1);
    let read = match resolved_from {
        Some(asked) => store.read_resolved(*key, asked, Some(past)).await,
        None => store.get_range(address, past).await,
    };
    match read {
        Err(e) if e.kind() != ErrorKind::InvalidInput => Err(e),
        _ => Ok(()),
    }
}

/// The response for an error met before the head was sent.
fn failure(server: &Server, e: &Error, path: &str) -> Response {
    match e.kind() {
        ErrorKind::NotFound => plain(StatusCode::NOT_FOUND, "not found\n"),
        ErrorKind::InvalidInput => plain(StatusCode::BAD_REQUEST, &format!("{}\n", e.report())),
        ErrorKind::Corrupt => {
            server.metrics().integrity_failure();
            tracing::error!(path, error = %e.report(), "refusing to serve a corrupt blob");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "stored bytes failed verification\n",
            )
        }
        ErrorKind::Backend => {
            tracing::error!(path, error = %e.report(), "backend failed");
            plain(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n")
        }
        // The message names the upstream, which clients need not learn.
        ErrorKind::Unsupported => {
            tracing::warn!(path, error = %e.report(), "the store cannot answer this request");
            plain(
                StatusCode::NOT_IMPLEMENTED,
                "this store cannot answer that\n",
            )
        }
        ErrorKind::Conflict => {
            tracing::warn!(path, error = %e.report(), "overtaken by another operation on the same blob");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{}\n", e.report()),
            )
        }
        _ => {
            tracing::error!(path, error = %e.report(), "serving failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}
