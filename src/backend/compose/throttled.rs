//! [`Throttled`]: reads paced to a rate, so a scrub or a copy can run against a production store
//! without starving its readers. Everything but `get` passes straight through.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};

use crate::backend::pace::Pacer;
use crate::backend::{AgedDelete, AliasRebuild, Committed, Misplaced, Presence, RebuildOptions};
use crate::backend::{Backend, BlobKey, BlobStat, BlobWriter, GetResult, PendingBlob, PutHint};
use crate::integrity::{Digests, Hash};
use crate::units::Rate;
use crate::Result;

/// What one check of an index entry counts as against a byte rate.
pub(crate) const CHECK_BYTES: f64 = 4096.0;

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
            pacer: Arc::new(Pacer::new(per_second)),
        }
    }

    /// A read of the inner backend, paced: a blob rate takes its slot before the read, a byte
    /// rate as each chunk arrives.
    async fn paced(
        &self,
        read: impl std::future::Future<Output = Result<Option<GetResult>>>,
    ) -> Result<Option<GetResult>> {
        if let Rate::Blobs(_) = self.rate {
            self.pacer.take(1).await;
            return read.await;
        }
        let Some(got) = read.await? else {
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
        Ok(Some(GetResult { stream, ..got }))
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
        self.paced(self.inner.get(key, range)).await
    }

    async fn get_uncached(&self, key: &BlobKey) -> Result<Option<GetResult>> {
        self.paced(self.inner.get_uncached(key)).await
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<BlobStat>> {
        self.inner.head(key).await
    }

    fn size_now(&self, key: &BlobKey) -> Option<Result<Option<u64>>> {
        self.inner.size_now(key)
    }

    fn exists_now(&self, key: &BlobKey) -> Option<Result<bool>> {
        self.inner.exists_now(key)
    }

    fn verifies_reads_whole(&self) -> Option<crate::backend::Vouched> {
        self.inner.verifies_reads_whole()
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool> {
        self.inner.delete(key).await
    }

    async fn delete_unless_written_since(
        &self,
        key: &BlobKey,
        cutoff: std::time::SystemTime,
    ) -> Result<AgedDelete> {
        self.inner.delete_unless_written_since(key, cutoff).await
    }

    fn list(&self) -> BoxStream<'static, Result<BlobKey>> {
        self.inner.list()
    }

    fn list_stat(self: Arc<Self>) -> BoxStream<'static, Result<BlobStat>> {
        self.inner.clone().list_stat()
    }

    fn list_meta(self: Arc<Self>) -> BoxStream<'static, Result<BlobStat>> {
        self.inner.clone().list_meta()
    }

    fn listings_of_record(self: Arc<Self>) -> Vec<BoxStream<'static, Result<BlobStat>>> {
        self.inner.clone().listings_of_record()
    }

    async fn resolve_alias(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        self.inner.resolve_alias(hash).await
    }

    async fn index_stored(&self, digests: &Digests) -> Result<()> {
        self.inner.index_stored(digests).await
    }

    /// The listing pass over the index (a remote store's markers, a GET and a HEAD each) is paced
    /// too: at the blob rate, or, for a byte rate, as if each check read 4 KiB (`CHECK_BYTES`).
    async fn rebuild_aliases(
        &self,
        found: BoxStream<'_, Digests>,
        options: &RebuildOptions,
    ) -> Result<AliasRebuild> {
        let ours = match self.rate {
            Rate::Blobs(b) => b,
            Rate::Bytes(b) => b / CHECK_BYTES,
        };
        let options = RebuildOptions {
            checks_per_second: Some(options.checks_per_second.map_or(ours, |c| c.min(ours))),
            ..*options
        };
        self.inner.rebuild_aliases(found, &options).await
    }

    async fn quarantine(&self, key: &BlobKey) -> Result<bool> {
        self.inner.quarantine(key).await
    }

    async fn freshen(&self, key: &BlobKey) -> Result<Presence> {
        self.inner.freshen(key).await
    }

    async fn head_of_record(&self, key: &BlobKey) -> Result<Presence> {
        self.inner.head_of_record(key).await
    }

    fn recorded_digests_trusted(&self) -> Option<crate::backend::Vouched> {
        self.inner.recorded_digests_trusted()
    }

    async fn copy_holds(&self, key: &BlobKey, record: &Digests) -> Result<bool> {
        self.inner.copy_holds(key, record).await
    }

    async fn sweep(&self) -> Result<u64> {
        self.inner.sweep().await
    }

    async fn restore_misplaced(&self) -> Result<Misplaced> {
        self.inner.restore_misplaced().await
    }
}
