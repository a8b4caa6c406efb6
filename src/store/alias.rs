//! Finding the blob an address names for `stat`, `contains` and `delete`, where a lookup by sha1
//! or blake3 goes through the alias index, and the index can be wrong: fsck counts the entries it
//! corrects (`AliasRebuild::corrected`), and on S3 or Manta an entry is a marker that the server
//! supplies. A read by such a hash checks the bytes against it; these calls read nothing by
//! themselves, so the blob an entry names is confirmed to have the hash before it is reported or
//! deleted (see [`Confirm`]).
//!
//! A blob found not to have the hash it was looked up by is an [`Error::Corrupt`], as a read by
//! that address reports, and not a not-found (or `false`): the blob asked for may still be stored
//! under its own key with only its index entry wrong, so "not stored" would be a claim the store
//! cannot make, and a delete answering "nothing to delete" would leave that blob in place unseen.
//! `tarvault fsck` rebuilds the entry.

use futures::StreamExt;

use super::{alias_hashes, Store};
use crate::backend::{BlobKey, BlobStat};
use crate::integrity::{Algorithm, Hash, Integrity, MultiHasher};
use crate::{Error, Result};

/// How a blob found through the alias index is confirmed to have the hash it was found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confirm {
    /// By the backend's trusted record ([`Backend::recorded_digests_trusted`]: fs, memory) where
    /// there is one. Elsewhere the index is taken at its word unless the digests a remote object
    /// carries (its metadata, written with its bytes, not with the marker) name another hash:
    /// agreeing they prove nothing, but disagreeing they show the entry or the object is wrong,
    /// and gc must then not leave the blob the address names out of its live set. No request
    /// beyond the lookup: for gc's live set, which may name every blob of a remote store by sha1.
    ///
    /// [`Backend::recorded_digests_trusted`]: crate::backend::Backend::recorded_digests_trusted
    Record,
    /// By reading and hashing the blob, whatever the record says, as a read by that hash is
    /// verified (on S3, Manta or HTTP a `GET` of the whole blob instead of a `HEAD`): for `stat`,
    /// `contains`, `delete` and the server's `HEAD` by sha1. The record is no second witness: it
    /// lives in the same index as the entry (one commit writes both; on the fs they are one row),
    /// so a wrong entry comes with a record that agrees with it as often as not.
    Read,
}

/// What checking a blob against the hash it was found by showed.
enum Checked {
    /// It has that hash.
    Holds,
    /// It has another (named, for the error).
    Differs(String),
    /// It is not there (deleted meanwhile).
    Gone,
}

/// The blob an alias entry names, as [`Store::confirm_entry`] found it.
enum Entry {
    /// There, with the hash it was found by.
    Holds(BlobStat),
    /// Not there.
    Gone,
    /// There, without that hash: the [`Error::Corrupt`] to report if no other entry holds.
    Wrong(Error),
}

impl Store {
    /// Finds the stored blob an address names: its key and what the backend knows of it. By
    /// sha512 the key is the address; by sha1 or blake3 the blob the index names is confirmed
    /// (as `confirm` says) to have that hash, and is an [`Error::Corrupt`] if it does not (see
    /// the module docs).
    pub(super) async fn locate(
        &self,
        address: &Integrity,
        confirm: Confirm,
    ) -> Result<Option<(BlobKey, BlobStat)>> {
        for h in address.all_of(Algorithm::Sha512) {
            if let Some(key) = BlobKey::from_hash(h) {
                if let Some(st) = self.backend.head(&key).await? {
                    return Ok(Some((key, st)));
                }
            }
        }
        if address.get(Algorithm::Sha512).is_some() {
            return Ok(None);
        }
        let mut wrong = None;
        for h in alias_hashes(address)? {
            let Some(key) = self.backend.resolve_alias(h).await? else {
                continue;
            };
            match self.confirm_entry(&key, h, confirm).await? {
                Entry::Holds(st) => return Ok(Some((key, st))),
                Entry::Gone => {}
                Entry::Wrong(e) => {
                    wrong.get_or_insert(e);
                }
            }
        }
        wrong.map_or(Ok(None), Err)
    }

    /// The size of the blob `key`, which the caller found through the alias index by `asked` (an
    /// HTTP server's `HEAD`, revalidation or range of `/sha1/…`), confirmed to have that hash as a
    /// read would confirm it ([`Confirm::Read`]). A wrong entry is then the
    /// [`Error::Corrupt`] the `GET` would meet, not a 200 with another blob's size.
    #[cfg(feature = "server")]
    pub(crate) async fn size_resolved(&self, key: &BlobKey, asked: &Hash) -> Result<Option<u64>> {
        match self.confirm_entry(key, asked, Confirm::Read).await? {
            Entry::Holds(st) => Ok(Some(st.size)),
            Entry::Gone => Ok(None),
            Entry::Wrong(e) => Err(e),
        }
    }

    /// The key of the blob `address` names, for gc's live set: its index entry checked against a
    /// trusted record where the backend keeps one, taken at its word otherwise ([`Confirm::Record`]).
    pub(crate) async fn live_key(&self, address: &Integrity) -> Result<Option<BlobKey>> {
        Ok(self
            .locate(address, Confirm::Record)
            .await?
            .map(|(key, _)| key))
    }

    /// The blob `key` the index names for `asked`, if it is there, confirmed as `confirm` says
    /// to have that hash. An alias may outlive its blob (deleted, quarantined): that is
    /// [`Entry::Gone`].
    async fn confirm_entry(&self, key: &BlobKey, asked: &Hash, confirm: Confirm) -> Result<Entry> {
        let Some(st) = self.backend.head(key).await? else {
            return Ok(Entry::Gone);
        };
        Ok(match self.check_alias(key, asked, &st, confirm).await? {
            Checked::Holds => Entry::Holds(st),
            Checked::Gone => Entry::Gone,
            Checked::Differs(found) => Entry::Wrong(wrong_entry(asked, key, &found, &self.name)),
        })
    }

    /// Whether the blob `key`, which the index names for `asked`, has that hash.
    async fn check_alias(
        &self,
        key: &BlobKey,
        asked: &Hash,
        st: &BlobStat,
        confirm: Confirm,
    ) -> Result<Checked> {
        if confirm == Confirm::Read {
            return self.hash_of(key, asked).await;
        }
        let trusted = self.backend.recorded_digests_trusted().is_some();
        let record = st
            .digests
            .as_ref()
            .filter(|d| d.sha512 == *key.as_bytes() && (trusted || d.size == st.size));
        let Some(d) = record else {
            return Ok(Checked::Holds);
        };
        let has = d.hash(asked.algorithm());
        Ok(if has.same_digest(asked) {
            Checked::Holds
        } else {
            Checked::Differs(format!("{has} (recorded)"))
        })
    }

    /// Reads the blob `key` whole and checks it against `asked`.
    async fn hash_of(&self, key: &BlobKey, asked: &Hash) -> Result<Checked> {
        let Some(got) = self.backend.get(key, None).await? else {
            return Ok(Checked::Gone);
        };
        let mut hasher = MultiHasher::new(&[asked.algorithm()]);
        let mut stream = got.stream;
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk?);
        }
        let set = hasher.finalize();
        match set.get(asked.algorithm()) {
            Some(h) if h.same_digest(asked) => Ok(Checked::Holds),
            Some(h) => Ok(Checked::Differs(h.to_string())),
            None => Err(Error::InvalidInput(format!(
                "{} was not computed",
                asked.algorithm()
            ))),
        }
    }
}

/// The error for an alias entry of `backend` naming `key` for `asked`, a hash the blob does not
/// have (it has `found`), logged as it is made.
fn wrong_entry(asked: &Hash, key: &BlobKey, found: &str, backend: &str) -> Error {
    tracing::warn!(blob = %key, %asked, %found, backend, "the alias index names a blob without that hash");
    Error::Corrupt {
        address: format!("{asked} ({key})"),
        backend: backend.to_string(),
        expected: asked.to_string(),
        actual: format!(
            "{found}: the blob the alias index names does not have it (a wrong entry, or the blob \
             damaged; tarvault fsck tells which, and corrects the entry)"
        ),
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::{Backend, PutHint};
    use crate::integrity::{Digests, MultiHasher};
    use crate::store::Verification;
    use crate::{ErrorKind, PutOptions};

    fn sha1_of(bytes: &[u8]) -> Hash {
        let mut h = MultiHasher::new(&[Algorithm::Sha1]);
        h.update(bytes);
        h.finalize()
            .get(Algorithm::Sha1)
            .cloned()
            .expect("sha1 computed")
    }

    /// Commits `digests` to `backend` with no bytes: a record (and alias entries) for a blob that
    /// is already stored, as a wrong or tampered index would have it.
    async fn record(backend: &MemoryBackend, digests: &Digests) {
        let w = backend.begin_put(&PutHint::default()).await.expect("begin");
        w.commit(digests).await.expect("commit");
    }

    /// A store holding the blob B, whose index also names B for the sha1 of A (not stored): the
    /// index entry and B's record both say so, as one wrong commit leaves them. Returns B's
    /// digests and the sha1 of A.
    async fn wrong_alias(memory: &MemoryBackend) -> (Digests, Hash) {
        let store = Store::new(memory.clone());
        let b = store
            .put_bytes(Bytes::from_static(b"blob B"), &PutOptions::default())
            .await
            .expect("put");
        let sha1_a = sha1_of(b"blob A");
        let mut a_digest = [0u8; 20];
        a_digest.copy_from_slice(sha1_a.digest());
        let wrong = Digests::from_parts(
            &b.digests.sha512,
            &a_digest,
            &b.digests.blake3,
            b.digests.size,
        )
        .expect("digests");
        record(memory, &wrong).await;
        (b.digests, sha1_a)
    }

    /// A delete by the sha1 of A, which the index wrongly names B for (entry and record alike),
    /// reads B, finds it is not A and deletes nothing: an error of kind `Corrupt`. A delete by
    /// B's own sha1 still deletes it.
    #[tokio::test]
    async fn a_delete_by_a_wrong_alias_deletes_nothing() {
        let memory = MemoryBackend::new();
        let (b, sha1_a) = wrong_alias(&memory).await;
        for mode in [Verification::Fast, Verification::Full] {
            let store = Store::new(memory.clone()).with_verification(mode);
            let err = store
                .delete(&Integrity::from(sha1_a.clone()))
                .await
                .expect_err("B is not A");
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
            assert!(store.contains(&b.integrity()).await.expect("contains"));
        }
        let store = Store::new(memory.clone());
        let by_sha1_b = Integrity::from(b.hash(Algorithm::Sha1));
        assert!(store.delete(&by_sha1_b).await.expect("delete by B's sha1"));
        assert!(!store.contains(&b.integrity()).await.expect("contains"));
    }

    /// `stat`, `contains` and a read by a sha1 whose index entry names another blob, in either
    /// verification mode, with B's record as wrong as the entry (as the fs's one row has them)
    /// or put right: each reads the blob and finds it is not the blob asked for, an error of kind
    /// `Corrupt`, and the right sha1 still finds B. (`Fast` trusted B's record, which agreed with
    /// the wrong entry, and said B was A.)
    #[tokio::test]
    async fn stat_and_contains_by_a_wrong_alias_do_not_claim_another_blob() {
        let memory = MemoryBackend::new();
        let (b, sha1_a) = wrong_alias(&memory).await;
        let by_sha1_a = Integrity::from(sha1_a);
        // Then with B's record put right again, the entry for A's sha1 left behind, naming B.
        for (right_again, mode) in [
            (false, Verification::Fast),
            (false, Verification::Full),
            (true, Verification::Fast),
            (true, Verification::Full),
        ] {
            if right_again {
                record(&memory, &b).await;
            }
            let store = Store::new(memory.clone()).with_verification(mode);
            let err = store.stat(&by_sha1_a).await.expect_err("B is not A");
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{mode:?}: {err}");
            let err = store.contains(&by_sha1_a).await.expect_err("B is not A");
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{mode:?}: {err}");
            let read = async { store.get(&by_sha1_a).await?.bytes().await };
            let err = read.await.expect_err("B is not A");
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{mode:?}: {err}");
            let by_sha1_b = Integrity::from(b.hash(Algorithm::Sha1));
            assert!(store.contains(&by_sha1_b).await.expect("contains"));
            if right_again {
                assert_eq!(store.stat(&by_sha1_b).await.expect("stat").digests, Some(b));
            }
        }
        // A sha1 no entry names is simply not there.
        let none = Integrity::from(sha1_of(b"blob C"));
        let store = Store::new(memory.clone());
        assert!(!store.contains(&none).await.expect("contains"));
        assert_eq!(
            store.stat(&none).await.expect_err("absent").kind(),
            ErrorKind::NotFound
        );
        assert!(!store.delete(&none).await.expect("delete"));
    }
}
