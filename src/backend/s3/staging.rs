//! Large puts of unknown digest: the bytes stream to a staging key while they are hashed, and a
//! server-side copy names the final key once they verified.
//!
//! A blob's key is its sha512, known only after the last byte. Spooling to a local file and
//! uploading afterwards (the fallback, see `writer`) sends nothing until the stream ends, so a
//! put costs the time to read *and then* the time to upload. Here the upload overlaps the
//! hashing instead:
//!
//! 1. past the single-`PUT` threshold, a multipart upload starts to
//!    `<prefix>/staging/<unix ms>-<random>`; parts go up as the bytes arrive;
//! 2. at commit, after the store verified every byte, the upload completes (so even a staging key
//!    only ever holds verified bytes; an upload that fails or is aborted is never completed);
//! 3. a `HEAD` of the final key finds a dedupe hit; otherwise `CopyObject` (object_store's
//!    `copy`) names the final key on the server, without the bytes crossing the network again;
//! 4. the staging key is deleted.
//!
//! `CopyObject` copies at most 5 GiB ([`COPY_MAX`]), and object_store offers no multi-part
//! `UploadPartCopy`; a larger staged blob is copied through the client (GET, then a multipart
//! upload, completed only if the bytes read back have the blob's sha512), which costs its bytes
//! twice over the network. A server that refuses `CopyObject`
//! is remembered ([`CopySupport`]): that put is copied through the client and later large puts of
//! unknown digest spool instead, as before.
//!
//! A process killed between steps 2 and 4 leaves a staging object behind; `sweep` (run by
//! `fsck`) deletes staging objects older than [`STAGING_MAX_AGE`] by both the time in their name
//! and their Last-Modified (see `last_known`). One killed before step 2
//! leaves an incomplete multipart upload, which only the bucket's
//! `AbortIncompleteMultipartUpload` lifecycle rule removes (as for any multipart upload).

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions};

use super::errors::{backend_error, is_denied, is_missing_bucket};
use super::keys::digest_attributes;
use super::writer::{already_there, Upload};
use super::Inner;
use crate::backend::{BlobKey, Committed};
use crate::integrity::{Algorithm, Digests, Hash, MultiHasher};
use crate::{Error, Result};

/// The largest object one `CopyObject` may copy (S3's limit).
pub(crate) const COPY_MAX: u64 = 5 * 1024 * 1024 * 1024;

/// Staging objects older than this are leftovers of a dead process; younger ones may belong to a
/// put being committed right now.
pub(crate) const STAGING_MAX_AGE: Duration = Duration::from_secs(3600);

/// What is known of the server's `CopyObject`: untried, working, or refused (then large puts of
/// unknown digest spool instead). Shared by every put of one backend.
#[derive(Debug, Default)]
pub(crate) struct CopySupport(AtomicU8);

// 0 (the default): untried.
const WORKS: u8 = 1;
const REFUSED: u8 = 2;

impl CopySupport {
    /// Whether staging is worth starting: not once the server refused a copy.
    pub(crate) fn usable(&self) -> bool {
        self.0.load(Ordering::Relaxed) != REFUSED
    }

    fn set(&self, v: u8) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// A multipart upload to a staging key, in progress.
pub(crate) struct Staged {
    path: Path,
    upload: Upload,
}

impl Staged {
    /// Starts the multipart upload to a fresh staging key.
    pub(crate) async fn start(inner: &Inner) -> Result<Staged> {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let path = inner
            .keys
            .staging(&format!("{millis:013}-{:016x}", rand::random::<u64>()));
        let upload = Upload::start(inner, &path, PutMultipartOptions::default()).await?;
        Ok(Staged { path, upload })
    }

    /// Hands bytes to the upload (waits while enough parts are in flight).
    pub(crate) async fn send(&mut self, describe: &str, chunk: bytes::Bytes) -> Result<()> {
        self.upload.send(describe, chunk).await
    }

    /// Drops the upload unfinished, so nothing becomes visible.
    pub(crate) async fn abort(self, describe: &str) -> Result<()> {
        self.upload.abort(describe).await
    }

    /// Publishes verified bytes under their key: completes the staging upload, copies it to the
    /// final key (unless that is already there), and deletes the staging object.
    pub(crate) async fn publish(self, inner: &Inner, d: &Digests) -> Result<Committed> {
        let Staged { path, upload } = self;
        upload.complete(&inner.describe).await?;
        let named = name(inner, &path, d).await;
        // The staging object goes whatever happened; if deleting fails, sweep removes it later.
        if let Err(e) = inner.store.delete(&path).await {
            tracing::warn!(backend = %inner.describe, staging = %path, error = %crate::ErrorReport::new(&e),
                "could not delete a staging object; fsck's sweep will");
        }
        named
    }
}

/// Names the final key: a dedupe hit, a server-side copy, or a copy through this client.
async fn name(inner: &Inner, staging: &Path, d: &Digests) -> Result<Committed> {
    let to = inner.keys.blob(&BlobKey::new(d.sha512));
    if already_there(inner, &to, d).await? {
        return Ok(Committed::AlreadyPresent);
    }
    if d.size <= COPY_MAX {
        // object_store retries a copy on transport errors itself (it is idempotent).
        match inner.store.copy(staging, &to).await {
            Ok(()) => {
                inner.copy.set(WORKS);
                return Ok(Committed::Stored);
            }
            Err(e) if !refused(&e) => return Err(backend_error(&inner.describe, "copy", e)),
            Err(e) => {
                tracing::warn!(backend = %inner.describe, error = %crate::ErrorReport::new(&e),
                    "the server refused CopyObject: copying through the client, and spooling later large puts");
                inner.copy.set(REFUSED);
            }
        }
    }
    copy_through_client(inner, staging, &to, d).await
}

/// Whether a failed `CopyObject` means the server does not do it (not implemented, or a request
/// it rejects as invalid), as opposed to a failure of this request (5xx after retries, a timeout,
/// a missing bucket, denied credentials), which is reported rather than worked around.
///
/// By the HTTP status where the error has one. object_store 0.14 keeps it in its `RetryError`
/// (`status()`), but that type is public in a private module and not re-exported, so it cannot be
/// named to downcast the error's source chain; its public `RetryFailure` only reaches a
/// multipart `RetryPolicy`. The status is therefore read from where `RetryError` prints it
/// ("… status code: 501 Not Implemented: …"), not from anywhere in the text: the text also holds
/// the request's URI (base64 and hex keys) and its elapsed time, where "501" or "405" turn up by
/// chance, and a 503 must not switch server-side copies off. Without a status (an error in the
/// body of a 200, as CopyObject can answer), the S3 error codes decide.
fn refused(e: &object_store::Error) -> bool {
    if is_missing_bucket(e) || is_denied(e) {
        return false;
    }
    if matches!(
        e,
        object_store::Error::NotSupported { .. } | object_store::Error::NotImplemented { .. }
    ) {
        return true;
    }
    let text = e.to_string();
    match status_in(&text) {
        Some(status) => matches!(status, 400 | 405 | 501),
        None => ["NotImplemented", "MethodNotAllowed", "InvalidRequest"]
            .iter()
            .any(|code| text.contains(&format!("<Code>{code}</Code>"))),
    }
}

/// The HTTP status object_store printed into a failed request's error.
fn status_in(text: &str) -> Option<u16> {
    let (_, rest) = text.split_once("status code: ")?;
    rest.get(..3)?.parse().ok()
}

/// Reads the staging object back and uploads it to `to` (above [`COPY_MAX`], or where the server
/// cannot copy). The upload is completed only if the bytes that came back are the ones the put
/// verified: every byte, with the blob's sha512. They cross this client, so they are checked on
/// the way (a server or proxy answering the GET with other bytes of the same length would
/// otherwise have them published under the blob's key).
async fn copy_through_client(
    inner: &Inner,
    from: &Path,
    to: &Path,
    d: &Digests,
) -> Result<Committed> {
    let err = |op: &'static str| move |e| backend_error(&inner.describe, op, e);
    let mut body = inner
        .store
        .get(from)
        .await
        .map_err(err("read staging object"))?
        .into_stream();
    let mut up = Upload::start(inner, to, PutMultipartOptions::from(digest_attributes(d))).await?;
    let mut sent = 0u64;
    let mut hasher = MultiHasher::new(&[Algorithm::Sha512]);
    let copied: Result<()> = async {
        while let Some(chunk) = body.try_next().await.map_err(err("read staging object"))? {
            sent += chunk.len() as u64;
            hasher.update(&chunk);
            up.send(&inner.describe, chunk).await?;
        }
        if sent != d.size {
            return Err(Error::Backend {
                backend: inner.describe.clone(),
                message: format!(
                    "staging object {from} holds {sent} bytes, expected {}",
                    d.size
                ),
                source: None,
            });
        }
        let read = hasher.finalize();
        if read.get(Algorithm::Sha512).map(Hash::digest) != Some(&d.sha512[..]) {
            return Err(Error::backend(
                &inner.describe,
                format!(
                    "staging object {from} read back with other bytes than the put verified; \
                     not published"
                ),
            ));
        }
        Ok(())
    }
    .await;
    up.settle(&inner.describe, copied).await
}

/// Deletes staging objects older than `max_age` (leftovers of processes that died between
/// completing a staging upload and deleting it), an object's age taken from [`last_known`].
/// Returns how many went.
pub(crate) async fn sweep(inner: &Inner, max_age: Duration) -> Result<u64> {
    let cutoff = cutoff_millis(max_age);
    let old = inner
        .store
        .list(Some(&inner.keys.staging_dir()))
        .try_filter(move |m| futures::future::ready(last_known(m) < cutoff))
        .map_ok(|m| m.location)
        .boxed();
    // Counted as they go, not collected.
    inner
        .store
        .delete_stream(old)
        .try_fold(0u64, |n, _| futures::future::ready(Ok(n + 1)))
        .await
        .map_err(|e| backend_error(&inner.describe, "sweep staging objects", e))
}

/// When a staging object was last known to be in use, in unix milliseconds: the later of the time
/// in its name (`<unix ms>-<random>`: its upload's start, on the putting host's clock) and its
/// Last-Modified (the server's), as the Manta sweep does, so that neither a putting host's clock
/// behind the server's nor a server dating the object early makes a young object look old. An
/// object not named like one has its Last-Modified alone.
///
/// Both can be the upload's start: AWS dates a multipart object by its upload's start, not its
/// completion, and a staging object is listed only once complete, a moment before its copy. So
/// the object's upload is allowed its time too, at 1 MiB/s (as the Manta client allows a body):
/// a 5 GiB staging upload of 85 minutes is not swept before its copy. (A slower upload could
/// still lose its object between completion and copy; the copy then fails and the put reports an
/// error, with nothing stored under the blob's key.)
fn last_known(m: &ObjectMeta) -> i64 {
    let modified = m.last_modified.timestamp_millis();
    let named = m
        .location
        .filename()
        .and_then(|name| name.split('-').next())
        .and_then(|ms| ms.parse::<i64>().ok());
    let upload_millis = i64::try_from(m.size / 1024 / 1024 * 1000).unwrap_or(i64::MAX);
    named
        .map_or(modified, |named| named.max(modified))
        .saturating_add(upload_millis)
}

/// `now - max_age` in unix milliseconds.
fn cutoff_millis(max_age: Duration) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    now - max_age.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: text.to_string().into(),
        }
    }

    #[test]
    fn a_staging_object_is_allowed_its_upload_time_before_it_is_old() {
        let meta = |name: &str, modified: u64, size: u64| ObjectMeta {
            location: Path::from(format!("staging/{name}")),
            last_modified: (UNIX_EPOCH + Duration::from_millis(modified)).into(),
            size,
            e_tag: None,
            version: None,
        };
        // The later of the name's time and Last-Modified.
        assert_eq!(last_known(&meta("5000-ab", 3000, 0)), 5000);
        assert_eq!(last_known(&meta("5000-ab", 9000, 0)), 9000);
        assert_eq!(last_known(&meta("not-a-time", 9000, 0)), 9000);
        // Plus a second a MiB: 5 GiB dated at its upload's start stays young for 85 minutes more.
        let big = meta("0-ab", 0, 5 << 30);
        assert_eq!(last_known(&big), 5 * 1024 * 1000);
    }

    #[test]
    fn refused_by_status_not_by_digits_in_the_uri() {
        let uri = "Error performing PUT http://127.0.0.1:9000/b/blobs/50/501405x in 1.405s";
        let said = |status: &str| {
            failed(&format!(
                "{uri} - Server returned non-2xx status code: {status}: <Error/>"
            ))
        };
        assert!(refused(&failed(&format!(
            "{uri} - Server returned non-2xx status code: 501 Not Implemented: <Error><Code>NotImplemented</Code></Error>"
        ))));
        assert!(refused(&said("405 Method Not Allowed")));
        assert!(refused(&said("400 Bad Request")));
        assert!(!refused(&said("503 Service Unavailable")));
        assert!(!refused(&said("500 Internal Server Error")));
        assert!(!refused(&failed(&format!("{uri} - error sending request"))));
        // An error in the body of a 200: the S3 code decides.
        assert!(refused(&failed(&format!(
            "{uri} - Server returned error response: <Error><Code>NotImplemented</Code></Error>"
        ))));
        assert!(!refused(&failed(&format!(
            "{uri} - Server returned error response: <Error><Code>InternalError</Code></Error>"
        ))));
    }
}
