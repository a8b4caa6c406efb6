//! A backend that counts some of the calls it passes on to the one it wraps, and passes on every
//! call a store makes (the immediate answers, `size_now` and `exists_now`, and the trust in its
//! records among them), so that the store behaves over it as over the backend it wraps.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use tarvault::backend::{
    AliasRebuild, Backend, BlobKey, BlobStat, BlobWriter, GetResult, PutHint, RebuildOptions,
    Vouched,
};
use tarvault::{Digests, Hash, Result};

/// `inner`, counting its reads and the uploads begun on it.
#[derive(Clone, Debug)]
pub struct Tally<B> {
    pub inner: B,
    /// `get`s passed on.
    pub gets: Arc<AtomicU64>,
    /// Uploads begun (`begin_put`): a put that begins none sends nothing and holds no copy of its
    /// bytes.
    pub begun: Arc<AtomicU64>,
}

impl<B> Tally<B> {
    pub fn new(inner: B) -> Tally<B> {
        Tally {
            inner,
            gets: Arc::new(AtomicU64::new(0)),
            begun: Arc::new(AtomicU64::new(0)),
        }
    }
}

#[async_trait]
impl<B: Backend> Backend for Tally<B> {
    fn describe(&self) -> String {
        format!("counted({})", self.inner.describe())
    }
    async fn begin_put(&self, hint: &PutHint) -> Result<Box<dyn BlobWriter>> {
        self.begun.fetch_add(1, Ordering::SeqCst);
        self.inner.begin_put(hint).await
    }
    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<Option<GetResult>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key, range).await
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
    async fn delete(&self, key: &BlobKey) -> Result<bool> {
        self.inner.delete(key).await
    }
    fn list(&self) -> BoxStream<'static, Result<BlobKey>> {
        self.inner.list()
    }
    async fn resolve_alias(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        self.inner.resolve_alias(hash).await
    }
    async fn index_stored(&self, digests: &Digests) -> Result<()> {
        self.inner.index_stored(digests).await
    }
    async fn rebuild_aliases(
        &self,
        found: BoxStream<'_, Digests>,
        options: &RebuildOptions,
    ) -> Result<AliasRebuild> {
        self.inner.rebuild_aliases(found, options).await
    }
    fn recorded_digests_trusted(&self) -> Option<Vouched> {
        self.inner.recorded_digests_trusted()
    }
}
