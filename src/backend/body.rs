//! Bodies read whole from a remote server, each up to a limit of its own: an alias marker or
//! segment, a Manta listing page, a CouchDB document, the start of an error answer.
//!
//! The server decides how much it sends. A hostile or broken one (or a proxy in the way) can claim
//! 2^62 bytes in `Content-Length`, or stream without end: a body read with `bytes()` or `text()`
//! reserves the claim up front (object_store's `GetResult::bytes` does; an allocation that size
//! aborts the process rather than failing) or grows until memory runs out. [`read_capped`] is the
//! one way such a body is read here: it reserves at most [`RESERVE_MAX`] whatever the claim, and
//! stops reading once the limit is reached, leaving the rest unread. The caller decides what a
//! body past its limit is: an error naming the store and the object, or (for an error message)
//! just its first bytes.

use bytes::{Bytes, BytesMut};
use futures::{Stream, TryStreamExt};

/// Memory reserved for a body before its bytes arrive, whatever length the server claims: a
/// body longer than this grows its buffer as its bytes come.
pub(crate) const RESERVE_MAX: u64 = 1 << 20;

/// What is read of an error answer's body, for its message: an error body that means something is
/// a line or a small JSON object (muskie's `{"code","message"}`, CouchDB's `{"error","reason"}`),
/// and the message shows at most its first line. The rest is not waited for.
#[cfg(any(feature = "manta", feature = "http", feature = "migrate"))]
pub(crate) const MESSAGE_MAX: u64 = 4 << 10;

/// A body read up to a limit.
#[derive(Debug)]
pub(crate) struct Capped {
    /// The body's first bytes: all of it, or the first `max` bytes when it went on.
    pub(crate) bytes: Bytes,
    /// Whether the body went on past `max` bytes (what followed was not read). Read by
    /// [`Capped::whole`]; a build whose only reader is the `http` backend's error message
    /// (which keeps the first bytes either way) has no use for it.
    #[cfg_attr(
        not(any(feature = "s3", feature = "manta", feature = "migrate", test)),
        allow(dead_code)
    )]
    pub(crate) cut: bool,
}

impl Capped {
    /// The whole body, or `None` if it went on past the limit.
    #[cfg(any(feature = "s3", feature = "manta", feature = "migrate", test))]
    pub(crate) fn whole(self) -> Option<Bytes> {
        (!self.cut).then_some(self.bytes)
    }
}

/// Reads `body` until it ends or holds more than `max` bytes, whichever comes first. `claimed`
/// (the server's `Content-Length`, or a ranged answer's length) only sizes the first reservation,
/// up to [`RESERVE_MAX`] and `max`; it is never trusted further. Refusing a body by its claim
/// before reading it is the caller's (it can then say how large the server said it was).
pub(crate) async fn read_capped<S, E>(
    body: S,
    claimed: Option<u64>,
    max: u64,
) -> std::result::Result<Capped, E>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
{
    let reserve = claimed.unwrap_or(0).min(max).min(RESERVE_MAX);
    let mut buf = BytesMut::with_capacity(usize::try_from(reserve).unwrap_or(0));
    futures::pin_mut!(body);
    while let Some(chunk) = body.try_next().await? {
        // `buf` never holds more than `max`, so the room left is what fits in it still.
        let room = max - buf.len() as u64;
        if chunk.len() as u64 > room {
            // `room` is less than the chunk's length, so it fits in a usize.
            buf.extend_from_slice(&chunk[..room as usize]);
            return Ok(Capped {
                bytes: buf.freeze(),
                cut: true,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Capped {
        bytes: buf.freeze(),
        cut: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{stream, StreamExt};

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, ()>> {
        stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn a_body_within_its_limit_is_read_whole() {
        let got = read_capped(chunks(&[b"ab", b"cd"]), Some(4), 4).await;
        let got = got.unwrap_or_else(|()| panic!("read"));
        assert!(!got.cut);
        assert_eq!(got.whole().as_deref(), Some(&b"abcd"[..]));
    }

    #[tokio::test]
    async fn a_longer_body_keeps_its_first_bytes_and_is_not_read_further() {
        // A chunk after the one that crosses the limit would fail the read: it is never asked for.
        let body = chunks(&[b"ab", b"cdef"]).chain(stream::iter([Err(())]));
        let got = read_capped(body, None, 3)
            .await
            .unwrap_or_else(|()| panic!("read past the limit"));
        assert!(got.cut);
        assert_eq!(&got.bytes[..], b"abc");
        assert_eq!(got.whole(), None);
    }

    #[tokio::test]
    async fn an_endless_body_stops_at_its_limit() {
        let endless = stream::repeat_with(|| Ok::<_, ()>(Bytes::from(vec![7u8; 64 << 10])));
        let got = read_capped(endless, None, 1 << 20)
            .await
            .unwrap_or_else(|()| panic!("read"));
        assert!(got.cut);
        assert_eq!(got.bytes.len(), 1 << 20);
    }

    #[tokio::test]
    async fn a_huge_claim_reserves_little() {
        let got = read_capped(chunks(&[b"xy"]), Some(1 << 62), u64::MAX)
            .await
            .unwrap_or_else(|()| panic!("read"));
        assert_eq!(got.whole().as_deref(), Some(&b"xy"[..]));
    }

    #[tokio::test]
    async fn errors_pass_through() {
        let body = chunks(&[b"ab"]).chain(stream::iter([Err(())]));
        assert!(read_capped(body, None, 10).await.is_err());
    }
}
