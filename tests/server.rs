//! The HTTP server (`tarvault::server`) on a real listener, driven by a real HTTP client (reqwest)
//! and, where a client library would hide what matters (a body cut short), by raw TCP.
#![cfg(feature = "server")]

mod common;
#[path = "server/composed.rs"]
mod composed;
#[path = "server/host.rs"]
mod host;
#[path = "server/http2.rs"]
mod http2;
#[path = "server/ignored.rs"]
mod ignored;
#[path = "server/limits.rs"]
mod limits;
#[path = "server/read_once.rs"]
mod read_once;
#[path = "server/send_timeout.rs"]
mod send_timeout;

use std::io::{Read, Write};

use reqwest::header;
use reqwest::StatusCode;
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::backend::BlobKey;
use tarvault::migrate::MapEntry;
use tarvault::server::Server;
use tarvault::{ErrorKind, PutOptions, Store};

use common::{corpus, corpus_bytes, key_of, noise, CorpusEntry};

/// A stored corpus tarball and what the server should say about it.
struct Stored {
    entry: CorpusEntry,
    bytes: bytes::Bytes,
    key: BlobKey,
}

impl Stored {
    fn sha512_path(&self) -> String {
        format!("/sha512/{}", self.key.to_hex())
    }
    fn blake3_path(&self) -> String {
        format!("/blake3/{}", common::digests_of(&self.bytes).blake3_hex())
    }
    fn etag(&self) -> String {
        format!("\"{}\"", self.entry.integrity)
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    backend: FsBackend,
    base: String,
    server: Server,
    plain: Stored,
    scoped: Stored,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"))
}

fn map_entry(e: &CorpusEntry) -> MapEntry {
    let file = e
        .tarball_path
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    MapEntry {
        name: e.name.clone(),
        version: e.version.clone(),
        file,
        integrity: e.integrity.clone(),
        shasum: e.shasum.clone(),
        size: e.size,
    }
}

/// An fs store holding one unscoped and one scoped corpus tarball, served with a mapping of both.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let backend = FsBackend::open(
        dir.path(),
        FsOptions {
            fsync: false,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("open: {e}"));
    let store = Store::new(backend.clone());
    let all = corpus();
    let pick = |scoped: bool| {
        all.iter()
            .find(|e| e.name.starts_with('@') == scoped && e.size > 1000)
            .cloned()
            .unwrap_or_else(|| panic!("corpus has no scoped={scoped} entry"))
    };
    let mut stored = Vec::new();
    for entry in [pick(false), pick(true)] {
        let bytes = corpus_bytes(&entry);
        let out = store
            .put_bytes(bytes.clone(), &PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("put {}: {e}", entry.name));
        assert_eq!(out.digests.integrity().to_string(), entry.integrity);
        let key = key_of(&bytes);
        stored.push(Stored { entry, bytes, key });
    }
    let scoped = stored.pop().unwrap_or_else(|| panic!("two stored"));
    let plain = stored.pop().unwrap_or_else(|| panic!("two stored"));
    let server = Server::with_mapping(store, [map_entry(&plain.entry), map_entry(&scoped.entry)])
        .unwrap_or_else(|e| panic!("server: {e}"));
    let base = common::serve(server.clone()).await;
    Fixture {
        _dir: dir,
        backend,
        base,
        server,
        plain,
        scoped,
    }
}

async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

fn header(r: &reqwest::Response, name: header::HeaderName) -> &str {
    r.headers()
        .get(&name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

fn assert_blob_headers(r: &reqwest::Response, s: &Stored, len: u64) {
    assert_eq!(header(r, header::CONTENT_LENGTH), len.to_string());
    assert_eq!(header(r, header::CONTENT_TYPE), "application/octet-stream");
    assert_eq!(header(r, header::ETAG), s.etag());
    assert_eq!(
        header(r, header::CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header(r, header::ACCEPT_RANGES), "bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_serves_the_verified_bytes_with_cache_headers() {
    let f = fixture().await;
    let tarball = |e: &CorpusEntry| e.tarball_path.clone();
    let scoped_encoded = tarball(&f.scoped.entry)
        .replacen('/', "%2F", 2)
        .replacen("%2F", "/", 1);
    assert!(scoped_encoded.starts_with("/@") && scoped_encoded.contains("%2F"));
    // A digest with its first digit percent-encoded: the same URL (RFC 3986 §6.2.2.2).
    let encoded =
        |route: &str, hex: &str| format!("{route}%{:02X}{}", hex.as_bytes()[0], &hex[1..]);
    let cases = [
        (&f.plain, f.plain.sha512_path()),
        (&f.plain, format!("/sha1/{}", f.plain.entry.shasum)),
        (
            &f.plain,
            format!("/sha1/{}", f.plain.entry.shasum.to_uppercase()),
        ),
        (&f.plain, tarball(&f.plain.entry)),
        (&f.plain, encoded("/sha512/", &f.plain.key.to_hex())),
        (&f.plain, encoded("/sha1/", &f.plain.entry.shasum)),
        (&f.scoped, f.scoped.sha512_path()),
        (&f.scoped, format!("/sha1/{}", f.scoped.entry.shasum)),
        (&f.scoped, tarball(&f.scoped.entry)),
        (&f.scoped, scoped_encoded),
        (&f.plain, f.plain.blake3_path()),
        (&f.scoped, f.scoped.blake3_path()),
    ];
    for (s, path) in &cases {
        let r = get(&format!("{}{path}", f.base), &[]).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_blob_headers(&r, s, s.entry.size);
        let body = r.bytes().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(body == s.bytes, "{path}: wrong bytes");

        let r = client()
            .head(format!("{}{path}", f.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("HEAD {path}: {e}"));
        assert_eq!(r.status(), StatusCode::OK, "HEAD {path}");
        assert_blob_headers(&r, s, s.entry.size);
        assert!(r.bytes().await.map(|b| b.is_empty()).unwrap_or(false));
    }
    let m = f.server.metrics();
    assert_eq!(m.requests("sha512", 200), 6);
    assert_eq!(m.requests("sha1", 200), 8);
    assert_eq!(m.requests("tarball", 200), 6);
    assert_eq!(m.requests("blake3", 200), 4);
    assert_eq!(
        m.body_bytes(),
        7 * f.plain.entry.size + 5 * f.scoped.entry.size
    );
}

/// A scoped tarball's URL as later npm clients wrote it, with the scope again after `/-/`
/// (`/@s/a/-/@s/a-1.0.0.tgz`, kept in lockfiles), serves the same blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_url_with_the_scope_after_the_dash_serves_the_tarball() {
    let f = fixture().await;
    let path = f.scoped.entry.tarball_path.clone();
    let (package, file) = path.rsplit_once("/-/").expect("a tarball path");
    let scope = package
        .trim_start_matches('/')
        .split('/')
        .next()
        .expect("a scope");
    for url in [
        format!("{}{package}/-/{scope}/{file}", f.base),
        format!(
            "{}{}/-/{scope}/{file}",
            f.base,
            package.replacen('/', "%2f", 2).replacen("%2f", "/", 1)
        ),
    ] {
        let r = get(&url, &[]).await;
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        assert_eq!(header(&r, header::ETAG), f.scoped.etag());
        assert_eq!(r.bytes().await.ok().as_deref(), Some(&f.scoped.bytes[..]));
    }
}

/// A HEAD answered 304 carries the length its 200 would have (RFC 9110 §8.6), not the empty
/// body's 0, which a cache merging the 304 into its stored response could take for the blob's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_answered_304_has_the_length_of_its_200() {
    let f = fixture().await;
    let url = format!("{}{}", f.base, f.plain.entry.tarball_path);
    let size = f.plain.bytes.len().to_string();
    let r = client()
        .head(&url)
        .header("if-none-match", f.plain.etag())
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD {url}: {e}"));
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&r, header::CONTENT_LENGTH), size);
    let r = client()
        .head(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD {url}: {e}"));
    assert_eq!(header(&r, header::CONTENT_LENGTH), size, "the 200's");
    let metrics = get(&format!("{}/-/metrics", f.base), &[]).await;
    assert_eq!(header(&metrics, header::CACHE_CONTROL), "no-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_answers_304_without_reading_the_blob() {
    let f = fixture().await;
    let url = format!("{}{}", f.base, f.plain.sha512_path());
    let etag = f.plain.etag();
    let weak = format!("W/{etag}");
    let list = format!("\"nope\", {etag}");
    for inm in [etag.as_str(), weak.as_str(), list.as_str(), "*"] {
        let r = get(&url, &[("if-none-match", inm)]).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{inm}");
        assert_eq!(header(&r, header::ETAG), etag);
        assert_eq!(
            header(&r, header::CACHE_CONTROL),
            "public, max-age=31536000, immutable"
        );
        assert!(r.bytes().await.map(|b| b.is_empty()).unwrap_or(false));
    }
    for path in [
        f.plain.entry.tarball_path.clone(),
        format!("/sha1/{}", f.plain.entry.shasum),
    ] {
        let r = get(&format!("{}{path}", f.base), &[("if-none-match", &etag)]).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{path}");
    }
    // If-None-Match is answered before Range.
    let r = get(&url, &[("if-none-match", &weak), ("range", "bytes=0-1")]).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    // Another tag, one tag holding ours between commas, and malformed members (unquoted, or
    // anything after one) are not a match.
    let bare = etag.trim_matches('"');
    for inm in [
        "\"sha512-other\"".to_string(),
        format!("\"v1,{bare},gz\""),
        bare.to_string(),
        format!("W/{bare}"),
        format!("junk, {etag}"),
        format!("*, {etag}"),
    ] {
        let r = get(&url, &[("if-none-match", &inm)]).await;
        assert_eq!(r.status(), StatusCode::OK, "{inm}");
        assert_eq!(
            r.bytes().await.ok().as_deref(),
            Some(&f.plain.bytes[..]),
            "{inm}"
        );
    }
    // An unknown blob is not "not modified", even for `*`.
    let unknown = format!("{}/sha512/{}", f.base, "00".repeat(64));
    let r = get(&unknown, &[("if-none-match", "*")]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Proof that a 304 does not read the blob: with its file corrupt, revalidation still answers
    // 304 and no integrity failure is seen, while a GET refuses the bytes.
    common::corrupt_blob(&f.backend, &f.plain.key, false);
    let r = get(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(f.server.metrics().integrity_failures(), 0);
    let r = get(&url, &[]).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(f.server.metrics().integrity_failures(), 1);
    assert_eq!(f.server.metrics().not_modified(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_is_evaluated_first_and_fails_with_412() {
    let f = fixture().await;
    let etag = f.plain.etag();
    let weak = format!("W/{etag}");
    let bare = etag.trim_matches('"');
    let paths = [
        f.plain.sha512_path(),
        format!("/sha1/{}", f.plain.entry.shasum),
        f.plain.entry.tarball_path.clone(),
    ];
    for path in &paths {
        let url = format!("{}{path}", f.base);
        // `*` or a strong match in the list: a plain GET.
        for im in [etag.clone(), "*".to_string(), format!("\"x\", {etag}")] {
            let r = get(&url, &[("if-match", &im)]).await;
            assert_eq!(r.status(), StatusCode::OK, "{path} {im}");
            assert_blob_headers(&r, &f.plain, f.plain.entry.size);
            assert_eq!(r.bytes().await.ok().as_deref(), Some(&f.plain.bytes[..]));
        }
        let r = get(&url, &[("if-match", &etag), ("range", "bytes=0-9")]).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{path}");
        let r = get(&url, &[("if-match", &etag), ("if-none-match", &etag)]).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{path}");
        // A weak tag never matches; neither do other or malformed tags. 412 comes before the
        // If-None-Match 304 and the Range 206, and for HEAD too.
        let failing = [
            weak.clone(),
            "\"sha512-other\"".to_string(),
            bare.to_string(),
            format!("\"v1,{bare},gz\""),
        ];
        for im in &failing {
            for extra in [
                None,
                Some(("if-none-match", etag.as_str())),
                Some(("range", "bytes=0-9")),
            ] {
                let mut hs = vec![("if-match", im.as_str())];
                hs.extend(extra);
                let r = get(&url, &hs).await;
                assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED, "{path} {hs:?}");
                assert_eq!(header(&r, header::CACHE_CONTROL), "no-store");
                assert!(r.headers().get(header::ETAG).is_none());
            }
        }
        let r = client()
            .head(&url)
            .header("if-match", "\"sha512-other\"")
            .send()
            .await
            .unwrap_or_else(|e| panic!("HEAD {path}: {e}"));
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED, "HEAD {path}");
    }
    // A blob that is not there is a 404 whatever the preconditions.
    for path in [
        format!("/sha512/{}", "00".repeat(64)),
        format!("/sha1/{}", "00".repeat(20)),
        "/left-pad/-/left-pad-9.9.9.tgz".to_string(),
    ] {
        let r = get(&format!("{}{path}", f.base), &[("if-match", "*")]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let m = f.server.metrics();
    assert_eq!(m.requests("sha512", 412), 13);
    assert_eq!(m.requests("sha1", 412), 13);
    assert_eq!(m.requests("tarball", 412), 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_ranges_get_206_and_others_the_whole_blob() {
    let f = fixture().await;
    let s = &f.scoped;
    let size = s.entry.size;
    let url = format!("{}{}", f.base, s.entry.tarball_path);
    let cases: [(String, u64, u64); 4] = [
        ("bytes=0-9".into(), 0, 10),
        (format!("bytes={}-", size - 7), size - 7, size),
        ("bytes=-5".into(), size - 5, size),
        (format!("bytes=100-{}", size + 100), 100, size),
    ];
    for (range, start, end) in &cases {
        let r = get(&url, &[("range", range)]).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&r, header::CONTENT_RANGE),
            format!("bytes {start}-{}/{size}", end - 1)
        );
        assert_blob_headers(&r, s, end - start);
        let body = r.bytes().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            body[..] == s.bytes[*start as usize..*end as usize],
            "{range}"
        );
    }
    let r = get(&url, &[("range", &format!("bytes={size}-"))]).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, header::CONTENT_RANGE), format!("bytes */{size}"));
    // Several ranges, another unit, or an If-Range that is not our strong tag: the whole blob.
    let weak = format!("W/{}", s.etag());
    let listed = format!("\"x\", {}", s.etag());
    for hs in [
        vec![("range", "bytes=0-1,5-6")],
        vec![("range", "items=0-1")],
        vec![("range", "bytes=0-1"), ("if-range", "\"sha512-old\"")],
        vec![("range", "bytes=0-1"), ("if-range", &weak)],
        vec![("range", "bytes=0-1"), ("if-range", &listed)],
    ] {
        let r = get(&url, &hs).await;
        assert_eq!(r.status(), StatusCode::OK, "{hs:?}");
        assert_eq!(r.bytes().await.map(|b| b.len() as u64).ok(), Some(size));
    }
    let etag = s.etag();
    let r = get(&url, &[("range", "bytes=0-1"), ("if-range", &etag)]).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    // HEAD ignores Range: the whole blob's length, no body.
    let r = client()
        .head(&url)
        .header("range", "bytes=0-1")
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD: {e}"));
    assert_eq!(r.status(), StatusCode::OK);
    assert_blob_headers(&r, s, size);
    assert_eq!(f.server.metrics().requests("tarball", 206), 5);
    assert_eq!(f.server.metrics().requests("tarball", 416), 1);
}

/// A blob whose file was cut short is corrupt, not a shorter blob: a range past what is left is
/// answered 500 (an integrity failure), where a 416 would advertise the short size as the blob's,
/// and `Store::get_range` says `Corrupt` rather than blaming the range. A range past the end of
/// a whole blob is still the caller's: 416 with the true size, `InvalidInput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_cut_short_is_corrupt_not_a_short_blob() {
    let f = fixture().await;
    let s = &f.plain;
    let size = s.entry.size;
    let url = format!("{}{}", f.base, s.sha512_path());
    let store = Store::new(f.backend.clone());
    let address = tarvault::Integrity::parse(&s.entry.integrity).unwrap_or_else(|e| panic!("{e}"));
    let past = size..size + 10;
    let err = store.get_range(&address, past.clone()).await.err();
    assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::InvalidInput));

    let path = common::writable_blob(&f.backend, &s.key);
    let half = size / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(half))
        .unwrap_or_else(|e| panic!("{e}"));

    let r = get(&url, &[("range", &format!("bytes={}-", half + 5))]).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(f.server.metrics().integrity_failures(), 1);
    let err = store.get_range(&address, half + 5..half + 9).await.err();
    assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::Corrupt));

    // Nor is the short size advertised by a HEAD, or a HEAD's revalidation (a cache would take
    // it): both see the file's size disagree with the blob's record.
    for inm in [None, Some(s.etag())] {
        let mut ask = client().head(&url);
        if let Some(etag) = &inm {
            ask = ask.header("if-none-match", etag);
        }
        let r = ask.send().await.unwrap_or_else(|e| panic!("HEAD: {e}"));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR, "{inm:?}");
        assert_eq!(header(&r, header::CACHE_CONTROL), "no-store");
    }
    assert_eq!(f.server.metrics().integrity_failures(), 3);
    // A GET's revalidation names no size: the client's copy, verified when it was served,
    // is still the blob, and gets a 304 (a full GET would get the 500 above).
    let r = get(&url, &[("if-none-match", &s.etag())]).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert!(r
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_none_or(|v| v == "0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_is_404_and_malformed_is_400() {
    let f = fixture().await;
    let cases = [
        (format!("/sha512/{}", "ab".repeat(64)), 404),
        (format!("/sha1/{}", "ab".repeat(20)), 404),
        ("/left-pad/-/left-pad-9.9.9.tgz".to_string(), 404),
        ("/@nobody/none/-/none-1.0.0.tgz".to_string(), 404),
        ("/".to_string(), 404),
        ("/favicon.ico".to_string(), 404),
        ("/sha512/abc".to_string(), 400),
        (format!("/sha512/{}", "zz".repeat(64)), 400),
        (format!("/sha1/{}", "ab".repeat(21)), 400),
        (format!("/blake3/{}", "ab".repeat(32)), 404),
        (format!("/blake3/{}", "ab".repeat(20)), 400),
        ("/blake3/-/blake3-1.0.0.tgz".to_string(), 404),
        ("/a/b/-/c.tgz".to_string(), 400),
        ("/a/-/%ff%fe.tgz".to_string(), 400),
        ("/sha512/".to_string(), 400),
        ("/sha1/%41%42".to_string(), 400),
        ("/@/-/x.tgz".to_string(), 400),
        ("/@%2F/-/x.tgz".to_string(), 400),
        // Not a digest route (a slash after the prefix): a tarball URL, or nothing.
        ("/sha512/-/sha512-1.0.0.tgz".to_string(), 404),
        ("/sha1/-/sha1-1.0.0.tgz".to_string(), 404),
        (format!("/sha1/{}/x", "ab".repeat(20)), 404),
        ("/%40s%2Fa/-/a-1.tgz".to_string(), 404),
        ("/a/-/%00.tgz".to_string(), 404),
        ("/-/-/-".to_string(), 404),
    ];
    for (path, status) in &cases {
        let r = get(&format!("{}{path}", f.base), &[]).await;
        assert_eq!(r.status().as_u16(), *status, "{path}");
        assert_eq!(header(&r, header::CACHE_CONTROL), "no-store", "{path}");
    }
    let r = client()
        .post(format!("{}{}", f.base, f.plain.sha512_path()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&r, header::ALLOW), "GET, HEAD");
    // The fixed routes answer another method the same way, `no-store` like every answer that is
    // not a blob (axum's own 405 had neither), and count it.
    for path in ["/-/health", "/-/metrics"] {
        let r = client()
            .post(format!("{}{path}", f.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(header(&r, header::ALLOW), "GET, HEAD", "{path}");
        assert_eq!(header(&r, header::CACHE_CONTROL), "no-store", "{path}");
    }
    let metrics = get(&format!("{}/-/metrics", f.base), &[]).await;
    let metrics = metrics.text().await.unwrap_or_else(|e| panic!("{e}"));
    for route in ["health", "metrics"] {
        let line = format!("tarvault_http_requests_total{{route=\"{route}\",status=\"405\"}} 1");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }

    // Without a mapping, npm URLs are unknown but digests still work.
    let bare = common::serve(Server::new(f.server.store().clone())).await;
    let r = get(&format!("{bare}{}", f.plain.entry.tarball_path), &[]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = get(&format!("{bare}{}", f.plain.sha512_path()), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// `sha1` and `sha512` are npm package names too: their tarball URLs (`/sha1/-/sha1-1.0.0.tgz`) are
/// tarball routes, not malformed digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_named_sha1_and_sha512_are_served_from_the_mapping() {
    let f = fixture().await;
    let named = |name: &str| MapEntry {
        name: name.to_string(),
        file: format!("{name}-1.0.0.tgz"),
        ..map_entry(&f.plain.entry)
    };
    let server = Server::with_mapping(f.server.store().clone(), [named("sha1"), named("sha512")])
        .unwrap_or_else(|e| panic!("server: {e}"));
    let base = common::serve(server.clone()).await;
    for path in [
        "/sha1/-/sha1-1.0.0.tgz".to_string(),
        "/sha512/-/sha512-1.0.0.tgz".to_string(),
        f.plain.sha512_path(),
        format!("/sha1/{}", f.plain.entry.shasum),
    ] {
        let r = get(&format!("{base}{path}"), &[]).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_blob_headers(&r, &f.plain, f.plain.entry.size);
        assert_eq!(
            r.bytes().await.ok().as_deref(),
            Some(&f.plain.bytes[..]),
            "{path}"
        );
    }
    let r = get(&format!("{base}/sha1/-/sha1-9.9.9.tgz"), &[]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let m = server.metrics();
    assert_eq!(m.requests("tarball", 200), 2);
    assert_eq!(m.requests("tarball", 404), 1);
    assert_eq!(m.requests("sha512", 200), 1);
    assert_eq!(m.requests("sha1", 200), 1);
}

/// A raw HTTP/1.1 exchange: the status, the declared Content-Length, and the body bytes that
/// arrived before the server closed the connection (cleanly or not). A connection closed before
/// any response head arrived reads as status 0.
fn raw_get(base: &str, path: &str, extra: &str) -> (u16, Option<usize>, usize) {
    let addr = base.trim_start_matches("http://");
    let mut tcp = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap_or_else(|e| panic!("{e}"));
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset is how an aborted body may end.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        assert!(got.is_empty(), "a partial response head: {got:?}");
        return (0, None, 0);
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    (status, length, got.len() - end - 4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_blob_is_refused_before_its_head_or_cut_short_past_the_limit() {
    let f = fixture().await;
    let store = f.server.store().clone();
    // Larger than the fs backend reads in one piece (8 MiB), so it streams in 1 MiB chunks and
    // bytes are on the wire before the end of the blob (where the corruption is) has been hashed.
    let data = noise(12 << 20, 7);
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let key = key_of(&data);
    let path = format!("/sha512/{}", key.to_hex());

    let (status, length, body) = raw_get(&f.base, &path, "");
    assert_eq!((status, length, body), (200, Some(data.len()), data.len()));

    // By default a blob of 12 MiB is verified whole before its head: corrupt, it is a 500.
    common::corrupt_blob(&f.backend, &key, true);
    let before = f.server.metrics().integrity_failures();
    let r = get(&format!("{}{path}", f.base), &[]).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(header(&r, header::CACHE_CONTROL), "no-store");
    let r = get(
        &format!("{}{path}", f.base),
        &[("range", "bytes=1048000-1049999")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(f.server.metrics().integrity_failures(), before + 2);

    // Past the limit (lowered here to the first chunk), it streams verified as it goes.
    f.server.verify_before_head(1 << 20);
    let before = f.server.metrics().integrity_failures();
    let base = f.base.clone();
    let p = path.clone();
    let (status, length, body) = tokio::task::spawn_blocking(move || raw_get(&base, &p, ""))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200);
    assert_eq!(length, Some(data.len()));
    assert!(
        body > 0 && body < data.len(),
        "the body must stop short of its Content-Length ({body} of {})",
        data.len()
    );
    assert_eq!(f.server.metrics().integrity_failures(), before + 1);

    // A range is never completed from unverified bytes either: the range's last piece is held
    // until the whole blob has verified. One spanning the first two chunks is cut short; one
    // inside the first chunk (or at the end) cannot start, so it is refused outright.
    let base = f.base.clone();
    let p = path.clone();
    let (status, length, body) =
        tokio::task::spawn_blocking(move || raw_get(&base, &p, "Range: bytes=1048000-1049999\r\n"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    // The head and the first piece may still sit in the server's write buffer when verification
    // fails (the error can come in the same write pass), in which case the connection closes with
    // no response at all; either way no complete body goes out.
    if status != 0 {
        assert_eq!((status, length), (206, Some(2000)));
    }
    assert!(
        body < 2000,
        "range body must be cut short, got {body} bytes"
    );
    for range in ["bytes=0-99", "bytes=-10"] {
        let r = get(&format!("{}{path}", f.base), &[("range", range)]).await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR, "{range}");
    }
    assert_eq!(f.server.metrics().integrity_failures(), before + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_prometheus_metrics() {
    let f = fixture().await;
    let r = get(&format!("{}/-/health", f.base), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.ok().as_deref(), Some("ok\n"));

    let url = format!("{}{}", f.base, f.plain.sha512_path());
    get(&url, &[])
        .await
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    get(&url, &[("if-none-match", &f.plain.etag())]).await;
    get(&format!("{}/sha512/zz", f.base), &[]).await;
    get(&format!("{}/nothing", f.base), &[]).await;
    common::corrupt_blob(&f.backend, &f.scoped.key, false);
    get(&format!("{}{}", f.base, f.scoped.entry.tarball_path), &[]).await;

    let r = get(&format!("{}/-/metrics", f.base), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(header(&r, header::CONTENT_TYPE).starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap_or_else(|e| panic!("{e}"));
    let value = |series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(
        value("tarvault_http_requests_total{route=\"sha512\",status=\"200\"}"),
        1
    );
    assert_eq!(
        value("tarvault_http_requests_total{route=\"sha512\",status=\"304\"}"),
        1
    );
    assert_eq!(
        value("tarvault_http_requests_total{route=\"sha512\",status=\"400\"}"),
        1
    );
    assert_eq!(
        value("tarvault_http_requests_total{route=\"other\",status=\"404\"}"),
        1
    );
    assert_eq!(
        value("tarvault_http_requests_total{route=\"tarball\",status=\"500\"}"),
        1
    );
    assert_eq!(
        value("tarvault_http_requests_total{route=\"health\",status=\"200\"}"),
        1
    );
    assert_eq!(value("tarvault_http_body_bytes_total"), f.plain.entry.size);
    assert_eq!(value("tarvault_http_not_modified_total"), 1);
    assert_eq!(value("tarvault_integrity_failures_total"), 1);
    assert_eq!(value("tarvault_http_response_seconds_count"), 6);
    assert_eq!(
        value("tarvault_http_response_seconds_bucket{le=\"+Inf\"}"),
        6
    );
    assert!(text.contains("# TYPE tarvault_http_response_seconds histogram"));
}

#[test]
fn the_cli_serves_a_store_with_a_mapping() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = dir.path().join("store");
    let entry = corpus()
        .into_iter()
        .find(|e| e.name.starts_with('@'))
        .unwrap_or_else(|| panic!("no scoped entry"));
    let file = common::corpus_dir().join(&entry.file);
    let bin = env!("CARGO_BIN_EXE_tarvault");
    let put = Command::new(bin)
        .args(["--store", &store.display().to_string(), "put"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let map = dir.path().join("map.jsonl");
    let line = serde_json::to_string(&map_entry(&entry)).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&map, format!("{line}\n")).unwrap_or_else(|e| panic!("{e}"));
    let bad = Command::new(bin)
        .args(["--store", &store.display().to_string(), "serve"])
        .args(["--held-memory", "lots"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        bad.status.code(),
        Some(2),
        "a held-memory size that is none"
    );
    let (mut child, base) = common::serve_cli(&store, &map, &[]);
    let result = std::panic::catch_unwind(|| {
        let (status, length, body) = raw_get(&base, &entry.tarball_path, "");
        assert_eq!(
            (status, length, body),
            (200, Some(entry.size as usize), entry.size as usize)
        );
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// An empty blob (a zero-byte file is a valid blob) is served as a 200 with an empty body, both
/// over HTTP and by the router alone, which polls the body past its end the way an embedding
/// stack may: a stream polled after it ended must keep saying it ended, not panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_blob_is_served_with_an_empty_body() {
    use futures::StreamExt;

    let store = Store::new(tarvault::backend::memory::MemoryBackend::new());
    let out = store
        .put_bytes(bytes::Bytes::new(), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put: {e}"));
    let path = format!("/sha512/{}", out.digests.sha512_hex());
    let server = Server::new(store.clone());
    let base = common::serve(server.clone()).await;
    let r = get(&format!("{base}{path}"), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, header::CONTENT_LENGTH), "0");
    assert_eq!(r.bytes().await.ok().map(|b| b.len()), Some(0));

    let response = common::router_get(&server, &path).await;
    assert_eq!(response.status().as_u16(), 200);
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap_or_else(|e| panic!("body: {e}"));
    assert!(body.is_empty());

    // The library's stream itself, polled again after its end.
    let mut blob = store
        .get(&out.digests.integrity())
        .await
        .unwrap_or_else(|e| panic!("get: {e}"));
    assert!(blob.next().await.is_none());
    assert!(blob.next().await.is_none());
}

/// `/sha1/<A>` where the index names another blob, B, for that sha1 (a wrong entry, which fsck
/// counts as possible): a `HEAD`, a revalidation and a range are refused as the `GET` is (500,
/// stored bytes failed verification), not answered with B's size or bytes, in either verification
/// mode: first with the entry and B's record both wrong (as the fs's one row has them), then with
/// B's record put right and the entry left behind. B's own sha1 is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sha1_whose_entry_names_another_blob_is_answered_for_nowhere() {
    use tarvault::backend::{Backend, PutHint};
    use tarvault::Verification;

    let memory = tarvault::backend::memory::MemoryBackend::new();
    let b = noise(5_000, 71);
    let (a, right) = (noise(5_000, 72), common::digests_of(&b));
    let sha1_a = common::digests_of(&a);
    let wrong = tarvault::Digests::from_parts(
        &right.sha512,
        sha1_a.hash(tarvault::Algorithm::Sha1).digest(),
        &right.blake3,
        right.size,
    )
    .unwrap_or_else(|e| panic!("digests: {e}"));
    let commit = |digests: tarvault::Digests| {
        let memory = memory.clone();
        async move {
            let w = memory.begin_put(&PutHint::default()).await.expect("begin");
            w.commit(&digests).await.expect("commit");
        }
    };
    Store::new(memory.clone())
        .put_bytes(b.clone(), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put: {e}"));
    commit(wrong).await;
    let by_a = format!("/sha1/{}", common::sha1_hex(&a));
    let etag = format!("\"{}\"", right.integrity());
    let asks: [(&str, Vec<(&str, &str)>); 3] = [
        ("plain", vec![]),
        ("revalidation", vec![("if-none-match", etag.as_str())]),
        ("range", vec![("range", "bytes=0-9")]),
    ];
    let rounds = [false, true].into_iter().flat_map(|right_again| {
        [Verification::Fast, Verification::Full].map(|mode| (right_again, mode))
    });
    for (right_again, mode) in rounds {
        if right_again {
            commit(right).await;
        }
        let store = Store::new(memory.clone()).with_verification(mode);
        let base = common::serve(Server::new(store)).await;
        let head = client()
            .head(format!("{base}{by_a}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("head: {e}"));
        assert_eq!(
            head.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{mode:?} HEAD"
        );
        for (what, headers) in &asks {
            let r = get(&format!("{base}{by_a}"), headers).await;
            assert_eq!(
                r.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{mode:?} {what}"
            );
        }
        let by_b = format!("{base}/sha1/{}", common::sha1_hex(&b));
        let head = client()
            .head(&by_b)
            .send()
            .await
            .unwrap_or_else(|e| panic!("head: {e}"));
        assert_eq!(head.status(), StatusCode::OK, "{mode:?} B's own sha1");
        assert_eq!(header(&head, header::CONTENT_LENGTH), "5000");
    }
}

/// Clients that stop reading spend the store's read budget, and downloads go on without it: a
/// download started then still gets every byte (in the fs backend's small chunks), and the
/// stalled clients' own responses are not cut.
#[tokio::test]
async fn downloads_go_on_once_stalled_clients_have_spent_the_read_budget() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let options = FsOptions {
        fsync: false,
        read_budget: 2 << 20,
        ..Default::default()
    };
    let backend = FsBackend::open(dir.path(), options).unwrap_or_else(|e| panic!("open: {e}"));
    let store = Store::new(backend);
    let data = bytes::Bytes::from(noise(8 << 20, 11));
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put: {e}"));
    let path = format!("/sha512/{}", key_of(&data).to_hex());
    let base = common::serve(Server::new(store)).await;
    let addr = base.trim_start_matches("http://").to_string();
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
        socket
            .set_recv_buffer_size(4096)
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = addr.parse().unwrap_or_else(|e| panic!("{e}"));
        let mut tcp = socket
            .connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let ask = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        tcp.write_all(ask.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
        stalled.push(tcp);
    }
    // Time for the stalled responses to fill their sockets and spend the budget.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let got = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let response = client()
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("get: {e}"));
        assert_eq!(response.status(), StatusCode::OK);
        response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("body: {e}"))
    })
    .await
    .unwrap_or_else(|_| panic!("a download with the budget spent finishes"));
    assert!(got == data, "every byte");
    // A stalled client that reads again gets its whole response.
    let mut first = stalled.swap_remove(0);
    drop(stalled);
    let mut response = Vec::new();
    let read = async {
        let mut buf = vec![0; 1 << 16];
        while !response.ends_with(&data[data.len() - 64..]) {
            let n = first
                .read(&mut buf)
                .await
                .unwrap_or_else(|e| panic!("read: {e}"));
            assert!(n > 0, "the response ends early");
            response.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), read)
        .await
        .unwrap_or_else(|_| panic!("the stalled response finishes"));
    assert!(
        response.ends_with(&data),
        "the stalled response's body whole"
    );
}
