//! Reading a whole blob from one backend and checking it against its key, so that a wrapper can
//! decide what to do with a bad copy (try another replica, refetch) before anyone sees a byte.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::backend::{Backend, BlobKey};
use crate::integrity::{Digests, MultiHasher};
use crate::Result;

/// Above this size, hashing moves off the async worker threads.
const BLOCKING_HASH_THRESHOLD: usize = 256 * 1024;

/// What reading one blob from one backend found.
#[derive(Debug)]
pub enum Fetched {
    /// The bytes hash to the key; here are they and all their digests.
    Good(Bytes, Digests),
    /// The backend does not have the blob.
    Missing,
    /// The bytes do not hash to the key (rot, truncation, a lying server); `found` says what they
    /// hash to.
    Bad(Bytes, String),
}

/// Reads `key` whole from `backend` and verifies it (sha512 against the key, computing sha1 and
/// blake3 in the same pass for whoever stores it next).
///
/// The blob is held in memory: a wrapper must know a copy is good before it serves it, and npm
/// tarballs are small (the corpus median is tens of kilobytes, the largest tens of megabytes).
pub async fn fetch_verified(backend: &dyn Backend, key: &BlobKey) -> Result<Fetched> {
    let Some(got) = backend.get(key, None).await? else {
        return Ok(Fetched::Missing);
    };
    let mut buf = BytesMut::with_capacity(usize::try_from(got.size).unwrap_or(0).min(64 << 20));
    let mut stream = got.stream;
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
    }
    let bytes = buf.freeze();
    let digests = hash(bytes.clone()).await?;
    if digests.sha512 == *key.as_bytes() && digests.size == got.size {
        Ok(Fetched::Good(bytes, digests))
    } else {
        let found = format!("{} ({} bytes)", digests.integrity(), digests.size);
        Ok(Fetched::Bad(bytes, found))
    }
}

/// sha512, sha1 and blake3 of `bytes`.
pub(crate) async fn hash(bytes: Bytes) -> Result<Digests> {
    let large = bytes.len() > BLOCKING_HASH_THRESHOLD;
    let run = move || {
        let mut h = MultiHasher::standard();
        h.update(&bytes);
        h.finalize().digests()
    };
    if large {
        tokio::task::spawn_blocking(run)
            .await
            .map_err(|e| crate::Error::InvalidInput(format!("hashing task failed: {e}")))?
    } else {
        run()
    }
}
