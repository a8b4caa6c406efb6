//! A cache tier (`Cached`) over a filesystem local tier keeps its record of what it holds in the
//! local tier's `index/cache.sqlite`: opening it lists nothing, an old cache without the record is
//! taken in once, and processes sharing the local tier share one capacity (tested with a real
//! second process, the CLI).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use tarvault::backend::compose::{Cached, CachedOptions, Replicated, ReplicatedOptions};
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::backend::{
    AgedDelete, AliasRebuild, Backend, BlobKey, BlobStat, BlobWriter, GetResult, PutHint,
    RebuildOptions,
};
use tarvault::{FsckOptions, PutOptions, Store};

use common::{addr, key_of, noise, sha512_sri};

const SIZE: usize = 20_000;

fn fs(root: &Path) -> FsBackend {
    FsBackend::open(
        root,
        FsOptions {
            fsync: false,
            ..Default::default()
        },
    )
    .expect("open fs store")
}

async fn cached(dir: &Path, capacity: u64) -> Cached {
    Cached::new(
        Arc::new(fs(&dir.join("cache"))),
        Arc::new(fs(&dir.join("remote"))),
        CachedOptions { capacity },
    )
    .await
    .expect("open cache")
}

/// `n` blobs of [`SIZE`] bytes, stored in `root`.
async fn seed(root: &Path, n: u64, salt: u64) -> Vec<Vec<u8>> {
    let store = Store::new(fs(root));
    let mut blobs = Vec::new();
    for i in 0..n {
        let data = noise(SIZE, salt * 1000 + i);
        store
            .put_bytes(data.clone(), &PutOptions::default())
            .await
            .expect("seed");
        blobs.push(data);
    }
    blobs
}

async fn read(cache: &Cached, data: &[u8]) {
    let got = Store::new(cache.clone())
        .get(&addr(&sha512_sri(data)))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("verified");
    assert_eq!(&got[..], data);
}

/// `n` blobs put straight into the local tier at `root`, blob `i` modified `i` hours into the
/// epoch's second day (blob 0 the oldest), as an earlier run would have left them.
async fn left_by_an_earlier_run(root: &Path, n: u64, salt: u64) -> (FsBackend, Vec<Vec<u8>>) {
    let blobs = seed(root, n, salt).await;
    let backend = fs(root);
    for (i, b) in (0u64..).zip(&blobs) {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 + i * 3600);
        std::fs::File::options()
            .write(true)
            .open(backend.blob_path(&key_of(b)))
            .and_then(|f| f.set_modified(t))
            .expect("set mtime");
    }
    (backend, blobs)
}

/// The `--store` of a cache with the same local tier and remote as [`cached`].
fn config(dir: &Path, capacity: u64) -> String {
    serde_json::json!({
        "cached": {
            "local": dir.join("cache").display().to_string(),
            "remote": dir.join("remote").display().to_string(),
            "capacity": capacity,
        }
    })
    .to_string()
}

/// Runs the CLI in another process with `args`, through a cache with the same local tier and
/// remote as [`cached`], whatever its exit status.
fn run(dir: &Path, capacity: u64, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tarvault"))
        .arg("--store")
        .arg(config(dir, capacity))
        .args(args)
        .output()
        .expect("run the CLI")
}

/// [`run`], which must succeed; its standard output.
fn cli(dir: &Path, capacity: u64, args: &[&str]) -> Vec<u8> {
    let out = run(dir, capacity, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `tarvault get` of `data` in another process.
fn cli_get(dir: &Path, capacity: u64, data: &[u8]) {
    assert_eq!(cli(dir, capacity, &["get", &sha512_sri(data)]), data);
}

/// The bytes of the blobs the local tier holds, by listing it.
async fn on_disk(dir: &Path) -> u64 {
    let local: Arc<dyn Backend> = Arc::new(fs(&dir.join("cache")));
    let stats: Vec<_> = local.list_stat().try_collect().await.expect("list");
    stats.iter().map(|s| s.size).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_lists_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = seed(&dir.path().join("remote"), 3, 1).await;
    let first = cached(dir.path(), 1 << 30).await;
    for b in &blobs {
        read(&first, b).await;
    }
    assert_eq!(first.stats().blobs, 3);
    drop(first);
    // A blob the cache did not put in its local tier: a listing would count it.
    seed(&dir.path().join("cache"), 1, 2).await;
    let second = cached(dir.path(), 1 << 30).await;
    let stats = second.stats();
    assert_eq!((stats.blobs, stats.bytes), (3, 3 * SIZE as u64));
    assert!(dir.path().join("cache/index/cache.sqlite").exists());
}

/// A local tier filled by a release without the record (no `cache.sqlite`) is taken in from one
/// listing, oldest first by modification time, and evicted to the capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_cache_is_taken_in_once_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("cache");
    let (backend, blobs) = left_by_an_earlier_run(&local, 4, 3).await;
    assert!(!local.join("index/cache.sqlite").exists());
    let cache = cached(dir.path(), 2 * SIZE as u64 + 10).await;
    let stats = cache.stats();
    assert_eq!((stats.blobs, stats.evictions), (2, 2));
    for (i, b) in blobs.iter().enumerate() {
        let held = backend.head(&key_of(b)).await.expect("head").is_some();
        assert_eq!(held, i >= 2, "blob {i}: only the two newest stay");
    }
    drop(cache);
    seed(&local, 1, 4).await;
    let again = cached(dir.path(), 1 << 30).await;
    assert_eq!(again.stats().blobs, 2, "taken in once, not listed again");
}

/// This process and the CLI fill the same local tier: between them it stays within the one
/// capacity. (With a record per process, each evicted only what it had filled, and the tier
/// ended 40% over.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_local_tier_share_its_capacity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = seed(&dir.path().join("remote"), 8, 5).await;
    let capacity = 5 * SIZE as u64;
    let mine = cached(dir.path(), capacity).await;
    for b in &blobs[..4] {
        read(&mine, b).await;
    }
    for b in &blobs[4..6] {
        cli_get(dir.path(), capacity, b);
    }
    for b in &blobs[6..] {
        read(&mine, b).await;
    }
    let held = on_disk(dir.path()).await;
    assert!(held <= capacity, "{held} bytes held, capacity {capacity}");
    assert_eq!(
        mine.stats().bytes,
        held,
        "the shared record matches the disk"
    );
    // The newest two (this process's) and the CLI's two are among what stayed.
    let local = fs(&dir.path().join("cache"));
    for (i, b) in blobs.iter().enumerate().skip(4) {
        assert!(
            local.head(&key_of(b)).await.expect("head").is_some(),
            "blob {i} was evicted before older ones"
        );
    }
}

/// A read in another process (the CLI's `get`, a hit) counts as a use here: the blob it read is
/// not the one evicted next, though it was the oldest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_in_another_process_is_a_use_here() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("cache");
    let (backend, old) = left_by_an_earlier_run(&local, 3, 6).await;
    let new = seed(&dir.path().join("remote"), 1, 7).await;
    let capacity = 3 * SIZE as u64;
    let mine = cached(dir.path(), capacity).await;
    assert_eq!(mine.stats().blobs, 3);
    cli_get(dir.path(), capacity, &old[0]);
    read(&mine, &new[0]).await;
    let held = |b: &Vec<u8>| {
        let backend = backend.clone();
        let key = key_of(b);
        async move { backend.head(&key).await.expect("head").is_some() }
    };
    assert!(held(&old[0]).await, "the blob the CLI read was evicted");
    assert!(!held(&old[1]).await, "the least recently used blob stayed");
    assert!(held(&new[0]).await);
}

/// A remote whose reads, once begun, wait for [`Gate::open`]: a fill's remote read can be held
/// after it started, while another process deletes the blob.
#[derive(Debug, Clone)]
struct Gated {
    inner: FsBackend,
    reached: Arc<tokio::sync::Notify>,
    open: Arc<tokio::sync::Semaphore>,
}

#[async_trait::async_trait]
impl Backend for Gated {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn begin_put(&self, hint: &PutHint) -> tarvault::Result<Box<dyn BlobWriter>> {
        self.inner.begin_put(hint).await
    }
    async fn get(
        &self,
        key: &BlobKey,
        range: Option<std::ops::Range<u64>>,
    ) -> tarvault::Result<Option<GetResult>> {
        let got = self.inner.get(key, range).await;
        self.reached.notify_one();
        let _pass = self.open.acquire().await.expect("gate");
        got
    }
    async fn head(&self, key: &BlobKey) -> tarvault::Result<Option<BlobStat>> {
        self.inner.head(key).await
    }
    async fn delete(&self, key: &BlobKey) -> tarvault::Result<bool> {
        self.inner.delete(key).await
    }
    fn list(&self) -> futures::stream::BoxStream<'static, tarvault::Result<BlobKey>> {
        self.inner.list()
    }
    async fn resolve_alias(&self, hash: &tarvault::Hash) -> tarvault::Result<Option<BlobKey>> {
        self.inner.resolve_alias(hash).await
    }
    async fn rebuild_aliases(
        &self,
        found: futures::stream::BoxStream<'_, tarvault::Digests>,
        options: &RebuildOptions,
    ) -> tarvault::Result<AliasRebuild> {
        self.inner.rebuild_aliases(found, options).await
    }
}

/// Another process (the CLI's `rm`, through a cache over the same local tier and remote) deletes
/// a blob while a fill of it here has read the remote and not yet stored its copy: the fill
/// serves what it read (the read came first) but keeps no copy, so the deleted blob is not served
/// again. (Before the shared record noted deletes, the copy stayed and was served from then on.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_in_another_process_overtakes_a_fill_here() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = seed(&dir.path().join("remote"), 1, 8).await;
    let gated = Gated {
        inner: fs(&dir.path().join("remote")),
        reached: Arc::new(tokio::sync::Notify::new()),
        open: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    let cache = Cached::new(
        Arc::new(fs(&dir.path().join("cache"))),
        Arc::new(gated.clone()),
        CachedOptions { capacity: 1 << 30 },
    )
    .await
    .expect("open cache");
    let reader = {
        let cache = cache.clone();
        let data = blobs[0].clone();
        tokio::spawn(async move { read(&cache, &data).await })
    };
    gated.reached.notified().await;
    cli(dir.path(), 1 << 30, &["rm", &sha512_sri(&blobs[0])]);
    gated.open.add_permits(1000);
    reader
        .await
        .expect("the read that began before the delete is served");
    let local = fs(&dir.path().join("cache"));
    assert!(
        local
            .head(&key_of(&blobs[0]))
            .await
            .expect("head")
            .is_none(),
        "the fill kept a copy of a blob deleted meanwhile"
    );
    assert_eq!(cache.stats().blobs, 0);
    let again = Store::new(cache.clone())
        .get(&addr(&sha512_sri(&blobs[0])))
        .await;
    assert!(again.is_err(), "the deleted blob is served again");
}

/// gc through a cached store whose remote lost the blob to another process (an `rm` on the
/// remote alone, another host's gc): the remote says it is gone, and the tier's copy goes with it,
/// as it does when this gc deletes the blob itself. (It was kept, and served on.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_another_process_deleted_leaves_the_tier_with_gc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = seed(&dir.path().join("remote"), 1, 9).await;
    let cache = cached(dir.path(), 1 << 30).await;
    read(&cache, &blobs[0]).await;
    let key = key_of(&blobs[0]);
    let local = fs(&dir.path().join("cache"));
    assert!(local.head(&key).await.expect("head").is_some(), "filled");
    assert!(fs(&dir.path().join("remote"))
        .delete(&key)
        .await
        .expect("rm"));
    let later = SystemTime::now() + Duration::from_secs(3600);
    let done = cache
        .delete_unless_written_since(&key, later)
        .await
        .expect("gc's delete");
    assert_eq!(done, AgedDelete::Gone);
    assert!(
        local.head(&key).await.expect("head").is_none(),
        "the tier kept a copy of a blob gone from the remote"
    );
    let again = Store::new(cache.clone())
        .get(&addr(&sha512_sri(&blobs[0])))
        .await;
    assert!(again.is_err(), "the deleted blob is served from the tier");
}

/// A copy in the local tier whose record was lost (the tier's index row gone, the file left) is
/// not known verified, so `head` takes the remote's size: `size_now`, the server's fast path for a
/// `HEAD`, gives the same answer or none, never the copy's own size. (It named the size of a tier
/// copy cut short, while `head` named the blob's.) Deleted upstream, both say "not stored", and
/// so does `exists_now`, the fast path of a `GET`'s revalidation (it said yes from the tier's
/// `stat` of the copy, so a 304 answered for a blob the `GET` would not find).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_copy_without_its_record_is_sized_as_head_sizes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = seed(&dir.path().join("remote"), 1, 9).await;
    let (data, key) = (&blobs[0], key_of(&blobs[0]));
    read(&cached(dir.path(), 1 << 30).await, data).await;
    let tier = fs(&dir.path().join("cache"));
    assert!(tier.head(&key).await.expect("head").is_some(), "filled");
    let index = rusqlite::Connection::open(dir.path().join("cache/index/blobs.sqlite"));
    let lost = index
        .and_then(|db| db.execute("DELETE FROM blobs WHERE sha512 = ?1", [&key.as_bytes()[..]]))
        .expect("drop the tier's record");
    assert_eq!(lost, 1);
    std::fs::write(common::writable_blob(&tier, &key), &data[..1000]).expect("cut the copy short");
    drop(tier);

    let cache = cached(dir.path(), 1 << 30).await;
    let head = cache.head(&key).await.expect("head").map(|st| st.size);
    assert_eq!(head, Some(SIZE as u64), "head takes the remote's size");
    if let Some(now) = cache.size_now(&key) {
        assert_eq!(now.expect("size_now"), head, "size_now disagrees with head");
    }
    if let Some(now) = cache.exists_now(&key) {
        assert!(now.expect("exists_now"), "exists_now disagrees with head");
    }
    // Gone from the remote: the copy without a record does not keep the blob alive.
    assert!(fs(&dir.path().join("remote"))
        .delete(&key)
        .await
        .expect("delete"));
    assert_eq!(
        cache.head(&key).await.expect("head").map(|st| st.size),
        None
    );
    if let Some(now) = cache.size_now(&key) {
        assert_eq!(
            now.expect("size_now"),
            None,
            "size_now of a blob the remote lost"
        );
    }
    if let Some(now) = cache.exists_now(&key) {
        assert!(
            !now.expect("exists_now"),
            "exists_now of a blob the remote lost"
        );
    }
}

/// fsck, scrub and copy through a cached store check the store of record's copies, not the
/// tier's, and leave the tier as it was: a pass over every blob neither reads it (a remote copy
/// gone bad is found though the tier holds a good one) nor fills it (what readers use stays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_over_a_cached_store_checks_the_remote_and_leaves_the_tier_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = seed(&dir.path().join("remote"), 6, 11).await;
    let capacity = 4 * SIZE as u64;
    let cache = cached(dir.path(), capacity).await;
    read(&cache, &blobs[0]).await;
    read(&cache, &blobs[1]).await;
    let held = 2 * SIZE as u64;
    assert_eq!(on_disk(dir.path()).await, held);
    let bad = key_of(&blobs[1]);
    common::corrupt_blob(&fs(&dir.path().join("remote")), &bad, false);

    let report = Store::new(cache.clone())
        .fsck(&FsckOptions::default())
        .await
        .expect("fsck");
    assert_eq!((report.checked, report.ok), (6, 5));
    let corrupt: Vec<_> = report.corrupt.iter().map(|c| c.address.clone()).collect();
    assert_eq!(
        corrupt,
        vec![bad.to_string()],
        "the remote's copy is checked"
    );
    assert_eq!(cache.stats().fetches, 2, "fsck filled the tier");
    assert_eq!(on_disk(dir.path()).await, held);

    // The same through the CLI, in other processes sharing the tier.
    for args in [&["fsck"][..], &["scrub", "--rate", "1GB/s"]] {
        let out = run(dir.path(), capacity, args);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {out:?}");
    }
    let target = dir.path().join("target");
    let copy = std::process::Command::new(env!("CARGO_BIN_EXE_tarvault"))
        .args(["copy", "--from", &config(dir.path(), capacity), "--to"])
        .arg(&target)
        .output()
        .expect("run the CLI");
    assert_eq!(
        copy.status.code(),
        Some(1),
        "the corrupt blob fails: {copy:?}"
    );
    let copied: Vec<_> = fs(&target).list().try_collect().await.expect("list");
    assert_eq!(copied.len(), 5);
    assert!(!copied.contains(&bad), "the remote's bad copy was copied");
    assert_eq!(on_disk(dir.path()).await, held, "a pass filled the tier");
}

/// A replicated store whose first replica is a cached store: fsck reads that replica's store of
/// record, not its tier, and so does a repair and the check before a quarantine. A remote copy
/// gone bad behind a good tier copy is found and replaced, one with no good copy left anywhere is
/// quarantined, and no pass fills the tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_over_a_replicated_store_reads_a_cached_replica_around_its_tier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (remote_dir, other_dir) = (dir.path().join("remote"), dir.path().join("other"));
    let blobs = seed(&remote_dir, 6, 12).await;
    seed(&other_dir, 6, 12).await;
    let (remote, other) = (fs(&remote_dir), fs(&other_dir));
    let capacity = 4 * SIZE as u64;
    let cache = cached(dir.path(), capacity).await;
    read(&cache, &blobs[0]).await;
    read(&cache, &blobs[1]).await;
    let held = 2 * SIZE as u64;
    let behind_the_tier = key_of(&blobs[1]);
    common::corrupt_blob(&remote, &behind_the_tier, false);
    let replicated = Replicated::new(
        vec![Arc::new(cache.clone()), Arc::new(other.clone())],
        ReplicatedOptions {
            read_repair: false,
            ..Default::default()
        },
    )
    .expect("replicated");
    let store = Store::new(replicated.clone());

    // Every blob has a good copy (the other replica's); nothing was read into the tier.
    let report = store.fsck(&FsckOptions::default()).await.expect("fsck");
    assert_eq!((report.checked, report.ok), (6, 6), "{report:?}");
    assert_eq!(cache.stats().fetches, 2, "fsck filled the tier");
    assert_eq!(on_disk(dir.path()).await, held);

    // A verifying repair finds the remote's bad copy behind the tier's good one.
    let repaired = replicated.repair(true, 2).await.expect("repair");
    assert_eq!(
        (repaired.blobs, repaired.replaced, repaired.copied),
        (6, 1, 0),
        "{repaired:?}"
    );
    let replaced =
        common::read_verified(&Store::new(remote.clone()), &addr(&sha512_sri(&blobs[1]))).await;
    assert_eq!(
        &replaced[..],
        &blobs[1][..],
        "the remote's copy was replaced"
    );
    assert_eq!(cache.stats().fetches, 2, "repair filled the tier");

    // Both copies of record of a cached blob go bad: fsck finds it corrupt although the tier's
    // copy is good, and the quarantine takes every bad copy out, the tier's too.
    let lost = key_of(&blobs[0]);
    common::corrupt_blob(&remote, &lost, true);
    common::corrupt_blob(&other, &lost, true);
    let options = FsckOptions {
        quarantine: true,
        ..Default::default()
    };
    let report = store.fsck(&options).await.expect("fsck");
    let corrupt: Vec<_> = report.corrupt.iter().map(|c| c.address.clone()).collect();
    assert_eq!(corrupt, vec![lost.to_string()], "{report:?}");
    for (name, backend) in [("remote", &remote), ("other", &other)] {
        assert!(
            backend.head(&lost).await.expect("head").is_none(),
            "{name} still serves its bad copy"
        );
    }
    let tier = fs(&dir.path().join("cache"));
    assert!(
        tier.head(&lost).await.expect("head").is_none(),
        "the tier's copy was left"
    );
    assert_eq!(cache.stats().fetches, 2, "fsck filled the tier");
}
