//! Reading a whole blob from one backend and checking it against its key, so that a wrapper can
//! decide what to do with a bad copy (try another replica, refetch) before anyone sees a byte.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::backend::{Backend, BlobKey};
use crate::integrity::{Algorithm, Digests, HashSet, MultiHasher};
use crate::Result;

/// Above this size, hashing moves off the async worker threads.
const BLOCKING_HASH_THRESHOLD: usize = 256 * 1024;

/// What reading one blob from one backend found.
#[derive(Debug)]
pub enum Fetched {
    /// The bytes hash to the key.
    Good(Bytes),
    /// The backend does not have the blob.
    Missing,
    /// The bytes do not hash to the key (rot, truncation, a lying server); `found` says what they
    /// hash to.
    Bad(Bytes, String),
}

/// Reads `key` whole from `backend` and verifies it (sha512 against the key; see [`digests`] for
/// the other digests a copy needs when it is stored again).
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
    let sha512 = hash_with(bytes.clone(), &[Algorithm::Sha512]).await?;
    let size = bytes.len() as u64;
    match sha512.get(Algorithm::Sha512) {
        Some(h) if h.digest() == key.as_bytes() && size == got.size => Ok(Fetched::Good(bytes)),
        Some(h) => Ok(Fetched::Bad(bytes, format!("{h} ({size} bytes)"))),
        None => Err(crate::Error::InvalidInput("sha512 was not computed".into())),
    }
}

/// sha512, sha1 and blake3 of `bytes`: what a backend records when the bytes are stored again.
pub async fn digests(bytes: Bytes) -> Result<Digests> {
    hash_with(bytes, &Digests::ALGORITHMS).await?.digests()
}

async fn hash_with(bytes: Bytes, algorithms: &[Algorithm]) -> Result<HashSet> {
    let large = bytes.len() > BLOCKING_HASH_THRESHOLD;
    let algorithms = algorithms.to_vec();
    let run = move || {
        let mut h = MultiHasher::new(&algorithms);
        h.update(&bytes);
        Ok(h.finalize())
    };
    if large {
        tokio::task::spawn_blocking(run)
            .await
            .map_err(|e| crate::Error::InvalidInput(format!("hashing task failed: {e}")))?
    } else {
        run()
    }
}

/// A verified in-memory blob served as a [`GetResult`](crate::backend::GetResult), cut to `range`.
pub(super) fn slice(
    bytes: Bytes,
    range: Option<std::ops::Range<u64>>,
) -> Result<crate::backend::GetResult> {
    let size = bytes.len() as u64;
    let range = range.unwrap_or(0..size);
    crate::backend::check_range(&range, size)?;
    // In bounds: checked just above.
    let part = bytes.slice(range.start as usize..range.end as usize);
    Ok(crate::backend::GetResult {
        size,
        stream: futures::stream::iter([Ok(part)]).boxed(),
        digests: None,
    })
}
