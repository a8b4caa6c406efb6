//! A cache tier (`Cached`) over a filesystem local tier holding N blobs (default 1,000,000): what
//! opening it costs, and what its hits cost, with the record kept in the local tier's
//! `index/cache.sqlite` against the record kept in memory (the way before it, still used for
//! local tiers without a ledger, and here forced by a wrapper that hides the ledger). Each row runs
//! in a fresh child process of this binary, so its peak RSS is its own.
//!
//! Rows:
//! - open, first time with the ledger (it takes in the N blobs from one listing);
//! - open again with the ledger (what every later start costs);
//! - open with the record in memory (lists and heads every blob, every start);
//! - 100k hits at concurrency 16 after each kind of open, over blobs drawn uniformly (every hit a
//!   blob whose recorded use is old: the ledger's worst case, a write per hit) or skewed as a
//!   registry's downloads are (log-uniform ranks, about Zipf with s = 1).
//!
//! The environment: `TARVAULT_CACHE_N` (blobs, default 1000000); `TARVAULT_CACHE_DIR` (where the
//! local tier goes, default `cache-bench/` in the target directory); `TARVAULT_CACHE_KEEP=1` keeps
//! it, and a later run with the same N reuses it; `TARVAULT_CACHE_HITS` (default 100000).
//! Nothing is asserted: the table is for the reader (docs/index.md quotes it).

#[path = "common/noise.rs"]
mod noise;
#[path = "common/rss.rs"]
mod rss;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use tarvault::backend::compose::{Cached, CachedOptions};
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::backend::memory::MemoryBackend;
use tarvault::backend::{
    AliasRebuild, Backend, BlobKey, BlobStat, BlobWriter, GetResult, PutHint, RebuildOptions,
};
use tarvault::integrity::{Algorithm, MultiHasher};
use tarvault::{Digests, Hash, Integrity, PutOptions, Result, Store};

/// Blob `i`: 100-355 bytes of noise (one filesystem block each).
fn blob(i: u64) -> Vec<u8> {
    noise::noise(i + 1, 100 + (i % 256) as usize)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn local_dir() -> PathBuf {
    std::env::var_os("TARVAULT_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target")
                .join("cache-bench")
        })
}

fn fs(root: &Path) -> FsBackend {
    FsBackend::open(
        root,
        FsOptions {
            fsync: false,
            ..Default::default()
        },
    )
    .expect("open the local tier")
}

/// The local tier without its ledger: `Cached` keeps its record in memory, as before the ledger.
#[derive(Debug)]
struct NoLedger(FsBackend);

#[async_trait]
impl Backend for NoLedger {
    fn describe(&self) -> String {
        self.0.describe()
    }
    async fn begin_put(&self, hint: &PutHint) -> Result<Box<dyn BlobWriter>> {
        self.0.begin_put(hint).await
    }
    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<Option<GetResult>> {
        self.0.get(key, range).await
    }
    async fn head(&self, key: &BlobKey) -> Result<Option<BlobStat>> {
        self.0.head(key).await
    }
    async fn delete(&self, key: &BlobKey) -> Result<bool> {
        self.0.delete(key).await
    }
    fn list(&self) -> BoxStream<'static, Result<BlobKey>> {
        self.0.list()
    }
    fn list_stat(self: Arc<Self>) -> BoxStream<'static, Result<BlobStat>> {
        Arc::new(self.0.clone()).list_stat()
    }
    async fn resolve_alias(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        self.0.resolve_alias(hash).await
    }
    async fn rebuild_aliases(
        &self,
        found: BoxStream<'_, Digests>,
        options: &RebuildOptions,
    ) -> Result<AliasRebuild> {
        self.0.rebuild_aliases(found, options).await
    }
}

async fn build(dir: &Path, n: u64) {
    let stamp = dir.join("bench-n");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(&n.to_string()) {
        println!("reusing the {n}-blob local tier in {}", dir.display());
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
    let store = Store::new(fs(dir));
    let started = Instant::now();
    let inputs = stream::iter(0..n).map(|i| {
        let b: BoxStream<'static, std::io::Result<Bytes>> =
            stream::iter([Ok(Bytes::from(blob(i)))]).boxed();
        (b, PutOptions::default())
    });
    let mut results = store.put_stream(inputs);
    let mut done = 0u64;
    while let Some(r) = results.next().await {
        r.expect("put");
        done += 1;
        if done.is_multiple_of((n / 10).max(1)) {
            println!(
                "  built {done} blobs, {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    std::fs::write(&stamp, n.to_string()).expect("stamp");
    println!(
        "built {n} blobs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn address(i: u64) -> Integrity {
    let mut h = MultiHasher::new(&[Algorithm::Sha512]);
    h.update(&blob(i));
    h.finalize().integrity().expect("sha512")
}

/// The child: opens the cache one way, optionally reads `hits` random blobs, prints a table row's
/// cells.
async fn child(mode: &str, hits: u64, skewed: bool, n: u64) {
    let dir = local_dir();
    let local: Arc<dyn Backend> = match mode {
        "memory" => Arc::new(NoLedger(fs(&dir))),
        _ => Arc::new(fs(&dir)),
    };
    let started = Instant::now();
    let cache = Cached::new(
        local,
        Arc::new(MemoryBackend::new()),
        CachedOptions { capacity: 1 << 40 },
    )
    .await
    .expect("open the cache");
    let open = started.elapsed().as_secs_f64();
    let open_rss = rss::rss_now_kib();
    let blobs = cache.stats().blobs;
    let mut rate = String::from("-");
    let mut growth = String::from("-");
    if hits > 0 {
        let store = Store::new(cache.clone());
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let picks: Vec<Integrity> = (0..hits)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if !skewed {
                    return address(x % n);
                }
                // Log-uniform ranks (about Zipf with s = 1), scattered over the blobs.
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                let rank = ((u * ((n + 1) as f64).ln()).exp() as u64).saturating_sub(1);
                address(rank.wrapping_mul(2_654_435_761) % n)
            })
            .collect();
        let before = rss::rss_now_kib();
        let started = Instant::now();
        stream::iter(picks)
            .map(|a| {
                let store = store.clone();
                async move {
                    store
                        .get(&a)
                        .await
                        .expect("get")
                        .bytes()
                        .await
                        .expect("bytes")
                }
            })
            .buffer_unordered(16)
            .for_each(|_| async {})
            .await;
        rate = format!("{:.0}", hits as f64 / started.elapsed().as_secs_f64());
        growth = format!(
            "{:.1}",
            rss::rss_now_kib().saturating_sub(before) as f64 / 1024.0
        );
        assert_eq!(cache.stats().misses, 0, "every read a hit");
    }
    println!(
        "{open:.3} | {} | {} | {rate} | {growth} | {}",
        blobs,
        open_rss / 1024,
        rss::peak_rss()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let n = env_u64("TARVAULT_CACHE_N", 1_000_000);
    let hits = env_u64("TARVAULT_CACHE_HITS", 100_000);
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let mode = args.get(i + 1).map(String::as_str).unwrap_or("ledger");
        let h = args.get(i + 2).and_then(|v| v.parse().ok()).unwrap_or(0);
        let skewed = args.get(i + 3).map(String::as_str) == Some("zipf");
        rt.block_on(child(mode, h, skewed, n));
        return;
    }
    if args.iter().any(|a| a == "--list") || args.iter().any(|a| a == "--test") {
        return;
    }
    let dir = local_dir();
    rt.block_on(build(&dir, n));
    let ledger = dir.join("index").join("cache.sqlite");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", ledger.display()));
    }
    let h = hits.to_string();
    let rows: [(&str, &[&str]); 8] = [
        ("ledger, first open (takes in the tier)", &["ledger", "0"]),
        ("ledger, open again", &["ledger", "0"]),
        ("ledger + hits, uniform", &["ledger", &h, "uniform"]),
        ("ledger + hits, skewed", &["ledger", &h, "zipf"]),
        ("in memory, open", &["memory", "0"]),
        ("in memory + hits, uniform", &["memory", &h, "uniform"]),
        ("in memory + hits, skewed", &["memory", &h, "zipf"]),
        ("ledger, open again (after the rest)", &["ledger", "0"]),
    ];
    println!(
        "\nCached over an fs local tier of {n} blobs; {hits} hits at c=16, over blobs drawn \
         uniformly or skewed (log-uniform ranks, about Zipf s=1)\n"
    );
    println!(
        "| open | seconds | blobs recorded | RSS after open (MiB) | hits/s | RSS growth over \
         the hits (MiB) | peak RSS (with the bench's list of addresses) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (what, args) in rows {
        println!("| {what} | {} |", rss::child_rss(args));
    }
    let ledger_bytes = std::fs::metadata(&ledger).map(|m| m.len()).unwrap_or(0);
    println!(
        "\nledger file: {:.1} MiB ({:.0} bytes per blob)",
        ledger_bytes as f64 / (1 << 20) as f64,
        ledger_bytes as f64 / n.max(1) as f64
    );
    if std::env::var("TARVAULT_CACHE_KEEP").ok().as_deref() != Some("1") {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
