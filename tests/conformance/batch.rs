//! Conformance cases for many puts at once: `put_stream`'s groups, order and per-input results.

use tarvault::{ErrorKind, PutOptions};

use super::{store_of, Fixture};
use crate::common::{addr, chunked, noise, sha1_hex, sha512_sri};

/// A stream of inputs long enough to be committed in several groups, pulled lazily, with bad
/// inputs and a repeated one among them: one result per input, in input order, each the right one.
pub async fn put_stream_in_order(f: &dyn Fixture) {
    use futures::StreamExt;
    let store = store_of(f);
    const N: u64 = 200;
    // Input 150 repeats input 10 (the same bytes): stored once, the second reports `stored: false`.
    let bytes = |i: u64| {
        let j = if i == 150 { 10 } else { i };
        noise(50 + j as usize * 13, 7000 + j)
    };
    let bad = |i: u64| i % 37 == 5;
    let inputs = futures::stream::iter(0..N).map(move |i| {
        let options = if bad(i) {
            PutOptions::expect(addr(&sha512_sri(b"not these bytes")))
        } else {
            PutOptions::default()
        };
        (chunked(&bytes(i), 512), options)
    });
    let results: Vec<_> = store.put_stream(inputs).collect().await;
    assert_eq!(results.len(), N as usize);
    for (i, r) in (0..N).zip(&results) {
        if bad(i) {
            let e = r.as_ref().expect_err("a wrong expected digest");
            assert_eq!(e.kind(), ErrorKind::IntegrityMismatch, "input {i}");
            continue;
        }
        let out = r.as_ref().unwrap_or_else(|e| panic!("input {i}: {e}"));
        assert_eq!(
            out.digests.integrity().to_string(),
            sha512_sri(&bytes(i)),
            "input {i}"
        );
        assert_eq!(out.stored, i != 150, "input {i}");
    }
    for i in (0..N).filter(|i| !bad(*i)) {
        let got = store
            .get(&addr(&sha1_hex(&bytes(i))))
            .await
            .expect("get")
            .bytes()
            .await;
        assert_eq!(&got.expect("verified")[..], &bytes(i)[..], "input {i}");
    }
    for i in (0..N).filter(|i| bad(*i)) {
        let stored = store
            .contains(&addr(&sha512_sri(&bytes(i))))
            .await
            .expect("contains");
        assert!(!stored, "input {i} was refused but stored");
    }
}
