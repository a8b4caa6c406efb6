//! RFC 9112 §3.2, held by the accept loop on every route: an HTTP/1.1 request without a `Host`
//! header, any request with two, and any request whose `Host` is not a host and an optional port,
//! is answered 400 before it reaches the app; HTTP/1.0 may leave `Host` out. (HTTP/2, which names the host in `:authority` instead, is asked without a `Host`
//! header in `limits::h2c_is_served_with_a_small_stream_limit`.) The router itself, asked
//! in-process, is not held to it.

use tarvault::server::Server;
use tarvault::{PutOptions, Store};

use crate::common::{self, key_of, noise, raw_status, sha1_hex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_its_one_valid_host_is_refused_on_every_route() {
    let store = Store::memory();
    let data = noise(1000, 5);
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put: {e}"));
    let server = Server::new(store);
    let base = common::serve(server.clone()).await;
    let addr = base.trim_start_matches("http://");
    let routes = [
        ("/-/health".to_string(), "health", 200),
        ("/-/metrics".to_string(), "metrics", 200),
        (format!("/sha512/{}", key_of(&data).to_hex()), "sha512", 200),
        (format!("/sha1/{}", sha1_hex(&data)), "sha1", 200),
        ("/nothing/here".to_string(), "other", 404),
    ];
    for (path, route, answered) in routes {
        for refused in [
            format!("GET {path} HTTP/1.1\r\n\r\n"),
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
            format!("GET {path} HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
            // One Host header, but not a host: hyper passes each of these on.
            format!("GET {path} HTTP/1.1\r\nHost: a b\r\n\r\n"),
            format!("GET {path} HTTP/1.1\r\nHost: user@a\r\n\r\n"),
            format!("GET {path} HTTP/1.1\r\nHost: a/b\r\n\r\n"),
            format!("GET {path} HTTP/1.1\r\nHost: a:8x\r\n\r\n"),
            format!("GET {path} HTTP/1.1\r\nHost: [::1\r\n\r\n"),
            format!("GET {path} HTTP/1.1\r\nHost: h\u{e9}st\r\n\r\n"),
            format!("GET {path} HTTP/1.0\r\nHost: a?b\r\n\r\n"),
        ] {
            assert_eq!(raw_status(addr, &refused).await, 400, "{refused:?}");
        }
        for request in [
            format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n"),
            format!("GET {path} HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"),
            // Empty: what a request whose target has no authority sends.
            format!("GET {path} HTTP/1.1\r\nHost: \r\n\r\n"),
            format!("GET {path} HTTP/1.0\r\n\r\n"),
        ] {
            assert_eq!(raw_status(addr, &request).await, answered, "{request:?}");
        }
        // The refusals never reached the router: only the four answered requests are counted.
        let m = server.metrics();
        assert_eq!(m.requests(route, answered), 4, "{route}");
        assert_eq!(m.requests(route, 400), 0, "{route}");
    }
    // In-process, a request has no wire version to hold it to (`router_get` sends no Host).
    let r = common::router_get(&server, "/-/health").await;
    assert_eq!(r.status(), axum::http::StatusCode::OK);
}
