//! An `ObjectStore` that holds back the PUTs of blobs (keys under `/blobs/`) until it is opened,
//! and counts the PUTs of alias markers that have been answered: how a test puts `fsck` between
//! a put's marker PUTs and its blob PUT, on a real server, without relying on timing.
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
use tokio::sync::watch;

#[derive(Debug)]
pub struct Gate {
    inner: Arc<dyn ObjectStore>,
    open: watch::Sender<bool>,
    /// Blob PUTs waiting at the gate.
    pub blobs_waiting: AtomicU64,
    /// Marker PUTs the server has answered (either way).
    pub markers_answered: AtomicU64,
}

impl Gate {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Gate> {
        Arc::new(Gate {
            inner,
            open: watch::channel(false).0,
            blobs_waiting: AtomicU64::new(0),
            markers_answered: AtomicU64::new(0),
        })
    }

    /// Lets the held blob PUTs (and every later one) through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Waits until `blobs` blob PUTs wait at the gate and `markers` marker PUTs were answered.
    pub async fn reached(&self, blobs: u64, markers: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.blobs_waiting.load(Ordering::SeqCst) < blobs
            || self.markers_answered.load(Ordering::SeqCst) < markers
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the put never reached the gate"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gate({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Gate {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let path = location.as_ref();
        if path.contains("/blobs/") {
            self.blobs_waiting.fetch_add(1, Ordering::SeqCst);
            let mut open = self.open.subscribe();
            let _ = open.wait_for(|o| *o).await;
        }
        let out = self.inner.put_opts(location, payload, opts).await;
        if path.contains("/markers/") {
            self.markers_answered.fetch_add(1, Ordering::SeqCst);
        }
        out
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
