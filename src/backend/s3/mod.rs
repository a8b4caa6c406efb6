//! The S3 backend: blobs in any S3-compatible object store (AWS S3, Ceph RGW, MinIO, Garage, R2,
//! …), through the [`object_store`] crate's `AmazonS3` client.
//!
//! - [`config`]: the `s3://bucket/prefix` URL, the `AWS_*` environment, retries.
//! - `keys`: the key layout (hash-spread blob keys, alias records) and the digest metadata.
//! - `writer`: uploads, and publication that happens only after verification.
//! - `read`: ranged reads as byte streams.
//!
//! Reads are verified by the [`Store`](crate::Store) against the address itself: the digests in
//! an object's metadata come from the same server as its bytes, so they are reported by `head` but
//! not trusted to verify reads ([`Backend::recorded_digests_trusted`] is `None`).
//!
//! The sha1 and blake3 aliases are marker objects under `markers/` (`backend::alias::marker`), two
//! small create-only PUTs sent alongside the blob's, so a lookup by sha1 or blake3 is one GET at
//! any store size. Stores of earlier versions (an alias log of segments under `alias/log/`)
//! upgrade by themselves. An alias whose blob is gone is harmless: the store checks the blob
//! exists after resolving one. `fsck` merges the blobs it scans into the markers.
//!
//! Server quirks handled here: Ceph RGW cannot do object_store's copy-if-not-exists (411 on
//! UploadPartCopy) and ignores `If-None-Match` on CompleteMultipartUpload, so nothing relies on
//! either (see `writer`; a large put of unknown digest uses a plain `CopyObject` after a `HEAD`,
//! see `staging`); `If-Match` is never used (RGW compares unquoted ETags); a 404 about a
//! missing bucket is an error, never "blob not found"; DELETE answers 204 whether or not the
//! object existed, so `delete` asks first.

mod aliases;
pub mod config;
mod errors;
mod keys;
#[doc(hidden)]
pub mod probe;
mod read;
mod staging;
mod writer;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::{self, BoxFuture};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt};

use self::aliases::{S3Markers, S3Segments};
pub use self::config::S3Config;
use self::errors::{absent_ok, backend_error};
use self::keys::{digests_from_attributes, Keys};
use self::writer::S3Writer;
use super::alias::marker::AliasIndex;
use super::{Backend, BlobKey, BlobStat, BlobWriter, GetResult, PutHint};
use crate::integrity::{Algorithm, Digests, Hash};
use crate::{Error, Result};

pub(crate) struct Inner {
    store: Arc<dyn ObjectStore>,
    keys: Keys,
    describe: String,
    /// The sha1 and blake3 markers.
    pub(super) aliases: Arc<AliasIndex<S3Markers, S3Segments>>,
    /// How old a marker must be before fsck checks its blob (see `alias::sweep`).
    alias_grace: Duration,
    /// Retries of requests object_store does not retry itself (see [`writer`]).
    retries: usize,
    /// Largest blob sent with a single PUT.
    single_put_max: u64,
    /// Large puts of unknown digest go to a staging key, then a server-side copy (else they
    /// spool to a local file).
    stage_unknown: bool,
    /// Whether the server's `CopyObject` works, once tried.
    copy: staging::CopySupport,
}

impl Inner {
    /// Whether a large put of unknown digest should stream to a staging key now.
    fn stages(&self) -> bool {
        self.stage_unknown && self.copy.usable()
    }

    /// Records the sha1 and blake3 aliases of a blob; stored when this returns.
    async fn record_aliases(&self, d: &Digests) -> Result<()> {
        self.aliases.record(d).await
    }
}

/// A store in an S3 bucket, under a key prefix.
#[derive(Clone)]
pub struct S3Backend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("location", &self.inner.describe)
            .finish_non_exhaustive()
    }
}

impl S3Backend {
    /// Connects and checks that the bucket exists and the credentials work (one LIST request),
    /// so a wrong bucket or key, or no credentials at all, fails here, as
    /// [`ErrorKind::Config`](crate::ErrorKind::Config), rather than at the first put.
    pub async fn connect(config: &S3Config) -> Result<S3Backend> {
        let client = config.build()?;
        self::config::fetch_credentials(&client, &config.describe()).await?;
        let backend = S3Backend::with_store_config(Arc::new(client), config);
        backend.probe().await?;
        Ok(backend)
    }

    /// Every object under the blobs' prefix, as the listing pages come.
    fn list_objects(&self) -> BoxStream<'static, Result<object_store::ObjectMeta>> {
        let inner = self.inner.clone();
        let blobs = inner.keys.blobs();
        inner
            .store
            .list(Some(&blobs))
            .map_err(move |e| backend_error(&inner.describe, "list", e))
            .boxed()
    }

    /// A backend over an existing object store client (no probe). For tests and tools.
    pub fn with_store(store: Arc<dyn ObjectStore>, prefix: &str, describe: String) -> S3Backend {
        S3Backend::new(store, &S3Config::new("", prefix), describe)
    }

    /// A backend over an existing object store client (no probe) with `config`'s prefix, retries,
    /// multipart threshold and alias options; its endpoint and credentials are the client's
    /// business. For tests and tools, e.g. over object_store's in-memory store.
    pub fn with_store_config(store: Arc<dyn ObjectStore>, config: &S3Config) -> S3Backend {
        S3Backend::new(store, config, config.describe())
    }

    fn new(store: Arc<dyn ObjectStore>, config: &S3Config, describe: String) -> S3Backend {
        let (prefix, retries) = (config.prefix.as_str(), config.max_retries);
        let keys = Keys::new(prefix);
        let markers = S3Markers {
            store: store.clone(),
            keys: keys.clone(),
            describe: describe.clone(),
            retries,
        };
        let legacy = S3Segments {
            store: store.clone(),
            dir: keys.alias_log(),
            describe: describe.clone(),
        };
        S3Backend {
            inner: Arc::new(Inner {
                aliases: AliasIndex::new(markers, legacy, config.alias_cache),
                alias_grace: config.alias_grace,
                store,
                keys,
                describe,
                retries,
                single_put_max: config.multipart_threshold,
                stage_unknown: config.stage_unknown,
                copy: staging::CopySupport::default(),
            }),
        }
    }

    /// The object store client underneath.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// The object key a blob is stored under (for tests and tooling; never write to it).
    pub fn blob_path(&self, key: &BlobKey) -> Path {
        self.inner.keys.blob(key)
    }

    async fn probe(&self) -> Result<()> {
        let blobs = self.inner.keys.blobs();
        match self.inner.store.list_with_delimiter(Some(&blobs)).await {
            Ok(_) => Ok(()),
            // The server's answer stays in the error's source: which code it gave (an unknown key
            // or a wrong secret, say) is what tells the user which setting to fix.
            Err(e) if errors::is_denied(&e) || errors::is_missing_bucket(&e) => {
                let what = errors::meaning("open", &e);
                Err(Error::config(
                    format!("backend {}: {what}", self.inner.describe),
                    e,
                ))
            }
            Err(e) => Err(backend_error(&self.inner.describe, "open", e)),
        }
    }

    fn err(&self, op: &str) -> impl Fn(object_store::Error) -> Error + '_ {
        let describe = self.inner.describe.clone();
        let op = op.to_string();
        move |e| backend_error(&describe, &op, e)
    }
}

/// Whether the blob `key` is stored: a HEAD of its object. fsck's pass over the alias markers
/// asks this of every marker it checks (the backend's, and the `remote_index` bench's probe).
pub(crate) async fn blob_exists(
    store: &dyn ObjectStore,
    keys: &Keys,
    describe: &str,
    key: BlobKey,
) -> Result<bool> {
    Ok(head_object(store, keys, describe, &key).await?.is_some())
}

/// A `HEAD` of the object of `key`, with its metadata; `None` where there is none.
pub(crate) async fn head_object(
    store: &dyn ObjectStore,
    keys: &Keys,
    describe: &str,
    key: &BlobKey,
) -> Result<Option<object_store::GetResult>> {
    let opts = GetOptions {
        head: true,
        ..GetOptions::default()
    };
    let got = store.get_opts(&keys.blob(key), opts).await;
    absent_ok(describe, "head", got)
}

#[async_trait]
impl Backend for S3Backend {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    async fn begin_put(&self, hint: &PutHint) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(S3Writer::new(self.inner.clone(), hint)))
    }

    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<Option<GetResult>> {
        read::get(&self.inner, key, range).await
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<BlobStat>> {
        let inner = &self.inner;
        let got = head_object(&*inner.store, &inner.keys, &inner.describe, key).await?;
        Ok(got.map(|g| BlobStat {
            key: *key,
            size: g.meta.size,
            modified: Some(g.meta.last_modified.into()),
            // A blob streamed straight to its key has no digest metadata; the alias cache may know.
            digests: digests_from_attributes(key, g.meta.size, &g.attributes).or_else(|| {
                self.inner
                    .aliases
                    .known(key)
                    .filter(|d| d.size == g.meta.size)
            }),
        }))
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool> {
        // S3 answers 204 to a DELETE whether or not the object was there: ask first.
        let path = self.inner.keys.blob(key);
        let there = absent_ok(
            &self.inner.describe,
            "head",
            self.inner.store.head(&path).await,
        )?;
        if there.is_none() {
            return Ok(false);
        }
        match self.inner.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(self.err("delete")(e)),
        }
    }

    fn list(&self) -> BoxStream<'static, Result<BlobKey>> {
        let keys = self.inner.keys.clone();
        self.list_objects()
            .try_filter_map(move |meta| future::ready(Ok(keys.key_of(&meta.location))))
            .boxed()
    }

    /// Each blob's size and time from the listing itself: no `HEAD` per blob (the digests,
    /// which only a `HEAD` brings, are left out).
    fn list_meta(self: Arc<Self>) -> BoxStream<'static, Result<BlobStat>> {
        let keys = self.inner.keys.clone();
        self.list_objects()
            .try_filter_map(move |meta| {
                future::ready(Ok(keys.key_of(&meta.location).map(|key| BlobStat {
                    key,
                    size: meta.size,
                    modified: Some(meta.last_modified.into()),
                    digests: None,
                })))
            })
            .boxed()
    }

    async fn resolve_alias(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        match hash.algorithm() {
            Algorithm::Sha512 => Ok(BlobKey::from_hash(hash)),
            Algorithm::Sha1 | Algorithm::Blake3 => self.inner.aliases.resolve(hash).await,
            other => Err(Error::InvalidInput(format!(
                "blobs cannot be looked up by {other}"
            ))),
        }
    }

    /// Both markers, read back (unless this process has seen them) and written where missing.
    async fn index_stored(&self, digests: &Digests) -> Result<()> {
        self.inner.aliases.record_stored(digests).await
    }

    /// Merges what the scan found into the markers (writing missing ones, rewriting unreadable
    /// ones), streaming, then imports what is left of an earlier version's log, then lists
    /// every marker and removes those whose blob is gone (`alias::sweep`).
    async fn rebuild_aliases(
        &self,
        found: BoxStream<'_, Digests>,
        options: &super::RebuildOptions,
    ) -> Result<super::AliasRebuild> {
        let inner = &self.inner;
        // Anything under `alias/` besides the log (records of an older layout) goes.
        let log = inner.keys.alias_log();
        let stray = inner
            .store
            .list(Some(&inner.keys.aliases()))
            .try_filter(move |m| futures::future::ready(!m.location.prefix_matches(&log)))
            .map_ok(|m| m.location);
        // Drained as they are deleted, not collected: an old index has one per blob.
        inner
            .store
            .delete_stream(stray.boxed())
            .try_for_each(|_| futures::future::ready(Ok(())))
            .await
            .map_err(self.err("delete alias records"))?;
        let (mut report, seen) = inner.aliases.rebuild(found).await?;
        let exists = |key: BlobKey| {
            let inner = inner.clone();
            Box::pin(
                async move { blob_exists(&*inner.store, &inner.keys, &inner.describe, key).await },
            ) as BoxFuture<'_, _>
        };
        inner
            .aliases
            .sweep(
                &exists,
                inner.alias_grace,
                options,
                &mut report,
                Some(&seen),
            )
            .await?;
        Ok(report)
    }

    /// Copies the blob to `quarantine/<sha512 base64url>` (its blob name: keeping its bytes for
    /// inspection), then deletes it.
    async fn quarantine(&self, key: &BlobKey) -> Result<bool> {
        let from = self.inner.keys.blob(key);
        let to = self.inner.keys.quarantine(key);
        match self.inner.store.copy(&from, &to).await {
            Ok(()) => {}
            Err(e @ object_store::Error::NotFound { .. }) if !errors::is_missing_bucket(&e) => {
                return Ok(false)
            }
            Err(e) => return Err(self.err("quarantine copy")(e)),
        }
        match self.inner.store.delete(&from).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(self.err("quarantine delete")(e)),
        }
    }

    /// Deletes staging objects older than an hour: left by a process killed between completing a
    /// large put's staging upload and deleting it (see `staging`). A multipart upload that fails
    /// is aborted; configure the bucket's `AbortIncompleteMultipartUpload` lifecycle rule for
    /// uploads of processes killed mid-stream. Spool files are unlinked temp files, which the OS
    /// removes with their process.
    async fn sweep(&self) -> Result<u64> {
        staging::sweep(&self.inner, staging::STAGING_MAX_AGE).await
    }
}
