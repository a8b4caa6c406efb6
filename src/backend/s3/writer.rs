//! An upload into an S3 store, and how it is published only once its bytes verified.
//!
//! The [`Store`](crate::Store) learns a blob's key only at the end of the stream, when it has
//! hashed every byte, and a put whose bytes turn out wrong must leave nothing under any address.
//! S3 cannot rename, and `object_store` has no create-only multipart upload (and Ceph RGW ignores
//! `If-None-Match` on CompleteMultipartUpload and cannot do UploadPartCopy without a
//! Content-Length, so copy-*if-not-exists* does not work there; a plain `CopyObject` after a
//! `HEAD` does). So nothing is published under an address until the bytes verified:
//!
//! - **Small blobs** (up to [`SINGLE_PUT_MAX`], which covers nearly every npm tarball) are held in
//!   memory and published with one `PUT` carrying `If-None-Match: *` ([`PutMode::Create`]):
//!   atomic and create-only on the server, and a `412` is the dedupe hit ("already present").
//! - **Large blobs whose key the caller gave** (an expected sha512, as a registry publish or a
//!   migration has) stream straight into a multipart upload to that key as they arrive, at most
//!   [`PARTS_IN_FLIGHT`] parts of [`PART_SIZE`] in memory. A multipart upload is invisible until it
//!   completes, and it is completed only in `commit`, after the store verified every byte; on a
//!   mismatch or any failure it is aborted, so a partial or wrong object is never visible. (The
//!   store has already checked the key is absent; a racing writer that completes too wrote the
//!   same verified bytes.) The digests other than the key are not known when such an upload
//!   starts, so the object carries no digest metadata; the alias markers record them.
//! - **Other large blobs** (no sha512 given) stream into a multipart upload to a *staging* key
//!   while they are hashed, completed only once verified, then a server-side `CopyObject` names
//!   the final key (`staging`): the upload overlaps the hashing instead of following it.
//! - **The same, where staging is off or the server refused a copy**: they spill to an unlinked
//!   local temp file as they stream in, so memory stays flat whatever the size. After
//!   verification the key is known: a `HEAD` finds a dedupe hit, else a multipart upload goes
//!   from the file straight to the final key, as above. Two writers racing on the same large
//!   blob may both complete; both wrote the same verified bytes, so the last one wins harmlessly.
//!   A put that found an object at its key ([`PutHint::hold`]) spools too, whatever its key:
//!   stored, but its size not checked before the end, it most likely sends nothing; of another
//!   size, the commit replaces it.
//!
//! The digests ride along as object metadata, so `head` knows them without reading the blob, and
//! `x-amz-checksum-sha256` (when enabled) makes the server check every request body as well.

use std::any::Any;
use std::io::SeekFrom;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use object_store::path::Path;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::errors::{absent_ok, backend_error, is_transport, may_have_landed, retried_inside};
use super::keys::digest_attributes;
use super::staging::Staged;
use super::Inner;
use crate::backend::{BlobKey, BlobWriter, Committed, PutHint};
use crate::integrity::Digests;
use crate::{Error, Result};

/// Largest blob published with a single `PUT` from memory; larger ones spill to a temp file.
pub(crate) const SINGLE_PUT_MAX: u64 = 16 * 1024 * 1024;
/// Multipart part size (S3's minimum is 5 MiB; at 8 MiB a 2 GiB blob is 256 parts of 10,000).
pub(crate) const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded concurrently: memory for a large upload is about this many parts.
pub(crate) const PARTS_IN_FLIGHT: usize = 4;

pub(crate) struct S3Writer {
    inner: Arc<Inner>,
    /// The key the caller said the bytes must have, if it did.
    expected: Option<BlobKey>,
    /// Spool a large upload rather than stream it out ([`PutHint::hold`]).
    hold: bool,
    chunks: Vec<Bytes>,
    len: u64,
    /// The spill file once the upload outgrew [`SINGLE_PUT_MAX`] (unlinked: it vanishes on drop).
    spool: Option<tokio::fs::File>,
    /// The multipart upload to `expected` once the upload outgrew [`SINGLE_PUT_MAX`].
    direct: Option<Upload>,
    /// The multipart upload to a staging key, when no key was expected (see `staging`).
    staged: Option<Staged>,
}

impl S3Writer {
    pub(crate) fn new(inner: Arc<Inner>, hint: &PutHint) -> Self {
        S3Writer {
            inner,
            expected: hint.expected_key,
            hold: hint.hold,
            chunks: Vec::new(),
            len: 0,
            spool: None,
            direct: None,
            staged: None,
        }
    }

    /// Starts a multipart upload to a staging key and sends what is held so far.
    async fn go_staged(&mut self, chunk: Bytes) -> Result<()> {
        let mut staged = Staged::start(&self.inner).await?;
        for c in std::mem::take(&mut self.chunks)
            .into_iter()
            .chain(std::iter::once(chunk))
        {
            staged.send(&self.inner.describe, c).await?;
        }
        self.staged = Some(staged);
        Ok(())
    }

    /// Starts the multipart upload to the expected key and sends what is held so far.
    async fn go_direct(&mut self, key: BlobKey, chunk: Bytes) -> Result<()> {
        let path = self.inner.keys.blob(&key);
        let mut up = Upload::start(&self.inner, &path, PutMultipartOptions::default()).await?;
        for c in std::mem::take(&mut self.chunks)
            .into_iter()
            .chain(std::iter::once(chunk))
        {
            up.send(&self.inner.describe, c).await?;
        }
        self.direct = Some(up);
        Ok(())
    }

    async fn spill(&mut self, chunk: Bytes) -> Result<()> {
        if self.spool.is_none() {
            let file = crate::task::blocking(|| {
                tempfile::tempfile()
                    .map_err(|e| Error::io("create spool file", std::env::temp_dir(), e))
            })
            .await?;
            self.spool = Some(tokio::fs::File::from_std(file));
        }
        let held = std::mem::take(&mut self.chunks);
        let Some(file) = self.spool.as_mut() else {
            return Err(Error::InvalidInput("spool file missing".into()));
        };
        for c in held.iter().chain(std::iter::once(&chunk)) {
            file.write_all(c)
                .await
                .map_err(|e| Error::io("write spool file", std::env::temp_dir(), e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.len += chunk.len() as u64;
        if let Some(up) = self.direct.as_mut() {
            up.send(&self.inner.describe, chunk).await
        } else if let Some(staged) = self.staged.as_mut() {
            staged.send(&self.inner.describe, chunk).await
        } else if self.spool.is_some() || self.len > self.inner.single_put_max {
            match self.expected {
                Some(key) if self.spool.is_none() && !self.hold => self.go_direct(key, chunk).await,
                None if self.spool.is_none() && !self.hold && self.inner.stages() => {
                    self.go_staged(chunk).await
                }
                _ => self.spill(chunk).await,
            }
        } else {
            self.chunks.push(chunk);
            Ok(())
        }
    }

    async fn commit(self: Box<Self>, digests: &Digests) -> Result<Committed> {
        if self.len != digests.size {
            return Err(Error::InvalidInput(format!(
                "commit of {} bytes with digests of {} bytes",
                self.len, digests.size
            )));
        }
        let S3Writer {
            inner,
            chunks,
            spool,
            direct,
            staged,
            expected,
            ..
        } = *self;
        if let Some(staged) = staged {
            let blob = staged.publish(&inner, digests).await?;
            inner.record_aliases(digests).await?;
            return Ok(blob);
        }
        if let Some(up) = direct {
            // Completing publishes: only under the key the upload was started for, which the
            // store verified the bytes against.
            if expected != Some(BlobKey::new(digests.sha512)) {
                if let Err(e) = up.abort(&inner.describe).await {
                    tracing::warn!(backend = %inner.describe, error = %e.report(), "aborting a multipart upload failed");
                }
                return Err(Error::InvalidInput(
                    "commit under another key than the upload was started for".into(),
                ));
            }
            let blob = up.complete(&inner.describe).await?;
            inner.record_aliases(digests).await?;
            return Ok(blob);
        }
        let outcome = match spool {
            None => {
                // The aliases go up alongside the blob: an alias whose blob is missing is harmless
                // (lookups check the blob exists), and the put costs one round trip, not three.
                // Markers that were already there are read back once the blob is stored (see
                // `AliasIndex::record_alongside`).
                let (blob, aliases) = tokio::join!(
                    put_small(&inner, digests, chunks),
                    inner.aliases.record_alongside(digests)
                );
                // The blob's own failure is the one to report (the records' is likely the same
                // cause).
                let blob = blob?;
                inner.aliases.settle(digests, aliases?).await?;
                blob
            }
            Some(file) => {
                let blob = put_large(&inner, digests, file).await?;
                inner.record_aliases(digests).await?;
                blob
            }
        };
        Ok(outcome)
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        // Only a direct or staged upload sent anything, and it is invisible until completed:
        // abort it so the server drops its parts. Dropping the buffers and the unlinked spool file
        // is the rest.
        let S3Writer {
            inner,
            direct,
            staged,
            ..
        } = *self;
        match (direct, staged) {
            (Some(up), _) => up.abort(&inner.describe).await,
            (None, Some(staged)) => staged.abort(&inner.describe).await,
            (None, None) => Ok(()),
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// A create-only `PUT` (`opts.mode` is [`PutMode::Create`]), retried up to `retries` times when
/// the connection fails. object_store does not retry it, since a create is not idempotent in
/// general; it is for the objects tarvault creates (a blob, an alias marker), whose bytes are
/// fixed by their name, so a retry of a create that did land sees the object there. The second
/// value says whether that can be: an attempt failed after the request may have gone out (not a
/// failed connect), here or inside object_store (which does replay a PUT whose connection closed
/// before the answer), so a 412 may be this call's own earlier attempt rather than another
/// writer's.
pub(crate) async fn put_create(
    store: &dyn ObjectStore,
    path: &Path,
    payload: PutPayload,
    opts: PutOptions,
    retries: usize,
) -> (object_store::Result<object_store::PutResult>, bool) {
    let mut attempt = 0;
    let mut replayed = false;
    loop {
        match store.put_opts(path, payload.clone(), opts.clone()).await {
            Err(e) if is_transport(&e) && attempt < retries => {
                attempt += 1;
                replayed |= may_have_landed(&e);
                tracing::debug!(error = %crate::ErrorReport::new(&e), attempt, object = %path, "retrying a create-only PUT");
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await;
            }
            other => {
                let inside = matches!(&other, Err(e) if retried_inside(e));
                return (other, replayed || inside);
            }
        }
    }
}

/// One create-only `PUT`. A 412 means the blob is already there: a dedupe hit, unless the object
/// there has the wrong size (a truncated or planted object), which the verified bytes replace.
/// After a retried attempt whose answer was lost, a 412 over an object of the right size is
/// taken as that attempt's own work: stored by this put. (S3's HEAD gives no digest of the bytes
/// to compare: the ETag is an MD5 only for some uploads and servers. The object is named by its
/// sha512, so a right-sized one that appeared between two attempts of this put is, at worst, the
/// same blob put by another writer at the same moment.)
async fn put_small(inner: &Inner, d: &Digests, chunks: Vec<Bytes>) -> Result<Committed> {
    let key = BlobKey::new(d.sha512);
    let path = inner.keys.blob(&key);
    let payload: PutPayload = chunks.iter().cloned().collect();
    let opts = PutOptions {
        mode: PutMode::Create,
        attributes: digest_attributes(d),
        ..PutOptions::default()
    };
    let (created, replayed) =
        put_create(inner.store.as_ref(), &path, payload, opts, inner.retries).await;
    match created {
        Ok(_) => Ok(Committed::Stored),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => {
            let existing = absent_ok(&inner.describe, "head", inner.store.head(&path).await)?;
            match existing {
                Some(m) if m.size == d.size && replayed => Ok(Committed::Stored),
                Some(m) if m.size == d.size => Ok(Committed::AlreadyPresent),
                _ => {
                    tracing::warn!(blob = %path, "replacing a wrong-sized object with verified bytes");
                    let opts = PutOptions {
                        mode: PutMode::Overwrite,
                        attributes: digest_attributes(d),
                        ..PutOptions::default()
                    };
                    let payload: PutPayload = chunks.into_iter().collect();
                    inner
                        .store
                        .put_opts(&path, payload, opts)
                        .await
                        .map_err(|e| backend_error(&inner.describe, "put", e))?;
                    Ok(Committed::Stored)
                }
            }
        }
        Err(e) => Err(backend_error(&inner.describe, "put", e)),
    }
}

/// A dedupe check, then a multipart upload from the spool file straight to the final key.
async fn put_large(inner: &Inner, d: &Digests, mut file: tokio::fs::File) -> Result<Committed> {
    let key = BlobKey::new(d.sha512);
    let path = inner.keys.blob(&key);
    if already_there(inner, &path, d).await? {
        return Ok(Committed::AlreadyPresent);
    }
    let spool_err = |e| Error::io("read spool file", std::env::temp_dir(), e);
    file.seek(SeekFrom::Start(0)).await.map_err(spool_err)?;
    let mut up = Upload::start(
        inner,
        &path,
        PutMultipartOptions::from(digest_attributes(d)),
    )
    .await?;
    let result: Result<()> = async {
        loop {
            let mut part = BytesMut::with_capacity(PART_SIZE);
            while part.len() < PART_SIZE {
                if file.read_buf(&mut part).await.map_err(spool_err)? == 0 {
                    break;
                }
            }
            if part.is_empty() {
                return Ok(());
            }
            up.send(&inner.describe, part.freeze()).await?;
        }
    }
    .await;
    up.settle(&inner.describe, result).await
}

/// A dedupe check before a large upload: whether `path` already holds a blob of the right size
/// (a wrong-sized object there is replaced, with a warning).
pub(super) async fn already_there(inner: &Inner, path: &Path, d: &Digests) -> Result<bool> {
    match absent_ok(&inner.describe, "head", inner.store.head(path).await)? {
        Some(m) if m.size == d.size => Ok(true),
        Some(_) => {
            tracing::warn!(blob = %path, "replacing a wrong-sized object with verified bytes");
            Ok(false)
        }
        None => Ok(false),
    }
}

/// A multipart upload in progress: invisible until [`Upload::complete`]. One whose commit was
/// cancelled (its future dropped) is aborted on drop, so the server does not keep the parts.
pub(super) struct Upload(Option<WriteMultipart>);

impl Upload {
    pub(super) async fn start(
        inner: &Inner,
        path: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Upload> {
        let upload = inner
            .store
            .put_multipart_opts(path, opts)
            .await
            .map_err(|e| backend_error(&inner.describe, "start multipart upload", e))?;
        Ok(Upload(Some(WriteMultipart::new_with_chunk_size(
            upload, PART_SIZE,
        ))))
    }

    /// Hands bytes to the upload, waiting while [`PARTS_IN_FLIGHT`] parts are in flight.
    pub(super) async fn send(&mut self, describe: &str, chunk: Bytes) -> Result<()> {
        let Some(w) = self.0.as_mut() else {
            return Err(Error::InvalidInput("multipart upload gone".into()));
        };
        w.wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(|e| backend_error(describe, "upload part", e))?;
        w.put(chunk);
        Ok(())
    }

    /// Completes the upload, which publishes the object.
    pub(super) async fn complete(mut self, describe: &str) -> Result<Committed> {
        let Some(w) = self.0.take() else {
            return Err(Error::InvalidInput("multipart upload gone".into()));
        };
        w.finish()
            .await
            .map_err(|e| backend_error(describe, "complete multipart upload", e))?;
        Ok(Committed::Stored)
    }

    /// Completes the upload if every part was sent (`sent` is `Ok`), else aborts it and returns
    /// the sending error.
    pub(super) async fn settle(self, describe: &str, sent: Result<()>) -> Result<Committed> {
        match sent {
            Ok(()) => self.complete(describe).await,
            Err(e) => {
                if let Err(abort) = self.abort(describe).await {
                    tracing::warn!(backend = %describe, error = %abort.report(), "could not abort a failed multipart upload");
                }
                Err(e)
            }
        }
    }

    pub(super) async fn abort(mut self, describe: &str) -> Result<()> {
        match self.0.take() {
            Some(w) => w
                .abort()
                .await
                .map_err(|e| backend_error(describe, "abort multipart upload", e)),
            None => Ok(()),
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if let Err(e) = w.abort().await {
                        tracing::warn!(error = %crate::ErrorReport::new(&e), "aborting an abandoned multipart upload failed");
                    }
                });
            }
        }
    }
}
