//! Reading blobs back: open, stat, record lookup and (for a small blob) the bytes, in as few trips
//! off the async worker as possible.
//!
//! A registry's reads are mostly tarballs of a few hundred KiB that sit in the page cache. Each hop
//! to the blocking pool and back costs a pair of thread wake-ups, which on `serve` cost more than
//! the read itself. So on Linux a small read is first tried in place with `RWF_NOWAIT`, which the
//! kernel completes only from the page cache and otherwise refuses instead of blocking; anything
//! that would wait on the disk goes to the blocking pool as before.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use super::{read_ahead, FsInner};
use crate::backend::budget::{self, Charge};
use crate::backend::{check_range, BlobKey, GetResult};
use crate::integrity::Digests;
use crate::{Error, Result};

/// A stream's chunk: what one read of a longer blob takes.
pub(super) const READ_CHUNK: usize = 1 << 20;
/// Blobs (and ranges) up to this size are read in one piece while the store's read budget has
/// room for them, and come back as a single chunk: the verified read then checks the whole blob
/// before it yields a byte, and a server sends its head only after that, with no second read (a
/// blob in several chunks is read and verified whole first, then read again to be sent: that
/// cost the corpus's full GETs 20% of their rate). Larger blobs are written around the page
/// cache ([`DIRECT_WRITES_FROM`](super::DIRECT_WRITES_FROM)), so they are streamed.
const ONE_PIECE_MAX: usize = super::DIRECT_WRITES_FROM as usize;
/// One-piece reads up to this size are tried in place, from the page cache; a larger copy would
/// hold a runtime thread for long.
const IN_PLACE_MAX: usize = 1 << 20;

/// An opened blob.
struct Opened {
    size: u64,
    digests: Option<Digests>,
    body: Body,
}

enum Body {
    /// The requested bytes, read already.
    Read(Bytes),
    /// A small read the page cache could not serve: one blocking read, charged already.
    Unread(File, PathBuf, Range<u64>, Option<Charge>),
    /// Left to readers on the blocking pool ([`read_ahead`]).
    Stream(File, PathBuf, Range<u64>),
}

pub(super) async fn get(
    inner: Arc<FsInner>,
    key: BlobKey,
    range: Option<Range<u64>>,
) -> Result<Option<GetResult>> {
    let opened = match open_in_place(&inner, &key, range.clone()) {
        Some(done) => done?,
        None => {
            let inner = inner.clone();
            tokio::task::spawn_blocking(move || open(&inner, &key, range))
                .await
                .map_err(Error::Task)??
        }
    };
    let Some(opened) = opened else {
        return Ok(None);
    };
    let stream = match opened.body {
        Body::Read(bytes) => once(bytes),
        Body::Unread(file, path, range, charge) => {
            // Allocated here, on the runtime thread that frees it (see `read_ahead`): a piece of
            // up to 8 MiB allocated on a blocking thread stayed in that thread's malloc arena.
            let buf = Vec::with_capacity((range.end - range.start) as usize);
            let read = move || read_exact_at(&file, &path, range.start, buf, charge);
            once(
                tokio::task::spawn_blocking(read)
                    .await
                    .map_err(Error::Task)??,
            )
        }
        Body::Stream(file, path, range) => {
            read_ahead::stream(file, path, range, inner.read_budget.clone())
        }
    };
    Ok(Some(GetResult {
        size: opened.size,
        stream,
        digests: opened.digests,
        verified_whole: None,
    }))
}

/// A stream of the bytes read already (none for an empty blob).
fn once(bytes: Bytes) -> BoxStream<'static, Result<Bytes>> {
    stream::iter((!bytes.is_empty()).then_some(Ok(bytes))).boxed()
}

/// Opens, stats, looks up the record and reads a small blob, blocking as it must.
fn open(inner: &FsInner, key: &BlobKey, range: Option<Range<u64>>) -> Result<Option<Opened>> {
    let path = inner.layout.blob(key);
    let Some((file, size, range)) = open_file(&path, range)? else {
        return Ok(None);
    };
    let digests = inner.recorded(key);
    let body = match whole(inner, &range) {
        Some(charge) => {
            let len = (range.end - range.start) as usize;
            let buf = Vec::with_capacity(len);
            Body::Read(read_exact_at(&file, &path, range.start, buf, charge)?)
        }
        None => Body::Stream(file, path, range),
    };
    Ok(Some(opened(size, digests, body)))
}

/// [`open`] without blocking on the disk: `None` when it would have to (the bytes are not all in
/// the page cache); then the caller takes the blocking pool. The open, the stat and the index
/// lookup run in place, like `Backend::size_now`: on a warm cache each takes microseconds.
fn open_in_place(
    inner: &FsInner,
    key: &BlobKey,
    range: Option<Range<u64>>,
) -> Option<Result<Option<Opened>>> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let path = inner.layout.blob(key);
    let (file, size, range) = match open_file(&path, range) {
        Ok(Some(found)) => found,
        Ok(None) => return Some(Ok(None)),
        Err(e) => return Some(Err(e)),
    };
    let digests = inner.recorded(key);
    let body = match whole(inner, &range) {
        Some(charge) => {
            let len = (range.end - range.start) as usize;
            match (len <= IN_PLACE_MAX)
                .then(|| read_cached(&file, range.start, len))
                .flatten()
            {
                Some(buf) => Body::Read(budget::charged(buf, charge)),
                None => Body::Unread(file, path, range, charge),
            }
        }
        None => Body::Stream(file, path, range),
    };
    Some(Ok(Some(opened(size, digests, body))))
}

/// Whether `range` is read in one piece, with its charge to the store's read budget: a range of up
/// to [`ONE_PIECE_MAX`] is, if the budget has room for it or it is no larger than a floor chunk;
/// any other streams ([`read_ahead`]), in floor chunks while the budget stays spent.
fn whole(inner: &FsInner, range: &Range<u64>) -> Option<Option<Charge>> {
    let len = usize::try_from(range.end - range.start)
        .ok()
        .filter(|&len| len <= ONE_PIECE_MAX)?;
    inner.read_budget.piece(len)
}

fn opened(size: u64, digests: Option<Digests>, body: Body) -> Opened {
    // A record that disagrees with the file's size is no record of this file.
    let digests = digests.filter(|d| d.size == size);
    Opened {
        size,
        digests,
        body,
    }
}

/// Opens a blob file and checks the range against its size (the whole blob by default).
fn open_file(path: &Path, range: Option<Range<u64>>) -> Result<Option<(File, u64, Range<u64>)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let size = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let range = range.unwrap_or(0..size);
    check_range(&range, size)?;
    Ok(Some((file, size, range)))
}

/// Reads `len` bytes at `offset` only if the page cache holds them all (`RWF_NOWAIT`); `None`
/// otherwise, or on any error (the blocking path will meet it again and report it).
#[cfg(target_os = "linux")]
fn read_cached(file: &File, offset: u64, len: usize) -> Option<Vec<u8>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Set once the kernel turns out not to know `RWF_NOWAIT` (before Linux 4.14, or a filesystem
    /// without it), so that every later read goes straight to the blocking pool.
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return None;
    }
    match pread(file, offset, Vec::with_capacity(len), libc::RWF_NOWAIT) {
        // A file that shrank: let the blocking read decide.
        Ok(bytes) => (bytes.len() == len).then_some(bytes),
        // EAGAIN (not cached), or an error.
        Err(e) => {
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS)
            ) {
                UNSUPPORTED.store(true, Ordering::Relaxed);
            }
            None
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_file: &File, _offset: u64, _len: usize) -> Option<Vec<u8>> {
    None
}

/// Reads `buf`'s capacity in bytes at `offset`, fewer if the file ends first, into `buf` (empty,
/// not zero-filled first), with `preadv2` and `flags` (`RWF_NOWAIT`: from the page cache only).
/// A positioned read leaves the file's cursor alone, so several chunks of one file are read at
/// once ([`read_ahead`]).
#[cfg(target_os = "linux")]
pub(super) fn pread(
    file: &File,
    offset: u64,
    mut buf: Vec<u8>,
    flags: libc::c_int,
) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let len = buf.capacity();
    while buf.len() < len {
        let spare = buf.spare_capacity_mut();
        let iov = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: spare.len(),
        };
        let at = libc::off_t::try_from(offset + buf.len() as u64)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: the iovec covers exactly the vector's spare capacity, which the kernel may write;
        // `set_len` below counts only the bytes it reports written.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at, flags) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        // SAFETY: the kernel initialised `n` more bytes, and n <= spare length.
        unsafe { buf.set_len(buf.len() + n as usize) };
    }
    Ok(buf)
}

/// [`pread`] elsewhere: a zero-filled buffer, read by the standard library's positioned reads.
#[cfg(not(target_os = "linux"))]
pub(super) fn pread(
    file: &File,
    offset: u64,
    mut buf: Vec<u8>,
    _flags: i32,
) -> std::io::Result<Vec<u8>> {
    let len = buf.capacity();
    buf.resize(len, 0);
    let mut done = 0;
    while done < len {
        let at = offset + done as u64;
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(file, &mut buf[done..], at);
        #[cfg(windows)]
        let n = std::os::windows::fs::FileExt::seek_read(file, &mut buf[done..], at);
        match n {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// `buf`'s capacity in bytes at `offset` of `file`, blocking. If the file shrank under us this
/// returns what there is, and verification fails loudly.
fn read_exact_at(
    file: &File,
    path: &Path,
    offset: u64,
    buf: Vec<u8>,
    charge: Option<Charge>,
) -> Result<Bytes> {
    pread(file, offset, buf, 0)
        .map(|buf| budget::charged(buf, charge))
        .map_err(|e| Error::io("read", path, e))
}

/// Stored copies up to this size are hashed before a put of the same bytes leaves them in place;
/// a larger one is replaced by the put's own verified copy instead ([`Found::Unchecked`]). A copy
/// this small was written through the page cache (see
/// [`DIRECT_WRITES_FROM`](super::DIRECT_WRITES_FROM)) and nearly always reads from it, in a few
/// milliseconds at most; a GiB written around the cache reads back from the disk, which here
/// took 2 s, more than the put itself, while the put's copy is written already. Nearly every npm
/// tarball is under it.
const HASHED_BEFORE_KEPT_UP_TO: u64 = super::DIRECT_WRITES_FROM;

/// What a put of a blob found in the blob's place (see [`file_has`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// No file (gone meanwhile): a put links its own copy in its place rather than replacing.
    Gone,
    /// A file of the record's size and blake3: left in place.
    Holds,
    /// A file of another size, or with another blake3: damaged, and replaced.
    Damaged,
    /// A file of the record's size, too large to hash in place (over
    /// [`HASHED_BEFORE_KEPT_UP_TO`]): a put that has written its own verified copy puts that
    /// one in its place, so that a put of the right bytes repairs a copy damaged in place at any
    /// size.
    Unchecked,
}

/// What the file at `path` is to `record` (its size, and up to [`HASHED_BEFORE_KEPT_UP_TO`] its
/// blake3): a stored copy checked before a put of the same bytes leaves it in place (see
/// [`Backend::copy_holds`](crate::backend::Backend::copy_holds)).
pub(super) fn file_has(path: &Path, record: &Digests) -> std::io::Result<Found> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Gone),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() != record.size {
        return Ok(Found::Damaged);
    }
    if record.size > HASHED_BEFORE_KEPT_UP_TO {
        return Ok(Found::Unchecked);
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::io::BufReader::with_capacity(READ_CHUNK, file))?;
    Ok(if hasher.finalize().as_bytes() == &record.blake3 {
        Found::Holds
    } else {
        Found::Damaged
    })
}
