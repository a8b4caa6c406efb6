//! What a put finds stored at the address its caller expects, before it reads its input.

use super::put::PutOptions;
use super::Store;
use crate::backend::{BlobKey, BlobStat, BlobWriter, Committed, Presence};
use crate::integrity::{Algorithm, Digests};
use crate::Result;

/// What a put found at the address its caller expects, before reading its input.
pub(super) enum Found {
    /// Nothing to rely on: no single sha512 expected, not stored, damaged, or the store cannot
    /// tell. The put writes its bytes.
    Nothing,
    /// Stored, and whole as far as can be told before reading: the put hashes its input and
    /// writes nothing.
    Stored(BlobKey),
    /// Stored, but nothing says yet whether whole: a remote object (S3, Manta) has no trusted
    /// record of its size, and the caller gave none to compare it with. The put holds its bytes
    /// as an upload ([`PutHint::hold`]) and, once they are read and their size is known,
    /// settles it ([`Store::settle_unchecked`]).
    ///
    /// [`PutHint::hold`]: crate::backend::PutHint::hold
    Unchecked(BlobKey),
    /// An object of another size than the caller's [`expected_size`](PutOptions::expected_size)
    /// is at the key of a store that keeps no trusted records (cut short, or grown), or some
    /// replica's copy is there but not every replica's at one size ([`Presence::Partly`]): the
    /// put writes its bytes and holds them until its commit, which replaces the object
    /// ([`PutHint::hold`]), where an upload straight to the key (create-only) would be refused.
    ///
    /// [`PutHint::hold`]: crate::backend::PutHint::hold
    Replace,
}

/// The key the caller's expected integrity names, if it has exactly one sha512. With several,
/// bytes matching any of them verify (ssri's rule), so none of them is *the* key up front.
pub(super) fn expected_key(options: &PutOptions) -> Option<BlobKey> {
    let expected = options.expected.as_ref()?;
    let mut sha512s = expected.all_of(Algorithm::Sha512);
    let first = sha512s.next()?;
    if sha512s.any(|h| h != first) {
        return None;
    }
    BlobKey::from_hash(first)
}

impl Store {
    /// Whether the caller expects a sha512 that is already stored (so the put can skip writing).
    /// The blob is marked recent in the same call ([`Backend::freshen`]), as the put begins and
    /// not only at its end: gc spares a blob put again since its listing (it asks as it deletes),
    /// however long the put takes. Only a shortcut: a store that cannot tell whether it holds the
    /// blob (a replica down while the others lack it) gets it written, as if it did not.
    ///
    /// A put never takes an object it has not checked for the blob: where the backend keeps
    /// trusted records (fs, memory), against its record; elsewhere against the caller's
    /// [`expected_size`](PutOptions::expected_size), and without one, against the size of the
    /// bytes once read ([`Found::Unchecked`]). So a migration or a copy, which know the size,
    /// read and hash a stored blob and nothing more; a put of its sha512 alone holds the bytes
    /// as it reads them (in memory, or a spool file past 16 MiB) and sends nothing unless the
    /// stored object turns out cut short or grown.
    ///
    /// [`Backend::freshen`]: crate::backend::Backend::freshen
    pub(super) async fn hint(&self, options: &PutOptions) -> Result<Found> {
        let Some(key) = expected_key(options) else {
            return Ok(Found::Nothing);
        };
        let presence = match self.backend.freshen(&key).await {
            Ok(presence) => presence,
            Err(e) => {
                tracing::debug!(blob = %key, error = %e.report(), "cannot tell whether the blob is stored: writing it");
                return Ok(Found::Nothing);
            }
        };
        let trusted = self.backend.recorded_digests_trusted().is_some();
        // An object is there that cannot be taken for the blob: only the commit replaces it where
        // the store keeps no trusted records (a trusted one's commit checks what it replaces).
        let replace = || match trusted {
            true => Found::Nothing,
            false => Found::Replace,
        };
        let stat = match presence {
            Presence::Held(stat) => stat,
            Presence::Missing => return Ok(Found::Nothing),
            // Some replica's copy, not every one's at one size: the put writes them all.
            _ => return Ok(replace()),
        };
        let record = stat.digests;
        if !self.intact(&stat, options.expected_size) {
            return Ok(replace());
        }
        // A copy damaged in place keeps its size: where the record is trusted (and so present,
        // by `intact`), the copy is checked against it, and a put of the right bytes replaces it.
        match record.filter(|_| trusted) {
            Some(d) => match self.backend.copy_holds(&key, &d).await {
                Ok(true) => Ok(Found::Stored(key)),
                Ok(false) => {
                    tracing::debug!(blob = %key, "the stored copy is damaged or cannot be checked in place: writing the verified bytes");
                    Ok(Found::Nothing)
                }
                Err(e) => {
                    tracing::debug!(blob = %key, error = %e.report(), "cannot check the stored copy: writing it");
                    Ok(Found::Nothing)
                }
            },
            // No trusted record: `intact` compared the object's size with the caller's.
            None if options.expected_size.is_some() => Ok(Found::Stored(key)),
            None => Ok(Found::Unchecked(key)),
        }
    }

    /// Ends a put that found its blob stored but could not check it ([`Found::Unchecked`]), its
    /// bytes now verified against `key` and their size known: an object of that size there is
    /// the blob (its name is their sha512), and the held upload is dropped; one of another size
    /// (cut short, or grown) is replaced by committing the upload, as is a blob gone meanwhile.
    /// Whether the put stored the bytes.
    pub(super) async fn settle_unchecked(
        &self,
        key: BlobKey,
        writer: Box<dyn BlobWriter>,
        digests: &Digests,
    ) -> Result<bool> {
        match self.backend.freshen(&key).await {
            Ok(Presence::Held(st)) if st.size == digests.size => {
                if let Err(e) = writer.abort().await {
                    tracing::warn!(blob = %key, error = %e.report(), "dropping the upload of a blob found stored failed");
                }
                // Its aliases too, as a put that stored it leaves them.
                self.backend.index_stored(digests).await?;
                return Ok(false);
            }
            Ok(Presence::Held(st)) => {
                tracing::warn!(blob = %key, stored = st.size, size = digests.size, "the stored object has the wrong size: replacing it with the verified bytes");
            }
            // Gone meanwhile, or (a replicated store) not on every replica at one size.
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(blob = %key, error = %e.report(), "cannot tell whether the blob is still stored: writing it");
            }
        }
        Ok(writer.commit(digests).await? == Committed::Stored)
    }

    /// Whether a blob is stored where it is kept for good ([`Backend::head_of_record`]: not only in
    /// a cache tier's copy, on every replica) and, as far as a `head` can tell, whole (see
    /// [`intact`](Self::intact)), of `size` bytes if a size is given.
    ///
    /// [`Backend::head_of_record`]: crate::backend::Backend::head_of_record
    pub(crate) async fn stored_intact(&self, key: &BlobKey, size: Option<u64>) -> Result<bool> {
        Ok(match self.backend.head_of_record(key).await? {
            Presence::Held(stat) => self.intact(&stat, size),
            // Not there, or (a replicated store) not on every replica at one size.
            _ => false,
        })
    }

    /// Whether `stat` is of a whole blob, of `size` bytes if a size is given (a remote object cut
    /// short, whose store keeps no record to compare, is written again by a put that knows the
    /// size): where the backend keeps its own trusted record of each blob (fs, memory), a file
    /// whose size disagrees with the record (truncated on disk, say) does not count, so that a put
    /// of the right bytes writes them and its commit replaces the damaged file instead of
    /// skipping it.
    fn intact(&self, stat: &BlobStat, size: Option<u64>) -> bool {
        if size.is_some_and(|n| n != stat.size) {
            return false;
        }
        // A trusted backend's `head` gives no digests when the record disagrees with the file
        // (or is missing: then writing again is merely redundant, and the commit records it).
        self.backend.recorded_digests_trusted().is_none()
            || stat.digests.is_some_and(|d| d.size == stat.size)
    }
}
