//! A mapping that is no longer what its database read: cut back (a resumed migration truncates
//! it to its last checkpoint, below what the servers following it had read), perhaps with other
//! lines written since, or replaced by another file.
//!
//! The database remembers the last [`TAIL`] bytes before each of its *marks*: where a reading
//! stopped, and every [`MARK_EVERY`] bytes or so in between. The rule: the mapping is still the
//! one read up to a mark if the bytes before that mark are unchanged (the rule the database has
//! always applied to where it stopped, applied to earlier places). From the last such mark on, the
//! mapping's lines are compared with the rows the database holds for them (each row keeps the
//! offset of the line it came from): a line that gives the same version, at the same offset, with
//! the same URL and blob, is kept without being read into the database again. Where the first line
//! differs (or the file ends), the mapping was cut: the rows of the lines at or past there are
//! dropped and reading goes on from there. All of it in the reading's one transaction, so that
//! the other processes sharing the database see the mapping before the cut or after it, never a
//! half-cut one, and the URLs of the lines kept are served throughout.
//!
//! The cost is the lines cut (their rows dropped by the keys the database keeps of the last
//! [`RECENT`] bytes read; a deeper cut scans both tables once) and at most [`MARK_EVERY`] bytes
//! of the lines kept (compared), not the whole mapping. A mapping where no
//! mark's bytes match (another file put at its path) agrees nowhere and is read again whole.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::db::sql;
use super::read::sha512_of;
use super::MapEntry;
use crate::{Error, Result};

/// Bytes of the mapping kept at each mark to recognise it (the last ones before it).
pub(super) const TAIL: u64 = 256;
/// Bytes between marks at most (about a thousand lines): what is compared again after a cut.
pub(super) const MARK_EVERY: u64 = 256 << 10;
/// The last bytes read whose lines' keys are kept (`recent`, some 64,000 lines), so that a cut
/// back among them drops its rows by key.
pub(super) const RECENT: u64 = 16 << 20;

/// How far the mapping (`len` bytes) still holds what the database `tx` read from it (`consumed`
/// bytes): `consumed` when it does (it grew, or did not change), else the start of the first line
/// that differs from what the database holds, whose rows it drops (see the module documentation).
/// Returns that position and how many URLs were dropped.
pub(super) fn agreed(
    tx: &Connection,
    db: &Path,
    file: &mut File,
    len: u64,
    consumed: u64,
    mapping: &Path,
) -> Result<(u64, u64)> {
    let io = |op| move |e| Error::io(op, mapping, e);
    if consumed == 0 {
        return Ok((0, 0));
    }
    let mark = matching_mark(tx, db, file, len.min(consumed))?.unwrap_or(0);
    if mark == consumed {
        return Ok((consumed, 0));
    }
    let end = kept_lines(tx, db, file, mark, consumed).map_err(|e| match e {
        Compare::Io(e) => io("read")(e),
        Compare::Db(e) => e,
    })?;
    tx.execute("DELETE FROM marks WHERE at > ?1", [mark as i64])
        .map_err(sql(db, "drop the mapping's marks"))?;
    if end == consumed {
        return Ok((consumed, 0));
    }
    let dropped = drop_from(tx, db, end)?;
    tx.execute(
        "UPDATE source SET conflict = NULL, conflict_at = NULL WHERE conflict_at >= ?1",
        [end as i64],
    )
    .map_err(sql(db, "drop the conflict cut"))?;
    tracing::info!(
        mapping = %mapping.display(),
        read = consumed,
        kept = end,
        urls_dropped = dropped,
        "the mapping was cut back or replaced; dropping what was read past where it still agrees"
    );
    Ok((end, dropped as u64))
}

/// Drops the rows of the lines at or past `end`; returns how many URLs went. Their keys are
/// among the recent lines' when `end` is within the last [`RECENT`] bytes read (a migration cuts
/// back to its last checkpoint: a second or 500 documents ago); a cut deeper than that drops them
/// by a scan of both tables, which costs the whole database once.
fn drop_from(tx: &Connection, db: &Path, end: u64) -> Result<u64> {
    let what = "drop the lines cut";
    if end == 0 {
        tx.execute_batch(
            "DELETE FROM versions; DELETE FROM marks; DELETE FROM recent; \
             UPDATE source SET recent_from = 0;",
        )
        .map_err(sql(db, what))?;
        return tx
            .execute("DELETE FROM names", [])
            .map(|n| n as u64)
            .map_err(sql(db, what));
    }
    let recent_from: i64 = tx
        .query_row("SELECT recent_from FROM source", [], |r| r.get(0))
        .map_err(sql(db, what))?;
    let end_sql = end as i64;
    if end_sql < recent_from {
        tracing::info!(
            end,
            recent_from,
            "the mapping was cut back past its recent lines; scanning for the rows to drop"
        );
        tx.execute("DELETE FROM versions WHERE at >= ?1", [end_sql])
            .map_err(sql(db, what))?;
        let urls = tx
            .execute("DELETE FROM names WHERE at >= ?1", [end_sql])
            .map_err(sql(db, what))?;
        tx.execute("DELETE FROM recent", [])
            .map_err(sql(db, what))?;
        tx.execute("UPDATE source SET recent_from = ?1", [end_sql])
            .map_err(sql(db, what))?;
        return Ok(urls as u64);
    }
    let mut urls = 0u64;
    {
        let mut lines = tx
            .prepare_cached("SELECT at, name, file, version FROM recent WHERE at >= ?1")
            .map_err(sql(db, what))?;
        let mut rows = lines.query([end_sql]).map_err(sql(db, what))?;
        let mut version = tx
            .prepare_cached("DELETE FROM versions WHERE name = ?1 AND version = ?2 AND at = ?3")
            .map_err(sql(db, what))?;
        let mut name = tx
            .prepare_cached("DELETE FROM names WHERE name = ?1 AND file = ?2 AND at = ?3")
            .map_err(sql(db, what))?;
        while let Some(row) = rows.next().map_err(sql(db, what))? {
            let (at, n, file, v): (i64, String, String, String) = (
                row.get(0).map_err(sql(db, what))?,
                row.get(1).map_err(sql(db, what))?,
                row.get(2).map_err(sql(db, what))?,
                row.get(3).map_err(sql(db, what))?,
            );
            // Only the rows this line made (a key seen on an earlier line keeps that line's row).
            version.execute(params![n, v, at]).map_err(sql(db, what))?;
            urls += name.execute(params![n, file, at]).map_err(sql(db, what))? as u64;
        }
    }
    tx.execute("DELETE FROM recent WHERE at >= ?1", [end_sql])
        .map_err(sql(db, what))?;
    Ok(urls)
}

/// Forgets the recent lines before `at` (the keys of lines that far back are no longer kept:
/// a cut below there scans, see [`drop_from`]).
pub(super) fn forget_before(tx: &Connection, db: &Path, at: u64) -> Result<()> {
    let what = "forget older lines";
    tx.execute("DELETE FROM recent WHERE at < ?1", [at as i64])
        .map_err(sql(db, what))?;
    tx.execute(
        "UPDATE source SET recent_from = max(recent_from, ?1)",
        [at as i64],
    )
    .map_err(sql(db, what))?;
    Ok(())
}

/// The last mark at or before `upto` whose bytes the file still holds, if any.
fn matching_mark(tx: &Connection, db: &Path, file: &mut File, upto: u64) -> Result<Option<u64>> {
    let what = "read the mapping's marks";
    let mut q = tx
        .prepare_cached("SELECT at, tail FROM marks WHERE at <= ?1 AND at > 0 ORDER BY at DESC")
        .map_err(sql(db, what))?;
    let mut rows = q.query([upto as i64]).map_err(sql(db, what))?;
    while let Some(row) = rows.next().map_err(sql(db, what))? {
        let at: i64 = row.get(0).map_err(sql(db, what))?;
        let tail: Vec<u8> = row.get(1).map_err(sql(db, what))?;
        let (at, n) = (at.max(0) as u64, tail.len() as u64);
        if n <= at && bytes_before(file, at, n).ok().is_some_and(|b| b == tail) {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

enum Compare {
    Io(std::io::Error),
    Db(Error),
}

/// The end of the whole lines of `file`, from `from` and before `consumed`, that the database
/// holds as they are (see the module documentation).
fn kept_lines(
    tx: &Connection,
    db: &Path,
    file: &mut File,
    from: u64,
    consumed: u64,
) -> std::result::Result<u64, Compare> {
    file.seek(SeekFrom::Start(from)).map_err(Compare::Io)?;
    let mut reader = BufReader::with_capacity(64 << 10, &mut *file);
    let (mut at, mut line) = (from, Vec::new());
    while at < consumed {
        line.clear();
        let n = super::read::read_line(&mut reader, &mut line).map_err(Compare::Io)?;
        if n == 0 || !line.ends_with(b"\n") {
            break;
        }
        let text = line.trim_ascii();
        if !text.is_empty() {
            let Ok(entry) = serde_json::from_slice::<MapEntry>(text) else {
                break;
            };
            if !held(tx, db, &entry, at).map_err(Compare::Db)? {
                break;
            }
        }
        at += n as u64;
    }
    Ok(at)
}

/// Whether the database holds `entry` as read from a line at byte `at`: its version from that
/// line, and its URL's blob.
fn held(tx: &Connection, db: &Path, entry: &MapEntry, at: u64) -> Result<bool> {
    let Ok(key) = sha512_of(entry) else {
        return Ok(false);
    };
    let version: Option<i64> = tx
        .prepare_cached("SELECT at FROM versions WHERE name = ?1 AND version = ?2")
        .and_then(|mut q| {
            q.query_row(params![entry.name, entry.version], |r| r.get(0))
                .optional()
        })
        .map_err(sql(db, "look up a version"))?;
    if version != Some(at as i64) {
        return Ok(false);
    }
    let blob: Option<Vec<u8>> = tx
        .prepare_cached("SELECT sha512 FROM names WHERE name = ?1 AND file = ?2")
        .and_then(|mut q| {
            q.query_row(params![entry.name, entry.file], |r| r.get(0))
                .optional()
        })
        .map_err(sql(db, "look up a tarball URL"))?;
    Ok(blob.as_deref() == Some(key.as_bytes().as_slice()))
}

/// Records marks at `at` (each with the bytes of `file` before it), and drops the one before the
/// last unless it is needed to keep marks at most [`MARK_EVERY`] apart.
pub(super) fn mark(tx: &Connection, db: &Path, file: &mut File, at: &[u64]) -> Result<()> {
    for &p in at {
        let tail = bytes_before(file, p, TAIL.min(p)).map_err(|e| Error::io("read", db, e))?;
        tx.prepare_cached("INSERT OR REPLACE INTO marks VALUES (?1, ?2)")
            .and_then(|mut q| q.execute(params![p as i64, tail]))
            .map_err(sql(db, "record a mark"))?;
    }
    let Some(&last) = at.last() else {
        return Ok(());
    };
    let before: Vec<i64> = tx
        .prepare_cached("SELECT at FROM marks WHERE at < ?1 ORDER BY at DESC LIMIT 2")
        .and_then(|mut q| {
            q.query_map([last as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(sql(db, "read the mapping's marks"))?;
    if let [q, s @ ..] = before.as_slice() {
        let s = s.first().copied().unwrap_or(0).max(0) as u64;
        if last - s <= MARK_EVERY {
            tx.execute("DELETE FROM marks WHERE at = ?1", [q])
                .map_err(sql(db, "drop a mark"))?;
        }
    }
    Ok(())
}

/// The `n` bytes of `file` that end at byte `end`.
pub(super) fn bytes_before(file: &mut File, end: u64, n: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; n as usize];
    file.seek(SeekFrom::Start(end - n))?;
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use super::super::db::MapDb;
    use super::*;

    fn line(i: usize) -> String {
        let mut h = crate::integrity::MultiHasher::new(&[crate::Algorithm::Sha512]);
        h.update(format!("blob {i}").as_bytes());
        let entry = MapEntry {
            name: format!("pkg-{i}"),
            version: "1.0.0".into(),
            file: format!("pkg-{i}-1.0.0.tgz"),
            integrity: h
                .finalize()
                .integrity()
                .map(|i| i.to_string())
                .unwrap_or_default(),
            shasum: "00".into(),
            size: 3,
        };
        format!(
            "{}\n",
            serde_json::to_string(&entry).unwrap_or_else(|e| panic!("{e}"))
        )
    }

    fn lines(range: std::ops::Range<usize>) -> String {
        range.map(line).collect()
    }

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn ok<T>(r: Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("{e}: {:?}", std::error::Error::source(&e)))
    }

    /// A directory for a mapping, and the mapping's path in it.
    fn mapping() -> (tempfile::TempDir, PathBuf) {
        let dir = ok(tempfile::tempdir().map_err(|e| Error::io("tempdir", Path::new("."), e)));
        let map = dir.path().join("map.jsonl");
        (dir, map)
    }

    /// Cuts the mapping back to `len` bytes.
    fn cut_to(map: &Path, len: u64) {
        ok(File::options()
            .write(true)
            .open(map)
            .and_then(|f| f.set_len(len))
            .map_err(|e| Error::io("cut", map, e)));
    }

    fn has(db: &MapDb, i: usize) -> bool {
        ok(db.url(&format!("pkg-{i}"), &format!("pkg-{i}-1.0.0.tgz"))).is_some()
    }

    /// A mapping read in while other connections take turns holding a read snapshot (as `serve`
    /// processes looking URLs up come to): the reading's forced checkpoints start the WAL over
    /// (its file shrinks back to what `journal_size_limit` keeps) instead of letting it grow for
    /// as long as the reading lasts. In tests the bound is 1 MiB and the limit 256 KiB.
    #[test]
    fn a_reading_beside_readers_holding_snapshots_starts_the_wal_over() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        use std::time::Duration;

        let (dir, map) = mapping();
        let sqlite = dir.path().join("map.jsonl.sqlite");
        append(&map, &lines(0..10));
        let db = ok(MapDb::open(&map));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, shrank) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut threads: Vec<_> = [0u64, 75]
            .into_iter()
            .map(|delay| {
                let (sqlite, stop) = (sqlite.clone(), stop.clone());
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(delay));
                    let conn =
                        ok(rusqlite::Connection::open(&sqlite).map_err(sql(&sqlite, "open")));
                    while !stop.load(Ordering::Relaxed) {
                        let hold = || -> rusqlite::Result<()> {
                            conn.execute_batch("BEGIN")?;
                            conn.query_row("SELECT count(*) FROM source", [], |r| {
                                r.get::<_, i64>(0)
                            })?;
                            std::thread::sleep(Duration::from_millis(150));
                            conn.execute_batch("COMMIT")
                        };
                        ok(hold().map_err(sql(&sqlite, "hold a snapshot")));
                    }
                })
            })
            .collect();
        let mut wal = sqlite.as_os_str().to_owned();
        wal.push("-wal");
        let (stop2, peak2, shrank2) = (stop.clone(), peak.clone(), shrank.clone());
        threads.push(std::thread::spawn(move || {
            let mut last = 0;
            while !stop2.load(Ordering::Relaxed) {
                let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                shrank2.fetch_add(u64::from(size < last), Ordering::Relaxed);
                peak2.fetch_max(size, Ordering::Relaxed);
                last = size;
                std::thread::sleep(Duration::from_millis(1));
            }
        }));
        std::thread::sleep(Duration::from_millis(100));
        append(&map, &lines(10..120_000));
        ok(db.catch_up());
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join()
                .unwrap_or_else(|_| panic!("a thread of the test failed"));
        }
        assert_eq!(db.len(), 120_000);
        let (peak, shrank) = (peak.load(Ordering::Relaxed), shrank.load(Ordering::Relaxed));
        eprintln!("peak WAL {} KiB, started over {shrank} times", peak >> 10);
        // Three transactions of 50,000 lines (the last shorter), each checkpointed after it:
        // without that the WAL held all three (25 MiB) and never shrank; with it, 11 MiB at most.
        assert!(shrank >= 1, "never started over, peak {} KiB", peak >> 10);
        assert!(peak < 16 << 20, "the WAL grew to {} KiB", peak >> 10);
    }

    #[test]
    fn follows_a_growing_mapping() {
        let (_dir, map) = mapping();
        append(&map, &lines(0..10));
        let db = ok(MapDb::open(&map));
        assert_eq!(db.len(), 10);
        append(&map, &lines(10..20));
        ok(db.catch_up());
        assert_eq!(db.len(), 20);
        assert!(has(&db, 19));
    }

    fn rows(db: &Path, query: &str) -> i64 {
        let conn = ok(rusqlite::Connection::open(db).map_err(sql(db, "open")));
        ok(conn
            .query_row(query, [], |r| r.get(0))
            .map_err(sql(db, "query")))
    }

    /// Cut back below what was read (past two marks), then other lines appended beyond the old
    /// length: the rows before the cut keep their offsets, those past it are dropped, and the
    /// marks the reading left behind it are gone.
    #[test]
    fn a_cut_drops_only_the_rows_past_it() {
        let (dir, map) = mapping();
        let sqlite = dir.path().join("map.jsonl.sqlite");
        let text = lines(0..3000);
        assert!(text.len() as u64 > 2 * MARK_EVERY, "{}", text.len());
        append(&map, &text);
        let db = ok(MapDb::open(&map));
        assert!(rows(&sqlite, "SELECT count(*) FROM marks") >= 3);
        let keep = lines(0..2000).len() as u64;
        cut_to(&map, keep);
        append(&map, &lines(5000..6500));
        ok(db.catch_up());
        assert_eq!(db.len(), 3500);
        assert!(has(&db, 1999) && !has(&db, 2000) && !has(&db, 2999) && has(&db, 6499));
        let at = |i: usize| lines(0..i).len() as i64;
        let q = "SELECT at FROM names WHERE name = 'pkg-1999'";
        assert_eq!(rows(&sqlite, q), at(1999));
        let q = "SELECT count(*) FROM versions WHERE name LIKE 'pkg-2%' AND length(name) = 8";
        assert_eq!(rows(&sqlite, q), 0, "versions of the lines cut");
        let q = "SELECT max(at) FROM marks";
        assert_eq!(
            rows(&sqlite, q),
            keep as i64 + lines(5000..6500).len() as i64
        );
    }

    /// A cut deeper than the recent lines whose keys are kept drops the same rows by a scan; and
    /// a line past the cut that repeats one before it (the same URL and version) takes the earlier
    /// line's rows with it in neither case.
    #[test]
    fn a_cut_past_the_recent_lines_scans_and_repeated_lines_keep_their_rows() {
        for deep in [false, true] {
            let (dir, map) = mapping();
            let sqlite = dir.path().join("map.jsonl.sqlite");
            append(&map, &(lines(0..2000) + &line(5) + &lines(2000..3000)));
            let db = ok(MapDb::open(&map));
            let keep = lines(0..1500).len() as u64;
            if deep {
                // As if the lines before 1,800 were read more than `RECENT` bytes ago.
                let conn = ok(rusqlite::Connection::open(&sqlite).map_err(sql(&sqlite, "open")));
                let forgot = lines(0..1800).len() as u64;
                ok(forget_before(&conn, &sqlite, forgot));
            }
            cut_to(&map, keep);
            append(&map, &lines(5000..5010));
            ok(db.catch_up());
            assert_eq!(db.len(), 1510, "deep {deep}");
            assert!(has(&db, 5) && has(&db, 1499) && !has(&db, 1500) && !has(&db, 2999));
            let q = "SELECT count(*) FROM versions WHERE name = 'pkg-5'";
            assert_eq!(rows(&sqlite, q), 1, "deep {deep}");
            let q = "SELECT min(at) FROM recent";
            let first_recent = if deep { keep as i64 } else { 0 };
            assert_eq!(rows(&sqlite, q), first_recent, "deep {deep}");
        }
    }

    /// Another file at the mapping's path (here the same lines in another order, shorter): read
    /// again whole. A line half written at the end is no place to cut at either.
    #[test]
    fn a_replaced_mapping_is_read_again() {
        let (_dir, map) = mapping();
        append(&map, &lines(0..100));
        let db = ok(MapDb::open(&map));
        ok(
            std::fs::write(&map, lines(50..90) + &lines(0..10) + &line(10)[..20])
                .map_err(|e| Error::io("write", &map, e)),
        );
        ok(db.catch_up());
        assert_eq!(db.len(), 50);
        assert!(has(&db, 0) && has(&db, 89) && !has(&db, 10) && !has(&db, 95));
    }

    /// A conflict recorded from a line past the cut is forgotten with it.
    #[test]
    fn a_conflict_cut_is_forgotten() {
        let (_dir, map) = mapping();
        append(&map, &lines(0..5));
        let twin = line(7).replace("pkg-7", "pkg-1");
        append(&map, &twin);
        let db = ok(MapDb::open(&map));
        assert!(ok(db.conflict()).is_some());
        cut_to(&map, lines(0..5).len() as u64);
        ok(db.catch_up());
        assert_eq!(ok(db.conflict()), None);
        assert_eq!(db.len(), 5);
    }

    /// A database of the first schema (no offsets for URLs, no version) is built again once.
    #[test]
    fn an_old_database_is_built_again() {
        let (dir, map) = mapping();
        let sqlite = dir.path().join("map.jsonl.sqlite");
        append(&map, &lines(0..3));
        let conn = ok(rusqlite::Connection::open(&sqlite).map_err(sql(&sqlite, "open")));
        ok(conn
            .execute_batch(
                "CREATE TABLE names(name TEXT NOT NULL, file TEXT NOT NULL, sha512 BLOB NOT NULL,
                     PRIMARY KEY(name, file)) WITHOUT ROWID;
                 CREATE TABLE versions(name TEXT NOT NULL, version TEXT NOT NULL,
                     at INTEGER NOT NULL, PRIMARY KEY(name, version)) WITHOUT ROWID;
                 CREATE TABLE source(id INTEGER PRIMARY KEY CHECK (id = 0),
                     consumed INTEGER NOT NULL, tail BLOB NOT NULL, urls INTEGER NOT NULL,
                     conflict TEXT);
                 INSERT INTO source VALUES (0, 0, x'', 0, NULL);",
            )
            .map_err(sql(&sqlite, "old schema")));
        drop(conn);
        let db = ok(MapDb::open(&map));
        assert_eq!(db.len(), 3);
        assert!(has(&db, 2));
        assert_eq!(rows(&sqlite, "PRAGMA user_version"), 3);
        assert_eq!(rows(&sqlite, "SELECT count(*) FROM names WHERE at > 0"), 2);
    }

    /// A database whose write lock another process holds past the busy timeout (reading a large
    /// mapping in) is waited for, not left for a second database in the temp directory.
    #[test]
    fn a_database_locked_past_the_busy_timeout_is_waited_for() {
        let (dir, map) = mapping();
        let sqlite = dir.path().join("map.jsonl.sqlite");
        append(&map, &lines(0..3));
        drop(ok(MapDb::open(&map)));
        append(&map, &lines(3..4));
        let holder = ok(rusqlite::Connection::open(&sqlite).map_err(sql(&sqlite, "open")));
        ok(holder
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(sql(&sqlite, "lock")));
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(700));
            holder.execute_batch("COMMIT").map(|()| holder)
        });
        let db = ok(MapDb::open(&map));
        assert!(release.join().is_ok_and(|r| r.is_ok()));
        assert_eq!(db.len(), 4);
        // Read into the database beside the mapping, not into one of its own elsewhere.
        assert_eq!(rows(&sqlite, "SELECT count(*) FROM names"), 4);
    }
}
