//! Either alias index design over one remote store, as a fresh process would open it: the markers
//! the backends use, or the segment log of earlier versions. What the S3 and Manta probes (for the
//! `remote_index` and `manta` benchmarks) have in common; not a stable API.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::cache::CacheConfig;
use super::log::{AliasLog, SegmentStore};
use super::marker::{AliasIndex, MarkerStore};
use crate::backend::{AliasRebuild, BlobKey, Dangling, RebuildOptions};
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

/// The index a probe opened.
pub(crate) enum DesignIndex<M: MarkerStore, S: SegmentStore> {
    Markers(Arc<AliasIndex<M, S>>),
    Log(Arc<AliasLog<S>>),
}

impl<M: MarkerStore, S: SegmentStore> DesignIndex<M, S> {
    /// Opens `design` over a store's markers and segments (the markers go unused by the log).
    pub(crate) fn open(design: AliasDesign, markers: M, segments: S, cache: CacheConfig) -> Self {
        match design {
            AliasDesign::Markers => Self::Markers(AliasIndex::new(markers, segments, cache)),
            AliasDesign::SegmentLog => Self::Log(AliasLog::new(segments)),
        }
    }

    /// Records a blob's aliases (stored when this returns).
    pub(crate) async fn record(&self, d: &Digests) -> Result<()> {
        match self {
            Self::Markers(i) => i.record(d).await,
            Self::Log(l) => l.record(std::slice::from_ref(d)).await,
        }
    }

    /// Records many blobs' aliases: into one segment for the log (how a store of an earlier
    /// version is built quickly for the upgrade benchmark), one after another for markers.
    pub(crate) async fn record_many(&self, all: &[Digests]) -> Result<()> {
        match self {
            Self::Markers(i) => {
                for d in all {
                    i.record(d).await?;
                }
                Ok(())
            }
            Self::Log(l) => l.record(all).await,
        }
    }

    /// The blob whose sha1 or blake3 is `hash`.
    pub(crate) async fn resolve(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        match self {
            Self::Markers(i) => i.resolve(hash).await,
            Self::Log(l) => l.resolve(hash).await,
        }
    }

    /// fsck's pass over every marker with no grace period, reporting (never removing) those
    /// whose blob `exists` says is gone; nothing for the log.
    pub(crate) async fn sweep_report(
        &self,
        exists: &(dyn Fn(BlobKey) -> BoxFuture<'static, Result<bool>> + Sync),
    ) -> Result<AliasRebuild> {
        let mut report = AliasRebuild::default();
        if let Self::Markers(i) = self {
            let options = RebuildOptions {
                dangling: Dangling::Report,
                checks_per_second: None,
            };
            i.sweep(
                exists,
                std::time::Duration::ZERO,
                &options,
                &mut report,
                None,
            )
            .await?;
        }
        Ok(report)
    }

    /// Bytes the marker index's cache holds (`None` for the log, which holds every record).
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub(crate) fn cached_bytes(&self) -> Option<usize> {
        match self {
            Self::Markers(i) => Some(i.cached_bytes()),
            Self::Log(_) => None,
        }
    }

    /// Bytes the marker index holds to read the old log during an upgrade (`None` for the log).
    pub(crate) fn legacy_bytes(&self) -> Option<usize> {
        match self {
            Self::Markers(i) => Some(i.legacy_bytes()),
            Self::Log(_) => None,
        }
    }
}
