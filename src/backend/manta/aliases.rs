//! The Manta home of the alias log ([`AliasLog`](crate::backend::alias_log)): segments are objects
//! in `<root>/aliases/log/`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;

use super::dirs::Dirs;
use super::{MantaClient, RequestBody};
use crate::backend::alias_log::SegmentStore;
use crate::{Error, Result};

/// Segments deleted at once after a merge.
const PARALLEL_DELETES: usize = 8;

pub(crate) struct MantaSegments {
    pub(crate) client: MantaClient,
    /// Makes the segment directory on the first write (and again if it was removed).
    pub(crate) dirs: Arc<Dirs>,
    /// The directory holding the segments.
    pub(crate) dir: String,
    pub(crate) describe: String,
}

impl MantaSegments {
    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }
}

#[async_trait]
impl SegmentStore for MantaSegments {
    async fn put(&self, name: &str, body: Bytes) -> Result<()> {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        self.dirs
            .put_with_parents(&self.path(name), headers, RequestBody::Bytes(body))
            .await
            .map(|_| ())
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let path = self.path(name);
        let resp = self.client.get(&path, HeaderMap::new()).await?;
        match resp.status() {
            StatusCode::OK => {
                resp.bytes().await.map(Some).map_err(|e| {
                    Error::backend(self.describe.clone(), format!("reading {path}: {e}"))
                })
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self
                .client
                .api_error(&reqwest::Method::GET, &path, resp)
                .await),
        }
    }

    async fn list(&self) -> Result<Vec<(String, u64)>> {
        let entries = self.client.list_dir(&self.dir).await?.unwrap_or_default();
        Ok(entries
            .into_iter()
            .filter(|e| e.kind == "object")
            .map(|e| (e.name, e.size.unwrap_or(0)))
            .collect())
    }

    async fn delete(&self, names: &[String]) -> Result<()> {
        let paths: Vec<String> = names.iter().map(|n| self.path(n)).collect();
        let client = &self.client;
        futures::stream::iter(paths)
            .map(|p| async move { client.delete(&p).await.map(|_| ()) })
            .buffer_unordered(PARALLEL_DELETES)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}
