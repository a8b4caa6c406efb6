//! Taking blobs and entries away: deletes (blob and entry in one index transaction), entries
//! whose blob is gone, deletes cut short, and temp files of writers that died.

use std::path::Path;
use std::time::SystemTime;

use super::index::Take;
use super::layout::TempOwner;
use super::lease::{self, Holder, LeaseCheck};
use super::writer::remove_if_exists;
use super::{durable, layout, FsInner, STALE_TEMP_AGE};
use crate::backend::{AgedDelete, BlobKey};
use crate::{Error, Result};

impl FsInner {
    /// Whether a blob's file is certainly gone (an error other than "not found" is not proof).
    pub(super) fn blob_gone(&self, key: &BlobKey) -> bool {
        matches!(std::fs::symlink_metadata(self.layout.blob(key)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    }

    /// Removes the index entry of a blob that was just deleted or moved away, unless another
    /// writer has put it back meanwhile.
    pub(super) fn forget(&self, key: &BlobKey) -> Result<()> {
        if self.legacy_alias_log {
            return Ok(());
        }
        self.index
            .remove_if(&[*key], self.fsync, |k| self.blob_gone(k))
            .map(|_| ())
    }

    /// Removes every index entry whose blob is gone, a page at a time. Returns how many.
    pub(super) fn prune_index(&self) -> Result<u64> {
        let (mut after, mut removed) = (0i64, 0u64);
        loop {
            let page = self.index.page(after, 1024)?;
            let Some(&(last, _)) = page.last() else {
                return Ok(removed);
            };
            after = last;
            let missing: Vec<BlobKey> = page
                .iter()
                .map(|(_, k)| *k)
                .filter(|k| self.blob_gone(k))
                .collect();
            removed += self
                .index
                .remove_if(&missing, false, |k| self.blob_gone(k))?;
        }
    }

    /// Deletes a blob and its record: the blob is moved to its tombstone and its record removed
    /// in one write transaction (see [`FsIndex::remove_taking`]), then the tombstone is unlinked.
    /// A crash at any point leaves either the blob and its record, or neither (a blob without a
    /// record at worst, which fsck indexes); never a record without its blob once recovered.
    ///
    /// With `unless_since`, a blob written (or put again, see `freshen_file`) after that time is
    /// kept, decided in the same step that moves it away: a put that finds the blob stored marks
    /// it before it records it under the same lock, so gc either sees the mark or takes the blob
    /// before that put's record, which then links the put's own copy (see `publish`). A blob
    /// whose file is not there is [`AgedDelete::Gone`], told apart from one kept.
    ///
    /// [`FsIndex::remove_taking`]: super::FsIndex::remove_taking
    pub(super) fn delete_blob(
        &self,
        key: &BlobKey,
        unless_since: Option<SystemTime>,
    ) -> Result<AgedDelete> {
        let path = self.layout.blob(key);
        let written_since = |path: &Path| {
            unless_since.is_some_and(|cutoff| {
                std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t > cutoff)
            })
        };
        if self.legacy_alias_log {
            if written_since(&path) {
                return Ok(AgedDelete::Kept);
            }
            return match std::fs::remove_file(&path) {
                Ok(()) => self.sync_parent(&path).map(|()| AgedDelete::Deleted),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AgedDelete::Gone),
                Err(e) => Err(Error::io("remove", &path, e)),
            };
        }
        let tomb = self.layout.new_tombstone(key);
        let taken = self.index.remove_taking(key, self.fsync, || {
            if written_since(&path) {
                return Ok(Take::Kept);
            }
            match std::fs::rename(&path, &tomb) {
                Ok(()) => Ok(Take::Moved),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Take::Absent),
                Err(e) => Err(Error::io_move("move", &path, &tomb, e)),
            }
        });
        match taken {
            Ok(Take::Moved) => {
                if let Err(e) = remove_if_exists(&tomb) {
                    tracing::warn!(error = %e.report(), "could not unlink a deleted blob (swept later)");
                }
                self.sync_parent(&path).map(|()| AgedDelete::Deleted)
            }
            Ok(Take::Absent) => Ok(AgedDelete::Gone),
            Ok(Take::Kept) => Ok(AgedDelete::Kept),
            Err(e) => {
                // Not committed, so the record stays: so must the blob. Put back directly, with
                // no need of the index that just failed.
                if let Err(restore) = self.restore(key, &tomb) {
                    tracing::warn!(%key, error = %restore.report(), "could not put back a blob after a failed delete (settled when the store is next opened)");
                }
                Err(e)
            }
        }
    }

    /// Makes a delete's unlink durable (with fsync on).
    pub(super) fn sync_parent(&self, path: &Path) -> Result<()> {
        match path.parent() {
            Some(dir) if self.fsync => {
                durable::sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))
            }
            _ => Ok(()),
        }
    }

    /// Settles `tomb`, a tombstone of `key` left by a delete that failed or whose process died:
    /// under the write lock, a blob that still has a record goes back to its address; the
    /// tombstone goes.
    pub(super) fn settle_delete(&self, key: &BlobKey, tomb: &Path) {
        let settled = self.index.settle_taken(key, |recorded| {
            if recorded {
                self.restore(key, tomb)
            } else {
                remove_if_exists(tomb)
            }
        });
        if let Err(e) = settled {
            tracing::warn!(%key, error = %e.report(), "could not settle an interrupted delete");
        }
    }

    /// Moves a blob back from its tombstone to its address (unless it is there already, put again
    /// meanwhile), then drops the tombstone.
    fn restore(&self, key: &BlobKey, tomb: &Path) -> Result<()> {
        let path = self.layout.blob(key);
        if self.blob_gone(key) {
            let blobs = self.layout.blobs();
            let dir = path.parent().unwrap_or(&blobs);
            durable::create_dirs(dir, &blobs, self.fsync)
                .map_err(|e| Error::io("create directory", dir, e))?;
            match durable::link_noclobber(tomb, &path) {
                Ok(_) => tracing::info!(%key, "restored a blob whose delete did not commit"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("restore", &path, e)),
            }
            self.sync_parent(&path)?;
        }
        remove_if_exists(tomb)
    }

    pub(super) fn sweep_temps(&self) -> Result<u64> {
        let tmp = self.layout.tmp();
        let entries = match std::fs::read_dir(&tmp) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io("read directory", &tmp, e)),
        };
        let now = SystemTime::now();
        let old = |entry: &std::fs::DirEntry| {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE_TEMP_AGE)
        };
        let leases = self.layout.leases();
        let mut check = LeaseCheck::new(&leases, self.lease.as_ref().map(|l| l.id()));
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(key) = layout::tombstone_key(&name) {
                self.settle_delete(&key, &entry.path());
                continue;
            }
            // A live lease's files are uploads in progress however old they are (an upload can
            // wait on its input for longer than a day); age decides only where the owner cannot
            // be told: a lease that cannot be checked, or a pid (no flock; pids are not shared
            // across namespaces and are recycled).
            let remove = match layout::temp_owner(&name) {
                Some(TempOwner::Lease(id)) => match check.holder(id) {
                    Holder::Live => false,
                    Holder::Dead => true,
                    Holder::Unknown => old(&entry),
                },
                Some(TempOwner::Pid(pid)) if pid == std::process::id() => old(&entry),
                Some(TempOwner::Pid(pid)) => !durable::process_alive(pid) || old(&entry),
                None => true,
            };
            if remove && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        // Leases of stores closed by a crash, whose temp files (if any) went above.
        if let Ok(entries) = std::fs::read_dir(&leases) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                match name.strip_suffix(lease::FRESH) {
                    // Never locked: its process died between creating and locking it.
                    Some(_) if old(&entry) => {
                        let _ = std::fs::remove_file(entry.path());
                    }
                    Some(_) => {}
                    None => {
                        check.holder(&name);
                    }
                }
            }
        }
        Ok(removed)
    }
}
