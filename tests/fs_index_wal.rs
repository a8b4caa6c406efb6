//! The index's write-ahead log stays bounded while other processes read it without pause.
//!
//! SQLite resets its WAL only when a writer begins after a checkpoint that copied every frame back
//! into the database, and a checkpoint cannot copy frames past the snapshot of any reader still
//! reading. With one `serve` per core answering lookups by sha1 and a migration putting blobs, a
//! reader is nearly always inside a lookup: if that starved every checkpoint, the `-wal` file would
//! grow with every blob put (see docs/index.md, "The WAL under constant reads").
//!
//! Every reader here is a real process (this test binary, run again as
//! [`wal_reader_child`]), looking blobs up by sha1 in a tight loop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tarvault::backend::fs::FsIndex;
use tarvault::Digests;

/// Set in a child process: the index it reads, and the file whose existence tells it to stop.
const READER_CHILD: &str = "TARVAULT_WAL_READER_CHILD";

/// A small deterministic generator (no dependency, reproducible failures).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }

    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            *b = (self.next() >> 8) as u8;
        }
    }
}

/// A record with random digests (the index does not look at the blobs): every record dirties a
/// leaf page in each of the three digest indexes, as real puts do.
fn record(rng: &mut Lcg) -> Digests {
    let (mut sha512, mut sha1, mut blake3) = ([0; 64], [0; 20], [0; 32]);
    rng.fill(&mut sha512);
    rng.fill(&mut sha1);
    rng.fill(&mut blake3);
    Digests::from_parts(&sha512, &sha1, &blake3, rng.next() % 100_000).expect("digests")
}

fn wal_bytes(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(PathBuf::from(wal))
        .map(|m| m.len())
        .unwrap_or(0)
}

fn spawn_reader(db: &Path, stop: &Path) -> Child {
    let exe = std::env::current_exe().expect("test binary");
    Command::new(exe)
        .args(["--exact", "wal_reader_child", "--nocapture"])
        .env(READER_CHILD, format!("{}|{}", db.display(), stop.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a reader")
}

/// Three processes look records up by sha1 without pause while this one commits 600 batches of 256
/// records (as `put_batch` does; ~500 MiB through the WAL). The `-wal` file must stay under 56 MiB:
/// the automatic checkpoint runs at 32 MiB and a writer forces one past 48 MiB. Before the forced
/// checkpoint it reached 58-66 MiB within 300 batches (three runs), and 169 MiB in 3000.
#[test]
fn the_wal_stays_bounded_under_constant_readers_in_other_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("blobs.sqlite");
    let index = FsIndex::open(&db).expect("index");
    let mut rng = Lcg(7);
    let seed: Vec<Digests> = (0..2000).map(|_| record(&mut rng)).collect();
    index.insert(&seed, false).expect("seed");
    let stop = dir.path().join("stop");
    let mut readers: Vec<Child> = (0..3).map(|_| spawn_reader(&db, &stop)).collect();
    std::thread::sleep(Duration::from_millis(300));

    let batches: usize = std::env::var("WAL_TEST_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let started = Instant::now();
    let mut peak = 0;
    for n in 0..batches {
        let batch: Vec<Digests> = (0..256).map(|_| record(&mut rng)).collect();
        index.insert(&batch, false).expect("insert");
        let wal = wal_bytes(&db);
        peak = peak.max(wal);
        if n.is_multiple_of(20) {
            eprintln!(
                "batch {n} at {:.1}s: wal {} KiB, db {} KiB",
                started.elapsed().as_secs_f64(),
                wal / 1024,
                std::fs::metadata(&db).map(|m| m.len() / 1024).unwrap_or(0)
            );
        }
    }
    std::fs::write(&stop, b"").expect("stop the readers");
    let mut lookups = 0u64;
    for r in readers.drain(..) {
        let out = r.wait_with_output().expect("reader");
        assert!(out.status.success(), "a reader failed");
        let text = String::from_utf8_lossy(&out.stdout);
        lookups += text
            .lines()
            .find_map(|l| l.strip_prefix("wal-reader lookups: "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("the reader did not say what it did: {text}"));
    }
    eprintln!(
        "{batches} batches in {:.1}s, peak wal {} KiB, {lookups} lookups by the readers",
        started.elapsed().as_secs_f64(),
        peak / 1024
    );
    assert!(lookups > 1000, "the readers hardly read: {lookups}");
    assert!(peak < 56 << 20, "the WAL grew to {} MiB", peak >> 20);
}

/// The reader process of the test above (does nothing unless [`READER_CHILD`] is set): looks up
/// random sha1s, and the seeded ones, until the stop file appears, then prints how many.
#[test]
fn wal_reader_child() {
    let Ok(spec) = std::env::var(READER_CHILD) else {
        return;
    };
    let (db, stop) = spec.split_once('|').expect("spec");
    let index = FsIndex::open(db).expect("index");
    let stop = Path::new(stop);
    let mut rng = Lcg(std::process::id().into());
    let mut seeded = Lcg(7);
    let mut n = 0u64;
    while !(n.is_multiple_of(256) && stop.exists()) {
        let mut sha1 = [0; 20];
        if n.is_multiple_of(2) {
            sha1 = record(&mut seeded).sha1;
        } else {
            rng.fill(&mut sha1);
        }
        index.key_by_sha1(&sha1).expect("look up");
        n += 1;
    }
    println!("wal-reader lookups: {n}");
}
