//! The storage backend trait: the one seam between the [`Store`](crate::Store) and where bytes live.
//!
//! A backend stores opaque blobs under a [`BlobKey`] (the sha512 digest). It never decides what a
//! blob's key is: the store hashes the bytes as they stream into a [`BlobWriter`] and only then calls
//! [`BlobWriter::commit`] with the verified digests, which is the backend's cue to *publish* the blob
//! atomically under its key (rename on a filesystem, a create-only write or a multipart commit on a
//! remote store). Until commit nothing may be visible under any key; after
//! [`BlobWriter::abort`] (or dropping the writer) nothing may be left behind.
//!
//! Backends are deliberately dumb about integrity: reads return raw bytes and the store verifies them.
//! That way one implementation of verification serves every backend, and a backend that lies is
//! caught the same way as a disk that rots.

use std::any::Any;
use std::fmt;
use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::integrity::{Digests, Hash};
use crate::{Error, Result};

#[cfg(any(feature = "fs", feature = "memory", feature = "s3", feature = "manta"))]
mod alias;
#[cfg(any(
    feature = "s3",
    feature = "manta",
    feature = "http",
    feature = "migrate"
))]
pub(crate) mod body;
pub(crate) mod budget;
pub mod compose;
#[cfg(feature = "fs")]
pub mod fs;
#[cfg(feature = "http")]
pub mod http;
mod key;
pub(crate) mod key_table;
pub mod ledger;
#[cfg(feature = "manta")]
pub mod manta;
#[cfg(feature = "memory")]
pub mod memory;
mod pace;
mod positioned;
mod presence;
#[cfg(feature = "s3")]
pub mod s3;
mod sample;
mod settings;
#[cfg(any(feature = "fs", feature = "migrate", feature = "server"))]
pub(crate) mod wal_checkpoint;

#[cfg(any(feature = "s3", feature = "manta"))]
pub use alias::cache::{CacheConfig as AliasCacheConfig, DEFAULT_CACHE_BYTES, DEFAULT_MISS_TTL};
/// How old a remote store's alias marker must be before `fsck` checks whether its blob exists
/// (the `alias_grace_secs=` store option; see docs/remote-index.md).
#[cfg(any(feature = "s3", feature = "manta"))]
pub use alias::marker::DEFAULT_GRACE as DEFAULT_ALIAS_GRACE;

pub use key::BlobKey;
pub use ledger::CacheLedger;
pub use presence::Presence;
pub use sample::{Sample, SAMPLE_LIMIT};
#[cfg(feature = "manta")]
pub(crate) use settings::http_client;
#[cfg(feature = "http")]
pub(crate) use settings::http_client_with;
#[cfg(any(feature = "fs", feature = "s3", feature = "manta"))]
pub(crate) use settings::{option_once, parse_flag};

/// An upload ready to commit, with the digests it verified to (see [`Backend::commit_batch`]).
pub type PendingBlob = (Box<dyn BlobWriter>, Digests);

/// A stream of bytes from a backend.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// `HEAD`s in flight at once in the default [`Backend::list_stat`].
pub const LIST_HEADS: usize = 16;

/// What a backend knows about a stored blob without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobStat {
    /// The key.
    pub key: BlobKey,
    /// Stored size in bytes.
    pub size: u64,
    /// When it was stored, if the backend knows.
    pub modified: Option<SystemTime>,
    /// The digests recorded at commit time, if the backend kept them.
    pub digests: Option<Digests>,
}

/// A read from a backend.
pub struct GetResult {
    /// The whole blob's size (not the range's).
    pub size: u64,
    /// The requested bytes.
    pub stream: ByteStream,
    /// The digests recorded at commit time, when the backend had them at hand while opening the
    /// blob (no extra request). Trusted for verification only as [`BlobStat::digests`] is: when
    /// [`Backend::recorded_digests_trusted`] vouches for them, or from a backend that
    /// [verifies its reads whole](Backend::verifies_reads_whole), which vouches for them.
    pub digests: Option<Digests>,
    /// The backend read the blob whole and checked it against its key (or a trusted record)
    /// before answering, and `stream` yields those very bytes, held in memory and not read
    /// again: a store in its fast verification then checks only the alias a read was asked by,
    /// not the bytes a second time. Set only by wrappers holding a verified copy
    /// ([`Backend::verifies_reads_whole`]); every other backend answers `None`.
    pub verified_whole: Option<Vouched>,
}

/// Proof that a read or a backend is one of this crate's wrappers holding a copy it verified
/// whole ([`GetResult::verified_whole`], [`Backend::verifies_reads_whole`]), or one of its
/// backends keeping records it trusts ([`Backend::recorded_digests_trusted`]): only this crate
/// can make one, so a backend written outside it cannot switch off or weaken the store's checks
/// by claiming to have made them, by mistake or otherwise. It can pass one on.
///
/// ```compile_fail
/// // Outside the crate there is no way to make one.
/// let claimed = tarvault::backend::Vouched::new();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vouched(());

impl Vouched {
    pub(crate) const fn new() -> Vouched {
        Vouched(())
    }
}

/// Hints given when an upload starts; a backend may use them to choose how to publish.
#[derive(Debug, Clone, Default)]
pub struct PutHint {
    /// The key, when the caller already knows which digest the bytes must have.
    pub expected_key: Option<BlobKey>,
    /// The size, when known in advance.
    pub size: Option<u64>,
    /// Publication may be deferred to [`Backend::commit_batch`], which makes a whole batch durable at
    /// once (group commit).
    pub batch: bool,
    /// Hold the bytes locally (memory, a spool file) until the commit rather than stream them out
    /// ahead of it (a multipart, direct or staged upload), where the backend can. The put found
    /// an object at its key: either it cannot tell yet whether that copy is whole (a remote
    /// object, and no [`size`](Self::size) to compare its size with), and will most likely drop
    /// these bytes unpublished; or that object has another size (cut short, or grown), and a
    /// create-only upload to the key would be refused where the commit replaces it.
    pub hold: bool,
}

/// What a rebuild does with index entries that name a blob that is gone (remote stores' alias
/// markers, found by listing them; the fs index removes such entries inside its own
/// transaction, whatever this says).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dangling {
    /// Remove them (after the checks of docs/remote-index.md that keep a racing put's entry).
    #[default]
    Remove,
    /// Count them in the report (`dangling`) and leave them in place.
    Report,
    /// Do not list the entries at all: only the merge of what the scan found runs.
    Skip,
}

/// How [`Backend::rebuild_aliases`] treats the entries the scan cannot vouch for.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RebuildOptions {
    /// What to do with entries whose blob is gone.
    pub dangling: Dangling,
    /// Listed entries checked per second at most (`None`: as fast as the store answers). Each
    /// check of a remote marker is a GET and a HEAD; a scrub paces it like its reads.
    pub checks_per_second: Option<f64>,
}

/// A blob file found outside the place its name gives it, by [`Backend::restore_misplaced`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MisplacedBlob {
    /// Where it was found.
    pub path: String,
    /// The blob its name says it is (`sha512-…`).
    pub address: String,
    /// Whether it was moved to its place (its bytes verified and nothing was there).
    pub restored: bool,
    /// What was done, or why it was left.
    pub note: String,
}

/// What [`Backend::restore_misplaced`] found: every misplaced file counted, the first kept in full,
/// and how many of them were moved back to their place.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Misplaced {
    /// The files found.
    pub files: Sample<MisplacedBlob>,
    /// How many of them were moved to their place (kept or not).
    pub restored: u64,
}

impl Misplaced {
    /// Counts one file found.
    pub fn push(&mut self, file: MisplacedBlob) {
        self.restored += u64::from(file.restored);
        self.files.push(file);
    }

    /// Adds what another backend found.
    pub fn merge(&mut self, other: Misplaced) {
        self.restored += other.restored;
        self.files.merge(other.files);
    }

    /// Whether no file was found.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// What [`Backend::rebuild_aliases`] did to the alias index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AliasRebuild {
    /// Verified blobs the scan gave it.
    pub indexed: u64,
    /// Blobs that had no entry (now added): a crash between a blob's link and its entry, or an
    /// index rebuilt from nothing.
    pub added: u64,
    /// Entries whose recorded digests or size disagreed with the blob (now corrected).
    pub corrected: u64,
    /// Entries whose blob is gone (now removed).
    pub removed: u64,
    /// Entries a pass over the whole index listed (remote stores: markers); 0 where the backend
    /// checks its index without listing it.
    pub listed: u64,
    /// Listed entries that named a blob that does not exist: `removed`, unless the blob
    /// appeared while they were removed (a concurrent put), when they were kept.
    pub dangling: u64,
    /// Listed entries that could not be read as an entry (reported, left in place: see
    /// docs/remote-index.md).
    pub unreadable: u64,
    /// Listed entries written too recently to be checked (a put may still be storing their
    /// blob).
    pub recent: u64,
}

impl AliasRebuild {
    /// The sum of two reports (of replicas, or of batches).
    pub fn add(&mut self, other: &AliasRebuild) {
        self.indexed += other.indexed;
        self.added += other.added;
        self.corrected += other.corrected;
        self.removed += other.removed;
        self.listed += other.listed;
        self.dangling += other.dangling;
        self.unreadable += other.unreadable;
        self.recent += other.recent;
    }
}

/// How a commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The blob was published by this commit.
    Stored,
    /// A blob with this key was already there; the upload was discarded.
    AlreadyPresent,
}

/// What [`Backend::delete_unless_written_since`] did with a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgedDelete {
    /// Deleted by this call.
    Deleted,
    /// Stored, and left in place: written after the cutoff, or its time is unknown.
    Kept,
    /// Not there: deleted by someone else since the caller saw it listed (another gc, an `rm`).
    Gone,
}

/// An upload in progress. Bytes are invisible until [`commit`](BlobWriter::commit).
#[async_trait]
pub trait BlobWriter: Send {
    /// Appends bytes.
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Hands every byte written so far to storage without publishing anything, for a caller that
    /// has time to spare now (waiting on a slower stage, such as tarball inspection) and wants
    /// `commit` to have less left to do. Writers that buffer nothing need not override it.
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// Says the last byte has been written: the writer may write out what it buffers and release
    /// what only writing needed (an open file), since `commit` may come much later, with a whole
    /// batch ([`Backend::commit_batch`]). No `write` follows. By default, a [`flush`](Self::flush).
    async fn finish_writes(&mut self) -> Result<()> {
        self.flush().await
    }
    /// Publishes the bytes written so far under `digests`' sha512 key, which the store has verified.
    /// Must not overwrite an existing blob (create-only), and must record the digests so
    /// [`Backend::resolve_alias`] can find the blob by sha1 or blake3.
    async fn commit(self: Box<Self>, digests: &Digests) -> Result<Committed>;
    /// Discards the upload, leaving nothing behind.
    async fn abort(self: Box<Self>) -> Result<()>;
    /// For [`Backend::commit_batch`] implementations that need their concrete writer back.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

/// A place to keep blobs. See the [module documentation](self) for the contract; the conformance
/// suite in `tests/conformance` checks it for every backend.
#[async_trait]
pub trait Backend: fmt::Debug + Send + Sync + 'static {
    /// A short description for errors and logs, e.g. `fs:/var/lib/tarvault`.
    fn describe(&self) -> String;

    /// Starts an upload.
    async fn begin_put(&self, hint: &PutHint) -> Result<Box<dyn BlobWriter>>;

    /// Commits several verified uploads at once. Backends that can make a batch durable more cheaply
    /// than one blob at a time override this; the default commits them one by one.
    async fn commit_batch(&self, items: Vec<PendingBlob>) -> Vec<Result<Committed>> {
        let mut out = Vec::with_capacity(items.len());
        for (writer, digests) in items {
            out.push(writer.commit(&digests).await);
        }
        out
    }

    /// Reads a blob, or a byte range of it. `Ok(None)` if the key is not stored.
    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<Option<GetResult>>;

    /// Reads a whole blob from the store of record, around any cache tier: for a pass over the
    /// store (fsck, scrub, copy), which must check the remote's copy, not the cache's, and which
    /// would otherwise fill the cache with every blob and push out what readers use. A cache tier
    /// neither reads nor keeps a copy. The bytes are not vouched for as [`get`](Backend::get)'s
    /// may be, whatever [`verifies_reads_whole`](Backend::verifies_reads_whole) says: the caller
    /// checks them against the key. The default is `get` of the whole blob.
    async fn get_uncached(&self, key: &BlobKey) -> Result<Option<GetResult>> {
        self.get(key, None).await
    }

    /// Facts about a blob without reading it; `Ok(None)` if not stored.
    async fn head(&self, key: &BlobKey) -> Result<Option<BlobStat>>;

    /// A blob's size (`Ok(None)`: not stored) if the backend can tell without blocking a runtime
    /// thread for long, i.e. with one local `stat`; `None` if it cannot (the default), and then
    /// the caller uses [`Backend::head`]. For hot paths that need only existence, such as an HTTP
    /// revalidation answered with a 304: a round trip through the blocking pool costs more than
    /// the `stat` itself.
    fn size_now(&self, _key: &BlobKey) -> Option<Result<Option<u64>>> {
        None
    }

    /// Whether a blob is stored, if the backend can tell as [`size_now`](Backend::size_now)
    /// can; `None` if it cannot. For an HTTP revalidation of a `GET` answered with a 304, which
    /// names no size: the default asks `size_now`, and a backend whose `size_now` checks more
    /// than existence (the fs compares the file's size with its record, an index lookup that
    /// halved a server's 304s per second) answers with less.
    fn exists_now(&self, key: &BlobKey) -> Option<Result<bool>> {
        self.size_now(key)
            .map(|size| size.map(|size| size.is_some()))
    }

    /// Whether every [`get`](Backend::get) reads the whole blob and verifies it against its
    /// sha512 before it yields a byte (and yields none of a blob with no good copy, only its
    /// [`Error::Corrupt`]): the compose wrappers, which serve a copy they
    /// hold and have checked. A caller that verifies a blob whole before passing its first byte
    /// on (`tarvault serve` does for blobs up to 64 MiB where a second read is local) then need
    /// not read it a second time. Such a backend also vouches for the digests its reads hand out
    /// ([`GetResult::digests`]: checked against the bytes, or a trusted record they were checked
    /// against), so a store checks the bytes it serves against their blake3 rather than hashing
    /// sha512 again. The default: `None`, bytes are checked only as the caller's stream hashes
    /// them. Only this crate's wrappers can answer `Some` ([`Vouched`]); a wrapper outside it
    /// passes on its inner backend's answer, if it serves that backend's reads unchanged.
    fn verifies_reads_whole(&self) -> Option<Vouched> {
        None
    }

    /// Deletes a blob. `Ok(false)` if it was not there.
    async fn delete(&self, key: &BlobKey) -> Result<bool>;

    /// Deletes a blob unless it was written after `cutoff` (put, or put again: see
    /// [`freshen`](Backend::freshen)), or its time is unknown: gc's delete, which must not take a
    /// blob a put has just found stored. The answer tells a blob kept from one already gone, so
    /// that gc does not count a blob another process deleted as one it kept. The default asks
    /// [`head`](Backend::head) and then deletes, two steps a put can come between (a remote
    /// object's time is its first put's anyway); the fs backend decides in the step that takes
    /// the blob away, under its index's write lock.
    ///
    /// [`AgedDelete::Gone`] is as good as the backend's [`delete`](Backend::delete) can tell: S3
    /// answers a `DELETE` alike whether or not the object is there, so an object deleted by
    /// someone else between the `HEAD` before it and the `DELETE` counts as
    /// [`Deleted`](AgedDelete::Deleted) (as does, on Manta, a `DELETE` retried after an answer
    /// that was lost).
    async fn delete_unless_written_since(
        &self,
        key: &BlobKey,
        cutoff: std::time::SystemTime,
    ) -> Result<AgedDelete> {
        Ok(match self.head(key).await? {
            Some(stat) if stat.modified.is_some_and(|t| t <= cutoff) => {
                match self.delete(key).await? {
                    true => AgedDelete::Deleted,
                    false => AgedDelete::Gone,
                }
            }
            Some(_) => AgedDelete::Kept,
            None => AgedDelete::Gone,
        })
    }

    /// Marks a stored blob as written now, for a put of bytes that were stored already, and then
    /// says what [`head_of_record`](Backend::head_of_record) says of it: gc's grace period
    /// ([`crate::ops::gc`]) counts from a blob's last put, so that a publish which finds its
    /// tarball stored (and has not reached gc's live set yet) does not lose it, and a put that
    /// writes nothing because the blob is stored learns, in the same call, whether it is. The
    /// default marks nothing and is `head_of_record`: a remote object's time is the server's, and
    /// changing it means copying it.
    async fn freshen(&self, key: &BlobKey) -> Result<Presence> {
        self.head_of_record(key).await
    }

    /// What [`head`](Backend::head) says of a blob where it is kept for good, for a put deciding
    /// whether it need write anything: a cache tier asks its remote, not its local copy (which may
    /// outlive the remote's), and a replicated store answers [`Presence::Held`] only for a blob
    /// every replica holds at one size, and [`Presence::Partly`] for one some replica lacks or
    /// holds at another size (a put writes it there). The default is `head`'s answer: a backend
    /// keeping each blob in one place has it or not.
    async fn head_of_record(&self, key: &BlobKey) -> Result<Presence> {
        Ok(self.head(key).await?.into())
    }

    /// Whether the stored copy of `key` still has the digests `record` (the backend's own trusted
    /// record of it, from [`head`](Backend::head)), where reading it back is local and cheap: a
    /// put that would write nothing because the blob is stored asks first, so that putting the
    /// right bytes again replaces a copy damaged in place (bit rot of the same size, which a
    /// `head` cannot see) instead of leaving it. The fs backend hashes a file of up to 8 MiB with
    /// blake3 (several GB/s, from the page cache) and answers `false` for a larger one, whose
    /// read from the disk would cost more than the put's own copy: that copy then replaces it.
    /// The default says yes: a remote copy is checked by each verified read and by fsck, not
    /// read back whole by every put.
    async fn copy_holds(&self, key: &BlobKey, record: &Digests) -> Result<bool> {
        let _ = (key, record);
        Ok(true)
    }

    /// Every stored key, in no particular order.
    fn list(&self) -> BoxStream<'static, Result<BlobKey>>;

    /// A record, kept beside this backend's blobs and shared by every process using it, of what a
    /// cache tier ([`Cached`](compose::Cached)) with this backend as its local tier holds: see
    /// [`CacheLedger`]. `None` (the default): the cache keeps that record in memory, and rebuilds
    /// it from a listing each time it starts.
    fn cache_ledger(&self) -> Result<Option<std::sync::Arc<dyn CacheLedger>>> {
        Ok(None)
    }

    /// Every stored blob with what [`head`](Backend::head) knows of it, in no particular order.
    /// The default heads the listed keys, [`LIST_HEADS`] at a time (a remote store's round trips
    /// overlap); a backend that can do better in one pass overrides it.
    fn list_stat(self: std::sync::Arc<Self>) -> BoxStream<'static, Result<BlobStat>> {
        use futures::StreamExt;
        let backend = self.clone();
        self.list()
            .map(move |k| {
                let backend = backend.clone();
                async move { backend.head(&k?).await }
            })
            .buffer_unordered(LIST_HEADS)
            .filter_map(|r: Result<Option<BlobStat>>| async move { r.transpose() })
            .boxed()
    }

    /// Every stored blob with its size and modification time, in no particular order, for what
    /// needs no digests (gc, a plain `ls`, a cache taking in its local tier): `digests` only where
    /// they come free. The default is [`list_stat`](Backend::list_stat); an object store
    /// overrides it with what its listing returns, with no request per blob (a `HEAD` per blob
    /// of a store of 40M is 40M round trips, where the listing is 40,000 pages).
    fn list_meta(self: std::sync::Arc<Self>) -> BoxStream<'static, Result<BlobStat>> {
        self.list_stat()
    }

    /// The listings, as [`list_meta`](Backend::list_meta) gives them, of every copy that
    /// [`head_of_record`](Backend::head_of_record) asks about: a blob counts as kept for good
    /// only where each of them lists it, at one size. One per replica of a replicated store (a
    /// copy into it counts a blob as had only where every replica lists it at the source's
    /// size, with no request per blob), the remote's of a cache tier; the default is
    /// `list_meta` alone.
    fn listings_of_record(self: std::sync::Arc<Self>) -> Vec<BoxStream<'static, Result<BlobStat>>> {
        vec![self.list_meta()]
    }

    /// Finds the blob whose sha1 or blake3 digest is `hash`, using the alias index kept at commit.
    /// A backend with no way to look up by `hash`'s algorithm (an `http://` store by blake3)
    /// fails with [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) rather than answer
    /// `None`, which would claim the blob is absent.
    async fn resolve_alias(&self, hash: &Hash) -> Result<Option<BlobKey>>;

    /// Makes a blob that a put found stored, and wrote nothing for (its sha512 was given), as
    /// findable by its sha1 and blake3 as a put that stores it leaves it: a remote store's alias
    /// markers may be missing (an earlier put failed after its blob's PUT), and no commit writes
    /// them. The default does nothing: the fs and memory backends keep the aliases in the record
    /// a put finds whole before it skips writing.
    async fn index_stored(&self, digests: &Digests) -> Result<()> {
        let _ = digests;
        Ok(())
    }

    /// Repairs the alias index from what a scan found by re-hashing every blob (`fsck`): merges
    /// each of `found` into the index (adding missing entries, correcting wrong ones) and removes
    /// entries whose blob is gone. `found` streams, so memory stays flat whatever the store's
    /// size, and the rebuild runs while the scan does. It must never lose an entry that another
    /// writer (another process's put) commits meanwhile. `options` say what to do with entries
    /// whose blob is gone, and how fast to look for them.
    async fn rebuild_aliases(
        &self,
        found: BoxStream<'_, Digests>,
        options: &RebuildOptions,
    ) -> Result<AliasRebuild>;

    /// Moves a corrupt blob out of the way, keeping its bytes for inspection where the backend can.
    /// The default deletes it.
    async fn quarantine(&self, key: &BlobKey) -> Result<bool> {
        self.delete(key).await
    }

    /// Whether the digests this backend records at commit (returned by [`Backend::head`]) can be
    /// trusted to verify reads: `Some` only where tarvault itself keeps them, beside the bytes
    /// and apart from them (fs, memory), and for this crate's wrappers when every member's are.
    /// A remote server's metadata comes from the same place as the bytes, so a lying server could
    /// lie about both, and reads from it are verified against the address itself. Only this crate
    /// can make the token ([`Vouched`]): a backend written outside it has its reads checked
    /// against their sha512 however it keeps its records, since a claim made by mistake would let
    /// a record forged or damaged together with the bytes pass them; a wrapper outside it may pass
    /// on its inner backend's answer, if it hands out that backend's records and bytes unchanged.
    fn recorded_digests_trusted(&self) -> Option<Vouched> {
        None
    }

    /// Finds blob files stored outside the place their name gives them, which [`Backend::list`]
    /// does not list and reads cannot find, and moves each whose bytes verify to its place unless
    /// something is there already; never deletes bytes. For `fsck`, before its scan, so that the
    /// blobs put back are verified and indexed. Reports every file it found in the count of a
    /// [`Sample`] and the first of them in full (each is logged as it is found), and how many it
    /// moved back. The default finds
    /// none (a store whose keys are its only names has no other place to put a blob).
    async fn restore_misplaced(&self) -> Result<Misplaced> {
        Ok(Misplaced::default())
    }

    /// Removes leftovers of uploads that died (temp files, abandoned multipart uploads).
    /// Returns how many were removed.
    async fn sweep(&self) -> Result<u64> {
        Ok(0)
    }
}

/// Checks a requested range against a blob size, as every backend must.
pub fn check_range(range: &Range<u64>, size: u64) -> Result<()> {
    if range.start > range.end || range.end > size {
        return Err(range_outside(range, size));
    }
    Ok(())
}

/// The error of a `range` that is not within a blob of `size` bytes, or ends before it starts.
pub(crate) fn range_outside(range: &Range<u64>, size: u64) -> Error {
    if range.start > range.end {
        return Error::InvalidInput(format!(
            "range {}..{} ends before it starts",
            range.start, range.end
        ));
    }
    Error::InvalidInput(format!(
        "range {}..{} is outside a blob of {size} bytes",
        range.start, range.end
    ))
}
