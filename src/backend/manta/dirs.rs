//! Parent directories, made on demand (`mkdir -p` with `application/json; type=directory`) and
//! remembered per process, so a warm store does one PUT per object. Shared by the blob writer, the
//! alias markers and the alias log's segments.
//!
//! A small object is PUT before its directories are known to exist, and the directories are made
//! only when Manta answers that one is missing: in a store of any size every shard directory
//! exists, and a fresh process (each CLI run) would otherwise pay a directory PUT per ancestor of
//! each shard it touches first, about a dozen round trips for a one-blob put. Large bodies make
//! their directories first, so that a missing one never costs a wasted upload.
//!
//! A young store is the other way round: most of its 4096 shard directories of each kind do not
//! exist yet, and a PUT into an unknown one is refused, then sent again once the directory is
//! made: three round trips, and the body sent twice. So each kind of shard (the directory that
//! holds them) keeps a score of what PUTs into unknown shards found, up one for a missing
//! directory and down one for an existing one, within ±[`SCORE_MAX`]: while it is above zero an
//! unknown shard is made first (two round trips), and every [`PROBE`]th such PUT still goes
//! first, so that the score comes back down once the store has grown its directories.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use reqwest::header::HeaderMap;

use super::{api_error, layout, MantaClient, RequestBody};
use crate::Result;

/// Bodies up to this size are PUT before their directories are known to exist (a failed attempt
/// costs one round trip and at most this much upload).
const OPTIMISTIC_MAX: u64 = 1 << 20;
/// How far a kind of shard's score goes either way: a store that has grown its directories is
/// recognised within this many PUTs that find one.
const SCORE_MAX: i32 = 16;
/// While shards are made first, every this-many-th PUT into an unknown shard is still tried
/// first, to see whether they exist by now.
const PROBE: u32 = 8;

pub(crate) struct Dirs {
    client: MantaClient,
    /// Directories known to exist (created or seen).
    known: Mutex<HashSet<String>>,
    /// Per kind of shard (the directory holding the shards): what PUTs into unknown shards
    /// found (see the module docs), and how many were made first since the last probe.
    young: Mutex<HashMap<String, (i32, u32)>>,
}

impl Dirs {
    pub(crate) fn new(client: MantaClient) -> Self {
        Dirs {
            client,
            known: Mutex::new(HashSet::new()),
            young: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a PUT into the unknown shard directory `dir` should make it first: its kind's
    /// score says most are missing, and this is not a probe.
    fn make_first(&self, dir: &str) -> bool {
        let mut young = self.young.lock().unwrap_or_else(|e| e.into_inner());
        let Some((score, since_probe)) = young.get_mut(layout::parent(dir)) else {
            return false;
        };
        if *score <= 0 {
            return false;
        }
        *since_probe += 1;
        if *since_probe >= PROBE {
            *since_probe = 0;
            return false;
        }
        true
    }

    /// Notes what a PUT into the unknown shard directory `dir` found.
    fn found(&self, dir: &str, missing: bool) {
        let mut young = self.young.lock().unwrap_or_else(|e| e.into_inner());
        let (score, _) = young.entry(layout::parent(dir).to_string()).or_default();
        *score = (*score + if missing { 1 } else { -1 }).clamp(-SCORE_MAX, SCORE_MAX);
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
        let mut known = self.is_known(&parent);
        if !known && (body.len() > OPTIMISTIC_MAX || self.make_first(&parent)) {
            self.ensure(&parent).await?;
            known = true;
        }
        match self
            .client
            .put_object(path, headers.clone(), body.clone())
            .await
        {
            Ok(reply) => {
                if !known {
                    self.found(&parent, false);
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
                } else {
                    self.found(&parent, true);
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
