//! Large puts on Manta: streamed to a staging object while hashed and named by a SnapLink where
//! the server makes them (Manta v1, the test server's default), spooled where it refuses them
//! (Manta v2, `--disable-snaplinks`). Nothing unverified is published, nothing is left under
//! `staging/` by a put that ends, and fsck's sweep removes what a dead process left.

mod common;
mod manta_common;

use std::time::Duration;

use bytes::Bytes;
use common::request_proxy::{host_of, Fault, Proxy};
use common::{addr, assert_found_by_aliases, chunked, digests_of, noise, read_verified};
use futures::{StreamExt, TryStreamExt};
use manta_common::Target;
use tarvault::backend::manta::protocol::RequestBody;
use tarvault::backend::manta::{MantaBackend, MantaConfig};
use tarvault::backend::{Backend, BlobKey};
use tarvault::{ErrorKind, PutOptions, Store};

/// Past the 16 MiB in-memory spool, so a put of unknown size stages (or spills).
const SIZE: usize = 20 << 20;

/// Objects in the store's staging directory.
async fn staged_objects(backend: &MantaBackend) -> Vec<String> {
    let dir = format!("{}/staging", backend.layout().root());
    let entries = backend.client().list_dir(&dir).await.expect("list staging");
    entries
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.kind == "object")
        .map(|e| e.name)
        .collect()
}

async fn blobs(backend: &MantaBackend) -> Vec<BlobKey> {
    backend.list().try_collect().await.expect("list blobs")
}

/// Puts `data` (unknown digest, unknown size, in 256 KiB pieces), then checks it reads back by
/// sha512, sha1 and blake3, that its digests are recorded on the object, and that no staging
/// object is left; a second put of the same bytes is a dedupe hit.
async fn put_and_check(store: &Store, backend: &MantaBackend, data: &[u8]) {
    let put = store
        .put(chunked(data, 256 << 10), &PutOptions::default())
        .await
        .expect("large put");
    assert!(put.stored);
    let want = digests_of(data);
    assert_eq!(put.digests, want);
    let got = read_verified(store, &want.integrity()).await;
    assert!(got == data, "bytes differ");
    assert_found_by_aliases(store, &[(data.to_vec(), want)]).await;
    let stat = backend
        .head(&BlobKey::new(want.sha512))
        .await
        .expect("head")
        .expect("blob there");
    assert_eq!(stat.size, data.len() as u64);
    assert_eq!(stat.digests, Some(want), "digests recorded on the object");
    assert_eq!(staged_objects(backend).await, Vec::<String>::new());
    let again = store
        .put(chunked(data, 256 << 10), &PutOptions::default())
        .await
        .expect("put again");
    assert!(!again.stored, "a dedupe hit");
    assert_eq!(staged_objects(backend).await, Vec::<String>::new());
}

/// On a server that links, a large put stages and is linked: stored, verified, found by every
/// digest, no staging object left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_put_is_staged_then_linked() {
    let Some(target) = Target::get("a_large_put_is_staged_then_linked") else {
        return;
    };
    let backend = target.backend("staged");
    let store = Store::new(backend.clone());
    assert_eq!(backend.snaplinks(), None, "not asked before a large put");
    put_and_check(&store, &backend, &noise(SIZE, 41)).await;
    assert_eq!(backend.snaplinks(), Some(true));
    // A put whose size is given stages from its first byte.
    let data = noise(SIZE + 12345, 42);
    let put = store
        .put(
            chunked(&data, 100_000),
            &PutOptions {
                expected_size: Some(data.len() as u64),
                ..PutOptions::default()
            },
        )
        .await
        .expect("put of known size");
    assert!(put.stored);
    assert!(read_verified(&store, &put.digests.integrity()).await == data);
    assert_eq!(staged_objects(&backend).await, Vec::<String>::new());
}

/// Manta v2 refuses SnapLinks: large puts spool and publish by one PUT, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_server_without_snaplinks_large_puts_spool() {
    let Some(target) = Target::private(
        "on_a_server_without_snaplinks_large_puts_spool",
        &["--disable-snaplinks"],
    ) else {
        return;
    };
    let backend = target.backend("v2");
    let store = Store::new(backend.clone());
    put_and_check(&store, &backend, &noise(SIZE, 43)).await;
    assert_eq!(backend.snaplinks(), Some(false));
}

/// `?staging=false` spools even where the server links, and never asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_off_spools() {
    let Some(target) = Target::get("staging_off_spools") else {
        return;
    };
    let mut config = target.config("nostage");
    config.staging = false;
    let backend = MantaBackend::new(config).expect("backend");
    let store = Store::new(backend.clone());
    put_and_check(&store, &backend, &noise(SIZE, 44)).await;
    assert_eq!(backend.snaplinks(), None);
    assert!(
        MantaConfig::from_store_url("manta:///stor/x?url=http://h&user=u&staging=maybe").is_err()
    );
}

/// A staged put whose bytes fail verification, and one whose source fails mid-way, publish
/// nothing: not under the blob's path, not under `staging/` (the body is broken off, and Manta
/// keeps nothing of an upload whose body did not end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_put_that_fails_leaves_nothing() {
    let Some(target) = Target::get("a_staged_put_that_fails_leaves_nothing") else {
        return;
    };
    let backend = target.backend("stagebad");
    let store = Store::new(backend.clone());
    let data = noise(SIZE, 45);
    let mut wrong = digests_of(&data);
    wrong.sha1[0] ^= 1;
    let wrong = addr(&wrong.hash(tarvault::Algorithm::Sha1).to_string());
    let err = store
        .put(chunked(&data, 256 << 10), &PutOptions::expect(wrong))
        .await
        .expect_err("a mismatching put fails");
    assert_eq!(err.kind(), ErrorKind::IntegrityMismatch, "{err}");
    assert_eq!(backend.snaplinks(), Some(true), "it did stage");

    let mut pieces: Vec<std::io::Result<Bytes>> = data
        .chunks(256 << 10)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    pieces.push(Err(std::io::Error::other("source failed")));
    let err = store
        .put(futures::stream::iter(pieces), &PutOptions::default())
        .await
        .expect_err("a put whose source fails fails");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");

    // Give the server a moment to see the broken connections before looking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(staged_objects(&backend).await, Vec::<String>::new());
    assert_eq!(blobs(&backend).await, Vec::<BlobKey>::new());
}

/// A fresh store on `target` reached through a request-aware proxy that gives every request a
/// connection of its own (so a rule can pick out any one), two attempts per request.
async fn behind_proxy(target: &Target, prefix: &str) -> (Proxy, MantaBackend, Store) {
    let mut config = target.config(prefix);
    let proxy = Proxy::start(host_of(&config.url)).await;
    proxy.one_request_per_connection();
    config.url = proxy.url();
    config.max_attempts = 2;
    let backend = MantaBackend::new(config).expect("backend");
    let store = Store::new(backend.clone());
    (proxy, backend, store)
}

/// A staged upload whose answer is lost cannot be sent again (its body was not kept): the put
/// fails with a backend error and publishes nothing under a blob path. The staging object it
/// stored all the same is deleted by the put (it stayed until fsck's sweep). What a put cannot
/// delete (a process killed first) is removed by the sweep once it is an hour old, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_upload_whose_answer_is_lost_fails_and_leaves_nothing() {
    let Some(target) = Target::get("a_staged_upload_whose_answer_is_lost") else {
        return;
    };
    let (proxy, backend, store) = behind_proxy(&target, "stagelost").await;
    let first = noise(SIZE, 46);
    store
        .put(chunked(&first, 256 << 10), &PutOptions::default())
        .await
        .expect("first large put");
    let staging = format!("{}/staging/", backend.layout().root());
    // The staged upload's path starts with its time in milliseconds (the link probe's does not).
    proxy.once(&format!("PUT {staging}1"), Fault::DropResponse);
    let second = noise(SIZE, 47);
    let err = store
        .put(chunked(&second, 256 << 10), &PutOptions::default())
        .await
        .expect_err("a staged upload is not sent twice");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert_eq!(
        blobs(&backend).await,
        vec![BlobKey::new(digests_of(&first).sha512)]
    );
    assert_eq!(
        staged_objects(&backend).await,
        Vec::<String>::new(),
        "the put deletes its staging object"
    );

    // A young staging upload (a put being linked right now) is kept by the sweep. So is an
    // object whose name says its upload began long ago but whose body ended just now (a slow
    // upload being linked right now), and anything not named like a staging upload.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let young = format!("{now:013}-0000000000000001");
    for name in [young.as_str(), "0000000000001-0000000000000000", "keep-me"] {
        backend
            .client()
            .put_object(
                &format!("{staging}{name}"),
                Default::default(),
                RequestBody::Bytes(Bytes::from_static(b"some bytes")),
            )
            .await
            .expect("plant an object");
    }
    assert_eq!(backend.sweep().await.expect("sweep"), 0);
    assert_eq!(staged_objects(&backend).await.len(), 3);
    // Once both times are past the age, the two staging uploads go; the other object stays.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let swept = backend
        .sweep_staging_older_than(Duration::from_secs(1))
        .await
        .expect("sweep");
    assert_eq!(swept, 2);
    assert_eq!(staged_objects(&backend).await, vec!["keep-me".to_string()]);
}

/// A staging directory of thousands of leftovers (a host that died again and again) is swept as
/// its listing pages come: the first deletes go out before the second page is asked for, so the
/// sweep holds one page of the listing, not the whole directory. Deleting what a page listed does
/// not disturb the pages after it (each starts at a name), and every leftover goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_leftovers_are_swept_as_the_listing_pages_come() {
    let Some(target) = Target::get("thousands_of_leftovers_are_swept") else {
        return;
    };
    let config = target.config("stagemany");
    let direct = MantaBackend::new(config.clone()).expect("backend");
    let root = direct.layout().root().to_string();
    let staging = format!("{root}/staging");
    for dir in [&root, &staging] {
        direct.client().put_directory(dir).await.expect("mkdir");
    }
    // Three pages of 1,024 at most: 2,100 leftovers (an upload begun at 1 ms past the epoch) and
    // two objects not named like one, listed after them.
    let names: Vec<String> = (0..2_100)
        .map(|i| format!("0000000000001-{i:016x}"))
        .chain(["keep-1".to_string(), "keep-2".to_string()])
        .collect();
    let (client, dir) = (direct.client(), &staging);
    futures::stream::iter(&names)
        .map(|name| async move {
            client
                .put_object(
                    &format!("{dir}/{name}"),
                    Default::default(),
                    RequestBody::Bytes(Bytes::from_static(b"left")),
                )
                .await
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("plant the leftovers");

    // Old by their listing's time too (the later of the two counts).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let proxy = Proxy::start(host_of(&config.url)).await;
    proxy.one_request_per_connection();
    let backend = MantaBackend::new(MantaConfig {
        url: proxy.url(),
        ..config
    })
    .expect("backend");
    let swept = backend
        .sweep_staging_older_than(Duration::from_secs(1))
        .await
        .expect("sweep");
    assert_eq!(swept, 2_100);
    assert_eq!(
        staged_objects(&direct).await,
        vec!["keep-1".to_string(), "keep-2".to_string()]
    );
    let lines = proxy.requests();
    let listings: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with(&format!("GET {staging}?")))
        .collect();
    let first_delete = lines
        .iter()
        .position(|l| l.starts_with(&format!("DELETE {staging}/")))
        .expect("deletes");
    assert_eq!(listings.len(), 3, "three pages: {:?}", &lines[..5]);
    assert!(
        first_delete < listings[1],
        "the first page's leftovers are deleted before the second page is listed"
    );
}

/// A large put whose sha512 is given streams straight to the blob's path, on a server without
/// SnapLinks too (Manta v2): stored, verified, its digests recorded on the object, found by
/// sha1 and blake3; it never asks about links. A wrong sha512 leaves nothing at the path it
/// named, nor anywhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_put_of_known_sha512_streams_to_its_path() {
    let Some(target) = Target::private(
        "a_large_put_of_known_sha512_streams_to_its_path",
        &["--disable-snaplinks"],
    ) else {
        return;
    };
    let backend = target.backend("direct");
    let store = Store::new(backend.clone());
    let data = noise(SIZE, 48);
    let want = digests_of(&data);
    let put = store
        .put(
            chunked(&data, 256 << 10),
            &PutOptions::expect(want.integrity()),
        )
        .await
        .expect("put of known sha512");
    assert!(put.stored);
    assert!(read_verified(&store, &want.integrity()).await == data);
    assert_found_by_aliases(&store, &[(data.clone(), want)]).await;
    let stat = backend
        .head(&BlobKey::new(want.sha512))
        .await
        .expect("head")
        .expect("blob there");
    assert_eq!(stat.digests, Some(want), "digests recorded on the object");
    assert_eq!(backend.snaplinks(), None, "no link needed, none asked for");

    let other = noise(SIZE, 49);
    let err = store
        .put(
            chunked(&other, 256 << 10),
            &PutOptions::expect(digests_of(&noise(SIZE, 50)).integrity()),
        )
        .await
        .expect_err("a wrong sha512 fails");
    assert_eq!(err.kind(), ErrorKind::IntegrityMismatch, "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(blobs(&backend).await, vec![BlobKey::new(want.sha512)]);
    assert_eq!(staged_objects(&backend).await, Vec::<String>::new());
}

/// The blob a direct upload names is there already (it appeared after the store looked): Manta
/// refuses the create-only PUT, the rest of the bytes are only hashed, and the commit reports the
/// blob present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_upload_of_a_blob_already_there_is_a_dedupe_hit() {
    let Some(target) = Target::get("a_direct_upload_of_a_blob_already_there") else {
        return;
    };
    let backend = target.backend("direct412");
    let store = Store::new(backend.clone());
    let data = noise(SIZE, 51);
    let want = digests_of(&data);
    store
        .put(chunked(&data, 256 << 10), &PutOptions::default())
        .await
        .expect("first put");
    let hint = tarvault::backend::PutHint {
        expected_key: Some(BlobKey::new(want.sha512)),
        ..Default::default()
    };
    let mut w = backend.begin_put(&hint).await.expect("begin");
    for c in data.chunks(256 << 10) {
        w.write(Bytes::copy_from_slice(c)).await.expect("write");
    }
    let committed = w.commit(&want).await.expect("commit");
    assert_eq!(committed, tarvault::backend::Committed::AlreadyPresent);
    assert!(read_verified(&store, &want.integrity()).await == data);
}

/// A direct upload is sent once: when its answer is lost the put fails with a backend error
/// instead of being retried (a spooled put would be). The bytes it sent were verified before the
/// body ended, so what is at the path is the blob, and putting again finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_upload_whose_answer_is_lost_fails_and_a_retry_finds_the_blob() {
    let Some(target) = Target::get("a_direct_upload_whose_answer_is_lost") else {
        return;
    };
    let (proxy, backend, store) = behind_proxy(&target, "directlost").await;
    let data = noise(SIZE, 52);
    let want = digests_of(&data);
    let path = format!("PUT {}", backend.blob_path(&BlobKey::new(want.sha512)));
    proxy.once(&path, Fault::DropResponse);
    let err = store
        .put(
            chunked(&data, 256 << 10),
            &PutOptions::expect(want.integrity()),
        )
        .await
        .expect_err("a direct upload is not sent twice");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    let again = store
        .put(
            chunked(&data, 256 << 10),
            &PutOptions::expect(want.integrity()),
        )
        .await
        .expect("put again");
    assert!(
        !again.stored,
        "the first attempt's verified bytes are the blob"
    );
    assert!(read_verified(&store, &want.integrity()).await == data);
}

/// An expected integrity naming two sha512s passes verification when the bytes match either
/// (ssri's rule), but the direct upload streams to the path of the *first*. The bytes of the
/// other digest must never appear under that address, and the put must not report their blob
/// stored (or already present) when it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_upload_never_publishes_under_another_sha512() {
    let Some(target) = Target::get("direct_wrong_key") else {
        return;
    };
    let backend = target.backend("wrongkey");
    let store = Store::new(backend.clone());
    let data = noise(SIZE, 60);
    let right = digests_of(&data);
    let decoy = digests_of(&noise(16, 61));
    let expected = addr(&format!("{} {}", decoy.integrity(), right.integrity()));
    let result = store
        .put(chunked(&data, 256 << 10), &PutOptions::expect(expected))
        .await;
    // Whatever the put answered, nothing may sit under the decoy's address...
    let decoy_path = backend.blob_path(&BlobKey::new(decoy.sha512));
    let there = backend.client().head(&decoy_path).await.expect("head");
    assert!(
        there.is_none(),
        "bytes of sha512 {} are visible under {decoy_path} (put answered {:?})",
        hex::encode(right.sha512),
        result.as_ref().map(|p| p.stored)
    );
    // ...and a put that succeeded stored the blob it names.
    if let Ok(put) = result {
        assert_eq!(put.digests, right);
        assert!(read_verified(&store, &right.integrity()).await == data);
    }
}

/// A TCP relay to `upstream` that passes the client's bytes on at `rate` bytes/s (answers go back
/// at full speed), with small socket buffers so that what is in flight is what the client holds.
async fn throttled_relay(upstream: String, rate: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(64 << 10).expect("rcvbuf");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(16).expect("listen");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        let pause = Duration::from_secs_f64(n as f64 / rate as f64);
                        tokio::time::sleep(pause).await;
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// On a link that keeps taking bytes, slowly but steadily, a streamed upload must not fail just
/// because the pieces still queued when the put commits take longer than the response timeout
/// to go out: a spooled put of the same size is allowed its body's time at 1 MiB/s on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_staged_upload_is_not_timed_out_at_commit() {
    let Some(target) = Target::get("slow_staged") else {
        return;
    };
    let mut config = target.config("slow");
    config.url = throttled_relay(host_of(&config.url), 2 << 20).await;
    config.response_timeout = Duration::from_secs(2);
    let backend = MantaBackend::new(config).expect("backend");
    let store = Store::new(backend.clone());
    let data = noise(SIZE, 62);
    let started = std::time::Instant::now();
    let put = store
        .put(
            chunked(&data, 1 << 20),
            &PutOptions {
                expected_size: Some(data.len() as u64),
                ..PutOptions::default()
            },
        )
        .await;
    assert_eq!(backend.snaplinks(), Some(true), "it staged");
    let put =
        put.unwrap_or_else(|e| panic!("a steady upload failed after {:?}: {e}", started.elapsed()));
    assert!(put.stored);
    assert!(read_verified(&store, &put.digests.integrity()).await == data);
}

/// The staging directory went away after this backend made it (an operator's `mrm -r`): the
/// spooled path recreates a missing directory (`put_with_parents`); a staged put must too, or at
/// least fail at once with Manta's answer, not every large put until the process restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_put_survives_a_removed_staging_directory() {
    let Some(target) = Target::get("staging_dir_gone") else {
        return;
    };
    let mut config = target.config("dirgone");
    config.response_timeout = Duration::from_secs(5);
    let backend = MantaBackend::new(config).expect("backend");
    let store = Store::new(backend.clone());
    store
        .put(chunked(&noise(SIZE, 63), 256 << 10), &PutOptions::default())
        .await
        .expect("first large put");
    let dir = format!("{}/staging", backend.layout().root());
    backend.client().delete(&dir).await.expect("rm staging dir");
    // The put that finds it missing has lost its body: it may fail, with Manta's answer.
    if let Err(e) = store
        .put(chunked(&noise(SIZE, 69), 256 << 10), &PutOptions::default())
        .await
    {
        let report = e.report().to_string();
        assert!(report.contains("DirectoryDoesNotExist"), "{report}");
    }
    let started = std::time::Instant::now();
    let data = noise(SIZE, 64);
    let put = store
        .put(chunked(&data, 256 << 10), &PutOptions::default())
        .await;
    let put = put.unwrap_or_else(|e| {
        panic!(
            "large put after the staging dir went: {:?}: {e}",
            started.elapsed()
        )
    });
    assert!(put.stored);
    assert!(read_verified(&store, &put.digests.integrity()).await == data);
}

/// The backend's own guard: a direct upload started for one key and committed with the digests
/// of other bytes publishes nothing under that key (the S3 writer refuses the same).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_writer_committed_under_another_key_publishes_nothing() {
    let Some(target) = Target::get("direct_writer_wrong_key") else {
        return;
    };
    let backend = target.backend("writerkey");
    let data = noise(SIZE, 65);
    let right = digests_of(&data);
    let decoy = BlobKey::new(digests_of(&noise(16, 66)).sha512);
    let hint = tarvault::backend::PutHint {
        expected_key: Some(decoy),
        ..Default::default()
    };
    let mut w = backend.begin_put(&hint).await.expect("begin");
    for c in data.chunks(256 << 10) {
        w.write(Bytes::copy_from_slice(c)).await.expect("write");
    }
    let committed = w.commit(&right).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let there = backend
        .client()
        .head(&backend.blob_path(&decoy))
        .await
        .expect("head");
    assert!(
        there.is_none(),
        "other bytes published under {decoy} (commit: {committed:?})"
    );
    assert!(committed.is_err(), "{committed:?}");
}

/// Store level, before this change too: with two sha512s expected and the first one stored,
/// a put of bytes matching the second must store them, not report them stored already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sha512s_expected_the_first_stored_still_stores_the_bytes() {
    let Some(target) = Target::get("two_sha512_first_stored") else {
        return;
    };
    let backend = target.backend("twokeys");
    let store = Store::new(backend.clone());
    let other = noise(1000, 67);
    store
        .put_bytes(other.clone(), &PutOptions::default())
        .await
        .expect("put other");
    let data = noise(2000, 68);
    let expected = addr(&format!(
        "{} {}",
        digests_of(&other).integrity(),
        digests_of(&data).integrity()
    ));
    let put = store
        .put_bytes(data.clone(), &PutOptions::expect(expected))
        .await
        .expect("put");
    assert_eq!(put.digests, digests_of(&data));
    assert!(
        backend
            .head(&BlobKey::new(put.digests.sha512))
            .await
            .expect("head")
            .is_some(),
        "the put succeeded (stored: {}) but its blob is not stored",
        put.stored
    );
}

/// Manta's refusal of every SnapLink, as v2 answers one.
const LINKS_REFUSED: &str = "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n\
    content-length: 82\r\nconnection: close\r\n\r\n\
    {\"code\":\"SnaplinksDisabledError\",\"message\":\"Manta v2 does not support SnapLinks.\"}";

/// A server that stops making SnapLinks between the probe and a put's link: the staged bytes are
/// read back and published by one PUT. That read is bounded as every other body read is: when
/// the server stalls mid-way it is asked again from where it stopped once the response timeout
/// passed, and the put stores, instead of waiting on the stalled read for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_blob_read_back_after_a_refused_link_is_not_waited_on_for_ever() {
    let Some(target) = Target::get("a_staged_blob_read_back_after_a_refused_link") else {
        return;
    };
    let mut config = target.config("linkstall");
    let proxy = Proxy::start(host_of(&config.url)).await;
    proxy.one_request_per_connection();
    config.url = proxy.url();
    config.max_attempts = 2;
    config.response_timeout = Duration::from_secs(2);
    let backend = MantaBackend::new(config).expect("backend");
    let store = Store::new(backend.clone());
    let data = noise(SIZE, 48);
    let want = digests_of(&data);
    let blob = backend.blob_path(&BlobKey::new(want.sha512));
    proxy.once(&format!("PUT {blob} "), Fault::Answer(LINKS_REFUSED));
    let staging = format!("{}/staging/", backend.layout().root());
    proxy.once(&format!("GET {staging}1"), Fault::StallBody(1 << 20));
    let put = tokio::time::timeout(
        Duration::from_secs(60),
        store.put(chunked(&data, 256 << 10), &PutOptions::default()),
    )
    .await
    .expect("the put waited on a stalled read for ever")
    .expect("put copied through the client");
    assert!(put.stored);
    assert_eq!(proxy.rules_left(), 0, "{:?}", proxy.requests());
    assert_eq!(backend.snaplinks(), Some(false));
    let got = read_verified(&store, &want.integrity()).await;
    assert!(got == data, "bytes differ");
    assert_eq!(staged_objects(&backend).await, Vec::<String>::new());
}
