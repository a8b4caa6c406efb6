//! The remote alias index on a real S3 server: markers (one object per alias, what the backend
//! uses) against the segment log of earlier versions, in the same run, and an index-only run at
//! scale built through the index's own API. Requests are counted by a wrapper around the
//! object_store client (tests/s3/counting.rs); a LIST counts once per listing.
//!
//! Run with a server started by `backends/s3/start-*.sh` (`TARVAULT_S3S_ENV` or
//! `TARVAULT_CEPH_ENV`; each one set is measured):
//!
//! - `cargo bench --features s3 --bench remote_index` — the design comparison: index record
//!   throughput at concurrency 1, 16 and 64, and requests and latency of a cold lookup (hit and
//!   miss) by a fresh process, for both designs on stores of `--records N` (default 2000).
//! - `… -- scale --entries 1000000` — builds that many entries through the marker index
//!   (64 records in flight; progress every 50,000), then a child process (fresh memory) does
//!   `--lookups 100000` cold lookups of random entries (16 in flight) and reports requests per
//!   lookup, latency percentiles and its RSS. `--prefix P` reuses a store built before (the
//!   build is skipped when `--skip-build` is given). The store is left for `du`; the run prints
//!   how to remove it. With `--sweep`, the child then runs fsck's pass over every marker
//!   (`--dangling-aliases report`, no grace: a GET of each marker and a HEAD of its blob, none of
//!   which exists in an index-only store) and reports markers per second, requests per marker and
//!   its RSS.
//! - `… -- upgrade --entries 1000000` — builds a store as an earlier version left it (the segment
//!   log, 8,192 records per segment), then two fresh child processes each do `--lookups 100000`
//!   lookups of random entries: one through the old log's own reader (every record in memory), one
//!   through the marker index as it reads that log during an upgrade (fingerprints). Both clients
//!   may only read, so the marker index's background import stops at its first write and every
//!   lookup is answered from the log: an upgrade's worst case. Reports what loading the log cost,
//!   requests per lookup and per miss, latency, RSS and the bytes held. `--designs markers` runs
//!   the marker index's child alone (the old reader holds ~850 bytes a record: 8 GB at 10M).
//! - `… -- scale --memory --entries 1000000` — the same over object_store's in-memory store in
//!   this process, for sizes whose objects a test server here cannot hold (s3s-fs keeps three
//!   files per object: 1M entries would be 2M objects, ~25 GB): requests per lookup are the
//!   index's own, latency is not a network's, and the RSS reported is its growth over the lookups
//!   (the store itself lives in the process too). Needs no server.

#[path = "../tests/s3/counting.rs"]
mod counting;
#[path = "common/lookups.rs"]
mod lookups;
#[path = "common/rss.rs"]
mod rss;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::ObjectStore;
use sha2::Digest as _;
use tarvault::backend::s3::probe::{AliasDesign, AliasProbe};
use tarvault::backend::s3::S3Config;
use tarvault::backend::AliasCacheConfig;
use tarvault::integrity::{Algorithm, Digests};

use counting::Counting;

/// The digests of synthetic blob `i` (each digest of the 8 bytes of `i`: distinct, uniform).
fn digests(i: u64) -> Digests {
    let b = i.to_le_bytes();
    let sha512 = sha2::Sha512::digest(b);
    let sha1 = sha1::Sha1::digest(b);
    let blake3 = blake3::hash(&b);
    Digests::from_parts(&sha512, &sha1, blake3.as_bytes(), 1000 + i).expect("digests")
}

struct Server {
    name: String,
    vars: HashMap<String, String>,
}

impl Server {
    fn from_env(var: &str, name: &str) -> Option<Server> {
        let file = std::env::var(var).ok()?;
        let text = std::fs::read_to_string(&file).expect("env file");
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Some(Server {
            name: name.into(),
            vars,
        })
    }

    fn config(&self) -> S3Config {
        let v = |k: &str| self.vars.get(k).cloned().expect(k);
        let mut c = S3Config::new(v("TARVAULT_S3_BUCKET"), "");
        c.endpoint = Some(v("AWS_ENDPOINT_URL"));
        c.allow_http = Some(true);
        c.region = Some(v("AWS_REGION"));
        c.credentials = Some((v("AWS_ACCESS_KEY_ID"), v("AWS_SECRET_ACCESS_KEY")));
        c
    }

    /// A fresh client, counting its requests.
    fn counted(&self) -> Counting {
        Counting::new(Arc::new(self.config().build().expect("client")))
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name).map_or(default, |v| v.parse().expect(name))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let servers: Vec<Server> = [
        ("TARVAULT_S3S_ENV", "s3s-fs"),
        ("TARVAULT_CEPH_ENV", "ceph"),
    ]
    .into_iter()
    .filter_map(|(v, n)| Server::from_env(v, n))
    .collect();
    if args.iter().any(|a| a == "--memory") {
        rt.block_on(scale_in_memory(&args));
        return;
    }
    if servers.is_empty() {
        println!("skipped: set TARVAULT_S3S_ENV and/or TARVAULT_CEPH_ENV (backends/s3/start-*.sh)");
        return;
    }
    if args.iter().any(|a| a == "--upgrade-child") {
        rt.block_on(upgrade_child(&servers[0], &args));
        return;
    }
    if args.iter().any(|a| a == "upgrade") {
        for s in &servers {
            rt.block_on(upgrade(s, &args));
        }
        return;
    }
    if args.iter().any(|a| a == "--child") {
        rt.block_on(lookups_child(&servers[0], &args));
        return;
    }
    if args.iter().any(|a| a == "scale") {
        for s in &servers {
            rt.block_on(scale(s, &args));
        }
        return;
    }
    let records = num(&args, "--records", 2000);
    println!("| server | design | record c=1 /s | c=16 /s | c=64 /s | cold hit: requests | ms | cold miss: requests | ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for s in &servers {
        for design in [AliasDesign::Markers, AliasDesign::SegmentLog] {
            rt.block_on(compare(s, design, records));
        }
    }
}

fn fresh_prefix(tag: &str) -> String {
    format!("bench-{tag}-{:08x}", rand::random::<u32>())
}

/// Records `range` through `probe` with `c` in flight; returns records per second.
async fn record_rate(probe: &AliasProbe, range: std::ops::Range<u64>, c: usize) -> f64 {
    let n = range.end - range.start;
    let t = Instant::now();
    futures::stream::iter(range)
        .map(|i| async move { probe.record(&digests(i)).await.expect("record") })
        .buffer_unordered(c)
        .collect::<Vec<()>>()
        .await;
    n as f64 / t.elapsed().as_secs_f64()
}

async fn compare(s: &Server, design: AliasDesign, records: u64) {
    let prefix = fresh_prefix("cmp");
    let client: Arc<dyn ObjectStore> = Arc::new(s.config().build().expect("client"));
    let writer = AliasProbe::open(client, &prefix, design, AliasCacheConfig::default());
    // c=1 on a tenth (it is slow), then the rest at 16 and at 64.
    let tenth = (records / 10).max(10);
    let c1 = record_rate(&writer, 0..tenth, 1).await;
    let half = tenth + (records - tenth) / 2;
    let c16 = record_rate(&writer, tenth..half, 16).await;
    let c64 = record_rate(&writer, half..records, 64).await;
    drop(writer);
    // Settle (the log merges in the background).
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Cold lookups: each by a fresh index (a fresh process, as far as caches go).
    let mut hit = (0u64, Duration::ZERO);
    let mut miss = (0u64, Duration::ZERO);
    let tries = 20;
    for k in 0..tries {
        let i = (k * 97) % records;
        let d = digests(i);
        let c = s.counted();
        let counts = c.counts.clone();
        let probe = AliasProbe::open(Arc::new(c), &prefix, design, AliasCacheConfig::default());
        let t = Instant::now();
        let got = probe
            .resolve(&d.hash(Algorithm::Sha1))
            .await
            .expect("resolve");
        hit.1 += t.elapsed();
        assert!(got.is_some(), "entry {i} not found");
        hit.0 += counts.total();
        let before = counts.total();
        let absent = digests(u64::MAX - k);
        let t = Instant::now();
        let got = probe
            .resolve(&absent.hash(Algorithm::Sha1))
            .await
            .expect("resolve");
        miss.1 += t.elapsed();
        assert!(got.is_none());
        miss.0 += counts.total() - before;
    }
    let per = |(n, t): (u64, Duration)| {
        (
            n as f64 / tries as f64,
            t.as_secs_f64() * 1000.0 / tries as f64,
        )
    };
    let (hr, hms) = per(hit);
    let (mr, mms) = per(miss);
    println!(
        "| {} | {design:?} ({records} records) | {c1:.0} | {c16:.0} | {c64:.0} | {hr:.1} | {hms:.2} | {mr:.1} | {mms:.2} |",
        s.name
    );
}

/// Builds `--entries` entries, then measures cold lookups in a child process.
async fn scale(s: &Server, args: &[String]) {
    let entries = num(args, "--entries", 1_000_000);
    let lookups = num(args, "--lookups", 100_000);
    let prefix = arg(args, "--prefix").unwrap_or_else(|| fresh_prefix("scale"));
    println!("{}: prefix {prefix}, {entries} entries", s.name);
    if !args.iter().any(|a| a == "--skip-build") {
        let from = num(args, "--from", 0);
        let client: Arc<dyn ObjectStore> = Arc::new(s.config().build().expect("client"));
        let writer = AliasProbe::open(
            client,
            &prefix,
            AliasDesign::Markers,
            AliasCacheConfig::default(),
        );
        lookups::build(from, entries, 50_000, |r| record_rate(&writer, r, 64)).await;
    }
    let sweep = args.iter().filter(|a| *a == "--sweep").cloned();
    child(
        s,
        ["--child".to_string()].into_iter().chain(sweep),
        &prefix,
        entries,
        lookups,
    );
    println!("  (remove the store: delete the prefix {prefix}/ in the bucket, or restart the server with a fresh data dir)");
}

/// Runs this bench again as a fresh process on server `s` alone, with `extra` arguments.
fn child(
    s: &Server,
    extra: impl IntoIterator<Item = String>,
    prefix: &str,
    entries: u64,
    lookups: u64,
) {
    let exe = std::env::current_exe().expect("exe");
    let var = if s.name == "ceph" {
        "TARVAULT_CEPH_ENV"
    } else {
        "TARVAULT_S3S_ENV"
    };
    let out = std::process::Command::new(exe)
        .env_remove("TARVAULT_S3S_ENV")
        .env_remove("TARVAULT_CEPH_ENV")
        .env(var, std::env::var(var).expect("env"))
        .args(extra)
        .args([
            "--prefix",
            prefix,
            "--entries",
            &entries.to_string(),
            "--lookups",
            &lookups.to_string(),
        ])
        .output()
        .expect("child");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

/// A store as an earlier version left it, read by the old log's reader and by the marker index
/// upgrading from it (see the module documentation).
async fn upgrade(s: &Server, args: &[String]) {
    let entries = num(args, "--entries", 1_000_000);
    let lookups = num(args, "--lookups", 100_000);
    let prefix = arg(args, "--prefix").unwrap_or_else(|| fresh_prefix("upgrade"));
    println!(
        "{}: prefix {prefix}, an old log of {entries} entries",
        s.name
    );
    if !args.iter().any(|a| a == "--skip-build") {
        let client: Arc<dyn ObjectStore> = Arc::new(s.config().build().expect("client"));
        let writer = AliasProbe::open(
            client,
            &prefix,
            AliasDesign::SegmentLog,
            AliasCacheConfig::default(),
        );
        lookups::build_segments(entries, digests, |segment| {
            let writer = &writer;
            async move { writer.record_many(&segment).await.expect("segment") }
        })
        .await;
    }
    let designs = arg(args, "--designs").unwrap_or_else(|| "log,markers".to_string());
    for design in designs.split(',') {
        let extra = ["--upgrade-child".to_string(), design.to_string()];
        child(s, extra, &prefix, entries, lookups);
    }
    println!("  (remove the store: delete the prefix {prefix}/ in the bucket, or restart the server with a fresh data dir)");
}

/// In a fresh process whose client may only read: lookups through one design over an old log.
async fn upgrade_child(s: &Server, args: &[String]) {
    let entries = num(args, "--entries", 1_000_000);
    let lookups = num(args, "--lookups", 100_000);
    let prefix = arg(args, "--prefix").expect("--prefix");
    let (design, name) = match arg(args, "--upgrade-child").as_deref() {
        Some("log") => (AliasDesign::SegmentLog, "the old log's reader"),
        _ => (AliasDesign::Markers, "the marker index, upgrading"),
    };
    let c = Counting::read_only(Arc::new(s.config().build().expect("client")));
    let counts = c.counts.clone();
    let probe = AliasProbe::open(Arc::new(c), &prefix, design, AliasCacheConfig::default());
    lookups::upgrade_run(
        name,
        entries,
        lookups,
        digests,
        |h| {
            let probe = &probe;
            async move { probe.resolve(&h).await.expect("resolve").is_some() }
        },
        || counts.total(),
        || probe.legacy_bytes(),
    )
    .await;
}

/// In a fresh process: `--lookups` lookups of random entries by sha1 or blake3, 16 in flight.
async fn lookups_child(s: &Server, args: &[String]) {
    let entries = num(args, "--entries", 1_000_000);
    let lookups = num(args, "--lookups", 100_000);
    let prefix = arg(args, "--prefix").expect("--prefix");
    let probe = lookups_over(s.counted(), &prefix, entries, lookups).await;
    if args.iter().any(|a| a == "--sweep") {
        sweep(&probe, entries).await;
    }
}

/// fsck's marker pass over the whole index: every marker listed, read, and its blob looked for.
async fn sweep(probe: &(AliasProbe, Arc<counting::Counts>), entries: u64) {
    let (probe, counts) = probe;
    lookups::sweep(entries, || counts.total(), || probe.sweep_report()).await;
}

/// Lookups of random entries through a fresh marker index over `c`.
async fn lookups_over(
    c: Counting,
    prefix: &str,
    entries: u64,
    lookups: u64,
) -> (AliasProbe, Arc<counting::Counts>) {
    let rss_before = rss::rss_now_kib();
    let counts = c.counts.clone();
    let probe = AliasProbe::open(
        Arc::new(c),
        prefix,
        AliasDesign::Markers,
        AliasCacheConfig::default(),
    );
    // The first lookup also lists the old log once per process: counted apart.
    let warm = digests(0);
    probe
        .resolve(&warm.hash(Algorithm::Sha1))
        .await
        .expect("resolve");
    let first = counts.total();
    let (requests, lat, wall) = lookups::random_lookups(
        lookups,
        entries,
        digests,
        || counts.total(),
        |h| {
            let probe = &probe;
            async move { probe.resolve(&h).await.expect("resolve").is_some() }
        },
    )
    .await;
    let rss_after = rss::rss_now_kib();
    // A miss, the first of this process: the marker GET and one LIST of the old log's folder.
    let first_miss = miss_cost(&probe, &counts, u64::MAX, Algorithm::Sha1).await;
    let next_miss = miss_cost(&probe, &counts, u64::MAX - 1, Algorithm::Blake3).await;
    println!(
        "  first lookup of the process (a hit): {first} requests; first miss {first_miss}, next miss {next_miss}"
    );
    lookups::print(lookups, requests, &lat, wall);
    println!(
        "  RSS after the lookups: {} MiB (before them {} MiB; peak {}); cache {} KiB",
        rss_after / 1024,
        rss_before / 1024,
        rss::peak_rss(),
        probe.cached_bytes().unwrap_or(0) / 1024
    );
    (probe, counts)
}

/// The requests of one lookup, by `alg`, of entry `i`, which is not in the index.
async fn miss_cost(probe: &AliasProbe, counts: &counting::Counts, i: u64, alg: Algorithm) -> u64 {
    let before = counts.total();
    let got = probe.resolve(&digests(i).hash(alg)).await.expect("miss");
    assert!(got.is_none());
    counts.total() - before
}

/// The scale run over an in-memory store in this process (see the module documentation).
async fn scale_in_memory(args: &[String]) {
    let entries = num(args, "--entries", 1_000_000);
    let lookups = num(args, "--lookups", 100_000);
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let prefix = "scale";
    println!("in-memory store: {entries} entries");
    let writer = AliasProbe::open(
        store.clone(),
        prefix,
        AliasDesign::Markers,
        AliasCacheConfig::default(),
    );
    lookups::build(0, entries, 100_000, |r| record_rate(&writer, r, 64)).await;
    drop(writer);
    let probe = lookups_over(Counting::new(store), prefix, entries, lookups).await;
    if args.iter().any(|a| a == "--sweep") {
        sweep(&probe, entries).await;
    }
}
