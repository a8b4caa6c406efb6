//! What RFC 9110 has a server ignore, held over a real connection: validators it has no date for
//! (`If-Modified-Since`, `If-Unmodified-Since`, an `If-Range` date), and `Range` values that do not
//! parse or that it may ignore, which get the whole blob (200), never a 4xx or 5xx; positions past
//! u64 are clamped; an empty blob's ranges; and 405 with `Allow` for every other method.

use reqwest::StatusCode;
use tarvault::server::Server;
use tarvault::{PutOptions, Store};

use crate::common::{self, noise};
use crate::{client, get, header};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dates_and_unusable_ranges_are_ignored() {
    let store = Store::memory();
    let data = noise(1000, 9);
    let mut digests = Vec::new();
    for bytes in [data.clone(), Vec::new()] {
        let put = store.put_bytes(bytes, &PutOptions::default()).await;
        digests.push(put.unwrap_or_else(|e| panic!("put: {e}")).digests);
    }
    let base = common::serve(Server::new(store)).await;
    let [blob, empty] = [0, 1].map(|i| format!("{base}/sha512/{}", digests[i].sha512_hex()));
    let etag = format!("\"{}\"", digests[0].integrity());
    let (past, future) = (
        "Sat, 01 Jan 2000 00:00:00 GMT",
        "Fri, 01 Jan 2100 00:00:00 GMT",
    );
    let last = data.len() - 1;

    let mut whole = vec![
        vec![("if-modified-since", future)],
        vec![("if-unmodified-since", past)],
        vec![("if-none-match", "\"x\""), ("if-modified-since", future)],
        vec![("range", "bytes=0-9"), ("if-range", future)],
    ];
    for range in [
        "bytes=",
        "bytes=-",
        "bytes=5",
        "bytes=x-1",
        "bytes=9-5",
        "bytes=1--2",
        "bytes 0-5",
        "=0-9",
        "bytes=0-1,5-6",
    ] {
        whole.push(vec![("range", range)]);
    }
    for hs in &whole {
        let r = get(&blob, hs).await;
        assert_eq!(r.status(), StatusCode::OK, "{hs:?}");
        assert_eq!(r.bytes().await.ok().as_deref(), Some(&data[..]), "{hs:?}");
    }
    let r = get(
        &blob,
        &[("if-none-match", &etag), ("if-modified-since", past)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    let all = format!("bytes 0-{last}/{}", data.len());
    let none = format!("bytes */{}", data.len());
    for (url, range, status, content_range) in [
        (&blob, "bytes=0-18446744073709551616", 206, all.as_str()),
        (&blob, "bytes=-18446744073709551616", 206, all.as_str()),
        (&blob, "bytes=18446744073709551616-", 416, none.as_str()),
        // No part of an empty blob can be named; a suffix of it is the whole, empty, blob.
        (&empty, "bytes=0-0", 416, "bytes */0"),
        (&empty, "bytes=0-", 416, "bytes */0"),
    ] {
        let r = get(url, &[("range", range)]).await;
        assert_eq!(r.status().as_u16(), status, "{range}");
        assert_eq!(header(&r, header::CONTENT_RANGE), content_range, "{range}");
    }
    let r = get(&empty, &[("range", "bytes=-5")]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, header::CONTENT_LENGTH), "0");

    for method in ["OPTIONS", "PUT", "DELETE", "PATCH", "TRACE"] {
        let method = reqwest::Method::from_bytes(method.as_bytes());
        let method = method.unwrap_or_else(|e| panic!("{e}"));
        let r = client().request(method.clone(), &blob).send().await;
        let r = r.unwrap_or_else(|e| panic!("{method} {blob}: {e}"));
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(header(&r, header::ALLOW), "GET, HEAD", "{method}");
    }
}
