//! The Manta home of the alias index: markers ([`AliasIndex`](crate::backend::alias_marker)) in
//! `<root>/markers/`, and the segments of the log earlier versions wrote
//! ([`AliasLog`](crate::backend::alias_log)) in `<root>/aliases/log/`, read while a store
//! upgrades.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;

use super::dirs::Dirs;
use super::layout::Layout;
use super::{create_only, exists_already};
use super::{MantaClient, RequestBody};
use crate::backend::alias_log::SegmentStore;
use crate::backend::alias_marker::MarkerStore;
use crate::integrity::Algorithm;
use crate::{Error, Result};

/// Markers as objects `<root>/markers/<alg>/<hex[..3]>/<hex>` (see [`Layout::marker_path`]).
pub(crate) struct MantaMarkers {
    pub(crate) client: MantaClient,
    /// Makes the shard directories on first use.
    pub(crate) dirs: Arc<Dirs>,
    pub(crate) layout: Layout,
    pub(crate) describe: String,
}

impl MantaMarkers {
    async fn put(&self, alg: Algorithm, hex: &str, body: Bytes, create: bool) -> Result<bool> {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        if create {
            create_only(&mut headers);
        }
        let path = self.layout.marker_path(alg, hex);
        match self
            .dirs
            .put_with_parents(&path, headers, RequestBody::Bytes(body))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if create && exists_already(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl MarkerStore for MantaMarkers {
    async fn create(&self, alg: Algorithm, hex: &str, body: Bytes) -> Result<bool> {
        self.put(alg, hex, body, true).await
    }

    async fn replace(&self, alg: Algorithm, hex: &str, body: Bytes) -> Result<()> {
        self.put(alg, hex, body, false).await.map(|_| ())
    }

    async fn get(&self, alg: Algorithm, hex: &str) -> Result<Option<Bytes>> {
        let path = self.layout.marker_path(alg, hex);
        get_small(&self.client, &self.describe, &path).await
    }

    fn name(&self, alg: Algorithm, hex: &str) -> String {
        format!(
            "{}{}",
            self.client.config().url,
            self.layout.marker_path(alg, hex)
        )
    }
}

/// The whole body of a small object (a marker, a segment), or `None` if there is none.
async fn get_small(client: &MantaClient, describe: &str, path: &str) -> Result<Option<Bytes>> {
    let resp = client.get(path, HeaderMap::new()).await?;
    match resp.status() {
        StatusCode::OK => resp
            .bytes()
            .await
            .map(Some)
            .map_err(|e| Error::backend(describe.to_string(), format!("reading {path}: {e}"))),
        StatusCode::NOT_FOUND => Ok(None),
        _ => Err(client.api_error(&reqwest::Method::GET, path, resp).await),
    }
}

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
        get_small(&self.client, &self.describe, &self.path(name)).await
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
