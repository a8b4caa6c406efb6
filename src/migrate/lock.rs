//! Keeping two migrations off the same files. A migration's mapping and problems file are cut
//! back to its checkpoint when it starts and appended to at its own offsets: a second process on
//! them (two runs started in one directory share the default file names) would cut the first's
//! lines, write over them and checkpoint lengths that count the other's lines, leaving versions
//! mapped twice and torn lines that fail every later run. So each run holds an exclusive advisory
//! lock (`flock`) on both for as long as it runs, and one that cannot get it is refused before it
//! touches anything.
//!
//! The state file needs the same: two runs sharing it (with a mapping and problems file each)
//! would checkpoint over each other, each state vouching for the other's files' lengths. But it
//! is replaced by rename at every checkpoint, and a lock on the file renamed away guards nothing.
//! So its lock is on a file beside it that is never renamed or removed (`<state>.lock`, see
//! [`beside`]): removing it when a run ends would let a run that opened the old file and one that
//! created a new one both hold "the" lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The lock file of the state file `state`: `<state>.lock`, beside it. Empty, and left in place.
pub(crate) fn beside(state: &Path) -> PathBuf {
    super::suffixed(state, ".lock")
}

/// The locks a run holds; dropping it releases them.
#[derive(Debug)]
pub(crate) struct Held {
    _files: Vec<File>,
}

/// Takes the lock of each `(path, what)` (creating an empty file if there is none: a new mapping
/// and a new problems file start empty anyway), or fails naming the first that another process
/// holds. A file system without locks is warned about and gone on without, as before there were
/// locks.
pub(crate) fn hold(files: &[(&Path, &str)]) -> Result<Held> {
    let mut held = Vec::with_capacity(files.len());
    for (path, what) in files {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        match file.try_lock() {
            Ok(()) => held.push(file),
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Config(format!(
                    "{what} {} is in use by another migration (a running process holds its lock): \
                     wait for it to finish or stop it, or give this one its own --state and --map",
                    path.display()
                )))
            }
            Err(TryLockError::Error(e)) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot lock the {what}; going on without: do not run two migrations on it at once");
            }
        }
    }
    Ok(Held { _files: held })
}
