//! Filling the cache tier: one fetch per blob in flight (shared by its readers, on a task of its
//! own), verified, stored and recorded unless a delete or an eviction overtook it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::SystemTime;

use futures::future::{BoxFuture, FutureExt, Shared};

use super::{Cached, Inner};
use crate::backend::compose::replicated::put_copy;
use crate::backend::compose::verify::{fetch_for_copy, Fetched, Held, Read};
use crate::backend::ledger::micros;
use crate::backend::BlobKey;
use crate::integrity::Digests;
use crate::{Error, Result};

/// A fill's good copy, with its digests (computed in the pass that verified it); or a bad copy's
/// size and what it hashed to, its bytes dropped.
pub(super) type Filled = Option<std::result::Result<(Held, Option<Digests>), (u64, String)>>;

pub(super) type Fill = Shared<BoxFuture<'static, std::result::Result<Filled, Arc<Error>>>>;

/// A fill in progress: its shared result, and whether an eviction or a delete of its blob
/// overtook it.
pub(super) struct Flight {
    pub(super) fill: Fill,
    /// Set by [`Cached::evict`] (which a delete goes through): the copy this fill read may be of
    /// a blob deleted since, so it must not stay in the local tier. The fill reads it under the
    /// recording lock before it records its blob, and `evict` sets it before it takes that lock,
    /// so either the fill sees it, or `evict` finds the fill's record (and local copy) and removes
    /// them.
    pub(super) stale: Arc<AtomicBool>,
}

impl Cached {
    /// The one in-progress fill for `key`, started if there is none; `None` if a fill finished
    /// since the caller looked in the local tier (look again).
    pub(super) fn fill(&self, key: BlobKey) -> Option<Fill> {
        let mut inflight = self.inner.inflight();
        if let Some(f) = inflight.get(&key) {
            return Some(f.fill.clone());
        }
        // A fill records its blob before it leaves `inflight`, so this sees any fill that
        // completed after the caller's local lookup (and any other process's).
        match self.inner.ledger.contains(&key) {
            Ok(true) => return None,
            Ok(false) => {}
            Err(e) => self
                .inner
                .local_failed(&key, &e, "cache tier lookup failed"),
        }
        let inner = self.inner.clone();
        let stale = Arc::new(AtomicBool::new(false));
        let mine = stale.clone();
        // On its own task, not in the readers' futures: were they all dropped (cancelled), a fill
        // polled only by them would stay in `inflight` half-done, its remote read open, until
        // the next reader of the blob. The task leaves `inflight` however it ends (even by a
        // panic); it cannot do so before this function inserts it, which holds the lock.
        let task = tokio::spawn(async move {
            let _landing = Landing {
                inner: inner.clone(),
                key,
                stale: mine.clone(),
            };
            inner.fetch_and_fill(key, &mine).await.map_err(Arc::new)
        });
        let fut = async move { task.await.unwrap_or_else(|e| Err(Arc::new(Error::Task(e)))) }
            .boxed()
            .shared();
        inflight.insert(
            key,
            Flight {
                fill: fut.clone(),
                stale,
            },
        );
        Some(fut)
    }
}

/// Takes a fill out of `inflight` when its task ends.
struct Landing {
    inner: Arc<Inner>,
    key: BlobKey,
    stale: Arc<AtomicBool>,
}

impl Drop for Landing {
    fn drop(&mut self) {
        self.inner.landed(&self.key, &self.stale);
    }
}

impl Inner {
    pub(super) fn inflight(&self) -> MutexGuard<'_, HashMap<BlobKey, Flight>> {
        // A map insert or remove cannot leave it half-changed.
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes the fill marked by `stale` from the fills in flight, unless an eviction already did
    /// (and a newer fill of the same blob may have taken its place).
    fn landed(&self, key: &BlobKey, stale: &Arc<AtomicBool>) {
        let mut inflight = self.inflight();
        if inflight
            .get(key)
            .is_some_and(|f| Arc::ptr_eq(&f.stale, stale))
        {
            inflight.remove(key);
        }
    }

    /// Fetches `key` from the remote and, unless `stale` is set first, keeps a good copy locally.
    pub(super) async fn fetch_and_fill(
        self: &Arc<Self>,
        key: BlobKey,
        stale: &Arc<AtomicBool>,
    ) -> Result<Filled> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        // Before the remote read: a delete in another process after this may be of the bytes read.
        let began = micros(SystemTime::now());
        // The sha1/blake3 the cache tier records are hashed with the verifying sha512, in one pass.
        let (fetched, digests) = fetch_for_copy(&*self.remote, &key, Read::Served).await?;
        match fetched {
            Fetched::Missing => Ok(None),
            Fetched::Bad(bytes, found) => {
                // Not cached; the store above reports the blob corrupt.
                tracing::warn!(blob = %key, %found, remote = %self.remote.describe(), "remote copy is corrupt");
                Ok(Some(Err((bytes.len(), found))))
            }
            Fetched::Good(bytes) => {
                // A delete since the remote read: the bytes are served (the read came first) but
                // not kept.
                if bytes.len() <= self.capacity && !stale.load(Ordering::SeqCst) {
                    match &digests {
                        Some(d) => self.keep(key, &bytes, d, began, stale).await,
                        None => {
                            let e = Error::InvalidInput("a good copy came without digests".into());
                            self.local_failed(&key, &e, "cannot fill the cache tier");
                        }
                    }
                }
                Ok(Some(Ok((bytes, digests))))
            }
        }
    }

    /// Stores a verified copy of `key` in the local tier and records it (evicting to capacity),
    /// unless a delete or an eviction overtook the fill meanwhile (`stale`, or a delete noted by
    /// another process after `began`): then the copy is taken out again.
    async fn keep(
        self: &Arc<Self>,
        key: BlobKey,
        bytes: &Held,
        digests: &Digests,
        began: i64,
        stale: &Arc<AtomicBool>,
    ) {
        if let Err(e) = put_copy(&*self.local, &key, bytes, digests).await {
            self.local_failed(&key, &e, "cannot fill the cache tier");
            return;
        }
        let (capacity, size, stale) = (self.capacity, bytes.len(), stale.clone());
        let victims = self
            .clone()
            .recording(move |l| {
                if stale.load(Ordering::SeqCst) || !l.insert_fill(&key, size, began)? {
                    return Ok(None);
                }
                l.evict_to(capacity, Some(&key)).map(Some)
            })
            .await;
        match victims {
            Ok(Some(victims)) => self.drop_local(&victims).await,
            // Overtaken by a delete or an eviction (in this process or, for a delete, another)
            // while storing: take the copy out again.
            Ok(None) => {
                if let Err(e) = self.local.delete(&key).await {
                    self.local_failed(&key, &e, "cannot drop a stale fill");
                }
            }
            // Kept, and recorded at its first use.
            Err(e) => self.local_failed(&key, &e, "cannot record a fill"),
        }
    }
}
