//! Directory listings, a page at a time.
//!
//! Manta lists a directory in pages of at most `limit` entries, in name order, each later page
//! starting at its `marker` (inclusive); a page that does not end past its marker is an error,
//! not a listing without end. A shard directory of a store of 40M blobs holds about
//! 10,000 entries, 3 MB of listing: [`MantaClient::list_dir_entries`] hands them on a page
//! (1,024 entries) at a time, so a walk of the store holds one page, whatever the store's size.
//! [`MantaClient::list_dir`] collects them, for the small directories read whole (the shard
//! directories themselves, the older alias log's segments, tests).

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};

use super::client::{MantaClient, RequestBody};
use crate::backend::body::NotWhole;
use crate::{Error, Result};

/// Entries asked for a page.
const LIMIT: usize = 1024;

/// The most a listing page's body may hold: [`LIMIT`] lines of up to 4 KiB. A line is a few
/// hundred bytes (a blob's 128-character name, its etag, size, type, MD5 and mtime); names of up
/// to a few KiB still fit. A larger page is not one Manta sends, and is refused (with an error
/// naming the directory) before it fills memory.
const PAGE_MAX: u64 = LIMIT as u64 * 4096;

/// One line of a Manta directory listing.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct DirEntry {
    /// The entry's name (not a path).
    pub name: String,
    /// `object` or `directory`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Size in bytes (objects only).
    #[serde(default)]
    pub size: Option<u64>,
    /// ISO modification time.
    #[serde(default)]
    pub mtime: Option<String>,
}

/// One page of a listing, and the marker of the next one (`None` after the last page).
struct Page {
    entries: Vec<DirEntry>,
    next: Option<String>,
}

impl MantaClient {
    /// Every entry of a directory, collected. `Ok(None)` if the directory does not exist.
    pub async fn list_dir(&self, path: &str) -> Result<Option<Vec<DirEntry>>> {
        let Some(first) = self.dir_page(path, None).await? else {
            return Ok(None);
        };
        let mut out = first.entries;
        let mut next = first.next;
        while let Some(marker) = next {
            let Some(page) = self.dir_page(path, Some(marker)).await? else {
                break;
            };
            out.extend(page.entries);
            next = page.next;
        }
        Ok(Some(out))
    }

    /// Every entry of a directory, fetched a page at a time as the stream is read. A directory
    /// that does not exist (or stops existing midway) lists nothing more.
    pub fn list_dir_entries(&self, path: &str) -> BoxStream<'static, Result<DirEntry>> {
        let client = self.clone();
        let path = path.to_string();
        // The state is the next page's marker: `Some(None)` for the first page, `None` once done.
        stream::try_unfold(Some(None), move |marker: Option<Option<String>>| {
            let client = client.clone();
            let path = path.clone();
            async move {
                let Some(marker) = marker else {
                    return Ok::<_, Error>(None);
                };
                Ok(client
                    .dir_page(&path, marker)
                    .await?
                    .map(|page| (page.entries, page.next.map(Some))))
            }
        })
        .map_ok(|entries| stream::iter(entries.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    /// The page of `path` starting at `marker` (the first page without one), with the marker's
    /// own entry, which the previous page ended with, dropped. `None` if the directory does not
    /// exist.
    async fn dir_page(&self, path: &str, marker: Option<String>) -> Result<Option<Page>> {
        let mut query = vec![("limit", LIMIT.to_string())];
        if let Some(m) = &marker {
            query.push(("marker", m.clone()));
        }
        let Some(body) = self.list_page(path, &query).await? else {
            return Ok(None);
        };
        let mut entries: Vec<DirEntry> = Vec::new();
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let e: DirEntry = serde_json::from_slice(line).map_err(|e| {
                Error::backend(self.describe(), format!("bad listing line in {path}: {e}"))
            })?;
            entries.push(e);
        }
        let full = entries.len() >= LIMIT;
        if marker.is_some() && entries.first().map(|e| &e.name) == marker.as_ref() {
            entries.remove(0);
        }
        let next = match entries.last() {
            Some(last) if full => Some(last.name.clone()),
            _ => None,
        };
        // Pages come in name order, so each must end past the marker it started at; one that
        // does not (a server that ignores `marker` sends the first page again) would be asked
        // for again and again.
        if let (Some(at), Some(end)) = (&marker, &next) {
            if end <= at {
                return Err(Error::backend(
                    self.describe(),
                    format!(
                        "listing {path}: the page from marker {at:?} ends at {end:?}, not past \
                         it (the server does not page by marker); listing stopped"
                    ),
                ));
            }
        }
        Ok(Some(Page { entries, next }))
    }

    /// One listing page's body; a body cut off mid-way, or stalled past the response timeout, is
    /// fetched again (within the attempt budget), since a listing is read-only and the next
    /// request is as good as the first.
    async fn list_page(&self, path: &str, query: &[(&str, String)]) -> Result<Option<Bytes>> {
        let attempts = self.config().max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self
                .send(
                    Method::GET,
                    path,
                    query,
                    HeaderMap::new(),
                    RequestBody::Empty,
                )
                .await?;
            match resp.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => return Ok(None),
                _ => return Err(self.api_error(&Method::GET, path, resp).await),
            }
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if ct != "application/x-json-stream; type=directory" {
                return Err(Error::backend(
                    self.describe(),
                    format!("{path} is not a directory (content type {ct:?})"),
                ));
            }
            // Not fetched again when too large: the next answer would be no smaller.
            match self.read_body_max(&Method::GET, path, resp, PAGE_MAX).await {
                Ok(body) => return Ok(Some(body)),
                Err(NotWhole::Over(size)) => {
                    return Err(Error::backend(
                        self.describe(),
                        format!(
                            "listing {path}: the page is {size} bytes, over the {PAGE_MAX}-byte \
                             limit of a page of {LIMIT} entries; listing stopped"
                        ),
                    ))
                }
                Err(NotWhole::Failed(e)) if attempt < attempts => {
                    tracing::debug!(error = %e.report(), path, "listing cut off or stalled; fetching it again");
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(NotWhole::Failed(e)) => return Err(e),
            }
        }
    }
}
