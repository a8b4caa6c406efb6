//! The filesystem backend: tarvault's embedded default.
//!
//! Each blob is one read-only file named by its sha512 hex in a two-level shard
//! (`sha512/ab/cd/<hex>`, see `layout.rs`). Uploads go to a unique temp file on the same filesystem,
//! are fsynced, and are published with a rename that never overwrites (`RENAME_NOREPLACE`, or a
//! link and an unlink where the filesystem lacks it), followed by an fsync of the directory; so a
//! crash at any point leaves either no file or a complete one under an address, and any number
//! of threads and processes may write the same content at once. Temp files of processes
//! that died are swept when a store is opened and by `fsck`.
//!
//! The sha1/blake3 index and each blob's recorded digests live in an SQLite database beside the
//! blobs ([`FsIndex`]), shared by every process that opens the store.

mod direct;
mod durable;
mod file_id;
mod index;
mod layout;
mod lease;
mod misplaced;
mod publish;
mod quarantine;
mod read;
mod read_ahead;
mod remove;
mod walk;
mod writer;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};

pub use self::index::{FsCacheLedger, FsIndex, IndexMerge};
use self::layout::Layout;
use self::walk::{walk, walk_dirs};
use self::writer::{key_of, remove_if_exists, FsWriter};
use super::{
    AgedDelete, AliasRebuild, Backend, BlobKey, BlobStat, BlobWriter, CacheLedger, Committed,
    GetResult, Misplaced, PendingBlob, Presence, PutHint,
};
use crate::integrity::{Digests, Hash};
use crate::task::blocking;
use crate::{Error, Result};

/// Temp files whose owner cannot be identified are swept once older than this.
const STALE_TEMP_AGE: Duration = Duration::from_secs(24 * 3600);

/// Options for a filesystem store.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// fsync data and directories so that a committed blob survives power loss (default: on).
    /// Off is faster and still atomic (no partial blob is ever visible), but a crash may lose
    /// recently committed blobs.
    pub fsync: bool,
    /// How a batch (`put_batch`, `put_stream`, the CLI's `put` of several files) is made durable
    /// when `fsync` is on. See [`BatchFlush`].
    pub batch_flush: BatchFlush,
    /// Record sha1/blake3 aliases in the alias log of releases before the index, not in the
    /// index. Only for benchmarks that measure what the index costs and for upgrade tests; a store
    /// written so is imported into the index the next time it is opened without this option.
    #[doc(hidden)]
    pub legacy_alias_log: bool,
    /// Once a blob's writes reach this many bytes they go around the page cache (`O_DIRECT`, on
    /// Linux, where the filesystem takes it), from the flush (up to 1 MiB) that reaches it; `None`
    /// writes every byte through the page cache. Default 8 MiB:
    /// a large put then spends a fraction of the system CPU a buffered write costs, which on a
    /// two-core machine is what decides whether it runs at the speed of sha512
    /// (`docs/ingest.md`). The first get of such a blob then reads it from the disk; a blob that
    /// large is seldom read back at once, and a bulk import no longer evicts the hot set.
    pub direct_writes_from: Option<u64>,
    /// Bytes of read chunks the store lets live at once, across all its reads (default
    /// [`READ_BUDGET`]): read ahead, held back by the verifier, queued for a slow HTTP client.
    /// While it has room a blob up to 8 MiB is read in one piece and a larger one in 1 MiB
    /// chunks, four ahead of its consumer; once it is spent further reads take 64 KiB at a time
    /// with none ahead. What a thousand stalled downloads can
    /// hold is then this plus a few hundred KiB each, not 6 MiB each.
    pub read_budget: u64,
}

/// [`FsOptions::read_budget`]'s default: 64 downloads reading at full speed at once.
pub const READ_BUDGET: u64 = 256 << 20;

/// [`FsOptions::direct_writes_from`]'s default.
pub const DIRECT_WRITES_FROM: u64 = 8 << 20;

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            fsync: true,
            batch_flush: BatchFlush::default(),
            legacy_alias_log: false,
            direct_writes_from: Some(DIRECT_WRITES_FROM),
            read_budget: READ_BUDGET,
        }
    }
}

/// How a durable batch reaches the disk. Both keep the same guarantee (a blob's bytes are on
/// disk before its name, its name before its index record is relied on); they differ in what
/// else they flush and in how many device flushes a batch costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchFlush {
    /// Two `syncfs` calls around the batch's renames (Linux; elsewhere it falls back to
    /// [`PerFile`](BatchFlush::PerFile)'s fsyncs): two device flushes per group, 10.7× the
    /// speed of `PerFile` for 20 KiB blobs and 1.34× for npm tarballs (`docs/ingest.md`). `syncfs` also writes back whatever other programs left dirty
    /// on the same filesystem, so a store sharing its filesystem with heavy unrelated writers may
    /// prefer `PerFile`.
    #[default]
    Syncfs,
    /// The single put's ordered fsyncs for each blob of the batch (its data, then its directory
    /// after the rename), and one durable index transaction for the whole batch: flushes only
    /// the store's own files, at the cost of about two device flushes per blob.
    PerFile,
}

impl std::str::FromStr for BatchFlush {
    type Err = Error;

    fn from_str(s: &str) -> Result<BatchFlush> {
        match s {
            "syncfs" => Ok(BatchFlush::Syncfs),
            "per-file" | "per_file" => Ok(BatchFlush::PerFile),
            _ => Err(Error::Config(format!(
                "bad batch_flush value {s:?} (syncfs or per-file)"
            ))),
        }
    }
}

#[derive(Debug)]
pub(crate) struct FsInner {
    layout: Layout,
    fsync: bool,
    batch_flush: BatchFlush,
    index: FsIndex,
    legacy_alias_log: bool,
    /// [`FsOptions::direct_writes_from`].
    direct_from: Option<u64>,
    /// Held while the store is open, so that no sweep takes this process's temp files for a dead
    /// writer's (`lease.rs`); `None` where the store cannot be written or locked.
    lease: Option<lease::Lease>,
    /// [`FsOptions::read_budget`].
    read_budget: Arc<crate::backend::budget::ReadBudget>,
}

/// A store directory on a local filesystem.
#[derive(Debug, Clone)]
pub struct FsBackend {
    inner: Arc<FsInner>,
}

impl FsBackend {
    /// The blob file's `stat`, inline (`None`: no such file): what [`Backend::size_now`] and
    /// [`Backend::exists_now`] and [`Backend::head`] start from.
    ///
    /// A directory (or a device, a socket) at a blob's path is no blob of any size: it is
    /// [`Error::Corrupt`], as its read and fsck find, not a blob `has` and `stat` would vouch for.
    fn stat_now(&self, key: &BlobKey) -> Result<Option<std::fs::Metadata>> {
        let path = self.inner.layout.blob(key);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m)),
            Ok(m) => Err(Error::Corrupt {
                address: key.to_string(),
                backend: self.describe(),
                expected: "a blob file".into(),
                actual: format!(
                    "{} at {}",
                    if m.is_dir() {
                        "a directory"
                    } else {
                        "not a regular file"
                    },
                    path.display()
                ),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", &path, e)),
        }
    }

    /// Every blob's `stat`, a directory at a time on the walker's thread; with `digests`, the
    /// directory's records too, from one range scan of the index.
    fn walk_stats(&self, digests: bool) -> BoxStream<'static, Result<BlobStat>> {
        let inner = self.inner.clone();
        walk_dirs(self.inner.layout.blobs(), move |files, out| {
            let Some((first, _)) = files.first() else {
                return;
            };
            let records = if digests {
                inner.recorded_in_dir(first)
            } else {
                Vec::new()
            };
            for (key, entry) in files {
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        out.push(Err(Error::io("stat", entry.path(), e)));
                        continue;
                    }
                };
                // The walk yields only files in their own directory: all share `first`'s shard.
                let digests = records
                    .binary_search_by(|d| d.sha512[..].cmp(key.as_bytes()))
                    .ok()
                    .map(|i| records[i]);
                let digests = digests.filter(|d| d.size == meta.len());
                out.push(Ok(BlobStat {
                    key: *key,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                    digests,
                }));
            }
        })
    }

    /// Checks that `root` holds a store, or is an empty directory, without opening or creating
    /// anything: what a caller that only reads checks before [`open`](Self::open), which creates
    /// a store wherever it is pointed. An error of kind [`Config`](crate::ErrorKind::Config)
    /// when nothing is at `root` or it is a directory of other files.
    pub fn check_existing(root: impl AsRef<Path>) -> Result<()> {
        layout::check_existing(root.as_ref())
    }

    /// Opens (creating if needed) a store at `root`, and sweeps temp files left by dead processes.
    pub fn open(root: impl AsRef<Path>, options: FsOptions) -> Result<FsBackend> {
        let root = root.as_ref().to_path_buf();
        // A store named by mistake as a file (a tarball, say) is a wrong setting, not an I/O error.
        if std::fs::metadata(&root).is_ok_and(|m| !m.is_dir()) {
            return Err(Error::Config(format!(
                "store {}: not a directory",
                root.display()
            )));
        }
        let layout = Layout::new(root.clone());
        for dir in [
            layout.root().to_path_buf(),
            layout.blobs(),
            layout.tmp(),
            layout.index(),
            layout.quarantine(),
            layout.leases(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        }
        let marker = layout.marker();
        if !marker.exists() {
            let body = "{\"format\":\"tarvault-fs\",\"version\":1}\n";
            std::fs::write(&marker, body).map_err(|e| Error::io("write", &marker, e))?;
        }
        let index = FsIndex::lazy(layout.index_db(), options.fsync);
        if !options.legacy_alias_log {
            // A store written by a release before the index: import its log, once. A damaged
            // index must not keep the store from opening (fsck repairs it); the log stays and is
            // imported by a later open.
            match index::legacy::import_if_present(&index, &layout.aliases()) {
                Err(e) if e.kind() == crate::ErrorKind::Index => {
                    tracing::warn!(error = %e.report(), "could not import the alias log into the index");
                }
                other => {
                    other?;
                }
            }
        }
        // A store opened only to be read (a read-only mount, another user's store) has no lease
        // and needs none: it writes no temp files.
        let lease = lease::Lease::take(&layout.leases()).unwrap_or_else(|e| {
            tracing::debug!(root = %root.display(), error = %e, "no lease: temp files carry the pid only");
            None
        });
        let inner = Arc::new(FsInner {
            index,
            lease,
            layout,
            fsync: options.fsync,
            batch_flush: options.batch_flush,
            legacy_alias_log: options.legacy_alias_log,
            direct_from: options.direct_writes_from,
            read_budget: crate::backend::budget::ReadBudget::new(options.read_budget),
        });
        let backend = FsBackend { inner };
        let swept = backend.inner.sweep_temps()?;
        if swept > 0 {
            tracing::info!(swept, root = %root.display(), "removed temp files of dead writers");
        }
        Ok(backend)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        self.inner.layout.root()
    }

    /// The path of a blob's file (for tests and tooling; never write to it).
    pub fn blob_path(&self, key: &BlobKey) -> PathBuf {
        self.inner.layout.blob(key)
    }

    /// The store's sha1/blake3 index.
    pub fn index(&self) -> &FsIndex {
        &self.inner.index
    }

    /// The directory holding uploads in progress.
    pub fn temp_dir(&self) -> PathBuf {
        self.inner.layout.tmp()
    }
}

impl FsInner {
    /// The digests recorded for a blob. An index that cannot be read costs only the fast check:
    /// the blob is then verified against its address (sha512) instead, and the failure is logged
    /// (lookups by sha1 or blake3 report it as an error naming the file and the repair).
    fn recorded(&self, key: &BlobKey) -> Option<Digests> {
        match self.index.digests(key) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e.report(), "index unreadable; verifying against the address");
                None
            }
        }
    }

    /// The records of every blob in `key`'s directory (sharing its first two bytes), sorted by
    /// sha512; none if the index cannot be read (as [`recorded`](Self::recorded)).
    fn recorded_in_dir(&self, key: &BlobKey) -> Vec<Digests> {
        self.index
            .digests_with_prefix(&key.as_bytes()[..2])
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e.report(), "index unreadable; walking without records");
                Vec::new()
            })
    }

    /// What `head` says of a blob whose file has metadata `meta`: a record that disagrees with the
    /// file's size is no record of this file.
    fn stat_of(&self, key: BlobKey, meta: &std::fs::Metadata) -> BlobStat {
        BlobStat {
            key,
            size: meta.len(),
            modified: meta.modified().ok(),
            digests: self.recorded(&key).filter(|d| d.size == meta.len()),
        }
    }

    /// Marks a blob put again as written now (see [`Backend::freshen`]). A failure is logged, not
    /// returned: the blob is stored all the same.
    fn freshen_file(&self, path: &Path) {
        if let Err(e) = durable::touch(path) {
            tracing::warn!(blob = %path.display(), error = %e,
                "could not mark a blob put again as recent; gc's grace period counts from its first put");
        }
    }
}

#[async_trait]
impl Backend for FsBackend {
    fn describe(&self) -> String {
        format!("fs:{}", self.inner.layout.root().display())
    }

    async fn begin_put(&self, _hint: &PutHint) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(FsWriter::new(self.inner.clone())))
    }

    /// Group commit: every temp file is written without fsync, then one `syncfs` makes all the data
    /// durable, the batch is linked into place, and a second `syncfs` makes the names (and the
    /// alias records) durable. Two flushes per batch instead of three fsyncs per blob. With
    /// [`BatchFlush::PerFile`], each blob gets the single put's ordered fsyncs instead and the
    /// batch one durable index transaction.
    async fn commit_batch(&self, items: Vec<PendingBlob>) -> Vec<Result<Committed>> {
        let per_file = self.inner.fsync && self.inner.batch_flush == BatchFlush::PerFile;
        let syncfs = self.inner.fsync && !per_file;
        let mut results: Vec<Option<Result<Committed>>> = Vec::with_capacity(items.len());
        let mut ready: Vec<(usize, PathBuf, Digests)> = Vec::new();
        let mut writers: Vec<Box<FsWriter>> = Vec::new();
        for (i, (writer, d)) in items.into_iter().enumerate() {
            match writer.into_any().downcast::<FsWriter>() {
                Ok(mut w) => match w.finish_data(per_file).await {
                    Ok(()) => {
                        ready.push((i, w.tmp.clone(), d));
                        writers.push(w);
                        results.push(None);
                    }
                    Err(e) => results.push(Some(Err(e))),
                },
                Err(_) => results.push(Some(Err(Error::InvalidInput(
                    "commit_batch was given a writer from another backend".into(),
                )))),
            }
        }
        let ready_index: Vec<usize> = ready.iter().map(|(i, _, _)| *i).collect();
        let inner = self.inner.clone();
        let published =
            tokio::task::spawn_blocking(move || -> Result<Vec<(usize, Result<Committed>)>> {
                let root = inner.layout.root().to_path_buf();
                let paths: Vec<&Path> = ready.iter().map(|(_, p, _)| p.as_path()).collect();
                if syncfs && !ready.is_empty() {
                    durable::sync_filesystem(&root, &paths)
                        .map_err(|e| Error::io("syncfs", &root, e))?;
                }
                let pairs: Vec<(PathBuf, Digests)> =
                    ready.iter().map(|(_, p, d)| (p.clone(), *d)).collect();
                let out = inner.publish(&pairs, per_file);
                if syncfs && !ready.is_empty() {
                    let dirs: Vec<PathBuf> = pairs
                        .iter()
                        .filter_map(|(_, d)| {
                            inner
                                .layout
                                .blob(&key_of(d))
                                .parent()
                                .map(Path::to_path_buf)
                        })
                        .collect();
                    let dir_refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
                    durable::sync_filesystem(&root, &dir_refs)
                        .map_err(|e| Error::io("syncfs", &root, e))?;
                }
                Ok(ready.iter().map(|(i, _, _)| *i).zip(out).collect())
            })
            .await;
        for w in &mut writers {
            w.mark_finished();
        }
        let failed = match published {
            Ok(Ok(list)) => {
                for (i, r) in list {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(r);
                    }
                }
                None
            }
            Ok(Err(e)) => Some(e),
            Err(e) => Some(Error::Task(e)),
        };
        if let Some(e) = failed {
            // The first unsettled item gets the error itself (its kind and source intact); the
            // others say they went down with it.
            let msg = e.report().to_string();
            let mut first = Some(e);
            for slot in results.iter_mut().filter(|s| s.is_none()) {
                *slot = Some(Err(first.take().unwrap_or_else(|| {
                    Error::backend(
                        self.describe(),
                        format!("not committed with the rest of its batch: {msg}"),
                    )
                })));
            }
        }
        // Published items' temp files are gone (renamed into place or removed as duplicates);
        // those of items that failed are removed here (the writers are marked finished).
        for (w, i) in writers.iter().zip(&ready_index) {
            if matches!(results.get(*i), Some(Some(Ok(_)))) {
                continue;
            }
            if let Err(e) = remove_if_exists(&w.tmp) {
                tracing::warn!(error = %e.report(), "could not remove a batch's temp file (swept later)");
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::InvalidInput("batch item lost".into()))))
            .collect()
    }

    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<Option<GetResult>> {
        read::get(self.inner.clone(), *key, range).await
    }

    /// A `stat` and one index lookup, both in place: on a warm page cache each takes microseconds,
    /// less than a round trip through the blocking pool.
    async fn head(&self, key: &BlobKey) -> Result<Option<BlobStat>> {
        Ok(self
            .stat_now(key)?
            .map(|meta| self.inner.stat_of(*key, &meta)))
    }

    /// One `stat` of the blob's file and its record, inline: on a hot dentry cache and a warm
    /// index each takes microseconds, less than handing them to the blocking pool. A file whose
    /// size is not its record's (cut short, or grown) is corrupt, as the `GET` would find, and
    /// not a blob of another size: an HTTP `HEAD` or `304` would advertise that size to caches.
    /// A file with no record (lost, or an index that cannot be read) gets no immediate answer:
    /// its size is what [`head`](Backend::head) makes of it, and a wrapper's `head` takes no size
    /// a record does not confirm (a cache tier asks its remote, a replicated store the next
    /// replica), so the file's own size here would disagree with it.
    fn size_now(&self, key: &BlobKey) -> Option<Result<Option<u64>>> {
        let meta = match self.stat_now(key) {
            Ok(Some(m)) => m,
            other => return Some(other.map(|_| None)),
        };
        let record = self.inner.recorded(key)?;
        Some(if record.size == meta.len() {
            Ok(Some(meta.len()))
        } else {
            Err(Error::Corrupt {
                address: key.to_string(),
                backend: self.describe(),
                expected: format!("{} bytes (recorded)", record.size),
                actual: format!("{} bytes on disk", meta.len()),
            })
        })
    }

    /// One `stat`, without [`size_now`](Backend::size_now)'s record lookup: a 304 names no
    /// size, and a copy damaged since the client got its verified one leaves that one good.
    fn exists_now(&self, key: &BlobKey) -> Option<Result<bool>> {
        Some(self.stat_now(key).map(|m| m.is_some()))
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool> {
        let inner = self.inner.clone();
        let key = *key;
        blocking(move || inner.delete_blob(&key, None))
            .await
            .map(|done| done == AgedDelete::Deleted)
    }

    /// Decided under the index's write lock, in the step that takes the blob away (see
    /// `delete_blob`).
    async fn delete_unless_written_since(
        &self,
        key: &BlobKey,
        cutoff: SystemTime,
    ) -> Result<AgedDelete> {
        let inner = self.inner.clone();
        let key = *key;
        blocking(move || inner.delete_blob(&key, Some(cutoff))).await
    }

    /// The file hashed with blake3 against the record, on the blocking pool. A file too large to
    /// hash in place does not count: the put writes its own copy, which its commit puts in place
    /// of this one (see `read::Found::Unchecked`).
    async fn copy_holds(&self, key: &BlobKey, record: &Digests) -> Result<bool> {
        let (path, record) = (self.inner.layout.blob(key), *record);
        blocking(move || {
            let found = read::file_has(&path, &record).map_err(|e| Error::io("read", &path, e))?;
            if found == read::Found::Damaged {
                tracing::warn!(blob = %path.display(), "the stored copy is damaged: writing the verified bytes over it");
            }
            Ok(found == read::Found::Holds)
        })
        .await
    }

    /// Sets the file's modification time (what `list_stat` reports) to now, inline: one open and
    /// one `futimens`, less than a trip to the blocking pool.
    async fn freshen(&self, key: &BlobKey) -> Result<Presence> {
        self.inner.freshen_file(&self.inner.layout.blob(key));
        Ok(self.head(key).await?.into())
    }

    fn list(&self) -> BoxStream<'static, Result<BlobKey>> {
        walk(self.inner.layout.blobs(), |key, _| Some(Ok(key)))
    }

    /// `index/cache.sqlite`, opened (and made, the first time) now.
    fn cache_ledger(&self) -> Result<Option<Arc<dyn CacheLedger>>> {
        let ledger = FsCacheLedger::open(self.inner.layout.cache_ledger())?;
        Ok(Some(Arc::new(ledger)))
    }

    /// One pass on the walker's thread, a directory at a time: each file's `stat` from its
    /// directory entry, and the records of the whole directory from one range scan of the index.
    fn list_stat(self: Arc<Self>) -> BoxStream<'static, Result<BlobStat>> {
        self.walk_stats(true)
    }

    /// The same walk without the index's records (gc and a plain `ls` need no digests).
    fn list_meta(self: Arc<Self>) -> BoxStream<'static, Result<BlobStat>> {
        self.walk_stats(false)
    }

    fn recorded_digests_trusted(&self) -> Option<crate::backend::Vouched> {
        Some(crate::backend::Vouched::new())
    }

    /// One index lookup, in place (see [`FsBackend::head`]).
    async fn resolve_alias(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        self.inner.index.resolve(hash)
    }

    /// Merges the scan's records into the index a chunk at a time, then removes entries whose
    /// blob is gone. A damaged index is first set aside and rebuilt from the scan alone.
    async fn rebuild_aliases(
        &self,
        found: BoxStream<'_, Digests>,
        _options: &crate::backend::RebuildOptions,
    ) -> Result<AliasRebuild> {
        let inner = self.inner.clone();
        blocking(move || inner.index.set_aside_if_corrupt()).await?;
        let mut report = AliasRebuild::default();
        let mut chunks = found.ready_chunks(REBUILD_CHUNK);
        while let Some(chunk) = chunks.next().await {
            let inner = self.inner.clone();
            let n = chunk.len() as u64;
            let merged = blocking(move || {
                inner
                    .index
                    .insert_present(&chunk, false, |k| !inner.blob_gone(k))
            })
            .await?;
            report.indexed += n;
            report.added += merged.added;
            report.corrected += merged.corrected;
        }
        let inner = self.inner.clone();
        report.removed = blocking(move || inner.prune_index()).await?;
        if self.inner.fsync {
            let inner = self.inner.clone();
            blocking(move || inner.index.sync()).await?;
        }
        Ok(report)
    }

    /// Unless the copy now at the address verifies (see `quarantine.rs`).
    async fn quarantine(&self, key: &BlobKey) -> Result<bool> {
        let inner = self.inner.clone();
        let key = *key;
        blocking(move || inner.quarantine_blob(&key)).await
    }

    async fn sweep(&self) -> Result<u64> {
        let inner = self.inner.clone();
        blocking(move || inner.sweep_temps()).await
    }

    async fn restore_misplaced(&self) -> Result<Misplaced> {
        let inner = self.inner.clone();
        blocking(move || inner.restore_misplaced()).await
    }
}

/// Records merged into the index per transaction during a rebuild.
const REBUILD_CHUNK: usize = 1024;
