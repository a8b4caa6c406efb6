//! Repairs and late commits against deletes: a copy read before a delete of its blob must not be
//! written to a replica after it, nor may a replica's late commit of a put acknowledged before it.
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
//! A put is acknowledged once a quorum of replicas committed, and the others commit in the
//! background; the caller may delete the blob before they do. So the put takes a ticket
//! ([`Fence::ticket`]) when it acknowledges, and a late commit that finds its ticket overtaken
//! deletes the copy it published.
//!
//! The same late commits can make a second put of the blob find a replica the first had not
//! reached yet, and be told `Stored` there although the blob was stored before. A put whose
//! replicas answered both `Stored` and `AlreadyPresent` asks [`Fence::stored_before`]: whether
//! this `Replicated` reported the blob stored and has not deleted it since (it remembers up to
//! [`RECENT`] blobs, and starts afresh when full).
//!
//! The fence covers the deletes, repairs and late commits of one `Replicated` (and its clones). A
//! delete made by another process through its own `Replicated` is not seen here; for that, a late
//! commit that published a copy asks the replicas that acknowledged the put, a second later
//! (`DELETE_GRACE` in `writer.rs`), whether they still have the blob, and removes its copy if
//! none has: they had it moments before, so a delete took it. Not covered: a delete whose requests
//! reach the acknowledging replicas more than that second after the late one, and a read-repair
//! (in any process) that copies the late copy back to the others within that second; the blob's
//! verified bytes then stay, until a second delete or `gc`.
//!
//! [`Replicated::repair`]: super::Replicated::repair

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::BlobKey;

/// Blobs remembered as reported stored, at most; past it the memory is cleared (a put of one of
/// them whose replicas answer both ways then reports `Stored` again, as it would in another
/// process).
const RECENT: usize = 4096;

/// The blobs with a repair or a delete in progress, and those reported stored lately.
#[derive(Debug, Default)]
pub(super) struct Fence {
    keys: Mutex<HashMap<BlobKey, Entry>>,
    /// Blobs reported stored and not deleted here since.
    stored: Mutex<HashSet<BlobKey>>,
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

    /// A ticket for a repair of `key`, to take before the good copy is read (or for a put's late
    /// commits, when it is acknowledged). It may outlive the call, in a task of its own.
    pub(super) fn ticket(self: &Arc<Self>, key: &BlobKey) -> Ticket {
        let mut keys = self.keys();
        let entry = keys.entry(*key).or_default();
        entry.holders += 1;
        Ticket {
            fence: self.clone(),
            key: *key,
            seen: entry.started,
            during_delete: entry.deleting > 0,
        }
    }

    fn stored(&self) -> MutexGuard<'_, HashSet<BlobKey>> {
        self.stored.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers that a put of `key` was reported `Stored`.
    pub(super) fn reported_stored(&self, key: &BlobKey) {
        let mut stored = self.stored();
        if stored.len() >= RECENT {
            stored.clear();
        }
        stored.insert(*key);
    }

    /// Whether a put of `key` was reported `Stored` here and no delete of it started here since.
    pub(super) fn stored_before(&self, key: &BlobKey) -> bool {
        self.stored().contains(key)
    }

    /// Registers a delete of `key` until the returned guard is dropped.
    pub(super) fn deleting(&self, key: &BlobKey) -> Deleting<'_> {
        self.stored().remove(key);
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

/// A repair's (or a put's late commits') claim on its blob (see the module docs).
pub(super) struct Ticket {
    fence: Arc<Fence>,
    key: BlobKey,
    seen: u64,
    during_delete: bool,
}

impl Ticket {
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

impl Drop for Ticket {
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
