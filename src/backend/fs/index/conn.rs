//! Opening the index database: schema, pragmas, read-only fallbacks, and turning SQLite's errors
//! into [`Error::Index`] with the file's name and, for a damaged file, the repair.
//!
//! Every connection runs in WAL mode, which is what lets one writer and any number of readers in
//! any number of processes work at once: readers never wait for the writer, and each new read sees
//! every transaction committed before it began, whichever process committed it.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use crate::{Error, Result};

mod create;

/// The schema's version, kept in SQLite's `user_version`.
const SCHEMA_VERSION: i64 = 1;

/// One row per blob, with its recorded digests. The three secondary indexes hold only the first 8
/// bytes of each digest (and the row id): a lookup compares the full digest in the row it lands
/// on, and the index stays at ~200 bytes per blob instead of ~370 with full-width keys.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS blobs(
    id INTEGER PRIMARY KEY,
    sha512 BLOB NOT NULL,
    sha1 BLOB NOT NULL,
    blake3 BLOB NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS blobs_sha512 ON blobs(substr(sha512, 1, 8));
CREATE INDEX IF NOT EXISTS blobs_sha1 ON blobs(substr(sha1, 1, 8));
CREATE INDEX IF NOT EXISTS blobs_blake3 ON blobs(substr(blake3, 1, 8));
";

/// The page size of a new index. Every commit appends each page it dirtied to the WAL, and a batch
/// of random digests dirties a leaf page per record in each of the three indexes: with 1 KiB pages
/// that costs ~3 KiB of writes per blob instead of ~12 KiB with SQLite's default 4 KiB, which
/// measured as the difference between ~0.5x and ~0.9x the ingest rate of the old alias log.
const PAGE_SIZE: i64 = 1024;

/// Pages the WAL may hold before a commit checkpoints it into the database (32 MiB with 1 KiB
/// pages): a leaf dirtied by many batches is copied once per checkpoint, and the checkpoint's two
/// fsyncs are paid every few dozen batches instead of every one or two.
const CHECKPOINT_PAGES: i64 = 32 * 1024;

/// How long a connection waits for another process's write lock before giving up.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// SQLite's page cache per connection, in KiB (negative `cache_size`). Lookups touch 3-4 pages;
/// this keeps the upper levels of the three B-trees hot without letting a `serve` process grow.
const CACHE_KIB: i64 = 2048;

/// How a database was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Read and write (the normal case).
    ReadWrite,
    /// The store is not writable by this process: lookups only, with locking.
    ReadOnly,
    /// Not even the `-shm` file could be opened: lookups only, without locking (`immutable=1`).
    /// Correct as long as nothing writes the store meanwhile, which is what an unwritable store
    /// usually means.
    Immutable,
}

/// Opens the database file, creating it and its schema if need be ([`create`]; `durable`: whether
/// a new file is made durable before it is used). A store this process may not write is opened
/// read-only instead.
pub(crate) fn open(path: &Path, durable: bool) -> Result<(Connection, Mode)> {
    if !path.exists() {
        if let Err(e) = create::create(path, durable) {
            // Made in place below instead (the way before `create`), or reported from there.
            tracing::debug!(index = %path.display(), error = %e.report(), "could not build a new index aside");
        }
    }
    match open_rw(path) {
        Ok(conn) => Ok((conn, Mode::ReadWrite)),
        Err(e) if is_permission(&e) && path.exists() => open_ro(path),
        Err(e) => Err(error(path, "open", e)),
    }
}

/// Another connection to a database [`open`] has set up, in the same mode.
pub(crate) fn connect(path: &Path, mode: Mode) -> Result<Connection> {
    let conn = match mode {
        Mode::ReadWrite => Connection::open_with_flags(path, rw_flags()),
        Mode::ReadOnly => Connection::open_with_flags(path, ro_flags()),
        Mode::Immutable => open_immutable(path),
    }
    .map_err(|e| error(path, "open", e))?;
    tune(&conn).map_err(|e| error(path, "open", e))?;
    Ok(conn)
}

pub(super) fn rw_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

fn ro_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

fn open_immutable(path: &Path) -> rusqlite::Result<Connection> {
    let uri = format!("file:{}?immutable=1", path.display());
    Connection::open_with_flags(uri, ro_flags() | OpenFlags::SQLITE_OPEN_URI)
}

pub(super) fn tune(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    // Durability comes from the caller: a single put commits with FULL (the WAL is fsynced), a
    // batch commits with NORMAL and then flushes the whole filesystem once (see `FsIndex::insert`).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
    // Without a limit the `-wal` file keeps the largest size it ever reached (see `wal_checkpoint`).
    conn.pragma_update(
        None,
        "journal_size_limit",
        crate::backend::wal_checkpoint::WAL_KEEP,
    )?;
    Ok(())
}

fn open_rw(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open_with_flags(path, rw_flags())?;
    tune(&conn)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(conn);
    }
    // A new, empty file that `create` did not make (it could not, or a process of an earlier
    // release created the file in place). WAL is a property of the file, set once; the schema goes
    // in under the write lock so that two processes creating the same store at once make one.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    set_wal(&conn)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(conn)
}

/// Switches a new file to WAL. That needs an exclusive lock, and while another process holds any
/// lock on the file SQLite answers "database is locked" at once, without calling the busy handler
/// (seen with 12 processes creating one store at once, about one run in 60). So the switch is
/// retried here, with backoff, for up to [`BUSY_TIMEOUT`]. Another process may have switched the
/// file already, which is just as good.
pub(super) fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Err(e) if !is_busy(&e) => return Err(e),
            other if started.elapsed() >= BUSY_TIMEOUT => return other.map(|_| ()),
            // Busy, or the switch did not take: try again.
            _ => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn open_ro(path: &Path) -> Result<(Connection, Mode)> {
    let try_ro = || -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(path, ro_flags())?;
        tune(&conn)?;
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })?;
        Ok(conn)
    };
    match try_ro() {
        Ok(conn) => Ok((conn, Mode::ReadOnly)),
        Err(_) => {
            let conn = open_immutable(path).map_err(|e| error(path, "open read-only", e))?;
            tune(&conn).map_err(|e| error(path, "open read-only", e))?;
            Ok((conn, Mode::Immutable))
        }
    }
}

/// Whether another connection's lock stood in the way.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn is_permission(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied)
    )
}

const CORRUPT: &str = "is corrupt or not a tarvault index";

/// An [`Error::Index`] for `op` on the database at `path`.
pub(crate) fn error(path: &Path, op: &str, e: rusqlite::Error) -> Error {
    let message = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            format!("{op}: the file {CORRUPT}; run `tarvault fsck` to rebuild it from the blobs")
        }
        Some(ErrorCode::DiskFull) => format!("{op}: the disk is full"),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            format!("{op}: another process held the index's write lock for over {BUSY_TIMEOUT:?}")
        }
        _ => op.to_string(),
    };
    Error::Index {
        path: path.to_path_buf(),
        message,
        source: Some(Box::new(e)),
    }
}
