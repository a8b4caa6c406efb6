//! The filesystem store's uploads in progress: no temp file outlives its put, however the put
//! ends; a sweep removes the temp files of dead writers only, told apart by their leases even
//! from another PID namespace; and a put of bytes whose stored file is damaged repairs it.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::backend::{Backend, PutHint};
use tarvault::{ErrorKind, PutOptions, Store};

use common::{addr, key_of, noise, sha512_sri};

const BIN: &str = env!("CARGO_BIN_EXE_tarvault");

fn open(root: &Path) -> (Store, FsBackend) {
    let b = FsBackend::open(root, FsOptions::default()).expect("open");
    (Store::new(b.clone()), b)
}

fn temp_files(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("tmp"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Truncates a blob's file in place (a torn copy, a bad restore).
fn truncate(path: &Path, len: u64) {
    let mut perms = std::fs::metadata(path).expect("blob").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(path, perms).expect("chmod");
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open")
        .set_len(len)
        .expect("truncate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_expecting_its_integrity_repairs_a_truncated_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, b) = open(&dir.path().join("s"));
    let data = noise(100_000, 3);
    let a = addr(&sha512_sri(&data));
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    truncate(&b.blob_path(&key_of(&data)), 10);
    let err = store
        .get(&a)
        .await
        .expect("get")
        .bytes()
        .await
        .expect_err("truncated");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    // What publish, migrate and copy do: a put that names the address it expects.
    let put = store
        .put_bytes(data.clone(), &PutOptions::expect(a.clone()))
        .await
        .expect("re-put");
    assert!(put.stored, "the damaged file was not replaced");
    let back = store
        .get(&a)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("read");
    assert_eq!(&back[..], &data[..]);
}

/// A blob damaged in place (one byte flipped, its size unchanged, as bit rot leaves it; reads
/// refuse it as corrupt): a put of the right bytes, told their sha512 or not, writes the verified
/// bytes over it and says it stored them, and the blob reads back whole. (The size alone was
/// checked before: the put said "present" and left the damaged copy.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_of_the_right_bytes_repairs_a_blob_damaged_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (seed, told) in [(20, false), (21, true)] {
        let (store, b) = open(&dir.path().join(format!("s{seed}")));
        let data = noise(300_000, seed);
        let a = addr(&sha512_sri(&data));
        store
            .put_bytes(data.clone(), &PutOptions::default())
            .await
            .expect("put");
        common::corrupt_blob(&b, &key_of(&data), false);
        let read = async { store.get(&a).await?.bytes().await };
        assert_eq!(read.await.err().map(|e| e.kind()), Some(ErrorKind::Corrupt));
        let options = PutOptions {
            expected: told.then(|| a.clone()),
            ..PutOptions::default()
        };
        let put = store.put_bytes(data.clone(), &options).await.expect("put");
        assert!(put.stored, "told the sha512: {told}");
        let back = store.get(&a).await.expect("get").bytes().await;
        assert_eq!(back.expect("reads whole"), data, "told the sha512: {told}");
    }
}

/// The same over 8 MiB, where a stored file is not hashed in place (it would be read back from
/// the disk): the put's own verified copy, written already, takes its place, so a put of the
/// right bytes (told their sha512 or not, one at a time or in a batch) repairs bit rot there too.
/// The put cannot tell the old copy was damaged, and says the blob was present. A put of an
/// intact blob leaves it readable, and no put leaves a temp file. (Before, the file's size alone
/// was checked, and the damaged copy stayed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_of_the_right_bytes_repairs_a_large_blob_damaged_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = noise((8 << 20) + 4096, 22);
    let a = addr(&sha512_sri(&data));
    let root = dir.path().join("s");
    let (store, b) = open(&root);
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    let read = || async { store.get(&a).await?.bytes().await };
    for (told, batch) in [(false, false), (true, false), (false, true), (true, true)] {
        let case = format!("told the sha512: {told}, in a batch: {batch}");
        common::corrupt_blob(&b, &key_of(&data), told);
        assert_eq!(
            read().await.err().map(|e| e.kind()),
            Some(ErrorKind::Corrupt),
            "{case}"
        );
        let options = PutOptions {
            expected: told.then(|| a.clone()),
            ..PutOptions::default()
        };
        for _ in 0..2 {
            let put = if batch {
                let input = common::chunked(&data, 1 << 20);
                let mut results = store.put_batch(vec![(input, options.clone())]).await;
                results.remove(0)
            } else {
                store.put_bytes(data.clone(), &options).await
            };
            assert!(!put.expect("put").stored, "{case}");
            assert_eq!(read().await.expect("reads whole"), data, "{case}");
            assert_eq!(temp_files(&root), Vec::<PathBuf>::new(), "{case}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_publish_fails_leaves_no_temp_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("s");
    let (store, _b) = open(&root);
    let data = noise(3000, 4);
    let hex = key_of(&data).to_hex();
    // The shard directory cannot be made: a file stands where it goes.
    std::fs::write(root.join("sha512").join(&hex[..2]), b"x").expect("plant");
    let err = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect_err("publish must fail");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert_eq!(temp_files(&root), Vec::<PathBuf>::new());
    let batch = store
        .put_batch(vec![(common::chunked(&data, 1000), PutOptions::default())])
        .await;
    assert!(batch[0].is_err());
    assert_eq!(temp_files(&root), Vec::<PathBuf>::new());
}

/// A put dropped (a client gone, a timeout) while its first write waits for a thread of a busy
/// blocking pool: the temp file must not appear after the put is gone.
#[test]
fn a_put_cancelled_while_its_first_write_waits_leaves_no_temp_file() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("s");
    rt.block_on(async {
        let (store, _b) = open(&root);
        // The pool's one thread is busy (other reads and writes of a busy server).
        let busy = tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(800)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // 2 MiB: past the size written in place, so the write goes to the pool and waits.
        let data = Bytes::from(noise(2 << 20, 8));
        let stream = Box::pin(futures::stream::iter([Ok(data)]).chain(futures::stream::pending()));
        let options = PutOptions::default();
        let put = store.put(stream, &options);
        let cut = tokio::time::timeout(Duration::from_millis(200), put).await;
        assert!(cut.is_err(), "the put was still waiting for input");
        busy.await.expect("busy");
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    assert_eq!(temp_files(&root), Vec::<PathBuf>::new());
}

/// A writer of this process with a temp file on disk, not committed yet.
async fn upload_in_progress(b: &FsBackend, data: &[u8]) -> Box<dyn tarvault::backend::BlobWriter> {
    let mut w = b.begin_put(&PutHint::default()).await.expect("begin");
    w.write(Bytes::from(data.to_vec())).await.expect("write");
    w.flush().await.expect("flush");
    w
}

/// An upload whose input stalls for more than a day (its temp file two days old) while its store
/// stays open: a sweep (another open) keeps the file, since its lease is held, and the put
/// commits. (Any temp file over 24 hours old was swept, under a live writer.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_uploads_temp_file_is_kept_however_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("s");
    let (store, b) = open(&root);
    let data = noise(3000, 12);
    let w = upload_in_progress(&b, &data).await;
    let temps = temp_files(&root);
    assert_eq!(temps.len(), 1);
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&temps[0])
        .and_then(|f| f.set_modified(two_days_ago))
        .expect("age the temp file");
    drop(open(&root));
    assert_eq!(temp_files(&root), temps, "a live upload was swept");
    w.commit(&common::digests_of(&data)).await.expect("commit");
    let back = store.get(&addr(&sha512_sri(&data))).await.expect("get");
    assert_eq!(back.bytes().await.expect("read"), data);
}

/// `tarvault ls` opened in another PID namespace (as `docker exec` into a container sharing the
/// store's volume would) cannot see this process's pid; the upload in progress must survive the
/// sweep of that open all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_from_another_pid_namespace_keeps_live_uploads() {
    let unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--map-root-user", "true"])
        .stderr(Stdio::null())
        .status();
    if !unshare.is_ok_and(|s| s.success()) {
        // A kernel permission, not a tool `.ci/run` could install: skipped even under CI.
        eprintln!("skipped: unshare --pid --map-root-user is not permitted here");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("s");
    let (_store, b) = open(&root);
    let data = noise(3000, 7);
    let w = upload_in_progress(&b, &data).await;
    assert_eq!(temp_files(&root).len(), 1);
    let st = Command::new("unshare")
        .args(["--pid", "--fork", "--map-root-user"])
        .arg(BIN)
        .arg("--store")
        .arg(&root)
        .arg("ls")
        .stdout(Stdio::null())
        .status()
        .expect("run");
    assert!(st.success());
    assert_eq!(temp_files(&root).len(), 1, "a live upload was swept");
    w.commit(&common::digests_of(&data)).await.expect("commit");
}

/// A real second process (`tarvault put -`, its input held open) has a temp file: an open while
/// it lives leaves the file; once it is killed (-9: no clean-up of its own), the next open sweeps
/// the file and the dead process's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_writers_temp_file_is_swept_and_a_live_ones_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("s");
    drop(open(&root));
    let mut child = Command::new(BIN)
        .arg("--store")
        .arg(&root)
        .args(["put", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    // More than one write's worth, so that the temp file is created before the input ends.
    stdin.write_all(&noise(4 << 20, 9)).expect("feed");
    stdin.flush().expect("flush");
    let t = Instant::now();
    while temp_files(&root).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no temp file appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let leases = || std::fs::read_dir(root.join("leases")).map_or(0, |d| d.count());
    assert_eq!(leases(), 1);
    drop(open(&root));
    assert_eq!(
        temp_files(&root).len(),
        1,
        "a live writer's temp file was swept"
    );
    child.kill().expect("kill");
    child.wait().expect("wait");
    drop(stdin);
    drop(open(&root));
    assert_eq!(temp_files(&root), Vec::<PathBuf>::new());
    assert_eq!(leases(), 0, "the dead writer's lease was left");
}

/// A large put whose bytes past the threshold are written around the page cache (`O_DIRECT`, in
/// aligned blocks, with unaligned heads and tails through the cache) stores exactly its bytes,
/// however its stream is chunked, durable or not; and a second put of the same bytes finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_put_written_around_the_page_cache_reads_back_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = noise((12 << 20) + 12_345, 21);
    for (fsync, chunk) in [(false, 333_333), (true, 1 << 20), (false, 4097)] {
        let root = dir.path().join(format!("s-{fsync}-{chunk}"));
        let b = FsBackend::open(
            &root,
            FsOptions {
                fsync,
                direct_writes_from: Some(1 << 20),
                ..FsOptions::default()
            },
        )
        .expect("open");
        let store = Store::new(b.clone());
        let chunks: Vec<std::io::Result<Bytes>> = data
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let out = store
            .put(futures::stream::iter(chunks), &PutOptions::default())
            .await
            .expect("put");
        assert!(out.stored);
        assert_eq!(out.digests.integrity().to_string(), sha512_sri(&data));
        let path = b.blob_path(&key_of(&data));
        assert!(
            std::fs::read(&path).expect("blob") == data,
            "stored bytes differ"
        );
        let mut got = Vec::new();
        let mut stream = store.get(&addr(&sha512_sri(&data))).await.expect("get");
        while let Some(c) = stream.next().await {
            got.extend_from_slice(&c.expect("verified chunk"));
        }
        assert!(got == data, "bytes read back differ");
        assert!(temp_files(&root).is_empty(), "a temp file was left");
        let again = store
            .put(
                futures::stream::iter([Ok(Bytes::from(data.clone()))]),
                &PutOptions::default(),
            )
            .await
            .expect("put again");
        assert!(!again.stored);
    }
}

/// fsck reads a blob and finds it corrupt; before it quarantines it, a put of the right bytes
/// (another process's, say) writes its verified copy over the damaged one and says it stored
/// it. The quarantine that follows, decided on the copy read before, must leave the good copy
/// in service and its record in place: it once moved whatever was at the address, so a blob
/// whose put had succeeded was gone, by every digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantine_leaves_a_copy_repaired_since_it_was_found_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, b) = open(&dir.path().join("s"));
    let data = noise(200_000, 31);
    let a = addr(&sha512_sri(&data));
    let key = key_of(&data);
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    common::corrupt_blob(&b, &key, false);
    // What fsck's scan saw.
    let read = async { store.get(&a).await?.bytes().await };
    assert_eq!(read.await.err().map(|e| e.kind()), Some(ErrorKind::Corrupt));
    let put = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("repairing put");
    assert!(put.stored, "the put replaced the damaged copy");
    let moved = b.quarantine(&key).await.expect("quarantine");
    assert!(!moved, "the copy at the address verifies: not quarantined");
    assert_eq!(common::read_verified(&store, &a).await, data);
    common::assert_found_by_aliases(&store, &[(data.clone(), common::digests_of(&data))]).await;
    // A copy still corrupt is quarantined as before.
    common::corrupt_blob(&b, &key, true);
    assert!(b.quarantine(&key).await.expect("quarantine"));
    assert!(!b.blob_path(&key).exists());
    let kept = || {
        std::fs::read_dir(dir.path().join("s/quarantine"))
            .expect("quarantine dir")
            .count()
    };
    assert_eq!(kept(), 1);
    // Put again, damaged again, quarantined again (within the same second, as a rule): the bytes
    // the first quarantine kept are not replaced.
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put again");
    common::corrupt_blob(&b, &key, false);
    assert!(b.quarantine(&key).await.expect("quarantine again"));
    assert_eq!(kept(), 2, "each quarantine keeps its own copy");
}

/// A blob's file that cannot be read (here a directory in its place, as a bad restore can leave;
/// an `EIO` or an `EACCES` is met the same way) is one corrupt blob in fsck's report, and the
/// scan goes on to check and index the others; `--quarantine` moves it aside. fsck once stopped
/// at the first such file with the read's error, for every blob read in one piece (up to 8 MiB:
/// nearly every tarball), so one bad sector kept a store from being checked at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_reports_an_unreadable_blob_and_checks_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, b) = open(&dir.path().join("s"));
    let blobs: Vec<Vec<u8>> = (0..3).map(|i| noise(50_000 + i, 40 + i as u64)).collect();
    for data in &blobs {
        store
            .put_bytes(data.clone(), &PutOptions::default())
            .await
            .expect("put");
    }
    let bad = key_of(&blobs[1]);
    let path = common::writable_blob(&b, &bad);
    std::fs::remove_file(&path).expect("unlink");
    std::fs::create_dir(&path).expect("a directory in its place");
    // No blob of any size is vouched for there: `has` and `stat` say it is corrupt, as the read
    // and fsck do.
    let address = addr(&sha512_sri(&blobs[1]));
    for (what, e) in [
        ("contains", store.contains(&address).await.err()),
        ("stat", store.stat(&address).await.err()),
    ] {
        let e = e.unwrap_or_else(|| panic!("{what}: a directory passed for the blob"));
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{what}: {e}");
        assert!(e.to_string().contains("a directory"), "{what}: {e}");
    }
    let report = store
        .fsck(&tarvault::FsckOptions::default())
        .await
        .expect("fsck goes past an unreadable blob");
    assert_eq!((report.checked, report.ok), (3, 2), "{report:?}");
    assert_eq!(report.corrupt.total(), 1);
    let found = report.corrupt.iter().next().expect("kept");
    assert_eq!(found.address, bad.to_string());
    assert!(found.found.contains("unreadable"), "{found:?}");
    let options = tarvault::FsckOptions {
        quarantine: true,
        ..tarvault::FsckOptions::default()
    };
    let report = store.fsck(&options).await.expect("fsck");
    assert!(report.corrupt.iter().all(|c| c.quarantined), "{report:?}");
    assert!(!path.exists(), "moved aside");
    let report = store
        .fsck(&tarvault::FsckOptions::default())
        .await
        .expect("fsck");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.ok, 2);
}
