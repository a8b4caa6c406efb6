//! The bounded in-process cache in front of a remote alias index ([`super::marker`]): what
//! lookups and puts learned (sha1, blake3 or sha512 → the blob's digests), and recent misses.
//!
//! Why bounded: the index it fronts holds every blob's aliases, so a process that kept all it saw
//! (as the segment log did) grows with the store, and a migrator grows with every put. Here the
//! hits live in two generations, each a hash table of fixed capacity taking at most half the byte
//! budget: entries go into the young one, a hit in the old one moves to the young one, and when
//! the young one is full the old one is emptied and the two swap. That is LRU to within a factor
//! of two, with no per-entry list to maintain and no crate beyond the standard `HashMap`. The
//! tables are sized once (to a power of two of buckets, as the table allocates them) and reused,
//! never dropped and reallocated: a 200k-entry run that dropped the old table instead measured
//! 72 MB of RSS for a cache of 26 MB by count, the allocator keeping the freed tables.
//!
//! Misses are remembered for at most [`CacheConfig::miss_ttl`] (default 1 s) and at most
//! [`MISSES_MAX`] of them, so a burst of lookups of one unknown tarball costs one request, yet a
//! blob another process puts is found at most `miss_ttl` after its put returned. A put in this
//! process forgets its own misses at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::backend::BlobKey;
use crate::integrity::{Algorithm, Digests, Hash};

/// Default byte budget of the hit cache.
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;
/// Default time a miss is remembered.
pub const DEFAULT_MISS_TTL: Duration = Duration::from_secs(1);
/// Misses remembered at most (a few hundred KiB).
pub(crate) const MISSES_MAX: usize = 4096;

/// What a remote alias index may keep in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bytes the cached aliases may take (estimated per entry, hash table overhead included).
    pub bytes: usize,
    /// How long a lookup that found nothing is answered from memory; zero turns it off.
    pub miss_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            bytes: DEFAULT_CACHE_BYTES,
            miss_ttl: DEFAULT_MISS_TTL,
        }
    }
}

/// An algorithm tag and up to 64 digest bytes (zero-padded).
type CacheKey = (u8, [u8; 64]);

/// Bytes per bucket of a table: key and value, plus the table's control byte.
const BUCKET_BYTES: usize = std::mem::size_of::<(CacheKey, Digests)>() + 1;

fn cache_key(alg: Algorithm, digest: &[u8]) -> Option<CacheKey> {
    let tag = match alg {
        Algorithm::Sha1 => 1,
        Algorithm::Blake3 => 2,
        Algorithm::Sha512 => 3,
        _ => return None,
    };
    let mut k = [0u8; 64];
    k.get_mut(..digest.len())?.copy_from_slice(digest);
    Some((tag, k))
}

/// The cache (not itself locked: the index holds it in a mutex).
#[derive(Debug)]
pub(crate) struct AliasCache {
    config: CacheConfig,
    young: HashMap<CacheKey, Digests>,
    old: HashMap<CacheKey, Digests>,
    misses: HashMap<CacheKey, Instant>,
}

impl AliasCache {
    pub(crate) fn new(config: CacheConfig) -> Self {
        AliasCache {
            config,
            young: HashMap::new(),
            old: HashMap::new(),
            misses: HashMap::new(),
        }
    }

    /// Buckets of one generation's table: the largest power of two within half the budget (the
    /// table allocates a power of two of buckets, and fills them to 7/8).
    fn buckets(&self) -> usize {
        let fit = self.config.bytes / 2 / BUCKET_BYTES;
        if fit < 8 {
            0
        } else {
            1 << fit.ilog2()
        }
    }

    /// Entries one generation holds.
    fn generation_max(&self) -> usize {
        self.buckets() / 8 * 7
    }

    fn put(&mut self, k: CacheKey, d: Digests) {
        let max = self.generation_max();
        if max == 0 {
            return;
        }
        if self.young.len() >= max && !self.young.contains_key(&k) {
            self.old.clear();
            std::mem::swap(&mut self.young, &mut self.old);
        }
        if self.young.capacity() < max {
            // Once, to its full size, so it never grows by doubling past it.
            self.young.reserve(max - self.young.len());
        }
        self.young.insert(k, d);
    }

    /// Remembers a blob's aliases (and forgets any miss of them).
    pub(crate) fn insert(&mut self, d: &Digests) {
        self.insert_named(d, true, true);
    }

    /// Remembers a blob by its key, and by its sha1 and blake3 digests where `sha1` and `blake3`
    /// say their markers name it: a put that kept a marker naming another blob (two blobs sharing
    /// that digest) must not find its own blob by it where every other process finds the other.
    /// Any miss of them is forgotten either way: their markers exist.
    pub(crate) fn insert_named(&mut self, d: &Digests, sha1: bool, blake3: bool) {
        for (alg, digest, named) in [
            (Algorithm::Sha1, &d.sha1[..], sha1),
            (Algorithm::Blake3, &d.blake3[..], blake3),
            (Algorithm::Sha512, &d.sha512[..], true),
        ] {
            if let Some(k) = cache_key(alg, digest) {
                self.misses.remove(&k);
                if named {
                    self.put(k, *d);
                }
            }
        }
    }

    /// The digests of the blob whose `hash` this is, if cached.
    pub(crate) fn get(&mut self, hash: &Hash) -> Option<Digests> {
        let k = cache_key(hash.algorithm(), hash.digest())?;
        if let Some(d) = self.young.get(&k) {
            return Some(*d);
        }
        let d = self.old.remove(&k)?;
        self.put(k, d);
        Some(d)
    }

    /// The digests of a blob by its key, if cached.
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub(crate) fn by_key(&mut self, key: &BlobKey) -> Option<Digests> {
        self.get(&Hash::new_unchecked(Algorithm::Sha512, key.as_bytes()))
    }

    /// Whether `hash` missed less than the miss TTL ago.
    pub(crate) fn missed(&mut self, hash: &Hash) -> bool {
        let Some(k) = cache_key(hash.algorithm(), hash.digest()) else {
            return false;
        };
        match self.misses.get(&k) {
            Some(at) if at.elapsed() < self.config.miss_ttl => true,
            Some(_) => {
                self.misses.remove(&k);
                false
            }
            None => false,
        }
    }

    /// Notes that `hash` missed at `asked` (when the lookup began: a put that returned after that
    /// may not be seen, so the TTL counts from there).
    pub(crate) fn note_miss(&mut self, hash: &Hash, asked: Instant) {
        if self.config.miss_ttl.is_zero() {
            return;
        }
        let Some(k) = cache_key(hash.algorithm(), hash.digest()) else {
            return;
        };
        if self.misses.len() >= MISSES_MAX {
            let ttl = self.config.miss_ttl;
            self.misses.retain(|_, at| at.elapsed() < ttl);
            if self.misses.len() >= MISSES_MAX {
                self.misses.clear();
            }
        }
        self.misses.insert(k, asked);
    }

    /// Bytes the tables of hits take (for tests and benchmarks): their buckets, whether full or
    /// not.
    #[cfg_attr(not(any(test, feature = "s3")), allow(dead_code))]
    pub(crate) fn bytes(&self) -> usize {
        let table = |m: &HashMap<CacheKey, Digests>| {
            if m.capacity() == 0 {
                0
            } else {
                (m.capacity() * 8 / 7).next_power_of_two() * BUCKET_BYTES
            }
        };
        table(&self.young) + table(&self.old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(i: u32) -> Digests {
        let b = i.to_le_bytes();
        let d = |n: usize| -> Vec<u8> { b.iter().copied().cycle().take(n).collect() };
        Digests::from_parts(&d(64), &d(20), &d(32), u64::from(i)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn stays_within_its_budget_and_keeps_what_is_used() {
        let mut c = AliasCache::new(CacheConfig {
            bytes: 64 * 1024,
            miss_ttl: DEFAULT_MISS_TTL,
        });
        let hot = digests(0);
        c.insert(&hot);
        for i in 1..10_000 {
            c.insert(&digests(i));
            // A blob looked up often stays.
            assert!(c
                .get(&Hash::new_unchecked(Algorithm::Sha1, &hot.sha1))
                .is_some());
            assert!(c.bytes() <= 64 * 1024, "{} bytes cached", c.bytes());
        }
        assert!(c.by_key(&BlobKey::new(digests(1).sha512)).is_none());
        assert_eq!(
            c.by_key(&BlobKey::new(digests(9_999).sha512)),
            Some(digests(9_999))
        );
    }

    #[test]
    fn misses_expire_and_a_put_forgets_them() {
        let mut c = AliasCache::new(CacheConfig {
            bytes: 1 << 20,
            miss_ttl: Duration::from_millis(50),
        });
        let d = digests(3);
        let h = Hash::new_unchecked(Algorithm::Blake3, &d.blake3);
        c.note_miss(&h, Instant::now());
        assert!(c.missed(&h));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!c.missed(&h));
        c.note_miss(&h, Instant::now());
        c.insert(&d);
        assert!(!c.missed(&h));
        for i in 0..(MISSES_MAX as u32 * 2) {
            c.note_miss(
                &Hash::new_unchecked(Algorithm::Sha1, &digests(i).sha1),
                Instant::now(),
            );
        }
        assert!(c.misses.len() <= MISSES_MAX);
    }
}
