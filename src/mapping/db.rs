//! A mapping file's URLs and versions in an SQLite database beside it (`<mapping>.sqlite`), shared
//! by every process of the host that reads the mapping: `tarvault serve` processes and the
//! migration writing it.
//!
//! Loaded into memory, a mapping costs every process that reads it its whole size and a start-up
//! that parses every line: at npm's scale (tens of millions of versions) gigabytes per process,
//! and a server runs one process per core. Here a process opens the database, reads the mapping
//! lines written since any process last did (none, usually), and answers each question with one
//! primary-key lookup: a URL's blob (`names`), or whether a version is mapped (`versions`, which
//! holds the offset of its line, read back from the mapping when asked). Start-up and memory do
//! not grow with the mapping, and the database is built once for all processes.
//!
//! The database remembers how many bytes of the mapping it holds and the last 256 bytes before
//! that and before earlier places (its marks). A mapping that grew (a migration appending,
//! `--follow`) is read from there on. One that is shorter, or whose bytes there differ (cut back by
//! a resumed migration, perhaps with other lines written since), loses only the rows of the lines
//! past where it still agrees with the database, and is read on from there ([`super::cut`]); one
//! that agrees nowhere (another file put in its place) is read again from the start. Lines are
//! read in transactions of [`BATCH`](super::read::BATCH) under SQLite's write lock: processes
//! starting together share the reading, each batch taken by one of them ([`super::read`]).
//!
//! The database is derived data, written without syncs (`synchronous=OFF`): a damaged one is
//! deleted and built again from the mapping.

// Servers ask for URLs, migrations for versions; a build with one of the two leaves the other's
// lookups unused.
#![cfg_attr(not(all(feature = "server", feature = "migrate")), allow(dead_code))]

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::read::read_batch;
use super::MapEntry;
use crate::backend::wal_checkpoint::Forced;
use crate::backend::BlobKey;
use crate::{Error, Result};

/// How often, at most, a server's miss reads what was appended to the mapping since.
pub(crate) const CATCH_UP: Duration = Duration::from_secs(1);
/// Connections for lookups at most (each with SQLite's default page cache of 2 MiB at most).
const LANES: usize = 8;
/// The page cache while lines are read (inserts in random key order), in KiB; given back after.
const READ_CACHE_KIB: i64 = 65_536;

/// The schema's version (`PRAGMA user_version`). 3: `names` rows hold their line's offset (`at`)
/// as `versions` rows do, `marks` holds where earlier readings stopped, and `recent` the keys of
/// the last lines read, so that a mapping cut back drops only the rows of the lines cut
/// ([`super::cut`]). A database of an older schema (1, which set no version, or 2, which indexed
/// both tables by `at` instead of keeping `recent`: 60% more file) is built again once.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS names(
    name TEXT NOT NULL,
    file TEXT NOT NULL,
    sha512 BLOB NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY(name, file)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS versions(
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY(name, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS source(
    id INTEGER PRIMARY KEY CHECK (id = 0),
    consumed INTEGER NOT NULL,
    urls INTEGER NOT NULL,
    conflict TEXT,
    conflict_at INTEGER,
    recent_from INTEGER NOT NULL
);
INSERT OR IGNORE INTO source VALUES (0, 0, 0, NULL, NULL, 0);
CREATE TABLE IF NOT EXISTS marks(
    at INTEGER PRIMARY KEY,
    tail BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS recent(
    at INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    file TEXT NOT NULL,
    version TEXT NOT NULL
);
";

/// A mapping's URLs and versions in SQLite (see the [module documentation](self)).
#[derive(Debug)]
pub(crate) struct MapDb {
    mapping: PathBuf,
    db: PathBuf,
    /// Lookups take whichever connection is free (one per core, at most [`LANES`]).
    conns: Vec<Mutex<Connection>>,
    /// The connection that reads new lines in ([`MapDb::catch_up`]), none of the lookups': a
    /// reading may take minutes (a mapping read again from its start) and holds its connection
    /// throughout, and a lookup that finds every connection held blocks its thread (a server's
    /// runtime thread) until one is free.
    reader: Mutex<Connection>,
    next: AtomicUsize,
    urls: AtomicU64,
    /// When the mapping was last read for appended lines.
    caught_up: Mutex<Instant>,
    /// The reading's forced checkpoints: every `serve` process looks URLs up here while one
    /// reads a migration's new lines in, which can starve the automatic ones.
    forced: Mutex<Forced>,
}

impl MapDb {
    /// Opens (building or updating it from `mapping`) the database beside `mapping`, or, where no
    /// file can be made there (a read-only directory), one named after the mapping's path in this
    /// user's private temp directory (`$TMPDIR/tarvault-<uid>`, `host_tmp`: in the temp directory
    /// itself another user could plant a database that maps a URL to another package's blob), which
    /// the user's processes on the host share in the same way. A damaged database is deleted and
    /// built again. A database whose write lock another process holds past the busy timeout (it is
    /// reading a large mapping in) is waited for again: it will be there, and a second database, or
    /// the mapping in memory, would cost what the first one saves.
    pub(crate) fn open(mapping: &Path) -> Result<MapDb> {
        let mut name = mapping.as_os_str().to_os_string();
        name.push(".sqlite");
        let beside = PathBuf::from(name);
        match Self::open_waiting(mapping, &beside) {
            Err(e @ Error::Index { .. }) if !e.is_corrupt_db() => {
                let other = match crate::host_tmp::dir() {
                    Ok(dir) => dir.join(shared_name(mapping)),
                    Err(e2) => {
                        tracing::warn!(mapping = %mapping.display(), error = %e2, "no database beside the mapping, and no private temp directory to keep one in");
                        return Err(e);
                    }
                };
                tracing::info!(mapping = %mapping.display(), db = %other.display(), error = %e.report(), "no database beside the mapping; keeping it in the temp directory");
                Self::open_waiting(mapping, &other).map_err(|e2| {
                    tracing::warn!(db = %other.display(), error = %e2.report(), "no database for the mapping in the temp directory either");
                    e
                })
            }
            other => other,
        }
    }

    /// [`MapDb::open_or_rebuild`], again for as long as another connection keeps the database's
    /// lock past the busy timeout, saying so each time.
    fn open_waiting(mapping: &Path, db: &Path) -> Result<MapDb> {
        loop {
            match Self::open_or_rebuild(mapping, db) {
                Err(e) if e.is_busy_db() => {
                    tracing::info!(db = %db.display(), "another process is reading the mapping in; waiting for it");
                }
                other => return other,
            }
        }
    }

    fn open_or_rebuild(mapping: &Path, db: &Path) -> Result<MapDb> {
        match Self::open_at(mapping, db) {
            Err(e) if e.is_corrupt_db() => {
                tracing::warn!(db = %db.display(), "the mapping's database is damaged; building it again");
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = db.as_os_str().to_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(PathBuf::from(p));
                }
                Self::open_at(mapping, db)
            }
            other => other,
        }
    }

    fn open_at(mapping: &Path, db: &Path) -> Result<MapDb> {
        let reader = connect(db)?;
        create_or_upgrade(&reader, db)?;
        let lanes = std::thread::available_parallelism().map_or(2, |n| n.get().min(LANES));
        let mut conns = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            conns.push(Mutex::new(connect(db)?));
        }
        let me = MapDb {
            mapping: mapping.to_path_buf(),
            db: db.to_path_buf(),
            conns,
            reader: Mutex::new(reader),
            next: AtomicUsize::new(0),
            urls: AtomicU64::new(0),
            caught_up: Mutex::new(Instant::now()),
            forced: Mutex::new(Forced::past(WAL_BOUND)),
        };
        me.catch_up()?;
        Ok(me)
    }

    /// How many URLs the mapping maps (as of the last reading).
    pub(crate) fn len(&self) -> usize {
        self.urls.load(Ordering::Relaxed) as usize
    }

    /// The first line's description of a URL the mapping maps to two blobs, if any.
    pub(crate) fn conflict(&self) -> Result<Option<String>> {
        self.conn()
            .query_row("SELECT conflict FROM source", [], |r| r.get(0))
            .map_err(sql(&self.db, "read the mapping's conflict"))
    }

    /// The one value `query` finds for the key (`a`, `b`), if any.
    fn lookup<T: rusqlite::types::FromSql>(
        &self,
        query: &str,
        a: &str,
        b: &str,
        what: &'static str,
    ) -> Result<Option<T>> {
        self.conn()
            .prepare_cached(query)
            .and_then(|mut q| q.query_row(params![a, b], |r| r.get(0)).optional())
            .map_err(sql(&self.db, what))
    }

    /// The entry of `name`'s `version`, if the mapping has one (its line, read back).
    pub(crate) fn version(&self, name: &str, version: &str) -> Result<Option<MapEntry>> {
        let query = "SELECT at FROM versions WHERE name = ?1 AND version = ?2";
        let Some(at) = self.lookup::<i64>(query, name, version, "look up a version")? else {
            return Ok(None);
        };
        let io = |op| move |e| Error::io(op, &self.mapping, e);
        let mut file = File::open(&self.mapping).map_err(io("open"))?;
        file.seek(SeekFrom::Start(at.max(0) as u64))
            .map_err(io("seek"))?;
        let mut line = Vec::new();
        super::read::read_line(&mut BufReader::with_capacity(4096, file), &mut line)
            .map_err(io("read"))?;
        match serde_json::from_slice::<MapEntry>(line.trim_ascii()) {
            Ok(e) if e.name == name && e.version == version => Ok(Some(e)),
            _ => Err(Error::Index {
                path: self.db.clone(),
                message: format!(
                    "the line of {name}@{version} at byte {at} of {} is not its entry: the \
                     mapping changed under its database (delete the file to have it built again)",
                    self.mapping.display()
                ),
                source: None,
            }),
        }
    }

    /// The blob mapped to `/<name>/-/<file>`, if any.
    pub(crate) fn url(&self, name: &str, file: &str) -> Result<Option<BlobKey>> {
        let query = "SELECT sha512 FROM names WHERE name = ?1 AND file = ?2";
        let found = self.lookup::<Vec<u8>>(query, name, file, "look up a tarball URL")?;
        Ok(found.and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok().map(BlobKey::new)))
    }

    /// Whether a miss may read the mapping's appended lines now (at most once a [`CATCH_UP`]);
    /// if so, the time is taken.
    pub(crate) fn due(&self) -> bool {
        let mut last = self.caught_up.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() < CATCH_UP {
            return false;
        }
        *last = Instant::now();
        true
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(c) = self.conns[(start + i) % n].try_lock() {
                return c;
            }
        }
        self.conns[start % n]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the mapping's lines the database does not hold yet (all of them, if the mapping is
    /// not the one it was built from), a batch per transaction, on the reading connection (one
    /// reading at a time; lookups go on meanwhile). Blocking.
    pub(crate) fn catch_up(&self) -> Result<()> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        self.read_on(&conn)
    }

    /// [`MapDb::catch_up`], unless a reading is under way in this process already: then `false`
    /// at once. A server's miss is answered from what is read rather than wait for another
    /// miss's reading, which may take minutes (a mapping read again from its start), each such
    /// miss holding a request and a blocking thread meanwhile.
    pub(crate) fn catch_up_unless_reading(&self) -> Result<bool> {
        let conn = match self.reader.try_lock() {
            Ok(conn) => conn,
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
        };
        self.read_on(&conn).map(|()| true)
    }

    fn read_on(&self, conn: &Connection) -> Result<()> {
        conn.execute_batch(&format!("PRAGMA cache_size = -{READ_CACHE_KIB}"))
            .map_err(sql(&self.db, "set up the mapping's database"))?;
        let read = self.read_all(conn);
        // Back to the default, and the pages read given back, for the lookups that follow.
        let _ = conn.execute_batch("PRAGMA cache_size = -2000; PRAGMA shrink_memory;");
        read
    }

    fn read_all(&self, conn: &Connection) -> Result<()> {
        loop {
            let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
                .map_err(sql(&self.db, "lock the mapping's database"))?;
            let batch = read_batch(&tx, &self.mapping, &self.db)?;
            tx.commit()
                .map_err(sql(&self.db, "record the mapping's lines"))?;
            let mut forced = self.forced.lock().unwrap_or_else(|e| e.into_inner());
            forced.after_commit(conn, &self.db, BUSY_TIMEOUT);
            self.urls.store(batch.urls, Ordering::Relaxed);
            if !batch.more {
                return Ok(());
            }
        }
    }
}

/// Creates the tables, or, in a database of an older schema, drops them and creates them anew
/// (they are read again from the mapping). Under the write lock, so that of several processes
/// opening it together one does it.
fn create_or_upgrade(conn: &Connection, db: &Path) -> Result<()> {
    let version =
        || -> rusqlite::Result<i64> { conn.query_row("PRAGMA user_version", [], |r| r.get(0)) };
    if version().map_err(sql(db, "read the schema's version"))? == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(sql(db, "lock the mapping's database"))?;
    let found = version().map_err(sql(db, "read the schema's version"))?;
    if found > SCHEMA_VERSION {
        return Err(Error::Index {
            path: db.to_path_buf(),
            message: format!(
                "the mapping's database has schema {found}, newer than this tarvault's \
                 {SCHEMA_VERSION} (delete the file to have it built again)"
            ),
            source: None,
        });
    }
    if found < SCHEMA_VERSION {
        let old: i64 = tx
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'names'",
                [],
                |r| r.get(0),
            )
            .map_err(sql(db, "read the mapping's tables"))?;
        if old > 0 {
            tracing::info!(db = %db.display(), from = found.max(1), to = SCHEMA_VERSION, "the mapping's database predates line offsets for URLs; reading the mapping into it again, once");
        }
        tx.execute_batch(
            "DROP TABLE IF EXISTS names; DROP TABLE IF EXISTS versions; \
             DROP TABLE IF EXISTS source; DROP TABLE IF EXISTS marks; \
             DROP TABLE IF EXISTS recent;",
        )
        .map_err(sql(db, "drop the mapping's old tables"))?;
    }
    tx.execute_batch(SCHEMA)
        .and_then(|()| tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}")))
        .map_err(sql(db, "create the mapping's tables"))?;
    tx.commit().map_err(sql(db, "create the mapping's tables"))
}

/// The file name of a mapping's database outside its directory: one per mapping path (its
/// canonical form hashed), so that every process serving that mapping finds the same one.
fn shared_name(mapping: &Path) -> String {
    let path = std::fs::canonicalize(mapping).unwrap_or_else(|_| mapping.to_path_buf());
    let hash = blake3::hash(path.as_os_str().as_encoded_bytes());
    format!("tarvault-map-{}.sqlite", &hash.to_hex()[..16])
}

/// How long a connection waits for another's lock before its statement fails (then
/// [`MapDb::open`] waits again, and a lookup or a reading fails and is tried again later).
#[cfg(not(test))]
const BUSY_TIMEOUT: Duration = Duration::from_secs(120);
#[cfg(test)]
const BUSY_TIMEOUT: Duration = Duration::from_millis(200);

/// The `-wal` file size past which a reading forces a checkpoint ([`Forced`]), and what is kept
/// of the file when it starts over; small in tests, so that a small mapping passes them.
#[cfg(not(test))]
const WAL_BOUND: u64 = crate::backend::wal_checkpoint::WAL_BOUND;
#[cfg(not(test))]
const WAL_KEEP: i64 = crate::backend::wal_checkpoint::WAL_KEEP;
#[cfg(test)]
const WAL_BOUND: u64 = 1 << 20;
#[cfg(test)]
const WAL_KEEP: i64 = 256 << 10;

fn connect(db: &Path) -> Result<Connection> {
    let conn = Connection::open(db).map_err(sql(db, "open the mapping's database"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .and_then(|()| conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;"))
        .and_then(|()| {
            // Without a limit the `-wal` file keeps the largest size it ever reached.
            conn.pragma_update(None, "journal_size_limit", WAL_KEEP)
        })
        .map_err(sql(db, "set up the mapping's database"))?;
    Ok(conn)
}

pub(super) fn sql<'a>(
    db: &'a Path,
    what: &'static str,
) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |e| Error::Index {
        path: db.to_path_buf(),
        message: format!("cannot {what} (delete the file to have it built again)"),
        source: Some(Box::new(e)),
    }
}
