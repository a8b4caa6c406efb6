//! [`serve`]'s accept loop: hyper-util's HTTP/1.1 + h2c connection builder with the limits
//! `axum::serve` cannot set, because the server is an origin that is often reachable directly,
//! not only through its CDN. Without them a client that opens a connection and sends nothing (or
//! half a header, or one byte every few seconds, or stalled HTTP/2 streams) held it forever, and
//! enough of them ran the process out of file descriptors.
//!
//! Each connection is bounded in time: its first request must start within the header timeout
//! (the HTTP/2 preface and HTTP/1.1 protocol sniffing included), hyper's own timer bounds every
//! HTTP/1.1 header read (the wait for the next request on a kept-alive connection is one), and a
//! connection on which no request has started for the idle timeout is shut down gracefully
//! (requests in flight finish). A connection whose client has stopped taking a response is
//! closed after the send timeout (`progress.rs`), also during a graceful shutdown. The number of
//! open connections is capped.
//!
//! Requests are held to one rule of HTTP/1.1 messaging here rather than in the app, because it is
//! about the message as it came over the wire: one without the `Host` header that RFC 9112 §3.2
//! requires, with two, or with one whose value is not a host and an optional port, is answered 400
//! on every route. A request made in-process (a test, or an app handing requests to
//! [`super::Server::router`]) is not such a message and is not held to it.

use std::future::Future;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode, Version};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::fd_limit::open_file_limit;
use super::progress::{
    count_send_timeout, unsent, Activity, CountedIo, Progress, StallClock, Tracked,
};
use crate::units::CENTURY;

/// Bytes an HTTP/1.1 connection buffers: a request's head, or the response body it has taken
/// from the store and not yet written to its socket. hyper's default (about 400 KiB) let each
/// stalled download keep that much read ahead once the store's read budget was spent and its
/// reads came in 64 KiB chunks; a request head is never near this.
const H1_MAX_BUF: usize = 64 << 10;

/// HTTP/2 streams one connection may have open at once. hyper's default (200) let 3 connections
/// tie up 600 stalled streams; no CDN or npm client needs more than a few dozen requests in
/// flight on one connection, and more connections are counted against `max_connections`.
const H2_MAX_STREAMS: u32 = 32;
/// How often an HTTP/2 connection is pinged, and how long the answer may take before it is
/// dropped: a peer that vanished (no FIN, no RST) holds streams its requests will never finish.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait after an accept failed for a reason other than the connection (out of file
/// descriptors, out of memory) before accepting again, instead of spinning on the error.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);

/// How [`serve_with`] bounds its connections. `Default` is what `tarvault serve` uses. A timeout
/// longer than a century is taken as a century.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// How long a request's header may take to arrive, from the connection's start (its first
    /// request) or from the end of the previous response (HTTP/1.1 keep-alive: hyper counts the
    /// wait for the next request as reading its header, so an idle HTTP/1.1 connection closes
    /// after the shorter of this and `idle_timeout`). Default 30 s, hyper's own default: a header
    /// is a few hundred bytes that no working client takes seconds to send, and 30 s still
    /// forgives a very slow link; a connection that sends nothing, half a header, or drips one
    /// byte at a time, is closed after it.
    pub header_timeout: Duration,
    /// How long a connection may stay open with no new request, measured from the start of the
    /// last one; it is then shut down gracefully (a response still streaming finishes first).
    /// This is what closes an idle HTTP/2 connection, which has no header timer. Default 60 s:
    /// longer than CDNs keep idle origin connections (so a pooled connection is reused, not cut
    /// under the CDN), short enough that abandoned ones are freed within a minute.
    pub idle_timeout: Duration,
    /// How long a response may wait on its client (its socket's send buffer full, or an HTTP/2
    /// stream's window not opened again) while fewer than 4 KiB go out: the connection is then
    /// closed, and with it what the response held (read chunks, a held copy of the blob, a file
    /// descriptor, a place under the cap). What nginx calls `send_timeout`, with its default of
    /// 60 s: a client on a slow link keeps taking bytes and is never cut off; one that stopped
    /// reading is, instead of holding its response for as long as its TCP stack stays up (a
    /// shutdown waited for it too). A response waiting on the store (a slow remote backend) is
    /// not counted against it.
    pub send_timeout: Duration,
    /// Connections open at once. At the cap the server stops accepting: further connections wait
    /// in the kernel's listen backlog (and beyond it the kernel drops their SYNs, which clients
    /// retry) until one closes. Waiting rather than refusing costs no file descriptor and no
    /// accept-and-close loop under a flood, and a legitimate client in a burst is only delayed.
    /// Lowered to half the process's open-file limit (a warning says so), leaving a descriptor
    /// for the blob file each connection's request reads and for the store's own files; a
    /// program can raise that limit first ([`super::raise_open_file_limit`]). Default 4096: far
    /// more than a CDN's connections to its origin, and a bound on the memory they take (hyper's
    /// buffers, a few KiB each while idle).
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// Serves `app` on `listener` with [`ServeOptions::default`] until `shutdown` resolves, then
/// finishes the requests in flight. See [`serve_with`].
pub async fn serve(
    listener: TcpListener,
    app: impl Into<Router>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, ServeOptions::default(), shutdown).await
}

/// Serves `app` on `listener` (HTTP/1.1, and HTTP/2 with prior knowledge) within `options`'
/// bounds until `shutdown` resolves: then it stops accepting, closes idle connections, and returns
/// once the requests in flight have finished.
///
/// `app` is a [`Server`](super::Server) or any axum [`Router`]: a registry that merges
/// [`Server::router`](super::Server::router) into its own app serves that app here and gets the
/// same bounds, which `axum::serve` does not set.
pub async fn serve_with(
    listener: TcpListener,
    app: impl Into<Router>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // A connection's deadlines are `Instant`s, which a `Duration` of billions of years would
    // overflow (a panic in every connection's task, which then answered nothing).
    let options = ServeOptions {
        header_timeout: options.header_timeout.min(CENTURY),
        idle_timeout: options.idle_timeout.min(CENTURY),
        send_timeout: options.send_timeout.min(CENTURY),
        ..options
    };
    // Around every route and fallback of the app: a refusal whatever the request asks for.
    let router = app.into().layer(middleware::from_fn(one_host));
    let cap = fit_to_fd_limit(options.max_connections);
    let slots = Arc::new(Semaphore::new(cap));
    let (stop_tx, stop_rx) = watch::channel(false);
    let builder = builder(&options);
    let mut full_warned: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        // A slot first, then the accept: at the cap, connections wait in the listen backlog.
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let (tcp, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        if slots.available_permits() == 0
            && full_warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
        {
            tracing::warn!(
                max_connections = cap,
                "connection cap reached; new connections wait until one closes"
            );
            full_warned = Some(Instant::now());
        }
        tracing::trace!(%peer, "connection accepted");
        tokio::spawn(connection(
            tcp,
            builder.clone(),
            router.clone(),
            options.clone(),
            stop_rx.clone(),
            slot,
        ));
    }
    drop(listener);
    stop_tx.send_replace(true);
    // Every connection holds a slot until it ends: all of them back means all have ended.
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    let _all_closed = slots.acquire_many(all).await;
    Ok(())
}

/// The connection builder: hyper's header timer on HTTP/1.1 (it needs a timer to run at all;
/// without one, as under `axum::serve`, its 30 s default is silently off), and HTTP/2 with a
/// modest stream limit and pings.
fn builder(options: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_buf_size(H1_MAX_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

/// Serves one connection until it ends, the server stops, or it outlives its timeouts. `_slot`
/// is its place under the connection cap, given back when this returns.
async fn connection(
    tcp: TcpStream,
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    options: ServeOptions,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    // Small responses (a 304 is one packet) must not wait for Nagle.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set; small responses may be delayed");
    }
    let fd = tcp.as_raw_fd();
    let activity = Arc::new(Activity::new());
    let progress = Progress::new();
    let service = Tracked::new(router, activity.clone(), progress.clone());
    let io = TokioIo::new(CountedIo::new(tcp, progress.clone()));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stall = StallClock::new(options.send_timeout);
    let mut look_at_stall = Instant::now() + stall.period();
    // The first request must start by `first_by`; after that, one must start within the idle
    // timeout of the last. Requests are not announced to this loop, so it wakes at whichever
    // bound could come first and looks.
    let first_by = activity.since + options.header_timeout;
    let mut wake = first_by.min(activity.since + options.idle_timeout);
    let mut closing = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %crate::ErrorReport::new(&*e), "connection ended with an error");
                }
                return;
            }
            // Also while closing: a stalled response would hold a shutdown forever.
            () = tokio::time::sleep_until(look_at_stall) => {
                let now = Instant::now();
                // `fd` is open: `conn` owns the socket until this function returns.
                if stall.stalled(&progress, unsent(fd), closing, now) {
                    count_send_timeout();
                    tracing::debug!(
                        timeout = ?options.send_timeout,
                        "a response waited on its client past the send timeout; connection closed"
                    );
                    return;
                }
                look_at_stall = now + stall.period();
            }
            _ = stop.wait_for(|stop| *stop), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(wake), if !closing => match activity.last() {
                // Nothing was ever asked (no header, a sniffing or HTTP/2 handshake that never
                // finished): nothing is in flight, so the connection is simply dropped.
                None if Instant::now() >= first_by => {
                    tracing::debug!("no request within the header timeout; connection closed");
                    return;
                }
                None => wake = first_by.min(Instant::now() + options.idle_timeout),
                Some(at) if at + options.idle_timeout > Instant::now() => {
                    wake = at + options.idle_timeout;
                }
                Some(_) => {
                    tracing::debug!("connection idle; shutting it down");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            },
        }
    }
}

/// Answers 400 to a request that [`host_refusal`] refuses; passes any other on.
async fn one_host(request: axum::extract::Request, next: Next) -> Response {
    match host_refusal(request.version(), request.headers()) {
        None => next.run(request).await,
        Some(why) => {
            tracing::debug!(version = ?request.version(), path = request.uri().path(), "{why}");
            super::handler::plain(StatusCode::BAD_REQUEST, &format!("{why}\n"))
        }
    }
}

/// Why a request must be refused with a 400 for its `Host` header fields, if it must (RFC 9112
/// §3.2): an HTTP/1.1 request has exactly one, no request has more than one, and its value is
/// valid ([`valid_host`]). Which host a request without one, with two, or with one that is not a
/// host, is for is not known, and a proxy or cache in front may have read it as being for another.
/// HTTP/1.0 may leave it out, and HTTP/2 names the host in its `:authority` pseudo-header instead.
fn host_refusal(version: Version, headers: &HeaderMap) -> Option<&'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::HTTP_11 => Some("an HTTP/1.1 request needs a Host header"),
        (Some(_), Some(_)) => Some("a request has one Host header at most"),
        (Some(host), None) if !valid_host(host.as_bytes()) => {
            Some("a Host header is a host and an optional port")
        }
        _ => None,
    }
}

/// Whether `value` is a valid `Host` field value: `uri-host [ ":" port ]` (RFC 9110 §7.2, with
/// RFC 3986's `host` and `port`), or empty, as a request whose target has no authority sends it
/// (RFC 9112 §3.2). The host is an IP-literal in brackets or a reg-name (which an IPv4 address
/// also is); a port is digits, possibly none. So a value with a space, a `/`, `@`, `?` or `#`, a
/// byte outside ASCII, or an unbalanced bracket is refused: a proxy or cache in front may split or
/// key it differently. It runs on every request, so it is a byte scan that allocates nothing.
fn valid_host(value: &[u8]) -> bool {
    let after_host = match value.strip_prefix(b"[") {
        Some(literal) => {
            let Some(end) = literal.iter().position(|&b| b == b']') else {
                return false;
            };
            if !ip_literal(&literal[..end]) {
                return false;
            }
            &literal[end + 1..]
        }
        None => {
            let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            if !reg_name(&value[..end]) {
                return false;
            }
            &value[end..]
        }
    };
    match after_host {
        [] => true,
        [b':', port @ ..] => port.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// RFC 3986's `reg-name`: `*( unreserved / pct-encoded / sub-delims )`.
fn reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = name.get(i) {
        i += match b {
            b'%' if name
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) =>
            {
                3
            }
            _ if unreserved_or_sub_delim(b) => 1,
            _ => return false,
        };
    }
    true
}

/// What RFC 3986's `IP-literal` holds between its brackets: an `IPv6address` (which std's parser
/// reads to the same grammar, without allocating) or an `IPvFuture`,
/// `"v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )`.
fn ip_literal(inner: &[u8]) -> bool {
    match inner {
        [b'v' | b'V', rest @ ..] => {
            let Some(dot) = rest.iter().position(|&b| b == b'.') else {
                return false;
            };
            let (version, address) = (&rest[..dot], &rest[dot + 1..]);
            !version.is_empty()
                && version.iter().all(u8::is_ascii_hexdigit)
                && !address.is_empty()
                && address
                    .iter()
                    .all(|&b| b == b':' || unreserved_or_sub_delim(b))
        }
        _ => {
            std::str::from_utf8(inner).is_ok_and(|text| text.parse::<std::net::Ipv6Addr>().is_ok())
        }
    }
}

/// RFC 3986's `unreserved` (`ALPHA / DIGIT / "-" / "." / "_" / "~"`) and `sub-delims`
/// (`"!" / "$" / "&" / "'" / "(" / ")" / "*" / "+" / "," / ";" / "="`).
fn unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)
}

/// An accept error: one about the connection being accepted (reset or aborted before it was
/// taken) is that connection's; any other (out of file descriptors) is the process's, and waits
/// a moment before accepting again so the loop does not spin on it.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        tracing::debug!(error = %e, "a connection failed before it was accepted");
        return;
    }
    tracing::warn!(error = %e, "accept failed; retrying in a second");
    tokio::time::sleep(ACCEPT_RETRY).await;
}

/// `max_connections`, at least 1, at most what the semaphore and [`serve_with`]'s final wait can
/// count, and at most half the open-file limit (a connection's socket, and the blob file its
/// request reads).
fn fit_to_fd_limit(max_connections: usize) -> usize {
    let countable = Semaphore::MAX_PERMITS.min(u32::MAX as usize);
    let wanted = max_connections.clamp(1, countable);
    match open_file_limit() {
        Some(limit) if wanted as u64 > limit / 2 => {
            let fits = usize::try_from(limit / 2).unwrap_or(wanted).max(1);
            tracing::warn!(
                max_connections = wanted,
                open_file_limit = limit,
                lowered_to = fits,
                "max connections lowered to half the open-file limit (raise `ulimit -n` to allow more)"
            );
            fits
        }
        _ => wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_cap_is_at_least_one_and_fits_the_open_file_limit() {
        assert_eq!(fit_to_fd_limit(0), 1);
        assert_eq!(fit_to_fd_limit(2), 2);
        if let Some(limit) = open_file_limit() {
            assert!(fit_to_fd_limit(usize::MAX) as u64 <= limit / 2);
        }
    }

    #[test]
    fn one_host_on_http_1_1_and_at_most_one_on_any_version() {
        let mut one = HeaderMap::new();
        one.append(
            header::HOST,
            "example.org".parse().unwrap_or_else(|e| panic!("{e}")),
        );
        let mut two = one.clone();
        two.append(
            header::HOST,
            "example.net".parse().unwrap_or_else(|e| panic!("{e}")),
        );
        for version in [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2] {
            assert_eq!(host_refusal(version, &one), None, "{version:?}");
            assert!(host_refusal(version, &two).is_some(), "{version:?}");
        }
        let none = HeaderMap::new();
        assert!(host_refusal(Version::HTTP_11, &none).is_some());
        assert_eq!(host_refusal(Version::HTTP_10, &none), None);
        assert_eq!(host_refusal(Version::HTTP_2, &none), None);
    }

    #[test]
    fn a_host_value_is_a_host_and_an_optional_port() {
        for valid in [
            "example.com",
            "example.com:8080",
            "127.0.0.1:1",
            "[::1]:80",
            "[::1]",
            "[2001:db8::ffff:1.2.3.4]:443",
            "[v1.x]",
            "[V1f.a:b]:8",
            "",
            ":80",
            "a-b.c_d~e",
            "%41b",
            "%4a%4F",
            "!$&'()*+,;=",
            "host:",
            "[::1]:",
        ] {
            assert!(valid_host(valid.as_bytes()), "{valid:?} refused");
        }
        for invalid in [
            &b"a b"[..],
            b"a/b",
            b"user@host",
            b"host:8x",
            b"host:80:80",
            b"host: 80",
            b"[::1",
            b"::1]",
            b"[::1]x",
            b"[::1]80",
            b"[]",
            b"[::g]",
            b"[fe80::1%25eth0]",
            b"[v.x]",
            b"[v1.]",
            b"[v1x]",
            b"[vx.1]",
            b"[[::1]]",
            b"ho\x80st",
            "h\u{e9}st".as_bytes(),
            b"host?",
            b"host#",
            b"host\t",
            b"%4",
            b"%zz",
            b"a%",
            b"a\"b",
            b"a<b>",
        ] {
            assert!(
                !valid_host(invalid),
                "{:?} allowed",
                String::from_utf8_lossy(invalid)
            );
        }
    }

    #[test]
    fn an_invalid_host_value_is_refused_on_any_version() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::HOST,
            HeaderValue::from_bytes(b"ho\x80st").unwrap_or_else(|e| panic!("{e}")),
        );
        for version in [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2] {
            assert!(host_refusal(version, &headers).is_some(), "{version:?}");
        }
        headers.insert(header::HOST, HeaderValue::from_static("a b"));
        assert!(host_refusal(Version::HTTP_11, &headers).is_some());
        headers.insert(header::HOST, HeaderValue::from_static(""));
        assert_eq!(host_refusal(Version::HTTP_11, &headers), None);
    }
}
