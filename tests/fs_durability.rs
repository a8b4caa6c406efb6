//! What the filesystem backend promises when things go wrong: writers killed with SIGKILL, a disk
//! that fills up, an I/O error mid-write, many processes writing the same content, temp files of
//! dead writers.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::TryStreamExt;
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::backend::BlobKey;
use tarvault::{ErrorKind, FsckOptions, PutOptions, Store};

use common::{addr, chunked, key_of, noise, sha512_sri};

const BIN: &str = env!("CARGO_BIN_EXE_tarvault");

fn write_inputs(dir: &Path, sizes: &[usize]) -> Vec<(PathBuf, Vec<u8>)> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let data = noise(len, 1000 + i as u64);
            let p = dir.join(format!("in-{i}.bin"));
            std::fs::write(&p, &data).expect("write input");
            (p, data)
        })
        .collect()
}

fn temp_files(store_root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(store_root.join("tmp"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

async fn keys(store: &Store) -> Vec<BlobKey> {
    let mut k: Vec<BlobKey> = store.list().try_collect().await.expect("list");
    k.sort();
    k
}

/// Kill `tarvault put` at random moments, many times. Afterwards: no partial blob is visible
/// (fsck re-hashes every file under an address and finds nothing corrupt), temp files are swept,
/// and every blob present is one of the inputs, intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_puts_leaves_no_partial_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let inputs = write_inputs(
        dir.path(),
        &[
            8 * 1024 * 1024,
            3 * 1024 * 1024,
            700_000,
            90_000,
            5_000,
            12_000,
            40_000,
            1,
        ],
    );
    let mut killed_mid_run = 0;
    for round in 0..40u64 {
        let mut cmd = Command::new(BIN);
        // Every other batch is made durable by per-file fsyncs instead of syncfs.
        let spec = if round % 4 == 3 {
            format!("file://{}?batch_flush=per-file", root.display()).into()
        } else {
            root.clone().into_os_string()
        };
        cmd.arg("--store").arg(&spec).arg("put");
        // Alternate single puts (per-blob fsync) and batches (group commit).
        if round % 2 == 0 {
            cmd.arg(&inputs[(round as usize / 2) % 3].0);
        } else {
            for (p, _) in &inputs {
                cmd.arg(p);
            }
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let delay = (round * 7919) % 60;
        std::thread::sleep(Duration::from_millis(delay));
        // SIGKILL: no destructor, no cleanup, exactly like a crash of the process.
        let _ = child.kill();
        let status = child.wait().expect("wait");
        if !status.success() {
            killed_mid_run += 1;
        }
        // Between kills, the store must be consistent as seen by a fresh opener.
        if round % 10 == 9 {
            let store = Store::new(FsBackend::open(&root, FsOptions::default()).expect("open"));
            assert!(
                temp_files(&root).is_empty(),
                "open sweeps temp files of dead writers"
            );
            let report = store.fsck(&FsckOptions::default()).await.expect("fsck");
            assert!(report.is_clean(), "round {round}: {:?}", report.corrupt);
        }
    }
    assert!(
        killed_mid_run > 5,
        "the test must actually interrupt puts ({killed_mid_run})"
    );
    let store = Store::new(FsBackend::open(&root, FsOptions::default()).expect("open"));
    let report = store.fsck(&FsckOptions::default()).await.expect("fsck");
    assert!(report.is_clean(), "{:?}", report.corrupt);
    assert!(temp_files(&root).is_empty());
    let wanted: Vec<BlobKey> = inputs.iter().map(|(_, d)| key_of(d)).collect();
    for k in keys(&store).await {
        assert!(wanted.contains(&k), "unexpected blob {k}");
    }
    // Finishing the job after the crashes works and is idempotent.
    let out = Command::new(BIN)
        .arg("--store")
        .arg(&root)
        .arg("put")
        .args(inputs.iter().map(|(p, _)| p))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(keys(&store).await.len(), inputs.len());
    for (_, d) in &inputs {
        let got = store
            .get(&addr(&sha512_sri(d)))
            .await
            .expect("get")
            .bytes()
            .await;
        assert_eq!(&got.expect("verified")[..], &d[..]);
    }
}

/// A write that fails midway (here: the file-size limit, EFBIG) fails the put with a clear I/O
/// error, removes the temp file, and leaves what was stored before untouched.
#[test]
fn io_error_mid_write_removes_temp_and_keeps_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let inputs = write_inputs(dir.path(), &[20_000, 4 * 1024 * 1024]);
    let ok = Command::new(BIN)
        .arg("--store")
        .arg(&root)
        .arg("put")
        .arg(&inputs[0].0)
        .output()
        .expect("run");
    assert!(ok.status.success());
    // `ulimit -f 1024` caps files at 1 MiB; SIGXFSZ ignored so the write returns EFBIG instead of
    // killing the process.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 1024; exec '{BIN}' --store '{}' put '{}'",
            root.display(),
            inputs[1].0.display()
        ))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("write"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    assert!(temp_files(&root).is_empty(), "temp file left behind");
    let check = Command::new(BIN)
        .arg("--store")
        .arg(&root)
        .args(["fsck", "--json"])
        .output()
        .expect("fsck");
    assert!(check.status.success());
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).expect("json");
    assert_eq!(report["checked"], 1);
    assert_eq!(report["ok"], 1);
}

/// A full disk: ENOSPC mid-write. Needs root to mount a 1 MiB tmpfs (CI runs as root).
#[tokio::test]
async fn full_disk_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        common::skip_or_fail("cannot mount a 1 MiB tmpfs here (it needs root, as CI has)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let root = mnt.join("store");
    let store = Store::new(FsBackend::open(&root, FsOptions::default()).expect("open"));
    let small = noise(100_000, 1);
    store
        .put_bytes(small.clone(), &PutOptions::default())
        .await
        .expect("fits");
    let big = noise(3 * 1024 * 1024, 2);
    let err = store
        .put(chunked(&big, 64 * 1024), &PutOptions::default())
        .await
        .expect_err("disk full");
    assert_eq!(err.kind(), ErrorKind::Io);
    let report = err.report().to_string();
    assert!(report.to_lowercase().contains("space"), "{report}");
    assert!(temp_files(&root).is_empty(), "temp removed");
    assert_eq!(keys(&store).await, vec![key_of(&small)]);
    let got = store
        .get(&addr(&sha512_sri(&small)))
        .await
        .expect("get")
        .bytes()
        .await;
    assert_eq!(&got.expect("intact")[..], &small[..]);
    // Once space is back, the same put works.
    store.delete(&addr(&sha512_sri(&small))).await.expect("rm");
    let mid = noise(600_000, 3);
    store
        .put_bytes(mid, &PutOptions::default())
        .await
        .expect("fits now");
}

/// Many processes storing the same content at once into a store none of them has created yet:
/// all succeed, one blob. Four rounds, each on a fresh store: creating the index's file races
/// (switching it to WAL failed about one run in 60 before it was retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_processes_same_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = write_inputs(dir.path(), &[1_500_000]);
    for round in 0..4 {
        same_content_at_once(&dir.path().join(format!("store-{round}")), &inputs[0]).await;
    }
}

async fn same_content_at_once(root: &Path, input: &(PathBuf, Vec<u8>)) {
    let children: Vec<_> = (0..12)
        .map(|_| {
            Command::new(BIN)
                .arg("--store")
                .arg(root)
                .args(["put", "--json"])
                .arg(&input.0)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut stored = 0;
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(line["integrity"], sha512_sri(&input.1));
        stored += usize::from(line["stored"] == true);
    }
    assert!(stored >= 1);
    let store = Store::new(FsBackend::open(root, FsOptions::default()).expect("open"));
    assert_eq!(keys(&store).await, vec![key_of(&input.1)]);
    assert!(store
        .fsck(&FsckOptions::default())
        .await
        .expect("fsck")
        .is_clean());
    // Each process built an index file of its own; the one renamed into place is the index, and
    // every other build is gone.
    let mut index_files: Vec<String> = std::fs::read_dir(root.join("index"))
        .expect("index dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with("-wal") && !n.ends_with("-shm"))
        .collect();
    index_files.sort();
    assert_eq!(index_files, ["blobs.sqlite"]);
}

/// Temp files of dead writers are swept on open; those of live writers are left alone.
#[test]
fn stale_temp_files_are_swept_live_ones_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    FsBackend::open(&root, FsOptions::default()).expect("create");
    let mut live = Command::new("sleep").arg("30").spawn().expect("sleep");
    let dead = root.join("tmp").join("2147483000.00000000deadbeef.tmp");
    let alive = root
        .join("tmp")
        .join(format!("{}.0000000000000001.tmp", live.id()));
    let junk = root.join("tmp").join("not-ours");
    for p in [&dead, &alive, &junk] {
        std::fs::write(p, b"partial").expect("plant");
    }
    FsBackend::open(&root, FsOptions::default()).expect("reopen");
    assert!(!dead.exists(), "dead writer's temp swept");
    assert!(!junk.exists(), "unidentifiable temp swept");
    assert!(alive.exists(), "live writer's temp kept");
    let _ = live.kill();
    let _ = live.wait();
    FsBackend::open(&root, FsOptions::default()).expect("reopen");
    assert!(!alive.exists(), "swept once its writer died");
}

/// A cancelled put (future dropped mid-stream) leaves no temp file.
#[tokio::test]
async fn cancelled_put_leaves_no_temp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = Store::new(FsBackend::open(&root, FsOptions::default()).expect("open"));
    let data = bytes::Bytes::from(noise(4 * 1024 * 1024, 5));
    let slow = futures::stream::unfold(0usize, move |i| {
        let data = data.clone();
        async move {
            if i >= 4 {
                futures::future::pending::<()>().await;
            }
            Some((Ok(data.slice(i * 1_048_576..(i + 1) * 1_048_576)), i + 1))
        }
    });
    let options = PutOptions::default();
    let put = store.put(Box::pin(slow), &options);
    let r = tokio::time::timeout(Duration::from_millis(500), put).await;
    assert!(r.is_err(), "the put must still be waiting for input");
    assert!(
        temp_files(&root).is_empty(),
        "dropped put removed its temp file"
    );
    assert!(keys(&store).await.is_empty());
}

/// Blobs are written read-only, and the layout is the documented one.
#[tokio::test]
async fn layout_and_permissions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let backend = FsBackend::open(&root, FsOptions::default()).expect("open");
    let store = Store::new(backend.clone());
    let data = noise(1234, 9);
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    let key = key_of(&data);
    let hex = key.to_hex();
    let path = backend.blob_path(&key);
    assert_eq!(
        path,
        root.join("sha512")
            .join(&hex[..2])
            .join(&hex[2..4])
            .join(&hex)
    );
    assert_eq!(std::fs::read(&path).expect("read"), data);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o222, 0, "blob is read-only: {mode:o}");
    }
    assert!(root.join("index/blobs.sqlite").exists());
    assert!(!root.join("index/aliases.log").exists());
}
