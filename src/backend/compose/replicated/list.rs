//! The listing of a [`Replicated`](super::Replicated) store: every blob any replica lists, once,
//! by key ([`union`]) or with what each replica's listing gives of it ([`union_meta`]: an object
//! store's sizes and times with no request per blob, where the default would `HEAD` each blob
//! through the replicas, 40M round trips at 40M blobs, for `gc`, `ls` and a copy from the store;
//! a copy into it reads each replica's own listing, `Backend::listings_of_record`).
//!
//! Keys are yielded as the replicas list them, the first replica's as they come and each later
//! replica's that no earlier one listed. The keys already yielded are kept in a
//! [`KeyTable`] (in memory up to [`key_table::IN_MEMORY`] keys, in a temp SQLite database
//! beyond), not in a `HashSet`: `ls`, `fsck`, `scrub`, `copy` and `gc` of a replicated store walk
//! it, and a set of every key in memory would cost some 14 GB at 40M blobs, and its first key would
//! wait for every replica's whole listing.

use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt};

use crate::backend::key_table::{self, KeyTable};
use crate::backend::{Backend, BlobKey, BlobStat};
use crate::{Error, Result};

/// What a replica's listing yields: a key, or a key with what the listing knows of its blob.
trait Listed: Send + 'static {
    fn key(&self) -> BlobKey;
    /// The replica's listing of these.
    fn list(replica: &Arc<dyn Backend>) -> BoxStream<'static, Result<Self>>
    where
        Self: Sized;
}

impl Listed for BlobKey {
    fn key(&self) -> BlobKey {
        *self
    }
    fn list(replica: &Arc<dyn Backend>) -> BoxStream<'static, Result<BlobKey>> {
        replica.list()
    }
}

/// The blob as the first replica that lists it gives it: its copy's size and time there.
impl Listed for BlobStat {
    fn key(&self) -> BlobKey {
        self.key
    }
    fn list(replica: &Arc<dyn Backend>) -> BoxStream<'static, Result<BlobStat>> {
        replica.clone().list_meta()
    }
}

/// Walks the replicas one after another.
struct Union<T> {
    replicas: Arc<Vec<Arc<dyn Backend>>>,
    /// The replica being listed (`current`'s), or the next one to list.
    at: usize,
    current: Option<BoxStream<'static, Result<T>>>,
    /// Keys yielded so far, noted only while a later replica is left to dedup against.
    seen: KeyTable,
    failures: Vec<String>,
    describe: String,
    done: bool,
}

/// Every key listed by any of `replicas`, each once. A replica whose listing fails is logged and
/// skipped (its keys listed so far count); only if every replica fails does the stream end with
/// an error.
pub(super) fn union(
    replicas: Arc<Vec<Arc<dyn Backend>>>,
    describe: String,
) -> BoxStream<'static, Result<BlobKey>> {
    union_in(replicas, describe, key_table::IN_MEMORY)
}

/// [`union`] with each blob's size and time from the listing of the first replica that lists it
/// ([`Backend::list_meta`]).
pub(super) fn union_meta(
    replicas: Arc<Vec<Arc<dyn Backend>>>,
    describe: String,
) -> BoxStream<'static, Result<BlobStat>> {
    union_in(replicas, describe, key_table::IN_MEMORY)
}

/// [`union`] or [`union_meta`], its keys held in memory up to `in_memory`.
fn union_in<T: Listed>(
    replicas: Arc<Vec<Arc<dyn Backend>>>,
    describe: String,
    in_memory: usize,
) -> BoxStream<'static, Result<T>> {
    if replicas.len() == 1 {
        return T::list(&replicas[0]);
    }
    let union = Union {
        replicas,
        at: 0,
        current: None,
        seen: KeyTable::new(in_memory),
        failures: Vec::new(),
        describe,
        done: false,
    };
    stream::unfold(union, |mut u| async move {
        let next = u.next().await?;
        Some((next, u))
    })
    .boxed()
}

impl<T: Listed> Union<T> {
    async fn next(&mut self) -> Option<Result<T>> {
        loop {
            if self.done {
                return None;
            }
            let Some(listing) = self.current.as_mut() else {
                if self.at == self.replicas.len() {
                    self.done = true;
                    if self.failures.len() == self.replicas.len() {
                        let why = self.failures.join("; ");
                        return Some(Err(Error::backend(self.describe.clone(), why)));
                    }
                    return None;
                }
                self.current = Some(T::list(&self.replicas[self.at]));
                continue;
            };
            match listing.next().await {
                Some(Ok(item)) => match self.fresh(item.key()) {
                    Ok(true) => return Some(Ok(item)),
                    Ok(false) => {}
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
                Some(Err(e)) => {
                    let replica = self.replicas[self.at].describe();
                    tracing::warn!(%replica, error = %e.report(), "replica list failed");
                    self.failures.push(format!("{replica}: {}", e.report()));
                    if let Err(e) = self.end_replica() {
                        return Some(Err(e));
                    }
                }
                None => {
                    if let Err(e) = self.end_replica() {
                        return Some(Err(e));
                    }
                }
            }
        }
    }

    /// Whether `key` is listed here for the first time (and notes it for the replicas after).
    fn fresh(&mut self, key: BlobKey) -> Result<bool> {
        // A replica's own listing names each key once, so the first replica's keys need no check.
        if self.at > 0 && self.seen.contains(&key)? {
            return Ok(false);
        }
        if self.at + 1 < self.replicas.len() {
            self.seen.note(key, 1)?;
        }
        Ok(true)
    }

    /// Moves on to the next replica, with every key noted so far visible to its checks.
    fn end_replica(&mut self) -> Result<()> {
        self.current = None;
        self.at += 1;
        self.seen.finish().inspect_err(|_| self.done = true)
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use std::collections::HashSet;

    use futures::TryStreamExt;

    use super::*;
    use crate::backend::compose::replicated::repair::tests::{each_lacking_a_third, put};

    /// Three replicas holding overlapping thirds of 90 blobs, the keys yielded moved to disk past 4:
    /// every blob once, the first replica's first and in its own order.
    #[tokio::test]
    async fn every_blob_of_any_replica_is_listed_once() {
        let mems = each_lacking_a_third(90).await;
        // One blob on the last replica alone.
        put(&mems[2], b"only on the last").await;
        let first: Vec<BlobKey> = mems[0].list().try_collect().await.expect("list");
        let mut want = HashSet::new();
        for m in &mems {
            let keys: Vec<BlobKey> = m.list().try_collect().await.expect("list");
            want.extend(keys);
        }
        let replicas: Vec<Arc<dyn Backend>> = mems
            .iter()
            .map(|m| Arc::new(m.clone()) as Arc<dyn Backend>)
            .collect();
        for in_memory in [4, 1 << 20] {
            let got: Vec<BlobKey> =
                union_in::<BlobKey>(Arc::new(replicas.clone()), "r".into(), in_memory)
                    .try_collect()
                    .await
                    .expect("union");
            assert_eq!(got.len(), 91, "limit {in_memory}");
            assert_eq!(got.iter().copied().collect::<HashSet<_>>(), want);
            assert_eq!(got[..first.len()], first[..], "limit {in_memory}");
            // With sizes: the same blobs, each once with its size (in an order of their own: a
            // memory replica's sizes come from `head`s run side by side).
            let stats: Vec<BlobStat> =
                union_in::<BlobStat>(Arc::new(replicas.clone()), "r".into(), in_memory)
                    .try_collect()
                    .await
                    .expect("union with sizes");
            let mut keys: Vec<BlobKey> = stats.iter().map(|s| s.key).collect();
            let mut sorted = got.clone();
            keys.sort();
            sorted.sort();
            assert_eq!(keys, sorted, "limit {in_memory}");
            for st in &stats {
                let size = futures::future::join_all(mems.iter().map(|m| m.head(&st.key)))
                    .await
                    .into_iter()
                    .find_map(|h| h.expect("head"))
                    .map(|h| h.size);
                assert_eq!(Some(st.size), size, "limit {in_memory}");
            }
        }
    }
}
