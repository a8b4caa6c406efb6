//! The blob responses over HTTP/2 (h2c, as a CDN may speak to its origin), read with the `h2`
//! client so that every header the server sent is seen as it was sent.

use std::time::Duration;

use axum::http::{HeaderMap, Request, StatusCode};
use tarvault::backend::memory::MemoryBackend;
use tarvault::server::Server;
use tarvault::{PutOptions, Store};
use tokio::net::TcpStream;

use crate::common::{self, noise};

/// The status and headers of `GET` or `HEAD` of `path` with `headers`, over h2c to `addr`.
async fn h2_head_of(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap) {
    let tcp = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (client, conn) = h2::client::handshake(tcp)
        .await
        .unwrap_or_else(|e| panic!("h2 handshake: {e}"));
    let conn = tokio::spawn(conn);
    let mut client = client
        .ready()
        .await
        .unwrap_or_else(|e| panic!("h2 ready: {e}"));
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(()).unwrap_or_else(|e| panic!("{e}"));
    let (response, _) = client
        .send_request(request, true)
        .unwrap_or_else(|e| panic!("h2 send: {e}"));
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .unwrap_or_else(|_| panic!("no h2 response to {method} {path}"))
        .unwrap_or_else(|e| panic!("h2 response: {e}"));
    conn.abort();
    (response.status(), response.headers().clone())
}

/// A `GET` answered 304 over HTTP/2 names no `Content-Length`, as over HTTP/1.1: the empty 304
/// body's `0` is not the length of the blob its 200 would carry, and RFC 9110 §8.6 allows only
/// that one in a 304; a cache that merges the 304's headers into its stored response would
/// otherwise record the blob as empty. A `HEAD`'s 304 carries its 200's length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_over_h2_names_no_length_but_the_200s() {
    let store = Store::new(MemoryBackend::new());
    let data = noise(5000, 11);
    let put = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put: {e}"));
    let base = common::serve(Server::new(store)).await;
    let addr = base.trim_start_matches("http://");
    let path = format!("/sha512/{}", put.digests.sha512_hex());
    let etag = format!("\"{}\"", put.digests.integrity());

    let (status, headers) = h2_head_of(addr, "GET", &path, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(
        headers.get("etag").and_then(|v| v.to_str().ok()),
        Some(etag.as_str())
    );
    assert_eq!(
        headers.get("content-length"),
        None,
        "a GET's 304 names no length"
    );

    let (status, headers) = h2_head_of(addr, "HEAD", &path, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(
        headers.get("content-length").and_then(|v| v.to_str().ok()),
        Some(data.len().to_string().as_str()),
        "a HEAD's 304 names its 200's length"
    );
    let (status, headers) = h2_head_of(addr, "HEAD", &path, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get("content-length").and_then(|v| v.to_str().ok()),
        Some(data.len().to_string().as_str())
    );
}
