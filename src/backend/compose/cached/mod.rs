//! [`Cached`]: a bounded local tier (fs or memory) in front of a remote backend.
//!
//! - **Read-through.** A read the local tier can answer never touches the remote. A miss fetches
//!   the blob from the remote, verifies it (sha512 against the key, and the sha1/blake3 aliases are
//!   computed in the same pass) and only then stores it locally, so the cache never holds bytes
//!   that were not checked. A local copy that no longer verifies is dropped and fetched again.
//! - **One fetch per blob.** Concurrent misses of the same blob share one remote fetch (a
//!   single-flight map of in-progress fills, `fill.rs`); the others wait for it and get the same
//!   bytes. The fill runs on a task of its own, so it finishes even if every reader waiting for it
//!   gives up.
//! - **Bounded.** The local tier holds at most `capacity` bytes; the least recently used blobs are
//!   evicted to make room (with an fs tier, each the least recently used of a sample of its
//!   record: [`CacheLedger::evict_to`]). A blob larger than the whole capacity is served but not
//!   kept.
//! - **A record that costs nothing to open.** What the local tier holds (each blob's size and last
//!   use) is kept by a [`CacheLedger`]: an fs tier's is a file beside its blobs, shared by every
//!   process serving from that tier, so that a start loads and lists nothing and the processes
//!   share one capacity; any other tier's is in memory (`lru.rs`). How it is written (off the
//!   async threads, uses in batches) is `record.rs`.
//! - **The local tier is never in the way.** An error from it (a read, a fill, an eviction, an
//!   alias lookup) is logged, counted in [`CacheStats::local_errors`], and the read goes on to the
//!   remote, which answers as if there were no cache.
//! - **Write-around.** Puts, deletes and listings go to the remote, the store of record; a put does
//!   not fill the cache (the first read does), so a bulk import does not flush what readers use.
//! - **A delete wins over a fill.** A fill that read the remote before a delete (or an eviction)
//!   of the same blob does not keep its copy: the delete marks the fills in flight stale, and a
//!   stale fill neither stores its copy nor is recorded (and removes a copy it already stored).
//!   With an fs tier this holds across processes too: a delete is noted in the shared record, and
//!   a fill that began before it drops its copy when it comes to record it.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::{BoxStream, TryStreamExt};
use serde::Serialize;

use self::fill::Flight;
use self::lru::MemoryLedger;
use self::record::Uses;
use super::fan_out::{rebuild_each, Filter};
use super::verify::{fetch_checked, refused, size_confirmed, slice, Fetched, Held, Read};
use crate::backend::{
    AgedDelete, AliasRebuild, Backend, BlobKey, BlobStat, BlobWriter, CacheLedger, GetResult,
    Misplaced, Presence, PutHint,
};
use crate::integrity::{Digests, Hash};
use crate::{Error, Result};

mod fill;
mod lru;
mod record;

/// Blobs recorded per transaction when a ledger takes in what the local tier already holds.
const ADOPT_CHUNK: usize = 1024;

/// How a [`Cached`] backend behaves.
#[derive(Debug, Clone)]
pub struct CachedOptions {
    /// Bytes the local tier may hold.
    pub capacity: u64,
}

impl Default for CachedOptions {
    fn default() -> Self {
        CachedOptions { capacity: 1 << 30 }
    }
}

/// Counters since the cache was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Reads answered by the local tier.
    pub hits: u64,
    /// Reads the local tier could not answer.
    pub misses: u64,
    /// Blobs fetched from the remote (at most one per blob per concurrent burst of misses).
    pub fetches: u64,
    /// Blobs evicted to stay within capacity.
    pub evictions: u64,
    /// Bytes held by the local tier now, as its record counts them (for an fs tier, the fills of
    /// every process using it).
    pub bytes: u64,
    /// Blobs held by the local tier now, counted the same way.
    pub blobs: u64,
    /// Errors from the local tier (each logged; the read was answered by the remote instead).
    pub local_errors: u64,
}

/// A read-through cache tier: verified fills, one fetch per blob, LRU-bounded, write-around (see
/// [`compose`](super)).
#[derive(Clone)]
pub struct Cached {
    inner: Arc<Inner>,
}

struct Inner {
    local: Arc<dyn Backend>,
    remote: Arc<dyn Backend>,
    capacity: u64,
    /// What `local` holds: each blob's size and last use.
    ledger: Arc<dyn CacheLedger>,
    /// Taken around a fill's check of its stale flag and its record (see [`Inner::recording`]).
    record: Mutex<()>,
    /// Uses noted and not recorded yet.
    uses: Mutex<Uses>,
    inflight: Mutex<HashMap<BlobKey, Flight>>,
    hits: AtomicU64,
    misses: AtomicU64,
    fetches: AtomicU64,
    evictions: AtomicU64,
    local_errors: AtomicU64,
}

impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached")
            .field("local", &self.inner.local)
            .field("remote", &self.inner.remote)
            .field("capacity", &self.inner.capacity)
            .finish_non_exhaustive()
    }
}

impl Cached {
    /// A cache of `remote` in `local`. The record of what `local` holds (each blob's size and last
    /// use) is the one `local` keeps beside its blobs ([`Backend::cache_ledger`]: a filesystem
    /// tier's, shared by every process using it, so that opening it loads nothing), or else one in
    /// memory. A record that has not seen the blobs already in `local` (a new one, or one in
    /// memory) records them from one streamed listing, oldest first by modification time; then
    /// the tier is evicted down to the capacity if need be.
    pub async fn new(
        local: Arc<dyn Backend>,
        remote: Arc<dyn Backend>,
        options: CachedOptions,
    ) -> Result<Cached> {
        let ledger = match local.cache_ledger() {
            Ok(Some(ledger)) => ledger,
            Ok(None) => Arc::new(MemoryLedger::default()) as Arc<dyn CacheLedger>,
            Err(e) => {
                tracing::warn!(local = %local.describe(), error = %e.report(),
                    "cannot open the cache tier's ledger; keeping one in memory");
                Arc::new(MemoryLedger::default())
            }
        };
        let cached = Cached {
            inner: Arc::new(Inner {
                local,
                remote,
                capacity: options.capacity,
                ledger,
                record: Mutex::new(()),
                uses: Mutex::new(Uses::default()),
                inflight: Mutex::new(HashMap::new()),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                fetches: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
                local_errors: AtomicU64::new(0),
            }),
        };
        if let Err(e) = cached.take_in().await {
            // Served all the same; the next start tries again.
            let inner = &cached.inner;
            inner.local_failed(&inner.local.describe(), &e, "cannot take in the cache tier");
        }
        Ok(cached)
    }

    /// Records the blobs the local tier holds if the record has not seen them, and evicts down
    /// to the capacity.
    async fn take_in(&self) -> Result<()> {
        let inner = &self.inner;
        if !inner.on_ledger(|l| l.adopted()).await? {
            let mut found = inner.local.clone().list_meta().try_chunks(ADOPT_CHUNK);
            while let Some(chunk) = found.try_next().await.map_err(|e| e.1)? {
                let chunk: Vec<_> = chunk
                    .into_iter()
                    .map(|st| (st.key, st.size, st.modified))
                    .collect();
                inner.on_ledger(move |l| l.adopt(&chunk)).await?;
            }
            inner.on_ledger(|l| l.set_adopted()).await?;
        }
        let capacity = inner.capacity;
        let victims = inner.on_ledger(move |l| l.evict_to(capacity, None)).await?;
        inner.drop_local(&victims).await;
        Ok(())
    }

    /// The local tier.
    pub fn local(&self) -> &Arc<dyn Backend> {
        &self.inner.local
    }

    /// The remote store.
    pub fn remote(&self) -> &Arc<dyn Backend> {
        &self.inner.remote
    }

    /// Counters and occupancy.
    pub fn stats(&self) -> CacheStats {
        let i = &self.inner;
        let (bytes, blobs) = i.ledger.totals().unwrap_or_else(|e| {
            i.local_failed(
                &i.local.describe(),
                &e,
                "cannot read the cache tier's totals",
            );
            (0, 0)
        });
        CacheStats {
            hits: i.hits.load(Ordering::Relaxed),
            misses: i.misses.load(Ordering::Relaxed),
            fetches: i.fetches.load(Ordering::Relaxed),
            evictions: i.evictions.load(Ordering::Relaxed),
            bytes,
            blobs,
            local_errors: i.local_errors.load(Ordering::Relaxed),
        }
    }

    /// Drops a blob from the local tier (the remote keeps it). Returns whether it was cached.
    /// A fill of the blob in progress is marked stale (it will not keep its copy), and later reads
    /// start a fill of their own rather than join it.
    pub async fn evict(&self, key: &BlobKey) -> Result<bool> {
        self.drop_copy(key, false).await
    }

    /// [`evict`](Self::evict); for a blob `deleted` from the remote, the record notes the delete,
    /// so that fills of it in flight in other processes sharing the local tier drop their copies.
    async fn drop_copy(&self, key: &BlobKey, deleted: bool) -> Result<bool> {
        if let Some(flight) = self.inner.inflight().remove(key) {
            flight.stale.store(true, Ordering::SeqCst);
        }
        let k = *key;
        let was = self
            .inner
            .clone()
            .recording(move |l| {
                let was = l.contains(&k)?;
                if deleted {
                    l.deleted(&k)?;
                } else {
                    l.remove(&k)?;
                }
                Ok(was)
            })
            .await
            .unwrap_or_else(|e| {
                // The copy goes all the same; its record is settled by eviction.
                self.inner
                    .local_failed(key, &e, "cannot update the cache tier's record");
                false
            });
        let deleted = self.inner.local.delete(key).await?;
        Ok(was || deleted)
    }

    /// The bytes of `key` from the local tier, if it holds a copy that verifies, with the record
    /// it was checked against (see [`fetch_checked`]).
    async fn read_local(&self, key: &BlobKey) -> Option<(Held, Option<Digests>)> {
        match fetch_checked(&*self.inner.local, key, Read::Served).await {
            Ok((Fetched::Good(bytes), record)) => {
                self.inner.used(key, bytes.len()).await;
                Some((bytes, record))
            }
            // A record without a copy (another process's eviction raced a use here) is left for
            // eviction to find: forgetting it on every miss would make each miss a write.
            Ok((Fetched::Missing, _)) => None,
            Ok((Fetched::Bad(_, found), _)) => {
                tracing::warn!(blob = %key, %found, "cached copy is corrupt; dropping it");
                self.inner.forget(key).await;
                if let Err(e) = self.inner.local.quarantine(key).await {
                    self.inner
                        .local_failed(key, &e, "cannot drop a corrupt cached copy");
                }
                None
            }
            Err(e) => {
                self.inner
                    .local_failed(key, &e, "cache tier read failed; reading the remote");
                None
            }
        }
    }
}

impl Inner {
    /// The local tier's immediate size (`size_now`) if it says the copy is there; `None`
    /// otherwise, for the caller to ask [`head`](Backend::head), which tries the remote: a copy
    /// the tier lacks, or cannot answer for, may be the remote's.
    fn held_now(
        &self,
        key: &BlobKey,
        answer: Option<Result<Option<u64>>>,
    ) -> Option<Result<Option<u64>>> {
        match answer? {
            Ok(Some(size)) => Some(Ok(Some(size))),
            Ok(None) => None,
            Err(e) => {
                self.local_failed(key, &e, "cache tier stat failed; asking the remote");
                None
            }
        }
    }

    /// Logs and counts an error of the local tier that the caller works around.
    fn local_failed(&self, key: &impl std::fmt::Display, error: &Error, what: &str) {
        self.local_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(blob = %key, local = %self.local.describe(), error = %error.report(), "{what}");
    }

    async fn drop_local(&self, victims: &[BlobKey]) {
        for v in victims {
            self.evictions.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.local.delete(v).await {
                self.local_failed(v, &e, "cache eviction failed");
            }
        }
    }
}

#[async_trait]
impl Backend for Cached {
    fn describe(&self) -> String {
        format!(
            "cached({} in front of {})",
            self.inner.local.describe(),
            self.inner.remote.describe()
        )
    }

    async fn begin_put(&self, hint: &PutHint) -> Result<Box<dyn BlobWriter>> {
        self.inner.remote.begin_put(hint).await
    }

    async fn commit_batch(
        &self,
        items: Vec<crate::backend::PendingBlob>,
    ) -> Vec<Result<crate::backend::Committed>> {
        // The writers are the remote's own.
        self.inner.remote.commit_batch(items).await
    }

    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<Option<GetResult>> {
        let mut fill = None;
        for _ in 0..2 {
            if let Some((bytes, record)) = self.read_local(key).await {
                self.inner.hits.fetch_add(1, Ordering::Relaxed);
                return slice(bytes, range, record).map(Some);
            }
            fill = self.fill(*key);
            if fill.is_some() {
                break;
            }
        }
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        let Some(fill) = fill else {
            // The record claims the blob but the local tier cannot read it (a record left behind
            // by a race with another process's eviction, or a copy that vanished): forget it, so
            // that the next read fills again, and serve from the remote directly.
            self.inner.forget(key).await;
            return match fetch_checked(&*self.inner.remote, key, Read::Served).await? {
                (Fetched::Missing, _) => Ok(None),
                (Fetched::Good(b), record) => slice(b, range, record).map(Some),
                (Fetched::Bad(b, found), _) => {
                    refused(key, b.len(), range, &found, self.inner.remote.describe()).map(Some)
                }
            };
        };
        // The remote's own error, of its own kind (a Config error for rejected credentials, not a
        // Backend one), whether this reader started the fill or joined it.
        let got = fill.await.map_err(Error::shared)?;
        // A good fill comes with the digests computed while verifying it; a bad one with what it
        // hashed to.
        got.map(|verdict| match verdict {
            Ok((b, digests)) => slice(b, range, digests),
            Err((size, found)) => refused(key, size, range, &found, self.inner.remote.describe()),
        })
        .transpose()
    }

    /// The remote's read as it is: no copy kept, and with neither the remote's record nor a
    /// vouch, for the caller checks it.
    async fn get_uncached(&self, key: &BlobKey) -> Result<Option<GetResult>> {
        let got = self.inner.remote.get_uncached(key).await?;
        Ok(got.map(|got| GetResult {
            digests: None,
            verified_whole: None,
            ..got
        }))
    }

    /// The local tier's, unless its copy has no record where its records are kept (an fs tier's
    /// copy whose size is not its record's: cut short, or grown), and then the remote's: a
    /// `HEAD` must not advertise a damaged copy's size.
    async fn head(&self, key: &BlobKey) -> Result<Option<BlobStat>> {
        match self.inner.local.head(key).await {
            Ok(Some(st)) if size_confirmed(&*self.inner.local, &st) => return Ok(Some(st)),
            Ok(Some(st)) => {
                let e = Error::Corrupt {
                    address: key.to_string(),
                    backend: self.inner.local.describe(),
                    expected: "the size of its record".into(),
                    actual: format!("{} bytes in the cache tier, and no record", st.size),
                };
                self.inner.local_failed(
                    key,
                    &e,
                    "cached copy's size unconfirmed; asking the remote",
                );
            }
            Ok(None) => {}
            Err(e) => self
                .inner
                .local_failed(key, &e, "cache tier head failed; asking the remote"),
        }
        self.inner.remote.head(key).await
    }

    /// The local tier's size when it holds a copy and can tell at once (an fs tier: one `stat`
    /// and its record); otherwise `None`, and [`head`](Backend::head) asks the remote. A copy
    /// without its record is not known verified: the tier gives no immediate answer for it, and
    /// the size is the remote's, as `head` says.
    fn size_now(&self, key: &BlobKey) -> Option<Result<Option<u64>>> {
        let held = self.inner.local.size_now(key);
        self.inner.held_now(key, held)
    }

    /// [`size_now`](Backend::size_now)'s "yes" (the local tier holds the copy with its record),
    /// not the tier's own `exists_now`: an fs tier's is one `stat`, which says yes for a copy
    /// without its record too, one that [`head`](Backend::head) does not take (it asks the
    /// remote) and a read checks before it serves. A revalidation must not get a 304 for a blob
    /// `head` and `GET` would answer 404 for (deleted from the remote, the record-less copy left
    /// in the tier). A 304 for a cached blob costs a `stat` and a lookup of the tier's record.
    fn exists_now(&self, key: &BlobKey) -> Option<Result<bool>> {
        self.size_now(key)
            .map(|size| size.map(|size| size.is_some()))
    }

    /// Reads serve a copy verified whole (the local tier's, or the remote's as it fills).
    fn verifies_reads_whole(&self) -> Option<crate::backend::Vouched> {
        Some(crate::backend::Vouched::new())
    }

    /// The remote first, then the local tier: a fill that read the remote before its delete is
    /// then still in flight, and the eviction marks it stale, so it does not bring the blob back.
    async fn delete(&self, key: &BlobKey) -> Result<bool> {
        let removed = self.inner.remote.delete(key).await;
        let cached = self.drop_copy(key, true).await?;
        Ok(removed? || cached)
    }

    /// The remote decides (it is what gc lists); the copy goes with the remote's blob, whether
    /// this delete took it or another process had (a tier copy of a blob gone from the store of
    /// record would go on being served here, as [`delete`](Backend::delete) knows).
    async fn delete_unless_written_since(
        &self,
        key: &BlobKey,
        cutoff: std::time::SystemTime,
    ) -> Result<AgedDelete> {
        let done = self
            .inner
            .remote
            .delete_unless_written_since(key, cutoff)
            .await?;
        if done != AgedDelete::Kept {
            self.drop_copy(key, true).await?;
        }
        Ok(done)
    }

    /// The remote's, whose `freshen` found the blob stored.
    async fn index_stored(&self, digests: &Digests) -> Result<()> {
        self.inner.remote.index_stored(digests).await
    }

    /// The remote's: it is what gc lists (the cache tier's own eviction goes by use).
    async fn freshen(&self, key: &BlobKey) -> Result<Presence> {
        self.inner.remote.freshen(key).await
    }

    /// The remote's: a copy in the local tier may outlive the remote's (deleted by another host,
    /// or by a store opened on the remote alone).
    async fn head_of_record(&self, key: &BlobKey) -> Result<Presence> {
        self.inner.remote.head_of_record(key).await
    }

    /// The remote's copy, the one [`head_of_record`](Backend::head_of_record) answers for.
    async fn copy_holds(&self, key: &BlobKey, record: &Digests) -> Result<bool> {
        self.inner.remote.copy_holds(key, record).await
    }

    fn list(&self) -> BoxStream<'static, Result<BlobKey>> {
        self.inner.remote.list()
    }

    /// The remote's listing, as [`list`](Backend::list) is (`list_stat` heads through the cache,
    /// whose local tier answers for the blobs it holds).
    fn list_meta(self: Arc<Self>) -> BoxStream<'static, Result<BlobStat>> {
        self.inner.remote.clone().list_meta()
    }

    /// The remote's, which [`head_of_record`](Backend::head_of_record) asks.
    fn listings_of_record(self: Arc<Self>) -> Vec<BoxStream<'static, Result<BlobStat>>> {
        self.inner.remote.clone().listings_of_record()
    }

    /// The local tier's entry if it has one, else the remote's answer, whatever it is: the tier
    /// holds some blobs only, so its "none" says nothing of the store, and a remote that cannot
    /// look up by this hash (an `http://` mirror by blake3) fails as
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) for a blob the tier lacks.
    async fn resolve_alias(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        match self.inner.local.resolve_alias(hash).await {
            Ok(Some(k)) => return Ok(Some(k)),
            Ok(_) => {}
            Err(e) => self.inner.local_failed(
                hash,
                &e,
                "cache tier alias lookup failed; asking the remote",
            ),
        }
        self.inner.remote.resolve_alias(hash).await
    }

    /// The remote's index gets every record; the local tier's only those of blobs it caches.
    /// The report is the remote's.
    async fn rebuild_aliases(
        &self,
        found: BoxStream<'_, Digests>,
        options: &crate::backend::RebuildOptions,
    ) -> Result<AliasRebuild> {
        let inner = self.inner.clone();
        let cached: Filter = Box::new(move |d| {
            let key = BlobKey::new(d.sha512);
            inner.ledger.contains(&key).unwrap_or_else(|e| {
                inner.local_failed(&key, &e, "cache tier lookup failed");
                false
            })
        });
        let members = vec![
            (
                &*self.inner.remote as &dyn Backend,
                Box::new(|_: &Digests| true) as Filter,
            ),
            (&*self.inner.local as &dyn Backend, cached),
        ];
        let mut results = rebuild_each(found, members, options).await.into_iter();
        let remote = results
            .next()
            .unwrap_or_else(|| Ok(AliasRebuild::default()))?;
        if let Some(local) = results.next() {
            local?;
        }
        Ok(remote)
    }

    /// The remote first, then the local tier, as for [`delete`](Backend::delete).
    async fn quarantine(&self, key: &BlobKey) -> Result<bool> {
        let moved = self.inner.remote.quarantine(key).await;
        self.drop_copy(key, true).await?;
        moved
    }

    fn recorded_digests_trusted(&self) -> Option<crate::backend::Vouched> {
        self.inner.local.recorded_digests_trusted()?;
        self.inner.remote.recorded_digests_trusted()
    }

    async fn sweep(&self) -> Result<u64> {
        Ok(self.inner.local.sweep().await? + self.inner.remote.sweep().await?)
    }

    async fn restore_misplaced(&self) -> Result<Misplaced> {
        let mut all = self.inner.local.restore_misplaced().await?;
        all.merge(self.inner.remote.restore_misplaced().await?);
        Ok(all)
    }
}
