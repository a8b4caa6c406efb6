//! Bodies read whole from a remote server, each up to a limit of its own: an alias marker or
//! segment, a Manta listing page, a CouchDB document, the start of an error answer.
//!
//! The server decides how much it sends. A hostile or broken one (or a proxy in the way) can claim
//! 2^62 bytes in `Content-Length`, or stream without end: a body read with `bytes()` or `text()`
//! reserves the claim up front (object_store's `GetResult::bytes` does; an allocation that size
//! aborts the process rather than failing) or grows until memory runs out. Such a body is read
//! here in one of two ways, both of which reserve at most [`RESERVE_MAX`] whatever the claim and
//! stop reading once their limit is reached, leaving the rest unread: [`read_within`], for a body
//! that must be read whole (past its limit it is refused, and the caller's error names the store
//! and the object), and [`message_start`], for an error answer (its first bytes are enough).

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

/// Reads `body` until it ends or holds more than `max` bytes, whichever comes first: its bytes
/// (the first `max` when it went on) and whether it went on (what followed was not read). `claimed`
/// (the server's `Content-Length`, or a ranged answer's length) only sizes the first reservation,
/// up to [`RESERVE_MAX`] and `max`; it is never trusted further.
async fn read_capped<S, E>(
    body: S,
    claimed: Option<u64>,
    max: u64,
) -> std::result::Result<(Bytes, bool), E>
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
            return Ok((buf.freeze(), true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf.freeze(), false))
}

/// Why [`read_within`] gave no body.
#[cfg(any(feature = "s3", feature = "manta", feature = "migrate"))]
#[derive(Debug)]
pub(crate) enum NotWhole<E> {
    /// Over the limit: the size the server claimed (`"1234"`), or `"more than <max>"` once more
    /// than `max` bytes came; for the caller's message, which names what was read.
    Over(String),
    /// The body could not be read.
    Failed(E),
}

/// The whole of a body that must be read whole (a marker, a segment, a listing page, a CouchDB
/// answer) and is never larger than `max`: one whose `claimed` length is over it is refused
/// before a byte is read (the message can then say how large the server said it was), and one
/// that turns out longer once more than `max` bytes have come, the rest left unread.
#[cfg(any(feature = "s3", feature = "manta", feature = "migrate"))]
pub(crate) async fn read_within<S, E>(
    body: S,
    claimed: Option<u64>,
    max: u64,
) -> std::result::Result<Bytes, NotWhole<E>>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
{
    if let Some(n) = claimed.filter(|n| *n > max) {
        return Err(NotWhole::Over(n.to_string()));
    }
    match read_capped(body, claimed, max).await {
        Ok((bytes, false)) => Ok(bytes),
        Ok((_, true)) => Err(NotWhole::Over(format!("more than {max}"))),
        Err(e) => Err(NotWhole::Failed(e)),
    }
}

/// The start of an error answer's body, for its message: at most [`MESSAGE_MAX`] bytes are
/// read (an answer whose body never ends is not waited for), and a body that cannot be read gives
/// nothing, since the status already says what failed.
#[cfg(any(feature = "manta", feature = "http", feature = "migrate"))]
pub(crate) async fn message_start<S, E>(body: S) -> Bytes
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
{
    read_capped(body, None, MESSAGE_MAX)
        .await
        .map(|(bytes, _)| bytes)
        .unwrap_or_default()
}

/// How much of an error body's first line a message shows.
#[cfg(any(feature = "http", feature = "migrate"))]
pub(crate) const MESSAGE_CHARS: usize = 200;

/// The first non-empty line of `body`, trimmed, at most `chars` characters (lossy UTF-8).
#[cfg(any(feature = "http", feature = "migrate"))]
pub(crate) fn first_line(body: &[u8], chars: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    line.unwrap_or("").chars().take(chars).collect()
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
        assert_eq!(got, (Bytes::from_static(b"abcd"), false));
    }

    #[tokio::test]
    async fn a_longer_body_keeps_its_first_bytes_and_is_not_read_further() {
        // A chunk after the one that crosses the limit would fail the read: it is never asked for.
        let body = chunks(&[b"ab", b"cdef"]).chain(stream::iter([Err(())]));
        let got = read_capped(body, None, 3)
            .await
            .unwrap_or_else(|()| panic!("read past the limit"));
        assert_eq!(got, (Bytes::from_static(b"abc"), true));
    }

    #[tokio::test]
    async fn an_endless_body_stops_at_its_limit() {
        let endless = stream::repeat_with(|| Ok::<_, ()>(Bytes::from(vec![7u8; 64 << 10])));
        let got = read_capped(endless, None, 1 << 20)
            .await
            .unwrap_or_else(|()| panic!("read"));
        assert!(got.1);
        assert_eq!(got.0.len(), 1 << 20);
    }

    #[tokio::test]
    async fn a_huge_claim_reserves_little() {
        let got = read_capped(chunks(&[b"xy"]), Some(1 << 62), u64::MAX)
            .await
            .unwrap_or_else(|()| panic!("read"));
        assert_eq!(got, (Bytes::from_static(b"xy"), false));
    }

    #[tokio::test]
    async fn errors_pass_through() {
        let body = chunks(&[b"ab"]).chain(stream::iter([Err(())]));
        assert!(read_capped(body, None, 10).await.is_err());
    }

    #[cfg(any(feature = "s3", feature = "manta", feature = "migrate"))]
    #[tokio::test]
    async fn read_within_refuses_by_the_claim_before_reading() {
        // The body would fail the read: a claim over the limit is refused before it is asked.
        let body = stream::iter([Err::<Bytes, ()>(())]);
        match read_within(body, Some(11), 10).await {
            Err(NotWhole::Over(size)) => assert_eq!(size, "11"),
            other => panic!("{other:?}"),
        }
        match read_within(chunks(&[b"abc", b"def"]), None, 5).await {
            Err(NotWhole::Over(size)) => assert_eq!(size, "more than 5"),
            other => panic!("{other:?}"),
        }
        let got = read_within(chunks(&[b"abc"]), Some(3), 3).await;
        assert_eq!(got.ok().as_deref(), Some(&b"abc"[..]));
    }

    #[cfg(any(feature = "http", feature = "migrate"))]
    #[test]
    fn first_line_skips_blank_lines_and_is_cut() {
        assert_eq!(first_line(b"\n  \n  boom here \nmore", 100), "boom here");
        assert_eq!(first_line(b"abcdef", 3), "abc");
        assert_eq!(first_line(b"", 3), "");
    }
}
