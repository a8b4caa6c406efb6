//! An `ObjectStore` that counts the requests it passes on to the one it wraps, by kind: how tests
//! and the `remote_index` benchmark measure what an alias lookup costs on a real server. A LIST
//! counts once per listing started (a listing of more than 1,000 keys is several requests).
//! [`Counting::read_only`] also refuses every write (PUT, DELETE), as credentials that may only
//! read would.
#![allow(dead_code)]

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Requests by kind.
#[derive(Debug, Default)]
pub struct Counts {
    pub get: AtomicU64,
    pub put: AtomicU64,
    pub list: AtomicU64,
    pub other: AtomicU64,
    /// Whole GETs of an alias-log segment (`…/alias/log/…` without a range), among `get`.
    pub segment: AtomicU64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        [&self.get, &self.put, &self.list, &self.other]
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .sum()
    }
    pub fn gets(&self) -> u64 {
        self.get.load(Ordering::SeqCst)
    }
    pub fn puts(&self) -> u64 {
        self.put.load(Ordering::SeqCst)
    }
    pub fn lists(&self) -> u64 {
        self.list.load(Ordering::SeqCst)
    }
    pub fn segments(&self) -> u64 {
        self.segment.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
pub struct Counting {
    inner: Arc<dyn ObjectStore>,
    pub counts: Arc<Counts>,
    read_only: bool,
}

impl Counting {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Counting {
        Counting {
            inner,
            counts: Arc::new(Counts::default()),
            read_only: false,
        }
    }

    /// Counts like [`new`](Self::new), and answers every write "permission denied".
    pub fn read_only(inner: Arc<dyn ObjectStore>) -> Counting {
        Counting {
            read_only: true,
            ..Counting::new(inner)
        }
    }

    fn refuse(&self, location: &Path) -> Result<()> {
        if self.read_only {
            return Err(denied(location));
        }
        Ok(())
    }
}

fn denied(location: &Path) -> object_store::Error {
    object_store::Error::PermissionDenied {
        path: location.to_string(),
        source: "this client may only read".into(),
    }
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "counting({})", self.inner)
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::SeqCst);
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        bump(&self.counts.put);
        self.refuse(location)?;
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        bump(&self.counts.other);
        self.refuse(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        bump(&self.counts.get);
        if options.range.is_none() && location.as_ref().contains("/alias/log/") {
            bump(&self.counts.segment);
        }
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        bump(&self.counts.other);
        if self.read_only {
            use futures::StreamExt;
            return locations.map(|p| Err(denied(&p?))).boxed();
        }
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        bump(&self.counts.list);
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        bump(&self.counts.list);
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        bump(&self.counts.other);
        self.refuse(to)?;
        self.inner.copy_opts(from, to, options).await
    }
}
