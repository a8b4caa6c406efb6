//! Manta backend throughput against plain signed HTTP PUT/GET of the same bytes to the same test
//! server, in the same run (the machine is shared and noisy: only same-run ratios mean anything).
//!
//! - corpus tarballs one after another (the registry's workload: many small objects);
//! - one large blob (`TARVAULT_BENCH_MANTA_MIB`, default 64).
//!
//! tarvault's put hashes sha512+sha1+blake3+MD5 and sends one create-only PUT with
//! `Content-MD5` and metadata (a HEAD only when it answers that the blob exists), with two small
//! alias marker objects written alongside; its get verifies sha512.
//! The baseline is one signed PUT (no Content-MD5) and one signed GET.
//!
//! Run: `cargo bench --features manta --bench manta`. The server comes from `MANTA_TEST_SERVER_BIN`
//! (or `backends/target/debug/manta-test-server`), started privately for the run. With
//! `TARVAULT_NETEM=1` both sides reach it through the network emulator (`common/netem.rs`: 1 ms
//! round trip, 1 Gbit/s each way, in its own process), as a server on another machine.
//!
//! With `--v2` after `--` the server refuses SnapLinks, as Manta v2 does.
//!
//! Sections, all by default, or those named after `--`:
//!
//! - `corpus`: the table above (one request at a time, and a `put_batch` of 8 in flight);
//! - `network`: the rows `benches/network.rs` measures for S3 — 64 KiB puts and gets at
//!   concurrency 1, 16 and 64, a 256 MiB put (sha512 given, digest unknown) and get
//!   (`--large-mib N`), with client CPU per GB against plain HTTP plus the digests, and 64 KiB
//!   puts into shard directories already made (`manta_rows/network.rs`);
//! - `index`: the alias markers against the segment log of earlier versions, `--records N`
//!   (default 2000) each: record rate at concurrency 1, 16, 64 and a cold lookup's requests and
//!   latency (`manta_rows/index.rs`);
//! - `scale` (only when named): `--entries N` (default 1,000,000) built through the marker index,
//!   then `--lookups N` (default 100,000) random lookups by a fresh index: requests per lookup,
//!   latency, RSS; with `--sweep`, then fsck's marker pass over all of them (markers/s, requests
//!   per marker, RSS after). The private server keeps its files under `TMPDIR`.
//! - `upgrade` (only when named): an old alias log of `--entries N` (default 1,000,000) in
//!   segments of 8,192 records, then `--lookups N` random lookups through the marker index
//!   upgrading from it and through the old log's reader, each in a fresh process and refusing
//!   writes (so every lookup is answered from the log): requests, latency, RSS and what each
//!   holds for the log.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/digest_floor.rs"]
mod digest_floor;
#[path = "manta_rows/index.rs"]
mod index_rows;
#[path = "common/lookups.rs"]
mod lookups;
#[path = "../tests/manta_common/mod.rs"]
mod manta_common;
#[path = "common/net_rows.rs"]
mod net_rows;
#[path = "common/netem.rs"]
mod netem;
#[path = "manta_rows/network.rs"]
mod network_rows;
#[path = "common/rss.rs"]
mod rss;

use std::time::{Duration, Instant};

use bytes::Bytes;
use tarvault::backend::manta::protocol::MantaClient;
use tarvault::backend::manta::MantaBackend;
use tarvault::integrity::Algorithm;
use tarvault::{PutOptions, Store};

const MIB: usize = 1 << 20;
const RUNS: usize = 3;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if netem::run_if_child() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let named = |s: &str| args.iter().any(|a| a == s);
    let all = !["corpus", "network", "index", "scale", "upgrade"]
        .iter()
        .any(|s| named(s));
    let num = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect(name))
    };
    if let Some(i) = args.iter().position(|a| a == "upgrade-child") {
        let arg = |k: usize| {
            args.get(k)
                .cloned()
                .expect("upgrade-child DESIGN --root ROOT")
        };
        let root = args.iter().position(|a| a == "--root").map(|k| arg(k + 1));
        if let Some(target) = manta_common::Target::get("manta bench child") {
            rt.block_on(index_rows::upgrade_child(
                &target,
                &arg(i + 1),
                &root.expect("--root"),
                num("--entries", 1_000_000),
                num("--lookups", 100_000),
            ));
        }
        return;
    }
    // `--v2`: the server refuses SnapLinks as Manta v2 does (large puts of unknown digest spool).
    let server_args: &[&str] = if named("--v2") {
        &["--disable-snaplinks"]
    } else {
        &[]
    };
    let Some(mut target) = manta_common::Target::private("manta bench", server_args) else {
        return;
    };
    if named("--v2") {
        println!("server: refuses SnapLinks (as Manta v2)");
    }
    // Kept alive for the run: the emulator in front of the server, when asked for.
    let _netem = std::env::var("TARVAULT_NETEM")
        .is_ok_and(|v| v == "1")
        .then(|| {
            let upstream = target
                .url
                .trim_start_matches("http://")
                .trim_end_matches('/');
            let net = netem::Netem::from_env();
            let exe = std::env::current_exe().expect("exe");
            let port = netem::calibration_server();
            let check = netem::Child::start(&exe, &format!("127.0.0.1:{port}"), net);
            let (rtt, rate) = netem::measure(check.port);
            drop(check);
            println!("proxy check (local echo server): round trip {rtt:.0} µs (median of 200), 64 MiB one way {rate:.0} MB/s");
            let proxy = netem::Child::start(&std::env::current_exe().expect("exe"), upstream, net);
            println!(
                "behind the network emulator: {:.1} ms round trip, {:.0} Mbit/s each way",
                2.0 * net.one_way.as_secs_f64() * 1e3,
                net.bytes_per_sec * 8.0 / 1e6
            );
            target.url = proxy.endpoint();
            proxy
        });
    println!(
        "tarvault Manta backend vs plain signed HTTP, same test server ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if all || named("network") {
        println!("\n## 64 KiB at concurrency 1, 16, 64 and 256 MiB, with client CPU per GB\n");
        rt.block_on(network_rows::run(&target, num("--large-mib", 256) as usize));
    }
    if all || named("index") {
        println!("\n## Alias index: markers against the segment log\n");
        index_rows::header();
        let records = num("--records", 2000);
        for design in [
            tarvault::backend::manta::probe::AliasDesign::Markers,
            tarvault::backend::manta::probe::AliasDesign::SegmentLog,
        ] {
            rt.block_on(index_rows::compare(&target, design, records));
        }
    }
    if named("scale") {
        let entries = num("--entries", 1_000_000);
        println!("\n## Alias markers at scale: {entries} entries\n");
        rt.block_on(index_rows::scale(
            &target,
            entries,
            num("--lookups", 100_000),
            named("--sweep"),
        ));
    }
    if named("upgrade") {
        let entries = num("--entries", 1_000_000);
        println!("\n## A store of the old alias log, upgrading: {entries} entries\n");
        rt.block_on(index_rows::upgrade(
            &target,
            entries,
            num("--lookups", 100_000),
        ));
    }
    if all || named("corpus") {
        println!("\n## Corpus and one large blob, one request at a time\n");
        corpus_table(&rt, &target);
    }
}

/// The corpus and one large blob put and got one at a time, then the corpus through `put_batch`.
fn corpus_table(rt: &tokio::runtime::Runtime, target: &manta_common::Target) {
    let corpus = corpus();
    let total: usize = corpus.iter().map(Vec::len).sum();
    let mib: usize = std::env::var("TARVAULT_BENCH_MANTA_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let large = vec![common::noise(mib * MIB, 1)];
    println!();
    println!(
        "| workload | op | plain HTTP MB/s | tarvault MB/s | tarvault / plain | digests, one core MB/s | ceiling if digests serialize | {} |",
        cpu::HEADER
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, blobs, bytes) in [
        (
            format!(
                "{} corpus tarballs ({:.1} MiB)",
                corpus.len(),
                total as f64 / MIB as f64
            ),
            &corpus,
            total,
        ),
        (format!("one {mib} MiB blob"), &large, mib * MIB),
    ] {
        let mut raw_put = Vec::new();
        let mut tv_put = Vec::new();
        let mut raw_get = Vec::new();
        let mut tv_get = Vec::new();
        for _ in 0..RUNS {
            let backend = target.backend("bench");
            let (rp, rg) = rt.block_on(plain(&backend, blobs));
            let (tp, tg) = rt.block_on(through_store(&backend, blobs));
            raw_put.push(rp);
            raw_get.push(rg);
            tv_put.push(tp);
            tv_get.push(tg);
        }
        // A put computes sha512, sha1, blake3 and the MD5 of Content-MD5; a get verifies sha512.
        let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
        let put_algs = [
            Algorithm::Sha512,
            Algorithm::Sha1,
            Algorithm::Blake3,
            Algorithm::Md5,
        ];
        for (op, raw, tv, algs) in [
            ("put", raw_put, tv_put, &put_algs[..]),
            ("get", raw_get, tv_get, &[Algorithm::Sha512][..]),
        ] {
            let (raw_s, tv_s) = (cpu::medians(&raw), cpu::medians(&tv));
            let (raw, tv) = (
                bytes as f64 / raw_s.secs / 1e6,
                bytes as f64 / tv_s.secs / 1e6,
            );
            let digest = digest_floor::digest_rate(&refs, algs);
            println!(
                "| {name} | {op} | {raw:.1} | {tv:.1} | {:.2}x | {digest:.0} | {:.2}x | {} |",
                tv / raw,
                digest_floor::serial_ceiling(raw, digest),
                cpu::cells(raw_s, tv_s)
            );
        }
    }
    batch_row(rt, target, &corpus);
}

/// The corpus with 8 requests in flight: plain PUTs vs `Store::put_batch` (group commit).
fn batch_row(rt: &tokio::runtime::Runtime, target: &manta_common::Target, corpus: &[Vec<u8>]) {
    let bytes: usize = corpus.iter().map(Vec::len).sum();
    let mut raw = Vec::new();
    let mut tv = Vec::new();
    for _ in 0..RUNS {
        let backend = target.backend("bench-batch");
        raw.push(mb_s(bytes, rt.block_on(plain_parallel(&backend, corpus))));
        let store = Store::new(backend.clone());
        let inputs: Vec<_> = corpus
            .iter()
            .map(|d| {
                (
                    futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(d.clone()))]),
                    PutOptions::default(),
                )
            })
            .collect();
        let started = Instant::now();
        for r in rt.block_on(store.put_batch(inputs)) {
            r.expect("batch put");
        }
        tv.push(mb_s(bytes, started.elapsed()));
    }
    let (raw, tv) = (median(raw), median(tv));
    println!(
        "| {} corpus tarballs, 8 in flight | put (put_batch) | {raw:.1} | {tv:.1} | {:.2}x | | | | | |",
        corpus.len(),
        tv / raw
    );
}

async fn plain_parallel(backend: &MantaBackend, blobs: &[Vec<u8>]) -> Duration {
    use futures::StreamExt;
    let (client, dir) = plain_dir(backend).await;
    let http = reqwest::Client::new();
    let started = Instant::now();
    futures::stream::iter(blobs.iter().enumerate())
        .map(|(i, data)| {
            let (http, path) = (&http, format!("{dir}/{i}"));
            async move { network_rows::plain_put(http, client, &path, Bytes::from(data.clone())).await }
        })
        .buffer_unordered(8)
        .collect::<()>()
        .await;
    started.elapsed()
}

/// The directory the plain baseline writes into, made first (outside the timing).
async fn plain_dir(backend: &MantaBackend) -> (&MantaClient, String) {
    let client = backend.client();
    let dir = format!("{}/plain", backend.layout().root());
    client
        .put_directory(backend.layout().root())
        .await
        .expect("mkdir root");
    client.put_directory(&dir).await.expect("mkdir");
    (client, dir)
}

/// Plain signed PUTs (into a pre-made directory) and GETs of the same bytes.
async fn plain(backend: &MantaBackend, blobs: &[Vec<u8>]) -> (cpu::Sample, cpu::Sample) {
    let (client, dir) = plain_dir(backend).await;
    let http = reqwest::Client::new();
    let paths: Vec<String> = (0..blobs.len()).map(|i| format!("{dir}/{i}")).collect();
    let started = cpu::Span::start();
    for (path, data) in paths.iter().zip(blobs) {
        network_rows::plain_put(&http, client, path, Bytes::from(data.clone())).await;
    }
    let put = started.stop();
    let started = cpu::Span::start();
    for (path, data) in paths.iter().zip(blobs) {
        assert_eq!(
            network_rows::plain_get(&http, client, path).await,
            data.len()
        );
    }
    (put, started.stop())
}

/// The same bytes through `Store::put_bytes` and a verified `Store::get`.
async fn through_store(backend: &MantaBackend, blobs: &[Vec<u8>]) -> (cpu::Sample, cpu::Sample) {
    let store = Store::new(backend.clone());
    let started = cpu::Span::start();
    let mut addrs = Vec::new();
    for data in blobs {
        let put = store
            .put_bytes(data.clone(), &PutOptions::default())
            .await
            .expect("put");
        addrs.push(put.digests.integrity());
    }
    let put = started.stop();
    let started = cpu::Span::start();
    for (a, data) in addrs.iter().zip(blobs) {
        let got = store
            .get(a)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("verified");
        assert_eq!(got.len(), data.len());
    }
    (put, started.stop())
}

fn corpus() -> Vec<Vec<u8>> {
    common::corpus()
        .iter()
        .map(|e| common::corpus_bytes(e).to_vec())
        .collect()
}

fn mb_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}
