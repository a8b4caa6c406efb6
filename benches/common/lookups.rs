//! Random lookups of an alias index, timed: what the S3 and the Manta scale runs both measure.

use std::future::Future;
use std::ops::Range;
use std::time::Instant;

use futures::StreamExt;
use tarvault::integrity::{Algorithm, Digests, Hash};

/// `lookups` lookups of random entries of `0..entries` (named by `digests`), by sha1 and blake3
/// in turn, 16 in flight; `resolve` answers whether the entry was found (each must be). Returns
/// the requests they made (`requests` counts the store's requests so far), the latencies in µs,
/// sorted, and the wall time in seconds.
pub async fn random_lookups<F, Fut>(
    lookups: u64,
    entries: u64,
    digests: fn(u64) -> Digests,
    requests: impl Fn() -> u64,
    resolve: F,
) -> (u64, Vec<u32>, f64)
where
    F: Fn(Hash) -> Fut,
    Fut: Future<Output = bool>,
{
    let base = requests();
    let t = Instant::now();
    let resolve = &resolve;
    let mut lat: Vec<u32> = futures::stream::iter(0..lookups)
        .map(|k| async move {
            let i = rand::random::<u64>() % entries;
            let alg = if k % 2 == 0 {
                Algorithm::Sha1
            } else {
                Algorithm::Blake3
            };
            let t = Instant::now();
            assert!(resolve(digests(i).hash(alg)).await, "entry {i} missing");
            t.elapsed().as_micros() as u32
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let wall = t.elapsed().as_secs_f64();
    lat.sort_unstable();
    (requests() - base, lat, wall)
}

/// The `p` quantile of sorted latencies in µs, in ms.
pub fn pct(lat: &[u32], p: f64) -> f64 {
    lat.get(((lat.len() as f64 - 1.0) * p) as usize)
        .map_or(f64::NAN, |&v| v as f64 / 1000.0)
}

/// Prints the line of a run of `lookups` lookups that made `requests` requests.
pub fn print(lookups: u64, requests: u64, lat: &[u32], wall: f64) {
    println!(
        "  {lookups} lookups (16 in flight): {:.3} requests/lookup, {:.0} lookups/s, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        requests as f64 / lookups as f64,
        lookups as f64 / wall,
        pct(lat, 0.5),
        pct(lat, 0.99),
        pct(lat, 1.0)
    );
}

/// Builds entries `from..entries` in steps of `step` by `record` (which returns the records per
/// second of its range), printing the progress after each step.
pub async fn build<F, Fut>(from: u64, entries: u64, step: u64, mut record: F)
where
    F: FnMut(Range<u64>) -> Fut,
    Fut: Future<Output = f64>,
{
    let t = Instant::now();
    let mut at = from;
    while at < entries {
        let end = (at + step).min(entries);
        let rate = record(at..end).await;
        at = end;
        println!(
            "  built {at} entries ({rate:.0} records/s now, {:.0} s in all)",
            t.elapsed().as_secs_f64()
        );
    }
}

/// Runs fsck's marker pass (`sweep`, report only) over an index of `entries` entries and prints
/// what it cost: markers/s, requests per marker (`requests` counts the store's requests so far)
/// and the process's RSS after it.
pub async fn sweep<F, Fut>(entries: u64, requests: impl Fn() -> u64, sweep: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = tarvault::Result<tarvault::backend::AliasRebuild>>,
{
    let before = requests();
    let t = Instant::now();
    let report = sweep().await.expect("sweep");
    let wall = t.elapsed().as_secs_f64();
    let made = requests() - before;
    assert_eq!(report.listed, 2 * entries, "{report:?}");
    println!(
        "  fsck's marker pass (report only): {} markers in {wall:.1} s, {:.0} markers/s, {:.2} requests/marker, {} dangling; RSS after {} MiB (peak {})",
        report.listed,
        report.listed as f64 / wall,
        made as f64 / report.listed as f64,
        report.dangling,
        crate::rss::rss_now_kib() / 1024,
        crate::rss::peak_rss()
    );
}

/// One design's lookups over an old segment log (the `upgrade` runs): the first lookup, which
/// reads the log; `lookups` lookups of random entries of `0..entries`; then a miss. Prints what
/// each cost (`requests` counts the store's requests so far), the process's RSS at each step and
/// what the index holds for the log (`held`: `None` for the old reader, which holds every record).
pub async fn upgrade_run<F, Fut>(
    name: &str,
    entries: u64,
    lookups: u64,
    digests: fn(u64) -> Digests,
    resolve: F,
    requests: impl Fn() -> u64,
    held: impl Fn() -> Option<usize>,
) where
    F: Fn(Hash) -> Fut,
    Fut: Future<Output = bool>,
{
    let rss_before = crate::rss::rss_now_kib();
    let t = Instant::now();
    let base = requests();
    assert!(resolve(digests(0).hash(Algorithm::Sha1)).await, "entry 0");
    let load = (t.elapsed().as_secs_f64(), requests() - base);
    let rss_loaded = crate::rss::rss_now_kib();
    let (made, lat, wall) = random_lookups(lookups, entries, digests, &requests, &resolve).await;
    let rss_after = crate::rss::rss_now_kib();
    // The first miss after the lookups may be due to list the log again; the next is not.
    let mut misses = [0; 2];
    for (i, m) in misses.iter_mut().enumerate() {
        let base = requests();
        assert!(!resolve(digests(u64::MAX - i as u64).hash(Algorithm::Blake3)).await);
        *m = requests() - base;
    }
    println!("  {name}:");
    println!(
        "    first lookup (reads the log): {:.1} s, {} requests; a miss then: {} requests, the next: {}",
        load.0, load.1, misses[0], misses[1]
    );
    print(lookups, made, &lat, wall);
    println!(
        "    RSS {} MiB at start, {} MiB after the first lookup, {} MiB after the lookups (peak {}); for the log it holds {}",
        rss_before / 1024,
        rss_loaded / 1024,
        rss_after / 1024,
        crate::rss::peak_rss(),
        held().map_or_else(
            || "every record".to_string(),
            |b| format!("{} KiB of fingerprints and offsets", b / 1024)
        )
    );
}

/// Records entries `0..entries` (named by `digests`) as an earlier version's log would hold them,
/// by `record_many`, 8,192 records at a time (one segment each); prints the time it took.
pub async fn build_segments<F, Fut>(entries: u64, digests: fn(u64) -> Digests, record_many: F)
where
    F: Fn(Vec<Digests>) -> Fut,
    Fut: Future<Output = ()>,
{
    let t = Instant::now();
    let mut at = 0;
    while at < entries {
        let end = (at + 8192).min(entries);
        record_many((at..end).map(digests).collect()).await;
        at = end;
    }
    println!(
        "  an old log of {entries} entries in segments of 8,192 written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}
