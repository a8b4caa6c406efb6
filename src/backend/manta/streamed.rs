//! One PUT whose body is streamed as the store hands the bytes over (`Transfer-Encoding:
//! chunked`), ended only when the put commits: the upload overlaps the hashing, and a put that
//! fails verification, is aborted or is dropped breaks the body off instead of ending it. Manta
//! keeps nothing of an upload whose body did not end (`UploadAbandoned`), so nothing unverified
//! is ever visible under the path. Used by `staging` (a staging path, named by a SnapLink once
//! verified) and `direct` (the blob's own path, when the put knows its sha512 up front).
//!
//! The body is not kept, so the request is sent once: a dropped connection, a 503 or a lost
//! answer fails the put, where a spooled put is retried from its spool.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::HeaderMap;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client;
use super::dirs::{self, Dirs};
use super::MantaBackend;
use crate::backend::Backend as _;
use crate::{Error, Result};

/// Pieces of a body waiting to go out: memory for a streamed upload is about this many pieces.
const QUEUED: usize = 8;
/// The largest piece handed to the client at once (larger chunks are cut, without copying): a
/// wait bounded by the response timeout is for a piece this size to go out, so even a slow link
/// (tens of KB/s) keeps within it, and the queue holds at most 2 MiB.
const PIECE: usize = 256 * 1024;

/// A streamed PUT in progress.
pub(crate) struct Streamed {
    path: String,
    /// The body's pieces; the body ends cleanly only once `finish` set `complete`.
    tx: Option<mpsc::Sender<std::io::Result<Bytes>>>,
    complete: Arc<AtomicBool>,
    /// Bytes the client has taken off the queue so far (progress, for the answer's wait).
    taken: Arc<AtomicU64>,
    /// The request, answering Manta's reply headers.
    request: JoinHandle<Result<HeaderMap>>,
    wait: Duration,
    describe: String,
    /// The directories known to exist: forgotten when Manta says one is missing.
    dirs: Arc<Dirs>,
}

impl Streamed {
    /// The headers of an object upload: its content type, durability, the size when the put
    /// knows it (a streamed upload is capped at 5 GB unless it names its size), and `extra`.
    pub(crate) fn headers(
        backend: &MantaBackend,
        size: Option<u64>,
        extra: &[(&str, String)],
    ) -> Result<HeaderMap> {
        let mut headers = vec![
            ("content-type", "application/octet-stream".to_string()),
            (
                "durability-level",
                backend.client.config().durability.to_string(),
            ),
        ];
        if let Some(n) = size {
            headers.push(("max-content-length", n.to_string()));
        }
        headers.extend(extra.iter().cloned());
        client::headers_of(&headers)
    }

    /// Starts the PUT to `path` (whose parent directory must exist).
    pub(crate) fn start(backend: &MantaBackend, path: String, headers: HeaderMap) -> Streamed {
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(QUEUED);
        let complete = Arc::new(AtomicBool::new(false));
        let done = complete.clone();
        let taken = Arc::new(AtomicU64::new(0));
        let counted = taken.clone();
        let pieces = futures::stream::unfold(rx, move |mut rx| {
            let counted = counted.clone();
            async move {
                let piece = rx.recv().await?;
                if let Ok(b) = &piece {
                    counted.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                Some((piece, rx))
            }
        });
        // The channel closing ends the body; unless `finish` said so first, as an error, which
        // makes the client break the upload off instead of ending it.
        let tail = futures::stream::once(async move {
            if done.load(Ordering::Acquire) {
                None
            } else {
                Some(Err(std::io::Error::other("streamed upload abandoned")))
            }
        })
        .filter_map(futures::future::ready);
        let body = reqwest::Body::wrap_stream(pieces.chain(tail));
        let (client, target) = (backend.client.clone(), path.clone());
        let request =
            tokio::spawn(async move { client.put_streamed(&target, headers, body).await });
        Streamed {
            path,
            tx: Some(tx),
            complete,
            taken,
            request,
            wait: backend.client.config().response_timeout,
            describe: backend.describe(),
            dirs: backend.dirs.clone(),
        }
    }

    /// The path the bytes go to.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// Hands bytes over, in pieces of at most [`PIECE`], waiting at most the response timeout
    /// for room for each. When the server answered before the body ended (a refusal), the error
    /// is its answer.
    pub(crate) async fn send(&mut self, mut chunk: Bytes) -> Result<()> {
        while !chunk.is_empty() {
            let piece = chunk.split_to(chunk.len().min(PIECE));
            self.send_piece(piece).await?;
        }
        Ok(())
    }

    async fn send_piece(&mut self, piece: Bytes) -> Result<()> {
        let Some(tx) = &self.tx else {
            return Err(self.failed("the upload already ended"));
        };
        match tokio::time::timeout(self.wait, tx.send(Ok(piece))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => {
                self.tx = None;
                match self.answer().await {
                    Err(e) => Err(e),
                    Ok(_) => Err(self.failed("answered before the body ended")),
                }
            }
            Err(_) => Err(self.failed(&format!("the server took no bytes for {:?}", self.wait))),
        }
    }

    /// Ends the body (the put verified every byte) and waits for the answer's headers. Up to
    /// [`QUEUED`] pieces may still be waiting to go out, which on a slow link take longer than
    /// the response timeout: the wait fails only once the client took no piece for a whole
    /// response timeout (the last one then has that long to go out and be answered).
    pub(crate) async fn finish(mut self) -> Result<HeaderMap> {
        self.complete.store(true, Ordering::Release);
        self.tx = None;
        let mut seen = self.taken.load(Ordering::Relaxed);
        loop {
            match tokio::time::timeout(self.wait, &mut self.request).await {
                Ok(Ok(answer)) => return self.checked(answer),
                Ok(Err(join)) => return Err(self.failed(&join.to_string())),
                Err(_) => {
                    let now = self.taken.load(Ordering::Relaxed);
                    if now == seen {
                        // Given up on: broken off, so that a body still queued never ends and
                        // the upload cannot be stored after the caller cleaned up behind it.
                        self.request.abort();
                        return Err(self.failed(&format!("no answer within {:?}", self.wait)));
                    }
                    seen = now;
                }
            }
        }
    }

    fn failed(&self, why: &str) -> Error {
        Error::backend(
            self.describe.clone(),
            format!("streamed PUT {}: {why}", self.path),
        )
    }

    /// A directory on the way was removed behind this backend's back (the body is gone, so
    /// this put fails): later puts make the directories again instead of trusting the cache.
    fn checked(&self, answer: Result<HeaderMap>) -> Result<HeaderMap> {
        if let Err(e) = &answer {
            if dirs::missing(e) {
                self.dirs.forget_all();
            }
        }
        answer
    }

    /// Waits for the request's answer (at most the response timeout).
    async fn answer(&mut self) -> Result<HeaderMap> {
        match tokio::time::timeout(self.wait, &mut self.request).await {
            Ok(Ok(answer)) => self.checked(answer),
            Ok(Err(join)) => Err(self.failed(&join.to_string())),
            Err(_) => Err(self.failed(&format!("no answer within {:?}", self.wait))),
        }
    }
}

impl Drop for Streamed {
    /// An upload dropped unfinished is broken off: its body never ends.
    fn drop(&mut self) {
        if !self.complete.load(Ordering::Acquire) {
            self.request.abort();
        }
    }
}

/// The MD5 (base64) of what Manta stored at `path` by a streamed PUT answered `reply`: its
/// `Computed-MD5`, else the object's `Content-MD5` from a `HEAD`; `None` if the server reports
/// neither. A streamed upload cannot send `Content-MD5` up front (the digest is known only at
/// the end), so this is how a put learns that the server kept the bytes it hashed.
pub(crate) async fn stored_md5(
    backend: &MantaBackend,
    path: &str,
    reply: &HeaderMap,
) -> Result<Option<String>> {
    let text = |h: &HeaderMap, name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    if let Some(md5) = text(reply, "computed-md5") {
        return Ok(Some(md5));
    }
    Ok(backend
        .client
        .head(path)
        .await?
        .and_then(|h| text(&h, "content-md5")))
}
