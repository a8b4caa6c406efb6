//! Removing records, each decided under the write lock so that no concurrent put or delete of the
//! same blob (in any process) can leave an entry pointing nowhere.

use super::{FsIndex, TxError};
use crate::backend::BlobKey;
use crate::Result;

const DELETE: &str = "DELETE FROM blobs WHERE substr(sha512, 1, 8) = ?1 AND sha512 = ?2";

const RECORDED: &str = "SELECT 1 FROM blobs WHERE substr(sha512, 1, 8) = ?1 AND sha512 = ?2";

/// What a delete's `take` step did with the blob (see [`FsIndex::remove_taking`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// Moved away from its address.
    Moved,
    /// Not there.
    Absent,
    /// Left in place (a conditional delete whose condition failed).
    Kept,
}

impl FsIndex {
    /// Removes the records of those `keys` for which `gone` holds, deciding under the write lock:
    /// a blob put meanwhile by another process has its record written after its link, so either
    /// `gone` sees the blob and the record stays, or the put's record is written after this
    /// removal. Returns how many records were removed.
    pub(crate) fn remove_if(
        &self,
        keys: &[BlobKey],
        durable: bool,
        gone: impl Fn(&BlobKey) -> bool,
    ) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.write("remove records", durable, |tx| {
            let mut del = tx.prepare_cached(DELETE)?;
            let mut removed = 0;
            for key in keys {
                if gone(key) {
                    let k = key.as_bytes();
                    removed += del.execute((&k[..8], &k[..]))? as u64;
                }
            }
            Ok(removed)
        })
    }

    /// Removes `key`'s record in the same write transaction as `take`, which moves the blob away
    /// from its address (returning whether there was one). Holding the write lock across both
    /// means a put of the same bytes cannot record the blob in between: its record waits, then
    /// finds the blob gone ([`insert_present`](Self::insert_present)). If `take` fails nothing
    /// changes; if the commit fails after `take`, the caller puts the blob back. A crash after
    /// `take` and before the commit leaves the record and the moved blob, which the store's
    /// recovery puts back ([`settle_taken`](Self::settle_taken)).
    /// `take` may also keep the blob ([`Take::Kept`]): then the record stays too.
    pub(crate) fn remove_taking(
        &self,
        key: &BlobKey,
        durable: bool,
        take: impl FnOnce() -> Result<Take>,
    ) -> Result<Take> {
        self.write("remove a record", durable, |tx| {
            let took = take().map_err(TxError::Step)?;
            if took != Take::Kept {
                let k = key.as_bytes();
                tx.prepare_cached(DELETE)?.execute((&k[..8], &k[..]))?;
            }
            Ok(took)
        })
    }

    /// Runs `settle` under the write lock with whether `key` has a record: for a blob a delete
    /// moved away, the record says whether that delete committed (no record) or not (a record:
    /// put the blob back). Under the lock no delete is half done.
    pub(crate) fn settle_taken(
        &self,
        key: &BlobKey,
        settle: impl FnOnce(bool) -> Result<()>,
    ) -> Result<()> {
        self.write("settle a delete", false, |tx| {
            let k = key.as_bytes();
            let recorded = tx.prepare_cached(RECORDED)?.exists((&k[..8], &k[..]))?;
            settle(recorded).map_err(TxError::Step)
        })
    }

    /// Runs `take` for each of `keys` that has no record, under the write lock: a blob linked by
    /// a put whose record failed is taken back unless another put, finding it linked, recorded it
    /// as its own meanwhile (see the fs backend's `publish`). Writes nothing.
    pub(crate) fn take_unrecorded(&self, keys: &[BlobKey], take: impl Fn(&BlobKey)) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.write("take back unrecorded blobs", false, |tx| {
            let mut find = tx.prepare_cached(RECORDED)?;
            for key in keys {
                let k = key.as_bytes();
                if !find.exists((&k[..8], &k[..]))? {
                    take(key);
                }
            }
            Ok(())
        })
    }
}
