//! The conformance suite on the S3 backend: always over object_store's in-memory store (the
//! backend's own code, with no server: every case runs for real), and against two real servers,
//! s3s-fs (SigV4 enforced) and a single-node Ceph RADOS Gateway, plus fault cases per server. See
//! `tests/s3/mod.rs` for how the servers are found; without one, its cases print `skipped: …`
//! (and fail under CI).

mod common;
mod conformance;
mod s3;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};
use tarvault::backend::s3::{S3Backend, S3Config};
use tarvault::backend::{Backend, BlobKey};

use crate::s3::Server;

/// A backend under a fresh prefix, and the configuration a second instance is made with.
struct S3Fixture(S3Backend, S3Config);

#[async_trait]
impl conformance::Fixture for S3Fixture {
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::new(self.0.clone())
    }
    /// Another instance on the same bucket and prefix, with caches of its own (a second process;
    /// it shares the first one's HTTP client).
    fn second(&self) -> Option<Arc<dyn Backend>> {
        let store = self.0.object_store().clone();
        Some(Arc::new(S3Backend::with_store_config(store, &self.1)))
    }
    /// Overwrites the object with raw bytes through object_store, bypassing the backend.
    async fn plant(&self, key: &BlobKey, bytes: Bytes) {
        self.0
            .object_store()
            .put(&self.0.blob_path(key), PutPayload::from(bytes))
            .await
            .expect("plant");
    }
}

/// 1 MiB: the suite's larger blobs then take the spool + multipart path too.
const MULTIPART_THRESHOLD: u64 = 1 << 20;

/// The S3 backend over object_store's in-memory store: no server, no HTTP, but every line of the
/// backend (keys, metadata, conditional puts, multipart uploads, the alias log) runs.
mod in_memory {
    use super::*;
    async fn make() -> S3Fixture {
        let mut c = S3Config::new("memory", Server::fresh_prefix("conf"));
        c.multipart_threshold = MULTIPART_THRESHOLD;
        let store = Arc::new(object_store::memory::InMemory::new());
        S3Fixture(S3Backend::with_store_config(store, &c), c)
    }
    conformance::suite!(make);
}

/// A backend on the server named by `var`, or `None` (after `skipped: …`) when there is none.
async fn fixture(var: &str, name: &'static str) -> Option<S3Fixture> {
    let s = Server::from_env(var, name)?;
    let mut c = s.config(&Server::fresh_prefix("conf"));
    c.multipart_threshold = MULTIPART_THRESHOLD;
    let backend = S3Backend::connect(&c).await.expect("connect");
    Some(S3Fixture(backend, c))
}

/// One `#[tokio::test]` per case of `tests/s3/<module>.rs`, against the server named by an env
/// variable.
macro_rules! cases {
    ($module:ident, $var:literal, $name:literal; $($case:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(s) = crate::s3::Server::from_env($var, $name) {
                        crate::s3::$module::$case(&s).await;
                    }
                }
            )*
        }
    };
}

/// One `#[tokio::test]` per alias marker case, against the server named by an env variable.
macro_rules! markers {
    ($var:literal, $name:literal; $($case:ident),* $(,)?) => {
        mod markers {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(s) = crate::s3::Server::from_env($var, $name) {
                        crate::s3::markers::$case(&s).await;
                    }
                }
            )*
        }
    };
}

macro_rules! server {
    ($module:ident, $var:literal, $name:literal) => {
        mod $module {
            use super::*;
            async fn make() -> Option<S3Fixture> {
                fixture($var, $name).await
            }
            conformance::suite!(make);
            cases!(staging, $var, $name; large_unknown_put_is_staged,
                large_unknown_put_spools_when_staging_is_off, staged_mismatch_leaves_nothing,
                staging_sweep_takes_the_later_of_name_and_last_modified,
                a_copy_through_the_client_publishes_only_verified_bytes);
            cases!(faults, $var, $name; wrong_credentials, missing_bucket, unavailable_is_bounded,
                transient_errors_are_retried, reset_mid_upload, single_reset_is_retried,
                boto3_interop, cli_store_url, put_whose_answer_is_lost_reports_stored);
            cases!(prefix, $var, $name; odd_prefix_is_used_verbatim,
                url_prefix_is_percent_decoded);
            cases!(listing, $var, $name; walks_list_without_a_head_per_blob,
                a_copy_lists_its_target_once);
            markers!($var, $name; lookups_cost_one_request, another_process_sees_a_put_at_once,
                segments_upgrade_to_markers, processes_of_a_host_read_an_old_log_once,
                fsck_repairs_markers_and_imports_segments,
                fsck_removes_dangling_markers, fsck_racing_a_put_of_a_dangling_blob,
                fsck_cut_off_by_a_failing_server_resumes,
                a_put_finding_its_blob_stored_writes_missing_markers);
        }
    };
}

server!(s3s_fs, "TARVAULT_S3S_ENV", "s3s-fs");
server!(ceph, "TARVAULT_CEPH_ENV", "ceph");

/// A child process of `markers::processes_of_a_host_read_an_old_log_once`, run by it with
/// `TARVAULT_TEST_UPGRADE_CHILD` set; otherwise it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_reader_child() {
    if let Ok(spec) = std::env::var(s3::markers::UPGRADE_CHILD) {
        s3::markers::upgrade_reader_child(&spec).await;
    }
}

/// A marker GET answered with `Content-Length: 2^62` (by a stand-in server, no real one needed):
/// refused by its claimed length with an error naming the marker, not an aborted allocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_claiming_2_62_bytes_is_refused() {
    s3::claims::resolve_fails_naming(s3::claims::Log::Empty, "p/markers/sha1/ab/abab").await;
}

/// The same for a segment of an older version's alias log, read while a store upgrades.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_claiming_2_62_bytes_is_refused() {
    s3::claims::resolve_fails_naming(s3::claims::Log::HugeSegment, "p/alias/log/seg1").await;
}

/// With no credentials configured and no instance-metadata service to fetch them from (its
/// endpoint refuses connections), opening an S3 store is a configuration error that names the
/// store and the variables to set, not a backend error about `PUT …/latest/api/token`.
#[cfg(feature = "cli")]
#[test]
fn no_credentials_is_a_config_error_naming_the_variables() {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tarvault"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(&k);
        }
    }
    let url = "s3://bucket/p?endpoint=http://127.0.0.1:1&allow_http=true&region=us-east-1";
    cmd.env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:1")
        .arg("--store")
        .arg(url)
        .args(["stat", &"ab".repeat(20)]);
    let started = std::time::Instant::now();
    let out = cmd.output().expect("run tarvault");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("configuration"), "{err}");
    assert!(err.contains("s3://bucket/p"), "{err}");
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
}

/// A put given only the sha512 of a blob stored whole (no size to check the object against
/// before reading) holds its bytes until it can compare sizes, and so sends nothing: no PUT, and
/// for a blob past the multipart threshold no multipart upload (to its key, or to a staging key)
/// started and then aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_of_a_stored_blobs_sha512_alone_sends_nothing() {
    let counting = Arc::new(s3::counting::Counting::new(Arc::new(
        object_store::memory::InMemory::new(),
    )));
    let mut c = S3Config::new("memory", Server::fresh_prefix("held"));
    c.multipart_threshold = MULTIPART_THRESHOLD;
    let store = tarvault::Store::new(S3Backend::with_store_config(counting.clone(), &c));
    for len in [5000usize, 3 * 1024 * 1024 + 17] {
        let data = common::noise(len, 70);
        let expected = common::addr(&common::sha512_sri(&data));
        store
            .put_bytes(data.clone(), &tarvault::PutOptions::default())
            .await
            .expect("put");
        let counts = &counting.counts;
        let (puts, others) = (
            counts.puts(),
            counts.total() - counts.gets() - counts.lists(),
        );
        let again = store
            .put(
                common::chunked(&data, 65_536),
                &tarvault::PutOptions::expect(expected),
            )
            .await
            .expect("put again");
        assert!(!again.stored, "len {len}");
        assert_eq!(counts.puts(), puts, "len {len}: a PUT was sent");
        assert_eq!(
            counts.total() - counts.gets() - counts.lists(),
            others,
            "len {len}: an upload was started"
        );
    }
}

/// `copy` into an S3 store whose objects at two blobs' keys are cut short and grown (S3 keeps no
/// trusted record of a blob's size): both are copied again, over the target's listing and without
/// it, and the objects replaced; a copy with everything whole skips every blob without reading the
/// source. (A copy took any object at a blob's key as the blob.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_replaces_an_object_of_another_size_at_the_target() {
    use conformance::Fixture as _;
    use tarvault::ops::copy::{copy, CopyOptions};
    let s3_store = |store: Arc<dyn object_store::ObjectStore>, name: &str| {
        let mut c = S3Config::new("memory", Server::fresh_prefix(name));
        c.multipart_threshold = MULTIPART_THRESHOLD;
        S3Backend::with_store_config(store, &c)
    };
    let source = Arc::new(s3::counting::Counting::new(Arc::new(
        object_store::memory::InMemory::new(),
    )));
    let from = tarvault::Store::new(s3_store(source.clone(), "copy-from"));
    let target = s3_store(Arc::new(object_store::memory::InMemory::new()), "copy-to");
    let to = tarvault::Store::new(target.clone());
    let fixture = S3Fixture(target, S3Config::new("memory", "unused"));
    let blobs: Vec<Vec<u8>> = [5000usize, 3 * 1024 * 1024 + 17, 1000]
        .iter()
        .enumerate()
        .map(|(i, &len)| common::noise(len, 80 + i as u64))
        .collect();
    for data in &blobs {
        from.put_bytes(data.clone(), &tarvault::PutOptions::default())
            .await
            .expect("put");
    }
    let run = |list_target: bool| {
        let options = CopyOptions {
            list_target,
            ..CopyOptions::default()
        };
        let (from, to) = (&from, &to);
        async move {
            let report = copy(from, to, &options, |_| {}).await.expect("copy");
            assert!(report.is_complete(), "{report:?}");
            (report.listed, report.copied, report.skipped)
        }
    };
    assert_eq!(run(true).await, (3, 3, 0));
    for list_target in [true, false] {
        let mut grown = blobs[1].clone();
        grown.extend_from_slice(b"and more");
        fixture
            .plant(&common::key_of(&blobs[0]), blobs[0][..4000].to_vec().into())
            .await;
        fixture
            .plant(&common::key_of(&blobs[1]), grown.into())
            .await;
        assert_eq!(run(list_target).await, (3, 2, 1), "listed: {list_target}");
        for data in &blobs {
            let key = common::key_of(data);
            let head = to.backend().head(&key).await.expect("head");
            assert_eq!(head.map(|st| st.size), Some(data.len() as u64));
            let address = common::addr(&common::sha512_sri(data));
            assert!(common::read_verified(&to, &address).await == data[..]);
        }
        let gets = source.counts.gets();
        assert_eq!(run(list_target).await, (3, 0, 3), "listed: {list_target}");
        assert_eq!(source.counts.gets(), gets, "a skipped blob was read");
    }
}

/// gc's live set naming a blob by sha1 whose marker names another blob: see
/// `common::gc_with_a_contradicted_marker`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_does_not_take_a_marker_its_blob_contradicts_at_its_word() {
    let f = Forger::new("gcmark");
    common::gc_with_a_contradicted_marker(&|| f.open(), |h, b| f.forge(h, b)).await;
}

/// An S3 store over an in-memory object store, and a hand on its sha1 markers' objects (as a
/// foreign or buggy writer's).
struct Forger {
    raw: Arc<dyn object_store::ObjectStore>,
    config: S3Config,
    prefix: String,
}

impl Forger {
    fn new(name: &str) -> Forger {
        let prefix = Server::fresh_prefix(name);
        Forger {
            raw: Arc::new(object_store::memory::InMemory::new()),
            config: S3Config::new("memory", prefix.clone()),
            prefix,
        }
    }

    fn open(&self) -> tarvault::Store {
        tarvault::Store::new(S3Backend::with_store_config(self.raw.clone(), &self.config))
    }

    /// Writes `body` as the marker of the sha1 `hex`.
    fn forge(&self, hex: String, body: String) -> impl std::future::Future<Output = ()> {
        let raw = self.raw.clone();
        let marker = format!("{}/markers/sha1/{}/{hex}", self.prefix, &hex[..2]);
        async move {
            raw.put(&marker.into(), PutPayload::from(body.into_bytes()))
                .await
                .expect("forge the marker");
        }
    }
}

/// A put meeting a marker its named blob contradicts: see
/// `common::a_put_with_a_contradicted_marker`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_rewrites_a_marker_its_named_blob_contradicts() {
    let f = Forger::new("putmark");
    common::a_put_with_a_contradicted_marker(&|| f.open(), |h, b| f.forge(h, b)).await;
}

/// Each store's requests so far, and the LIST requests among them.
fn requests_and_lists<'a>(
    stores: impl Iterator<Item = &'a s3::counting::Counting>,
) -> Vec<(u64, u64)> {
    stores
        .map(|c| (c.counts.total(), c.counts.lists()))
        .collect()
}

/// Asserts that each store was listed, and sent nothing else, since
/// [`requests_and_lists`] gave `before`.
fn only_listed<'a>(
    stores: impl Iterator<Item = &'a s3::counting::Counting>,
    before: &[(u64, u64)],
) {
    for (c, (total, lists)) in stores.zip(before) {
        let (requests, listings) = (c.counts.total() - total, c.counts.lists() - lists);
        assert!(listings >= 1, "a replica not listed");
        assert_eq!(requests, listings, "requests besides the listing");
    }
}

/// A replicated store of two S3 stores gives its blobs' sizes and times from the replicas'
/// listings (`gc`, `ls` and a copy into it walk it so): LIST requests only, where it sent a HEAD
/// per blob through the replicas. Each blob once, with its size, whichever replicas hold it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_store_of_s3_stores_lists_sizes_without_a_request_per_blob() {
    use futures::TryStreamExt;
    use tarvault::backend::compose::{Replicated, ReplicatedOptions};
    let members: Vec<_> = (0..2)
        .map(|i| {
            let counting = Arc::new(s3::counting::Counting::new(Arc::new(
                object_store::memory::InMemory::new(),
            )));
            let c = S3Config::new("memory", Server::fresh_prefix(&format!("rep{i}")));
            (S3Backend::with_store_config(counting.clone(), &c), counting)
        })
        .collect();
    let blobs: Vec<Vec<u8>> = (0..6)
        .map(|i| common::noise(1000 + i * 10, 95 + i as u64))
        .collect();
    for (i, data) in blobs.iter().enumerate() {
        // Blobs 0-1 on the first replica alone, 2-3 on the second alone, 4-5 on both.
        for (r, (backend, _)) in members.iter().enumerate() {
            if i / 2 == r || i >= 4 {
                tarvault::Store::new(backend.clone())
                    .put_bytes(data.clone(), &tarvault::PutOptions::default())
                    .await
                    .expect("put");
            }
        }
    }
    let replicas = members
        .iter()
        .map(|(b, _)| Arc::new(b.clone()) as Arc<dyn Backend>)
        .collect();
    let store = tarvault::Store::new(
        Replicated::new(replicas, ReplicatedOptions::default()).expect("replicated"),
    );
    let before = requests_and_lists(members.iter().map(|(_, c)| &**c));
    let mut listed: Vec<(BlobKey, u64)> = store
        .list_meta()
        .map_ok(|b| (b.key, b.size))
        .try_collect()
        .await
        .expect("list");
    listed.sort();
    let mut want: Vec<(BlobKey, u64)> = blobs
        .iter()
        .map(|d| (common::key_of(d), d.len() as u64))
        .collect();
    want.sort();
    assert_eq!(listed, want);
    only_listed(members.iter().map(|(_, c)| &**c), &before);
}

/// `copy` from a replicated store of two S3 stores whose first replica holds a blob's object cut
/// short (its listing gives that size) into an S3 store: the blob is copied from the good replica,
/// whole, and a second run skips it. (The copy gave the put the listed size to expect, so the
/// verified bytes the source served were refused as longer, on every run.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_a_replicated_source_with_a_copy_cut_short_copies_the_good_copy() {
    use conformance::Fixture as _;
    use tarvault::backend::compose::{Replicated, ReplicatedOptions};
    let s3_store = |name: &str| {
        let c = S3Config::new("memory", Server::fresh_prefix(name));
        let store = Arc::new(object_store::memory::InMemory::new());
        S3Fixture(S3Backend::with_store_config(store, &c), c)
    };
    let members = [s3_store("copy-rep0"), s3_store("copy-rep1")];
    let data = common::noise(5000, 131);
    for m in &members {
        tarvault::Store::new(m.0.clone())
            .put_bytes(data.clone(), &tarvault::PutOptions::default())
            .await
            .expect("put");
    }
    let key = common::key_of(&data);
    members[0].plant(&key, data[..3000].to_vec().into()).await;
    let replicas = members.iter().map(|m| m.backend()).collect();
    let options = ReplicatedOptions {
        read_repair: false,
        ..ReplicatedOptions::default()
    };
    let from = tarvault::Store::new(Replicated::new(replicas, options).expect("replicated"));
    let to = tarvault::Store::new(s3_store("copy-to").0);
    common::copy_runs(&from, &to, &[(1, 1, 0), (1, 0, 1)]).await;
    let address = common::addr(&common::sha512_sri(&data));
    assert!(common::read_verified(&to, &address).await == data[..]);
}

/// An S3 store over object_store's in-memory store under a fresh prefix named after `name`, with
/// the suite's multipart threshold, and the requests it is sent counted.
fn counted_s3_store(name: &str) -> (S3Fixture, Arc<s3::counting::Counting>) {
    let counting = Arc::new(s3::counting::Counting::new(Arc::new(
        object_store::memory::InMemory::new(),
    )));
    let mut c = S3Config::new("memory", Server::fresh_prefix(name));
    c.multipart_threshold = MULTIPART_THRESHOLD;
    (
        S3Fixture(S3Backend::with_store_config(counting.clone(), &c), c),
        counting,
    )
}

/// `copy` into a replicated store of two S3 stores whose second replica lacks one blob and holds
/// one cut short and one grown: each is copied, and both replicas then hold every blob whole (a
/// large one too, past the multipart threshold); a second run copies nothing, reads nothing from
/// the source and sends the replicas only LIST requests. (The copy took a blob its first replica
/// listed whole as had, whatever the second held.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_into_a_replicated_target_makes_every_replica_hold_every_blob_whole() {
    use conformance::Fixture as _;
    use tarvault::backend::compose::{Replicated, ReplicatedOptions};
    use tarvault::ops::copy::{copy, CopyOptions};
    let (source, source_counts) = counted_s3_store("copy-rep-from");
    let from = tarvault::Store::new(source.0.clone());
    let members = [
        counted_s3_store("copy-rep-to0"),
        counted_s3_store("copy-rep-to1"),
    ];
    // A whole on both; B (large) on the first alone; C cut short and D grown on the second.
    let blobs: Vec<Vec<u8>> = [5000usize, 3 * 1024 * 1024 + 17, 1000, 2000]
        .iter()
        .enumerate()
        .map(|(i, &len)| common::noise(len, 140 + i as u64))
        .collect();
    for (i, data) in blobs.iter().enumerate() {
        from.put_bytes(data.clone(), &tarvault::PutOptions::default())
            .await
            .expect("put");
        for (r, (m, _)) in members.iter().enumerate() {
            if i != 1 || r == 0 {
                tarvault::Store::new(m.0.clone())
                    .put_bytes(data.clone(), &tarvault::PutOptions::default())
                    .await
                    .expect("put");
            }
        }
    }
    let (second, _) = &members[1];
    second
        .plant(&common::key_of(&blobs[2]), blobs[2][..600].to_vec().into())
        .await;
    let mut grown = blobs[3].clone();
    grown.extend_from_slice(b"and more");
    second.plant(&common::key_of(&blobs[3]), grown.into()).await;
    let replicas = members.iter().map(|(m, _)| m.backend()).collect();
    let to = Replicated::new(replicas, ReplicatedOptions::default()).expect("replicated");
    let to = tarvault::Store::new(to);
    let run = || async {
        let report = copy(&from, &to, &CopyOptions::default(), |_| {})
            .await
            .expect("copy");
        assert!(report.is_complete(), "{report:?}");
        (report.listed, report.copied, report.skipped)
    };
    assert_eq!(run().await, (4, 3, 1));
    for (r, (m, _)) in members.iter().enumerate() {
        let replica = tarvault::Store::new(m.0.clone());
        for data in &blobs {
            let head = m.0.head(&common::key_of(data)).await.expect("head");
            assert_eq!(
                head.map(|st| st.size),
                Some(data.len() as u64),
                "replica {r}"
            );
            let address = common::addr(&common::sha512_sri(data));
            assert!(common::read_verified(&replica, &address).await == data[..]);
        }
    }
    let before = requests_and_lists(members.iter().map(|(_, c)| &**c));
    let gets = source_counts.counts.gets();
    assert_eq!(run().await, (4, 0, 4));
    assert_eq!(source_counts.counts.gets(), gets, "a skipped blob was read");
    only_listed(members.iter().map(|(_, c)| &**c), &before);
}

/// `copy` from an S3 store whose objects at two blobs' keys are cut short (a small one and one
/// past the multipart threshold) into an S3 store holding both whole, over the target's listing
/// and without it: each fails as corrupt in the source, the error naming the source's backend,
/// and the target's objects are left as they are, with no write sent to it; the copy is reported
/// incomplete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_a_source_object_cut_short_fails_as_corrupt_and_leaves_the_target_whole() {
    use conformance::Fixture as _;
    use tarvault::ops::copy::{copy, CopyEvent, CopyOptions};
    let (source, _) = counted_s3_store("copy-bad-from");
    let (target, target_counts) = counted_s3_store("copy-bad-to");
    let from = tarvault::Store::new(source.0.clone());
    let to = tarvault::Store::new(target.0.clone());
    let blobs: Vec<Vec<u8>> = [5000usize, 3 * 1024 * 1024 + 17, 1000]
        .iter()
        .enumerate()
        .map(|(i, &len)| common::noise(len, 160 + i as u64))
        .collect();
    for data in &blobs {
        for store in [&from, &to] {
            store
                .put_bytes(data.clone(), &tarvault::PutOptions::default())
                .await
                .expect("put");
        }
    }
    for data in &blobs[..2] {
        let short = data[..data.len() / 2].to_vec();
        source.plant(&common::key_of(data), short.into()).await;
    }
    let writes = |c: &s3::counting::Counting| {
        use std::sync::atomic::Ordering;
        (c.counts.puts(), c.counts.other.load(Ordering::SeqCst))
    };
    for list_target in [true, false] {
        let before = writes(&target_counts);
        let mut corrupt = Vec::new();
        let options = CopyOptions {
            list_target,
            ..CopyOptions::default()
        };
        let report = copy(&from, &to, &options, |e| {
            if let CopyEvent::Failed {
                key: Some(key),
                error,
            } = e
            {
                assert_eq!(error.kind(), tarvault::ErrorKind::Corrupt, "{error}");
                let message = error.to_string();
                assert!(message.contains(&source.0.describe()), "{message}");
                assert!(message.contains(&key.to_string()), "{message}");
                corrupt.push(*key);
            }
        })
        .await
        .expect("copy");
        assert!(!report.is_complete(), "listed: {list_target}");
        assert_eq!(
            (
                report.listed,
                report.copied,
                report.skipped,
                report.failed.total()
            ),
            (3, 0, 1, 2),
            "listed: {list_target}: {report:?}"
        );
        corrupt.sort();
        let mut want: Vec<BlobKey> = blobs[..2].iter().map(|d| common::key_of(d)).collect();
        want.sort();
        assert_eq!(corrupt, want, "listed: {list_target}");
        assert_eq!(
            writes(&target_counts),
            before,
            "a write was sent to the target"
        );
        for data in &blobs {
            let head = target.0.head(&common::key_of(data)).await.expect("head");
            assert_eq!(head.map(|st| st.size), Some(data.len() as u64));
            let address = common::addr(&common::sha512_sri(data));
            assert!(common::read_verified(&to, &address).await == data[..]);
        }
    }
}
