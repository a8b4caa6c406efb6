//! The fingerprint tables of an upgrading store's old log ([`super::legacy_table`]), shared
//! by the processes of one host.
//!
//! Each process answering lookups during an upgrade reads the whole old log once to fingerprint it:
//! about 9.8 GB at 40M blobs, and a registry runs one process per core. So a table is published
//! under a name of the store (`tarvault-aliaslog-<hash of the store>-<random>.tbl`) in the user's
//! private temp directory (`$TMPDIR/tarvault-<uid>`, see `crate::host_tmp`: another local user
//! could otherwise plant a table that hides aliases, or hold the lock), and a process that finds
//! one takes the segments it covers from it instead of reading them. The host's processes build
//! tables one at a time (a lock file beside them), so processes starting together wait for the
//! first one's table rather than each reading the log. Segments are immutable and their names
//! unique, so a table is right about every segment it names for as long as that segment exists;
//! segments imported since are marked gone by each process as it finds them gone, and a table none
//! of whose segments is listed any more is deleted by whichever process notices.

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::legacy_table::Table;

/// How long a process waits for another one to build a table before it reads the log itself (a
/// process that dies releases the lock at once; this bounds one that hangs). Reading the log of
/// 40M blobs takes one to two minutes on a link of 1 Gbit/s.
const LOCK_WAIT: Duration = Duration::from_secs(300);

/// Where a store's shared tables are, and what they are called.
#[derive(Clone)]
pub(crate) struct Shared {
    dir: PathBuf,
    stem: String,
}

impl Shared {
    /// The shared tables of the store described as `store`, in `dir`.
    pub(crate) fn new(dir: PathBuf, store: &str) -> Shared {
        let hash = blake3::hash(store.as_bytes()).to_hex();
        Shared {
            dir,
            stem: format!("tarvault-aliaslog-{}", &hash[..16]),
        }
    }

    /// Waits for, and takes, the host's lock on building this store's tables (released when the
    /// file is dropped); `None` if another process held it for [`LOCK_WAIT`]: then the caller
    /// goes on without it, as if alone. Blocking.
    pub(crate) fn lock(&self) -> io::Result<Option<File>> {
        self.lock_within(LOCK_WAIT)
    }

    fn lock_within(&self, wait: Duration) -> io::Result<Option<File>> {
        let path = self.dir.join(format!("{}.lock", self.stem));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(file)),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(TryLockError::WouldBlock) => {
                    tracing::warn!(lock = %path.display(), waited = ?wait, "another process has been building the old alias log's fingerprint table for too long; reading the log here too");
                    return Ok(None);
                }
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
    }

    /// The tables published for this store, except those at `held` (this process's own), opened;
    /// a table none of whose segments is in `listed` is deleted (the import has taken them all),
    /// as is a file that is not a table. Blocking.
    pub(crate) fn published(&self, held: &[PathBuf], listed: &HashSet<&str>) -> Vec<Table> {
        let mut found = Vec::new();
        for path in self.files().into_iter().filter(|p| !held.contains(p)) {
            match Table::open(&path) {
                Ok(t) if t.covers_any(listed) => found.push(t),
                Ok(_) => remove(&path, "its segments are all imported"),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => remove(&path, &e.to_string()),
                Err(e) => {
                    tracing::warn!(table = %path.display(), error = %e, "cannot read a shared fingerprint table");
                }
            }
        }
        found
    }

    /// The files published under this store's name (whatever they hold).
    fn files(&self) -> Vec<PathBuf> {
        let prefix = format!("{}-", self.stem);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".tbl"))
            })
            .collect()
    }

    /// The directory the tables are in.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// A file to build a table in, published (renamed) as [`name`](Self::name) once saved.
    pub(crate) fn create(&self) -> io::Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(&format!(".{}-", self.stem))
            .suffix(".tmp")
            .tempfile_in(&self.dir)
    }

    /// The name a new table is published under.
    pub(crate) fn name(&self) -> PathBuf {
        self.dir
            .join(format!("{}-{:016x}.tbl", self.stem, rand::random::<u64>()))
    }

    /// Deletes every table published for this store (the log is gone), without reading them.
    /// Blocking.
    pub(crate) fn remove_all(&self) {
        for path in self.files() {
            remove(&path, "the log is gone");
        }
    }
}

/// Deletes a published table (processes that opened it keep reading it).
pub(crate) fn remove(path: &Path, why: &str) {
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::debug!(table = %path.display(), why, "deleted a shared fingerprint table")
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(table = %path.display(), error = %e, "cannot delete a shared fingerprint table")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process that holds the lock too long is waited for only so long; once it lets go, the
    /// lock is taken.
    #[test]
    fn a_lock_held_too_long_is_given_up_on() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let shared = Shared::new(dir.path().to_path_buf(), "store");
        let held = shared.lock().unwrap_or_else(|e| panic!("{e}"));
        assert!(held.is_some());
        let t = Instant::now();
        let other = shared.lock_within(Duration::from_millis(200));
        assert!(matches!(other, Ok(None)), "{other:?}");
        assert!(t.elapsed() >= Duration::from_millis(200));
        drop(held);
        let again = shared.lock_within(Duration::from_millis(200));
        assert!(matches!(again, Ok(Some(_))), "{again:?}");
    }
}
