//! The one backend conformance suite. Every backend runs it through the [`suite!`] macro with a
//! [`Fixture`] that can build a fresh backend and plant raw bytes in it (to play a disk that rots or
//! a server that lies). Each case is its own `#[tokio::test]`, named after the case.
#![allow(dead_code)]

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tarvault::backend::{Backend, BlobKey, Committed, PutHint};
use tarvault::{Error, ErrorKind, FsckOptions, Integrity, PutOptions, Store, Verification};

use crate::common::{
    addr, chunked, corpus, corpus_bytes, digests_of, key_of, noise, read_verified, sha1_hex,
    sha512_sri,
};

mod batch;
pub mod model;
pub use batch::put_stream_in_order;

/// What a backend under test offers the suite.
#[async_trait]
pub trait Fixture: Send + Sync + 'static {
    /// The backend (fresh and empty for each test).
    fn backend(&self) -> Arc<dyn Backend>;
    /// Replaces the stored bytes of `key` with `bytes`, bypassing every check.
    async fn plant(&self, key: &BlobKey, bytes: Bytes);
    /// Another instance over the same storage, as a second process would open it (`None`: the
    /// backend has no storage outside its own instance).
    fn second(&self) -> Option<Arc<dyn Backend>> {
        None
    }
}

fn store_of(f: &dyn Fixture) -> Store {
    Store::from_arc(f.backend())
}

async fn keys(store: &Store) -> Vec<BlobKey> {
    let mut k: Vec<BlobKey> = store.list().try_collect().await.expect("list");
    k.sort();
    k
}

/// Round trips of sizes around every internal threshold, in odd chunkings.
pub async fn roundtrip_sizes(f: &dyn Fixture) {
    let store = store_of(f);
    for (i, len) in [
        0usize,
        1,
        511,
        64 * 1024 + 3,
        512 * 1024,
        1_048_577,
        3 * 1024 * 1024 + 17,
    ]
    .into_iter()
    .enumerate()
    {
        let data = noise(len, i as u64 + 1);
        let put = store
            .put(chunked(&data, 7919), &PutOptions::default())
            .await
            .expect("put");
        assert!(put.stored);
        assert_eq!(put.digests.size, len as u64);
        assert_eq!(put.digests.integrity().to_string(), sha512_sri(&data));
        assert_eq!(put.digests.shasum(), sha1_hex(&data));
        assert_eq!(
            put.digests.blake3_hex(),
            blake3::hash(&data).to_hex().to_string()
        );
        let back = store
            .get(&put.digests.integrity())
            .await
            .expect("get")
            .bytes()
            .await
            .expect("verified read");
        assert_eq!(&back[..], &data[..], "len {len}");
        let around = store
            .get_uncached(&key_of(&data))
            .await
            .expect("get_uncached")
            .bytes()
            .await
            .expect("verified read around caches");
        assert_eq!(&around[..], &data[..], "len {len}, get_uncached");
    }
}

/// Real tarballs: the digests are the registry's own, and every lookup form works.
pub async fn corpus_digests_and_lookups(f: &dyn Fixture) {
    let store = store_of(f);
    for e in corpus().iter().take(20) {
        let data = corpus_bytes(e);
        let put = store
            .put_bytes(
                data.clone(),
                &PutOptions::expect(addr(&e.registry_integrity)),
            )
            .await
            .expect("put");
        assert_eq!(put.digests.integrity().to_string(), e.registry_integrity);
        assert_eq!(put.digests.shasum(), e.registry_shasum);
        for a in [
            e.registry_integrity.clone(),
            e.registry_shasum.clone(),
            format!(
                "sha1-{}",
                put.digests.hash(tarvault::Algorithm::Sha1).to_base64()
            ),
            format!(
                "blake3-{}",
                put.digests.hash(tarvault::Algorithm::Blake3).to_base64()
            ),
        ] {
            let got = store
                .get(&addr(&a))
                .await
                .expect(&a)
                .bytes()
                .await
                .expect("verified");
            assert_eq!(got, data, "{} via {a}", e.name);
        }
    }
}

/// Same bytes twice: one blob, the second put reports `stored: false`, no error.
pub async fn put_is_idempotent(f: &dyn Fixture) {
    let store = store_of(f);
    let data = noise(10_000, 9);
    let a = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("first");
    let b = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("second");
    let c = store
        .put_bytes(data.clone(), &PutOptions::expect(a.digests.integrity()))
        .await
        .expect("third, with expected integrity");
    assert!(a.stored && !b.stored && !c.stored);
    assert_eq!(a.digests, b.digests);
    assert_eq!(keys(&store).await, vec![key_of(&data)]);
}

/// A put given the blob's sha512 that finds an object of another size at its address (cut
/// short, or grown, behind the store's back) writes the verified bytes over it and says it
/// stored them: it never takes an object it has not checked for the blob. (On S3 and Manta,
/// which keep no trusted record of a blob's size, a put given no size took any object there as
/// the blob; on Manta one given the size, of a blob large enough to stream to its own path,
/// failed against the object there, again on every try.) The blob, whole again, is then a dedupe
/// hit. Given no size, a put holds its bytes to compare sizes at the end: past 16 MiB in a spool
/// file rather than in memory, which the unsized 17 MiB row goes through.
pub async fn a_put_of_its_sha512_replaces_a_wrong_sized_object(f: &dyn Fixture) {
    let store = store_of(f);
    let cases = [
        (5000usize, false),
        (3 * 1024 * 1024 + 17, false),
        (17 * 1024 * 1024 + 5, false),
        (5000, true),
        (17 * 1024 * 1024 + 5, true),
    ];
    for (i, (len, sized)) in cases.into_iter().enumerate() {
        let data = noise(len, 60 + i as u64);
        let (key, expected) = (key_of(&data), addr(&sha512_sri(&data)));
        store
            .put_bytes(data.clone(), &PutOptions::default())
            .await
            .expect("put");
        let mut options = PutOptions::expect(expected.clone());
        options.expected_size = sized.then_some(len as u64);
        let put_by_sha512 = || store.put(chunked(&data, 65_536), &options);
        let mut grown = data.clone();
        grown.extend_from_slice(b"and some more");
        for (what, bad) in [("cut short", data[..len - 100].to_vec()), ("grown", grown)] {
            f.plant(&key, Bytes::from(bad)).await;
            let put = put_by_sha512()
                .await
                .unwrap_or_else(|e| panic!("len {len}, sized {sized}, {what}: {}", e.report()));
            assert!(
                put.stored,
                "len {len}, {what}: the object was taken as the blob"
            );
            let size = store
                .backend()
                .head(&key)
                .await
                .expect("head")
                .map(|st| st.size);
            assert_eq!(size, Some(len as u64), "len {len}, {what}");
            assert!(
                read_verified(&store, &expected).await == data,
                "len {len}, {what}"
            );
        }
        let again = put_by_sha512().await.expect("put again");
        assert!(!again.stored, "len {len}: a dedupe hit");
    }
}

/// A put whose bytes do not match the expected integrity fails with a typed error naming both
/// digests, and leaves nothing behind.
pub async fn put_mismatch_stores_nothing(f: &dyn Fixture) {
    let store = store_of(f);
    let data = noise(700_000, 3);
    let other = noise(10, 4);
    let expected = addr(&sha512_sri(&other));
    let err = store
        .put(
            chunked(&data, 65_536),
            &PutOptions::expect(expected.clone()),
        )
        .await
        .expect_err("must not store");
    assert_eq!(err.kind(), ErrorKind::IntegrityMismatch);
    let msg = err.to_string();
    assert!(msg.contains(&expected.to_string()), "{msg}");
    assert!(msg.contains(&sha512_sri(&data)), "{msg}");
    assert!(keys(&store).await.is_empty());
    assert!(!store
        .contains(&addr(&sha512_sri(&data)))
        .await
        .expect("contains"));

    // Legacy shasum expectations are checked too (sha1 is the only algorithm in common).
    let err = store
        .put_bytes(data.clone(), &PutOptions::expect(addr(&sha1_hex(&other))))
        .await
        .expect_err("sha1 mismatch");
    assert_eq!(err.kind(), ErrorKind::IntegrityMismatch);
    assert!(err.to_string().contains("sha1-"));
    // A wrong expected size as well.
    let err = store
        .put_bytes(
            data.clone(),
            &PutOptions {
                expected_size: Some(1),
                ..PutOptions::default()
            },
        )
        .await
        .expect_err("size mismatch");
    assert_eq!(err.kind(), ErrorKind::IntegrityMismatch);
    assert!(keys(&store).await.is_empty());
}

/// A large put whose integrity the caller gives (a backend may stream it straight to its key):
/// stored and served when right; when wrong or cut short, nothing under either address.
pub async fn large_put_with_expected_integrity(f: &dyn Fixture) {
    let store = store_of(f);
    let data = noise(3 << 20, 31);
    let put = store
        .put(
            chunked(&data, 100_000),
            &PutOptions::expect(addr(&sha512_sri(&data))),
        )
        .await
        .expect("put");
    assert!(put.stored);
    let got = store
        .get(&addr(&sha1_hex(&data)))
        .await
        .expect("get by sha1")
        .bytes()
        .await
        .expect("verified");
    assert_eq!(got, data);
    let info = store.stat(&addr(&sha512_sri(&data))).await.expect("stat");
    assert_eq!(info.size, data.len() as u64);

    let wrong = noise(3 << 20, 32);
    let claimed = noise(3 << 20, 33);
    let err = store
        .put(
            chunked(&wrong, 100_000),
            &PutOptions::expect(addr(&sha512_sri(&claimed))),
        )
        .await
        .expect_err("mismatch");
    assert_eq!(err.kind(), ErrorKind::IntegrityMismatch, "{err}");
    let cut = futures::stream::iter(
        claimed[..2 << 20]
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .chain([Err(std::io::Error::other("connection reset"))]),
    );
    let err = store
        .put(cut, &PutOptions::expect(addr(&sha512_sri(&claimed))))
        .await
        .expect_err("cut short");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    for d in [&wrong, &claimed] {
        assert!(!store
            .contains(&addr(&sha512_sri(d)))
            .await
            .expect("contains"));
    }
    assert_eq!(keys(&store).await, vec![key_of(&data)]);
}

/// Expectations in any algorithm npm uses, including ones tarvault does not store by.
pub async fn put_checks_any_expected_algorithm(f: &dyn Fixture) {
    use sha2::Digest;
    let store = store_of(f);
    let data = noise(5000, 5);
    let b64 = |d: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(d)
    };
    let sha256 = format!("sha256-{}", b64(&sha2::Sha256::digest(&data)));
    let sha384 = format!("sha384-{}", b64(&sha2::Sha384::digest(&data)));
    for good in [
        sha256.clone(),
        sha384.clone(),
        format!("{} {sha256}", sha512_sri(&data)),
    ] {
        store
            .put_bytes(data.clone(), &PutOptions::expect(addr(&good)))
            .await
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    // Only the strongest shared algorithm counts: wrong sha512 + right sha1 is a mismatch.
    let mixed = format!("{} sha1-{}", sha512_sri(b"other"), {
        use sha1::Digest;
        b64(&sha1::Sha1::digest(&data))
    });
    let err = store
        .put_bytes(data.clone(), &PutOptions::expect(addr(&mixed)))
        .await
        .expect_err("strongest algorithm decides");
    assert_eq!(err.kind(), ErrorKind::IntegrityMismatch);
}

/// Unknown addresses are NotFound in every lookup form.
pub async fn missing_is_not_found(f: &dyn Fixture) {
    let store = store_of(f);
    let data = noise(100, 6);
    for a in [sha512_sri(&data), sha1_hex(&data)] {
        let err = store.get(&addr(&a)).await.expect_err("not stored");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("not found"));
        assert_eq!(
            store.stat(&addr(&a)).await.expect_err("stat").kind(),
            ErrorKind::NotFound
        );
        assert!(!store.contains(&addr(&a)).await.expect("contains"));
        assert!(!store.delete(&addr(&a)).await.expect("delete"));
    }
    let err = store
        .get_uncached(&key_of(&data))
        .await
        .expect_err("absent");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let sha256_only = addr("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    assert_eq!(
        store
            .get(&sha256_only)
            .await
            .expect_err("unsupported")
            .kind(),
        ErrorKind::InvalidInput
    );
}

/// Ranges come back exactly, verified; bad ranges are typed errors.
pub async fn ranges(f: &dyn Fixture) {
    let store = store_of(f);
    let data = noise(2 * 1024 * 1024 + 5, 7);
    let put = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    let a = put.digests.integrity();
    let n = data.len() as u64;
    for r in [
        0..0,
        0..1,
        5..6,
        1000..2_000_000,
        0..n,
        n - 1..n,
        1_048_570..1_048_590,
        n..n,
    ] {
        let s = store.get_range(&a, r.clone()).await.expect("range");
        assert_eq!(s.len(), r.end - r.start);
        let got = s.bytes().await.expect("verified range");
        assert_eq!(&got[..], &data[r.start as usize..r.end as usize], "{r:?}");
    }
    for bad in [0..n + 1, n + 1..n + 2] {
        let err = store.get_range(&a, bad).await.expect_err("bad range");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
    // Raw backend ranges too.
    let key = key_of(&data);
    let got = f
        .backend()
        .get(&key, Some(10..20))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.size, n);
    let bytes: Vec<Bytes> = got.stream.try_collect().await.expect("stream");
    assert_eq!(bytes.concat(), data[10..20].to_vec());
}

/// stat, list and delete.
pub async fn stat_list_delete(f: &dyn Fixture) {
    let store = store_of(f);
    let mut all = Vec::new();
    for i in 0..5u64 {
        let data = noise(1000 + i as usize, 100 + i);
        store
            .put_bytes(data.clone(), &PutOptions::default())
            .await
            .expect("put");
        all.push(data);
    }
    let mut want: Vec<BlobKey> = all.iter().map(|d| key_of(d)).collect();
    want.sort();
    assert_eq!(keys(&store).await, want);
    let info = store.stat(&addr(&sha1_hex(&all[2]))).await.expect("stat");
    assert_eq!(info.size, all[2].len() as u64);
    assert_eq!(info.integrity().to_string(), sha512_sri(&all[2]));
    let d = info.digests.expect("digests recorded at commit");
    assert_eq!(d.shasum(), sha1_hex(&all[2]));
    // Both listings: each blob once, with its size and a time, `list_info` with its digests
    // wherever `stat` has them.
    let sizes = |infos: Vec<tarvault::BlobInfo>| {
        let mut v: Vec<(BlobKey, u64)> = infos
            .iter()
            .map(|i| {
                assert!(i.modified.is_some(), "no time listed for {}", i.key);
                (i.key, i.size)
            })
            .collect();
        v.sort();
        v
    };
    let mut want_sizes: Vec<(BlobKey, u64)> =
        all.iter().map(|d| (key_of(d), d.len() as u64)).collect();
    want_sizes.sort();
    let infos: Vec<_> = store.list_info().try_collect().await.expect("list_info");
    assert!(
        infos.iter().all(|i| i.digests.is_some()),
        "list_info without digests"
    );
    assert_eq!(sizes(infos), want_sizes);
    let metas: Vec<_> = store.list_meta().try_collect().await.expect("list_meta");
    assert_eq!(sizes(metas), want_sizes);
    assert!(store
        .delete(&addr(&sha512_sri(&all[2])))
        .await
        .expect("delete"));
    assert!(!store
        .contains(&addr(&sha512_sri(&all[2])))
        .await
        .expect("contains"));
    assert!(!store
        .contains(&addr(&sha1_hex(&all[2])))
        .await
        .expect("by sha1"));
    assert_eq!(keys(&store).await.len(), 4);
}

/// Nothing is visible before commit; abort leaves nothing; commit is create-only.
pub async fn writer_contract(f: &dyn Fixture) {
    let backend = f.backend();
    let data = Bytes::from(noise(300_000, 11));
    let key = key_of(&data);
    let digests = digests_of(&data);

    let mut w = backend.begin_put(&PutHint::default()).await.expect("begin");
    w.write(data.slice(..1000)).await.expect("write");
    w.write(data.slice(1000..)).await.expect("write");
    assert!(
        backend.head(&key).await.expect("head").is_none(),
        "visible before commit"
    );
    w.abort().await.expect("abort");
    assert!(
        backend.head(&key).await.expect("head").is_none(),
        "visible after abort"
    );
    let listed: Vec<BlobKey> = backend.list().try_collect().await.expect("list");
    assert!(listed.is_empty());

    let mut w1 = backend.begin_put(&PutHint::default()).await.expect("begin");
    let mut w2 = backend.begin_put(&PutHint::default()).await.expect("begin");
    w1.write(data.clone()).await.expect("write");
    w2.write(data.clone()).await.expect("write");
    assert_eq!(
        w1.commit(&digests).await.expect("commit"),
        Committed::Stored
    );
    assert_eq!(
        w2.commit(&digests).await.expect("commit"),
        Committed::AlreadyPresent
    );
    let st = backend.head(&key).await.expect("head").expect("present");
    assert_eq!(st.size, data.len() as u64);

    // A dropped writer (a cancelled put) leaves nothing visible either.
    let other = Bytes::from(noise(2_000_000, 12));
    let mut w3 = backend.begin_put(&PutHint::default()).await.expect("begin");
    w3.write(other.clone()).await.expect("write");
    drop(w3);
    assert!(backend.head(&key_of(&other)).await.expect("head").is_none());
}

/// An input stream that fails midway stores nothing and says why.
pub async fn truncated_input_stores_nothing(f: &dyn Fixture) {
    let store = store_of(f);
    let data = noise(1_500_000, 13);
    let broken = futures::stream::iter(vec![
        Ok(Bytes::copy_from_slice(&data[..600_000])),
        Ok(Bytes::copy_from_slice(&data[600_000..900_000])),
        Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        )),
    ]);
    let err = store
        .put(broken, &PutOptions::default())
        .await
        .expect_err("truncated");
    assert_eq!(err.kind(), ErrorKind::Io);
    let report = err.report().to_string();
    assert!(report.contains("connection closed"), "{report}");
    assert!(keys(&store).await.is_empty());
}

/// Bytes that rot (or a backend that lies) are caught by get, get_range and fsck; the stream ends
/// in an error, never in a clean end.
pub async fn corruption_is_detected(f: &dyn Fixture) {
    for mode in [Verification::Fast, Verification::Full] {
        let fresh = f.backend();
        for k in fresh.list().try_collect::<Vec<_>>().await.expect("list") {
            fresh.delete(&k).await.expect("clean");
        }
        corruption_is_detected_in(f, store_of(f).with_verification(mode)).await;
    }
}

async fn corruption_is_detected_in(f: &dyn Fixture, store: Store) {
    let small = noise(5000, 14);
    let large = noise(3 * 1024 * 1024, 15);
    for data in [&small, &large] {
        let put = store
            .put_bytes(data.clone(), &PutOptions::default())
            .await
            .expect("put");
        let mut bad = data.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        f.plant(&key_of(data), Bytes::from(bad)).await;

        for a in [put.digests.integrity().to_string(), put.digests.shasum()] {
            let mut s = store.get(&addr(&a)).await.expect("opens");
            let mut seen = 0usize;
            let mut failed = None;
            while let Some(item) = s.next().await {
                match item {
                    Ok(c) => seen += c.len(),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let e = failed.expect("stream must end in an error");
            assert_eq!(e.kind(), ErrorKind::Corrupt);
            assert!(e.to_string().contains(&put.digests.integrity().to_string()));
            // Which backend holds the bad copy: the store's, or behind a wrapper the member of
            // it that does (the one to repair).
            let Error::Corrupt { backend, .. } = &e else {
                panic!("{e:?}")
            };
            let whole = store.backend().describe();
            assert!(
                !backend.is_empty() && whole.contains(backend.as_str()),
                "{backend:?} is not in {whole:?}"
            );
            assert!(e.to_string().contains(&format!(" in {backend}: ")), "{e}");
            assert!(
                seen < data.len(),
                "all bytes were handed out before the error"
            );
        }
        let around = store.get_uncached(&key_of(data)).await.expect("opens");
        assert_eq!(
            around.bytes().await.expect_err("verified").kind(),
            ErrorKind::Corrupt
        );
        let r = store
            .get_range(&put.digests.integrity(), 0..10)
            .await
            .expect("opens");
        assert_eq!(
            r.bytes().await.expect_err("range verified").kind(),
            ErrorKind::Corrupt
        );
    }
    // Truncated bytes too.
    let t = noise(4000, 16);
    store
        .put_bytes(t.clone(), &PutOptions::default())
        .await
        .expect("put");
    f.plant(&key_of(&t), Bytes::copy_from_slice(&t[..3000]))
        .await;
    let err = store
        .get(&addr(&sha512_sri(&t)))
        .await
        .expect("opens")
        .bytes()
        .await;
    assert_eq!(err.expect_err("truncated").kind(), ErrorKind::Corrupt);

    let report = store.fsck(&FsckOptions::default()).await.expect("fsck");
    assert_eq!(report.checked, 3);
    assert_eq!(report.corrupt.len(), 3);
    assert_eq!(report.ok, 0);
    let report = store
        .fsck(&FsckOptions {
            quarantine: true,
            ..FsckOptions::default()
        })
        .await
        .expect("fsck");
    assert!(report.corrupt.iter().all(|c| c.quarantined));
    assert!(
        keys(&store).await.is_empty(),
        "quarantined blobs are no longer served"
    );
    assert!(store
        .fsck(&FsckOptions::default())
        .await
        .expect("fsck")
        .is_clean());
    // The good bytes can be put back.
    let put = store
        .put_bytes(small.clone(), &PutOptions::default())
        .await
        .expect("re-put");
    assert!(put.stored);
}

/// Two instances over the same storage (two processes): puts, deletes and index rebuilds in one
/// are seen by the other at once, by every digest.
pub async fn second_instance_sees_changes(f: &dyn Fixture) {
    let Some(other) = f.second() else {
        eprintln!("skipped: this backend keeps its blobs inside one instance");
        return;
    };
    let (a, b) = (store_of(f), Store::from_arc(other));
    let data = noise(4321, 91);
    let put = a
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    let d = put.digests;
    let every = [
        d.integrity(),
        addr(&d.shasum()),
        Integrity::from(d.hash(tarvault::Algorithm::Blake3)),
    ];
    for address in &every {
        let got = b
            .get(address)
            .await
            .expect("get from the other")
            .bytes()
            .await;
        assert_eq!(&got.expect("verified")[..], &data[..], "{address}");
        let info = b.stat(address).await.expect("stat");
        assert_eq!(info.size, d.size);
    }
    assert!(b.delete(&d.integrity()).await.expect("delete"));
    for address in &every {
        assert!(
            !a.contains(address).await.expect("contains"),
            "{address} deleted"
        );
    }
    b.put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put again");
    let report = a.fsck(&FsckOptions::default()).await.expect("fsck");
    assert!(report.is_clean());
    for address in &every {
        assert!(
            b.contains(address).await.expect("contains"),
            "{address} after rebuild"
        );
    }
}

/// fsck's index rebuild merges: it keeps what is there, and finds every blob by its aliases after.
pub async fn fsck_rebuilds_aliases(f: &dyn Fixture) {
    let store = store_of(f);
    let data = noise(777, 17);
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    // A rebuild given nothing removes nothing whose blob is there.
    f.backend()
        .rebuild_aliases(futures::stream::empty().boxed(), &Default::default())
        .await
        .expect("empty rebuild");
    let by_sha1 = addr(&sha1_hex(&data));
    assert!(store.contains(&by_sha1).await.expect("contains"));
    let report = store.fsck(&FsckOptions::default()).await.expect("fsck");
    assert!(report.is_clean());
    assert_eq!(report.aliases, 1);
    assert_eq!(report.index.indexed, 1);
    assert_eq!(
        &store
            .get(&by_sha1)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes")[..],
        &data[..]
    );
}

/// Many concurrent puts of the same bytes: one blob, no error.
pub async fn concurrent_same_content(f: &dyn Fixture) {
    let store = store_of(f);
    let data = Bytes::from(noise(200_000, 18));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            let data = data.clone();
            tokio::spawn(async move {
                store
                    .put(chunked(&data, 1000 + i * 37), &PutOptions::default())
                    .await
            })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        let out = t.await.expect("join").expect("put");
        stored += usize::from(out.stored);
    }
    assert!(stored >= 1, "at least one put stored it");
    assert_eq!(keys(&store).await, vec![key_of(&data)]);
    assert!(store
        .fsck(&FsckOptions::default())
        .await
        .expect("fsck")
        .is_clean());
}

/// Group commit: a batch with a bad item stores the good ones and reports the bad one.
pub async fn batch_put(f: &dyn Fixture) {
    let store = store_of(f);
    let items: Vec<Vec<u8>> = (0..10).map(|i| noise(3000 + i, 200 + i as u64)).collect();
    let mut inputs: Vec<_> = items
        .iter()
        .map(|d| (chunked(d, 1024), PutOptions::default()))
        .collect();
    inputs[3].1 = PutOptions::expect(addr(&sha512_sri(b"nope")));
    let results = store.put_batch(inputs).await;
    assert_eq!(results.len(), 10);
    for (i, r) in results.iter().enumerate() {
        if i == 3 {
            assert_eq!(
                r.as_ref().expect_err("bad item").kind(),
                ErrorKind::IntegrityMismatch
            );
        } else {
            let out = r.as_ref().expect("good item");
            assert!(out.stored);
            assert_eq!(out.digests.integrity().to_string(), sha512_sri(&items[i]));
        }
    }
    assert_eq!(keys(&store).await.len(), 9);
    assert!(!store
        .contains(&addr(&sha512_sri(&items[3])))
        .await
        .expect("contains"));
    for (i, d) in items.iter().enumerate().filter(|(i, _)| *i != 3) {
        let got = store
            .get(&addr(&sha1_hex(d)))
            .await
            .expect("get")
            .bytes()
            .await;
        assert_eq!(&got.expect("verified")[..], &d[..], "item {i}");
    }
}

/// One blob several times in one batch: its first copy is `stored`, the others are not (a backend
/// that commits a group's items at once must not report two). A copy whose expected integrity is
/// wrong is refused, and the copy after it is still the one that stores the blob.
pub async fn batch_repeats(f: &dyn Fixture) {
    let store = store_of(f);
    let a = noise(5000, 301);
    let b = noise(7000, 302);
    let wrong = PutOptions::expect(addr(&sha512_sri(b"nope")));
    let plan: [(&[u8], bool); 7] = [
        (&a, false),
        (&a, false),
        (&b, true),
        (&a, false),
        (&b, false),
        (&b, false),
        (&a, false),
    ];
    let inputs: Vec<_> = plan
        .iter()
        .map(|(d, bad)| {
            let options = if *bad {
                wrong.clone()
            } else {
                PutOptions::default()
            };
            (chunked(d, 999), options)
        })
        .collect();
    let results = store.put_batch(inputs).await;
    let got: Vec<Option<bool>> = results
        .iter()
        .map(|r| r.as_ref().ok().map(|o| o.stored))
        .collect();
    assert_eq!(
        got,
        [
            Some(true),
            Some(false),
            None,
            Some(false),
            Some(true),
            Some(false),
            Some(false)
        ]
    );
    assert_eq!(
        results[2].as_ref().map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::IntegrityMismatch)
    );
    assert_eq!(keys(&store).await, {
        let mut k = vec![key_of(&a), key_of(&b)];
        k.sort();
        k
    });
}

/// The verified stream works as an `AsyncRead` too, and its errors survive the trip.
pub async fn async_read_adapter(f: &dyn Fixture) {
    use tokio::io::AsyncReadExt;
    let store = store_of(f);
    let data = noise(1_200_000, 19);
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    let mut r = store
        .get(&addr(&sha512_sri(&data)))
        .await
        .expect("get")
        .into_async_read();
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.expect("read");
    assert_eq!(out, data);
    // Errors survive the trip through io::Error.
    let err = Integrity::parse("sha512-x").expect_err("bad");
    assert_eq!(
        tarvault::Error::from_io(err.into_io()).kind(),
        ErrorKind::InvalidInput
    );
}

/// Every stream a store returns keeps saying it ended once it has (a stream adapter or an HTTP
/// body may poll once more): a blob's bytes (an empty blob's at once), the listings, and the
/// results of `put_stream`.
pub async fn streams_stay_ended(f: &dyn Fixture) {
    let store = store_of(f);
    for bytes in [Bytes::new(), Bytes::from(noise(3000, 23))] {
        store
            .put_bytes(bytes.clone(), &PutOptions::default())
            .await
            .expect("put");
        let mut blob = store.get(&addr(&sha512_sri(&bytes))).await.expect("get");
        let mut got = Vec::new();
        while let Some(chunk) = blob.next().await {
            got.extend_from_slice(&chunk.expect("chunk"));
        }
        assert_eq!(got, bytes);
        assert!(blob.next().await.is_none(), "polled after its end");
    }
    let mut list = store.list();
    let mut n = 0;
    while let Some(k) = list.next().await {
        k.expect("list");
        n += 1;
    }
    assert_eq!(n, 2);
    assert!(list.next().await.is_none(), "list polled after its end");
    let mut infos = store.list_info();
    while infos.next().await.is_some() {}
    assert!(
        infos.next().await.is_none(),
        "list_info polled after its end"
    );
    let inputs = [noise(100, 24), noise(200, 25)].map(|d| {
        (
            futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(d))]),
            PutOptions::default(),
        )
    });
    let mut results = store.put_stream(futures::stream::iter(inputs));
    let mut n = 0;
    while let Some(r) = results.next().await {
        r.expect("put_stream");
        n += 1;
    }
    assert_eq!(n, 2);
    assert!(
        results.next().await.is_none(),
        "put_stream polled after its end"
    );
}

/// One seeded sequence of operations against a model of the store (`model.rs`).
pub async fn follows_a_model(f: &dyn Fixture) {
    model::follows_a_model(f).await;
}

/// Generates one `#[tokio::test]` per conformance case for a fixture constructor.
macro_rules! suite {
    ($make:expr) => {
        $crate::conformance::suite!(@cases $make;
            roundtrip_sizes, corpus_digests_and_lookups, put_is_idempotent,
            put_mismatch_stores_nothing, put_checks_any_expected_algorithm, missing_is_not_found,
            ranges, stat_list_delete, writer_contract, truncated_input_stores_nothing,
            corruption_is_detected, fsck_rebuilds_aliases, concurrent_same_content, batch_put,
            batch_repeats,
            put_stream_in_order, second_instance_sees_changes,
            async_read_adapter, large_put_with_expected_integrity, streams_stay_ended,
            follows_a_model, a_put_of_its_sha512_replaces_a_wrong_sized_object);
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(fixture) = $crate::conformance::Found::found($make().await) else {
                    return; // skipped: the constructor said why
                };
                $crate::conformance::$case(&fixture).await;
            }
        )*
    };
}
pub(crate) use suite;

// ---------------------------------------------------------------------------------------------
// Skipping: a suite's constructor returns a fixture, or an `Option` of one when the backend needs a
// server that may be absent; it returns `None` after `crate::common::skip_or_fail` (which fails the
// test under CI and prints `skipped: <reason>` elsewhere), and the case then returns at once.

/// A fixture, or maybe one.
pub trait Found {
    type Fixture: Fixture;
    fn found(self) -> Option<Self::Fixture>;
}

impl<F: Fixture> Found for F {
    type Fixture = F;
    fn found(self) -> Option<F> {
        Some(self)
    }
}

impl<F: Fixture> Found for Option<F> {
    type Fixture = F;
    fn found(self) -> Option<F> {
        self
    }
}
