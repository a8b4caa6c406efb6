//! `serve_with`'s bounds on real sockets: the header and idle timeouts close connections that
//! send nothing, half a header or a dripped one, or sit idle after a response; the connection cap
//! holds a connection back until another closes; shutdown lets a response in flight finish; h2c
//! is served with a small stream limit.

use std::time::Duration;

use tarvault::backend::memory::MemoryBackend;
use tarvault::server::{ServeOptions, Server};
use tarvault::{PutOptions, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

use crate::common::{key_of, loopback, noise};

const HEALTH: &[u8] = b"GET /-/health HTTP/1.1\r\nHost: t\r\n\r\n";

pub(crate) struct Running {
    pub(crate) addr: String,
    pub(crate) stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(crate) served: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub(crate) async fn start_with(store: Store, options: ServeOptions) -> Running {
    let (listener, addr) = loopback().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(tarvault::server::serve_with(
        listener,
        Server::new(store),
        options,
        async move {
            let _ = stopped.await;
        },
    ));
    Running {
        addr: addr.to_string(),
        stop: Some(stop),
        served,
    }
}

fn timeouts(header: u64, idle: u64) -> ServeOptions {
    ServeOptions {
        header_timeout: Duration::from_secs(header),
        idle_timeout: Duration::from_secs(idle),
        ..ServeOptions::default()
    }
}

pub(crate) async fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

/// Reads until the server closes the connection (EOF or a reset); panics if it is still open
/// after `limit`. Returns how long that took and how many bytes came before.
pub(crate) async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> (Duration, usize) {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let mut read = 0;
    loop {
        match timeout(limit.saturating_sub(started.elapsed()), tcp.read(&mut buf)).await {
            Err(_) => panic!("the connection is still open after {limit:?} ({read} bytes read)"),
            Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), read),
            Ok(Ok(n)) => read += n,
        }
    }
}

/// Reads one response to `/-/health` (its head and its 3-byte body) off a kept-alive connection.
/// Asks `/-/health` on `tcp` and reads its whole answer.
async fn ask_health(tcp: &mut TcpStream) {
    tcp.write_all(HEALTH)
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    read_health(tcp).await;
}

async fn read_health(tcp: &mut TcpStream) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\nok\n") {
        let n = timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no response in 10 s; got {got:?}"))
            .unwrap_or_else(|e| panic!("read: {e}"));
        assert!(n > 0, "closed before the response ended: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
}

/// Sends `sent` on a new connection and asserts the server closes it after its 1 s header
/// timeout (not before, not much after).
async fn closed_after_the_header_timeout(addr: &str, sent: &[u8]) {
    let mut tcp = connect(addr).await;
    tcp.write_all(sent)
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let (took, _) = closed_within(&mut tcp, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(900), "closed early: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let s = start_with(Store::new(MemoryBackend::new()), timeouts(1, 30)).await;
    closed_after_the_header_timeout(&s.addr, b"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_header_is_closed_after_the_header_timeout() {
    let s = start_with(Store::new(MemoryBackend::new()), timeouts(1, 30)).await;
    // Half an HTTP/1.1 header, and the first bytes of the HTTP/2 preface (which the server has
    // to read before it knows which protocol it is speaking).
    closed_after_the_header_timeout(&s.addr, b"GET /-/health HTTP/1.1\r\nHost: t\r\n").await;
    closed_after_the_header_timeout(&s.addr, b"PRI * HTTP/2.0\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_dripped_a_byte_at_a_time_is_closed_after_the_header_timeout() {
    let s = start_with(Store::new(MemoryBackend::new()), timeouts(1, 30)).await;
    for drip in [
        &b"GET /-/health HTTP/1.1\r\nX-Drip: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let mut tcp = connect(&s.addr).await;
        let started = Instant::now();
        let mut next = drip.iter();
        let mut buf = [0u8; 1024];
        loop {
            tokio::select! {
                read = tcp.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
                () = sleep(Duration::from_millis(150)) => {
                    let Some(byte) = next.next() else { break };
                    if tcp.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "a dripped header kept the connection open {took:?}"
        );
    }
}

/// Both bounds close a kept-alive HTTP/1.1 connection: the idle timeout, and hyper's header
/// timer (the wait for the next request is a header read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_its_response() {
    for (header, idle) in [(30, 1), (1, 30)] {
        let s = start_with(Store::new(MemoryBackend::new()), timeouts(header, idle)).await;
        let mut tcp = connect(&s.addr).await;
        ask_health(&mut tcp).await;
        closed_within(&mut tcp, Duration::from_secs(5)).await;
    }
}

/// A timeout too long to add to an `Instant` (`tarvault serve --idle-timeout 18446744073709551615`)
/// is "never", not a panic in every connection's task (which answered nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_past_any_instant_still_serve() {
    let forever = ServeOptions {
        header_timeout: Duration::MAX,
        idle_timeout: Duration::MAX,
        send_timeout: Duration::MAX,
        ..ServeOptions::default()
    };
    let s = start_with(Store::new(MemoryBackend::new()), forever).await;
    for _ in 0..2 {
        let mut tcp = connect(&s.addr).await;
        ask_health(&mut tcp).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_connection_waits_until_one_closes() {
    let options = ServeOptions {
        max_connections: 2,
        ..ServeOptions::default()
    };
    let s = start_with(Store::new(MemoryBackend::new()), options).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut tcp = connect(&s.addr).await;
        ask_health(&mut tcp).await;
        open.push(tcp);
    }
    // The kernel completes the third handshake (the listen backlog), but the server does not
    // take the connection while two are open.
    let mut third = connect(&s.addr).await;
    third
        .write_all(HEALTH)
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut buf = [0u8; 64];
    let early = timeout(Duration::from_millis(1500), third.read(&mut buf)).await;
    assert!(early.is_err(), "a third connection was served: {early:?}");
    drop(open.pop());
    read_health(&mut third).await;
    // Once they are closed, the server keeps answering (here, on a new connection).
    drop(open);
    drop(third);
    let mut again = connect(&s.addr).await;
    ask_health(&mut again).await;
}

/// Shutdown stops accepting and closes idle connections, but a response in flight (a blob larger
/// than the socket buffers, read slowly) arrives whole before `serve_with` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_response_in_flight_finish() {
    let store = Store::new(MemoryBackend::new());
    let data = noise(32 << 20, 3);
    store
        .put_bytes(bytes::Bytes::from(data.clone()), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put: {e}"));
    let mut s = start_with(store, ServeOptions::default()).await;
    let mut idle = connect(&s.addr).await;
    ask_health(&mut idle).await;

    let mut tcp = connect(&s.addr).await;
    let path = format!("/sha512/{}", key_of(&data).to_hex());
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut got = vec![0u8; 65536];
    let n = timeout(Duration::from_secs(10), tcp.read(&mut got))
        .await
        .unwrap_or_else(|_| panic!("no response head"))
        .unwrap_or_else(|e| panic!("read: {e}"));
    got.truncate(n);
    let Some(stop) = s.stop.take() else {
        panic!("started without a stop")
    };
    let _ = stop.send(());
    closed_within(&mut idle, Duration::from_secs(5)).await;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        sleep(Duration::from_millis(5)).await;
        match timeout(Duration::from_secs(10), tcp.read(&mut buf)).await {
            Err(_) => panic!("the response stalled after {} bytes", got.len()),
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("read after {} bytes: {e}", got.len()),
        }
    }
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head"));
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(
        got[end + 4..] == data[..],
        "the body was cut short or changed"
    );
    timeout(Duration::from_secs(5), s.served)
        .await
        .unwrap_or_else(|_| panic!("serve_with did not return after shutdown"))
        .unwrap_or_else(|e| panic!("serve task: {e}"))
        .unwrap_or_else(|e| panic!("serve_with: {e}"));
    assert!(
        TcpStream::connect(&s.addr).await.is_err(),
        "still listening"
    );
}

/// h2c (HTTP/2 with prior knowledge) is served, announcing a stream limit far below hyper's 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_is_served_with_a_small_stream_limit() {
    let s = start_with(Store::new(MemoryBackend::new()), ServeOptions::default()).await;
    let tcp = connect(&s.addr).await;
    let (client, mut conn) = h2::client::handshake(tcp)
        .await
        .unwrap_or_else(|e| panic!("h2 handshake: {e}"));
    let request = async move {
        let mut client = client
            .ready()
            .await
            .unwrap_or_else(|e| panic!("h2 ready: {e}"));
        let request = axum::http::Request::get(format!("http://{}/-/health", s.addr))
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        let (response, _) = client
            .send_request(request, true)
            .unwrap_or_else(|e| panic!("h2 send: {e}"));
        response
            .await
            .unwrap_or_else(|e| panic!("h2 response: {e}"))
    };
    let response = tokio::select! {
        ended = &mut conn => panic!("the h2 connection ended first: {ended:?}"),
        response = timeout(Duration::from_secs(10), request) => {
            response.unwrap_or_else(|_| panic!("no h2 response"))
        }
    };
    assert_eq!(response.status(), axum::http::StatusCode::OK);
    assert_eq!(conn.max_concurrent_send_streams(), 32);
}
