//! Reading a mapping's new lines into its database ([`super::db`]), one batch per transaction.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

use rusqlite::{params, Connection};

use super::cut::{self, MARK_EVERY};
use super::db::sql;
use super::{MapEntry, LINE_MAX};
use crate::backend::BlobKey;
use crate::integrity::{Algorithm, Integrity};
use crate::{Error, Result};

/// Mapping lines read per transaction.
pub(super) const BATCH: usize = 50_000;

/// What one batch did.
pub(super) struct Batch {
    /// A full batch: more lines may follow.
    pub(super) more: bool,
    /// URLs the database maps now.
    pub(super) urls: u64,
}

/// Reads up to [`BATCH`] lines of `mapping` from where the database `tx` (of file `db`) stopped,
/// recording each line's URL (`names`) and version (`versions`), with the line's offset. A
/// mapping that is not the one the database was read from (cut back, or replaced) is first taken
/// back to where the two still agree ([`cut::agreed`]): only the rows of the lines past there are
/// dropped and read again. A line that maps a URL already mapped to another blob is recorded as
/// the mapping's conflict (the first one kept), not as an error, so that the writer of the
/// mapping is not stopped by it; a server refuses such a mapping.
pub(super) fn read_batch(tx: &Connection, mapping: &Path, db: &Path) -> Result<Batch> {
    let (consumed, urls): (i64, i64) = tx
        .query_row("SELECT consumed, urls FROM source", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(sql(db, "read the mapping's position"))?;
    let (consumed, urls) = (consumed.max(0) as u64, urls.max(0) as u64);
    let io = |op| move |e| Error::io(op, mapping, e);
    let mut file = File::open(mapping).map_err(io("open"))?;
    let len = file.metadata().map_err(io("stat"))?.len();
    let (agreed, dropped) = cut::agreed(tx, db, &mut file, len, consumed, mapping)?;
    let (mut consumed, mut urls) = match agreed {
        0 => (0, 0),
        at => (at, urls.saturating_sub(dropped)),
    };
    let last_mark: i64 = tx
        .query_row("SELECT coalesce(max(at), 0) FROM marks", [], |r| r.get(0))
        .map_err(sql(db, "read the mapping's marks"))?;
    let mut last_mark = last_mark.max(0) as u64;
    if len == consumed && last_mark == consumed {
        return Ok(Batch { more: false, urls });
    }
    file.seek(SeekFrom::Start(consumed)).map_err(io("seek"))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut lines = 0;
    let mut line = Vec::new();
    let mut conflict: Option<(String, u64)> = None;
    let mut marks = Vec::new();
    while lines < BATCH {
        line.clear();
        let n = read_line(&mut reader, &mut line).map_err(io("read"))?;
        if n == 0 {
            break;
        }
        if line.len() as u64 > LINE_MAX {
            return Err(Error::Config(format!(
                "mapping {} at byte {consumed} has a line longer than {LINE_MAX} bytes: not a \
                 mapping entry",
                mapping.display()
            )));
        }
        let text = line.trim_ascii();
        if !text.is_empty() {
            let entry: MapEntry = match serde_json::from_slice(text) {
                Ok(e) => e,
                // The last line, still being written: read it once it is whole.
                Err(_) if !line.ends_with(b"\n") => break,
                Err(e) => {
                    let what = format!(
                        "mapping {} at byte {consumed} has a line that is not a mapping entry",
                        mapping.display()
                    );
                    return Err(Error::config(what, e));
                }
            };
            match record(tx, db, &entry, consumed)? {
                Recorded::New => urls += 1,
                Recorded::Known => {}
                Recorded::Conflict => {
                    conflict.get_or_insert_with(|| {
                        let what = format!(
                            "mapping {} names two different blobs for {}/-/{}",
                            mapping.display(),
                            entry.name,
                            entry.file
                        );
                        (what, consumed)
                    });
                }
            }
        }
        lines += 1;
        consumed += n as u64;
        if consumed.saturating_sub(last_mark) >= MARK_EVERY {
            marks.push(consumed);
            last_mark = consumed;
        }
    }
    if marks.last() != Some(&consumed) && consumed > 0 {
        marks.push(consumed);
    }
    cut::mark(tx, db, &mut reader.into_inner(), &marks)?;
    cut::forget_before(tx, db, consumed.saturating_sub(cut::RECENT))?;
    let (conflict, conflict_at) = conflict.unzip();
    tx.execute(
        "UPDATE source SET consumed = ?1, urls = ?2, \
         conflict_at = CASE WHEN conflict IS NULL THEN ?4 ELSE conflict_at END, \
         conflict = coalesce(conflict, ?3)",
        params![
            consumed as i64,
            urls as i64,
            conflict,
            conflict_at.map(|a| a as i64)
        ],
    )
    .map_err(sql(db, "record the mapping's position"))?;
    // Another batch only if this one was full (a partial last line waits for its writer).
    Ok(Batch {
        more: lines == BATCH,
        urls,
    })
}

enum Recorded {
    New,
    Known,
    Conflict,
}

/// Records one entry, whose line starts at byte `at`, and its keys among the recent lines'.
fn record(tx: &Connection, db: &Path, entry: &MapEntry, at: u64) -> Result<Recorded> {
    let key = sha512_of(entry)?;
    tx.prepare_cached("INSERT OR REPLACE INTO recent VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut q| q.execute(params![at as i64, entry.name, entry.file, entry.version]))
        .map_err(sql(db, "record a recent line"))?;
    tx.prepare_cached("INSERT OR IGNORE INTO versions VALUES (?1, ?2, ?3)")
        .and_then(|mut q| q.execute(params![entry.name, entry.version, at as i64]))
        .map_err(sql(db, "record a version"))?;
    let added = tx
        .prepare_cached("INSERT OR IGNORE INTO names VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut q| {
            let blob = key.as_bytes().as_slice();
            q.execute(params![entry.name, entry.file, blob, at as i64])
        })
        .map_err(sql(db, "record a tarball URL"))?;
    if added > 0 {
        return Ok(Recorded::New);
    }
    let old: Vec<u8> = tx
        .prepare_cached("SELECT sha512 FROM names WHERE name = ?1 AND file = ?2")
        .and_then(|mut q| q.query_row(params![entry.name, entry.file], |r| r.get(0)))
        .map_err(sql(db, "check a tarball URL"))?;
    Ok(if old == key.as_bytes().as_slice() {
        Recorded::Known
    } else {
        Recorded::Conflict
    })
}

/// The blob a mapping entry names (its integrity must hold a sha512).
pub(crate) fn sha512_of(entry: &MapEntry) -> Result<BlobKey> {
    Integrity::parse(&entry.integrity)?
        .get(Algorithm::Sha512)
        .and_then(BlobKey::from_hash)
        .ok_or_else(|| {
            Error::Config(format!(
                "mapping entry {}@{} has no sha512 integrity",
                entry.name, entry.version
            ))
        })
}

/// Reads one line of a mapping, with its `\n`, into `line`, but no more than [`LINE_MAX`] + 1
/// bytes: a line longer than [`LINE_MAX`] comes back cut, without its `\n`.
pub(super) fn read_line<R: BufRead>(reader: &mut R, line: &mut Vec<u8>) -> std::io::Result<usize> {
    std::io::Read::take(reader, LINE_MAX + 1).read_until(b'\n', line)
}
