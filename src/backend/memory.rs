//! An in-memory backend, for tests and for embedding a store that need not survive the process.

use std::any::Any;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};

use super::alias::map::AliasMap;
use super::{
    check_range, AliasRebuild, Backend, BlobKey, BlobStat, BlobWriter, Committed, GetResult,
    Presence, PutHint,
};
use crate::integrity::{Algorithm, Digests, Hash};
use crate::{Error, Result};

#[derive(Default)]
struct State {
    blobs: HashMap<BlobKey, (Bytes, SystemTime)>,
    aliases: AliasMap,
}

/// Blobs in a `HashMap`. Cloning shares the same map.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend").finish_non_exhaustive()
    }
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters:
        // every update is a single insert or remove.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces a stored blob's bytes without any check: for tests that simulate corruption.
    pub fn corrupt_for_test(&self, key: &BlobKey, bytes: Bytes) -> bool {
        match self.lock().blobs.get_mut(key) {
            Some(slot) => {
                slot.0 = bytes;
                true
            }
            None => false,
        }
    }
}

struct MemoryWriter {
    backend: MemoryBackend,
    buf: BytesMut,
}

#[async_trait]
impl BlobWriter for MemoryWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&chunk);
        Ok(())
    }

    async fn commit(self: Box<Self>, digests: &Digests) -> Result<Committed> {
        let key = BlobKey::new(digests.sha512);
        let mut state = self.backend.lock();
        state.aliases.insert(digests);
        if let Some((bytes, written)) = state.blobs.get_mut(&key) {
            *written = SystemTime::now();
            // A copy of the wrong size is damaged: the verified bytes replace it, as on fs.
            if bytes.len() as u64 == digests.size {
                return Ok(Committed::AlreadyPresent);
            }
        }
        state
            .blobs
            .insert(key, (self.buf.freeze(), SystemTime::now()));
        Ok(Committed::Stored)
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn describe(&self) -> String {
        "memory:".into()
    }

    async fn begin_put(&self, _hint: &PutHint) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(MemoryWriter {
            backend: self.clone(),
            buf: BytesMut::new(),
        }))
    }

    /// With the blob's record, as the fs hands it out: a store (or a cache tier over this one)
    /// then checks the bytes against its blake3 rather than hashing sha512.
    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<Option<GetResult>> {
        let (bytes, digests) = {
            let state = self.lock();
            let Some((bytes, _)) = state.blobs.get(key) else {
                return Ok(None);
            };
            (bytes.clone(), state.aliases.digests(key))
        };
        let size = bytes.len() as u64;
        let range = range.unwrap_or(0..size);
        check_range(&range, size)?;
        // `check_range` guarantees the bounds fit in the buffer.
        let part = bytes.slice(range.start as usize..range.end as usize);
        Ok(Some(GetResult {
            size,
            stream: stream::iter([Ok(part)]).boxed(),
            digests,
            verified_whole: None,
        }))
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<BlobStat>> {
        let state = self.lock();
        Ok(state.blobs.get(key).map(|(b, t)| BlobStat {
            key: *key,
            size: b.len() as u64,
            modified: Some(*t),
            digests: state.aliases.digests(key),
        }))
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool> {
        Ok(self.lock().blobs.remove(key).is_some())
    }

    async fn freshen(&self, key: &BlobKey) -> Result<Presence> {
        if let Some((_, written)) = self.lock().blobs.get_mut(key) {
            *written = SystemTime::now();
        }
        Ok(self.head(key).await?.into())
    }

    fn list(&self) -> BoxStream<'static, Result<BlobKey>> {
        let keys: Vec<Result<BlobKey>> = self.lock().blobs.keys().map(|k| Ok(*k)).collect();
        stream::iter(keys).boxed()
    }

    fn recorded_digests_trusted(&self) -> Option<crate::backend::Vouched> {
        Some(crate::backend::Vouched::new())
    }

    async fn resolve_alias(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        match hash.algorithm() {
            Algorithm::Sha1 | Algorithm::Blake3 | Algorithm::Sha512 => {
                Ok(self.lock().aliases.lookup(hash))
            }
            other => Err(Error::InvalidInput(format!(
                "cannot look blobs up by {other}"
            ))),
        }
    }

    async fn rebuild_aliases(
        &self,
        mut found: BoxStream<'_, Digests>,
        _options: &super::RebuildOptions,
    ) -> Result<AliasRebuild> {
        let mut report = AliasRebuild::default();
        while let Some(d) = found.next().await {
            let mut state = self.lock();
            report.indexed += 1;
            match state.aliases.digests(&BlobKey::new(d.sha512)) {
                None => report.added += 1,
                Some(had) if had != d => report.corrected += 1,
                Some(_) => {}
            }
            state.aliases.insert(&d);
        }
        let mut state = self.lock();
        let State { blobs, aliases } = &mut *state;
        report.removed = aliases.retain(|k| blobs.contains_key(k));
        Ok(report)
    }
}
