//! Repairs against deletes: a copy read before a delete of its blob must not be written to a
//! replica after it.
//!
//! A delete goes to every replica at once, but a repair (read-repair or [`Replicated::repair`])
//! reads a good copy from one replica and writes it to others afterwards; had the delete landed
//! in between, that write would bring the blob back. So a repair takes a [`Ticket`] for its blob
//! before it reads the good copy, and a delete is registered here (a [`Deleting`]) before it
//! touches any replica and until it is done. A repair whose ticket was overtaken (a delete of its
//! blob was under way when it took the ticket, or started since) writes nothing, or deletes again
//! what it wrote. One lock orders the two: if a repair checks its ticket and finds it good, any
//! delete registered later deletes the copies that repair already wrote.
//!
//! This covers the deletes and repairs of one `Replicated` (and its clones): a delete made by
//! another process through its own `Replicated` is not seen here.
//!
//! [`Replicated::repair`]: super::Replicated::repair

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::backend::BlobKey;

/// The blobs with a repair or a delete in progress.
#[derive(Debug, Default)]
pub(super) struct Fence {
    keys: Mutex<HashMap<BlobKey, Entry>>,
}

#[derive(Debug, Default)]
struct Entry {
    /// Deletes of the blob started while the entry existed.
    started: u64,
    /// Deletes of the blob under way.
    deleting: usize,
    /// Tickets and deletes holding the entry; it goes with the last.
    holders: usize,
}

impl Fence {
    fn keys(&self) -> MutexGuard<'_, HashMap<BlobKey, Entry>> {
        // Every update leaves the map consistent before anything that could panic.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ticket for a repair of `key`, to take before the good copy is read.
    pub(super) fn ticket(&self, key: &BlobKey) -> Ticket<'_> {
        let mut keys = self.keys();
        let entry = keys.entry(*key).or_default();
        entry.holders += 1;
        Ticket {
            fence: self,
            key: *key,
            seen: entry.started,
            during_delete: entry.deleting > 0,
        }
    }

    /// Registers a delete of `key` until the returned guard is dropped.
    pub(super) fn deleting(&self, key: &BlobKey) -> Deleting<'_> {
        let mut keys = self.keys();
        let entry = keys.entry(*key).or_default();
        entry.holders += 1;
        entry.started += 1;
        entry.deleting += 1;
        Deleting {
            fence: self,
            key: *key,
        }
    }

    fn release(&self, key: &BlobKey, deleting: bool) {
        let mut keys = self.keys();
        let Some(entry) = keys.get_mut(key) else {
            return;
        };
        if deleting {
            entry.deleting = entry.deleting.saturating_sub(1);
        }
        entry.holders = entry.holders.saturating_sub(1);
        if entry.holders == 0 {
            keys.remove(key);
        }
    }
}

/// A repair's claim on its blob (see the module docs).
pub(super) struct Ticket<'a> {
    fence: &'a Fence,
    key: BlobKey,
    seen: u64,
    during_delete: bool,
}

impl Ticket<'_> {
    /// Whether a delete of the blob was under way when the ticket was taken, or started since:
    /// the copy the repair read may be of a deleted blob.
    pub(super) fn overtaken(&self) -> bool {
        self.during_delete
            || self
                .fence
                .keys()
                .get(&self.key)
                .is_some_and(|e| e.started != self.seen)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.fence.release(&self.key, false);
    }
}

/// A delete in progress (see the module docs).
pub(super) struct Deleting<'a> {
    fence: &'a Fence,
    key: BlobKey,
}

impl Drop for Deleting<'_> {
    fn drop(&mut self) {
        self.fence.release(&self.key, true);
    }
}
