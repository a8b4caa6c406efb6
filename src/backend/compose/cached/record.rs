//! How a [`Cached`](super::Cached) tier writes to its record ([`CacheLedger`]): off the async
//! threads, under the one lock that orders a fill's record against an eviction of the same blob,
//! and with the reads' uses gathered into batches.

use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::Inner;
use crate::backend::{BlobKey, CacheLedger};
use crate::{Error, Result};

/// Uses of cached blobs recorded at once (one transaction of a ledger in a file).
const USES_BATCH: usize = 256;

/// Uses are recorded at least this often while reads go on.
const USES_EVERY: Duration = Duration::from_secs(1);

/// Uses of cached blobs not recorded in the ledger yet.
pub(super) struct Uses {
    list: Vec<(BlobKey, u64)>,
    since: Instant,
}

impl Default for Uses {
    fn default() -> Self {
        Uses {
            list: Vec::new(),
            since: Instant::now(),
        }
    }
}

/// Records the uses noted since the last batch, so that a short-lived process (the CLI's `get`)
/// leaves its reads in the record too.
impl Drop for Inner {
    fn drop(&mut self) {
        let uses = std::mem::take(&mut self.uses().list);
        if let Err(e) = self.ledger.touch(&uses) {
            tracing::warn!(local = %self.local.describe(), error = %e.report(), "cannot record cache uses");
        }
    }
}

impl Inner {
    /// Runs `f` on the ledger on the blocking pool (a ledger in a file may wait for another
    /// process's write lock).
    pub(super) async fn on_ledger<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn CacheLedger) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let ledger = self.ledger.clone();
        tokio::task::spawn_blocking(move || f(&*ledger))
            .await
            .map_err(Error::Task)?
    }

    /// [`on_ledger`](Self::on_ledger) under this process's recording lock, with the uses noted so
    /// far recorded first (so that an eviction sees them). A fill checks its stale flag and
    /// records its blob under this lock, and an eviction sets the flag before it takes the lock:
    /// so either the fill sees the flag, or the eviction finds (and removes) the fill's record.
    pub(super) async fn recording<T: Send + 'static>(
        self: Arc<Self>,
        f: impl FnOnce(&dyn CacheLedger) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.clone();
        self.on_ledger(move |l| {
            let _held = inner.record.lock().unwrap_or_else(|e| e.into_inner());
            let uses = std::mem::take(&mut inner.uses().list);
            if let Err(e) = l.touch(&uses) {
                inner.local_failed(&inner.local.describe(), &e, "cannot record cache uses");
            }
            f(l)
        })
        .await
    }

    fn uses(&self) -> MutexGuard<'_, Uses> {
        // A push or a take cannot leave it half-changed.
        self.uses.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a use of `key`; the uses are recorded a batch at a time ([`USES_BATCH`] of them, or
    /// those of the last [`USES_EVERY`]), and before anything is evicted.
    pub(super) async fn used(self: &Arc<Self>, key: &BlobKey, size: u64) {
        let due = {
            let mut uses = self.uses();
            uses.list.push((*key, size));
            let due = uses.list.len() >= USES_BATCH || uses.since.elapsed() >= USES_EVERY;
            if due {
                uses.since = Instant::now();
            }
            due
        };
        if due {
            if let Err(e) = self.clone().recording(|_| Ok(())).await {
                self.local_failed(key, &e, "cannot record cache uses");
            }
        }
    }

    /// Forgets `key`'s record (its copy is being dropped), logging a failure.
    pub(super) async fn forget(self: &Arc<Self>, key: &BlobKey) {
        let k = *key;
        if let Err(e) = self.clone().recording(move |l| l.remove(&k)).await {
            self.local_failed(key, &e, "cannot update the cache tier's record");
        }
    }
}
