//! Both alias index designs over one Manta store, each as a fresh process would open it, for the
//! `manta` benchmark: the markers the backend uses and the segment log of earlier versions,
//! measured side by side in one run (as `s3::probe` does for S3). Not a stable API.
//!
//! Each index counts the calls it makes to its store. A marker or segment GET, a segment PUT and a
//! directory listing are one request each (a listing is counted once: past one page, 1,024
//! entries, it is more); a marker PUT is one request once its shard directory exists (the first
//! into a shard also makes it, uncounted).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use super::aliases::{MantaMarkers, MantaSegments};
use super::dirs::Dirs;
use super::layout::Layout;
use super::{MantaClient, MantaConfig};
use crate::backend::alias::log::SegmentStore;
use crate::backend::alias::marker::{Listed, MarkerStore};
use crate::backend::alias::probe::DesignIndex;
use crate::backend::{AliasCacheConfig, AliasRebuild, BlobKey};
use crate::integrity::{Algorithm, Digests, Hash};
use crate::Result;

pub use crate::backend::alias::probe::AliasDesign;

/// A store that counts the calls made to it, and when `read_only` refuses every write.
struct Counted<S> {
    inner: S,
    calls: Arc<AtomicU64>,
    read_only: bool,
}

impl<S> Counted<S> {
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a write, and refuses it when read-only.
    fn write(&self) -> Result<()> {
        self.tick();
        self.refuse()
    }

    fn refuse(&self) -> Result<()> {
        if self.read_only {
            return Err(crate::Error::backend("probe", "this probe may only read"));
        }
        Ok(())
    }
}

#[async_trait]
impl<S: MarkerStore> MarkerStore for Counted<S> {
    async fn create(&self, alg: Algorithm, hex: &str, body: Bytes) -> Result<bool> {
        self.write()?;
        self.inner.create(alg, hex, body).await
    }

    async fn replace(&self, alg: Algorithm, hex: &str, body: Bytes) -> Result<()> {
        self.write()?;
        self.inner.replace(alg, hex, body).await
    }

    async fn get(&self, alg: Algorithm, hex: &str) -> Result<Option<Bytes>> {
        self.tick();
        self.inner.get(alg, hex).await
    }

    fn name(&self, alg: Algorithm, hex: &str) -> String {
        self.inner.name(alg, hex)
    }

    fn list(&self) -> BoxStream<'_, Result<Listed>> {
        self.tick();
        self.inner.list()
    }

    async fn delete(&self, alg: Algorithm, hex: &str) -> Result<()> {
        self.write()?;
        self.inner.delete(alg, hex).await
    }

    async fn blob_record(&self, key: BlobKey) -> Result<Option<Option<Digests>>> {
        self.tick();
        self.inner.blob_record(key).await
    }
}

#[async_trait]
impl<S: SegmentStore> SegmentStore for Counted<S> {
    async fn put(&self, name: &str, body: Bytes) -> Result<()> {
        self.write()?;
        self.inner.put(name, body).await
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        self.tick();
        self.inner.get(name).await
    }

    async fn get_range(&self, name: &str, range: std::ops::Range<u64>) -> Result<Option<Bytes>> {
        self.tick();
        self.inner.get_range(name, range).await
    }

    async fn list(&self) -> Result<Vec<(String, u64)>> {
        self.tick();
        self.inner.list().await
    }

    async fn delete(&self, names: &[String]) -> Result<()> {
        self.calls.fetch_add(names.len() as u64, Ordering::Relaxed);
        self.refuse()?;
        self.inner.delete(names).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

type Segments = Counted<MantaSegments>;

/// One alias index over a Manta store's root, with nothing cached.
pub struct MantaAliasProbe {
    index: DesignIndex<Counted<MantaMarkers>, Segments>,
    calls: Arc<AtomicU64>,
    /// For the blob HEADs of [`sweep_report`](Self::sweep_report).
    client: MantaClient,
    layout: Layout,
}

impl MantaAliasProbe {
    /// Opens `design` over the store `config` names (the same layout the backend uses; loads the
    /// key, makes no request).
    pub fn open(
        config: MantaConfig,
        design: AliasDesign,
        cache: AliasCacheConfig,
    ) -> Result<MantaAliasProbe> {
        Self::open_with(config, design, cache, false)
    }

    /// As [`open`](Self::open), refusing every write (as credentials that may only read would):
    /// an index upgrading from an old log then answers every lookup from the log, its import
    /// stopped at its first write.
    pub fn open_read_only(
        config: MantaConfig,
        design: AliasDesign,
        cache: AliasCacheConfig,
    ) -> Result<MantaAliasProbe> {
        Self::open_with(config, design, cache, true)
    }

    fn open_with(
        config: MantaConfig,
        design: AliasDesign,
        cache: AliasCacheConfig,
        read_only: bool,
    ) -> Result<MantaAliasProbe> {
        let layout = Layout::new(&config.root);
        let client = MantaClient::new(config)?;
        let dirs = Arc::new(Dirs::new(client.clone()));
        let describe = format!("probe:{}{}", client.config().url, layout.root());
        let calls = Arc::new(AtomicU64::new(0));
        let segments = Counted {
            inner: MantaSegments {
                client: client.clone(),
                dirs: dirs.clone(),
                dir: layout.alias_log_dir(),
                describe: describe.clone(),
            },
            calls: calls.clone(),
            read_only,
        };
        let markers = Counted {
            inner: MantaMarkers {
                client: client.clone(),
                dirs,
                layout: layout.clone(),
                describe,
            },
            calls: calls.clone(),
            read_only,
        };
        let index = DesignIndex::open(design, markers, segments, cache);
        Ok(MantaAliasProbe {
            index,
            calls,
            client,
            layout,
        })
    }

    /// Records a blob's aliases (stored when this returns).
    pub async fn record(&self, d: &Digests) -> Result<()> {
        self.index.record(d).await
    }

    /// Records many blobs' aliases (the log writes them as one segment).
    pub async fn record_many(&self, all: &[Digests]) -> Result<()> {
        self.index.record_many(all).await
    }

    /// The blob whose sha1 or blake3 is `hash`.
    pub async fn resolve(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        self.index.resolve(hash).await
    }

    /// fsck's pass over every marker (`--dangling-aliases report`, no grace period): each marker
    /// read and its blob looked for with a HEAD, as the backend's fsck does. The HEADs count as
    /// requests.
    pub async fn sweep_report(&self) -> Result<AliasRebuild> {
        let exists = |key: BlobKey| {
            self.calls.fetch_add(1, Ordering::Relaxed);
            super::blob_exists(&self.client, &self.layout, key)
        };
        self.index.sweep_report(&exists).await
    }

    /// Bytes the marker index holds to read an old log during an upgrade (`None` for the log).
    pub fn legacy_bytes(&self) -> Option<usize> {
        self.index.legacy_bytes()
    }

    /// Requests made so far (see the module documentation for what counts as one).
    pub fn requests(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}
