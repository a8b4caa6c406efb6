//! Reading a mapping's new lines into its database ([`super::db`]), one batch per transaction.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use rusqlite::{params, Connection};

use super::db::sql;
use super::MapEntry;
use crate::backend::BlobKey;
use crate::integrity::{Algorithm, Integrity};
use crate::{Error, Result};

/// Mapping lines read per transaction.
pub(super) const BATCH: usize = 50_000;
/// Bytes of the mapping kept to recognise it (the last ones read).
const TAIL: u64 = 256;

/// What one batch did.
pub(super) struct Batch {
    /// A full batch: more lines may follow.
    pub(super) more: bool,
    /// URLs the database maps now.
    pub(super) urls: u64,
}

/// Reads up to [`BATCH`] lines of `mapping` from where the database `tx` (of file `db`) stopped,
/// recording each line's URL (`names`) and version (`versions`, with the line's offset). A
/// mapping that is not the one the database was read from (shorter, or other bytes where it
/// stopped) is read again from its start. A line that maps a URL already mapped to another blob
/// is recorded as the mapping's conflict (the first one kept), not as an error, so that the
/// writer of the mapping is not stopped by it; a server refuses such a mapping.
pub(super) fn read_batch(tx: &Connection, mapping: &Path, db: &Path) -> Result<Batch> {
    let (consumed, tail, urls): (i64, Vec<u8>, i64) = tx
        .query_row("SELECT consumed, tail, urls FROM source", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map_err(sql(db, "read the mapping's position"))?;
    let (mut consumed, mut urls) = (consumed.max(0) as u64, urls.max(0) as u64);
    let io = |op| move |e| Error::io(op, mapping, e);
    let mut file = File::open(mapping).map_err(io("open"))?;
    let len = file.metadata().map_err(io("stat"))?.len();
    if !same_source(&mut file, len, consumed, &tail).map_err(io("read"))? {
        if consumed > 0 {
            tracing::info!(mapping = %mapping.display(), "the mapping was cut back or replaced; reading it again");
        }
        tx.execute_batch(
            "DELETE FROM names; DELETE FROM versions; UPDATE source SET conflict = NULL;",
        )
        .map_err(sql(db, "clear the mapping's database"))?;
        (consumed, urls) = (0, 0);
    }
    if len == consumed {
        return Ok(Batch { more: false, urls });
    }
    file.seek(SeekFrom::Start(consumed)).map_err(io("seek"))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut lines = 0;
    let mut line = Vec::new();
    let mut conflict: Option<String> = None;
    while lines < BATCH {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io("read"))?;
        if n == 0 {
            break;
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
                        format!(
                            "mapping {} names two different blobs for {}/-/{}",
                            mapping.display(),
                            entry.name,
                            entry.file
                        )
                    });
                }
            }
        }
        lines += 1;
        consumed += n as u64;
    }
    let tail =
        bytes_before(&mut reader.into_inner(), consumed, TAIL.min(consumed)).map_err(io("read"))?;
    tx.execute(
        "UPDATE source SET consumed = ?1, tail = ?2, urls = ?3, conflict = coalesce(conflict, ?4)",
        params![consumed as i64, tail, urls as i64, conflict],
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

/// Records one entry, whose line starts at byte `at`.
fn record(tx: &Connection, db: &Path, entry: &MapEntry, at: u64) -> Result<Recorded> {
    let key = sha512_of(entry)?;
    tx.prepare_cached("INSERT OR IGNORE INTO versions VALUES (?1, ?2, ?3)")
        .and_then(|mut q| q.execute(params![entry.name, entry.version, at as i64]))
        .map_err(sql(db, "record a version"))?;
    let added = tx
        .prepare_cached("INSERT OR IGNORE INTO names VALUES (?1, ?2, ?3)")
        .and_then(|mut q| q.execute(params![entry.name, entry.file, key.as_bytes().as_slice()]))
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

/// Whether the mapping still holds, `consumed` bytes in, the `tail` read last.
fn same_source(file: &mut File, len: u64, consumed: u64, tail: &[u8]) -> std::io::Result<bool> {
    let n = tail.len() as u64;
    if len < consumed || n > consumed {
        return Ok(false);
    }
    Ok(bytes_before(file, consumed, n)? == tail)
}

/// The `n` bytes of `file` that end at byte `end`.
fn bytes_before(file: &mut File, end: u64, n: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; n as usize];
    file.seek(SeekFrom::Start(end - n))?;
    file.read_exact(&mut bytes)?;
    Ok(bytes)
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
