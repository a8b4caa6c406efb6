//! The in-memory form of an alias index: sha1 and blake3 digests to the sha512 key, and each key's
//! recorded digests. Shared by the backends that keep their index in memory (memory, and the fs
//! backend's cache of its alias log).

use std::collections::HashMap;

use super::BlobKey;
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

/// One record in the text form the alias logs share (fs log file, object-store segments):
/// `v1 <sha512 hex> <sha1 hex> <blake3 hex> <size>\n`.
pub(crate) fn line(d: &Digests) -> String {
    format!(
        "v1 {} {} {} {}\n",
        d.sha512_hex(),
        d.shasum(),
        d.blake3_hex(),
        d.size
    )
}

/// Parses one record line. It looks for the last `v1 `, so a torn line glued to the next costs only
/// itself; anything malformed is `None`.
pub(crate) fn parse_line(raw: &[u8]) -> Option<Digests> {
    let text = std::str::from_utf8(raw).ok()?;
    let start = text.rfind("v1 ")?;
    let mut fields = text[start + 3..].split(' ');
    let sha512 = hex::decode(fields.next()?).ok()?;
    let sha1 = hex::decode(fields.next()?).ok()?;
    let blake3 = hex::decode(fields.next()?).ok()?;
    let size = fields.next()?.trim().parse().ok()?;
    if fields.next().is_some() {
        return None;
    }
    Digests::from_parts(&sha512, &sha1, &blake3, size).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_lines_cost_only_themselves() {
        let d =
            Digests::from_parts(&[1; 64], &[2; 20], &[3; 32], 7).unwrap_or_else(|e| panic!("{e}"));
        let good = line(&d);
        let torn = &good[..50];
        let glued = format!("{torn}{good}");
        assert_eq!(parse_line(glued.trim_end().as_bytes()), Some(d));
        assert_eq!(parse_line(torn.as_bytes()), None);
    }
}
