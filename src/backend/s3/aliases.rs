//! The S3 home of the alias index: markers ([`AliasIndex`](crate::backend::alias_marker)) under
//! `<prefix>/markers/`, and the segments of the log earlier versions wrote
//! ([`AliasLog`](crate::backend::alias_log)) under `<prefix>/alias/log/`, read while a store
//! upgrades.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};

use super::errors::{absent_ok, backend_error};
use super::keys::Keys;
use super::writer::put_create;
use crate::backend::alias_log::{SegmentStore, SEGMENT_MAX};
use crate::backend::alias_marker::{Listed, MarkerStore, MARKER_MAX};
use crate::integrity::Algorithm;
use crate::{Error, Result};

/// Memory reserved for a body before its bytes arrive.
const RESERVE_MAX: u64 = 1 << 20;

/// The whole body of `path`, a `what` (a marker, a segment) of at most `max` bytes, or `None` if
/// there is none. The size the server claims (its `Content-Length`) is checked against `max`
/// before anything is read, and is not taken as the size of the buffer (object_store's
/// `GetResult::bytes` reserves it whole, so a claim of 2^62 bytes aborted the process): the body
/// is read into a buffer that grows as bytes arrive, up to `max`.
async fn get_small(
    store: &dyn ObjectStore,
    describe: &str,
    what: &str,
    path: &Path,
    max: u64,
) -> Result<Option<Bytes>> {
    let op = format!("read {what}");
    let Some(got) = absent_ok(describe, &op, store.get(path).await)? else {
        return Ok(None);
    };
    let too_big = |size: u64| {
        Error::backend(
            describe,
            format!(
                "{op} {path}: the object is {size} bytes, over the {max}-byte limit of an {what}"
            ),
        )
    };
    let claimed = got.meta.size;
    if claimed > max {
        return Err(too_big(claimed));
    }
    let reserve = usize::try_from(claimed.min(RESERVE_MAX)).unwrap_or(0);
    let mut body = BytesMut::with_capacity(reserve);
    let mut stream = got.into_stream();
    loop {
        match stream.try_next().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() as u64 > max {
                    return Err(too_big(body.len() as u64));
                }
            }
            Ok(None) => return Ok(Some(body.freeze())),
            // Gone since it answered: as if it had not been there.
            Err(e) => return absent_ok(describe, &op, Err(e)),
        }
    }
}

/// Markers as objects `<prefix>/markers/<alg>/<hex[..2]>/<hex>`.
pub(crate) struct S3Markers {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) keys: Keys,
    pub(crate) describe: String,
    /// Retries of a create-only PUT cut off in transit (object_store does not retry those: they
    /// are not idempotent in general; a marker's is, see [`MarkerStore::create`]).
    pub(crate) retries: usize,
}

#[async_trait]
impl MarkerStore for S3Markers {
    async fn create(&self, alg: Algorithm, hex: &str, body: Bytes) -> Result<bool> {
        let path = self.keys.marker(alg, hex);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let (created, _) =
            put_create(self.store.as_ref(), &path, body.into(), opts, self.retries).await;
        match created {
            Ok(_) => Ok(true),
            // Also what a retry of a create that did land sees: the caller reads it back.
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(backend_error(&self.describe, "write alias marker", e)),
        }
    }

    async fn replace(&self, alg: Algorithm, hex: &str, body: Bytes) -> Result<()> {
        self.store
            .put(&self.keys.marker(alg, hex), body.into())
            .await
            .map(|_| ())
            .map_err(|e| backend_error(&self.describe, "rewrite alias marker", e))
    }

    async fn get(&self, alg: Algorithm, hex: &str) -> Result<Option<Bytes>> {
        let path = self.keys.marker(alg, hex);
        get_small(
            self.store.as_ref(),
            &self.describe,
            "alias marker",
            &path,
            MARKER_MAX,
        )
        .await
    }

    fn name(&self, alg: Algorithm, hex: &str) -> String {
        // The key holds the prefix, which `describe` ends with already.
        format!("{} key {}", self.describe, self.keys.marker(alg, hex))
    }

    /// One LIST of the markers folder, paged by object_store as it is read (1,000 keys a page).
    fn list(&self) -> BoxStream<'_, Result<Listed>> {
        self.store
            .list(Some(&self.keys.markers()))
            .map(|m| {
                let m = m.map_err(|e| backend_error(&self.describe, "list alias markers", e))?;
                Ok(match Keys::marker_of(&m.location) {
                    Some((alg, hex)) => Listed::Marker {
                        alg,
                        hex,
                        modified: Some(m.last_modified.into()),
                    },
                    None => Listed::Foreign(format!("{} key {}", self.describe, m.location)),
                })
            })
            .boxed()
    }

    async fn delete(&self, alg: Algorithm, hex: &str) -> Result<()> {
        match self.store.delete(&self.keys.marker(alg, hex)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend_error(&self.describe, "delete alias marker", e)),
        }
    }
}

pub(crate) struct S3Segments {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// The folder holding the segments.
    pub(crate) dir: Path,
    pub(crate) describe: String,
}

impl S3Segments {
    fn path(&self, name: &str) -> Path {
        self.dir.clone().join(name)
    }
}

#[async_trait]
impl SegmentStore for S3Segments {
    async fn put(&self, name: &str, body: Bytes) -> Result<()> {
        // A plain PUT of a unique name: idempotent, so object_store retries it on its own.
        let opts = PutOptions {
            mode: PutMode::Overwrite,
            ..PutOptions::default()
        };
        self.store
            .put_opts(&self.path(name), body.into(), opts)
            .await
            .map(|_| ())
            .map_err(|e| backend_error(&self.describe, "write alias segment", e))
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let path = self.path(name);
        get_small(
            self.store.as_ref(),
            &self.describe,
            "alias segment",
            &path,
            SEGMENT_MAX,
        )
        .await
    }

    async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        let got = self.store.get_range(&self.path(name), range).await;
        absent_ok(&self.describe, "read alias segment", got)
    }

    async fn list(&self) -> Result<Vec<(String, u64)>> {
        self.store
            .list(Some(&self.dir))
            .map_err(|e| backend_error(&self.describe, "list alias segments", e))
            .try_filter_map(|m| async move {
                Ok(m.location.filename().map(|n| (n.to_string(), m.size)))
            })
            .try_collect()
            .await
    }

    async fn delete(&self, names: &[String]) -> Result<()> {
        let paths: Vec<Result<Path, object_store::Error>> =
            names.iter().map(|n| Ok(self.path(n))).collect();
        let outcomes: Vec<_> = self
            .store
            .delete_stream(futures::stream::iter(paths).boxed())
            .collect()
            .await;
        for r in outcomes {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(backend_error(&self.describe, "delete alias segments", e)),
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}
