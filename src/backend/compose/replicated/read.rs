//! Reads: the replicas in order, each within the read timeout, and the first answer that holds.

use std::future::Future;
use std::ops::Range;

use super::Replicated;
use crate::backend::compose::verify::{
    fetch_checked, fetch_for_copy, refused, slice, Fetched, Read,
};
use crate::backend::{Backend, BlobKey, BlobStat, GetResult, Presence};
use crate::{Error, ErrorKind, Result};

impl Replicated {
    /// `fut`, or a backend error if it takes longer than the read timeout.
    pub(super) async fn timed<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        match self.read_timeout {
            None => fut.await,
            Some(limit) => tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
                Err(Error::backend(
                    self.describe(),
                    format!("replica did not answer within {limit:?}"),
                ))
            }),
        }
    }

    /// The first replica's `Some` answer to `ask`, trying the next on `None` or an error. `None`
    /// only if every replica that can answer answered none; otherwise the last error: what a
    /// replica that failed would have answered is unknown, and the blob may be there (a server
    /// answers 503 then, not 404, and a client tries again rather than concluding the blob is
    /// absent). A replica that cannot answer such a question at all ([`ErrorKind::Unsupported`]:
    /// an `http://` replica asked by a hash it has no route for) never will, so it is left out
    /// while another replica answers; only if none can is that the error.
    pub(super) async fn first_answer<'a, T, F, Fut>(&'a self, ask: F) -> Result<Option<T>>
    where
        F: Fn(&'a dyn Backend) -> Fut,
        Fut: Future<Output = Result<Option<T>>> + 'a,
    {
        let (mut last_err, mut unsupported, mut answered) = (None, None, false);
        for replica in self.replicas.iter() {
            match self.timed(ask(&**replica)).await {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => answered = true,
                Err(e) if e.kind() == ErrorKind::Unsupported => {
                    tracing::debug!(replica = %replica.describe(), error = %e.report(), "replica cannot answer");
                    unsupported = Some(e);
                }
                Err(e) => {
                    tracing::debug!(replica = %replica.describe(), error = %e.report(), "replica read failed");
                    last_err = Some(e);
                }
            }
        }
        match (last_err, unsupported) {
            (Some(e), _) => Err(e),
            (None, Some(e)) if !answered => Err(e),
            _ => Ok(None),
        }
    }

    /// What every replica answers to `ask` of `key` (asked at once), for a blob that counts as
    /// stored only if every replica holds it, at one size: [`Presence::Held`] with the first
    /// replica's stat if all hold it at one size, [`Presence::Missing`] if none holds it and one
    /// said so, else the first error (a replica that cannot say may be the one lacking it). Where
    /// some replica holds a copy but not every one holds one of the same size (one lacks the
    /// blob, a copy is cut short or grown, or a replica is itself only partly there),
    /// [`Presence::Partly`], whatever the others failed to answer: a put then writes every
    /// replica, holding its bytes until its commit (a create-only upload straight to the blob's
    /// key would be refused where an object is), and each replica keeps a copy of the right size
    /// and replaces another. Which copy is whole is not for a `head` to tell: the first
    /// replica's may not be, so no stat comes with that answer.
    pub(super) async fn held_by_every<'a, F, Fut>(
        &'a self,
        key: &BlobKey,
        ask: F,
    ) -> Result<Presence>
    where
        F: Fn(&'a dyn Backend) -> Fut,
        Fut: Future<Output = Result<Presence>> + 'a,
    {
        let answers = futures::future::join_all(self.replicas.iter().map(|r| ask(&**r))).await;
        let mut first: Option<BlobStat> = None;
        let (mut lacking, mut sizes_differ, mut partly) = (false, false, false);
        let mut failed = None;
        for answer in answers {
            match answer {
                Ok(Presence::Held(stat)) => match &first {
                    Some(f) => sizes_differ |= f.size != stat.size,
                    None => first = Some(stat),
                },
                Ok(Presence::Partly) => partly = true,
                Ok(Presence::Missing) => lacking = true,
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if partly || (first.is_some() && (lacking || sizes_differ)) {
            tracing::debug!(blob = %key, lacking, sizes_differ, partly, "replicas' copies differ");
            return Ok(Presence::Partly);
        }
        match (first, failed) {
            (_, Some(e)) if !lacking => Err(e),
            (Some(stat), _) => Ok(Presence::Held(stat)),
            (None, _) => Ok(Presence::Missing),
        }
    }

    /// Reads `key` from the first replica whose copy verifies, repairing (with `read_repair`) the
    /// replicas before it that were missing or corrupt. With no copy that verifies: the error of a
    /// replica that could not be read if there is one (that replica's copy may be good, or be the
    /// only one), else a bad copy (the store reports the blob corrupt), else `None`: every
    /// replica answered that it lacks the blob. `how` says which read each replica makes: a pass
    /// ([`Read::OfRecord`]) reads a cached replica's store of record, not its tier.
    pub(super) async fn read(
        &self,
        key: &BlobKey,
        range: Option<Range<u64>>,
        how: Read,
    ) -> Result<Option<GetResult>> {
        let mut to_fix = Vec::new();
        let mut first_bad = None;
        let mut last_err = None;
        let mut ticket = None;
        for (i, replica) in self.replicas.iter().enumerate() {
            // A copy that will repair others gets its sha1/blake3 in the pass that verifies it.
            let repair = self.read_repair && !to_fix.is_empty();
            // Taken before the copy is read, so that a delete from now on keeps it off the others.
            if repair && ticket.is_none() {
                ticket = Some(self.fence.ticket(key));
            }
            let fetched = self
                .timed(async {
                    if repair {
                        fetch_for_copy(&**replica, key, how).await
                    } else {
                        fetch_checked(&**replica, key, how).await
                    }
                })
                .await;
            match fetched {
                Ok((Fetched::Good(bytes), digests)) => {
                    if let (Some(d), Some(ticket), true) = (&digests, &ticket, repair) {
                        self.write_copies(key, &bytes, d, &to_fix, ticket).await;
                    }
                    return slice(bytes, range, digests).map(Some);
                }
                Ok((Fetched::Missing, _)) => to_fix.push((i, false)),
                Ok((Fetched::Bad(bytes, found), _)) => {
                    tracing::warn!(blob = %key, replica = %replica.describe(), %found, "corrupt replica");
                    to_fix.push((i, true));
                    first_bad.get_or_insert((bytes.len(), found));
                }
                Err(e) => {
                    tracing::warn!(blob = %key, replica = %replica.describe(), error = %e.report(), "replica read failed");
                    last_err = Some(e);
                }
            }
        }
        match (first_bad, last_err) {
            // No copy verifies, but a replica could not be read and its copy may be good: its
            // error, not a verdict of corrupt (which fsck would act on by quarantining).
            (Some(_), Some(e)) => {
                tracing::warn!(blob = %key, error = %e.report(), "no copy verified, and a replica could not be read");
                Err(e)
            }
            // Every replica answered and none verifies: the blob is corrupt (and fsck can
            // quarantine it), not missing.
            (Some((size, found)), None) => {
                refused(key, size, range, &found, self.describe()).map(Some)
            }
            // None has it, but one could not be asked and may be the one that does.
            (None, Some(e)) => Err(e),
            (None, None) => Ok(None),
        }
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::compose::ReplicatedOptions;
    use crate::backend::memory::MemoryBackend;
    use crate::ErrorKind;

    /// What one replica answers.
    #[derive(Debug, Clone, Copy)]
    enum Says {
        Holds(u64),
        Partly,
        Lacks,
        Fails,
    }
    use Says::*;

    fn stat(size: u64) -> BlobStat {
        BlobStat {
            key: BlobKey::new([7; 64]),
            size,
            modified: None,
            digests: None,
        }
    }

    /// `held_by_every` over one replica per answer in `says`, each answering its own.
    async fn held_by_every(says: &[Says]) -> Result<Presence> {
        let replicas = says
            .iter()
            .map(|_| Arc::new(MemoryBackend::new()) as Arc<dyn Backend>)
            .collect();
        let replicated = Replicated::new(replicas, ReplicatedOptions::default())?;
        let ask = |replica: &dyn Backend| {
            let at = (replicated.replicas.iter())
                .position(|r| std::ptr::addr_eq(Arc::as_ptr(r), replica));
            std::future::ready(match at.map(|i| says[i]) {
                Some(Holds(size)) => Ok(Presence::Held(stat(size))),
                Some(Partly) => Ok(Presence::Partly),
                Some(Lacks) => Ok(Presence::Missing),
                Some(Fails) | None => Err(Error::backend("replica", "down")),
            })
        };
        replicated.held_by_every(&stat(0).key, ask).await
    }

    async fn held(says: &[Says]) -> Presence {
        let answer = held_by_every(says).await;
        answer.unwrap_or_else(|e| panic!("{says:?}: {}", e.report()))
    }

    #[tokio::test]
    async fn a_blob_is_held_only_where_every_replica_holds_it_at_one_size() {
        assert_eq!(held(&[Holds(5), Holds(5)]).await, Presence::Held(stat(5)));
        assert_eq!(held(&[Holds(5), Lacks, Holds(5)]).await, Presence::Partly);
        assert_eq!(held(&[Lacks, Holds(5)]).await, Presence::Partly);
        assert_eq!(held(&[Holds(5), Holds(4)]).await, Presence::Partly);
        assert_eq!(held(&[Holds(5), Partly]).await, Presence::Partly);
        assert_eq!(held(&[Lacks, Lacks]).await, Presence::Missing);
    }

    /// A replica that cannot say may be the one lacking the blob, or the only one holding it:
    /// its error is the answer, unless another replica's answer settles it.
    #[tokio::test]
    async fn a_replica_that_fails_is_the_answer_unless_another_settles_it() {
        assert_eq!(held(&[Lacks, Fails]).await, Presence::Missing);
        assert_eq!(held(&[Holds(5), Lacks, Fails]).await, Presence::Partly);
        assert_eq!(held(&[Fails, Holds(5), Holds(4)]).await, Presence::Partly);
        for says in [&[Holds(5), Fails][..], &[Fails, Holds(5)], &[Fails, Fails]] {
            let e = held_by_every(says).await.expect_err("a replica failed");
            assert_eq!(e.kind(), ErrorKind::Backend, "{says:?}: {e}");
        }
    }
}
