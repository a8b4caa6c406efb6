//! A set of blob keys, each with a mask of 64 bits, held in memory up to a limit and in a temp
//! SQLite database beyond it, for whole-store operations whose sets grow with the store: a
//! repair's census of which replicas list each blob
//! ([`Replicated::repair`](super::compose::Replicated::repair)), gc's live set
//! ([`crate::ops::gc`]), the keys a copy has taken from its source ([`crate::ops::copy`]).
//!
//! Held in memory, such sets cost a repair some 12 GB at 40M blobs and three replicas, and a gc
//! as much for its live set. On disk they are fed in sorted batches (each insert beside the last in
//! the B-tree) and read back by key or a page at a time in key order, so memory stays flat.
//! (Every feature that can walk a large store turns on `sqlite` for this; a build of the memory
//! or http backend alone holds every key in memory.)

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::backend::BlobKey;
use crate::integrity::Algorithm;
use crate::Result;

/// Keys held in memory before a table moves to disk (16 MiB of keys).
pub(crate) const IN_MEMORY: usize = 1 << 18;

/// A sha1 or blake3 digest as a key of a table (a remote index's sweep, gc's unresolved live
/// aliases): the algorithm's tag, then the digest, zero-padded to a key's 64 bytes.
pub(crate) fn alias_key(alg: Algorithm, digest: &[u8]) -> BlobKey {
    let mut k = [0u8; 64];
    k[0] = if alg == Algorithm::Sha1 { 1 } else { 2 };
    let n = digest.len().min(63);
    k[1..=n].copy_from_slice(&digest[..n]);
    BlobKey::new(k)
}

/// See the [module documentation](self).
pub(crate) struct KeyTable {
    memory: BTreeMap<BlobKey, u64>,
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    limit: usize,
    #[cfg(feature = "sqlite")]
    disk: Option<disk::Disk>,
}

impl KeyTable {
    /// An empty table that moves to disk past `limit` keys.
    pub(crate) fn new(limit: usize) -> KeyTable {
        KeyTable {
            memory: BTreeMap::new(),
            limit,
            #[cfg(feature = "sqlite")]
            disk: None,
        }
    }

    /// Adds `key` with the bits of `mask` (or-ed into those it has).
    pub(crate) fn note(&mut self, key: BlobKey, mask: u64) -> Result<()> {
        #[cfg(feature = "sqlite")]
        {
            if let Some(d) = &mut self.disk {
                return d.note(key, mask);
            }
            if self.memory.len() >= self.limit && !self.memory.contains_key(&key) {
                let mut d = disk::Disk::new()?;
                for (k, mask) in std::mem::take(&mut self.memory) {
                    d.note(k, mask)?;
                }
                d.note(key, mask)?;
                self.disk = Some(d);
                return Ok(());
            }
        }
        *self.memory.entry(key).or_default() |= mask;
        Ok(())
    }

    /// Done noting: everything noted is visible to [`page`](Self::page) and
    /// [`contains`](Self::contains).
    pub(crate) fn finish(&mut self) -> Result<()> {
        #[cfg(feature = "sqlite")]
        if let Some(d) = &mut self.disk {
            d.flush()?;
        }
        Ok(())
    }

    /// Distinct keys noted.
    pub(crate) fn len(&self) -> Result<u64> {
        #[cfg(feature = "sqlite")]
        if let Some(d) = &self.disk {
            return d.len();
        }
        Ok(self.memory.len() as u64)
    }

    /// Whether `key` was noted (since [`finish`](Self::finish), or before it).
    pub(crate) fn contains(&self, key: &BlobKey) -> Result<bool> {
        #[cfg(feature = "sqlite")]
        if let Some(d) = &self.disk {
            return d.contains(key);
        }
        Ok(self.memory.contains_key(key))
    }

    /// The mask of `key`, if it was noted: a value kept with the key (copy keeps a target's listed
    /// size).
    pub(crate) fn mask_of(&self, key: &BlobKey) -> Result<Option<u64>> {
        #[cfg(feature = "sqlite")]
        if let Some(d) = &self.disk {
            return d.mask_of(key);
        }
        Ok(self.memory.get(key).copied())
    }

    /// Notes `key` (mask 1) unless it was noted already: whether it is new. For a listing that may
    /// give a key twice (copy's source), whose keys are each to be taken once.
    pub(crate) fn first_sight(&mut self, key: BlobKey) -> Result<bool> {
        if self.contains(&key)? {
            return Ok(false);
        }
        self.note(key, 1)?;
        Ok(true)
    }

    /// Whether the table has moved to disk.
    #[cfg(test)]
    pub(crate) fn on_disk(&self) -> bool {
        #[cfg(feature = "sqlite")]
        return self.disk.is_some();
        #[cfg(not(feature = "sqlite"))]
        false
    }

    /// Up to `n` keys after `after` (from the first if `None`), in key order, with their masks.
    pub(crate) fn page(&self, after: Option<&BlobKey>, n: usize) -> Result<Vec<(BlobKey, u64)>> {
        #[cfg(feature = "sqlite")]
        if let Some(d) = &self.disk {
            return d.page(after, n);
        }
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(self
            .memory
            .range((from, Bound::Unbounded))
            .take(n)
            .map(|(k, m)| (*k, *m))
            .collect())
    }
}

#[cfg(feature = "sqlite")]
mod disk {
    use std::collections::BTreeMap;

    use rusqlite::{params, Connection};

    use crate::backend::BlobKey;
    use crate::{Error, Result};

    /// Notes gathered, then written in key order in one transaction.
    const BATCH: usize = 65_536;

    pub(super) struct Disk {
        dir: tempfile::TempDir,
        conn: Connection,
        /// Notes not yet written, by key (so that `contains` sees them too).
        pending: BTreeMap<BlobKey, u64>,
    }

    impl Disk {
        pub(super) fn new() -> Result<Disk> {
            let dir =
                tempfile::tempdir().map_err(|e| Error::io("create", std::env::temp_dir(), e))?;
            let conn = Connection::open(dir.path().join("keys.sqlite"))
                .and_then(|c| {
                    c.execute_batch(
                        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
                         PRAGMA cache_size = -65536;
                         CREATE TABLE seen(key BLOB PRIMARY KEY, mask INTEGER NOT NULL)
                             WITHOUT ROWID;",
                    )?;
                    Ok(c)
                })
                .map_err(|e| sql(&dir, e))?;
            Ok(Disk {
                dir,
                conn,
                pending: BTreeMap::new(),
            })
        }

        pub(super) fn note(&mut self, key: BlobKey, mask: u64) -> Result<()> {
            *self.pending.entry(key).or_default() |= mask;
            if self.pending.len() >= BATCH {
                self.flush()?;
            }
            Ok(())
        }

        pub(super) fn flush(&mut self) -> Result<()> {
            let tx = self.conn.transaction().map_err(|e| sql(&self.dir, e))?;
            {
                let mut q = tx
                    .prepare_cached(
                        "INSERT INTO seen VALUES (?1, ?2)
                         ON CONFLICT(key) DO UPDATE SET mask = mask | excluded.mask",
                    )
                    .map_err(|e| sql(&self.dir, e))?;
                for (key, mask) in &self.pending {
                    q.execute(params![key.as_bytes().as_slice(), *mask as i64])
                        .map_err(|e| sql(&self.dir, e))?;
                }
            }
            tx.commit().map_err(|e| sql(&self.dir, e))?;
            self.pending.clear();
            Ok(())
        }

        pub(super) fn contains(&self, key: &BlobKey) -> Result<bool> {
            if self.pending.contains_key(key) {
                return Ok(true);
            }
            Ok(self.mask_of(key)?.is_some())
        }

        /// A key's mask: in the pending batch, or-ed with the table's (a batch not yet written
        /// holds only what was noted since the last).
        pub(super) fn mask_of(&self, key: &BlobKey) -> Result<Option<u64>> {
            use rusqlite::OptionalExtension;
            let pending = self.pending.get(key).copied();
            let written = self
                .conn
                .prepare_cached("SELECT mask FROM seen WHERE key = ?1")
                .and_then(|mut q| {
                    q.query_row(params![key.as_bytes().as_slice()], |r| r.get::<_, i64>(0))
                        .optional()
                })
                .map_err(|e| sql(&self.dir, e))?
                .map(|m| m as u64);
            Ok(match (pending, written) {
                (None, None) => None,
                (p, w) => Some(p.unwrap_or(0) | w.unwrap_or(0)),
            })
        }

        pub(super) fn len(&self) -> Result<u64> {
            self.conn
                .query_row("SELECT count(*) FROM seen", [], |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
                .map_err(|e| sql(&self.dir, e))
        }

        pub(super) fn page(
            &self,
            after: Option<&BlobKey>,
            n: usize,
        ) -> Result<Vec<(BlobKey, u64)>> {
            let after: &[u8] = after.map_or(&[], |k| k.as_bytes().as_slice());
            let mut q = self
                .conn
                .prepare_cached("SELECT key, mask FROM seen WHERE key > ?1 ORDER BY key LIMIT ?2")
                .map_err(|e| sql(&self.dir, e))?;
            let rows = q
                .query_map(params![after, n as i64], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(|e| sql(&self.dir, e))?;
            let mut out = Vec::with_capacity(n);
            for row in rows {
                let (key, mask) = row.map_err(|e| sql(&self.dir, e))?;
                let key = <[u8; 64]>::try_from(key.as_slice()).map_err(|_| {
                    Error::InvalidInput("a key of the temp table is not 64 bytes".into())
                })?;
                out.push((BlobKey::new(key), mask as u64));
            }
            Ok(out)
        }
    }

    fn sql(dir: &tempfile::TempDir, e: rusqlite::Error) -> Error {
        Error::Index {
            path: dir.path().join("keys.sqlite"),
            message: "cannot keep a set of blob keys in a temp database".into(),
            source: Some(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> BlobKey {
        let mut b = [0u8; 64];
        b[..4].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
        b[60..].copy_from_slice(&i.to_be_bytes());
        BlobKey::new(b)
    }

    /// Three replicas' listings, past the in-memory limit: every key once, in key order, with the
    /// mask of the replicas that listed it, whatever the page size; and each found by `contains`.
    #[test]
    fn a_table_past_its_limit_pages_every_key_in_order_with_its_mask() {
        let mut c = KeyTable::new(500);
        let holds = |i: u32, r: usize| !(i + r as u32).is_multiple_of(3) || i.is_multiple_of(7);
        for r in 0..3 {
            for i in 0..3000 {
                if holds(i, r) {
                    c.note(key(i), 1 << r).expect("note");
                }
            }
        }
        c.finish().expect("finish");
        #[cfg(feature = "sqlite")]
        assert!(c.on_disk());
        assert!(!KeyTable::new(500).on_disk());
        assert_eq!(c.len().expect("len"), 3000);
        for i in 0..3100 {
            assert_eq!(c.contains(&key(i)).expect("contains"), i < 3000, "{i}");
        }
        let mut want: Vec<(BlobKey, u64)> = (0..3000)
            .map(|i| {
                let mask = (0..3).filter(|&r| holds(i, r)).map(|r| 1u64 << r).sum();
                (key(i), mask)
            })
            .collect();
        want.sort();
        for n in [1, 7, 1000, 5000] {
            let mut got = Vec::new();
            let mut after = None;
            loop {
                let page = c.page(after.as_ref(), n).expect("page");
                let Some(last) = page.last() else { break };
                after = Some(last.0);
                got.extend(page);
            }
            assert_eq!(got, want, "pages of {n}");
        }
    }

    /// `mask_of` gives a key's mask in memory, and on disk whether it is written or still waits in
    /// a batch, or-ed across both (copy keeps sizes as masks, and a size seen twice must stay one).
    #[test]
    fn mask_of_is_the_key_s_mask_wherever_it_is_kept() {
        let mut c = KeyTable::new(100);
        for i in 0..50 {
            c.note(key(i), 1000 + u64::from(i)).expect("note");
        }
        assert_eq!(c.mask_of(&key(7)).expect("mask"), Some(1007));
        for i in 50..300 {
            c.note(key(i), 1000 + u64::from(i)).expect("note");
        }
        c.finish().expect("finish");
        c.note(key(7), 1007).expect("again, the same");
        c.note(key(8), 1 << 40).expect("again, another");
        for i in 0..310 {
            let want = match i {
                8 => Some(1008 | 1 << 40),
                300.. => None,
                _ => Some(1000 + u64::from(i)),
            };
            assert_eq!(c.mask_of(&key(i)).expect("mask"), want, "{i}");
        }
    }

    /// `first_sight` takes each key once, past the in-memory limit too, where keys wait in a
    /// batch before they are written: a key seen again before its batch is written is not new.
    #[test]
    fn first_sight_is_true_once_per_key() {
        let mut c = KeyTable::new(50);
        for round in 0..2 {
            for i in 0..300 {
                assert_eq!(
                    c.first_sight(key(i)).expect("note"),
                    round == 0,
                    "{round} {i}"
                );
                assert!(!c.first_sight(key(i)).expect("again"), "{round} {i}");
            }
        }
        #[cfg(feature = "sqlite")]
        assert!(c.on_disk());
        c.finish().expect("finish");
        assert_eq!(c.len().expect("len"), 300);
    }
}
