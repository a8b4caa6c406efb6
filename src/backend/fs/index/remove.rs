//! Removing records, each decided under the write lock so that no concurrent put or delete of the
//! same blob (in any process) can leave an entry pointing nowhere.

use super::{FsIndex, TxError};
use crate::backend::BlobKey;
use crate::Result;

const DELETE: &str = "DELETE FROM blobs WHERE substr(sha512, 1, 8) = ?1 AND sha512 = ?2";

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
    pub(crate) fn remove_taking(
        &self,
        key: &BlobKey,
        durable: bool,
        take: impl FnOnce() -> Result<bool>,
    ) -> Result<bool> {
        self.write("remove a record", durable, |tx| {
            let took = take().map_err(TxError::Step)?;
            let k = key.as_bytes();
            tx.prepare_cached(DELETE)?.execute((&k[..8], &k[..]))?;
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
            let recorded = tx
                .prepare_cached(
                    "SELECT 1 FROM blobs WHERE substr(sha512, 1, 8) = ?1 AND sha512 = ?2",
                )?
                .exists((&k[..8], &k[..]))?;
            settle(recorded).map_err(TxError::Step)
        })
    }
}
