//! The segment log of an earlier version ([`super::log`]), as a store that upgrades to
//! markers reads it until its import has deleted the last segment.
//!
//! The log's own reader keeps every record in memory (816 MiB measured at 1M blobs, about 850
//! bytes per blob), which is what the marker index was built to end. During an upgrade that would
//! still be every process's cost until the import finishes. This reader keeps, per segment, only a
//! sorted array of 32-bit *fingerprints* (the first four bytes of each sha1 and blake3 digest it
//! holds), each with the offset of its record's line: 16 bytes per blob, 16 MB at 1M blobs. A
//! lookup binary-searches each segment's array and reads only the lines that match, each with one
//! ranged GET of a few hundred bytes: one for an alias the log holds, and none for a miss but with
//! probability (aliases / 2³²) (0.05% at 1M blobs).
//!
//! A log of [`SPILL_FROM`] segments or more (131,072 blobs) is fingerprinted into a table on local
//! disk instead ([`super::legacy_table`]): then the memory held is 512 KiB and the
//! segments' names, whatever the log's size, and a lookup reads its candidates with one
//! positioned read of the table rather than searching every segment. Should the temp file fail
//! (no space, no temp dir), the fingerprints are held in memory as for a small log.
//!
//! A segment that is gone when read has been imported (its markers are stored), and its
//! fingerprints are forgotten. Segments written since the last listing (by a process of the
//! earlier version, during a rolling upgrade) are found by listing again on a miss, at most once
//! per [`RELIST`]. A miss asks its marker again only when [`LegacyLog::changed_since`] its first
//! ask: only then can an import have moved the alias out of the segments this reader searched.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use super::legacy_shared::{remove, Shared};
use super::legacy_table::{Builder, Table};
use super::line::parse_line;
use super::log::{each_record, parse_named, SegmentStore};
use crate::backend::BlobKey;
use crate::integrity::{Digests, Hash};
use crate::Result;

/// Segments read at once while fingerprinting (16 left 59 MiB of RSS behind at 1M blobs on the
/// Manta test server, 8 left 38 MiB, and read the log as fast).
const PARALLEL_READS: usize = 8;
/// A miss lists the segments again at most this often (the documented bound on how long a
/// segment written by an older process can stay unseen).
const RELIST: Duration = Duration::from_secs(1);
/// Bytes read for one record's line (a line is at most 259 bytes).
const LINE_MAX: u64 = 320;
/// The offset of a record whose line lies beyond 4 GiB into its segment: the whole segment is
/// read to find it (no segment an earlier version wrote is that big).
const FAR: u32 = u32::MAX;
/// Fingerprints held in memory beyond this many bytes are reported once (only when the temp file
/// of a large log failed; they shrink as the import deletes segments).
const WARN_BYTES: usize = 64 << 20;
/// A listing that finds this many new segments or more fingerprints them into a table on disk.
pub(crate) const SPILL_FROM: usize = 16;

/// A hash's fingerprint: its first four bytes (sha1 and blake3 digests are uniformly spread).
fn fingerprint(digest: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    for (dst, src) in b.iter_mut().zip(digest) {
        *dst = *src;
    }
    u32::from_be_bytes(b)
}

/// A segment as held: its size, and each alias's fingerprint with its line's offset, sorted.
struct Segment {
    size: u64,
    entries: Box<[(u32, u32)]>,
}

impl Segment {
    /// Indexes a segment's body (its records are dropped once indexed).
    fn index(store: &str, name: &str, body: &[u8]) -> Segment {
        let mut entries = Vec::new();
        each_record(store, name, body, |at, d| {
            let at = u32::try_from(at).unwrap_or(FAR);
            entries.push((fingerprint(&d.sha1), at));
            entries.push((fingerprint(&d.blake3), at));
        });
        entries.sort_unstable();
        entries.dedup();
        Segment {
            size: body.len() as u64,
            entries: entries.into_boxed_slice(),
        }
    }

    fn bytes(&self) -> usize {
        self.entries.len() * std::mem::size_of::<(u32, u32)>()
    }

    /// The offsets of the lines whose fingerprint is `fp`.
    fn offsets(&self, fp: u32) -> impl Iterator<Item = u32> + '_ {
        let from = self.entries.partition_point(|(f, _)| *f < fp);
        self.entries[from..]
            .iter()
            .take_while(move |(f, _)| *f == fp)
            .map(|(_, at)| *at)
    }
}

/// Whether record `d` has this sha1 or blake3 digest.
fn names(d: &Digests, hash: &Hash) -> bool {
    d.hash(hash.algorithm()).digest() == hash.digest()
}

#[derive(Default)]
struct State {
    /// Every segment seen and not known gone, held in memory.
    segments: HashMap<String, Segment>,
    /// Bytes of fingerprints and offsets held in memory.
    bytes: usize,
    /// Segments fingerprinted on disk, a table per listing that found many; a table whose
    /// segments are all gone is dropped.
    tables: Vec<Table>,
    warned: bool,
    /// When a segment was last forgotten, or a listed one found gone before it was read.
    forgot: Option<Instant>,
    /// When the last listing began.
    listed: Option<Instant>,
}

impl State {
    fn forgot_now(&mut self) {
        self.forgot = Some(Instant::now());
    }

    /// Whether `name` is held (in memory or in a table).
    fn holds(&self, name: &str) -> bool {
        self.segments.contains_key(name) || self.tables.iter().any(|t| t.holds(name))
    }

    /// Drops the tables whose every segment is gone, deleting those published for the host's
    /// other processes (it is gone for them too).
    fn drop_empty_tables(&mut self) {
        self.tables.retain(|t| {
            let empty = t.live() == 0;
            if let Some(path) = t.path().filter(|_| empty) {
                remove(path, "its segments are all imported");
            }
            !empty
        });
    }
}

/// The old log, read for lookups and for the import (see the [module documentation](self)).
pub(crate) struct LegacyLog<S> {
    store: S,
    /// New segments in one listing from which they go to a table on disk.
    spill_from: usize,
    /// Where that table goes (`None`: the system's temp dir).
    spill_dir: Option<std::path::PathBuf>,
    state: Mutex<State>,
    /// Held while listing, so that concurrent misses share one listing.
    listing: tokio::sync::Mutex<()>,
}

impl<S: SegmentStore> LegacyLog<S> {
    pub(crate) fn new(store: S) -> Self {
        Self::spilling_from(store, SPILL_FROM)
    }

    /// A reader that fingerprints into a table on disk once a listing finds `spill_from` new
    /// segments (`usize::MAX`: never).
    pub(crate) fn spilling_from(store: S, spill_from: usize) -> Self {
        LegacyLog {
            store,
            spill_from,
            spill_dir: None,
            state: Mutex::new(State::default()),
            listing: tokio::sync::Mutex::new(()),
        }
    }

    /// The same, with its table's temp files in `dir`.
    #[cfg(test)]
    pub(crate) fn spilling_into(mut self, dir: &std::path::Path) -> Self {
        self.spill_dir = Some(dir.to_path_buf());
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The names of the stored segments (one LIST).
    pub(crate) async fn segments(&self) -> Result<Vec<String>> {
        Ok(self
            .store
            .list()
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }

    /// One segment's records, `None` if it is gone; records that do not parse are skipped with a
    /// warning naming the segment.
    pub(crate) async fn read_segment(&self, name: &str) -> Result<Option<Vec<Digests>>> {
        let Some(body) = self.store.get(name).await? else {
            return Ok(None);
        };
        Ok(Some(parse_named(&self.store.describe(), name, &body)))
    }

    /// Deletes one segment (its records are stored elsewhere by now) and forgets it.
    pub(crate) async fn delete_segment(&self, name: &str) -> Result<()> {
        self.store.delete(&[name.to_string()]).await?;
        self.forget(name);
        Ok(())
    }

    fn forget(&self, name: &str) {
        let mut st = self.lock();
        if let Some(seg) = st.segments.remove(name) {
            st.bytes -= seg.bytes();
            st.forgot_now();
        }
        let mut any = false;
        for t in &mut st.tables {
            any |= t.forget(name);
        }
        if any {
            st.drop_empty_tables();
            st.forgot_now();
        }
    }

    /// Forgets every segment (the import has finished; a later listing finds any new one).
    pub(crate) fn clear(&self) {
        let mut st = self.lock();
        st.segments = HashMap::new();
        st.bytes = 0;
        for t in &mut st.tables {
            t.retain(|_| false);
        }
        st.drop_empty_tables();
        st.forgot_now();
    }

    /// Where this store's fingerprint tables are shared with the host's other processes: this
    /// user's private temp directory (`host_tmp`), where no other user can plant a table or hold
    /// the lock. Blocking (the directory is made if missing).
    fn shared(&self) -> std::io::Result<Shared> {
        let dir = match &self.spill_dir {
            Some(dir) => dir.clone(),
            None => crate::host_tmp::dir()?,
        };
        Ok(Shared::new(dir, &self.store.describe()))
    }

    /// Whether, since `t`, a segment was forgotten (imported by now) or the segments were listed
    /// (one seen for the first time may have been imported before it was listed). Unless so, an
    /// alias that none of the searched segments holds was not moved into a marker after `t` by
    /// the import of a segment this reader held, so its marker need not be asked again.
    pub(crate) fn changed_since(&self, t: Instant) -> bool {
        let st = self.lock();
        st.forgot.is_some_and(|f| f >= t) || st.listed.is_some_and(|l| l >= t)
    }

    /// Bytes of memory this reader holds for the log (for tests and benchmarks): fingerprints
    /// held in memory, and the tables' fan-outs and segment names.
    pub(crate) fn held_bytes(&self) -> usize {
        let st = self.lock();
        st.bytes + st.tables.iter().map(Table::bytes).sum::<usize>()
    }

    /// The blob with this sha1 or blake3 digest, if a segment still records it; `asked` is when
    /// the lookup began (a listing begun since then is not repeated).
    pub(crate) async fn resolve(&self, hash: &Hash, asked: Instant) -> Result<Option<BlobKey>> {
        let mut tried = Vec::new();
        if let Some(k) = self.search(hash, &mut tried).await? {
            return Ok(Some(k));
        }
        // Unknown here: perhaps an older process wrote a segment since the last listing.
        if self.relist(asked).await? {
            return self.search(hash, &mut tried).await;
        }
        Ok(None)
    }

    /// Reads the lines (not in `tried`) whose fingerprint matches `hash`, until one records it.
    async fn search(&self, hash: &Hash, tried: &mut Vec<(String, u32)>) -> Result<Option<BlobKey>> {
        let fp = fingerprint(hash.digest());
        let mut candidates: Vec<(String, u32, u64)> = {
            let st = self.lock();
            let mut found: Vec<(String, u32, u64)> = st
                .segments
                .iter()
                .flat_map(|(name, seg)| seg.offsets(fp).map(move |at| (name, at, seg.size)))
                .map(|(name, at, size)| (name.clone(), at, size))
                .collect();
            for t in &st.tables {
                // One positioned read of a local file (the page cache's, once warm), as short
                // as the blocking reads of a spooled upload.
                found.extend(t.candidates(fp).map_err(table_io)?);
            }
            found.retain(|(name, at, _)| !tried.iter().any(|(n, a)| n == name && a == at));
            found
        };
        candidates.sort_unstable();
        for (name, at, size) in candidates {
            let found = match self.check(&name, at, size, hash).await? {
                Some(found) => found,
                None => {
                    // Imported and deleted since it was listed.
                    self.forget(&name);
                    None
                }
            };
            tried.push((name, at));
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Whether the record whose line starts at `at` in a segment of `size` bytes has `hash`: one
    /// ranged GET (the whole segment if the line is far in or longer than [`LINE_MAX`]). `None`
    /// if the segment is gone.
    async fn check(
        &self,
        name: &str,
        at: u32,
        size: u64,
        hash: &Hash,
    ) -> Result<Option<Option<BlobKey>>> {
        let key = |d: Option<Digests>| d.filter(|d| names(d, hash)).map(|d| BlobKey::new(d.sha512));
        if at != FAR {
            let range = u64::from(at)..(u64::from(at) + LINE_MAX).min(size);
            let Some(bytes) = self.store.get_range(name, range.clone()).await? else {
                return Ok(None);
            };
            match bytes.iter().position(|b| *b == b'\n') {
                Some(end) => return Ok(Some(key(parse_line(&bytes[..end])))),
                None if range.end == size => return Ok(Some(key(parse_line(&bytes)))),
                None => {}
            }
        }
        let Some(records) = self.read_segment(name).await? else {
            return Ok(None);
        };
        Ok(Some(key(records.into_iter().find(|d| names(d, hash)))))
    }

    /// Lists the segments and fingerprints those not seen yet, forgetting those gone, unless a
    /// listing began after `asked` (it has finished once the lock is ours) or less than
    /// [`RELIST`] ago. Returns whether segments may have been found since `asked`.
    async fn relist(&self, asked: Instant) -> Result<bool> {
        let _listing = self.listing.lock().await;
        match self.lock().listed {
            Some(t) if t >= asked => return Ok(true),
            Some(t) if t.elapsed() < RELIST => return Ok(false),
            _ => {}
        }
        self.load().await?;
        Ok(true)
    }

    /// Lists and fingerprints the segments (as a miss does at most once per [`RELIST`]); returns
    /// whether any is held. The first lookup of a process that finds the log calls this, so that
    /// its listing serves both to find the log and to read it.
    pub(crate) async fn refresh(&self) -> Result<bool> {
        let _listing = self.listing.lock().await;
        self.load().await?;
        let st = self.lock();
        Ok(!st.segments.is_empty() || !st.tables.is_empty())
    }

    /// Fingerprints every listed segment not seen yet (a few at a time; each segment's records
    /// are dropped once fingerprinted) and forgets those no longer listed. Called with the
    /// listing lock held.
    async fn load(&self) -> Result<()> {
        self.lock().listed = Some(Instant::now());
        let listed = self.segments().await?;
        let new: Vec<String> = {
            let mut st = self.lock();
            let names: HashSet<&str> = listed.iter().map(String::as_str).collect();
            let before = st.segments.len();
            st.segments.retain(|n, _| names.contains(n.as_str()));
            let mut gone = st.segments.len() != before;
            if gone {
                st.bytes = st.segments.values().map(Segment::bytes).sum();
            }
            for t in &mut st.tables {
                gone |= t.retain(|n| names.contains(n));
            }
            if gone {
                st.drop_empty_tables();
                st.forgot_now();
            }
            listed.iter().filter(|n| !st.holds(n)).cloned().collect()
        };
        if listed.is_empty() {
            // No log (any more): the tables a process published for it are of no use.
            if let Ok(shared) = self.shared() {
                let _ = tokio::task::spawn_blocking(move || shared.remove_all()).await;
            }
            return Ok(());
        }
        if new.len() >= self.spill_from {
            match self.load_tables(&new, &listed).await {
                Ok(Ok(rest)) => return self.load_in_memory(rest).await,
                Ok(Err(e)) => tracing::warn!(
                    store = %self.store.describe(),
                    error = %e,
                    segments = new.len(),
                    "cannot write the old alias log's fingerprints to a temp file; holding them \
                     in memory until the import into markers finishes"
                ),
                Err(e) => return Err(e),
            }
        }
        let new = {
            let st = self.lock();
            new.into_iter().filter(|n| !st.holds(n)).collect()
        };
        self.load_in_memory(new).await
    }

    /// Takes the segments of `new` that tables the host's other processes published cover from
    /// them, then, if [`SPILL_FROM`] segments or more are left, fingerprints those into a table of
    /// its own on local disk, published for the others; returns the segments left to hold in
    /// memory. Tables are built under the host's lock, so processes that start together read the
    /// log once. The outer error is the store's (the listing fails as it would in memory), the
    /// inner one the local disk's (the caller then holds the fingerprints in memory instead, and
    /// this stops reading).
    async fn load_tables(
        &self,
        new: &[String],
        listed: &[String],
    ) -> Result<std::io::Result<Vec<String>>> {
        let shared = match self.shared() {
            Ok(shared) => shared,
            Err(e) => return Ok(Err(e)),
        };
        let held: Vec<std::path::PathBuf> = {
            let st = self.lock();
            st.tables
                .iter()
                .filter_map(|t| t.path().map(std::path::Path::to_path_buf))
                .collect()
        };
        let (s, names) = (shared.clone(), listed.to_vec());
        let found = blocking(move || {
            let lock = s.lock()?;
            let listed: HashSet<&str> = names.iter().map(String::as_str).collect();
            let found = s.published(&held, &listed);
            Ok((lock, found))
        })
        .await;
        // Held (if taken) until this process's own table, if it builds one, is published.
        let (lock, found) = match found {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        let rest: Vec<String> = {
            let mut st = self.lock();
            let wanted: HashSet<&str> = new.iter().map(String::as_str).collect();
            for mut t in found {
                t.retain(|n| wanted.contains(n) && !st.holds(n));
                if t.live() > 0 {
                    tracing::debug!(table = ?t.path(), segments = t.live(), "old alias log fingerprints from a table another process published");
                    st.tables.push(t);
                }
            }
            new.iter().filter(|n| !st.holds(n)).cloned().collect()
        };
        if rest.len() < self.spill_from {
            return Ok(Ok(rest));
        }
        let built = self.build_table(&shared, rest).await?;
        drop(lock);
        Ok(built.map(|()| Vec::new()))
    }

    /// Fingerprints `new` into one table, published for the host's other processes. The errors
    /// are as [`load_tables`](Self::load_tables)'.
    async fn build_table(&self, shared: &Shared, new: Vec<String>) -> Result<std::io::Result<()>> {
        let made = shared
            .create()
            .and_then(|tmp| Ok((tmp, Builder::new(Some(shared.dir()))?)));
        let (tmp, mut builder) = match made {
            Ok(made) => made,
            Err(e) => return Ok(Err(e)),
        };
        let mut segments = std::pin::pin!(self.indexed(new));
        while let Some((name, seg)) = segments.try_next().await? {
            if let Err(e) = builder.add(name, seg.size, &seg.entries) {
                return Ok(Err(e));
            }
        }
        let name = shared.name();
        let table = blocking(move || {
            let mut table = builder.finish_into(tmp.as_file().try_clone()?)?;
            table.save(name.clone())?;
            tmp.persist_noclobber(&name).map_err(|e| e.error)?;
            Ok(table)
        })
        .await;
        let table = match table {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let mut st = self.lock();
        if table.live() > 0 {
            st.tables.push(table);
        }
        Ok(Ok(()))
    }

    /// Fingerprints `new` into memory, a segment at a time.
    async fn load_in_memory(&self, new: Vec<String>) -> Result<()> {
        let mut segments = std::pin::pin!(self.indexed(new));
        while let Some((name, seg)) = segments.try_next().await? {
            let mut st = self.lock();
            st.bytes += seg.bytes();
            st.segments.insert(name, seg);
            if st.bytes > WARN_BYTES && !st.warned {
                st.warned = true;
                tracing::warn!(
                    store = %self.store.describe(),
                    mib = st.bytes >> 20,
                    "the old alias log is large: its fingerprints are held until \
                     the import into markers finishes (run fsck to finish it now)"
                );
            }
        }
        Ok(())
    }

    /// The segments `new`, read [`PARALLEL_READS`] at a time and fingerprinted (each one's records
    /// dropped once fingerprinted). A segment gone before it was read has been imported: it is
    /// skipped, and noted as a change.
    fn indexed(
        &self,
        new: Vec<String>,
    ) -> impl futures::Stream<Item = Result<(String, Segment)>> + '_ {
        futures::stream::iter(new)
            .map(move |name| async move {
                let body = self.store.get(&name).await?;
                let seg = body.map(|b| Segment::index(&self.store.describe(), &name, &b));
                Ok::<_, crate::Error>((name, seg))
            })
            .buffer_unordered(PARALLEL_READS)
            .try_filter_map(move |(name, seg)| {
                if seg.is_none() {
                    self.lock().forgot_now();
                }
                std::future::ready(Ok(seg.map(|seg| (name, seg))))
            })
    }
}

/// Runs blocking local I/O off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

fn table_io(e: std::io::Error) -> crate::Error {
    crate::Error::io(
        "reading the old alias log's fingerprints from a temp file",
        std::env::temp_dir(),
        e,
    )
}
