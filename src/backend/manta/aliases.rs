//! The Manta home of the alias index: markers ([`AliasIndex`](crate::backend::alias::marker)) in
//! `<root>/markers/`, and the segments of the log earlier versions wrote
//! ([`AliasLog`](crate::backend::alias::log)) in `<root>/aliases/log/`, read while a store
//! upgrades.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;

use super::dirs::Dirs;
use super::layout::Layout;
use super::{create_only, exists_already};
use super::{MantaClient, RequestBody};
use crate::backend::alias::log::{SegmentStore, SEGMENT_MAX};
use crate::backend::alias::marker::{Listed, MarkerStore, MARKER_MAX};
use crate::backend::body::NotWhole;
use crate::backend::BlobKey;
use crate::integrity::{Algorithm, Digests};
use crate::{Error, Result};

/// What a marker is, and the most it may hold.
const MARKER: (&str, u64) = ("alias marker", MARKER_MAX);
/// What a segment is, and the most it may hold.
const SEGMENT: (&str, u64) = ("alias segment", SEGMENT_MAX);

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
        get_small(&self.client, &self.describe, MARKER, &path, None).await
    }

    fn name(&self, alg: Algorithm, hex: &str) -> String {
        format!(
            "{}{}",
            self.client.config().url,
            self.layout.marker_path(alg, hex)
        )
    }

    fn list(&self) -> BoxStream<'_, Result<Listed>> {
        self.list_alg(Algorithm::Sha1)
            .chain(self.list_alg(Algorithm::Blake3))
            .boxed()
    }

    async fn delete(&self, alg: Algorithm, hex: &str) -> Result<()> {
        let path = self.layout.marker_path(alg, hex);
        self.client.delete(&path).await.map(|_| ())
    }

    /// The digests the blob's object carries in its metadata (written with its bytes).
    async fn blob_record(&self, key: BlobKey) -> Result<Option<Option<Digests>>> {
        super::blob_record(&self.client, &self.layout, key).await
    }
}

impl MantaMarkers {
    /// The markers of one shard directory as listing entries, as its listing pages come.
    fn list_shard(&self, alg: Algorithm, shard: String) -> BoxStream<'_, Result<Listed>> {
        let dir = format!("{}/{shard}", self.layout.markers_dir(alg));
        let url = self.client.config().url.clone();
        self.client
            .list_dir_entries(&dir)
            .map_ok(move |e| {
                let well_formed = e.kind == "object"
                    && e.name.len() == if alg == Algorithm::Sha1 { 40 } else { 64 }
                    && e.name
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    && e.name.get(..3) == Some(shard.as_str());
                if well_formed {
                    Listed::Marker {
                        alg,
                        modified: e.mtime.as_deref().and_then(parse_mtime),
                        hex: e.name,
                    }
                } else {
                    Listed::Foreign(format!("{url}{dir}/{}", e.name))
                }
            })
            .boxed()
    }

    /// The shard directories of `alg`'s markers, then the markers of each, one directory at a
    /// time.
    fn list_alg(&self, alg: Algorithm) -> BoxStream<'_, Result<Listed>> {
        self.client
            .list_dir_entries(&self.layout.markers_dir(alg))
            .try_filter_map(|e| {
                futures::future::ready(Ok((e.kind == "directory").then_some(e.name)))
            })
            .map_ok(move |shard| self.list_shard(alg, shard))
            .try_flatten()
            .boxed()
    }
}

/// A listing's `mtime` (`YYYY-MM-DDTHH:MM:SS[.fff]Z`, UTC), `None` if it is not one: the text
/// comes from the server, so every field is checked against its range (a leap second's `:60`
/// is let through) and the sum is checked, never trusted to fit.
pub(crate) fn parse_mtime(text: &str) -> Option<SystemTime> {
    let t = text.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    // At most four digits (a year): no sign, and nothing that could overflow below.
    let num = |s: &str| match s.len() {
        1..=4 if s.bytes().all(|b| b.is_ascii_digit()) => s.parse::<u64>().ok(),
        _ => None,
    };
    let mut d = date.splitn(3, '-').map(num);
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut h = hms.splitn(3, ':').map(num);
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    if !(1970..10_000).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=days_in_month(y, m)).contains(&day)
        || hh > 23
        || mm > 59
        || ss > 60
    {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Days since the epoch of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    // Milliseconds: the first three digits of the fraction, padded on the right.
    let millis = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
    let secs = days
        .checked_mul(86_400)?
        .checked_add(hh * 3600 + mm * 60 + ss)?;
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))?
        .checked_add(Duration::from_millis(millis))
}

/// Days in month `m` (1 to 12) of year `y`.
fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The whole body of a small object (a marker, a segment), or `None` if there is none. A body
/// cut off or stalled past the response timeout is fetched again within the attempt budget (the
/// object is read-only here, so the next GET is as good as the first); the last failure is the
/// error. An object over `max` bytes (a `what` is never that large) is an error naming it: by its
/// `Content-Length` before the body is read, or once more than `max` bytes have come.
async fn get_small(
    client: &MantaClient,
    describe: &str,
    (what, max): (&str, u64),
    path: &str,
    range: Option<Range<u64>>,
) -> Result<Option<Bytes>> {
    let mut headers = HeaderMap::new();
    if let Some(r) = &range {
        let value = format!("bytes={}-{}", r.start, r.end.saturating_sub(1));
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert("range", v);
        }
    }
    let attempts = client.config().max_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let resp = client.get(path, headers.clone()).await?;
        let status = resp.status();
        let body = match status {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {
                match client
                    .read_body_max(&reqwest::Method::GET, path, resp, max)
                    .await
                {
                    Ok(body) => Ok(body),
                    Err(NotWhole::Over(size)) => {
                        return Err(Error::backend(
                            describe,
                            format!(
                                "reading {what} {path}: the object is {size} bytes, over the \
                                 {max}-byte limit of an {what}"
                            ),
                        ))
                    }
                    Err(NotWhole::Failed(e)) => Err(e),
                }
            }
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(client.api_error(&reqwest::Method::GET, path, resp).await),
        };
        let body = match body {
            Ok(body) => body,
            Err(e) if attempt < attempts => {
                tracing::debug!(error = %e.report(), path, "small object cut off or stalled; reading it again");
                tokio::time::sleep(client.backoff(attempt)).await;
                continue;
            }
            Err(e) => {
                return Err(Error::Backend {
                    backend: describe.to_string(),
                    message: format!("reading {path}: gave up after {attempts} attempts"),
                    source: Some(Box::new(e)),
                })
            }
        };
        // A server that ignored the range sent the whole object.
        return Ok(Some(match range {
            Some(r) if status == StatusCode::OK => {
                let end = (r.end as usize).min(body.len());
                body.slice((r.start as usize).min(end)..end)
            }
            _ => body,
        }));
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
        get_small(
            &self.client,
            &self.describe,
            SEGMENT,
            &self.path(name),
            None,
        )
        .await
    }

    async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        get_small(
            &self.client,
            &self.describe,
            SEGMENT,
            &self.path(name),
            Some(range),
        )
        .await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_mtimes() {
        let at = |s| parse_mtime(s).map(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok());
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(Some(Duration::ZERO)));
        assert_eq!(
            at("2026-12-02T17:51:00.120Z"),
            Some(Some(Duration::from_millis(1_796_233_860_120)))
        );
        assert_eq!(
            at("2000-02-29T23:59:59.5Z"),
            Some(Some(Duration::from_millis(951_868_799_500)))
        );
        assert_eq!(at("2026-13-02T17:51:00Z"), None);
        assert_eq!(at("yesterday"), None);
        assert_eq!(
            at("2016-12-31T23:59:60Z"),
            Some(Some(Duration::from_secs(1_483_228_800)))
        );
        assert_eq!(
            at("2024-02-29T00:00:00Z"),
            Some(Some(Duration::from_secs(1_709_164_800)))
        );
    }

    /// A listing line comes from the server: fields out of range are no time, not a panic (an
    /// hour of 5e15 overflowed the sum, and a sum past `i64::MAX` seconds panicked in
    /// `UNIX_EPOCH + Duration`).
    #[test]
    fn listing_mtimes_out_of_range_are_none() {
        for bad in [
            "2020-01-01T5000000000000000:00:00Z",
            "2020-01-01T18446744073709551615:00:00Z",
            "2020-01-01T00:18446744073709551615:00Z",
            "2020-01-01T00:00:18446744073709551615Z",
            "2020-01-18446744073709551615T00:00:00Z",
            "2020-01-01T24:00:00Z",
            "2020-01-01T00:60:00Z",
            "2020-01-01T00:00:61Z",
            "2023-02-29T00:00:00Z",
            "2020-04-31T00:00:00Z",
            "2020-01-00T00:00:00Z",
            "2020-01-01T+1:00:00Z",
            "2020-01-01T00:00:00.-5Z",
            "2020-01-01T00:00Z",
        ] {
            assert_eq!(parse_mtime(bad), None, "{bad}");
        }
        // A long fraction is cut to milliseconds, whatever its length.
        assert_eq!(
            parse_mtime("1970-01-01T00:00:00.99999999999999999999999Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(999))
        );
    }
}
