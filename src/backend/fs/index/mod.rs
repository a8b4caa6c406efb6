//! The index of a filesystem store: which blob has a given sha1 or blake3 digest, and the digests
//! and size recorded for each blob when it was verified on its way in.
//!
//! It is one SQLite database in WAL mode, `index/blobs.sqlite`, that every process using the store
//! opens at once (see `docs/index.md` for why SQLite and not LMDB or a file format of our own).
//! Nothing is loaded: a lookup reads three or four pages of a B-tree, so its cost and the memory a
//! process needs do not grow with the number of blobs. A commit is visible to every process as soon
//! as it returns.
//!
//! The index is a cache of what the blobs themselves say, kept consistent by ordering: an entry is
//! written only after its blob is linked into place (and only if it is still there, decided under
//! the write lock), and removed under the write lock either after its blob is seen to be gone or
//! in the same transaction that moves the blob away to be deleted. So a crash never leaves an
//! entry for a missing blob (a delete cut short is settled when the store is next opened), and at
//! worst leaves a blob without an entry, which `fsck` finds and indexes.

mod cache_ledger;
mod conn;
pub(crate) mod legacy;
mod remove;
mod replaced;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

pub use self::cache_ledger::FsCacheLedger;
use self::conn::Mode;
pub(crate) use self::remove::Take;
use crate::backend::wal_checkpoint::Forced;
use crate::backend::BlobKey;
use crate::integrity::{Algorithm, Digests, Hash};
use crate::{Error, Result};

/// Why a write transaction's body stopped: the database, or a step of the caller's own (which
/// rolls the transaction back just the same).
enum TxError {
    Db(rusqlite::Error),
    Step(Error),
}

impl From<rusqlite::Error> for TxError {
    fn from(e: rusqlite::Error) -> Self {
        TxError::Db(e)
    }
}

/// Idle read connections a process keeps (each with its own small page cache).
const MAX_IDLE_READERS: usize = 16;

/// What [`FsIndex::insert`] did with the records it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexMerge {
    /// Records that were not in the index.
    pub added: u64,
    /// Records that were there with other digests or size, now corrected.
    pub corrected: u64,
    /// Records that were there already, as given.
    pub unchanged: u64,
}

/// The sha1/blake3 index of a filesystem store, shared by every process that opens the store.
///
/// Usually reached through [`FsBackend`](super::FsBackend); public so that tools and benchmarks
/// can use it directly.
///
/// ```
/// # fn main() -> tarvault::Result<()> {
/// use tarvault::backend::fs::FsIndex;
/// use tarvault::Digests;
///
/// let dir = tempfile::tempdir().map_err(tarvault::Error::from_io)?;
/// let index = FsIndex::open(dir.path().join("blobs.sqlite"))?;
/// let d = Digests::from_parts(&[7; 64], &[1; 20], &[2; 32], 5)?;
/// index.insert(&[d], true)?;
/// assert_eq!(index.key_by_sha1(&[1; 20])?.map(|k| *k.as_bytes()), Some([7; 64]));
/// assert_eq!(index.digests(&tarvault::backend::BlobKey::new([7; 64]))?, Some(d));
/// # Ok(())
/// # }
/// ```
pub struct FsIndex {
    path: PathBuf,
    /// Whether a new database file is made durable before it is used (the store's `fsync`).
    durable: bool,
    /// The open database, once something needed it.
    db: Mutex<Option<Arc<Db>>>,
}

impl std::fmt::Debug for FsIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsIndex").field("path", &self.path).finish()
    }
}

struct Db {
    mode: Mode,
    /// The file (device, inode) it was opened on, where that can be told: `fsck` may set a
    /// damaged file aside and a new one take its name (see `replaced.rs`).
    file: Option<(u64, u64)>,
    readers: Mutex<Vec<Connection>>,
    /// The one connection this process writes through (writes are serialised by SQLite anyway),
    /// with whether it currently commits with `synchronous=FULL`, and its forced checkpoints.
    writer: Mutex<Option<(Connection, bool, Forced)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a push, a pop or a take: a panic cannot leave a half-update.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FsIndex {
    /// Opens (creating if needed) the index database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<FsIndex> {
        let index = FsIndex::lazy(path.as_ref().to_path_buf(), true);
        index.db()?;
        Ok(index)
    }

    /// An index opened on first use, so that a store whose index is damaged can still be opened
    /// (and repaired by `fsck`). `durable`: a new database file is on disk before it is used.
    pub(crate) fn lazy(path: PathBuf, durable: bool) -> FsIndex {
        FsIndex {
            path,
            durable,
            db: Mutex::new(None),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self) -> Result<Arc<Db>> {
        let mut slot = lock(&self.db);
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        let (conn, mode) = conn::open(&self.path, self.durable)?;
        let file = replaced::identity(&self.path);
        if mode != Mode::ReadWrite {
            tracing::info!(index = %self.path.display(), ?mode, "store not writable: index opened for lookups only");
        }
        let db = Arc::new(Db {
            mode,
            file,
            readers: Mutex::new(vec![conn]),
            writer: Mutex::new(None),
        });
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Runs a read on a pooled connection.
    fn read<T>(&self, op: &str, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let db = self.db()?;
        let conn = lock(&db.readers).pop();
        let conn = match conn {
            Some(c) => c,
            None => conn::connect(&self.path, db.mode)?,
        };
        let out = f(&conn);
        let mut idle = lock(&db.readers);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        drop(idle);
        out.map_err(|e| conn::error(&self.path, op, e))
    }

    /// Runs `f` in one write transaction (taking the write lock first, so that it sees the latest
    /// state and nobody else writes meanwhile). With `durable`, the commit is on disk on return;
    /// without, it is visible to every process at once and made durable by the next flush of the
    /// filesystem (the caller's `syncfs`) or the next durable commit.
    fn write<T>(
        &self,
        op: &str,
        durable: bool,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> std::result::Result<T, TxError>,
    ) -> Result<T> {
        let db = self.db()?;
        if db.mode != Mode::ReadWrite {
            return Err(Error::Index {
                path: self.path.clone(),
                message: format!("{op}: the store is not writable by this process"),
                source: None,
            });
        }
        let mut slot = lock(&db.writer);
        if slot.is_none() {
            let conn = conn::connect(&self.path, Mode::ReadWrite)?;
            *slot = Some((conn, false, Forced::default()));
        }
        let Some((conn, full, forced)) = slot.as_mut() else {
            return Err(Error::InvalidInput("index writer vanished".into()));
        };
        let run = || -> std::result::Result<T, TxError> {
            if *full != durable {
                conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })?;
                *full = durable;
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            // Readers in other processes can starve the automatic checkpoint (see `wal_checkpoint`).
            forced.after_commit(conn, &self.path, conn::BUSY_TIMEOUT);
            Ok(out)
        };
        run().map_err(|e| match e {
            TxError::Db(e) => conn::error(&self.path, op, e),
            TxError::Step(e) => e,
        })
    }

    /// Records the digests of committed blobs (each blob once; a record that disagrees with the
    /// one given is corrected). With `durable` the records are on disk on return; without, they are
    /// visible to every process at once and made durable by the next flush of the filesystem.
    pub fn insert(&self, records: &[Digests], durable: bool) -> Result<IndexMerge> {
        self.insert_present(records, durable, |_| true)
    }

    /// [`insert`](Self::insert), skipping the records of blobs for which `present` fails, decided
    /// under the write lock: a blob a concurrent delete has taken away (see
    /// [`remove_taking`](Self::remove_taking)) is not recorded again. Skipped records count in
    /// none of the merge's figures.
    pub(crate) fn insert_present(
        &self,
        records: &[Digests],
        durable: bool,
        present: impl Fn(&BlobKey) -> bool,
    ) -> Result<IndexMerge> {
        if records.is_empty() {
            return Ok(IndexMerge::default());
        }
        self.write("record blobs", durable, |tx| {
            let mut merge = IndexMerge::default();
            let mut find = tx.prepare_cached(
                "SELECT id, sha1, blake3, size FROM blobs \
                 WHERE substr(sha512, 1, 8) = ?1 AND sha512 = ?2",
            )?;
            let mut add = tx.prepare_cached(
                "INSERT INTO blobs(sha512, sha1, blake3, size) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut fix = tx.prepare_cached(
                "UPDATE blobs SET sha1 = ?2, blake3 = ?3, size = ?4 WHERE id = ?1",
            )?;
            for d in records {
                if !present(&BlobKey::new(d.sha512)) {
                    continue;
                }
                let found = find
                    .query_row((&d.sha512[..8], &d.sha512[..]), |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, Vec<u8>>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    })
                    .optional()?;
                let size = size_to_sql(d.size);
                match found {
                    None => {
                        add.execute((&d.sha512[..], &d.sha1[..], &d.blake3[..], size))?;
                        merge.added += 1;
                    }
                    Some((id, sha1, blake3, was))
                        if sha1 != d.sha1 || blake3 != d.blake3 || was != size =>
                    {
                        fix.execute((id, &d.sha1[..], &d.blake3[..], size))?;
                        merge.corrected += 1;
                    }
                    Some(_) => merge.unchanged += 1,
                }
            }
            Ok(merge)
        })
    }

    /// The blob whose sha1 is `sha1`, if the index has it.
    pub fn key_by_sha1(&self, sha1: &[u8; 20]) -> Result<Option<BlobKey>> {
        self.key_by(
            "SELECT sha512 FROM blobs WHERE substr(sha1, 1, 8) = ?1 AND sha1 = ?2",
            sha1,
        )
    }

    /// The blob whose blake3 is `blake3`, if the index has it.
    pub fn key_by_blake3(&self, blake3: &[u8; 32]) -> Result<Option<BlobKey>> {
        self.key_by(
            "SELECT sha512 FROM blobs WHERE substr(blake3, 1, 8) = ?1 AND blake3 = ?2",
            blake3,
        )
    }

    fn key_by(&self, sql: &str, digest: &[u8]) -> Result<Option<BlobKey>> {
        let found = self.look_up(|| {
            self.read("look up", |conn| {
                conn.prepare_cached(sql)?
                    .query_row((&digest[..8], digest), |r| r.get::<_, Vec<u8>>(0))
                    .optional()
            })
        })?;
        Ok(found.and_then(|k| <[u8; 64]>::try_from(k).ok().map(BlobKey::new)))
    }

    /// The blob a sha1 or blake3 hash names (a sha512 hash is its own key; other algorithms name
    /// nothing).
    pub fn resolve(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        match hash.algorithm() {
            Algorithm::Sha512 => Ok(BlobKey::from_hash(hash)),
            Algorithm::Sha1 => match <&[u8; 20]>::try_from(hash.digest()) {
                Ok(d) => self.key_by_sha1(d),
                Err(_) => Ok(None),
            },
            Algorithm::Blake3 => match <&[u8; 32]>::try_from(hash.digest()) {
                Ok(d) => self.key_by_blake3(d),
                Err(_) => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// The digests recorded for a blob.
    pub fn digests(&self, key: &BlobKey) -> Result<Option<Digests>> {
        let k = key.as_bytes();
        let row = self.look_up(|| {
            self.read("read a record", |conn| {
                conn.prepare_cached(
                    "SELECT sha1, blake3, size FROM blobs WHERE substr(sha512, 1, 8) = ?1 AND sha512 = ?2",
                )?
                .query_row((&k[..8], &k[..]), |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .optional()
            })
        })?;
        Ok(row.and_then(|(sha1, blake3, size)| {
            Digests::from_parts(k, &sha1, &blake3, u64::try_from(size).ok()?).ok()
        }))
    }

    /// The records of every blob whose sha512 starts with `prefix` (up to 8 bytes), sorted by
    /// sha512: one range scan of the sha512 index, for walks that visit the blobs of a directory
    /// together instead of looking each one up.
    pub fn digests_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Digests>> {
        let (mut lo, mut hi) = ([0u8; 8], [0xffu8; 8]);
        let n = prefix.len().min(8);
        lo[..n].copy_from_slice(&prefix[..n]);
        hi[..n].copy_from_slice(&prefix[..n]);
        let rows = self.read("read records", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT sha512, sha1, blake3, size FROM blobs \
                 WHERE substr(sha512, 1, 8) BETWEEN ?1 AND ?2",
            )?;
            let rows = stmt.query_map((&lo[..], &hi[..]), |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let mut out: Vec<Digests> = rows
            .into_iter()
            .filter_map(|(sha512, sha1, blake3, size)| {
                Digests::from_parts(&sha512, &sha1, &blake3, u64::try_from(size).ok()?).ok()
            })
            .collect();
        out.sort_unstable_by_key(|d| d.sha512);
        Ok(out)
    }

    /// How many blobs the index has records for.
    pub fn len(&self) -> Result<u64> {
        let n = self.read("count", |conn| {
            conn.query_row("SELECT count(*) FROM blobs", [], |r| r.get::<_, i64>(0))
        })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Whether the index has no records.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Makes every commit so far durable (fsyncs the database and its write-ahead log).
    pub fn sync(&self) -> Result<()> {
        for p in [self.path.clone(), sibling(&self.path, "-wal")] {
            match std::fs::File::open(&p) {
                Ok(f) => f.sync_all().map_err(|e| Error::io("fsync", &p, e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("open", &p, e)),
            }
        }
        Ok(())
    }

    /// Bytes the index takes on disk (the database and its write-ahead log).
    pub fn disk_bytes(&self) -> u64 {
        [self.path.clone(), sibling(&self.path, "-wal")]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Up to `limit` records with a row id above `after`, in row-id order: a walk over the whole
    /// index in bounded memory, each page its own short read (so it never holds back a checkpoint).
    /// Start with `after = 0`, then pass the last row id returned.
    pub fn page(&self, after: i64, limit: usize) -> Result<Vec<(i64, BlobKey)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.read("walk", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, sha512 FROM blobs WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map((after, limit), |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, k)| <[u8; 64]>::try_from(k).ok().map(|k| (id, BlobKey::new(k))))
            .collect())
    }

    /// Checks the database file; if it is damaged, moves it (and its log) aside as
    /// `blobs.sqlite.corrupt.<secs>` so that a fresh one is created on next use. Returns the path
    /// it was moved to.
    pub(crate) fn set_aside_if_corrupt(&self) -> Result<Option<PathBuf>> {
        let checked = self.read("check", |conn| {
            conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))
        });
        let damaged = match checked {
            Ok(verdict) => verdict != "ok",
            Err(e) if e.is_corrupt_db() => true,
            Err(e) => return Err(e),
        };
        if !damaged {
            return Ok(None);
        }
        let aside = self.set_aside()?;
        tracing::warn!(index = %self.path.display(), moved_to = %aside.display(), "damaged index set aside; rebuilding from the blobs");
        Ok(Some(aside))
    }
}

/// Renames the database at `path` to `aside`, and its `-wal` and `-shm` (which belong to it) to
/// the same names beside `aside`, so that the next opening of `path` begins a new database.
fn move_aside(path: &Path, aside: &Path) -> Result<()> {
    std::fs::rename(path, aside).map_err(|e| Error::io("rename", path, e))?;
    for ext in ["-wal", "-shm"] {
        let from = sibling(path, ext);
        if from.exists() {
            let to = sibling(aside, ext);
            std::fs::rename(&from, &to).map_err(|e| Error::io("rename", &from, e))?;
        }
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// SQLite integers are signed; no blob is 2^63 bytes.
fn size_to_sql(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record whose every digest byte is `n`, of `n` bytes.
    pub(super) fn digests(n: u8) -> Digests {
        Digests::from_parts(&[n; 64], &[n; 20], &[n; 32], u64::from(n))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_prefix_scan_returns_exactly_the_records_under_it_sorted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = FsIndex::open(dir.path().join("i.sqlite")).expect("open");
        let record = |a: u8, b: u8, rest: u8| {
            let mut sha512 = [rest; 64];
            sha512[..2].copy_from_slice(&[a, b]);
            Digests::from_parts(&sha512, &[rest; 20], &[a; 32], 1).expect("digests")
        };
        let all = [
            record(0xab, 0xcd, 0xff),
            record(0xab, 0xcd, 0x00),
            record(0xab, 0xce, 0x00),
            record(0xab, 0xcc, 0xff),
            record(0x00, 0xcd, 0x10),
        ];
        index.insert(&all, false).expect("insert");
        let got = index.digests_with_prefix(&[0xab, 0xcd]).expect("scan");
        assert_eq!(got, vec![all[1], all[0]]);
        assert_eq!(index.digests_with_prefix(&[0xab]).expect("scan").len(), 4);
        assert!(index
            .digests_with_prefix(&[0x01, 0x02])
            .expect("scan")
            .is_empty());
    }

    #[test]
    fn records_are_found_by_every_digest_and_merged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = FsIndex::open(dir.path().join("i.sqlite")).expect("open");
        let m = index
            .insert(&[digests(1), digests(2)], true)
            .expect("insert");
        assert_eq!(m.added, 2);
        let again = index.insert(&[digests(1)], false).expect("insert");
        assert_eq!(again.unchanged, 1);
        let mut wrong = digests(2);
        wrong.size = 99;
        assert_eq!(index.insert(&[wrong], false).expect("fix").corrected, 1);
        assert_eq!(
            index.key_by_sha1(&[1; 20]).expect("q"),
            Some(BlobKey::new([1; 64]))
        );
        assert_eq!(
            index.key_by_blake3(&[2; 32]).expect("q"),
            Some(BlobKey::new([2; 64]))
        );
        assert_eq!(index.key_by_sha1(&[3; 20]).expect("q"), None);
        assert_eq!(
            index
                .digests(&BlobKey::new([2; 64]))
                .expect("q")
                .map(|d| d.size),
            Some(99)
        );
        // A second handle (another process's view) sees the same records.
        let other = FsIndex::open(index.path()).expect("open");
        assert_eq!(other.len().expect("len"), 2);
        let removed = other
            .remove_if(
                &[BlobKey::new([1; 64]), BlobKey::new([2; 64])],
                false,
                |k| k.as_bytes()[0] == 1,
            )
            .expect("remove");
        assert_eq!(removed, 1);
        assert_eq!(index.key_by_sha1(&[1; 20]).expect("q"), None);
        assert_eq!(index.page(0, 10).expect("page").len(), 1);
    }

    #[test]
    fn lookups_use_the_prefix_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = FsIndex::open(dir.path().join("i.sqlite")).expect("open");
        let plan = index
            .read("plan", |conn| {
                let mut stmt = conn.prepare(
                    "EXPLAIN QUERY PLAN SELECT sha512 FROM blobs \
                     WHERE substr(sha1, 1, 8) = ?1 AND sha1 = ?2",
                )?;
                let rows =
                    stmt.query_map((&[0u8; 8][..], &[0u8; 20][..]), |r| r.get::<_, String>(3))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .expect("plan");
        assert!(plan.iter().any(|p| p.contains("blobs_sha1")), "{plan:?}");
    }

    #[test]
    fn a_damaged_file_is_a_clear_error_and_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i.sqlite");
        std::fs::write(&path, vec![0x5a; 8192]).expect("write garbage");
        let index = FsIndex::lazy(path.clone(), false);
        let err = index
            .key_by_sha1(&[1; 20])
            .expect_err("garbage must not open");
        assert_eq!(err.kind(), crate::ErrorKind::Index);
        let text = err.to_string();
        assert!(
            text.contains("i.sqlite") && text.contains("tarvault fsck"),
            "{text}"
        );
        let aside = index.set_aside_if_corrupt().expect("set aside");
        assert!(aside.is_some_and(|p| p.exists()));
        index
            .insert(&[digests(4)], true)
            .expect("fresh index works");
        assert_eq!(index.len().expect("len"), 1);
    }
}
