//! `ServeOptions::send_timeout` on real sockets: a client that stops reading a download has its
//! connection closed (also while the server shuts down), over HTTP/1.1 and over an HTTP/2 stream
//! whose window it never opens again; a client that reads slowly is not cut off.

use std::time::Duration;

use tarvault::backend::memory::MemoryBackend;
use tarvault::server::ServeOptions;
use tarvault::{PutOptions, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::time::{sleep, timeout, Instant};

use crate::common::{key_of, noise};
use crate::limits::{closed_within, connect, start_with};

/// A memory store holding one blob of `len` bytes, and the blob.
async fn store_with(len: usize) -> (Store, Vec<u8>) {
    let store = Store::new(MemoryBackend::new());
    let data = noise(len, 11);
    store
        .put_bytes(bytes::Bytes::from(data.clone()), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put: {e}"));
    (store, data)
}

fn send_timeout(ms: u64) -> ServeOptions {
    ServeOptions {
        send_timeout: Duration::from_millis(ms),
        ..ServeOptions::default()
    }
}

fn get(data: &[u8]) -> Vec<u8> {
    let path = format!("/sha512/{}", key_of(data).to_hex());
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

/// A client that asks for 32 MiB and reads nothing: with a 1 s send timeout the server closes the
/// connection, and a shutdown asked for meanwhile returns instead of waiting for it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_after_the_send_timeout() {
    let (store, data) = store_with(32 << 20).await;
    let mut s = start_with(store, send_timeout(1000)).await;
    let mut tcp = connect(&s.addr).await;
    tcp.write_all(&get(&data))
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut head = vec![0u8; 4096];
    let n = timeout(Duration::from_secs(10), tcp.read(&mut head))
        .await
        .unwrap_or_else(|_| panic!("no response head"))
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);

    // Shut down while the response waits on this client: not before the send timeout, and then
    // within it and the watch's period (1.25 s), far inside 6 s.
    let started = Instant::now();
    let Some(stop) = s.stop.take() else {
        panic!("started without a stop")
    };
    let _ = stop.send(());
    timeout(Duration::from_secs(6), &mut s.served)
        .await
        .unwrap_or_else(|_| panic!("serve_with still waits on a client that reads nothing"))
        .unwrap_or_else(|e| panic!("serve task: {e}"))
        .unwrap_or_else(|e| panic!("serve_with: {e}"));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "closed early: {took:?}");

    // What the socket buffers held arrives, then the end: never the whole blob.
    let (_, rest) = closed_within(&mut tcp, Duration::from_secs(10)).await;
    assert!(
        n + rest < data.len(),
        "the whole blob arrived ({} bytes)",
        n + rest
    );
}

/// The same server with a client that reads 32 KiB every 20 ms through a small receive buffer:
/// far slower than the server could send, for longer than the send timeout, and never cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_slowly_gets_the_whole_blob() {
    let (store, data) = store_with(8 << 20).await;
    let s = start_with(store, send_timeout(500)).await;
    let socket = TcpSocket::new_v4().unwrap_or_else(|e| panic!("socket: {e}"));
    socket
        .set_recv_buffer_size(64 << 10)
        .unwrap_or_else(|e| panic!("SO_RCVBUF: {e}"));
    let addr = s.addr.parse().unwrap_or_else(|e| panic!("{e}"));
    let mut tcp = socket
        .connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    tcp.write_all(&get(&data))
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let started = Instant::now();
    let mut got = Vec::with_capacity(data.len() + 4096);
    let mut buf = vec![0u8; 32 << 10];
    let body_at = loop {
        sleep(Duration::from_millis(20)).await;
        let n = timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("stalled after {} bytes", got.len()))
            .unwrap_or_else(|e| panic!("cut off after {} bytes: {e}", got.len()));
        assert!(n > 0, "cut off after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() >= end + 4 + data.len() {
                break end + 4;
            }
        }
    };
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(got[body_at..] == data[..], "the body changed");
    // The reading took several send timeouts; were it shorter, this would show nothing.
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2), "read too fast: {took:?}");
}

/// HTTP/2: a stream whose window the client never opens again (it reads none of the body) while
/// its connection stays alive; the server closes the connection after the send timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_the_client_never_reads_is_closed_after_the_send_timeout() {
    let (store, data) = store_with(8 << 20).await;
    let s = start_with(store, send_timeout(1000)).await;
    let tcp = connect(&s.addr).await;
    let (client, mut conn) = h2::client::handshake(tcp)
        .await
        .unwrap_or_else(|e| panic!("h2 handshake: {e}"));
    let uri = format!("http://{}/sha512/{}", s.addr, key_of(&data).to_hex());
    let request = async move {
        let mut client = client
            .ready()
            .await
            .unwrap_or_else(|e| panic!("h2 ready: {e}"));
        let request = axum::http::Request::get(uri)
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        let (response, _) = client
            .send_request(request, true)
            .unwrap_or_else(|e| panic!("h2 send: {e}"));
        let response = response
            .await
            .unwrap_or_else(|e| panic!("h2 response: {e}"));
        // Held, never read: its window stays spent.
        (client, response)
    };
    let (_client, response) = tokio::select! {
        ended = &mut conn => panic!("the h2 connection ended first: {ended:?}"),
        answered = timeout(Duration::from_secs(10), request) => {
            answered.unwrap_or_else(|_| panic!("no h2 response"))
        }
    };
    assert_eq!(response.status(), axum::http::StatusCode::OK);
    let closed_before = send_timeouts(&s.addr).await;
    let started = Instant::now();
    // Ended, with an error or without: what matters is that the server closed it.
    let _ended = timeout(Duration::from_secs(6), &mut conn)
        .await
        .unwrap_or_else(|_| panic!("the stalled h2 connection is still open after 6 s"));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500), "closed early: {took:?}");
    // Counted (the counter is the process's, and other tests may add to it meanwhile).
    let closed_after = send_timeouts(&s.addr).await;
    assert!(
        closed_after > closed_before,
        "tarvault_http_send_timeouts_total {closed_before} -> {closed_after}"
    );
}

/// `tarvault_http_send_timeouts_total` from the server's `/-/metrics`.
async fn send_timeouts(addr: &str) -> u64 {
    let text = reqwest::get(format!("http://{addr}/-/metrics"))
        .await
        .unwrap_or_else(|e| panic!("metrics: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("metrics body: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix("tarvault_http_send_timeouts_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no send timeout counter in {text}"))
}
