//! Whose temp files are still being written: a lease per open store, held with `flock`.
//!
//! A sweep (at open, and by `fsck`) removes the temp files of uploads whose process died. Telling
//! them apart by the pid in their name (`kill(pid, 0)`) fails wherever pids are not shared: a
//! process in another PID namespace (a container sharing the store's volume) or on another host
//! (a network filesystem) sees no such pid and swept uploads that were still running, and a
//! recycled pid kept a dead writer's files for a day. So each open store holds a lease,
//! `leases/<id>`, locked with `flock` for as long as it is open; the kernel drops the lock when
//! the holder exits or dies, whatever namespace it is in. Its temp files are named
//! `<pid>.<id>.<n>.tmp`, and a sweep removes them only once it can take the lease's lock itself
//! (or the lease is gone). The pid stays first in the name so that earlier releases, which read
//! only the pid, still find the owner they expect.
//!
//! A lease is created under a temporary name and renamed into place only once locked, so that a
//! sweep never sees an unlocked lease of a live process. Where the filesystem has no `flock`, the
//! store opens without a lease and its temp files carry only the pid, as before.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The lease an open store holds (see the [module documentation](self)); released on drop.
#[derive(Debug)]
pub(crate) struct Lease {
    id: String,
    path: PathBuf,
    /// Holds the lock for as long as the lease lives.
    _file: File,
}

impl Lease {
    /// Takes a new lease in `dir`, or `None` where the filesystem cannot lock files.
    pub(crate) fn take(dir: &Path) -> io::Result<Option<Lease>> {
        let id = format!("{:016x}", rand::random::<u64>());
        let path = dir.join(&id);
        let fresh = dir.join(format!("{id}{FRESH}"));
        let file = File::create(&fresh)?;
        match try_lock(&file) {
            Ok(true) => {}
            Ok(false) => {
                let _ = std::fs::remove_file(&fresh);
                return Err(io::Error::other(format!(
                    "{}: locked by another process",
                    fresh.display()
                )));
            }
            Err(e) if unsupported(&e) => {
                tracing::debug!(dir = %dir.display(), error = %e,
                    "no flock here: temp files name their writer by pid only");
                let _ = std::fs::remove_file(&fresh);
                return Ok(None);
            }
            Err(e) => {
                let _ = std::fs::remove_file(&fresh);
                return Err(e);
            }
        }
        std::fs::rename(&fresh, &path)?;
        Ok(Some(Lease {
            id,
            path,
            _file: file,
        }))
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Removed while still locked: a sweep that opened it meanwhile finds it dead only once
        // this process has no temp file left (the store is closed).
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The suffix of a lease not locked yet (see the [module documentation](self)).
pub(crate) const FRESH: &str = ".new";

/// What a sweep found of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Locked by an open store: its temp files are uploads in progress, however old.
    Live,
    /// Gone, or its lock taken by this sweep: its process is gone.
    Dead,
    /// Not known (an error other than "gone"): its files wait for their age to run out instead
    /// of being removed under a writer.
    Unknown,
}

/// Whether each lease asked about is held by a live process, asked at most once per sweep.
pub(crate) struct LeaseCheck<'a> {
    dir: &'a Path,
    own: Option<&'a str>,
    known: HashMap<String, Holder>,
}

impl<'a> LeaseCheck<'a> {
    pub(crate) fn new(dir: &'a Path, own: Option<&'a str>) -> Self {
        LeaseCheck {
            dir,
            own,
            known: HashMap::new(),
        }
    }

    /// Who holds the lease `id`. A dead one is removed (its lock taken first, so two sweeps
    /// agree).
    pub(crate) fn holder(&mut self, id: &str) -> Holder {
        if self.own == Some(id) {
            return Holder::Live;
        }
        if let Some(known) = self.known.get(id) {
            return *known;
        }
        let path = self.dir.join(id);
        let holder = match File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Holder::Dead,
            Err(_) => Holder::Unknown,
            Ok(file) => match try_lock(&file) {
                Ok(true) => {
                    let _ = std::fs::remove_file(&path);
                    Holder::Dead
                }
                Ok(false) => Holder::Live,
                Err(_) => Holder::Unknown,
            },
        };
        self.known.insert(id.to_string(), holder);
        holder
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` if another open file holds the lock.
#[cfg(unix)]
fn try_lock(file: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this `File` owns; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> io::Result<bool> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Errors that mean the filesystem does not lock files (as opposed to a failure of this call).
fn unsupported(e: &io::Error) -> bool {
    #[cfg(unix)]
    if matches!(
        e.raw_os_error(),
        Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
    ) {
        return true;
    }
    e.kind() == io::ErrorKind::Unsupported
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_held_lease_is_alive_and_a_released_one_is_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lease = Lease::take(dir.path())
            .expect("take")
            .expect("flock works here");
        let id = lease.id().to_string();
        // Another open file description (as another process would have) cannot take it.
        assert_eq!(LeaseCheck::new(dir.path(), None).holder(&id), Holder::Live);
        assert_eq!(
            LeaseCheck::new(dir.path(), Some(&id)).holder(&id),
            Holder::Live
        );
        // A lease left unlocked (its process died, the kernel dropped the lock) is dead and goes.
        let stale = dir.path().join("00000000deadbeef");
        std::fs::write(&stale, b"").expect("write");
        assert_eq!(
            LeaseCheck::new(dir.path(), None).holder("00000000deadbeef"),
            Holder::Dead
        );
        assert!(!stale.exists());
        assert_eq!(
            LeaseCheck::new(dir.path(), None).holder("0000000000000000"),
            Holder::Dead
        );
        drop(lease);
        assert!(!dir.path().join(&id).exists());
    }
}
