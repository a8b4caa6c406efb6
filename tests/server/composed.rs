//! The server over composed stores: a cache tier in front of the store of record, and replicas.
//! Their reads hand out a copy verified whole, so the server does not read a blob a second time to
//! verify it before its head, and one with no good copy is refused before its head; a
//! revalidation is answered from the tier's own `stat`, and a `HEAD` never names the size of a
//! damaged copy.

use std::sync::Arc;

use reqwest::StatusCode;
use tarvault::backend::compose::{Cached, CachedOptions, Replicated, ReplicatedOptions};
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::backend::Backend;
use tarvault::server::Server;
use tarvault::{PutOptions, Store};

use crate::common::{self, key_of, noise};

fn fs(root: &std::path::Path) -> FsBackend {
    FsBackend::open(
        root,
        FsOptions {
            fsync: false,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("open an fs store at {}: {e}", root.display()))
}

/// A 20 MiB blob (over what a cache tier holds in memory, so its copy is streamed in chunks from a
/// temporary file) read twice through a server over a cache tier: one fill, one hit, and no other
/// read of the tier. Were the server to verify it whole before its head, as it does blobs read
/// straight from the fs, each `GET` would read the tier's copy once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_blob_is_read_once_per_get_and_revalidated_from_the_tier() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let cached = Cached::new(
        Arc::new(fs(&dir.path().join("tier"))),
        Arc::new(fs(&dir.path().join("remote"))),
        CachedOptions { capacity: 1 << 30 },
    )
    .await
    .unwrap_or_else(|e| panic!("open the cache: {e}"));
    let data = noise(20 << 20, 17);
    let key = key_of(&data);
    let store = Store::new(cached.clone());
    let put = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put: {e}"));
    assert!(cached.verifies_reads_whole().is_some());
    // Nothing in the tier yet: no immediate answer, the remote is asked.
    assert!(cached.exists_now(&key).is_none());
    assert!(cached.size_now(&key).is_none());

    let base = common::serve(Server::new(store)).await;
    let url = format!("{base}/sha512/{}", key.to_hex());
    let client = reqwest::Client::new();
    for round in 0..2 {
        let r = client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET: {e}"));
        assert_eq!(r.status(), StatusCode::OK, "round {round}");
        let body = r
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("body, round {round}: {e}"));
        assert!(body[..] == data[..], "round {round}: the bytes served");
    }
    let stats = cached.stats();
    assert_eq!(
        (stats.misses, stats.fetches, stats.hits),
        (1, 1, 1),
        "one fill and one hit: no read of the tier to verify before the head"
    );

    // Held by the tier now: it answers at once.
    assert_eq!(cached.exists_now(&key).map(|r| r.ok()), Some(Some(true)));
    assert_eq!(
        cached.size_now(&key).map(|r| r.ok()),
        Some(Some(Some(data.len() as u64)))
    );
    let etag = format!("\"{}\"", put.digests.integrity());
    let revalidate = || async {
        let r = client
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap_or_else(|e| panic!("revalidate: {e}"));
        r.status()
    };
    assert_eq!(revalidate().await, StatusCode::NOT_MODIFIED);
    assert_eq!(cached.stats().hits, 1, "a 304 reads nothing");

    // The tier's copy cut short: a HEAD names the blob's size (the remote's), not the copy's,
    // and a GET serves the whole blob.
    let tier = fs(&dir.path().join("tier"));
    let path = common::writable_blob(&tier, &key);
    std::fs::write(&path, &data[..1000]).unwrap_or_else(|e| panic!("cut the copy short: {e}"));
    let r = client
        .head(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD: {e}"));
    assert_eq!(r.status(), StatusCode::OK);
    let length = r.headers().get(reqwest::header::CONTENT_LENGTH);
    let length = length.and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    assert_eq!(length, Some(data.len()), "HEAD of a damaged copy");
    let body = client
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status());
    let body = body.unwrap_or_else(|e| panic!("GET: {e}")).bytes().await;
    assert!(
        body.is_ok_and(|b| b[..] == data[..]),
        "the whole blob, from the remote"
    );

    // Evicted: the remote answers again, and no immediate answer is claimed.
    assert!(cached
        .evict(&key)
        .await
        .unwrap_or_else(|e| panic!("evict: {e}")));
    assert!(cached.exists_now(&key).is_none());
    assert_eq!(revalidate().await, StatusCode::NOT_MODIFIED);
}

fn replicated(members: &[&FsBackend], read_repair: bool) -> Replicated {
    let members = members
        .iter()
        .map(|m| Arc::new((*m).clone()) as Arc<dyn Backend>)
        .collect();
    let options = ReplicatedOptions {
        read_repair,
        ..Default::default()
    };
    Replicated::new(members, options).unwrap_or_else(|e| panic!("replicated: {e}"))
}

/// Replicas whose first copy was cut short: a `HEAD` names the blob's size, as the `GET` serves it
/// (from the second replica), not the damaged copy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_through_replicas_does_not_name_a_damaged_copys_size() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (a, b) = (fs(&dir.path().join("a")), fs(&dir.path().join("b")));
    let store = Store::new(replicated(&[&a, &b], false));
    let data = noise(100_000, 2);
    let key = key_of(&data);
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put: {e}"));
    let path = common::writable_blob(&a, &key);
    std::fs::write(&path, &data[..1000]).unwrap_or_else(|e| panic!("cut short: {e}"));

    let base = common::serve(Server::new(store)).await;
    let client = reqwest::Client::new();
    let sha1 = format!("{base}/sha1/{}", common::sha1_hex(&data));
    for url in [format!("{base}/sha512/{}", key.to_hex()), sha1] {
        let got = client.get(&url).send().await;
        let got = got.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(got.status(), StatusCode::OK, "{url}");
        let body = got.bytes().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(body[..] == data[..], "{url}: the good replica's copy");
        let head = client.head(&url).send().await;
        let head = head.unwrap_or_else(|e| panic!("HEAD {url}: {e}"));
        let length = head.headers().get(reqwest::header::CONTENT_LENGTH);
        let length = length.and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        assert_eq!(
            (head.status(), length),
            (StatusCode::OK, Some(data.len())),
            "HEAD {url}"
        );
    }
}

/// A 20 MiB blob (held by a wrapper in a temporary file, and streamed from it) with no good copy:
/// refused with a 500 before its head through replicas and through a cache tier, as over the fs
/// alone, not sent under a 200 and cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_with_no_good_copy_is_refused_before_its_head() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let a = fs(&dir.path().join("a"));
    let data = noise(20 << 20, 3);
    let key = key_of(&data);
    let stored = Store::new(a.clone());
    stored
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put: {e}"));
    common::corrupt_blob(&a, &key, true);
    let cached = Cached::new(
        Arc::new(fs(&dir.path().join("tier"))),
        Arc::new(a.clone()),
        CachedOptions { capacity: 1 << 30 },
    )
    .await
    .unwrap_or_else(|e| panic!("open the cache: {e}"));

    let servers = [
        ("fs", Store::new(a.clone())),
        ("replicated", Store::new(replicated(&[&a], true))),
        ("cached", Store::new(cached)),
    ];
    let client = reqwest::Client::new();
    for (what, store) in servers {
        let server = Server::new(store);
        let base = common::serve(server.clone()).await;
        for round in 0..2 {
            let r = client
                .get(format!("{base}/sha512/{}", key.to_hex()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(
                r.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{what}, round {round}: a corrupt 20 MiB blob"
            );
        }
        assert_eq!(server.metrics().integrity_failures(), 2, "{what}");
    }
}
