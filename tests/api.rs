//! The library as a downstream crate uses it: what a service calling `Store` writes (results
//! unwrapped in tests, streams of its own making, errors matched by kind) compiles and behaves.

use bytes::Bytes;
use tarvault::{ErrorKind, Integrity, PutOptions, PutOutcome, Store};

mod common;

/// A memory store holding `hello`, and that put's outcome.
async fn hello_store() -> (Store, PutOutcome) {
    let store = Store::memory();
    let put = store
        .put_bytes(Bytes::from_static(b"hello"), &PutOptions::default())
        .await
        .expect("put");
    (store, put)
}

/// `unwrap_err`, `expect_err` and `{:?}` of a read's result need the stream to be `Debug`; it
/// says how many bytes it yields, of what size of blob.
#[tokio::test]
async fn a_read_result_is_debug() {
    let (store, put) = hello_store().await;
    let missing = Integrity::from_shasum("0000000000000000000000000000000000000000").expect("sha1");
    let err = store.get(&missing).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let range = store
        .get_range(&put.digests.integrity(), 1..3)
        .await
        .expect("range");
    let printed = format!("{range:?}");
    assert!(
        printed.contains("len: 2") && printed.contains("blob_size: 5"),
        "{printed}"
    );
    assert_eq!(&range.bytes().await.expect("bytes")[..], b"el");
}

/// A stream made of async code (`unfold`, `once(async { … })`, `async-stream`) is not `Unpin`;
/// `put`, `put_batch` and `put_stream` take it as it is, without the caller pinning it.
#[tokio::test]
async fn puts_take_streams_that_are_not_unpin() {
    fn chunks(n: u8) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        futures::stream::unfold(0u8, move |i| async move {
            (i < n).then(|| (Ok(Bytes::from(vec![i; 1000])), i + 1))
        })
    }
    let store = Store::memory();
    let put = store
        .put(chunks(3), &PutOptions::default())
        .await
        .expect("put");
    assert_eq!(put.digests.size, 3000);

    let batch = store
        .put_batch(vec![
            (chunks(4), PutOptions::default()),
            (chunks(5), PutOptions::default()),
        ])
        .await;
    let sizes: Vec<u64> = batch
        .into_iter()
        .map(|r| r.expect("batch put").digests.size)
        .collect();
    assert_eq!(sizes, [4000, 5000]);

    let inputs = futures::stream::iter([(chunks(6), PutOptions::default())]);
    let mut results = store.put_stream(inputs);
    let put = futures::StreamExt::next(&mut results)
        .await
        .expect("a result")
        .expect("stream put");
    assert_eq!(put.digests.size, 6000);
}

/// `publish::ingest` takes a body that is not `Unpin` too (here a document without a name,
/// refused as such once read).
#[tokio::test]
async fn publish_takes_a_body_that_is_not_unpin() {
    let body = futures::stream::once(async { Ok(Bytes::from_static(b"{}")) });
    let options = tarvault::publish::PublishOptions::default();
    let err = tarvault::publish::ingest(&Store::memory(), body, &options)
        .await
        .expect_err("no name");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}

/// A file that opens but cannot be read (a directory, a disk error) is named in the error of
/// `put_file` and of a `file_input` put, as a file that does not open is.
#[tokio::test]
async fn a_file_read_failure_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let store = Store::memory();
    let err = store
        .put_file(&path, &PutOptions::default())
        .await
        .expect_err("a directory is not a file to put");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some(), "{err}");

    let results = store
        .put_batch(vec![(tarvault::file_input(&path), PutOptions::default())])
        .await;
    let err = results
        .into_iter()
        .next()
        .expect("one result")
        .expect_err("a directory");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

/// The keys a listing yields are addresses: each one reads, stats and deletes its blob.
#[tokio::test]
async fn a_listed_key_is_an_address() {
    use futures::TryStreamExt;
    let store = Store::memory();
    let put = store
        .put_bytes(Bytes::from_static(b"listed"), &PutOptions::default())
        .await
        .expect("put");
    let keys: Vec<tarvault::backend::BlobKey> = store.list().try_collect().await.expect("list");
    let address = Integrity::from(keys[0]);
    assert_eq!(address, put.digests.integrity());
    assert_eq!(store.stat(&keys[0].into()).await.expect("stat").size, 6);
    assert!(store.delete(&address).await.expect("delete"));
    // A key kept as text (its `Display`) parses back to the key.
    let printed = keys[0].to_string();
    assert_eq!(
        printed
            .parse::<tarvault::backend::BlobKey>()
            .expect("parse"),
        keys[0]
    );
    let by_sha1 = format!("{}", put.digests.hash(tarvault::Algorithm::Sha1));
    let err = by_sha1
        .parse::<tarvault::backend::BlobKey>()
        .expect_err("a sha1 is no key");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

/// A replicated store's `read_timeout` that no `Duration` holds (negative, or past 2^64 s, as a
/// number or as text) is a configuration error of `Store::open`, not a panic.
#[tokio::test]
async fn an_impossible_read_timeout_is_a_config_error() {
    for timeout in ["-1", "1e30", "\"99999999999999999999h\""] {
        let spec =
            format!(r#"{{"replicated": {{"replicas": ["memory:"], "read_timeout": {timeout}}}}}"#);
        let err = Store::open(&spec).await.expect_err("an impossible timeout");
        assert_eq!(err.kind(), ErrorKind::Config, "{timeout}: {err}");
        assert!(err.to_string().contains("read_timeout"), "{err}");
    }
    let spec = r#"{"replicated": {"replicas": ["memory:"], "read_timeout": 0.5}}"#;
    Store::open(spec).await.expect("half a second");
}

/// Errors a caller prints stay readable: a bad key quotes at most a key's length of what it was
/// given, a range that ends before it starts says so (not "outside the blob"), and an error's
/// kind prints in words.
#[tokio::test]
async fn errors_name_what_was_wrong_briefly() {
    let long = "z".repeat(100_000);
    let err = tarvault::backend::BlobKey::from_hex(&long).expect_err("not hex");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let message = err.to_string();
    assert!(message.len() < 300, "{} bytes", message.len());
    assert!(message.contains('…'), "{message}");

    let store = Store::memory();
    let put = store
        .put_bytes(Bytes::from_static(b"ranged"), &PutOptions::default())
        .await
        .expect("put");
    #[allow(clippy::reversed_empty_ranges)]
    let err = store
        .get_range(&put.digests.integrity(), 5..3)
        .await
        .expect_err("reversed");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("ends before it starts"), "{err}");
    let err = store
        .get_range(&put.digests.integrity(), 3..9)
        .await
        .expect_err("past the end");
    assert!(
        err.to_string().contains("outside a blob of 6 bytes"),
        "{err}"
    );

    assert_eq!(ErrorKind::NotFound.to_string(), "not found");
    assert_eq!(
        ErrorKind::IntegrityMismatch.to_string(),
        "integrity mismatch"
    );
}

/// A put that expects a size stops at the first byte past it: an input longer than it said (an
/// upload that never ends, say) is refused as it goes by, not read, hashed and written to its end.
#[tokio::test]
async fn a_put_stops_reading_past_its_expected_size() {
    let store = Store::memory();
    let endless = futures::stream::unfold((), |()| async {
        tokio::task::yield_now().await;
        Some((Ok(Bytes::from_static(b"0123456789")), ()))
    });
    let options = PutOptions {
        expected_size: Some(25),
        ..PutOptions::default()
    };
    let put = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        store.put(endless, &options),
    )
    .await
    .expect("the put ends instead of reading on for ever");
    let err = put.expect_err("longer than expected");
    assert_eq!(err.kind(), ErrorKind::IntegrityMismatch);
    assert!(err.to_string().contains("25 bytes"), "{err}");
}

/// A put's outcome and a blob's facts are what a service logs (`?outcome`): their digests print
/// as the integrity and hex digests a person searches for, not as 116 byte values.
#[tokio::test]
async fn digests_debug_as_the_strings_they_are_known_by() {
    let (store, put) = hello_store().await;
    let info = store.stat(&put.digests.integrity()).await.expect("stat");
    for printed in [format!("{put:?}"), format!("{info:?}")] {
        assert!(
            printed.contains(&put.digests.integrity().to_string())
                && printed.contains(&put.digests.shasum())
                && printed.contains(&put.digests.blake3_hex()),
            "{printed}"
        );
        assert!(!printed.contains("[170, 244"), "{printed}");
    }
}

/// The builder methods set what the fields do: a corpus tarball put expecting its own size and
/// package is stored; one expecting another size, or another package, is refused and stores
/// nothing; `package` alone turns on the inspection it needs.
#[tokio::test]
async fn put_options_built_from_methods_are_enforced() {
    let e = common::corpus().into_iter().next().expect("a corpus entry");
    let bytes = common::corpus_bytes(&e);
    let integrity: Integrity = e.integrity.parse().expect("integrity");
    let store = Store::memory();
    let refused = [
        (
            PutOptions::default().expect_size(e.size + 1),
            ErrorKind::IntegrityMismatch,
        ),
        (
            PutOptions::default().package(&e.name, "0.0.0-not-it"),
            ErrorKind::Rejected,
        ),
        (
            PutOptions::default()
                .inspect_with(Default::default())
                .package("not-this-package", &e.version),
            ErrorKind::Rejected,
        ),
    ];
    for (options, kind) in refused {
        let err = store
            .put_bytes(bytes.clone(), &options)
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), kind, "{options:?}: {err}");
        assert!(!store.contains(&integrity).await.expect("contains"));
    }
    let options = PutOptions::expect(integrity.clone())
        .expect_size(e.size)
        .package(&e.name, &e.version)
        .label(format!("{}@{}", e.name, e.version));
    let put = store.put_bytes(bytes, &options).await.expect("stored");
    assert_eq!(put.digests.integrity().to_string(), e.integrity);
    assert!(put.stored && put.report.is_some());
    assert!(store.contains(&integrity).await.expect("contains"));
}
