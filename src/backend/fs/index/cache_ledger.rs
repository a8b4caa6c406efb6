//! [`FsCacheLedger`]: the record a cache tier keeps of a filesystem local tier
//! ([`CacheLedger`]), in `index/cache.sqlite` beside the store's index.
//!
//! One row per blob the cache holds (its size and when it was last used, in microseconds of wall
//! time), and one row of totals kept by triggers. Opening it loads nothing; recording a use, a
//! fill or an eviction is a small transaction. So a cache's start-up and memory do not grow with
//! the blobs it holds, and every process using the same local tier shares one capacity and one
//! recency order.
//!
//! Eviction is sampled, as Redis's is: each victim is the least recently used of [`SAMPLE`] rows
//! read from a random place in the table (the rows are keyed by a prefix of the sha512, so any run
//! of them is a random sample). An index on the time of use would make the choice exact, but every
//! recorded use would then rewrite a leaf of that index as well as the row: at 1M blobs, uses that
//! each cost 17-23 µs with it cost 6-11 µs without. Sampled, a victim is on average among the
//! oldest 3% of what the tier holds, and in a tier of up to [`SAMPLE`] blobs it is exactly the
//! oldest.
//!
//! It is written without fsyncs, not even at checkpoints (`synchronous=OFF`): at 1M blobs, with
//! the checkpoints' fsyncs, hits that record a use ran at 24.7k/s against 34.3k/s without. A power cut can then damage the
//! file. A process that meets the damage marks the file so (reads go on without it), and the next
//! opening sets it aside and begins a new one, which takes in the local tier from one listing.
//!
//! The record is an account, not the truth: a blob copied but not yet recorded (a process stopped
//! in between) is recorded at its next use, and a record whose copy is gone (another process's
//! eviction raced a use) is forgotten by the next read that finds no copy behind it, or evicted
//! in its turn.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::conn::{self, error};
use super::{move_aside, sibling};
use crate::backend::ledger::micros;
use crate::backend::wal_checkpoint::Forced;
use crate::backend::{BlobKey, CacheLedger};
use crate::Result;

/// The schema's version, kept in SQLite's `user_version`. Version 2 had an index on `used`
/// (`held_used`); opening such a file drops it.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS held(
    id INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    size INTEGER NOT NULL,
    used INTEGER NOT NULL
);
DROP INDEX IF EXISTS held_used;
CREATE TABLE IF NOT EXISTS totals(
    id INTEGER PRIMARY KEY CHECK (id = 0),
    bytes INTEGER NOT NULL,
    blobs INTEGER NOT NULL,
    adopted INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0, 0);
CREATE TABLE IF NOT EXISTS deleted(
    id INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deleted_at ON deleted(at);
CREATE TRIGGER IF NOT EXISTS held_in AFTER INSERT ON held BEGIN
    UPDATE totals SET bytes = bytes + new.size, blobs = blobs + 1;
END;
CREATE TRIGGER IF NOT EXISTS held_out AFTER DELETE ON held BEGIN
    UPDATE totals SET bytes = bytes - old.size, blobs = blobs - 1;
END;
CREATE TRIGGER IF NOT EXISTS held_resized AFTER UPDATE OF size ON held BEGIN
    UPDATE totals SET bytes = bytes - old.size + new.size;
END;
";

/// How long a delete is remembered for fills in flight in other processes: a fill that began
/// reading the remote longer ago than this before it records its copy may keep a blob deleted
/// meanwhile. (A fill takes as long as its remote read.)
const DELETES_KEPT_US: i64 = 3_600_000_000;

/// Rows read for each victim chosen (see the module docs).
const SAMPLE: i64 = 32;

/// A cache tier's record of a filesystem local tier, shared by every process (see the module docs).
#[derive(Debug)]
pub struct FsCacheLedger {
    path: PathBuf,
    /// For lookups: in WAL mode a read never waits for a writer, so a cache's miss path (which
    /// looks here while it holds its map of fills in flight) never waits for a transaction.
    reader: Mutex<Connection>,
    /// For transactions, which may wait for another process's write lock.
    writer: Mutex<Connection>,
    /// The writer's forced checkpoints: cache tiers in every `serve` process read and write the
    /// ledger at once, which can starve the automatic ones as the index's readers do.
    forced: Mutex<Forced>,
}

impl FsCacheLedger {
    /// Opens the ledger at `path`, creating it if need be. A file that is not a ledger, or that a
    /// process found damaged (see the module docs), is set aside and a new one begun: it holds
    /// nothing a listing cannot rebuild.
    pub fn open(path: impl AsRef<Path>) -> Result<FsCacheLedger> {
        let path = path.as_ref().to_path_buf();
        if damage_marker(&path).exists() {
            set_aside(&path, "a process found it damaged")?;
        }
        let writer = match open_conn(&path) {
            Ok(c) => c,
            Err(e) if crate::error::sqlite_says_corrupt(&e) => {
                set_aside(&path, &e.to_string())?;
                open_conn(&path).map_err(|e| error(&path, "open cache ledger", e))?
            }
            Err(e) => return Err(error(&path, "open cache ledger", e)),
        };
        let reader = open_conn(&path).map_err(|e| error(&path, "open cache ledger", e))?;
        Ok(FsCacheLedger {
            path,
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
            forced: Mutex::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the reading connection.
    fn with<T>(
        &self,
        op: &str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.on(&self.reader, op, f)
    }

    fn on<T>(
        &self,
        conn: &Mutex<Connection>,
        op: &str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        // A statement that failed leaves the connection usable.
        let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn).map_err(|e| {
            if crate::error::sqlite_says_corrupt(&e) {
                // The next opening sets the file aside; until then the cache works without it.
                if let Err(io) = std::fs::write(damage_marker(&self.path), b"") {
                    tracing::warn!(ledger = %self.path.display(), error = %io, "cannot mark the cache ledger damaged");
                }
            }
            error(&self.path, op, e)
        })
    }

    fn write<T>(
        &self,
        op: &str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.on(&self.writer, op, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            let mut forced = self.forced.lock().unwrap_or_else(|e| e.into_inner());
            forced.after_commit(conn, &self.path, conn::BUSY_TIMEOUT);
            Ok(out)
        })
    }
}

/// Where a process that found the ledger damaged says so.
fn damage_marker(path: &Path) -> PathBuf {
    sibling(path, ".damaged")
}

/// Moves the ledger (with its WAL) out of the way, so that the next opening begins a new one.
fn set_aside(path: &Path, why: &str) -> Result<()> {
    let aside = sibling(path, &format!(".damaged-{}", std::process::id()));
    tracing::warn!(ledger = %path.display(), aside = %aside.display(), why,
        "cache ledger damaged; setting it aside and starting a new one");
    if let Err(e) = move_aside(path, &aside) {
        // Gone already (another process set it aside first) is as good.
        if path.exists() {
            return Err(e);
        }
    }
    let _ = std::fs::remove_file(damage_marker(path));
    Ok(())
}

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open_with_flags(path, conn::rw_flags())?;
    conn::tune(&conn)?;
    // No fsync, even at checkpoints: see the module docs.
    conn.pragma_update(None, "synchronous", "OFF")?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < SCHEMA_VERSION {
        // Takes effect only on a new, empty file (before the switch to WAL).
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        conn::set_wal(&conn)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
    }
    Ok(conn)
}

fn size_sql(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

fn size_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn key_of(bytes: Vec<u8>) -> Option<BlobKey> {
    <[u8; 64]>::try_from(bytes).ok().map(BlobKey::new)
}

/// Upserts uses: a known blob gets the new time, unless its recorded use is less than
/// [`USE_GRAIN_US`] older (then its row is only read, and no page is written); an unknown one is
/// recorded with its size.
const TOUCH: &str = "INSERT INTO held(id, key, size, used) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT(id) DO UPDATE SET used = excluded.used
    WHERE key = excluded.key AND excluded.used - used >= ?5";

/// The grain of recorded use, in microseconds: recency to ten seconds is plenty to choose what to
/// evict, and a blob read all the time costs one write every ten seconds instead of one per read.
const USE_GRAIN_US: i64 = 10_000_000;

/// Pages of 1 KiB: a recorded use rewrites a leaf of each of the two B-trees, and every page a
/// transaction dirties is appended whole to the WAL. (The rows are keyed by an integer, the first
/// eight bytes of the sha512, so that both trees stay shallow with pages this small.)
const PAGE_SIZE: i64 = 1024;

/// The row id of `key`: its first eight bytes. Two blobs that share them (about one chance in
/// 10^5 among 40M blobs) cannot both be recorded: the second is kept uncounted, as a copy the
/// record lost is, which costs accounting, never bytes.
fn id(key: &BlobKey) -> i64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key.as_bytes()[..8]);
    i64::from_be_bytes(first)
}

/// Records `key` as held with `size` bytes, used now.
fn record(tx: &rusqlite::Transaction<'_>, key: &BlobKey, size: u64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO held(id, key, size, used) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET size = excluded.size, used = excluded.used
         WHERE key = excluded.key",
    )?
    .execute(params![
        id(key),
        &key.as_bytes()[..],
        size_sql(size),
        micros(SystemTime::now())
    ])
    .map(|_| ())
}

/// The least recently used of [`SAMPLE`] rows from a random place in the table (wrapping round
/// its end), other than `keep`'s: its id, key and size; `None` if there is no other row.
fn oldest_of_a_sample(
    tx: &rusqlite::Transaction<'_>,
    keep: Option<&BlobKey>,
) -> rusqlite::Result<Option<(i64, BlobKey, u64)>> {
    let start: i64 = rand::random();
    let mut rows: Vec<(i64, Vec<u8>, i64, i64)> = Vec::new();
    for sql in [
        "SELECT id, key, size, used FROM held WHERE id >= ?1 ORDER BY id LIMIT ?2",
        "SELECT id, key, size, used FROM held WHERE id < ?1 ORDER BY id LIMIT ?2",
    ] {
        let want = SAMPLE - rows.len() as i64;
        if want == 0 {
            break;
        }
        let mut stmt = tx.prepare_cached(sql)?;
        let page = stmt.query_map(params![start, want], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        for row in page {
            rows.push(row?);
        }
    }
    Ok(rows
        .into_iter()
        .filter_map(|(id, k, size, used)| Some((used, id, key_of(k)?, size_of(size))))
        .filter(|(_, _, key, _)| Some(key) != keep)
        .min_by_key(|(used, id, _, _)| (*used, *id))
        .map(|(_, id, key, size)| (id, key, size)))
}

/// Removes `key`'s record, if there is one.
fn forget(tx: &rusqlite::Transaction<'_>, key: &BlobKey) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM held WHERE id = ?1 AND key = ?2")?
        .execute(params![id(key), &key.as_bytes()[..]])
        .map(|_| ())
}

impl CacheLedger for FsCacheLedger {
    fn contains(&self, key: &BlobKey) -> Result<bool> {
        self.with("look up", |c| {
            c.prepare_cached("SELECT 1 FROM held WHERE id = ?1 AND key = ?2")?
                .query_row(params![id(key), &key.as_bytes()[..]], |_| Ok(()))
                .optional()
                .map(|r| r.is_some())
        })
    }

    fn insert_fill(&self, key: &BlobKey, size: u64, began: i64) -> Result<bool> {
        self.write("record a fill", |tx| {
            let deleted = tx
                .prepare_cached("SELECT 1 FROM deleted WHERE id = ?1 AND key = ?2 AND at >= ?3")?
                .query_row(params![id(key), &key.as_bytes()[..], began], |_| Ok(()))
                .optional()?
                .is_some();
            if deleted {
                return Ok(false);
            }
            record(tx, key, size)?;
            Ok(true)
        })
    }

    fn deleted(&self, key: &BlobKey) -> Result<()> {
        let now = micros(SystemTime::now());
        self.write("record a delete", |tx| {
            forget(tx, key)?;
            tx.prepare_cached(
                "INSERT INTO deleted(id, key, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET key = excluded.key, at = excluded.at",
            )?
            .execute(params![id(key), &key.as_bytes()[..], now])?;
            tx.prepare_cached("DELETE FROM deleted WHERE at < ?1")?
                .execute([now - DELETES_KEPT_US])?;
            Ok(())
        })
    }

    fn touch(&self, used: &[(BlobKey, u64)]) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        let now = micros(SystemTime::now());
        self.write("record uses", |tx| {
            let mut stmt = tx.prepare_cached(TOUCH)?;
            for (i, (key, size)) in (0i64..).zip(used) {
                stmt.execute(params![
                    id(key),
                    &key.as_bytes()[..],
                    size_sql(*size),
                    now + i,
                    USE_GRAIN_US
                ])?;
            }
            Ok(())
        })
    }

    fn remove(&self, key: &BlobKey) -> Result<()> {
        self.write("forget", |tx| forget(tx, key))
    }

    fn evict_to(&self, capacity: u64, keep: Option<&BlobKey>) -> Result<Vec<BlobKey>> {
        self.write("evict", |tx| {
            let bytes: i64 = tx.query_row("SELECT bytes FROM totals", [], |r| r.get(0))?;
            let mut over = size_of(bytes).saturating_sub(capacity);
            let mut victims = Vec::new();
            let mut delete = tx.prepare_cached("DELETE FROM held WHERE id = ?1")?;
            while over > 0 {
                let Some((id, key, size)) = oldest_of_a_sample(tx, keep)? else {
                    break;
                };
                delete.execute([id])?;
                over = over.saturating_sub(size);
                victims.push(key);
            }
            Ok(victims)
        })
    }

    fn totals(&self) -> Result<(u64, u64)> {
        self.with("read totals", |c| {
            c.query_row("SELECT bytes, blobs FROM totals", [], |r| {
                Ok((size_of(r.get(0)?), size_of(r.get(1)?)))
            })
        })
    }

    fn adopted(&self) -> Result<bool> {
        self.with("read totals", |c| {
            c.query_row("SELECT adopted FROM totals", [], |r| r.get::<_, i64>(0))
                .map(|a| a != 0)
        })
    }

    fn adopt(&self, found: &[(BlobKey, u64, Option<SystemTime>)]) -> Result<()> {
        self.write("record the local tier's blobs", |tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO held(id, key, size, used) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO NOTHING",
            )?;
            for (key, size, modified) in found {
                let used = modified.map(micros).unwrap_or(0);
                stmt.execute(params![id(key), &key.as_bytes()[..], size_sql(*size), used])?;
            }
            Ok(())
        })
    }

    fn set_adopted(&self) -> Result<()> {
        self.write("record the local tier's blobs", |tx| {
            tx.execute("UPDATE totals SET adopted = 1", []).map(|_| ())
        })
    }
}

#[cfg(test)]
#[path = "cache_ledger_tests.rs"]
mod tests;
