//! [`MemoryLedger`]: a cache tier's record of its local tier kept in memory, for local tiers that
//! cannot keep one beside their blobs (the memory backend, or any backend without
//! [`Backend::cache_ledger`](crate::backend::Backend::cache_ledger)). It holds a few dozen bytes
//! per blob, which a local tier held in memory dwarfs, and it starts empty in every process.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use crate::backend::ledger::micros;
use crate::backend::{BlobKey, CacheLedger};
use crate::Result;

/// Recency order in memory: each blob's size and time of last use, and the blobs by that time.
#[derive(Debug, Default)]
pub(super) struct MemoryLedger {
    lru: Mutex<Lru>,
}

#[derive(Debug, Default)]
struct Lru {
    entries: HashMap<BlobKey, (u64, i64)>,
    order: BTreeSet<(i64, BlobKey)>,
    bytes: u64,
    /// The last time given out: uses within one microsecond still come out in order.
    clock: i64,
    adopted: bool,
}

impl Lru {
    fn now(&mut self) -> i64 {
        self.clock = micros(SystemTime::now()).max(self.clock + 1);
        self.clock
    }

    fn set(&mut self, key: &BlobKey, size: u64, used: i64) {
        self.remove(key);
        self.entries.insert(*key, (size, used));
        self.order.insert((used, *key));
        self.bytes += size;
    }

    fn remove(&mut self, key: &BlobKey) {
        if let Some((size, used)) = self.entries.remove(key) {
            self.order.remove(&(used, *key));
            self.bytes -= size;
        }
    }
}

impl MemoryLedger {
    fn lru(&self) -> MutexGuard<'_, Lru> {
        // Every update leaves it consistent before anything that could panic.
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl CacheLedger for MemoryLedger {
    fn contains(&self, key: &BlobKey) -> Result<bool> {
        Ok(self.lru().entries.contains_key(key))
    }

    /// In memory, only this process fills: its stale flags cover the deletes, and `began` is
    /// not needed.
    fn insert_fill(&self, key: &BlobKey, size: u64, _began: i64) -> Result<bool> {
        let mut lru = self.lru();
        let now = lru.now();
        lru.set(key, size, now);
        Ok(true)
    }

    fn touch(&self, used: &[(BlobKey, u64)]) -> Result<()> {
        let mut lru = self.lru();
        for (key, size) in used {
            let size = lru.entries.get(key).map_or(*size, |(s, _)| *s);
            let now = lru.now();
            lru.set(key, size, now);
        }
        Ok(())
    }

    fn remove(&self, key: &BlobKey) -> Result<()> {
        self.lru().remove(key);
        Ok(())
    }

    fn evict_to(&self, capacity: u64, keep: Option<&BlobKey>) -> Result<Vec<BlobKey>> {
        let mut lru = self.lru();
        let mut victims = Vec::new();
        while lru.bytes > capacity {
            let Some(oldest) = lru.order.iter().map(|(_, k)| *k).find(|k| Some(k) != keep) else {
                break;
            };
            lru.remove(&oldest);
            victims.push(oldest);
        }
        Ok(victims)
    }

    fn totals(&self) -> Result<(u64, u64)> {
        let lru = self.lru();
        Ok((lru.bytes, lru.entries.len() as u64))
    }

    fn adopted(&self) -> Result<bool> {
        Ok(self.lru().adopted)
    }

    fn adopt(&self, found: &[(BlobKey, u64, Option<SystemTime>)]) -> Result<()> {
        let mut lru = self.lru();
        for (key, size, modified) in found {
            if !lru.entries.contains_key(key) {
                lru.set(key, *size, modified.map(micros).unwrap_or(0));
            }
        }
        Ok(())
    }

    fn set_adopted(&self) -> Result<()> {
        self.lru().adopted = true;
        Ok(())
    }
}
