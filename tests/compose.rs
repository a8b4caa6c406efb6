//! Composed backends: `Replicated`, `Cached` and `Throttled` (by bytes and by blobs), through the
//! conformance suite, and the first two under faults (a replica down, corrupt, slow; commits
//! failing; 50 concurrent misses; a size bound).

mod common;
mod conformance;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use futures::TryStreamExt;
use tarvault::backend::compose::{
    Cached, CachedOptions, Rate, Replicated, ReplicatedOptions, Throttled,
};
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::backend::memory::MemoryBackend;
use tarvault::backend::{
    AliasRebuild, Backend, BlobKey, BlobStat, BlobWriter, Committed, GetResult, PutHint,
};
use tarvault::{Algorithm, Digests, Error, ErrorKind, Hash, PutOptions, Store};
use tokio::sync::{Notify, Semaphore};

use common::{addr, chunked, key_of, noise, sha1_hex, sha512_sri};

// ---------------------------------------------------------------------------------------------
// A backend wrapper with fault knobs.

#[derive(Debug, Default)]
struct Knobs {
    /// Every call fails.
    down: AtomicBool,
    /// Commits fail (after the bytes were written).
    fail_commit: AtomicBool,
    /// This many of the next commits fail, then they succeed again.
    fail_next_commits: AtomicU64,
    /// Reads and commits wait this long first.
    delay_ms: AtomicU64,
    /// `get` calls seen.
    gets: AtomicU64,
    /// If not 0, the `get` calls from this one on fail (the server goes down mid-scan).
    fail_gets_from: AtomicU64,
    /// This many of the next `get` calls fail (a 503), then they succeed again.
    fail_next_gets: AtomicU64,
    /// Holds `get` calls once the inner read is open (its bytes already taken).
    hold: Gate,
    /// If not 0, `get` claims a blob of this size and streams `lie_chunks` MiB of zeros instead.
    lie_size: AtomicU64,
    lie_chunks: AtomicU64,
    /// Bytes of such a lying stream pulled so far.
    pulled: AtomicU64,
    /// `get` fails with a Config error, as a server rejecting the credentials makes one.
    refuse_gets: AtomicBool,
    /// Its records are not to be trusted (as a remote server's are not).
    distrusted: AtomicBool,
    /// Its reads' streams panic if polled after their end, as `stream::unfold`'s do (a stream
    /// need not be pollable then), and yield no empty chunks.
    unfused: AtomicBool,
    /// Its listing gives every key twice (a listing replayed, as a retried S3 page can be).
    repeat_listing: AtomicBool,
}

/// A gate for `get`: when `closed`, each `get` opens the inner read, signals `entered` and waits
/// for a permit (`release`).
#[derive(Debug)]
struct Gate {
    closed: AtomicBool,
    entered: Notify,
    permits: Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            closed: AtomicBool::new(false),
            entered: Notify::new(),
            permits: Semaphore::new(0),
        }
    }
}

impl Gate {
    /// Holds the next `get` calls.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Waits until a `get` is held at the gate, then lets later calls through unheld.
    async fn held(&self) {
        self.entered.notified().await;
        self.closed.store(false, Ordering::SeqCst);
    }

    /// Lets one held `get` go on.
    fn release(&self) {
        self.permits.add_permits(1);
    }

    async fn pass(&self) {
        if self.closed.load(Ordering::SeqCst) {
            self.entered.notify_one();
            self.permits.acquire().await.expect("gate").forget();
        }
    }
}

#[derive(Debug, Clone)]
struct Faulty {
    inner: Arc<dyn Backend>,
    knobs: Arc<Knobs>,
}

impl Faulty {
    fn new(inner: impl Backend) -> Self {
        Faulty {
            inner: Arc::new(inner),
            knobs: Arc::default(),
        }
    }

    async fn gate(&self) -> tarvault::Result<()> {
        let ms = self.knobs.delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if self.knobs.down.load(Ordering::SeqCst) {
            return Err(Error::backend("faulty", "replica is down"));
        }
        Ok(())
    }
}

struct FaultyWriter {
    inner: Box<dyn BlobWriter>,
    owner: Faulty,
}

#[async_trait]
impl BlobWriter for FaultyWriter {
    async fn write(&mut self, chunk: Bytes) -> tarvault::Result<()> {
        if self.owner.knobs.down.load(Ordering::SeqCst) {
            return Err(Error::backend("faulty", "replica is down"));
        }
        self.inner.write(chunk).await
    }
    async fn commit(self: Box<Self>, digests: &Digests) -> tarvault::Result<Committed> {
        if let Err(e) = self.owner.gate().await {
            self.inner.abort().await?;
            return Err(e);
        }
        let fail_next = &self.owner.knobs.fail_next_commits;
        let fail_this = fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail_this || self.owner.knobs.fail_commit.load(Ordering::SeqCst) {
            self.inner.abort().await?;
            return Err(Error::backend("faulty", "commit refused"));
        }
        self.inner.commit(digests).await
    }
    async fn abort(self: Box<Self>) -> tarvault::Result<()> {
        self.inner.abort().await
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

#[async_trait]
impl Backend for Faulty {
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }
    async fn begin_put(&self, hint: &PutHint) -> tarvault::Result<Box<dyn BlobWriter>> {
        if self.knobs.down.load(Ordering::SeqCst) {
            return Err(Error::backend("faulty", "replica is down"));
        }
        Ok(Box::new(FaultyWriter {
            inner: self.inner.begin_put(hint).await?,
            owner: self.clone(),
        }))
    }
    async fn get(
        &self,
        key: &BlobKey,
        range: Option<Range<u64>>,
    ) -> tarvault::Result<Option<GetResult>> {
        let n = self.knobs.gets.fetch_add(1, Ordering::SeqCst) + 1;
        let from = self.knobs.fail_gets_from.load(Ordering::SeqCst);
        if from > 0 && n >= from {
            return Err(Error::backend("faulty", "went down mid-scan"));
        }
        let fail_next = &self.knobs.fail_next_gets;
        if fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Error::backend("faulty", "503 Slow Down"));
        }
        self.gate().await?;
        if self.knobs.refuse_gets.load(Ordering::SeqCst) {
            return Err(Error::Config(
                "faulty: credentials rejected; set FAULTY_KEY".into(),
            ));
        }
        let claimed = self.knobs.lie_size.load(Ordering::SeqCst);
        if claimed > 0 {
            let knobs = self.knobs.clone();
            let chunks = knobs.lie_chunks.load(Ordering::SeqCst);
            let stream = futures::stream::iter(0..chunks)
                .map(move |_| {
                    knobs.pulled.fetch_add(1 << 20, Ordering::SeqCst);
                    Ok(Bytes::from(vec![0u8; 1 << 20]))
                })
                .boxed();
            return Ok(Some(GetResult {
                size: claimed,
                stream,
                digests: None,
                verified_whole: None,
            }));
        }
        let mut got = self.inner.get(key, range).await;
        self.knobs.hold.pass().await;
        if self.knobs.unfused.load(Ordering::SeqCst) {
            if let Ok(Some(read)) = &mut got {
                let stream = std::mem::replace(&mut read.stream, futures::stream::empty().boxed());
                // No empty chunks either: an empty blob is a stream that ends at once.
                let stream = stream
                    .filter(|c| std::future::ready(c.as_ref().map_or(true, |c| !c.is_empty())));
                read.stream = futures::stream::unfold(stream, |mut s| async move {
                    s.next().await.map(|item| (item, s))
                })
                .boxed();
            }
        }
        got
    }
    async fn head(&self, key: &BlobKey) -> tarvault::Result<Option<BlobStat>> {
        self.gate().await?;
        self.inner.head(key).await
    }
    async fn delete(&self, key: &BlobKey) -> tarvault::Result<bool> {
        self.gate().await?;
        self.inner.delete(key).await
    }
    fn list(&self) -> BoxStream<'static, tarvault::Result<BlobKey>> {
        if self.knobs.down.load(Ordering::SeqCst) {
            return Box::pin(futures::stream::once(async {
                Err(Error::backend("faulty", "replica is down"))
            }));
        }
        if self.knobs.repeat_listing.load(Ordering::SeqCst) {
            return self.inner.list().chain(self.inner.list()).boxed();
        }
        self.inner.list()
    }
    async fn resolve_alias(&self, hash: &Hash) -> tarvault::Result<Option<BlobKey>> {
        self.gate().await?;
        self.inner.resolve_alias(hash).await
    }
    async fn rebuild_aliases(
        &self,
        found: BoxStream<'_, Digests>,
        options: &tarvault::backend::RebuildOptions,
    ) -> tarvault::Result<AliasRebuild> {
        self.gate().await?;
        self.inner.rebuild_aliases(found, options).await
    }
    fn recorded_digests_trusted(&self) -> Option<tarvault::backend::Vouched> {
        let distrusted = self.knobs.distrusted.load(Ordering::SeqCst);
        self.inner
            .recorded_digests_trusted()
            .filter(|_| !distrusted)
    }
}

fn arc(b: impl Backend) -> Arc<dyn Backend> {
    Arc::new(b)
}

async fn keys_of(b: &dyn Backend) -> Vec<BlobKey> {
    let mut k: Vec<BlobKey> = b.list().try_collect().await.expect("list");
    k.sort();
    k
}

async fn read_all(store: &Store, data: &[u8]) -> Bytes {
    store
        .get(&addr(&sha512_sri(data)))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("verified")
}

// ---------------------------------------------------------------------------------------------
// The conformance suite over the wrappers: they are backends too.

struct ReplicatedFixture {
    fs: FsBackend,
    mem: MemoryBackend,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl conformance::Fixture for ReplicatedFixture {
    fn backend(&self) -> Arc<dyn Backend> {
        arc(Replicated::new(
            vec![arc(self.fs.clone()), arc(self.mem.clone())],
            ReplicatedOptions::default(),
        )
        .expect("replicated"))
    }
    async fn plant(&self, key: &BlobKey, bytes: Bytes) {
        // Every replica rots: one bad copy alone is repaired, not reported.
        let path = self.fs.blob_path(key);
        let mut perms = std::fs::metadata(&path).expect("blob exists").permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&path, perms).expect("chmod");
        std::fs::write(&path, &bytes).expect("plant");
        assert!(self.mem.corrupt_for_test(key, bytes), "nothing to corrupt");
    }
}

mod replicated_suite {
    use super::*;
    async fn make() -> ReplicatedFixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = FsBackend::open(
            dir.path().join("r0"),
            FsOptions {
                fsync: false,
                ..Default::default()
            },
        )
        .expect("fs");
        ReplicatedFixture {
            fs,
            mem: MemoryBackend::new(),
            _dir: dir,
        }
    }
    conformance::suite!(make);
}

struct CachedFixture {
    cached: Cached,
    remote: FsBackend,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl conformance::Fixture for CachedFixture {
    fn backend(&self) -> Arc<dyn Backend> {
        arc(self.cached.clone())
    }
    async fn plant(&self, key: &BlobKey, bytes: Bytes) {
        let path = self.remote.blob_path(key);
        let mut perms = std::fs::metadata(&path).expect("blob exists").permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&path, perms).expect("chmod");
        std::fs::write(&path, &bytes).expect("plant");
        self.cached.evict(key).await.expect("evict");
    }
}

mod cached_suite {
    use super::*;
    async fn make() -> CachedFixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let remote = FsBackend::open(
            dir.path().join("remote"),
            FsOptions {
                fsync: false,
                ..Default::default()
            },
        )
        .expect("fs");
        let cached = Cached::new(
            arc(MemoryBackend::new()),
            arc(remote.clone()),
            CachedOptions { capacity: 64 << 20 },
        )
        .await
        .expect("cached");
        CachedFixture {
            cached,
            remote,
            _dir: dir,
        }
    }
    conformance::suite!(make);
}

/// `Throttled` over memory: paced reads must still be whole, verified and typed like any other.
struct ThrottledFixture {
    throttled: Throttled,
    mem: MemoryBackend,
}

impl ThrottledFixture {
    /// Rates generous enough that the suite stays quick, low enough that reads really wait.
    fn new(rate: Rate) -> ThrottledFixture {
        let mem = MemoryBackend::new();
        ThrottledFixture {
            throttled: Throttled::new(arc(mem.clone()), rate),
            mem,
        }
    }
}

#[async_trait]
impl conformance::Fixture for ThrottledFixture {
    fn backend(&self) -> Arc<dyn Backend> {
        arc(self.throttled.clone())
    }
    async fn plant(&self, key: &BlobKey, bytes: Bytes) {
        assert!(self.mem.corrupt_for_test(key, bytes), "nothing to corrupt");
    }
}

mod throttled_bytes_suite {
    use super::*;
    async fn make() -> ThrottledFixture {
        ThrottledFixture::new(Rate::Bytes(1e9))
    }
    conformance::suite!(make);
}

mod throttled_blobs_suite {
    use super::*;
    async fn make() -> ThrottledFixture {
        ThrottledFixture::new(Rate::Blobs(2000.0))
    }
    conformance::suite!(make);
}

// ---------------------------------------------------------------------------------------------
// Replication under faults.

/// `n` memory stores, each also behind a [`Faulty`] for a replicated store's members.
fn memory_replicas(n: usize) -> (Vec<MemoryBackend>, Vec<Faulty>) {
    let mems: Vec<MemoryBackend> = (0..n).map(|_| MemoryBackend::new()).collect();
    let faulty = mems.iter().map(|m| Faulty::new(m.clone())).collect();
    (mems, faulty)
}

fn replicated(members: &[Faulty], options: ReplicatedOptions) -> Replicated {
    Replicated::new(members.iter().map(|f| arc(f.clone())).collect(), options).expect("replicated")
}

/// A replicated store lists every blob of the replicas that answer, each once; a replica whose
/// listing fails is skipped, and only a store whose every replica fails lists an error.
#[tokio::test]
async fn a_replicated_listing_skips_a_failed_replica_and_fails_only_with_all() {
    let (mems, faulty) = memory_replicas(3);
    let rep = replicated(&faulty, ReplicatedOptions::default());
    let store = Store::new(rep.clone());
    let blobs: Vec<Vec<u8>> = (0..6).map(|i| noise(30_000 + i, 200 + i as u64)).collect();
    for b in &blobs {
        store
            .put_bytes(b.clone(), &PutOptions::default())
            .await
            .expect("put");
    }
    // One more on the last replica alone.
    Store::new(mems[2].clone())
        .put_bytes(b"on one replica".to_vec(), &PutOptions::default())
        .await
        .expect("put");
    let mut want = keys_of(&mems[0]).await;
    want.push(key_of(b"on one replica"));
    want.sort();
    assert_eq!(keys_of(&rep).await, want);
    faulty[0].knobs.down.store(true, Ordering::SeqCst);
    assert_eq!(keys_of(&rep).await, want, "replica 0 down");
    for f in &faulty {
        f.knobs.down.store(true, Ordering::SeqCst);
    }
    let all: Vec<tarvault::Result<BlobKey>> = rep.list().collect().await;
    assert!(
        matches!(all[..], [Err(_)]),
        "every replica down: {} items",
        all.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_down_then_repaired() {
    let (mems, faulty) = memory_replicas(3);
    let rep = replicated(&faulty, ReplicatedOptions::default());
    let store = Store::new(rep.clone());
    faulty[0].knobs.down.store(true, Ordering::SeqCst);
    let blobs: Vec<Vec<u8>> = (0..5).map(|i| noise(20_000 + i, 300 + i as u64)).collect();
    for b in &blobs {
        let put = store
            .put_bytes(b.clone(), &PutOptions::default())
            .await
            .expect("a majority (2 of 3) is up");
        assert!(put.stored);
    }
    for b in &blobs {
        assert_eq!(
            &read_all(&store, b).await[..],
            &b[..],
            "read with replica 0 down"
        );
    }
    assert!(keys_of(&mems[0]).await.is_empty());
    // Back up: repair copies everything it missed.
    faulty[0].knobs.down.store(false, Ordering::SeqCst);
    let report = rep.repair(false, 4).await.expect("repair");
    assert_eq!(report.blobs, 5);
    assert_eq!(report.copied, 5);
    assert!(report.is_clean(), "{report:?}");
    let want = keys_of(&mems[1]).await;
    assert_eq!(keys_of(&mems[0]).await, want);
    assert_eq!(keys_of(&mems[2]).await, want);
    // The copies verify.
    let alone = Store::new(mems[0].clone());
    for b in &blobs {
        assert_eq!(&read_all(&alone, b).await[..], &b[..]);
    }
    // A second repair has nothing to do; without `verify` it reads nothing to find that out
    // (presence is all it compares), with `verify` it reads every copy.
    let gets = || -> u64 {
        faulty
            .iter()
            .map(|f| f.knobs.gets.load(Ordering::SeqCst))
            .sum()
    };
    let before = gets();
    let again = rep.repair(false, 4).await.expect("repair");
    assert_eq!((again.blobs, again.copied, again.replaced), (5, 0, 0));
    assert_eq!(gets(), before, "a presence-only repair read blobs");
    let again = rep.repair(true, 4).await.expect("repair");
    assert_eq!((again.copied, again.replaced), (0, 0));
    assert_eq!(gets(), before + 15, "a verifying repair reads every copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_replica_is_skipped_and_read_repaired() {
    let (mems, faulty) = memory_replicas(3);
    // Quorum 3: every replica has committed when the put returns.
    let store = Store::new(replicated(
        &faulty,
        ReplicatedOptions {
            write_quorum: Some(3),
            ..ReplicatedOptions::default()
        },
    ));
    let data = noise(500_000, 41);
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    let key = key_of(&data);
    let mut bad = data.clone();
    bad[1234] ^= 1;
    assert!(mems[0].corrupt_for_test(&key, Bytes::from(bad)));
    // Both verification modes: the wrapper checks the replica before the store sees a byte.
    for mode in [tarvault::Verification::Fast, tarvault::Verification::Full] {
        let s = store.clone().with_verification(mode);
        assert_eq!(&read_all(&s, &data).await[..], &data[..]);
    }
    // Read-repair replaced the bad copy.
    let alone = Store::new(mems[0].clone());
    assert_eq!(&read_all(&alone, &data).await[..], &data[..]);
    // Missing from the first replica: also repaired on read.
    assert!(mems[0].delete(&key).await.expect("delete"));
    assert_eq!(&read_all(&store, &data).await[..], &data[..]);
    assert!(mems[0].head(&key).await.expect("head").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_corrupt_is_reported() {
    let (mems, faulty) = memory_replicas(3);
    // Quorum 3: every replica has committed when the put returns.
    let store = Store::new(replicated(
        &faulty,
        ReplicatedOptions {
            write_quorum: Some(3),
            ..ReplicatedOptions::default()
        },
    ));
    let data = noise(10_000, 42);
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    for m in &mems {
        m.corrupt_for_test(&key_of(&data), Bytes::from(noise(10_000, 43)));
    }
    let err = store
        .get(&addr(&sha512_sri(&data)))
        .await
        .expect("opens")
        .bytes()
        .await
        .expect_err("no good copy");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    // Every copy is bad: the error names the replicated set, each of whose members needs repair.
    match &err {
        Error::Corrupt { backend, .. } => {
            assert!(backend.starts_with("replicated(quorum 3 of 3"), "{backend}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_replica_does_not_hold_up_reads_or_writes() {
    let (mems, faulty) = memory_replicas(3);
    let rep = replicated(
        &faulty,
        ReplicatedOptions {
            write_quorum: Some(2),
            read_timeout: Some(Duration::from_millis(200)),
            read_repair: true,
        },
    );
    let store = Store::new(rep);
    faulty[0].knobs.delay_ms.store(6000, Ordering::SeqCst);
    let data = noise(100_000, 44);
    let t = Instant::now();
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    let put_time = t.elapsed();
    assert!(
        put_time < Duration::from_millis(4000),
        "put waited for the slow replica: {put_time:?}"
    );
    let t = Instant::now();
    assert_eq!(&read_all(&store, &data).await[..], &data[..]);
    let read_time = t.elapsed();
    assert!(
        read_time < Duration::from_millis(4000),
        "read waited for the slow replica: {read_time:?}"
    );
    // The slow replica's commit still lands, in the background.
    let deadline = Instant::now() + Duration::from_secs(20);
    while mems[0].head(&key_of(&data)).await.expect("head").is_none() {
        assert!(Instant::now() < deadline, "late commit never landed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_not_reached_is_a_typed_error_and_nothing_is_visible() {
    let (mems, faulty) = memory_replicas(3);
    let rep = replicated(&faulty, ReplicatedOptions::default());
    let store = Store::new(rep.clone());
    faulty[1].knobs.fail_commit.store(true, Ordering::SeqCst);
    faulty[2].knobs.fail_commit.store(true, Ordering::SeqCst);
    let data = noise(50_000, 45);
    let err = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect_err("1 of 3 cannot make a quorum of 2");
    assert_eq!(err.kind(), ErrorKind::Backend);
    match &err {
        Error::QuorumNotReached {
            needed, committed, ..
        } => assert_eq!((*needed, *committed), (2, 1)),
        other => panic!("expected QuorumNotReached, got {other:?}"),
    }
    for m in &mems {
        assert!(keys_of(m).await.is_empty(), "a rolled-back put left a copy");
    }
    assert!(!store
        .contains(&addr(&sha512_sri(&data)))
        .await
        .expect("contains"));
    // Replicas down at the start: refused before any byte is sent.
    faulty[1].knobs.down.store(true, Ordering::SeqCst);
    faulty[2].knobs.down.store(true, Ordering::SeqCst);
    let err = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect_err("down");
    assert!(matches!(err, Error::QuorumNotReached { .. }), "{err:?}");
    for m in &mems {
        assert!(keys_of(m).await.is_empty());
    }
    // Quorum 1 accepts the same write.
    let one = Store::new(replicated(
        &faulty,
        ReplicatedOptions {
            write_quorum: Some(1),
            ..ReplicatedOptions::default()
        },
    ));
    one.put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("quorum 1");
    assert_eq!(keys_of(&mems[0]).await, vec![key_of(&data)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_quorum_is_a_config_error() {
    let (_, faulty) = memory_replicas(3);
    for q in [0, 4] {
        let err = Replicated::new(
            faulty.iter().map(|f| arc(f.clone())).collect(),
            ReplicatedOptions {
                write_quorum: Some(q),
                ..ReplicatedOptions::default()
            },
        )
        .expect_err("impossible");
        assert_eq!(err.kind(), ErrorKind::Config);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_unions_divergent_replicas_and_replaces_corrupt_copies() {
    let (mems, faulty) = memory_replicas(3);
    let rep = replicated(&faulty, ReplicatedOptions::default());
    // Each replica got different blobs behind the wrapper's back.
    let mut all = Vec::new();
    for (i, m) in mems.iter().enumerate() {
        for j in 0..3 {
            let data = noise(3000 + j, (i * 10 + j) as u64 + 500);
            Store::new(m.clone())
                .put_bytes(data.clone(), &PutOptions::default())
                .await
                .expect("put");
            all.push(data);
        }
    }
    // One copy everywhere of a shared blob, corrupt on replica 2.
    let shared = noise(7000, 600);
    for m in &mems {
        Store::new(m.clone())
            .put_bytes(shared.clone(), &PutOptions::default())
            .await
            .expect("put");
    }
    mems[2].corrupt_for_test(&key_of(&shared), Bytes::from(noise(7000, 601)));
    let report = rep.repair(true, 3).await.expect("repair");
    assert_eq!(report.blobs, 10);
    assert_eq!(report.copied, 18, "9 blobs, each missing from 2 replicas");
    assert_eq!(report.replaced, 1);
    assert!(report.is_clean(), "{report:?}");
    for m in &mems {
        assert_eq!(keys_of(m).await.len(), 10);
        let s = Store::new(m.clone());
        for d in all.iter().chain([&shared]) {
            assert_eq!(&read_all(&s, d).await[..], &d[..]);
        }
    }
}

/// A corrupt copy on the first replica, and the second, whose copy is good, failing the read: the
/// read fails with that replica's error (kind `Backend`), not `Corrupt`, since a good copy may be
/// (and is) there; `fsck --quarantine` fails the same way and takes nothing out of service. And a
/// quarantine of the blob reads each copy again and moves only the corrupt one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_copy_beside_a_replica_that_failed_is_no_verdict_and_not_quarantined() {
    let data = noise(10_000, 44);
    let key = key_of(&data);
    let a = addr(&sha512_sri(&data));
    let (mems, faulty) = memory_replicas(2);
    let rep = replicated(
        &faulty,
        ReplicatedOptions {
            write_quorum: Some(2),
            ..ReplicatedOptions::default()
        },
    );
    let store = Store::new(rep.clone());
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    assert!(mems[0].corrupt_for_test(&key, Bytes::from(noise(10_000, 45))));

    faulty[1].knobs.fail_next_gets.store(1, Ordering::SeqCst);
    let read = async { store.get(&a).await?.bytes().await }.await;
    let err = read.expect_err("no copy could be verified");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");

    faulty[1].knobs.fail_next_gets.store(1, Ordering::SeqCst);
    let options = tarvault::FsckOptions {
        quarantine: true,
        ..tarvault::FsckOptions::default()
    };
    match store.fsck(&options).await {
        Err(e) => assert_eq!(e.kind(), ErrorKind::Backend, "{e}"),
        Ok(report) => assert!(report.corrupt.is_empty(), "{report:?}"),
    }
    assert!(
        mems[1].head(&key).await.expect("head").is_some(),
        "good copy quarantined"
    );

    // Both answering, each copy is judged on its own: the corrupt one goes, the good one stays.
    assert!(rep.quarantine(&key).await.expect("quarantine"));
    assert!(mems[0].head(&key).await.expect("head").is_none());
    assert!(mems[1].head(&key).await.expect("head").is_some());
    assert_eq!(&read_all(&store, &data).await[..], &data[..]);
}

/// The only replica holding a blob is down and the other lacks it: the blob may well exist, so a
/// read, a `stat`/`contains` (a `head`) and a lookup by sha1 (the alias index) fail with the down
/// replica's error (kind `Backend`: a server answers 503), not `NotFound` (a 404). A put of that
/// blob with its integrity expected still goes through (the check for a stored copy is only a
/// shortcut), and once every replica answers, a blob none has is `NotFound` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_and_the_rest_lacking_the_blob_is_no_verdict_of_absence() {
    let data = noise(5_000, 46);
    let (_mems, faulty, rep) = second_replica_only(&data).await;
    let store = Store::new(rep);
    faulty[1].knobs.down.store(true, Ordering::SeqCst);
    let by_sha512 = addr(&sha512_sri(&data));
    let by_sha1 = addr(&sha1_hex(&data));
    for a in [&by_sha512, &by_sha1] {
        let read = async { store.get(a).await?.bytes().await }.await;
        let err = read.expect_err("the holder is down");
        assert_eq!(err.kind(), ErrorKind::Backend, "get {a}: {err}");
        let err = store.contains(a).await.expect_err("the holder is down");
        assert_eq!(err.kind(), ErrorKind::Backend, "contains {a}: {err}");
        let err = store.stat(a).await.expect_err("the holder is down");
        assert_eq!(err.kind(), ErrorKind::Backend, "stat {a}: {err}");
    }
    let put = store
        .put_bytes(data.clone(), &PutOptions::expect(by_sha512.clone()))
        .await
        .expect("put with one replica down (quorum 1)");
    assert_eq!(put.digests.integrity(), by_sha512);
    assert_eq!(&read_all(&store, &data).await[..], &data[..]);
    faulty[1].knobs.down.store(false, Ordering::SeqCst);
    let absent = addr(&sha512_sri(b"stored nowhere"));
    let err = store.get(&absent).await.expect_err("absent");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

/// Two memory replicas behind fault wrappers, the blob `data` on the second only (quorum 1).
async fn second_replica_only(data: &[u8]) -> (Vec<MemoryBackend>, Vec<Faulty>, Replicated) {
    let (mems, faulty) = memory_replicas(2);
    Store::new(mems[1].clone())
        .put_bytes(data.to_vec(), &PutOptions::default())
        .await
        .expect("seed the second replica");
    let rep = replicated(
        &faulty,
        ReplicatedOptions {
            write_quorum: Some(1),
            ..ReplicatedOptions::default()
        },
    );
    (mems, faulty, rep)
}

/// A read-repair whose good copy was read before a delete does not write it back afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_repair_racing_a_delete_does_not_bring_the_blob_back() {
    let data = noise(20_000, 111);
    let key = key_of(&data);
    let (mems, faulty, rep) = second_replica_only(&data).await;
    let store = Store::new(rep);
    let a = addr(&sha512_sri(&data));
    // The read finds replica 0 missing, then holds with replica 1's bytes in hand.
    faulty[1].knobs.hold.close();
    let reader = {
        let (store, a) = (store.clone(), a.clone());
        tokio::spawn(async move { store.get(&a).await?.bytes().await })
    };
    faulty[1].knobs.hold.held().await;
    assert!(store.delete(&a).await.expect("delete"), "was stored");
    faulty[1].knobs.hold.release();
    let read = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the read finishes")
        .expect("task");
    // It began before the delete: serving what it read is fine, storing it again is not.
    if let Ok(bytes) = read {
        assert_eq!(&bytes[..], &data[..]);
    }
    for m in &mems {
        assert!(m.head(&key).await.expect("head").is_none(), "brought back");
    }
    assert!(!store.contains(&a).await.expect("contains"));
}

/// Puts `data` with replica 0's commit held back 1.5 s, so that the other two acknowledge the put
/// and replica 0 (`raw`, without the fault wrapper) commits late, in the background.
async fn put_acknowledged_before_replica_0(
    store: &Store,
    faulty: &[Faulty],
    raw: &dyn Backend,
    data: &[u8],
) {
    faulty[0].knobs.delay_ms.store(1500, Ordering::SeqCst);
    store
        .put_bytes(data.to_vec(), &PutOptions::default())
        .await
        .expect("put");
    faulty[0].knobs.delay_ms.store(0, Ordering::SeqCst);
    assert!(
        raw.head(&key_of(data)).await.expect("head").is_none(),
        "replica 0 committed before the put returned: the test proves nothing"
    );
}

/// A replica's late commit (the put was acknowledged by the others) that lands after a delete of
/// the blob does not bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_replica_commit_after_a_delete_does_not_bring_the_blob_back() {
    let (mems, faulty) = memory_replicas(3);
    let store = Store::new(replicated(&faulty, ReplicatedOptions::default()));
    let data = noise(30_000, 113);
    let key = key_of(&data);
    let a = addr(&sha512_sri(&data));
    put_acknowledged_before_replica_0(&store, &faulty, &mems[0], &data).await;
    assert!(store.delete(&a).await.expect("delete"), "was stored");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for m in &mems {
        assert!(m.head(&key).await.expect("head").is_none(), "brought back");
    }
    assert!(!store.contains(&a).await.expect("contains"));
}

/// The same, with the delete made by another process (the CLI, through its own `Replicated` over
/// the same three filesystem replicas), which this process's fence never sees: the late copy is
/// found to be the only one left once the delete has had time to reach every replica, and removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_replica_commit_after_another_process_deleted_the_blob_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let roots: Vec<_> = (0..3).map(|i| dir.path().join(format!("r{i}"))).collect();
    let fs: Vec<FsBackend> = roots
        .iter()
        .map(|r| FsBackend::open(r, FsOptions::default()).expect("open replica"))
        .collect();
    let faulty: Vec<Faulty> = fs.iter().map(|b| Faulty::new(b.clone())).collect();
    let store = Store::new(replicated(&faulty, ReplicatedOptions::default()));
    let data = noise(30_000, 116);
    let key = key_of(&data);
    put_acknowledged_before_replica_0(&store, &faulty, &fs[0], &data).await;
    let config = serde_json::json!({
        "replicated": {"replicas": roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>()}
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tarvault"))
        .arg("--store")
        .arg(config.to_string())
        .args(["rm", &sha512_sri(&data)])
        .output()
        .expect("run the CLI");
    assert!(
        out.status.success(),
        "rm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Replica 0's commit lands about a second after the delete; the check follows a second later.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut brought_back = false;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        brought_back |= fs[0].head(&key).await.expect("head").is_some();
        if brought_back && fs[0].head(&key).await.expect("head").is_none() {
            break;
        }
    }
    assert!(
        brought_back,
        "replica 0's late commit never landed: the test proves nothing"
    );
    for (i, b) in fs.iter().enumerate() {
        assert!(
            b.head(&key).await.expect("head").is_none(),
            "replica {i} still has the deleted blob"
        );
    }
    assert!(!store
        .contains(&addr(&sha512_sri(&data)))
        .await
        .expect("contains"));
}

/// Many late commits beside another instance's deletes and re-puts: a late copy goes only where
/// the blob was deleted and not put again, and blobs no one deleted keep every copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_copies_go_only_where_another_instance_deleted_the_blob() {
    let (mems, faulty) = memory_replicas(3);
    // This instance's replica 0 commits 50 ms late; the other instance sees the same replicas
    // without delay, and has a fence of its own.
    faulty[0].knobs.delay_ms.store(50, Ordering::SeqCst);
    let here = Store::new(replicated(&faulty, ReplicatedOptions::default()));
    let other = Store::new(
        Replicated::new(
            mems.iter().map(|m| arc(m.clone())).collect(),
            ReplicatedOptions::default(),
        )
        .expect("replicated"),
    );
    let blobs: Vec<Vec<u8>> = (0..24).map(|i| noise(5_000 + i, 400 + i as u64)).collect();
    for b in &blobs {
        here.put_bytes(b.clone(), &PutOptions::default())
            .await
            .expect("put");
    }
    // 0..8 deleted and put again, 8..16 deleted, 16..24 left alone; all before most of replica
    // 0's late commits land.
    for b in &blobs[..16] {
        assert!(other.delete(&addr(&sha512_sri(b))).await.expect("delete"));
    }
    for b in &blobs[..8] {
        other
            .put_bytes(b.clone(), &PutOptions::default())
            .await
            .expect("put again");
    }
    faulty[0].knobs.delay_ms.store(0, Ordering::SeqCst);
    // Late commits (50 ms each, one at a time per put) and their checks a second later.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for (i, b) in blobs.iter().enumerate() {
        let key = key_of(b);
        for (r, m) in mems.iter().enumerate() {
            let has = m.head(&key).await.expect("head").is_some();
            let want = !(8..16).contains(&i);
            assert_eq!(has, want, "blob {i} on replica {r}");
        }
    }
}

/// A second put of a blob while the first's late commit is still running finds that replica
/// without it and is told `Stored` there; the blob was stored before, and the put says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_put_during_a_late_commit_is_reported_present() {
    let (mems, faulty) = memory_replicas(3);
    let store = Store::new(replicated(&faulty, ReplicatedOptions::default()));
    let data = noise(30_000, 114);
    let key = key_of(&data);
    faulty[0].knobs.delay_ms.store(1500, Ordering::SeqCst);
    let first = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("first put");
    assert!(first.stored);
    // Now replica 0 is quick (its first commit still waits) and replica 2 slow, so the second
    // put's quorum is replica 0 (`Stored`) and replica 1 (`AlreadyPresent`).
    faulty[0].knobs.delay_ms.store(0, Ordering::SeqCst);
    faulty[2].knobs.delay_ms.store(1000, Ordering::SeqCst);
    let second = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("second put");
    assert!(
        mems[0].head(&key).await.expect("head").is_some(),
        "the second put did not commit on replica 0: the test proves nothing"
    );
    assert!(!second.stored, "reported stored, though stored before");
}

/// In a batch, a later copy of a blob is not committed once the first is; but if the first copy's
/// commit fails, the next copy is committed in its place and stores the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_repeat_stands_in_for_a_first_copy_that_failed() {
    let faulty = Faulty::new(MemoryBackend::new());
    let store = Store::new(faulty.clone());
    let data = noise(9000, 115);
    faulty.knobs.fail_next_commits.store(1, Ordering::SeqCst);
    let inputs = (0..3)
        .map(|_| (chunked(&data, 1000), PutOptions::default()))
        .collect();
    let results = store.put_batch(inputs).await;
    assert_eq!(
        results[0].as_ref().map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::Backend),
        "the first copy's commit failed"
    );
    let stored: Vec<Option<bool>> = results[1..]
        .iter()
        .map(|r| r.as_ref().ok().map(|o| o.stored))
        .collect();
    assert_eq!(stored, [Some(true), Some(false)]);
    assert_eq!(read_all(&store, &data).await, Bytes::from(data));
}

/// `repair` likewise: a copy read before a delete is not left on a replica after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_racing_a_delete_does_not_bring_the_blob_back() {
    let data = noise(20_000, 112);
    let key = key_of(&data);
    let (mems, faulty, rep) = second_replica_only(&data).await;
    faulty[1].knobs.hold.close();
    let repair = {
        let rep = rep.clone();
        tokio::spawn(async move { rep.repair(false, 1).await })
    };
    faulty[1].knobs.hold.held().await;
    assert!(rep.delete(&key).await.expect("delete"), "was stored");
    faulty[1].knobs.hold.release();
    tokio::time::timeout(Duration::from_secs(30), repair)
        .await
        .expect("the repair finishes")
        .expect("task")
        .expect("repair");
    for m in &mems {
        assert!(m.head(&key).await.expect("head").is_none(), "brought back");
    }
}

// ---------------------------------------------------------------------------------------------
// The cache tier.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_fetches_once_under_50_concurrent_misses() {
    let remote = Faulty::new(MemoryBackend::new());
    let data = Bytes::from(noise(400_000, 70));
    Store::new(remote.clone())
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("seed remote");
    remote.knobs.delay_ms.store(150, Ordering::SeqCst);
    let cached = Cached::new(
        arc(MemoryBackend::new()),
        arc(remote.clone()),
        CachedOptions { capacity: 10 << 20 },
    )
    .await
    .expect("cached");
    let store = Store::new(cached.clone());
    let before = remote.knobs.gets.load(Ordering::SeqCst);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            let data = data.clone();
            tokio::spawn(async move { read_all(&store, &data).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task"), data);
    }
    assert_eq!(
        remote.knobs.gets.load(Ordering::SeqCst) - before,
        1,
        "one remote fetch for 50 concurrent misses"
    );
    let stats = cached.stats();
    assert_eq!(stats.fetches, 1);
    assert_eq!(stats.hits + stats.misses, 50);
    // Now a hit, no remote read at all.
    assert_eq!(read_all(&store, &data).await, data);
    assert_eq!(remote.knobs.gets.load(Ordering::SeqCst) - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_evicts_least_recently_used_within_its_bound() {
    let remote = MemoryBackend::new();
    let local = MemoryBackend::new();
    let blobs: Vec<Vec<u8>> = (0..10).map(|i| noise(30_000, 80 + i)).collect();
    for b in &blobs {
        Store::new(remote.clone())
            .put_bytes(b.clone(), &PutOptions::default())
            .await
            .expect("seed");
    }
    let cached = Cached::new(
        arc(local.clone()),
        arc(remote.clone()),
        CachedOptions { capacity: 100_000 },
    )
    .await
    .expect("cached");
    let store = Store::new(cached.clone());
    for b in &blobs[..3] {
        read_all(&store, b).await;
    }
    assert_eq!(cached.stats().blobs, 3);
    // Touch blob 0; blob 1 is now the least recently used and goes first.
    read_all(&store, &blobs[0]).await;
    read_all(&store, &blobs[3]).await;
    let held = keys_of(&local).await;
    assert_eq!(held.len(), 3);
    assert!(held.contains(&key_of(&blobs[0])));
    assert!(!held.contains(&key_of(&blobs[1])));
    for b in &blobs {
        assert_eq!(&read_all(&store, b).await[..], &b[..]);
        let s = cached.stats();
        assert!(s.bytes <= 100_000, "over capacity: {s:?}");
        let on_disk: u64 = keys_of(&local).await.len() as u64 * 30_000;
        assert!(on_disk <= 100_000, "local tier holds {on_disk} bytes");
    }
    let s = cached.stats();
    assert!(s.evictions >= 7, "{s:?}");
    // A blob bigger than the whole cache is served but not kept.
    let big = noise(150_000, 99);
    Store::new(remote.clone())
        .put_bytes(big.clone(), &PutOptions::default())
        .await
        .expect("seed");
    assert_eq!(&read_all(&store, &big).await[..], &big[..]);
    assert!(!keys_of(&local).await.contains(&key_of(&big)));
}

/// A `Cached` memory tier in front of a memory remote that holds `data`; returns the local tier too.
async fn cached_over_memory(data: &[u8]) -> (MemoryBackend, Cached) {
    let remote = MemoryBackend::new();
    let local = MemoryBackend::new();
    Store::new(remote.clone())
        .put_bytes(data.to_vec(), &PutOptions::default())
        .await
        .expect("seed");
    let cached = Cached::new(arc(local.clone()), arc(remote), CachedOptions::default())
        .await
        .expect("cached");
    (local, cached)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_cached_copy_is_dropped_and_refetched() {
    let data = noise(60_000, 90);
    let (local, cached) = cached_over_memory(&data).await;
    let store = Store::new(cached.clone());
    read_all(&store, &data).await;
    assert!(local.corrupt_for_test(&key_of(&data), Bytes::from(noise(60_000, 91))));
    assert_eq!(&read_all(&store, &data).await[..], &data[..]);
    assert_eq!(cached.stats().fetches, 2);
    // The refill is good.
    assert_eq!(&read_all(&Store::new(local), &data).await[..], &data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_remote_is_reported_and_not_cached() {
    let remote = MemoryBackend::new();
    let local = MemoryBackend::new();
    let data = noise(20_000, 92);
    Store::new(remote.clone())
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("seed");
    remote.corrupt_for_test(&key_of(&data), Bytes::from(noise(20_000, 93)));
    // Named apart from the memory tier in front of it.
    let remote = Faulty::new(remote);
    let remote_name = remote.describe();
    let store = Store::new(
        Cached::new(arc(local.clone()), arc(remote), CachedOptions::default())
            .await
            .expect("cached"),
    );
    let err = store
        .get(&addr(&sha512_sri(&data)))
        .await
        .expect("opens")
        .bytes()
        .await
        .expect_err("corrupt");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    // The bad copy is the remote's, not the cache tier's: the error says so.
    match &err {
        Error::Corrupt { backend, .. } => assert_eq!(backend, &remote_name),
        other => panic!("{other:?}"),
    }
    assert!(keys_of(&local).await.is_empty(), "bad bytes were cached");
}

/// A `Cached` memory tier in front of a fault wrapper over a memory remote that holds `data`.
async fn cached_over_faulty(data: &[u8]) -> (MemoryBackend, Faulty, Cached) {
    let remote = Faulty::new(MemoryBackend::new());
    let local = MemoryBackend::new();
    Store::new(remote.clone())
        .put_bytes(data.to_vec(), &PutOptions::default())
        .await
        .expect("seed");
    let cached = Cached::new(
        arc(local.clone()),
        arc(remote.clone()),
        CachedOptions::default(),
    )
    .await
    .expect("cached");
    (local, remote, cached)
}

/// A fill whose remote read came before a delete does not keep its copy after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_fill_racing_a_delete_does_not_bring_the_blob_back() {
    let data = noise(20_000, 110);
    let key = key_of(&data);
    let (local, remote, cached) = cached_over_faulty(&data).await;
    let store = Store::new(cached.clone());
    let a = addr(&sha512_sri(&data));
    // The miss holds with the remote's bytes in hand while the blob is deleted.
    remote.knobs.hold.close();
    let reader = {
        let (store, a) = (store.clone(), a.clone());
        tokio::spawn(async move { store.get(&a).await?.bytes().await })
    };
    remote.knobs.hold.held().await;
    assert!(store.delete(&a).await.expect("delete"), "was stored");
    remote.knobs.hold.release();
    let read = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the read finishes")
        .expect("task");
    // It began before the delete: serving what it read is fine, keeping it is not.
    if let Ok(bytes) = read {
        assert_eq!(&bytes[..], &data[..]);
    }
    assert!(remote.head(&key).await.expect("head").is_none());
    assert!(
        local.head(&key).await.expect("head").is_none(),
        "cached again"
    );
    assert_eq!(cached.stats().blobs, 0);
    assert!(!store.contains(&a).await.expect("contains"));
    let again = store.get(&a).await.err().map(|e| e.kind());
    assert_eq!(again, Some(ErrorKind::NotFound));
}

/// A miss whose only reader gives up still finishes its fill: the remote read is not left open
/// waiting for another reader, and the blob is cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_miss_still_finishes_its_fill() {
    let data = noise(20_000, 113);
    let (local, remote, cached) = cached_over_faulty(&data).await;
    let store = Store::new(cached.clone());
    remote.knobs.hold.close();
    let reader = {
        let (store, data) = (store.clone(), data.clone());
        tokio::spawn(async move { read_all(&store, &data).await })
    };
    remote.knobs.hold.held().await;
    reader.abort();
    assert!(reader.await.expect_err("aborted").is_cancelled());
    remote.knobs.hold.release();
    // Nobody reads the blob again: the fill must go on by itself.
    tokio::time::timeout(Duration::from_secs(30), async {
        while cached.stats().blobs == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the fill of a cancelled miss never finished");
    assert!(local.head(&key_of(&data)).await.expect("head").is_some());
    let gets = remote.knobs.gets.load(Ordering::SeqCst);
    assert_eq!(&read_all(&store, &data).await[..], &data[..]);
    assert_eq!(remote.knobs.gets.load(Ordering::SeqCst), gets, "a hit");
    assert_eq!(cached.stats().fetches, 1);
}

/// A fill that fails gives each reader the remote's own error, of its own kind (here the Config
/// error of rejected credentials, which names what to set), also the reader that joined the fill
/// another began; not a Backend error of the cache's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fill_gives_every_reader_the_remotes_own_error() {
    let data = noise(20_000, 114);
    let (_local, remote, cached) = cached_over_faulty(&data).await;
    let store = Store::new(cached.clone());
    remote.knobs.refuse_gets.store(true, Ordering::SeqCst);
    remote.knobs.delay_ms.store(300, Ordering::SeqCst);
    let a = addr(&sha512_sri(&data));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, a) = (store.clone(), a.clone());
            tokio::spawn(async move { store.get(&a).await.err() })
        })
        .collect();
    for reader in readers {
        let err = reader.await.expect("reader").expect("the fill failed");
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains("FAULTY_KEY"), "{err}");
    }
    assert_eq!(
        cached.stats().fetches,
        1,
        "the second reader joined the fill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_on_disk_is_adopted_on_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let remote = Faulty::new(MemoryBackend::new());
    let data = noise(40_000, 95);
    Store::new(remote.clone())
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("seed");
    let open_local = || {
        arc(FsBackend::open(
            dir.path().join("cache"),
            FsOptions {
                fsync: false,
                ..Default::default()
            },
        )
        .expect("fs"))
    };
    let first = Cached::new(open_local(), arc(remote.clone()), CachedOptions::default())
        .await
        .expect("cached");
    read_all(&Store::new(first), &data).await;
    let second = Cached::new(open_local(), arc(remote.clone()), CachedOptions::default())
        .await
        .expect("reopen");
    assert_eq!(second.stats().blobs, 1);
    remote.knobs.down.store(true, Ordering::SeqCst);
    assert_eq!(
        &read_all(&Store::new(second), &data).await[..],
        &data[..],
        "served from the local tier with the remote down"
    );
}

/// A replicated store of cached stores composes (wrappers nest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrappers_nest() {
    let r0 = MemoryBackend::new();
    let r1 = MemoryBackend::new();
    let c0 = Cached::new(
        arc(MemoryBackend::new()),
        arc(r0.clone()),
        CachedOptions::default(),
    )
    .await
    .expect("cached");
    let rep = Replicated::new(vec![arc(c0), arc(r1.clone())], ReplicatedOptions::default())
        .expect("replicated");
    let store = Store::new(rep);
    let data = noise(12_345, 97);
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    assert_eq!(&read_all(&store, &data).await[..], &data[..]);
    assert_eq!(keys_of(&r0).await, keys_of(&r1).await);
}

/// An fs store (fsync off) in `dir/name`.
fn fs_in(dir: &std::path::Path, name: &str) -> FsBackend {
    FsBackend::open(
        dir.join(name),
        FsOptions {
            fsync: false,
            ..Default::default()
        },
    )
    .expect("open fs")
}

/// Read-repair on real filesystem replicas: the corrupt file is quarantined and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_repair_on_fs_replicas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (fs_in(dir.path(), "a"), fs_in(dir.path(), "b"));
    let store = Store::new(
        Replicated::new(
            vec![arc(a.clone()), arc(b.clone())],
            ReplicatedOptions::default(),
        )
        .expect("replicated"),
    );
    let data = noise(300_000, 120);
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    let path = a.blob_path(&key_of(&data));
    let mut perms = std::fs::metadata(&path).expect("blob").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).expect("chmod");
    std::fs::write(&path, noise(300_000, 121)).expect("plant");
    assert_eq!(&read_all(&store, &data).await[..], &data[..]);
    assert_eq!(std::fs::read(&path).expect("repaired file"), data);
    let report = Store::new(a)
        .fsck(&tarvault::FsckOptions::default())
        .await
        .expect("fsck");
    assert!(report.is_clean() && report.ok == 1, "{report:?}");
}

/// A blob over the wrappers' in-memory limit is held in a temporary file while it is checked,
/// and everything else behaves as for a small one: a corrupt replica is skipped and repaired,
/// ranges are cut from the held copy, a cache miss fills the local tier and the next read hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_over_the_memory_limit_are_held_on_disk_and_still_verified() {
    use tarvault::backend::compose::verify::{fetch_verified, Fetched, Held, Read, MEMORY_MAX};
    let data = noise(MEMORY_MAX as usize + 3 * 1024 * 1024 + 17, 77);
    let key = key_of(&data);

    // Replicated: the first replica's copy is corrupt.
    let (mems, faulty) = memory_replicas(3);
    let rep = replicated(
        &faulty,
        ReplicatedOptions {
            write_quorum: Some(3),
            ..ReplicatedOptions::default()
        },
    );
    let store = Store::new(rep.clone());
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    let mut bad = data.clone();
    bad[MEMORY_MAX as usize + 5] ^= 0x40;
    assert!(mems[0].corrupt_for_test(&key, Bytes::from(bad)));
    match fetch_verified(&mems[0], &key, Read::Served)
        .await
        .expect("fetch")
    {
        Fetched::Bad(Held::File { len, .. }, found) => {
            assert_eq!(len, data.len() as u64);
            assert!(found.starts_with("sha512-"), "{found}");
        }
        other => panic!("expected a bad copy held on disk, got {other:?}"),
    }
    match fetch_verified(&mems[1], &key, Read::Served)
        .await
        .expect("fetch")
    {
        Fetched::Good(held @ Held::File { .. }) => assert_eq!(held.len(), data.len() as u64),
        other => panic!("expected a good copy held on disk, got {other:?}"),
    }
    assert_eq!(&read_all(&store, &data).await[..], &data[..]);
    // Read-repair wrote the good copy back from the file.
    assert_eq!(
        &read_all(&Store::new(mems[0].clone()), &data).await[..],
        &data[..]
    );
    // A range across the file's read chunks.
    let range = (MEMORY_MAX - 100)..(MEMORY_MAX + 2 * 1024 * 1024 + 1);
    let got = rep
        .get(&key, Some(range.clone()))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.size, data.len() as u64);
    let part: Vec<Bytes> = got.stream.try_collect().await.expect("range");
    assert_eq!(
        part.concat(),
        &data[range.start as usize..range.end as usize]
    );

    // Cached: a miss fills the local tier from the held file; the next read is a hit.
    let (local, cached) = cached_over_memory(&data).await;
    let store = Store::new(cached.clone());
    assert_eq!(&read_all(&store, &data).await[..], &data[..]);
    assert_eq!(&read_all(&store, &data).await[..], &data[..]);
    let s = cached.stats();
    assert_eq!((s.fetches, s.hits), (1, 1), "{s:?}");
    assert_eq!(&read_all(&Store::new(local), &data).await[..], &data[..]);
}

/// A member that streams more than the size it claimed is cut off just past that size, whether
/// the copy is held in memory or spooled to a file, and the copy is reported corrupt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_streaming_past_its_claimed_size_is_cut_off() {
    use tarvault::backend::compose::verify::MEMORY_MAX;
    const MIB: u64 = 1 << 20;
    let data = noise(100, 114);
    for claimed in [10, MEMORY_MAX + MIB / 2] {
        let liar = Faulty::new(MemoryBackend::new());
        liar.knobs.lie_size.store(claimed, Ordering::SeqCst);
        liar.knobs.lie_chunks.store(64, Ordering::SeqCst);
        let store = Store::new(replicated(
            std::slice::from_ref(&liar),
            ReplicatedOptions::default(),
        ));
        let err = store
            .get(&addr(&sha512_sri(&data)))
            .await
            .expect("opens")
            .bytes()
            .await
            .expect_err("not the blob");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        let pulled = liar.knobs.pulled.load(Ordering::SeqCst);
        assert!(
            pulled <= claimed + MIB,
            "{pulled} bytes read for a blob claimed to be {claimed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_counts_local_tier_errors_and_reads_the_remote() {
    let data = Bytes::from(noise(40_000, 11));
    let remote = MemoryBackend::new();
    Store::new(remote.clone())
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("seed remote");
    let local = Faulty::new(MemoryBackend::new());
    let cached = Cached::new(
        arc(local.clone()),
        arc(remote),
        CachedOptions { capacity: 10 << 20 },
    )
    .await
    .expect("cached");
    let store = Store::new(cached.clone());
    // Filled on the first read, then the local tier breaks: reads, heads and alias lookups go to
    // the remote, and every local failure is counted.
    assert_eq!(read_all(&store, &data).await, data);
    assert_eq!(cached.stats().local_errors, 0);
    local.knobs.down.store(true, Ordering::SeqCst);
    assert_eq!(read_all(&store, &data).await, data);
    let after_read = cached.stats().local_errors;
    assert!(after_read >= 1, "the failed local read is counted");
    let key = key_of(&data);
    assert!(cached.head(&key).await.expect("head").is_some());
    let by_sha1 = Hash::from_hex(Algorithm::Sha1, &common::sha1_hex(&data)).expect("sha1");
    assert_eq!(
        cached.resolve_alias(&by_sha1).await.expect("alias"),
        Some(key)
    );
    let s = cached.stats();
    assert_eq!(s.local_errors, after_read + 2, "{s:?}");
}

/// A backend that fails part-way through fsck's scan, while the index rebuild waits for what the
/// scan finds: fsck returns the error (it used to wait forever for a scan that had given up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_whose_scan_fails_returns_the_error() {
    let faulty = Faulty::new(MemoryBackend::new());
    let store = Store::new(faulty.clone());
    for i in 0..40 {
        store
            .put_bytes(noise(3000, 7000 + i), &PutOptions::default())
            .await
            .expect("put");
    }
    faulty.knobs.gets.store(0, Ordering::SeqCst);
    faulty.knobs.fail_gets_from.store(10, Ordering::SeqCst);
    let options = tarvault::FsckOptions::default();
    let err = tokio::time::timeout(Duration::from_secs(30), store.fsck(&options))
        .await
        .expect("fsck must end when its scan fails, not wait for the index rebuild")
        .expect_err("the scan failed");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(err.to_string().contains("went down mid-scan"), "{err}");
}

/// A replicated store answers at once (`size_now`, `exists_now`) from its first replica when that
/// one holds the blob and can tell with a `stat`, as its `head` would answer; in every other case
/// it claims no answer, and the caller's `head` asks the replicas in order. A throttled store
/// passes its backend's answers on: they read nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_answers_come_from_the_first_local_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second) = (fs_in(dir.path(), "first"), fs_in(dir.path(), "second"));
    let rep = Replicated::new(
        vec![arc(first.clone()), arc(second.clone())],
        ReplicatedOptions::default(),
    )
    .expect("replicated");
    assert!(rep.verifies_reads_whole().is_some());
    assert!(first.verifies_reads_whole().is_none());
    let data = noise(50_000, 91);
    let key = key_of(&data);
    let size = data.len() as u64;
    // Not stored anywhere yet: no immediate answer.
    assert!(rep.exists_now(&key).is_none());
    assert!(rep.size_now(&key).is_none());
    // Only in the second replica: the first says no, so nothing is claimed (its head would go on).
    Store::new(second.clone())
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put into the second replica");
    assert!(rep.exists_now(&key).is_none());
    assert!(rep.size_now(&key).is_none());
    // In the first: its answer.
    Store::new(first.clone())
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put into the first replica");
    assert_eq!(rep.exists_now(&key).map(|r| r.ok()), Some(Some(true)));
    assert_eq!(rep.size_now(&key).map(|r| r.ok()), Some(Some(Some(size))));
    let throttled = Throttled::new(arc(rep.clone()), Rate::Bytes(1e6));
    assert!(throttled.verifies_reads_whole().is_some());
    assert_eq!(
        throttled.size_now(&key).map(|r| r.ok()),
        Some(Some(Some(size)))
    );
    // The first copy cut short: its size disagrees with its record, and instead of an error the
    // caller is sent to `head`, which a read then serves from the second replica.
    let path = common::writable_blob(&first, &key);
    std::fs::write(&path, &data[..1000]).expect("cut the first copy short");
    assert!(rep.size_now(&key).is_none());
    assert_eq!(
        common::read_verified(&Store::new(rep.clone()), &addr(&sha512_sri(&data))).await[..],
        data[..]
    );
}

/// A copy read through a cache tier is checked against the fs tier's trusted record (its blake3,
/// which hashes several times faster than sha512) and handed out with that record, so that the
/// store checks the bytes it serves against the same blake3 and does not hash sha512 again; a
/// copy damaged in the tier still fails that check, is dropped and is read from the remote again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_tier_hit_is_checked_against_its_record_and_hands_it_on() {
    use tarvault::backend::compose::verify::{fetch_checked, fetch_verified, Fetched, Read};
    let dir = tempfile::tempdir().expect("tempdir");
    let (tier, remote) = (fs_in(dir.path(), "tier"), fs_in(dir.path(), "remote"));
    let data = noise(300_000, 77);
    let key = key_of(&data);
    Store::new(remote.clone())
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    let cached = Cached::new(
        arc(tier.clone()),
        arc(remote.clone()),
        CachedOptions { capacity: 1 << 30 },
    )
    .await
    .expect("cache");
    // The fill's copy comes with the digests computed while verifying it; the hit's with the
    // tier's record.
    for round in ["fill", "hit"] {
        let got = cached.get(&key, None).await.expect("get").expect("stored");
        assert_eq!(got.digests, Some(common::digests_of(&data)), "{round}");
        // Held in memory and checked: the store need not hash these bytes again.
        assert!(got.verified_whole.is_some(), "{round}");
    }
    assert_eq!(cached.stats().hits, 1);
    match fetch_checked(&tier, &key, Read::Served)
        .await
        .expect("fetch")
    {
        (Fetched::Good(_), Some(record)) => assert_eq!(record, common::digests_of(&data)),
        other => panic!("a good copy and its record: {other:?}"),
    }
    // A pass's read is checked against the key and vouches for no record.
    assert!(matches!(
        fetch_checked(&tier, &key, Read::OfRecord)
            .await
            .expect("fetch"),
        (Fetched::Good(_), None)
    ));
    // A record from a backend whose records are not trusted (a remote server's): the copy is
    // checked against the key, and no record is vouched for.
    let untrusted = Faulty::new(MemoryBackend::new());
    Store::new(untrusted.clone())
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    assert!(matches!(
        fetch_checked(&untrusted, &key, Read::Served)
            .await
            .expect("fetch"),
        (Fetched::Good(_), Some(_))
    ));
    untrusted.knobs.distrusted.store(true, Ordering::SeqCst);
    assert!(matches!(
        fetch_checked(&untrusted, &key, Read::Served)
            .await
            .expect("fetch"),
        (Fetched::Good(_), None)
    ));
    // The tier's copy damaged: the record's blake3 no longer matches, the copy is dropped, and
    // the remote's serves the read.
    common::corrupt_blob(&tier, &key, false);
    assert!(matches!(
        fetch_checked(&tier, &key, Read::Served)
            .await
            .expect("fetch"),
        (Fetched::Bad(..), None)
    ));
    assert!(matches!(
        fetch_verified(&tier, &key, Read::OfRecord)
            .await
            .expect("fetch"),
        Fetched::Bad(..)
    ));
    let read = common::read_verified(&Store::new(cached.clone()), &addr(&sha512_sri(&data))).await;
    assert_eq!(read[..], data[..]);
    assert_eq!(
        cached.stats().fetches,
        2,
        "the damaged copy was read again from the remote"
    );
    // A bad copy from the remote is handed on unvouched, and the store finds it corrupt.
    assert!(cached.evict(&key).await.expect("evict"));
    common::corrupt_blob(&remote, &key, true);
    let got = cached.get(&key, None).await.expect("get").expect("stored");
    assert!(got.verified_whole.is_none() && got.digests.is_none());
    let err = Store::new(cached.clone())
        .get(&addr(&sha512_sri(&data)))
        .await
        .expect("opened")
        .bytes()
        .await
        .expect_err("corrupt");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
}

/// A member's stream is not polled after its end (`stream::unfold` panics then): an empty blob,
/// whose first poll already ends it, and a short one, read through replicas and a cache tier.
#[tokio::test]
async fn a_member_stream_is_not_polled_after_its_end() {
    let member = Faulty::new(MemoryBackend::new());
    member.knobs.unfused.store(true, Ordering::SeqCst);
    let replicated = Replicated::new(vec![arc(member.clone())], ReplicatedOptions::default())
        .expect("replicated");
    let cached = Cached::new(
        arc(MemoryBackend::new()),
        arc(member.clone()),
        CachedOptions { capacity: 1 << 20 },
    )
    .await
    .expect("cached");
    for data in [Bytes::new(), Bytes::from_static(b"abc")] {
        for wrapper in [arc(replicated.clone()), arc(cached.clone())] {
            let store = Store::from_arc(wrapper.clone());
            let put = store
                .put_bytes(data.clone(), &PutOptions::default())
                .await
                .expect("put");
            let address = put.digests.integrity();
            let read = tokio::spawn(async move { store.get(&address).await?.bytes().await });
            match read.await {
                Ok(got) => assert_eq!(
                    got.expect("read").len(),
                    data.len(),
                    "{}",
                    wrapper.describe()
                ),
                Err(e) => panic!("{}: the read panicked: {e}", wrapper.describe()),
            }
        }
    }
}

/// A source whose listing gives each key twice (an S3 listing while the bucket is written to, a
/// page fetched again after a retry): copy copies and counts each blob once.
#[tokio::test]
async fn copy_takes_a_key_listed_twice_once() {
    use tarvault::ops::copy::{copy, CopyOptions};
    let source = Faulty::new(MemoryBackend::new());
    let from = Store::new(source.clone());
    for (i, len) in [1000, 2000, 3000].into_iter().enumerate() {
        from.put_bytes(noise(len, i as u64), &PutOptions::default())
            .await
            .expect("put");
    }
    source.knobs.repeat_listing.store(true, Ordering::SeqCst);
    assert_eq!(keys_of(&source).await.len(), 6, "each key listed twice");
    let to = Store::new(MemoryBackend::new());
    let mut events = 0;
    let report = copy(&from, &to, &CopyOptions::default(), |_| events += 1)
        .await
        .expect("copy");
    let counts = (report.listed, report.copied, report.skipped, report.bytes);
    assert_eq!(counts, (3, 3, 0, 6000), "{report:?}");
    assert_eq!(events, 3);
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(keys_of(to.backend().as_ref()).await.len(), 3);
}
