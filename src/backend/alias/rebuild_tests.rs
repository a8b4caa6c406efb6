//! A remote store's marker rebuild (fsck): what it repairs, what it keeps, and puts racing it.

use std::sync::atomic::AtomicBool;

use futures::future::BoxFuture;

use super::*;

#[tokio::test]
async fn a_corrupt_or_foreign_marker_is_skipped_and_fsck_repairs_it() {
    let mem = Mem::default();
    let idx = index(&mem, CacheConfig::default());
    let (a, b) = (digests(1), digests(2));
    ok(idx.record(&a).await);
    ok(idx.record(&b).await);
    // Truncated; and one naming a blob whose sha1 is not the marker's name.
    let k_a = marker_key(Algorithm::Sha1, &hex::encode(a.sha1));
    let k_b = marker_key(Algorithm::Sha1, &hex::encode(b.sha1));
    {
        let mut m = mem.map();
        let torn = m.get(&k_a).map(|v| v.slice(..40)).unwrap_or_default();
        m.insert(k_a.clone(), torn);
        m.insert(k_b.clone(), Bytes::from(line(&digests(3))));
    }
    let fresh = index(&mem, CacheConfig::default());
    assert_eq!(ok(fresh.resolve(&sha1(&a)).await), None);
    assert_eq!(ok(fresh.resolve(&sha1(&b)).await), None);
    let (report, _) = ok(fresh.rebuild(futures::stream::iter([a, b]).boxed()).await);
    assert_eq!(report.indexed, 2);
    assert_eq!(report.corrected, 2);
    let after = index(&mem, CacheConfig::default());
    assert_eq!(
        ok(after.resolve(&sha1(&a)).await),
        Some(BlobKey::new(a.sha512))
    );
    assert_eq!(
        ok(after.resolve(&sha1(&b)).await),
        Some(BlobKey::new(b.sha512))
    );
}

/// How a blob's digests reach its markers: fsck's rebuild and the three ways of a put (markers
/// written first; sent alongside the blob and read back once it is stored; a put that found its
/// blob stored), each having hashed the blob's bytes; and the import of an earlier version's log,
/// whose records are claims.
#[derive(Debug, Clone, Copy)]
enum Writer {
    Rebuild,
    Record,
    Alongside,
    Stored,
    Import,
}

/// A rebuild or a put that finds a blob's sha1 marker naming another blob rewrites it where the
/// other blob's object shows the marker wrong (gone, or its metadata gives it another sha1), and
/// keeps it where the other blob may have that sha1 too (its metadata says so, or says nothing):
/// two blobs sharing a sha1 keep the first's marker. A record of the old log, a claim rather than
/// hashed bytes, rewrites none.
#[tokio::test]
async fn a_rebuild_or_a_put_rewrites_a_marker_the_named_blob_contradicts() {
    let (a, c) = (digests(1), digests(3));
    let claimed = ok(Digests::from_parts(&c.sha512, &a.sha1, &c.blake3, c.size));
    let cases: [(&str, Option<Option<Digests>>, bool); 4] = [
        ("gone", None, true),
        ("another sha1", Some(Some(c)), true),
        ("the same sha1", Some(Some(claimed)), false),
        ("no metadata", Some(None), false),
    ];
    let writers = [
        Writer::Rebuild,
        Writer::Record,
        Writer::Alongside,
        Writer::Stored,
        Writer::Import,
    ];
    for (what, record, rewritten) in cases {
        for writer in writers {
            let what = format!("{what}, {writer:?}");
            let mem = Mem::default();
            mem.records
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(BlobKey::new(c.sha512), record);
            let idx = index(&mem, CacheConfig::default());
            ok(idx.record(&a).await);
            mem.map().insert(
                marker_key(Algorithm::Sha1, &hex::encode(a.sha1)),
                Bytes::from(line(&claimed)),
            );
            let fresh = index(&mem, CacheConfig::default());
            match writer {
                Writer::Rebuild => {
                    let (report, _) = ok(fresh.rebuild(futures::stream::iter([a]).boxed()).await);
                    assert_eq!(report.corrected, u64::from(rewritten), "{what}");
                }
                Writer::Record => ok(fresh.record(&a).await),
                Writer::Alongside => {
                    let unsettled = ok(fresh.record_alongside(&a).await);
                    ok(fresh.settle(&a, unsettled).await);
                }
                Writer::Stored => ok(fresh.record_stored(&a).await),
                Writer::Import => {
                    ok(AliasLog::new(mem.clone()).record(&[a]).await);
                    assert_eq!(ok(fresh.import().await), 1, "{what}");
                }
            }
            let rewritten = rewritten && !matches!(writer, Writer::Import);
            let want = if rewritten { a.sha512 } else { c.sha512 };
            let after = index(&mem, CacheConfig::default());
            assert_eq!(
                ok(after.resolve(&sha1(&a)).await),
                Some(BlobKey::new(want)),
                "{what}"
            );
            // The writer's own process finds what every other one finds, not what it wrote.
            assert_eq!(
                ok(fresh.resolve(&sha1(&a)).await),
                Some(BlobKey::new(want)),
                "{what}, in the writer's process"
            );
        }
    }
}

/// A put that cannot ask the blob a marker names (its `HEAD` fails) keeps the marker rather than
/// fail after storing its blob; fsck's rebuild fails instead, and a later one rewrites it.
#[tokio::test]
async fn a_put_that_cannot_ask_the_named_blob_keeps_the_marker_and_fsck_fails() {
    let (a, c) = (digests(1), digests(3));
    let mem = Mem::default();
    mem.records
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(BlobKey::new(c.sha512), None);
    let claimed = ok(Digests::from_parts(&c.sha512, &a.sha1, &c.blake3, c.size));
    mem.map().insert(
        marker_key(Algorithm::Sha1, &hex::encode(a.sha1)),
        Bytes::from(line(&claimed)),
    );
    mem.records_fail.store(true, Ordering::SeqCst);
    let named = |mem: &Mem| {
        let idx = index(mem, CacheConfig::default());
        async move { ok(idx.resolve(&sha1(&a)).await) }
    };
    ok(index(&mem, CacheConfig::default()).record(&a).await);
    let idx = index(&mem, CacheConfig::default());
    let unsettled = ok(idx.record_alongside(&a).await);
    ok(idx.settle(&a, unsettled).await);
    assert_eq!(named(&mem).await, Some(BlobKey::new(c.sha512)), "kept");
    assert_eq!(
        ok(idx.resolve(&sha1(&a)).await),
        Some(BlobKey::new(c.sha512)),
        "kept, in the put's process"
    );
    let rebuild = index(&mem, CacheConfig::default())
        .rebuild(futures::stream::iter([a]).boxed())
        .await;
    assert!(rebuild.is_err(), "fsck went on without asking");
    mem.records_fail.store(false, Ordering::SeqCst);
    let (report, _) = ok(index(&mem, CacheConfig::default())
        .rebuild(futures::stream::iter([a]).boxed())
        .await);
    assert_eq!(report.corrected, 1);
    assert_eq!(named(&mem).await, Some(BlobKey::new(a.sha512)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_racing_puts_loses_nothing() {
    let mem = Mem::default();
    let idx = index(&mem, CacheConfig::default());
    let scanned: Vec<Digests> = (0..300).map(digests).collect();
    let rebuild = {
        let idx = idx.clone();
        let scanned = scanned.clone();
        tokio::spawn(async move { idx.rebuild(futures::stream::iter(scanned).boxed()).await })
    };
    let puts: Vec<_> = (200..500)
        .map(|i| {
            let idx = idx.clone();
            tokio::spawn(async move { idx.record(&digests(i)).await })
        })
        .collect();
    for p in puts {
        ok(p.await.unwrap_or_else(|e| panic!("{e}")));
    }
    let (report, _) = ok(rebuild.await.unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(report.indexed, 300);
    let reader = index(&mem, CacheConfig::default());
    for i in 0..500 {
        let d = digests(i);
        assert_eq!(
            ok(reader.resolve(&sha1(&d)).await),
            Some(BlobKey::new(d.sha512)),
            "blob {i}"
        );
    }
}

/// A put meeting a marker that names a blob that is gone replaces it (its own blob has the
/// digest), and fsck's sweep removes that marker: where the replacement lands between the sweep's
/// look at the gone blob and its DELETE, the DELETE removes it and nothing writes it back, so the
/// put's blob is not found by that digest until the next rebuild (or a put of it in a process
/// that has not seen its markers) writes it. See `alias::sweep`.
#[tokio::test]
async fn a_put_rewriting_a_marker_the_sweep_removes_can_lose_it_until_the_next_rebuild() {
    let mem = Mem::default();
    let idx = index(&mem, CacheConfig::default());
    let (a, c) = (digests(1), digests(3));
    let (gone, named) = (BlobKey::new(c.sha512), BlobKey::new(a.sha512));
    mem.records
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(gone, None);
    let claimed = ok(Digests::from_parts(&c.sha512, &a.sha1, &c.blake3, c.size));
    mem.map().insert(
        marker_key(Algorithm::Sha1, &hex::encode(a.sha1)),
        Bytes::from(line(&claimed)),
    );
    let (put, first) = (idx.clone(), Arc::new(AtomicBool::new(true)));
    let exists = move |k: BlobKey| {
        let (put, first) = (put.clone(), first.clone());
        Box::pin(async move {
            if k == gone && first.swap(false, Ordering::SeqCst) {
                // A put of `a`, its blob stored, between the sweep's first look and its DELETE.
                put.record_stored(&a).await?;
                let fresh = index(&put.markers, CacheConfig::default());
                assert_eq!(fresh.resolve(&sha1(&a)).await?, Some(named), "rewritten");
            }
            Ok(k != gone)
        }) as BoxFuture<'static, Result<bool>>
    };
    let report = swept(&idx, &exists, std::time::Duration::from_secs(60)).await;
    assert_eq!(report.removed, 1, "{report:?}");
    let fresh = index(&mem, CacheConfig::default());
    assert_eq!(ok(fresh.resolve(&sha1(&a)).await), None);
    let (report, _) = ok(fresh.rebuild(futures::stream::iter([a]).boxed()).await);
    assert_eq!(report.added, 1, "{report:?}");
    let after = index(&mem, CacheConfig::default());
    assert_eq!(ok(after.resolve(&sha1(&a)).await), Some(named));
}
