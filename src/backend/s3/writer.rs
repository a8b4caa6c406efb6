//! An upload into an S3 store, and how it is published only once its bytes verified.
//!
//! The [`Store`](crate::Store) learns a blob's key only at the end of the stream, when it has
//! hashed every byte, and a put whose bytes turn out wrong must leave nothing under any address.
//! S3 cannot rename, and `object_store` has no create-only multipart upload (and Ceph RGW ignores
//! `If-None-Match` on CompleteMultipartUpload and cannot do UploadPartCopy without a
//! Content-Length, so "stage under a temp key, then copy-if-not-exists" does not work there). So
//! nothing is sent to the server until the bytes verified:
//!
//! - **Small blobs** (up to [`SINGLE_PUT_MAX`], which covers nearly every npm tarball) are held in
//!   memory and published with one `PUT` carrying `If-None-Match: *` ([`PutMode::Create`]):
//!   atomic and create-only on the server, and a `412` is the dedupe hit ("already present").
//! - **Large blobs** spill to an unlinked local temp file as they stream in, so memory stays flat
//!   whatever the size. After verification the key is known: a `HEAD` finds a dedupe hit, else a
//!   multipart upload goes straight to the final key with at most [`PARTS_IN_FLIGHT`] parts of
//!   [`PART_SIZE`] in memory. A multipart upload is invisible until it completes, and it is aborted
//!   on any failure, so a partial object is never visible. Two writers racing on the same large
//!   blob may both complete; both wrote the same verified bytes, so the last one wins harmlessly.
//!
//! The digests ride along as object metadata, so `head` knows them without reading the blob, and
//! `x-amz-checksum-sha256` (when enabled) makes the server check every request body as well.

use std::any::Any;
use std::io::SeekFrom;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::errors::{absent_ok, backend_error, is_transport};
use super::keys::digest_attributes;
use super::Inner;
use crate::backend::{BlobKey, BlobWriter, Committed};
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
    chunks: Vec<Bytes>,
    len: u64,
    /// The spill file once the upload outgrew [`SINGLE_PUT_MAX`] (unlinked: it vanishes on drop).
    spool: Option<tokio::fs::File>,
}

impl S3Writer {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        S3Writer {
            inner,
            chunks: Vec::new(),
            len: 0,
            spool: None,
        }
    }

    async fn spill(&mut self, chunk: Bytes) -> Result<()> {
        if self.spool.is_none() {
            let file = tokio::task::spawn_blocking(tempfile::tempfile)
                .await
                .map_err(|e| Error::io("create spool file", std::env::temp_dir(), e.into()))?
                .map_err(|e| Error::io("create spool file", std::env::temp_dir(), e))?;
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
        if self.spool.is_some() || self.len > self.inner.single_put_max {
            self.spill(chunk).await
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
            ..
        } = *self;
        let outcome = match spool {
            None => {
                // The aliases go up alongside the blob: an alias whose blob is missing is harmless
                // (lookups check the blob exists), and the put costs one round trip, not three.
                let (blob, aliases) = tokio::join!(
                    put_small(&inner, digests, chunks),
                    inner.record_aliases(digests)
                );
                aliases?;
                blob?
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
        // Nothing was sent to the server; dropping the buffers and the unlinked spool file is all.
        Ok(())
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// One create-only `PUT`. A 412 means the blob is already there: a dedupe hit, unless the object
/// there has the wrong size (a truncated or planted object), which the verified bytes replace.
async fn put_small(inner: &Inner, d: &Digests, chunks: Vec<Bytes>) -> Result<Committed> {
    let key = BlobKey::new(d.sha512);
    let path = inner.keys.blob(&key);
    let payload: PutPayload = chunks.iter().cloned().collect();
    let opts = PutOptions {
        mode: PutMode::Create,
        attributes: digest_attributes(d),
        ..PutOptions::default()
    };
    // A create-only PUT is not idempotent, so object_store does not retry it after a connection
    // reset; it is safe for us to: a retry that finds the object there (412) is a dedupe hit of
    // the same verified bytes.
    let mut attempt = 0;
    let first = loop {
        match inner
            .store
            .put_opts(&path, payload.clone(), opts.clone())
            .await
        {
            Err(e) if is_transport(&e) && attempt < inner.retries => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "retrying a create-only PUT");
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await;
            }
            other => break other,
        }
    };
    match first {
        Ok(_) => Ok(Committed::Stored),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => {
            let existing = absent_ok(&inner.describe, "head", inner.store.head(&path).await)?;
            match existing {
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
    if let Some(m) = absent_ok(&inner.describe, "head", inner.store.head(&path).await)? {
        if m.size == d.size {
            return Ok(Committed::AlreadyPresent);
        }
        tracing::warn!(blob = %path, "replacing a wrong-sized object with verified bytes");
    }
    let spool_err = |e| Error::io("read spool file", std::env::temp_dir(), e);
    file.seek(SeekFrom::Start(0)).await.map_err(spool_err)?;
    let upload = inner
        .store
        .put_multipart_opts(&path, PutMultipartOptions::from(digest_attributes(d)))
        .await
        .map_err(|e| backend_error(&inner.describe, "start multipart upload", e))?;
    let mut guard = AbortOnDrop(Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)));
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
            let Some(w) = guard.0.as_mut() else {
                return Err(Error::InvalidInput("multipart upload gone".into()));
            };
            w.wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|e| backend_error(&inner.describe, "upload part", e))?;
            w.put(part.freeze());
        }
    }
    .await;
    let Some(w) = guard.0.take() else {
        return Err(Error::InvalidInput("multipart upload gone".into()));
    };
    match result {
        Ok(()) => match w.finish().await {
            Ok(_) => Ok(Committed::Stored),
            Err(e) => Err(backend_error(
                &inner.describe,
                "complete multipart upload",
                e,
            )),
        },
        Err(e) => {
            if let Err(abort) = w.abort().await {
                tracing::warn!(error = %abort, blob = %path, "could not abort a failed multipart upload");
            }
            Err(e)
        }
    }
}

/// Aborts a multipart upload whose commit was cancelled (its future dropped), so the server does
/// not keep the parts. An incomplete upload is never visible either way.
struct AbortOnDrop(Option<WriteMultipart>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = w.abort().await;
                });
            }
        }
    }
}
