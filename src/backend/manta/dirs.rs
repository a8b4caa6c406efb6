//! Parent directories, made on demand (`mkdir -p` with `application/json; type=directory`) and
//! remembered per process, so a warm store does one PUT per object. Shared by the blob writer, the
//! alias markers and the alias log's segments.
//!
//! A small object is PUT before its directories are known to exist, and the directories are made
//! only when Manta answers that one is missing: in a store of any size every shard directory
//! exists, and a fresh process (each CLI run) would otherwise pay a directory PUT per ancestor of
//! each shard it touches first, about a dozen round trips for a one-blob put. Large bodies make
//! their directories first, so that a missing one never costs a wasted upload.

use std::collections::HashSet;
use std::sync::Mutex;

use reqwest::header::HeaderMap;

use super::{api_error, layout, MantaClient, RequestBody};
use crate::Result;

/// Bodies up to this size are PUT before their directories are known to exist (a failed attempt
/// costs one round trip and at most this much upload).
const OPTIMISTIC_MAX: u64 = 1 << 20;

pub(crate) struct Dirs {
    client: MantaClient,
    /// Directories known to exist (created or seen).
    known: Mutex<HashSet<String>>,
}

impl Dirs {
    pub(crate) fn new(client: MantaClient) -> Self {
        Dirs {
            client,
            known: Mutex::new(HashSet::new()),
        }
    }

    fn is_known(&self, dir: &str) -> bool {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(dir)
    }

    fn remember(&self, dir: &str) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.to_string());
    }

    pub(crate) fn forget_all(&self) {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// `mkdir -p dir`: creates each missing ancestor below the account's top directory
    /// (`/<user>/stor`), skipping the ones already known.
    pub(crate) async fn ensure(&self, dir: &str) -> Result<()> {
        if self.is_known(dir) {
            return Ok(());
        }
        for path in layout::ancestors(dir) {
            if self.is_known(&path) {
                continue;
            }
            self.client.put_directory(&path).await?;
            self.remember(&path);
        }
        Ok(())
    }

    /// PUTs an object, creating its parent directories first if they are not known to exist and
    /// the body is large, and (for any body) once more after creating them if Manta says a parent
    /// is missing (not made yet, or removed behind our back).
    pub(crate) async fn put_with_parents(
        &self,
        path: &str,
        headers: HeaderMap,
        body: RequestBody,
    ) -> Result<HeaderMap> {
        let parent = layout::parent(path).to_string();
        let known = self.is_known(&parent);
        if !known && body.len() > OPTIMISTIC_MAX {
            self.ensure(&parent).await?;
        }
        match self
            .client
            .put_object(path, headers.clone(), body.clone())
            .await
        {
            Ok(reply) => {
                if !known {
                    // The parent exists, so every ancestor does.
                    for dir in layout::ancestors(&parent) {
                        self.remember(&dir);
                    }
                }
                Ok(reply)
            }
            Err(e) if missing(&e) => {
                tracing::debug!(path, "parent directory missing; making it");
                if known {
                    self.forget_all();
                }
                self.make_from_leaf(&parent).await?;
                self.client.put_object(path, headers, body).await
            }
            Err(e) => Err(e),
        }
    }

    /// Makes `dir` after a PUT into it found it missing. Usually only the shard directory itself
    /// is (its ancestors exist as soon as a store holds anything), so `dir` is made first, and
    /// its ancestors, outermost last, only while Manta says the parent of the one tried is
    /// missing too: one request in the common case instead of one per ancestor.
    async fn make_from_leaf(&self, dir: &str) -> Result<()> {
        let chain = layout::ancestors(dir);
        // The deepest directory made, or found to exist, by walking up.
        let mut made = chain.len();
        while made > 0 {
            match self.client.put_directory(&chain[made - 1]).await {
                Ok(()) => break,
                Err(e) if missing(&e) && made > 1 => made -= 1,
                Err(e) => return Err(e),
            }
        }
        for path in chain.iter().skip(made) {
            self.client.put_directory(path).await?;
        }
        for path in &chain {
            self.remember(path);
        }
        Ok(())
    }
}

/// Whether Manta said a directory on the way to the object is missing.
pub(crate) fn missing(e: &crate::Error) -> bool {
    api_error(e).is_some_and(|a| a.code == "DirectoryDoesNotExist")
}
