//! Reading bytes out: a stream that is verified as it is read.
//!
//! The stream hashes every byte of the blob, and holds back the last chunk it would emit until the
//! hash is checked: a consumer (or an HTTP client, or a CDN) therefore never sees a clean end of a
//! body whose bytes do not match; a corrupt blob ends in an error instead. Ranges are verified too,
//! by reading the whole blob and emitting only the range.

use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::{BoxStream, Fuse, FusedStream};
use futures::{Stream, StreamExt};

use crate::backend::ByteStream;
use crate::integrity::{Algorithm, Hash, StreamHasher};
use crate::{Error, Result};

/// The most [`BlobStream::bytes`] reserves before any byte has arrived.
const PREALLOCATE_MAX: u64 = 1 << 20;

/// A verified stream of a blob's bytes (or of a range of them).
///
/// Fused: polled again after its end (as `Chain`, HTTP bodies and other adapters may), it keeps
/// returning `None`.
pub struct BlobStream {
    inner: Fuse<BoxStream<'static, Result<Bytes>>>,
    len: u64,
    size: u64,
}

impl BlobStream {
    /// How many bytes this stream yields (the range length, or the blob size).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the stream yields no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole blob's size.
    pub fn blob_size(&self) -> u64 {
        self.size
    }

    /// Reads everything into memory (verified). For small blobs and tests.
    ///
    /// The length is what the backend claims (a remote's `Content-Length`), so at most
    /// 1 MiB is reserved up front and the buffer grows as bytes arrive: a claim of
    /// 2^62 bytes ends in an error once the stream does, not in an aborted allocation.
    pub async fn bytes(mut self) -> Result<Bytes> {
        let reserve = self.len.min(PREALLOCATE_MAX);
        let mut out = bytes::BytesMut::with_capacity(usize::try_from(reserve).unwrap_or(0));
        while let Some(chunk) = self.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.freeze())
    }

    /// Converts into an `AsyncRead`; verification errors surface as `io::Error`s wrapping
    /// [`Error`] (recover them with [`Error::from_io`]).
    pub fn into_async_read(self) -> impl tokio::io::AsyncRead + Send + Unpin {
        tokio_util::io::StreamReader::new(self.map(|r| r.map_err(Error::into_io)))
    }
}

/// Its lengths and whether it has ended (the bytes are not shown).
impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStream")
            .field("len", &self.len)
            .field("blob_size", &self.size)
            .field("ended", &self.inner.is_terminated())
            .finish_non_exhaustive()
    }
}

impl Stream for BlobStream {
    type Item = Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl FusedStream for BlobStream {
    fn is_terminated(&self) -> bool {
        self.inner.is_terminated()
    }
}

struct Verify {
    source: ByteStream,
    hasher: Option<StreamHasher>,
    expect: Vec<Hash>,
    address: String,
    /// The backend's name, for a corrupt blob's error.
    backend: Arc<str>,
    /// Blob offset of the next byte the source yields.
    pos: u64,
    size: u64,
    range: Range<u64>,
    held: Option<Bytes>,
    done: bool,
}

/// Wraps a backend stream of the *whole* blob so that it yields `range` and ends in an error unless
/// every hash in `expect` matches.
pub(crate) fn verify(
    source: ByteStream,
    size: u64,
    range: Range<u64>,
    expect: Vec<Hash>,
    address: String,
    backend: Arc<str>,
) -> BlobStream {
    let algorithms: Vec<Algorithm> = expect.iter().map(Hash::algorithm).collect();
    let mut hasher = StreamHasher::new(&algorithms);
    if Algorithm::hashed_inline(&algorithms) {
        // Nothing to hash (a copy its backend verified whole), or blake3 alone.
        hasher = hasher.with_threshold(u64::MAX);
    }
    let state = Verify {
        source,
        hasher: Some(hasher),
        expect,
        address,
        backend,
        pos: 0,
        size,
        range: range.clone(),
        held: None,
        done: false,
    };
    let inner = futures::stream::unfold(state, |mut st| async move {
        let item = st.step().await?;
        Some((item, st))
    })
    .boxed()
    .fuse();
    BlobStream {
        inner,
        len: range.end - range.start,
        size,
    }
}

impl Verify {
    async fn step(&mut self) -> Option<Result<Bytes>> {
        loop {
            if self.done {
                return self.held.take().map(Ok);
            }
            match self.source.next().await {
                Some(Ok(chunk)) => {
                    let start = self.pos;
                    self.pos += chunk.len() as u64;
                    if self.pos > self.size {
                        // Longer than the size the backend gave: corrupt, and not worth reading
                        // on (a body with no length of its own could go on for ever).
                        return self.fail(Error::Corrupt {
                            address: self.address.clone(),
                            backend: self.backend.to_string(),
                            expected: format!("{} bytes", self.size),
                            actual: format!("more than {} bytes", self.size),
                        });
                    }
                    let Some(hasher) = self.hasher.as_mut() else {
                        return self.fail(Error::InvalidInput("verifier used after end".into()));
                    };
                    if let Err(e) = hasher.update(chunk.clone()).await {
                        return self.fail(e);
                    }
                    let lo = self.range.start.max(start);
                    let hi = self.range.end.min(self.pos);
                    if lo < hi {
                        // In bounds of `chunk` by construction of lo and hi.
                        let piece = chunk.slice((lo - start) as usize..(hi - start) as usize);
                        if let Some(prev) = self.held.replace(piece) {
                            return Some(Ok(prev));
                        }
                    }
                }
                Some(Err(e)) => return self.fail(e),
                None => {
                    self.done = true;
                    match self.check().await {
                        Ok(()) => return self.held.take().map(Ok),
                        Err(e) => {
                            self.held = None;
                            return Some(Err(e));
                        }
                    }
                }
            }
        }
    }

    fn fail(&mut self, e: Error) -> Option<Result<Bytes>> {
        self.done = true;
        self.held = None;
        Some(Err(e))
    }

    async fn check(&mut self) -> Result<()> {
        let Some(hasher) = self.hasher.take() else {
            return Err(Error::InvalidInput("verifier used after end".into()));
        };
        let got = hasher.finish().await?;
        if got.size != self.size {
            return Err(Error::Corrupt {
                address: self.address.clone(),
                backend: self.backend.to_string(),
                expected: format!("{} bytes", self.size),
                actual: format!("{} bytes", got.size),
            });
        }
        for want in &self.expect {
            match got.get(want.algorithm()) {
                Some(h) if h.same_digest(want) => {}
                Some(h) => {
                    tracing::warn!(address = %self.address, expected = %want, actual = %h, "stored blob is corrupt");
                    return Err(Error::Corrupt {
                        address: self.address.clone(),
                        backend: self.backend.to_string(),
                        expected: want.to_string(),
                        actual: h.to_string(),
                    });
                }
                None => {
                    return Err(Error::InvalidInput(format!(
                        "{} was not computed",
                        want.algorithm()
                    )))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::{Algorithm, MultiHasher};

    /// A source that goes on past the size it was given (a ranged answer with no length of its
    /// own, say) is corrupt as soon as it passes that size: it is not read to its end.
    #[tokio::test]
    async fn a_source_longer_than_its_size_is_cut_off_as_corrupt() {
        let mut h = MultiHasher::new(&[Algorithm::Sha512]);
        h.update(b"0123456789");
        let sha512 = h.finalize().get(Algorithm::Sha512).expect("sha512").clone();
        let endless: ByteStream =
            futures::stream::repeat_with(|| Ok(Bytes::from_static(b"0123"))).boxed();
        let stream = verify(
            endless,
            10,
            0..10,
            vec![sha512],
            "test".into(),
            "test backend".into(),
        );
        let items: Vec<Result<Bytes>> =
            tokio::time::timeout(std::time::Duration::from_secs(10), stream.inner.collect())
                .await
                .expect("the stream ends instead of reading on for ever");
        let last = items.last().expect("an item");
        assert!(
            matches!(last, Err(Error::Corrupt { .. })),
            "{:?}",
            items
                .iter()
                .map(|r| r.as_ref().map(Bytes::len))
                .collect::<Vec<_>>()
        );
        let served: usize = items
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(Bytes::len)
            .sum();
        assert!(served < 10, "no bytes past a check are served: {served}");
    }
}
