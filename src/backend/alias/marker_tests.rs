//! The marker index over in-memory stores that count requests; the S3 and Manta tests run the
//! same index against real servers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::time::SystemTime;

use super::*;
use crate::backend::alias::cache::CacheConfig;
use crate::backend::alias::log::{AliasLog, SegmentStore};
use crate::backend::{Dangling, RebuildOptions};

/// Objects in memory, with a count of requests. Markers are listed as written at the epoch
/// unless `fresh` (then: now). What a blob's object says of it ([`MarkerStore::blob_record`]) is
/// taken from `records`; a blob not there is stored with no digests in its metadata, which shows
/// no marker wrong. While `records_fail`, asking it is an error.
#[derive(Default, Clone)]
struct Mem {
    objects: Arc<Mutex<HashMap<String, Bytes>>>,
    requests: Arc<AtomicUsize>,
    fresh: Arc<std::sync::atomic::AtomicBool>,
    records: Arc<Mutex<HashMap<BlobKey, Option<Option<Digests>>>>>,
    records_fail: Arc<std::sync::atomic::AtomicBool>,
}

impl Mem {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bytes>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    fn hit(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }
}

fn marker_key(alg: Algorithm, hex: &str) -> String {
    format!("m/{alg}/{hex}")
}

#[async_trait]
impl MarkerStore for Mem {
    async fn create(&self, alg: Algorithm, hex: &str, body: Bytes) -> Result<bool> {
        self.hit();
        tokio::task::yield_now().await;
        let mut m = self.map();
        let k = marker_key(alg, hex);
        if m.contains_key(&k) {
            return Ok(false);
        }
        m.insert(k, body);
        Ok(true)
    }
    async fn replace(&self, alg: Algorithm, hex: &str, body: Bytes) -> Result<()> {
        self.hit();
        self.map().insert(marker_key(alg, hex), body);
        Ok(())
    }
    async fn get(&self, alg: Algorithm, hex: &str) -> Result<Option<Bytes>> {
        self.hit();
        tokio::task::yield_now().await;
        Ok(self.map().get(&marker_key(alg, hex)).cloned())
    }
    fn name(&self, alg: Algorithm, hex: &str) -> String {
        marker_key(alg, hex)
    }
    fn list(&self) -> BoxStream<'_, Result<Listed>> {
        self.hit();
        let modified = if self.fresh.load(Ordering::SeqCst) {
            SystemTime::now()
        } else {
            SystemTime::UNIX_EPOCH
        };
        let listed: Vec<Result<Listed>> = self
            .map()
            .keys()
            .filter_map(|k| {
                let (alg, hex) = k.strip_prefix("m/")?.split_once('/')?;
                let alg = if alg == "sha1" {
                    Algorithm::Sha1
                } else {
                    Algorithm::Blake3
                };
                Some(Ok(Listed::Marker {
                    alg,
                    hex: hex.to_string(),
                    modified: Some(modified),
                }))
            })
            .collect();
        futures::stream::iter(listed).boxed()
    }
    async fn delete(&self, alg: Algorithm, hex: &str) -> Result<()> {
        self.hit();
        self.map().remove(&marker_key(alg, hex));
        Ok(())
    }
    async fn blob_record(&self, key: BlobKey) -> Result<Option<Option<Digests>>> {
        self.hit();
        if self.records_fail.load(Ordering::SeqCst) {
            return Err(crate::Error::backend("mem", "HEAD answered 503"));
        }
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        Ok(records.get(&key).copied().unwrap_or(Some(None)))
    }
}

#[async_trait]
impl SegmentStore for Mem {
    async fn put(&self, name: &str, body: Bytes) -> Result<()> {
        self.hit();
        self.map().insert(format!("log/{name}"), body);
        Ok(())
    }
    async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        self.hit();
        Ok(self.map().get(&format!("log/{name}")).cloned())
    }
    async fn get_range(&self, name: &str, range: std::ops::Range<u64>) -> Result<Option<Bytes>> {
        let body = SegmentStore::get(self, name).await?;
        Ok(body.map(|b| b.slice(range.start as usize..range.end as usize)))
    }
    async fn list(&self) -> Result<Vec<(String, u64)>> {
        self.hit();
        Ok(self
            .map()
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("log/")?.to_string(), v.len() as u64)))
            .collect())
    }
    async fn delete(&self, names: &[String]) -> Result<()> {
        self.hit();
        let mut m = self.map();
        for n in names {
            m.remove(&format!("log/{n}"));
        }
        Ok(())
    }
    fn describe(&self) -> String {
        "mem".into()
    }
}

fn digests(i: u32) -> Digests {
    let b = i.to_le_bytes();
    let d = |n: usize| -> Vec<u8> { b.iter().copied().cycle().take(n).collect() };
    Digests::from_parts(&d(64), &d(20), &d(32), u64::from(i)).unwrap_or_else(|e| panic!("{e}"))
}

fn index(mem: &Mem, cache: CacheConfig) -> Arc<AliasIndex<Mem, Mem>> {
    AliasIndex::new(mem.clone(), mem.clone(), cache)
}

fn sha1(d: &Digests) -> Hash {
    Hash::new_unchecked(Algorithm::Sha1, &d.sha1)
}

fn ok<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_cold_lookup_is_one_request_and_a_miss_at_most_two() {
    let mem = Mem::default();
    let writer = index(&mem, CacheConfig::default());
    for i in 0..100 {
        ok(writer.record(&digests(i)).await);
    }
    assert_eq!(mem.count(), 200, "a put writes two markers");
    // Another process: nothing cached.
    let reader = index(&mem, CacheConfig::default());
    let before = mem.count();
    let d = digests(42);
    assert_eq!(
        ok(reader.resolve(&sha1(&d)).await),
        Some(BlobKey::new(d.sha512))
    );
    assert_eq!(mem.count() - before, 1, "a cold hit");
    let blake3 = Hash::new_unchecked(Algorithm::Blake3, &d.blake3);
    let before = mem.count();
    assert_eq!(
        ok(reader.resolve(&blake3).await),
        Some(BlobKey::new(d.sha512))
    );
    assert_eq!(
        mem.count() - before,
        0,
        "the hit cached the blob's other aliases"
    );
    // The first miss of a process also lists the old log once; later misses are one GET.
    let before = mem.count();
    assert_eq!(ok(reader.resolve(&sha1(&digests(1000))).await), None);
    assert_eq!(mem.count() - before, 2, "the first miss");
    let before = mem.count();
    assert_eq!(ok(reader.resolve(&sha1(&digests(1001))).await), None);
    assert_eq!(mem.count() - before, 1, "a later miss");
}

#[tokio::test]
async fn a_remembered_miss_never_hides_a_put_for_longer_than_its_ttl() {
    let mem = Mem::default();
    let ttl = std::time::Duration::from_millis(200);
    let reader = index(
        &mem,
        CacheConfig {
            miss_ttl: ttl,
            ..CacheConfig::default()
        },
    );
    let writer = index(&mem, CacheConfig::default());
    let d = digests(7);
    assert_eq!(ok(reader.resolve(&sha1(&d)).await), None);
    let before = mem.count();
    assert_eq!(ok(reader.resolve(&sha1(&d)).await), None);
    assert_eq!(
        mem.count(),
        before,
        "a repeated miss is answered from memory"
    );
    ok(writer.record(&d).await);
    let put_at = Instant::now();
    loop {
        if ok(reader.resolve(&sha1(&d)).await).is_some() {
            break;
        }
        assert!(put_at.elapsed() < ttl * 2, "the put stayed hidden");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(put_at.elapsed() <= ttl + std::time::Duration::from_millis(50));
}

#[tokio::test]
async fn memory_stays_within_the_budget() {
    let mem = Mem::default();
    let budget = 256 * 1024;
    let idx = index(
        &mem,
        CacheConfig {
            bytes: budget,
            ..CacheConfig::default()
        },
    );
    for i in 0..5000 {
        ok(idx.record(&digests(i)).await);
        assert!(idx.cached_bytes() <= budget);
    }
    // Evicted or not, every alias is still found.
    for i in (0..5000).step_by(97) {
        let d = digests(i);
        assert_eq!(
            ok(idx.resolve(&sha1(&d)).await),
            Some(BlobKey::new(d.sha512))
        );
    }
}

/// One sweep of every marker, with the default options and no scan's list of markers seen.
async fn swept(
    idx: &AliasIndex<Mem, Mem>,
    exists: super::sweep::BlobExists<'_>,
    grace: std::time::Duration,
) -> AliasRebuild {
    let mut report = AliasRebuild::default();
    let options = RebuildOptions::default();
    ok(idx.sweep(exists, grace, &options, &mut report, None).await);
    report
}

/// Blobs that exist, for a sweep: those of `appear` are stored (by a put racing the sweep) as
/// soon as one of their markers has been deleted.
#[derive(Default, Clone)]
struct Blobs {
    present: Arc<Mutex<std::collections::HashSet<BlobKey>>>,
    appear: Arc<Mutex<HashMap<BlobKey, Digests>>>,
    markers: Mem,
}

impl Blobs {
    fn add(&self, d: &Digests) {
        let mut p = self.present.lock().unwrap_or_else(|e| e.into_inner());
        p.insert(BlobKey::new(d.sha512));
    }
    fn check(&self, key: BlobKey) -> futures::future::BoxFuture<'static, Result<bool>> {
        let there = {
            let appear = self.appear.lock().unwrap_or_else(|e| e.into_inner());
            match appear.get(&key) {
                Some(d) => {
                    !has_marker(&self.markers, Algorithm::Sha1, d)
                        || !has_marker(&self.markers, Algorithm::Blake3, d)
                }
                None => self
                    .present
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&key),
            }
        };
        Box::pin(async move { Ok(there) })
    }
}

/// An index with the markers of 20 blobs, of which 0..15 exist and 15..20 were deleted behind
/// the index's back.
async fn twenty_recorded_five_deleted() -> (Mem, Arc<AliasIndex<Mem, Mem>>, Blobs, Vec<Digests>) {
    let mem = Mem::default();
    let idx = index(&mem, CacheConfig::default());
    let blobs = Blobs::default();
    let all: Vec<Digests> = (0..20).map(digests).collect();
    for d in &all {
        ok(idx.record(d).await);
    }
    for d in &all[..15] {
        blobs.add(d);
    }
    (mem, idx, blobs, all)
}

/// Both markers of each of the first `n` blobs of `all` are there, and none of the others'.
fn markers_only_of_the_first(mem: &Mem, all: &[Digests], n: usize) {
    for (i, d) in all.iter().enumerate() {
        for alg in [Algorithm::Sha1, Algorithm::Blake3] {
            assert_eq!(has_marker(mem, alg, d), i < n, "blob {i} {alg}");
        }
    }
}

fn has_marker(mem: &Mem, alg: Algorithm, d: &Digests) -> bool {
    let hex = match alg {
        Algorithm::Sha1 => hex::encode(d.sha1),
        _ => hex::encode(d.blake3),
    };
    mem.map().contains_key(&marker_key(alg, &hex))
}

#[tokio::test]
async fn a_sweep_removes_dangling_markers_and_reports_unreadable_ones() {
    let (mem, idx, blobs, all) = twenty_recorded_five_deleted().await;
    mem.map()
        .insert(marker_key(Algorithm::Sha1, &"ab".repeat(20)), "v1 1".into());
    let exists = |k| blobs.check(k);
    let grace = std::time::Duration::from_secs(60);

    // Written just now: nothing is checked.
    mem.fresh.store(true, Ordering::SeqCst);
    let young = swept(&idx, &exists, grace).await;
    assert_eq!((young.listed, young.recent, young.removed), (41, 41, 0));

    mem.fresh.store(false, Ordering::SeqCst);
    // Skipped: nothing listed. Reported only: the same findings, nothing removed.
    let skip = RebuildOptions {
        dangling: Dangling::Skip,
        ..RebuildOptions::default()
    };
    let mut skipped = AliasRebuild::default();
    ok(idx.sweep(&exists, grace, &skip, &mut skipped, None).await);
    assert_eq!(skipped, AliasRebuild::default());
    let report_only = RebuildOptions {
        dangling: Dangling::Report,
        ..RebuildOptions::default()
    };
    let mut reported = AliasRebuild::default();
    ok(idx
        .sweep(&exists, grace, &report_only, &mut reported, None)
        .await);
    assert_eq!(
        (reported.listed, reported.dangling, reported.removed),
        (41, 10, 0)
    );
    assert!(all.iter().all(|d| has_marker(&mem, Algorithm::Sha1, d)));

    let report = swept(&idx, &exists, grace).await;
    assert_eq!(report.listed, 41);
    assert_eq!((report.dangling, report.removed), (10, 10), "{report:?}");
    assert_eq!(report.unreadable, 1);
    markers_only_of_the_first(&mem, &all, 15);
    let fresh = index(&mem, CacheConfig::default());
    assert_eq!(ok(fresh.resolve(&sha1(&all[17])).await), None);
    assert_eq!(
        ok(fresh.resolve(&sha1(&all[3])).await),
        Some(BlobKey::new(all[3].sha512))
    );
    // Idempotent: a second pass finds nothing more.
    let again = swept(&idx, &exists, grace).await;
    assert_eq!((again.listed, again.removed, again.unreadable), (31, 0, 1));
}

/// After a rebuild, the sweep skips the markers the rebuild found or made naming a blob its scan
/// saw: only the others (here those of deleted blobs) cost a GET and HEADs, and the findings are
/// the same as a sweep that checks every marker.
#[tokio::test]
async fn a_sweep_after_a_rebuild_checks_only_what_the_scan_did_not_see() {
    let grace = std::time::Duration::from_secs(60);
    let mut costs = Vec::new();
    for with_seen in [false, true] {
        // Blobs 0..15 exist and are what the scan finds.
        let (mem, idx, blobs, all) = twenty_recorded_five_deleted().await;
        let (_, seen) = ok(idx
            .rebuild(futures::stream::iter(all[..15].to_vec()).boxed())
            .await);
        let heads = AtomicUsize::new(0);
        let exists = |k| {
            heads.fetch_add(1, Ordering::SeqCst);
            blobs.check(k)
        };
        let before = mem.count();
        let mut report = AliasRebuild::default();
        let seen = with_seen.then_some(&seen);
        ok(idx
            .sweep(
                &exists,
                grace,
                &RebuildOptions::default(),
                &mut report,
                seen,
            )
            .await);
        assert_eq!(report.listed, 40);
        assert_eq!((report.dangling, report.removed), (10, 10), "{report:?}");
        markers_only_of_the_first(&mem, &all, 15);
        costs.push((mem.count() - before, heads.load(Ordering::SeqCst)));
    }
    let [(requests, heads), (seen_requests, seen_heads)] = costs[..] else {
        panic!("two sweeps")
    };
    // The 30 markers of the 15 blobs scanned: a GET and a HEAD each, no more.
    assert_eq!(requests - seen_requests, 30, "{costs:?}");
    assert_eq!(heads - seen_heads, 30, "{costs:?}");
    // Each dangling marker: a HEAD before and after its DELETE.
    assert_eq!(seen_heads, 20, "{costs:?}");
}

/// The races of the module documentation of `alias::sweep`, made deterministic.
#[tokio::test]
async fn a_sweep_racing_a_put_of_the_same_blob_leaves_its_markers() {
    let mem = Mem::default();
    let idx = index(&mem, CacheConfig::default());
    let blobs = Blobs {
        markers: mem.clone(),
        ..Blobs::default()
    };
    let exists = |k| blobs.check(k);
    let grace = std::time::Duration::from_secs(60);
    let d = digests(5);
    ok(idx.record(&d).await);

    // The blob appears between the sweep's DELETE and its second look: written back.
    blobs
        .appear
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(BlobKey::new(d.sha512), d);
    let report = swept(&idx, &exists, grace).await;
    assert_eq!(report.removed, 0, "{report:?}");
    assert!(report.dangling >= 1, "{report:?}");
    assert!(has_marker(&mem, Algorithm::Sha1, &d) && has_marker(&mem, Algorithm::Blake3, &d));

    // A put whose create-only marker PUTs answered "exists" (the dangling markers), then the
    // sweep removes them before the put's blob is stored: the put reads them back once its
    // blob is stored, finds them gone and writes them.
    let e = digests(6);
    ok(idx.record(&e).await);
    let unsettled = ok(idx.record_alongside(&e).await);
    let report = swept(&idx, &exists, grace).await;
    assert_eq!(report.removed, 2, "{report:?}");
    assert!(!has_marker(&mem, Algorithm::Sha1, &e));
    blobs.add(&e);
    ok(idx.settle(&e, unsettled).await);
    assert!(has_marker(&mem, Algorithm::Sha1, &e) && has_marker(&mem, Algorithm::Blake3, &e));
    let fresh = index(&mem, CacheConfig::default());
    assert_eq!(
        ok(fresh.resolve(&sha1(&e)).await),
        Some(BlobKey::new(e.sha512))
    );

    // A new blob's settle costs no request.
    let f = digests(7);
    let unsettled = ok(idx.record_alongside(&f).await);
    let before = mem.count();
    ok(idx.settle(&f, unsettled).await);
    assert_eq!(mem.count(), before);
}

/// A paced sweep checks no more markers a second than asked (virtual time: the clock is paused
/// and advances only by the sweep's own waits).
#[tokio::test(start_paused = true)]
async fn a_paced_sweep_keeps_to_its_rate() {
    let mem = Mem::default();
    let idx = index(&mem, CacheConfig::default());
    let blobs = Blobs::default();
    for d in (0..20).map(digests) {
        ok(idx.record(&d).await);
        blobs.add(&d);
    }
    let exists = |k| blobs.check(k);
    let paced = RebuildOptions {
        checks_per_second: Some(10.0),
        ..RebuildOptions::default()
    };
    let started = tokio::time::Instant::now();
    let mut report = AliasRebuild::default();
    ok(idx
        .sweep(
            &exists,
            std::time::Duration::ZERO,
            &paced,
            &mut report,
            None,
        )
        .await);
    assert_eq!((report.listed, report.dangling), (40, 0));
    // 40 checks at 10 a second: the last starts 3.9 s after the first.
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(3900), "{took:?}");
}

#[path = "upgrade_tests.rs"]
mod upgrade;

#[path = "rebuild_tests.rs"]
mod rebuild;
