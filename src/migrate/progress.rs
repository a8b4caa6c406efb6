//! Live counters a front end can poll while a migration runs (the CLI draws a progress bar on a
//! terminal and prints periodic lines otherwise). Plain atomics: the workers never wait on a
//! display, and the library does not care how, or whether, progress is shown.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters updated by a running migration.
#[derive(Debug, Default)]
pub struct Progress {
    docs: AtomicU64,
    tarballs: AtomicU64,
    bytes: AtomicU64,
    failures: AtomicU64,
    docs_total: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// Documents finished in this run.
    pub docs: u64,
    /// Tarballs verified in this run (migrated or already present).
    pub tarballs: u64,
    /// Bytes received from the server in this run (including retried downloads).
    pub bytes: u64,
    /// Failed outcomes in this run.
    pub failures: u64,
    /// The database's document count when the run started (0 if unknown): an estimate of the
    /// work, since the feed also carries deleted documents.
    pub docs_total: u64,
}

impl Progress {
    /// Reads every counter.
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            docs: self.docs.load(Ordering::Relaxed),
            tarballs: self.tarballs.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            docs_total: self.docs_total.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn doc_done(&self, failures: u64) {
        self.docs.fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(failures, Ordering::Relaxed);
    }

    pub(crate) fn tarball_done(&self) {
        self.tarballs.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set_docs_total(&self, n: u64) {
        self.docs_total.store(n, Ordering::Relaxed);
    }
}
