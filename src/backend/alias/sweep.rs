//! The second half of a remote store's `fsck` of its alias index: a pass over every marker that
//! finds (and removes) those whose blob is gone, and reports those that cannot be read.
//!
//! The rebuild before it ([`AliasIndex::rebuild`]) starts from the blobs, so it writes and
//! repairs the markers of blobs that exist, but never sees a marker whose blob does not: a blob
//! deleted by another tool, a put whose blob PUT failed after its markers were stored, a crash
//! between the two. Such a marker makes a lookup by sha1 or blake3 resolve to a blob that is not
//! there (the store then answers "not found", after a wasted request, and the marker stays for
//! ever). This pass lists the markers namespace, streaming the server's pages with
//! [`PARALLEL`] markers in flight, so its memory is flat at any size; each
//! marker costs a GET (its body names the blob) and a HEAD of the blob, except those the rebuild
//! just read or wrote naming a blob its scan saw ([`Seen`]): nearly all of them, in a store whose
//! markers are sound. At 40M blobs that is 160M requests not sent, for a temp table of the
//! scan's 80M aliases ([`KeyTable`], on disk past 262,144 of them, about 80 bytes each).
//!
//! # Removing a marker safely while other processes put
//!
//! A marker is removed by: HEAD of its blob (absent), DELETE of the marker, HEAD of the blob
//! again, and if the blob is there now, a create-only PUT of the marker back. Two kinds of put
//! can meet this:
//!
//! - **A put of a new blob**, whose create-only marker PUT goes out alongside the blob's PUT
//!   (one round trip): for a while its marker exists and its blob does not, exactly what a
//!   dangling marker looks like. Markers the server wrote less than the grace period ago
//!   ([`DEFAULT_GRACE`], the `alias_grace_secs=` store option) are therefore not checked at all,
//!   only counted: a put's blob lands within that time of its markers (its PUT started with
//!   them), so any marker older than that whose blob is absent is not a put in flight. The age
//!   is the server's write time against this machine's clock, so the grace also absorbs clock
//!   skew.
//! - **A put of a blob whose old marker is still there** (the case this pass exists for): its
//!   create-only marker PUT answers "already exists" because of the dangling marker, and the
//!   marker would then be deleted under it. The put side handles this by reading such a marker
//!   back only after its blob is stored ([`AliasIndex::settle`]), writing it if it is gone.
//!   Against this pass's steps: if the put's read comes after the DELETE it finds nothing and
//!   writes the marker; if it comes before, the blob was already stored before the DELETE, so
//!   the second HEAD (after the DELETE) sees it and this pass writes the marker back. Either way
//!   the marker exists once both are done. This needs only that each request sees every write
//!   that completed before it started, which S3 (since 2020), Ceph RGW and Manta give for
//!   single objects.
//! - **A put of a blob whose digest's marker names another blob that is gone** (see
//!   `AliasIndex::ensure`), which replaces the marker with one naming its own blob: the very
//!   marker this pass removes. Where the put's replacement lands between this pass's read of the
//!   marker and its DELETE, the DELETE removes it, and the second look (at the gone blob, not at
//!   the put's) does not write it back: the put's blob is then not found by that digest, as it
//!   was not before the put, until the next `fsck`'s rebuild or a put of it in a process that has
//!   not seen its markers writes the marker (a DELETE cannot be made conditional on the body it
//!   read). Test: `a_put_rewriting_a_marker_the_sweep_removes_can_lose_it_until_the_next_rebuild`.
//!
//! A marker that cannot be read (truncated, foreign) is reported and left in place: the
//! rebuild before this pass has already rewritten the unreadable markers of every blob it
//! scanned, so what is left names no blob the scan saw, and deleting it could race with a put
//! that just replaced it with a good one (a DELETE cannot be made conditional on the body it
//! read). It costs a lookup a warning, never a wrong answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;

use super::{AliasIndex, Listed, Marker, MarkerStore, PARALLEL};
use crate::backend::alias::line::line;
use crate::backend::alias::log::SegmentStore;
use crate::backend::key_table::{self, KeyTable};
use crate::backend::pace::Pacer;
use crate::backend::{AliasRebuild, BlobKey, Dangling, RebuildOptions};
use crate::integrity::Algorithm;
use crate::Result;

/// The aliases whose markers a rebuild found or made naming a blob its scan saw: their markers
/// are sound as of the scan, and the sweep skips them.
pub(crate) struct Seen(std::sync::Mutex<KeyTable>);

impl Seen {
    pub(crate) fn new() -> Seen {
        Seen(std::sync::Mutex::new(KeyTable::new(key_table::IN_MEMORY)))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, KeyTable> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn note(&mut self, alg: Algorithm, digest: &[u8]) -> Result<()> {
        self.table().note(key_table::alias_key(alg, digest), 1)
    }

    pub(crate) fn finish(&mut self) -> Result<()> {
        self.table().finish()
    }

    /// Whether the marker named `hex` (of `alg`) was seen.
    fn contains(&self, alg: Algorithm, hex: &str) -> Result<bool> {
        match hex::decode(hex) {
            Ok(digest) => self.table().contains(&key_table::alias_key(alg, &digest)),
            Err(_) => Ok(false),
        }
    }
}

/// Markers younger than this are not checked by `fsck`: a put's blob lands within this time of
/// its markers, whose PUTs started with it (see docs/remote-index.md).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// Markers reported one by one at `warn` level in one pass; the rest at `debug`, with a total.
const WARN_MAX: u64 = 100;

/// Whether a blob is stored: a HEAD of its key.
pub(crate) type BlobExists<'a> = &'a (dyn Fn(BlobKey) -> BoxFuture<'static, Result<bool>> + Sync);

/// What the sweep of each marker goes by.
struct Check<'a> {
    exists: BlobExists<'a>,
    now: SystemTime,
    grace: Duration,
    remove: bool,
    noise: &'a Noise,
    pacer: Option<&'a Pacer>,
    seen: Option<&'a Seen>,
}

/// What one listed marker turned out to be.
enum Swept {
    Good,
    Recent,
    /// Gone between the listing and the read.
    Vanished,
    Unreadable,
    /// Its blob is gone; left in place (`Dangling::Report`).
    Kept,
    Removed,
    /// Its blob appeared while the marker was removed: written back.
    Restored,
}

/// Logs one marker's finding at `warn` while `noise` allows it, at `debug` after that.
macro_rules! noisy {
    ($noise:expr, $($event:tt)*) => {
        if $noise.loud() {
            tracing::warn!($($event)*);
        } else {
            tracing::debug!($($event)*);
        }
    };
}

/// Counts the markers reported one by one, to bound the log.
#[derive(Default)]
struct Noise(AtomicU64);

impl Noise {
    fn loud(&self) -> bool {
        self.0.fetch_add(1, Ordering::Relaxed) < WARN_MAX
    }
}

impl<M: MarkerStore, S: SegmentStore> AliasIndex<M, S> {
    /// Lists every marker and removes those whose blob is gone, reporting unreadable ones (see
    /// the [module documentation](self) for why this is safe against concurrent puts). Adds to
    /// `report`'s `listed`, `dangling`, `removed`, `unreadable` and `recent`. With
    /// [`Dangling::Report`] nothing is removed, with [`Dangling::Skip`] nothing is listed;
    /// `checks_per_second` paces the markers checked. The markers of `seen` (what the rebuild
    /// before it confirmed) are counted as good without a request.
    pub(crate) async fn sweep(
        &self,
        exists: BlobExists<'_>,
        grace: Duration,
        options: &RebuildOptions,
        report: &mut AliasRebuild,
        seen: Option<&Seen>,
    ) -> Result<()> {
        if options.dangling == Dangling::Skip {
            return Ok(());
        }
        let now = SystemTime::now();
        let noise = Noise::default();
        let noise = &noise;
        let pacer = options.checks_per_second.map(Pacer::new);
        let pacer = pacer.as_ref();
        let remove = options.dangling == Dangling::Remove;
        let mut checks = self
            .markers
            .list()
            .map(|listed| async move {
                let check = Check {
                    exists,
                    now,
                    grace,
                    remove,
                    noise,
                    pacer,
                    seen,
                };
                self.sweep_one(listed?, &check).await
            })
            .buffer_unordered(PARALLEL);
        while let Some(swept) = checks.next().await {
            report.listed += 1;
            match swept? {
                Swept::Good | Swept::Vanished => {}
                Swept::Recent => report.recent += 1,
                Swept::Unreadable => report.unreadable += 1,
                Swept::Removed => {
                    report.dangling += 1;
                    report.removed += 1;
                }
                Swept::Restored | Swept::Kept => report.dangling += 1,
            }
        }
        let reported = noise.0.load(Ordering::Relaxed);
        if reported > WARN_MAX {
            tracing::warn!(
                markers = reported,
                shown = WARN_MAX,
                "more markers were dangling or unreadable than shown (the rest at debug level)"
            );
        }
        Ok(())
    }

    async fn sweep_one(&self, listed: Listed, c: &Check<'_>) -> Result<Swept> {
        let (exists, noise) = (c.exists, c.noise);
        let (alg, hex, modified) = match listed {
            Listed::Marker { alg, hex, modified } => (alg, hex, modified),
            Listed::Foreign(object) => {
                noisy!(
                    noise,
                    object,
                    "an object in the markers namespace is not a marker"
                );
                return Ok(Swept::Unreadable);
            }
        };
        // A clock behind the server's makes the age negative: young, so not checked. A marker of
        // unknown age is never removed (it could be a put's in flight).
        let age = modified.map(|m| c.now.duration_since(m).unwrap_or(Duration::ZERO));
        if age.is_none_or(|a| a < c.grace) {
            return Ok(Swept::Recent);
        }
        if let Some(seen) = c.seen {
            if seen.contains(alg, &hex)? {
                return Ok(Swept::Good);
            }
        }
        if let Some(p) = c.pacer {
            p.take(1).await;
        }
        let marker = self.markers.name(alg, &hex);
        let d = match self.read(alg, &hex).await? {
            Marker::Absent => return Ok(Swept::Vanished),
            // `read` has warned, naming it.
            Marker::Bad => return Ok(Swept::Unreadable),
            Marker::Good(d) => d,
        };
        let key = BlobKey::new(d.sha512);
        if exists(key).await? {
            return Ok(Swept::Good);
        }
        if !c.remove {
            noisy!(noise, marker, blob = %key, "a marker's blob is gone (reported, kept)");
            return Ok(Swept::Kept);
        }
        self.markers.delete(alg, &hex).await?;
        if exists(key).await? {
            // A put stored the blob meanwhile; its marker may have answered "exists" before
            // the DELETE. Create-only: a put may have written it again already.
            self.markers
                .create(alg, &hex, Bytes::from(line(&d)))
                .await?;
            tracing::info!(marker, blob = %key, "a dangling marker's blob appeared meanwhile: kept");
            return Ok(Swept::Restored);
        }
        noisy!(noise, marker, blob = %key, "removed a marker whose blob is gone");
        Ok(Swept::Removed)
    }
}
