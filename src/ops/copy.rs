//! Copying every blob of one store into another.
//!
//! Verified twice: the source stream is checked as it is read (a corrupt source blob ends in an
//! error, not in a copy), and the target put expects the address, so nothing lands under a key its
//! bytes do not hash to. A source copy that does not verify fails its blob as
//! [`Corrupt`](Error::Corrupt), naming the source's backend, even where the target holds the blob
//! whole (the source needs repair, and the operator must hear of it); the put it fed publishes
//! nothing, so the target's object at that key stays as it is.
//!
//! Resumable because content addressing makes it idempotent: a blob the target already has is
//! skipped without reading it, and a copy cut short leaves nothing behind (target commits are
//! atomic), so running the same copy again finishes the job.
//!
//! What the target has is learnt, for a remote target, from one listing of it before the copy
//! (as `rsync` and `rclone` do): a store of 40M blobs is 40,000 listing pages, where asking each
//! blob would be 40M `HEAD`s. The keys go to a key table with their listed sizes (in memory up to
//! 262,144, in a temp SQLite file beyond). A blob the listing did not show is still asked for
//! before it is read. A local target (fs, memory) is asked blob by blob, as its `stat` is cheap
//! and also tells a damaged file from a whole one. For a few blobs copied into a large remote
//! store, [`CopyOptions::list_target`] off skips the listing.
//!
//! A remote target keeps no trusted record of a blob's size, so an object at a blob's key may be
//! cut short or grown (a failed upload by another tool, a server that lies). So, for such a
//! target, the source is listed with its sizes ([`Store::list_meta`]: free in an object store's
//! listing and so in a replicated set's, a `stat` per blob on fs), and a blob is skipped only
//! where the target holds an object of the source's size. Otherwise it is copied with the size
//! its read from the source gives expected (a listing may give another copy's size, cut short),
//! and the put's commit replaces the object.
//!
//! A replicated target has a blob only where every replica holds it at the source's size: each
//! replica is listed in turn ([`Backend::listings_of_record`]), and a blob is skipped only where
//! all of them list it at that size (still no request per blob: S3 and Manta listings carry
//! sizes). Otherwise the put writes every replica, and each keeps a copy of the right size (a
//! create-only `PUT` finds it) and replaces one of another size, so a copy also fills a replica
//! that lacks blobs or holds them cut short.
//!
//! [`Backend::listings_of_record`]: crate::backend::Backend::listings_of_record
//!
//! The source's keys go to a key table too, as they are listed: a listing may give a key twice
//! (an S3 listing while the bucket is written to, a page fetched again after a retry), and each
//! blob is copied, and counted in the report, once.

use std::sync::Mutex;

use futures::stream::BoxStream;
use futures::{future, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::backend::key_table::{self, KeyTable};
use crate::backend::{BlobKey, BlobStat, Sample};
use crate::{Error, Integrity, PutOptions, Result, Store};

/// Options for [`copy`].
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Blobs copied at once.
    pub concurrency: usize,
    /// List a remote target once before copying, rather than asking it about each blob (see the
    /// [module docs](self)).
    pub list_target: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            concurrency: 8,
            list_target: true,
        }
    }
}

/// What happened to one blob.
#[derive(Debug)]
pub enum CopyEvent {
    /// Copied and verified.
    Copied {
        /// The blob.
        key: BlobKey,
        /// Its size.
        size: u64,
    },
    /// The target already had it.
    Skipped {
        /// The blob.
        key: BlobKey,
    },
    /// Could not be copied.
    Failed {
        /// The blob (`None` if listing the source failed).
        key: Option<BlobKey>,
        /// Why.
        error: Error,
    },
}

/// What [`copy`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    /// Blobs listed in the source.
    pub listed: u64,
    /// Blobs copied.
    pub copied: u64,
    /// Blobs the target already had.
    pub skipped: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// What failed (`address: error`): all counted, the first kept. Every failure also goes to
    /// [`copy`]'s `on_event` as it happens.
    pub failed: Sample<String>,
}

impl CopyReport {
    /// Whether every blob of the source is now in the target.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Copies every blob of `from` that `to` lacks; calls `on_event` for each blob as it is done (every
/// failure included: the report keeps only the first).
pub async fn copy(
    from: &Store,
    to: &Store,
    options: &CopyOptions,
    mut on_event: impl FnMut(&CopyEvent),
) -> Result<CopyReport> {
    let mut report = CopyReport::default();
    let sized = to.backend().recorded_digests_trusted().is_none();
    let listed = if options.list_target && sized {
        Some(Mutex::new(target_sizes(to, key_table::IN_MEMORY).await?))
    } else {
        None
    };
    let listed = listed.as_ref();
    // A key the table cannot take is reported with the listing's failures (and not copied): the
    // copy is then incomplete, and running it again finishes it.
    let mut seen = KeyTable::new(key_table::IN_MEMORY);
    let mut work = source(from, sized)
        .filter_map(|k| {
            let new = k.and_then(|(key, size)| Ok(seen.first_sight(key)?.then_some((key, size))));
            future::ready(new.transpose())
        })
        .map(|k| async move {
            match k {
                Ok((key, size)) => copy_one(from, to, key, size, listed).await,
                Err(error) => CopyEvent::Failed { key: None, error },
            }
        })
        .buffer_unordered(options.concurrency.max(1));
    while let Some(event) = work.next().await {
        match &event {
            CopyEvent::Copied { size, .. } => {
                report.listed += 1;
                report.copied += 1;
                report.bytes += size;
            }
            CopyEvent::Skipped { .. } => {
                report.listed += 1;
                report.skipped += 1;
            }
            CopyEvent::Failed { key, error } => match key {
                Some(k) => {
                    report.listed += 1;
                    report.failed.push(format!("{k}: {}", error.report()));
                }
                None => report.failed.push(format!(
                    "listing {}: {}",
                    from.backend().describe(),
                    error.report()
                )),
            },
        }
        on_event(&event);
    }
    report.failed.sort();
    Ok(report)
}

/// The source's keys, with their sizes where the target needs them to judge what it holds.
fn source(from: &Store, sized: bool) -> BoxStream<'static, Result<(BlobKey, Option<u64>)>> {
    if sized {
        from.list_meta().map_ok(|b| (b.key, Some(b.size))).boxed()
    } else {
        from.list().map_ok(|key| (key, None)).boxed()
    }
}

/// A size no object has: that of a key the target listed twice with two sizes (an object replaced
/// during the listing), which the copy then asks about.
const ASK: u64 = u64::MAX;

/// Every key the target holds for good, with its size: of a replicated target, the keys every
/// replica lists, each at one size ([`Backend::listings_of_record`], listed one after another).
/// A key some replica lacks is left out, one listed at two sizes (by two replicas, or by one
/// twice) is kept at a size no blob has ([`ASK`]), and the copy asks about either.
/// At most two tables are kept at once, the keys the replicas listed so far agree on and the next
/// replica's, each moving to disk past `in_memory` keys. A replica whose listing fails fails the
/// copy, as a plain target's does: its blobs cannot be counted as had (skipping its listing would
/// count them so), and asking each blob instead is what [`CopyOptions::list_target`] off does.
///
/// [`Backend::listings_of_record`]: crate::backend::Backend::listings_of_record
async fn target_sizes(to: &Store, in_memory: usize) -> Result<KeyTable> {
    agreed_sizes(to.backend().clone().listings_of_record(), in_memory).await
}

/// [`target_sizes`] of these listings, one after another.
async fn agreed_sizes(
    listings: Vec<BoxStream<'static, Result<BlobStat>>>,
    in_memory: usize,
) -> Result<KeyTable> {
    let mut agreed: Option<KeyTable> = None;
    for mut listing in listings {
        let mut sizes = KeyTable::new(in_memory);
        while let Some(blob) = listing.try_next().await? {
            // A key the replicas before did not all list is left out; one they listed at
            // another size is asked about, even where this replica also lists it at theirs (a
            // key listed twice, its object replaced during the listing).
            let size = match &agreed {
                None => blob.size,
                Some(before) => match before.mask_of(&blob.key)? {
                    None => continue,
                    Some(size) if size != blob.size => ASK,
                    Some(size) => size,
                },
            };
            match sizes.mask_of(&blob.key)? {
                None => sizes.note(blob.key, size)?,
                Some(had) if had != size => sizes.note(blob.key, ASK)?,
                Some(_) => {}
            }
        }
        sizes.finish()?;
        agreed = Some(sizes);
    }
    Ok(agreed.unwrap_or_else(|| KeyTable::new(in_memory)))
}

async fn copy_one(
    from: &Store,
    to: &Store,
    key: BlobKey,
    size: Option<u64>,
    listed: Option<&Mutex<KeyTable>>,
) -> CopyEvent {
    let address = Integrity::from(key.hash());
    let result = async {
        if let (Some(listed), Some(size)) = (listed, size) {
            let at_target = listed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .mask_of(&key)?;
            if at_target == Some(size) {
                return Ok(None);
            }
        }
        // A target that cannot tell (a replica down while the others lack the blob) is written
        // to: the put stores the blob wherever it can. A replicated target has the blob only
        // where every replica holds it at this size; otherwise the put writes every replica, and
        // each keeps a copy of that size and replaces another.
        if to.stored_intact(&key, size).await.unwrap_or(false) {
            return Ok(None);
        }
        // A pass over the source: read from its store of record, without filling a cache tier
        // in front of it with every blob.
        let stream = from.get_uncached(&key).await?;
        // The size the put expects is the read's, checked with the bytes as they come, not the
        // listing's: a replicated source lists the first replica's copy, which may be cut short
        // while the read serves another replica's good one (which the target may hold).
        let read = stream.blob_size();
        if size.is_some_and(|listed| listed != read)
            && to.stored_intact(&key, Some(read)).await.unwrap_or(false)
        {
            return Ok(None);
        }
        let size = size.map(|_| read);
        let put = to
            .put(
                stream.map(|r| r.map_err(Error::into_io)),
                &PutOptions {
                    expected_size: size,
                    ..PutOptions::expect(address.clone())
                },
            )
            .await
            .map_err(|e| match e {
                // A source read error travels through the put as an I/O error: unwrap it.
                Error::Input { source, .. } => Error::from_io(source),
                other => other,
            })?;
        Ok::<_, Error>(Some(put.digests.size))
    }
    .await;
    match result {
        Ok(Some(size)) => CopyEvent::Copied { key, size },
        Ok(None) => CopyEvent::Skipped { key },
        Err(error) => {
            tracing::warn!(blob = %key, error = %error.report(), "copy failed");
            CopyEvent::Failed {
                key: Some(key),
                error,
            }
        }
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::compose::{Replicated, ReplicatedOptions};
    use crate::backend::memory::MemoryBackend;
    use crate::backend::Backend;

    /// A key a later replica lists twice at two sizes (its object replaced during the listing)
    /// is asked about, as it is where the first replica does, whichever size the earlier
    /// replicas listed and in whichever order the two entries come.
    #[tokio::test]
    async fn a_key_a_later_replica_lists_at_two_sizes_is_asked_about() {
        let key = BlobKey::new([7; 64]);
        let stat = |size| BlobStat {
            key,
            size,
            modified: None,
            digests: None,
        };
        let listing = |sizes: &[u64]| {
            let stats: Vec<Result<BlobStat>> = sizes.iter().map(|&n| Ok(stat(n))).collect();
            futures::stream::iter(stats).boxed()
        };
        for later in [[5, 9], [9, 5]] {
            for first in [&[5][..], &[5, 9], &[9, 5]] {
                let table = agreed_sizes(vec![listing(first), listing(&later)], 4).await;
                let got = table.expect("sizes").mask_of(&key).expect("mask");
                assert_ne!(got, Some(5), "first {first:?}, later {later:?}");
                assert_ne!(got, Some(9), "first {first:?}, later {later:?}");
            }
        }
    }

    /// A replicated target's table, in memory and moved to disk past 4 keys: the keys both
    /// replicas list, each at its size, none that one replica lacks, and one a replica holds at
    /// another size at a size no blob has.
    #[tokio::test]
    async fn a_replicated_target_has_the_keys_every_replica_lists_at_one_size() {
        let mems = [MemoryBackend::new(), MemoryBackend::new()];
        let mut blobs = Vec::new();
        for i in 0..40u32 {
            let data = format!("blob {i}").into_bytes();
            // 0-9 on the first replica alone, 30-39 on the second alone.
            let mut key = None;
            for (r, m) in mems.iter().enumerate() {
                if (r == 0 && i < 30) || (r == 1 && i >= 10) {
                    let store = Store::new(m.clone());
                    let put = store.put_bytes(data.clone(), &PutOptions::default()).await;
                    key = Some(BlobKey::new(put.expect("put").digests.sha512));
                }
            }
            blobs.push(key.expect("put somewhere"));
        }
        // 20 cut short on the second replica.
        assert!(mems[1].corrupt_for_test(&blobs[20], bytes::Bytes::from_static(b"blob")));
        let replicas = mems
            .iter()
            .map(|m| Arc::new(m.clone()) as Arc<dyn Backend>)
            .collect();
        let to = Replicated::new(replicas, ReplicatedOptions::default()).expect("replicated");
        let to = Store::new(to);
        for in_memory in [4, key_table::IN_MEMORY] {
            let table = target_sizes(&to, in_memory).await.expect("target sizes");
            for (i, key) in blobs.iter().enumerate() {
                let size = format!("blob {i}").len() as u64;
                let want = match i {
                    // Listed at two sizes: kept at a size no blob has, so the copy asks.
                    20 => Some(ASK),
                    10..30 => Some(size),
                    _ => None,
                };
                let got = table.mask_of(key).expect("mask");
                assert_eq!(got, want, "blob {i}, limit {in_memory}");
            }
            #[cfg(feature = "sqlite")]
            assert_eq!(table.on_disk(), in_memory == 4);
        }
    }
}
