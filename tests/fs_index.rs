//! The filesystem store's index across processes and crashes: writers killed with SIGKILL while
//! other writers run, fsck racing puts of another process, stores written before the index was
//! introduced, and a damaged index file. Every writer here is a real second process (the CLI).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use tarvault::backend::fs::{FsBackend, FsIndex, FsOptions};
use tarvault::backend::{Backend, BlobKey};
use tarvault::{Algorithm, Digests, FsckOptions, Integrity, PutOptions, Store};

use common::noise;

const BIN: &str = env!("CARGO_BIN_EXE_tarvault");

/// A small deterministic generator (no dependency, reproducible failures).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below.max(1)
    }
}

/// `count` input files of 1-24 KiB; returns their paths and bytes.
fn inputs(dir: &Path, count: usize, seed: u64) -> Vec<(PathBuf, Vec<u8>)> {
    std::fs::create_dir_all(dir).expect("mkdir");
    (0..count)
        .map(|i| {
            let len = 1024 + (i * 7919 + seed as usize * 31) % (23 * 1024);
            let data = noise(len, seed * 100_000 + i as u64);
            let p = dir.join(format!("in-{seed}-{i}.bin"));
            std::fs::write(&p, &data).expect("write input");
            (p, data)
        })
        .collect()
}

fn put_cmd(root: &Path, files: &[&PathBuf]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--store").arg(root).arg("put");
    for f in files {
        cmd.arg(f);
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    cmd
}

fn run(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--store")
        .arg(root)
        .args(args)
        .output()
        .expect("run tarvault")
}

fn every_address(d: &Digests) -> [Integrity; 3] {
    [
        d.integrity(),
        Integrity::from(d.hash(Algorithm::Sha1)),
        Integrity::from(d.hash(Algorithm::Blake3)),
    ]
}

/// Every entry of the index, walked page by page.
fn index_entries(index: &FsIndex) -> Vec<BlobKey> {
    let (mut after, mut out) = (0, Vec::new());
    loop {
        let page = index.page(after, 500).expect("walk the index");
        let Some(&(last, _)) = page.last() else {
            return out;
        };
        after = last;
        out.extend(page.into_iter().map(|(_, k)| k));
    }
}

/// What a fresh opener sees: (blobs on disk, blobs with a complete index entry, entries whose blob
/// is missing). Panics if a visible blob does not verify.
async fn survey(root: &Path) -> (usize, usize, Vec<BlobKey>) {
    let backend = FsBackend::open(root, FsOptions::default()).expect("open");
    let store = Store::new(backend.clone());
    let keys: Vec<BlobKey> = backend.list().try_collect().await.expect("list");
    let mut indexed = 0;
    for key in &keys {
        let bytes = std::fs::read(backend.blob_path(key)).expect("read blob");
        let d = common::digests_of(&bytes);
        assert_eq!(
            &d.sha512,
            key.as_bytes(),
            "a visible blob is complete and verifies"
        );
        let index = backend.index();
        let by_sha1 = index.key_by_sha1(&d.sha1).expect("lookup");
        let by_blake3 = index.key_by_blake3(&d.blake3).expect("lookup");
        match (by_sha1, by_blake3) {
            (Some(a), Some(b)) => {
                assert_eq!((a, b), (*key, *key), "an entry names its own blob");
                assert_eq!(index.digests(key).expect("record"), Some(d));
                for address in every_address(&d) {
                    let got = store.get(&address).await.expect("get").bytes().await;
                    assert_eq!(got.expect("verified").len() as u64, d.size);
                }
                indexed += 1;
            }
            (None, None) => {}
            other => panic!("half an entry for {key}: {other:?}"),
        }
    }
    let dangling = index_entries(backend.index())
        .into_iter()
        .filter(|k| !backend.blob_path(k).exists())
        .collect();
    (keys.len(), indexed, dangling)
}

/// SIGKILL at random moments of two processes putting overlapping batches at once, over 200
/// times. At every check: each visible blob verifies and, if indexed, is found by all three
/// digests; no entry points to a missing blob. After fsck (the recovery) every blob is indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_concurrent_batches_leaves_a_consistent_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let files = inputs(&dir.path().join("in"), 400, 1);
    // Kills land inside a batch, many after its first groups have committed, whatever this
    // machine's speed under its load: timed against one batch run whole (a fixed 120 ms saw no
    // batch commit anything on a loaded machine, and then there was nothing to check).
    let started = Instant::now();
    let whole: Vec<&PathBuf> = files[..200].iter().map(|(p, _)| p).collect();
    let calibrated = put_cmd(&dir.path().join("calibrate"), &whole).status();
    assert!(calibrated.expect("run a whole batch").success());
    let span = (started.elapsed().as_millis() as u64).max(20) * 3 / 5;
    let mut rng = Lcg(0x5eed);
    let (mut kills, mut interrupted, mut unindexed_seen) = (0, 0, 0);
    for round in 0..110u64 {
        let mut children: Vec<Child> = (0..2)
            .map(|_| {
                let start = rng.next(200) as usize;
                let batch: Vec<&PathBuf> =
                    files[start..start + 200].iter().map(|(p, _)| p).collect();
                put_cmd(&root, &batch).spawn().expect("spawn put")
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.next(span)));
        for child in &mut children {
            let _ = child.kill();
            kills += 1;
            if !child.wait().expect("wait").success() {
                interrupted += 1;
            }
        }
        if round % 22 == 21 {
            let (blobs, indexed, dangling) = survey(&root).await;
            assert!(
                dangling.is_empty(),
                "round {round}: entries without blobs {dangling:?}"
            );
            unindexed_seen += blobs - indexed;
        }
    }
    assert!(kills >= 200);
    assert!(
        interrupted > 20,
        "the test must interrupt puts ({interrupted} of {kills})"
    );
    let store = Store::open_fs(&root).expect("open");
    let report = store.fsck(&FsckOptions::default()).await.expect("fsck");
    assert!(report.is_clean(), "{:?}", report.corrupt);
    assert_eq!(report.index.removed, 0, "no entry pointed nowhere");
    let (blobs, indexed, dangling) = survey(&root).await;
    assert!(blobs > 0 && dangling.is_empty());
    assert_eq!(
        indexed, blobs,
        "after recovery every blob is found by every digest"
    );
    eprintln!(
        "{kills} kills, {interrupted} interrupted puts, {blobs} blobs; {unindexed_seen} seen unindexed before recovery, {} indexed by it",
        report.index.added
    );
}

/// SIGKILL at random moments of a process deleting blobs one `tarvault rm` after another, beside a
/// process putting some of the same blobs back. Right after a kill, an entry whose blob is missing
/// must have the blob in its tombstone (a delete cut short between moving the blob and
/// committing); once the store is opened again, no entry points nowhere, and after fsck every blob
/// is found by every digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_deletes_beside_puts_leaves_no_entry_without_its_blob() {
    use std::os::unix::process::CommandExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let files = inputs(&dir.path().join("in"), 48, 9);
    let all: Vec<&PathBuf> = files.iter().map(|(p, _)| p).collect();
    assert!(put_cmd(&root, &all).status().expect("put").success());
    let kill_group = |child: &mut Child| {
        // SAFETY: kill has no memory preconditions; the group is the child's own.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        child.wait().expect("wait")
    };
    let mut rng = Lcg(0xde1e7e);
    let (mut rounds_with_tombstones, mut deleted_seen) = (0, 0usize);
    for round in 0..80u64 {
        let doomed: Vec<String> = (0..16)
            .map(|_| common::digests_of(&files[rng.next(48) as usize].1).shasum())
            .collect();
        let mut deleter = Command::new("sh")
            .arg("-c")
            .arg(r#"bin=$1; root=$2; shift 2; for a in "$@"; do "$bin" --store "$root" rm "$a"; done"#)
            .arg("sh")
            .arg(BIN)
            .arg(&root)
            .args(&doomed)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn deleter");
        let start = rng.next(32) as usize;
        let mut putter = put_cmd(&root, &all[start..start + 16]);
        let mut putter = putter.process_group(0).spawn().expect("spawn put");
        std::thread::sleep(Duration::from_millis(rng.next(90)));
        kill_group(&mut deleter);
        kill_group(&mut putter);

        // Before anyone opens the store again: a missing blob with an entry is in its tombstone.
        let index = FsIndex::open(root.join("index/blobs.sqlite")).expect("open index");
        let mut tombstoned = 0;
        for key in index_entries(&index) {
            let hex = key.to_hex();
            let blob = root
                .join("sha512")
                .join(&hex[..2])
                .join(&hex[2..4])
                .join(&hex);
            if !blob.exists() {
                // Each delete's own tombstone: `<hex>.<pid>.<random>.deleting`.
                let tomb = std::fs::read_dir(root.join("tmp"))
                    .expect("read tmp")
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .any(|n| n.starts_with(&format!("{hex}.")) && n.ends_with(".deleting"));
                assert!(tomb, "round {round}: an entry points nowhere: {hex}");
                tombstoned += 1;
            }
        }
        drop(index);
        rounds_with_tombstones += usize::from(tombstoned > 0);
        if round % 10 == 9 {
            let (blobs, _, dangling) = survey(&root).await;
            assert!(dangling.is_empty(), "round {round}: {dangling:?}");
            deleted_seen += 48 - blobs;
        }
    }
    assert!(deleted_seen > 0, "the test must delete blobs");
    let store = Store::open_fs(&root).expect("open");
    let report = store.fsck(&FsckOptions::default()).await.expect("fsck");
    assert!(report.is_clean(), "{:?}", report.corrupt);
    assert_eq!(report.index.removed, 0, "no entry pointed nowhere");
    let (blobs, indexed, dangling) = survey(&root).await;
    assert!(dangling.is_empty());
    assert_eq!(
        indexed, blobs,
        "after fsck every blob is found by every digest"
    );
    eprintln!(
        "80 rounds: {deleted_seen} blobs missing at the checks, {rounds_with_tombstones} rounds \
         cut a delete short between its move and its commit"
    );
}

/// `fsck` in one process while another process puts new blobs: nothing the writer committed
/// during the rebuild is lost from the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_keeps_entries_another_process_commits_meanwhile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let seed = inputs(&dir.path().join("seed"), 1500, 2);
    {
        let opts = FsOptions {
            fsync: false,
            ..Default::default()
        };
        let store = Store::new(FsBackend::open(&root, opts).expect("open"));
        for (_, data) in &seed {
            store
                .put_bytes(data.clone(), &PutOptions::default())
                .await
                .expect("seed");
        }
        // 96 MiB more to hash, so that each fsck runs long enough (over a second here) to
        // overlap the puts even on a loaded machine.
        for i in 0..12u64 {
            let big = noise(8 << 20, 900 + i);
            store
                .put_bytes(big, &PutOptions::default())
                .await
                .expect("seed big");
        }
    }
    let mut overlapped = 0;
    for round in 0..3u64 {
        let fresh = inputs(&dir.path().join(format!("new{round}")), 120, 10 + round);
        let mut fsck = Command::new(BIN)
            .arg("--store")
            .arg(&root)
            .args(["fsck", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fsck");
        let started = Instant::now();
        let mut during = 0;
        for chunk in fresh.chunks(20) {
            let batch: Vec<&PathBuf> = chunk.iter().map(|(p, _)| p).collect();
            let status = put_cmd(&root, &batch).status().expect("put");
            assert!(status.success());
            if fsck.try_wait().expect("poll fsck").is_none() {
                during += 1;
            }
        }
        let out = fsck.wait_with_output().expect("fsck");
        assert!(out.status.success(), "fsck failed");
        eprintln!(
            "round {round}: {during} of 6 put batches committed while fsck ran ({:?})",
            started.elapsed()
        );
        let index = FsIndex::open(root.join("index/blobs.sqlite")).expect("index");
        for (_, data) in &fresh {
            let d = common::digests_of(data);
            assert_eq!(
                index.key_by_sha1(&d.sha1).expect("lookup"),
                Some(BlobKey::new(d.sha512)),
                "round {round}: an entry committed during fsck was lost"
            );
            assert!(index.key_by_blake3(&d.blake3).expect("lookup").is_some());
        }
        overlapped += during;
    }
    assert!(overlapped > 0, "fsck must overlap the puts at least once");
}

/// A store written in the alias-log format of earlier releases is imported into the index when
/// first opened, once, even by two processes opening it at the same moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_with_the_old_alias_log_are_upgraded_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let files = inputs(&dir.path().join("in"), 60, 3);
    {
        let legacy = FsOptions {
            fsync: false,
            legacy_alias_log: true,
            ..Default::default()
        };
        let store = Store::new(FsBackend::open(&root, legacy).expect("open old"));
        for (_, data) in &files {
            store
                .put_bytes(data.clone(), &PutOptions::default())
                .await
                .expect("put");
        }
    }
    let log = root.join("index/aliases.log");
    // A torn last line, as a crash mid-append of the old release leaves.
    let mut text = std::fs::read(&log).expect("old log");
    text.extend_from_slice(b"v1 0123abc");
    std::fs::write(&log, text).expect("tear");
    let before = FsIndex::open(root.join("index/blobs.sqlite")).expect("index");
    assert_eq!(
        before.len().expect("len"),
        0,
        "the old release wrote no index"
    );

    let d0 = common::digests_of(&files[0].1);
    let sha1 = d0.shasum();
    let mut both: Vec<Child> = (0..2)
        .map(|_| {
            Command::new(BIN)
                .arg("--store")
                .arg(&root)
                .args(["has", &sha1])
                .spawn()
                .expect("spawn")
        })
        .collect();
    for c in &mut both {
        assert!(
            c.wait().expect("wait").success(),
            "found by sha1 after the upgrade"
        );
    }
    assert!(!log.exists() && root.join("index/aliases.log.imported").exists());
    let store = Store::open_fs(&root).expect("reopen");
    let index = FsIndex::open(root.join("index/blobs.sqlite")).expect("index");
    assert_eq!(
        index.len().expect("len"),
        files.len() as u64,
        "imported once"
    );
    for (_, data) in &files {
        let d = common::digests_of(data);
        for address in every_address(&d) {
            assert!(
                store.contains(&address).await.expect("contains"),
                "{address}"
            );
        }
    }
}

/// A damaged index is an error naming the file and the repair; sha512 reads still verify; `fsck`
/// sets the file aside and rebuilds the index from the blobs.
#[test]
fn a_damaged_index_is_reported_and_fsck_rebuilds_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let files = inputs(&dir.path().join("in"), 3, 4);
    let paths: Vec<&PathBuf> = files.iter().map(|(p, _)| p).collect();
    assert!(put_cmd(&root, &paths).status().expect("put").success());
    let db = root.join("index/blobs.sqlite");
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    std::fs::write(&db, vec![0x42; 16384]).expect("damage");
    let d = common::digests_of(&files[1].1);

    let out = run(&root, &["has", &d.shasum()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && out.status.code() != Some(3),
        "{err}"
    );
    assert!(
        err.contains("blobs.sqlite") && err.contains("tarvault fsck"),
        "{err}"
    );
    let out_file = dir.path().join("read.bin");
    let by_sha512 = run(
        &root,
        &[
            "get",
            &d.integrity().to_string(),
            "-o",
            &out_file.to_string_lossy(),
        ],
    );
    assert!(by_sha512.status.success(), "a sha512 read still verifies");
    assert_eq!(std::fs::read(&out_file).expect("read back"), files[1].1);

    let fsck = run(&root, &["fsck"]);
    let said = String::from_utf8_lossy(&fsck.stdout);
    assert!(fsck.status.success(), "{said}");
    assert!(said.contains("3 blobs without an entry added"), "{said}");
    assert!(run(&root, &["has", &d.shasum()]).status.success());
    let aside = std::fs::read_dir(root.join("index"))
        .expect("ls")
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains(".corrupt."));
    assert!(aside, "the damaged file is kept for inspection");
}

/// A store this process may not write (another user's) still answers lookups by every digest:
/// the index is opened read-only.
#[test]
fn a_store_this_user_cannot_write_still_answers_lookups() {
    let setpriv = Path::new("/usr/bin/setpriv");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !setpriv.exists() {
        eprintln!("skipped: needs root and setpriv to run the reader as another user");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let files = inputs(&dir.path().join("in"), 2, 5);
    let paths: Vec<&PathBuf> = files.iter().map(|(p, _)| p).collect();
    assert!(put_cmd(&root, &paths).status().expect("put").success());
    {
        use std::os::unix::fs::PermissionsExt;
        let open = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(dir.path(), open).expect("chmod");
    }
    let d = common::digests_of(&files[1].1);
    for address in every_address(&d) {
        let out = Command::new(setpriv)
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                BIN,
                "--store",
            ])
            .arg(&root)
            .args(["get", &address.to_string()])
            .output()
            .expect("run as nobody");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{address}: {err}");
        assert_eq!(out.stdout, files[1].1, "{address}");
    }
}

/// Disk full while indexing: the put fails with an error, none of its blobs stays visible (with or
/// without an entry), what was stored before is intact, and the store works once space is back.
/// "Full" is the file-size limit (`ulimit -f`, with SIGXFSZ ignored so writes fail with EFBIG):
/// the blobs are small enough to be written, the index's write-ahead log is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_while_indexing_fails_the_put_and_leaves_nothing_half_indexed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let before = inputs(&dir.path().join("before"), 3, 6);
    let paths: Vec<&PathBuf> = before.iter().map(|(p, _)| p).collect();
    assert!(put_cmd(&root, &paths).status().expect("put").success());

    let batch_dir = dir.path().join("batch");
    std::fs::create_dir_all(&batch_dir).expect("mkdir");
    let batch: Vec<PathBuf> = (0..3000u64)
        .map(|i| {
            let p = batch_dir.join(format!("{i}.bin"));
            std::fs::write(&p, noise(64 + (i as usize % 512), 7_000_000 + i)).expect("write");
            p
        })
        .collect();
    let limit_kib = 256;
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {limit_kib}; exec \"$0\" --store \"$1\" put \"${{@:2}}\""
        ))
        .arg(BIN)
        .arg(&root)
        .args(&batch)
        .output()
        .expect("run the limited put");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the put must fail: {err}");
    assert!(
        err.contains("blobs.sqlite"),
        "the error names the index: {err}"
    );
    eprintln!("the limited put said: {err}");

    // The CLI commits its files in groups: those of groups committed before the index filled
    // stay stored and were reported (one line each on stdout); of a group whose commit failed
    // nothing is visible, and each of its files was reported as an error.
    let (on_disk, indexed, dangling) = survey(&root).await;
    assert_eq!(on_disk, indexed, "every visible blob is indexed");
    assert!(
        dangling.is_empty(),
        "no entry without its blob: {dangling:?}"
    );
    let reported = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(on_disk < 3 + batch.len(), "{on_disk} blobs");
    assert_eq!(on_disk - 3, reported, "visible blobs = reported puts");
    let failed = err.lines().filter(|l| l.contains("error")).count();
    assert_eq!(reported + failed, batch.len(), "one report per file: {err}");
    for (_, data) in &before {
        let d = common::digests_of(data);
        assert!(run(&root, &["has", &d.shasum()]).status.success());
    }

    let again = put_cmd(&root, &batch.iter().collect::<Vec<_>>())
        .status()
        .expect("put");
    assert!(again.success(), "with space back the same put succeeds");
    let (on_disk, indexed, dangling) = survey(&root).await;
    assert_eq!((on_disk, indexed, dangling.len()), (3003, 3003, 0));
}

/// A blob file in another blob's shard directory (moved by hand, or restored from a backup into
/// the wrong place) is not a blob the store can serve: `ls` does not list it, and fsck reports it
/// (not clean) and puts it back once its bytes verify, so that listing, reads and the index agree
/// again, instead of calling the store clean and removing the blob's index entry. A file whose
/// bytes do not match its name is reported and left in place; no bytes are ever deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_puts_back_a_blob_file_in_the_wrong_shard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = Store::open(root.to_str().expect("utf8"))
        .await
        .expect("open");
    let data = noise(5000, 3);
    store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    let d = common::digests_of(&data);
    let hex = BlobKey::new(d.sha512).to_hex();
    let placed = root
        .join("sha512")
        .join(&hex[..2])
        .join(&hex[2..4])
        .join(&hex);
    let shard = if hex.starts_with("0000") { "ff" } else { "00" };
    let wrong_dir = root.join("sha512").join(shard).join(shard);
    std::fs::create_dir_all(&wrong_dir).expect("mkdir");
    let wrong = wrong_dir.join(&hex);
    std::fs::rename(&placed, &wrong).expect("move the blob");
    // A blob-like name whose bytes are not that blob: reported, never moved or deleted.
    let bogus_hex = hex.chars().rev().collect::<String>().to_uppercase();
    let bogus = wrong_dir.join(&bogus_hex);
    std::fs::write(&bogus, b"not that blob").expect("write");

    let listed: Vec<_> = store.list_info().try_collect().await.expect("ls");
    assert!(
        listed.is_empty(),
        "ls offers blobs get cannot find: {listed:?}"
    );
    assert!(store.get(&d.integrity()).await.is_err());

    let report = store.fsck(&FsckOptions::default()).await.expect("fsck");
    assert!(!report.is_clean(), "{report:?}");
    assert_eq!(report.checked, 1, "{report:?}");
    assert_eq!(report.index.removed, 0, "{report:?}");
    assert_eq!(report.misplaced.files.len(), 2, "{report:?}");
    let restored: Vec<_> = report
        .misplaced
        .files
        .iter()
        .filter(|m| m.restored)
        .collect();
    assert_eq!(restored.len(), 1, "{report:?}");
    assert_eq!(restored[0].address, d.integrity().to_string());
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["misplaced"]["files"]["total"], 2, "{json}");
    assert_eq!(
        json["misplaced"]["files"]["kept"].as_array().map(Vec::len),
        Some(2),
        "{json}"
    );

    assert!(placed.is_file() && !wrong.exists());
    assert_eq!(std::fs::read(&bogus).expect("kept"), b"not that blob");
    for address in every_address(&d) {
        let got = store.get(&address).await.expect("get").bytes().await;
        assert_eq!(got.expect("bytes"), data, "{address}");
    }
    let listed: Vec<_> = store.list_info().try_collect().await.expect("ls");
    assert_eq!(listed.len(), 1);

    // The bogus file stays reported (left alone); the restored blob is no longer misplaced.
    let again = store.fsck(&FsckOptions::default()).await.expect("fsck");
    assert_eq!(again.misplaced.files.len(), 1, "{again:?}");
    assert_eq!(again.misplaced.restored, 0);
    assert!(!again.misplaced.files.kept()[0].restored);
    std::fs::remove_file(&bogus).expect("remove");
    assert!(store
        .fsck(&FsckOptions::default())
        .await
        .expect("fsck")
        .is_clean());
}

/// A gc delete that fails leaves its blob stored, and gc says so: the blob is counted in
/// `failed`, not reported deleted, and its bytes are not counted as freed. gc once reported it
/// like any other (`deleted <address> <size>`, `"deleted": true`) and counted it in `garbage`,
/// so an operator was told of blobs deleted that were still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gc_delete_that_fails_is_not_reported_deleted() {
    use tarvault::ops::gc::{gc, GcOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("s");
    let fs = FsBackend::open(&root, FsOptions::default()).expect("open");
    let store = Store::new(fs.clone());
    let (live, garbage) = (noise(3000, 61), noise(4000, 62));
    for data in [&live, &garbage] {
        store
            .put_bytes(data.clone(), &PutOptions::default())
            .await
            .expect("put");
    }
    // A delete first moves its blob into `tmp/`: a file in that directory's place fails it.
    std::fs::remove_dir_all(root.join("tmp")).expect("rm tmp");
    std::fs::write(root.join("tmp"), b"not a directory").expect("write");
    let keep = [Integrity::parse_address(&common::sha512_sri(&live))];
    let options = GcOptions {
        grace: Duration::ZERO,
        delete: true,
    };
    let mut reported = Vec::new();
    let report = gc(&store, keep, &options, |k, size| reported.push((*k, size)))
        .await
        .expect("gc");
    let key = common::key_of(&garbage);
    assert!(fs.blob_path(&key).exists(), "the delete failed");
    assert_eq!(report.failed.total(), 1, "{report:?}");
    assert_eq!((report.garbage, report.garbage_bytes), (0, 0), "{report:?}");
    assert!(reported.is_empty(), "reported deleted: {reported:?}");
    assert_eq!(report.kept_live, 1);
}

/// A blob with no index entry (a crash between its link and its record, a restore of the blob
/// files alone: what `fsck` indexes) that the live set names only by its sha1 (npm's shasum, all
/// the mapping has for old tarballs) or its blake3 is live: gc finds that digest in its bytes
/// and keeps it, and still deletes real garbage. gc once looked the sha1 up in the index alone,
/// found nothing, and deleted the blob as garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_a_live_blob_the_index_has_no_entry_for() {
    use tarvault::ops::gc::{gc, GcOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FsBackend::open(dir.path().join("s"), FsOptions::default()).expect("open");
    let store = Store::new(fs.clone());
    let (by_sha1, by_blake3, garbage) = (noise(3000, 71), noise(3100, 72), noise(3200, 73));
    store
        .put_bytes(garbage.clone(), &PutOptions::default())
        .await
        .expect("put");
    for data in [&by_sha1, &by_blake3] {
        let path = fs.blob_path(&common::key_of(data));
        std::fs::create_dir_all(path.parent().expect("shard")).expect("mkdir");
        std::fs::write(&path, data).expect("a blob file without its record");
    }
    let never = common::digests_of(b"never stored");
    let keep = [
        common::digests_of(&by_sha1).hash(Algorithm::Sha1),
        common::digests_of(&by_blake3).hash(Algorithm::Blake3),
        never.hash(Algorithm::Sha1),
    ]
    .map(|h| Integrity::parse_address(&h.to_string()));
    let options = GcOptions {
        grace: Duration::ZERO,
        delete: true,
    };
    let report = gc(&store, keep, &options, |_, _| {}).await.expect("gc");
    for data in [&by_sha1, &by_blake3] {
        assert!(
            fs.blob_path(&common::key_of(data)).exists(),
            "a live blob was deleted: {report:?}"
        );
    }
    assert!(!fs.blob_path(&common::key_of(&garbage)).exists());
    assert_eq!(
        (report.garbage, report.kept_unindexed),
        (1, 2),
        "{report:?}"
    );
}
