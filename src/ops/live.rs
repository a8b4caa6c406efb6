//! The live set of a [`gc`](super::gc): the blob keys a keep file names, held in memory up to
//! [`IN_MEMORY`] keys (16 MiB of keys, some 40 MiB with the table around them) and in a temp
//! SQLite database beyond, so that collecting a store
//! of tens of millions of live blobs does not hold them all in memory. (Builds without SQLite,
//! that is without the `fs`, `server` and `migrate` features, hold every key in memory.)

use std::collections::HashSet;

use crate::backend::BlobKey;
use crate::Result;

/// Keys held in memory before the set moves to disk.
pub(crate) const IN_MEMORY: usize = 1 << 18;

/// A set of blob keys (see the [module documentation](self)).
pub(crate) struct LiveSet {
    memory: HashSet<BlobKey>,
    #[cfg_attr(
        not(any(feature = "fs", feature = "server", feature = "migrate")),
        allow(dead_code)
    )]
    limit: usize,
    #[cfg(any(feature = "fs", feature = "server", feature = "migrate"))]
    disk: Option<disk::Disk>,
}

impl LiveSet {
    /// An empty set that moves to disk once it holds more than `limit` keys.
    pub(crate) fn new(limit: usize) -> LiveSet {
        LiveSet {
            memory: HashSet::new(),
            limit,
            #[cfg(any(feature = "fs", feature = "server", feature = "migrate"))]
            disk: None,
        }
    }

    pub(crate) fn insert(&mut self, key: BlobKey) -> Result<()> {
        #[cfg(any(feature = "fs", feature = "server", feature = "migrate"))]
        {
            if let Some(d) = &mut self.disk {
                return d.insert(&key);
            }
            if self.memory.len() >= self.limit {
                let mut d = disk::Disk::new()?;
                for k in self.memory.drain() {
                    d.insert(&k)?;
                }
                self.memory = HashSet::new();
                d.insert(&key)?;
                self.disk = Some(d);
                return Ok(());
            }
        }
        self.memory.insert(key);
        Ok(())
    }

    /// Done inserting: what was inserted is visible to [`contains`](Self::contains).
    pub(crate) fn finish(&mut self) -> Result<()> {
        #[cfg(any(feature = "fs", feature = "server", feature = "migrate"))]
        if let Some(d) = &mut self.disk {
            d.commit()?;
        }
        Ok(())
    }

    pub(crate) fn contains(&self, key: &BlobKey) -> Result<bool> {
        #[cfg(any(feature = "fs", feature = "server", feature = "migrate"))]
        if let Some(d) = &self.disk {
            return d.contains(key);
        }
        Ok(self.memory.contains(key))
    }

    /// Distinct keys held.
    pub(crate) fn len(&self) -> u64 {
        #[cfg(any(feature = "fs", feature = "server", feature = "migrate"))]
        if let Some(d) = &self.disk {
            return d.len;
        }
        self.memory.len() as u64
    }

    /// Whether the set has moved to disk.
    #[cfg(test)]
    pub(crate) fn on_disk(&self) -> bool {
        #[cfg(any(feature = "fs", feature = "server", feature = "migrate"))]
        return self.disk.is_some();
        #[cfg(not(any(feature = "fs", feature = "server", feature = "migrate")))]
        false
    }
}

#[cfg(any(feature = "fs", feature = "server", feature = "migrate"))]
mod disk {
    use rusqlite::{params, Connection};

    use crate::backend::BlobKey;
    use crate::{Error, Result};

    /// Keys gathered, then sorted and inserted in one transaction (in key order, so each insert
    /// lands beside the last in the B-tree: 3-4x faster than in the order they come).
    const BATCH: usize = 65_536;

    /// The keys in a temp database (deleted with its directory).
    pub(super) struct Disk {
        dir: tempfile::TempDir,
        conn: Connection,
        pending: Vec<BlobKey>,
        pub(super) len: u64,
    }

    impl Disk {
        pub(super) fn new() -> Result<Disk> {
            let dir =
                tempfile::tempdir().map_err(|e| Error::io("create", std::env::temp_dir(), e))?;
            let path = dir.path().join("live.sqlite");
            let conn = Connection::open(&path)
                .and_then(|c| {
                    c.execute_batch(
                        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
                         PRAGMA cache_size = -65536;
                         CREATE TABLE live(key BLOB PRIMARY KEY) WITHOUT ROWID;",
                    )?;
                    Ok(c)
                })
                .map_err(|e| sql(&dir, e))?;
            Ok(Disk {
                dir,
                conn,
                pending: Vec::with_capacity(BATCH),
                len: 0,
            })
        }

        pub(super) fn insert(&mut self, key: &BlobKey) -> Result<()> {
            self.pending.push(*key);
            if self.pending.len() >= BATCH {
                self.commit()?;
            }
            Ok(())
        }

        /// Inserts the keys gathered.
        pub(super) fn commit(&mut self) -> Result<()> {
            self.pending.sort_unstable();
            self.pending.dedup();
            let tx = self.conn.transaction().map_err(|e| sql(&self.dir, e))?;
            {
                let mut q = tx
                    .prepare_cached("INSERT OR IGNORE INTO live VALUES (?1)")
                    .map_err(|e| sql(&self.dir, e))?;
                for key in &self.pending {
                    let added = q
                        .execute(params![key.as_bytes().as_slice()])
                        .map_err(|e| sql(&self.dir, e))?;
                    self.len += added as u64;
                }
            }
            tx.commit().map_err(|e| sql(&self.dir, e))?;
            self.pending.clear();
            Ok(())
        }

        pub(super) fn contains(&self, key: &BlobKey) -> Result<bool> {
            self.conn
                .prepare_cached("SELECT 1 FROM live WHERE key = ?1")
                .and_then(|mut q| q.exists(params![key.as_bytes().as_slice()]))
                .map_err(|e| sql(&self.dir, e))
        }
    }

    fn sql(dir: &tempfile::TempDir, e: rusqlite::Error) -> Error {
        Error::Index {
            path: dir.path().join("live.sqlite"),
            message: "cannot keep gc's live set in a temp database".into(),
            source: Some(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> BlobKey {
        let mut b = [0u8; 64];
        b[..4].copy_from_slice(&i.to_be_bytes());
        b[63] = 7;
        BlobKey::new(b)
    }

    #[test]
    fn a_set_past_its_limit_moves_to_disk_and_keeps_every_key() {
        let mut set = LiveSet::new(1000);
        for i in 0..5000 {
            set.insert(key(i)).expect("insert");
            if i % 3 == 0 {
                set.insert(key(i)).expect("again");
            }
        }
        set.finish().expect("finish");
        #[cfg(any(feature = "fs", feature = "server", feature = "migrate"))]
        assert!(set.on_disk());
        assert_eq!(set.len(), 5000);
        for i in 0..5000 {
            assert!(set.contains(&key(i)).expect("contains"), "{i}");
        }
        for i in 5000..5100 {
            assert!(!set.contains(&key(i)).expect("contains"), "{i}");
        }
        let small = LiveSet::new(1000);
        assert!(!small.on_disk());
    }
}
