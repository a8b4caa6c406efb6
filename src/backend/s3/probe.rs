//! Both alias index designs over one S3 store, each as a fresh process would open it, for the
//! `remote_index` benchmark: the markers the backend uses and the segment log of earlier versions,
//! measured side by side in one run. Not a stable API.

use std::sync::Arc;

use futures::future::BoxFuture;
use object_store::ObjectStore;

use super::aliases::{S3Markers, S3Segments};
use super::keys::Keys;
use crate::backend::alias::probe::DesignIndex;
use crate::backend::{AliasCacheConfig, AliasRebuild, BlobKey};
use crate::integrity::{Digests, Hash};
use crate::Result;

pub use crate::backend::alias::probe::AliasDesign;

/// One alias index over a store prefix, with nothing cached.
pub struct AliasProbe {
    index: DesignIndex<S3Markers, S3Segments>,
    store: Arc<dyn ObjectStore>,
    keys: Keys,
}

impl AliasProbe {
    /// Opens `design` over the store at `prefix` (the same layout the backend uses).
    pub fn open(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        design: AliasDesign,
        cache: AliasCacheConfig,
    ) -> AliasProbe {
        let keys = Keys::new(prefix);
        let describe = format!("probe:{prefix}");
        let segments = S3Segments {
            store: store.clone(),
            dir: keys.alias_log(),
            describe: describe.clone(),
        };
        let markers = S3Markers {
            store: store.clone(),
            keys: keys.clone(),
            describe,
            retries: 4,
        };
        let index = DesignIndex::open(design, markers, segments, cache);
        AliasProbe { index, store, keys }
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
    /// read and its blob looked for with a HEAD, as the backend's fsck does.
    pub async fn sweep_report(&self) -> Result<AliasRebuild> {
        let (store, keys) = (self.store.clone(), self.keys.clone());
        let exists = move |key: BlobKey| {
            let (store, keys) = (store.clone(), keys.clone());
            Box::pin(async move { super::blob_exists(&*store, &keys, "probe", key).await })
                as BoxFuture<'static, Result<bool>>
        };
        self.index.sweep_report(&exists).await
    }

    /// Bytes the marker index's cache holds (`None` for the log, which holds every record).
    pub fn cached_bytes(&self) -> Option<usize> {
        self.index.cached_bytes()
    }

    /// Bytes the marker index holds to read an old log during an upgrade (`None` for the log).
    pub fn legacy_bytes(&self) -> Option<usize> {
        self.index.legacy_bytes()
    }
}
