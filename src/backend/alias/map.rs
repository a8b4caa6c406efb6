//! The in-memory form of an alias index: sha1 and blake3 digests to the sha512 key, and each key's
//! recorded digests. Kept by the memory backend, and by the remote backends for the alias log
//! earlier versions wrote.

use std::collections::HashMap;

use crate::backend::BlobKey;
use crate::integrity::{Algorithm, Digests, Hash};

#[derive(Debug, Default)]
pub(crate) struct AliasMap {
    by_key: HashMap<BlobKey, Digests>,
    sha1: HashMap<[u8; 20], BlobKey>,
    blake3: HashMap<[u8; 32], BlobKey>,
}

impl AliasMap {
    pub(crate) fn insert(&mut self, d: &Digests) {
        let key = BlobKey::new(d.sha512);
        self.by_key.insert(key, *d);
        self.sha1.insert(d.sha1, key);
        self.blake3.insert(d.blake3, key);
    }

    /// The key whose sha1 or blake3 is `hash` (a sha512 hash is its own key).
    pub(crate) fn lookup(&self, hash: &Hash) -> Option<BlobKey> {
        match hash.algorithm() {
            Algorithm::Sha1 => <[u8; 20]>::try_from(hash.digest())
                .ok()
                .and_then(|d| self.sha1.get(&d).copied()),
            Algorithm::Blake3 => <[u8; 32]>::try_from(hash.digest())
                .ok()
                .and_then(|d| self.blake3.get(&d).copied()),
            Algorithm::Sha512 => BlobKey::from_hash(hash),
            _ => None,
        }
    }

    pub(crate) fn digests(&self, key: &BlobKey) -> Option<Digests> {
        self.by_key.get(key).copied()
    }

    /// Keeps only the records of keys for which `keep` holds; returns how many were dropped.
    #[cfg(feature = "memory")]
    pub(crate) fn retain(&mut self, keep: impl Fn(&BlobKey) -> bool) -> u64 {
        let before = self.by_key.len();
        self.by_key.retain(|k, _| keep(k));
        let by_key = &self.by_key;
        self.sha1.retain(|_, k| by_key.contains_key(k));
        self.blake3.retain(|_, k| by_key.contains_key(k));
        (before - self.by_key.len()) as u64
    }
}
