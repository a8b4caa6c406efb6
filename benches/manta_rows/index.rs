//! The Manta rows of the alias index comparison (`benches/remote_index.rs` has the S3 ones):
//! markers (what the backend uses) against the segment log of earlier versions, on the same test
//! server, in the same run. Index record throughput at concurrency 1, 16 and 64, then requests and
//! latency of a cold lookup (hit and miss), each by a fresh index (a fresh process as far as
//! caches go). Requests are counted by the probe (`tarvault::backend::manta::probe`).

use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::Digest as _;
use tarvault::backend::manta::probe::{AliasDesign, MantaAliasProbe};
use tarvault::backend::AliasCacheConfig;
use tarvault::integrity::{Algorithm, Digests};

use crate::manta_common;

/// The digests of synthetic blob `i` (each digest of the 8 bytes of `i`: distinct, uniform).
fn digests(i: u64) -> Digests {
    let b = i.to_le_bytes();
    let sha512 = sha2::Sha512::digest(b);
    let sha1 = sha1::Sha1::digest(b);
    let blake3 = blake3::hash(&b);
    Digests::from_parts(&sha512, &sha1, blake3.as_bytes(), 1000 + i).expect("digests")
}

/// Records `range` through `probe` with `c` in flight; returns records per second.
async fn record_rate(probe: &MantaAliasProbe, range: std::ops::Range<u64>, c: usize) -> f64 {
    let n = range.end - range.start;
    let t = Instant::now();
    futures::stream::iter(range)
        .map(|i| async move { probe.record(&digests(i)).await.expect("record") })
        .buffer_unordered(c)
        .collect::<Vec<()>>()
        .await;
    n as f64 / t.elapsed().as_secs_f64()
}

/// Prints the table header.
pub fn header() {
    println!("| server | design | record c=1 /s | c=16 /s | c=64 /s | cold hit: requests | ms | cold miss: requests | ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
}

/// One row: `records` aliases recorded through `design` into a fresh store, then 20 cold
/// lookups of a hit and of a miss.
pub async fn compare(target: &manta_common::Target, design: AliasDesign, records: u64) {
    let config = target.config("index");
    let open = || {
        MantaAliasProbe::open(config.clone(), design, AliasCacheConfig::default()).expect("probe")
    };
    let writer = open();
    // c=1 on a tenth (it is slow), then the rest at 16 and at 64.
    let tenth = (records / 10).max(10);
    let c1 = record_rate(&writer, 0..tenth, 1).await;
    let half = tenth + (records - tenth) / 2;
    let c16 = record_rate(&writer, tenth..half, 16).await;
    let c64 = record_rate(&writer, half..records, 64).await;
    drop(writer);
    // Settle (the log merges in the background).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut hit = (0u64, Duration::ZERO);
    let mut miss = (0u64, Duration::ZERO);
    let tries = 20;
    for k in 0..tries {
        let i = (k * 97) % records;
        let d = digests(i);
        let probe = open();
        let t = Instant::now();
        let got = probe
            .resolve(&d.hash(Algorithm::Sha1))
            .await
            .expect("resolve");
        hit.1 += t.elapsed();
        assert!(got.is_some(), "entry {i} not found");
        hit.0 += probe.requests();
        let before = probe.requests();
        let absent = digests(u64::MAX - k);
        let t = Instant::now();
        let got = probe
            .resolve(&absent.hash(Algorithm::Sha1))
            .await
            .expect("resolve");
        miss.1 += t.elapsed();
        assert!(got.is_none());
        miss.0 += probe.requests() - before;
    }
    let per = |(n, t): (u64, Duration)| {
        (
            n as f64 / tries as f64,
            t.as_secs_f64() * 1000.0 / tries as f64,
        )
    };
    let (hr, hms) = per(hit);
    let (mr, mms) = per(miss);
    let design = match design {
        AliasDesign::Markers => "markers",
        AliasDesign::SegmentLog => "segment log",
    };
    println!(
        "| Manta test server | {design} ({records} records) | {c1:.0} | {c16:.0} | {c64:.0} | {hr:.1} | {hms:.2} | {mr:.1} | {mms:.2} |"
    );
}

/// The index alone at scale: `entries` entries built through the marker index (64 in flight,
/// progress every 50,000), then `lookups` lookups of random entries by sha1 and blake3 in turn
/// (16 in flight) through a fresh index (empty cache): requests per lookup, latency, and this
/// process's RSS before and after the lookups; with `sweep`, fsck's marker pass over all of them.
pub async fn scale(target: &manta_common::Target, entries: u64, lookups: u64, sweep: bool) {
    let config = target.config("scale");
    let open = || {
        MantaAliasProbe::open(
            config.clone(),
            AliasDesign::Markers,
            AliasCacheConfig::default(),
        )
        .expect("probe")
    };
    let writer = open();
    crate::lookups::build(0, entries, 50_000, |r| record_rate(&writer, r, 64)).await;
    drop(writer);
    let rss_before = crate::rss::rss_now_kib();
    let probe = open();
    // The first lookup of a fresh index also lists the old log's directory once: counted apart.
    let first = digests(0);
    assert!(probe
        .resolve(&first.hash(Algorithm::Sha1))
        .await
        .expect("resolve")
        .is_some());
    let first_requests = probe.requests();
    let (requests, lat, wall) = crate::lookups::random_lookups(
        lookups,
        entries,
        digests,
        || probe.requests(),
        |h| {
            let probe = &probe;
            async move { probe.resolve(&h).await.expect("resolve").is_some() }
        },
    )
    .await;
    let rss_after = crate::rss::rss_now_kib();
    // Misses: the first also lists the old log's directory (once per index), the next does not.
    let mut miss = [0u64; 2];
    for (k, m) in miss.iter_mut().enumerate() {
        let before = probe.requests();
        let absent = digests(u64::MAX - k as u64);
        assert!(probe
            .resolve(&absent.hash(Algorithm::Blake3))
            .await
            .expect("miss")
            .is_none());
        *m = probe.requests() - before;
    }
    println!(
        "  first lookup of the index (a hit): {first_requests} requests; first miss {}, next miss {}",
        miss[0], miss[1]
    );
    crate::lookups::print(lookups, requests, &lat, wall);
    println!(
        "  RSS: {} MiB before the lookups, {} MiB after (peak {})",
        rss_before / 1024,
        rss_after / 1024,
        crate::rss::peak_rss()
    );
    if sweep {
        crate::lookups::sweep(entries, || probe.requests(), || probe.sweep_report()).await;
    }
}

/// A store as an earlier version left it, read through the marker index upgrading from it and
/// through the old log's own reader, each by a fresh process whose client may only read (see
/// `benches/remote_index.rs`, whose `upgrade` does the same for S3).
pub async fn upgrade(target: &manta_common::Target, entries: u64, lookups: u64) {
    let config = target.config("upgrade");
    let writer = MantaAliasProbe::open(
        config.clone(),
        AliasDesign::SegmentLog,
        AliasCacheConfig::default(),
    )
    .expect("probe");
    crate::lookups::build_segments(entries, digests, |segment| {
        let writer = &writer;
        async move { writer.record_many(&segment).await.expect("segment") }
    })
    .await;
    drop(writer);
    for design in ["markers", "log"] {
        let out = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env("MANTA_URL", &target.url)
            .env("MANTA_USER", &target.user)
            .env("MANTA_KEY_MATERIAL", &target.key)
            .args(["upgrade-child", design, "--root", &config.root])
            .args(["--entries", &entries.to_string()])
            .args(["--lookups", &lookups.to_string()])
            .output()
            .expect("child");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// In a fresh process: lookups through one design over the old log at `root`.
pub async fn upgrade_child(
    target: &manta_common::Target,
    design: &str,
    root: &str,
    entries: u64,
    lookups: u64,
) {
    let mut config = target.config("upgrade");
    config.root = root.to_string();
    let (design, name) = match design {
        "log" => (AliasDesign::SegmentLog, "the old log's reader"),
        _ => (AliasDesign::Markers, "the marker index, upgrading"),
    };
    let probe = MantaAliasProbe::open_read_only(config, design, AliasCacheConfig::default())
        .expect("probe");
    crate::lookups::upgrade_run(
        name,
        entries,
        lookups,
        digests,
        |h| {
            let probe = &probe;
            async move { probe.resolve(&h).await.expect("resolve").is_some() }
        },
        || probe.requests(),
        || probe.legacy_bytes(),
    )
    .await;
}
