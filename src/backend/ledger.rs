//! [`CacheLedger`]: what a cache tier ([`Cached`](super::compose::Cached)) knows of the blobs its
//! local tier holds: each one's size and when it was last used, and the totals.
//!
//! A cache tier must not grow with its contents in memory or at start-up: a local tier of millions
//! of blobs is an ordinary mirror. So a backend that can keep this record beside its blobs, in a
//! file every process using the same local tier shares, offers one through
//! [`Backend::cache_ledger`](super::Backend::cache_ledger) (the filesystem backend keeps it in an
//! SQLite database next to its index). A cache over any other local tier keeps it in memory, which
//! costs no more than the blobs that tier already holds in memory.
//!
//! The calls are synchronous and short (an index lookup or a small transaction); the cache runs
//! them off the async threads.

use std::fmt;
use std::time::SystemTime;

use super::BlobKey;
use crate::Result;

/// The record of what a cache tier's local tier holds (see the [module docs](self)).
pub trait CacheLedger: Send + Sync + fmt::Debug {
    /// Whether `key` is recorded as held.
    fn contains(&self, key: &BlobKey) -> Result<bool>;

    /// Records a fill of `key` that began reading the remote at `began` (microseconds of wall
    /// time): `key` held with `size` bytes and used now (replacing any record of it). Unless a
    /// delete of `key` noted by [`deleted`](Self::deleted) (in any process sharing the record)
    /// came at or after `began`: then the fill's copy may be of a blob deleted since, nothing is
    /// recorded, and `false` says the caller must drop it. One transaction, so that a delete comes
    /// either before the check or after the record (and removes it).
    fn insert_fill(&self, key: &BlobKey, size: u64, began: i64) -> Result<bool>;

    /// Forgets `key` because the blob was deleted, noting when, for [`insert_fill`] in other
    /// processes. A record in memory needs no note: the cache's own stale flags cover fills in
    /// the one process that can see them.
    ///
    /// [`insert_fill`]: Self::insert_fill
    fn deleted(&self, key: &BlobKey) -> Result<()> {
        self.remove(key)
    }

    /// Records uses of blobs, in order (the last is the most recent). A blob not recorded is
    /// recorded with the size given: a copy the local tier holds but the ledger lost (a process
    /// stopped between storing a copy and recording it) is counted again at its next use.
    fn touch(&self, used: &[(BlobKey, u64)]) -> Result<()>;

    /// Forgets `key` (its copy is gone, or about to be).
    fn remove(&self, key: &BlobKey) -> Result<()>;

    /// Takes the least recently used blobs out of the record until the blobs recorded add up to at
    /// most `capacity` bytes, sparing `keep`, and returns them for the caller to delete. One
    /// transaction: two processes evicting at once do not both pick the same blobs. A record of
    /// millions may choose each victim from a sample (the fs ledger does), so that recording a
    /// use need not keep an index of the times of use.
    fn evict_to(&self, capacity: u64, keep: Option<&BlobKey>) -> Result<Vec<BlobKey>>;

    /// Bytes and blobs recorded.
    fn totals(&self) -> Result<(u64, u64)>;

    /// Whether the blobs the local tier held when this record began have been recorded. A new
    /// ledger beside a local tier that already holds blobs (a cache made by an earlier release)
    /// says no, and the cache records them from one listing, once.
    fn adopted(&self) -> Result<bool>;

    /// Records blobs found in the local tier, each as last used when it was stored, keeping the
    /// records of blobs already recorded.
    fn adopt(&self, found: &[(BlobKey, u64, Option<SystemTime>)]) -> Result<()>;

    /// Notes that the listing [`adopt`](Self::adopt) was given is complete.
    fn set_adopted(&self) -> Result<()>;
}

/// Microseconds since the Unix epoch: the ledgers' clock (wall time, so that the processes sharing
/// a ledger order their uses alike).
pub(crate) fn micros(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}
