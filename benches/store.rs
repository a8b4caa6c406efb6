//! Store benchmarks, printed as a table of ratios measured in the same run (the machine is shared
//! and noisy, so only same-run ratios and medians mean anything).
//!
//! - 1 GiB single-stream put and verified get on the fs backend, against raw single-core sha512 of
//!   the same bytes (the physical limit), with peak RSS measured in a child process;
//! - small-blob ingest of the corpus tarballs (blobs/s) against `cacache`'s `write_hash` /
//!   `read_hash` on the same data.
//!
//! Run: `cargo bench --bench store` (set `TARVAULT_BENCH_GIB` to change the large-blob size,
//! `TARVAULT_CORPUS` for the corpus).

#[path = "common/noise.rs"]
mod noise;
#[path = "common/rss.rs"]
mod rss;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::Digest;
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::{Algorithm, Digests, Integrity, PutOptions, Store, Verification};

const MIB: usize = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Child mode: one measured operation, then print peak RSS.
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2..]);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let work =
        tempfile::tempdir_in(std::env::var("TARVAULT_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .expect("bench dir");
    println!(
        "tarvault store benchmarks ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    large_blob(&rt, work.path());
    corpus_ingest(&rt, work.path());
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn gb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn make_blob(path: &Path, len: usize) {
    let mut f =
        std::io::BufWriter::with_capacity(4 * MIB, std::fs::File::create(path).expect("create"));
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut buf = vec![0u8; MIB];
    let mut left = len;
    while left > 0 {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        let n = left.min(MIB);
        f.write_all(&buf[..n]).expect("write");
        left -= n;
    }
    f.flush().expect("flush");
}

fn large_blob(rt: &tokio::runtime::Runtime, work: &Path) {
    let gib: f64 = std::env::var("TARVAULT_BENCH_GIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let len = (gib * 1024.0 * MIB as f64) as usize;
    let input = work.join("large.bin");
    make_blob(&input, len);
    let data = std::fs::read(&input).expect("read");
    // Warm up fresh memory, then the limit: sha512 on one core over the same bytes.
    let _ = sha2::Sha512::digest(&data[..64 * MIB.min(len)]);
    let mut sha = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let d = sha2::Sha512::digest(&data);
        std::hint::black_box(d);
        sha.push(gb_s(len as u64, t.elapsed()));
    }
    drop(data);
    let sha = median(sha);
    let mut rows = Vec::new();
    for fsync in [true, false] {
        let mut put = Vec::new();
        let mut get = Vec::new();
        let mut integrity = None;
        for round in 0..3 {
            let root = work.join(format!("large-{fsync}-{round}"));
            let store = Store::new(
                FsBackend::open(
                    &root,
                    FsOptions {
                        fsync,
                        ..Default::default()
                    },
                )
                .expect("open"),
            );
            let t = Instant::now();
            let out = rt
                .block_on(store.put_file(&input, &PutOptions::default()))
                .expect("put");
            put.push(gb_s(len as u64, t.elapsed()));
            let i = out.digests.integrity();
            let t = Instant::now();
            let n = rt.block_on(drain(&store, &i));
            assert_eq!(n, len as u64);
            get.push(gb_s(len as u64, t.elapsed()));
            integrity = Some(i);
            let _ = std::fs::remove_dir_all(&root);
        }
        let (put, get) = (median(put), median(get));
        // Peak RSS of a put and of a get, each in a fresh process.
        let root = work.join(format!("rss-{fsync}"));
        let put_rss = rss::child_rss(&[
            "put",
            root.to_str().unwrap_or("."),
            input.to_str().unwrap_or("."),
            &fsync.to_string(),
        ]);
        let get_rss = rss::child_rss(&[
            "get",
            root.to_str().unwrap_or("."),
            &integrity.map(|i| i.to_string()).unwrap_or_default(),
            &fsync.to_string(),
        ]);
        rows.push((fsync, put, get, put_rss, get_rss));
    }
    println!();
    println!("## {gib} GiB single stream, fs backend (sha512 + sha1 + blake3 on put; sha512 verify on get)");
    println!("raw sha512, one core: {sha:.3} GB/s");
    println!("| fsync | put GB/s | put / sha512 | get GB/s | get / sha512 | put peak RSS | get peak RSS |");
    println!("|---|---|---|---|---|---|---|");
    for (fsync, put, get, prss, grss) in rows {
        println!(
            "| {} | {put:.3} | {:.2}x | {get:.3} | {:.2}x | {prss} | {grss} |",
            if fsync { "on" } else { "off" },
            put / sha,
            get / sha
        );
    }
}

async fn drain(store: &Store, i: &Integrity) -> u64 {
    let mut s = store.get(i).await.expect("get");
    let mut n = 0u64;
    while let Some(c) = s.next().await {
        n += c.expect("verified").len() as u64;
    }
    n
}

fn child(args: &[String]) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let fsync = args.get(3).map(String::as_str) == Some("true");
    let store = Store::new(
        FsBackend::open(
            &args[1],
            FsOptions {
                fsync,
                ..Default::default()
            },
        )
        .expect("open"),
    );
    match args[0].as_str() {
        "put" => {
            rt.block_on(store.put_file(&args[2], &PutOptions::default()))
                .expect("put");
        }
        _ => {
            let i = Integrity::parse(&args[2]).expect("integrity");
            rt.block_on(drain(&store, &i));
        }
    }
    println!("{}", rss::peak_rss());
}

fn corpus_dir() -> PathBuf {
    std::env::var_os("TARVAULT_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"))
}

fn corpus_ingest(rt: &tokio::runtime::Runtime, work: &Path) {
    let dir = corpus_dir().join("tarballs");
    let mut blobs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("corpus")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "tgz"))
        .map(|e| std::fs::read(e.path()).expect("read"))
        .collect();
    blobs.sort();
    let total: usize = blobs.iter().map(Vec::len).sum();
    ingest_table(
        rt,
        work,
        "corpus",
        &format!(
            "{} real tarballs, {:.1} MB",
            blobs.len(),
            total as f64 / 1e6
        ),
        &blobs,
        7,
    );
    // 20 KiB blobs, as in the machine notes' cacache figures: per-file overhead dominates.
    let small: Vec<Vec<u8>> = (0..1000u64).map(|i| noise::noise(i, 20 * 1024)).collect();
    ingest_table(rt, work, "small", "1000 blobs of 20 KiB", &small, 5);
}

fn ingest_table(
    rt: &tokio::runtime::Runtime,
    work: &Path,
    tag: &str,
    title: &str,
    blobs: &[Vec<u8>],
    rounds: usize,
) {
    let n = blobs.len();
    let mut results: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut record = |name: &'static str, v: f64| match results.iter_mut().find(|(k, _)| *k == name)
    {
        Some((_, vs)) => vs.push(v),
        None => results.push((name, vec![v])),
    };
    for round in 0..rounds {
        // cacache (sha256 by default, never fsyncs).
        let cdir = work.join(format!("{tag}-cacache-{round}"));
        let t = Instant::now();
        let mut ints = Vec::with_capacity(n);
        for b in blobs {
            ints.push(
                rt.block_on(cacache::write_hash(&cdir, b))
                    .expect("cacache write"),
            );
        }
        record("cacache write_hash", n as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for i in &ints {
            std::hint::black_box(
                rt.block_on(cacache::read_hash(&cdir, i))
                    .expect("cacache read"),
            );
        }
        record("cacache read_hash", n as f64 / t.elapsed().as_secs_f64());

        for (name, fsync, batch) in [
            ("tarvault put, fsync off", false, false),
            ("tarvault put_batch, fsync off", false, true),
            ("tarvault put, fsync on", true, false),
            ("tarvault put_batch, fsync on", true, true),
        ] {
            let root = work.join(format!("{tag}-tv-{round}-{fsync}-{batch}"));
            let store = Store::new(
                FsBackend::open(
                    &root,
                    FsOptions {
                        fsync,
                        ..Default::default()
                    },
                )
                .expect("open"),
            );
            let t = Instant::now();
            let digests: Vec<Digests> =
                if batch {
                    let inputs = blobs
                        .iter()
                        .map(|b| {
                            (
                                futures::stream::iter([Ok(bytes::Bytes::copy_from_slice(b))]),
                                PutOptions::default(),
                            )
                        })
                        .collect();
                    rt.block_on(store.put_batch(inputs))
                        .into_iter()
                        .map(|r| r.expect("put").digests)
                        .collect()
                } else {
                    blobs
                        .iter()
                        .map(|b| {
                            rt.block_on(store.put_bytes(
                                bytes::Bytes::copy_from_slice(b),
                                &PutOptions::default(),
                            ))
                            .expect("put")
                            .digests
                        })
                        .collect()
                };
            record(name, n as f64 / t.elapsed().as_secs_f64());
            if !fsync && !batch {
                let by_sha512: Vec<Integrity> = digests.iter().map(Digests::integrity).collect();
                // A read by shasum goes through the alias index and hashes the bytes against
                // the sha1 asked, whatever the verification mode.
                let by_sha1: Vec<Integrity> = digests
                    .iter()
                    .map(|d| Integrity::from(d.hash(Algorithm::Sha1)))
                    .collect();
                for (label, mode, addrs) in [
                    (
                        "tarvault get (verified, blake3 record)",
                        Verification::Fast,
                        &by_sha512,
                    ),
                    (
                        "tarvault get (verified, sha512)",
                        Verification::Full,
                        &by_sha512,
                    ),
                    (
                        "tarvault get by shasum (verified, sha1)",
                        Verification::Fast,
                        &by_sha1,
                    ),
                ] {
                    let store = store.clone().with_verification(mode);
                    let t = Instant::now();
                    for a in addrs {
                        std::hint::black_box(
                            rt.block_on(async { store.get(a).await?.bytes().await })
                                .expect("get"),
                        );
                    }
                    record(label, n as f64 / t.elapsed().as_secs_f64());
                }
            }
        }
    }
    let get = |k: &str| {
        results
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| median(v.clone()))
            .unwrap_or(0.0)
    };
    let cw = get("cacache write_hash");
    let cr = get("cacache read_hash");
    println!();
    println!("## ingest: {title}, median of {rounds} rounds, fresh directories");
    println!("| operation | blobs/s | vs cacache |");
    println!("|---|---|---|");
    for (name, _) in &results {
        let v = get(name);
        let base = if name.contains("read") || name.contains("get") {
            cr
        } else {
            cw
        };
        println!("| {name} | {v:.0} | {:.2}x |", v / base);
    }
}
