//! Shard directories on the Manta test server (`src/backend/manta/dirs.rs`): a young store's are
//! made before the PUTs into them, a grown store is PUT into first; a walk of the store reads
//! its blobs' sizes and times from the shard directories' listings. Requests are counted by a
//! proxy that sees each one on a connection of its own.

mod common;
mod manta_common;

use common::noise;
use common::request_proxy::{host_of, Proxy};
use futures::TryStreamExt;
use manta_common::Target;
use tarvault::backend::manta::MantaBackend;
use tarvault::{PutOptions, Store};

/// What a request line PUTs under the store's `blobs/`: `Some(true)` a blob (`blobs/abc/<hex>`),
/// `Some(false)` a shard directory (`blobs/abc`), `None` anything else.
fn blob_put(line: &str) -> Option<bool> {
    let path = line.strip_prefix("PUT ")?.split(' ').next()?;
    let parts: Vec<&str> = path.split('/').collect();
    let at = parts.iter().position(|p| *p == "blobs")?;
    match parts.len() - at {
        2 => Some(false),
        3 => Some(true),
        _ => None,
    }
}

fn count(lines: &[String], blob: bool) -> usize {
    lines.iter().filter(|l| blob_put(l) == Some(blob)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_young_store_makes_shard_directories_first_and_a_grown_one_does_not() {
    let Some(target) = Target::get("a_young_store_makes_shard_directories_first") else {
        return;
    };
    let proxy = Proxy::start(host_of(&target.url)).await;
    proxy.one_request_per_connection();
    let mut cfg = target.config("dirs");
    cfg.url = proxy.url();
    let store = Store::new(MantaBackend::new(cfg.clone()).expect("backend"));
    let n = 48;
    let blobs: Vec<Vec<u8>> = (0..n).map(|i| noise(2000, 9_000 + i as u64)).collect();
    let mut addresses = Vec::new();
    for b in &blobs {
        let out = store
            .put_bytes(b.clone(), &PutOptions::default())
            .await
            .expect("put");
        assert!(out.stored);
        addresses.push(out.digests.integrity());
    }
    let lines = proxy.requests();
    // 48 blobs in 4096 shards: nearly every put's shard is new. PUT first, nearly every blob
    // would go up twice (refused, then sent again once its shard is made: ~96 blob PUTs). Made
    // first once the store is seen to be young: the first blob twice, and one in eight (the
    // probes) twice.
    let puts = count(&lines, true);
    assert!(
        (n..=n + n / 4).contains(&puts),
        "{puts} blob PUTs for {n} new blobs"
    );
    assert!(count(&lines, false) >= n / 2, "the shards were made");
    for (a, b) in addresses.iter().zip(&blobs) {
        assert_eq!(&common::read_verified(&store, a).await[..], &b[..]);
    }

    // The store grows its shard directories behind this process's back (another writer makes
    // them): the probes find them, and this process goes back to PUTting first.
    let mut direct_cfg = cfg.clone();
    direct_cfg.url = target.url.clone();
    let direct = MantaBackend::new(direct_cfg).expect("backend");
    let grown: Vec<Vec<u8>> = (0..160).map(|i| noise(2000, 20_000 + i as u64)).collect();
    for b in &grown {
        let path = direct.blob_path(&common::key_of(b));
        let (shard, _) = path.rsplit_once('/').expect("a shard");
        direct.client().put_directory(shard).await.expect("mkdir");
    }
    let before = proxy.requests().len();
    let mut dirs_made = Vec::new();
    for b in &grown {
        let seen = proxy.requests().len();
        store
            .put_bytes(b.clone(), &PutOptions::default())
            .await
            .expect("put into a grown shard");
        dirs_made.push(count(&proxy.requests()[seen..], false));
    }
    let later = &proxy.requests()[before..];
    assert_eq!(count(later, true), grown.len(), "each blob PUT once");
    assert!(
        dirs_made[80..].iter().all(|&d| d == 0),
        "still making existing shards after 80 puts: {dirs_made:?}"
    );

    // A fresh process on the grown store: the shards of these blobs exist, and its PUTs go first
    // (each answered 412, the blob being there), with no directory PUT at all.
    let before = proxy.requests().len();
    let again = Store::new(MantaBackend::new(cfg).expect("backend"));
    for b in &blobs {
        let out = again
            .put_bytes(b.clone(), &PutOptions::default())
            .await
            .expect("put again");
        assert!(!out.stored);
    }
    let later = &proxy.requests()[before..];
    assert_eq!(count(later, true), n, "one blob PUT each");
    assert_eq!(count(later, false), 0, "no shard directory made again");
}

/// A walk that needs each blob's size and time (`ls`, `gc`, a cache taking in its tier) reads
/// them from the shard directories' listings: no `HEAD` per blob. `list_info`, whose digests only
/// a `HEAD` brings, heads each blob once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_reads_sizes_and_times_from_the_listing() {
    let Some(target) = Target::get("a_walk_reads_sizes_and_times_from_the_listing") else {
        return;
    };
    let cfg = target.config("walk");
    let direct = Store::new(MantaBackend::new(cfg.clone()).expect("backend"));
    let mut want = Vec::new();
    for i in 0..30u64 {
        let data = noise(500 + i as usize * 7, 40_000 + i);
        direct
            .put_bytes(data.clone(), &PutOptions::default())
            .await
            .expect("put");
        want.push((common::key_of(&data), data.len() as u64, true));
    }
    want.sort();
    let proxy = Proxy::start(host_of(&target.url)).await;
    proxy.one_request_per_connection();
    let store = Store::new(
        MantaBackend::new(tarvault::backend::manta::MantaConfig {
            url: proxy.url(),
            ..cfg
        })
        .expect("backend"),
    );
    assert_eq!(crate::common::listed_meta(&store).await, want);
    let heads = |lines: &[String]| lines.iter().filter(|l| l.starts_with("HEAD ")).count();
    assert_eq!(heads(&proxy.requests()), 0, "list_meta sent a HEAD");
    let infos: Vec<_> = store.list_info().try_collect().await.expect("list_info");
    assert!(infos.iter().all(|i| i.digests.is_some()));
    assert_eq!(
        heads(&proxy.requests()),
        30,
        "list_info heads each blob once"
    );
}

/// An object with a blob's name outside that blob's own path (another shard, the name in
/// uppercase) is not listed as a blob: nothing can read it there, and `copy` would skip the blob
/// on a target that listed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_objects_at_their_own_blob_path_are_listed() {
    use tarvault::backend::manta::protocol::RequestBody;
    use tarvault::backend::Backend;
    let Some(target) = Target::get("only_objects_at_their_own_blob_path_are_listed") else {
        return;
    };
    let backend = target.backend("strays");
    let store = Store::new(backend.clone());
    let data = noise(900, 41_000);
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    let stray = noise(700, 41_001);
    let key = common::key_of(&stray);
    let hex = key.to_hex();
    let own = backend.blob_path(&key);
    let blobs = own
        .rsplit_once("/blobs/")
        .map(|(root, _)| root)
        .unwrap_or_default();
    let other_shard = if hex.starts_with("fff") { "000" } else { "fff" };
    let client = backend.client();
    client
        .put_directory(&format!("{blobs}/blobs/{other_shard}"))
        .await
        .expect("mkdir");
    client
        .put_directory(&format!("{blobs}/blobs/{}", &hex[..3]))
        .await
        .expect("mkdir");
    for path in [
        format!("{blobs}/blobs/{other_shard}/{hex}"),
        format!("{blobs}/blobs/{}/{}", &hex[..3], hex.to_uppercase()),
    ] {
        client
            .put_object(
                &path,
                Default::default(),
                RequestBody::Bytes(stray.clone().into()),
            )
            .await
            .expect("put a stray object");
    }
    let listed: Vec<_> = backend.list().try_collect().await.expect("list");
    assert_eq!(listed, vec![common::key_of(&data)]);
    assert_eq!(common::listed_meta(&store).await.len(), 1);
}

/// What a stand-in Manta server that ignores `marker` answers: `blobs/` holds one shard
/// directory `abc`, and every listing of `blobs/abc` is the same full page, whatever its marker.
fn ignoring_markers(target: &str) -> String {
    if target.contains("/blobs/abc") {
        let page: String = (0..1024)
            .map(|i| {
                format!(
                    "{{\"name\":\"abc{i:0125x}\",\"type\":\"object\",\"size\":5,\
                     \"mtime\":\"2020-01-01T00:00:00.000Z\"}}\n"
                )
            })
            .collect();
        manta_common::listing(&page)
    } else if target.contains("/blobs") {
        manta_common::listing("{\"name\":\"abc\",\"type\":\"directory\"}\n")
    } else {
        manta_common::listing("")
    }
}

/// Listing pages must move forward: a server that answers every page with the first one makes
/// a walk of the store fail with a backend error naming the directory, instead of listing the
/// same 1,024 blobs for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_whose_pages_do_not_advance_is_an_error() {
    let url = manta_common::stand_in(ignoring_markers).await;
    let (backend, _keys) = manta_common::stand_in_backend(&url);
    let walk = tarvault::backend::Backend::list(&backend).try_collect::<Vec<_>>();
    let got = tokio::time::timeout(std::time::Duration::from_secs(20), walk)
        .await
        .expect("the listing was still going after 20 s");
    let err = got.expect_err("a listing that does not advance must fail");
    assert_eq!(err.kind(), tarvault::ErrorKind::Backend, "{err}");
    assert!(err.to_string().contains("/blobs/abc"), "{err}");
}

/// A listing page of 1,024 well-formed entries with 8 KiB names, 8 MiB in all, chunked (no length
/// said up front), for any listing under `blobs`.
fn listing_streams_8_mib(target: &str) -> String {
    if !target.contains("/blobs") {
        return manta_common::not_found();
    }
    let name = "n".repeat(8 << 10);
    let page: String = (0..1024)
        .map(|i| format!("{{\"name\":\"{name}{i:04}\",\"type\":\"object\",\"size\":5}}\n"))
        .collect();
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-json-stream; type=directory\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{page}\r\n0\r\n\r\n",
        page.len()
    )
}

/// A listing page whose `Content-Length` claims 2^62 bytes (and sends one line).
fn listing_claims_2_62(target: &str) -> String {
    if !target.contains("/blobs") {
        return manta_common::not_found();
    }
    "HTTP/1.1 200 OK\r\nContent-Type: application/x-json-stream; type=directory\r\n\
     Content-Length: 4611686018427387904\r\n\r\n{\"name\":\"abc\",\"type\":\"directory\"}\n"
        .into()
}

/// A listing page is at most 1,024 lines of a few hundred bytes: a page that is (or says it is)
/// far larger fails the listing with a backend error naming the directory and the limit, by its
/// `Content-Length` before its body is read, or once more than the limit has come; it is never
/// read whole (nor waited for to its claimed end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_listing_page_is_refused_unread() {
    for (answer, says) in [
        (
            listing_streams_8_mib as fn(&str) -> String,
            "more than 4194304 bytes",
        ),
        (listing_claims_2_62, "4611686018427387904 bytes"),
    ] {
        let url = manta_common::stand_in_held(answer).await;
        let (backend, _keys) = manta_common::stand_in_backend(&url);
        let walk = tarvault::backend::Backend::list(&backend).try_collect::<Vec<_>>();
        let got = tokio::time::timeout(std::time::Duration::from_secs(20), walk)
            .await
            .expect("the listing was still going after 20 s");
        let err = got.expect_err("an oversized listing page must be refused");
        assert_eq!(err.kind(), tarvault::ErrorKind::Backend, "{err}");
        let text = err.to_string();
        assert!(text.contains("/stor/x/blobs"), "{text}");
        assert!(text.contains(says), "{text}");
        assert!(text.contains("4194304-byte limit"), "{text}");
    }
}
