//! Inspection throughput over the corpus, in MB/s of compressed input, measured in one run:
//! (a) the limit: flate2 (zlib-rs) gunzip + a `tar` crate header walk of the same bytes;
//! (b) `tarball::Inspector` alone;
//! (c) `Store::put` with inspection (hash + write + inspect; fsync off);
//! (d) plain `Store::put` (fsync off).
//! Targets: (b) ≥ 0.9×(a) and (c) ≥ 0.9×(a): hashing and writing hide behind decompression.
//!
//! `cargo bench --bench inspect [-- ITERATIONS]`; the corpus comes from `TARVAULT_CORPUS`.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::tarball::{Inspector, Policy};
use tarvault::{PutOptions, Store};

fn corpus() -> Vec<Vec<u8>> {
    let dir = std::env::var_os("TARVAULT_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    let mut files: Vec<_> = std::fs::read_dir(dir.join("tarballs"))
        .expect("corpus")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn baseline(tgz: &[u8]) {
    let gz = flate2::read::GzDecoder::new(tgz);
    let mut archive = tar::Archive::new(gz);
    let mut size = 0u64;
    for entry in archive.entries().expect("entries") {
        size += entry.expect("entry").header().size().unwrap_or(0);
    }
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).expect("drain");
    std::hint::black_box(size);
}

fn inspect(tgz: &[u8]) {
    let mut inspector = Inspector::new(Policy::default());
    for chunk in tgz.chunks(256 << 10) {
        inspector.update(chunk).expect("update");
    }
    std::hint::black_box(inspector.finish().expect("finish"));
}

fn time(corpus: &[Vec<u8>], f: impl Fn(&[u8])) -> Duration {
    let start = Instant::now();
    for tgz in corpus {
        f(std::hint::black_box(tgz));
    }
    start.elapsed()
}

fn main() {
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let corpus = corpus();
    let bytes: usize = corpus.iter().map(Vec::len).sum();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let work =
        tempfile::tempdir_in(std::env::var("TARVAULT_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .expect("bench dir");
    // Warm up.
    let mut sink = Vec::new();
    for tgz in &corpus {
        sink.clear();
        let _ = flate2::read::GzDecoder::new(&tgz[..]).read_to_end(&mut sink);
    }
    let mut best = [Duration::MAX; 4];
    for round in 0..iterations {
        best[0] = best[0].min(time(&corpus, baseline));
        best[1] = best[1].min(time(&corpus, inspect));
        for (slot, inspecting) in [(2, true), (3, false)] {
            // Fresh directories every round: re-creating deleted files is slow on ext4.
            let root = work.path().join(format!("r{round}-{inspecting}"));
            let store = Store::new(
                FsBackend::open(
                    &root,
                    FsOptions {
                        fsync: false,
                        ..Default::default()
                    },
                )
                .expect("open"),
            );
            let options = if inspecting {
                PutOptions::default().tarball()
            } else {
                PutOptions::default()
            };
            let d = time(&corpus, |tgz| {
                let out = rt
                    .block_on(store.put_bytes(bytes::Bytes::copy_from_slice(tgz), &options))
                    .expect("put");
                std::hint::black_box(out);
            });
            best[slot] = best[slot].min(d);
        }
    }
    let mbps = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    println!(
        "corpus: {} tarballs, {:.1} MB compressed; best of {iterations}",
        corpus.len(),
        bytes as f64 / 1e6
    );
    println!("| what | MB/s of .tgz | vs (a) |");
    println!("|---|---|---|");
    for (i, name) in [
        "(a) gunzip (zlib-rs) + tar header walk",
        "(b) inspect alone",
        "(c) put with inspection (fsync off)",
        "(d) plain put (fsync off)",
    ]
    .iter()
    .enumerate()
    {
        println!(
            "| {name} | {:.1} | {:.2}x |",
            mbps(best[i]),
            mbps(best[i]) / mbps(best[0])
        );
    }
}
