//! A put told the blob's sha512 that finds the blob stored hashes the bytes and writes nothing.
//! These tests are about what it relies on while it does: the blob must still be there when the
//! put returns (gc must not take it meanwhile, a delete meanwhile is an error, not a success), and
//! "stored" must mean where the blob is kept for good (a cache tier's remote, every replica).

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::channel::mpsc;
use futures::SinkExt;
use tarvault::backend::compose::{Cached, CachedOptions, Replicated, ReplicatedOptions};
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::backend::memory::MemoryBackend;
use tarvault::backend::{AgedDelete, Backend, Presence};
use tarvault::ops::gc::{gc, GcOptions};
use tarvault::{ErrorKind, PutOptions, PutOutcome, Result, Store};

use common::{addr, key_of, noise, sha512_sri};

type Sender = mpsc::UnboundedSender<std::io::Result<Bytes>>;

/// Starts a put of `data` expecting its sha512, whose input stops after its first half until the
/// returned sender is given the rest (see [`finish`]).
fn stalled_put(
    store: &Store,
    data: &[u8],
) -> (Sender, tokio::task::JoinHandle<Result<PutOutcome>>) {
    let (tx, rx) = mpsc::unbounded();
    let half = data.len() / 2;
    tx.unbounded_send(Ok(Bytes::copy_from_slice(&data[..half])))
        .expect("first half");
    let options = PutOptions {
        expected: Some(addr(&sha512_sri(data))),
        ..PutOptions::default()
    };
    let store = store.clone();
    let put = tokio::spawn(async move { store.put(rx, &options).await });
    (tx, put)
}

async fn finish(
    mut tx: Sender,
    data: &[u8],
    put: tokio::task::JoinHandle<Result<PutOutcome>>,
) -> Result<PutOutcome> {
    tx.send(Ok(Bytes::copy_from_slice(&data[data.len() / 2..])))
        .await
        .expect("second half");
    drop(tx);
    put.await.expect("join")
}

async fn put(store: &Store, data: &[u8]) {
    store
        .put_bytes(data.to_vec(), &PutOptions::default())
        .await
        .expect("put");
}

/// An fs store in a new directory (kept alive by the `TempDir`) holding `data`.
async fn fs_store_with(data: &[u8]) -> (tempfile::TempDir, FsBackend, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FsBackend::open(dir.path(), FsOptions::default()).expect("open");
    let store = Store::new(fs.clone());
    put(&store, data).await;
    (dir, fs, store)
}

/// Sets the time of `data`'s blob in `fs` to `days` days ago.
fn age(fs: &FsBackend, data: &[u8], days: u64) {
    let then = SystemTime::now() - Duration::from_secs(days * 24 * 3600);
    std::fs::File::open(fs.blob_path(&key_of(data)))
        .and_then(|f| f.set_modified(then))
        .expect("age the blob");
}

/// Lets the stalled put reach its wait for the second half.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// gc runs while a put of a blob it finds old is under way: the put marked the blob recent when
/// it began, so gc spares it, and the put returns with the blob stored. (Marked only at its end,
/// the blob was deleted and the put still reported it present.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_spares_a_blob_whose_put_is_under_way() {
    let data = noise(300_000, 1);
    let (_dir, fs, store) = fs_store_with(&data).await;
    age(&fs, &data, 3);

    let (tx, running) = stalled_put(&store, &data);
    settle().await;
    let options = GcOptions {
        grace: Duration::from_secs(24 * 3600),
        delete: true,
    };
    // The live set names another blob only.
    let keep = [Ok(addr(&sha512_sri(b"another blob")))];
    let report = gc(&store, keep, &options, |_, _| {}).await.expect("gc");
    assert_eq!((report.garbage, report.kept_recent), (0, 1), "{report:?}");
    let outcome = finish(tx, &data, running).await.expect("the put");
    assert!(!outcome.stored, "found stored: nothing written");
    assert!(fs.head(&key_of(&data)).await.expect("head").is_some());
}

/// A delete while the put runs: the put wrote nothing, so it cannot report the blob stored. It
/// fails with a `Conflict` naming the blob, and the same put again stores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_found_its_blob_fails_if_a_delete_overtakes_it() {
    let data = noise(100_000, 2);
    let (_dir, fs, store) = fs_store_with(&data).await;
    let (tx, running) = stalled_put(&store, &data);
    settle().await;
    assert!(fs.delete(&key_of(&data)).await.expect("delete"));
    let err = finish(tx, &data, running)
        .await
        .expect_err("a put of a deleted blob that wrote nothing");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("deleted while a put"), "{err}");

    let (tx, running) = stalled_put(&store, &data);
    let outcome = finish(tx, &data, running).await.expect("put again");
    assert!(outcome.stored);
    assert!(fs.head(&key_of(&data)).await.expect("head").is_some());
}

/// The same through a replicated store whose delete has reached one of its two replicas: the put
/// fails as the blob's delete overtaking it, not a success while a replica lacks the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_through_replicas_fails_if_a_delete_reaches_a_replica_first() {
    let (a, b) = (MemoryBackend::new(), MemoryBackend::new());
    let replicated = Replicated::new(
        vec![Arc::new(a.clone()), Arc::new(b.clone())],
        ReplicatedOptions::default(),
    )
    .expect("replicated");
    let store = Store::new(replicated);
    let data = noise(50_000, 5);
    put(&store, &data).await;
    let (tx, running) = stalled_put(&store, &data);
    settle().await;
    assert!(b.delete(&key_of(&data)).await.expect("delete"));
    let err = finish(tx, &data, running)
        .await
        .expect_err("a put of a blob a replica lost that wrote nothing");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
}

/// A cache tier's local copy outlives the remote's (deleted by a store opened on the remote): a
/// put through the cache asks the remote, and writes the blob there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_through_a_cache_writes_a_blob_its_remote_lost() {
    let (local, remote) = (MemoryBackend::new(), MemoryBackend::new());
    let cached = Cached::new(
        Arc::new(local.clone()),
        Arc::new(remote.clone()),
        CachedOptions::default(),
    )
    .await
    .expect("cached");
    let store = Store::new(cached);
    let data = noise(50_000, 3);
    put(&store, &data).await;
    let got = store.get(&addr(&sha512_sri(&data))).await.expect("get");
    assert_eq!(got.bytes().await.expect("read"), data, "a fill");
    assert!(local.head(&key_of(&data)).await.expect("head").is_some());
    assert!(remote.delete(&key_of(&data)).await.expect("delete"));

    let (tx, running) = stalled_put(&store, &data);
    let outcome = finish(tx, &data, running).await.expect("put");
    assert!(outcome.stored, "written to the remote");
    assert!(remote.head(&key_of(&data)).await.expect("head").is_some());
}

/// A blob one replica holds and another lacks: a put through the replicated store writes it to
/// the one that lacks it, instead of taking the first replica's word and acknowledging a blob
/// below its write quorum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_through_replicas_writes_the_replica_that_lacks_the_blob() {
    let (a, b) = (MemoryBackend::new(), MemoryBackend::new());
    let replicated = Replicated::new(
        vec![Arc::new(a.clone()), Arc::new(b.clone())],
        ReplicatedOptions {
            write_quorum: Some(2),
            ..ReplicatedOptions::default()
        },
    )
    .expect("replicated");
    let store = Store::new(replicated);
    let data = noise(50_000, 4);
    put(&Store::new(a.clone()), &data).await;

    let (tx, running) = stalled_put(&store, &data);
    finish(tx, &data, running).await.expect("put");
    assert!(b.head(&key_of(&data)).await.expect("head").is_some());
    assert!(a.head(&key_of(&data)).await.expect("head").is_some());
}

/// gc's delete asks the blob's age in the step that deletes it: a blob put again (freshened)
/// after the cutoff is kept with its record, and an old one goes with its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_only_what_was_not_written_since_its_cutoff() {
    let data = noise(10_000, 5);
    let (_dir, fs, store) = fs_store_with(&data).await;
    let key = key_of(&data);
    let cutoff = SystemTime::now() - Duration::from_secs(24 * 3600);
    age(&fs, &data, 3);
    let freshened = fs.freshen(&key).await.expect("freshen");
    assert!(freshened.held().is_some(), "stored");
    assert_eq!(
        fs.delete_unless_written_since(&key, cutoff)
            .await
            .expect("delete"),
        AgedDelete::Kept
    );
    let sha1 = addr(&common::sha1_hex(&data));
    assert!(store.contains(&sha1).await.expect("by sha1"), "record kept");

    age(&fs, &data, 3);
    assert_eq!(
        fs.delete_unless_written_since(&key, cutoff)
            .await
            .expect("delete"),
        AgedDelete::Deleted
    );
    assert!(fs.head(&key).await.expect("head").is_none());
    assert!(
        !store.contains(&sha1).await.expect("by sha1"),
        "record gone"
    );
    assert_eq!(
        fs.delete_unless_written_since(&key, cutoff)
            .await
            .expect("delete again"),
        AgedDelete::Gone
    );
    assert!(
        fs.freshen(&key).await.expect("freshen") == Presence::Missing,
        "not stored"
    );
}

/// A store that acts as another would: `untrusted`, one whose records are not trusted, as an
/// object store's are not (for a blob cut short behind the store's back); `deleted_meanwhile`,
/// one that another process (another gc, an `rm`) deletes each blob from just before gc's
/// delete of it, after gc listed it.
#[derive(Debug, Clone)]
struct Acting<B> {
    inner: B,
    untrusted: bool,
    deleted_meanwhile: bool,
}

impl<B> Acting<B> {
    fn untrusted(inner: B) -> Self {
        Acting {
            inner,
            untrusted: true,
            deleted_meanwhile: false,
        }
    }
    fn deleted_meanwhile(inner: B) -> Self {
        Acting {
            inner,
            untrusted: false,
            deleted_meanwhile: true,
        }
    }
}

#[async_trait::async_trait]
impl<B: Backend + Clone> Backend for Acting<B> {
    fn describe(&self) -> String {
        format!("acting {}", self.inner.describe())
    }
    async fn begin_put(
        &self,
        hint: &tarvault::backend::PutHint,
    ) -> Result<Box<dyn tarvault::backend::BlobWriter>> {
        self.inner.begin_put(hint).await
    }
    async fn get(
        &self,
        key: &tarvault::backend::BlobKey,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Option<tarvault::backend::GetResult>> {
        self.inner.get(key, range).await
    }
    async fn head(
        &self,
        key: &tarvault::backend::BlobKey,
    ) -> Result<Option<tarvault::backend::BlobStat>> {
        self.inner.head(key).await
    }
    async fn delete(&self, key: &tarvault::backend::BlobKey) -> Result<bool> {
        self.inner.delete(key).await
    }
    async fn delete_unless_written_since(
        &self,
        key: &tarvault::backend::BlobKey,
        cutoff: SystemTime,
    ) -> Result<AgedDelete> {
        if self.deleted_meanwhile {
            assert!(self.inner.delete(key).await.expect("the other delete"));
        }
        self.inner.delete_unless_written_since(key, cutoff).await
    }
    fn list(&self) -> futures::stream::BoxStream<'static, Result<tarvault::backend::BlobKey>> {
        self.inner.list()
    }
    async fn resolve_alias(
        &self,
        hash: &tarvault::Hash,
    ) -> Result<Option<tarvault::backend::BlobKey>> {
        self.inner.resolve_alias(hash).await
    }
    async fn rebuild_aliases(
        &self,
        found: futures::stream::BoxStream<'_, tarvault::Digests>,
        options: &tarvault::backend::RebuildOptions,
    ) -> Result<tarvault::backend::AliasRebuild> {
        self.inner.rebuild_aliases(found, options).await
    }
    fn recorded_digests_trusted(&self) -> Option<tarvault::backend::Vouched> {
        if self.untrusted {
            return None;
        }
        self.inner.recorded_digests_trusted()
    }
}

/// A blob cut short in a store that keeps no trusted record of sizes: a put that knows the size
/// writes the blob again instead of taking the short copy's presence for the blob's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_knows_the_size_writes_a_blob_cut_short_again() {
    let memory = MemoryBackend::new();
    let store = Store::new(Acting::untrusted(memory.clone()));
    let data = noise(40_000, 6);
    put(&store, &data).await;
    let key = key_of(&data);
    assert!(memory.corrupt_for_test(&key, Bytes::copy_from_slice(&data[..1000])));
    let options = PutOptions {
        expected: Some(addr(&sha512_sri(&data))),
        expected_size: Some(data.len() as u64),
        ..PutOptions::default()
    };
    let outcome = store.put_bytes(data.clone(), &options).await.expect("put");
    assert!(outcome.stored, "written again");
    let stat = memory.head(&key).await.expect("head").expect("stored");
    assert_eq!(stat.size, data.len() as u64);
}

/// Replicas that keep no trusted records and disagree on a blob (one holds it cut short, one
/// lacks it): a put that expects its sha512 alone, with no size to check a copy against, writes
/// every replica whole, the copy cut short replaced by its commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_by_sha512_alone_through_replicas_that_disagree_writes_each_whole() {
    let data = noise(40_000, 7);
    let key = key_of(&data);
    for cut_short in [false, true] {
        let (a, b) = (MemoryBackend::new(), MemoryBackend::new());
        let replicated = Replicated::new(
            vec![
                Arc::new(Acting::untrusted(a.clone())),
                Arc::new(Acting::untrusted(b.clone())),
            ],
            ReplicatedOptions {
                write_quorum: Some(2),
                ..ReplicatedOptions::default()
            },
        )
        .expect("replicated");
        let store = Store::new(replicated);
        put(&Store::new(a.clone()), &data).await;
        if cut_short {
            put(&Store::new(b.clone()), &data).await;
            assert!(a.corrupt_for_test(&key, Bytes::copy_from_slice(&data[..1000])));
        }
        let options = PutOptions::expect(addr(&sha512_sri(&data)));
        let outcome = store.put_bytes(data.clone(), &options).await;
        outcome.unwrap_or_else(|e| panic!("cut short {cut_short}: {}", e.report()));
        for replica in [&a, &b] {
            let stat = replica.head(&key).await.expect("head").expect("stored");
            assert_eq!(stat.size, data.len() as u64, "cut short {cut_short}");
        }
    }
}

/// A garbage blob deleted by another process between gc's listing and its delete is counted as
/// gone, not as kept (it was counted in `kept_recent`, which says it is still stored), on the fs
/// (which decides under its index's lock) and with the default delete (head, then delete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_counts_a_blob_deleted_meanwhile_as_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FsBackend::open(dir.path(), FsOptions::default()).expect("open");
    let stores = [
        Store::new(Acting::deleted_meanwhile(fs.clone())),
        Store::new(Acting::deleted_meanwhile(MemoryBackend::new())),
    ];
    let blobs = [noise(1000, 7), noise(2000, 8)];
    for store in &stores {
        for data in &blobs {
            put(store, data).await;
        }
    }
    for data in &blobs {
        age(&fs, data, 3);
    }
    // The memory store's blobs are as old as the test: no grace period.
    let options = GcOptions {
        grace: Duration::ZERO,
        delete: true,
    };
    for store in &stores {
        let keep = [Ok(addr(&sha512_sri(b"another blob")))];
        let report = gc(store, keep, &options, |_, _| {}).await.expect("gc");
        let counts = (report.gone, report.kept_recent, report.garbage);
        assert_eq!(
            counts,
            (2, 0, 0),
            "{}: {report:?}",
            store.backend().describe()
        );
        assert!(report.failed.is_empty(), "{report:?}");
    }
}
