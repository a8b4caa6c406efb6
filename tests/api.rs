//! The library as a downstream crate uses it: what a service calling `Store` writes (results
//! unwrapped in tests, streams of its own making, errors matched by kind) compiles and behaves.

use bytes::Bytes;
use tarvault::{ErrorKind, Integrity, PutOptions, Store};

/// `unwrap_err`, `expect_err` and `{:?}` of a read's result need the stream to be `Debug`; it
/// says how many bytes it yields, of what size of blob.
#[tokio::test]
async fn a_read_result_is_debug() {
    let store = Store::memory();
    let put = store
        .put_bytes(Bytes::from_static(b"hello"), &PutOptions::default())
        .await
        .expect("put");
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
