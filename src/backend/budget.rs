//! A cap on the bytes of read chunks alive at once: one per fs store, and one per process for the
//! copies that wrappers hold while they verify them ([`compose::verify`](super::compose::verify)).
//!
//! A read's chunks live until its consumer drops them: read ahead of it, held back by the verifier
//! until the blob's hash is checked, queued in a server connection's write buffer until the client
//! takes them. A client that reads slowly, or not at all, keeps them for as long as it likes; 300
//! HTTP clients that stopped reading an 8 MB blob kept 1.75 GB of the server's memory (about
//! 6 MiB each), and the server admits thousands of connections. So every chunk larger than
//! [`FLOOR_CHUNK`] is charged to a budget, and its charge goes back when the last handle to its
//! bytes is dropped. A read that finds the budget spent still makes progress: on the fs one chunk
//! of at most [`FLOOR_CHUNK`] at a time, uncharged, and only while its consumer waits for it; in a
//! wrapper, through a temporary file instead of memory. Memory then grows with downloads by a few
//! floor chunks each, not by megabytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

/// The largest read made without a charge, and the chunk a read falls back to once the budget is
/// spent. At 64 KiB a read from the page cache still runs at GB/s.
pub(crate) const FLOOR_CHUNK: usize = 64 << 10;

/// The bytes of read chunks a store lets live at once (`FsOptions::read_budget`).
#[derive(Debug)]
pub(crate) struct ReadBudget {
    used: AtomicU64,
    /// Changed only for the process's held budget ([`ReadBudget::set_limit`]).
    limit: AtomicU64,
}

impl ReadBudget {
    pub(crate) fn new(limit: u64) -> Arc<ReadBudget> {
        Arc::new(ReadBudget {
            used: AtomicU64::new(0),
            limit: AtomicU64::new(limit),
        })
    }

    /// A charge of `n` bytes, or `None` if the budget has no room for them.
    pub(crate) fn charge(self: &Arc<Self>, n: usize) -> Option<Charge> {
        let n = n as u64;
        let limit = self.limit.load(Ordering::Relaxed);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&after| after <= limit)
            })
            .ok()?;
        Some(Charge {
            budget: self.clone(),
            n,
        })
    }

    /// How a read of `len` bytes wanted in one piece is made: `Some` with its charge while the
    /// budget has room, `Some(None)` uncharged if it is no larger than a floor chunk, `None` if it
    /// must be read otherwise (streamed, or through a file).
    pub(crate) fn piece(self: &Arc<Self>, len: usize) -> Option<Option<Charge>> {
        match self.charge(len) {
            Some(charge) => Some(Some(charge)),
            None => (len <= FLOOR_CHUNK).then_some(None),
        }
    }

    /// The next chunk of a stream that wants `want` bytes: all of them, charged, while the budget
    /// has room; else at most a floor chunk, uncharged.
    pub(crate) fn chunk(self: &Arc<Self>, want: usize) -> (usize, Option<Charge>) {
        match self.charge(want) {
            Some(charge) => (want, Some(charge)),
            None => (want.min(FLOOR_CHUNK), None),
        }
    }

    /// A new limit, for the charges asked for after the call: charges taken already stay until
    /// their bytes are dropped, and while they exceed a lowered limit no new one is granted.
    pub(crate) fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Bytes charged now (a server's metrics).
    #[cfg(any(test, feature = "server"))]
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The limit charges are granted within (a server's metrics).
    #[cfg(feature = "server")]
    pub(crate) fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }
}

/// The process's budget for blobs held in memory whole once checked
/// ([`HELD_IN_MEMORY`](super::compose::verify::HELD_IN_MEMORY)): the copies that `Cached` and
/// `Replicated` verify before they yield a byte, and the blobs a server reads whole before a
/// response's head.
pub(crate) fn held() -> &'static Arc<ReadBudget> {
    static BUDGET: OnceLock<Arc<ReadBudget>> = OnceLock::new();
    BUDGET.get_or_init(|| ReadBudget::new(super::compose::verify::HELD_IN_MEMORY))
}

/// Bytes taken from a [`ReadBudget`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<ReadBudget>,
    n: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// A chunk's bytes, carrying `charge` (if any) for as long as any handle to them lives.
pub(crate) fn charged<B>(buf: B, charge: Option<Charge>) -> Bytes
where
    B: AsRef<[u8]> + Into<Bytes> + Send + 'static,
{
    match charge {
        Some(charge) => Bytes::from_owner(Owned {
            buf,
            _charge: charge,
        }),
        None => buf.into(),
    }
}

struct Owned<B> {
    buf: B,
    _charge: Charge,
}

impl<B: AsRef<[u8]>> AsRef<[u8]> for Owned<B> {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_lives_as_long_as_its_bytes() {
        let budget = ReadBudget::new(100);
        let a = charged(vec![1; 60], budget.charge(60));
        assert_eq!(budget.used(), 60);
        assert!(budget.charge(41).is_none(), "over the limit");
        let slice = a.slice(10..20);
        drop(a);
        assert_eq!(budget.used(), 60, "a slice still holds the buffer");
        drop(slice);
        assert_eq!(budget.used(), 0);
        let whole = budget.charge(100);
        assert!(whole.is_some(), "the whole budget at once");
        drop(whole);
        assert_eq!(budget.used(), 0);

        let held = budget.charge(80);
        budget.set_limit(50);
        assert!(
            budget.charge(1).is_none(),
            "a lowered limit already exceeded"
        );
        drop(held);
        assert!(
            budget.charge(50).is_some(),
            "the new limit, once the old charge is gone"
        );
        budget.set_limit(0);
        assert!(budget.charge(1).is_none(), "a limit of 0 grants nothing");
        assert!(
            budget.piece(FLOOR_CHUNK + 1).is_none(),
            "nor a piece past a floor chunk"
        );
    }
}
