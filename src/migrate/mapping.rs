//! The mapping: one JSON line per migrated version, `{name, version, file, integrity, shasum,
//! size}`, enough for a registry server (`tarvault serve --map`) to answer the old tarball URLs
//! (`/<name>/-/<file>`) from the store.
//!
//! The versions already mapped are looked up in the mapping's database (`<mapping>.sqlite`,
//! [`crate::mapping::db`], the one `tarvault serve --map` reads): a migration of tens of millions
//! of versions holds in memory only those appended since its last checkpoint, and a resumed one
//! reads only the lines the database does not have yet.
//!
//! Crash safety comes from the checkpoint, not from deduplication after the fact: lines are
//! appended only for documents the checkpoint is about to cover, in feed order, and the state file
//! records the mapping's length at each checkpoint. A resumed run cuts the file back to that
//! length, so lines written after the last checkpoint (possibly half a line) disappear and are
//! written again, once, when their documents are redone.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

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
    path: PathBuf,
    out: BufWriter<File>,
    len: u64,
    index: MappedIndex,
}

impl MappingWriter {
    /// Opens (creating it if needed) the mapping at `path`, cut back to `keep` bytes: the length
    /// recorded at the last checkpoint. Fails if the file is shorter than that (it was truncated or
    /// replaced behind the migration's back) or if a kept line does not parse.
    pub(crate) fn open(path: &Path, keep: u64) -> Result<MappingWriter> {
        let io = |op: &'static str| move |e| Error::io(op, path, e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("open"))?;
        let actual = file.metadata().map_err(io("stat"))?.len();
        if actual < keep {
            return Err(Error::Config(format!(
                "mapping {} has {actual} bytes but the state file recorded {keep}: it was cut or \
                 replaced; restore it or start over with a new state file",
                path.display()
            )));
        }
        if actual > keep {
            tracing::info!(
                map = %path.display(),
                dropped = actual - keep,
                "cutting the mapping back to the last checkpoint"
            );
            file.set_len(keep).map_err(io("truncate"))?;
            file.sync_data().map_err(io("fsync"))?;
        }
        // Reads the lines the database lacks (every line, the first time; a line that is not a
        // mapping entry fails the open, naming its byte).
        let db = MapDb::open(path)?;
        let mut file = file;
        file.seek(SeekFrom::End(0)).map_err(io("seek"))?;
        Ok(MappingWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            len: keep,
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
        let mut line = serde_json::to_vec(&entry)
            .map_err(|e| Error::InvalidInput(format!("cannot encode mapping entry: {e}")))?;
        line.push(b'\n');
        self.out
            .write_all(&line)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.len += line.len() as u64;
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
        self.out
            .flush()
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| Error::io("fsync", &self.path, e))?;
        Ok(self.len)
    }
}

#[cfg(test)]
mod tests {
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
