//! The alias log of stores written before the index (`index/aliases.log`): imported into the index
//! the first time such a store is opened, and still writable for benchmarks that measure what the
//! index costs against it.
//!
//! The import is idempotent (records are merged) and crash-safe: the log is renamed to
//! `aliases.log.imported` only after every record is durably in the index, so a crash part-way
//! leaves the log in place and the next open imports it again. An exclusive `flock` makes two
//! processes that open the same old store at once import it once.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::FsIndex;
use crate::backend::alias::line::{line, parse_line};
use crate::integrity::Digests;
use crate::{Error, Result};

/// Records per import transaction.
const IMPORT_BATCH: usize = 20_000;
/// Logs at least this large print progress on standard error.
const PROGRESS_FROM: u64 = 16 << 20;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Where an imported log is kept (renamed, never deleted: it is the old release's data).
pub(crate) fn imported_name(log: &Path) -> PathBuf {
    log.with_extension("log.imported")
}

/// Imports `log` into `index` if it exists. Returns the number of records read, or `None` when
/// there was nothing to import.
pub(crate) fn import_if_present(index: &FsIndex, log: &Path) -> Result<Option<u64>> {
    if !log.exists() {
        return Ok(None);
    }
    let lock_path = log.with_extension("import.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io("open", &lock_path, e))?;
    flock_exclusive(&lock).map_err(|e| Error::io("lock", &lock_path, e))?;
    // Whoever held the lock before us may have imported it already.
    let file = match File::open(log) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", log, e)),
    };
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let started = Instant::now();
    let mut last_report = started;
    let (mut read, mut bytes) = (0u64, 0u64);
    let mut batch: Vec<Digests> = Vec::with_capacity(IMPORT_BATCH);
    let mut raw = Vec::with_capacity(256);
    loop {
        raw.clear();
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| Error::io("read", log, e))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        // A torn last line (a crash mid-append) costs only itself.
        if let Some(d) = parse_line(raw.strip_suffix(b"\n").unwrap_or(&raw)) {
            batch.push(d);
        }
        if batch.len() >= IMPORT_BATCH {
            index.insert(&batch, false)?;
            read += batch.len() as u64;
            batch.clear();
            if total >= PROGRESS_FROM && last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                eprintln!(
                    "tarvault: upgrading {}: {read} records imported into the index ({}%)",
                    log.display(),
                    bytes * 100 / total.max(1)
                );
            }
        }
    }
    index.insert(&batch, false)?;
    read += batch.len() as u64;
    // Every commit durable before the log goes: one fsync of the database and its WAL.
    index.sync()?;
    let done = imported_name(log);
    std::fs::rename(log, &done).map_err(|e| Error::io("rename", log, e))?;
    if let Some(dir) = log.parent() {
        crate::backend::fs::durable::sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
    }
    if total >= PROGRESS_FROM {
        eprintln!(
            "tarvault: upgraded {}: {read} records imported in {:.1}s (the old log is kept as {})",
            log.display(),
            started.elapsed().as_secs_f64(),
            done.display()
        );
    }
    tracing::info!(log = %log.display(), records = read, "alias log imported into the index");
    Ok(Some(read))
}

/// Appends records to an alias log in the pre-index format (benchmarks and upgrade tests).
pub(crate) fn append(log: &Path, records: &[Digests], sync: bool) -> io::Result<()> {
    let mut text = String::with_capacity(records.len() * 250);
    for d in records {
        text.push_str(&line(d));
    }
    let mut f = OpenOptions::new().create(true).append(true).open(log)?;
    f.write_all(text.as_bytes())?;
    if sync {
        f.sync_data()?;
    }
    Ok(())
}

#[cfg(unix)]
fn flock_exclusive(f: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: `f` is an open descriptor for the duration of the call; the lock is released
        // when the file is closed.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(not(unix))]
fn flock_exclusive(_f: &File) -> io::Result<()> {
    Ok(())
}
