//! The index's write-ahead log stays bounded while other processes read it without pause.
//!
//! SQLite resets its WAL only when a writer begins after a checkpoint that copied every frame back
//! into the database, and a checkpoint cannot copy frames past the snapshot of any reader still
//! reading. With one `serve` per core answering lookups by sha1 and a migration putting blobs, a
//! reader is nearly always inside a lookup: if that starved every checkpoint, the `-wal` file would
//! grow with every blob put (see docs/index.md, "The WAL under constant reads").
//!
//! Every reader here is a real process (this test binary, run again as
//! [`wal_reader_child`]): one looks blobs up by sha1 in a tight loop, as a busy `serve` does; two
//! take turns holding a read snapshot for 150 ms, so that some reader is always inside one, which
//! is what a process per core answering lookups comes to (measured: docs/index.md). Lookups alone
//! starve the checkpoints only now and then (on this machine the WAL of 1,500 batches without the
//! forced checkpoint peaked at 50 MiB in one run and 66 in the next); the overlapping snapshots
//! starve every one, so the test tells the two builds apart every time.

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

/// A reader process: `hold` 0 looks up sha1s without pause; otherwise it holds a snapshot for
/// `hold` ms at a time, starting after `delay` ms.
fn spawn_reader(db: &Path, stop: &Path, hold: u64, delay: u64) -> Child {
    let exe = std::env::current_exe().expect("test binary");
    Command::new(exe)
        .args(["--exact", "wal_reader_child", "--nocapture"])
        .env(
            READER_CHILD,
            format!("{}|{}|{hold}|{delay}", db.display(), stop.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a reader")
}

/// Reader processes of `db` as [`spawn_reader`] makes them, one for each `(hold, delay)`, given
/// 300 ms to begin.
fn start_readers(db: &Path, stop: &Path, readers: &[(u64, u64)]) -> Vec<Child> {
    let started = readers
        .iter()
        .map(|&(hold, delay)| spawn_reader(db, stop, hold, delay))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    started
}

/// Stops the readers (the `stop` file), waits for each to succeed, and returns the lookups or
/// snapshots they made in all.
fn stop_readers(stop: &Path, readers: Vec<Child>) -> u64 {
    std::fs::write(stop, b"").expect("stop the readers");
    readers
        .into_iter()
        .map(|r| {
            let out = r.wait_with_output().expect("reader");
            assert!(out.status.success(), "a reader failed");
            let text = String::from_utf8_lossy(&out.stdout);
            text.lines()
                .find_map(|l| l.strip_prefix("wal-reader lookups: "))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("the reader did not say what it did: {text}"))
        })
        .sum()
}

/// Three reader processes (see the module docs) while this one commits 600 batches of 256
/// records (as `put_batch` does; ~500 MiB through the WAL). The `-wal` file must stay bounded:
/// the automatic checkpoint runs at 32 MiB and a writer forces one past 48 MiB (here it peaks at
/// 49-50 MiB), and where a forced one falls short (readers slowed past its wait on a loaded
/// machine) the next try comes once the WAL has doubled, so it stays under 128 MiB. Without the
/// forced checkpoint the WAL is never started over and grows with every batch (557 MiB).
#[test]
fn the_wal_stays_bounded_under_constant_readers_in_other_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("blobs.sqlite");
    let index = FsIndex::open(&db).expect("index");
    let mut rng = Lcg(7);
    let seed: Vec<Digests> = (0..2000).map(|_| record(&mut rng)).collect();
    index.insert(&seed, false).expect("seed");
    let stop = dir.path().join("stop");
    let readers = start_readers(&db, &stop, &[(0, 0), (150, 0), (150, 75)]);

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
    let lookups = stop_readers(&stop, readers);
    eprintln!(
        "{batches} batches in {:.1}s, peak wal {} KiB, {lookups} lookups by the readers",
        started.elapsed().as_secs_f64(),
        peak / 1024
    );
    assert!(lookups > 1000, "the readers hardly read: {lookups}");
    assert!(peak < 128 << 20, "the WAL grew to {} MiB", peak >> 20);
}

/// A cache tier's ledger, written by a fill after another while two reader processes take turns
/// holding a snapshot (the cache tiers of many `serve` processes read and write it at once): its
/// writer's forced checkpoints start the WAL over (the file shrinks each time: four times here,
/// peaking at 49 MiB), where without them it never shrank and reached 210 MiB over these 60,000
/// fills.
#[test]
fn the_cache_ledgers_wal_is_started_over_beside_readers_holding_snapshots() {
    use tarvault::backend::fs::FsCacheLedger;
    use tarvault::backend::ledger::CacheLedger;

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cache.sqlite");
    let ledger = FsCacheLedger::open(&db).expect("ledger");
    let stop = dir.path().join("stop");
    let readers = start_readers(&db, &stop, &[(150, 0), (150, 75)]);
    let mut rng = Lcg(11);
    let (mut peak, mut last, mut shrank) = (0, 0, 0);
    for i in 0..60_000u32 {
        let began = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let key = tarvault::backend::BlobKey::new(record(&mut rng).sha512);
        assert!(ledger.insert_fill(&key, 1000, began).expect("fill"));
        if i % 100 == 0 {
            let size = wal_bytes(&db);
            shrank += usize::from(size < last);
            (peak, last) = (peak.max(size), size);
        }
    }
    stop_readers(&stop, readers);
    eprintln!("peak WAL {} KiB, started over {shrank} times", peak >> 10);
    assert!(
        shrank >= 2,
        "started over {shrank} times, peak {} MiB",
        peak >> 20
    );
    assert!(peak < 128 << 20, "the WAL grew to {} MiB", peak >> 20);
}

/// The reader process of the tests above (does nothing unless [`READER_CHILD`] is set): looks up
/// random sha1s, and the seeded ones, until the stop file appears, then prints how many.
#[test]
fn wal_reader_child() {
    let Ok(spec) = std::env::var(READER_CHILD) else {
        return;
    };
    let [db, stop, hold, delay] = spec.split('|').collect::<Vec<_>>()[..] else {
        panic!("bad spec {spec:?}");
    };
    let (hold, delay) = (
        Duration::from_millis(hold.parse().expect("hold")),
        Duration::from_millis(delay.parse().expect("delay")),
    );
    let stop = Path::new(stop);
    // Stop also if the test's directory is gone (its process panicked and unwound), if the test's
    // process is gone (killed: this one is then another's child), or after five minutes: a reader
    // must never outlive its test.
    let dir = stop.parent().expect("the stop file's directory");
    let started = Instant::now();
    let parent = std::os::unix::process::parent_id();
    let done = || {
        stop.exists()
            || !dir.exists()
            || std::os::unix::process::parent_id() != parent
            || started.elapsed() > Duration::from_secs(300)
    };
    if !hold.is_zero() {
        std::thread::sleep(delay);
        let conn = rusqlite::Connection::open(db).expect("open the index");
        let mut n = 0u64;
        while !done() {
            conn.execute_batch("BEGIN").expect("begin");
            // The first read takes the snapshot, held until the COMMIT.
            let _: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .expect("read");
            std::thread::sleep(hold);
            conn.execute_batch("COMMIT").expect("end the read");
            n += 1;
        }
        println!("wal-reader lookups: {n}");
        return;
    }
    let index = FsIndex::open(db).expect("index");
    let mut rng = Lcg(std::process::id().into());
    let mut seeded = Lcg(7);
    let mut n = 0u64;
    while !(n.is_multiple_of(256) && done()) {
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
