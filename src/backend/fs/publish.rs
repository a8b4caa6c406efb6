//! Publishing verified temp files under their addresses, and recording them in the index.
//!
//! A put that finds its blob already stored writes nothing more (over 8 MiB, where the stored file
//! is not hashed in place, it renames a second name of its own copy over it), but it keeps its own
//! copy (the temp file) until its record is written: the file it found may be one another process
//! linked a moment before and then takes back, because that process could not write its own record
//! (a full disk, a write lock held too long). The record of each blob is written under the index's
//! write lock, and so is a take-back; whichever comes first decides. A take-back removes only blobs
//! no record names, and a record that finds its blob gone links its own copy in its place. So no
//! put reports a blob stored that is not, and no failed put leaves a blob half-indexed.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::read::Found;
use super::writer::{key_of, remove_if_exists};
use super::{durable, FsInner};
use crate::backend::{BlobKey, Committed};
use crate::integrity::Digests;
use crate::{Error, Result};

impl FsInner {
    /// Links verified temp files into place, then records them in the index. With `durable`,
    /// each directory touched is synced before the records are written and the records are
    /// durable on return; without, the caller flushes the filesystem afterwards (group commit).
    /// If the records cannot be written (disk full, a damaged index), the blobs this call linked
    /// are taken back (those no other put has recorded meanwhile) and every item fails: nothing
    /// is left visible half-indexed.
    pub(super) fn publish(
        &self,
        items: &[(PathBuf, Digests)],
        durable: bool,
    ) -> Vec<Result<Committed>> {
        let blobs = self.layout.blobs();
        let results: Vec<Result<Committed>> = items
            .iter()
            .map(|(tmp, d)| self.publish_one(tmp, d, &blobs, durable))
            .collect();
        self.record_linked(items, results, durable)
    }

    /// The second half of [`publish`](Self::publish): records what the first linked (`results`,
    /// one per item), or takes it back.
    fn record_linked(
        &self,
        items: &[(PathBuf, Digests)],
        mut results: Vec<Result<Committed>>,
        durable: bool,
    ) -> Vec<Result<Committed>> {
        let linked: Vec<Digests> = items
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|((_, d), _)| *d)
            .collect();
        // The copies of blobs found stored, kept until their records are written (module docs).
        let kept: Vec<(BlobKey, &Path)> = items
            .iter()
            .zip(&results)
            .filter(|(_, r)| matches!(r, Ok(Committed::AlreadyPresent)))
            .map(|((tmp, d), _)| (key_of(d), tmp.as_path()))
            .collect();
        let spares: HashMap<BlobKey, &Path> = kept.iter().copied().collect();
        let relinked = RefCell::new(HashSet::new());
        let lost = RefCell::new(HashSet::new());
        let recorded = self.record(&linked, durable, |key| {
            if !self.blob_gone(key) {
                return true;
            }
            let Some(spare) = spares.get(key) else {
                // Stored by this call and deleted since: the delete came after the put.
                return false;
            };
            match self.relink(spare, key, durable) {
                Ok(()) => {
                    relinked.borrow_mut().insert(*key);
                    true
                }
                Err(e) => {
                    tracing::warn!(blob = %key, error = %e.report(), "could not link a blob taken back by another put");
                    lost.borrow_mut().insert(*key);
                    false
                }
            }
        });
        for (_, tmp) in &kept {
            if let Err(e) = remove_if_exists(tmp) {
                tracing::warn!(error = %e.report(), "could not remove a temp file (swept later)");
            }
        }
        let (relinked, lost) = (relinked.into_inner(), lost.into_inner());
        let e = match recorded {
            Ok(()) => {
                for ((_, d), r) in items.iter().zip(results.iter_mut()) {
                    let key = key_of(d);
                    if relinked.contains(&key) {
                        *r = Ok(Committed::Stored);
                    } else if lost.contains(&key) {
                        *r = Err(Error::DeletedDuringPut {
                            address: key.to_string(),
                        });
                    }
                }
                return results;
            }
            Err(e) => e,
        };
        tracing::warn!(error = %e.report(), "could not index committed blobs; taking them back");
        let stored: Vec<BlobKey> = items
            .iter()
            .zip(&results)
            .map(|((_, d), r)| (key_of(d), r))
            .filter(|(k, r)| matches!(r, Ok(Committed::Stored)) || relinked.contains(k))
            .map(|(k, _)| k)
            .collect();
        self.take_back(&stored);
        let cause = match &e {
            // The index's path is in the error each item gets; the cause follows the message.
            Error::Index {
                message,
                source: Some(source),
                ..
            } => format!("{message}: {}", crate::ErrorReport::new(&**source)),
            Error::Index { message, .. } => message.clone(),
            other => other.report().to_string(),
        };
        let mut first = Some(e);
        for r in results.iter_mut().filter(|r| r.is_ok()) {
            *r = Err(first.take().unwrap_or_else(|| Error::Index {
                path: self.index.path().to_path_buf(),
                message: format!("not recorded with the rest of its batch: {cause}"),
                source: None,
            }));
        }
        results
    }

    /// Writes the records of linked blobs (to the index, or to the old log when asked to),
    /// skipping those for which `present`, asked under the index's write lock, says no.
    fn record(
        &self,
        linked: &[Digests],
        durable: bool,
        present: impl Fn(&BlobKey) -> bool,
    ) -> Result<()> {
        if self.legacy_alias_log {
            let log = self.layout.aliases();
            return super::index::legacy::append(&log, linked, durable)
                .map_err(|e| Error::io("append", log, e));
        }
        self.index
            .insert_present(linked, durable, present)
            .map(|_| ())
    }

    /// Links `spare`, a verified copy of `key`, into its place, which another put has just
    /// emptied.
    fn relink(&self, spare: &Path, key: &BlobKey, durable: bool) -> Result<()> {
        let target = self.layout.blob(key);
        durable::rename_noclobber(spare, &target).map_err(|e| Error::io("publish", &target, e))?;
        match target.parent() {
            Some(dir) if durable => {
                durable::sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))
            }
            _ => Ok(()),
        }
    }

    /// Unlinks the blobs a failed publish linked, under the index's write lock and only those no
    /// record names: a put in another process that found one of them (and so wrote nothing of
    /// its own) and recorded it has made it its own. What cannot be decided (the index is out of
    /// reach) is left in place, visible by sha512, for fsck to index.
    fn take_back(&self, stored: &[BlobKey]) {
        let unlink = |key: &BlobKey| {
            let path = self.layout.blob(key);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not unlink an unindexed blob");
            }
        };
        if self.legacy_alias_log {
            stored.iter().for_each(unlink);
            return;
        }
        if let Err(e) = self.index.take_unrecorded(stored, unlink) {
            tracing::warn!(error = %e.report(), blobs = stored.len(),
                "could not take back unindexed blobs; left for fsck, which indexes them");
        }
    }

    pub(super) fn publish_one(
        &self,
        tmp: &Path,
        d: &Digests,
        blobs: &Path,
        fsync: bool,
    ) -> Result<Committed> {
        let target = self.layout.blob(&key_of(d));
        let dir = target.parent().unwrap_or(blobs).to_path_buf();
        // Rename first and create the shard directories only when they are missing: in a store
        // of any size they nearly always exist, and a stat per blob is then saved.
        let linked = match durable::rename_noclobber(tmp, &target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                durable::create_dirs(&dir, blobs, fsync)
                    .map_err(|e| Error::io("create directory", &dir, e))?;
                durable::rename_noclobber(tmp, &target)
            }
            other => other,
        }
        .map_err(|e| Error::io("publish", &target, e))?;
        let outcome = if linked {
            Committed::Stored
        } else {
            // Same content already stored, unless it was damaged in place: a file of another size
            // or with another blake3 is corrupt, and the verified bytes we hold replace it
            // (nothing good is lost: the old bytes were not). A file too large to hash in place
            // is replaced by them too, and counts as present. A file gone meanwhile is left to
            // the record (below), which links this put's copy.
            match super::read::file_has(&target, d) {
                Ok(Found::Damaged) => {
                    tracing::warn!(blob = %target.display(), "replacing corrupt blob with verified bytes");
                    std::fs::rename(tmp, &target).map_err(|e| Error::io("rename", &target, e))?;
                    Committed::Stored
                }
                Ok(Found::Unchecked) => {
                    self.replace_keeping(tmp, &target);
                    Committed::AlreadyPresent
                }
                _ => {
                    // The temp file stays until the record is written (see `publish`); a blob
                    // gone already is linked from it then.
                    self.freshen_file(&target);
                    Committed::AlreadyPresent
                }
            }
        };
        if fsync {
            durable::sync_dir(&dir).map_err(|e| Error::io("fsync directory", &dir, e))?;
        }
        Ok(outcome)
    }

    /// Puts a second name of the verified copy `tmp` in place of `target` (a stored copy too
    /// large to check in place: `Found::Unchecked`), in one rename, and keeps `tmp` itself as
    /// the spare a put that found its blob keeps until its record is written (module docs). The
    /// second name is a temp file of this store's own, which no sweep takes while the store is
    /// open. The copy's bytes are flushed first, whatever the store's `fsync`: the copy it
    /// replaces may have been on disk for years, and a crash must not swap it for bytes that
    /// never got there. Where that cannot be done (a filesystem without hard links), the stored
    /// copy stays and is marked recent, as a copy that holds is.
    fn replace_keeping(&self, tmp: &Path, target: &Path) {
        let side = self.layout.new_temp(self.lease.as_ref().map(|l| l.id()));
        let replaced = std::fs::File::open(tmp)
            .and_then(|f| f.sync_data())
            .and_then(|()| std::fs::hard_link(tmp, &side))
            .and_then(|()| std::fs::rename(&side, target));
        if let Err(e) = replaced {
            tracing::debug!(blob = %target.display(), error = %e, "could not replace a stored copy too large to check; keeping it");
            let _ = remove_if_exists(&side);
            self.freshen_file(target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fs::{FsBackend, FsOptions};
    use crate::integrity::{Algorithm, MultiHasher};

    fn digests(data: &[u8]) -> Digests {
        let mut h = MultiHasher::new(&[Algorithm::Sha512, Algorithm::Sha1, Algorithm::Blake3]);
        h.update(data);
        h.finalize().digests().expect("digests")
    }

    /// A verified temp file of `data`, as a writer leaves it before its commit.
    fn temp(fs: &FsBackend, data: &[u8], n: u32) -> PathBuf {
        let path = fs.temp_dir().join(format!("test.{n}.tmp"));
        std::fs::write(&path, data).expect("write temp");
        path
    }

    fn store(dir: &tempfile::TempDir) -> FsBackend {
        let options = FsOptions {
            fsync: false,
            ..FsOptions::default()
        };
        FsBackend::open(dir.path(), options).expect("open")
    }

    /// Put A links a blob but cannot record it; put B (another process, here another handle on
    /// the store) finds A's file and so writes nothing; A takes its blob back before B's record.
    /// B's record finds the blob gone and links B's own copy: B's put is stored, not lost.
    #[test]
    fn a_put_that_found_a_blob_taken_back_links_its_own_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (store(&dir), store(&dir));
        let data = b"the same bytes, put twice at once".to_vec();
        let d = digests(&data);
        let key = key_of(&d);
        let blobs = a.inner.layout.blobs();
        let a_items = [(temp(&a, &data, 1), d)];
        let a_linked = a.inner.publish_one(&a_items[0].0, &d, &blobs, false);
        assert!(matches!(a_linked, Ok(Committed::Stored)));
        let b_items = [(temp(&b, &data, 2), d)];
        let b_linked = b.inner.publish_one(&b_items[0].0, &d, &blobs, false);
        assert!(matches!(b_linked, Ok(Committed::AlreadyPresent)));
        a.inner.take_back(&[key]);
        assert!(a.inner.blob_gone(&key), "no record named it: taken back");
        let b_done = b.inner.record_linked(&b_items, vec![b_linked], false);
        assert!(matches!(b_done[..], [Ok(Committed::Stored)]), "{b_done:?}");
        assert_eq!(std::fs::read(b.blob_path(&key)).expect("stored"), data);
        assert!(b.inner.recorded(&key).is_some(), "and recorded");
        assert!(!b_items[0].0.exists(), "the temp file is gone");
    }

    /// The other order: B records the blob first, and A's take-back leaves it, since B's put
    /// returned with it stored.
    #[test]
    fn a_blob_another_put_recorded_is_not_taken_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (store(&dir), store(&dir));
        let data = b"recorded by the second put".to_vec();
        let d = digests(&data);
        let key = key_of(&d);
        let blobs = a.inner.layout.blobs();
        let a_tmp = temp(&a, &data, 1);
        assert!(matches!(
            a.inner.publish_one(&a_tmp, &d, &blobs, false),
            Ok(Committed::Stored)
        ));
        let b_done = b.inner.publish(&[(temp(&b, &data, 2), d)], false);
        assert!(
            matches!(b_done[..], [Ok(Committed::AlreadyPresent)]),
            "{b_done:?}"
        );
        a.inner.take_back(&[key]);
        assert!(
            !a.inner.blob_gone(&key),
            "B's put said stored: the blob stays"
        );
        assert!(b.inner.recorded(&key).is_some());
    }
}
