//! The mapping: one JSON line per migrated version, `{name, version, file, integrity, shasum,
//! size}`, enough for a registry server (`tarvault serve --map`) to answer the old tarball URLs
//! (`/<name>/-/<file>`) from the store.
//!
//! The versions already mapped are looked up in the mapping's database (`<mapping>.sqlite`,
//! [`crate::mapping::db`], the one `tarvault serve --map` reads): a migration of tens of millions
//! of versions holds in memory only those appended since its last checkpoint, and a resumed one
//! reads only the lines the database does not have yet.
//!
//! Crash safety comes from the checkpoint, not from deduplication after the fact: the mapping is
//! a [`LineLog`], appended to only for documents the checkpoint is about to cover and cut back to
//! the checkpointed length on resume.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use super::lines::LineLog;
use crate::mapping::db::MapDb;
pub use crate::mapping::MapEntry;
use crate::{Error, Result};

/// The versions already in the mapping, shared with the workers so that a version met again (an
/// incremental run, `--follow`) is not fetched again.
pub(crate) type MappedIndex = Arc<Mapped>;

/// The mapping's versions: those its database holds, and those appended since it last read the
/// mapping (until the next checkpoint).
#[derive(Debug)]
pub(crate) struct Mapped {
    db: MapDb,
    pending: RwLock<HashMap<(String, String), MapEntry>>,
}

impl Mapped {
    /// The entry of `name`'s `version`, if mapped.
    pub(crate) fn get(&self, name: &str, version: &str) -> Result<Option<MapEntry>> {
        let pending = self
            .pending
            .read()
            .map_err(|_| Error::InvalidInput("mapping index poisoned".into()))?;
        if let Some(e) = pending.get(&(name.to_string(), version.to_string())) {
            return Ok(Some(e.clone()));
        }
        drop(pending);
        self.db.version(name, version)
    }

    fn insert(&self, entry: MapEntry) -> Result<()> {
        self.pending
            .write()
            .map_err(|_| Error::InvalidInput("mapping index poisoned".into()))?
            .insert((entry.name.clone(), entry.version.clone()), entry);
        Ok(())
    }
}

/// What appending an entry did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Appended {
    /// A new line.
    Written,
    /// The same entry was already there: nothing written.
    Duplicate,
    /// The version is mapped to other bytes: nothing written.
    Conflict(MapEntry),
}

/// Appends mapping lines; see the module docs for the crash-safety contract.
pub(crate) struct MappingWriter {
    lines: LineLog,
    index: MappedIndex,
}

impl MappingWriter {
    /// Opens (creating it if needed) the mapping at `path`, cut back to `keep` bytes: the length
    /// recorded at the last checkpoint. Fails if the file is shorter than that (it was truncated or
    /// replaced behind the migration's back) or if a kept line does not parse.
    pub(crate) fn open(path: &Path, keep: u64) -> Result<MappingWriter> {
        let lines = LineLog::open(path, keep, "mapping")?;
        // Reads the lines the database lacks (every line, the first time; a line that is not a
        // mapping entry fails the open, naming its byte).
        let db = MapDb::open(path)?;
        Ok(MappingWriter {
            lines,
            index: Arc::new(Mapped {
                db,
                pending: RwLock::default(),
            }),
        })
    }

    /// The shared index of mapped versions.
    pub(crate) fn index(&self) -> MappedIndex {
        self.index.clone()
    }

    /// Appends an entry unless its version is already mapped.
    pub(crate) fn append(&mut self, entry: MapEntry) -> Result<Appended> {
        if let Some(old) = self.index.get(&entry.name, &entry.version)? {
            return Ok(if old == entry {
                Appended::Duplicate
            } else {
                Appended::Conflict(old)
            });
        }
        self.lines.append(&entry, "mapping entry")?;
        self.index.insert(entry)?;
        Ok(Appended::Written)
    }

    /// Has the database read the lines appended up to the last [`sync`](Self::sync), and forgets
    /// them from memory (after a checkpoint: memory holds one checkpoint's versions at most).
    pub(crate) fn index_synced(&mut self) -> Result<()> {
        self.index.db.catch_up()?;
        self.index
            .pending
            .write()
            .map_err(|_| Error::InvalidInput("mapping index poisoned".into()))?
            .clear();
        Ok(())
    }

    /// Makes everything appended so far durable and returns the file's length, for the state file.
    pub(crate) fn sync(&mut self) -> Result<u64> {
        self.lines.sync()
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::*;

    fn entry(v: &str, shasum: &str) -> MapEntry {
        let mut h = crate::integrity::MultiHasher::new(&[crate::Algorithm::Sha512]);
        h.update(shasum.as_bytes());
        let integrity = h.finalize().integrity().map(|i| i.to_string());
        MapEntry {
            name: "@a/b".into(),
            version: v.into(),
            file: format!("b-{v}.tgz"),
            integrity: integrity.unwrap_or_default(),
            shasum: shasum.into(),
            size: 3,
        }
    }

    #[test]
    fn cuts_back_to_the_checkpoint_and_refuses_lost_bytes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("map.jsonl");
        let mut w = MappingWriter::open(&path, 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.append(entry("1.0.0", "aa")).ok(), Some(Appended::Written));
        let kept = w.sync().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            w.append(entry("1.0.0", "aa")).ok(),
            Some(Appended::Duplicate)
        );
        assert!(matches!(
            w.append(entry("1.0.0", "bb")),
            Ok(Appended::Conflict(_))
        ));
        assert_eq!(w.append(entry("2.0.0", "cc")).ok(), Some(Appended::Written));
        w.sync().unwrap_or_else(|e| panic!("{e}"));
        drop(w);
        // A torn line after the checkpoint, as a kill mid-write leaves.
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        f.write_all(b"{\"name\":\"tor")
            .unwrap_or_else(|e| panic!("{e}"));
        drop(f);
        let w = MappingWriter::open(&path, kept).unwrap_or_else(|e| panic!("{e}"));
        let index = w.index();
        let get = |v: &str| index.get("@a/b", v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(get("1.0.0"), Some(entry("1.0.0", "aa")));
        assert_eq!(
            get("2.0.0"),
            None,
            "cut back with the line after the checkpoint"
        );
        drop(w);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text.lines().count(), 1);
        let err = MappingWriter::open(&path, kept + 1)
            .err()
            .unwrap_or_else(|| panic!("must refuse"));
        assert_eq!(err.kind(), crate::ErrorKind::Config);
    }
}
