//! Files as put inputs: a small file read whole, in place, by the task that hashes it.
//!
//! A batch of small files is nothing but opens, reads, hashes and writes of a few KiB each. Going
//! through tokio's file costs a trip to the blocking pool and back per open and per read, about
//! what opening and reading a small file in the page cache costs itself, and puts the bytes on
//! another core than the one that hashes them. So a file up to [`READ_WHOLE`] is opened and read
//! whole on the calling task (microseconds, like any small syscall an async task makes); a larger
//! one, or anything but a regular file (a pipe), is streamed through tokio's file in
//! [`READ_CHUNK`] pieces.

use std::io::{self, Read};
use std::path::PathBuf;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

/// Files up to this size are read whole, in place.
pub const READ_WHOLE: u64 = 1024 * 1024;

/// Read size for larger files.
pub const READ_CHUNK: usize = 256 * 1024;

/// The bytes of the file at `path`, opened and read only when the stream is first polled (so a
/// batch of a million inputs holds a handful of files open, not a million). A failure to open or
/// to read (a directory opens, and fails only when read) is an item of the stream naming the path.
///
/// ```no_run
/// # async fn f(store: tarvault::Store) -> tarvault::Result<()> {
/// use tarvault::{file_input, PutOptions};
/// let inputs = ["a.tgz", "b.tgz"].map(|p| (file_input(p), PutOptions::default().label(p)));
/// for result in store.put_batch(inputs.into()).await {
///     println!("{}", result?.digests.integrity());
/// }
/// # Ok(())
/// # }
/// ```
pub fn file_input(path: impl Into<PathBuf>) -> BoxStream<'static, io::Result<Bytes>> {
    let path = path.into();
    let opened = async move {
        match std::fs::File::open(&path) {
            Ok(file) => Ok((file, path)),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("open {}: {e}", path.display()),
            )),
        }
    };
    futures::stream::once(opened)
        .flat_map(|opened| match opened {
            Ok((file, path)) => opened_file_input(file, path),
            Err(e) => futures::stream::iter([Err(e)]).boxed(),
        })
        .boxed()
}

/// Reads a file of about `len` bytes to its end with plain `read` calls: `read_to_end` would ask
/// the size again (an `fstat` and an `lseek` per file) although the caller has just had it.
fn read_whole(mut file: &std::fs::File, len: u64) -> io::Result<Vec<u8>> {
    // One byte more than announced, so a file read whole ends on a zero-length read at once.
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0) + 1];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            // Grown since it was measured: keep reading.
            buf.resize(filled * 2 + 4096, 0);
        }
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// The bytes of an open file, read as [`file_input`] reads them. A failure to read names `path`:
/// an `io::Error` of the same kind wrapping an [`Error::Io`](crate::Error::Io), which a put
/// recovers ([`Error::from_io`](crate::Error::from_io)).
pub(crate) fn opened_file_input(
    file: std::fs::File,
    path: PathBuf,
) -> BoxStream<'static, io::Result<Bytes>> {
    let read = async move {
        let meta = file.metadata()?;
        let len = meta.len();
        // Only a regular file's length says how much a read whole holds: a pipe or a device
        // (`/dev/stdin`, `<(curl …)`) says 0 and may bring gigabytes, so it is streamed.
        if len > READ_WHOLE || !meta.is_file() {
            return Ok(Err(file));
        }
        Ok(Ok(Bytes::from(read_whole(&file, len)?)))
    };
    futures::stream::once(read)
        .flat_map(
            |read: io::Result<Result<Bytes, std::fs::File>>| match read {
                Ok(Ok(bytes)) => futures::stream::iter([Ok(bytes)]).boxed(),
                Ok(Err(large)) => tokio_util::io::ReaderStream::with_capacity(
                    tokio::fs::File::from_std(large),
                    READ_CHUNK,
                )
                .boxed(),
                Err(e) => futures::stream::iter([Err(e)]).boxed(),
            },
        )
        .map(move |read| {
            read.map_err(|e| io::Error::new(e.kind(), crate::Error::io("read", path.clone(), e)))
        })
        .boxed()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::Write;

    /// A pipe (`tarvault put /dev/stdin`, `<(curl …)`) says it is 0 bytes long: it is streamed in
    /// pieces, not read whole into memory however much comes down it.
    #[tokio::test]
    async fn a_pipe_is_streamed_not_read_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let sent = 4 * READ_WHOLE as usize;
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut w = std::fs::OpenOptions::new()
                    .write(true)
                    .open(fifo)
                    .expect("open the fifo");
                // The reader may stop early (the assertion below): a broken pipe is fine.
                let _ = w.write_all(&vec![7u8; sent]);
            })
        };
        let file = std::fs::File::open(&fifo).expect("open the fifo");
        let mut stream = opened_file_input(file, fifo);
        let mut total = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("read");
            assert!(
                chunk.len() <= READ_CHUNK,
                "one piece of {} bytes",
                chunk.len()
            );
            total += chunk.len();
        }
        assert_eq!(total, sent);
        writer.join().expect("writer");
    }
}
