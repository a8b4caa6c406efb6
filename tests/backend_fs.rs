//! The conformance suite on the filesystem backend, with fsync on and off.

mod common;
mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::backend::{Backend, BlobKey};

struct Fs {
    backend: FsBackend,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl conformance::Fixture for Fs {
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::new(self.backend.clone())
    }
    async fn plant(&self, key: &BlobKey, bytes: Bytes) {
        let path = self.backend.blob_path(key);
        let mut perms = std::fs::metadata(&path).expect("blob exists").permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&path, perms).expect("chmod");
        std::fs::write(&path, &bytes).expect("plant");
    }
    fn second(&self) -> Option<Arc<dyn Backend>> {
        let opts = FsOptions {
            fsync: false,
            ..Default::default()
        };
        Some(Arc::new(
            FsBackend::open(self.backend.root(), opts).expect("second instance"),
        ))
    }
}

fn make_with(fsync: bool) -> Fs {
    make_opts(FsOptions {
        fsync,
        ..Default::default()
    })
}

fn make_opts(options: FsOptions) -> Fs {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = FsBackend::open(dir.path().join("store"), options).expect("open");
    Fs { backend, _dir: dir }
}

mod fsync_on {
    use super::*;
    async fn make() -> Fs {
        make_with(true)
    }
    conformance::suite!(make);
}

/// Batches made durable by each blob's ordered fsyncs instead of `syncfs`.
mod per_file_flush {
    use super::*;
    async fn make() -> Fs {
        make_opts(FsOptions {
            batch_flush: tarvault::backend::fs::BatchFlush::PerFile,
            ..Default::default()
        })
    }
    conformance::suite!(make);
}

mod fsync_off {
    use super::*;
    async fn make() -> Fs {
        make_with(false)
    }
    conformance::suite!(make);
}

/// A long-running reader (say `tarvault serve`) sees the records of blobs another instance commits
/// as soon as each put returns (so their reads verify with the recorded blake3 instead of
/// re-hashing sha512), with no delay and nothing reloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_committed_by_another_process_are_found() {
    use tarvault::{PutOptions, Store};
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let opts = || FsOptions {
        fsync: false,
        ..Default::default()
    };
    let reader = FsBackend::open(root.clone(), opts()).expect("open");
    let writer = Store::new(FsBackend::open(root, opts()).expect("open"));

    let first = writer
        .put_bytes(Bytes::from_static(b"first blob"), &PutOptions::default())
        .await
        .expect("put");
    let got = reader
        .get(&BlobKey::new(first.digests.sha512), None)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.digests, Some(first.digests), "seen at once");

    let second = writer
        .put_bytes(Bytes::from_static(b"second blob"), &PutOptions::default())
        .await
        .expect("put");
    let got = reader
        .get(&BlobKey::new(second.digests.sha512), None)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        got.digests,
        Some(second.digests),
        "a later record is seen at once too"
    );
}

/// A batch writes each blob as soon as it is hashed and publishes it with a no-clobber rename:
/// an empty blob, the same bytes twice in one batch, bytes already stored, a blob written in place
/// (≤ 64 KiB), one written through the blocking pool and one large enough to be hashed on threads
/// all come out stored once, readable by every digest, read-only, with no temp file left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_of_every_size_and_duplicates_leaves_no_temp_file() {
    use tarvault::{Integrity, PutOptions, Store};
    for fsync in [false, true] {
        let Fs { backend, _dir } = make_with(fsync);
        let store = Store::new(backend.clone());
        let noise = |seed: u64, len: usize| -> Vec<u8> {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        let before = noise(1, 30_000);
        store
            .put_bytes(before.clone(), &PutOptions::default())
            .await
            .expect("put before");
        let twice = noise(2, 20 * 1024);
        let items: Vec<Vec<u8>> = vec![
            Vec::new(),
            twice.clone(),
            twice,
            before,
            noise(3, 100 * 1024),
            noise(4, 5 * 1024 * 1024 + 17),
        ];
        let inputs: Vec<_> = items
            .iter()
            .map(|d| {
                let chunks: Vec<std::io::Result<Bytes>> = d
                    .chunks(64 * 1024)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect();
                (futures::stream::iter(chunks), PutOptions::default())
            })
            .collect();
        let results = store.put_batch(inputs).await;
        let stored: Vec<bool> = results
            .iter()
            .map(|r| r.as_ref().expect("batch item").stored)
            .collect();
        assert_eq!(
            stored,
            [true, true, false, false, true, true],
            "fsync {fsync}"
        );
        for (d, r) in items.iter().zip(&results) {
            let digests = &r.as_ref().expect("batch item").digests;
            for address in [digests.integrity().to_string(), digests.shasum()] {
                let address = Integrity::parse_address(&address).expect("address");
                let got = store.get(&address).await.expect("get").bytes().await;
                assert_eq!(&got.expect("verified")[..], &d[..]);
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let path = backend.blob_path(&BlobKey::new(digests.sha512));
                let mode = std::fs::metadata(&path).expect("blob").permissions().mode();
                assert_eq!(mode & 0o777, 0o444, "{}", path.display());
            }
        }
        let left: Vec<_> = std::fs::read_dir(backend.temp_dir())
            .expect("temp dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "temp files left: {left:?}");
    }
}

/// A caller that stops reading `put_stream`'s results part way: the blobs whose results it got are
/// stored and readable, no more inputs are taken, the uploads not yet committed leave no temp file,
/// and the store takes the next batch normally. Also `file_input`: files read as inputs, and a
/// missing one failing alone, in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_put_stream_keeps_what_it_returned_and_leaves_no_temp_file() {
    use futures::StreamExt;
    use tarvault::{file_input, ErrorKind, PutOptions, Store};
    let Fs { backend, _dir: dir } = make_with(false);
    let store = Store::new(backend.clone());
    let inputs_dir = dir.path().join("in");
    std::fs::create_dir(&inputs_dir).expect("input dir");
    let files: Vec<std::path::PathBuf> = (0..600u64)
        .map(|i| {
            let p = inputs_dir.join(format!("{i:04}"));
            std::fs::write(&p, common::noise(4096, 9000 + i)).expect("input");
            p
        })
        .collect();
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = taken.clone();
    // Inputs from the 100th on come only once the gate opens, after the caller has left.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let inputs = futures::stream::iter(files.clone())
        .enumerate()
        .then(move |(i, p)| {
            let held = held.clone();
            async move {
                if i >= 100 {
                    let _ = held.acquire().await;
                }
                p
            }
        })
        .map(move |p| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (file_input(p), PutOptions::default())
        });
    let mut results = store.put_stream(inputs);
    let mut got = Vec::new();
    while got.len() < 70 {
        got.push(results.next().await.expect("a result").expect("stored"));
    }
    drop(results);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    gate.add_permits(1000);
    for (out, file) in got.iter().zip(&files) {
        assert_eq!(
            out.digests.shasum(),
            common::sha1_hex(&std::fs::read(file).expect("input"))
        );
        let key = BlobKey::new(out.digests.sha512);
        assert!(backend.blob_path(&key).is_file(), "{}", file.display());
    }
    // The driver notices at its next result; uploads in flight are removed as they finish.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = std::fs::read_dir(backend.temp_dir())
            .expect("temp dir")
            .count();
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} temp files left after the stream was dropped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let taken = taken.load(std::sync::atomic::Ordering::SeqCst);
    // Those before the gate may or may not have been taken by then; none after it.
    assert!(
        (70..=100).contains(&taken),
        "{taken} inputs taken: the batch went on after the caller left"
    );

    let missing = inputs_dir.join("missing");
    let again = [files[0].clone(), missing, files[599].clone()]
        .map(|p| (file_input(p), PutOptions::default()));
    let results = store.put_batch(again.into()).await;
    assert!(!results[0].as_ref().expect("already stored").stored);
    let e = results[1].as_ref().expect_err("no such file");
    let report = e.report().to_string();
    assert_eq!(e.kind(), ErrorKind::Io, "{report}");
    assert!(report.contains("missing"), "{report}");
    assert!(results[2].as_ref().expect("stored").stored);
}

/// Sets its flag when dropped.
struct DropFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Dropping `put_stream`'s results while one input has sent 3 MiB and then stalls (an upload that
/// never ends): the result already returned stays stored, and the stalled input is dropped with
/// its upload's temp file instead of being read for ever by a task nobody waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_put_stream_lets_go_of_a_stalled_input() {
    use futures::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tarvault::{PutOptions, Store};
    type Input = std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<Bytes>> + Send>>;
    let Fs { backend, _dir } = make_with(false);
    let store = Store::new(backend.clone());
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let good = common::noise(10_000, 1);
    let stalled = futures::stream::iter([Ok(Bytes::from(common::noise(3 << 20, 2)))])
        .chain(futures::stream::pending())
        .map(move |chunk| {
            let _held = &flag;
            chunk
        });
    let inputs: Vec<(Input, PutOptions)> = vec![
        (common::chunked(&good, 1000).boxed(), PutOptions::default()),
        (stalled.boxed(), PutOptions::default()),
    ];
    let mut results = store.put_stream(futures::stream::iter(inputs));
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), results.next())
        .await
        .expect("the first result in time")
        .expect("a result")
        .expect("stored");
    assert_eq!(first.digests.shasum(), common::sha1_hex(&good));
    drop(results);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = std::fs::read_dir(backend.temp_dir())
            .expect("temp dir")
            .count();
        if left == 0 && dropped.load(Ordering::SeqCst) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after the results were dropped: {left} temp files left, stalled input dropped: {}",
            dropped.load(Ordering::SeqCst)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(backend.blob_path(&common::key_of(&good)).is_file());
}

/// Reads whose consumers stop taking chunks (slow downloads, an HTTP/2 connection's stalled
/// streams) hold no thread of the blocking pool: with a pool of two threads and four such reads
/// of an 8 MiB blob open, a fifth read still runs to its end. A reader parked until its consumer
/// took the next chunk held its thread for as long as the consumer stalled, and two of them
/// stopped every other read.
#[test]
fn stalled_reads_leave_the_blocking_pool_to_other_reads() {
    use futures::StreamExt;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let Fs { backend, _dir } = make_with(false);
    // Over the 8 MiB the fs reads in one piece: it streams, 1 MiB at a time.
    let data = Bytes::from(common::noise(16 << 20, 3));
    let key = common::key_of(&data);
    let reads = async {
        let store = tarvault::Store::new(backend.clone());
        store
            .put_bytes(data.clone(), &tarvault::PutOptions::default())
            .await
            .expect("put");
        let mut stalled = Vec::new();
        for _ in 0..4 {
            let mut got = backend.get(&key, None).await.expect("get").expect("found");
            got.stream.next().await.expect("a chunk").expect("read");
            stalled.push(got);
        }
        // Time for a reader that runs ahead to fill its read-ahead and wait on its consumer.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let got = backend.get(&key, None).await.expect("get").expect("found");
        let mut read = 0;
        let mut stream = got.stream;
        while let Some(chunk) = stream.next().await {
            read += chunk.expect("read").len();
        }
        drop(stalled);
        read
    };
    // Every step is inside the timeout: with readers that hold their threads, the third stalled
    // read already waits for one.
    let read = rt
        .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(20), reads).await })
        .expect("reads with stalled reads open finish");
    assert_eq!(read, data.len());
}

/// Reads that consumers hold on to spend the store's read budget; further reads then take small
/// chunks, none ahead, and still read every byte; once the held chunks are dropped, reads take
/// whole chunks again. Blobs up to 8 MiB are read in one piece while the budget has room for
/// them, and those pieces are charged too.
#[tokio::test]
async fn held_chunks_spend_the_read_budget_and_later_reads_take_small_ones() {
    use futures::StreamExt;
    const MIB: usize = 1 << 20;
    let Fs { backend, _dir } = make_opts(FsOptions {
        fsync: false,
        read_budget: 3 * MIB as u64,
        ..Default::default()
    });
    let store = tarvault::Store::new(backend.clone());
    let big = Bytes::from(common::noise(12 * MIB, 5));
    let small = Bytes::from(common::noise(MIB - 100, 6));
    let mid = Bytes::from(common::noise(2 * MIB + 100, 7));
    for data in [&big, &small, &mid] {
        store
            .put_bytes(data.clone(), &tarvault::PutOptions::default())
            .await
            .expect("put");
    }
    /// A read's chunk lengths and bytes, each chunk dropped once copied.
    async fn chunks(backend: &FsBackend, key: &BlobKey) -> (Vec<usize>, Vec<u8>) {
        let mut got = backend.get(key, None).await.expect("get").expect("found");
        let (mut lens, mut all) = (Vec::new(), Vec::new());
        while let Some(chunk) = got.stream.next().await {
            let chunk = chunk.expect("read");
            lens.push(chunk.len());
            all.extend_from_slice(&chunk);
        }
        (lens, all)
    }
    let (big_key, small_key) = (common::key_of(&big), common::key_of(&small));
    let mid_key = common::key_of(&mid);

    // Nothing held: whole chunks.
    let (lens, bytes) = chunks(&backend, &big_key).await;
    assert!(lens.iter().all(|&n| n == MIB), "1 MiB chunks: {lens:?}");
    assert_eq!(bytes, big);
    assert_eq!(chunks(&backend, &small_key).await.0.len(), 1, "one piece");
    let (lens, bytes) = chunks(&backend, &mid_key).await;
    assert_eq!(lens, [mid.len()], "2 MiB in one piece too");
    assert_eq!(bytes, mid);

    // One held read: its first chunk and the two it read ahead spend the budget.
    let mut held = backend
        .get(&big_key, None)
        .await
        .expect("get")
        .expect("found");
    let first = held.stream.next().await.expect("a chunk").expect("read");
    assert_eq!(first.len(), MIB);
    let (lens, bytes) = chunks(&backend, &big_key).await;
    assert!(
        lens.iter().all(|&n| n <= 64 << 10),
        "small chunks once the budget is spent: {:?}",
        &lens[..4]
    );
    assert_eq!(bytes, big, "every byte all the same");
    for (key, data) in [(&small_key, &small), (&mid_key, &mid)] {
        let (lens, bytes) = chunks(&backend, key).await;
        assert!(
            lens.iter().all(|&n| n <= 64 << 10),
            "a blob of one piece streams too"
        );
        assert_eq!(&bytes, data);
    }

    // Dropping the held read gives the budget back.
    drop((held, first));
    // Its chunks in flight finish on the blocking pool before they are dropped.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (lens, _) = chunks(&backend, &big_key).await;
    assert!(
        lens.iter().all(|&n| n == MIB),
        "whole chunks again: {lens:?}"
    );
}

/// A delete whose move of the blob to its tombstone fails names both paths, the blob's and the
/// tombstone's (either may be at fault: here the temp directory is a file, which stops root too),
/// and leaves the blob where it was.
#[tokio::test]
async fn a_failed_move_to_the_tombstone_names_both_paths() {
    let fs = make_with(false);
    let store = tarvault::Store::new(fs.backend.clone());
    let data = common::noise(1000, 1);
    store
        .put_bytes(data.clone(), &tarvault::PutOptions::default())
        .await
        .expect("put");
    let key = common::key_of(&data);
    let tmp = fs.backend.root().join("tmp");
    std::fs::remove_dir_all(&tmp).expect("remove tmp");
    std::fs::write(&tmp, b"not a directory").expect("a file for tmp");
    let err = fs.backend.delete(&key).await.expect_err("no tombstone");
    assert_eq!(err.kind(), tarvault::ErrorKind::Io, "{err}");
    let message = err.report().to_string();
    let blob = fs.backend.blob_path(&key).display().to_string();
    let tomb = format!("{}/{}.", tmp.display(), key.to_hex());
    assert!(message.contains(&blob), "{message}");
    assert!(message.contains(&tomb), "{message}");
    assert!(fs.backend.head(&key).await.expect("head").is_some(), "kept");
}

/// A corrupt blob whose move into `quarantine/` fails names both ends of the move, and stays
/// where it was (its error named only the blob).
#[tokio::test]
async fn a_failed_quarantine_names_both_paths() {
    let fs = make_with(false);
    let store = tarvault::Store::new(fs.backend.clone());
    let data = common::noise(1000, 2);
    store
        .put_bytes(data.clone(), &tarvault::PutOptions::default())
        .await
        .expect("put");
    let key = common::key_of(&data);
    let blob = fs.backend.blob_path(&key);
    let mut damaged = data.clone();
    damaged[10] ^= 1;
    let _ = std::fs::remove_file(&blob);
    std::fs::write(&blob, &damaged).expect("damage the blob");
    let quarantine = fs.backend.root().join("quarantine");
    let _ = std::fs::remove_dir_all(&quarantine);
    std::fs::write(&quarantine, b"not a directory").expect("a file for quarantine");
    let err = fs
        .backend
        .quarantine(&key)
        .await
        .expect_err("nowhere to move it");
    assert_eq!(err.kind(), tarvault::ErrorKind::Io, "{err}");
    let message = err.report().to_string();
    let to = format!("{}/{}.", quarantine.display(), key.to_hex());
    assert!(message.contains(&blob.display().to_string()), "{message}");
    assert!(message.contains(&to), "{message}");
    assert_eq!(std::fs::read(&blob).expect("left in place"), damaged);
}

/// `Store::open` of a filesystem store does its file work (directories, a sweep of temp files,
/// an old alias log's import under a lock another process may hold) off the runtime thread: on a
/// current-thread runtime, a task of the service runs while the open waits for that lock.
#[tokio::test]
async fn opening_a_store_does_not_hold_up_the_runtime_thread() {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    let dir = tempfile::tempdir().expect("tempdir");
    let index = dir.path().join("index");
    std::fs::create_dir_all(&index).expect("index dir");
    // An old release's alias log, which the open imports under `aliases.import.lock`.
    std::fs::write(index.join("aliases.log"), b"").expect("log");
    let lock = std::fs::File::create(index.join("aliases.import.lock")).expect("lock file");
    // SAFETY: `lock` is an open descriptor for the duration of the call.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let held = Arc::new(Mutex::new(Some(lock)));

    // Should the open block the thread, the lock is let go of from another one after a while,
    // so the test fails instead of hanging.
    let rescued = Arc::new(AtomicBool::new(false));
    let (h, r) = (held.clone(), rescued.clone());
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(5));
        if h.lock().expect("lock").take().is_some() {
            r.store(true, Ordering::SeqCst);
        }
    });
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        held.lock().expect("lock").take();
    };
    let spec = dir.path().to_str().expect("utf-8 path");
    let (opened, ()) = tokio::join!(tarvault::Store::open(spec), release);
    opened.expect("open");
    assert!(
        !rescued.load(Ordering::SeqCst),
        "the open blocked the runtime thread until the lock was let go of from another thread"
    );
}
