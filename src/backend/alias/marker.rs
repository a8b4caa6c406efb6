//! The alias index of a remote store (S3, Manta): one small *marker* object per alias, named by the
//! alias (`sha1/<hex>`, `blake3/<hex>`), holding the blob's record in the alias logs' line format
//! ([`line()`]). A lookup is one GET; a miss is one GET answered 404. See docs/remote-index.md for
//! the measurements behind the choice.
//!
//! Why markers, when the segment log ([`super::log`]) was chosen to save requests: the log
//! makes a lookup that misses LIST and read every new segment and keeps every record of the store
//! in memory, so its lookup cost and its memory grow with the store. A marker lookup costs one
//! request at any size, and the process keeps only a bounded cache ([`super::cache`]).
//! The price is two small PUTs per new blob, sent concurrently with the blob's own PUT, so a put
//! still takes one round trip; the put returns only once both markers are stored.
//!
//! Writers never contend: a marker's body is determined by its name (the blob whose digest it
//! is), so two processes writing one marker write the same bytes. Markers are written create-only
//! (S3 `If-None-Match: *`; Manta `If-Unmodified-Since` the epoch, see the Manta backend), so a
//! stored marker is never replaced by a put; an existing one is read back, and replaced only if
//! it is unreadable (corrupt, truncated, foreign), or names a blob that the blob's own object
//! shows does not have the digest (gone, or its metadata says otherwise: see
//! [`MarkerStore::blob_record`]). Two blobs with one sha1 (a collision) keep the first marker, and
//! the second blob stays reachable by sha512 and blake3.
//!
//! Stores written by earlier versions hold segments of the log instead. Each process checks once
//! whether any segment exists (one LIST); if so, a marker miss asks the log too, and the process
//! imports the segments into markers in the background, deleting each segment only after its
//! markers are stored, so a lookup finds every alias throughout: in a marker, or in a segment
//! not yet deleted ([`import`](AliasIndex::import)). `fsck` merges the blobs it scanned into
//! markers and finishes any import.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use super::cache::{AliasCache, CacheConfig};
use super::legacy::LegacyLog;
use super::line::{line, parse_line};
use super::log::SegmentStore;
use crate::backend::{AliasRebuild, BlobKey};
use crate::integrity::{Algorithm, Digests, Hash};
use crate::Result;

/// Markers checked or written at once by a rebuild or an import.
const PARALLEL: usize = 16;
/// The most a marker object may hold. A marker is one record line of at most 259 bytes
/// ([`line()`]); a larger object at a marker's name is not one, and its claimed size is not
/// trusted enough to reserve memory for, so a marker store refuses it unread.
pub(crate) const MARKER_MAX: u64 = 1024;
/// How long a process trusts "no legacy segments" before listing again (an older version may
/// still be writing segments into the same store).
const LEGACY_RECHECK: Duration = Duration::from_secs(300);

/// Where an index keeps its markers: one small object per alias.
#[async_trait]
pub(crate) trait MarkerStore: Send + Sync + 'static {
    /// Stores a marker unless one exists: `Ok(true)` if written, `Ok(false)` if one was there.
    async fn create(&self, alg: Algorithm, hex: &str, body: Bytes) -> Result<bool>;
    /// Stores a marker, replacing any (to repair an unreadable one).
    async fn replace(&self, alg: Algorithm, hex: &str, body: Bytes) -> Result<()>;
    /// A marker's body, `None` if there is none; an object over [`MARKER_MAX`] bytes is an
    /// error naming it, refused before its body is read.
    async fn get(&self, alg: Algorithm, hex: &str) -> Result<Option<Bytes>>;
    /// The object a marker is stored as, for warnings.
    fn name(&self, alg: Algorithm, hex: &str) -> String;
    /// Every marker, streamed as the server pages its listing (never collected: a store holds
    /// two markers per blob, tens of millions of them), in no particular order.
    fn list(&self) -> BoxStream<'_, Result<Listed>>;
    /// Deletes a marker; deleting one that is not there is not an error.
    async fn delete(&self, alg: Algorithm, hex: &str) -> Result<()>;
    /// What the blob `key`'s own object says of it, asked of a blob that a marker names when a
    /// writer holding verified digests of another blob finds that marker in its way: `None` if
    /// the blob is not stored, else the digests its metadata carries (`None` without them). A
    /// `HEAD` of the blob, its metadata only; never the alias cache, which holds what markers
    /// claim.
    async fn blob_record(&self, key: BlobKey) -> Result<Option<Option<Digests>>>;
}

/// One entry of a marker listing ([`MarkerStore::list`]).
#[derive(Debug, Clone)]
pub(crate) enum Listed {
    /// A marker's name: its algorithm and lowercase hex digest.
    Marker {
        alg: Algorithm,
        hex: String,
        /// When the server last wrote it, if the listing says (a marker of unknown age is
        /// never removed by fsck: it could be a put's whose blob is still going up).
        modified: Option<SystemTime>,
    },
    /// An object in the markers' namespace whose name is not a marker's (the object itself).
    Foreign(String),
}

/// What a marker said.
enum Marker {
    Absent,
    /// Unreadable, or names a blob whose digest is not the marker's name.
    Bad,
    Good(Digests),
}

/// Where a record's digests come from: hashed from its blob's bytes (by a put, or by fsck's scan),
/// or a claim (a record of the old log). Only hashed digests overrule a marker naming another
/// blob (see `AliasIndex::ensure`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scanned {
    /// By a put, whose blob is stored by then: a failure to ask about the other blob keeps the
    /// marker, with a warning, rather than fail a put that has stored its blob (fsck rewrites it).
    Put,
    /// By fsck's scan: a failure to ask fails the rebuild, which is resumed by running it again.
    Fsck,
    No,
}

/// What one record did to its marker(s).
#[derive(Default, Clone, Copy)]
struct Outcome {
    added: bool,
    corrected: bool,
    /// The marker names the record's blob now (not another blob sharing its digest).
    names_blob: bool,
}

/// Markers [`AliasIndex::record_alongside`] found already there, to read back once the blob is
/// stored ([`AliasIndex::settle`]).
#[derive(Debug, Clone, Copy, Default)]
#[must_use = "settle them once the blob is stored"]
pub(crate) struct Unsettled {
    sha1: bool,
    blake3: bool,
}

/// Whether the store may hold segments of the log an older version wrote.
#[derive(Clone, Copy)]
enum Legacy {
    Unknown,
    Absent(Instant),
    Present,
}

/// A marker index (see the [module documentation](self)).
pub(crate) struct AliasIndex<M, S> {
    markers: M,
    /// The segment log of earlier versions: read on a marker miss while it has segments.
    legacy: LegacyLog<S>,
    legacy_state: tokio::sync::Mutex<Legacy>,
    importing: AtomicBool,
    cache: Mutex<AliasCache>,
}

fn hex_of(alg: Algorithm, d: &Digests) -> String {
    match alg {
        Algorithm::Sha1 => hex::encode(d.sha1),
        _ => hex::encode(d.blake3),
    }
}

impl<M: MarkerStore, S: SegmentStore> AliasIndex<M, S> {
    pub(crate) fn new(markers: M, legacy: S, cache: CacheConfig) -> Arc<Self> {
        Arc::new(AliasIndex {
            markers,
            legacy: LegacyLog::new(legacy),
            legacy_state: tokio::sync::Mutex::new(Legacy::Unknown),
            importing: AtomicBool::new(false),
            cache: Mutex::new(AliasCache::new(cache)),
        })
    }

    fn cache(&self) -> MutexGuard<'_, AliasCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the aliases of a committed blob: both markers are stored when this returns.
    /// (Manta's puts send their markers alongside the blob instead: `record_alongside`.)
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub(crate) async fn record(&self, d: &Digests) -> Result<()> {
        let body = Bytes::from(line(d));
        let (a, b) = tokio::join!(
            self.ensure(Algorithm::Sha1, d, body.clone(), false, Scanned::Put),
            self.ensure(Algorithm::Blake3, d, body, false, Scanned::Put)
        );
        let (a, b) = (a?, b?);
        self.cache().insert_named(d, a.names_blob, b.names_blob);
        Ok(())
    }

    /// Records the aliases of a blob whose PUT is still in flight (sent alongside it, so a put
    /// costs one round trip): creates both markers and returns the ones that were already
    /// there, which the caller passes to [`settle`](Self::settle) once the blob is stored.
    ///
    /// Why an existing marker is read back only after the blob is stored: it may be a dangling
    /// one (its blob deleted) that an `fsck` is deleting right now. Read after the blob is
    /// stored, either the read finds it gone (and settle writes it), or fsck's check of the blob
    /// after its DELETE sees the blob and writes it back (see `alias::sweep`).
    pub(crate) async fn record_alongside(&self, d: &Digests) -> Result<Unsettled> {
        let body = Bytes::from(line(d));
        let (sha1, blake3) = (hex_of(Algorithm::Sha1, d), hex_of(Algorithm::Blake3, d));
        let (a, b) = tokio::join!(
            self.markers.create(Algorithm::Sha1, &sha1, body.clone()),
            self.markers.create(Algorithm::Blake3, &blake3, body)
        );
        Ok(Unsettled {
            sha1: !a?,
            blake3: !b?,
        })
    }

    /// Finishes [`record_alongside`](Self::record_alongside) once the blob is stored: reads back
    /// each marker that was already there, writing it if it is gone and rewriting it if it is
    /// unreadable or shown wrong (see [`ensure`](Self::ensure)). No request for a new blob (both
    /// markers created).
    pub(crate) async fn settle(&self, d: &Digests, unsettled: Unsettled) -> Result<()> {
        let body = Bytes::from(line(d));
        // Whether the marker names `d` once settled (a marker this put created does).
        let check = |alg, yes: bool| {
            let body = body.clone();
            async move {
                if yes {
                    self.ensure(alg, d, body, true, Scanned::Put)
                        .await
                        .map(|o| o.names_blob)
                } else {
                    Ok(true)
                }
            }
        };
        let (a, b) = tokio::join!(
            check(Algorithm::Sha1, unsettled.sha1),
            check(Algorithm::Blake3, unsettled.blake3)
        );
        self.cache().insert_named(d, a?, b?);
        Ok(())
    }

    /// Makes both markers of a blob that is stored already name it (a put that found the blob
    /// and wrote nothing): no request for markers this process has seen, else a GET of each and a
    /// write of any that is gone or unreadable, as [`settle`](Self::settle) does.
    pub(crate) async fn record_stored(&self, d: &Digests) -> Result<()> {
        let seen = |alg, digest: &[u8]| {
            let hash = Hash::new_unchecked(alg, digest);
            self.cache()
                .get(&hash)
                .is_some_and(|c| c.sha512 == d.sha512)
        };
        let unsettled = Unsettled {
            sha1: !seen(Algorithm::Sha1, &d.sha1),
            blake3: !seen(Algorithm::Blake3, &d.blake3),
        };
        self.settle(d, unsettled).await
    }

    /// Makes the marker of `d`'s `alg` digest exist and name `d`. A put writes first (`check`
    /// false: one request for a new blob); a rebuild reads first (`check` true: one GET for a
    /// marker that is already right, the common case).
    ///
    /// A marker naming another blob is kept (two blobs sharing a sha1: the marker keeps the
    /// first), unless `d` was hashed from its bytes (a put, fsck's scan: `scanned`) and the
    /// other blob's object shows the marker wrong ([`MarkerStore::blob_record`]): a marker
    /// naming a blob that is gone, or whose own metadata gives it another digest, is wrong (a
    /// foreign writer, a blob deleted by another tool), and leaving it would leave `d`
    /// unfindable by that digest, or gc taking the other blob for the live one. It is replaced.
    /// One `HEAD`, for such a marker only.
    async fn ensure(
        &self,
        alg: Algorithm,
        d: &Digests,
        body: Bytes,
        check: bool,
        scanned: Scanned,
    ) -> Result<Outcome> {
        let hex = hex_of(alg, d);
        let named = Outcome {
            names_blob: true,
            ..Outcome::default()
        };
        if !check && self.markers.create(alg, &hex, body.clone()).await? {
            return Ok(Outcome {
                added: true,
                ..named
            });
        }
        match self.read(alg, &hex).await? {
            Marker::Good(found) if found.sha512 == d.sha512 => Ok(named),
            Marker::Good(found) if self.names_wrongly(alg, &hex, &found, scanned).await? => {
                tracing::warn!(
                    marker = self.markers.name(alg, &hex),
                    named = hex::encode(found.sha512),
                    now = hex::encode(d.sha512),
                    "the marker named a blob that is gone or has another {alg} digest; rewritten"
                );
                self.markers.replace(alg, &hex, body).await?;
                Ok(Outcome {
                    corrected: true,
                    ..named
                })
            }
            Marker::Good(found) => {
                tracing::warn!(
                    marker = self.markers.name(alg, &hex),
                    kept = hex::encode(found.sha512),
                    other = hex::encode(d.sha512),
                    "two blobs share this {alg} digest; the marker keeps the first"
                );
                Ok(Outcome::default())
            }
            Marker::Absent if check => {
                if !self.markers.create(alg, &hex, body.clone()).await? {
                    // Another writer made it meanwhile: it names the same blob.
                    return Ok(named);
                }
                Ok(Outcome {
                    added: true,
                    ..named
                })
            }
            // Deleted between the create and the read: put it back.
            Marker::Absent | Marker::Bad => {
                self.markers.replace(alg, &hex, body).await?;
                Ok(Outcome {
                    corrected: true,
                    ..named
                })
            }
        }
    }

    /// Whether the marker `alg`/`hex`, which names `found`, is shown wrong by the blob it names:
    /// that blob is gone, or its object's metadata gives it another digest. Only asked where the
    /// other digests are hashed: a claim does not overrule a claim.
    async fn names_wrongly(
        &self,
        alg: Algorithm,
        hex: &str,
        found: &Digests,
        scanned: Scanned,
    ) -> Result<bool> {
        if scanned == Scanned::No {
            return Ok(false);
        }
        let record = match self.markers.blob_record(BlobKey::new(found.sha512)).await {
            Ok(record) => record,
            Err(e) if scanned == Scanned::Put => {
                tracing::warn!(
                    marker = self.markers.name(alg, hex),
                    named = hex::encode(found.sha512),
                    error = %e.report(),
                    "cannot ask the blob a marker names whether it has the digest; the marker is kept (fsck rewrites it if wrong)"
                );
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        Ok(match record {
            None => true,
            Some(Some(own)) => hex_of(alg, &own) != hex,
            Some(None) => false,
        })
    }

    /// Reads a marker and checks it names a blob with that digest.
    async fn read(&self, alg: Algorithm, hex: &str) -> Result<Marker> {
        let Some(body) = self.markers.get(alg, hex).await? else {
            return Ok(Marker::Absent);
        };
        let parsed = std::str::from_utf8(&body)
            .ok()
            .filter(|t| t.lines().count() == 1)
            .and_then(|t| parse_line(t.trim_end().as_bytes()))
            .filter(|d| hex_of(alg, d) == hex);
        Ok(match parsed {
            Some(d) => Marker::Good(d),
            None => {
                tracing::warn!(
                    marker = self.markers.name(alg, hex),
                    bytes = body.len(),
                    "skipping an unreadable alias marker (fsck rewrites it)"
                );
                Marker::Bad
            }
        })
    }

    /// The blob whose sha1 or blake3 digest is `hash`, if its marker (or, during an upgrade, the
    /// log of an earlier version) names one.
    pub(crate) async fn resolve(self: &Arc<Self>, hash: &Hash) -> Result<Option<BlobKey>> {
        let asked = Instant::now();
        {
            let mut c = self.cache();
            if let Some(d) = c.get(hash) {
                return Ok(Some(BlobKey::new(d.sha512)));
            }
            if c.missed(hash) {
                return Ok(None);
            }
        }
        let alg = hash.algorithm();
        let hex = hex::encode(hash.digest());
        if let Some(d) = self.lookup(alg, &hex).await? {
            return Ok(Some(d));
        }
        if self.legacy_present().await? {
            if let Some(k) = self.legacy.resolve(hash, asked).await? {
                return Ok(Some(k));
            }
            // An import may have moved it into a marker (and deleted its segment) meanwhile: only
            // if a segment went or the log was listed since the marker was asked.
            if self.legacy.changed_since(asked) {
                if let Some(d) = self.lookup(alg, &hex).await? {
                    return Ok(Some(d));
                }
            }
        }
        self.cache().note_miss(hash, asked);
        Ok(None)
    }

    async fn lookup(&self, alg: Algorithm, hex: &str) -> Result<Option<BlobKey>> {
        match self.read(alg, hex).await? {
            Marker::Good(d) => {
                self.cache().insert(&d);
                Ok(Some(BlobKey::new(d.sha512)))
            }
            Marker::Absent | Marker::Bad => Ok(None),
        }
    }

    /// Whether the store has segments of the old log (listed once per process, and again after
    /// [`LEGACY_RECHECK`]; segments found are fingerprinted before this returns); starts
    /// importing them when it has.
    async fn legacy_present(self: &Arc<Self>) -> Result<bool> {
        let mut state = self.legacy_state.lock().await;
        match *state {
            Legacy::Present => return Ok(true),
            Legacy::Absent(at) if at.elapsed() < LEGACY_RECHECK => return Ok(false),
            _ => {}
        }
        // The listing that finds the log also reads it (the lookup that asked needs it next).
        let present = self.legacy.refresh().await?;
        *state = if present {
            Legacy::Present
        } else {
            Legacy::Absent(Instant::now())
        };
        drop(state);
        if present && !self.importing.swap(true, Ordering::SeqCst) {
            let me = self.clone();
            tokio::spawn(async move {
                match me.import().await {
                    Ok(n) => tracing::info!(records = n, "alias log imported into markers"),
                    Err(e) => {
                        tracing::warn!(error = %e.report(), "alias log import stopped; fsck resumes it")
                    }
                }
                me.importing.store(false, Ordering::SeqCst);
            });
        }
        Ok(present)
    }

    /// The digests of a blob, if this process has seen its marker or written it (no request).
    #[cfg(feature = "s3")]
    pub(crate) fn known(&self, key: &BlobKey) -> Option<Digests> {
        self.cache().by_key(key)
    }

    /// Imports the segments of the old log into markers, one segment at a time (memory: one
    /// segment), deleting each once its markers are stored. Idempotent and safe to run in
    /// several processes at once; a run cut short leaves the rest for the next. Returns the
    /// records imported.
    ///
    /// Every process that finds the log imports it. Each takes the segments in a random order of
    /// its own, so that they mostly work on different segments and skip (one 404) those another
    /// has imported and deleted. In listing order they went through the same segments side by
    /// side, each redoing the others' work: four at once on this 2-core machine made 1.7x the
    /// requests of one alone and imported every record 2.35 times; in random orders, 1.07-1.16x
    /// and 1.1-1.3 times (`processes_importing_at_once_share_the_work`). One process per core
    /// on a larger machine went N times over the log.
    pub(crate) async fn import(&self) -> Result<u64> {
        use rand::seq::SliceRandom as _;
        let mut imported = 0;
        // Segments merged meanwhile by an older version show up in the next listing.
        for _ in 0..3 {
            let mut segments = self.legacy.segments().await?;
            if segments.is_empty() {
                break;
            }
            segments.shuffle(&mut rand::thread_rng());
            for name in segments {
                let Some(records) = self.legacy.read_segment(&name).await? else {
                    continue;
                };
                let n = records.len() as u64;
                futures::stream::iter(records)
                    // The old log's records are claims, not a scan: they overrule no marker.
                    .map(|d| async move { self.merge_one(&d, Scanned::No).await })
                    .buffer_unordered(PARALLEL)
                    .try_collect::<Vec<_>>()
                    .await?;
                imported += n;
                self.legacy.delete_segment(&name).await?;
            }
        }
        *self.legacy_state.lock().await = Legacy::Absent(Instant::now());
        // Segments other processes imported are forgotten too (listed again if ever present).
        self.legacy.clear();
        Ok(imported)
    }

    /// Checks both markers of one record, writing or repairing what is missing or wrong.
    /// The outcomes for `d`'s sha1 marker and its blake3 marker.
    async fn merge_one(&self, d: &Digests, scanned: Scanned) -> Result<(Outcome, Outcome)> {
        let body = Bytes::from(line(d));
        let (a, b) = tokio::join!(
            self.ensure(Algorithm::Sha1, d, body.clone(), true, scanned),
            self.ensure(Algorithm::Blake3, d, body, true, scanned)
        );
        Ok((a?, b?))
    }

    /// Merges the digests of every blob a scan found into markers (never removing one; rewriting
    /// one that names another blob only where that blob's object shows it wrong: see `ensure`),
    /// then finishes importing the old log. Streams with [`PARALLEL`] records in
    /// flight, so memory stays flat at any store size; every step is idempotent, so a rebuild
    /// that fails part-way is resumed by running it again. Returns, besides the report, the
    /// markers it found or made naming a blob the scan saw, which the [`sweep`](Self::sweep)
    /// after it need not check.
    pub(crate) async fn rebuild(
        &self,
        found: futures::stream::BoxStream<'_, Digests>,
    ) -> Result<(AliasRebuild, Seen)> {
        let mut report = AliasRebuild::default();
        let mut seen = Seen::new();
        let mut outcomes = found
            .map(|d| async move { (self.merge_one(&d, Scanned::Fsck).await, d) })
            .buffer_unordered(PARALLEL);
        while let Some((o, d)) = outcomes.next().await {
            let (a, b) = o?;
            report.indexed += 1;
            report.added += u64::from(a.added || b.added);
            report.corrected += u64::from((a.corrected || b.corrected) && !(a.added || b.added));
            if a.names_blob {
                seen.note(Algorithm::Sha1, &d.sha1)?;
            }
            if b.names_blob {
                seen.note(Algorithm::Blake3, &d.blake3)?;
            }
        }
        drop(outcomes);
        seen.finish()?;
        self.import().await?;
        Ok((report, seen))
    }

    /// Bytes held to read the old log while it is imported (for benchmarks).
    pub(crate) fn legacy_bytes(&self) -> usize {
        self.legacy.held_bytes()
    }

    /// Bytes the cache holds (for benchmarks and tests).
    #[cfg_attr(not(any(test, feature = "s3")), allow(dead_code))]
    pub(crate) fn cached_bytes(&self) -> usize {
        self.cache().bytes()
    }
}

#[path = "sweep.rs"]
mod sweep;
pub(crate) use sweep::Seen;
pub use sweep::DEFAULT_GRACE;

#[cfg(test)]
#[path = "marker_tests.rs"]
mod tests;
