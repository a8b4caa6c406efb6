//! The read-only `http://` backend against a real [`Server`] on loopback: reads by sha512 and by
//! shasum, verified on this side (a lying server is caught), writes refused, and a mirror (a cached
//! store over it, opened from a store spec) that keeps serving what it fetched.
#![cfg(all(feature = "http", feature = "server"))]

mod common;
mod conformance;

use axum::http::header;
use axum::response::IntoResponse;
use tarvault::server::Server;
use tarvault::{ErrorKind, Integrity, PutOptions, Store};

use common::{noise, sha1_hex, sha512_sri};

async fn origin_with(blobs: &[Vec<u8>]) -> (Store, String) {
    let origin = Store::memory();
    for b in blobs {
        origin
            .put_bytes(b.clone(), &PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let url = common::serve(Server::new(origin.clone())).await;
    (origin, url)
}

fn addr(s: &str) -> Integrity {
    Integrity::parse_address(s).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn reads_by_sha512_and_shasum_are_verified() {
    let small = noise(1000, 1);
    let large = noise(3 << 20, 2);
    let (_origin, url) = origin_with(&[small.clone(), large.clone()]).await;
    let remote = Store::open(&format!("{url}/"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for data in [&small, &large] {
        for address in [sha512_sri(data), sha1_hex(data)] {
            let got = remote
                .get(&addr(&address))
                .await
                .unwrap_or_else(|e| panic!("{address}: {e}"))
                .bytes()
                .await
                .unwrap_or_else(|e| panic!("{address}: {e}"));
            assert_eq!(&got[..], &data[..], "{address}");
            assert!(remote.contains(&addr(&address)).await.unwrap_or(false));
        }
        let info = remote
            .stat(&addr(&sha512_sri(data)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(info.size, data.len() as u64);
    }
    let part = remote
        .get_range(&addr(&sha512_sri(&large)), 10..20)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&part[..], &large[10..20]);
    let missing = noise(10, 3);
    for address in [sha512_sri(&missing), sha1_hex(&missing)] {
        let err = remote
            .get(&addr(&address))
            .await
            .err()
            .unwrap_or_else(|| panic!("found"));
        assert_eq!(err.kind(), ErrorKind::NotFound, "{address}: {err}");
    }
    // Read-only: writes, deletes and listings are refused, not silently dropped.
    let err = remote
        .put_bytes(&b"x"[..], &PutOptions::default())
        .await
        .err();
    assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::Unsupported));
    let err = remote.delete(&addr(&sha512_sri(&small))).await.err();
    assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::Unsupported));
    // A listing is refused for what it is, not for being a write (`tarvault ls` said "read-only").
    let err = futures::StreamExt::next(&mut remote.list())
        .await
        .and_then(Result::err)
        .unwrap_or_else(|| panic!("listed"));
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(!err.to_string().contains("read-only"), "{err}");
    assert!(err.to_string().contains("no listing"), "{err}");
}

/// The CLI over an `http://` store: a write or a listing is a request that store cannot take,
/// exit 2, not 5, which says a tarball was refused by policy.
#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_writes_and_listings_as_unsupported() {
    let (_origin, url) = origin_with(&[noise(100, 4)]).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("x.bin");
    std::fs::write(&file, b"x").unwrap_or_else(|e| panic!("{e}"));
    let file = file.display().to_string();
    let cases: [(&[&str], &str); 3] = [
        (&["put", &file], "read-only"),
        (&["rm", &sha512_sri(&noise(100, 4))], "read-only"),
        (&["ls"], "no listing"),
    ];
    for (args, says) in cases {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tarvault"))
            .arg("--store")
            .arg(&url)
            .args(args)
            .output()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_lying_server_is_caught() {
    let good = noise(5000, 4);
    let bad = noise(5000, 5);
    let key = common::key_of(&good);
    let shasum = sha1_hex(&good);
    let etag = format!("\"{}\"", sha512_sri(&good));
    // Answers every request with the wrong bytes, under the right headers.
    let liar = axum::Router::new().fallback(move || {
        let (bad, etag) = (bad.clone(), etag.clone());
        async move { ([(header::ETAG, etag)], bad).into_response() }
    });
    let url = common::serve(liar).await;
    let remote = Store::open(&url).await.unwrap_or_else(|e| panic!("{e}"));
    for address in [format!("sha512-{}", key.hash().to_base64()), shasum] {
        let read = match remote.get(&addr(&address)).await {
            Ok(stream) => stream.bytes().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let err = read
            .err()
            .unwrap_or_else(|| panic!("{address}: served bad bytes"));
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{address}: {err}");
    }
}

#[tokio::test]
async fn a_mirror_is_a_cached_store_over_it() {
    let data = noise(200_000, 6);
    let (origin, url) = origin_with(std::slice::from_ref(&data)).await;
    let spec =
        format!(r#"{{"cached": {{"local": "memory:", "remote": "{url}", "capacity": "10MiB"}}}}"#);
    let mirror = Store::open(&spec).await.unwrap_or_else(|e| panic!("{e}"));
    let address = addr(&sha1_hex(&data));
    let first = mirror
        .get(&address)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&first[..], &data[..]);
    // Gone upstream: the mirror still serves its verified copy.
    assert!(origin.delete(&address).await.unwrap_or(false));
    let again = mirror
        .get(&addr(&sha512_sri(&data)))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&again[..], &data[..]);
}

/// A lookup by blake3 over HTTP, as by sha1: `HEAD /blake3/<hex>` names the blob by its ETag,
/// and the read is verified against the blake3 asked by. Found when the origin holds the blob,
/// "not found" (exit 3 from the CLI) when it does not; a mirror's tier keeps answering by blake3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blake3_lookup_over_http_is_answered() {
    use tarvault::Algorithm;

    let held = noise(4000, 7);
    let absent = noise(4000, 8);
    let (_origin, url) = origin_with(std::slice::from_ref(&held)).await;
    let by_blake3 =
        |data: &[u8]| addr(&common::digests_of(data).hash(Algorithm::Blake3).to_string());
    let remote = Store::open(&url).await.unwrap_or_else(|e| panic!("{e}"));
    for by in [by_blake3(&held), addr(&sha1_hex(&held))] {
        let got = common::read_verified(&remote, &by).await;
        assert_eq!(&got[..], &held[..], "{by}");
        assert!(remote.contains(&by).await.unwrap_or(false), "{by}");
    }
    for by in [by_blake3(&absent), addr(&sha1_hex(&absent))] {
        let err = remote.stat(&by).await.err();
        assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::NotFound), "{by}");
    }

    // A cache tier over it: found through the remote, then in the tier.
    let spec =
        format!(r#"{{"cached": {{"local": "memory:", "remote": "{url}", "capacity": "1MiB"}}}}"#);
    let mirror = Store::open(&spec).await.unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..2 {
        let got = common::read_verified(&mirror, &by_blake3(&held)).await;
        assert_eq!(&got[..], &held[..]);
    }
    assert!(!mirror.contains(&by_blake3(&absent)).await.unwrap_or(true));

    // The CLI: exit 0 for the blob the origin holds, 3 for one it lacks.
    let Some(bin) = option_env!("CARGO_BIN_EXE_tarvault") else {
        return;
    };
    for (address, code) in [
        (by_blake3(&held).to_string(), 0),
        (by_blake3(&absent).to_string(), 3),
        (sha1_hex(&held), 0),
        (sha1_hex(&absent), 3),
        (sha512_sri(&absent), 3),
    ] {
        let url = url.clone();
        let args = ["--store".to_string(), url, "has".into(), address.clone()];
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin)
                .args(args)
                .env_remove("TARVAULT_STORE")
                .output()
                .unwrap_or_else(|e| panic!("run tarvault: {e}"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.status.code(), Some(code), "has {address}: {out:?}");
    }
}

#[tokio::test]
async fn urls_are_checked() {
    for bad in ["http://", "http:///x", "https://h/x?y=1"] {
        let err = Store::open(bad)
            .await
            .err()
            .unwrap_or_else(|| panic!("{bad} opened"));
        assert_eq!(err.kind(), ErrorKind::Config, "{bad}: {err}");
    }
}

/// The conformance suite, in the read-only form that fits: puts, deletes and listings go to the
/// origin's own backend (as they would on the machine that publishes), and every read — `get`,
/// `head`, `resolve_alias` — goes through the `http://` backend to a `Server` over that origin.
/// The corruption cases are left out: the origin's server refuses a corrupt blob itself (a 500,
/// or a body cut short), which this side sees as a backend failure, not as bytes to verify (the
/// lying server above covers verification here).
mod read_only_conformance {
    use std::ops::Range;
    use std::sync::Arc;

    use async_trait::async_trait;
    use bytes::Bytes;
    use futures::stream::BoxStream;
    use tarvault::backend::http::HttpBackend;
    use tarvault::backend::memory::MemoryBackend;
    use tarvault::backend::{
        AliasRebuild, Backend, BlobKey, BlobStat, BlobWriter, GetResult, PutHint,
    };
    use tarvault::integrity::{Digests, Hash};
    use tarvault::server::Server;
    use tarvault::Store;

    use crate::conformance;

    /// Writes to the origin, reads over HTTP.
    #[derive(Debug)]
    struct ReadOverHttp {
        origin: MemoryBackend,
        http: HttpBackend,
    }

    #[async_trait]
    impl Backend for ReadOverHttp {
        fn describe(&self) -> String {
            format!("origin memory read over {}", self.http.describe())
        }
        async fn begin_put(&self, hint: &PutHint) -> tarvault::Result<Box<dyn BlobWriter>> {
            self.origin.begin_put(hint).await
        }
        async fn get(
            &self,
            key: &BlobKey,
            range: Option<Range<u64>>,
        ) -> tarvault::Result<Option<GetResult>> {
            self.http.get(key, range).await
        }
        async fn head(&self, key: &BlobKey) -> tarvault::Result<Option<BlobStat>> {
            self.http.head(key).await
        }
        async fn delete(&self, key: &BlobKey) -> tarvault::Result<bool> {
            self.origin.delete(key).await
        }
        fn list(&self) -> BoxStream<'static, tarvault::Result<BlobKey>> {
            self.origin.list()
        }
        async fn resolve_alias(&self, hash: &Hash) -> tarvault::Result<Option<BlobKey>> {
            self.http.resolve_alias(hash).await
        }
        async fn rebuild_aliases(
            &self,
            found: BoxStream<'_, Digests>,
            options: &tarvault::backend::RebuildOptions,
        ) -> tarvault::Result<AliasRebuild> {
            self.origin.rebuild_aliases(found, options).await
        }
    }

    struct Fixture(Arc<ReadOverHttp>);

    #[async_trait]
    impl conformance::Fixture for Fixture {
        fn backend(&self) -> Arc<dyn Backend> {
            self.0.clone()
        }
        async fn plant(&self, key: &BlobKey, bytes: Bytes) {
            assert!(
                self.0.origin.corrupt_for_test(key, bytes),
                "nothing to corrupt"
            );
        }
    }

    async fn make() -> Fixture {
        let origin = MemoryBackend::new();
        let url = crate::common::serve(Server::new(Store::new(origin.clone()))).await;
        let http = HttpBackend::open_url(&url).unwrap_or_else(|e| panic!("{e}"));
        Fixture(Arc::new(ReadOverHttp { origin, http }))
    }

    conformance::suite!(@cases make;
        roundtrip_sizes, put_is_idempotent,
        put_mismatch_stores_nothing, put_checks_any_expected_algorithm, missing_is_not_found,
        ranges, truncated_input_stores_nothing, concurrent_same_content, batch_put,
        put_stream_in_order, async_read_adapter, large_put_with_expected_integrity,
        corpus_digests_and_lookups);
}

/// An upstream that sends its headers and half the body, then goes silent with the connection
/// open: a mirror's read fails as a backend error once the read timeout passes, instead of
/// waiting for ever (and holding every later reader of the blob, who share the one fill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upstream_fails_a_read_in_bounded_time() {
    use std::sync::Arc;
    use std::time::Duration;
    use tarvault::backend::compose::{Cached, CachedOptions};
    use tarvault::backend::http::HttpBackend;
    use tarvault::backend::memory::MemoryBackend;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let data = noise(5000, 4);
    let (listener, at) = common::loopback().await;
    let body = data.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let _ = sock.read(&mut buf).await;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(&body[..2500]).await;
            open.push(sock); // never finished, never closed
        }
    });
    let upstream =
        HttpBackend::open_url_with_timeout(&format!("http://{at}"), Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("{e}"));
    let mirror = Cached::new(
        Arc::new(MemoryBackend::new()),
        Arc::new(upstream),
        CachedOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mirror = Store::new(mirror);
    let address = addr(&sha512_sri(&data));
    for _ in 0..2 {
        let read = async {
            match mirror.get(&address).await {
                Ok(s) => s.bytes().await.map(|_| ()),
                Err(e) => Err(e),
            }
        };
        let got = tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .unwrap_or_else(|_| {
                panic!("a read of a stalled upstream was still pending after 20 s")
            });
        assert_eq!(got.map_err(|e| e.kind()), Err(ErrorKind::Backend));
    }
}

/// An upstream whose `Content-Length` claims 2^62 bytes and sends three: reading the blob whole
/// fails as a backend error once the connection ends, instead of aborting the process by
/// reserving memory for the size the upstream claimed before any byte was checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_claimed_length_is_not_reserved_up_front() {
    use std::time::Duration;
    use tarvault::backend::http::HttpBackend;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (listener, at) = common::loopback().await;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let _ = sock.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 4611686018427387904\r\n\r\nabc";
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    let upstream =
        HttpBackend::open_url_with_timeout(&format!("http://{at}"), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}"));
    let store = Store::new(upstream);
    let address = addr(&sha512_sri(&noise(100, 9)));
    let stream = store.get(&address).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stream.len(), 1 << 62);
    let read = tokio::time::timeout(Duration::from_secs(20), stream.bytes())
        .await
        .unwrap_or_else(|_| panic!("the read was still pending after 20 s"));
    assert_eq!(read.map_err(|e| e.kind()), Err(ErrorKind::Backend));
}

/// An upstream that answers an error with a long body and then goes silent: the error's message
/// needs the body's first line only, so the read fails as a backend error at once with that line,
/// instead of waiting on the rest until the read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_body_is_read_for_its_start_only() {
    use std::time::Duration;
    use tarvault::backend::http::HttpBackend;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (listener, at) = common::loopback().await;
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let _ = sock.read(&mut buf).await;
            let body = format!("upstream broke\n{}", "x".repeat(64 << 10));
            let head = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\n\r\n",
                body.len() + 1
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            open.push(sock); // one byte short, never closed
        }
    });
    let upstream =
        HttpBackend::open_url_with_timeout(&format!("http://{at}"), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
    let store = Store::new(upstream);
    let address = addr(&sha512_sri(&noise(100, 9)));
    let got = tokio::time::timeout(Duration::from_secs(20), store.get(&address))
        .await
        .unwrap_or_else(|_| panic!("the read was still pending after 20 s"));
    let err = got
        .err()
        .unwrap_or_else(|| panic!("a 500 must be an error"));
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(err.to_string().contains("500"), "{err}");
    assert!(err.to_string().contains("upstream broke"), "{err}");
}
