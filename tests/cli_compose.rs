//! `tarvault copy`, `scrub`, `gc`, `repair` and `--store` configuration files, run as a user would.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::TryStreamExt;
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::backend::BlobKey;
use tarvault::{PutOptions, Store};

use common::{corpus, corpus_bytes, key_of, noise, sha1_hex, sha512_sri};

const BIN: &str = env!("CARGO_BIN_EXE_tarvault");

fn tv(store: &str, args: &[&str]) -> Output {
    tv_in(Path::new("."), store, args)
}

fn tv_in(cwd: &Path, store: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(cwd)
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("TARVAULT_STORE")
        .output()
        .expect("run tarvault")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn fs(path: &Path) -> FsBackend {
    FsBackend::open(
        path,
        FsOptions {
            fsync: false,
            ..Default::default()
        },
    )
    .expect("open fs store")
}

async fn keys(path: &Path) -> Vec<BlobKey> {
    let mut k: Vec<BlobKey> = Store::new(fs(path))
        .list()
        .try_collect()
        .await
        .expect("list");
    k.sort();
    k
}

async fn seed_corpus(path: &Path) -> Vec<Bytes> {
    let store = Store::new(fs(path));
    let mut all = Vec::new();
    for e in corpus() {
        let b = corpus_bytes(&e);
        store
            .put_bytes(b.clone(), &PutOptions::default())
            .await
            .expect("seed");
        all.push(b);
    }
    all
}

/// Sets a blob file's modification time (the age gc goes by).
fn age(backend: &FsBackend, key: &BlobKey, ago: Duration) {
    let path = backend.blob_path(key);
    let mut perms = std::fs::metadata(&path).expect("blob").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms.clone()).expect("chmod");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_modified(SystemTime::now() - ago).expect("set mtime");
    drop(f);
    perms.set_readonly(true);
    std::fs::set_permissions(&path, perms).expect("chmod back");
}

fn summary_number(out: &str, after: &str) -> u64 {
    // "copied 12 blobs (… bytes), 34 already there, 0 failed, in 1.0s"
    let i = out
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} not in {out:?}"));
    out[..i]
        .split_whitespace()
        .last()
        .and_then(|n| n.trim_start_matches('(').parse().ok())
        .unwrap_or_else(|| panic!("no number before {after:?} in {out:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_killed_midway_then_resumed_to_completion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let all = seed_corpus(&src).await;
    let total = all.len();
    let mut child = Command::new(BIN)
        .args(["copy", "--from"])
        .arg(&src)
        .arg("--to")
        .arg(&dst)
        .args(["--rate", "15blobs/s", "--concurrency", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn copy");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if dst.exists() && keys(&dst).await.len() >= 8 {
            break;
        }
        assert!(Instant::now() < deadline, "copy made no progress");
        assert!(
            child.try_wait().expect("poll").is_none(),
            "copy ended early"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    child.kill().expect("kill");
    child.wait().expect("reap");
    let partial = keys(&dst).await.len();
    assert!(partial < total, "the copy finished before it was killed");

    let out = tv(".", &["copy", "--from", path(&src), "--to", path(&dst)]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let skipped = summary_number(&stdout, "already there") as usize;
    let copied = summary_number(&stdout, "blobs (") as usize;
    // Every blob the killed copy finished is skipped. A blob whose file was linked when the kill
    // came, but not yet recorded in the index, is written again (which records it): at most one
    // per blob in flight (`--concurrency 2`).
    assert!(
        skipped <= partial && partial - skipped <= 2,
        "{partial} blobs there before, {stdout}"
    );
    assert_eq!(copied + skipped, total, "{stdout}");
    assert_eq!(keys(&dst).await, keys(&src).await);
    // Every copied blob verifies, and a third run has nothing to do.
    let fsck = tv(path(&dst), &["fsck"]);
    assert!(fsck.status.success(), "{}", text(&fsck.stdout));
    let again = tv(".", &["copy", "--from", path(&src), "--to", path(&dst)]);
    assert_eq!(summary_number(&text(&again.stdout), "blobs ("), 0);
    let target = Store::new(fs(&dst));
    for b in all.iter().take(5) {
        let got = target
            .get(&common::addr(&sha512_sri(b)))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("verified");
        assert_eq!(&got, b);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_of_a_corrupt_source_blob_fails_and_copies_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let store = Store::new(fs(&src));
    let blobs: Vec<Vec<u8>> = (0..6).map(|i| noise(5000 + i, 700 + i as u64)).collect();
    for b in &blobs {
        store
            .put_bytes(b.clone(), &PutOptions::default())
            .await
            .expect("put");
    }
    let bad_key = key_of(&blobs[2]);
    let blob = fs(&src).blob_path(&bad_key);
    let mut perms = std::fs::metadata(&blob).expect("blob").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).expect("chmod");
    std::fs::write(&blob, noise(5002, 1)).expect("plant");

    let out = tv(
        ".",
        &["copy", "--from", path(&src), "--to", path(&dst), "--json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(text(&out.stdout).trim()).expect("json summary");
    assert_eq!(report["copied"], 5);
    assert_eq!(report["failed"]["total"], 1);
    let failed = report["failed"]["kept"].as_array().expect("failed");
    assert_eq!(failed.len(), 1);
    assert!(failed[0]
        .as_str()
        .unwrap_or("")
        .contains(&bad_key.to_string()));
    let got = keys(&dst).await;
    assert_eq!(got.len(), 5);
    assert!(!got.contains(&bad_key), "a corrupt blob was copied");
}

/// `--grace 24` (beside a default of `24h`) is refused for want of a unit, not taken as 24
/// seconds, which let `--delete` take a blob ten minutes old; `0` needs none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_refuses_a_grace_period_without_its_unit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let backend = fs(&root);
    let store = Store::new(backend.clone());
    let (live, garbage) = (noise(3000, 900), noise(3001, 901));
    for b in [&live, &garbage] {
        store
            .put_bytes(b.clone(), &PutOptions::default())
            .await
            .expect("put");
    }
    age(&backend, &key_of(&garbage), Duration::from_secs(600));
    let keep = dir.path().join("keep");
    std::fs::write(&keep, format!("{}\n", sha512_sri(&live))).expect("keep");
    let (s, k) = (path(&root), path(&keep));
    for grace in ["24", "1.5"] {
        let out = tv(s, &["gc", "--keep", k, "--grace", grace, "--delete"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--grace {grace}: {err}");
        assert!(err.contains(&format!("{grace}h")), "{err}");
        assert_eq!(keys(&root).await.len(), 2, "--grace {grace} deleted");
    }
    let out = tv(s, &["gc", "--keep", k, "--grace", "0", "--delete"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(keys(&root).await, vec![key_of(&live)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_never_deletes_live_or_recent_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let backend = fs(&root);
    let store = Store::new(backend.clone());
    let mk = |i: u64| noise(3000 + i as usize, 800 + i);
    let (live_json, live_sha1, old_garbage, recent) = (mk(0), mk(1), mk(2), mk(3));
    for b in [&live_json, &live_sha1, &old_garbage, &recent] {
        store
            .put_bytes(b.clone(), &PutOptions::default())
            .await
            .expect("put");
    }
    let week = Duration::from_secs(7 * 86400);
    for b in [&live_json, &live_sha1, &old_garbage] {
        age(&backend, &key_of(b), week);
    }
    age(&backend, &key_of(&recent), Duration::from_secs(600));
    // A mapping line (as `migrate` writes) and a bare shasum.
    let keep = dir.path().join("keep.jsonl");
    std::fs::write(
        &keep,
        format!(
            "{}\n{}\n",
            serde_json::json!({"name": "a", "version": "1.0.0", "file": "a-1.0.0.tgz",
                "integrity": sha512_sri(&live_json), "shasum": sha1_hex(&live_json), "size": 3000}),
            sha1_hex(&live_sha1)
        ),
    )
    .expect("keep");
    let s = path(&root);
    let k = path(&keep);

    // Dry run by default: reports, deletes nothing.
    let out = tv(s, &["gc", "--keep", k, "--grace", "1h"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains(&format!("would delete {}", key_of(&old_garbage))));
    assert_eq!(keys(&root).await.len(), 4);

    let out = tv(
        s,
        &["gc", "--keep", k, "--grace", "1h", "--delete", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Every line is JSON: one object per garbage blob, then the summary.
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["garbage"], key_of(&old_garbage).to_string());
    assert_eq!(lines[0]["size"], old_garbage.len());
    assert_eq!(lines[0]["deleted"], true);
    let report = &lines[1];
    assert_eq!(report["garbage"], 1);
    assert_eq!(report["kept_live"], 2);
    assert_eq!(report["kept_recent"], 1);
    let left = keys(&root).await;
    assert!(!left.contains(&key_of(&old_garbage)));
    for b in [&live_json, &live_sha1, &recent] {
        assert!(
            left.contains(&key_of(b)),
            "gc deleted a live or recent blob"
        );
    }

    // Live blobs survive even with no grace at all; the recent one was only protected by it.
    let out = tv(s, &["gc", "--keep", k, "--grace", "0s", "--delete"]);
    assert!(out.status.success());
    let left = keys(&root).await;
    assert_eq!(left.len(), 2);
    assert!(left.contains(&key_of(&live_json)) && left.contains(&key_of(&live_sha1)));

    // An empty or malformed keep file stops gc before anything is deleted.
    for bad in [
        "",
        "# nothing\n",
        "sha512-notbase64!!\n",
        "{\"name\": \"x\"}\n",
    ] {
        std::fs::write(&keep, bad).expect("keep");
        let out = tv(s, &["gc", "--keep", k, "--grace", "0s", "--delete"]);
        assert_eq!(out.status.code(), Some(2), "keep file {bad:?}");
        assert_eq!(keys(&root).await.len(), 2);
    }

    // A grace period too long for a Duration is a usage error, not a panic (exit 101).
    std::fs::write(&keep, format!("{}\n", sha512_sri(&live_sha1))).expect("keep");
    for grace in ["99999999999999999999d", "18446744073709551616s"] {
        let out = tv(s, &["gc", "--keep", k, "--grace", grace]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--grace {grace}: {err}");
        assert!(err.contains(grace) && !err.contains("panicked"), "{err}");
    }
}

/// A blob put again (by a publish that found its tarball stored, say) is as recent as its last
/// put: gc, whose live set does not know it yet, keeps it for the grace period. Both ways a put
/// can find the bytes stored are covered: with `--expect` (the bytes are only hashed) and without
/// (written, then found present at the commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_a_blob_put_again_within_the_grace_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let backend = fs(&root);
    let store = Store::new(backend.clone());
    let mk = |i: u64| noise(5000 + i as usize, 850 + i);
    let (live, expected, plain, garbage) = (mk(0), mk(1), mk(2), mk(3));
    for b in [&live, &expected, &plain, &garbage] {
        store
            .put_bytes(b.clone(), &PutOptions::default())
            .await
            .expect("put");
        age(&backend, &key_of(b), Duration::from_secs(7 * 86400));
    }
    let s = path(&root);
    for (b, expect) in [(&expected, true), (&plain, false)] {
        let file = dir.path().join("again.tgz");
        std::fs::write(&file, b).expect("write");
        let sri = sha512_sri(b);
        let mut args = vec!["put", path(&file)];
        if expect {
            args.extend(["--expect", &sri]);
        }
        let out = tv(s, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let keep = dir.path().join("keep");
    std::fs::write(&keep, format!("{}\n", sha512_sri(&live))).expect("keep");
    let out = tv(
        s,
        &[
            "gc",
            "--keep",
            path(&keep),
            "--grace",
            "1h",
            "--delete",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("summary")).expect("json");
    assert_eq!(report["garbage"], 1, "{stdout}");
    assert_eq!(report["kept_recent"], 2, "{stdout}");
    let left = keys(&root).await;
    assert!(!left.contains(&key_of(&garbage)));
    for b in [&live, &expected, &plain] {
        assert!(
            left.contains(&key_of(b)),
            "gc deleted a blob put within the grace period"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_is_paced_and_reports_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let backend = fs(&root);
    let store = Store::new(backend.clone());
    let blobs: Vec<Vec<u8>> = (0..10).map(|i| noise(100_000, 900 + i)).collect();
    for b in &blobs {
        store
            .put_bytes(b.clone(), &PutOptions::default())
            .await
            .expect("put");
    }
    let s = path(&root);
    let t = Instant::now();
    let out = tv(s, &["scrub", "--rate", "500KB/s"]);
    let took = t.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("scrubbed 10 blobs"));
    // 1 MB at 500 KB/s: about 2 s (the first chunk goes without waiting).
    assert!(took >= Duration::from_millis(1500), "not paced: {took:?}");
    let t = Instant::now();
    let out = tv(s, &["scrub", "--rate", "20blobs/s"]);
    assert!(out.status.success());
    assert!(t.elapsed() >= Duration::from_millis(400), "not paced");

    let blob = backend.blob_path(&key_of(&blobs[4]));
    let mut perms = std::fs::metadata(&blob).expect("blob").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).expect("chmod");
    std::fs::write(&blob, noise(100_000, 1)).expect("plant");
    let out = tv(s, &["scrub", "--rate", "100MB/s", "--json"]);
    assert_eq!(out.status.code(), Some(4));
    let report: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).expect("json");
    assert_eq!(report["corrupt"]["total"], 1);
    assert_eq!(report["corrupt"]["kept"].as_array().map(Vec::len), Some(1));
    assert_eq!(tv(s, &["scrub", "--rate", "fast"]).status.code(), Some(2));
}

/// A misplaced blob file makes scrub exit 4, as it makes fsck: the text says why, as fsck's does,
/// instead of "0 corrupt" beside a failing status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_names_the_misplaced_files_it_exits_4_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = Store::new(fs(&root));
    let blob = noise(10_000, 77);
    store
        .put_bytes(blob.clone(), &PutOptions::default())
        .await
        .expect("put");
    // A blob-like name in another shard whose bytes are not that blob: left where it is.
    let hex = key_of(&blob).to_hex().to_uppercase();
    let elsewhere = root.join("sha512").join("00").join("00");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::fs::write(elsewhere.join(&hex), b"not that blob").expect("plant");
    let out = tv(path(&root), &["scrub"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("misplaced {}", sha512_sri(&blob))),
        "{stdout}"
    );
    assert!(stdout.contains("misplaced blob files: 1 found"), "{stdout}");
}

/// A replica whose listing fails is left out of a replicated store's listing, and the command
/// still succeeds from the others; by default its stderr names the replica left out (before, the
/// warning was below the default log level: exit 0 and not a word).
#[cfg(feature = "http")]
#[test]
fn a_replica_left_out_of_a_listing_is_named_on_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let file = d.join("blob.bin");
    std::fs::write(&file, noise(5000, 7)).expect("write");
    let out = tv_in(d, "r0", &["put", &file.to_string_lossy()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // An http:// replica has no listing: a replica whose listing always fails.
    let spec = r#"{"replicated": {"replicas": ["r0", "http://127.0.0.1:9"], "write_quorum": 1}}"#;
    let out = tv_in(d, spec, &["ls"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(text(&out.stdout).lines().count(), 1);
    assert!(err.contains("replica list failed"), "{err}");
    assert!(err.contains("127.0.0.1:9"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_names_replicated_and_cached_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("stores.toml"),
        r#"
default = "rep"

[stores.rep.replicated]
replicas = ["r0", "r1", "r2"]
write_quorum = 2
read_timeout = "5s"

[stores.edge.cached]
local = "cache"
remote = "@rep"
capacity = "1MiB"
"#,
    )
    .expect("config");
    let data = noise(20_000, 1000);
    let file: PathBuf = d.join("blob.bin");
    std::fs::write(&file, &data).expect("file");

    let out = tv_in(d, "config:stores.toml", &["put", path(&file)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // At least the quorum has it (the third commit may be cut short when the process exits).
    let mut holding = 0;
    for r in ["r0", "r1", "r2"] {
        let k = keys(&d.join(r)).await;
        assert!(k.is_empty() || k == vec![key_of(&data)], "replica {r}");
        holding += k.len();
    }
    assert!(holding >= 2, "quorum 2, {holding} replicas hold the blob");
    let out = tv_in(d, "config:stores.toml#rep", &["repair"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for r in ["r0", "r1", "r2"] {
        assert_eq!(keys(&d.join(r)).await, vec![key_of(&data)], "replica {r}");
    }
    // A replica loses the blob; reading repairs it, and so does `repair`.
    Store::new(fs(&d.join("r0")))
        .delete(&common::addr(&sha512_sri(&data)))
        .await
        .expect("delete");
    Store::new(fs(&d.join("r2")))
        .delete(&common::addr(&sha512_sri(&data)))
        .await
        .expect("delete");
    let out = tv_in(d, "stores.toml#rep", &["repair"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("2 copies written"),
        "{}",
        text(&out.stdout)
    );
    for r in ["r0", "r1", "r2"] {
        assert_eq!(keys(&d.join(r)).await, vec![key_of(&data)], "replica {r}");
    }
    // The cached store reads through to the replicated one and fills its local tier.
    let out = tv_in(d, "config:stores.toml#edge", &["get", &sha1_hex(&data)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, data);
    assert_eq!(keys(&d.join("cache")).await, vec![key_of(&data)]);
    // Inline JSON, relative to the working directory.
    let out = tv_in(
        d,
        r#"{"replicated": {"replicas": ["r1", "r2"], "write_quorum": 1}}"#,
        &["has", &sha512_sri(&data)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // repair refuses a store that is not replicated; bad configurations are usage errors.
    assert_eq!(tv_in(d, "r0", &["repair"]).status.code(), Some(2));
    assert_eq!(tv_in(d, "stores.toml#nope", &["ls"]).status.code(), Some(2));
    // A mistyped configuration path is an error, not a new empty store of that name.
    assert_eq!(tv_in(d, "stores-typo.toml", &["ls"]).status.code(), Some(2));
    assert!(!d.join("stores-typo.toml").exists());
    std::fs::write(
        d.join("bad.json"),
        r#"{"replicated": {"replicas": ["r0"], "write_quorum": 3}}"#,
    )
    .expect("bad");
    let out = tv_in(d, "bad.json", &["ls"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("quorum"));
}

/// A command that only reads refuses a member of a configuration where nothing is, as it refuses
/// a plain path: a mistyped replica or remote is an error (exit 2), not a new, empty member
/// answering "not found". A cache's local tier is still made where there is none, and `repair`,
/// which writes, makes a new replica and fills it.
#[test]
fn a_read_refuses_a_configuration_member_where_nothing_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let data = noise(20_000, 1001);
    let file = d.join("blob.bin");
    std::fs::write(&file, &data).expect("file");
    let out = tv_in(d, "r0", &["put", path(&file)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sri = sha512_sri(&data);

    let replicated = r#"{"replicated": {"replicas": ["r0", "r1"], "write_quorum": 1}}"#;
    for args in [&["ls"][..], &["has", &sri], &["get", &sri], &["fsck"]] {
        let out = tv_in(d, replicated, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(text(&out.stderr).contains("r1"), "{}", text(&out.stderr));
        assert!(!d.join("r1").exists(), "{args:?} made the missing replica");
    }
    let mistyped = r#"{"cached": {"local": "cache", "remote": "r0-typo"}}"#;
    let out = tv_in(d, mistyped, &["has", &sri]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!d.join("r0-typo").exists() && !d.join("cache").exists());

    let cached = r#"{"cached": {"local": "cache", "remote": "r0"}}"#;
    let out = tv_in(d, cached, &["get", &sri]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, data);
    assert!(
        d.join("cache").is_dir(),
        "the tier is made as a read fills it"
    );

    let out = tv_in(d, replicated, &["repair"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = tv_in(d, "r1", &["has", &sri]);
    assert!(
        out.status.success(),
        "repair filled the new replica: {out:?}"
    );
}
