//! The alias index remote stores (S3, Manta) kept before [`marker`](super::marker): a
//! log of small, immutable *segment* objects, written with group commit and read into memory.
//! Stores of that format are read, while they upgrade to markers, by
//! [`LegacyLog`](super::legacy::LegacyLog) (which keeps fingerprints, not records); the
//! benchmarks measure the log beside markers, and nothing writes new segments into a store any
//! more.
//!
//! Why not one record object per alias: a put must leave its sha1 and blake3 records durable
//! before it returns, and on an object store each record object costs a request about as dear as
//! the blob's own PUT (a signed request, an object, its metadata on the server; on AWS, a PUT
//! charge). Two record objects per blob made a small put three requests. Here the records of every
//! put that commits while a segment is being written go into the next segment together, so under
//! concurrency many puts share one request, and a lone put pays one request, sent alongside its
//! blob. A put still returns only once the segment holding its records is stored. When the last
//! segment was shared, the next one waits [`LINGER`] for more records (a classic group-commit
//! linger: it halves the segments at 16 puts in flight); a lone put never waits.
//!
//! A segment's body is lines in the fs log's format ([`line()`]); its name is
//! `<microseconds hex>-<random hex>`, unique to its writer, so writers never contend. Readers keep
//! every record in memory (as the fs backend does with its log): a lookup that misses lists the
//! segments again (one LIST, shared by concurrent misses) and reads the ones it has not seen.
//!
//! Compaction keeps the count of segments low: once [`MERGE_AT`] small segments are known (own or
//! read), their records are written as one new segment, and only then are they deleted. A reader
//! that finds a listed segment gone lists again: its records are in the merged one. Two processes
//! merging the same segments write the same records twice, which is harmless; no record is lost,
//! because nothing is deleted before a segment holding its records is stored. The log is a cache
//! of what the blobs say: `fsck` rebuilds it
//! ([`Backend::rebuild_aliases`](crate::backend::Backend::rebuild_aliases)).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::oneshot;

use super::line::{line, parse_line};
use super::map::AliasMap;
use crate::backend::BlobKey;
use crate::integrity::{Digests, Hash};
use crate::{Error, Result};

/// Small segments known before they are merged into one.
pub(crate) const MERGE_AT: usize = 64;
/// Segments at least this big are left alone by merges (a merged segment grows to about this).
const SMALL: u64 = 1 << 20;
/// How long a segment waits for more records when the previous one was shared: measured on
/// s3s-fs with 16 puts in flight, segments carried 4.8 records each without it and 9.9 with it.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);
/// A segment with this many records waiting goes at once.
const LINGER_UNTIL: usize = 32;
/// Segments read at once when loading.
const PARALLEL_READS: usize = 16;
/// The most a segment object may hold: each was written with one PUT, and S3 takes at most
/// 5 GiB in one (real segments are far smaller: a merge writes about [`SMALL`], a flush the
/// records of the puts in flight). A larger claimed size is refused before any of it is read.
pub(crate) const SEGMENT_MAX: u64 = 5 << 30;

/// Where a log keeps its segments: a flat namespace of whole objects.
#[async_trait]
pub(crate) trait SegmentStore: Send + Sync + 'static {
    /// Stores a whole segment (names are unique: replacing is never needed, but harmless).
    async fn put(&self, name: &str, body: Bytes) -> Result<()>;
    /// A segment's body; `None` if it is gone (merged away since it was listed). An object over
    /// [`SEGMENT_MAX`] bytes is an error naming it, refused before its body is read.
    async fn get(&self, name: &str) -> Result<Option<Bytes>>;
    /// Bytes `range` of a segment (which lies within it); `None` if it is gone.
    async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Option<Bytes>>;
    /// Every segment's name and size.
    async fn list(&self) -> Result<Vec<(String, u64)>>;
    /// Deletes segments (those already gone are fine).
    async fn delete(&self, names: &[String]) -> Result<()>;
    /// Which store, for errors.
    fn describe(&self) -> String;
}

type Waiter = oneshot::Sender<std::result::Result<(), Arc<Error>>>;

/// A segment write's error, shared by every put that waited on it; its source chain is the
/// original's, so callers can still find the server's error code in it.
#[derive(Debug)]
struct Shared(Arc<Error>);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

#[derive(Default)]
struct State {
    map: AliasMap,
    /// Segments whose records are in `map`.
    loaded: HashSet<String>,
    /// Segments under [`SMALL`] bytes and the blobs they name: what the next merge folds together.
    small: HashMap<String, Vec<BlobKey>>,
    /// Records waiting for the next segment, and the puts waiting on it.
    pending: Vec<Digests>,
    waiters: Vec<Waiter>,
    /// A task is writing segments (it takes `pending` until it finds it empty).
    flushing: bool,
    /// A merge is running.
    merging: bool,
}

impl State {
    /// Takes in a stored segment's records; returns whether a merge is due.
    fn absorb(&mut self, name: String, size: u64, records: &[Digests]) -> bool {
        for d in records {
            self.map.insert(d);
        }
        if size < SMALL {
            let keys = records.iter().map(|d| BlobKey::new(d.sha512)).collect();
            self.small.insert(name.clone(), keys);
        }
        self.loaded.insert(name);
        if self.small.len() >= MERGE_AT && !self.merging {
            self.merging = true;
            return true;
        }
        false
    }
}

/// An alias index in segments (see the [module documentation](self)).
pub(crate) struct AliasLog<S> {
    store: S,
    state: Mutex<State>,
    /// When the last refresh began; held while one runs, so concurrent misses share it.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
}

impl<S: SegmentStore> AliasLog<S> {
    pub(crate) fn new(store: S) -> Arc<Self> {
        Arc::new(AliasLog {
            store,
            state: Mutex::new(State::default()),
            refreshed: tokio::sync::Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the aliases of committed blobs; they are stored when this returns.
    pub(crate) async fn record(self: &Arc<Self>, all: &[Digests]) -> Result<()> {
        if all.is_empty() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut st = self.lock();
            st.pending.extend_from_slice(all);
            st.waiters.push(tx);
            !std::mem::replace(&mut st.flushing, true)
        };
        if start {
            // A task of its own, so a caller that gives up waiting cannot strand the others.
            tokio::spawn(self.clone().flush());
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Backend {
                backend: self.store.describe(),
                message: "write alias segment".into(),
                source: Some(Box::new(Shared(e))),
            }),
            Err(_) => Err(Error::backend(
                self.store.describe(),
                "alias log: the segment writer stopped",
            )),
        }
    }

    /// Writes segments until no records are waiting.
    async fn flush(self: Arc<Self>) {
        let mut last_batch = 0;
        loop {
            // Puts are committing side by side: give the next segment a moment to gather more
            // of them (a lone put never waits).
            if last_batch > 1 && self.lock().pending.len() < LINGER_UNTIL {
                tokio::time::sleep(LINGER).await;
            }
            let (records, waiters) = {
                let mut st = self.lock();
                if st.pending.is_empty() {
                    st.flushing = false;
                    return;
                }
                (
                    std::mem::take(&mut st.pending),
                    std::mem::take(&mut st.waiters),
                )
            };
            last_batch = records.len();
            let name = segment_name();
            let body = body_of(&records);
            let size = body.len() as u64;
            let outcome = match self.store.put(&name, body).await {
                Ok(()) => {
                    let merge = self.lock().absorb(name, size, &records);
                    if merge {
                        tokio::spawn(self.clone().merge());
                    }
                    Ok(())
                }
                Err(e) => Err(Arc::new(e)),
            };
            tracing::debug!(
                records = records.len(),
                ok = outcome.is_ok(),
                "alias segment"
            );
            for w in waiters {
                let _ = w.send(outcome.clone());
            }
        }
    }

    /// The blob with this sha1 or blake3 digest, if any segment records it.
    pub(crate) async fn resolve(self: &Arc<Self>, hash: &Hash) -> Result<Option<BlobKey>> {
        let asked = Instant::now();
        if let Some(k) = self.lock().map.lookup(hash) {
            return Ok(Some(k));
        }
        // Unknown here: perhaps another process recorded it since the segments were last read.
        self.refresh(asked).await?;
        Ok(self.lock().map.lookup(hash))
    }

    /// Reads the segments not read yet, unless a refresh began after `asked` (it has finished by
    /// the time the lock is ours, and saw everything stored before `asked`).
    async fn refresh(self: &Arc<Self>, asked: Instant) -> Result<()> {
        let mut last = self.refreshed.lock().await;
        if last.is_some_and(|t| t >= asked) {
            return Ok(());
        }
        *last = Some(Instant::now());
        // A listed segment can vanish before it is read (merged away): list again, and the
        // merged one is there.
        for _ in 0..3 {
            let listed = self.store.list().await?;
            let names: HashSet<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
            let new: Vec<(String, u64)> = {
                let mut st = self.lock();
                // Forget segments others merged away (their records are in the merged one).
                st.loaded.retain(|n| names.contains(n.as_str()));
                st.small.retain(|n, _| names.contains(n.as_str()));
                listed
                    .iter()
                    .filter(|(n, _)| !st.loaded.contains(n))
                    .cloned()
                    .collect()
            };
            let read: Vec<(String, u64, Option<Bytes>)> = futures::stream::iter(new)
                .map(|(name, size)| async move {
                    let body = self.store.get(&name).await?;
                    Ok::<_, Error>((name, size, body))
                })
                .buffer_unordered(PARALLEL_READS)
                .try_collect()
                .await?;
            let mut gone = false;
            let mut merge = false;
            {
                let mut st = self.lock();
                for (name, size, body) in read {
                    match body {
                        Some(body) => {
                            let records = parse_named(&self.store.describe(), &name, &body);
                            merge |= st.absorb(name, size, &records);
                        }
                        None => gone = true,
                    }
                }
            }
            if merge {
                tokio::spawn(self.clone().merge());
            }
            if !gone {
                break;
            }
        }
        Ok(())
    }

    /// Folds the small segments known into one. Best effort: a failure leaves them as they were.
    async fn merge(self: Arc<Self>) {
        let (names, records) = {
            let st = self.lock();
            let names: Vec<String> = st.small.keys().cloned().collect();
            let records: Vec<Digests> = st
                .small
                .values()
                .flatten()
                .collect::<HashSet<_>>()
                .into_iter()
                .filter_map(|k| st.map.digests(k))
                .collect();
            (names, records)
        };
        if names.len() >= 2 {
            let name = segment_name();
            let body = body_of(&records);
            let size = body.len() as u64;
            match self.store.put(&name, body).await {
                Ok(()) => {
                    {
                        let mut st = self.lock();
                        for n in &names {
                            st.small.remove(n);
                            st.loaded.remove(n);
                        }
                        st.absorb(name, size, &records);
                    }
                    if let Err(e) = self.store.delete(&names).await {
                        tracing::warn!(error = %e.report(), "alias log: merged segments not deleted");
                    }
                    tracing::debug!(segments = names.len(), "alias log: merged");
                }
                Err(e) => tracing::warn!(error = %e.report(), "alias log: merge not written"),
            }
        }
        self.lock().merging = false;
    }

    /// How many segments this process knows of (for tests).
    #[cfg(test)]
    fn segments_known(&self) -> usize {
        self.lock().loaded.len()
    }
}

fn body_of(records: &[Digests]) -> Bytes {
    let mut text = String::with_capacity(records.len() * 250);
    for d in records {
        text.push_str(&line(d));
    }
    Bytes::from(text)
}

/// A segment's records; lines that do not parse (a torn or foreign segment) are skipped, with one
/// warning naming the segment.
pub(super) fn parse_named(store: &str, name: &str, body: &[u8]) -> Vec<Digests> {
    let mut records = Vec::new();
    each_record(store, name, body, |_, d| records.push(d));
    records
}

/// Calls `f` with each record of a segment and the offset of its line; lines that do not parse
/// are skipped, with one warning naming the segment.
pub(super) fn each_record(store: &str, name: &str, body: &[u8], mut f: impl FnMut(usize, Digests)) {
    let mut bad = 0usize;
    let mut at = 0usize;
    for l in body.split(|b| *b == b'\n') {
        let start = at;
        at += l.len() + 1;
        if l.is_empty() {
            continue;
        }
        match parse_line(l) {
            Some(d) => f(start, d),
            None => bad += 1,
        }
    }
    if bad > 0 {
        tracing::warn!(
            store,
            segment = name,
            lines = bad,
            "skipping unreadable alias segment lines"
        );
    }
}

/// `<microseconds since the epoch, 14 hex digits>-<64 random bits>`: unique, and ordered by time.
fn segment_name() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{micros:014x}-{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::Algorithm;

    /// Segments in memory, counting requests.
    #[derive(Default, Clone)]
    struct Mem {
        objects: Arc<Mutex<HashMap<String, Bytes>>>,
        puts: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[async_trait]
    impl SegmentStore for Mem {
        async fn put(&self, name: &str, body: Bytes) -> Result<()> {
            self.puts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::task::yield_now().await;
            self.lock().insert(name.to_string(), body);
            Ok(())
        }
        async fn get(&self, name: &str) -> Result<Option<Bytes>> {
            Ok(self.lock().get(name).cloned())
        }
        async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Option<Bytes>> {
            let body = self.lock().get(name).cloned();
            Ok(body.map(|b| b.slice(range.start as usize..range.end as usize)))
        }
        async fn list(&self) -> Result<Vec<(String, u64)>> {
            Ok(self
                .lock()
                .iter()
                .map(|(n, b)| (n.clone(), b.len() as u64))
                .collect())
        }
        async fn delete(&self, names: &[String]) -> Result<()> {
            let mut m = self.lock();
            for n in names {
                m.remove(n);
            }
            Ok(())
        }
        fn describe(&self) -> String {
            "mem".into()
        }
    }

    impl Mem {
        fn lock(&self) -> MutexGuard<'_, HashMap<String, Bytes>> {
            self.objects.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    fn digests(i: u32) -> Digests {
        let b = i.to_le_bytes();
        let d = |n: usize| -> Vec<u8> { b.iter().copied().cycle().take(n).collect() };
        Digests::from_parts(&d(64), &d(20), &d(32), u64::from(i)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_puts_share_segments_and_other_writers_see_them() {
        let mem = Mem::default();
        let writer = AliasLog::new(mem.clone());
        let all: Vec<Digests> = (1..=200).map(digests).collect();
        let tasks: Vec<_> = all
            .iter()
            .map(|d| {
                let w = writer.clone();
                let d = *d;
                tokio::spawn(async move { w.record(&[d]).await })
            })
            .collect();
        for t in tasks {
            t.await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let puts = mem.puts.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            puts < 200,
            "200 concurrent records took {puts} segment writes"
        );
        // A second process, sharing only the store, finds every record.
        let reader = AliasLog::new(mem.clone());
        for d in &all {
            let by_sha1 = Hash::new_unchecked(Algorithm::Sha1, &d.sha1);
            let by_blake3 = Hash::new_unchecked(Algorithm::Blake3, &d.blake3);
            let want = Some(BlobKey::new(d.sha512));
            assert_eq!(reader.resolve(&by_sha1).await.ok(), Some(want));
            assert_eq!(reader.resolve(&by_blake3).await.ok(), Some(want));
        }
        let unknown = Hash::new_unchecked(Algorithm::Sha1, &[9; 20]);
        assert_eq!(reader.resolve(&unknown).await.ok(), Some(None));
    }

    #[tokio::test]
    async fn small_segments_are_merged_without_losing_records() {
        let mem = Mem::default();
        let writer = AliasLog::new(mem.clone());
        // One at a time: a segment each.
        let all: Vec<Digests> = (1..=(MERGE_AT as u32 + 10)).map(digests).collect();
        for d in &all {
            writer.record(&[*d]).await.unwrap_or_else(|e| panic!("{e}"));
        }
        // Let the background merge finish.
        for _ in 0..100 {
            if mem.lock().len() < MERGE_AT {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let stored = mem.lock().len();
        assert!(stored < MERGE_AT, "{stored} segments after a merge was due");
        assert!(writer.segments_known() < MERGE_AT);
        let reader = AliasLog::new(mem.clone());
        for d in &all {
            let h = Hash::new_unchecked(Algorithm::Sha1, &d.sha1);
            assert_eq!(
                reader.resolve(&h).await.ok(),
                Some(Some(BlobKey::new(d.sha512)))
            );
        }
    }

    #[tokio::test]
    async fn a_later_record_keeps_the_earlier_ones() {
        let mem = Mem::default();
        let log = AliasLog::new(mem.clone());
        for i in 1..=5 {
            log.record(&[digests(i)])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        log.record(&[digests(7)])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let reader = AliasLog::new(mem.clone());
        for i in [1, 5, 7] {
            let h = Hash::new_unchecked(Algorithm::Sha1, &digests(i).sha1);
            assert_eq!(
                reader.resolve(&h).await.ok(),
                Some(Some(BlobKey::new(digests(i).sha512)))
            );
        }
    }
}
