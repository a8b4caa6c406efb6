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

use crate::backend::budget::{self, charged, ReadBudget};
use crate::backend::{Backend, BlobKey, BlobStat, ByteStream};
use crate::integrity::{Algorithm, DigestSet, Digests, MultiHasher};
use crate::task::blocking;
use crate::{Error, Result};

/// Above this size, hashing moves off the async worker threads.
const BLOCKING_HASH_THRESHOLD: usize = 256 * 1024;
/// Largest blob a wrapper holds in memory; larger ones go to a temporary file.
pub const MEMORY_MAX: u64 = 16 << 20;
/// Bytes of copies held in memory at once, by all wrappers of the process and by a server's
/// blobs verified whole before their head; once they are spent, a wrapper's copy over 64 KiB
/// goes to a temporary file as a larger one does, and a server reads its blob a second time to
/// send it. A copy is held for as long as its reader takes: a server's download of a blob read
/// through `Cached` or `Replicated` holds it until the client has taken the last byte, and a
/// thousand clients that stopped reading a 16 MiB blob would otherwise hold 16 GB. The default
/// of [`set_held_in_memory`].
pub const HELD_IN_MEMORY: u64 = 256 << 20;
/// Bytes gathered before one blocking write to (or read from) the temporary file.
const FILE_CHUNK: usize = 1 << 20;

/// Sets the process's budget for copies held in memory ([`HELD_IN_MEMORY`] until called): lower
/// it to bound what stalled downloads and concurrent fills can hold, at the cost of temporary
/// files for wrappers and a second read of each blob a server verifies before its head; 0 holds
/// nothing. Applies to the copies taken after the call.
pub fn set_held_in_memory(bytes: u64) {
    budget::held().set_limit(bytes);
}

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
                        // A chunk charged to the held budget, or a small one once it is spent.
                        let want = (r.end - r.start).min(FILE_CHUNK as u64) as usize;
                        let (n, charge) = budget::held().chunk(want);
                        let at = r.start;
                        let read = move || read_at(&file, at, n).map(|b| charged(b, charge));
                        match blocking(read).await {
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

/// Which of a backend's reads a fetch makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// [`Backend::get`]: what a reader is served, through any cache tier (and filling it).
    Served,
    /// [`Backend::get_uncached`]: the store of record's copy, for a pass over the store (fsck,
    /// a replicated store's repair), which must check that copy and not a cache tier's, and
    /// must not fill a tier with every blob it reads. No record comes with such a read: the copy
    /// is checked against its key.
    OfRecord,
}

/// Reads `key` whole from `backend` and verifies it (sha512 against the key). The copy is held
/// in memory or, above [`MEMORY_MAX`], in a temporary file (see the module docs).
pub async fn fetch_verified(backend: &dyn Backend, key: &BlobKey, read: Read) -> Result<Fetched> {
    Ok(fetch(backend, key, &[Algorithm::Sha512], read).await?.0)
}

/// [`fetch_verified`] for a copy that is to be served, as a store's own read would check it: from
/// a backend whose records are trusted ([`Backend::recorded_digests_trusted`]: fs, memory) and
/// whose read brought the blob's record, against the record's blake3 (which hashes several times
/// faster than sha512) once the record is seen to name this key and size; otherwise against the
/// key. With a good copy, the record it was checked against, if it was: a store reading through
/// the wrapper then checks the bytes it serves against that blake3 too, where it would otherwise
/// hash them with sha512 a second time. A read [`OfRecord`](Read::OfRecord) brings no record and
/// is checked against the key, as scrubs and repairs must check it.
pub async fn fetch_checked(
    backend: &dyn Backend,
    key: &BlobKey,
    read: Read,
) -> Result<(Fetched, Option<Digests>)> {
    let (fetched, _, record) = fetch_within(
        backend,
        key,
        &[Algorithm::Sha512],
        budget::held(),
        read,
        true,
    )
    .await?;
    let record = record.filter(|_| matches!(fetched, Fetched::Good(_)));
    Ok((fetched, record))
}

/// [`fetch_verified`] for a copy that is to be stored again (a cache fill, a read-repair): the
/// sha1 and blake3 a backend records are computed in the same pass as the sha512 that verifies,
/// so the bytes are hashed once, not once to verify and again to store. The digests come with a
/// good copy only.
pub async fn fetch_for_copy(
    backend: &dyn Backend,
    key: &BlobKey,
    read: Read,
) -> Result<(Fetched, Option<Digests>)> {
    let (fetched, set) = fetch(backend, key, &Digests::ALGORITHMS, read).await?;
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
    read: Read,
) -> Result<(Fetched, Option<DigestSet>)> {
    let (fetched, set, _) =
        fetch_within(backend, key, algorithms, budget::held(), read, false).await?;
    Ok((fetched, set))
}

/// [`fetch`], holding the copy in memory only while `held_budget` has room for it; with
/// `by_record`, a [`Served`](Read::Served) copy is checked against a trusted record's blake3
/// where [`fetch_checked`] says, and that record returned.
async fn fetch_within(
    backend: &dyn Backend,
    key: &BlobKey,
    algorithms: &[Algorithm],
    held_budget: &Arc<ReadBudget>,
    read: Read,
    by_record: bool,
) -> Result<(Fetched, Option<DigestSet>, Option<Digests>)> {
    let got = match read {
        Read::Served => backend.get(key, None).await?,
        Read::OfRecord => backend.get_uncached(key).await?,
    };
    let Some(got) = got else {
        return Ok((Fetched::Missing, None, None));
    };
    let record = got.digests.filter(|d| {
        by_record
            && read == Read::Served
            && backend.recorded_digests_trusted().is_some()
            && d.sha512 == *key.as_bytes()
            && d.size == got.size
    });
    hold(got, key, algorithms, held_budget, record).await
}

/// Holds and hashes what a `get` of `key` returned (see [`fetch_within`]): with `algorithms`
/// and checked against the key, or, given a trusted `record`, with blake3 alone and checked
/// against the record's.
async fn hold(
    got: crate::backend::GetResult,
    key: &BlobKey,
    algorithms: &[Algorithm],
    held_budget: &Arc<ReadBudget>,
    record: Option<Digests>,
) -> Result<(Fetched, Option<DigestSet>, Option<Digests>)> {
    let (expected, algorithms) = match &record {
        Some(d) => (d.hash(Algorithm::Blake3), &[Algorithm::Blake3][..]),
        None => (key.hash(), algorithms),
    };
    // A member that streams more than the size it claimed is lying (or broken): the read stops
    // as soon as it goes past that size, so such a copy costs at most one chunk more than it
    // claimed, not whatever (possibly endless) stream the member sends.
    // In memory with its charge, or (a small copy once the budget is spent) without one.
    let in_memory = match usize::try_from(got.size) {
        Ok(size) if got.size <= MEMORY_MAX => held_budget.piece(size),
        _ => None,
    };
    let (held, set) = if let Some(charge) = in_memory {
        // Fused: an empty first answer is looked past below (a stream need not be pollable after its end).
        let mut stream = got.stream.fuse();
        let first = stream.next().await.transpose()?.unwrap_or_default();
        // Only a first chunk of the whole size is looked past: a longer one is cut off below.
        let whole = first.len() as u64 == got.size;
        let next = if whole {
            stream.next().await.transpose()?
        } else {
            None
        };
        let bytes = if whole && next.is_none() {
            // The whole blob in one chunk (an fs read of a blob up to 8 MiB, a memory backend's
            // bytes): held as it is, not copied, and left to the budget its reader charged it to.
            drop(charge);
            first
        } else {
            let mut buf = BytesMut::with_capacity(got.size as usize);
            let mut chunks =
                futures::stream::iter([Ok(first)].into_iter().chain(next.map(Ok))).chain(stream);
            while let Some(chunk) = chunks.next().await {
                buf.extend_from_slice(&chunk?);
                if buf.len() as u64 > got.size {
                    return Ok((too_long(Held::Memory(buf.freeze()), got.size), None, None));
                }
            }
            charged(buf.freeze(), charge)
        };
        let set = hash_with(bytes.clone(), algorithms).await?;
        (Held::Memory(bytes), set)
    } else {
        match spool(got.stream, algorithms, got.size).await? {
            Spooled::Whole(held, set) => (held, set),
            Spooled::TooLong(held) => return Ok((too_long(held, got.size), None, None)),
        }
    };
    let size = held.len();
    let fetched = match set.get(expected.algorithm()) {
        Some(h) if *h == expected && size == got.size => Fetched::Good(held),
        Some(h) => Fetched::Bad(held, format!("{h} ({size} bytes)")),
        None => {
            let what = format!("{} was not computed", expected.algorithm());
            return Err(Error::InvalidInput(what));
        }
    };
    Ok((fetched, Some(set), record))
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
    // blake3 alone (a copy checked against a trusted record) is hashed inline, as a store's own
    // read hashes it.
    let large = bytes.len() > BLOCKING_HASH_THRESHOLD && !Algorithm::hashed_inline(algorithms);
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

/// Whether a member's `head` of a copy names the blob's size: where the member keeps trusted
/// records, only with the copy's record, which it leaves out for a copy whose size is not the
/// record's (cut short, or grown); a `HEAD` must not advertise a damaged copy's size.
pub(super) fn size_confirmed(member: &dyn Backend, st: &BlobStat) -> bool {
    st.digests.is_some() || member.recorded_digests_trusted().is_none()
}

/// A good held blob served as a [`GetResult`](crate::backend::GetResult), cut to `range`, with
/// the digests the wrapper vouches for (see [`Backend::verifies_reads_whole`]: the trusted record
/// it was checked against, or what it computed from the bytes), and, held in memory, as
/// [`verified_whole`](crate::backend::GetResult::verified_whole). A copy in a temporary file is
/// read again as it is served, and checked again.
pub(super) fn slice(
    held: Held,
    range: Option<Range<u64>>,
    digests: Option<Digests>,
) -> Result<crate::backend::GetResult> {
    let size = held.len();
    let range = range.unwrap_or(0..size);
    crate::backend::check_range(&range, size)?;
    Ok(crate::backend::GetResult {
        size,
        stream: held.stream(range),
        digests,
        verified_whole: matches!(held, Held::Memory(_)).then(crate::backend::Vouched::new),
    })
}

/// The answer for a blob whose copy of `size` bytes the wrapper found bad (`found`: what it
/// hashed to) in `backend`, with no other copy good: its reader meets the verdict,
/// [`Error::Corrupt`], before any of its bytes. Handed on as bytes, a copy held in a temporary
/// file would reach a server's client chunk by chunk under a `200` before the store could hash
/// its end. A `range` outside the copy is refused as a bad range.
pub(super) fn refused(
    key: &BlobKey,
    size: u64,
    range: Option<Range<u64>>,
    found: &str,
    backend: String,
) -> Result<crate::backend::GetResult> {
    crate::backend::check_range(&range.unwrap_or(0..size), size)?;
    let e = Error::Corrupt {
        address: key.to_string(),
        backend,
        expected: key.hash().to_string(),
        actual: found.to_string(),
    };
    Ok(crate::backend::GetResult {
        size,
        stream: futures::stream::iter([Err(e)]).boxed(),
        digests: None,
        verified_whole: None,
    })
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::PutHint;

    /// Copies held in memory spend the budget; once it is spent, a copy over 64 KiB goes to a
    /// temporary file and a smaller one stays in memory; a dropped copy gives its share back.
    #[tokio::test]
    async fn held_copies_spend_the_budget_then_go_to_files() {
        let backend = MemoryBackend::new();
        let mut keys = Vec::new();
        for (len, seed) in [(3 << 20, 1u8), (100 << 10, 2), (10 << 10, 3)] {
            let data: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect();
            let mut hasher = MultiHasher::new(&Digests::ALGORITHMS);
            hasher.update(&data);
            let digests = hasher
                .finalize()
                .digests()
                .unwrap_or_else(|e| panic!("{e}"));
            let put = async {
                let mut writer = backend.begin_put(&PutHint::default()).await?;
                writer.write(Bytes::from(data)).await?;
                writer.commit(&digests).await
            };
            put.await.unwrap_or_else(|e| panic!("put: {e}"));
            keys.push(BlobKey::new(digests.sha512));
        }
        let budget = ReadBudget::new(3 << 20);
        let held = |fetched: Fetched| match fetched {
            Fetched::Good(held) => held,
            other => panic!("not good: {other:?}"),
        };
        // The memory backend's bytes in 64 KiB chunks, as a remote sends them (its one chunk
        // of the whole blob would be held as it is, costing no memory of its own).
        let get = |key| {
            let (backend, budget) = (backend.clone(), budget.clone());
            async move {
                let got = backend.get(&key, None).await.ok().flatten();
                let mut got = got.unwrap_or_else(|| panic!("{key} is stored"));
                let whole = got.stream.next().await.transpose().ok().flatten();
                let whole = whole.unwrap_or_else(|| panic!("{key}'s bytes"));
                let chunks: Vec<Result<Bytes>> = whole
                    .chunks(64 << 10)
                    .map(|c| Ok(whole.slice_ref(c)))
                    .collect();
                got.stream = futures::stream::iter(chunks).boxed();
                let fetched = hold(got, &key, &[Algorithm::Sha512], &budget, None)
                    .await
                    .map(|(fetched, _, _)| fetched)
                    .unwrap_or_else(|e| panic!("fetch: {e}"));
                held(fetched)
            }
        };
        let big = get(keys[0]).await;
        assert!(matches!(big, Held::Memory(_)), "room for 3 MiB");
        assert_eq!(budget.used(), 3 << 20);
        let second = get(keys[0]).await;
        assert!(matches!(second, Held::File { .. }), "no room for another");
        assert!(
            matches!(get(keys[1]).await, Held::File { .. }),
            "nor for 100 KiB"
        );
        let small = get(keys[2]).await;
        assert!(
            matches!(small, Held::Memory(_)),
            "10 KiB held in memory all the same"
        );
        assert_eq!(budget.used(), 3 << 20, "uncharged");
        drop(small);
        let kept = match &big {
            Held::Memory(b) => b.slice(..10),
            Held::File { .. } => unreachable!(),
        };
        drop(big);
        assert_eq!(budget.used(), 3 << 20, "a slice keeps the copy's share");
        drop(kept);
        assert_eq!(budget.used(), 0);
        assert!(matches!(get(keys[1]).await, Held::Memory(_)), "room again");
        drop(second);
        // Fetched whole in one chunk: held as it is, uncharged.
        let sha512 = &[Algorithm::Sha512];
        let whole = fetch_within(&backend, &keys[0], sha512, &budget, Read::Served, false).await;
        let whole = whole.map(|(fetched, _, _)| held(fetched));
        assert!(matches!(whole, Ok(Held::Memory(_))));
        assert_eq!(budget.used(), 0, "the backend's own bytes");
    }
}
