//! Both alias index designs over one S3 store, each as a fresh process would open it, for the
//! `remote_index` benchmark: the markers the backend uses and the segment log of earlier versions,
//! measured side by side in one run. Not a stable API.

use std::sync::Arc;

use object_store::ObjectStore;

use super::aliases::{S3Markers, S3Segments};
use super::keys::Keys;
use crate::backend::alias_log::AliasLog;
use crate::backend::alias_marker::AliasIndex;
use crate::backend::{AliasCacheConfig, BlobKey};
use crate::integrity::{Digests, Hash};
use crate::Result;

/// Which design.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasDesign {
    /// One marker object per alias (what the backend uses).
    Markers,
    /// The segment log of earlier versions (group-committed segments, read whole).
    SegmentLog,
}

enum Index {
    Markers(Arc<AliasIndex<S3Markers, S3Segments>>),
    Log(Arc<AliasLog<S3Segments>>),
}

/// One alias index over a store prefix, with nothing cached.
pub struct AliasProbe {
    index: Index,
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
        let index = match design {
            AliasDesign::Markers => Index::Markers(AliasIndex::new(
                S3Markers {
                    store,
                    keys,
                    describe,
                    retries: 4,
                },
                segments,
                cache,
            )),
            AliasDesign::SegmentLog => Index::Log(AliasLog::new(segments)),
        };
        AliasProbe { index }
    }

    /// Records a blob's aliases (stored when this returns).
    pub async fn record(&self, d: &Digests) -> Result<()> {
        match &self.index {
            Index::Markers(i) => i.record(d).await,
            Index::Log(l) => l.record(std::slice::from_ref(d)).await,
        }
    }

    /// The blob whose sha1 or blake3 is `hash`.
    pub async fn resolve(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        match &self.index {
            Index::Markers(i) => i.resolve(hash).await,
            Index::Log(l) => l.resolve(hash).await,
        }
    }

    /// Bytes the marker index's cache holds (`None` for the log, which holds every record).
    pub fn cached_bytes(&self) -> Option<usize> {
        match &self.index {
            Index::Markers(i) => Some(i.cached_bytes()),
            Index::Log(_) => None,
        }
    }
}
