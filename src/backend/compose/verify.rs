//! Reading a whole blob from one backend and checking it against its key, so that a wrapper can
//! decide what to do with a bad copy (try another replica, refetch) before anyone sees a byte.
//!
//! A wrapper must know a copy is good before it serves it, so it holds the copy while it checks:
//! in memory up to [`MEMORY_MAX`] (nearly every npm tarball: the corpus median is tens of
//! kilobytes), and beyond that in an unlinked temporary file, so that a multi-gigabyte blob read
//! through `Replicated` or `Cached` costs disk, not memory. The file vanishes when the last
//! [`Held`] handle to it is dropped, whatever happens to the process.
//!
//! Public for those who write a wrapper of their own; a store's users need none of it.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::backend::{Backend, BlobKey, ByteStream};
use crate::integrity::{Algorithm, DigestSet, Digests, MultiHasher};
use crate::task::blocking;
use crate::{Error, Result};

/// Above this size, hashing moves off the async worker threads.
const BLOCKING_HASH_THRESHOLD: usize = 256 * 1024;
/// Largest blob a wrapper holds in memory; larger ones go to a temporary file.
pub const MEMORY_MAX: u64 = 16 << 20;
/// Bytes gathered before one blocking write to (or read from) the temporary file.
const FILE_CHUNK: usize = 1 << 20;

/// A blob's bytes held by a wrapper: cheap to clone, readable any number of times.
#[derive(Debug, Clone)]
pub enum Held {
    /// Small blobs.
    Memory(Bytes),
    /// Blobs over [`MEMORY_MAX`], in an unlinked temporary file.
    File {
        /// The file, shared by every clone (it is closed, and its space freed, with the last).
        file: Arc<std::fs::File>,
        /// The blob's size.
        len: u64,
    },
}

impl Held {
    /// The blob's size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Held::Memory(b) => b.len() as u64,
            Held::File { len, .. } => *len,
        }
    }

    /// Whether the blob is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in `range` (within `0..len`) as a stream of chunks.
    pub fn stream(&self, range: Range<u64>) -> ByteStream {
        match self {
            // In bounds: callers check `range` against `len` first.
            Held::Memory(b) => {
                let part = b.slice(range.start as usize..range.end as usize);
                futures::stream::iter([Ok(part)]).boxed()
            }
            Held::File { file, .. } => {
                let file = file.clone();
                futures::stream::unfold(range, move |r| {
                    let file = file.clone();
                    async move {
                        if r.start >= r.end {
                            return None;
                        }
                        let n = (r.end - r.start).min(FILE_CHUNK as u64) as usize;
                        let at = r.start;
                        match blocking(move || read_at(&file, at, n)).await {
                            Ok(chunk) => Some((Ok(chunk), at + n as u64..r.end)),
                            // End the stream after the error.
                            Err(e) => Some((Err(e), r.end..r.end)),
                        }
                    }
                })
                .boxed()
            }
        }
    }
}

fn read_at(file: &std::fs::File, at: u64, n: usize) -> Result<Bytes> {
    let mut buf = vec![0u8; n];
    match crate::backend::positioned::read_exact_at(file, &mut buf, at) {
        Ok(()) => Ok(Bytes::from(buf)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Error::InvalidInput(
            "a held blob's temporary file is shorter than the blob".into(),
        )),
        Err(e) => Err(temp_io("reading a held blob's temporary file", e)),
    }
}

/// An I/O error on a held blob's temporary file (unlinked: only its directory can be named).
fn temp_io(op: &'static str, e: std::io::Error) -> Error {
    Error::io(op, std::env::temp_dir(), e)
}

/// What reading one blob from one backend found.
#[derive(Debug)]
pub enum Fetched {
    /// The bytes hash to the key.
    Good(Held),
    /// The backend does not have the blob.
    Missing,
    /// The bytes do not hash to the key (rot, truncation, a lying server); `found` says what they
    /// hash to.
    Bad(Held, String),
}

/// Reads `key` whole from `backend` and verifies it (sha512 against the key). The copy is held
/// in memory or, above [`MEMORY_MAX`], in a temporary file (see the module docs).
pub async fn fetch_verified(backend: &dyn Backend, key: &BlobKey) -> Result<Fetched> {
    Ok(fetch(backend, key, &[Algorithm::Sha512]).await?.0)
}

/// [`fetch_verified`] for a copy that is to be stored again (a cache fill, a read-repair): the
/// sha1 and blake3 a backend records are computed in the same pass as the sha512 that verifies,
/// so the bytes are hashed once, not once to verify and again to store. The digests come with a
/// good copy only.
pub async fn fetch_for_copy(
    backend: &dyn Backend,
    key: &BlobKey,
) -> Result<(Fetched, Option<Digests>)> {
    let (fetched, set) = fetch(backend, key, &Digests::ALGORITHMS).await?;
    let digests = match (&fetched, set) {
        (Fetched::Good(_), Some(set)) => Some(set.digests()?),
        _ => None,
    };
    Ok((fetched, digests))
}

/// Reads and hashes `key` with `algorithms` (sha512 among them), in one pass.
async fn fetch(
    backend: &dyn Backend,
    key: &BlobKey,
    algorithms: &[Algorithm],
) -> Result<(Fetched, Option<DigestSet>)> {
    let Some(got) = backend.get(key, None).await? else {
        return Ok((Fetched::Missing, None));
    };
    // A member that streams more than the size it claimed is lying (or broken): the read stops
    // as soon as it goes past that size, so such a copy costs at most one chunk more than it
    // claimed, not whatever (possibly endless) stream the member sends.
    let (held, set) = if got.size <= MEMORY_MAX {
        let mut buf = BytesMut::with_capacity(got.size as usize);
        let mut stream = got.stream;
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
            if buf.len() as u64 > got.size {
                return Ok((too_long(Held::Memory(buf.freeze()), got.size), None));
            }
        }
        let bytes = buf.freeze();
        let set = hash_with(bytes.clone(), algorithms).await?;
        (Held::Memory(bytes), set)
    } else {
        match spool(got.stream, algorithms, got.size).await? {
            Spooled::Whole(held, set) => (held, set),
            Spooled::TooLong(held) => return Ok((too_long(held, got.size), None)),
        }
    };
    let size = held.len();
    let fetched = match set.get(Algorithm::Sha512) {
        Some(h) if h.digest() == key.as_bytes() && size == got.size => Fetched::Good(held),
        Some(h) => Fetched::Bad(held, format!("{h} ({size} bytes)")),
        None => return Err(Error::InvalidInput("sha512 was not computed".into())),
    };
    Ok((fetched, Some(set)))
}

/// A copy that went on past the size its backend claimed, cut short where that was noticed.
fn too_long(held: Held, claimed: u64) -> Fetched {
    Fetched::Bad(held, format!("more than the {claimed} bytes claimed"))
}

/// What [`spool`] wrote.
enum Spooled {
    /// The whole stream, and its hashes.
    Whole(Held, DigestSet),
    /// The stream went past the size claimed; what was read of it.
    TooLong(Held),
}

/// Writes `stream` to an unlinked temporary file, hashing it (with `algorithms`) on the way, with
/// at most about [`FILE_CHUNK`] bytes in memory; stops once more than `claimed` bytes came.
async fn spool(mut stream: ByteStream, algorithms: &[Algorithm], claimed: u64) -> Result<Spooled> {
    struct Spool {
        file: std::fs::File,
        hasher: MultiHasher,
        len: u64,
    }
    fn flush(mut s: Spool, batch: Bytes) -> Result<Spool> {
        use std::io::Write;
        s.hasher.update(&batch);
        s.file
            .write_all(&batch)
            .map_err(|e| temp_io("writing a held blob's temporary file", e))?;
        s.len += batch.len() as u64;
        Ok(s)
    }
    let algorithms = algorithms.to_vec();
    let mut s = blocking(move || {
        let file = tempfile::tempfile()
            .map_err(|e| temp_io("creating a temporary file for a held blob", e))?;
        Ok(Spool {
            file,
            hasher: MultiHasher::new(&algorithms),
            len: 0,
        })
    })
    .await?;
    let mut batch = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        batch.extend_from_slice(&chunk?);
        if s.len + batch.len() as u64 > claimed {
            let rest = batch.split().freeze();
            let s = blocking(move || flush(s, rest)).await?;
            let held = Held::File {
                file: Arc::new(s.file),
                len: s.len,
            };
            return Ok(Spooled::TooLong(held));
        }
        if batch.len() >= FILE_CHUNK {
            let full = batch.split().freeze();
            s = blocking(move || flush(s, full)).await?;
        }
    }
    let last = batch.freeze();
    let s = blocking(move || flush(s, last)).await?;
    let held = Held::File {
        file: Arc::new(s.file),
        len: s.len,
    };
    Ok(Spooled::Whole(held, s.hasher.finalize()))
}

/// sha512, sha1 and blake3 of `held`: what a backend records when the bytes are stored again.
pub async fn digests(held: &Held) -> Result<Digests> {
    match held {
        Held::Memory(bytes) => hash_with(bytes.clone(), &Digests::ALGORITHMS)
            .await?
            .digests(),
        Held::File { file, len } => {
            // One blocking task reads and hashes the whole file, chunk by chunk.
            let (file, len) = (file.clone(), *len);
            blocking(move || {
                let mut h = MultiHasher::new(&Digests::ALGORITHMS);
                let mut at = 0;
                while at < len {
                    let n = (len - at).min(FILE_CHUNK as u64) as usize;
                    h.update(&read_at(&file, at, n)?);
                    at += n as u64;
                }
                h.finalize().digests()
            })
            .await
        }
    }
}

async fn hash_with(bytes: Bytes, algorithms: &[Algorithm]) -> Result<DigestSet> {
    let large = bytes.len() > BLOCKING_HASH_THRESHOLD;
    let algorithms = algorithms.to_vec();
    let run = move || {
        let mut h = MultiHasher::new(&algorithms);
        h.update(&bytes);
        Ok(h.finalize())
    };
    if large {
        blocking(run).await
    } else {
        run()
    }
}

/// A verified held blob served as a [`GetResult`](crate::backend::GetResult), cut to `range`.
pub(super) fn slice(held: Held, range: Option<Range<u64>>) -> Result<crate::backend::GetResult> {
    let size = held.len();
    let range = range.unwrap_or(0..size);
    crate::backend::check_range(&range, size)?;
    Ok(crate::backend::GetResult {
        size,
        stream: held.stream(range),
        digests: None,
    })
}
