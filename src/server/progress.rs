//! What a connection's client takes of its responses, so that [`super::serve_with`] can cut off
//! one that stopped taking them, and when its requests start, for its idle timeout.
//!
//! A client that asks for a blob and then reads nothing more holds the response's body: the read
//! chunks charged to the store's read budget, a held copy of the blob, a file descriptor and a
//! place under the connection cap. Its TCP stack answers the server's zero-window probes, so the
//! kernel never gives up on it; the idle timeout waits for a response in flight, and so does a
//! shutdown. Like nginx's `send_timeout`, a connection on which a response has waited on its
//! client for [`super::ServeOptions::send_timeout`], in which time fewer than [`MIN_PROGRESS`]
//! bytes went out, is closed. A slow client is not cut off, only one that takes next to nothing.
//!
//! A response waits on its client when a write to the socket is blocked (the kernel's send buffer
//! is full: an HTTP/1.1 client not reading, or an HTTP/2 one not reading at all), or when its body
//! has given a frame and is not asked for the next (an HTTP/2 stream whose window the client does
//! not open again, while the connection answers pings). A body waiting on the store (a slow
//! remote, a cache fill) does not count: there the client is not the one holding things up.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Bytes that must go out within the send timeout while a response waits on its client. Not 1:
/// an HTTP/2 connection whose client withholds a stream's window still sends a ping (17 bytes)
/// every 20 s and answers the client's own pings. 4 KiB a minute (the default timeout) is far
/// below any working link.
pub(super) const MIN_PROGRESS: u64 = 4 << 10;

/// Connections closed by the send timeout, by every server of the process (like the held
/// memory, the process's: [`super::serve_with`] serves any router, and the metrics are a
/// `Server`'s).
static SEND_TIMEOUTS: AtomicU64 = AtomicU64::new(0);

/// How many connections the send timeout has closed in this process.
pub(super) fn send_timeouts() -> u64 {
    SEND_TIMEOUTS.load(Relaxed)
}

/// Counts a connection closed by the send timeout.
pub(super) fn count_send_timeout() {
    SEND_TIMEOUTS.fetch_add(1, Relaxed);
}

/// One connection's traffic, shared by its socket, its response bodies and its watching loop.
#[derive(Debug)]
pub(super) struct Progress {
    /// Bytes written to the socket.
    written: AtomicU64,
    /// Whether the last write found the socket's send buffer full.
    write_blocked: AtomicBool,
    /// Bodies not yet polled, or whose last poll gave a frame: each waits for the connection to
    /// ask for its next frame, which it does once the client has taken enough of the last.
    waiting_bodies: AtomicUsize,
}

impl Progress {
    pub(super) fn new() -> Arc<Progress> {
        Arc::new(Progress {
            written: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
            waiting_bodies: AtomicUsize::new(0),
        })
    }

    fn waits_on_client(&self) -> bool {
        self.write_blocked.load(Relaxed) || self.waiting_bodies.load(Relaxed) > 0
    }
}

/// The connection's watching loop's view of [`Progress`]: since when a response has waited on
/// its client without [`MIN_PROGRESS`] bytes going out.
#[derive(Debug)]
pub(super) struct StallClock {
    timeout: Duration,
    since: Instant,
    taken: u64,
}

impl StallClock {
    pub(super) fn new(timeout: Duration) -> StallClock {
        StallClock {
            timeout,
            since: Instant::now(),
            taken: 0,
        }
    }

    /// How often the loop looks: the timeout is overshot by at most this.
    pub(super) fn period(&self) -> Duration {
        (self.timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5))
    }

    /// Whether, looked at `now`, the connection has waited on its client for the timeout with
    /// fewer than [`MIN_PROGRESS`] bytes taken by it. The clock restarts whenever that many have
    /// been taken, and whenever nothing waits on the client (no response in flight, or all of
    /// them waiting on the store, and nothing left in the socket's send queue). A connection
    /// `closing` (its graceful shutdown begun) waits on its client until it has ended: HTTP/2
    /// holds the last piece of a body in its own queue after the body has ended, and this is what
    /// frees a stream whose window the client never opens again once the connection goes idle.
    ///
    /// Taken means written to the socket and no longer in its send queue (`unsent`, the bytes the
    /// client has not acknowledged yet). Written alone is not enough: with a send buffer the
    /// kernel has grown to megabytes, a writer is woken only once a third of it has drained,
    /// which a client reading steadily at a few hundred KB/s takes seconds to do.
    pub(super) fn stalled(
        &mut self,
        progress: &Progress,
        unsent: u64,
        closing: bool,
        now: Instant,
    ) -> bool {
        let taken = progress.written.load(Relaxed).saturating_sub(unsent);
        if taken >= self.taken.saturating_add(MIN_PROGRESS)
            || !(closing || unsent > 0 || progress.waits_on_client())
        {
            self.since = now;
            self.taken = taken;
            return false;
        }
        now.duration_since(self.since) >= self.timeout
    }
}

/// Bytes in a TCP socket's send queue: written by the process, not yet acknowledged by the peer.
/// 0 where the system cannot say (the clock then counts bytes written).
#[cfg(target_os = "linux")]
pub(super) fn unsent(fd: std::os::fd::RawFd) -> u64 {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ for sockets) writes one int through a valid pointer; `fd` is
    // the connection's socket, open for as long as the connection that asks.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) } != 0 {
        return 0;
    }
    u64::try_from(queued).unwrap_or(0)
}

/// Bytes in a TCP socket's send queue: not known here.
#[cfg(all(unix, not(target_os = "linux")))]
pub(super) fn unsent(_fd: std::os::fd::RawFd) -> u64 {
    0
}

/// A connection's socket, noting what is written to it and whether a write is blocked.
#[derive(Debug)]
pub(super) struct CountedIo<T> {
    inner: T,
    progress: Arc<Progress>,
}

impl<T> CountedIo<T> {
    pub(super) fn new(inner: T, progress: Arc<Progress>) -> CountedIo<T> {
        CountedIo { inner, progress }
    }

    fn note(&self, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match &polled {
            Poll::Pending => self.progress.write_blocked.store(true, Relaxed),
            Poll::Ready(Ok(n)) => {
                self.progress.written.fetch_add(*n as u64, Relaxed);
                self.progress.write_blocked.store(false, Relaxed);
            }
            Poll::Ready(Err(_)) => {}
        }
        polled
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that notes, in its connection's [`Progress`], whether it waits on its client
/// (it gave a frame and is not yet asked for the next) or on its producer.
#[derive(Debug)]
pub(super) struct WatchedBody {
    inner: Body,
    progress: Arc<Progress>,
    waiting: bool,
    /// HTTP/2: the rest of a data frame over [`H2_PIECE`], given in pieces of that size.
    rest: Bytes,
    h2: bool,
}

/// The largest data frame a body gives an HTTP/2 stream. hyper hands a body's frame to the
/// stream's send queue whole and asks the body for the next at once, so a blob held in memory
/// (one frame) would sit whole in that queue, its body already ended, and a stream whose window
/// the client never opens again would look finished. In pieces, the body is asked for its next
/// only once the stream has room, and waits on the client until then. Slicing copies nothing.
const H2_PIECE: usize = 64 << 10;

impl WatchedBody {
    fn new(inner: Body, progress: Arc<Progress>, h2: bool) -> WatchedBody {
        progress.waiting_bodies.fetch_add(1, Relaxed);
        WatchedBody {
            inner,
            progress,
            waiting: true,
            rest: Bytes::new(),
            h2,
        }
    }

    fn set_waiting(&mut self, waiting: bool) {
        if waiting != self.waiting {
            self.waiting = waiting;
            if waiting {
                self.progress.waiting_bodies.fetch_add(1, Relaxed);
            } else {
                self.progress.waiting_bodies.fetch_sub(1, Relaxed);
            }
        }
    }

    /// The next piece of `data` for HTTP/2, the rest kept for the next polls.
    fn piece(&mut self, mut data: Bytes) -> Bytes {
        if data.len() > H2_PIECE {
            self.rest = data.split_off(H2_PIECE);
        }
        data
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        self.set_waiting(false);
    }
}

impl hyper::body::Body for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if !self.rest.is_empty() {
            let rest = std::mem::take(&mut self.rest);
            let piece = self.piece(rest);
            self.set_waiting(true);
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        let polled = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) if self.h2 => {
                Poll::Ready(Some(Ok(match frame.into_data() {
                    Ok(data) => Frame::data(self.piece(data)),
                    Err(frame) => frame,
                })))
            }
            polled => polled,
        };
        // A body that ended is dropped by the connection soon after, which stops its waiting.
        let waiting = matches!(polled, Poll::Ready(Some(Ok(_))));
        self.set_waiting(waiting);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(rest));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint
    }
}

/// When a connection's latest request started, for its idle timeout.
#[derive(Debug)]
pub(super) struct Activity {
    pub(super) since: Instant,
    /// Milliseconds from `since` to the start of the latest request; `u64::MAX` before the first.
    last_ms: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            since: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_ms.store(ms, Relaxed);
    }

    pub(super) fn last(&self) -> Option<Instant> {
        match self.last_ms.load(Relaxed) {
            u64::MAX => None,
            ms => Some(self.since + Duration::from_millis(ms)),
        }
    }
}

/// The app as a hyper service that notes when each request starts and watches each response's
/// body.
#[derive(Clone, Debug)]
pub(super) struct Tracked {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
    progress: Arc<Progress>,
}

impl Tracked {
    pub(super) fn new(router: Router, activity: Arc<Activity>, progress: Arc<Progress>) -> Tracked {
        Tracked {
            inner: TowerToHyperService::new(router),
            activity,
            progress,
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<WatchedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<WatchedBody>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Answer {
        self.activity.touch();
        let h2 = request.version() == hyper::Version::HTTP_2;
        let answer = self.inner.call(request);
        let progress = self.progress.clone();
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| WatchedBody::new(body, progress, h2)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body as _;

    fn progress(written: u64, blocked: bool, bodies: usize) -> Progress {
        Progress {
            written: AtomicU64::new(written),
            write_blocked: AtomicBool::new(blocked),
            waiting_bodies: AtomicUsize::new(bodies),
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(60);

    #[test]
    fn the_clock_runs_only_while_the_client_is_waited_on() {
        let start = Instant::now();
        let late = start + TIMEOUT * 10;
        // Nothing in flight, or every body waiting on the store: never stalled.
        let mut clock = StallClock::new(TIMEOUT);
        assert!(!clock.stalled(&progress(0, false, 0), 0, false, late));
        // A body waiting on the client, a write blocked, a send queue not taken, a shutdown:
        // each stalls once the timeout has passed since the clock last restarted, not before.
        for (p, unsent, closing) in [
            (progress(0, false, 1), 0, false),
            (progress(0, true, 0), 0, false),
            (progress(1 << 20, false, 0), 1 << 20, false),
            (progress(0, false, 0), 0, true),
        ] {
            let mut clock = StallClock::new(TIMEOUT);
            assert!(!clock.stalled(&progress(0, false, 0), 0, false, start));
            let almost = start + TIMEOUT - Duration::from_millis(1);
            assert!(!clock.stalled(&p, unsent, closing, almost));
            assert!(clock.stalled(&p, unsent, closing, start + TIMEOUT));
        }
    }

    #[test]
    fn only_bytes_the_client_took_restart_the_clock() {
        let start = Instant::now();
        let mut clock = StallClock::new(TIMEOUT);
        assert!(!clock.stalled(&progress(0, false, 0), 0, false, start));
        // Written but still in the send queue: not taken, so the clock goes on.
        let t1 = start + TIMEOUT / 2;
        assert!(!clock.stalled(&progress(1 << 20, true, 1), 1 << 20, false, t1));
        assert!(clock.stalled(&progress(1 << 20, true, 1), 1 << 20, false, start + TIMEOUT));
        // Fewer than MIN_PROGRESS taken: still stalled; that many: the clock restarts.
        let few = (1 << 20) - MIN_PROGRESS + 1;
        assert!(clock.stalled(&progress(1 << 20, true, 1), few, false, start + TIMEOUT));
        let enough = (1 << 20) - MIN_PROGRESS;
        assert!(!clock.stalled(&progress(1 << 20, true, 1), enough, false, start + TIMEOUT));
        let later = start + TIMEOUT + TIMEOUT / 2;
        assert!(!clock.stalled(&progress(1 << 20, true, 1), enough, false, later));
        assert!(clock.stalled(&progress(1 << 20, true, 1), enough, false, later + TIMEOUT));
    }

    #[tokio::test(start_paused = true)]
    async fn activity_is_none_until_a_request_starts() {
        let a = Activity::new();
        assert_eq!(a.last(), None);
        tokio::time::advance(Duration::from_millis(1500)).await;
        a.touch();
        assert_eq!(a.last(), Some(a.since + Duration::from_millis(1500)));
    }

    #[tokio::test]
    async fn an_http2_body_is_given_in_pieces_and_counted_while_it_waits() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let p = Progress::new();
        for h2 in [false, true] {
            let mut body = WatchedBody::new(Body::from(data.clone()), p.clone(), h2);
            assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
            assert_eq!(p.waiting_bodies.load(Relaxed), 1);
            let mut got = Vec::new();
            let mut sizes = Vec::new();
            while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
                .await
                .transpose()
                .unwrap_or_else(|e| panic!("{e}"))
            {
                let Ok(chunk) = frame.into_data() else {
                    panic!("a frame that is not data")
                };
                sizes.push(chunk.len());
                got.extend_from_slice(&chunk);
                // Given a frame, it waits for the connection to ask for the next.
                assert_eq!(p.waiting_bodies.load(Relaxed), 1);
                let left = (data.len() - got.len()) as u64;
                assert_eq!(body.size_hint().exact(), Some(left));
            }
            assert!(got == data);
            let expected = if h2 {
                vec![H2_PIECE, H2_PIECE, H2_PIECE, data.len() - 3 * H2_PIECE]
            } else {
                vec![data.len()]
            };
            assert_eq!(sizes, expected);
            assert!(body.is_end_stream());
            assert_eq!(p.waiting_bodies.load(Relaxed), 0, "ended, so not waiting");
            drop(body);
            assert_eq!(p.waiting_bodies.load(Relaxed), 0);
        }
    }
}
