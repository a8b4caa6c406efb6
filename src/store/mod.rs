//! The public API: a content-addressed store of verified blobs over any [`Backend`].

mod alias;
mod batch;
mod found;
mod fsck;
mod in_order;
mod info;
mod input;
mod inspect;
mod late;
mod put;
mod read;

use std::ops::Range;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;

use crate::backend::{Backend, BlobKey, BlobStat, GetResult};
use crate::integrity::{Algorithm, Hash, Integrity};
use crate::{Error, Result};

pub use fsck::{CorruptBlob, FsckOptions, FsckReport};
pub use info::BlobInfo;
pub use input::file_input;
pub(crate) use late::{all_hashes, Expectations, LateExpectations};
pub use put::{PutOptions, PutOutcome};
pub use read::BlobStream;

/// A content-addressed store. Cheap to clone (an `Arc` inside), `Send + Sync`.
///
/// ```
/// # #[cfg(feature = "memory")] // `Store::memory`
/// # tokio_test_block_on(async {
/// use tarvault::{Store, PutOptions, Integrity};
///
/// let store = Store::memory();
/// let put = store.put_bytes(&b"hello"[..], &PutOptions::default()).await?;
/// assert_eq!(put.digests.shasum(), "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d");
///
/// // Look it up by npm's integrity or by its legacy shasum; either way the bytes are verified.
/// let by_sha1 = Integrity::parse_address("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d")?;
/// let bytes = store.get(&by_sha1).await?.bytes().await?;
/// assert_eq!(&bytes[..], b"hello");
/// # Ok::<(), tarvault::Error>(())
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Store {
    backend: Arc<dyn Backend>,
    /// The backend's [`describe`](Backend::describe), taken once: what a read found corrupt names.
    name: Arc<str>,
    verification: Verification,
}

/// How reads are verified. Every byte is checked either way; the modes differ in what against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verification {
    /// Against the blake3 digest recorded when the blob was verified on its way in, where the
    /// backend keeps such records itself ([`Backend::recorded_digests_trusted`]); otherwise as
    /// `Full`. blake3 runs at several GB/s, so verified reads cost little more than plain reads.
    /// A read by sha1 or blake3 is checked against that hash (the record is no witness for the
    /// alias entry that led to it: they are written together).
    #[default]
    Fast,
    /// Against the address itself (sha512, plus the sha1 or blake3 the caller asked by).
    Full,
}

impl Store {
    /// A store over any backend.
    pub fn new(backend: impl Backend) -> Store {
        Store::from_arc(Arc::new(backend))
    }

    /// A store over a shared backend.
    pub fn from_arc(backend: Arc<dyn Backend>) -> Store {
        Store {
            name: backend.describe().into(),
            backend,
            verification: Verification::default(),
        }
    }

    /// The same store with another read [`Verification`] mode.
    pub fn with_verification(mut self, verification: Verification) -> Store {
        self.verification = verification;
        self
    }

    /// An in-memory store.
    #[cfg(feature = "memory")]
    pub fn memory() -> Store {
        Store::new(crate::backend::memory::MemoryBackend::new())
    }

    /// A filesystem store at `path` with default options (fsync on), opened on the calling
    /// thread: opening creates directories and sweeps temp files, so async code calls
    /// [`Store::open`] instead, which does that on the blocking pool.
    #[cfg(feature = "fs")]
    pub fn open_fs(path: impl AsRef<std::path::Path>) -> Result<Store> {
        Ok(Store::new(crate::backend::fs::FsBackend::open(
            path,
            Default::default(),
        )?))
    }

    /// The backend underneath.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// What a read of `key` is verified against: its sha512 and the hash the caller asked by when
    /// that is another algorithm (a wrong alias must not serve the wrong bytes). In
    /// [`Verification::Fast`] on a backend with trusted records: the hash asked by alone, for a
    /// read by sha1 or blake3, and otherwise the recorded blake3 once the record is seen to agree
    /// with the key. A read by alias is not checked against the record: the record sits beside
    /// the alias entry that led to the blob (on the fs, in the same row), so a wrong entry comes
    /// with a record that agrees with it, and only the bytes can tell. The same on a backend that
    /// verifies its reads whole ([`Backend::verifies_reads_whole`]: a cache tier, replicas): it has
    /// checked the bytes against the key, and vouches for the record it hands out with them.
    /// Where it hands out the very bytes it checked, held in memory
    /// ([`GetResult::verified_whole`]): the hash asked by alone, or nothing but their size.
    fn checks(&self, key: &BlobKey, asked: Option<Hash>, got: &GetResult) -> Vec<Hash> {
        let fast = self.verification == Verification::Fast;
        if fast && got.verified_whole.is_some() && self.backend.verifies_reads_whole().is_some() {
            return asked.into_iter().collect();
        }
        let record = got.digests.as_ref();
        let vouched = self.backend.recorded_digests_trusted().is_some()
            || self.backend.verifies_reads_whole().is_some();
        if fast && vouched {
            if let Some(asked) = asked {
                return vec![asked];
            }
            if let Some(d) = record.filter(|d| d.sha512 == *key.as_bytes()) {
                return vec![d.hash(Algorithm::Blake3)];
            }
        }
        let mut expect = vec![key.hash()];
        expect.extend(asked);
        expect
    }

    /// Reads a blob as a stream verified as it is read.
    pub async fn get(&self, address: &Integrity) -> Result<BlobStream> {
        self.read(address, None).await
    }

    /// Reads a byte range of a blob. The whole blob is still hashed, so the range is verified too.
    pub async fn get_range(&self, address: &Integrity, range: Range<u64>) -> Result<BlobStream> {
        self.read(address, Some(range)).await
    }

    async fn read(&self, address: &Integrity, range: Option<Range<u64>>) -> Result<BlobStream> {
        let not_found = || Error::NotFound {
            address: address.to_string(),
        };
        let (key, expect, got) = match self.get_by_sha512(address).await? {
            Some(found) => found,
            None => self.get_by_alias(address).await?.ok_or_else(not_found)?,
        };
        // Name the blob by what the caller asked for, and by its sha512 when that was something else.
        let label = if address.get(Algorithm::Sha512).is_some() {
            address.to_string()
        } else {
            format!("{address} ({key})")
        };
        verified(got, range, expect, label, &self.name).await
    }

    /// Reads a whole blob from the store of record, around any cache tier
    /// ([`Backend::get_uncached`]), for a pass over the store's keys such as `tarvault copy`
    /// makes: the remote's copy is what is read, and the cache is neither read nor filled.
    /// Verified as [`Store::get`]'s reads are, always against the sha512.
    pub async fn get_uncached(&self, key: &BlobKey) -> Result<BlobStream> {
        let Some(got) = self.backend.get_uncached(key).await? else {
            return Err(Error::NotFound {
                address: key.to_string(),
            });
        };
        verified(got, None, vec![key.hash()], key.to_string(), &self.name).await
    }

    /// A read of the blob `key`, which the caller found by the sha1 or blake3 hash `asked` (an
    /// HTTP server that needed the key first, for its ETag): one backend `get`, and the bytes are
    /// verified against `asked` too, as [`Store::get`] by that hash would.
    #[cfg(feature = "server")]
    pub(crate) async fn read_resolved(
        &self,
        key: BlobKey,
        asked: Hash,
        range: Option<Range<u64>>,
    ) -> Result<BlobStream> {
        let label = format!("{asked} ({key})");
        let Some(got) = self.backend.get(&key, None).await? else {
            return Err(Error::NotFound {
                address: asked.to_string(),
            });
        };
        let expect = self.checks(&key, Some(asked), &got);
        verified(got, range, expect, label, &self.name).await
    }

    /// A read by sha512 in one backend request: the key is the address, so one `get` both finds and
    /// opens the blob (and, on a backend that has it at hand, brings its record for a fast check).
    /// On a remote backend that halves the requests of a read; on the filesystem it is one trip to
    /// the blocking pool. `None` means the address has no sha512 (a lookup by alias).
    async fn get_by_sha512(
        &self,
        address: &Integrity,
    ) -> Result<Option<(BlobKey, Vec<Hash>, GetResult)>> {
        if address.get(Algorithm::Sha512).is_none() {
            return Ok(None);
        }
        for h in address.all_of(Algorithm::Sha512) {
            if let Some(key) = BlobKey::from_hash(h) {
                if let Some(got) = self.backend.get(&key, None).await? {
                    let expect = self.checks(&key, None, &got);
                    return Ok(Some((key, expect, got)));
                }
            }
        }
        Err(Error::NotFound {
            address: address.to_string(),
        })
    }

    /// A read by sha1 or blake3: the index names the key, and one backend `get` both checks the
    /// blob is there and opens it (no separate `head`). The bytes are verified against the hash
    /// asked by too, so a wrong index entry cannot serve the wrong blob.
    async fn get_by_alias(
        &self,
        address: &Integrity,
    ) -> Result<Option<(BlobKey, Vec<Hash>, GetResult)>> {
        for h in alias_hashes(address)? {
            // An alias may outlive its blob (deleted, quarantined): `get` says whether it is there.
            if let Some(key) = self.backend.resolve_alias(h).await? {
                if let Some(got) = self.backend.get(&key, None).await? {
                    let expect = self.checks(&key, Some(h.clone()), &got);
                    return Ok(Some((key, expect, got)));
                }
            }
        }
        Ok(None)
    }

    /// Whether a blob is stored under the address. By sha512, without reading it. By sha1 or
    /// blake3, the blob the alias index names is first confirmed to have that hash, as a read by
    /// it is: by reading it whole and hashing it (on S3, Manta or HTTP a `GET` of the blob where a
    /// `HEAD` would do for a sha512). A blob that does not have it is an error of kind `Corrupt`, not `false`: the index
    /// entry is wrong, and the blob asked for may be stored all the same (`tarvault fsck` rebuilds
    /// the entry).
    pub async fn contains(&self, address: &Integrity) -> Result<bool> {
        Ok(self.locate(address, alias::Confirm::Read).await?.is_some())
    }

    /// Facts about a stored blob. By sha512, without reading it; by sha1 or blake3, confirmed as
    /// [`contains`](Self::contains) says (which may read the blob).
    pub async fn stat(&self, address: &Integrity) -> Result<BlobInfo> {
        let (key, st) = self
            .locate(address, alias::Confirm::Read)
            .await?
            .ok_or_else(|| Error::NotFound {
                address: address.to_string(),
            })?;
        Ok(BlobInfo {
            key,
            size: st.size,
            modified: st.modified,
            digests: st.digests,
        })
    }

    /// Deletes a blob. Returns whether it was there. By sha1 or blake3, the blob the alias index
    /// names is read and hashed first, whatever its record says (a delete cannot be undone, and
    /// the record sits in the same index as the entry), and deleted only if it has that hash;
    /// otherwise nothing is deleted and the error is of kind `Corrupt` (the blob asked for may be
    /// stored under its own key, with only its entry wrong). That costs one read of the blob; a
    /// delete by sha512 reads nothing.
    pub async fn delete(&self, address: &Integrity) -> Result<bool> {
        match self.locate(address, alias::Confirm::Read).await? {
            Some((key, _)) => self.backend.delete(&key).await,
            None => Ok(false),
        }
    }

    /// Every stored blob's key. Like every stream a store returns, it is fused: polled again after
    /// its end, it says `None` again.
    pub fn list(&self) -> BoxStream<'static, Result<BlobKey>> {
        self.backend.list().fuse().boxed()
    }

    /// Every stored blob with its facts, in one pass where the backend can (the fs backend stats
    /// and looks up each record on its walker's thread; an object store heads each blob, 16 at a
    /// time, for its digests).
    pub fn list_info(&self) -> BoxStream<'static, Result<BlobInfo>> {
        info_of(self.backend.clone().list_stat())
    }

    /// Every stored blob with its size and time, without its digests unless they come free: from
    /// an object store's listing alone, with no request per blob (see [`Backend::list_meta`]).
    pub fn list_meta(&self) -> BoxStream<'static, Result<BlobInfo>> {
        info_of(self.backend.clone().list_meta())
    }
}

/// A store's [`BlobInfo`]s from a backend's [`BlobStat`]s, fused like every stream a store returns.
fn info_of(stats: BoxStream<'static, Result<BlobStat>>) -> BoxStream<'static, Result<BlobInfo>> {
    stats
        .map(|st| {
            st.map(|st| BlobInfo {
                key: st.key,
                size: st.size,
                modified: st.modified,
                digests: st.digests,
            })
        })
        .fuse()
        .boxed()
}

/// The hashes of an address (without sha512) that name a blob through the alias index: those of
/// its strongest algorithm, which alone decides what the address names, as in npm's `ssri` and as
/// a put with this address as its expectation checks. So a blake3 that names no stored blob does
/// not fall back to a sha1 beside it (that would read, or delete, a blob whose blake3 is not the
/// one asked for). An address whose strongest hash is one tarvault neither indexes nor records
/// (sha256, sha384) cannot be looked up: which blob it names could not be told without reading.
fn alias_hashes(address: &Integrity) -> Result<Vec<&Hash>> {
    let strongest = address.strongest();
    if matches!(strongest, Algorithm::Blake3 | Algorithm::Sha1) {
        return Ok(address.all_of(strongest).collect());
    }
    Err(Error::invalid_integrity(
        &address.to_string(),
        format!(
            "blobs are looked up by sha512, blake3 or sha1, and the strongest hash of this \
             address is {strongest}"
        ),
    ))
}

/// The verifying stream over what a backend `get` returned, for `range` (the whole blob by
/// default).
///
/// A range past the size the backend reports is the caller's mistake if the blob's record agrees
/// on that size; otherwise only once the blob has been read and verified whole: a copy cut short,
/// or a backend that lies about the size, is `Corrupt`, not a bad range.
async fn verified(
    got: GetResult,
    range: Option<Range<u64>>,
    expect: Vec<Hash>,
    label: String,
    backend: &Arc<str>,
) -> Result<BlobStream> {
    let range = range.unwrap_or(0..got.size);
    let size_recorded = got.digests.is_some_and(|d| d.size == got.size);
    if range.end > got.size && !size_recorded {
        let mut whole = read::verify(
            got.stream,
            got.size,
            0..got.size,
            expect,
            label,
            backend.clone(),
        );
        while let Some(chunk) = whole.next().await {
            chunk?;
        }
        // Whole and good: the range is the caller's.
        return Err(crate::backend::range_outside(&range, got.size));
    }
    crate::backend::check_range(&range, got.size)?;
    Ok(read::verify(
        got.stream,
        got.size,
        range,
        expect,
        label,
        backend.clone(),
    ))
}

/// Puts `n` small distinct blobs (`blob 0`, `blob 1`, …) into `store`: their digests, in order.
/// For tests.
#[cfg(all(test, feature = "memory"))]
pub(crate) async fn put_numbered(store: &Store, n: u32) -> Vec<crate::Digests> {
    let mut out = Vec::new();
    for i in 0..n {
        let put = store
            .put_bytes(
                bytes::Bytes::from(format!("blob {i}")),
                &PutOptions::default(),
            )
            .await
            .expect("put");
        out.push(put.digests);
    }
    out
}
