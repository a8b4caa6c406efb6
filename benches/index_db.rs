//! Index database benchmark: which embedded database should hold the fs store's digest index
//! (sha512 -> sha1, blake3, size; sha1 -> sha512; blake3 -> sha512), shared by many processes at
//! once (one `serve` per core, CLI tools, migrations)?
//!
//! Engines and schemas, all measured in the same run (the machine is shared and noisy; compare
//! rows of one run, not runs):
//!
//! - `sqlite-a`: WAL, rowid table with full digests and three 8-byte expression indexes
//!   (`substr(x,1,8)`), lookups `WHERE substr(x,1,8)=?1 AND x=?2` (the plan is checked);
//! - `sqlite-b`: WAL, `WITHOUT ROWID` table keyed by sha512 plus full unique indexes on sha1 and
//!   blake3;
//! - `lmdb`: three LMDB databases in one env: sha512 -> sha1|blake3|size, sha1 -> sha512,
//!   blake3 -> sha512;
//! - `lmdb-compact`: the same, but sha1/blake3 map to the first 8 bytes of sha512, resolved by a
//!   prefix seek in the sha512 database (the record's sha1/blake3 is checked).
//!
//! For each N (default 10,000 and 1,000,000; `TARVAULT_BENCH_N=10000,1000000`):
//!
//! 1. insert rate, batches of 256 records per write transaction (existence check by sha512, then
//!    insert), without an fsync per commit (SQLite `synchronous=NORMAL`, LMDB `MDB_NOSYNC`) and
//!    with one (SQLite `synchronous=FULL`, LMDB default), overall and per decile of N;
//! 2. bytes on disk per record (allocated blocks; SQLite after `wal_checkpoint(TRUNCATE)`);
//! 3. fresh-process lookup: this binary re-executed (`--child lookup`), opening the index and
//!    doing one sha1 lookup; wall time and peak RSS (`wait4` rusage) over 20 spawns, with the
//!    files in the OS page cache and after evicting them (`posix_fadvise(DONTNEED)`);
//! 4. warm lookups in one fresh long-lived process: 100k random sha1 lookups (1% misses) then
//!    100k by sha512, p50/p99, and the process's RSS (VmHWM, VmRSS, RssFile, RssAnon) after them;
//! 5. a writer process committing batches while a reader process looks up: reader p50/p99/max
//!    and errors.
//!
//! Needs, besides the crate's own `blake3` and `libc`, these dev-dependencies:
//! `heed = { version = "0.23", default-features = false }` and (unless it is already a
//! non-optional dependency) `rusqlite = { version = "0.40.2", features = ["bundled"] }`.
//!
//! Run: `cargo bench --bench index_db` (env: `TARVAULT_BENCH_N`, `TARVAULT_BENCH_ENGINES`
//! (comma list), `TARVAULT_BENCH_SYNC=0` to skip the fsync'd builds, `TARVAULT_BENCH_DIR` for
//! the database files, default the system temp dir).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions};
use rusqlite::{params, Connection};

const BATCH: usize = 256;
const WARM_LOOKUPS: usize = 100_000;
const SPAWNS: usize = 20;
const CONCURRENT_SECS: f64 = 5.0;
/// Records written by the concurrent writer start here (never collides with 0..N).
const WRITER_BASE: u64 = 1 << 40;
/// Records looked up as misses (never inserted).
const MISS_BASE: u64 = 1 << 50;

type Res<T> = Result<T, String>;
/// What a sha512 lookup returns: sha1, blake3, size.
type Meta = ([u8; 20], [u8; 32], u64);

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------------------------
// Records

struct Rec {
    sha512: [u8; 64],
    sha1: [u8; 20],
    blake3: [u8; 32],
    size: u64,
}

/// Record `i`: digests are blake3-XOF output of the counter (random-looking, deterministic).
fn rec(i: u64) -> Rec {
    let mut h = blake3::Hasher::new();
    h.update(b"tarvault-index-bench");
    h.update(&i.to_le_bytes());
    let mut out = [0u8; 124];
    h.finalize_xof().fill(&mut out);
    let mut r = Rec {
        sha512: [0; 64],
        sha1: [0; 20],
        blake3: [0; 32],
        size: 0,
    };
    r.sha512.copy_from_slice(&out[..64]);
    r.sha1.copy_from_slice(&out[64..84]);
    r.blake3.copy_from_slice(&out[84..116]);
    let mut s = [0u8; 8];
    s.copy_from_slice(&out[116..124]);
    r.size = u64::from_le_bytes(s) % (16 << 20);
    r
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A record index in 0..n, or (1 in 100) one that was never inserted.
    fn key(&mut self, n: u64) -> (u64, bool) {
        let x = self.next();
        if x < u64::MAX / 100 {
            (MISS_BASE + (x >> 8) % n, false)
        } else {
            ((x >> 8) % n, true)
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Engines

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Engine {
    SqliteA,
    SqliteB,
    Lmdb,
    LmdbCompact,
}

impl Engine {
    const ALL: [Engine; 4] = [
        Engine::SqliteA,
        Engine::SqliteB,
        Engine::Lmdb,
        Engine::LmdbCompact,
    ];
    fn name(self) -> &'static str {
        match self {
            Engine::SqliteA => "sqlite-a",
            Engine::SqliteB => "sqlite-b",
            Engine::Lmdb => "lmdb",
            Engine::LmdbCompact => "lmdb-compact",
        }
    }
    fn parse(s: &str) -> Engine {
        Engine::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .unwrap_or_else(|| panic!("unknown engine {s}"))
    }
    fn is_sqlite(self) -> bool {
        matches!(self, Engine::SqliteA | Engine::SqliteB)
    }
}

/// How a process opens the index.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Create the schema; commit without fsync (SQLite NORMAL, LMDB NOSYNC).
    CreateNoSync,
    /// Create the schema; fsync every commit (SQLite FULL, LMDB default).
    CreateSync,
    /// Open an existing index with the settings a `serve` or CLI process would use (SQLite
    /// NORMAL, LMDB default sync).
    Open,
}

trait Index {
    /// Inserts the records that are not there yet, in one write transaction; returns how many.
    fn insert_batch(&mut self, recs: &[Rec]) -> Res<usize>;
    fn by_sha1(&mut self, sha1: &[u8; 20]) -> Res<Option<[u8; 64]>>;
    fn by_sha512(&mut self, sha512: &[u8; 64]) -> Res<Option<Meta>>;
    /// Flushes everything into the main file (SQLite: WAL checkpoint, LMDB: sync).
    fn checkpoint(&mut self) -> Res<()>;
}

fn open(engine: Engine, dir: &Path, mode: Mode) -> Res<Box<dyn Index>> {
    Ok(match engine {
        Engine::SqliteA | Engine::SqliteB => Box::new(Sqlite::open(engine, dir, mode)?),
        Engine::Lmdb | Engine::LmdbCompact => Box::new(Lmdb::open(engine, dir, mode)?),
    })
}

/// The files holding the index (for the size and for page-cache eviction).
fn index_files(engine: Engine, dir: &Path) -> Vec<PathBuf> {
    if engine.is_sqlite() {
        vec![dir.join("index.db"), dir.join("index.db-wal")]
    } else {
        vec![dir.join("data.mdb")]
    }
}

// --- SQLite

const SQLITE_A: &str = "
CREATE TABLE blobs(id INTEGER PRIMARY KEY, sha512 BLOB NOT NULL, sha1 BLOB NOT NULL,
                   blake3 BLOB NOT NULL, size INTEGER NOT NULL);
CREATE INDEX blobs_sha512 ON blobs(substr(sha512,1,8));
CREATE INDEX blobs_sha1 ON blobs(substr(sha1,1,8));
CREATE INDEX blobs_blake3 ON blobs(substr(blake3,1,8));";

const SQLITE_B: &str = "
CREATE TABLE blobs(sha512 BLOB PRIMARY KEY, sha1 BLOB NOT NULL, blake3 BLOB NOT NULL,
                   size INTEGER NOT NULL) WITHOUT ROWID;
CREATE UNIQUE INDEX blobs_sha1 ON blobs(sha1);
CREATE UNIQUE INDEX blobs_blake3 ON blobs(blake3);";

struct Sql {
    exists: &'static str,
    insert: &'static str,
    by_sha1: &'static str,
    by_sha512: &'static str,
}

const SQL_A: Sql = Sql {
    exists: "SELECT 1 FROM blobs WHERE substr(sha512,1,8)=?1 AND sha512=?2",
    insert: "INSERT INTO blobs(sha512, sha1, blake3, size) VALUES (?1, ?2, ?3, ?4)",
    by_sha1: "SELECT sha512 FROM blobs WHERE substr(sha1,1,8)=?1 AND sha1=?2",
    by_sha512: "SELECT sha1, blake3, size FROM blobs WHERE substr(sha512,1,8)=?1 AND sha512=?2",
};

const SQL_B: Sql = Sql {
    exists: "SELECT 1 FROM blobs WHERE sha512=?2 AND ?1=?1",
    insert: "INSERT INTO blobs(sha512, sha1, blake3, size) VALUES (?1, ?2, ?3, ?4)",
    by_sha1: "SELECT sha512 FROM blobs WHERE sha1=?2 AND ?1=?1",
    by_sha512: "SELECT sha1, blake3, size FROM blobs WHERE sha512=?2 AND ?1=?1",
};

struct Sqlite {
    conn: Connection,
    sql: &'static Sql,
}

impl Sqlite {
    fn open(engine: Engine, dir: &Path, mode: Mode) -> Res<Sqlite> {
        let conn = Connection::open(dir.join("index.db")).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        let sync = if mode == Mode::CreateSync {
            "FULL"
        } else {
            "NORMAL"
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous={sync}; PRAGMA cache_size=-2048;"
        ))
        .map_err(err)?;
        if mode != Mode::Open {
            let jm: String = conn
                .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                .map_err(err)?;
            assert_eq!(jm, "wal");
            conn.execute_batch(if engine == Engine::SqliteA {
                SQLITE_A
            } else {
                SQLITE_B
            })
            .map_err(err)?;
        }
        let sql = if engine == Engine::SqliteA {
            &SQL_A
        } else {
            &SQL_B
        };
        Ok(Sqlite { conn, sql })
    }

    /// `EXPLAIN QUERY PLAN` of the lookups, one line each.
    fn plans(&self) -> Res<Vec<String>> {
        let mut out = Vec::new();
        for q in [self.sql.exists, self.sql.by_sha1, self.sql.by_sha512] {
            let mut st = self
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {q}"))
                .map_err(err)?;
            let rows = st
                .query_map(params![&[0u8; 8][..], &[0u8; 20][..]], |r| {
                    r.get::<_, String>(3)
                })
                .map_err(err)?;
            let details: Vec<String> = rows.collect::<Result<_, _>>().map_err(err)?;
            out.push(details.join("; "));
        }
        Ok(out)
    }
}

impl Index for Sqlite {
    fn insert_batch(&mut self, recs: &[Rec]) -> Res<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut added = 0;
        {
            let mut exists = tx.prepare_cached(self.sql.exists).map_err(err)?;
            let mut insert = tx.prepare_cached(self.sql.insert).map_err(err)?;
            for r in recs {
                if exists
                    .exists(params![&r.sha512[..8], &r.sha512[..]])
                    .map_err(err)?
                {
                    continue;
                }
                insert
                    .execute(params![
                        &r.sha512[..],
                        &r.sha1[..],
                        &r.blake3[..],
                        r.size as i64
                    ])
                    .map_err(err)?;
                added += 1;
            }
        }
        tx.commit().map_err(err)?;
        Ok(added)
    }

    fn by_sha1(&mut self, sha1: &[u8; 20]) -> Res<Option<[u8; 64]>> {
        let mut st = self.conn.prepare_cached(self.sql.by_sha1).map_err(err)?;
        let mut rows = st.query(params![&sha1[..8], &sha1[..]]).map_err(err)?;
        match rows.next().map_err(err)? {
            Some(row) => {
                let b = row.get_ref(0).map_err(err)?.as_blob().map_err(err)?;
                let mut out = [0u8; 64];
                out.copy_from_slice(b);
                Ok(Some(out))
            }
            None => Ok(None),
        }
    }

    fn by_sha512(&mut self, sha512: &[u8; 64]) -> Res<Option<Meta>> {
        let mut st = self.conn.prepare_cached(self.sql.by_sha512).map_err(err)?;
        let mut rows = st.query(params![&sha512[..8], &sha512[..]]).map_err(err)?;
        match rows.next().map_err(err)? {
            Some(row) => {
                let mut sha1 = [0u8; 20];
                let mut b3 = [0u8; 32];
                sha1.copy_from_slice(row.get_ref(0).map_err(err)?.as_blob().map_err(err)?);
                b3.copy_from_slice(row.get_ref(1).map_err(err)?.as_blob().map_err(err)?);
                let size: i64 = row.get(2).map_err(err)?;
                Ok(Some((sha1, b3, size as u64)))
            }
            None => Ok(None),
        }
    }

    fn checkpoint(&mut self) -> Res<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(err)
    }
}

// --- LMDB

type Db = Database<'static, Bytes, Bytes>;

struct Lmdb {
    env: Env,
    /// sha512 -> sha1 | blake3 | size (u64 LE)
    main: Db,
    /// sha1 -> sha512 (or its first 8 bytes when compact)
    sha1: Db,
    /// blake3 -> sha512 (or its first 8 bytes when compact)
    blake3: Db,
    compact: bool,
}

impl Lmdb {
    fn open(engine: Engine, dir: &Path, mode: Mode) -> Res<Lmdb> {
        let mut opts = EnvOpenOptions::new();
        opts.map_size(64 << 30).max_dbs(4);
        if mode == Mode::CreateNoSync {
            // SAFETY: NO_SYNC only gives up durability of the last commits on a system crash.
            unsafe {
                opts.flags(EnvFlags::NO_SYNC);
            }
        }
        // SAFETY: the files are only used through LMDB, by this benchmark's processes.
        let env = unsafe { opts.open(dir) }.map_err(err)?;
        let names = [Some("sha512"), Some("sha1"), Some("blake3")];
        let dbs: [Db; 3] = if mode == Mode::Open {
            let rtxn = env.read_txn().map_err(err)?;
            let opened = env
                .open_databases_and_commit(rtxn, |o, t| -> heed::Result<_> {
                    let mut v = [None, None, None];
                    for (slot, name) in v.iter_mut().zip(names) {
                        *slot = o.open_database::<Bytes, Bytes>(t, name)?;
                    }
                    Ok(CommitOrAbort::<_, ()>::Commit(v))
                })
                .map_err(err)?
                .unwrap_commit();
            let [Some(a), Some(b), Some(c)] = opened else {
                return Err("missing database".into());
            };
            [a, b, c]
        } else {
            let wtxn = env.write_txn().map_err(err)?;
            env.create_databases_and_commit(wtxn, |o, t| -> heed::Result<_> {
                let a = o.create_database::<Bytes, Bytes>(t, names[0])?;
                let b = o.create_database::<Bytes, Bytes>(t, names[1])?;
                let c = o.create_database::<Bytes, Bytes>(t, names[2])?;
                Ok(CommitOrAbort::<_, ()>::Commit([a, b, c]))
            })
            .map_err(err)?
            .unwrap_commit()
        };
        let [main, sha1, blake3] = dbs;
        Ok(Lmdb {
            env,
            main,
            sha1,
            blake3,
            compact: engine == Engine::LmdbCompact,
        })
    }

    /// The sha512 key named by a secondary index value (full, or an 8-byte prefix checked
    /// against the record's digest at `at` in the main value).
    fn resolve(
        &self,
        txn: &heed::RoTxn,
        target: &[u8],
        at: std::ops::Range<usize>,
        digest: &[u8],
    ) -> Res<Option<[u8; 64]>> {
        let mut out = [0u8; 64];
        if !self.compact {
            out.copy_from_slice(target);
            return Ok(Some(out));
        }
        for item in self.main.prefix_iter(txn, target).map_err(err)? {
            let (k, v) = item.map_err(err)?;
            if &v[at.clone()] == digest {
                out.copy_from_slice(k);
                return Ok(Some(out));
            }
        }
        Ok(None)
    }
}

impl Index for Lmdb {
    fn insert_batch(&mut self, recs: &[Rec]) -> Res<usize> {
        let mut wtxn = self.env.write_txn().map_err(err)?;
        let mut added = 0;
        let mut val = [0u8; 60];
        for r in recs {
            if self.main.get(&wtxn, &r.sha512).map_err(err)?.is_some() {
                continue;
            }
            val[..20].copy_from_slice(&r.sha1);
            val[20..52].copy_from_slice(&r.blake3);
            val[52..].copy_from_slice(&r.size.to_le_bytes());
            self.main.put(&mut wtxn, &r.sha512, &val).map_err(err)?;
            let target = if self.compact {
                &r.sha512[..8]
            } else {
                &r.sha512[..]
            };
            self.sha1.put(&mut wtxn, &r.sha1, target).map_err(err)?;
            self.blake3.put(&mut wtxn, &r.blake3, target).map_err(err)?;
            added += 1;
        }
        wtxn.commit().map_err(err)?;
        Ok(added)
    }

    fn by_sha1(&mut self, sha1: &[u8; 20]) -> Res<Option<[u8; 64]>> {
        let txn = self.env.read_txn().map_err(err)?;
        match self.sha1.get(&txn, sha1).map_err(err)? {
            Some(t) => self.resolve(&txn, t, 0..20, sha1),
            None => Ok(None),
        }
    }

    fn by_sha512(&mut self, sha512: &[u8; 64]) -> Res<Option<Meta>> {
        let txn = self.env.read_txn().map_err(err)?;
        Ok(self.main.get(&txn, sha512).map_err(err)?.map(|v| {
            let mut sha1 = [0u8; 20];
            let mut b3 = [0u8; 32];
            let mut size = [0u8; 8];
            sha1.copy_from_slice(&v[..20]);
            b3.copy_from_slice(&v[20..52]);
            size.copy_from_slice(&v[52..60]);
            (sha1, b3, u64::from_le_bytes(size))
        }))
    }

    fn checkpoint(&mut self) -> Res<()> {
        self.env.force_sync().map_err(err)
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements in this process or a child

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// VmHWM, VmRSS, RssFile, RssAnon of this process, in KiB.
fn proc_status() -> [u64; 4] {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mut out = [0u64; 4];
    for line in s.lines() {
        let mut parts = line.split_whitespace();
        let key = parts.next().unwrap_or("");
        let v: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match key {
            "VmHWM:" => out[0] = v,
            "VmRSS:" => out[1] = v,
            "RssFile:" => out[2] = v,
            "RssAnon:" => out[3] = v,
            _ => {}
        }
    }
    out
}

fn status_kv(prefix: &str) -> String {
    let [hwm, rss, file, anon] = proc_status();
    format!("{prefix}_hwm={hwm} {prefix}_rss={rss} {prefix}_file={file} {prefix}_anon={anon}")
}

struct Build {
    secs: f64,
    deciles: Vec<f64>,
}

/// Inserts records 0..n in batches; returns the overall time and the rate of each tenth.
fn build(idx: &mut dyn Index, n: u64) -> Build {
    let mut deciles = Vec::new();
    let start = Instant::now();
    let mut decile_start = start;
    let mut next_decile = 1;
    let mut i = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    while i < n {
        batch.clear();
        let end = (i + BATCH as u64).min(n);
        batch.extend((i..end).map(rec));
        let added = idx.insert_batch(&batch).expect("insert batch");
        assert_eq!(added, batch.len(), "records are new");
        i = end;
        while next_decile <= 10 && i >= n * next_decile / 10 {
            let now = Instant::now();
            let recs = (n * next_decile / 10 - n * (next_decile - 1) / 10) as f64;
            deciles.push(recs / (now - decile_start).as_secs_f64());
            eprintln!(
                "    {}/10 of {n}: {:.0} rec/s",
                next_decile,
                deciles[deciles.len() - 1]
            );
            decile_start = now;
            next_decile += 1;
        }
    }
    Build {
        secs: start.elapsed().as_secs_f64(),
        deciles,
    }
}

/// Child: open the index, one sha1 lookup (must hit), exit.
fn child_lookup(engine: Engine, dir: &Path, sha1_hex: &str) {
    let t = Instant::now();
    let mut idx = open(engine, dir, Mode::Open).expect("open");
    let opened = t.elapsed();
    let mut sha1 = [0u8; 20];
    sha1.copy_from_slice(&unhex(sha1_hex));
    let found = idx.by_sha1(&sha1).expect("lookup");
    assert!(found.is_some(), "lookup hit");
    let total = t.elapsed();
    let [hwm, _, file, anon] = proc_status();
    println!(
        "open_us={} total_us={} hwm={hwm} file={file} anon={anon}",
        opened.as_micros(),
        total.as_micros()
    );
}

/// Child: 100k random sha1 lookups then 100k by sha512, latencies and RSS after each.
fn child_warm(engine: Engine, dir: &Path, n: u64) {
    let base = status_kv("base");
    let mut idx = open(engine, dir, Mode::Open).expect("open");
    let opened = status_kv("open");
    let mut rng = SplitMix(0x5eed_0001);
    let mut lat = Vec::with_capacity(WARM_LOOKUPS);
    for _ in 0..WARM_LOOKUPS {
        let (k, hit) = rng.key(n);
        let r = rec(k);
        let t = Instant::now();
        let got = idx.by_sha1(&r.sha1).expect("sha1 lookup");
        lat.push(t.elapsed().as_nanos() as u64);
        assert_eq!(got.is_some(), hit);
        if let Some(s) = got {
            assert!(s == r.sha512);
        }
    }
    lat.sort_unstable();
    let sha1 = format!(
        "sha1_p50={} sha1_p99={}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    let after_sha1 = status_kv("sha1");
    lat.clear();
    for _ in 0..WARM_LOOKUPS {
        let (k, hit) = rng.key(n);
        let r = rec(k);
        let t = Instant::now();
        let got = idx.by_sha512(&r.sha512).expect("sha512 lookup");
        lat.push(t.elapsed().as_nanos() as u64);
        assert_eq!(got.is_some(), hit);
        if let Some((s1, b3, size)) = got {
            assert!(s1 == r.sha1 && b3 == r.blake3 && size == r.size);
        }
    }
    lat.sort_unstable();
    println!(
        "{base} {opened} {sha1} {after_sha1} sha512_p50={} sha512_p99={} {}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        status_kv("sha512")
    );
}

/// Child: commit batches of new records for `secs` seconds.
fn child_writer(engine: Engine, dir: &Path, secs: f64) {
    let mut idx = open(engine, dir, Mode::Open).expect("open");
    let start = Instant::now();
    let mut i = WRITER_BASE;
    let mut errors = 0u64;
    let mut batches = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    while start.elapsed().as_secs_f64() < secs {
        batch.clear();
        batch.extend((i..i + BATCH as u64).map(rec));
        match idx.insert_batch(&batch) {
            Ok(_) => {
                i += BATCH as u64;
                batches += 1;
            }
            Err(e) => {
                errors += 1;
                eprintln!("writer: {e}");
            }
        }
    }
    println!(
        "written={} batches={batches} writer_errors={errors} writer_secs={}",
        i - WRITER_BASE,
        start.elapsed().as_secs_f64()
    );
}

/// Child: random sha1 lookups for `secs` seconds (while a writer runs).
fn child_reader(engine: Engine, dir: &Path, n: u64, secs: f64) {
    let mut idx = open(engine, dir, Mode::Open).expect("open");
    let mut rng = SplitMix(0x5eed_0002);
    let mut lat = Vec::new();
    let mut errors = 0u64;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let (k, hit) = rng.key(n);
        let r = rec(k);
        let t = Instant::now();
        match idx.by_sha1(&r.sha1) {
            Ok(got) => {
                lat.push(t.elapsed().as_nanos() as u64);
                assert_eq!(got.is_some(), hit);
            }
            Err(e) => {
                errors += 1;
                eprintln!("reader: {e}");
            }
        }
    }
    let slow = lat.iter().filter(|&&l| l > 1_000_000).count();
    lat.sort_unstable();
    println!(
        "lookups={} r_over_1ms={slow} reader_errors={errors} r_p50={} r_p99={} r_p999={} r_max={} {}",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        lat.last().copied().unwrap_or(0),
        status_kv("reader")
    );
}

/// Child: create an index and insert records 0..n (no fsync per commit unless `sync`), so that
/// the parent stays small (a spawned child's `ru_maxrss` starts from its parent's peak RSS).
fn child_build(engine: Engine, dir: &Path, n: u64, sync: bool, show_plans: bool) {
    let mode = if sync {
        Mode::CreateSync
    } else {
        Mode::CreateNoSync
    };
    let mut idx = open(engine, dir, mode).expect("create");
    if engine.is_sqlite() {
        let sql = Sqlite::open(engine, dir, Mode::Open).expect("open");
        for (q, plan) in ["exists", "by_sha1", "by_sha512"]
            .iter()
            .zip(sql.plans().expect("plans"))
        {
            let indexed = plan.starts_with("SEARCH") && !plan.contains("SCAN");
            if show_plans || !indexed {
                eprintln!("  {} plan {q}: {plan}", engine.name());
            }
            assert!(indexed, "{q} searches an index: {plan}");
        }
    }
    let b = build(idx.as_mut(), n);
    idx.checkpoint().expect("checkpoint");
    let d: Vec<String> = b
        .deciles
        .iter()
        .enumerate()
        .map(|(i, x)| format!("d{i}={x}"))
        .collect();
    println!("secs={} {} {}", b.secs, d.join(" "), status_kv("build"));
}

fn child_main(args: &[String]) {
    let engine = || Engine::parse(&args[1]);
    let dir = || PathBuf::from(&args[2]);
    let num = |i: usize| -> f64 { args[i].parse().expect("number") };
    match args[0].as_str() {
        "noop" => println!("open_us=0 total_us=0"),
        "build" => child_build(
            engine(),
            &dir(),
            num(3) as u64,
            num(4) != 0.0,
            num(5) != 0.0,
        ),
        "lookup" => child_lookup(engine(), &dir(), &args[3]),
        "warm" => child_warm(engine(), &dir(), num(3) as u64),
        "writer" => child_writer(engine(), &dir(), num(3)),
        "reader" => child_reader(engine(), &dir(), num(3) as u64, num(4)),
        other => panic!("unknown child mode {other}"),
    }
}

struct ChildOut {
    wall: Duration,
    /// User + system CPU time of the child.
    cpu_secs: f64,
    maxrss_kib: u64,
    kv: HashMap<String, f64>,
}

fn spawn(args: &[String]) -> std::process::Child {
    let exe = std::env::current_exe().expect("current exe");
    Command::new(exe)
        .arg("--child")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child")
}

/// Waits for a child with `wait4`, returning its wall time since `start`, peak RSS and output.
fn reap(mut child: std::process::Child, start: Instant) -> ChildOut {
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our own unreaped child.
    let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    let wall = start.elapsed();
    assert!(r > 0, "wait4: {}", std::io::Error::last_os_error());
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out).expect("child output");
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: {out}"
    );
    let kv = out
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    ChildOut {
        wall,
        cpu_secs: tv(ru.ru_utime) + tv(ru.ru_stime),
        maxrss_kib: ru.ru_maxrss as u64,
        kv,
    }
}

fn run_child(args: &[String]) -> ChildOut {
    let start = Instant::now();
    reap(spawn(args), start)
}

/// Writes back and drops the files' pages from the page cache.
fn evict(files: &[PathBuf]) {
    for f in files {
        if let Ok(file) = std::fs::File::open(f) {
            let _ = file.sync_all();
            use std::os::fd::AsRawFd;
            // SAFETY: a valid fd; advice only.
            unsafe {
                libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
            }
        }
    }
}

/// Reads the files once so that they are in the page cache (not in any process's RSS).
fn warm_page_cache(files: &[PathBuf]) {
    for f in files {
        if let Ok(mut file) = std::fs::File::open(f) {
            let _ = std::io::copy(&mut file, &mut std::io::sink());
        }
    }
}

fn disk_bytes(files: &[PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// The run

#[derive(Default)]
struct Row {
    engine: &'static str,
    n: u64,
    nosync: f64,
    nosync_deciles: Vec<f64>,
    sync: Option<f64>,
    /// Records per CPU-second of the building process (robust to a busy machine).
    nosync_cpu: f64,
    sync_cpu: f64,
    bytes_per_rec: f64,
    fresh_ms: f64,
    fresh_cold_ms: f64,
    fresh_rss_kib: f64,
    fresh_cold_rss_kib: f64,
    fresh_open_us: f64,
    fresh_total_us: f64,
    fresh_hwm_kib: f64,
    fresh_file_kib: f64,
    warm: HashMap<String, f64>,
    conc: HashMap<String, f64>,
}

/// The first N of the run (query plans are printed once, for it).
fn ns_first() -> u64 {
    bench_ns()[0]
}

fn bench_ns() -> Vec<u64> {
    env_list("TARVAULT_BENCH_N", "10000,1000000")
        .iter()
        .map(|s| s.replace('_', "").parse().expect("TARVAULT_BENCH_N"))
        .collect()
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn measure(engine: Engine, n: u64, work: &Path, with_sync: bool) -> Row {
    let mut row = Row {
        engine: engine.name(),
        n,
        ..Row::default()
    };
    let dir = work.join(format!("{}-{n}", engine.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");

    // 1. Insert, no fsync per commit; this index is kept for the other measurements.
    let dir_s = dir.display().to_string();
    let build = |d: &str, sync: bool| {
        let o = run_child(&[
            "build".into(),
            engine.name().into(),
            d.into(),
            n.to_string(),
            u8::from(sync).to_string(),
            u8::from(n == ns_first() && !sync).to_string(),
        ]);
        let deciles = (0..10).map(|i| o.kv[&format!("d{i}")]).collect::<Vec<_>>();
        (n as f64 / o.kv["secs"], deciles, n as f64 / o.cpu_secs)
    };
    (row.nosync, row.nosync_deciles, row.nosync_cpu) = build(&dir_s, false);
    // 2. Size.
    let files = index_files(engine, &dir);
    row.bytes_per_rec = disk_bytes(&files) as f64 / n as f64;

    // 1b. Insert with an fsync per commit, into a scratch index.
    if with_sync {
        let sdir = work.join(format!("{}-{n}-sync", engine.name()));
        let _ = std::fs::remove_dir_all(&sdir);
        std::fs::create_dir_all(&sdir).expect("mkdir");
        let (rate, _, cpu) = build(&sdir.display().to_string(), true);
        row.sync = Some(rate);
        row.sync_cpu = cpu;
        let _ = std::fs::remove_dir_all(&sdir);
    }

    // 3. Fresh-process single lookup, page cache warm then evicted.
    let mut rng = SplitMix(0x5eed_0003);
    for cold in [true, false] {
        if !cold {
            warm_page_cache(&files);
        }
        let (mut wall, mut rss, mut open_us) = (Vec::new(), Vec::new(), Vec::new());
        let (mut total_us, mut hwm, mut file) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..SPAWNS {
            let r = rec(rng.next() % n);
            if cold {
                evict(&files);
            }
            let o = run_child(&[
                "lookup".into(),
                engine.name().into(),
                dir_s.clone(),
                hex(&r.sha1),
            ]);
            wall.push(o.wall.as_secs_f64() * 1e3);
            rss.push(o.maxrss_kib as f64);
            open_us.push(o.kv.get("open_us").copied().unwrap_or(f64::NAN));
            total_us.push(o.kv.get("total_us").copied().unwrap_or(f64::NAN));
            hwm.push(o.kv.get("hwm").copied().unwrap_or(f64::NAN));
            file.push(o.kv.get("file").copied().unwrap_or(f64::NAN));
        }
        if cold {
            row.fresh_cold_ms = median(wall);
            row.fresh_cold_rss_kib = median(rss);
        } else {
            row.fresh_ms = median(wall);
            row.fresh_rss_kib = median(rss);
            row.fresh_open_us = median(open_us);
            row.fresh_total_us = median(total_us);
            row.fresh_hwm_kib = median(hwm);
            row.fresh_file_kib = median(file);
        }
    }

    // 4. Warm lookups in a fresh long-lived process (the files in the page cache).
    warm_page_cache(&files);
    let o = run_child(&[
        "warm".into(),
        engine.name().into(),
        dir_s.clone(),
        n.to_string(),
    ]);
    row.warm = o.kv;
    row.warm.insert("maxrss".into(), o.maxrss_kib as f64);

    // 5. A writer process and a reader process at once.
    let start = Instant::now();
    let writer = spawn(&[
        "writer".into(),
        engine.name().into(),
        dir_s.clone(),
        CONCURRENT_SECS.to_string(),
    ]);
    let reader = spawn(&[
        "reader".into(),
        engine.name().into(),
        dir_s.clone(),
        n.to_string(),
        CONCURRENT_SECS.to_string(),
    ]);
    let r = reap(reader, start);
    let w = reap(writer, start);
    row.conc = r.kv;
    row.conc.extend(w.kv);

    let _ = std::fs::remove_dir_all(&dir);
    row
}

fn kib_mib(k: f64) -> String {
    format!("{:.1}", k / 1024.0)
}

fn us(ns: Option<&f64>) -> String {
    ns.map_or("-".into(), |v| format!("{:.1}", v / 1e3))
}

fn print_rows(rows: &[Row], noop: &ChildOut) {
    println!();
    println!(
        "Baseline: spawning this binary doing nothing: {:.2} ms, peak RSS {} MiB",
        noop.wall.as_secs_f64() * 1e3,
        kib_mib(noop.maxrss_kib as f64)
    );
    println!();
    println!(
        "| engine | N | insert rec/s nosync | insert rec/s fsync | bytes/rec | fresh lookup ms (cached / evicted) | fresh peak RSS MiB (cached / evicted) | warm sha1 p50/p99 µs | warm sha512 p50/p99 µs | RSS after 100k sha1 MiB (file / anon) | peak RSS after 100k+100k MiB | reader p50/p99/max µs while writing (writer rec/s, errors) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let w = &r.warm;
        let g = |k: &str| w.get(k).copied().unwrap_or(f64::NAN);
        let c = |k: &str| r.conc.get(k).copied().unwrap_or(f64::NAN);
        println!(
            "| {} | {} | {:.0} | {} | {:.0} | {:.1} / {:.1} | {} / {} | {} / {} | {} / {} | {} ({} / {}) | {} | {} / {} / {} ({:.0}, {}) |",
            r.engine,
            r.n,
            r.nosync,
            r.sync.map_or("-".into(), |s| format!("{s:.0}")),
            r.bytes_per_rec,
            r.fresh_ms,
            r.fresh_cold_ms,
            kib_mib(r.fresh_rss_kib),
            kib_mib(r.fresh_cold_rss_kib),
            us(w.get("sha1_p50")),
            us(w.get("sha1_p99")),
            us(w.get("sha512_p50")),
            us(w.get("sha512_p99")),
            kib_mib(g("sha1_rss")),
            kib_mib(g("sha1_file")),
            kib_mib(g("sha1_anon")),
            kib_mib(g("sha512_hwm")),
            us(r.conc.get("r_p50")),
            us(r.conc.get("r_p99")),
            us(r.conc.get("r_max")),
            c("written") / c("writer_secs"),
            c("reader_errors") + c("writer_errors"),
        );
    }
    println!();
    println!("Insert rate per tenth of N (rec/s, no fsync); records per CPU-second of the builder (no fsync / fsync):");
    for r in rows {
        let sync_cpu = r.sync.map_or("-".into(), |_| format!("{:.0}", r.sync_cpu));
        println!(
            "  {} N={}: {:.0} / {sync_cpu} rec per CPU-s",
            r.engine, r.n, r.nosync_cpu
        );
        let d: Vec<String> = r.nosync_deciles.iter().map(|x| format!("{x:.0}")).collect();
        println!("  {} N={}: {}", r.engine, r.n, d.join(" "));
    }
    println!();
    println!("RSS detail (MiB, rss/file/anon): before open | after open | after 100k sha1 | after +100k sha512; fresh open µs (median)");
    for r in rows {
        let g = |p: &str| {
            let v = |k: &str| r.warm.get(&format!("{p}_{k}")).copied().unwrap_or(f64::NAN);
            format!(
                "{}/{}/{}",
                kib_mib(v("rss")),
                kib_mib(v("file")),
                kib_mib(v("anon"))
            )
        };
        println!(
            "  {} N={}: {} | {} | {} | {}; fresh child: open {:.0} µs, open+lookup {:.0} µs, VmHWM {} MiB (RssFile {}); reader while writing: {:.0} lookups, {:.0} over 1 ms",
            r.engine,
            r.n,
            g("base"),
            g("open"),
            g("sha1"),
            g("sha512"),
            r.fresh_open_us,
            r.fresh_total_us,
            kib_mib(r.fresh_hwm_kib),
            kib_mib(r.fresh_file_kib),
            r.conc.get("lookups").copied().unwrap_or(f64::NAN),
            r.conc.get("r_over_1ms").copied().unwrap_or(f64::NAN)
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child_main(&args[2..]);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let ns = bench_ns();
    let engines: Vec<Engine> = env_list(
        "TARVAULT_BENCH_ENGINES",
        "sqlite-a,sqlite-b,lmdb,lmdb-compact",
    )
    .iter()
    .map(|s| Engine::parse(s))
    .collect();
    let with_sync = std::env::var("TARVAULT_BENCH_SYNC").map_or(true, |v| v != "0");
    let root = std::env::var_os("TARVAULT_BENCH_DIR")
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join(format!("tarvault-index-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("bench dir");
    println!(
        "tarvault index database benchmarks ({} cores), N = {ns:?}, batches of {BATCH}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let noop = {
        let mut v: Vec<ChildOut> = (0..SPAWNS).map(|_| run_child(&["noop".into()])).collect();
        v.sort_by_key(|o| o.wall);
        v.swap_remove(SPAWNS / 2)
    };
    let mut rows = Vec::new();
    for &n in &ns {
        for &e in &engines {
            let t = Instant::now();
            eprintln!("{} N={n} ...", e.name());
            rows.push(measure(e, n, &root, with_sync));
            eprintln!(
                "{} N={n} done in {:.0} s",
                e.name(),
                t.elapsed().as_secs_f64()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    print_rows(&rows, &noop);
}
