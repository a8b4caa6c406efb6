//! A file read as a stream of large chunks by one blocking task, into a few recycled buffers.
//!
//! A large put is bound by sha512 on one core; everything else (sha1, blake3, reading, writing)
//! has to fit on the other. Reading through `tokio::fs::File` costs a trip to the blocking pool
//! and an extra copy (tokio's own buffer into the stream's) per 256 KiB, and a fresh allocation
//! per chunk, which an allocator left at its defaults may serve from `mmap` with a page fault per
//! page. Here one blocking task reads the whole file with plain `read`s into 512 KiB buffers that
//! come back to it once every holder (the hashing threads, the writer) has dropped its chunk.

use std::fs::File;
use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

/// Bytes per chunk: large, so per-chunk costs (channel hand-offs, wake-ups of the hashing
/// threads) vanish, and small enough that the chunks in flight stay within a few MiB.
pub(super) const CHUNK: usize = 512 * 1024;

/// Chunks read ahead of the consumer.
const AHEAD: usize = 2;

/// Buffers kept for reuse. More may be in flight when a consumer holds chunks for longer (a
/// remote writer gathering a multipart part): the reader then allocates rather than waits, so it
/// can never deadlock on its own buffers.
const KEPT: usize = 8;

/// The chunks of `file`, read to its end on a blocking task. Dropping the stream stops the reads.
pub(super) fn file_chunks(file: File) -> impl Stream<Item = io::Result<Bytes>> + Send + Unpin {
    let (tx, mut rx) = mpsc::channel(AHEAD);
    tokio::task::spawn_blocking(move || read_all(file, &tx));
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A chunk's bytes; its buffer goes back to the reader when the last `Bytes` of it is dropped.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    home: SyncSender<Vec<u8>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // A full pool (or a reader gone) just frees the buffer.
        let _ = self.home.try_send(std::mem::take(&mut self.buf));
    }
}

fn read_all(mut file: File, tx: &mpsc::Sender<io::Result<Bytes>>) {
    let (home, returned): (SyncSender<Vec<u8>>, Receiver<Vec<u8>>) = sync_channel(KEPT);
    loop {
        let mut buf = returned.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
        let len = match fill(&mut file, &mut buf) {
            Ok(len) => len,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        if len == 0 {
            return;
        }
        let chunk = Bytes::from_owner(Pooled {
            buf,
            len,
            home: home.clone(),
        });
        if tx.blocking_send(Ok(chunk)).is_err() || len < CHUNK {
            // The consumer is gone, or the file has ended (a short fill means end of file).
            return;
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn fill(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = 0;
    while let Some(rest) = buf.get_mut(len..).filter(|r| !r.is_empty()) {
        match file.read(rest) {
            Ok(0) => break,
            Ok(k) => len += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::io::Write;

    /// Every length around the chunk size comes back whole and in order, buffers reused or not.
    #[tokio::test]
    async fn reads_every_byte_in_order() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 12345] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
            let mut file = tempfile::tempfile().expect("temp file");
            file.write_all(&data).expect("write");
            std::io::Seek::rewind(&mut file).expect("rewind");
            let mut out = Vec::new();
            let mut chunks = file_chunks(file);
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.expect("read");
                assert!(chunk.len() <= CHUNK);
                out.extend_from_slice(&chunk);
            }
            assert_eq!(out.len(), data.len());
            assert!(out == data, "{len} bytes differ");
        }
    }
}
