//! How often the server reads a blob too long for one piece from the fs (8-64 MiB): a whole `GET`
//! keeps the blob as it reads and verifies it, and sends it from memory (one read); a range is
//! verified whole apart and then read again, as it must be to check bytes it does not send, and so
//! is a whole blob once the process's budget for held blobs is spent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use reqwest::StatusCode;
use tarvault::backend::compose::verify::{set_held_in_memory, HELD_IN_MEMORY};
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::server::Server;
use tarvault::{PutOptions, Store};

use crate::common::tally::Tally;
use crate::common::{self, key_of, noise};

fn fs(root: &std::path::Path) -> FsBackend {
    let options = FsOptions {
        fsync: false,
        ..Default::default()
    };
    FsBackend::open(root, options).unwrap_or_else(|e| panic!("open an fs store: {e}"))
}

/// A 12 MiB blob and its store over the fs, which counts its reads.
async fn stored(root: &std::path::Path) -> (FsBackend, Store, Vec<u8>, Arc<AtomicU64>) {
    let fs = fs(root);
    // It counts its reads, and answers everything else as the fs does, the immediate answers
    // (`exists_now`) that mark it as read locally among them.
    let counted = Tally::new(fs.clone());
    let gets = counted.gets.clone();
    let store = Store::new(counted);
    // Over the fs's one-piece read (8 MiB), under the server's verify-before-head size (64 MiB).
    let data = noise(12 << 20, 23);
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put: {e}"));
    (fs, store, data, gets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_get_reads_a_blob_once_and_a_range_twice() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (fs, store, data, gets) = stored(dir.path()).await;
    let key = key_of(&data);
    let base = common::serve(Server::new(store)).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"));
    let sha1 = common::sha1_hex(&data);
    let urls = [
        format!("{base}/sha512/{}", key.to_hex()),
        format!("{base}/sha1/{sha1}"),
    ];

    for url in &urls {
        let before = gets.load(Ordering::SeqCst);
        let r = client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        let body = r
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("body of {url}: {e}"));
        assert!(body[..] == data[..], "{url}: the bytes served");
        assert_eq!(
            gets.load(Ordering::SeqCst) - before,
            1,
            "{url}: a whole GET reads the blob once"
        );

        if url.contains("/sha1/") {
            // A range by sha1 first confirms the alias with a read of its own (its size is
            // named only for a blob that has that sha1): not what is counted here.
            continue;
        }
        let before = gets.load(Ordering::SeqCst);
        let r = client
            .get(url)
            // Over a chunk: a shorter range is held back in the read itself until the whole blob
            // has been hashed, and needs no read before the head.
            .header("range", "bytes=1000000-3999999")
            .send()
            .await
            .unwrap_or_else(|e| panic!("range of {url}: {e}"));
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{url}");
        let body = r
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("range body of {url}: {e}"));
        assert!(
            body[..] == data[1000000..4000000],
            "{url}: the range served"
        );
        assert_eq!(
            gets.load(Ordering::SeqCst) - before,
            2,
            "{url}: a range is verified whole, then read"
        );
    }

    // While a whole GET's body is being sent, the blob is held, and the metrics say so.
    let r = client
        .get(&urls[0])
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("GET: {e}"));
    let metrics = client
        .get(format!("{base}/-/metrics"))
        .send()
        .await
        .and_then(|r| r.error_for_status());
    let metrics = match metrics {
        Ok(m) => m.text().await,
        Err(e) => Err(e),
    };
    let metrics = metrics.unwrap_or_else(|e| panic!("metrics: {e}"));
    let gauge = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    // All but the first chunk (1 MiB at most) is held until sent.
    assert!(
        gauge("tarvault_held_memory_bytes") >= (11 << 20),
        "held while sent:\n{metrics}"
    );
    assert_eq!(gauge("tarvault_held_memory_limit_bytes"), HELD_IN_MEMORY);
    let body = r
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("body while held: {e}"));
    assert!(body[..] == data[..], "the held bytes served");

    // With no room left for held blobs (a budget set to 0 here; spent by other downloads in a
    // server) a whole GET is verified apart and read again, as a range is.
    set_held_in_memory(0);
    let before = gets.load(Ordering::SeqCst);
    let got = client.get(&urls[0]).send().await;
    let got = match got.and_then(|r| r.error_for_status()) {
        Ok(r) => r.bytes().await,
        Err(e) => Err(e),
    };
    set_held_in_memory(HELD_IN_MEMORY);
    let body = got.unwrap_or_else(|e| panic!("GET with no held budget: {e}"));
    assert!(body[..] == data[..], "the bytes served, read twice");
    assert_eq!(gets.load(Ordering::SeqCst) - before, 2, "no held budget");

    // A copy damaged at its end is refused before the head, the whole GET as before.
    common::corrupt_blob(&fs, &key, true);
    for url in &urls {
        let r = client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR, "{url}");
    }
}

/// A blob sent from memory (held whole before its head): its response body, polled again after its
/// end as an adapter may, says it ended again rather than panicking, as the store's own (fused)
/// stream does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_body_may_be_polled_after_its_end() {
    use futures::StreamExt;

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (_, store, data, _) = stored(dir.path()).await;
    let key = key_of(&data);
    let server = Server::new(store);
    let response = common::router_get(&server, &format!("/sha512/{}", key.to_hex())).await;
    assert_eq!(response.status(), StatusCode::OK);
    let polled = tokio::spawn(async move {
        let mut body = response.into_body().into_data_stream();
        let mut n = 0;
        while let Some(chunk) = body.next().await {
            n += chunk.map(|c| c.len()).unwrap_or_else(|e| panic!("{e}"));
        }
        (n, body.next().await.is_none())
    })
    .await;
    match polled {
        Ok((n, again)) => assert!(n == data.len() && again, "{n} bytes, ended again: {again}"),
        Err(e) => panic!("polled after its end: {e}"),
    }
}
