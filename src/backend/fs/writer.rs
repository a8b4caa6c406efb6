//! An upload into a filesystem store: a private temp file, published by a rename that never
//! overwrites (`durable::rename_noclobber`: a link and an unlink where the filesystem lacks
//! `RENAME_NOREPLACE`).

use std::any::Any;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::direct::Writes;
use super::FsInner;
use crate::backend::{BlobKey, BlobWriter, Committed};
use crate::integrity::Digests;
use crate::task::blocking;
use crate::{Error, Result};

/// Bytes gathered before they are handed to a blocking write: large enough that the hop to the
/// blocking pool is noise, small enough to keep memory flat.
const FLUSH_AT: usize = 1 << 20;

/// Pending bytes written in place rather than on the blocking pool: creating and writing a small
/// file into the page cache takes tens of microseconds, about what the hop to the pool and back
/// costs, and a batch of small blobs is nothing but such writes (issue 20's profile).
const INLINE_WRITE: usize = 64 * 1024;

pub(crate) struct FsWriter {
    pub(super) inner: Arc<FsInner>,
    pub(super) tmp: PathBuf,
    file: Option<File>,
    /// Whether the temp file exists (it may be closed already, see `finish_writes`).
    created: bool,
    pending: Vec<Bytes>,
    pending_len: usize,
    /// How the bytes reach the file (large blobs partly around the page cache, `direct.rs`).
    /// Taken while a write is under way on the blocking pool.
    writes: Option<Writes>,
    /// Set once the temp file has been linked into place or removed, so `Drop` leaves it alone.
    finished: bool,
}

impl FsWriter {
    pub(super) fn new(inner: Arc<FsInner>) -> Self {
        let tmp = inner.layout.new_temp(inner.lease.as_ref().map(|l| l.id()));
        let direct_from = inner.direct_from;
        FsWriter {
            inner,
            tmp,
            file: None,
            created: false,
            pending: Vec::new(),
            pending_len: 0,
            writes: Some(Writes::new(direct_from)),
            finished: false,
        }
    }

    /// The open temp file, created now if it does not exist yet. It is created here, on the
    /// put's task, and never inside a closure queued on the blocking pool: a put dropped while
    /// such a closure waits for a thread (a client gone, a timeout) runs `Drop` first, and a file
    /// the closure created afterwards would outlive the put.
    fn take_file(&mut self) -> Result<File> {
        if let Some(file) = self.file.take() {
            return Ok(file);
        }
        if self.created {
            return Err(Error::InvalidInput(format!(
                "{}: written to after its writes were finished",
                self.tmp.display()
            )));
        }
        let file = create_temp(&self.tmp)?;
        self.created = true;
        Ok(file)
    }

    /// The file's write state, which a failed write on the blocking pool did not give back.
    fn take_writes(&mut self) -> Result<Writes> {
        self.writes.take().ok_or_else(|| {
            Error::InvalidInput(format!(
                "{}: written to after a failed write",
                self.tmp.display()
            ))
        })
    }

    /// Writes pending chunks to the temp file. Runs on a blocking thread, or in place when small.
    fn flush_blocking(
        tmp: &PathBuf,
        mut file: File,
        mut writes: Writes,
        pending: Vec<Bytes>,
    ) -> Result<(File, Writes)> {
        writes
            .write(&mut file, pending)
            .map_err(|e| Error::io("write", tmp, e))?;
        Ok((file, writes))
    }

    /// Flushes everything and, if durability is on, fsyncs the data. A writer whose bytes are all
    /// written and closed already (`finish_writes`) needs no trip to the blocking pool unless it
    /// must fsync.
    pub(super) async fn finish_data(&mut self, fsync: bool) -> Result<()> {
        if self.created && self.file.is_none() && self.pending.is_empty() {
            if fsync {
                let tmp = self.tmp.clone();
                blocking(move || {
                    File::open(&tmp)
                        .and_then(|f| f.sync_data())
                        .map_err(|e| Error::io("fsync", &tmp, e))
                })
                .await?;
            }
            return Ok(());
        }
        let tmp = self.tmp.clone();
        let file = self.take_file()?;
        let writes = self.take_writes()?;
        let pending = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let (file, writes) = blocking(move || -> Result<(File, Writes)> {
            let (file, writes) = FsWriter::flush_blocking(&tmp, file, writes, pending)?;
            if fsync {
                file.sync_data().map_err(|e| Error::io("fsync", &tmp, e))?;
            }
            Ok((file, writes))
        })
        .await?;
        self.writes = Some(writes);
        self.release_buffer();
        drop(file);
        Ok(())
    }

    fn release_buffer(&mut self) {
        if let Some(w) = self.writes.as_mut() {
            w.release_buffer();
        }
    }

    pub(super) fn mark_finished(&mut self) {
        self.finished = true;
    }
}

fn create_temp(tmp: &PathBuf) -> Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Blobs are immutable: make that visible in their permissions.
        opts.mode(0o444);
    }
    opts.open(tmp).map_err(|e| Error::io("create", tmp, e))
}

#[async_trait]
impl BlobWriter for FsWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.pending_len += chunk.len();
        self.pending.push(chunk);
        if self.pending_len >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    /// Creates the temp file if need be and writes what is pending (no fsync: that is `commit`'s).
    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let tmp = self.tmp.clone();
        let file = self.take_file()?;
        let writes = self.take_writes()?;
        let pending = std::mem::take(&mut self.pending);
        let inline = self.pending_len <= INLINE_WRITE;
        self.pending_len = 0;
        let (file, writes) = if inline {
            FsWriter::flush_blocking(&tmp, file, writes, pending)?
        } else {
            blocking(move || FsWriter::flush_blocking(&tmp, file, writes, pending)).await?
        };
        self.writes = Some(writes);
        self.file = Some(file);
        Ok(())
    }

    /// Writes what is pending and closes the temp file, so that a batch of thousands of uploads
    /// waiting for their group commit holds no file descriptors and leaves the commit nothing to
    /// write (each blob's write happens on the task that hashed it, on whichever core that is).
    async fn finish_writes(&mut self) -> Result<()> {
        self.flush().await?;
        if !self.created {
            // An empty blob: its temp file still has to exist to be published.
            create_temp(&self.tmp)?;
            self.created = true;
        }
        self.release_buffer();
        self.file = None;
        Ok(())
    }

    async fn commit(mut self: Box<Self>, digests: &Digests) -> Result<Committed> {
        let fsync = self.inner.fsync;
        self.finish_data(fsync).await?;
        let inner = self.inner.clone();
        let tmp = self.tmp.clone();
        let d = *digests;
        let outcome = tokio::task::spawn_blocking(move || inner.publish(&[(tmp, d)], fsync))
            .await
            .map_err(Error::Task)?
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(Error::InvalidInput("publish returned no result".into())));
        // A publish that failed (a shard directory that cannot be made, say) leaves the temp file
        // where it was: `Drop` removes it, as for any put that does not commit.
        self.finished = outcome.is_ok();
        outcome
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.file = None;
        self.finished = true;
        let tmp = self.tmp.clone();
        tokio::task::spawn_blocking(move || remove_if_exists(&tmp))
            .await
            .map_err(Error::Task)?
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

pub(super) fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        // A put that was cancelled (its future dropped) or failed must not leave its temp file.
        if !self.finished {
            self.file = None;
            if let Err(e) = remove_if_exists(&self.tmp) {
                tracing::warn!(error = %e.report(), "could not remove an abandoned upload (swept later)");
            }
        }
    }
}

/// The key a set of digests publishes under.
pub(super) fn key_of(d: &Digests) -> BlobKey {
    BlobKey::new(d.sha512)
}
