//! Which problems the problems file already holds, so that none is written (or counted) twice.
//!
//! A migration meets a document again whenever the feed shows it again: `--since` set back over
//! documents this migration has done, a feed CouchDB rewinds, an incremental run meeting a changed
//! document whose broken version is still broken. Its versions already mapped are found in the
//! mapping's database; its problems are found here, by a 128-bit blake3 key of the problem's line
//! (every field: a digest mismatch with other bytes this time is a new problem).
//!
//! A problems file may hold millions of lines, so the keys are not held in memory: they live in
//! an SQLite database beside it (`<problems>.sqlite`), with each line's offset, and memory holds
//! only the keys of lines appended since the last checkpoint. Like the mapping's database it is
//! derived data, written without syncs and after the state file: on open it forgets the lines
//! past the length the state records (a resumed run cuts the file back there) and reads the lines
//! it lacks up to it; a damaged one is deleted and built again from the file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::{Error, Result};

/// A problem's key: the first 16 bytes of the blake3 hash of its line (without the newline).
type Key = [u8; 16];

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = OFF;
CREATE TABLE IF NOT EXISTS problems(key BLOB PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS covered(one INTEGER PRIMARY KEY CHECK (one = 1), len INTEGER NOT NULL);
";
const INSERT: &str = "INSERT OR IGNORE INTO problems(key, at) VALUES (?1, ?2)";
const COVERED: &str = "INSERT OR REPLACE INTO covered(one, len) VALUES (1, ?1)";

/// The keys of the problems in a problems file (see the [module documentation](self)).
pub(crate) struct Recorded {
    db: PathBuf,
    conn: Connection,
    /// Keys of the lines appended since the last [`synced`](Self::synced), with their offsets.
    pending: HashMap<Key, u64>,
}

impl Recorded {
    /// Opens the database beside `problems` and brings it to the file's first `keep` bytes (the
    /// length the state file records; the file is already cut back to it).
    pub(crate) fn open(problems: &Path, keep: u64) -> Result<Recorded> {
        let db = super::suffixed(problems, ".sqlite");
        let mut me = match Self::open_at(&db) {
            Ok(me) => me,
            Err(e) => {
                tracing::warn!(db = %db.display(), error = %e.report(), "the problems file's database cannot be used; building it again");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(super::suffixed(&db, suffix));
                }
                Self::open_at(&db)?
            }
        };
        me.catch_up(problems, keep)?;
        Ok(me)
    }

    fn open_at(db: &Path) -> Result<Recorded> {
        let conn = Connection::open(db).map_err(sql(db, "open"))?;
        conn.execute_batch(SCHEMA).map_err(sql(db, "set up"))?;
        Ok(Recorded {
            db: db.to_path_buf(),
            conn,
            pending: HashMap::new(),
        })
    }

    /// Forgets the lines at or past `keep`, then reads the lines of `problems` it lacks up to it.
    fn catch_up(&mut self, problems: &Path, keep: u64) -> Result<()> {
        let db = self.db.clone();
        let covered: i64 = self
            .conn
            .query_row("SELECT len FROM covered", [], |r| r.get(0))
            .optional()
            .map_err(sql(&db, "read"))?
            .unwrap_or(0);
        let covered = u64::try_from(covered).unwrap_or(0);
        let tx = self.conn.transaction().map_err(sql(&db, "write"))?;
        if covered > keep {
            tx.execute("DELETE FROM problems WHERE at >= ?1", params![int(keep)])
                .map_err(sql(&db, "write"))?;
        }
        let mut at = covered.min(keep);
        if at < keep {
            tracing::info!(file = %problems.display(), from = at, to = keep, "reading the problems file's lines into its database");
            let mut file = File::open(problems).map_err(|e| Error::io("open", problems, e))?;
            file.seek(SeekFrom::Start(at))
                .map_err(|e| Error::io("seek", problems, e))?;
            let mut lines = BufReader::new(file.take(keep - at));
            let mut line = Vec::new();
            let mut insert = tx.prepare(INSERT).map_err(sql(&db, "write"))?;
            loop {
                line.clear();
                let n = lines
                    .read_until(b'\n', &mut line)
                    .map_err(|e| Error::io("read", problems, e))?;
                if n == 0 {
                    break;
                }
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                if !text.is_empty() {
                    insert
                        .execute(params![key(text), int(at)])
                        .map_err(sql(&db, "write"))?;
                }
                at += n as u64;
            }
        }
        tx.execute(COVERED, params![int(at)])
            .map_err(sql(&db, "write"))?;
        tx.commit().map_err(sql(&db, "write"))
    }

    /// Whether a problem's `line` (as `lines::encode` made it) is in the file already; if not,
    /// it is taken as appended at `at` (the caller writes it there).
    pub(crate) fn is_new(&mut self, line: &[u8], at: u64) -> Result<bool> {
        let key = key(line);
        if self.pending.contains_key(&key) {
            return Ok(false);
        }
        let known = self
            .conn
            .prepare_cached("SELECT 1 FROM problems WHERE key = ?1")
            .and_then(|mut s| s.exists(params![key]))
            .map_err(sql(&self.db, "read"))?;
        if !known {
            self.pending.insert(key, at);
        }
        Ok(!known)
    }

    /// Has the database take the lines appended up to `len`, the length just recorded in the state
    /// file, and forgets them from memory. Blocking.
    pub(crate) fn synced(&mut self, len: u64) -> Result<()> {
        let db = self.db.clone();
        let tx = self.conn.transaction().map_err(sql(&db, "write"))?;
        {
            let mut insert = tx.prepare(INSERT).map_err(sql(&db, "write"))?;
            for (key, at) in &self.pending {
                insert
                    .execute(params![key, int(*at)])
                    .map_err(sql(&db, "write"))?;
            }
        }
        tx.execute(COVERED, params![int(len)])
            .map_err(sql(&db, "write"))?;
        tx.commit().map_err(sql(&db, "write"))?;
        self.pending.clear();
        Ok(())
    }
}

/// A file offset as SQLite stores it (no file is 2^63 bytes long).
fn int(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

fn key(line: &[u8]) -> Key {
    let mut key = [0; 16];
    key.copy_from_slice(&blake3::hash(line).as_bytes()[..16]);
    key
}

fn sql<'a>(db: &'a Path, what: &'static str) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |e| Error::Index {
        path: db.to_path_buf(),
        message: format!(
            "cannot {what} the problems file's database (delete the file to have it built again)"
        ),
        source: Some(Box::new(e)),
    }
}
