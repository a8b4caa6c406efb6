//! The alias markers on a real server: what a lookup costs (requests counted by a wrapper around
//! the object_store client), a second process seeing a put at once, a store of alias-log segments
//! of an earlier version upgrading while it answers, and fsck repairing a corrupt marker.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tarvault::backend::s3::S3Backend;
use tarvault::backend::{Backend, BlobKey};
use tarvault::integrity::{Algorithm, Digests};
use tarvault::{FsckOptions, PutOptions, Store};

use super::counting::Counting;
use super::Server;
#[cfg(feature = "cli")]
use crate::common::noise;

/// A backend on `prefix` whose requests are counted.
pub fn counted(s: &Server, prefix: &str) -> (S3Backend, Arc<super::counting::Counts>) {
    let c = s.config(prefix);
    let counting = Counting::new(Arc::new(c.build().expect("client")));
    let counts = counting.counts.clone();
    (S3Backend::with_store_config(Arc::new(counting), &c), counts)
}

pub async fn put_some(s: &Server, prefix: &str, n: u64) -> Vec<(Vec<u8>, Digests)> {
    let store = Store::new(
        S3Backend::connect(&s.config(prefix))
            .await
            .expect("connect"),
    );
    crate::common::put_noise(&store, n, (700, 1), 900).await
}

fn by(alg: Algorithm, d: &Digests) -> tarvault::Hash {
    d.hash(alg)
}

/// A cold lookup by sha1 or blake3 is one GET; a miss is at most two requests (the first miss
/// of a process also lists the old log once), later misses one.
pub async fn lookups_cost_one_request(s: &Server) {
    let prefix = Server::fresh_prefix("mcost");
    let all = put_some(s, &prefix, 5).await;
    let (b, counts) = counted(s, &prefix);
    for (_, d) in &all {
        for alg in [Algorithm::Sha1, Algorithm::Blake3] {
            let fresh = counted(s, &prefix);
            let got = fresh.0.resolve_alias(&by(alg, d)).await.expect("resolve");
            assert_eq!(got, Some(BlobKey::new(d.sha512)));
            assert_eq!(fresh.1.total(), 1, "a cold {alg} lookup");
        }
    }
    let missing = |i: u8| tarvault::Hash::from_hex(Algorithm::Sha1, &hex::encode([i; 20]));
    assert_eq!(
        b.resolve_alias(&missing(1).expect("hash"))
            .await
            .expect("miss"),
        None
    );
    assert!(
        counts.total() <= 2,
        "first miss: {} requests",
        counts.total()
    );
    let before = counts.total();
    assert_eq!(
        b.resolve_alias(&missing(2).expect("hash"))
            .await
            .expect("miss"),
        None
    );
    assert_eq!(counts.total() - before, 1, "a later miss");
}

/// A blob put by another process (the CLI) is found by sha1 at once by a third process, and
/// within the miss TTL (1 s) by a process that had just missed it.
pub async fn another_process_sees_a_put_at_once(s: &Server) {
    #[cfg(feature = "cli")]
    {
        let prefix = Server::fresh_prefix("mproc");
        let url = format!("s3://{}/{prefix}", s.bucket());
        let data = noise(3000, 77);
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("blob");
        std::fs::write(&src, &data).expect("write");
        let shasum = {
            use sha1::Digest;
            hex::encode(sha1::Sha1::digest(&data))
        };
        let run = |args: &[&str]| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tarvault"));
            cmd.arg("--store").arg(&url).args(args);
            for k in [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_REGION",
                "AWS_ENDPOINT_URL",
                "AWS_ALLOW_HTTP",
            ] {
                cmd.env(k, s.var(k));
            }
            cmd.output().expect("run tarvault")
        };
        let watcher = S3Backend::connect(&s.config(&prefix))
            .await
            .expect("connect");
        let h = tarvault::Hash::from_hex(Algorithm::Sha1, &shasum).expect("hash");
        assert_eq!(watcher.resolve_alias(&h).await.expect("miss"), None);
        let put = run(&["put", src.to_str().expect("utf8")]);
        assert!(
            put.status.success(),
            "{}",
            String::from_utf8_lossy(&put.stderr)
        );
        let put_at = Instant::now();
        let stat = run(&["stat", &shasum]);
        assert!(
            stat.status.success(),
            "{}",
            String::from_utf8_lossy(&stat.stderr)
        );
        loop {
            if watcher.resolve_alias(&h).await.expect("resolve").is_some() {
                break;
            }
            assert!(
                put_at.elapsed() < Duration::from_millis(1500),
                "still hidden {:?} after the put",
                put_at.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    #[cfg(not(feature = "cli"))]
    let _ = s;
}

/// Turns a store into what an earlier version left: no markers, every record in a segment of the
/// alias log.
async fn make_legacy(raw: &Arc<dyn ObjectStore>, prefix: &str, all: &[(Vec<u8>, Digests)]) {
    let markers = Path::from(format!("{prefix}/markers"));
    let listed: Vec<_> = raw.list(Some(&markers)).try_collect().await.expect("list");
    for m in listed {
        raw.delete(&m.location).await.expect("delete marker");
    }
    for (i, chunk) in all.chunks(4).enumerate() {
        let body: String = chunk
            .iter()
            .map(|(_, d)| {
                format!(
                    "v1 {} {} {} {}\n",
                    d.sha512_hex(),
                    d.shasum(),
                    d.blake3_hex(),
                    d.size
                )
            })
            .collect();
        let name = Path::from(format!("{prefix}/alias/log/00000000000{i:03x}-{:016x}", i));
        raw.put(&name, PutPayload::from(Bytes::from(body)))
            .await
            .expect("segment");
    }
}

/// A store of segments answers every lookup while a new process imports them into markers, and
/// after the import a lookup is one GET again.
pub async fn segments_upgrade_to_markers(s: &Server) {
    let prefix = Server::fresh_prefix("mupg");
    let all = put_some(s, &prefix, 10).await;
    let raw = s.raw();
    make_legacy(&raw, &prefix, &all).await;
    let log = Path::from(format!("{prefix}/alias/log"));
    let reader = Store::new(
        S3Backend::connect(&s.config(&prefix))
            .await
            .expect("connect"),
    );
    crate::common::assert_found_by_aliases(&reader, &all).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<_> = raw.list(Some(&log)).try_collect().await.expect("list");
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} segments not imported",
            left.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, d) in &all {
        let (b, counts) = counted(s, &prefix);
        let got = b
            .resolve_alias(&by(Algorithm::Sha1, d))
            .await
            .expect("resolve");
        assert_eq!(got, Some(BlobKey::new(d.sha512)));
        assert_eq!(counts.total(), 1, "after the upgrade");
    }
}

/// A truncated marker is skipped (the blob is still there, just not found by that alias), and
/// fsck rewrites it; fsck of a store of segments imports them.
pub async fn fsck_repairs_markers_and_imports_segments(s: &Server) {
    let prefix = Server::fresh_prefix("mfsck");
    let all = put_some(s, &prefix, 6).await;
    let raw = s.raw();
    let (_, d0) = &all[0];
    let marker = Path::from(format!(
        "{prefix}/markers/sha1/{}/{}",
        &d0.shasum()[..2],
        d0.shasum()
    ));
    raw.put(&marker, PutPayload::from_static(b"v1 0123"))
        .await
        .expect("corrupt");
    let b = S3Backend::connect(&s.config(&prefix))
        .await
        .expect("connect");
    assert_eq!(
        b.resolve_alias(&by(Algorithm::Sha1, d0))
            .await
            .expect("resolve"),
        None
    );
    let report = Store::new(b)
        .fsck(&FsckOptions::default())
        .await
        .expect("fsck");
    assert_eq!(report.index.corrected, 1, "{report:?}");
    let fresh = Store::new(
        S3Backend::connect(&s.config(&prefix))
            .await
            .expect("connect"),
    );
    crate::common::assert_found_by_aliases(&fresh, &all).await;

    // A store of segments, imported by fsck.
    let prefix = Server::fresh_prefix("mfsck2");
    let all = put_some(s, &prefix, 6).await;
    make_legacy(&raw, &prefix, &all).await;
    let store = Store::new(
        S3Backend::connect(&s.config(&prefix))
            .await
            .expect("connect"),
    );
    store.fsck(&FsckOptions::default()).await.expect("fsck");
    let log = Path::from(format!("{prefix}/alias/log"));
    let left: Vec<_> = raw.list(Some(&log)).try_collect().await.expect("list");
    assert!(left.is_empty(), "fsck left {} segments", left.len());
    let fresh = Store::new(
        S3Backend::connect(&s.config(&prefix))
            .await
            .expect("connect"),
    );
    crate::common::assert_found_by_aliases(&fresh, &all).await;
}

/// The object a blob is stored as (`blobs/<2>/<sha512 in base64url>`).
fn blob_path(prefix: &str, d: &Digests) -> Path {
    use base64::Engine;
    let name = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.sha512);
    Path::from(format!("{prefix}/blobs/{}/{name}", &name[..2]))
}

fn marker_path(prefix: &str, alg: Algorithm, d: &Digests) -> Path {
    let (dir, hex) = match alg {
        Algorithm::Sha1 => ("sha1", d.shasum()),
        _ => ("blake3", d.blake3_hex()),
    };
    Path::from(format!("{prefix}/markers/{dir}/{}/{hex}", &hex[..2]))
}

async fn exists(raw: &Arc<dyn ObjectStore>, path: &Path) -> bool {
    match raw.head(path).await {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(e) => panic!("head {path}: {e}"),
    }
}

/// A config whose fsck checks every marker, however young (the test's markers are seconds old).
fn no_grace(s: &Server, prefix: &str) -> tarvault::backend::s3::S3Config {
    let mut c = s.config(prefix);
    c.alias_grace = Duration::ZERO;
    c
}

/// Blobs deleted behind the store's back leave markers that fsck reports (count and JSON), and
/// removes once they are older than the grace period: a lookup by sha1 then misses cleanly, and
/// the other blobs and their markers are untouched. A marker that cannot be read is reported
/// and kept.
pub async fn fsck_removes_dangling_markers(s: &Server) {
    let prefix = Server::fresh_prefix("mdangle");
    let all = put_some(s, &prefix, 6).await;
    let raw = s.raw();
    for (_, d) in &all[..2] {
        raw.delete(&blob_path(&prefix, d))
            .await
            .expect("raw delete");
    }
    let junk = Path::from(format!("{prefix}/markers/sha1/ab/{}", "ab".repeat(20)));
    raw.put(&junk, PutPayload::from_static(b"v1 0123"))
        .await
        .expect("plant");
    let (gone, kept) = (&all[0].1, &all[2..]);

    // Before the repair a lookup by sha1 resolves to the missing blob.
    let store = Store::new(
        S3Backend::connect(&s.config(&prefix))
            .await
            .expect("connect"),
    );
    assert_eq!(
        store
            .backend()
            .resolve_alias(&by(Algorithm::Sha1, gone))
            .await
            .expect("resolve"),
        Some(BlobKey::new(gone.sha512))
    );
    // With the default grace (an hour) these markers are too young to be checked.
    let report = store.fsck(&FsckOptions::default()).await.expect("fsck");
    assert_eq!(report.checked, 4);
    let ix = report.index;
    assert_eq!((ix.listed, ix.recent, ix.removed), (13, 13, 0), "{ix:?}");
    assert!(exists(&raw, &marker_path(&prefix, Algorithm::Sha1, gone)).await);

    let store = Store::new(
        S3Backend::connect(&no_grace(s, &prefix))
            .await
            .expect("connect"),
    );
    // Report only (`--dangling-aliases report`): found and counted, nothing removed.
    let report_only = FsckOptions {
        dangling_aliases: tarvault::backend::Dangling::Report,
        ..FsckOptions::default()
    };
    let ix = store.fsck(&report_only).await.expect("fsck").index;
    assert_eq!((ix.listed, ix.dangling, ix.removed), (13, 4, 0), "{ix:?}");
    assert!(exists(&raw, &marker_path(&prefix, Algorithm::Sha1, gone)).await);

    let report = store.fsck(&FsckOptions::default()).await.expect("fsck");
    let ix = report.index;
    assert_eq!(ix.listed, 13, "{ix:?}");
    assert_eq!((ix.dangling, ix.removed), (4, 4), "{ix:?}");
    assert_eq!((ix.unreadable, ix.recent), (1, 0), "{ix:?}");
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["index"]["dangling"], 4, "{json}");
    assert_eq!(json["index"]["removed"], 4, "{json}");
    for (i, (_, d)) in all.iter().enumerate() {
        for alg in [Algorithm::Sha1, Algorithm::Blake3] {
            let there = exists(&raw, &marker_path(&prefix, alg, d)).await;
            assert_eq!(there, i >= 2, "blob {i}'s {alg} marker");
        }
        assert_eq!(
            exists(&raw, &blob_path(&prefix, d)).await,
            i >= 2,
            "blob {i}"
        );
    }
    assert!(exists(&raw, &junk).await, "an unreadable marker is kept");

    // A fresh process: the lookup misses cleanly (not found, one GET), the rest are served.
    let (b, counts) = counted(s, &prefix);
    assert_eq!(
        b.resolve_alias(&by(Algorithm::Sha1, gone))
            .await
            .expect("resolve"),
        None
    );
    assert!(counts.total() <= 2, "{} requests", counts.total());
    let fresh = Store::new(b);
    let err = fresh
        .get(&crate::common::addr(&gone.shasum()))
        .await
        .expect_err("not found");
    assert_eq!(err.kind(), tarvault::ErrorKind::NotFound, "{err}");
    crate::common::assert_found_by_aliases(&fresh, kept).await;

    // Nothing is left to remove.
    let report = store.fsck(&FsckOptions::default()).await.expect("fsck");
    assert_eq!((report.index.listed, report.index.dangling), (9, 0));
}

/// The race of a put whose old marker (its blob deleted) is still there: the put's create-only
/// marker PUTs answer "exists", fsck deletes the markers while the put's blob PUT is still on
/// its way (held back by a gate), then the blob lands. The put reads its markers back once its
/// blob is stored, so it finds them gone and writes them: the blob is found by both aliases.
pub async fn fsck_racing_a_put_of_a_dangling_blob(s: &Server) {
    let prefix = Server::fresh_prefix("mrace");
    let all = put_some(s, &prefix, 1).await;
    let (data, d) = &all[0];
    let raw = s.raw();
    raw.delete(&blob_path(&prefix, d))
        .await
        .expect("raw delete");

    let config = s.config(&prefix);
    let gate = super::gate::Gate::new(Arc::new(config.build().expect("client")));
    let putter = Store::new(S3Backend::with_store_config(gate.clone(), &config));
    let put = {
        let data = data.clone();
        tokio::spawn(async move { putter.put_bytes(data, &PutOptions::default()).await })
    };
    gate.reached(1, 2).await;
    let sweeper = Store::new(
        S3Backend::connect(&no_grace(s, &prefix))
            .await
            .expect("connect"),
    );
    let report = sweeper.fsck(&FsckOptions::default()).await.expect("fsck");
    assert_eq!(
        (report.index.dangling, report.index.removed),
        (2, 2),
        "{:?}",
        report.index
    );
    assert!(!exists(&raw, &marker_path(&prefix, Algorithm::Sha1, d)).await);
    gate.open();
    let put = put.await.expect("join").expect("put");
    assert_eq!(put.digests, *d);
    for alg in [Algorithm::Sha1, Algorithm::Blake3] {
        assert!(
            exists(&raw, &marker_path(&prefix, alg, d)).await,
            "{alg} marker after the put"
        );
    }
    let fresh = Store::new(
        S3Backend::connect(&s.config(&prefix))
            .await
            .expect("connect"),
    );
    crate::common::assert_found_by_aliases(&fresh, &all).await;
}

/// fsck's marker rebuild cut off part-way: after some markers are written the server starts
/// answering 503 and the connections it had are dropped. The fsck fails typed after bounded
/// retries; nothing stored is lost and every marker written is right; a second fsck writes the
/// rest (exactly the records still missing one, not again those done) and every blob is found by
/// its aliases.
pub async fn fsck_cut_off_by_a_failing_server_resumes(s: &Server) {
    use super::faults::{proxied_config, upstream};
    use super::gate::Gate;
    use super::proxy::{Fault, Proxy};
    let prefix = Server::fresh_prefix("mcut");
    let n = 100u64;
    let all = put_some(s, &prefix, n).await;
    let raw = s.raw();
    let markers = Path::from(format!("{prefix}/markers"));
    let listed: Vec<_> = raw.list(Some(&markers)).try_collect().await.expect("list");
    assert_eq!(listed.len() as u64, 2 * n, "two markers per blob");
    for m in listed {
        raw.delete(&m.location).await.expect("delete marker");
    }
    let proxy = Proxy::start(upstream(s), vec![], Fault::Pass).await;
    let retries = 2;
    let c = proxied_config(s, &proxy, &prefix, retries);
    let gate = Gate::new(Arc::new(c.build().expect("client")));
    gate.open();
    let backend = S3Backend::with_store(gate.clone(), &prefix, "via a proxy that fails".into());
    let fsck = tokio::spawn(async move { Store::new(backend).fsck(&FsckOptions::default()).await });
    gate.reached(0, 20).await;
    proxy.cut(Fault::Unavailable);
    let at_cut = proxy.connections();
    let err = tokio::time::timeout(Duration::from_secs(60), fsck)
        .await
        .expect("fsck must end once the server fails, not hang")
        .expect("fsck task")
        .expect_err("a server answering 503 must fail the fsck");
    assert_eq!(err.kind(), tarvault::ErrorKind::Backend, "{err}");
    // At most 16 records in flight (two markers each) and the scan's reads, each request tried
    // 1 + retries times.
    let after = proxy.connections() - at_cut;
    assert!(
        after <= 64 * (retries + 1),
        "{after} connections after the cut"
    );

    // Nothing lost, and what the cut-off fsck wrote is right.
    let blobs = Path::from(format!("{prefix}/blobs"));
    let stored: Vec<_> = raw.list(Some(&blobs)).try_collect().await.expect("list");
    assert_eq!(stored.len() as u64, n, "every blob is still there");
    let mut done = 0u64;
    let mut written = 0u64;
    // The blobs whose sha1 marker the cut-off fsck wrote.
    let mut partial = Vec::new();
    for (data, d) in &all {
        let sha1 = exists(&raw, &marker_path(&prefix, Algorithm::Sha1, d)).await;
        let blake3 = exists(&raw, &marker_path(&prefix, Algorithm::Blake3, d)).await;
        written += u64::from(sha1) + u64::from(blake3);
        done += u64::from(sha1 && blake3);
        if sha1 {
            partial.push((data, d));
        }
    }
    assert!(written >= 20, "{written} markers written before the cut");
    assert!(done < n, "the cut came after the rebuild had finished");
    assert!(!partial.is_empty(), "no sha1 marker written before the cut");
    let reader = Store::new(
        S3Backend::connect(&s.config(&prefix))
            .await
            .expect("connect"),
    );
    for (data, d) in partial {
        let got = crate::common::read_verified(&reader, &crate::common::addr(&d.shasum())).await;
        assert_eq!(
            &got[..],
            &data[..],
            "read through a marker the cut-off fsck wrote"
        );
    }

    // Run again: it does what was left, only that.
    let report = Store::new(
        S3Backend::connect(&s.config(&prefix))
            .await
            .expect("connect"),
    )
    .fsck(&FsckOptions::default())
    .await
    .expect("fsck against a healthy server");
    assert_eq!(report.index.added, n - done, "{report:?}");
    let fresh = Store::new(
        S3Backend::connect(&s.config(&prefix))
            .await
            .expect("connect"),
    );
    crate::common::assert_found_by_aliases(&fresh, &all).await;
}

/// The environment variable that makes `upgrade_reader_child` (tests/backend_s3.rs) a child
/// process of [`processes_of_a_host_read_an_old_log_once`]: `<env var>|<server>|<prefix>|<sha1>|
/// <sha512>`, both digests in hex.
pub const UPGRADE_CHILD: &str = "TARVAULT_TEST_UPGRADE_CHILD";

/// An upgrading store of 16 segments (a log that goes into a fingerprint table) read by two real
/// processes of one host, one after the other, sharing a temp directory: the first reads every
/// segment and publishes the table, the second takes the log from it and reads none (its
/// background import may read one before its first write is refused: both may only read).
pub async fn processes_of_a_host_read_an_old_log_once(s: &Server) {
    let prefix = Server::fresh_prefix("mshare");
    let all = put_some(s, &prefix, 64).await;
    make_legacy(&s.raw(), &prefix, &all).await;
    let tmp = tempfile::tempdir().expect("temp dir");
    // The tables are kept in the user's private directory there.
    let private = tmp
        .path()
        .join(format!("tarvault-{}", unsafe { libc::geteuid() }));
    let tables = || {
        std::fs::read_dir(&private)
            .expect("the user's private temp directory")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tbl"))
            .count()
    };
    let run = |d: &Digests| -> u64 {
        let spec = format!(
            "{}|{}|{prefix}|{}|{}",
            s.env,
            s.name,
            d.shasum(),
            d.sha512_hex()
        );
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args(["--exact", "upgrade_reader_child", "--nocapture"])
            .env(UPGRADE_CHILD, spec)
            .env("TMPDIR", tmp.path())
            .output()
            .expect("child process");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("upgrade-child segments read: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("the child did not say what it read: {stdout}"))
    };
    let first = run(&all[0].1);
    assert!(first >= 16, "the first process read {first} segments");
    assert_eq!(tables(), 1, "the first process published its table");
    let second = run(&all[37].1);
    assert!(second <= 1, "the second process read {second} segments");
}

/// The child process of [`processes_of_a_host_read_an_old_log_once`] (see [`UPGRADE_CHILD`]): looks
/// the blob up by its sha1 through a client that may only read, and prints how many segments it
/// read whole.
pub async fn upgrade_reader_child(spec: &str) {
    let parts: Vec<&str> = spec.split('|').collect();
    let [var, name, prefix, sha1, sha512] = parts[..] else {
        panic!("{UPGRADE_CHILD}={spec}");
    };
    let name: &'static str = if name == "ceph" { "ceph" } else { "s3s-fs" };
    let s = Server::from_env(var, name).expect("the parent's server");
    let c = s.config(prefix);
    let counting = Counting::read_only(Arc::new(c.build().expect("client")));
    let counts = counting.counts.clone();
    let b = S3Backend::with_store_config(Arc::new(counting), &c);
    let hash = tarvault::Hash::from_hex(Algorithm::Sha1, sha1).expect("sha1");
    let got = b.resolve_alias(&hash).await.expect("resolve");
    let want: [u8; 64] = hex::decode(sha512)
        .expect("hex")
        .try_into()
        .expect("64 bytes");
    assert_eq!(got, Some(BlobKey::new(want)));
    println!("upgrade-child segments read: {}", counts.segments());
}

/// A blob stored without its markers (its put failed after the blob's PUT, when a marker PUT
/// did not go through) and then put again by a caller that knows its sha512 (a copy, a
/// migration run again): the put finds the blob stored and writes no bytes, and it leaves both
/// markers there, so that it is found by its shasum and blake3 once the put returns, as after
/// a put that wrote it.
pub async fn a_put_finding_its_blob_stored_writes_missing_markers(s: &Server) {
    let prefix = Server::fresh_prefix("mredo");
    let all = put_some(s, &prefix, 2).await;
    let raw = s.raw();
    for (_, d) in &all {
        for alg in [Algorithm::Sha1, Algorithm::Blake3] {
            raw.delete(&marker_path(&prefix, alg, d))
                .await
                .expect("delete marker");
        }
    }
    let (data, d) = &all[0];
    let (backend, counts) = counted(s, &prefix);
    let store = Store::new(backend);
    let out = store
        .put_bytes(data.clone(), &PutOptions::expect(d.integrity()))
        .await
        .expect("put again");
    assert!(!out.stored, "the blob was stored already: no bytes written");
    assert_eq!(counts.puts(), 2, "the two markers written, not the blob");
    for alg in [Algorithm::Sha1, Algorithm::Blake3] {
        assert!(
            exists(&raw, &marker_path(&prefix, alg, d)).await,
            "{alg} marker"
        );
        let fresh = counted(s, &prefix).0;
        assert_eq!(
            fresh.resolve_alias(&by(alg, d)).await.expect("resolve"),
            Some(BlobKey::new(d.sha512)),
            "{alg}"
        );
    }
    // A blob whose markers are there costs the put no write.
    let (backend, counts) = counted(s, &prefix);
    let store = Store::new(backend);
    store
        .put_bytes(data.clone(), &PutOptions::expect(d.integrity()))
        .await
        .expect("put a third time");
    assert_eq!(
        counts.puts(),
        0,
        "nothing written when the markers are there"
    );
}
