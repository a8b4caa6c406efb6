//! The S3 home of the alias log ([`AliasLog`](crate::backend::alias_log)): segments are objects
//! under `<prefix>/alias/log/`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};

use super::errors::{absent_ok, backend_error};
use crate::backend::alias_log::SegmentStore;
use crate::Result;

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
        let op = "read alias segment";
        let Some(got) = absent_ok(&self.describe, op, self.store.get(&self.path(name)).await)?
        else {
            return Ok(None);
        };
        absent_ok(&self.describe, op, got.bytes().await)
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
