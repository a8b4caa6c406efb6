//! The bytes of a large blob written around the page cache (`O_DIRECT`, Linux).
//!
//! Why: on the VM this store is measured on, a buffered write costs 0.4 to 2.7 s of system CPU
//! per GiB (allocating page cache, worst in memory the host has just taken back), where the same
//! GiB written with `O_DIRECT` costs 0.18 s and reaches the disk at 1.5 GB/s. A large put hashes
//! sha512 on one core and does everything else on the other, so that system time decided whether
//! the put ran at the speed of sha512 (docs/ingest.md, "A large put's writes around the page
//! cache"). A large blob is also the one least likely to be read back at once.
//!
//! Only writes that reach a threshold go direct (from the flush that reaches it): small blobs, and
//! the first bytes of every blob, still go through the page cache. `O_DIRECT` asks for buffers,
//! lengths and offsets aligned to the device's block: every direct write here is a whole number of
//! 4 KiB blocks at an aligned offset, copied into an aligned buffer; the unaligned head and tail of
//! each flush are written through the page cache with the flag cleared (Linux lets `fcntl` switch
//! it on an open file). A filesystem that refuses the flag (tmpfs, some network filesystems) gets
//! buffered writes, as everywhere but Linux.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};

use bytes::Bytes;

/// The alignment of every direct write: buffer, length and file offset. 4 KiB covers the logical
/// block size of every common device.
const ALIGN: usize = 4096;

/// The aligned buffer's size: one direct write.
const DIRECT_CHUNK: usize = 1 << 20;

/// How an upload's bytes reach its temp file, and how many it has written.
#[derive(Debug)]
pub(super) struct Writes {
    /// Bytes written to the file so far (its length, and the offset of the next write).
    written: u64,
    /// A flush that brings the file to this many bytes or more goes direct; `None` for buffered
    /// writes only.
    direct_from: Option<u64>,
    /// Whether the file has `O_DIRECT` set now.
    direct_on: bool,
    /// Bytes written directly, for the tests.
    direct_bytes: u64,
    /// `DIRECT_CHUNK + ALIGN` bytes, of which the aligned middle is used; empty until needed.
    buf: Vec<u8>,
}

impl Writes {
    /// Writes of a new file; a flush that brings it to `direct_from` bytes or more goes around the
    /// page cache.
    pub(super) fn new(direct_from: Option<u64>) -> Writes {
        Writes {
            written: 0,
            direct_from: direct_from.filter(|_| cfg!(target_os = "linux")),
            direct_on: false,
            direct_bytes: 0,
            buf: Vec::new(),
        }
    }

    /// Frees the aligned buffer: called once the upload's bytes are all written, so that a batch
    /// of large uploads waiting for their commit holds no buffers.
    pub(super) fn release_buffer(&mut self) {
        self.buf = Vec::new();
    }

    /// Bytes written directly so far.
    #[cfg(test)]
    pub(super) fn direct_bytes(&self) -> u64 {
        self.direct_bytes
    }

    /// Appends `chunks` to `file`: once the flush reaches the threshold, its aligned middle
    /// directly and its unaligned head and tail through the page cache.
    pub(super) fn write(&mut self, file: &mut File, chunks: Vec<Bytes>) -> io::Result<()> {
        let total: usize = chunks.iter().map(Bytes::len).sum();
        let mut rest = Pieces::new(chunks);
        let direct = self
            .direct_from
            .is_some_and(|from| self.written + total as u64 >= from);
        if direct {
            // The head: buffered up to the next aligned offset.
            let head = (ALIGN - (self.written % ALIGN as u64) as usize) % ALIGN;
            self.buffered(file, &mut rest, head.min(total))?;
            let body = rest.left() / ALIGN * ALIGN;
            self.direct(file, &mut rest, body)?;
        }
        let tail = rest.left();
        self.buffered(file, &mut rest, tail)
    }

    /// Writes the next `n` bytes of `rest` through the page cache.
    fn buffered(&mut self, file: &mut File, rest: &mut Pieces, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        if self.direct_on {
            set_direct(file, false)?;
            self.direct_on = false;
        }
        let mut left = n;
        while left > 0 {
            let piece = rest.next_piece(left);
            file.write_all(piece)?;
            left -= piece.len();
            self.written += piece.len() as u64;
        }
        Ok(())
    }

    /// Writes the next `n` bytes of `rest` (a multiple of `ALIGN`, at an aligned offset) around
    /// the page cache, or through it where the filesystem will not.
    fn direct(&mut self, file: &mut File, rest: &mut Pieces, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        if !self.direct_on {
            if set_direct(file, true).is_err() {
                tracing::debug!("O_DIRECT refused here: large blobs go through the page cache");
                self.direct_from = None;
                return self.buffered(file, rest, n);
            }
            self.direct_on = true;
        }
        if self.buf.is_empty() {
            self.buf = vec![0; DIRECT_CHUNK + ALIGN];
        }
        let start = self.buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        let mut left = n;
        while left > 0 {
            let len = left.min(DIRECT_CHUNK);
            let Some(aligned) = self.buf.get_mut(start..start + len) else {
                return Err(io::Error::other("direct-write buffer out of range"));
            };
            rest.copy_to(aligned);
            let mut done = 0;
            while done < len {
                match file.write(&aligned[done..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(k) => done += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        // An alignment this filesystem does not take after all: the rest of the
                        // blob, from where the kernel stopped, through the page cache.
                        tracing::debug!(error = %e, "direct write refused: buffered from here");
                        set_direct(file, false)?;
                        self.direct_on = false;
                        self.direct_from = None;
                        file.write_all(&aligned[done..])?;
                        done = len;
                    }
                    Err(e) => return Err(e),
                }
            }
            self.direct_bytes += if self.direct_on { len as u64 } else { 0 };
            self.written += len as u64;
            left -= len;
        }
        Ok(())
    }
}

/// The bytes of a flush, consumed front to back.
struct Pieces {
    chunks: VecDeque<Bytes>,
    /// The piece [`next_piece`](Pieces::next_piece) returned last.
    held: Bytes,
}

impl Pieces {
    fn new(chunks: Vec<Bytes>) -> Pieces {
        Pieces {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
            held: Bytes::new(),
        }
    }

    fn left(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    /// The next piece, of at most `max` bytes and within one chunk, consumed.
    fn next_piece(&mut self, max: usize) -> &[u8] {
        self.held = match self.chunks.front_mut() {
            Some(front) if front.len() > max => front.split_to(max),
            _ => self.chunks.pop_front().unwrap_or_default(),
        };
        &self.held
    }

    /// Fills `dst` with the next `dst.len()` bytes (the caller knows that many are left).
    fn copy_to(&mut self, dst: &mut [u8]) {
        let mut filled = 0;
        while filled < dst.len() {
            let piece = self.next_piece(dst.len() - filled);
            if piece.is_empty() {
                return;
            }
            dst[filled..filled + piece.len()].copy_from_slice(piece);
            filled += piece.len();
        }
    }
}

/// Sets or clears `O_DIRECT` on an open file.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is an open file descriptor for the duration of both calls.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let wanted = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    if wanted == flags {
        return Ok(());
    }
    // SAFETY: as above; F_SETFL only changes the descriptor's status flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, wanted) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Elsewhere there is no `O_DIRECT` to set (`Writes::new` never asks for it there).
#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, on: bool) -> io::Result<()> {
    if on {
        Err(io::ErrorKind::Unsupported.into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Whether this directory's filesystem takes `O_DIRECT` at all.
    fn direct_supported(dir: &std::path::Path) -> bool {
        let probe = dir.join("probe");
        let file = File::create(&probe);
        cfg!(target_os = "linux") && file.is_ok_and(|f| set_direct(&f, true).is_ok())
    }

    #[test]
    fn unaligned_flushes_come_out_whole_and_mostly_direct() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir");
        let path = dir.path().join("blob");
        let mut file = File::create(&path).expect("create");
        let mut writes = Writes::new(Some(10_000));
        let mut expected = Vec::new();
        // Flushes of odd sizes made of odd chunks: heads and tails unaligned, a body larger than
        // the aligned buffer, an empty flush, and chunks of one byte.
        let flushes: Vec<Vec<usize>> = vec![
            vec![3000],
            vec![5000, 1, 4095],
            vec![],
            vec![1_000_003, 2_200_001],
            vec![1, 1, 1],
            vec![4096 * 3],
            vec![77_777],
        ];
        for (f, sizes) in flushes.iter().enumerate() {
            let chunks: Vec<Bytes> = sizes
                .iter()
                .enumerate()
                .map(|(c, &n)| Bytes::from(pattern(n, (f * 7 + c) as u8)))
                .collect();
            for c in &chunks {
                expected.extend_from_slice(c);
            }
            writes.write(&mut file, chunks).expect("write");
        }
        drop(file);
        let mut got = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut got))
            .expect("read back");
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ after direct writes");
        assert_eq!(writes.written, expected.len() as u64);
        if direct_supported(dir.path()) {
            // All but the first flush's bytes, the heads and the tails went direct.
            assert!(
                writes.direct_bytes() > 3_000_000,
                "only {} bytes went direct",
                writes.direct_bytes()
            );
        } else {
            eprintln!(
                "skipped the direct share: O_DIRECT not supported in {:?}",
                dir.path()
            );
        }
    }

    #[test]
    fn below_the_threshold_nothing_goes_direct() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir");
        let mut file = File::create(dir.path().join("blob")).expect("create");
        let mut writes = Writes::new(Some(1 << 20));
        writes
            .write(&mut file, vec![Bytes::from(pattern(500_000, 1))])
            .expect("write");
        writes
            .write(&mut file, vec![Bytes::from(pattern(500_000, 2))])
            .expect("write");
        assert_eq!(writes.direct_bytes(), 0);
        let mut off = Writes::new(None);
        off.write(&mut file, vec![Bytes::from(pattern(4 << 20, 3))])
            .expect("write");
        assert_eq!(off.direct_bytes(), 0);
    }
}
