//! Making a new index file whole: built under a temp name beside its place, then renamed into
//! place without overwriting, so that every process sees either no index or a complete one.
//!
//! Built in place, as SQLite would, a new index costs three fsyncs (the rollback journal of the
//! switch to WAL, its directory, the file) before its first commit, paid even by a store opened
//! with `fsync=false`: about 1 ms of the CLI's `put` of one file into a new store here (measured
//! in docs/index.md). Built aside, the file needs no journal and no sync while it is private, and
//! one fsync of the file and one of the directory when the store is durable. It also ends two
//! races of the in-place build: a crash can no longer leave a half-made file where the index
//! belongs, and processes creating one store at once no longer wait on each other's locks for the
//! switch to WAL (each builds its own file, and the first rename wins).

use std::path::Path;
use std::time::{Duration, SystemTime};

use rusqlite::Connection;

use super::super::sibling;
use super::{rw_flags, PAGE_SIZE, SCHEMA, SCHEMA_VERSION};
use crate::backend::fs::durable::{rename_noclobber, sync_dir};
use crate::{Error, Result};

/// What a build's temp name starts with, after the index's own file name.
const BUILD_INFIX: &str = ".new-";

/// A build older than this was left by a process that died while building (a build takes
/// milliseconds), and is removed by the next build.
const STALE_BUILD: Duration = Duration::from_secs(600);

/// Creates the index at `path` unless a file is there already (another process's, which is just as
/// good). `durable`: the file and its name are on disk before this returns.
pub(crate) fn create(path: &Path, durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    sweep_stale(dir, &name);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!("{name}{BUILD_INFIX}{}-{nanos}", std::process::id()));
    let built = build(&tmp).map_err(|e| super::error(&tmp, "create", e));
    let placed = built.and_then(|()| place(&tmp, path, durable));
    if !matches!(placed, Ok(true)) {
        // Lost the race (another file is in place), or failed: the build goes either way.
        remove_build(&tmp);
    }
    placed.map(|_| ())
}

/// Writes the empty index, schema and all, to `tmp`: no journal and no syncs (nothing else knows
/// the file yet), 1 KiB pages, then switched to WAL, which only marks the header. Closing the
/// connection leaves the file alone, without a `-wal` or `-shm` beside it.
fn build(tmp: &Path) -> rusqlite::Result<()> {
    let conn = Connection::open_with_flags(tmp, rw_flags())?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.query_row("PRAGMA journal_mode=OFF", [], |r| r.get::<_, String>(0))?;
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.execute_batch(SCHEMA)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!("the switch to WAL left journal_mode {mode}")),
        ));
    }
    conn.close().map_err(|(_, e)| e)
}

/// Renames the built file into place unless a file is there. `Ok(false)`: one was.
fn place(tmp: &Path, path: &Path, durable: bool) -> Result<bool> {
    if durable {
        std::fs::File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("fsync", tmp, e))?;
    }
    let placed = rename_noclobber(tmp, path).map_err(|e| Error::io("rename", tmp, e))?;
    if placed && durable {
        if let Some(dir) = path.parent() {
            sync_dir(dir).map_err(|e| Error::io("fsync", dir, e))?;
        }
    }
    Ok(placed)
}

/// Removes a build and whatever SQLite may have left beside it.
fn remove_build(tmp: &Path) {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let _ = std::fs::remove_file(sibling(tmp, suffix));
    }
}

/// Removes builds of `name` in `dir` older than [`STALE_BUILD`]. Best effort: a leftover costs a
/// few KiB and is tried again by the next build.
fn sweep_stale(dir: &Path, name: &str) {
    let prefix = format!("{name}{BUILD_INFIX}");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(&prefix)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_BUILD);
        if stale {
            tracing::debug!(path = %entry.path().display(), "removing an index build left by a dead process");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_index_is_complete_in_wal_mode_with_nothing_left_beside_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i.sqlite");
        create(&path, true).expect("create");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["i.sqlite"]);
        let conn = Connection::open(&path).expect("open");
        let get = |pragma: &str| -> String {
            conn.query_row(&format!("PRAGMA {pragma}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| format!("{v:?}"))
            .expect(pragma)
        };
        assert!(
            get("journal_mode").contains("wal"),
            "{}",
            get("journal_mode")
        );
        assert_eq!(get("page_size"), "Integer(1024)");
        assert_eq!(get("user_version"), format!("Integer({SCHEMA_VERSION})"));
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name LIKE 'blobs%'",
                [],
                |r| r.get(0),
            )
            .expect("schema");
        assert_eq!(tables, 4, "the table and its three indexes");
    }

    #[test]
    fn a_file_already_in_place_is_kept_and_the_build_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i.sqlite");
        std::fs::write(&path, b"another process's").expect("write");
        create(&path, false).expect("create");
        assert_eq!(std::fs::read(&path).expect("read"), b"another process's");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn only_stale_builds_are_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = dir.path().join("i.sqlite.new-1-1");
        let young = dir.path().join("i.sqlite.new-2-2");
        let other = dir.path().join("other.new-3-3");
        for p in [&old, &young, &other] {
            std::fs::write(p, b"x").expect("write");
        }
        let long_ago = SystemTime::now() - 2 * STALE_BUILD;
        for p in [&old, &other] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .and_then(|f| f.set_modified(long_ago))
                .expect("age");
        }
        sweep_stale(dir.path(), "i.sqlite");
        assert!(!old.exists() && young.exists() && other.exists());
    }
}
