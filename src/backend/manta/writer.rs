//! Uploads: bytes are spooled locally (memory, then a temp file past a threshold) while the store
//! hashes them, and published at commit by one verified PUT.
//!
//! Why not stream straight to Manta? Nothing may be visible under a key before the bytes are
//! verified, and the key (the sha512) is only known once the last byte has been hashed. Manta offers
//! two ways to publish server-side, and neither fits:
//! * SnapLinks (upload to a temp path, link to the final one) are gone in Manta v2
//!   (`SnaplinksDisabledError`).
//! * Multipart uploads fix the target path at *creation*, need 5 MiB parts, cost four extra round
//!   trips (create, redirect HEAD, part, commit) and refuse conditional headers, so they cannot be
//!   create-only either. For tarballs (most are a few KB) that is several times the work of one PUT.
//!
//! A put that outgrows the in-memory spool streams instead, while it is hashed, so that the
//! upload overlaps the hashing: straight to the blob's path when the caller gave its sha512
//! (`direct`, create-only, the body ended only once verified), else, where the server makes
//! SnapLinks (Manta v1), to a staging object that a link names once verified (`staging`).
//! Everything below is how the other puts go: those that fit the in-memory spool, larger ones of
//! unknown sha512 on Manta v2, every put with `?staging=false`, and one that found an object at
//! its key ([`PutHint::hold`]): stored, but its size not checked before the end, or of another
//! size, which the create-only direct PUT could not replace.
//!
//! A single PUT with `Content-MD5` is atomic in Manta (the metadata record that makes an object
//! visible is written only after every byte reached the storage nodes) and the server refuses it
//! with `ContentMD5Mismatch` if the bytes it received are not the ones hashed here, so what appears
//! under the key is exactly what the store verified. Because the body is local it can be replayed
//! when a PUT has to be retried (503, dropped connection), and a dropped or aborted writer leaves
//! nothing on the server at all.

use std::any::Any;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use md5::Digest as _;

use super::client::RequestBody;
use super::direct::Direct;
use super::staging::{self, Staged};
use super::MantaBackend;
use crate::backend::{BlobKey, BlobWriter, Committed, PutHint};
use crate::integrity::Digests;
use crate::{Error, Result};

/// Uploads up to this size stay in memory; larger ones spill to a temp file.
pub const SPOOL_IN_MEMORY: usize = 16 * 1024 * 1024;

enum Spool {
    Memory(BytesMut),
    File(tempfile::NamedTempFile, u64),
    /// Streaming to a staging object (see `staging`).
    Staged(Staged),
    /// Streaming to the blob's own path, its sha512 given (see `direct`).
    Direct(Direct),
}

/// An upload in progress (see the module docs).
pub struct MantaWriter {
    backend: MantaBackend,
    spool: Spool,
    md5: md5::Md5,
    /// The size, when the put knows it.
    size_hint: Option<u64>,
    /// The key, when the put knows it.
    expected_key: Option<BlobKey>,
    /// The size hint says the put will outgrow memory: stage (or spill) from the first byte.
    large: bool,
    /// Spill rather than stream out ([`PutHint::hold`]).
    hold: bool,
}

impl MantaWriter {
    pub(super) fn new(backend: MantaBackend, hint: &PutHint) -> Self {
        let size_hint = hint.size;
        let cap = size_hint
            .map(|n| n.min(SPOOL_IN_MEMORY as u64) as usize)
            .unwrap_or(64 * 1024);
        MantaWriter {
            backend,
            spool: Spool::Memory(BytesMut::with_capacity(cap)),
            md5: md5::Md5::new(),
            size_hint,
            expected_key: hint.expected_key,
            large: size_hint.is_some_and(|n| n > SPOOL_IN_MEMORY as u64),
            hold: hint.hold,
        }
    }

    /// Leaves the in-memory spool: for the blob's own path when the put knows its key, for a
    /// staged upload where the server links, else for a file. `?staging=false` always spools,
    /// and so does a put that most likely finds its blob stored: it then sends nothing.
    async fn outgrow_memory(&mut self) -> Result<()> {
        if !self.backend.client.config().staging || self.hold {
            return self.spill();
        }
        if let Some(key) = self.expected_key {
            let mut up = Direct::start(&self.backend, key, self.size_hint).await?;
            if let Some(held) = self.take_held() {
                up.send(held).await?;
            }
            self.spool = Spool::Direct(up);
            return Ok(());
        }
        let stage = match staging::usable(&self.backend).await {
            Ok(stage) => stage,
            Err(e) => {
                tracing::warn!(error = %e.report(), "cannot tell whether the server links; spooling");
                false
            }
        };
        if !stage {
            return self.spill();
        }
        let mut up = Staged::start(&self.backend, self.size_hint).await?;
        if let Some(held) = self.take_held() {
            up.send(held).await?;
        }
        self.spool = Spool::Staged(up);
        Ok(())
    }

    /// The bytes held in memory so far, if any (leaving the memory spool empty).
    fn take_held(&mut self) -> Option<Bytes> {
        match &mut self.spool {
            Spool::Memory(buf) if !buf.is_empty() => Some(std::mem::take(buf).freeze()),
            _ => None,
        }
    }

    fn spill(&mut self) -> Result<()> {
        if let Spool::Memory(buf) = &self.spool {
            let mut file = tempfile::NamedTempFile::new()
                .map_err(|e| Error::io("create", std::env::temp_dir(), e))?;
            file.write_all(buf)
                .map_err(|e| Error::io("write", file.path().to_path_buf(), e))?;
            let len = buf.len() as u64;
            self.spool = Spool::File(file, len);
        }
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for MantaWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.md5.update(&chunk);
        if let Spool::Memory(buf) = &self.spool {
            if self.large || buf.len() + chunk.len() > SPOOL_IN_MEMORY {
                self.outgrow_memory().await?;
            }
        }
        match &mut self.spool {
            Spool::Staged(up) => up.send(chunk).await?,
            Spool::Direct(up) => up.send(chunk).await?,
            Spool::Memory(buf) => buf.extend_from_slice(&chunk),
            Spool::File(file, len) => {
                // Spool writes are local and sequential; a blocking write of one chunk is what
                // tokio::fs would do on a blocking thread anyway.
                file.write_all(&chunk)
                    .map_err(|e| Error::io("write", file.path().to_path_buf(), e))?;
                *len += chunk.len() as u64;
            }
        }
        Ok(())
    }

    async fn commit(self: Box<Self>, digests: &Digests) -> Result<Committed> {
        let this = *self;
        let md5: [u8; 16] = this.md5.finalize().into();
        let (body, _keep) = match this.spool {
            Spool::Staged(up) => return up.publish(&this.backend, digests, md5).await,
            Spool::Direct(up) => return up.publish(&this.backend, digests, md5).await,
            Spool::Memory(buf) => (RequestBody::Bytes(buf.freeze()), None),
            Spool::File(mut file, len) => {
                file.flush()
                    .map_err(|e| Error::io("flush", file.path().to_path_buf(), e))?;
                let path: PathBuf = file.path().to_path_buf();
                (RequestBody::File(Arc::new(path), len), Some(file))
            }
        };
        this.backend.publish(digests, md5, body).await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        // Nothing was published: dropping the spool removes its temp file, and a staged upload
        // dropped unfinished is broken off (its body never ends, so Manta keeps nothing).
        Ok(())
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}
