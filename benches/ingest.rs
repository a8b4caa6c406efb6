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
//! - **tarvault** `put_file` one at a time, `put_batch` of every file (each read by `file_input`),
//!   and the CLI's batch `put`; with fsync off, `put_batch` once more with each blob's sha512
//!   hashed on its own task instead of eight blobs' at once (`set_batch_sha512_lanes(false)`).
//!
//! Each table ends with the targets and whether this run meets them. A last table puts
//! one large file (1 GiB; `TARVAULT_BENCH_LARGE_MIB`, 0 to skip) through the library and the CLI
//! against single-core sha512 over the same bytes, with the CLI's peak RSS.
//!
//! Before it, one core's rate of each digest over 1 GiB in memory (sha512 from the `sha2` crate and
//! from ring, sha1, blake3, and the store's own hasher; and sha512 over the same bytes as 20 KiB
//! blobs, one by one and eight at once as a batch hashes them). The large put's reference is sha512 on one
//! core with the implementation the store uses (ring), with the `sha2` crate's row beside it.
//!
//! Run: `cargo bench --bench ingest` (`TARVAULT_CORPUS` for the corpus, `TARVAULT_BENCH_DIR` for
//! where stores go, `TARVAULT_BENCH_ROUNDS` for rounds, default 5; `TARVAULT_BENCH_ONLY=large` for
//! the digest rates and the large put alone, `=small` or `=corpus` for that table alone). Every
//! row starts on a settled filesystem (`syncfs` outside its timing) and the stores stay until the
//! bench ends (`TARVAULT_BENCH_DELETE_ROWS=1` deletes each right after its row; see `discard` for
//! why that is not the default).

#[path = "common/noise.rs"]
mod noise;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::Digest;
use tarvault::backend::fs::{BatchFlush, FsBackend, FsOptions};
use tarvault::integrity::{Algorithm, Digests, MultiHasher};
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
            std::fs::write(&p, noise::noise(i, SMALL_SIZE)).expect("write input");
            p
        })
        .collect();
    let corpus = corpus_files();
    // `TARVAULT_BENCH_ONLY=large`: the digest rates and the large put alone; `=small` or
    // `=corpus`: that set's table alone.
    let only = std::env::var("TARVAULT_BENCH_ONLY").unwrap_or_default();
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
        if !only.is_empty() && only != tag {
            continue;
        }
        let table = measure(&rt, work.path(), tag, files, rounds);
        print_table(&title, tag, &table);
    }
    if only.is_empty() || only == "large" {
        digest_rates();
        large(&rt, work.path(), rounds);
    }
}

/// One core's rate for each digest over 1 GiB in memory (a 64 MiB buffer hashed 16 times, fed in
/// 1 MiB pieces): which sha512 is fastest here, and whether sha1 and blake3 (together with the
/// write) fit on the second core while sha512 takes the first.
fn digest_rates() {
    if std::env::var("TARVAULT_BENCH_LARGE_MIB").is_ok_and(|v| v == "0") {
        return;
    }
    let data = noise::noise(7, 64 << 20);
    let passes = 16;
    let gib = (data.len() * passes) as f64 / 1e9;
    type Run<'a> = Box<dyn Fn(&[u8]) + 'a>;
    let sha512_sha2: Run = Box::new(|d| {
        let mut h = sha2::Sha512::new();
        d.chunks(1 << 20).for_each(|c| h.update(c));
        std::hint::black_box(h.finalize());
    });
    let sha512_ring: Run = Box::new(|d| {
        let mut h = ring::digest::Context::new(&ring::digest::SHA512);
        d.chunks(1 << 20).for_each(|c| h.update(c));
        std::hint::black_box(h.finish());
    });
    let multi = |algorithms: &'static [Algorithm]| -> Run {
        Box::new(move |d| {
            let mut h = MultiHasher::new(algorithms);
            d.chunks(1 << 20).for_each(|c| h.update(c));
            std::hint::black_box(h.finalize());
        })
    };
    let sha1: Run = Box::new(|d| {
        let mut h = sha1::Sha1::new();
        d.chunks(1 << 20).for_each(|c| h.update(c));
        std::hint::black_box(h.finalize());
    });
    let blake3: Run = Box::new(|d| {
        let mut h = blake3::Hasher::new();
        d.chunks(1 << 20).for_each(|c| {
            h.update(c);
        });
        std::hint::black_box(h.finalize());
    });
    // A batch's view: the same bytes as 20 KiB blobs, one sha512 each, blob by blob (ring) and
    // eight blobs at once (the lanes a batch hashes through).
    let whole = bytes::Bytes::from(data.clone());
    let blobs: Vec<bytes::Bytes> = (0..whole.len())
        .step_by(20 << 10)
        .map(|at| whole.slice(at..(at + (20 << 10)).min(whole.len())))
        .collect();
    let blobs_ring: Run = Box::new(|d| {
        for c in d.chunks(20 << 10) {
            std::hint::black_box(ring::digest::digest(&ring::digest::SHA512, c));
        }
    });
    let blobs_lanes: Run = Box::new(|_| {
        std::hint::black_box(tarvault::integrity::sha512_each(&blobs));
    });
    let blobs_sha1: Run = Box::new(|d| {
        for c in d.chunks(20 << 10) {
            std::hint::black_box(sha1::Sha1::digest(c));
        }
    });
    let blobs_sha1_lanes: Run = Box::new(|_| {
        std::hint::black_box(tarvault::integrity::sha1_each(&blobs));
    });
    let rows: Vec<(&str, Run)> = vec![
        ("sha512, sha2 crate (AVX2 backend)", sha512_sha2),
        ("sha512, ring", sha512_ring),
        (
            "sha512, tarvault (MultiHasher)",
            multi(&[Algorithm::Sha512]),
        ),
        ("sha512 of 20 KiB blobs, one by one (ring)", blobs_ring),
        (
            "sha512 of 20 KiB blobs, eight at once (batch lanes)",
            blobs_lanes,
        ),
        ("sha1, sha1 crate (SHA-NI)", sha1),
        ("sha1 of 20 KiB blobs, one by one (sha1 crate)", blobs_sha1),
        (
            "sha1 of 20 KiB blobs, eight at once (batch lanes)",
            blobs_sha1_lanes,
        ),
        ("blake3 (one thread)", blake3),
        (
            "sha1 + blake3, tarvault",
            multi(&[Algorithm::Sha1, Algorithm::Blake3]),
        ),
        (
            "sha512 + sha1 + blake3, tarvault",
            multi(&Digests::ALGORITHMS),
        ),
    ];
    println!();
    println!(
        "## digests on one core, {gib:.2} GB in memory, median of 3 (sha-ni {}, avx2 {}, avx512f {})",
        std::is_x86_feature_detected!("sha"),
        std::is_x86_feature_detected!("avx2"),
        std::is_x86_feature_detected!("avx512f")
    );
    println!("| digest | GB/s |");
    println!("|---|---|");
    for (name, run) in rows {
        let rates = (0..3)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..passes {
                    run(&data);
                }
                gib / t.elapsed().as_secs_f64()
            })
            .collect();
        println!("| {name} | {:.3} |", median(rates));
    }
}

/// One large put, fsync off, through the library and through the CLI, against single-core
/// sha512 over the same bytes (the limit: sha1, blake3 and the write can hide behind it on the
/// second core), with the CLI's peak RSS.
fn large(rt: &tokio::runtime::Runtime, work: &Path, rounds: usize) {
    let mib: usize = std::env::var("TARVAULT_BENCH_LARGE_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    if mib == 0 {
        return;
    }
    let input = work.join("large.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).expect("create"));
        for i in 0..mib as u64 {
            f.write_all(&noise::noise(i, 1 << 20)).expect("write");
        }
        f.flush().expect("flush");
    }
    let len = (mib << 20) as f64;
    let (mut sha, mut lib, mut cli, mut rss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut sha_crate = Vec::new();
    for round in 0..rounds {
        // Each put follows a sha512 pass over the file, the library first in even rounds and the
        // CLI first in odd ones, so that both meet the same memory: on this VM, page cache
        // written into memory that was freed seconds ago and handed back to the host (free page
        // reporting) costs twice the CPU of memory freed just now (`dd` of 1 GiB: 0.5 against
        // 0.25 s of system time), and a fixed order gave one row that cost every round.
        for step in 0..2 {
            // The limit: sha512 on one core over the file's bytes, read as the put reads them,
            // with the implementation the store hashes with; and the sha2 crate's, for comparison.
            let t = Instant::now();
            if step == 1 {
                let mut h = sha2::Sha512::new();
                read_through(&input, |c| h.update(c));
                std::hint::black_box(h.finalize());
                sha_crate.push(len / t.elapsed().as_secs_f64() / 1e9);
            } else {
                let mut h = MultiHasher::new(&[Algorithm::Sha512]);
                read_through(&input, |c| h.update(c));
                std::hint::black_box(h.finalize());
                sha.push(len / t.elapsed().as_secs_f64() / 1e9);
            }
            let dir = work.join(format!("large-{round}-{step}"));
            match (round + step) % 2 {
                0 => lib.push(large_lib(rt, &input, &dir)),
                _ => {
                    let (secs, cpu, peak_mib) = large_cli(&input, &dir);
                    cli.push((secs, cpu));
                    rss.push(peak_mib);
                }
            }
        }
    }
    let _ = std::fs::remove_file(&input);
    let (sha, sha_crate) = (median(sha), median(sha_crate));
    // GB/s by the wall clock, and CPU seconds per put (this process's, or the CLI child's).
    let rate = |v: &[(f64, f64)]| median(v.iter().map(|(secs, _)| len / secs / 1e9).collect());
    let cpu = |v: &[(f64, f64)]| median(v.iter().map(|(_, c)| *c).collect());
    let (sha_cpu, rss) = (len / sha / 1e9, median(rss));
    let (lib_cpu, cli_cpu) = (cpu(&lib), cpu(&cli));
    let (lib, cli) = (rate(&lib), rate(&cli));
    println!();
    println!("## one {mib} MiB put, fsync off (sha512 + sha1 + blake3), median of {rounds} rounds");
    println!("| operation | GB/s | / sha512 one core | CPU s | peak RSS |");
    println!("|---|---|---|---|---|");
    println!("| sha512, one core (tarvault's: ring) | {sha:.3} | 1.00x | {sha_cpu:.2} | - |");
    println!(
        "| sha512, one core (sha2 crate) | {sha_crate:.3} | {:.2}x | {:.2} | - |",
        sha_crate / sha,
        len / sha_crate / 1e9
    );
    println!(
        "| tarvault put_file | {lib:.3} | {:.2}x | {lib_cpu:.2} | - |",
        lib / sha
    );
    println!(
        "| tarvault CLI put | {cli:.3} | {:.2}x | {cli_cpu:.2} | {rss:.1} MiB |",
        cli / sha
    );
    println!();
    println!("targets (large):");
    for (what, v) in [("library", lib), ("CLI", cli)] {
        let r = v / sha;
        println!(
            "- {mib} MiB put through the {what} / sha512 one core: {r:.2}x (target >= 0.85x) {}",
            if r >= 0.85 { "met" } else { "NOT met" }
        );
    }
    println!(
        "- CLI peak RSS: {rss:.1} MiB (target <= 16 MiB) {}",
        if rss <= 16.0 { "met" } else { "NOT met" }
    );
}

/// Wall and CPU seconds of one `put_file` of `input` into a new store at `dir`, which is removed
/// afterwards.
fn large_lib(rt: &tokio::runtime::Runtime, input: &Path, dir: &Path) -> (f64, f64) {
    let store = Store::new(
        FsBackend::open(
            dir,
            FsOptions {
                fsync: false,
                ..Default::default()
            },
        )
        .expect("open"),
    );
    let (t, cpu) = (Instant::now(), cpu_seconds().0);
    rt.block_on(store.put_file(input, &PutOptions::default()))
        .expect("put");
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds().0 - cpu;
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
    (secs, cpu)
}

/// Wall and CPU seconds of the CLI's `put` of `input` into a new store at `dir`, which is removed
/// afterwards, and the CLI's peak RSS in MiB.
fn large_cli(input: &Path, dir: &Path) -> (f64, f64, f64) {
    let (t, cpu) = (Instant::now(), cpu_seconds().1);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tarvault"))
        .arg("--store")
        .arg(format!("file://{}?fsync=false", dir.display()))
        .arg("put")
        .arg(input)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run the CLI");
    let (ok, peak_kib) = wait_with_rss(child);
    assert!(ok, "tarvault put failed");
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds().1 - cpu;
    let _ = std::fs::remove_dir_all(dir);
    (secs, cpu, peak_kib as f64 / 1024.0)
}

/// Reads `path` in 1 MiB pieces, handing each to `f`.
fn read_through(path: &Path, mut f: impl FnMut(&[u8])) {
    let mut file = std::fs::File::open(path).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = file.read(&mut buf).expect("read");
        if k == 0 {
            break;
        }
        f(&buf[..k]);
    }
}

/// Waits for `child` and returns whether it succeeded and its peak RSS in KiB, read from its
/// `VmHWM` (a high-water mark, so the last reading before it exits is its peak). `wait4`'s
/// `ru_maxrss` would not do: a child spawned by `vfork` and `exec` keeps the high-water mark of
/// this process's memory.
fn wait_with_rss(mut child: std::process::Child) -> (bool, i64) {
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        match child.try_wait().expect("wait") {
            Some(status) => return (status.success(), peak),
            None => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
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

/// Rows measured, in order of first appearance, with every round's blobs/s and CPU time per blob.
#[derive(Default)]
struct Table {
    rows: Vec<(String, Vec<f64>, Vec<f64>)>,
}

impl Table {
    fn record(&mut self, name: String, rate: f64, cpu: f64) {
        match self.rows.iter_mut().find(|(k, _, _)| *k == name) {
            Some((_, r, c)) => {
                r.push(rate);
                c.push(cpu);
            }
            None => self.rows.push((name, vec![rate], vec![cpu])),
        }
    }

    fn get(&self, name: &str) -> f64 {
        self.rows
            .iter()
            .find(|(k, _, _)| k == name)
            .map_or(0.0, |(_, v, _)| median(v.clone()))
    }

    fn cpu(&self, name: &str) -> f64 {
        self.rows
            .iter()
            .find(|(k, _, _)| k == name)
            .map_or(0.0, |(_, _, c)| median(c.clone()))
    }
}

/// User + system CPU seconds used so far by this process and, separately, by its waited-for
/// children (the CLI rows). On a shared machine wall time depends on the neighbours; CPU time per
/// blob says what the work itself costs.
fn cpu_seconds() -> (f64, f64) {
    let get = |who| {
        // SAFETY: getrusage only writes the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    };
    (get(libc::RUSAGE_SELF), get(libc::RUSAGE_CHILDREN))
}

/// Times one row: blobs/s by the wall clock, and CPU µs per blob of this process and its children.
struct Clock {
    wall: Instant,
    cpu: (f64, f64),
}

impl Clock {
    /// Starts a row's clock on a settled filesystem: everything earlier rows left dirty is
    /// written out first (outside the timing), so a row's `syncfs` flushes its own data only.
    fn start(work: &Path) -> Clock {
        settle(work);
        Clock {
            wall: Instant::now(),
            cpu: cpu_seconds(),
        }
    }

    fn stop(self, table: &mut Table, name: String, n: f64) {
        let wall = self.wall.elapsed().as_secs_f64();
        let (s, c) = cpu_seconds();
        let cpu = (s - self.cpu.0) + (c - self.cpu.1);
        table.record(name, n / wall, cpu / n * 1e6);
    }
}

/// Writes out every dirty page and inode of the filesystem under `work` (Linux `syncfs`).
fn settle(work: &Path) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let dir = std::fs::File::open(work).expect("open the bench dir");
        // SAFETY: `dir` is an open descriptor for the duration of the call.
        let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
        assert_eq!(rc, 0, "syncfs: {}", std::io::Error::last_os_error());
    }
    #[cfg(not(target_os = "linux"))]
    let _ = work;
}

/// What happens to a row's store once the row is measured. By default it stays until the bench
/// ends: on ext4 without a journal (this machine's root filesystem), an inode allocation skips
/// every inode of its block group freed in the last minutes (`recently_deleted`), so deleting a
/// row's few thousand files makes the *next* row pay for them. `TARVAULT_BENCH_DELETE_ROWS=1`
/// deletes each store right after its row, as earlier versions of this bench did.
fn discard(dir: &Path) {
    if std::env::var("TARVAULT_BENCH_DELETE_ROWS").is_ok_and(|v| v == "1") {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn sync_label(fsync: bool) -> &'static str {
    if fsync {
        "fsync on"
    } else {
        "fsync off"
    }
}

/// One row of a small-file table.
#[derive(Clone, Copy)]
enum Row {
    /// cacache's `write_hash` with this digest (sha256 or sha512).
    Cacache(cacache::Algorithm, &'static str),
    /// The naive loop on one thread, or the two-thread prototype.
    Naive { fsync: bool, threads: usize },
    /// `put_file` one blob at a time.
    Put { fsync: bool },
    /// `put_batch` of every file.
    Batch(BatchRow),
    /// The CLI's batch `put`, in a process of its own.
    Cli { fsync: bool },
}

/// How a `put_batch` row runs.
#[derive(Clone, Copy)]
struct BatchRow {
    fsync: bool,
    /// Every shard directory made before the row, as in a store of a few million blobs.
    dirs_present: bool,
    flush: BatchFlush,
    /// Eight blobs' sha512 at once (`set_batch_sha512_lanes`), or blob by blob.
    lanes: bool,
}

impl Row {
    /// Every row of a table, in the order they are printed.
    fn all() -> Vec<Row> {
        let mut rows = vec![
            Row::Cacache(cacache::Algorithm::Sha256, "sha256"),
            Row::Cacache(cacache::Algorithm::Sha512, "sha512"),
        ];
        for fsync in [false, true] {
            rows.push(Row::Naive { fsync, threads: 1 });
            rows.push(Row::Naive { fsync, threads: 2 });
            rows.push(Row::Put { fsync });
            // With fsync on, the batch also once with each blob's own ordered fsyncs instead of
            // the two syncfs calls (`BatchFlush::PerFile`); with fsync off, once with each blob's
            // sha512 hashed on its own task instead of eight blobs' at once (as before the lanes).
            let (flush, lanes) = if fsync {
                (BatchFlush::PerFile, true)
            } else {
                (BatchFlush::Syncfs, false)
            };
            for (dirs_present, flush, lanes) in [
                (false, BatchFlush::Syncfs, true),
                (true, BatchFlush::Syncfs, true),
                (false, flush, lanes),
            ] {
                rows.push(Row::Batch(BatchRow {
                    fsync,
                    dirs_present,
                    flush,
                    lanes,
                }));
            }
            rows.push(Row::Cli { fsync });
        }
        rows
    }

    fn name(self) -> String {
        match self {
            Row::Cacache(_, algo) => format!("cacache write_hash {algo}"),
            Row::Naive { fsync, threads: 1 } => {
                format!("naive loop, 1 thread, {}", sync_label(fsync))
            }
            Row::Naive { fsync, .. } => format!("two-thread prototype, {}", sync_label(fsync)),
            Row::Put { fsync } => format!("tarvault put, {}", sync_label(fsync)),
            Row::Batch(b) => {
                let how = if b.dirs_present {
                    "shard dirs present, "
                } else if b.flush == BatchFlush::PerFile {
                    "per-file fsyncs, "
                } else if !b.lanes {
                    "sha512 blob by blob, "
                } else {
                    ""
                };
                format!("tarvault put_batch, {how}{}", sync_label(b.fsync))
            }
            Row::Cli { fsync } => format!("tarvault CLI put, {}", sync_label(fsync)),
        }
    }

    /// Runs the row into the fresh store directory `d` and records it in `table`.
    fn run(
        self,
        rt: &tokio::runtime::Runtime,
        work: &Path,
        d: &Path,
        files: &[PathBuf],
        keys: &[String],
        table: &mut Table,
    ) {
        let n = files.len() as f64;
        let open = |fsync: bool, batch_flush: BatchFlush| {
            Store::new(
                FsBackend::open(
                    d,
                    FsOptions {
                        fsync,
                        batch_flush,
                        ..Default::default()
                    },
                )
                .expect("open"),
            )
        };
        match self {
            Row::Cacache(algo, _) => {
                let t = Clock::start(work);
                for f in files {
                    let bytes = std::fs::read(f).expect("read");
                    rt.block_on(cacache::write_hash_with_algo(algo, d, bytes))
                        .expect("cacache write");
                }
                t.stop(table, self.name(), n);
            }
            Row::Naive { fsync, threads } => {
                let t = Clock::start(work);
                naive(files, d, fsync, threads);
                t.stop(table, self.name(), n);
            }
            Row::Put { fsync } => {
                let store = open(fsync, BatchFlush::Syncfs);
                let t = Clock::start(work);
                rt.block_on(async {
                    for f in files {
                        store
                            .put_file(f, &PutOptions::default())
                            .await
                            .expect("put");
                    }
                });
                t.stop(table, self.name(), n);
            }
            Row::Batch(b) => {
                let store = open(b.fsync, b.flush);
                if b.dirs_present {
                    // A store of a few million blobs has every shard directory already.
                    for k in keys {
                        std::fs::create_dir_all(d.join("sha512").join(&k[..2]).join(&k[2..4]))
                            .expect("shard dir");
                    }
                }
                tarvault::integrity::set_batch_sha512_lanes(b.lanes);
                let t = Clock::start(work);
                rt.block_on(async {
                    let inputs: Vec<_> = files
                        .iter()
                        .map(|f| (tarvault::file_input(f), PutOptions::default()))
                        .collect();
                    for r in store.put_batch(inputs).await {
                        r.expect("put_batch");
                    }
                });
                tarvault::integrity::set_batch_sha512_lanes(true);
                t.stop(table, self.name(), n);
            }
            Row::Cli { fsync } => {
                let url = if fsync {
                    d.display().to_string()
                } else {
                    format!("file://{}?fsync=false", d.display())
                };
                let t = Clock::start(work);
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_tarvault"))
                    .arg("--store")
                    .arg(&url)
                    .arg("put")
                    .args(files)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .expect("run the CLI");
                assert!(out.success(), "tarvault put failed: {out}");
                t.stop(table, self.name(), n);
            }
        }
    }
}

/// Runs every row once per round. The order changes from round to round (rotated by a share of
/// the rows each round, and reversed in odd rounds): a row's rate depends on what the filesystem
/// went through just before it, and with one fixed order one row (the CLI's, last after three
/// `put_batch` rows) always ran on the store the others had just filled.
fn measure(
    rt: &tokio::runtime::Runtime,
    work: &Path,
    tag: &str,
    files: &[PathBuf],
    rounds: usize,
) -> Table {
    let rows = Row::all();
    let mut table = Table::default();
    for row in &rows {
        table.rows.push((row.name(), Vec::new(), Vec::new()));
    }
    let keys: Vec<String> = files
        .iter()
        .map(|f| hex::encode(sha2::Sha512::digest(std::fs::read(f).expect("read"))))
        .collect();
    for round in 0..rounds {
        let mut order: Vec<(usize, Row)> = rows.iter().copied().enumerate().collect();
        order.rotate_left(round * rows.len() / rounds.max(1) % rows.len());
        if round % 2 == 1 {
            order.reverse();
        }
        for (i, row) in order {
            let d = work.join(format!("{tag}-{round}-{i}"));
            row.run(rt, work, &d, files, &keys, &mut table);
            discard(&d);
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
    println!("| operation | blobs/s | vs naive loop (same fsync) | vs cacache sha256 | vs cacache sha512 | CPU µs/blob |");
    println!("|---|---|---|---|---|---|");
    let c256 = t.get("cacache write_hash sha256");
    let c512 = t.get("cacache write_hash sha512");
    for (name, _, _) in &t.rows {
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
            "| {name} | {v:.0} | {vs_naive} | {:.2}x | {:.2}x | {:.0} |",
            v / c256,
            v / c512,
            t.cpu(name)
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
    let by_blob = t.get("tarvault put_batch, sha512 blob by blob, fsync off");
    if by_blob > 0.0 {
        println!(
            "- put_batch ({tag}), fsync off: sha512 of eight blobs at once {:.2}x the speed of blob by blob",
            t.get("tarvault put_batch, fsync off") / by_blob
        );
    }
    let per_file = t.get("tarvault put_batch, per-file fsyncs, fsync on");
    if per_file > 0.0 {
        println!(
            "- durable put_batch ({tag}): two syncfs calls {:.2}x the speed of per-file ordered fsyncs",
            t.get("tarvault put_batch, fsync on") / per_file
        );
    }
}
