//! The Joyent Manta backend (feature `manta`): blobs as objects under a directory of a Manta
//! account, spoken to over Manta's REST API with HTTP Signature auth.
//!
//! Embedders need [`MantaBackend`] and [`MantaConfig`] (or a `manta://` store URL), and may match
//! errors with [`api_error`]. The protocol underneath (the HTTP client, request signing, the object
//! layout) is in [`protocol`], for interop tests and tools that talk to a Manta server directly.
//!
//! Inside: `config` (`MANTA_*` environment and `manta://` store URLs), `auth` (request signing
//! exactly as muskie verifies it), `client` (HTTP with bounded retries and typed errors,
//! [`MantaApiError`]), `layout` (digest-derived paths), `resume` (blob reads resumed where a
//! dropped or stalled connection left them), `writer` (spooled uploads published by one
//! verified PUT; why: see that module), `streamed` (one PUT whose body streams while the put
//! hashes, ended only once verified), `staging` (large uploads streamed to a staging object, then
//! named by a SnapLink, where the server makes them) and `direct` (large uploads whose sha512 was
//! given, streamed to the blob's own path).
//!
//! Every blob carries its digests as `m-tarvault-sha512`, `m-tarvault-sha1` and
//! `m-tarvault-blake3` metadata, and sha1/blake3 lookups read one marker object each
//! (`backend::alias::marker`, under `<root>/markers/`), written alongside the blob. Stores of
//! earlier versions (segments under `<root>/aliases/log/`) upgrade by themselves.
//! Parent directories are created on demand (`mkdir -p` with `application/json; type=directory`)
//! and remembered, so a warm store does one PUT per blob.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use futures::future::{self, BoxFuture};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;

mod aliases;
mod auth;
mod client;
mod config;
mod direct;
mod dirs;
mod layout;
mod listing;
mod openssh_ecdsa;
#[doc(hidden)]
pub mod probe;
mod resume;
mod staging;
mod streamed;
mod writer;

pub use auth::{KeyError, LoadedKey, SignHash};
pub use client::MantaApiError;
pub use config::{MantaConfig, DEFAULT_RESPONSE_TIMEOUT};

/// The Manta protocol under the backend: the HTTP client, request signing and the object layout.
/// For interop tests and tools that talk to a Manta server directly; storing blobs needs none of
/// it, and it changes with the backend.
pub mod protocol {
    pub use super::auth::Signer;
    pub use super::client::{MantaClient, RequestBody};
    pub use super::layout::Layout;
    pub use super::listing::DirEntry;
}

use self::client::{MantaClient, RequestBody};
use self::layout::Layout;

use self::aliases::{MantaMarkers, MantaSegments};
use self::dirs::Dirs;
use self::listing::DirEntry;
use super::alias::marker::AliasIndex;
use super::{
    check_range, Backend, BlobKey, BlobStat, BlobWriter, Committed, GetResult, PutHint, LIST_HEADS,
};
use crate::integrity::{Algorithm, Digests, Hash};
use crate::{Error, Result};

const META_SHA512: &str = "m-tarvault-sha512";
const META_SHA1: &str = "m-tarvault-sha1";
const META_BLAKE3: &str = "m-tarvault-blake3";

/// Requests in flight at once when rebuilding the alias index.
const PARALLEL: usize = 8;

/// Blobs in a Manta directory. Cloning shares the client and the directory cache.
#[derive(Clone)]
pub struct MantaBackend {
    client: MantaClient,
    layout: Layout,
    /// Parent directories, created once per process.
    dirs: Arc<Dirs>,
    /// The sha1 and blake3 markers.
    aliases: Arc<AliasIndex<MantaMarkers, MantaSegments>>,
    /// Whether the server makes SnapLinks (large puts stage, see `staging`).
    links: Arc<staging::LinkSupport>,
}

impl std::fmt::Debug for MantaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MantaBackend")
            .field("url", &self.client.config().url)
            .field("root", &self.layout.root())
            .finish_non_exhaustive()
    }
}

/// The Manta error code inside a backend error, if it is one.
pub fn api_error(e: &Error) -> Option<&MantaApiError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(api) = err.downcast_ref::<MantaApiError>() {
            return Some(api);
        }
        cur = err.source();
    }
    None
}

/// Makes a PUT create-only. Manta answers `If-None-Match: *` with a failure whether or not the
/// object exists; `If-Unmodified-Since` the epoch fails exactly when it exists (see
/// [`exists_already`]) and lets a new object through.
pub(crate) fn create_only(headers: &mut HeaderMap) {
    headers.insert(
        "if-unmodified-since",
        HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
    );
}

/// Whether the blob `key` is stored: fsck's check of a marker's blob (a HEAD of its path), shared
/// by the backend and the benchmark probe. Owns what it needs, so the future outlives the call.
pub(crate) fn blob_exists(
    client: &MantaClient,
    layout: &Layout,
    key: BlobKey,
) -> BoxFuture<'static, Result<bool>> {
    let (client, path) = (client.clone(), layout.blob_path(&key));
    Box::pin(async move { Ok(client.head(&path).await?.is_some()) })
}

/// The digests a blob object's `m-tarvault-*` metadata records, if it has them, for `key` and
/// `size`.
fn digests_of(key: &BlobKey, size: u64, h: &HeaderMap) -> Option<Digests> {
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    let sha512 = hex::decode(text(META_SHA512)?).ok()?;
    let sha1 = hex::decode(text(META_SHA1)?).ok()?;
    let blake3 = hex::decode(text(META_BLAKE3)?).ok()?;
    let d = Digests::from_parts(&sha512, &sha1, &blake3, size).ok()?;
    (d.sha512 == *key.as_bytes()).then_some(d)
}

/// What the object of `key` says of it, from a `HEAD` alone (see
/// [`MarkerStore::blob_record`](crate::backend::alias::marker::MarkerStore::blob_record)).
async fn blob_record(
    client: &MantaClient,
    layout: &Layout,
    key: BlobKey,
) -> Result<Option<Option<Digests>>> {
    Ok(client.head(&layout.blob_path(&key)).await?.map(|h| {
        let size = h
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        size.and_then(|n| digests_of(&key, n, &h))
    }))
}

/// Whether an object's `content-md5` (base64) is `md5_b64`; true when Manta reports none.
fn same_md5(headers: &HeaderMap, md5_b64: &str) -> bool {
    headers
        .get("content-md5")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|m| m == md5_b64)
}

/// A blob object's content type and its digests as `m-tarvault-*` metadata: what a PUT of a
/// blob carries, and what a metadata update gives a streamed one once its digests are known.
fn digest_metadata(d: &Digests) -> Result<HeaderMap> {
    client::headers_of(&[
        ("content-type", "application/octet-stream".into()),
        (META_SHA512, hex::encode(d.sha512)),
        (META_SHA1, hex::encode(d.sha1)),
        (META_BLAKE3, hex::encode(d.blake3)),
    ])
}

/// Whether a [`create_only`] PUT failed because the object is already there (412).
pub(crate) fn exists_already(e: &Error) -> bool {
    api_error(e).is_some_and(|a| a.status == 412)
}

impl MantaBackend {
    /// A backend for `config` (loads the key; makes no request).
    pub fn new(config: MantaConfig) -> Result<Self> {
        let layout = Layout::new(&config.root);
        let client = MantaClient::new(config)?;
        let dirs = Arc::new(Dirs::new(client.clone()));
        let describe = format!("manta:{}{}", client.config().url, layout.root());
        let cache = client.config().alias_cache;
        let markers = MantaMarkers {
            client: client.clone(),
            dirs: dirs.clone(),
            layout: layout.clone(),
            describe: describe.clone(),
        };
        let legacy = MantaSegments {
            client: client.clone(),
            dirs: dirs.clone(),
            dir: layout.alias_log_dir(),
            describe,
        };
        let aliases = AliasIndex::new(markers, legacy, cache);
        Ok(MantaBackend {
            client,
            layout,
            dirs,
            aliases,
            links: Arc::default(),
        })
    }

    /// Opens a `manta://` store URL.
    pub fn open_url(spec: &str) -> Result<Self> {
        Self::new(MantaConfig::from_store_url(spec)?)
    }

    /// The HTTP client (for tools and tests that need raw access to the same account).
    pub fn client(&self) -> &MantaClient {
        &self.client
    }

    /// Whether the server was found to make SnapLinks, which large puts use to stage (`None`:
    /// not asked yet; it is asked before the first put that outgrows memory).
    pub fn snaplinks(&self) -> Option<bool> {
        self.links.known()
    }

    /// [`Backend::sweep`] with another age than an hour (for tests and tools).
    #[doc(hidden)]
    pub async fn sweep_staging_older_than(&self, age: std::time::Duration) -> Result<u64> {
        staging::sweep(self, age).await
    }

    /// The path layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The object path of a blob.
    pub fn blob_path(&self, key: &BlobKey) -> String {
        self.layout.blob_path(key)
    }

    fn describe_err(&self, msg: impl Into<String>) -> Error {
        Error::backend(self.describe(), msg)
    }

    /// Publishes verified bytes under their key (see [`writer`] for why this is one PUT).
    async fn publish(
        &self,
        digests: &Digests,
        md5: [u8; 16],
        body: RequestBody,
    ) -> Result<Committed> {
        let key = BlobKey::new(digests.sha512);
        let path = self.layout.blob_path(&key);
        // A create-only PUT: `If-None-Match: *` always fails on Manta (restify's `*` matches even
        // a missing object), but `If-Unmodified-Since` the epoch fails exactly when the object
        // exists (412 `PreconditionFailed`) and lets a new one through, so an existing blob costs
        // no separate HEAD. The blob goes up with its two alias markers, sent concurrently: one
        // round trip in all. The records are written even when the
        // blob exists (that repairs an earlier put that died half-way). A record may land before
        // its blob: one pointing at a missing blob is harmless (the store checks the blob itself)
        // and fsck rebuilds any that are lost.
        let md5_b64 = base64::engine::general_purpose::STANDARD.encode(md5);
        let mut headers = digest_metadata(digests)?;
        headers.extend(client::headers_of(&[
            ("content-md5", md5_b64.clone()),
            (
                "durability-level",
                self.client.config().durability.to_string(),
            ),
        ])?);
        let mut create = headers.clone();
        create_only(&mut create);
        let (reply, aliases) = futures::join!(
            self.dirs.put_with_parents(&path, create, body.clone()),
            self.aliases.record_alongside(digests)
        );
        // The blob's own failure is the one to report (the records' is likely the same cause).
        // Markers that were there already are read back once the blob is stored (`settle`).
        let reply = match reply {
            Err(e) if exists_already(&e) => {
                let aliases = aliases?;
                match self.client.head(&path).await? {
                    Some(h) if self.stat_from_headers(&key, &h)?.size == digests.size => {
                        self.aliases.settle(digests, aliases).await?;
                        // A 412 answering a PUT sent again after a lost answer is most likely
                        // this put's own first attempt: the object there holds what was sent
                        // (same size, and the same MD5 where Manta reports one), so it is this
                        // put that stored it.
                        if client::replayed(&e) && same_md5(&h, &md5_b64) {
                            return Ok(Committed::Stored);
                        }
                        return Ok(Committed::AlreadyPresent);
                    }
                    _ => {
                        // Gone since, or a truncated or planted object: the verified bytes
                        // replace it.
                        tracing::warn!(path, "replacing a wrong-sized object with verified bytes");
                        let reply = self.dirs.put_with_parents(&path, headers, body).await?;
                        self.aliases.settle(digests, aliases).await?;
                        reply
                    }
                }
            }
            other => {
                let reply = other?;
                self.aliases.settle(digests, aliases?).await?;
                reply
            }
        };
        // Manta checked Content-MD5 already; this catches a server that ignores the header.
        let computed = reply
            .get("computed-md5")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !computed.is_empty() && computed != md5_b64 {
            if let Err(e) = self.client.delete(&path).await {
                tracing::warn!(%path, error = %e.report(), "cannot remove an upload with a wrong MD5");
            }
            return Err(self.describe_err(format!(
                "{path}: server computed MD5 {computed}, sent {md5_b64}; upload removed"
            )));
        }
        Ok(Committed::Stored)
    }

    fn stat_from_headers(&self, key: &BlobKey, h: &HeaderMap) -> Result<BlobStat> {
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        if text("content-type").is_some_and(|t| t.contains("type=directory")) {
            return Err(self.describe_err(format!(
                "{} is a directory, not a blob",
                self.layout.blob_path(key)
            )));
        }
        let size = text("content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                self.describe_err(format!(
                    "HEAD {} without Content-Length",
                    self.layout.blob_path(key)
                ))
            })?;
        let modified = text("last-modified").and_then(|v| httpdate::parse_http_date(v).ok());
        Ok(BlobStat {
            key: *key,
            size,
            modified,
            digests: digests_of(key, size, h),
        })
    }

    /// Every entry name under `dir`'s shard directories (two levels: shard, then entries), as
    /// the listing pages come. A shard that cannot be listed yields its error and the walk goes
    /// on with the next one.
    fn list_sharded(&self, dir: String) -> BoxStream<'static, Result<(String, DirEntry)>> {
        let client = self.client.clone();
        self.client
            .list_dir_entries(&dir)
            .try_filter_map(move |e| {
                let shard = (e.kind == "directory").then(|| format!("{dir}/{}", e.name));
                future::ready(Ok(shard))
            })
            .map_ok(move |shard| {
                client.list_dir_entries(&shard).try_filter_map(move |e| {
                    future::ready(Ok((e.kind == "object").then(|| (shard.clone(), e))))
                })
            })
            .try_flatten()
            .boxed()
    }
}

impl MantaBackend {
    /// Every blob in the blob directory with its listing entry; a foreign object there is
    /// skipped with a warning.
    fn list_blobs(&self) -> BoxStream<'static, Result<(BlobKey, DirEntry)>> {
        let layout = self.layout.clone();
        self.list_sharded(self.layout.blobs_dir())
            .try_filter_map(move |(shard, e)| {
                // Exactly the blob's own path (lowercase hex in its own shard): an object
                // elsewhere is not a blob this store can read (see the S3 backend's `key_of`).
                let key = match BlobKey::from_hex(&e.name) {
                    Ok(k) if layout.blob_path(&k) == format!("{shard}/{}", e.name) => Some((k, e)),
                    _ => {
                        tracing::warn!(
                            name = e.name,
                            "ignoring a foreign object in the blob directory"
                        );
                        None
                    }
                };
                future::ready(Ok(key))
            })
            .boxed()
    }
}

#[async_trait]
impl Backend for MantaBackend {
    fn describe(&self) -> String {
        format!("manta:{}{}", self.client.config().url, self.layout.root())
    }

    async fn begin_put(&self, hint: &PutHint) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(writer::MantaWriter::new(self.clone(), hint)))
    }

    /// Publishes a batch with up to eight PUTs in flight: each blob is its own Manta object, so
    /// the batch is made durable fastest by overlapping the round trips.
    async fn commit_batch(&self, items: Vec<super::PendingBlob>) -> Vec<Result<Committed>> {
        let mut commits: Vec<futures::future::BoxFuture<'static, Result<Committed>>> =
            Vec::with_capacity(items.len());
        for (writer, digests) in items {
            commits.push(Box::pin(async move { writer.commit(&digests).await }));
        }
        stream::iter(commits).buffered(PARALLEL).collect().await
    }

    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<Option<GetResult>> {
        let path = self.layout.blob_path(key);
        let mut headers = HeaderMap::new();
        if let Some(r) = &range {
            if r.start >= r.end {
                // HTTP cannot ask for zero bytes: learn the size (and existence) from a HEAD.
                let Some(h) = self.client.head(&path).await? else {
                    return Ok(None);
                };
                let st = self.stat_from_headers(key, &h)?;
                check_range(r, st.size)?;
                return Ok(Some(GetResult {
                    size: st.size,
                    stream: stream::empty().boxed(),
                    digests: None,
                    verified_whole: None,
                }));
            }
            let value = format!("bytes={}-{}", r.start, r.end - 1);
            headers.insert(
                "range",
                HeaderValue::from_str(&value).map_err(|e| Error::InvalidInput(e.to_string()))?,
            );
        }
        let resp = self.client.get(&path, headers).await?;
        let status = resp.status();
        let size = match status {
            StatusCode::NOT_FOUND => return Ok(None),
            StatusCode::OK => {
                let size = resp.content_length().ok_or_else(|| {
                    self.describe_err(format!("GET {path} without Content-Length"))
                })?;
                if let Some(r) = &range {
                    // A server that ignored the Range: refuse rather than serve the wrong bytes.
                    check_range(r, size)?;
                    return Err(self.describe_err(format!("GET {path}: Range ignored")));
                }
                size
            }
            StatusCode::PARTIAL_CONTENT => {
                let total = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.rsplit('/').next())
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| self.describe_err(format!("GET {path}: bad Content-Range")))?;
                if let Some(r) = &range {
                    check_range(r, total)?;
                }
                total
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let total = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes */"))
                    .and_then(|v| v.parse::<u64>().ok());
                if let (Some(r), Some(total)) = (&range, total) {
                    check_range(r, total)?;
                }
                return Err(self
                    .client
                    .api_error(&reqwest::Method::GET, &path, resp)
                    .await);
            }
            _ => {
                return Err(self
                    .client
                    .api_error(&reqwest::Method::GET, &path, resp)
                    .await)
            }
        };
        Ok(Some(GetResult {
            size,
            stream: resume::stream_of(
                &self.client,
                self.describe(),
                resp,
                path,
                range.map_or(0, |r| r.start),
            ),
            digests: None,
            verified_whole: None,
        }))
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<BlobStat>> {
        let path = self.layout.blob_path(key);
        match self.client.head(&path).await? {
            Some(h) => self.stat_from_headers(key, &h).map(Some),
            None => Ok(None),
        }
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool> {
        let path = self.layout.blob_path(key);
        // Its alias markers stay: one naming a missing blob is harmless (the store checks the
        // blob after resolving it), and fsck removes them once older than the grace period.
        let deleted = self.client.delete(&path).await?;
        Ok(deleted)
    }

    fn list(&self) -> BoxStream<'static, Result<BlobKey>> {
        self.list_blobs().map_ok(|(key, _)| key).boxed()
    }

    /// Each blob's size and time from its shard's listing: no `HEAD` per blob (the digests,
    /// which only a `HEAD` brings, are left out). An entry without a size is asked for.
    fn list_meta(self: Arc<Self>) -> BoxStream<'static, Result<BlobStat>> {
        let backend = self.clone();
        self.list_blobs()
            .map(move |r| {
                let backend = backend.clone();
                async move {
                    let (key, e) = r?;
                    match e.size {
                        Some(size) => Ok(Some(BlobStat {
                            key,
                            size,
                            modified: e.mtime.as_deref().and_then(aliases::parse_mtime),
                            digests: None,
                        })),
                        None => backend.head(&key).await,
                    }
                }
            })
            .buffered(LIST_HEADS)
            .try_filter_map(|st| future::ready(Ok(st)))
            .boxed()
    }

    /// Copies the blob's bytes to `<root>/quarantine/<sha512 hex>` (Manta v2 has no rename or
    /// link), then deletes it (its alias markers stay, as for [`delete`](Backend::delete)).
    async fn quarantine(&self, key: &BlobKey) -> Result<bool> {
        let Some(got) = self.get(key, None).await? else {
            return Ok(false);
        };
        let mut spool = tempfile::NamedTempFile::new()
            .map_err(|e| Error::io("create", std::env::temp_dir(), e))?;
        let mut len = 0u64;
        let mut stream = got.stream;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            std::io::Write::write_all(&mut spool, &chunk)
                .map_err(|e| Error::io("write", spool.path().to_path_buf(), e))?;
            len += chunk.len() as u64;
        }
        let path = self.layout.quarantine_path(key);
        let body = RequestBody::File(Arc::new(spool.path().to_path_buf()), len);
        self.dirs
            .put_with_parents(&path, HeaderMap::new(), body)
            .await?;
        self.delete(key).await
    }

    async fn resolve_alias(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        match hash.algorithm() {
            Algorithm::Sha512 => Ok(BlobKey::from_hash(hash)),
            Algorithm::Sha1 | Algorithm::Blake3 => self.aliases.resolve(hash).await,
            other => Err(Error::InvalidInput(format!(
                "cannot look blobs up by {other}"
            ))),
        }
    }

    /// Both markers, read back (unless this process has seen them) and written where missing.
    async fn index_stored(&self, digests: &Digests) -> Result<()> {
        self.aliases.record_stored(digests).await
    }

    /// Merges what the scan found into the markers (writing missing ones, rewriting unreadable
    /// ones), streaming, then imports what is left of an earlier version's log, then lists every
    /// marker and removes those whose blob is gone (`alias::sweep`).
    async fn rebuild_aliases(
        &self,
        found: BoxStream<'_, Digests>,
        options: &super::RebuildOptions,
    ) -> Result<super::AliasRebuild> {
        // Per-alias objects of an older layout go first, deleted as their listing comes (one
        // shard's at a time), not collected first: an old index has one per blob and alias.
        for alg in [Algorithm::Sha1, Algorithm::Blake3] {
            let client = self.client.clone();
            self.list_sharded(self.layout.legacy_alias_dir(alg))
                .map_ok(|(dir, e)| {
                    let client = client.clone();
                    async move {
                        client
                            .delete(&format!("{dir}/{}", e.name))
                            .await
                            .map(|_| ())
                    }
                })
                .try_buffer_unordered(PARALLEL)
                .try_for_each(|()| futures::future::ready(Ok(())))
                .await?;
        }
        let (mut report, seen) = self.aliases.rebuild(found).await?;
        let exists = |key: BlobKey| blob_exists(&self.client, &self.layout, key);
        let grace = self.client.config().alias_grace;
        self.aliases
            .sweep(&exists, grace, options, &mut report, Some(&seen))
            .await?;
        Ok(report)
    }

    /// Deletes staging objects older than an hour: left by a process killed between ending a
    /// large put's staged upload and deleting it (see `staging`).
    async fn sweep(&self) -> Result<u64> {
        staging::sweep(self, staging::STAGING_MAX_AGE).await
    }
}
