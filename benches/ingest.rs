//! Small-blob ingest into the fs backend, against what the machine allows, in one run (the
//! machine is shared and noisy: only same-run ratios of medians mean anything).
//!
//! For 2000 files of 20 KiB and for the corpus tarballs, each with fsync off and on, read from
//! files in the page cache by every row:
//!
//! - **naive loop** (the floor): one thread doing the least a content store must per file: read,
//!   sha512 + sha1, write a temp file (fsync it when fsync is on), rename it under its hex;
//! - **two-thread prototype**: the same loop on two threads, each taking every other file (the
//!   ceiling a batch can hope for on this 2-core machine);
//! - **cacache** `write_hash` with sha256 (its default) and with sha512 (npm's own setting); it
//!   never fsyncs, so its rows are the same reference in both tables;
//! - **tarvault** `put_file` one at a time, `put_batch` of every file, and the CLI's batch `put`.
//!
//! Each table ends with the targets and whether this run meets them.
//!
//! Run: `cargo bench --bench ingest` (`TARVAULT_CORPUS` for the corpus, `TARVAULT_BENCH_DIR` for
//! where stores go, `TARVAULT_BENCH_ROUNDS` for rounds, default 5).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::Digest;
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::{PutOptions, Store};

/// Blobs in the small-file set.
const SMALL_COUNT: usize = 2000;
/// Size of each small blob.
const SMALL_SIZE: usize = 20 * 1024;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let work =
        tempfile::tempdir_in(std::env::var("TARVAULT_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .expect("bench dir");
    let rounds: usize = std::env::var("TARVAULT_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!(
        "tarvault ingest benchmarks ({} cores, median of {rounds} rounds)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let small_dir = work.path().join("input-small");
    std::fs::create_dir_all(&small_dir).expect("input dir");
    let small: Vec<PathBuf> = (0..SMALL_COUNT as u64)
        .map(|i| {
            let p = small_dir.join(format!("{i:05}.bin"));
            std::fs::write(&p, pseudo_random(i, SMALL_SIZE)).expect("write input");
            p
        })
        .collect();
    let corpus = corpus_files();
    for (tag, title, files) in [
        ("small", format!("{SMALL_COUNT} files of 20 KiB"), &small),
        (
            "corpus",
            format!(
                "{} corpus tarballs, {:.1} MB",
                corpus.len(),
                total_mb(&corpus)
            ),
            &corpus,
        ),
    ] {
        let table = measure(&rt, work.path(), tag, files, rounds);
        print_table(&title, tag, &table);
    }
}

fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn corpus_files() -> Vec<PathBuf> {
    let dir = std::env::var_os("TARVAULT_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"))
        .join("tarballs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tgz"))
        .collect();
    files.sort();
    files
}

fn total_mb(files: &[PathBuf]) -> f64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum::<u64>() as f64
        / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// Rows measured, in order of first appearance, with every round's blobs/s.
#[derive(Default)]
struct Table {
    rows: Vec<(String, Vec<f64>)>,
}

impl Table {
    fn record(&mut self, name: String, v: f64) {
        match self.rows.iter_mut().find(|(k, _)| *k == name) {
            Some((_, vs)) => vs.push(v),
            None => self.rows.push((name, vec![v])),
        }
    }

    fn get(&self, name: &str) -> f64 {
        self.rows
            .iter()
            .find(|(k, _)| k == name)
            .map_or(0.0, |(_, v)| median(v.clone()))
    }
}

fn sync_label(fsync: bool) -> &'static str {
    if fsync {
        "fsync on"
    } else {
        "fsync off"
    }
}

fn measure(
    rt: &tokio::runtime::Runtime,
    work: &Path,
    tag: &str,
    files: &[PathBuf],
    rounds: usize,
) -> Table {
    let n = files.len() as f64;
    let mut table = Table::default();
    for round in 0..rounds {
        let dir = |what: &str| work.join(format!("{tag}-{round}-{what}"));
        for (algo, label) in [
            (cacache::Algorithm::Sha256, "cacache write_hash sha256"),
            (cacache::Algorithm::Sha512, "cacache write_hash sha512"),
        ] {
            let d = dir(label.rsplit(' ').next().unwrap_or("cacache"));
            let t = Instant::now();
            for f in files {
                let bytes = std::fs::read(f).expect("read");
                rt.block_on(cacache::write_hash_with_algo(algo, &d, bytes))
                    .expect("cacache write");
            }
            table.record(label.into(), n / t.elapsed().as_secs_f64());
            let _ = std::fs::remove_dir_all(&d);
        }
        for fsync in [false, true] {
            let s = sync_label(fsync);
            for threads in [1, 2] {
                let d = dir(&format!("naive{threads}-{fsync}"));
                let t = Instant::now();
                naive(files, &d, fsync, threads);
                let name = if threads == 1 {
                    format!("naive loop, 1 thread, {s}")
                } else {
                    format!("two-thread prototype, {s}")
                };
                table.record(name, n / t.elapsed().as_secs_f64());
                let _ = std::fs::remove_dir_all(&d);
            }
            let open = |d: &Path| {
                Store::new(
                    FsBackend::open(
                        d,
                        FsOptions {
                            fsync,
                            ..Default::default()
                        },
                    )
                    .expect("open"),
                )
            };
            let d = dir(&format!("put-{fsync}"));
            let store = open(&d);
            let t = Instant::now();
            rt.block_on(async {
                for f in files {
                    store
                        .put_file(f, &PutOptions::default())
                        .await
                        .expect("put");
                }
            });
            table.record(format!("tarvault put, {s}"), n / t.elapsed().as_secs_f64());
            drop(store);
            let _ = std::fs::remove_dir_all(&d);

            let d = dir(&format!("batch-{fsync}"));
            let store = open(&d);
            let t = Instant::now();
            rt.block_on(async {
                let mut inputs = Vec::with_capacity(files.len());
                for f in files {
                    let file = tokio::fs::File::open(f).await.expect("open");
                    inputs.push((
                        tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024),
                        PutOptions::default(),
                    ));
                }
                for r in store.put_batch(inputs).await {
                    r.expect("put_batch");
                }
            });
            table.record(
                format!("tarvault put_batch, {s}"),
                n / t.elapsed().as_secs_f64(),
            );
            drop(store);
            let _ = std::fs::remove_dir_all(&d);

            let d = dir(&format!("cli-{fsync}"));
            let url = if fsync {
                d.display().to_string()
            } else {
                format!("file://{}?fsync=false", d.display())
            };
            let t = Instant::now();
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_tarvault"))
                .arg("--store")
                .arg(&url)
                .arg("put")
                .args(files)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("run the CLI");
            assert!(out.success(), "tarvault put failed: {out}");
            table.record(
                format!("tarvault CLI put, {s}"),
                n / t.elapsed().as_secs_f64(),
            );
            let _ = std::fs::remove_dir_all(&d);
        }
    }
    table
}

/// The naive content store: read, sha512 + sha1, write a temp file, rename it under its hex; on
/// `threads` threads, each taking every `threads`-th file.
fn naive(files: &[PathBuf], dir: &Path, fsync: bool, threads: usize) {
    let out = dir.join("out");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&out).expect("out dir");
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    std::thread::scope(|s| {
        for t in 0..threads {
            let (out, tmp) = (&out, &tmp);
            s.spawn(move || {
                let mut buf = Vec::new();
                for (i, f) in files.iter().enumerate().skip(t).step_by(threads) {
                    buf.clear();
                    std::fs::File::open(f)
                        .and_then(|mut h| h.read_to_end(&mut buf))
                        .expect("read");
                    let sha512 = sha2::Sha512::digest(&buf);
                    let sha1 = sha1::Sha1::digest(&buf);
                    std::hint::black_box(sha1);
                    let temp = tmp.join(format!("{t}.{i}.tmp"));
                    let mut w = std::fs::File::create(&temp).expect("create");
                    w.write_all(&buf).expect("write");
                    if fsync {
                        w.sync_data().expect("fsync");
                    }
                    drop(w);
                    std::fs::rename(&temp, out.join(hex::encode(sha512))).expect("rename");
                }
            });
        }
    });
}

fn print_table(title: &str, tag: &str, t: &Table) {
    println!();
    println!("## ingest: {title}");
    println!("| operation | blobs/s | vs naive loop (same fsync) | vs cacache sha256 | vs cacache sha512 |");
    println!("|---|---|---|---|---|");
    let c256 = t.get("cacache write_hash sha256");
    let c512 = t.get("cacache write_hash sha512");
    for (name, _) in &t.rows {
        let v = t.get(name);
        let naive = if name.contains("fsync on") {
            t.get("naive loop, 1 thread, fsync on")
        } else if name.contains("fsync off") {
            t.get("naive loop, 1 thread, fsync off")
        } else {
            0.0
        };
        let vs_naive = if naive > 0.0 {
            format!("{:.2}x", v / naive)
        } else {
            "-".into()
        };
        println!(
            "| {name} | {v:.0} | {vs_naive} | {:.2}x | {:.2}x |",
            v / c256,
            v / c512
        );
    }
    println!();
    println!("targets ({tag}):");
    let target = |what: &str, got: f64, want: f64| {
        println!(
            "- {what}: {got:.2}x (target >= {want:.2}x) {}",
            if got >= want { "met" } else { "NOT met" }
        );
    };
    let best_batch = |s: &str| {
        t.get(&format!("tarvault put_batch, {s}"))
            .max(t.get(&format!("tarvault CLI put, {s}")))
    };
    if tag == "small" {
        for s in ["fsync off", "fsync on"] {
            let naive = t.get(&format!("naive loop, 1 thread, {s}"));
            for row in ["put_batch", "CLI put"] {
                let v = t.get(&format!("tarvault {row}, {s}"));
                target(&format!("20 KiB {row}, {s} / naive loop"), v / naive, 1.5);
            }
        }
        let proto = t.get("two-thread prototype, fsync off");
        for row in ["put_batch", "CLI put"] {
            let v = t.get(&format!("tarvault {row}, fsync off"));
            target(
                &format!("20 KiB {row}, fsync off / two-thread prototype"),
                v / proto,
                0.8,
            );
        }
    } else {
        let off = best_batch("fsync off");
        let on = best_batch("fsync on");
        target("corpus batch, fsync off / cacache sha512", off / c512, 1.5);
        target("corpus batch, fsync off / cacache sha256", off / c256, 1.0);
        target("corpus durable batch / cacache sha512", on / c512, 1.0);
    }
}
