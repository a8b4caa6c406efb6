//! An index file set aside while other processes have it open.
//!
//! `fsck` moves a damaged index aside (`blobs.sqlite.corrupt.<secs>`) and a new one takes its name.
//! A process that opened the old file before (a server, a migration) keeps its connections on it:
//! its lookups would miss every record the other processes make from then on, until it is
//! restarted: a server would answer 404 for tarballs put since by sha1 or blake3. (Closing those
//! connections is safe: SQLite sees that the file moved and then neither checkpoints it nor
//! deletes the `-wal` and `-shm` names, which are the new index's by then.)
//!
//! So each open database remembers which file (device and inode) it was opened on, and a lookup
//! that misses checks it: if another file is at the index's path, this process lets go of the old
//! one and asks the new one. A miss costs a `stat` more; a hit, nothing.

use std::path::{Path, PathBuf};

use super::super::file_id;
use super::{lock, move_aside, sibling, FsIndex};
use crate::Result;

/// Which file is at `path` (its device and inode), if that can be told.
pub(super) fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().as_ref().and_then(file_id::of)
}

/// Whether the file at `path` is no longer `file`, the one a database was opened on.
pub(super) fn is_replaced(path: &Path, file: Option<(u64, u64)>) -> bool {
    file.is_some() && identity(path) != file
}

impl FsIndex {
    /// What `look` (a lookup) finds, asked again of the file now at the index's path when it
    /// finds nothing in a file set aside.
    pub(super) fn look_up<T>(&self, look: impl Fn() -> Result<Option<T>>) -> Result<Option<T>> {
        let found = look()?;
        if found.is_none() && self.reopen_if_replaced() {
            return look();
        }
        Ok(found)
    }

    /// Lets go of this process's database if its file is no longer at the index's path, so that
    /// the next use opens the one there. Returns whether it did.
    fn reopen_if_replaced(&self) -> bool {
        let mut slot = lock(&self.db);
        let replaced = slot
            .as_ref()
            .is_some_and(|db| is_replaced(&self.path, db.file));
        if replaced {
            tracing::info!(index = %self.path.display(), "the index file was replaced (set aside by fsck): opening the new one");
            *slot = None;
        }
        replaced
    }

    /// Moves the database (and its log) aside as `blobs.sqlite.corrupt.<secs>`, so that a new one
    /// is made on next use. Returns where it went.
    pub(super) fn set_aside(&self) -> Result<PathBuf> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let aside = sibling(&self.path, &format!(".corrupt.{secs}"));
        *lock(&self.db) = None;
        move_aside(&self.path, &aside)?;
        Ok(aside)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::digests;
    use super::*;
    use crate::backend::BlobKey;

    /// Two server processes have read and written the index when fsck (a third) sets it aside; a
    /// fourth then records a blob in the new file. One server looks that blob up, the other
    /// records a blob of its own; then both exit. The first finds the record, and every record
    /// made after the set-aside is in the new file, where a fresh process finds it; closing the
    /// servers' connections to the old file leaves the new one's log alone. Before, the first
    /// server kept reading the old file and missed the record (until it was restarted).
    #[test]
    fn processes_holding_an_index_set_aside_move_to_the_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blobs.sqlite");
        let (reader, writer) = (
            FsIndex::open(&path).expect("a"),
            FsIndex::open(&path).expect("b"),
        );
        reader.insert(&[digests(1)], false).expect("insert");
        assert_eq!(writer.len().expect("len"), 1, "both have the file open");
        let aside = FsIndex::open(&path)
            .expect("fsck")
            .set_aside()
            .expect("set aside");
        assert!(aside.exists());
        let other = FsIndex::open(&path).expect("another process");
        other.insert(&[digests(2)], false).expect("insert");
        assert_eq!(
            reader.key_by_sha1(&[2; 20]).expect("look up"),
            Some(BlobKey::new([2; 64])),
            "a record made in the new file is found"
        );
        writer.insert(&[digests(3)], false).expect("insert");
        drop((reader, writer));
        let fresh = FsIndex::open(&path).expect("fresh");
        for n in [2, 3] {
            assert_eq!(
                fresh.digests(&BlobKey::new([n; 64])).expect("read"),
                Some(digests(n)),
                "record {n}"
            );
        }
        drop(other);
    }
}
