//! [`Throttled`]: reads paced to a rate, so a scrub or a copy can run against a production store
//! without starving its readers. Everything but `get` passes straight through.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use tokio::time::Instant;

use crate::backend::{AliasRebuild, Committed};
use crate::backend::{Backend, BlobKey, BlobStat, BlobWriter, GetResult, PendingBlob, PutHint};
use crate::integrity::{Digests, Hash};
use crate::units::Rate;
use crate::Result;

/// Paces units (bytes or blobs) to a rate: each caller reserves the next free slot.
#[derive(Debug)]
struct Pacer {
    per_second: f64,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    async fn take(&self, units: u64) {
        let wait_until = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = next.filter(|n| *n > now).unwrap_or(now);
            *next = Some(start + Duration::from_secs_f64(units as f64 / self.per_second));
            start
        };
        tokio::time::sleep_until(wait_until).await;
    }
}

/// A backend whose reads are paced to a [`Rate`].
#[derive(Debug, Clone)]
pub struct Throttled {
    inner: Arc<dyn Backend>,
    rate: Rate,
    pacer: Arc<Pacer>,
}

impl Throttled {
    /// Paces `inner`'s reads to `rate`.
    pub fn new(inner: Arc<dyn Backend>, rate: Rate) -> Throttled {
        let per_second = match rate {
            Rate::Bytes(b) | Rate::Blobs(b) => b,
        };
        Throttled {
            inner,
            rate,
            pacer: Arc::new(Pacer {
                per_second,
                next: Mutex::new(None),
            }),
        }
    }
}

#[async_trait]
impl Backend for Throttled {
    fn describe(&self) -> String {
        format!("{} at {}", self.inner.describe(), self.rate)
    }

    async fn begin_put(&self, hint: &PutHint) -> Result<Box<dyn BlobWriter>> {
        self.inner.begin_put(hint).await
    }

    async fn commit_batch(&self, items: Vec<PendingBlob>) -> Vec<Result<Committed>> {
        self.inner.commit_batch(items).await
    }

    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<Option<GetResult>> {
        if let Rate::Blobs(_) = self.rate {
            self.pacer.take(1).await;
            return self.inner.get(key, range).await;
        }
        let Some(got) = self.inner.get(key, range).await? else {
            return Ok(None);
        };
        let pacer = self.pacer.clone();
        let stream = got
            .stream
            .then(move |chunk| {
                let pacer = pacer.clone();
                async move {
                    if let Ok(c) = &chunk {
                        pacer.take(c.len() as u64).await;
                    }
                    chunk
                }
            })
            .boxed();
        Ok(Some(GetResult {
            size: got.size,
            stream,
            digests: got.digests,
        }))
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<BlobStat>> {
        self.inner.head(key).await
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool> {
        self.inner.delete(key).await
    }

    fn list(&self) -> BoxStream<'static, Result<BlobKey>> {
        self.inner.list()
    }

    async fn resolve_alias(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        self.inner.resolve_alias(hash).await
    }

    async fn rebuild_aliases(&self, found: BoxStream<'_, Digests>) -> Result<AliasRebuild> {
        self.inner.rebuild_aliases(found).await
    }

    async fn quarantine(&self, key: &BlobKey) -> Result<bool> {
        self.inner.quarantine(key).await
    }

    fn recorded_digests_trusted(&self) -> bool {
        self.inner.recorded_digests_trusted()
    }

    async fn sweep(&self) -> Result<u64> {
        self.inner.sweep().await
    }
}
