//! The few system calls durability depends on, in one place.
//!
//! A blob is durable when its bytes are on disk *before* its name is: data fsync, then the
//! no-overwrite link into place, then an fsync of the directory that holds the new name (and of any
//! shard directory created for it). Group commit replaces the per-file fsyncs by two `syncfs` calls
//! around a batch of renames, which is what lets a durable batch ingest go faster than cacache (which
//! never fsyncs at all).

use std::fs::File;
use std::io;
use std::path::Path;

/// fsyncs a directory so that entries created or removed in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents up to (not including) `stop`, fsyncing each parent whose
/// entries changed when `durable`. Tries `mkdir` first and looks at the parent only when that
/// says it is missing: the caller has just been told the directory is missing, and a shard
/// directory's parent nearly always exists.
pub(crate) fn create_dirs(dir: &Path, stop: &Path, durable: bool) -> io::Result<()> {
    match make_dir(dir, durable) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match dir.parent() {
                Some(parent) if parent != stop && parent.starts_with(stop) => {
                    create_dirs(parent, stop, durable)?;
                }
                _ => return Err(e),
            }
            make_dir(dir, durable)
        }
        other => other,
    }
}

/// Makes one directory (an existing one is fine), fsyncing its parent when `durable`.
fn make_dir(dir: &Path, durable: bool) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => {
            if durable {
                if let Some(parent) = dir.parent() {
                    sync_dir(parent)?;
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Flushes every dirty page and inode of the filesystem holding `path` (Linux `syncfs`); elsewhere
/// falls back to fsyncing each of `files`.
pub(crate) fn sync_filesystem(path: &Path, files: &[&Path]) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let _ = files;
        use std::os::fd::AsRawFd;
        let f = File::open(path)?;
        // SAFETY: `f` is an open file descriptor for the duration of the call.
        let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        for f in files {
            File::open(f)?.sync_all()?;
        }
        Ok(())
    }
}

/// Links `tmp` to `target` unless `target` exists. Returns `false` when it already existed.
/// A hard link is the portable "rename without overwrite": it fails with `EEXIST` instead of
/// replacing, so two writers of the same content never clobber each other.
pub(crate) fn link_noclobber(tmp: &Path, target: &Path) -> io::Result<bool> {
    match std::fs::hard_link(tmp, target) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Moves `tmp` to `target` unless `target` exists. Returns `false`, leaving `tmp` where it is,
/// when it already existed. One system call where the kernel and filesystem offer
/// `renameat2(RENAME_NOREPLACE)` (Linux, ext4/xfs/btrfs/tmpfs), instead of a link and an unlink:
/// a batch of small blobs spends most of its time in such metadata calls.
pub(crate) fn rename_noclobber(tmp: &Path, target: &Path) -> io::Result<bool> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let from = CString::new(tmp.as_os_str().as_bytes())?;
        let to = CString::new(target.as_os_str().as_bytes())?;
        // SAFETY: both are valid NUL-terminated paths for the duration of the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EEXIST) => return Ok(false),
            // A filesystem (or kernel) without the flag: link and unlink instead.
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {}
            _ => return Err(e),
        }
    }
    if link_noclobber(tmp, target)? {
        match std::fs::remove_file(tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Sets a file's modification time to now; `Ok(false)` if it does not exist. Blobs are read-only
/// (0444), so this opens the file for reading: setting the time needs its owner, not write access.
pub(crate) fn touch(path: &Path) -> io::Result<bool> {
    match std::fs::File::open(path) {
        Ok(f) => f.set_modified(std::time::SystemTime::now()).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether a process with this pid is alive (on Unix; elsewhere assume it is).
pub(crate) fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: kill with signal 0 only checks for existence and permission.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}
