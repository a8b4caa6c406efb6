//! The fs store at scale (issue 16): how ingest, fresh-process lookups, `serve`, `ls`, `fsck` and
//! `gc` behave with a million blobs (or more), and what the sha1/blake3 alias index costs.
//! Everything is printed as markdown tables; nothing is asserted (targets are printed beside the
//! figures, for the reader to compare).
//!
//! 1. ingest through the library (`Store::put_batch`, batches of 256, two in flight, fsync on):
//!    blobs/s per tenth of N, and the first 10k for comparison;
//! 2. fresh-process lookups with the CLI (`has`, `stat`, `get`) by sha512, sha1 and blake3, hit
//!    and miss: median wall time and the child's peak RSS, on the N store and on a 1k store;
//! 3. `serve`: the first request (by sha1), then random lookups by sha1 and by sha512 over one
//!    keep-alive connection (p50/p99), and the server's peak RSS (needs `--features server`);
//! 4. `ls --json`, `fsck --json` and a `gc` dry run via the CLI: rate and peak RSS;
//! 5. index bytes per blob (everything under `DIR/index/`), after the build and after fsck;
//! 6. the cost of the index: ingest of an N/10 store with the index against one with the
//!    pre-index alias log, in the same run;
//! 7. (only with `TARVAULT_SCALE_INDEX_N`) the index alone, through its own API, at e.g. 50M
//!    records: insert rate per tenth, warm lookups, RSS, bytes per record.
//!
//! Run: `cargo bench --bench scale --features server` (without `server` the serve rows are
//! skipped). At the default N = 1,000,000 the store takes about 8 GB and 1M files;
//! at 5M ~41 GB, or ~21 GB with `TARVAULT_SCALE_BLOB_BYTES=4096`.
//! The environment:
//! - `TARVAULT_SCALE_N`: blobs in the big store (default 1000000; e.g. 5000000);
//! - `TARVAULT_SCALE_DIR`: where the stores go (default `scale-bench/` in the target directory);
//! - `TARVAULT_SCALE_KEEP=1`: keep the N store at the end (it is deleted otherwise);
//! - `TARVAULT_SCALE_REUSE=1`: use the N store a previous run kept (skipping the build, and the
//!   ingest rows), and keep it again;
//! - `TARVAULT_SCALE_BLOB_BYTES`: the largest blob (default 6144: blobs of 4-6 KiB, two 4 KiB
//!   blocks each; 4096 makes blobs of 2.7-4 KiB, one block each, for a 5M store in ~21 GB);
//! - `TARVAULT_SCALE_COST_N`: blobs in each of the four stores of the index-cost part (default
//!   N/10);
//! - `TARVAULT_SCALE_IN_FLIGHT`: `put_batch` calls in flight during ingest (default 2);
//! - `TARVAULT_SCALE_RUNS`: runs per fresh-process lookup (default 10; fewer when runs are slow);
//! - `TARVAULT_SCALE_LOOKUPS`: serve lookups per digest (default 100000);
//! - `TARVAULT_SCALE_INDEX_N`: records for the index-only part (off unless set, e.g. 50000000);
//!   `TARVAULT_SCALE_INDEX_BATCH`: records per insert there (default 4096).
//!
//! The page cache is left warm (the machine is shared; dropping caches would disturb other
//! work), so "fresh process" means a new process, not a cold disk.

#[path = "common/cpu.rs"]
mod cpu;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::integrity::{Algorithm, MultiHasher};
use tarvault::{Digests, Integrity, PutOptions, Store};

/// Blobs per `put_batch`.
const BATCH: usize = 256;
/// `put_batch` calls in flight at once (`TARVAULT_SCALE_IN_FLIGHT`, default 2): one commits (two
/// `syncfs`) while the next is read and hashed. (`tarvault put` runs one at a time.)
fn in_flight() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("TARVAULT_SCALE_IN_FLIGHT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2usize)
            .max(1)
    })
}

/// The small store the fresh-process lookups are compared with.
const SMALL_N: u64 = 1000;
/// Misses are blobs numbered from here (never stored).
const MISS_BASE: u64 = 1 << 62;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if args.get(1).map(String::as_str) == Some("--measure") {
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
        measure_child(&args);
        return;
    }
    // Child mode: the index-only part runs in a process of its own, so its RSS is the index's.
    if args.get(1).map(String::as_str) == Some("--index-only") {
        index_only_child(&args[2..]);
        return;
    }
    // `--index-probe FILE LOOKUPS`: warm lookups in a process of its own against an index the
    // index-only part is building or has built (records 0..len are in it), e.g. at 50M.
    if args.get(1).map(String::as_str) == Some("--index-probe") {
        let lookups = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
        index_only_impl::probe(Path::new(&args[2]), lookups);
        return;
    }
    let cfg = Config::from_env();
    std::fs::create_dir_all(&cfg.dir).expect("create TARVAULT_SCALE_DIR");
    println!(
        "tarvault scale benchmark: N = {}, {} cores, stores under {}",
        cfg.n,
        cpu::cores(),
        cfg.dir.display()
    );
    println!("load average at the start: {}", loadavg());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let big = cfg.dir.join(format!("n{}", cfg.n));
    let big_done = cfg.dir.join(format!("n{}.done", cfg.n));
    let reused = cfg.reuse && big_done.exists() && big.is_dir();
    if reused {
        println!("reusing the store at {} (no ingest rows)", big.display());
    } else {
        let _ = std::fs::remove_file(&big_done);
        remove_dir(&big);
        let marks = ingest(&rt, &big, cfg.n, fs_options(false), true);
        std::fs::write(&big_done, format!("{}\n", cfg.n)).expect("write done marker");
        print_ingest(cfg.n, &marks);
    }
    let mut index_sizes = vec![("after the build", index_size(&big))];

    let small = cfg.dir.join(format!("n{SMALL_N}"));
    remove_dir(&small);
    ingest(&rt, &small, SMALL_N, fs_options(false), false);

    match option_env!("CARGO_BIN_EXE_tarvault") {
        Some(bin) => {
            let bin = Path::new(bin);
            lookups(bin, &cfg, &small, &big);
            if cfg!(feature = "server") {
                serve(bin, &cfg, &big);
            } else {
                println!("\n(serve skipped: run with `--features server`)");
            }
            walks(bin, &cfg, &big);
            index_sizes.push(("after fsck (which rebuilds it)", index_size(&big)));
        }
        None => println!("\n(CLI rows skipped: the `tarvault` binary is not built)"),
    }
    print_index_sizes(cfg.n, &index_sizes);
    index_cost(&rt, &cfg);
    if let Some(n) = cfg.index_n {
        index_only(&cfg, n);
    }

    remove_dir(&small);
    println!("\nload average at the end: {}", loadavg());
    if cfg.keep || cfg.reuse {
        println!("\nkept {}", big.display());
    } else {
        let _ = std::fs::remove_file(&big_done);
        remove_dir(&big);
        // The directory itself only if nothing else is in it.
        let _ = std::fs::remove_dir(&cfg.dir);
    }
}

/// The first three fields of `/proc/loadavg` (other work on the machine shows in every figure).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

struct Config {
    n: u64,
    dir: PathBuf,
    keep: bool,
    reuse: bool,
    runs: usize,
    lookups: usize,
    index_n: Option<u64>,
    index_batch: usize,
}

impl Config {
    fn from_env() -> Config {
        let num = |name: &str| -> Option<u64> {
            let v = std::env::var(name).ok()?;
            Some(
                v.replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
            )
        };
        let flag = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
        let dir = std::env::var_os("TARVAULT_SCALE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(default_dir);
        Config {
            n: num("TARVAULT_SCALE_N").unwrap_or(1_000_000).max(1),
            dir,
            keep: flag("TARVAULT_SCALE_KEEP"),
            reuse: flag("TARVAULT_SCALE_REUSE"),
            runs: num("TARVAULT_SCALE_RUNS").unwrap_or(10).max(1) as usize,
            lookups: num("TARVAULT_SCALE_LOOKUPS").unwrap_or(100_000).max(1) as usize,
            index_n: num("TARVAULT_SCALE_INDEX_N").filter(|&n| n > 0),
            index_batch: num("TARVAULT_SCALE_INDEX_BATCH").unwrap_or(4096).max(1) as usize,
        }
    }
}

/// `scale-bench/` in the target directory (this executable is `target/<profile>/deps/scale-…`).
fn default_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .map(|target| target.join("scale-bench"))
        .unwrap_or_else(|| PathBuf::from("scale-bench"))
}

fn remove_dir(path: &Path) {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("remove {}: {e}", path.display()),
    }
}

/// The options every store here is built with: fsync on, and the index (or, for the cost row,
/// the pre-index alias log).
fn fs_options(legacy_alias_log: bool) -> FsOptions {
    let options = FsOptions {
        legacy_alias_log,
        ..FsOptions::default()
    };
    assert!(options.fsync, "the scale benchmark measures durable stores");
    options
}

// ---------------------------------------------------------------------------------------------
// Synthetic blobs

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The largest blob (`TARVAULT_SCALE_BLOB_BYTES`, default 6144); blobs are 2/3 of it to all of
/// it. The default (4-6 KiB) takes two 4 KiB blocks per blob; 4096 takes one, which is what lets a
/// 5M store fit on a smaller disk (~21 GB instead of ~41).
fn blob_max() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("TARVAULT_SCALE_BLOB_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(6144usize)
            .max(64)
    })
}

/// Blob `i`: pseudo-random bytes led by `i` itself, so that every blob is distinct, of a length
/// drawn from 2/3 of [`blob_max`] up to (not including) all of it.
fn blob(i: u64) -> Vec<u8> {
    let mut seed = i;
    let (max, min) = (blob_max(), blob_max() * 2 / 3);
    let len = min + (splitmix(&mut seed) % (max - min).max(1) as u64) as usize;
    let mut out = vec![0u8; len];
    out[..8].copy_from_slice(&i.to_le_bytes());
    let mut x = splitmix(&mut seed) | 1;
    for c in out[8..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    out
}

fn digests_of(i: u64) -> Digests {
    let mut h = MultiHasher::standard();
    h.update(&blob(i));
    h.finalize().digests().expect("digests")
}

/// Digests of every blob numbered in `ids`, hashed on all cores.
fn digests_of_all(ids: &[u64]) -> Vec<Digests> {
    let threads = cpu::cores() as usize;
    let chunk = ids.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = ids
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(|&i| digests_of(i)).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("hash thread"))
            .collect()
    })
}

/// `count` blob numbers below `n`, drawn at random (distinct while `count <= n`).
fn sample(n: u64, count: usize, seed: u64) -> Vec<u64> {
    let mut s = seed;
    if (count as u64) < n / 2 {
        let mut seen = std::collections::HashSet::with_capacity(count);
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let i = splitmix(&mut s) % n;
            if seen.insert(i) {
                out.push(i);
            }
        }
        out
    } else {
        (0..count).map(|_| splitmix(&mut s) % n).collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sha512,
    Sha1,
    Blake3,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Sha512, Kind::Sha1, Kind::Blake3];

    fn name(self) -> &'static str {
        match self {
            Kind::Sha512 => "sha512",
            Kind::Sha1 => "sha1",
            Kind::Blake3 => "blake3",
        }
    }

    /// The address the CLI takes: `sha512-…`, the 40-hex shasum, `blake3-…`.
    fn address(self, d: &Digests) -> String {
        match self {
            Kind::Sha512 => d.integrity().to_string(),
            Kind::Sha1 => d.shasum(),
            Kind::Blake3 => Integrity::from(d.hash(Algorithm::Blake3)).to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Ingest

/// A point of an ingest: blobs done, seconds since the start, and the CPU counters then.
#[derive(Clone, Copy)]
struct Mark {
    done: u64,
    secs: f64,
    busy: Option<f64>,
    own: f64,
}

/// Builds a store of blobs `0..n` with `put_batch`; returns a mark at 10k (when N is larger) and at
/// every tenth of N.
fn ingest(
    rt: &tokio::runtime::Runtime,
    root: &Path,
    n: u64,
    options: FsOptions,
    progress: bool,
) -> Vec<Mark> {
    let mut bounds: Vec<u64> = (1..=10).map(|k| n * k / 10).collect();
    if n > 20_000 {
        bounds.push(10_000);
    }
    bounds.sort_unstable();
    bounds.dedup();
    bounds.retain(|&b| b > 0);
    let store = Store::new(FsBackend::open(root, options).expect("open store"));
    let batches: Vec<Range<u64>> = (0..n)
        .step_by(BATCH)
        .map(|s| s..(s + BATCH as u64).min(n))
        .collect();
    let start = Instant::now();
    let mut marks = vec![Mark {
        done: 0,
        secs: 0.0,
        busy: cpu::machine_busy(),
        own: cpu::self_cpu(),
    }];
    rt.block_on(async {
        let mut done = 0u64;
        let mut next = 0;
        let mut results = futures::stream::iter(batches)
            .map(|range| {
                let store = store.clone();
                tokio::spawn(async move { put_range(&store, range).await })
            })
            .buffer_unordered(in_flight());
        while let Some(r) = results.next().await {
            done += r.expect("ingest task");
            while next < bounds.len() && done >= bounds[next] {
                let m = Mark {
                    done,
                    secs: start.elapsed().as_secs_f64(),
                    busy: cpu::machine_busy(),
                    own: cpu::self_cpu(),
                };
                if progress && bounds[next].is_multiple_of((n / 10).max(1)) {
                    eprintln!(
                        "ingest: {done}/{n} after {:.0} s ({:.0} blobs/s)",
                        m.secs,
                        done as f64 / m.secs
                    );
                }
                marks.push(m);
                next += 1;
            }
        }
    });
    marks
}

async fn put_range(store: &Store, range: Range<u64>) -> u64 {
    let inputs: Vec<_> = range
        .clone()
        .map(|i| {
            let chunk: std::io::Result<Bytes> = Ok(Bytes::from(blob(i)));
            (futures::stream::iter([chunk]), PutOptions::default())
        })
        .collect();
    let mut stored = 0;
    for (i, r) in range.zip(store.put_batch(inputs).await) {
        let outcome = r.unwrap_or_else(|e| panic!("put of blob {i} failed: {}", e.report()));
        assert!(
            outcome.stored,
            "blob {i} was already stored: not a fresh store"
        );
        stored += 1;
    }
    stored
}

/// Blobs/s from mark `a` to mark `b`.
fn rate(a: &Mark, b: &Mark) -> f64 {
    (b.done - a.done) as f64 / (b.secs - a.secs).max(1e-9)
}

/// The mark at 0, then the first mark at or past each tenth of `n`.
fn tenth_marks(n: u64, marks: &[Mark]) -> Vec<Mark> {
    let mut out = vec![marks[0]];
    for k in 1..=10u64 {
        if let Some(m) = marks.iter().find(|m| m.done >= n * k / 10) {
            if out.last().is_some_and(|l| l.done < m.done) {
                out.push(*m);
            }
        }
    }
    out
}

fn print_ingest(n: u64, marks: &[Mark]) {
    println!();
    println!(
        "## 1. Ingest of {n} blobs (put_batch of {BATCH}, {} in flight, fsync on); \
         target: last tenth >= 0.9x the first 10k",
        in_flight()
    );
    println!("| blobs | blobs/s | vs first 10k | machine CPU busy | bench CPU us/blob |");
    println!("|---|---:|---:|---:|---:|");
    let first = marks
        .iter()
        .find(|m| m.done >= 10_000)
        .map(|m| rate(&marks[0], m));
    let mut segments: Vec<(String, Mark, Mark)> = Vec::new();
    if let Some(m) = marks.iter().find(|m| m.done >= 10_000 && m.done < n / 10) {
        segments.push((format!("first {}", m.done), marks[0], *m));
    }
    let tenths = tenth_marks(n, marks);
    for w in tenths.windows(2) {
        segments.push((format!("{}-{}", w[0].done, w[1].done), w[0], w[1]));
    }
    for (label, a, b) in segments {
        let r = rate(&a, &b);
        let vs = first.map_or("-".to_string(), |f| format!("{:.2}x", r / f));
        let busy = match (a.busy, b.busy) {
            (Some(x), Some(y)) => format!(
                "{:.0}%",
                100.0 * (y - x) / ((b.secs - a.secs).max(1e-9) * cpu::cores())
            ),
            _ => "?".into(),
        };
        let own = 1e6 * (b.own - a.own) / (b.done - a.done).max(1) as f64;
        println!("| {label} | {r:.0} | {vs} | {busy} | {own:.0} |");
    }
    if let Some(last) = marks.last() {
        println!(
            "whole ingest: {:.1} s, {:.0} blobs/s",
            last.secs,
            last.done as f64 / last.secs.max(1e-9)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Fresh-process lookups

/// One finished child: wall time, peak RSS (KiB), exit code, and its standard error.
struct Run {
    secs: f64,
    maxrss_kib: u64,
    code: i32,
    stderr: String,
}

/// Runs `cmd` to its end (standard output discarded) and measures it, through this executable in
/// `--measure` mode. Not directly: a child spawned from this process inherits its peak RSS
/// (Linux records the peak of the memory image an `exec` replaces, and std spawns with
/// `vfork`, whose image is this process's), so `ru_maxrss` would say at least as much as this
/// benchmark holds. The measuring process is small and fresh, so its floor (a few MiB) stays
/// below any `tarvault` command's own.
fn run_measured(cmd: &Command) -> Run {
    let mut err = tempfile::tempfile().expect("stderr file");
    let out = Command::new(std::env::current_exe().expect("current exe"))
        .arg("--measure")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null())
        .stderr(err.try_clone().expect("stderr file"))
        .output()
        .expect("spawn the measuring process");
    let mut stderr = String::new();
    use std::io::Seek;
    let _ = err.seek(std::io::SeekFrom::Start(0));
    let _ = err.read_to_string(&mut stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    match (f.first(), f.get(1), f.get(2)) {
        (Some(secs), Some(kib), Some(code)) => Run {
            secs: secs.parse().unwrap_or(f64::NAN),
            maxrss_kib: kib.parse().unwrap_or(0),
            code: code.parse().unwrap_or(-1),
            stderr: stderr.trim().to_string(),
        },
        _ => panic!("the measuring process printed {text:?} ({})", stderr.trim()),
    }
}

/// Child mode `--measure PROGRAM ARGS…`: runs the command (standard output discarded, standard
/// error inherited) and prints its wall time in seconds, its peak RSS in KiB (`wait4`'s
/// `ru_maxrss`) and its exit code (-1 when killed by a signal).
fn measure_child(args: &[std::ffi::OsString]) {
    let t = Instant::now();
    let child = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 only writes into the two values it is given; the child is ours and not yet
    // reaped (std only reaps a `Child` when asked to wait).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    println!("{secs} {} {code}", usage.ru_maxrss);
}

fn tarvault(bin: &Path, store: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("--store").arg(store);
    c
}

/// Median wall time (s) and median peak RSS (KiB) of a lookup, and the runs, or why it failed.
type Cell = Result<(f64, u64, usize), String>;

/// Runs `args` on each store up to `runs` times, alternating between them (so both see the same
/// noise), each run on the next of that store's addresses, expecting exit code `want`. Stops
/// early (after 3 runs) once the runs add up to 10 s.
fn lookup_cells(
    bin: &Path,
    stores: [(&Path, &[String]); 2],
    args: &[&str],
    want: i32,
    runs: usize,
) -> [Cell; 2] {
    let mut samples: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    let started = Instant::now();
    for k in 0..runs {
        for ((store, addrs), (secs, rss)) in stores.iter().zip(samples.iter_mut()) {
            let addr = &addrs[k % addrs.len()];
            let run = run_measured(tarvault(bin, store).args(args).arg(addr));
            if run.code != want {
                let e = format!("exit {} ({})", run.code, run.stderr);
                return [Err(e.clone()), Err(e)];
            }
            secs.push(run.secs);
            rss.push(run.maxrss_kib as f64);
        }
        if k >= 2 && started.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    samples.map(|(secs, rss)| {
        let n = secs.len();
        Ok((median(secs), median(rss) as u64, n))
    })
}

fn lookups(bin: &Path, cfg: &Config, small: &Path, big: &Path) {
    eprintln!("fresh-process lookups…");
    let runs = cfg.runs;
    let miss_ids: Vec<u64> = (0..runs as u64).map(|k| MISS_BASE + k).collect();
    let misses = digests_of_all(&miss_ids);
    let hits_small = digests_of_all(&sample(SMALL_N, runs, 11));
    let hits_big = digests_of_all(&sample(cfg.n, runs, 12));
    println!();
    println!(
        "## 2. Fresh-process CLI lookups: median of up to {runs} runs (fewer when they add up to \
         > 10 s), alternating between the stores, wall time and the child's peak RSS; targets at N: <= 20 ms, <= 1.5x the {SMALL_N} \
         store, <= 32 MiB"
    );
    println!(
        "| lookup | {SMALL_N} store | N = {} | N / {SMALL_N} | peak RSS {SMALL_N} | peak RSS N | runs |",
        cfg.n
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let commands: [(&str, &[&str]); 3] =
        [("has", &["has"]), ("stat", &["stat"]), ("get", &["get"])];
    for kind in Kind::ALL {
        for hit in [true, false] {
            for (name, args) in commands {
                let addrs = |ds: &[Digests]| ds.iter().map(|d| kind.address(d)).collect::<Vec<_>>();
                let want = if hit { 0 } else { 3 };
                let (a, b) = if hit {
                    (addrs(&hits_small), addrs(&hits_big))
                } else {
                    (addrs(&misses), addrs(&misses))
                };
                let [s, l] = lookup_cells(bin, [(small, &a), (big, &b)], args, want, runs);
                let label = format!(
                    "{name} {} {}",
                    kind.name(),
                    if hit { "hit" } else { "miss" }
                );
                match (s, l) {
                    (Ok((ss, sr, _)), Ok((ls, lr, n))) => println!(
                        "| {label} | {:.1} ms | {:.1} ms | {:.2}x | {} | {} | {n} |",
                        ss * 1e3,
                        ls * 1e3,
                        ls / ss,
                        mib(sr),
                        mib(lr)
                    ),
                    (s, l) => println!(
                        "| {label} | {} | {} | | | | |",
                        s.err().unwrap_or_default(),
                        l.err().unwrap_or_default()
                    ),
                }
            }
        }
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------------
// 3. serve

/// A keep-alive HTTP/1.1 client over one connection: just enough to GET and read a body by
/// `Content-Length` (or chunked).
struct Http {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: String,
    body: Vec<u8>,
}

impl Http {
    fn connect(addr: &str) -> std::io::Result<Http> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Http {
            writer: s.try_clone()?,
            reader: BufReader::with_capacity(64 * 1024, s),
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// GETs `path`; returns the status and the body's length.
    fn get(&mut self, path: &str) -> std::io::Result<(u16, usize)> {
        write!(
            self.writer,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )?;
        self.read_line()?;
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("status line {:?}", self.line)))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            self.read_line()?;
            let l = self.line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = Some(v.parse::<usize>().map_err(|e| bad(e.to_string()))?);
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.eq_ignore_ascii_case("chunked");
                }
            }
        }
        let mut total = 0;
        if chunked {
            loop {
                self.read_line()?;
                let size =
                    usize::from_str_radix(self.line.trim().split(';').next().unwrap_or(""), 16)
                        .map_err(|e| bad(format!("chunk size {:?}: {e}", self.line)))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    loop {
                        self.read_line()?;
                        if self.line.trim_end().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                self.read_body(size)?;
                total += size;
                self.read_line()?;
            }
        } else {
            let n = length.unwrap_or(0);
            self.read_body(n)?;
            total = n;
        }
        Ok((status, total))
    }

    fn read_line(&mut self) -> std::io::Result<()> {
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
            return Err(bad("connection closed".into()));
        }
        Ok(())
    }

    fn read_body(&mut self, n: usize) -> std::io::Result<()> {
        self.body.resize(n, 0);
        self.reader.read_exact(&mut self.body)
    }
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// `VmHWM` (peak RSS) of process `pid`, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn serve(bin: &Path, cfg: &Config, big: &Path) {
    eprintln!("serve…");
    // Two disjoint samples, one per digest, so that neither kind reads blobs the other has just
    // brought into the page cache.
    let ids = sample(cfg.n, 2 * cfg.lookups, 13);
    let digests = digests_of_all(&ids);
    let first = digests_of(sample(cfg.n, 1, 14)[0]);
    let spawned = Instant::now();
    let mut child = tarvault(bin, big)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tarvault serve");
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let _ = out.read_line(&mut line);
    let startup = spawned.elapsed();
    let result = line
        .trim()
        .strip_prefix("listening on http://")
        .map(str::to_string)
        .ok_or_else(|| format!("serve printed {line:?}"))
        .and_then(|addr| serve_lookups(&addr, &first, &digests).map_err(|e| e.to_string()));
    let hwm = vm_hwm_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    println!();
    println!(
        "## 3. serve on the N = {} store: first request (by sha1) in a fresh server, then {} random \
         GETs by each digest (different blobs for each, so neither reads what the other has just \
         brought into the page cache) over one keep-alive connection, in alternating blocks of \
         1000, each kind first in every other pair; \
         targets: first <= 50 ms, sha1 p99 <= 1 ms and <= 1.2x sha512 p99, RSS <= 64 MiB",
        cfg.n, cfg.lookups
    );
    match result {
        Err(e) => println!("serve failed: {e}"),
        Ok(r) => {
            println!("| measure | value |");
            println!("|---|---:|");
            println!(
                "| spawn to listening | {:.1} ms |",
                startup.as_secs_f64() * 1e3
            );
            println!(
                "| first request (connect + GET /sha1/…) | {:.1} ms |",
                r.first * 1e3
            );
            let (s1, s5) = (&r.sha1, &r.sha512);
            for (name, v) in [("sha1", s1), ("sha512", s5)] {
                println!("| GET /{name}/… p50 | {:.3} ms |", percentile(v, 0.5) * 1e3);
                println!(
                    "| GET /{name}/… p99 | {:.3} ms |",
                    percentile(v, 0.99) * 1e3
                );
            }
            println!(
                "| sha1 p99 / sha512 p99 | {:.2}x |",
                percentile(s1, 0.99) / percentile(s5, 0.99)
            );
            println!(
                "| server peak RSS (VmHWM) | {} |",
                hwm.map_or("?".to_string(), mib)
            );
        }
    }
}

struct ServeResult {
    first: f64,
    /// Sorted latencies, seconds.
    sha1: Vec<f64>,
    sha512: Vec<f64>,
}

fn serve_lookups(addr: &str, first: &Digests, digests: &[Digests]) -> std::io::Result<ServeResult> {
    let t = Instant::now();
    let mut http = Http::connect(addr)?;
    let (status, len) = http.get(&format!("/sha1/{}", first.shasum()))?;
    let first_secs = t.elapsed().as_secs_f64();
    check(status, len, first)?;
    let mut sha1 = Vec::with_capacity(digests.len());
    let mut sha512 = Vec::with_capacity(digests.len());
    for (i, block) in digests.chunks(2000).enumerate() {
        let (for_sha1, for_sha512) = block.split_at(block.len() / 2);
        let mut kinds = [
            (&mut sha1, true, for_sha1),
            (&mut sha512, false, for_sha512),
        ];
        if i % 2 == 1 {
            kinds.reverse();
        }
        for (lat, by_sha1, block) in kinds {
            for d in block {
                let path = if by_sha1 {
                    format!("/sha1/{}", d.shasum())
                } else {
                    format!("/sha512/{}", d.sha512_hex())
                };
                let t = Instant::now();
                let (status, len) = http.get(&path)?;
                lat.push(t.elapsed().as_secs_f64());
                check(status, len, d)?;
            }
        }
    }
    for v in [&mut sha1, &mut sha512] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    }
    Ok(ServeResult {
        first: first_secs,
        sha1,
        sha512,
    })
}

fn check(status: u16, len: usize, d: &Digests) -> std::io::Result<()> {
    if status != 200 || len as u64 != d.size {
        return Err(bad(format!(
            "GET of {} answered {status} with {len} bytes (want 200, {})",
            d.shasum(),
            d.size
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. ls, fsck, gc

fn walks(bin: &Path, cfg: &Config, big: &Path) {
    eprintln!("ls, fsck, gc…");
    let keep = cfg.dir.join("scale-keep.txt");
    let live = digests_of_all(&sample(cfg.n, 10, 15));
    let lines: Vec<String> = live
        .iter()
        .enumerate()
        .map(|(k, d)| if k % 2 == 0 { Kind::Sha512 } else { Kind::Sha1 }.address(d))
        .collect();
    std::fs::write(&keep, lines.join("\n") + "\n").expect("write keep file");
    let keep_arg = keep.to_string_lossy().to_string();
    let rows: [(&str, Vec<&str>, &str); 3] = [
        ("ls --json", vec!["ls", "--json"], "keys/s (target >= 100k)"),
        ("fsck --json", vec!["fsck", "--json"], "blobs/s"),
        (
            "gc --keep (10 live) --grace 0s, dry run",
            vec!["gc", "--keep", &keep_arg, "--grace", "0s"],
            "blobs/s",
        ),
    ];
    println!();
    println!(
        "## 4. Whole-store commands on N = {} (one run each); targets: ls >= 100k keys/s, fsck and \
         gc peak RSS <= 64 MiB",
        cfg.n
    );
    println!("| command | wall | rate | peak RSS |");
    println!("|---|---:|---:|---:|");
    for (label, args, unit) in rows {
        let run = run_measured(tarvault(bin, big).args(&args));
        if run.code != 0 {
            println!("| {label} | exit {} ({}) | | |", run.code, run.stderr);
            continue;
        }
        println!(
            "| {label} | {:.1} s | {:.0} {unit} | {} |",
            run.secs,
            cfg.n as f64 / run.secs,
            mib(run.maxrss_kib)
        );
    }
    let _ = std::fs::remove_file(&keep);
}

// ---------------------------------------------------------------------------------------------
// 5. Index size

/// Bytes of the files under `dir` (apparent, and allocated on disk).
fn dir_bytes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return total;
    };
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            let (a, b) = dir_bytes(&e.path());
            total.0 += a;
            total.1 += b;
        } else {
            total.0 += m.len();
            total.1 += m.blocks() * 512;
        }
    }
    total
}

/// What `DIR/index/` holds: apparent and allocated bytes, and its files (largest first).
struct IndexSize {
    bytes: u64,
    allocated: u64,
    files: Vec<(u64, String)>,
}

fn index_size(store: &Path) -> IndexSize {
    let index = store.join("index");
    let (bytes, allocated) = dir_bytes(&index);
    let mut files: Vec<(u64, String)> = std::fs::read_dir(&index)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let size = dir_bytes_or_len(&e.path());
                    (size, e.file_name().to_string_lossy().into_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort_unstable_by(|a, b| b.cmp(a));
    IndexSize {
        bytes,
        allocated,
        files,
    }
}

fn print_index_sizes(n: u64, sizes: &[(&str, IndexSize)]) {
    println!();
    println!("## 5. Index size at N = {n} (everything under index/); target <= 300 B/blob");
    println!("| when | bytes | bytes/blob | allocated | allocated/blob | files (bytes) |");
    println!("|---|---:|---:|---:|---:|---|");
    for (when, s) in sizes {
        let files: Vec<String> = s
            .files
            .iter()
            .map(|(size, name)| format!("{name} {size}"))
            .collect();
        println!(
            "| {when} | {} | {:.0} | {} | {:.0} | {} |",
            s.bytes,
            s.bytes as f64 / n as f64,
            s.allocated,
            s.allocated as f64 / n as f64,
            files.join(", ")
        );
    }
}

/// The apparent bytes of a file, or of everything under a directory.
fn dir_bytes_or_len(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => dir_bytes(path).0,
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// 6. The cost of the index

fn index_cost(rt: &tokio::runtime::Runtime, cfg: &Config) {
    let n = std::env::var("TARVAULT_SCALE_COST_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cfg.n / 10)
        .max(10_000);
    eprintln!("index cost: four stores of {n}…");
    // Index, log, log, index: a drift in the machine's load over the four builds hits both sides
    // alike. The stores are deleted only at the end, so no deletion's writeback lands in a build.
    let order = [false, true, true, false];
    #[derive(Default)]
    struct Side {
        builds: Vec<f64>,
        tenths: Vec<f64>,
        cpu: f64,
    }
    let mut sides: [Side; 2] = Default::default();
    let mut bytes = [0u64; 2];
    let mut roots = Vec::new();
    for (round, legacy) in order.into_iter().enumerate() {
        let side = if legacy { "log" } else { "index" };
        let root = cfg.dir.join(format!("cost-{side}-{n}-{round}"));
        remove_dir(&root);
        let marks = ingest(rt, &root, n, fs_options(legacy), false);
        let (first, last) = (marks[0], *marks.last().expect("marks"));
        let side = &mut sides[legacy as usize];
        side.builds.push(rate(&first, &last));
        side.cpu += last.own - first.own;
        let tenths = tenth_marks(n, &marks);
        side.tenths
            .extend(tenths.windows(2).map(|w| rate(&w[0], &w[1])));
        bytes[legacy as usize] = dir_bytes(&root.join("index")).0;
        roots.push(root);
    }
    for root in roots {
        remove_dir(&root);
    }
    println!();
    println!(
        "## 6. Cost of the index: ingest of {n} blobs into a fresh store, twice with each, in the \
         order index, log, log, index (same run, same options otherwise)"
    );
    println!(
        "| sha1/blake3 lookups via | blobs/s, each build | median of the tenths' blobs/s | vs \
         alias log | bench CPU us/blob | index bytes/blob |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let log_rate = median(sides[1].tenths.clone());
    for (side, label) in [(0, "index"), (1, "alias log (legacy)")] {
        let s = &sides[side];
        let each: Vec<String> = s.builds.iter().map(|r| format!("{r:.0}")).collect();
        let rate = median(s.tenths.clone());
        println!(
            "| {label} | {} | {rate:.0} | {:.2}x | {:.0} | {:.0} |",
            each.join(", "),
            rate / log_rate,
            1e6 * s.cpu / (n * s.builds.len() as u64) as f64,
            bytes[side] as f64 / n as f64
        );
    }
    println!(
        "(the median of the tenths of both builds of a side is the figure least moved by other work \
         on the machine: `syncfs` also flushes whatever else is written to the same filesystem)"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. The index alone

/// Runs the index-only part in a child process (this executable, `--index-only N DIR BATCH`), so
/// that its RSS is the index's alone; the child prints its own table.
fn index_only(cfg: &Config, n: u64) {
    eprintln!("index only: {n} records…");
    let exe = std::env::current_exe().expect("current exe");
    let status = Command::new(exe)
        .arg("--index-only")
        .arg(n.to_string())
        .arg(&cfg.dir)
        .arg(cfg.index_batch.to_string())
        .arg(cfg.lookups.to_string())
        .status()
        .expect("spawn index-only child");
    if !status.success() {
        println!("index-only part failed: {status}");
    }
}

fn index_only_child(args: &[String]) {
    let arg = |k: usize| args.get(k).cloned().unwrap_or_default();
    let n: u64 = arg(0).parse().expect("N");
    let dir = PathBuf::from(arg(1));
    let batch: usize = arg(2).parse().expect("batch");
    let lookups: usize = arg(3).parse().expect("lookups");
    index_only_impl::run(&dir, n, batch, lookups);
}

/// Record `i` of the index-only part: digests drawn from `i` (no content; the index never sees
/// any).
fn record(i: u64) -> Digests {
    let mut seed = i ^ 0x5ca1_ab1e_0000_0000;
    let mut fill = |out: &mut [u8]| {
        for c in out.chunks_mut(8) {
            c.copy_from_slice(&splitmix(&mut seed).to_le_bytes()[..c.len()]);
        }
    };
    let (mut sha512, mut sha1, mut blake3) = ([0u8; 64], [0u8; 20], [0u8; 32]);
    fill(&mut sha512);
    fill(&mut sha1);
    fill(&mut blake3);
    Digests::from_parts(&sha512, &sha1, &blake3, 4096 + i % 2048).expect("record")
}

/// Reads `VmRSS` and `VmHWM` of this process, in KiB.
fn own_rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The index alone, through its own API (`tarvault::backend::fs::FsIndex`).
mod index_only_impl {
    use std::path::Path;
    use std::time::Instant;

    use tarvault::backend::fs::FsIndex;
    use tarvault::backend::BlobKey;

    use super::{mib, own_rss_kib, percentile, record, sample};

    /// Warm lookups of `lookups` random records among the first `n`, by sha1 (a few by blake3
    /// and sha512 too, as a check); sorted latencies in seconds.
    fn warm_lookups(index: &FsIndex, n: u64, lookups: usize) -> Vec<f64> {
        let ids = sample(n, lookups, 21);
        let mut lat = Vec::with_capacity(ids.len());
        for &i in &ids {
            let d = record(i);
            let t = Instant::now();
            let key = index.key_by_sha1(&d.sha1).expect("key_by_sha1");
            lat.push(t.elapsed().as_secs_f64());
            assert_eq!(key, Some(BlobKey::new(d.sha512)), "record {i} by sha1");
        }
        for &i in ids.iter().take(100) {
            let d = record(i);
            let key = index.key_by_blake3(&d.blake3).expect("key_by_blake3");
            assert_eq!(key, Some(BlobKey::new(d.sha512)), "record {i} by blake3");
            let got = index.digests(&BlobKey::new(d.sha512)).expect("digests");
            assert_eq!(got, Some(d), "record {i} digests");
        }
        let miss = index.key_by_sha1(&[0xee; 20]).expect("miss");
        assert_eq!(miss, None);
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        lat
    }

    /// Opens an existing index (read alongside a writer, as any second process), and measures
    /// warm lookups among the records it holds.
    pub fn probe(path: &Path, lookups: usize) {
        let t = Instant::now();
        let index = FsIndex::open(path).expect("open index");
        let n = index.len().expect("len");
        let counted = t.elapsed();
        let lat = warm_lookups(&index, n, lookups);
        let (rss, hwm) = own_rss_kib();
        println!(
            "| {n} | {:.1} s | {:.1} us | {:.1} us | {:.1} us | {} | {} | {:.0} |",
            counted.as_secs_f64(),
            percentile(&lat, 0.5) * 1e6,
            percentile(&lat, 0.99) * 1e6,
            percentile(&lat, 1.0) * 1e6,
            mib(rss),
            mib(hwm),
            index.disk_bytes() as f64 / n.max(1) as f64,
        );
    }

    pub fn run(dir: &Path, n: u64, batch: usize, lookups: usize) {
        let path = dir.join(format!("index-only-{n}.sqlite"));
        let remove = || {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        };
        remove();
        let index = FsIndex::open(&path).expect("open index");
        let start = Instant::now();
        let cpu0 = super::cpu::self_cpu();
        let mut marks = vec![(0u64, 0.0f64, 0.0f64)];
        let mut next_tenth = 1u64;
        let mut done = 0u64;
        let mut added = 0u64;
        let mut records = Vec::with_capacity(batch);
        while done < n {
            let end = (done + batch as u64).min(n);
            records.clear();
            records.extend((done..end).map(record));
            added += index.insert(&records, true).expect("insert").added;
            done = end;
            while next_tenth <= 10 && done >= n * next_tenth / 10 {
                let secs = start.elapsed().as_secs_f64();
                eprintln!("index only: {done}/{n} after {secs:.0} s");
                marks.push((done, secs, super::cpu::self_cpu() - cpu0));
                next_tenth += 1;
            }
        }
        let len = index.len().expect("len");
        assert_eq!((added, len), (n, n), "every record added once");
        let disk = index.disk_bytes();
        let lat = warm_lookups(&index, n, lookups);
        let (rss, hwm) = own_rss_kib();

        println!();
        println!(
            "## 7. Index only (FsIndex, {n} records in inserts of {batch}, durable); targets: \
             sha1 p99 <= 1 ms, RSS <= 32 MiB, bytes/record <= 300"
        );
        println!("| records | inserts/s | CPU per record |");
        println!("|---|---:|---:|");
        for w in marks.windows(2) {
            let ((a, ta, ca), (b, tb, cb)) = (w[0], w[1]);
            println!(
                "| {a}-{b} | {:.0} | {:.1} us |",
                (b - a) as f64 / (tb - ta).max(1e-9),
                (cb - ca) * 1e6 / (b - a).max(1) as f64
            );
        }
        println!();
        println!("| measure | value |");
        println!("|---|---:|");
        println!("| records (len) | {len} |");
        println!(
            "| {} warm lookups by sha1, p50 | {:.1} us |",
            lat.len(),
            percentile(&lat, 0.5) * 1e6
        );
        println!("| by sha1, p99 | {:.1} us |", percentile(&lat, 0.99) * 1e6);
        println!("| RSS after the lookups | {} |", mib(rss));
        println!("| peak RSS (inserts included) | {} |", mib(hwm));
        println!("| disk bytes | {disk} |");
        println!("| bytes/record | {:.0} |", disk as f64 / len.max(1) as f64);
        drop(index);
        if std::env::var("TARVAULT_SCALE_KEEP").is_ok_and(|v| v == "1") {
            println!("kept {}", path.display());
        } else {
            remove();
        }
    }
}
