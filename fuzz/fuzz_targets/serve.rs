//! The tarball server answers whatever a client or CDN sends: any path, any `Range`, `If-Range`,
//! `If-None-Match` and `If-Match`. It must never panic or answer 5xx over a healthy store, and what
//! it answers must be self-consistent: a 200 carries the whole blob its `ETag` names, a 206
//! exactly the bytes its `Content-Range` names, a 304 or a `HEAD` no body, a 416 the size.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tarvault::backend::memory::MemoryBackend;
use tarvault::mapping::MapEntry;
use tarvault::server::Server;
use tarvault::{PutOptions, Store};
use tower::ServiceExt;

/// A served blob and the names a request may give it.
struct Blob {
    bytes: Bytes,
    etag: String,
    sha512_path: String,
    sha1_path: String,
    blake3_path: String,
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    server: Server,
    blobs: Vec<Blob>,
}

/// An empty blob, a one-byte one and a 3000-byte one, the last also mapped as a scoped tarball.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let store = Store::new(MemoryBackend::new());
        let mut big = Vec::with_capacity(3000);
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            big.push(x as u8);
        }
        let blobs: Vec<Blob> = [Vec::new(), b"x".to_vec(), big]
            .into_iter()
            .map(|bytes| {
                let out = rt
                    .block_on(store.put_bytes(bytes.clone(), &PutOptions::default()))
                    .expect("put");
                Blob {
                    bytes: bytes.into(),
                    etag: format!("\"{}\"", out.digests.integrity()),
                    sha512_path: format!("/sha512/{}", out.digests.sha512_hex()),
                    sha1_path: format!("/sha1/{}", out.digests.shasum()),
                    blake3_path: format!("/blake3/{}", out.digests.blake3_hex()),
                }
            })
            .collect();
        let last = &blobs[2];
        let entry = MapEntry {
            name: "@fz/pkg".into(),
            version: "1.0.0".into(),
            file: "pkg-1.0.0.tgz".into(),
            integrity: last.etag.trim_matches('"').into(),
            shasum: last.sha1_path.trim_start_matches("/sha1/").into(),
            size: last.bytes.len() as u64,
        };
        let server = Server::with_mapping(store, [entry]).expect("mapping");
        Fixture { rt, server, blobs }
    })
}

/// A header value: the fuzzer's own text, or built around a real entity tag it could not guess.
fn etag_value(choice: u8, text: &[u8], etag: &str) -> Vec<u8> {
    match choice % 4 {
        0 => text.to_vec(),
        1 => etag.as_bytes().to_vec(),
        2 => format!("W/{etag}").into_bytes(),
        _ => [text, b", ", etag.as_bytes()].concat(),
    }
}

/// `bytes a-b/n` of a 206.
fn content_range(v: &HeaderValue) -> (u64, u64, u64) {
    let s = v.to_str().expect("Content-Range is ASCII");
    let rest = s.strip_prefix("bytes ").expect("bytes unit");
    let (span, n) = rest.split_once('/').expect("a/n");
    let (a, b) = span.split_once('-').expect("a-b");
    let num = |t: &str| t.parse::<u64>().expect("a number");
    (num(a), num(b), num(n))
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    // The first byte picks the method, the blob and how it is named; the second which headers
    // are sent; the third, two bits a header, how each entity-tag header is built.
    let [pick, mask, choices, rest @ ..] = data else {
        return;
    };
    let mut fields = rest.split(|&b| b == b'\n');
    let mut field = || fields.next().unwrap_or_default();
    let method = match pick % 4 {
        0 | 3 => Method::GET,
        1 => Method::HEAD,
        _ => Method::POST,
    };
    let target = usize::from(pick / 4 % 3);
    let blob = &f.blobs[target];
    let path = match pick / 12 % 4 {
        0 => blob.sha512_path.clone(),
        // An alias: npm's shasum or blake3.
        1 if pick / 48 % 2 == 0 => blob.sha1_path.clone(),
        1 => blob.blake3_path.clone(),
        2 => "/@fz%2fpkg/-/pkg-1.0.0.tgz".to_string(),
        _ => String::from_utf8_lossy(field()).into_owned(),
    };
    // The mapped tarball is the last blob whatever `target` said.
    let expected = if pick / 12 % 4 == 2 {
        &f.blobs[2]
    } else {
        blob
    };
    let Ok(mut req) = Request::builder()
        .method(method.clone())
        .uri(path.as_str())
        .body(Body::empty())
    else {
        return;
    };
    let headers = [
        header::RANGE,
        header::IF_RANGE,
        header::IF_NONE_MATCH,
        header::IF_MATCH,
    ];
    let mut sent = Vec::new();
    for (i, name) in headers.into_iter().enumerate() {
        if mask & (1 << i) == 0 {
            continue;
        }
        let text = field();
        let value = if i == 0 {
            text.to_vec()
        } else {
            etag_value(choices >> (2 * (i - 1)), text, &expected.etag)
        };
        let Ok(value) = HeaderValue::from_bytes(&value) else {
            return;
        };
        sent.push(name.clone());
        req.headers_mut().insert(name, value);
    }
    let (status, headers, body) = f.rt.block_on(async {
        let response = f.server.router().oneshot(req).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.expect("body");
        (parts.status, parts.headers, body)
    });
    assert!(!status.is_server_error(), "{status} for {path:?} {sent:?}");
    if method == Method::HEAD {
        assert!(body.is_empty(), "a HEAD answered with a body");
    }
    // Which blob the answer is about: the one its ETag names.
    let Some(served) = headers
        .get(header::ETAG)
        .and_then(|v| f.blobs.iter().find(|b| b.etag.as_bytes() == v.as_bytes()))
    else {
        assert!(
            !matches!(status, StatusCode::OK | StatusCode::PARTIAL_CONTENT)
                || path.starts_with("/-/"),
            "{status} without a known ETag for {path:?}"
        );
        return;
    };
    let len = served.bytes.len() as u64;
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .map(|v| v.to_str().expect("ascii").parse::<u64>().expect("a number"));
    match status {
        StatusCode::OK => {
            assert_eq!(content_length, Some(len));
            if method == Method::GET {
                assert_eq!(body, served.bytes, "a 200 without the whole blob");
            }
        }
        StatusCode::PARTIAL_CONTENT => {
            assert!(sent.contains(&header::RANGE), "a 206 nobody asked for");
            let (a, b, n) = content_range(&headers[header::CONTENT_RANGE]);
            assert!(
                a <= b && b < n && n == len,
                "bad Content-Range {a}-{b}/{n} of {len}"
            );
            assert_eq!(content_length, Some(b - a + 1));
            if method == Method::GET {
                assert_eq!(body, served.bytes.slice(a as usize..=b as usize));
            }
        }
        StatusCode::NOT_MODIFIED => assert!(body.is_empty(), "a 304 with a body"),
        StatusCode::RANGE_NOT_SATISFIABLE => {
            let want = format!("bytes */{len}");
            assert_eq!(headers[header::CONTENT_RANGE].as_bytes(), want.as_bytes());
        }
        _ => {}
    }
    // No condition and no range: a GET of a known blob is a plain 200.
    if sent.is_empty() && method == Method::GET && pick / 12 % 4 != 3 {
        assert_eq!(status, StatusCode::OK);
        assert!(std::ptr::eq(served, expected), "served another blob");
    }
});
